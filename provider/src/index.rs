//! The provider as an index provider: [`IndexService`] is a replica of its owners' logs. It
//! keeps each owner's entries ([`Logs`]) and applies them, in order, to a [`LocalIndexStore`]
//! that it serves through [`IndexApi`].
//!
//! An entry is applied only if it is signed by its owner and extends the replica's log by one
//! (its seq follows the head, its `prev` is the head's hash). A replica that is handed an
//! entry past its head is behind: it refuses the entry and catches up from the peers the entry
//! names (resolved through the trackers), checking every entry as if the owner had sent it.
//! A peer can withhold entries but not inject one.
//!
//! Reads (queries, the catalog) are signed by the owner; the head and the entries are served
//! to the owner and to the replicas its head names, no one else. A read is recorded against
//! replay once so authorized; reads of logs this replica does not hold in a cache of their
//! own, so that strangers cannot crowd out its owners.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info, warn};
use wwt_index::{CatalogBlob, IndexError, IndexStore, LocalIndexStore, OwnerId, QueryOutput};
use wwt_net::index::{
    Answer, Append, GetCatalog, GetEntries, GetHead, LogHead, LogOp, MAX_ENTRIES_PER_CALL,
    QueryTable, entry_hash, open_entry,
};
use wwt_net::types::NodeId;
use wwt_net::{Checked, Connector, Identity, IndexApi, NetError, Signed, Verifier};

use crate::log::Logs;
use crate::{ProviderConfig, ProviderError};

/// Bytes of entries one `Entries` answer carries at most (past the first entry).
const ENTRIES_BUDGET: usize = 8 << 20;

/// How often an entry refused because a query holds its table is tried again.
const BUSY_RETRIES: u32 = 200;

/// Requests reading a log this replica does not hold that it remembers per signer (within the
/// signature window): an owner reads a few times before its first entry, a throwaway key
/// needs no more.
const STRANGER_NONCES_PER_SIGNER: usize = 256;

/// Such requests it remembers in all (some 5 MiB): past this they are refused, to be retried
/// shortly, while the requests of the owners it holds logs of are recorded as ever.
const STRANGER_NONCES: usize = 1 << 16;

/// Encrypted indexes of many owners, built from their logs, behind signature checks.
pub struct IndexService {
    inner: Arc<Inner>,
}

struct Inner {
    store: LocalIndexStore,
    logs: Logs,
    /// Checks requests; records those reading a log this replica holds.
    verifier: Verifier,
    /// Records the requests reading a log this replica does not hold (strangers', or an
    /// owner's before its first entry), in a smaller cache of their own.
    strangers: Verifier,
    identity: Identity,
    connector: Arc<dyn Connector>,
    trackers: Vec<String>,
    /// One writer per owner: an entry is checked, kept and applied under it.
    writers: Mutex<HashMap<NodeId, Arc<Mutex<()>>>>,
    /// Owners whose log is being caught up from peers.
    catching_up: Mutex<HashSet<NodeId>>,
}

impl std::fmt::Debug for IndexService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexService")
            .field("store", &self.inner.store)
            .field("node", &self.inner.identity.node_id())
            .finish_non_exhaustive()
    }
}

/// Whether the store may succeed with the same change later (busy, disk, damage), as
/// opposed to refusing it for what it is, alike on every replica.
fn transient(e: &IndexError) -> bool {
    matches!(
        e,
        IndexError::Busy { .. }
            | IndexError::Storage(_)
            | IndexError::Io(_)
            | IndexError::FullText(_)
            | IndexError::Corrupt(_)
    )
}

fn poisoned() -> NetError {
    NetError::Internal("an index lock was poisoned by a panic".into())
}

