//! The SQL client: [`Client`] runs statements against the network with only the owner's keys
//! on the machine.
//!
//! A statement is parsed and planned by `wwt-query`. Writes seal each row version (AES-SIV),
//! pack and code them into segments, upload the pieces through [`Storage`], and only then
//! send the row's index entries (row id, version, sealed locator, equality tokens, OPE
//! ciphertexts, word tokens) to the index provider in one batch: a statement that fails
//! before that batch leaves nothing visible. Reads ask the index provider for the rows a
//! plan's pushed lookups select, fetch and decode their segments (through a bounded cache of
//! decoded segments), open the rows, and let `wwt-query` evaluate the rest.
//!
//! What leaves the client: sealed rows in coded pieces, sealed segment manifests, sealed
//! locators, sealed catalog, PRF tokens and OPE ciphertexts. Table ids are PRFs of the names.
//!
//! Each row version is a record `format ‖ parent ‖ row`: the parent is the locator and the
//! BLAKE3 hash of the previous version's record, so a row's history is a hash chain that
//! [`Client::history`] walks and checks. Records are authenticated by AES-SIV under the
//! owner's row key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use tokio::sync::Mutex;
use wwt_engine::table::RowWrite;
use wwt_engine::{
    CodingParams, Keystore, Locator, MasterKey, RowCipher, RowId as EngineRowId,
    SegmentId as EngineSegmentId, SegmentManifest, Table,
};
use wwt_index::ope::{u64_from_f64, u64_from_i64, u64_from_text_prefix, u64_from_timestamp_micros};
use wwt_index::{
    Batch, ColumnId, MAX_LIMIT, OpeEncoder, OpeKey, Order, Query, QueryOutput, RowEntries, RowHit,
    RowId, RowOp, TableId, TableSchema as StoreSchema, TextExpr, TextOptions, TokenKey,
};
use wwt_net::index::{ApplyBatch, CreateTable, GetCatalog, PutCatalog, QueryTable};
use wwt_net::types::NodeId;
use wwt_net::{Connector, Identity, IndexApi, NetError};
use wwt_query::plan::{DeletePlan, InsertPlan, UpdatePlan};
use wwt_query::{
    AccessPath, Catalog, Direction, FtQuery, IndexKind, IndexLookup, Outcome, Plan, ResultSet, Row,
    RowSource, SelectPlan, SelectStream, TableSchema, Value, decode_row, encode_key, encode_row,
    execute_delete, execute_select, execute_update, pushdown_keys, streams,
};

use crate::store::{SEGMENTS_IN_FLIGHT, SegmentCache, Storage, StorageConfig, StoreError};

/// Where a client finds the network, and how it codes and caches.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Trackers, `(node id, address)`.
    pub trackers: Vec<(NodeId, String)>,
    /// The index provider's address.
    pub index: String,
    /// Timeouts and retries of the storage path.
    pub storage: StorageConfig,
    /// Reed–Solomon coding of new segments.
    pub coding: CodingParams,
    /// Largest segment, in bytes.
    pub segment_size: usize,
    /// Bytes of decoded segments kept in memory for reads.
    pub cache_bytes: usize,
    /// Rows read and decrypted per batch of a streamed SELECT ([`Client::query`]).
    pub stream_batch: usize,
}

impl ClientConfig {
    /// Defaults for the given trackers and index provider: RS 4+2, 1 MiB segments, a
    /// 256 MiB segment cache, 2,048-row stream batches.
    pub fn new(trackers: Vec<(NodeId, String)>, index: String) -> Self {
        Self {
            trackers,
            index,
            storage: StorageConfig::default(),
            coding: CodingParams::default(),
            segment_size: 1 << 20,
            cache_bytes: 256 << 20,
            stream_batch: 2048,
        }
    }
}

/// What went wrong with a statement or a connection, named for what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The statement was refused (syntax, names, types, constraints, unsupported SQL).
    #[error(transparent)]
    Query(#[from] wwt_query::Error),
    /// Rows could not be stored or read back.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index provider refused or could not be reached.
    #[error("index provider: {0}")]
    Index(NetError),
    /// Another client changed the catalog while this one did: run the statement again.
    #[error(
        "the catalog changed under this statement (another client created a table or index); run it again"
    )]
    CatalogRace,
    /// Stored data did not decode or authenticate: it was altered, or belongs to other keys.
    #[error("stored data is damaged or not ours: {0}")]
    Damaged(String),
    /// The client cannot run here.
    #[error("{0}")]
    Setup(String),
}

impl From<wwt_engine::Error> for ClientError {
    fn from(e: wwt_engine::Error) -> Self {
        ClientError::Damaged(e.to_string())
    }
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A row as the index provider names it: id, version and sealed locator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowRef {
    row: RowId,
    version: u64,
    locator: Vec<u8>,
}

impl From<RowHit> for RowRef {
    fn from(h: RowHit) -> Self {
        RowRef {
            row: h.row,
            version: h.version,
            locator: h.locator,
        }
    }
}

/// One version of a row, from [`Client::history`].
#[derive(Clone, Debug, PartialEq)]
pub struct RowVersion {
    /// The version (microseconds since the epoch when it was written, made unique).
    pub version: u64,
    /// The row's values.
    pub row: Row,
}

/// The per-table state a client keeps: keys, cipher, codec and OPE caches.
struct TableState {
    engine: Table,
    /// The index table in use; a new CREATE INDEX builds the next generation.
    generation: u64,
    /// Seals the locators the index provider keeps (AAD: row id and version).
    locators: RowCipher,
    tokens: HashMap<usize, TokenKey>,
    ope: HashMap<usize, OpeEncoder>,
}

/// Everything behind the client's lock.
struct State {
    catalog: Catalog,
    catalog_version: u64,
    tables: HashMap<String, TableState>,
    manifests: HashMap<EngineSegmentId, SegmentManifest>,
    cache: SegmentCache,
    last_version: u64,
}

/// Hidden index tables and sealed blobs use names no SQL identifier can take.
const SEGMENTS: &str = "\0segments";
const CATALOG: &str = "\0catalog";
const RECORD_FORMAT: u8 = 1;

/// A connected client: one owner's keys, the storage path and an index provider.
pub struct Client {
    master: MasterKey,
    identity: Identity,
    storage: Storage,
    index: Arc<dyn IndexApi>,
    config: ClientConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.identity)
            .field("index", &self.config.index)
            .finish_non_exhaustive()
    }
}

