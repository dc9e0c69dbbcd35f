//! The owner's catalog and the index namespaces it names. The catalog is an entry of the
//! owner's log: one sealed text (a `generation DDL` line per statement); a write that races
//! another client's loses its seq and is retried. Each table's index entries live in a
//! namespace that is a PRF of its name and generation: CREATE INDEX builds the next
//! generation from the rows and switches the catalog to it, all in entries that follow the
//! head the statement read, so no other write lands in between.

use wwt_engine::keys::RowIdKey;
use wwt_engine::{MasterKey, RowCipher, RowId as EngineRowId, SegmentId as EngineSegmentId};
use wwt_index::{Batch, MAX_LIMIT, RowId, RowOp, TableId, TableSchema as StoreSchema};
use wwt_net::NetError;
use wwt_net::index::{ApplyBatch, CreateTable, LogOp, PutCatalog};
use wwt_query::{Catalog, Plan, TableSchema};

use super::entries::column_id;
use super::{Client, ClientError, Result, State};

/// Hidden index tables and sealed blobs use names no SQL identifier can take.
pub(super) const SEGMENTS: &str = "\0segments";

const CATALOG: &str = "\0catalog";

/// The index namespace of generation `generation` of table `name`: a PRF of the name's table
/// id, so the index provider never learns the name.
pub(super) fn index_table_id(master: &MasterKey, name: &str, generation: u64) -> TableId {
    let base = master.table_id(name);
    let mut h = blake3::Hasher::new_derive_key("wwt 2026-11 index table id");
    h.update(&base.0);
    h.update(&generation.to_le_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    TableId(id)
}

/// Seals what the client files under a hidden name (the catalog, locators, manifests) with
/// that name's row key.
pub(super) fn blob_cipher(master: &MasterKey, name: &str) -> RowCipher {
    let keys = master.table(name);
    RowCipher::new(&keys.row, keys.id)
}

/// What marks a catalog line as a table being dropped: `generation -- dropping <hex name>`.
/// A comment to SQL: a client from before deletion reads past it (and a catalog it saves
/// loses the mark, leaving that drop's data in place).
const DROPPING: &str = "-- dropping ";

/// The catalog as the text that is sealed: one line `generation DDL` per CREATE TABLE and
/// CREATE INDEX statement, tables in catalog order; then a line per table dropped whose
/// pieces and namespaces are still being deleted (`dropping`: name and generation).
fn catalog_text(
    catalog: &Catalog,
    generation_of: impl Fn(&str) -> u64,
    dropping: &[(String, u64)],
) -> String {
    let mut text = String::new();
    for t in catalog.tables() {
        let g = generation_of(&t.name);
        for sql in t.to_sql() {
            text.push_str(&format!("{g} {sql}\n"));
        }
    }
    for (name, g) in dropping {
        text.push_str(&format!("{g} {DROPPING}{}\n", hex::encode(name)));
    }
    text
}

/// A catalog as read back from [`catalog_text`].
pub(super) struct CatalogText {
    pub catalog: Catalog,
    /// Each table's index generation.
    pub generations: Vec<(String, u64)>,
    /// Tables dropped whose deletion is not finished, with their last generation.
    pub dropping: Vec<(String, u64)>,
}

/// Reads [`catalog_text`] back.
fn parse_catalog(text: &[u8]) -> Result<CatalogText> {
    let text = std::str::from_utf8(text)
        .map_err(|_| ClientError::Damaged("the catalog is not UTF-8".into()))?;
    let mut catalog = Catalog::new();
    let mut generations = Vec::new();
    let mut dropping = Vec::new();
    for line in text.lines() {
        let (generation, sql) = line
            .split_once(' ')
            .ok_or_else(|| ClientError::Damaged("a catalog line has no generation".into()))?;
        let generation: u64 = generation
            .parse()
            .map_err(|_| ClientError::Damaged("a catalog generation is not a number".into()))?;
        if let Some(name) = sql.strip_prefix(DROPPING) {
            let name = hex::decode(name)
                .ok()
                .and_then(|n| String::from_utf8(n).ok())
                .ok_or_else(|| {
                    ClientError::Damaged("a dropped table's name is unreadable".into())
                })?;
            dropping.push((name, generation));
            continue;
        }
        for stmt in wwt_query::parse(sql)? {
            match wwt_query::plan(&catalog, &stmt)? {
                Plan::CreateTable(t) => {
                    generations.push((t.name.clone(), generation));
                    catalog.add_table(t)?;
                }
                Plan::CreateIndex { table, index } => catalog.add_index(&table, index)?,
                _ => {
                    return Err(ClientError::Damaged(
                        "the catalog holds a statement that is not DDL".into(),
                    ));
                }
            }
        }
    }
    Ok(CatalogText {
        catalog,
        generations,
        dropping,
    })
}

/// The hidden row id under which a segment's manifest is filed: a PRF of the segment id under
/// `key`, the row-id key of the hidden segments table ([`manifest_key`]), so the index
/// provider cannot link its rows to the segment ids that trackers and the DHT see.
pub(super) fn manifest_row(key: &RowIdKey, segment: &EngineSegmentId) -> RowId {
    RowId(key.row_id(&segment.0).0)
}

/// The key of [`manifest_row`]: derive it once per batch of segments, not per segment.
pub(super) fn manifest_key(master: &MasterKey) -> RowIdKey {
    master.table(SEGMENTS).row_id
}

/// Where clients before 2026-12 filed a segment's manifest: the segment id's first 16 bytes.
/// Still read, so their tables stay readable; never written.
pub(super) fn legacy_manifest_row(segment: &EngineSegmentId) -> RowId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&segment.0[..16]);
    RowId(id)
}

