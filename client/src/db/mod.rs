//! The SQL client: [`Client`] runs statements against the network with only the owner's keys
//! on the machine.
//!
//! A statement is parsed and planned by `wwt-query`. Writes seal each row version (AES-SIV),
//! pack and code them into segments, upload the pieces through [`Storage`], and only then
//! append the rows' index entries (row id, version, sealed locator, equality tokens, OPE
//! ciphertexts, word tokens) to the owner's log in one entry, kept by the owner's index
//! replicas ([`log`]): a statement that fails before that entry leaves nothing visible.
//! Reads ask a replica at the log's head for the rows a plan's pushed lookups select, fetch
//! and decode their segments (through a bounded cache of decoded segments), open the rows,
//! and let `wwt-query` evaluate the rest.
//!
//! What leaves the client: sealed rows in coded pieces, sealed segment manifests, sealed
//! locators, sealed catalog, PRF tokens and OPE ciphertexts. Table ids are PRFs of the names.
//!
//! Each row version is a record `format ‖ parent ‖ row`: the parent is the locator and the
//! BLAKE3 hash of the previous version's record, so a row's history is a hash chain that
//! [`Client::history`] walks and checks. Records are authenticated by AES-SIV under the
//! owner's row key.
//!
//! Layout:
//! - [`catalog`]: the sealed catalog, index namespaces and hidden names.
//! - [`log`]: the owner's log: appends to a majority of the replicas, reads at the head.
//! - [`archive`]: the log in pieces, and recovery from the keystore alone.
//! - [`write`]: INSERT, UPDATE, DELETE: seal, code, upload, then index entries.
//! - [`entries`]: the index entries of a row version (tokens, OPE ciphertexts).
//! - [`record`]: the row record format and its parent link.
//! - [`read`]: lookups, manifests, locators, fetching rows, history.
//! - [`cursor`]: streamed SELECTs.

mod archive;
mod catalog;
mod cursor;
mod delete;
mod entries;
mod log;
mod read;
mod record;
mod write;

pub use archive::Recovered;
pub use cursor::RowStream;
pub use delete::Compaction;
pub use log::ReplicaStatus;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;
use wwt_engine::{
    CodingParams, Keystore, MasterKey, RowCipher, SegmentId as EngineSegmentId, SegmentManifest,
    Table,
};
use wwt_index::{OpeEncoder, RowHit, RowId, TokenKey};
use wwt_net::types::NodeId;
use wwt_net::{Connector, Discovery, Identity, NetError};
use wwt_query::{Catalog, Outcome, Plan, ResultSet, Row, TableSchema};

use crate::store::{SegmentCache, Storage, StorageConfig, StoreError};

/// Where a client finds the network, and how it codes and caches.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Trackers, `(node id, address)`.
    pub trackers: Vec<(NodeId, String)>,
    /// The index providers to use as the owner's replicas, by address; empty: pick them from
    /// the ones the trackers list.
    pub index: Vec<String>,
    /// How many index replicas a new owner's log gets (R).
    pub replicas: usize,
    /// Where this device keeps the highest head of the owner's log it has seen, so replicas
    /// that fall behind it are never believed; none: kept in memory only.
    pub head_file: Option<PathBuf>,
    /// How long a statement waits for replicas that are catching up when, without them, it
    /// has no majority.
    pub catch_up_wait: std::time::Duration,
    /// The DHT, joined as a client: reads find a segment's holders there when the trackers
    /// cannot say, the owner's replicas are found there when no tracker answers, and the
    /// head of the owner's log is published there for the owner's other devices. None:
    /// trackers only.
    pub discovery: Option<Arc<dyn Discovery>>,
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
    /// Compact a table ([`Client::compact`]) after a DELETE or UPDATE once the row versions
    /// this client's statements killed make up half the bytes of the segments they were in,
    /// and at least a segment's bytes.
    pub auto_compact: bool,
}