/// True if `e` may come from a catalog that another client changed since this one read it (a
/// table created or dropped elsewhere, an index generation replaced): read it again and retry.
fn stale_catalog(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Query(wwt_query::Error::UnknownTable { .. })
            | ClientError::Index(NetError::NotFound(_))
    )
}

fn index_err(e: NetError) -> ClientError {
    ClientError::Index(e)
}

fn source_err(e: ClientError) -> wwt_query::Error {
    match e {
        ClientError::Query(q) => q,
        other => wwt_query::Error::Source(Box::new(other)),
    }
}

/// An evaluator's error, with what the client as its row source failed with ([`source_err`])
/// unwrapped again: a statement fails with the same error however it was evaluated.
fn from_source(e: wwt_query::Error) -> ClientError {
    match e {
        wwt_query::Error::Source(inner) => match inner.downcast::<ClientError>() {
            Ok(e) => *e,
            Err(other) => ClientError::Query(wwt_query::Error::Source(other)),
        },
        e => ClientError::Query(e),
    }
}

fn column_id(position: usize) -> ColumnId {
    ColumnId(position as u32)
}

/// The unsigned order a btree index encrypts: exact for numbers, booleans and timestamps,
/// the first 8 bytes for text (so text ranges are widened and re-checked on the client).
fn ordered(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => Some(u64_from_i64(*i)),
        Value::Double(d) => Some(u64_from_f64(if *d == 0.0 { 0.0 } else { *d })),
        Value::Timestamp(t) => Some(u64_from_timestamp_micros(*t)),
        Value::Bool(b) => Some(u64::from(*b)),
        Value::Text(s) => Some(u64_from_text_prefix(s)),
        Value::Blob(_) | Value::Null => None,
    }
}

impl Client {
    /// Connects as the keystore's owner: reads and opens the owner's catalog at the index
    /// provider, so tables created on another machine are there.
    ///
    /// Statements run the query evaluator on the calling thread and block it on the network
    /// (`tokio::task::block_in_place`): use a multi-threaded runtime.
    pub async fn connect(
        keystore: &Keystore,
        connector: Arc<dyn Connector>,
        config: ClientConfig,
    ) -> Result<Client> {
        let identity = Identity::from_secret(keystore.identity.to_bytes());
        let storage = Storage::new(
            identity.clone(),
            &config.trackers,
            connector.clone(),
            config.storage.clone(),
        )?;
        let index = connector.index(&config.index).map_err(index_err)?;
        let client = Client {
            master: keystore.master.clone(),
            identity,
            storage,
            index,
            state: Mutex::new(State {
                catalog: Catalog::new(),
                catalog_version: 0,
                tables: HashMap::new(),
                manifests: HashMap::new(),
                cache: SegmentCache::new(config.cache_bytes),
                last_version: 0,
            }),
            config,
        };
        {
            let mut state = client.state.lock().await;
            client.reload_catalog(&mut state).await?;
        }
        Ok(client)
    }

    /// The catalog as this client last read or wrote it.
    pub async fn catalog(&self) -> Catalog {
        self.state.lock().await.catalog.clone()
    }

    /// Runs each statement of `sql` in turn and returns what each did; stops at the first
    /// error (that statement leaves nothing visible).
    pub async fn execute(&self, sql: &str) -> Result<Vec<Outcome>> {
        self.execute_parsed(wwt_query::parse(sql)?).await
    }

    /// [`Client::execute`] for statements already parsed.
    pub async fn execute_parsed(
        &self,
        statements: Vec<wwt_query::Statement>,
    ) -> Result<Vec<Outcome>> {
        let mut out = Vec::with_capacity(statements.len());
        let mut state = self.state.lock().await;
        for stmt in statements {
            let outcome = match self.run(&mut state, &stmt).await {
                Err(e) if stale_catalog(&e) => {
                    self.reload_catalog(&mut state).await?;
                    self.run(&mut state, &stmt).await?
                }
                other => other?,
            };
            out.push(outcome);
        }
        Ok(out)
    }

    /// Plans `stmt` against the catalog as this client knows it, and applies the plan.
    async fn run(&self, state: &mut State, stmt: &wwt_query::Statement) -> Result<Outcome> {
        let plan = wwt_query::plan(&state.catalog, stmt)?;
        self.apply(state, &plan).await
    }