impl IndexService {
    /// Opens (or creates) the index store and logs under `config.index_dir()`, as the
    /// provider's identity; peers are found through `config.trackers` over `connector`.
    /// Entries kept but not applied when the replica last stopped are applied now.
    pub fn open(
        config: &ProviderConfig,
        connector: Arc<dyn Connector>,
    ) -> Result<IndexService, ProviderError> {
        let dir = config.index_dir();
        let inner = Inner {
            store: LocalIndexStore::open(&dir)?,
            logs: Logs::open(&dir.join("log"))?,
            verifier: Verifier::new(Duration::from_millis(config.signature_window_ms)),
            strangers: Verifier::with_limits(
                Duration::from_millis(config.signature_window_ms),
                STRANGER_NONCES_PER_SIGNER,
                STRANGER_NONCES,
            ),
            identity: Identity::load_or_create(&config.identity_path())?,
            connector,
            trackers: config.trackers.iter().map(|t| t.address.clone()).collect(),
            writers: Mutex::new(HashMap::new()),
            catching_up: Mutex::new(HashSet::new()),
        };
        for owner in inner.logs.unapplied()? {
            inner.apply_pending(&owner)?;
        }
        Ok(IndexService {
            inner: Arc::new(inner),
        })
    }

    /// Closes the store (waits for full-text merges, flushes); call once no request is in
    /// flight.
    pub fn close(self) -> Result<(), ProviderError> {
        let Some(inner) = Arc::into_inner(self.inner) else {
            return Ok(());
        };
        inner.logs.flush()?;
        Ok(inner.store.close()?)
    }

    /// What this replica serves: the owners whose logs it keeps, their entries in all, and
    /// the index namespaces open now.
    pub fn served(&self) -> Result<(usize, u64, usize), NetError> {
        let heads = self.inner.logs.heads()?;
        let entries = heads.iter().map(|(_, seq)| seq).sum();
        Ok((heads.len(), entries, self.inner.store.open_namespaces()))
    }

    /// Where this replica's copy of `owner`'s log stands.
    pub fn head(&self, owner: &NodeId) -> Result<LogHead, NetError> {
        self.inner.logs.head(owner)
    }

    /// Runs `op` on the store off the async threads, as the verified signer; the answer says
    /// which seq of the signer's log it reflects (at least: entries applied meanwhile may
    /// show too).
    async fn read<T, R>(
        &self,
        request: Signed<T>,
        op: impl FnOnce(&LocalIndexStore, &OwnerId, T) -> Result<R, IndexError> + Send + 'static,
    ) -> Result<Answer<R>, NetError>
    where
        T: wwt_net::auth::Body + Send + 'static,
        R: Send + 'static,
    {
        let checked = self.inner.verifier.check(request)?;
        let (signer, body) = self.admit(checked, None)?;
        let seq = self.inner.logs.applied(&signer)?;
        let inner = self.inner.clone();
        let answer =
            tokio::task::spawn_blocking(move || op(&inner.store, &OwnerId(signer.0), body))
                .await
                .map_err(|e| NetError::Internal(format!("index task failed: {e}")))?;
        if let Err(e) = &answer {
            debug!(owner = %signer, error = %e, "index request refused");
        }
        Ok(Answer {
            value: answer?,
            seq,
        })
    }

    /// Records `checked`, a read of `owner`'s log or (with `owner` unset) of the signer's own
    /// namespace, against replay, and returns its signer and body; the caller has authorized
    /// the signer. A read of a log this replica does not hold goes to the strangers' cache:
    /// throwaway keys, each reading its own empty namespace, can fill only that one, never
    /// the cache the owners' requests need.
    fn admit<T>(
        &self,
        checked: Checked<T>,
        owner: Option<NodeId>,
    ) -> Result<(NodeId, T), NetError> {
        let owner = owner.unwrap_or_else(|| checked.signer());
        if self.inner.logs.head(&owner)?.seq == 0 {
            self.inner.strangers.accept(checked)
        } else {
            self.inner.verifier.accept(checked)
        }
    }

    /// Whether `signer` may read `owner`'s log: the owner, or a replica its head names.
    fn may_read_log(&self, owner: &NodeId, signer: &NodeId) -> Result<(), NetError> {
        if owner == signer {
            return Ok(());
        }
        let head = self.inner.logs.head(owner)?;
        let named = match self.inner.logs.entry(owner, head.seq)? {
            Some(entry) => open_entry(&entry)?.1.replicas.contains(signer),
            None => false,
        };
        if named {
            Ok(())
        } else {
            Err(NetError::Forbidden(format!(
                "{signer} is neither {owner} nor one of its replicas"
            )))
        }
    }
}