impl ClientConfig {
    /// Defaults for the given trackers: index replicas picked from the ones they list, R = 3,
    /// RS 4+2, 1 MiB segments, a 256 MiB segment cache, 2,048-row stream batches.
    pub fn new(trackers: Vec<(NodeId, String)>) -> Self {
        Self {
            trackers,
            index: Vec::new(),
            replicas: 3,
            head_file: None,
            catch_up_wait: std::time::Duration::from_secs(30),
            discovery: None,
            storage: StorageConfig::default(),
            coding: CodingParams::default(),
            segment_size: 1 << 20,
            cache_bytes: 256 << 20,
            stream_batch: 2048,
            auto_compact: true,
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
    /// Another client of this owner changed the tables while this statement ran (statements
    /// are run again on their own a few times before this is returned): run it again.
    #[error(
        "another client of this owner kept changing the tables while this statement ran; run it again"
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
    /// Bytes of row versions this client's statements killed since the table was last
    /// compacted, and the segments they were in.
    killed: (u64, HashSet<EngineSegmentId>),
}

/// Everything behind the client's lock.
struct State {
    log: log::Log,
    catalog: Catalog,
    catalog_version: u64,
    /// Tables dropped whose data is still being deleted: name and last generation.
    dropping: Vec<(String, u64)>,
    tables: HashMap<String, TableState>,
    manifests: HashMap<EngineSegmentId, SegmentManifest>,
    cache: SegmentCache,
    last_version: u64,
}

/// A connected client: one owner's keys, the storage path and the owner's index replicas.
/// Share it in an `Arc` among spawned tasks: its futures are `Send`, and its statements run
/// one at a time.
pub struct Client {
    master: MasterKey,
    identity: Identity,
    storage: Storage,
    connector: Arc<dyn Connector>,
    /// Bytes of pieces stored for log entries ([`Client::log_piece_bytes`]).
    log_piece_bytes: std::sync::atomic::AtomicU64,
    /// The head records being published in the DHT ([`Client::flush`]).
    publishing: log::Publishing,
    config: ClientConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.identity)
            .field("replicas", &self.config.replicas)
            .finish_non_exhaustive()
    }
}

/// How many times a statement is run again when another client of the owner wrote first.
const RACE_RETRIES: usize = 16;

/// True if `e` may come from a catalog or log that another client changed since this one
/// read it (a table created or dropped elsewhere, an index generation replaced, an entry
/// appended first, rows moved by a compaction): read it again and retry.
fn stale_catalog(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Query(wwt_query::Error::UnknownTable { .. })
            | ClientError::Index(NetError::NotFound(_))
            | ClientError::CatalogRace
    ) || deleted_segment(e)
}

/// True if `e` is a read of rows whose segment the owner deleted.
fn deleted_segment(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Store(StoreError::RowsLost { cause, .. })
            if matches!(**cause, StoreError::Deleted { .. })
    )
}