    /// Runs one SELECT and returns its rows as a stream. A SELECT over one table without
    /// aggregates or ORDER BY reads and decrypts its rows a batch at a time
    /// ([`ClientConfig::stream_batch`]) and stops reading once LIMIT is reached, so memory stays
    /// bounded however many rows it returns; any other SELECT computes its rows first.
    ///
    /// The stream holds the client: other statements on this client wait until it is dropped.
    pub async fn query(&self, sql: &str) -> Result<RowStream<'_>> {
        let mut statements = wwt_query::parse(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => self.query_parsed(statement).await,
            _ => Err(wwt_query::Error::Unsupported {
                what: "query with other than one statement".into(),
                hint: "pass one SELECT to query, or use execute for scripts".into(),
            }
            .into()),
        }
    }

    /// [`Client::query`] for a statement already parsed.
    pub async fn query_parsed(&self, statement: wwt_query::Statement) -> Result<RowStream<'_>> {
        let mut state = self.state.lock().await;
        let open = |state: &mut State| -> Result<(Vec<String>, Cursor)> {
            let Plan::Select(plan) = wwt_query::plan(&state.catalog, &statement)? else {
                return Err(wwt_query::Error::Unsupported {
                    what: "query with a statement other than SELECT".into(),
                    hint: "use execute for statements that change data or schema".into(),
                }
                .into());
            };
            Ok((plan.columns.clone(), self.open_cursor(state, &plan)?))
        };
        let (columns, cursor) = match open(&mut state) {
            Err(e) if stale_catalog(&e) => {
                self.reload_catalog(&mut state).await?;
                open(&mut state)?
            }
            other => other?,
        };
        Ok(RowStream {
            client: self,
            state,
            columns,
            cursor,
            buffered: std::collections::VecDeque::new(),
        })
    }

    /// Starts reading a SELECT: a streaming plan's keys, or every result of another plan.
    fn open_cursor(&self, state: &mut State, plan: &SelectPlan) -> Result<Cursor> {
        if !streams(plan) {
            let (rows, _) = self.with_source(state, false, |s| execute_select(plan, s))?;
            return Ok(Cursor::Ready(Some(rows.rows)));
        }
        let select = SelectStream::new(plan.clone())?;
        let (keys, scan) = match &select.access().path {
            AccessPath::FullScan => (Vec::new(), Some(None)),
            AccessPath::Index(p) => {
                let table = &select.access().table;
                let (keys, _) = self.with_source(state, false, |s| pushdown_keys(s, table, p))?;
                (keys, None)
            }
        };
        Ok(Cursor::Streaming {
            select: Box::new(select),
            keys: keys.into(),
            scan,
        })
    }

    /// The next rows of `cursor`, or `None` when it is done.
    async fn next_batch(&self, state: &mut State, cursor: &mut Cursor) -> Result<Option<Vec<Row>>> {
        let (select, keys, scan) = match cursor {
            Cursor::Ready(rows) => return Ok(rows.take().filter(|r| !r.is_empty())),
            Cursor::Streaming { select, keys, scan } => (select, keys, scan),
        };
        let batch = self.config.stream_batch.clamp(1, MAX_LIMIT);
        while !select.finished() {
            if keys.is_empty()
                && let Some(after) = scan
            {
                let (page, next) = self
                    .scan_page(state, &select.access().table, *after, batch)
                    .await?;
                *scan = next.map(Some);
                keys.extend(page);
            }
            if keys.is_empty() {
                break;
            }
            let chunk: Vec<RowRef> = keys.drain(..batch.min(keys.len())).collect();
            let rows = self
                .fetch_rows(state, &select.access().table, &chunk, None)
                .await?;
            let out = select.push(rows)?;
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Inserts rows (one value per column, in column order) into `table` without SQL text:
    /// the fast path for bulk loads.
    pub async fn insert_rows(&self, table: &str, rows: Vec<Row>) -> Result<usize> {
        let mut state = self.state.lock().await;
        let schema = state.catalog.table(table)?.clone();
        let mut coerced = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != schema.columns.len() {
                return Err(wwt_query::Error::Constraint(format!(
                    "table `{table}` has {} columns but a row has {} values",
                    schema.columns.len(),
                    row.len()
                ))
                .into());
            }
            coerced.push(
                row.into_iter()
                    .zip(&schema.columns)
                    .map(|(v, c)| v.coerce_to(c.ty))
                    .collect::<wwt_query::Result<Row>>()?,
            );
        }
        let plan = InsertPlan {
            table: schema,
            rows: coerced,
        };
        self.insert(&mut state, &plan).await
    }

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
            let record = self
                .read_records(&mut state, &schema, std::slice::from_ref(&locator))
                .await?
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

    async fn apply(&self, state: &mut State, plan: &Plan) -> Result<Outcome> {
        match plan {
            Plan::CreateTable(t) => {
                let mut next = state.catalog.clone();
                next.add_table(t.clone())?;
                // A fresh generation (the clock, like versions): a table dropped earlier under
                // this name may have left its index namespace behind.
                let generation = self.next_version(state, 0);
                self.create_index_table(t, generation).await?;
                self.save_catalog(state, next, &[(t.name.clone(), generation)])
                    .await?;
                Ok(Outcome::Created)
            }
            Plan::DropTable { table: None } => Ok(Outcome::Dropped),
            Plan::DropTable { table: Some(name) } => {
                let mut next = state.catalog.clone();
                next.remove_table(name)?;
                // A table never opened has generation 0 (as `table` would set up).
                let generation = state.tables.get(name).map_or(0, |t| t.generation);
                self.save_catalog(state, next, &[]).await?;
                state.tables.remove(name);
                // The table is gone for every client; its index namespace is freed next. The
                // sealed rows stay in their pieces, unreferenced (there is no delete yet).
                if let Err(e) = self.drop_index_table(name, generation).await {
                    tracing::warn!("table dropped, but its index namespace was not freed: {e}");
                }
                Ok(Outcome::Dropped)
            }
            Plan::CreateIndex { table, index } => {
                let mut next = state.catalog.clone();
                next.add_index(table, index.clone())?;
                let schema = next.table(table)?.clone();
                let old = state.catalog.table(table)?.clone();
                let generation = self.table(state, &old)?.generation + 1;
                self.build_index_table(state, &old, &schema, generation)
                    .await?;
                self.save_catalog(state, next, &[(table.clone(), generation)])
                    .await?;
                // The previous generation is no longer read: free it at the index provider.
                self.drop_index_table(table, generation - 1).await?;
                Ok(Outcome::Created)
            }
            Plan::Explain(p) => Ok(Outcome::Explain(p.explain())),
            Plan::Select(p) => {
                let mut cursor = self.open_cursor(state, p)?;
                let mut rows = Vec::new();
                while let Some(batch) = self.next_batch(state, &mut cursor).await? {
                    rows.extend(batch);
                }
                Ok(Outcome::Rows(ResultSet {
                    columns: p.columns.clone(),
                    rows,
                }))
            }
            Plan::Insert(p) => Ok(Outcome::Inserted(self.insert(state, p).await?)),
            Plan::Update(p) => Ok(Outcome::Updated(self.update(state, p).await?)),
            Plan::Delete(p) => Ok(Outcome::Deleted(self.delete(state, p).await?)),
        }
    }

    /// Runs the synchronous evaluator with this client as its row source; with `remember`,
    /// also returns what it read of each fetched row (an UPDATE's parents, a DELETE's
    /// versions).
    fn with_source<T>(
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

    fn next_version(&self, state: &mut State, previous: u64) -> u64 {
        let now = wwt_net::now_ms().saturating_mul(1000);
        let v = now.max(state.last_version + 1).max(previous + 1);
        state.last_version = v;
        v
    }

    fn table<'s>(&self, state: &'s mut State, schema: &TableSchema) -> Result<&'s mut TableState> {
        if !state.tables.contains_key(&schema.name) {
            let engine = Table::new(
                &self.master,
                &schema.name,
                self.config.coding,
                self.config.segment_size,
            )?;
            let locators = self.blob_cipher(&format!("\0locators {}", schema.name));
            state.tables.insert(
                schema.name.clone(),
                TableState {
                    engine,
                    locators,
                    generation: 0,
                    tokens: HashMap::new(),
                    ope: HashMap::new(),
                },
            );
        }
        state
            .tables
            .get_mut(&schema.name)
            .ok_or_else(|| ClientError::Setup("table state vanished".into()))
    }

    /// The hidden namespace of sealed segment manifests.
    fn segments_table(&self) -> TableId {
        TableId(self.master.table_id(SEGMENTS).0)
    }

    fn index_table_id(&self, name: &str, generation: u64) -> TableId {
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
    async fn drop_index_table(&self, name: &str, generation: u64) -> Result<()> {
        let table = self.index_table_id(name, generation);
        match self
            .index
            .drop_table(self.sign(wwt_net::index::DropTable { table })?)
            .await
        {
            Ok(()) | Err(NetError::NotFound(_)) => Ok(()),
            Err(e) => Err(index_err(e)),
        }
    }

    async fn create_index_table(&self, schema: &TableSchema, generation: u64) -> Result<()> {
        let request = CreateTable {
            table: self.index_table_id(&schema.name, generation),
            schema: Self::store_schema(schema),
        };
        match self.index.create_table(self.sign(request)?).await {
            // Left over by a statement that failed after creating it: empty, or rebuilt below.
            Ok(()) | Err(NetError::Conflict(_)) => Ok(()),
            Err(e) => Err(index_err(e)),
        }
    }

    /// Builds generation `generation` of the table's index table with `schema`'s indexes
    /// from the rows of the current one; the catalog switches to it afterwards.
    async fn build_index_table(
        &self,
        state: &mut State,
        old: &TableSchema,
        schema: &TableSchema,
        generation: u64,
    ) -> Result<()> {
        let target = self.index_table_id(&schema.name, generation);
        // A failed earlier attempt may have left a partial table: start from nothing.
        self.drop_index_table(&schema.name, generation).await?;
        self.create_index_table(schema, generation).await?;
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
            self.index
                .apply(self.sign(ApplyBatch {
                    table: target,
                    batch: Batch { ops },
                })?)
                .await
                .map_err(index_err)?;
        }
        Ok(())
    }

    fn sign<T: wwt_net::auth::Body>(&self, body: T) -> Result<wwt_net::Signed<T>> {
        self.identity.sign(body).map_err(index_err)
    }

    /// Reads the owner's catalog from the index provider and opens it.
    async fn reload_catalog(&self, state: &mut State) -> Result<()> {
        let blob = self
            .index
            .catalog(self.sign(GetCatalog)?)
            .await
            .map_err(index_err)?;
        let (catalog, generations) = if blob.version > 0 {
            let text = self
                .blob_cipher(CATALOG)
                .open(EngineRowId([0; 16]), blob.version, &blob.blob)
                .map_err(|e| ClientError::Damaged(format!("the catalog: {e}")))?;
            parse_catalog(&text)?
        } else {
            (Catalog::new(), Vec::new())
        };
        state.catalog = catalog;
        state.catalog_version = blob.version;
        for (name, generation) in generations {
            let schema = state.catalog.table(&name)?.clone();
            self.table(state, &schema)?.generation = generation;
        }
        Ok(())
    }

    /// Seals and writes `next` as the catalog (if nobody wrote one since this client read
    /// it), then makes it current with the given table generations.
    async fn save_catalog(
        &self,
        state: &mut State,
        next: Catalog,
        generations: &[(String, u64)],
    ) -> Result<()> {
        let generation_of = |name: &str, state: &State| {
            generations
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, g)| *g)
                .or_else(|| state.tables.get(name).map(|t| t.generation))
                .unwrap_or(0)
        };
        let text = catalog_text(&next, |name| generation_of(name, state));
        let version = state.catalog_version + 1;
        let sealed = self
            .blob_cipher(CATALOG)
            .seal(EngineRowId([0; 16]), version, text.as_bytes());
        let put = PutCatalog {
            expected_version: state.catalog_version,
            blob: sealed,
        };
        match self.index.put_catalog(self.sign(put)?).await {
            Ok(v) => {
                state.catalog_version = v;
                state.catalog = next;
                for (name, g) in generations {
                    let schema = state.catalog.table(name)?.clone();
                    self.table(state, &schema)?.generation = *g;
                }
                Ok(())
            }
            Err(NetError::Precondition(_)) => {
                self.reload_catalog(state).await?;
                Err(ClientError::CatalogRace)
            }
            Err(e) => Err(index_err(e)),
        }
    }

    fn blob_cipher(&self, name: &str) -> RowCipher {
        blob_cipher(&self.master, name)
    }

    fn row_id(&self, state: &mut State, schema: &TableSchema, key: &Value) -> Result<RowId> {
        let bytes = encode_key(key)?;
        Ok(RowId(
            self.table(state, schema)?
                .engine
                .keys()
                .row_id
                .row_id(&bytes)
                .0,
        ))
    }

    /// The index entries of row versions `(row, version, sealed locator, values)`. Each
    /// btree column's values are encrypted in one batch (its cache misses on every core).
    fn entries<'r>(
        &self,
        state: &mut State,
        schema: &TableSchema,
        versions: impl IntoIterator<Item = (RowId, u64, Vec<u8>, &'r [Value])>,
    ) -> Result<Vec<RowEntries>> {
        let t = self.table(state, schema)?;
        let mut values = Vec::new();
        let mut out = Vec::new();
        for (row, version, locator, v) in versions {
            values.push(v);
            out.push(RowEntries {
                row,
                version,
                locator,
                equality: Vec::new(),
                range: Vec::new(),
                text: Vec::new(),
            });
        }
        for index in &schema.indexes {
            let Some(c) = schema.column_index(&index.column) else {
                continue;
            };
            let column = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.get(c).filter(|v| !v.is_null()).map(|v| (i, v)));
            match index.kind {
                IndexKind::Hash => {
                    let key = token_key(&self.master, t, schema, c);
                    for (i, v) in column {
                        out[i]
                            .equality
                            .push((column_id(c), key.eq_token(&encode_key(v)?)));
                    }
                }
                IndexKind::FullText => {
                    let key = token_key(&self.master, t, schema, c);
                    for (i, v) in column {
                        if let Value::Text(text) = v {
                            out[i].text.push((
                                column_id(c),
                                key.text_tokens(text, &TextOptions::default()),
                            ));
                        }
                    }
                }
                IndexKind::BTree => {
                    let (at, xs): (Vec<usize>, Vec<u64>) =
                        column.filter_map(|(i, v)| Some((i, ordered(v)?))).unzip();
                    let enc = ope_encoder(&self.master, t, schema, c)?;
                    let cts = enc.encrypt_batch(&xs).map_err(|e| {
                        ClientError::Setup(format!("order-preserving encryption: {e}"))
                    })?;
                    for (i, ct) in at.into_iter().zip(cts) {
                        out[i].range.push((column_id(c), ct));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Opens a sealed locator the index provider returned for `row` at `version`.
    fn open_locator(
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

    async fn insert(&self, state: &mut State, plan: &InsertPlan) -> Result<usize> {
        let schema = &plan.table;
        let mut ids = Vec::with_capacity(plan.rows.len());
        let mut seen = HashSet::new();
        for row in &plan.rows {
            let id = self.row_id(state, schema, &row[schema.primary_key])?;
            if !seen.insert(id) {
                return Err(wwt_query::Error::Constraint(format!(
                    "the statement inserts the primary key {} twice",
                    row[schema.primary_key].to_sql()
                ))
                .into());
            }
            ids.push(id);
        }
        for chunk in ids.chunks(MAX_LIMIT) {
            let existing = self
                .index_query(
                    state,
                    schema,
                    Query::Get {
                        rows: chunk.to_vec(),
                    },
                )
                .await?;
            if let Some(hit) = existing.first() {
                let i = ids.iter().position(|r| *r == hit.row).unwrap_or(0);
                return Err(wwt_query::Error::Constraint(format!(
                    "`{}` already has a row with primary key {}; UPDATE it or DELETE it first",
                    schema.name,
                    plan.rows[i][schema.primary_key].to_sql()
                ))
                .into());
            }
        }
        let writes: Vec<Write<'_>> = ids
            .iter()
            .zip(&plan.rows)
            .map(|(id, row)| (*id, None, row))
            .collect();
        self.write_versions(state, schema, &writes, &[]).await
    }

    async fn update(&self, state: &mut State, plan: &UpdatePlan) -> Result<usize> {
        let schema = &plan.access.table;
        let (changes, reads) = self.with_source(state, true, |s| execute_update(plan, s))?;
        // Each changed row's version as the statement read it is the new version's parent.
        let mut writes: Vec<Write<'_>> = Vec::with_capacity(changes.len());
        let mut previous = Vec::with_capacity(changes.len());
        for (old, new) in &changes {
            let id = self.row_id(state, schema, &old[schema.primary_key])?;
            let read = reads.get(&id).ok_or_else(|| unread(id))?;
            writes.push((id, Some((read.locator.clone(), read.hash)), new));
            previous.push(read.version);
        }
        if writes.is_empty() {
            return Ok(0);
        }
        self.write_versions(state, schema, &writes, &previous).await
    }

    async fn delete(&self, state: &mut State, plan: &DeletePlan) -> Result<usize> {
        let schema = &plan.access.table;
        let (gone, reads) = self.with_source(state, true, |s| execute_delete(plan, s))?;
        if gone.is_empty() {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(gone.len());
        for row in &gone {
            let id = self.row_id(state, schema, &row[schema.primary_key])?;
            let previous = reads.get(&id).ok_or_else(|| unread(id))?.version;
            let version = self.next_version(state, previous);
            ops.push(RowOp::Delete { row: id, version });
        }
        let n = ops.len();
        self.apply_batch(state, schema, ops).await?;
        Ok(n)
    }

    /// Seals, codes and uploads one version of each row, then sends their index entries in
    /// one batch. `previous[i]` is the version being replaced (none for inserts).
    async fn write_versions(
        &self,
        state: &mut State,
        schema: &TableSchema,
        writes: &[Write<'_>],
        previous: &[u64],
    ) -> Result<usize> {
        let mut records = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        for (i, (_, parent, row)) in writes.iter().enumerate() {
            let encoded = encode_row(schema, row)?;
            records.push(make_record(parent.as_ref(), &encoded));
            versions.push(self.next_version(state, previous.get(i).copied().unwrap_or(0)));
        }
        let batch = {
            let t = self.table(state, schema)?;
            t.engine
                .write(writes.iter().zip(&records).zip(&versions).map(
                    |(((id, _, _), record), version)| RowWrite {
                        row: EngineRowId(id.0),
                        version: *version,
                        plaintext: record,
                    },
                ))
        };
        // Pieces first, then manifests (sealed, in the hidden segments table), then rows:
        // until the row entries land, nothing of this statement is visible. A failed upload
        // returns before any manifest is written, leaving at most unreferenced pieces.
        let mut manifest_ops = Vec::with_capacity(batch.segments.len());
        // Each segment is entrusted to its tracker for audits and repair (audit key only).
        let audit = self.table(state, schema)?.engine.keys().audit.clone();
        let mut puts = stream::iter(&batch.segments)
            .map(|s| self.storage.put_audited(s, &audit))
            .buffer_unordered(SEGMENTS_IN_FLIGHT);
        while let Some(put) = puts.next().await {
            put?;
        }
        let mut manifest_cipher = self.blob_cipher(SEGMENTS);
        for seg in &batch.segments {
            let id = manifest_row(&seg.manifest.segment);
            let sealed = manifest_cipher.seal(EngineRowId(id.0), 1, &seg.manifest.to_bytes());
            manifest_ops.push(RowOp::Put(RowEntries {
                row: id,
                version: 1,
                locator: sealed,
                equality: Vec::new(),
                range: Vec::new(),
                text: Vec::new(),
            }));
            state
                .manifests
                .insert(seg.manifest.segment, seg.manifest.clone());
        }
        self.put_manifests(manifest_ops).await?;
        let locators = &mut self.table(state, schema)?.locators;
        let mut versions = Vec::with_capacity(writes.len());
        for ((id, _, row), locator) in writes.iter().zip(&batch.locators) {
            let sealed = locators.seal(locator.row, locator.version, &locator.to_bytes());
            versions.push((*id, locator.version, sealed, row.as_slice()));
        }
        let ops: Vec<RowOp> = self
            .entries(state, schema, versions)?
            .into_iter()
            .map(RowOp::Put)
            .collect();
        let n = ops.len();
        self.apply_batch(state, schema, ops).await?;
        Ok(n)
    }

    async fn put_manifests(&self, ops: Vec<RowOp>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let table = self.segments_table();
        let apply = |ops: Vec<RowOp>| ApplyBatch {
            table,
            batch: Batch { ops },
        };
        match self.index.apply(self.sign(apply(ops.clone()))?).await {
            Ok(_) => Ok(()),
            Err(NetError::NotFound(_)) => {
                let create = CreateTable {
                    table,
                    schema: StoreSchema::default(),
                };
                match self.index.create_table(self.sign(create)?).await {
                    Ok(()) | Err(NetError::Conflict(_)) => {}
                    Err(e) => return Err(index_err(e)),
                }
                self.index
                    .apply(self.sign(apply(ops))?)
                    .await
                    .map_err(index_err)?;
                Ok(())
            }
            Err(e) => Err(index_err(e)),
        }
    }

    async fn apply_batch(
        &self,
        state: &mut State,
        schema: &TableSchema,
        ops: Vec<RowOp>,
    ) -> Result<()> {
        let generation = self.table(state, schema)?.generation;
        let request = ApplyBatch {
            table: self.index_table_id(&schema.name, generation),
            batch: Batch { ops },
        };
        self.index
            .apply(self.sign(request)?)
            .await
            .map_err(index_err)?;
        Ok(())
    }

    async fn index_query(
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
        match self.index.query(self.sign(request)?).await {
            Ok(QueryOutput::Rows(hits)) => Ok(hits),
            Ok(QueryOutput::Counts(_)) => Err(ClientError::Index(NetError::Internal(
                "the index provider answered a row query with counts".into(),
            ))),
            Err(e) => Err(index_err(e)),
        }
    }

    async fn scan(&self, state: &mut State, schema: &TableSchema) -> Result<Vec<RowRef>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self.scan_page(state, schema, after, MAX_LIMIT).await?;
            out.extend(page);
            match next {
                Some(row) => after = Some(row),
                None => return Ok(out),
            }
        }
    }

    /// Up to `limit` rows of a full scan in row-id order, from after `after`; and the row to
    /// continue after, `None` when the scan is done.
    async fn scan_page(
        &self,
        state: &mut State,
        schema: &TableSchema,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<(Vec<RowRef>, Option<RowId>)> {
        let page = self
            .index_query(state, schema, Query::Scan { after, limit })
            .await?;
        let next = match page.last() {
            Some(last) if page.len() == limit => Some(last.row),
            _ => None,
        };
        Ok((page.into_iter().map(RowRef::from).collect(), next))
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
                let c = schema.position(column)?;
                let t = self.table(state, schema)?;
                let key = token_key(&self.master, t, schema, c);
                let expr = text_expr(&key, query);
                let want = limit.map_or(MAX_LIMIT, |l| usize::try_from(l).unwrap_or(MAX_LIMIT));
                let hits = self
                    .index_query(
                        state,
                        schema,
                        Query::Text {
                            column: column_id(c),
                            expr,
                            limit: want.clamp(1, MAX_LIMIT),
                        },
                    )
                    .await?;
                if limit.is_none() && hits.len() == MAX_LIMIT {
                    return Err(wwt_query::Error::Unsupported {
                        what: format!("a full-text match of more than {MAX_LIMIT} rows"),
                        hint: "add LIMIT (the best-ranked rows first) or narrow the match".into(),
                    }
                    .into());
                }
                return Ok(hits.into_iter().map(RowRef::from).collect());
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
    async fn manifests(&self, state: &mut State, segments: &[EngineSegmentId]) -> Result<()> {
        let missing: Vec<RowId> = segments
            .iter()
            .filter(|s| !state.manifests.contains_key(s))
            .map(manifest_row)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let table = self.segments_table();
        let mut cipher = self.blob_cipher(SEGMENTS);
        for chunk in missing.chunks(MAX_LIMIT) {
            let request = QueryTable {
                table,
                query: Query::Get {
                    rows: chunk.to_vec(),
                },
            };
            let QueryOutput::Rows(hits) = self
                .index
                .query(self.sign(request)?)
                .await
                .map_err(index_err)?
            else {
                return Err(ClientError::Damaged(
                    "segment manifests answered with counts".into(),
                ));
            };
            for hit in hits {
                let bytes = cipher
                    .open(EngineRowId(hit.row.0), hit.version, &hit.locator)
                    .map_err(|e| ClientError::Damaged(format!("a segment manifest: {e}")))?;
                let m = SegmentManifest::from_bytes(&bytes)?;
                if manifest_row(&m.segment) != hit.row {
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
    async fn read_records(
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
    async fn fetch_rows(
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

/// Where a SELECT's reading stands.
enum Cursor {
    /// Every result row, computed up front (joins, aggregates, ORDER BY); taken once.
    Ready(Option<Vec<Row>>),
    /// A streaming plan: the keys still to read and, for a full scan, where the next page of
    /// keys starts (`Some(None)`: from the first row).
    Streaming {
        select: Box<SelectStream>,
        keys: VecDeque<RowRef>,
        scan: Option<Option<RowId>>,
    },
}

/// The rows of one SELECT, read as they are consumed ([`Client::query`]).
pub struct RowStream<'c> {
    client: &'c Client,
    state: tokio::sync::MutexGuard<'c, State>,
    columns: Vec<String>,
    cursor: Cursor,
    buffered: VecDeque<Row>,
}

impl std::fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl RowStream<'_> {
    /// The output column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The next batch of rows (never empty), or `None` after the last.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Row>>> {
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.drain(..).collect()));
        }
        self.client
            .next_batch(&mut self.state, &mut self.cursor)
            .await
    }

    /// The next row, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Row>> {
        if self.buffered.is_empty()
            && let Some(batch) = self
                .client
                .next_batch(&mut self.state, &mut self.cursor)
                .await?
        {
            self.buffered = batch.into();
        }
        Ok(self.buffered.pop_front())
    }
}

fn token_key(master: &MasterKey, t: &mut TableState, schema: &TableSchema, c: usize) -> TokenKey {
    let table = t.engine.keys().id;
    t.tokens
        .entry(c)
        .or_insert_with(|| {
            let name = &schema.columns[c].name;
            TokenKey::new(*master.token_key(table, name).as_bytes())
        })
        .clone()
}

fn ope_encoder<'t>(
    master: &MasterKey,
    t: &'t mut TableState,
    schema: &TableSchema,
    c: usize,
) -> Result<&'t mut OpeEncoder> {
    let table = t.engine.keys().id;
    match t.ope.entry(c) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(v) => {
            let name = &schema.columns[c].name;
            let enc = OpeEncoder::new(OpeKey::new(*master.ope_key(table, name).as_bytes()))
                .map_err(|e| ClientError::Setup(format!("order-preserving encryption: {e}")))?;
            Ok(v.insert(enc))
        }
    }
}

fn text_expr(key: &TokenKey, q: &FtQuery) -> TextExpr {
    match q {
        FtQuery::Word(w) => match key.query_token(w, &TextOptions::default()) {
            Some(t) => TextExpr::Term(t),
            // A "word" with no letters or digits matches nothing.
            None => TextExpr::Or(Vec::new()),
        },
        FtQuery::And(parts) => TextExpr::And(parts.iter().map(|p| text_expr(key, p)).collect()),
        FtQuery::Or(parts) => TextExpr::Or(parts.iter().map(|p| text_expr(key, p)).collect()),
        FtQuery::Not(p) => TextExpr::Not(Box::new(text_expr(key, p))),
    }
}

/// The index namespace of generation `generation` of table `name`: a PRF of the name's table
/// id, so the index provider never learns the name.
fn index_table_id(master: &MasterKey, name: &str, generation: u64) -> TableId {
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
fn blob_cipher(master: &MasterKey, name: &str) -> RowCipher {
    let keys = master.table(name);
    RowCipher::new(&keys.row, keys.id)
}

/// The catalog as the text that is sealed: one line `generation DDL` per CREATE TABLE and
/// CREATE INDEX statement, tables in catalog order.
fn catalog_text(catalog: &Catalog, generation_of: impl Fn(&str) -> u64) -> String {
    let mut text = String::new();
    for t in catalog.tables() {
        let g = generation_of(&t.name);
        for sql in t.to_sql() {
            text.push_str(&format!("{g} {sql}\n"));
        }
    }
    text
}

/// Reads [`catalog_text`] back: the catalog and each table's index generation.
fn parse_catalog(text: &[u8]) -> Result<(Catalog, Vec<(String, u64)>)> {
    let text = std::str::from_utf8(text)
        .map_err(|_| ClientError::Damaged("the catalog is not UTF-8".into()))?;
    let mut catalog = Catalog::new();
    let mut generations = Vec::new();
    for line in text.lines() {
        let (generation, sql) = line
            .split_once(' ')
            .ok_or_else(|| ClientError::Damaged("a catalog line has no generation".into()))?;
        let generation: u64 = generation
            .parse()
            .map_err(|_| ClientError::Damaged("a catalog generation is not a number".into()))?;
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
    Ok((catalog, generations))
}

/// The hidden row id under which a segment's manifest is filed.
fn manifest_row(segment: &EngineSegmentId) -> RowId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&segment.0[..16]);
    RowId(id)
}

/// `format ‖ parent? ‖ row`: parent = 1 ‖ locator length (u16 LE) ‖ locator ‖ BLAKE3 of the
/// parent's record, or 0 for a first version.
fn make_record(parent: Option<&(Vec<u8>, [u8; 32])>, row: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + 4);
    out.push(RECORD_FORMAT);
    match parent {
        None => out.push(0),
        Some((locator, hash)) => {
            out.push(1);
            out.extend_from_slice(&(locator.len() as u16).to_le_bytes());
            out.extend_from_slice(locator);
            out.extend_from_slice(hash);
        }
    }
    out.extend_from_slice(row);
    out
}

/// A previous version: its locator and the hash of its record.
type Parent = Option<(Vec<u8>, [u8; 32])>;

/// One row version to write: row id, parent, values.
type Write<'r> = (RowId, Parent, &'r Row);

fn split_record(record: &[u8]) -> Result<(Parent, &[u8])> {
    let bad = || ClientError::Damaged("a row record is malformed".into());
    match record {
        [RECORD_FORMAT, 0, row @ ..] => Ok((None, row)),
        [RECORD_FORMAT, 1, a, b, rest @ ..] => {
            let n = usize::from(u16::from_le_bytes([*a, *b]));
            let locator = rest.get(..n).ok_or_else(bad)?;
            let hash: [u8; 32] = rest
                .get(n..n + 32)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(bad)?;
            Ok((Some((locator.to_vec(), hash)), &rest[n + 32..]))
        }
        _ => Err(bad()),
    }
}

/// What a statement read of one row: its version, its locator and its record's hash.
struct Read {
    version: u64,
    locator: Vec<u8>,
    hash: [u8; 32],
}

fn unread(row: RowId) -> ClientError {
    ClientError::Setup(format!(
        "the statement changes row {row}, which its source never fetched"
    ))
}

/// The client's state and, when asked, what was read of each row.
type SourceState<'a> = (&'a mut State, Option<HashMap<RowId, Read>>);