impl Inner {
    fn writer(&self, owner: &NodeId) -> Result<Arc<Mutex<()>>, NetError> {
        Ok(self
            .writers
            .lock()
            .map_err(|_| poisoned())?
            .entry(*owner)
            .or_default()
            .clone())
    }

    /// Checks `entry` (already opened: `owner`, `body`) against `owner`'s log, keeps it and
    /// applies it; the new head. Blocking: call off the async threads.
    fn accept(
        &self,
        owner: &NodeId,
        entry: &Signed<Append>,
        body: Append,
    ) -> Result<LogHead, NetError> {
        let writer = self.writer(owner)?;
        let _guard = writer.lock().map_err(|_| poisoned())?;
        self.apply_pending(owner)?;
        let head = self.logs.head(owner)?;
        let hash = entry_hash(entry);
        if body.seq <= head.seq {
            let same = self
                .logs
                .entry(owner, body.seq)?
                .is_some_and(|kept| entry_hash(&kept) == hash);
            return if same {
                Ok(head)
            } else {
                Err(NetError::Conflict(format!(
                    "seq {} of this log is another entry; the log is at seq {}",
                    body.seq, head.seq
                )))
            };
        }
        if body.seq > head.seq + 1 {
            return Err(NetError::Precondition(format!(
                "this replica is at seq {}, behind {}: catching up",
                head.seq,
                body.seq - 1
            )));
        }
        if body.prev != head.hash {
            return Err(NetError::Conflict(format!(
                "entry {} follows another entry {} than this replica holds",
                body.seq, head.seq
            )));
        }
        self.precheck(owner, &body.op)?;
        let next = LogHead {
            seq: body.seq,
            hash,
        };
        self.logs.push(owner, next, entry)?;
        self.apply_kept(owner, next.seq, &body.op)?;
        Ok(next)
    }

    /// Applies kept entry `seq` and records it applied, unless the store failed in a way
    /// that may pass (busy, disk): then it stays unapplied, is tried again before the next
    /// entry, and the replica's head (what `Head` shows) stays below it. A change the store
    /// refuses is refused alike on every replica: recorded applied, as a change that changed
    /// nothing, and the refusal returned.
    fn apply_kept(&self, owner: &NodeId, seq: u64, op: &LogOp) -> Result<(), NetError> {
        match self.apply_op(owner, op) {
            Ok(()) => {
                self.logs.set_applied(owner, seq)?;
                Ok(())
            }
            Err(e) if transient(&e) => {
                warn!(%owner, seq, error = %e, "a kept entry could not be applied yet");
                Err(NetError::Unavailable(format!(
                    "entry {seq} is kept but not yet applied: {e}"
                )))
            }
            Err(e) => {
                self.logs.set_applied(owner, seq)?;
                Err(e.into())
            }
        }
    }