/// Waits a random while, up to 5 ms × 2^`tries` (at most 1 s), before a statement that lost
/// a race to another client of its owner runs again, so two that keep colliding drift apart.
async fn race_backoff(tries: usize) {
    let ceiling = 5u64 << tries.min(8);
    let mut draw = [0u8; 8];
    // Without randomness the wait is the ceiling: still a backoff.
    let jitter = match getrandom::fill(&mut draw) {
        Ok(()) => u64::from_le_bytes(draw) % ceiling,
        Err(_) => ceiling,
    };
    tokio::time::sleep(std::time::Duration::from_millis(jitter.min(1000))).await;
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

impl Client {
    /// Connects as the keystore's owner: finds its index replicas and the head of its log,
    /// then reads and opens its catalog, so tables created on another machine are there.
    ///
    /// Statements run the query evaluator on the calling thread and block it on the network
    /// (`tokio::task::block_in_place`): use a multi-threaded runtime.
    pub async fn connect(
        keystore: &Keystore,
        connector: Arc<dyn Connector>,
        config: ClientConfig,
    ) -> Result<Client> {
        let client = Client::new(keystore, connector, config)?;
        {
            let mut state = client.state.lock().await;
            client.open_log(&mut state).await?;
            client.check_floor(&state, false)?;
            if !client.check_pieces_head(&mut state).await? {
                client.check_floor(&state, true)?;
            }
            client.reload_catalog(&mut state).await?;
            client.publish_held_head(&state);
            if !state.dropping.is_empty()
                && let Err(e) = client.finish_drops(&mut state).await
            {
                tracing::warn!("deleting a dropped table's data is unfinished: {e}");
            }
        }
        Ok(client)
    }

    /// A client that has read nothing yet.
    fn new(
        keystore: &Keystore,
        connector: Arc<dyn Connector>,
        config: ClientConfig,
    ) -> Result<Client> {
        let identity = Identity::from_secret(keystore.identity.to_bytes());
        let mut storage = Storage::new(
            identity.clone(),
            &config.trackers,
            connector.clone(),
            config.storage.clone(),
        )?;
        if let Some(discovery) = &config.discovery {
            storage = storage.with_discovery(discovery.clone());
        }
        Ok(Client {
            master: keystore.master.clone(),
            identity,
            storage,
            connector,
            log_piece_bytes: std::sync::atomic::AtomicU64::new(0),
            publishing: log::Publishing::default(),
            state: Mutex::new(State {
                log: log::Log::default(),
                catalog: Catalog::new(),
                catalog_version: 0,
                dropping: Vec::new(),
                tables: HashMap::new(),
                manifests: HashMap::new(),
                cache: SegmentCache::new(config.cache_bytes),
                last_version: 0,
            }),
            config,
        })
    }

    /// The catalog as this client last read or wrote it.
    pub async fn catalog(&self) -> Catalog {
        self.state.lock().await.catalog.clone()
    }

    /// The owner's tables, by name, with their columns and indexes, as the log holds them
    /// now: the catalog is read again from a replica at the log's head, so tables another
    /// device created or dropped since this client read it are there.
    pub async fn tables(&self) -> Result<Vec<TableSchema>> {
        let mut state = self.state.lock().await;
        self.reread_catalog(&mut state).await?;
        Ok(state.catalog.tables().cloned().collect())
    }

    /// The table named `name` as the log holds it now ([`Client::tables`]), or an error that
    /// lists the tables there are.
    pub async fn describe(&self, name: &str) -> Result<TableSchema> {
        let mut state = self.state.lock().await;
        self.reread_catalog(&mut state).await?;
        Ok(state.catalog.table(name)?.clone())
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
            let mut tries = 0;
            let outcome = loop {
                match self.run(&mut state, &stmt).await {
                    Err(e) if self.reread_after(&mut state, &e, &mut tries).await? => {}
                    other => break other?,
                }
            };
            out.push(outcome);
        }
        Ok(out)
    }

    /// After `e`: if another client of the owner may have changed the catalog or log since
    /// this one read it (and `tries` allows another run), reads the head and catalog again
    /// and says to run the failed work again.
    async fn reread_after(
        &self,
        state: &mut State,
        e: &ClientError,
        tries: &mut usize,
    ) -> Result<bool> {
        if !stale_catalog(e) || *tries >= RACE_RETRIES {
            return Ok(false);
        }
        *tries += 1;
        if matches!(e, ClientError::CatalogRace) {
            race_backoff(*tries).await;
        }
        self.reread_catalog(state).await?;
        Ok(true)
    }

    /// Reads the head of the owner's log and the catalog at it again.
    async fn reread_catalog(&self, state: &mut State) -> Result<()> {
        self.refresh_heads(state).await?;
        self.reload_catalog(state).await
    }

    /// Plans `stmt` against the catalog as this client knows it, and applies the plan.
    async fn run(&self, state: &mut State, stmt: &wwt_query::Statement) -> Result<Outcome> {
        let plan = wwt_query::plan(&state.catalog, stmt)?;
        self.apply(state, &plan).await
    }

    async fn apply(&self, state: &mut State, plan: &Plan) -> Result<Outcome> {
        match plan {
            Plan::CreateTable(t) => {
                self.finish_drop_of(state, &t.name).await?;
                let mut next = state.catalog.clone();
                next.add_table(t.clone())?;
                // A fresh generation (the clock, like versions): a table dropped earlier under
                // this name may have left its index namespace behind.
                let generation = self.next_version(state, 0);
                self.create_index_table(state, t, generation).await?;
                let dropping = state.dropping.clone();
                self.save_catalog(state, next, &[(t.name.clone(), generation)], dropping)
                    .await?;
                Ok(Outcome::Created)
            }
            Plan::DropTable { table: None } => Ok(Outcome::Dropped),
            Plan::DropTable { table: Some(name) } => {
                self.drop_table(state, name).await?;
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
                let dropping = state.dropping.clone();
                self.save_catalog(state, next, &[(table.clone(), generation)], dropping)
                    .await?;
                // The previous generation is no longer read: free it at the index provider.
                // The index exists for every client now, whatever happens to this.
                if let Err(e) = self.drop_index_table(state, table, generation - 1).await {
                    tracing::warn!("index created, but the old index namespace was not freed: {e}");
                }
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
            Plan::Update(p) => {
                let n = self.update(state, p).await?;
                self.compact_if_sparse(state, &p.access.table).await;
                Ok(Outcome::Updated(n))
            }
            Plan::Delete(p) => {
                let n = self.delete(state, p).await?;
                self.compact_if_sparse(state, &p.access.table).await;
                Ok(Outcome::Deleted(n))
            }
        }
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
                    killed: (0, HashSet::new()),
                },
            );
        }
        state
            .tables
            .get_mut(&schema.name)
            .ok_or_else(|| ClientError::Setup("table state vanished".into()))
    }

    fn sign<T: wwt_net::auth::Body>(&self, body: T) -> Result<wwt_net::Signed<T>> {
        self.identity.sign(body).map_err(index_err)
    }
}