impl Client {
    /// The hidden namespace of sealed segment manifests.
    pub(super) fn segments_table(&self) -> TableId {
        TableId(self.master.table_id(SEGMENTS).0)
    }

    pub(super) fn index_table_id(&self, name: &str, generation: u64) -> TableId {
        index_table_id(&self.master, name, generation)
    }

    fn store_schema(schema: &TableSchema) -> StoreSchema {
        StoreSchema {
            indexes: schema
                .indexes
                .iter()
                .filter_map(|i| {
                    schema
                        .column_index(&i.column)
                        .map(|c| (column_id(c), i.kind.store_kind()))
                })
                .collect(),
        }
    }

    /// Drops generation `generation` of table `name`'s index namespace, if it exists.
    pub(super) async fn drop_index_table(
        &self,
        state: &mut State,
        name: &str,
        generation: u64,
    ) -> Result<()> {
        let table = self.index_table_id(name, generation);
        self.drop_namespace(state, table).await
    }

    pub(super) async fn create_index_table(
        &self,
        state: &mut State,
        schema: &TableSchema,
        generation: u64,
    ) -> Result<()> {
        let request = CreateTable {
            table: self.index_table_id(&schema.name, generation),
            schema: Self::store_schema(schema),
        };
        match self.append(state, LogOp::CreateTable(request)).await {
            // Left over by a statement that failed after creating it: empty, or rebuilt below.
            Ok(()) | Err(ClientError::Index(NetError::Conflict(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Builds generation `generation` of the table's index table with `schema`'s indexes
    /// from the rows of the current one; the catalog switches to it afterwards.
    pub(super) async fn build_index_table(
        &self,
        state: &mut State,
        old: &TableSchema,
        schema: &TableSchema,
        generation: u64,
    ) -> Result<()> {
        let target = self.index_table_id(&schema.name, generation);
        // A failed earlier attempt may have left a partial table: start from nothing.
        self.drop_index_table(state, &schema.name, generation)
            .await?;
        self.create_index_table(state, schema, generation).await?;
        let refs = self.scan(state, old).await?;
        for chunk in refs.chunks(MAX_LIMIT) {
            let rows = self.fetch_rows(state, old, chunk, None).await?;
            let versions = chunk
                .iter()
                .zip(&rows)
                .map(|(r, row)| (r.row, r.version, r.locator.clone(), row.as_slice()));
            let ops = self
                .entries(state, schema, versions)?
                .into_iter()
                .map(RowOp::Put)
                .collect();
            let batch = ApplyBatch {
                table: target,
                batch: Batch { ops },
            };
            self.append(state, LogOp::Apply(batch)).await?;
        }
        Ok(())
    }

    /// Reads the owner's catalog from a replica at the head of its log and opens it.
    pub(super) async fn reload_catalog(&self, state: &mut State) -> Result<()> {
        let blob = self.catalog_blob(state).await?;
        let CatalogText {
            catalog,
            generations,
            dropping,
        } = if blob.version > 0 {
            let text = self
                .blob_cipher(CATALOG)
                .open(EngineRowId([0; 16]), blob.version, &blob.blob)
                .map_err(|e| ClientError::Damaged(format!("the catalog: {e}")))?;
            parse_catalog(&text)?
        } else {
            CatalogText {
                catalog: Catalog::new(),
                generations: Vec::new(),
                dropping: Vec::new(),
            }
        };
        state.catalog = catalog;
        state.catalog_version = blob.version;
        state.dropping = dropping;
        for (name, generation) in generations {
            let schema = state.catalog.table(&name)?.clone();
            self.table(state, &schema)?.generation = generation;
        }
        Ok(())
    }

    /// Seals and appends `next` as the catalog (if nobody appended since this client read
    /// the log), then makes it current with the given table generations and tables whose
    /// drop is unfinished.
    pub(super) async fn save_catalog(
        &self,
        state: &mut State,
        next: Catalog,
        generations: &[(String, u64)],
        dropping: Vec<(String, u64)>,
    ) -> Result<()> {
        let generation_of = |name: &str, state: &State| {
            generations
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, g)| *g)
                .or_else(|| state.tables.get(name).map(|t| t.generation))
                .unwrap_or(0)
        };
        let text = catalog_text(&next, |name| generation_of(name, state), &dropping);
        let version = state.catalog_version + 1;
        let sealed = self
            .blob_cipher(CATALOG)
            .seal(EngineRowId([0; 16]), version, text.as_bytes());
        let put = PutCatalog {
            expected_version: state.catalog_version,
            blob: sealed,
        };
        match self.append(state, LogOp::Catalog(put)).await {
            // Another device wrote the catalog since this one read it.
            Err(ClientError::Index(NetError::Conflict(_))) => return Err(ClientError::CatalogRace),
            other => other?,
        }
        state.catalog_version = version;
        state.catalog = next;
        state.dropping = dropping;
        for (name, g) in generations {
            let schema = state.catalog.table(name)?.clone();
            self.table(state, &schema)?.generation = *g;
        }
        Ok(())
    }

    pub(super) fn blob_cipher(&self, name: &str) -> RowCipher {
        blob_cipher(&self.master, name)
    }
}

/// Known answers for what the client files at the index provider: a change to any of these
/// makes every stored table unreadable, so each is pinned to bytes written by an earlier build.
#[cfg(test)]
mod vectors {
    use wwt_engine::{Extent, Locator};

    use super::*;

    pub(super) fn master() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    pub(super) fn catalog() -> Catalog {
        let sql = "CREATE TABLE notes (id INT PRIMARY KEY, title TEXT, body TEXT, n INT);
                   CREATE INDEX ON notes USING hash (title);
                   CREATE INDEX ON notes USING fulltext (body);
                   CREATE INDEX ON notes USING btree (n);";
        let mut catalog = Catalog::new();
        for stmt in wwt_query::parse(sql).expect("parses") {
            match wwt_query::plan(&catalog, &stmt).expect("plans") {
                Plan::CreateTable(t) => catalog.add_table(t).expect("adds"),
                Plan::CreateIndex { table, index } => {
                    catalog.add_index(&table, index).expect("indexes")
                }
                other => panic!("not DDL: {other:?}"),
            }
        }
        catalog
    }

    const CATALOG_TEXT: &str = concat!(
        "2 CREATE TABLE notes (id BIGINT PRIMARY KEY, title TEXT, body TEXT, n BIGINT)\n",
        "2 CREATE INDEX notes_title_hash ON notes USING hash (title)\n",
        "2 CREATE INDEX notes_body_fulltext ON notes USING fulltext (body)\n",
        "2 CREATE INDEX notes_n_btree ON notes USING btree (n)\n",
    );
    /// The catalog above sealed at version 1 (random nonce, so opening is what is pinned).
    const SEALED_CATALOG: &str = concat!(
        "ec6e294ce6fe72916e8dd9d0ac3e0aed8de41375cebaa997d8e2522537d2182b6175882732d66111",
        "500f0a97aec432cce752c205253717c67b1fcc3c79f0f938d57d7fcfb7e7b5a2ed7f753e8dd10035",
        "f7a9c92c1458529dc481f2b4238793ee355a61416940760a198c77d8bc3716a2fe7873e1d5bd1592",
        "e80fd961998fbf820a4a84eb922aab7f55b24152214100b0015d9d07935f1959d8dcd8d10b17ef21",
        "03f74d4bad938317cc21b59d1b596366550d63cdfe7b67a1f518eb0e32b27a929d8f3c1c728ad696",
        "a99e61aedcdcdd22c83967036bab7985f6ec1d3b35533a85413a5ac7ff049584dee62629f1463ff2",
        "69e5fef2785a397b1d899b2bbc9bb6438445c4fc0327638de93fcfac8c9948929bd120ecac644282",
        "d7018e3e3b5ea9970c8c",
    );

    #[test]
    fn index_namespaces_and_hidden_rows() {
        let m = master();
        assert_eq!(
            hex::encode(index_table_id(&m, "notes", 0).0),
            "eb5a6c3ae5284ad7c789c95856a31f0a"
        );
        assert_eq!(
            hex::encode(index_table_id(&m, "notes", 3).0),
            "3f7842fdb01cb5d6834dfd2745e3166a"
        );
        assert_eq!(
            hex::encode(m.table_id(SEGMENTS).0),
            "3ba9d9dfbc3fc1a001755615e4639be0"
        );
        let segment = EngineSegmentId(std::array::from_fn(|i| i as u8));
        assert_eq!(
            hex::encode(manifest_row(&manifest_key(&m), &segment).0),
            "3baf22c055ec1796d486fc83857db14c"
        );
        assert_eq!(
            hex::encode(legacy_manifest_row(&segment).0),
            "000102030405060708090a0b0c0d0e0f"
        );
    }

    /// A locator of row 0x11.. version 5, sealed as the index provider keeps it.
    const SEALED_LOCATOR: &str = concat!(
        "62bd97196dbd7d7893c410fa0e72d31899749cbc8da0a16a988b10d553b3eb06917c6e028e2e8229",
        "838a14e872c065ce7cae16d2f9b9d96158d4038a8775a5b2ac2f3b723d2921e395eba749dfe24b4c",
        "fe338b92b8c378b715189b53443a9d53f0eb187d3fc40c2801391e16",
    );

    #[test]
    fn sealed_locators() {
        let row = EngineRowId([0x11; 16]);
        let locator = Locator {
            row,
            version: 5,
            extents: vec![Extent {
                segment: EngineSegmentId([0x22; 32]),
                offset: 4096,
                len: 1000,
            }],
        };
        assert_eq!(
            hex::encode(locator.to_bytes()),
            "1111111111111111111111111111111105000000000000000100000022222222222222222222222222222222222222222222222222222222222222220010000000000000e803000000000000"
        );
        let mut cipher = blob_cipher(&master(), "\0locators notes");
        let opened = cipher
            .open(row, 5, &hex::decode(SEALED_LOCATOR).expect("hex"))
            .expect("the pinned locator opens");
        assert_eq!(Locator::from_bytes(&opened).expect("decodes"), locator);
    }

    #[test]
    fn catalog_text_and_seal() {
        let catalog = catalog();
        let text = catalog_text(&catalog, |name| u64::from(name == "notes") * 2, &[]);
        assert_eq!(text, CATALOG_TEXT);
        let sealed = hex::decode(SEALED_CATALOG).expect("hex");
        let mut cipher = blob_cipher(&master(), CATALOG);
        let opened = cipher
            .open(EngineRowId([0; 16]), 1, &sealed)
            .expect("the pinned catalog opens");
        let parsed = parse_catalog(&opened).expect("parses");
        assert_eq!(parsed.generations, vec![("notes".to_string(), 2)]);
        assert!(parsed.dropping.is_empty());
        assert_eq!(catalog_text(&parsed.catalog, |_| 2, &[]), CATALOG_TEXT);
        // A table being dropped is kept by name (any name, quotes and spaces included).
        let dropping = vec![("old \"t\" ü".to_string(), 7)];
        let text = catalog_text(&parsed.catalog, |_| 2, &dropping);
        let again = parse_catalog(text.as_bytes()).expect("parses");
        assert_eq!(again.dropping, dropping);
        assert_eq!(again.generations, parsed.generations);
    }
}