    /// Refuses, before it is kept, an entry whose change cannot apply to the state as it is:
    /// a table created twice, rows for a table that does not exist.
    fn precheck(&self, owner: &NodeId, op: &LogOp) -> Result<(), NetError> {
        let owner = OwnerId(owner.0);
        match op {
            LogOp::CreateTable(c) => match self.store.schema(&owner, &c.table) {
                Ok(_) => Err(IndexError::TableExists { table: c.table }.into()),
                Err(IndexError::UnknownTable { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
            LogOp::DropTable(d) => Ok(self.store.schema(&owner, &d.table).map(drop)?),
            LogOp::Apply(a) => Ok(self.store.schema(&owner, &a.table).map(drop)?),
            // A catalog written over a version the writer did not read would lose the tables
            // another device added since: the writer reloads and writes again.
            LogOp::Catalog(c) => {
                let stored = self.store.catalog(&owner)?.version;
                if stored == c.expected_version {
                    Ok(())
                } else {
                    Err(NetError::Conflict(format!(
                        "the catalog is at version {stored}, not {}: read it again",
                        c.expected_version
                    )))
                }
            }
        }
    }

    /// Applies one entry's change. Applying it again changes nothing, so an entry kept but
    /// not applied before a crash is applied on opening. A change the store refuses
    /// (malformed tokens) is refused the same way on every replica: the entry stays, as a
    /// change that changed nothing.
    fn apply_op(&self, owner: &NodeId, op: &LogOp) -> Result<(), IndexError> {
        let owner = OwnerId(owner.0);
        let mut tries = 0;
        loop {
            let done = match op {
                LogOp::CreateTable(c) => match self.store.create_table(&owner, &c.table, &c.schema)
                {
                    Err(IndexError::TableExists { .. }) => Ok(()),
                    other => other,
                },
                LogOp::DropTable(d) => match self.store.drop_table(&owner, &d.table) {
                    Err(IndexError::UnknownTable { .. }) => Ok(()),
                    other => other,
                },
                LogOp::Apply(a) => self.store.apply(&owner, &a.table, &a.batch).map(drop),
                LogOp::Catalog(c) => {
                    match self.store.put_catalog(&owner, c.expected_version, &c.blob) {
                        // Applied before a crash: the same blob at the next version.
                        Err(IndexError::CatalogConflict { stored, .. })
                            if stored == c.expected_version + 1
                                && self.store.catalog(&owner)?.blob == c.blob =>
                        {
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                }
            };
            match done {
                Err(IndexError::Busy { .. }) if tries < BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// Applies the entries of `owner`'s log that were kept but not applied.
    fn apply_pending(&self, owner: &NodeId) -> Result<(), NetError> {
        let head = self.logs.head(owner)?;
        for seq in self.logs.applied(owner)? + 1..=head.seq {
            let entry = self.logs.entry(owner, seq)?.ok_or_else(|| {
                NetError::Internal(format!("entry {seq} of {owner}'s log is missing"))
            })?;
            let (_, body) = open_entry(&entry)?;
            match self.apply_kept(owner, seq, &body.op) {
                Err(NetError::Unavailable(m)) => return Err(NetError::Unavailable(m)),
                Err(e) => warn!(%owner, seq, error = %e, "a kept entry changed nothing"),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// The index providers the trackers list, by node id.
    async fn peer_addresses(&self) -> HashMap<NodeId, String> {
        let mut out = HashMap::new();
        for address in &self.trackers {
            let listed = match self.connector.tracker(address) {
                Ok(tracker) => tracker.providers().await,
                Err(e) => Err(e),
            };
            match listed {
                Ok(records) => out.extend(
                    records
                        .into_iter()
                        .filter(|r| r.index)
                        .map(|r| (r.node, r.address)),
                ),
                Err(e) => debug!(tracker = %address, error = %e, "no provider list"),
            }
        }
        out
    }

    /// Brings `owner`'s log up to `until` from the first of `peers` that holds it, entry by
    /// entry, each checked as if the owner had sent it. Runs once per owner at a time.
    async fn catch_up(self: Arc<Self>, owner: NodeId, peers: Vec<NodeId>, until: LogHead) {
        let me = self.identity.node_id();
        let addresses = self.peer_addresses().await;
        for peer in peers.iter().filter(|p| **p != me) {
            let Some(address) = addresses.get(peer) else {
                debug!(%owner, %peer, "replica not listed by any tracker");
                continue;
            };
            match self
                .clone()
                .catch_up_from(owner, *peer, address, until)
                .await
            {
                Ok(seq) => debug!(%owner, %peer, seq, "caught up"),
                Err(e) => warn!(%owner, %peer, error = %e, "catching up from a replica failed"),
            }
        }
        if let Ok(mut running) = self.catching_up.lock() {
            running.remove(&owner);
        }
    }

    /// Catches up to `until` from `peer`, if the peer holds that very entry: a peer whose log
    /// left `until`'s lineage (it kept an entry that lost its seq) is not followed.
    async fn catch_up_from(
        self: Arc<Self>,
        owner: NodeId,
        peer: NodeId,
        address: &str,
        until: LogHead,
    ) -> Result<u64, NetError> {
        if until.seq == 0 {
            return Ok(0);
        }
        let api = self.connector.index(address)?;
        let ask = GetEntries {
            owner,
            after: until.seq - 1,
            limit: 1,
        };
        let holds = api.entries(self.identity.sign(ask)?).await?;
        if holds.first().map(entry_hash) != Some(until.hash) {
            return Err(NetError::NotFound(format!(
                "replica {peer} does not hold entry {} of the lineage to catch up to",
                until.seq
            )));
        }
        loop {
            let head = self.logs.head(&owner)?;
            if head.seq >= until.seq {
                return Ok(head.seq);
            }
            let limit = MAX_ENTRIES_PER_CALL.min((until.seq - head.seq) as u32);
            let ask = GetEntries {
                owner,
                after: head.seq,
                limit,
            };
            let page = api.entries(self.identity.sign(ask)?).await?;
            if page.is_empty() {
                return Ok(head.seq);
            }
            if page.len() > limit as usize {
                return Err(NetError::BadRequest(format!(
                    "replica {peer} sent {} entries, more than asked",
                    page.len()
                )));
            }
            let inner = self.clone();
            let before = head.seq;
            tokio::task::spawn_blocking(move || {
                for entry in page {
                    let (signer, body) = open_entry(&entry)?;
                    if signer != owner {
                        return Err(NetError::Forbidden(format!(
                            "replica {peer} sent an entry signed by {signer}, not the owner"
                        )));
                    }
                    let seq = body.seq;
                    if seq == until.seq && entry_hash(&entry) != until.hash {
                        return Err(NetError::Conflict(format!(
                            "replica {peer} sent another entry {seq} than the one to reach"
                        )));
                    }
                    // An entry kept but refused by the store (alike on every replica) is
                    // still progress; one not kept ends this page.
                    if let Err(e) = inner.accept(&owner, &entry, body)
                        && inner.logs.head(&owner)?.seq != seq
                    {
                        return Err(e);
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| NetError::Internal(format!("catch-up task failed: {e}")))??;
            if self.logs.head(&owner)?.seq == before {
                return Err(NetError::BadRequest(format!(
                    "replica {peer} sent entries that do not extend this log"
                )));
            }
        }
    }
}

#[async_trait]
impl IndexApi for IndexService {
    async fn append(&self, entry: Signed<Append>) -> Result<LogHead, NetError> {
        let (owner, body) = open_entry(&entry)?;
        let peers = body.replicas.clone();
        // The entry this one follows: what catching up must reach, and nothing else.
        let until = LogHead {
            seq: body.seq - 1,
            hash: body.prev,
        };
        let inner = self.inner.clone();
        let accepted = tokio::task::spawn_blocking(move || inner.accept(&owner, &entry, body))
            .await
            .map_err(|e| NetError::Internal(format!("index task failed: {e}")))?;
        if let Err(NetError::Precondition(_)) = &accepted {
            let first = self
                .inner
                .catching_up
                .lock()
                .map_err(|_| poisoned())?
                .insert(owner);
            if first {
                info!(%owner, "behind the owner's log: catching up from its replicas");
                tokio::spawn(self.inner.clone().catch_up(owner, peers, until));
            }
        }
        if let Err(e) = &accepted {
            debug!(%owner, error = %e, "entry refused");
        }
        accepted
    }

    async fn head(&self, request: Signed<GetHead>) -> Result<Option<Signed<Append>>, NetError> {
        let checked = self.inner.verifier.check(request)?;
        let owner = checked.body().owner;
        self.may_read_log(&owner, &checked.signer())?;
        let (_, ask) = self.admit(checked, Some(owner))?;
        // What reads see: the last entry applied, not merely kept.
        let applied = self.inner.logs.applied(&ask.owner)?;
        self.inner.logs.entry(&ask.owner, applied)
    }

    async fn entries(&self, request: Signed<GetEntries>) -> Result<Vec<Signed<Append>>, NetError> {
        let checked = self.inner.verifier.check(request)?;
        let owner = checked.body().owner;
        self.may_read_log(&owner, &checked.signer())?;
        let (_, ask) = self.admit(checked, Some(owner))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .logs
                .entries(&ask.owner, ask.after, ask.limit as usize, ENTRIES_BUDGET)
        })
        .await
        .map_err(|e| NetError::Internal(format!("index task failed: {e}")))?
    }

    async fn query(&self, request: Signed<QueryTable>) -> Result<Answer<QueryOutput>, NetError> {
        self.read(request, |s, owner, q| s.query(owner, &q.table, &q.query))
            .await
    }

    async fn catalog(&self, request: Signed<GetCatalog>) -> Result<Answer<CatalogBlob>, NetError> {
        self.read(request, |s, owner, _| s.catalog(owner)).await
    }
}
