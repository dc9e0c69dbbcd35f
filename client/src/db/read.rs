//! The read path: index lookups and scans, the sealed manifests and locators they lead to, the
//! fetch of rows from their segments (through the bounded cache of decoded segments), row
//! history, and the client as the query evaluator's row source.

use std::collections::HashMap;
use std::ops::Bound;

use wwt_engine::{Locator, RowId as EngineRowId, SegmentId as EngineSegmentId, SegmentManifest};
use wwt_index::{
    ColumnId, MAX_LIMIT, Order, Query, QueryOutput, RowHit, RowId, TextExpr, TextOrder,
};
use wwt_net::NetError;
use wwt_net::index::QueryTable;
use wwt_query::{
    Direction, FtQuery, IndexLookup, Row, RowSource, TableSchema, Value, decode_row, encode_key,
};

use super::catalog::{SEGMENTS, legacy_manifest_row, manifest_key, manifest_row};
use super::entries::{column_id, ope_encoder, ordered, text_expr, token_key};
use super::record::split_record;
use super::{Client, ClientError, Result, RowRef, RowVersion, State, from_source, source_err};
use crate::store::StoreError;

/// What a statement read of one row: its version, its locator and its record's hash.
pub(super) struct Read {
    pub(super) version: u64,
    pub(super) locator: Vec<u8>,
    pub(super) hash: [u8; 32],
}

pub(super) fn unread(row: RowId) -> ClientError {
    ClientError::Setup(format!(
        "the statement changes row {row}, which its source never fetched"
    ))
}

/// The client's state and, when asked, what was read of each row.
type SourceState<'a> = (&'a mut State, Option<HashMap<RowId, Read>>);

/// A lookup the index provider answers a page at a time, in row-id order.
#[derive(Clone, Debug)]
pub(super) enum Paged {
    /// Every row of the table (a full scan of the primary map).
    Scan,
    /// Every row a full-text query matches.
    Text {
        /// The column.
        column: ColumnId,
        /// The query over the column's tokens.
        expr: TextExpr,
    },
}

impl Paged {
    /// The query for the page of `limit` rows after `after`.
    fn query(&self, after: Option<RowId>, limit: usize) -> Query {
        match self {
            Paged::Scan => Query::Scan { after, limit },
            Paged::Text { column, expr } => Query::Text {
                column: *column,
                expr: expr.clone(),
                limit,
                order: TextOrder::Rows { after },
            },
        }
    }

    /// What is paged, for messages.
    fn what(&self) -> &'static str {
        match self {
            Paged::Scan => "full scan",
            Paged::Text { .. } => "full-text match",
        }
    }
}

/// The limit of a full-text lookup the index provider answers at once, best ranked first;
/// `None` when every match is read in row-id pages (no LIMIT, or one above [`MAX_LIMIT`]).
pub(super) fn ranked(limit: Option<u64>) -> Option<usize> {
    limit
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| *l <= MAX_LIMIT)
        .map(|l| l.max(1))
}

/// The client as the evaluator's row source: each call blocks on the network.
pub(super) struct NetSource<'a> {
    client: &'a Client,
    inner: std::sync::Mutex<SourceState<'a>>,
    handle: tokio::runtime::Handle,
}

impl<'a> NetSource<'a> {
    pub(super) fn state(&self) -> wwt_query::Result<std::sync::MutexGuard<'_, SourceState<'a>>> {
        self.inner
            .lock()
            .map_err(|_| source_err(ClientError::Setup("client state poisoned".into())))
    }
}

impl RowSource for NetSource<'_> {
    type Key = RowRef;

    fn lookup(&self, table: &TableSchema, lookup: &IndexLookup) -> wwt_query::Result<Vec<RowRef>> {
        let mut guard = self.state()?;
        self.handle
            .block_on(self.client.lookup(guard.0, table, lookup))
            .map_err(source_err)
    }

    fn scan(&self, table: &TableSchema) -> wwt_query::Result<Vec<RowRef>> {
        let mut guard = self.state()?;
        self.handle
            .block_on(self.client.scan(guard.0, table))
            .map_err(source_err)
    }

    fn fetch(&self, table: &TableSchema, keys: &[RowRef]) -> wwt_query::Result<Vec<Row>> {
        let (state, reads) = &mut *self.state()?;
        self.handle
            .block_on(self.client.fetch_rows(state, table, keys, reads.as_mut()))
            .map_err(source_err)
    }
}

