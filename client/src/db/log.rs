//! The owner's log as this client writes and reads it.
//!
//! Every change to the owner's index state (tables created and dropped, row entries, the
//! sealed catalog) is appended as entry `head + 1`, naming the head's hash and the replica
//! set, signed by the owner. The entry goes first to one replica (the first of the set that
//! takes it), then to the others at once; the statement succeeds once a majority kept it.
//! Because the first replica takes one entry per seq, two clients of one owner writing at
//! once are ordered there: the loser is told its seq is taken, reloads and runs its statement
//! again ([`ClientError::CatalogRace`]).
//!
//! Reads go to a replica whose head is at least the highest this client has seen; a replica
//! behind it is skipped, reported, and sent the head entry, which sets it catching up from its
//! peers. Heads are believed only as entries signed by the owner, never from a replica's
//! acknowledgement (which counts toward the majority, no more).
//!
//! The replica set is picked by rendezvous hashing of the owner over the index providers the
//! trackers list, R of them ([`ClientConfig::replicas`]), unless the log's head names one;
//! a named replica the trackers no longer list is replaced by the next in rendezvous order,
//! and the next entry records the new set (the newcomer catches up from the others).
//!
//! With the DHT ([`ClientConfig::discovery`]), every head a majority kept is also published
//! there as a small owner-signed [`HeadRecord`] (in the background, newest first; see
//! [`Client::flush`]). A client connecting takes it as a floor (replicas behind it are not
//! believed, as with the head a device keeps in its home folder), asks the replicas it names
//! first, and, when no tracker answers, finds them and their addresses there alone.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use tracing::warn;
use wwt_engine::SegmentManifest;
use wwt_index::{CatalogBlob, QueryOutput};
use wwt_net::index::{
    Answer, Append, GetCatalog, GetHead, HeadRecord, LogHead, LogOp, QueryTable, entry_hash,
    open_entry,
};
use wwt_net::types::NodeId;
use wwt_net::{IndexApi, NetError, Signed, rendezvous};

use super::archive::{log_keys, open_manifest, seal_manifest};
use super::{Client, ClientError, Result, State, index_err};

/// How often a replica that is catching up is asked again for an entry a majority still lacks.
const CATCH_UP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How many index providers a client asks for its head when it does not know its replicas.
const HEAD_CANDIDATES: usize = 16;

/// One of the owner's replicas.
pub(super) struct Replica {
    pub(super) id: NodeId,
    pub(super) address: String,
    pub(super) api: Arc<dyn IndexApi>,
    /// The head it last showed (seq 0 until asked).
    head: LogHead,
}

impl Replica {
    /// Whether it is at `head` or past it: serves reads as of `head`. At the same seq, only
    /// with the same entry.
    fn at(&self, head: &LogHead) -> bool {
        self.head.seq > head.seq || self.head == *head
    }
}

/// The owner's log as this client knows it: the highest head seen and the replica set.
#[derive(Default)]
pub(super) struct Log {
    pub(super) head: LogHead,
    entry: Option<Signed<Append>>,
    pub(super) replicas: Vec<Replica>,
    /// The head the DHT showed when connecting.
    pub(super) published: Option<LogHead>,
    /// The head this device kept in its home folder when connecting.
    kept: Option<LogHead>,
    /// No tracker answered when connecting: the replicas came from the DHT, and writes (which
    /// need trackers) are refused rather than kept by a set it could not check.
    trackers_down: bool,
    /// The newest entry known to be in pieces, and its segment's manifest (for the head
    /// record, and the next entry's segment).
    pub(super) archived: Option<(u64, SegmentManifest)>,
}

/// Head records on their way to the DHT: one task at a time, each publishing only if no newer
/// head was handed over since.
#[derive(Default)]
pub(super) struct Publishing {
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    latest: Arc<AtomicU64>,
}

/// Where one of the owner's replicas stands, from [`Client::replicas`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its node id.
    pub node: NodeId,
    /// Its address.
    pub address: String,
    /// The seq of its head (0 if it did not answer or holds nothing).
    pub seq: u64,
}