/// The client as the evaluator's row source: each call blocks on the network.
struct NetSource<'a> {
    client: &'a Client,
    inner: std::sync::Mutex<SourceState<'a>>,
    handle: tokio::runtime::Handle,
}

impl<'a> NetSource<'a> {
    fn state(&self) -> wwt_query::Result<std::sync::MutexGuard<'_, SourceState<'a>>> {
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

/// Known answers for what the client files at the index provider: a change to any of these
/// makes every stored table unreadable, so each is pinned to bytes written by an earlier build.
#[cfg(test)]
mod vectors {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    fn catalog() -> Catalog {
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
            hex::encode(manifest_row(&segment).0),
            "000102030405060708090a0b0c0d0e0f"
        );
    }

    #[test]
    fn row_records() {
        let first = make_record(None, b"row bytes");
        assert_eq!(hex::encode(&first), "0100726f77206279746573");
        let parent = (vec![9u8; 5], [3u8; 32]);
        let next = make_record(Some(&parent), b"row bytes");
        assert_eq!(
            hex::encode(&next),
            "0101050009090909090303030303030303030303030303030303030303030303030303030303030303726f77206279746573"
        );
        let (p, row) = split_record(&next).expect("splits");
        assert_eq!((p, row), (Some(parent), &b"row bytes"[..]));
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
            extents: vec![wwt_engine::segment::Extent {
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
        let text = catalog_text(&catalog, |name| u64::from(name == "notes") * 2);
        assert_eq!(text, CATALOG_TEXT);
        let sealed = hex::decode(SEALED_CATALOG).expect("hex");
        let mut cipher = blob_cipher(&master(), CATALOG);
        let opened = cipher
            .open(EngineRowId([0; 16]), 1, &sealed)
            .expect("the pinned catalog opens");
        let (parsed, generations) = parse_catalog(&opened).expect("parses");
        assert_eq!(generations, vec![("notes".to_string(), 2)]);
        assert_eq!(catalog_text(&parsed, |_| 2), CATALOG_TEXT);
    }
}