impl Client {
    /// Every stored version of the row with primary key `key`, newest first, each checked
    /// against the hash its successor recorded.
    pub async fn history(&self, table: &str, key: &Value) -> Result<Vec<RowVersion>> {
        let mut state = self.state.lock().await;
        let schema = state.catalog.table(table)?.clone();
        let key = key.clone().coerce_to(schema.primary_key_column().ty)?;
        let row = self.row_id(&mut state, &schema, &key)?;
        let hits = self
            .index_query(&mut state, &schema, Query::Get { rows: vec![row] })
            .await?;
        let Some(hit) = hits.into_iter().next() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let first = self.open_locator(&mut state, &schema, hit.row, hit.version, &hit.locator)?;
        let mut next = Some((first, None));
        while let Some((locator, want_hash)) = next.take() {
            let read = self
                .read_records(&mut state, &schema, std::slice::from_ref(&locator))
                .await;
            // Older versions end where a compaction deleted their segment.
            if want_hash.is_some() && read.as_ref().is_err_and(super::deleted_segment) {
                break;
            }
            let record = read?
                .pop()
                .ok_or_else(|| ClientError::Damaged("a version read back empty".into()))?;
            if let Some(want) = want_hash
                && *blake3::hash(&record).as_bytes() != want
            {
                return Err(ClientError::Damaged(format!(
                    "version {} of the row does not match the hash its successor recorded",
                    locator.version
                )));
            }
            let (parent, row) = split_record(&record)?;
            out.push(RowVersion {
                version: locator.version,
                row: decode_row(&schema, row)?,
            });
            next = parent
                .map(|(l, h)| Ok::<_, ClientError>((Locator::from_bytes(&l)?, Some(h))))
                .transpose()?;
        }
        Ok(out)
    }

    /// Runs the synchronous evaluator with this client as its row source; with `remember`,
    /// also returns what it read of each fetched row (an UPDATE's parents, a DELETE's
    /// versions).
    pub(super) fn with_source<T>(
        &self,
        state: &mut State,
        remember: bool,
        run: impl FnOnce(&NetSource<'_>) -> wwt_query::Result<T>,
    ) -> Result<(T, HashMap<RowId, Read>)> {
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            return Err(ClientError::Setup(
                "the wwt client needs a multi-threaded tokio runtime \
                 (#[tokio::main] or #[tokio::test(flavor = \"multi_thread\")])"
                    .into(),
            ));
        }
        let source = NetSource {
            client: self,
            inner: std::sync::Mutex::new((state, remember.then(HashMap::new))),
            handle,
        };
        let out = tokio::task::block_in_place(|| run(&source)).map_err(from_source)?;
        let reads = source
            .inner
            .into_inner()
            .map_err(|_| ClientError::Setup("client state poisoned".into()))?
            .1
            .unwrap_or_default();
        Ok((out, reads))
    }

    /// Opens a sealed locator the index provider returned for `row` at `version`.
    pub(super) fn open_locator(
        &self,
        state: &mut State,
        schema: &TableSchema,
        row: RowId,
        version: u64,
        sealed: &[u8],
    ) -> Result<Locator> {
        let t = self.table(state, schema)?;
        let bytes = t
            .locators
            .open(EngineRowId(row.0), version, sealed)
            .map_err(|_| {
                ClientError::Damaged(format!(
                    "the index provider's locator for row {row} does not open: it was altered or \
                     belongs to another row or version"
                ))
            })?;
        let l = Locator::from_bytes(&bytes)?;
        if l.row.0 != row.0 || l.version != version {
            return Err(ClientError::Damaged(format!(
                "the locator for row {row} names another row or version"
            )));
        }
        Ok(l)
    }

    pub(super) async fn index_query(
        &self,
        state: &mut State,
        schema: &TableSchema,
        query: Query,
    ) -> Result<Vec<RowHit>> {
        let generation = self.table(state, schema)?.generation;
        let request = QueryTable {
            table: self.index_table_id(&schema.name, generation),
            query,
        };
        match self.query_index(state, request).await? {
            QueryOutput::Rows(hits) => Ok(hits),
            QueryOutput::Counts(_) => Err(ClientError::Index(NetError::Internal(
                "the index provider answered a row query with counts".into(),
            ))),
        }
    }

    pub(super) async fn scan(
        &self,
        state: &mut State,
        schema: &TableSchema,
    ) -> Result<Vec<RowRef>> {
        self.every_page(state, schema, &Paged::Scan).await
    }