/// Reads the head a device saw last (`seq hash`), if it kept one.
fn read_head_file(path: &Path) -> Result<Option<LogHead>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClientError::Setup(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let damaged = || {
        ClientError::Setup(format!(
            "{} does not hold a log head (`seq hash`); move it away if it was edited",
            path.display()
        ))
    };
    let (seq, hash) = text.trim().split_once(' ').ok_or_else(damaged)?;
    let hash = hex::decode(hash).map_err(|_| damaged())?;
    Ok(Some(LogHead {
        seq: seq.parse().map_err(|_| damaged())?,
        hash: hash.try_into().map_err(|_| damaged())?,
    }))
}

fn write_head_file(path: &Path, head: &LogHead) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fresh = path.with_extension("new");
    std::fs::write(&fresh, format!("{} {}\n", head.seq, hex::encode(head.hash)))?;
    std::fs::rename(fresh, path)
}

impl Client {
    /// The owner's replicas as they answer now, and the highest head seq this client has seen.
    pub async fn replicas(&self) -> Result<(u64, Vec<ReplicaStatus>)> {
        let mut state = self.state.lock().await;
        self.refresh_heads(&mut state).await?;
        let replicas = state
            .log
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                node: r.id,
                address: r.address.clone(),
                seq: r.head.seq,
            })
            .collect();
        Ok((state.log.head.seq, replicas))
    }

    fn replica(&self, id: NodeId, address: String) -> Result<Replica> {
        Ok(Replica {
            api: self.connector.index(&address).map_err(index_err)?,
            id,
            address,
            head: LogHead::default(),
        })
    }

    /// Finds the owner's replicas and the highest head among them, and checks it against the
    /// head this device kept.
    pub(super) async fn open_log(&self, state: &mut State) -> Result<()> {
        let (published, listed) =
            tokio::join!(self.published_head(), self.storage.index_providers());
        state.log.kept = match &self.config.head_file {
            Some(path) => read_head_file(path)?,
            None => None,
        };
        state.log.trackers_down = listed.is_err();
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => match &published {
                Some(record) => {
                    warn!(error = %e, "no tracker listed the index providers: using the replicas \
                        that the head record in the DHT names");
                    self.dht_addresses(&record.replicas).await
                }
                None => return Err(e.into()),
            },
        };
        let pool: Vec<(NodeId, String)> = if self.config.index.is_empty() {
            listed.clone()
        } else {
            self.config
                .index
                .iter()
                .map(|address| {
                    listed
                        .iter()
                        .find(|(_, a)| a == address)
                        .cloned()
                        .ok_or_else(|| {
                            ClientError::Index(NetError::Unavailable(format!(
                                "no tracker lists a live index provider at {address}: start it \
                                 with `wwt provider run --index` and this network's trackers"
                            )))
                        })
                })
                .collect::<Result<_>>()?
        };
        if pool.is_empty() {
            return Err(ClientError::Index(NetError::Unavailable(
                "the trackers list no live index provider: start one with \
                 `wwt provider run --index`"
                    .into(),
            )));
        }
        let owner = self.identity.node_id();
        let ranked = rendezvous::rank(&owner.0, pool.iter().map(|(id, _)| id));
        let address_of = |id: &NodeId| listed.iter().find(|(n, _)| n == id).map(|(_, a)| a);
        let replicas = |ids: &mut dyn Iterator<Item = &NodeId>| -> Result<Vec<Replica>> {
            ids.filter_map(|id| address_of(id).map(|a| self.replica(*id, a.clone())))
                .collect()
        };
        // The replicas the DHT's head names first: they hold the head whatever the ranking.
        let mut candidates: Vec<NodeId> = published
            .iter()
            .flat_map(|p| p.replicas.iter().copied())
            .filter(|id| self.config.index.is_empty() && address_of(id).is_some())
            .collect();
        for id in ranked.iter().take(HEAD_CANDIDATES) {
            if !candidates.contains(id) {
                candidates.push(*id);
            }
        }
        state.log.archived = published
            .as_ref()
            .and_then(|p| p.archived.as_ref())
            .and_then(|a| match open_manifest(&log_keys(&self.master), a) {
                Ok(m) => Some((a.seq, m)),
                Err(e) => {
                    warn!(error = %e, "the head record's log in pieces is not usable");
                    None
                }
            });
        state.log.published = published.map(|p| p.head);
        state.log.replicas = replicas(&mut candidates.iter())?;
        self.refresh_heads(state).await?;
        let forked = self.forked(state).await;
        let ranked: Vec<NodeId> = ranked
            .into_iter()
            .filter(|id| !forked.contains(id))
            .collect();
        let named = match &state.log.entry {
            Some(e) => Some(open_entry(e).map_err(index_err)?.1.replicas),
            None => None,
        };
        let set = match named {
            Some(ids) if self.config.index.is_empty() => {
                for gone in ids.iter().filter(|id| address_of(id).is_none()) {
                    warn!(replica = %gone, "index replica no longer listed: replacing it");
                }
                let want = ids.len().max(self.replicas_wanted());
                let mut set: Vec<NodeId> = ids
                    .into_iter()
                    .filter(|id| address_of(id).is_some() && !forked.contains(id))
                    .collect();
                for id in &ranked {
                    if set.len() < want && !set.contains(id) {
                        set.push(*id);
                    }
                }
                set
            }
            // An override names the replicas; otherwise the first R by rendezvous.
            _ if !self.config.index.is_empty() => ranked,
            _ => ranked.into_iter().take(self.replicas_wanted()).collect(),
        };
        state.log.replicas = replicas(&mut set.iter())?;
        self.refresh_heads(state).await?;
        Ok(())
    }

    /// The replicas whose log left the head's lineage: at the head's seq with another entry,
    /// or behind it at an entry that the head's lineage does not continue (two devices wrote
    /// at once, and this replica kept the entry that lost its seq). Such a replica refuses
    /// every later entry and cannot catch up, so the set replaces it.
    async fn forked(&self, state: &State) -> Vec<NodeId> {
        let head = state.log.head;
        let mut out = Vec::new();
        for r in &state.log.replicas {
            let other = match r.head.seq {
                0 => false,
                seq if seq > head.seq => false,
                seq if seq == head.seq => r.head.hash != head.hash,
                seq => {
                    let at_head = state.log.replicas.iter().filter(|r| r.at(&head));
                    match self.replica_entry(at_head, seq + 1, None).await {
                        Ok(next) => open_entry(&next).is_ok_and(|(_, b)| b.prev != r.head.hash),
                        // Cannot tell now: it stays, and is judged again at the next connect.
                        Err(_) => false,
                    }
                }
            };
            if other {
                warn!(
                    "index provider {} holds entry {} of another lineage than the head's \
                     (two devices wrote at once): replacing it",
                    r.id, r.head.seq
                );
                out.push(r.id);
            }
        }
        out
    }

    /// Refuses replicas that are all behind the head this device kept, or, if `dht`, the
    /// head the DHT shows (when the log in pieces could not be checked instead), or that hold
    /// another entry at that seq: they may be catching up, or have lost the log; never an
    /// emptied database.
    pub(super) fn check_floor(&self, state: &State, dht: bool) -> Result<()> {
        let floors = [
            (state.log.kept, "which this device saw"),
            (
                state.log.published.filter(|_| dht),
                "which its head record in the DHT shows",
            ),
        ];
        let head = state.log.head;
        for (floor, source) in floors {
            let Some(floor) = floor else {
                continue;
            };
            if floor.seq > head.seq {
                return Err(ClientError::Index(NetError::Unavailable(format!(
                    "every index replica reached is behind seq {} of this owner's log, {source} \
                     (the highest they hold is {}): they may be catching up; try again, or \
                     rebuild them from the pieces with `wwt recover`",
                    floor.seq, head.seq
                ))));
            }
            if floor.seq == head.seq && floor.hash != head.hash {
                return Err(ClientError::Index(NetError::Unavailable(format!(
                    "the index replicas reached hold another entry at seq {} of this owner's \
                     log than the one {source}: the replicas that hold it may be down; try again",
                    head.seq
                ))));
            }
        }
        Ok(())
    }

    /// The owner's head record in the DHT, if there is a DHT and it holds one.
    async fn published_head(&self) -> Option<HeadRecord> {
        let discovery = self.config.discovery.as_ref()?;
        match discovery.head(self.identity.node_id()).await {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, "cannot look up the log's head in the DHT");
                None
            }
        }
    }

    /// The addresses of `nodes` that the DHT knows.
    async fn dht_addresses(&self, nodes: &[NodeId]) -> Vec<(NodeId, String)> {
        let Some(discovery) = &self.config.discovery else {
            return Vec::new();
        };
        let found = join_all(nodes.iter().map(|id| discovery.address(*id))).await;
        nodes
            .iter()
            .zip(found)
            .filter_map(|(id, address)| Some((*id, address.ok()??)))
            .collect()
    }

    /// Hands the head and replica set to the DHT in the background (refreshing its expiry
    /// there), if a majority of the replicas holds it and the DHT shows no later one.
    pub(super) fn publish_held_head(&self, state: &State) {
        let head = state.log.head;
        let held = state.log.replicas.iter().filter(|r| r.at(&head)).count();
        if head.seq > 0
            && held > state.log.replicas.len() / 2
            && head.seq >= state.log.published.map_or(0, |p| p.seq)
        {
            self.publish(head, state);
        }
    }

    /// Publishes `head` with the current replica set in the DHT, after the records handed over
    /// before it, and only if no newer head was handed over meanwhile.
    fn publish(&self, head: LogHead, state: &State) {
        let Some(discovery) = self.config.discovery.clone() else {
            return;
        };
        let keys = log_keys(&self.master);
        let record = HeadRecord {
            head,
            replicas: state.log.replicas.iter().map(|r| r.id).collect(),
            archived: (state.log.archived.as_ref())
                .filter(|(seq, _)| *seq <= head.seq)
                .map(|(seq, m)| seal_manifest(&keys, *seq, m)),
        };
        let record = match self.identity.sign(record) {
            Ok(record) => record,
            Err(e) => {
                warn!(error = %e, "cannot sign the head record");
                return;
            }
        };
        self.publishing
            .latest
            .fetch_max(head.seq, Ordering::Relaxed);
        let latest = self.publishing.latest.clone();
        let Ok(mut task) = self.publishing.task.lock() else {
            return;
        };
        let before = task.take();
        *task = Some(tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            if latest.load(Ordering::Relaxed) > head.seq {
                return;
            }
            if let Err(e) = discovery.publish_head(&record).await {
                warn!(seq = head.seq, error = %e, "the log's head is not in the DHT yet");
            }
        }));
    }

    /// Waits until the head records handed to the DHT so far are published (or failed): call
    /// before the process exits, or another device may not see the last writes' head there.
    pub async fn flush(&self) {
        let task = self.publishing.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn replicas_wanted(&self) -> usize {
        self.config.replicas.max(1)
    }

    /// Asks every replica for its head; keeps the highest that is signed by the owner.
    pub(super) async fn refresh_heads(&self, state: &mut State) -> Result<()> {
        let owner = self.identity.node_id();
        let asks = state
            .log
            .replicas
            .iter()
            .map(|r| {
                let request = self.sign(GetHead { owner });
                async move { r.api.head(request?).await.map_err(index_err) }
            })
            .collect::<Vec<_>>();
        let answers = join_all(asks).await;
        let mut heads: Vec<(LogHead, Signed<Append>)> = Vec::new();
        for (replica, answer) in state.log.replicas.iter_mut().zip(answers) {
            let entry = match answer {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    replica.head = LogHead::default();
                    continue;
                }
                Err(e) => {
                    warn!(replica = %replica.id, error = %e, "index replica did not answer");
                    continue;
                }
            };
            match open_entry(&entry) {
                Ok((signer, body)) if signer == owner => {
                    replica.head = LogHead {
                        seq: body.seq,
                        hash: entry_hash(&entry),
                    };
                    heads.push((replica.head, entry));
                }
                _ => warn!(
                    replica = %replica.id,
                    "index replica answered a head not signed by this owner: not believed"
                ),
            }
        }
        // The highest head; of two entries at one seq (two devices raced and one replica kept
        // the loser), the one more replicas hold.
        let held = |h: &LogHead| heads.iter().filter(|(x, _)| x == h).count();
        // Of two at one seq, first the one a majority was seen to keep (the DHT's head, or
        // this device's).
        let known = |h: &LogHead| state.log.published == Some(*h) || state.log.kept == Some(*h);
        let best = heads
            .iter()
            .max_by_key(|(h, _)| (h.seq, known(h), held(h)))
            .map(|(h, e)| (*h, e.clone()));
        if let Some((best, entry)) = best
            && (best.seq > state.log.head.seq
                || (best.seq == state.log.head.seq
                    && best.hash != state.log.head.hash
                    && held(&best) > held(&state.log.head)))
        {
            state.log.head = best;
            state.log.entry = Some(entry);
        }
        let head = state.log.head;
        let nudges = state.log.replicas.iter().filter(|r| !r.at(&head)).map(|r| {
            warn!(
                "index provider {} is at seq {}, behind {}: skipped, catching up",
                r.id, r.head.seq, head.seq
            );
            // The head entry sets it catching up from its peers (it refuses the entry itself).
            let entry = state.log.entry.clone();
            async move {
                if let Some(entry) = entry {
                    let _ = r.api.append(entry).await;
                }
            }
        });
        join_all(nudges).await;
        Ok(())
    }

    /// Appends `op` to the owner's log; returns once a majority of the replicas kept it.
    pub(super) async fn append(&self, state: &mut State, op: LogOp) -> Result<()> {
        if state.log.trackers_down {
            return Err(ClientError::Index(NetError::Unavailable(
                "no tracker answered when this client connected: it reads through the DHT, \
                 but writes need the trackers; connect again once one is back"
                    .into(),
            )));
        }
        let body = Append {
            seq: state.log.head.seq + 1,
            prev: state.log.head.hash,
            replicas: state.log.replicas.iter().map(|r| r.id).collect(),
            op,
        };
        let entry = self.sign(body)?;
        let next = LogHead {
            seq: state.log.head.seq + 1,
            hash: entry_hash(&entry),
        };
        // One replica takes it first: two writers of this owner are ordered there. A replica
        // that refuses the entry's seq or prev while the heads show no newer entry holds a
        // losing entry of its own (or refused the change itself): the next one is asked.
        let mut first = None;
        let mut refused = Vec::new();
        let mut conflict = None;
        let mut i = 0;
        while i < state.log.replicas.len() {
            match state.log.replicas[i].api.append(entry.clone()).await {
                Ok(_) => {
                    first = Some(i);
                    break;
                }
                Err(NetError::Conflict(m)) => {
                    if conflict.is_none() {
                        let before = state.log.head;
                        self.refresh_heads(state).await?;
                        if state.log.head != before {
                            return Err(ClientError::CatalogRace);
                        }
                    }
                    conflict = Some(m);
                }
                Err(
                    e @ (NetError::Unavailable(_)
                    | NetError::Precondition(_)
                    | NetError::Internal(_)),
                ) => refused.push(format!("{}: {e}", state.log.replicas[i].id)),
                Err(e) => return Err(index_err(e)),
            }
            i += 1;
        }
        let Some(first) = first else {
            return Err(ClientError::Index(match conflict {
                Some(m) if refused.is_empty() => NetError::Conflict(m),
                _ => NetError::Unavailable(format!(
                    "no index replica took the statement ({})",
                    refused
                        .into_iter()
                        .chain(conflict)
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            }));
        };
        let majority = state.log.replicas.len() / 2 + 1;
        let mut waiting: Vec<Arc<dyn IndexApi>> = state
            .log
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, r)| r.api.clone())
            .collect();
        // An acknowledgement counts toward the majority, but where a replica stands for reads
        // is only ever what its signed head shows ([`Client::refresh_heads`]). Calls still
        // running once a majority answered finish on their own. A replica that is behind
        // catches up from its peers on its own: without a majority yet, it is asked again
        // until it has caught up, or `catch_up_wait` has passed.
        let mut acked = 1;
        let deadline = tokio::time::Instant::now() + self.config.catch_up_wait;
        loop {
            let mut calls: FuturesUnordered<_> = waiting
                .into_iter()
                .map(|api| {
                    let call = tokio::spawn({
                        let (api, entry) = (api.clone(), entry.clone());
                        async move { api.append(entry).await }
                    });
                    async move { (api, call.await) }
                })
                .collect();
            let mut behind = Vec::new();
            while acked < majority {
                let Some((api, answer)) = calls.next().await else {
                    break;
                };
                match answer {
                    Ok(Ok(_)) => acked += 1,
                    Ok(Err(NetError::Precondition(_))) => behind.push(api),
                    _ => {}
                }
            }
            if acked >= majority || behind.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            waiting = behind;
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        if acked < majority {
            return Err(ClientError::Index(NetError::Unavailable(format!(
                "{acked} of {} index replicas kept the statement, fewer than a majority \
                 ({majority}); it may land once they are back: check before running it again",
                state.log.replicas.len()
            ))));
        }
        state.log.head = next;
        state.log.entry = Some(entry.clone());
        if let Some(path) = &self.config.head_file
            && let Err(e) = write_head_file(path, &next)
        {
            warn!(path = %path.display(), error = %e, "cannot keep the log head");
        }
        // Only an entry a majority kept goes into pieces: never one that lost its seq.
        if let Err(e) = self.archive_through(state, next.seq, entry).await {
            warn!(seq = next.seq, error = %e, "log entry not yet in pieces: stored with the next one");
        }
        self.publish(next, state);
        Ok(())
    }

    /// Runs `call` at the first replica at the head that answers as of the head; asks the
    /// replicas for their heads again once if none did. A replica whose answer reflects an
    /// older seq than its head showed (rolled back since) is taken as behind.
    async fn read_fresh<R, F, Fut>(&self, state: &mut State, call: F) -> Result<R>
    where
        F: Fn(Arc<dyn IndexApi>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Answer<R>, NetError>>,
    {
        let mut errors = Vec::new();
        for round in 0..2 {
            if round == 1 {
                self.refresh_heads(state).await?;
            }
            let head = state.log.head;
            for r in state.log.replicas.iter_mut().filter(|r| r.at(&head)) {
                match call(r.api.clone()).await {
                    Ok(answer) if answer.seq >= head.seq => return Ok(answer.value),
                    Ok(answer) => {
                        warn!(
                            "index provider {} answered as of seq {}, behind {}: skipped",
                            r.id, answer.seq, head.seq
                        );
                        r.head = LogHead {
                            seq: answer.seq,
                            hash: [0; 32],
                        };
                        errors.push(format!("{}: behind", r.id));
                    }
                    Err(e @ NetError::Unavailable(_)) => errors.push(format!("{}: {e}", r.id)),
                    Err(e) => return Err(index_err(e)),
                }
            }
        }
        Err(ClientError::Index(NetError::Unavailable(format!(
            "no index replica at seq {} of this owner's log answered ({})",
            state.log.head.seq,
            errors.join("; ")
        ))))
    }

    /// Answers `request` at a replica at the head.
    pub(super) async fn query_index(
        &self,
        state: &mut State,
        request: QueryTable,
    ) -> Result<QueryOutput> {
        let signed = self.sign(request)?;
        self.read_fresh(state, |api| {
            let signed = signed.clone();
            async move { api.query(signed).await }
        })
        .await
    }

    /// The owner's sealed catalog, from a replica at the head.
    pub(super) async fn catalog_blob(&self, state: &mut State) -> Result<CatalogBlob> {
        let signed = self.sign(GetCatalog)?;
        self.read_fresh(state, |api| {
            let signed = signed.clone();
            async move { api.catalog(signed).await }
        })
        .await
    }
}