    /// Every row of a paged lookup, a page of [`MAX_LIMIT`] at a time.
    async fn every_page(
        &self,
        state: &mut State,
        schema: &TableSchema,
        paged: &Paged,
    ) -> Result<Vec<RowRef>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self.page(state, schema, paged, after, MAX_LIMIT).await?;
            out.extend(page);
            match next {
                Some(row) => after = Some(row),
                None => return Ok(out),
            }
        }
    }

    /// Up to `limit` rows of a paged lookup in row-id order, from after `after`; and the row
    /// to continue after, `None` when the lookup is done. The index provider's page is checked:
    /// at most `limit` rows, each once and after `after`, so that a provider that ignores the
    /// cursor (or predates it) cannot make the client loop or read a row twice.
    pub(super) async fn page(
        &self,
        state: &mut State,
        schema: &TableSchema,
        paged: &Paged,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<(Vec<RowRef>, Option<RowId>)> {
        let mut page = self
            .index_query(state, schema, paged.query(after, limit))
            .await?;
        page.sort_unstable_by_key(|h| h.row);
        let bad = if page.len() > limit {
            Some(format!("{} rows for a page of {limit}", page.len()))
        } else if page.windows(2).any(|w| w[0].row == w[1].row) {
            Some("a row twice".into())
        } else if let (Some(first), Some(after)) = (page.first(), after)
            && first.row <= after
        {
            Some(format!("row {} in the page after row {after}", first.row))
        } else {
            None
        };
        if let Some(bad) = bad {
            return Err(ClientError::Index(NetError::Internal(format!(
                "the index provider answered a {} page with {bad}; it may run an older version: \
                 upgrade it, or use another replica",
                paged.what()
            ))));
        }
        let next = match page.last() {
            Some(last) if page.len() == limit => Some(last.row),
            _ => None,
        };
        Ok((page.into_iter().map(RowRef::from).collect(), next))
    }

    /// A full-text query's column id and expression over its column's tokens.
    pub(super) fn text_query(
        &self,
        state: &mut State,
        schema: &TableSchema,
        column: &str,
        query: &FtQuery,
    ) -> Result<(ColumnId, TextExpr)> {
        let c = schema.position(column)?;
        let t = self.table(state, schema)?;
        let key = token_key(&self.master, t, schema, c);
        Ok((column_id(c), text_expr(&key, query)))
    }

    async fn lookup(
        &self,
        state: &mut State,
        schema: &TableSchema,
        lookup: &IndexLookup,
    ) -> Result<Vec<RowRef>> {
        let query = match lookup {
            IndexLookup::PrimaryKey { values, .. } => {
                let mut rows = Vec::with_capacity(values.len());
                for v in values {
                    rows.push(self.row_id(state, schema, v)?);
                }
                Query::Get { rows }
            }
            IndexLookup::Equality { column, values } => {
                let c = schema.position(column)?;
                let t = self.table(state, schema)?;
                let key = token_key(&self.master, t, schema, c);
                Query::Equal {
                    column: column_id(c),
                    values: values
                        .iter()
                        .map(|v| Ok(key.eq_token(&encode_key(v)?)))
                        .collect::<Result<_>>()?,
                }
            }
            IndexLookup::Range {
                column,
                low,
                high,
                order,
                limit,
            } => {
                let c = schema.position(column)?;
                let prefix = schema
                    .columns
                    .get(c)
                    .is_some_and(|col| col.ty.btree_orders_by_prefix());
                let t = self.table(state, schema)?;
                let enc = ope_encoder(&self.master, t, schema, c)?;
                let mut bound = |b: &Bound<Value>| -> Result<Bound<wwt_index::OpeCiphertext>> {
                    let mut map = |v: &Value| -> Result<wwt_index::OpeCiphertext> {
                        let x = ordered(v).ok_or_else(|| {
                            ClientError::Query(wwt_query::Error::TypeMismatch(format!(
                                "{} cannot bound a btree range",
                                v.to_sql()
                            )))
                        })?;
                        enc.encrypt(x).map_err(|e| {
                            ClientError::Setup(format!("order-preserving encryption: {e}"))
                        })
                    };
                    Ok(match b {
                        Bound::Unbounded => Bound::Unbounded,
                        Bound::Included(v) => Bound::Included(map(v)?),
                        // Text is ordered by its first 8 bytes: widen, the client re-checks.
                        Bound::Excluded(v) if prefix => Bound::Included(map(v)?),
                        Bound::Excluded(v) => Bound::Excluded(map(v)?),
                    })
                };
                let lower = bound(low)?;
                let upper = bound(high)?;
                Query::Range {
                    column: column_id(c),
                    lower,
                    upper,
                    order: match order {
                        Some(Direction::Descending) => Order::Desc,
                        _ => Order::Asc,
                    },
                    // The planner pushes no limit on text (ordered by its first 8 bytes).
                    limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
                }
            }
            IndexLookup::FullText {
                column,
                query,
                limit,
            } => {
                let (column, expr) = self.text_query(state, schema, column, query)?;
                match ranked(*limit) {
                    Some(limit) => Query::Text {
                        column,
                        expr,
                        limit,
                        order: TextOrder::Score,
                    },
                    None => {
                        let paged = Paged::Text { column, expr };
                        return self.every_page(state, schema, &paged).await;
                    }
                }
            }
        };
        Ok(self
            .index_query(state, schema, query)
            .await?
            .into_iter()
            .map(RowRef::from)
            .collect())
    }

    /// The manifests of `segments`, from memory or the hidden segments table.
    pub(super) async fn manifests(
        &self,
        state: &mut State,
        segments: &[EngineSegmentId],
    ) -> Result<()> {
        let missing = |state: &State| -> Vec<EngineSegmentId> {
            segments
                .iter()
                .filter(|s| !state.manifests.contains_key(s))
                .copied()
                .collect()
        };
        let key = manifest_key(&self.master);
        let ids: Vec<RowId> = missing(state)
            .iter()
            .map(|s| manifest_row(&key, s))
            .collect();
        self.read_manifests(state, &ids, |s| manifest_row(&key, s))
            .await?;
        // Segments written by clients before 2026-12 are filed under their legacy row ids.
        let legacy: Vec<RowId> = missing(state).iter().map(legacy_manifest_row).collect();
        self.read_manifests(state, &legacy, legacy_manifest_row)
            .await
    }

    /// Reads the manifests filed under `rows` into the client's state, checking that each is
    /// filed where `row_of` its segment says.
    async fn read_manifests(
        &self,
        state: &mut State,
        rows: &[RowId],
        row_of: impl Fn(&EngineSegmentId) -> RowId,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let table = self.segments_table();
        let mut cipher = self.blob_cipher(SEGMENTS);
        for chunk in rows.chunks(MAX_LIMIT) {
            let request = QueryTable {
                table,
                query: Query::Get {
                    rows: chunk.to_vec(),
                },
            };
            let QueryOutput::Rows(hits) = self.query_index(state, request).await? else {
                return Err(ClientError::Damaged(
                    "segment manifests answered with counts".into(),
                ));
            };
            for hit in hits {
                let bytes = cipher
                    .open(EngineRowId(hit.row.0), hit.version, &hit.locator)
                    .map_err(|e| ClientError::Damaged(format!("a segment manifest: {e}")))?;
                let m = SegmentManifest::from_bytes(&bytes)?;
                if row_of(&m.segment) != hit.row {
                    return Err(ClientError::Damaged(
                        "a segment manifest is filed under another segment".into(),
                    ));
                }
                state.manifests.insert(m.segment, m);
            }
        }
        Ok(())
    }

    /// The records (parent ‖ row) of `locators`, in order.
    pub(super) async fn read_records(
        &self,
        state: &mut State,
        schema: &TableSchema,
        locators: &[Locator],
    ) -> Result<Vec<Vec<u8>>> {
        let mut segments: Vec<EngineSegmentId> = locators
            .iter()
            .flat_map(|l| l.extents.iter().map(|e| e.segment))
            .collect();
        segments.sort_unstable();
        segments.dedup();
        self.manifests(state, &segments).await?;
        // A segment without a manifest filed was deleted by the owner (its row is a
        // tombstone): the locators were read before a compaction moved the rows.
        if let Some(gone) = segments.iter().find(|s| !state.manifests.contains_key(s)) {
            let rows = locators
                .iter()
                .filter(|l| l.extents.iter().any(|e| e.segment == *gone))
                .map(|l| l.row.to_string())
                .collect();
            return Err(StoreError::RowsLost {
                rows,
                cause: Box::new(StoreError::Deleted {
                    segment: gone.to_string(),
                }),
            }
            .into());
        }
        self.table(state, schema)?;
        let State {
            tables,
            manifests,
            cache,
            ..
        } = state;
        let t = tables
            .get_mut(&schema.name)
            .ok_or_else(|| ClientError::Setup("table state vanished".into()))?;
        Ok(self
            .storage
            .read_rows(&mut t.engine, manifests, locators, cache)
            .await?)
    }

    /// The rows `refs` name, decrypted; with `reads`, also notes what was read of each.
    pub(super) async fn fetch_rows(
        &self,
        state: &mut State,
        schema: &TableSchema,
        refs: &[RowRef],
        mut reads: Option<&mut HashMap<RowId, Read>>,
    ) -> Result<Vec<Row>> {
        let locators: Vec<Locator> = refs
            .iter()
            .map(|r| self.open_locator(state, schema, r.row, r.version, &r.locator))
            .collect::<Result<_>>()?;
        let records = self.read_records(state, schema, &locators).await?;
        let mut rows = Vec::with_capacity(records.len());
        for ((r, l), rec) in refs.iter().zip(&locators).zip(&records) {
            let (_, row) = split_record(rec)?;
            rows.push(decode_row(schema, row)?);
            if let Some(reads) = reads.as_deref_mut() {
                let read = Read {
                    version: r.version,
                    locator: l.to_bytes(),
                    hash: *blake3::hash(rec).as_bytes(),
                };
                reads.insert(r.row, read);
            }
        }
        Ok(rows)
    }
}
