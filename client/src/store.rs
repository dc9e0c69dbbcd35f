//! The client's storage path over the network: a segment's pieces go to the providers the
//! responsible tracker reserves, in parallel; reads take any k intact pieces, data pieces
//! first, falling through holders that are down, slow or lying.
//!
//! Reads find holders in the responsible tracker's map; with a [`Discovery`] (the DHT) set,
//! they also ask it whenever the map is unavailable (the tracker is down) or leaves fewer than
//! k intact pieces: the DHT names the segment's holders, each is asked for each missing piece,
//! and every piece is checked against the manifest's hash whoever served it. With the DHT, a
//! `Locate` gets `read_timeout` like a piece read, a tracker that did not answer is skipped for
//! [`StorageConfig::tracker_retry`] (reads go straight to the DHT instead of waiting on it each
//! time), and the holders the DHT named are kept per segment (asked again when they no longer
//! serve k pieces).
//!
//! Audits: [`Storage::put_audited`] also entrusts the segment to its tracker (its manifest and
//! the table's audit key, never the row key), which then challenges and repairs its pieces.
//! Reads take the tracker's manifest where repairs moved a piece to a newer generation, and
//! report to the tracker a holder it maps that refused a piece or served wrong bytes.
//!
//! Resume: the tracker does not place the pieces of a segment it already maps (it names them
//! in its answer to the reservation), and the client sends only the others, so an interrupted
//! upload retried with the same coded segment sends no piece twice (a piece stored but not yet
//! confirmed when the interruption came is sent again; the provider stores it once). This
//! costs no round trip of its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{self, StreamExt};
use tracing::debug;
use wwt_engine::codec::plan_read;
use wwt_engine::{
    AuditKey, Codec, EncodedSegment, Locator, PieceHash, RangeRead, SegmentManifest, Table, proof,
};
use wwt_net::audit::{Complaint, Entrust};
use wwt_net::types::{
    ByteRange, ConfirmStored, Forget, Locate, MAX_DELETE, NodeId, PieceId, PieceSpec, ReadPiece,
    ReserveSegment, SegmentId, SegmentLocation,
};
use wwt_net::{
    Connector, Discovery, Identity, NetError, TrackerApi, read_piece, read_whole_piece, rendezvous,
    store_piece,
};

/// Each piece's holders: address, and node id when the tracker maps it.
type Holders = Vec<Vec<(String, Option<NodeId>)>>;

/// Segments whose DHT holders are kept; past this, the kept ones are forgotten.
const KEPT_HOLDERS: usize = 4096;

/// A segment whose wanted bytes are under 1/`RANGED_FRACTION` of it is read by ranged reads
/// of those bytes instead of whole: a point read costs one small read, not k pieces and a
/// decode.
pub const RANGED_FRACTION: u64 = 8;

/// Whole segments one statement uploads, or one [`Storage::read_rows`] fetches, at once (each
/// moves its pieces in parallel).
pub const SEGMENTS_IN_FLIGHT: usize = 8;

/// What went wrong storing or reading, named for what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No tracker to talk to.
    #[error(
        "no tracker is configured: start a network with `wwt devnet up`, or list trackers in the config"
    )]
    NoTracker,
    /// The tracker refused or could not be reached.
    #[error("tracker {tracker} for segment {segment}: {source}")]
    Tracker {
        /// The tracker's node id.
        tracker: String,
        /// The segment.
        segment: String,
        /// What it said.
        source: NetError,
    },
    /// Some pieces could not be stored after every retry.
    #[error(
        "segment {segment}: {failed} of its pieces could not be stored ({last}); retry the upload: stored pieces are not sent again"
    )]
    Upload {
        /// The segment.
        segment: String,
        /// Pieces still missing.
        failed: usize,
        /// The last error seen.
        last: String,
    },
    /// Fewer than k intact pieces of a segment could be fetched.
    #[error("segment {segment}: {intact} intact pieces of the {needed} needed ({why})")]
    Unrecoverable {
        /// The segment.
        segment: String,
        /// Intact pieces fetched.
        intact: usize,
        /// Pieces needed.
        needed: usize,
        /// What the holders did.
        why: String,
    },
    /// The owner deleted the segment (its tracker said so): whoever pointed here read an
    /// index that has moved on since (a compaction moved the rows, or they were deleted).
    #[error("segment {segment} was deleted by its owner; read the index again")]
    Deleted {
        /// The segment.
        segment: String,
    },
    /// Rows whose segments cannot be recovered.
    #[error("{} rows cannot be read (rows {}): {cause}", rows.len(), rows.iter().take(8).cloned().collect::<Vec<_>>().join(", "))]
    RowsLost {
        /// The row ids, in hex.
        rows: Vec<String>,
        /// Why, for the first lost segment.
        cause: Box<StoreError>,
    },
    /// The storage engine refused the data.
    #[error(transparent)]
    Engine(#[from] wwt_engine::Error),
    /// A request could not be signed.
    #[error("signing a request: {0}")]
    Sign(NetError),
}

/// Timeouts and retries of the storage path.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// How long one piece store may take.
    pub store_timeout: Duration,
    /// How long one piece read may take before the next holder is tried.
    pub read_timeout: Duration,
    /// Rounds of fresh reservations for pieces whose store failed.
    pub upload_rounds: usize,
    /// Report to the tracker a holder it maps that refuses a piece or serves wrong bytes.
    pub complain: bool,
    /// With a DHT, how long reads leave a tracker that did not answer before asking it again.
    pub tracker_retry: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            store_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(5),
            upload_rounds: 3,
            complain: true,
            tracker_retry: Duration::from_secs(10),
        }
    }
}

/// How an upload went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutReport {
    /// Pieces sent and stored.
    pub sent: usize,
    /// Pieces the tracker already mapped, not sent again.
    pub skipped: usize,
    /// Piece bytes sent.
    pub bytes_sent: u64,
}

/// The storage path of one client identity.
#[derive(Clone)]
pub struct Storage {
    identity: Identity,
    trackers: HashMap<NodeId, Arc<dyn TrackerApi>>,
    connector: Arc<dyn Connector>,
    discovery: Option<Arc<dyn Discovery>>,
    config: StorageConfig,
    /// Trackers that did not answer, and until when reads skip them (with a DHT only).
    silent: Arc<std::sync::Mutex<HashMap<NodeId, std::time::Instant>>>,
    /// The addresses the DHT named as each segment's holders.
    dht_holders: Arc<std::sync::Mutex<HashMap<SegmentId, Vec<String>>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("identity", &self.identity)
            .field("trackers", &self.trackers.len())
            .field("discovery", &self.discovery.is_some())
            .finish_non_exhaustive()
    }
}

fn tracker_error(tracker: &NodeId, segment: &SegmentId, source: NetError) -> StoreError {
    StoreError::Tracker {
        tracker: tracker.to_string(),
        segment: segment.to_string(),
        source,
    }
}

fn wire_segment(m: &SegmentManifest) -> SegmentId {
    SegmentId(m.segment.0)
}

/// The client's manifest with every piece the tracker's copy names in a later generation (a
/// repair re-coded it). The tracker's copy counts only where it describes the same segment
/// the same way; its pieces are still checked against its hashes, and rows still against
/// their AES-SIV tags, so a wrong manifest can make a read fail but never return wrong rows.
fn newest(own: &SegmentManifest, tracker: &[u8]) -> SegmentManifest {
    match SegmentManifest::from_bytes(tracker) {
        Ok(theirs) => own.merged(&theirs),
        Err(_) => own.clone(),
    }
}

impl Storage {
    /// The storage path for `identity`, with trackers `(node id, address)` reached through
    /// `connector`.
    pub fn new(
        identity: Identity,
        trackers: &[(NodeId, String)],
        connector: Arc<dyn Connector>,
        config: StorageConfig,
    ) -> Result<Self, StoreError> {
        if trackers.is_empty() {
            return Err(StoreError::NoTracker);
        }
        let trackers = trackers
            .iter()
            .map(|(id, addr)| {
                connector
                    .tracker(addr)
                    .map(|t| (*id, t))
                    .map_err(|source| StoreError::Tracker {
                        tracker: id.to_string(),
                        segment: "-".into(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            identity,
            trackers,
            connector,
            discovery: None,
            config,
            silent: Arc::default(),
            dht_holders: Arc::default(),
        })
    }

    /// Also finds holders through `discovery` (the DHT) when the tracker's map cannot serve
    /// a read.
    pub fn with_discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// The live index providers the trackers list, `(node id, address)`, each once. A
    /// tracker that cannot answer is skipped; none answering is an error.
    pub async fn index_providers(&self) -> Result<Vec<(NodeId, String)>, StoreError> {
        let mut found: HashMap<NodeId, String> = HashMap::new();
        let mut last_error = None;
        for (id, tracker) in &self.trackers {
            match tracker.providers().await {
                Ok(list) => found.extend(
                    list.into_iter()
                        .filter(|p| p.index && p.alive)
                        .map(|p| (p.node, p.address)),
                ),
                Err(source) => {
                    last_error = Some(StoreError::Tracker {
                        tracker: id.to_string(),
                        segment: "-".into(),
                        source,
                    })
                }
            }
        }
        match last_error {
            Some(e) if found.is_empty() => Err(e),
            _ => Ok(found.into_iter().collect()),
        }
    }

    /// Runs `call` at `segment`'s first tracker, and at its second if the first is
    /// unavailable (down, or no answer within `timeout`) or does not know the segment (a
    /// mirror may not have reached it yet): the answer and the tracker that gave it; not found
    /// if a tracker said so and none found it. A tracker that did not answer is asked last for
    /// [`StorageConfig::tracker_retry`], and with a DHT to read through instead, not at all.
    async fn at_pair<T, F, Fut>(
        &self,
        segment: &SegmentId,
        timeout: Option<Duration>,
        call: F,
    ) -> Result<(NodeId, T), StoreError>
    where
        F: Fn(Arc<dyn TrackerApi>) -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        let now = std::time::Instant::now();
        let silent = |id: &NodeId| {
            self.silent
                .lock()
                .is_ok_and(|silent| silent.get(id).is_some_and(|until| *until > now))
        };
        let mut pair = rendezvous::pair(&segment.0, self.trackers.keys());
        pair.sort_by_key(silent);
        let (mut unavailable, mut not_found) = (None, None);
        for id in pair {
            if self.discovery.is_some() && silent(&id) {
                unavailable
                    .get_or_insert((id, NetError::Unavailable("it did not answer lately".into())));
                continue;
            }
            let call = call(self.trackers[&id].clone());
            let answer = match timeout {
                Some(timeout) => tokio::time::timeout(timeout, call)
                    .await
                    .unwrap_or_else(|_| Err(NetError::Unavailable("no answer in time".into()))),
                None => call.await,
            };
            match answer {
                Ok(value) => {
                    if let Ok(mut silent) = self.silent.lock() {
                        silent.remove(&id);
                    }
                    return Ok((id, value));
                }
                Err(e @ NetError::Unavailable(_)) => {
                    if let Ok(mut silent) = self.silent.lock() {
                        silent.insert(id, now + self.config.tracker_retry);
                    }
                    unavailable = Some((id, e));
                }
                Err(e @ NetError::NotFound(_)) => not_found = Some((id, e)),
                Err(e) => return Err(tracker_error(&id, segment, e)),
            }
        }
        // The other of the pair is sent every change as it is made: its "not found" stands
        // for the pair when the first is down (an existence check must not fail then).
        let (id, e) = not_found
            .or(unavailable)
            .expect("Storage::new refuses an empty tracker list");
        Err(tracker_error(&id, segment, e))
    }

    /// Whether `segment` was stored whole and entrusted to its tracker (an upload cut short
    /// leaves a segment its tracker knows but holds no manifest of).
    pub async fn entrusted(&self, segment: SegmentId) -> Result<bool, StoreError> {
        Ok(self
            .locate(&segment)
            .await?
            .is_some_and(|(_, l)| !l.manifest.is_empty()))
    }

    /// What the segment's tracker (the first of its pair that answers) knows of it, and which
    /// tracker that is; `None` if it does not know the segment.
    async fn locate(
        &self,
        segment: &SegmentId,
    ) -> Result<Option<(NodeId, SegmentLocation)>, StoreError> {
        let request = self
            .identity
            .sign(Locate { segment: *segment })
            .map_err(StoreError::Sign)?;
        // The DHT can answer instead: a tracker gets no longer than a holder.
        let timeout = self.discovery.as_ref().map(|_| self.config.read_timeout);
        let answer = self
            .at_pair(segment, timeout, |tracker| {
                let request = request.clone();
                async move { tracker.locate(request).await }
            })
            .await;
        match answer {
            Ok((_, location)) if location.deleted => Err(StoreError::Deleted {
                segment: segment.to_string(),
            }),
            Ok(found) => Ok(Some(found)),
            Err(StoreError::Tracker {
                source: NetError::NotFound(_),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The addresses the DHT names as `segment`'s holders: the ones it named before unless
    /// `fresh`; whether they were kept ones.
    async fn dht_holders(
        &self,
        discovery: &dyn Discovery,
        segment: SegmentId,
        fresh: bool,
    ) -> Result<(Vec<String>, bool), NetError> {
        if !fresh
            && let Some(kept) = self
                .dht_holders
                .lock()
                .ok()
                .and_then(|kept| kept.get(&segment).cloned())
        {
            return Ok((kept, true));
        }
        let found: Vec<String> = discovery
            .holders(segment)
            .await?
            .into_iter()
            .filter_map(|h| h.address)
            .collect();
        if let Ok(mut kept) = self.dht_holders.lock() {
            if kept.len() >= KEPT_HOLDERS {
                kept.clear();
            }
            kept.insert(segment, found.clone());
        }
        Ok((found, false))
    }

    /// Stores the pieces of a coded segment on reserved providers, in parallel, skipping the
    /// pieces the tracker already maps.
    pub async fn put(&self, encoded: &EncodedSegment) -> Result<PutReport, StoreError> {
        let m = &encoded.manifest;
        let segment = wire_segment(m);
        let mut report = PutReport::default();
        let mut missing: Vec<u32> = (0..m.pieces.len() as u32).collect();
        let mut last = String::new();
        for _ in 0..self.config.upload_rounds {
            if missing.is_empty() {
                break;
            }
            let specs = missing
                .iter()
                .map(|&i| PieceSpec {
                    index: i,
                    piece: PieceId(m.pieces[i as usize].hash.0),
                    size: m.piece_len(),
                })
                .collect();
            let request = self
                .identity
                .sign(ReserveSegment {
                    segment,
                    pieces: specs,
                })
                .map_err(StoreError::Sign)?;
            let (issuer, placement) = self
                .at_pair(&segment, None, |tracker| {
                    let request = request.clone();
                    async move { tracker.reserve(request).await }
                })
                .await?;
            // Pieces the tracker already maps (a resumed upload) are not sent again.
            report.skipped += placement.held.len();
            missing.retain(|i| !placement.held.contains(i));
            let stores = placement.pieces.into_iter().map(|placed| async move {
                let index = placed.reservation.index;
                store_piece(
                    self.connector.as_ref(),
                    &self.identity,
                    &placed.address,
                    placed.reservation,
                    Bytes::copy_from_slice(&encoded.pieces[index as usize]),
                    self.config.store_timeout,
                )
                .await
            });
            let mut receipts = Vec::new();
            for result in join_all(stores).await {
                match result {
                    Ok(receipt) => receipts.push(receipt),
                    Err(e) => last = e.to_string(),
                }
            }
            if !receipts.is_empty() {
                for r in &receipts {
                    report.sent += 1;
                    report.bytes_sent += r.reservation.size;
                }
                let stored: HashSet<u32> = receipts.iter().map(|r| r.reservation.index).collect();
                let request = self
                    .identity
                    .sign(ConfirmStored { receipts })
                    .map_err(StoreError::Sign)?;
                // Only the tracker that issued the reservations can check their receipts.
                self.trackers[&issuer]
                    .confirm(request)
                    .await
                    .map_err(|e| tracker_error(&issuer, &segment, e))?;
                missing.retain(|i| !stored.contains(i));
            }
        }
        if !missing.is_empty() {
            return Err(StoreError::Upload {
                segment: segment.to_string(),
                failed: missing.len(),
                last,
            });
        }
        debug!(segment = %segment, sent = report.sent, skipped = report.skipped, "segment stored");
        Ok(report)
    }

    /// Hands the segment's tracker what it needs to audit and repair the segment: its
    /// manifest and the table's audit key (never the row key).
    pub async fn entrust(
        &self,
        manifest: &SegmentManifest,
        audit: &AuditKey,
    ) -> Result<(), StoreError> {
        let segment = wire_segment(manifest);
        let request = self
            .identity
            .sign(Entrust {
                segment,
                manifest: Bytes::from(manifest.to_bytes()),
                audit_key: *audit.as_bytes(),
            })
            .map_err(StoreError::Sign)?;
        self.at_pair(&segment, None, |tracker| {
            let request = request.clone();
            async move { tracker.entrust(request).await }
        })
        .await?;
        Ok(())
    }

    /// Stores a coded segment ([`Storage::put`]) and entrusts it to its tracker for audits and
    /// repair ([`Storage::entrust`]).
    pub async fn put_audited(
        &self,
        encoded: &EncodedSegment,
        audit: &AuditKey,
    ) -> Result<PutReport, StoreError> {
        let report = self.put(encoded).await?;
        self.entrust(&encoded.manifest, audit).await?;
        Ok(report)
    }

    /// Deletes segments: each segment's two trackers are told to forget it (stop auditing it
    /// and delete its pieces at their holders). Both must answer, since either may be the only
    /// one that knows a segment yet (a tracker forgets only segments it knows). Idempotent:
    /// forgetting a forgotten or unknown segment does nothing, so a failed call is retried.
    pub async fn forget(&self, segments: &[SegmentId]) -> Result<(), StoreError> {
        let mut by_pair: HashMap<Vec<NodeId>, Vec<SegmentId>> = HashMap::new();
        for segment in segments {
            let pair = rendezvous::pair(&segment.0, self.trackers.keys());
            by_pair.entry(pair).or_default().push(*segment);
        }
        for (pair, segments) in by_pair {
            for chunk in segments.chunks(MAX_DELETE) {
                let request = self
                    .identity
                    .sign(Forget {
                        segments: chunk.to_vec(),
                    })
                    .map_err(StoreError::Sign)?;
                let answers = join_all(
                    pair.iter()
                        .map(|id| self.trackers[id].forget(request.clone())),
                )
                .await;
                for (id, answer) in pair.iter().zip(answers) {
                    let n = answer.map_err(|e| tracker_error(id, &chunk[0], e))?;
                    debug!(tracker = %id, forgotten = n, "segments forgotten");
                }
            }
        }
        Ok(())
    }

    /// Tells the segment's tracker that `holder` refused piece `index` or served wrong bytes.
    /// Best effort: a complaint that cannot be delivered is only logged.
    async fn complain(&self, segment: &SegmentId, index: usize, holder: NodeId, reason: String) {
        if !self.config.complain {
            return;
        }
        let complaint = Complaint {
            segment: *segment,
            index: index as u32,
            provider: holder,
            reason,
        };
        let sent = match self.identity.sign(complaint) {
            Ok(request) => self
                .at_pair(segment, None, |tracker| {
                    let request = request.clone();
                    async move { tracker.complain(request).await }
                })
                .await
                .map(|_| ()),
            Err(e) => Err(StoreError::Sign(e)),
        };
        if let Err(e) = sent {
            debug!(segment = %segment, provider = %holder, error = %e, "complaint not delivered");
        }
    }

    /// Fetches one whole piece from `holders` in turn and checks it against the manifest's
    /// hash; `Err` says why every holder failed. A holder the tracker maps (`Some` node) that
    /// refuses the piece or serves wrong bytes is reported ([`Storage::complain`]).
    async fn fetch_piece(
        &self,
        holders: &[(String, Option<NodeId>)],
        m: &SegmentManifest,
        index: usize,
    ) -> Result<Vec<u8>, String> {
        let want = m.pieces[index].hash;
        let mut why = Vec::new();
        for (address, node) in holders {
            let attempt = read_whole_piece(
                self.connector.as_ref(),
                &self.identity,
                address,
                PieceId(want.0),
                self.config.read_timeout,
            );
            let refused = match attempt.await {
                Ok(data) => return Ok(data.to_vec()),
                Err(NetError::Conflict(_)) => Some("wrong bytes".to_string()),
                // Refusing the owner its own piece is withholding it; being down is not.
                Err(e @ (NetError::NotFound(_) | NetError::Forbidden(_))) => Some(e.to_string()),
                Err(e) => {
                    why.push(format!("piece {index} at {address}: {e}"));
                    None
                }
            };
            if let Some(reason) = refused {
                why.push(format!("piece {index} at {address}: {reason}"));
                if let Some(node) = node {
                    self.complain(&wire_segment(m), index, *node, reason).await;
                }
            }
        }
        if why.is_empty() {
            why.push(format!("piece {index}: no holder known"));
        }
        Err(why.join("; "))
    }

    /// What the tracker knows of segment `m`: its current manifest (`m`, with the pieces its
    /// repairs re-coded since taken from the tracker's copy) and each piece's holders, live
    /// ones first. `None` if the tracker does not know the segment.
    async fn located(
        &self,
        m: &SegmentManifest,
    ) -> Result<Option<(SegmentManifest, Holders)>, StoreError> {
        let Some((_, location)) = self.locate(&wire_segment(m)).await? else {
            return Ok(None);
        };
        let current = newest(m, &location.manifest);
        let mut holders: Holders = vec![Vec::new(); current.pieces.len()];
        for mut piece in location.pieces {
            let index = piece.index as usize;
            if current.pieces.get(index).map(|p| p.hash.0) == Some(piece.piece.0) {
                piece.holders.sort_by_key(|h| !h.alive);
                holders[index] = piece
                    .holders
                    .into_iter()
                    .map(|h| (h.address, Some(h.node)))
                    .collect();
            }
        }
        Ok(Some((current, holders)))
    }

    /// Fetches k intact pieces of a segment, data pieces first, in parallel; a piece that
    /// cannot be had is replaced by the next one. Holders come from the tracker's map (live
    /// ones first), then, if that leaves fewer than k pieces, from the DHT. Slots not fetched
    /// are `None`.
    pub async fn fetch(&self, m: &SegmentManifest) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        Ok(self.fetch_current(m).await?.1)
    }

    /// [`Storage::fetch`], returning also the manifest the pieces belong to: `m`, with the
    /// pieces that the tracker's repairs re-coded since taken from the tracker's copy.
    pub async fn fetch_current(
        &self,
        m: &SegmentManifest,
    ) -> Result<(SegmentManifest, Vec<Option<Vec<u8>>>), StoreError> {
        let segment = wire_segment(m);
        let k = m.params.data;
        let mut why = Vec::new();
        let mut deleted = None;
        let mut current = m.clone();
        let mut mapped: Holders = vec![Vec::new(); m.pieces.len()];
        match self.located(m).await {
            Ok(Some(located)) => (current, mapped) = located,
            Ok(None) => why.push("the tracker does not know the segment".to_string()),
            // One tracker's word must not hide a segment: with the DHT, its holders are asked.
            Err(e @ StoreError::Deleted { .. }) if self.discovery.is_none() => return Err(e),
            Err(e @ StoreError::Deleted { .. }) => deleted = Some(e),
            Err(e) if self.discovery.is_some() => why.push(e.to_string()),
            Err(e) => return Err(e),
        }
        let m = &current;
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; m.pieces.len()];
        let mut intact = self.fetch_from(m, &mapped, &mut pieces, &mut why).await;
        if let (true, Some(discovery)) = (intact < k, &self.discovery) {
            // The holders named before first; asked again if they no longer serve k pieces.
            for fresh in [false, true] {
                match self.dht_holders(discovery.as_ref(), segment, fresh).await {
                    Ok((addresses, kept)) => {
                        // Any holder may have any piece: ask each one the map did not name.
                        // Not named by the map: refusing a piece is no sign of cheating.
                        let found: Holders = mapped
                            .iter()
                            .map(|named| {
                                addresses
                                    .iter()
                                    .filter(|a| !named.iter().any(|(n, _)| n == *a))
                                    .map(|a| (a.clone(), None))
                                    .collect()
                            })
                            .collect();
                        intact = self.fetch_from(m, &found, &mut pieces, &mut why).await;
                        if intact >= k || !kept {
                            break;
                        }
                    }
                    Err(e) => {
                        why.push(format!("DHT lookup: {e}"));
                        break;
                    }
                }
            }
        }
        if let (true, Some(deleted)) = (intact < k, deleted) {
            return Err(deleted);
        }
        if intact < k {
            return Err(StoreError::Unrecoverable {
                segment: segment.to_string(),
                intact,
                needed: k,
                why: why.join("; "),
            });
        }
        Ok((current, pieces))
    }

    /// Fills the empty slots of `pieces` from `holders` (per piece index), data pieces first,
    /// as many in parallel as are still needed, until k are intact or every piece was tried.
    /// Returns how many are intact.
    async fn fetch_from(
        &self,
        m: &SegmentManifest,
        holders: &[Vec<(String, Option<NodeId>)>],
        pieces: &mut [Option<Vec<u8>>],
        why: &mut Vec<String>,
    ) -> usize {
        let k = m.params.data;
        let mut intact = pieces.iter().flatten().count();
        let mut todo = (0..pieces.len())
            .filter(|&i| pieces[i].is_none())
            .collect::<Vec<_>>()
            .into_iter();
        while intact < k {
            let batch: Vec<usize> = todo.by_ref().take(k - intact).collect();
            if batch.is_empty() {
                break;
            }
            let fetched = join_all(batch.iter().map(|&i| async move {
                match holders[i].as_slice() {
                    [] => Err(format!("piece {i}: no holder known")),
                    named => self.fetch_piece(named, m, i).await,
                }
            }))
            .await;
            for (i, result) in batch.into_iter().zip(fetched) {
                match result {
                    Ok(bytes) => {
                        pieces[i] = Some(bytes);
                        intact += 1;
                    }
                    Err(e) => why.push(e),
                }
            }
        }
        intact
    }

    /// Fetches and decodes a whole segment.
    pub async fn get(
        &self,
        codec: &Codec,
        audit: &AuditKey,
        m: &SegmentManifest,
    ) -> Result<Vec<u8>, StoreError> {
        let (current, pieces) = self.fetch_current(m).await?;
        let refs: Vec<Option<&[u8]>> = pieces.iter().map(Option::as_deref).collect();
        Ok(codec.decode(audit, &current, &refs)?)
    }

    /// The manifest of `segment` as its tracker keeps it (with the pieces its repairs
    /// re-coded); `None` if it was never entrusted whole ([`Storage::entrusted`]). Checked to
    /// be that segment's; its pieces are checked against it when read.
    pub async fn manifest(
        &self,
        segment: SegmentId,
    ) -> Result<Option<SegmentManifest>, StoreError> {
        let Some((tracker, location)) = self.locate(&segment).await? else {
            return Ok(None);
        };
        if location.manifest.is_empty() {
            return Ok(None);
        }
        let manifest = SegmentManifest::from_bytes(&location.manifest)?;
        if wire_segment(&manifest) != segment {
            return Err(tracker_error(
                &tracker,
                &segment,
                NetError::Internal("the tracker keeps another segment's manifest".into()),
            ));
        }
        Ok(Some(manifest))
    }

    /// Reads rows. A segment the cache holds is used as is; one the rows want little of (under
    /// 1/[`RANGED_FRACTION`] of its bytes) and not read by ranges lately is read by ranged
    /// reads of just those rows' bytes, each checked against its piece's hash by a proof; any
    /// other is fetched and decoded whole, once, and cached, [`SEGMENTS_IN_FLIGHT`] at a time.
    /// A row whose ranged reads fail falls back to its whole segment, so it is read from any k
    /// pieces. Fails naming every row whose segment cannot be recovered.
    pub async fn read_rows(
        &self,
        table: &mut Table,
        manifests: &HashMap<wwt_engine::SegmentId, SegmentManifest>,
        locators: &[Locator],
        cache: &mut SegmentCache,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut wanted: HashMap<wwt_engine::SegmentId, u64> = HashMap::new();
        for e in locators.iter().flat_map(|l| &l.extents) {
            *wanted.entry(e.segment).or_default() += e.len;
        }
        let sparse = |id: &wwt_engine::SegmentId| {
            cache.get(id).is_none()
                && !cache.ranged_before(id)
                && manifests
                    .get(id)
                    .is_some_and(|m| wanted[id].saturating_mul(RANGED_FRACTION) < m.segment_len)
        };
        // Whole segments for every row that touches a segment read whole.
        let mut whole: HashSet<wwt_engine::SegmentId> = locators
            .iter()
            .filter(|l| !l.extents.iter().all(|e| sparse(&e.segment)))
            .flat_map(|l| l.extents.iter().map(|e| e.segment))
            .collect();
        let ranged: Vec<usize> = (0..locators.len())
            .filter(|&i| {
                let l = &locators[i];
                l.extents.iter().all(|e| sparse(&e.segment))
                    && !l.extents.iter().any(|e| whole.contains(&e.segment))
            })
            .collect();
        let mut out: Vec<Option<Vec<u8>>> = vec![None; locators.len()];
        let by_range: Vec<&Locator> = ranged.iter().map(|&i| &locators[i]).collect();
        for e in by_range.iter().flat_map(|l| &l.extents) {
            cache.note_ranged(e.segment);
        }
        for (i, row) in ranged
            .iter()
            .zip(self.read_ranged(table, manifests, &by_range).await)
        {
            match row {
                Some(row) => out[*i] = Some(row),
                None => whole.extend(locators[*i].extents.iter().map(|e| e.segment)),
            }
        }
        let mut segments = HashMap::new();
        let mut failed = HashMap::new();
        let mut whole: Vec<_> = whole.into_iter().collect();
        whole.sort_unstable();
        let mut fetches = Vec::new();
        for id in whole {
            if let Some(bytes) = cache.get(&id) {
                segments.insert(id, bytes);
                continue;
            }
            let m = manifests
                .get(&id)
                .ok_or_else(|| wwt_engine::Error::ManifestMismatch {
                    segment: id.to_string(),
                    what: "no manifest for this segment".into(),
                })?;
            fetches.push((id, m));
        }
        // The fetches borrow the table's codec and audit key until `fetched` is dropped.
        let (codec, audit) = (table.codec(), &table.keys().audit);
        // Made before they are streamed: a stream holding this closure over borrowed manifests
        // leaves the future not `Send` (rustc cannot prove it for every lifetime).
        let fetches: Vec<_> = fetches
            .into_iter()
            .map(|(id, m)| async move { (id, self.get(codec, audit, m).await) })
            .collect();
        let mut fetched = stream::iter(fetches).buffer_unordered(SEGMENTS_IN_FLIGHT);
        while let Some((id, result)) = fetched.next().await {
            match result {
                Ok(bytes) => {
                    let bytes = Arc::new(bytes);
                    cache.insert(id, bytes.clone());
                    segments.insert(id, bytes);
                }
                Err(e) => {
                    failed.insert(id, e);
                }
            }
        }
        drop(fetched);
        let lost: Vec<&Locator> = locators
            .iter()
            .zip(&out)
            .filter(|(l, row)| {
                row.is_none() && l.extents.iter().any(|e| failed.contains_key(&e.segment))
            })
            .map(|(l, _)| l)
            .collect();
        if let Some(first) = lost.first() {
            let cause = first
                .extents
                .iter()
                .find_map(|e| failed.remove(&e.segment))
                .expect("a lost row has a failed segment");
            return Err(StoreError::RowsLost {
                rows: lost.iter().map(|l| l.row.to_string()).collect(),
                cause: Box::new(cause),
            });
        }
        locators
            .iter()
            .zip(out)
            .map(|(l, row)| match row {
                Some(row) => Ok(row),
                None => Ok(table.read_row(l, |id| segments.get(id).map(|b| b.as_slice()))?),
            })
            .collect()
    }

    /// Reads each row of `locators` by ranged reads of the data pieces that hold its bytes
    /// (the segments' current manifests and holders from their trackers, all reads at once),
    /// each checked against the piece hash by its proof. `None` for a row any of whose reads
    /// failed.
    async fn read_ranged(
        &self,
        table: &mut Table,
        manifests: &HashMap<wwt_engine::SegmentId, SegmentManifest>,
        locators: &[&Locator],
    ) -> Vec<Option<Vec<u8>>> {
        if locators.is_empty() {
            return Vec::new();
        }
        let mut ids: Vec<wwt_engine::SegmentId> = locators
            .iter()
            .flat_map(|l| l.extents.iter().map(|e| e.segment))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // Each segment's current manifest and each piece's holders.
        let located = join_all(
            ids.iter()
                .filter_map(|id| manifests.get(id))
                .map(|m| async { self.located(m).await.ok().flatten() }),
        )
        .await;
        let current: HashMap<wwt_engine::SegmentId, (SegmentManifest, Holders)> = located
            .into_iter()
            .flatten()
            .map(|(m, h)| (m.segment, (m, h)))
            .collect();
        // Every read of every row, planned on the current manifests.
        let audit = table.keys().audit.clone();
        let mut reads: Vec<(wwt_engine::SegmentId, RangeRead)> = Vec::new();
        for e in locators.iter().flat_map(|l| &l.extents) {
            if let Some((m, _)) = current.get(&e.segment)
                && let Ok(planned) = plan_read(&audit, m, e)
            {
                reads.extend(planned.into_iter().map(|r| (e.segment, r)));
            }
        }
        reads.sort_by_key(|(id, r)| (*id, r.piece, r.piece_start));
        reads.dedup_by_key(|(id, r)| (*id, r.piece, r.piece_start));
        let fetched = join_all(reads.iter().map(|(id, r)| {
            let (m, holders) = &current[id];
            self.read_range(&holders[r.piece], m.pieces[r.piece].hash, r)
        }))
        .await;
        let got: HashMap<(wwt_engine::SegmentId, usize, u64), Vec<u8>> = reads
            .iter()
            .zip(fetched)
            .filter_map(|((id, r), bytes)| Some(((*id, r.piece, r.piece_start), bytes?)))
            .collect();
        locators
            .iter()
            .map(|l| {
                table
                    .read_row_ranged(
                        l,
                        |id| current.get(id).map(|(m, _)| m),
                        |m, r| {
                            got.get(&(m.segment, r.piece, r.piece_start))
                                .cloned()
                                .ok_or_else(|| wwt_engine::Error::ManifestMismatch {
                                    segment: m.segment.to_string(),
                                    what: "a ranged read failed".into(),
                                })
                        },
                    )
                    .ok()
            })
            .collect()
    }

    /// Bytes `r.piece_start..+r.piece_len` of the piece with hash `hash`, from the first of
    /// `holders` whose answer its proof checks against the hash.
    async fn read_range(
        &self,
        holders: &[(String, Option<NodeId>)],
        hash: PieceHash,
        r: &RangeRead,
    ) -> Option<Vec<u8>> {
        for (address, _) in holders {
            let request = ReadPiece {
                piece: PieceId(hash.0),
                range: Some(ByteRange {
                    offset: r.piece_start,
                    len: r.piece_len,
                }),
            };
            let attempt = read_piece(
                self.connector.as_ref(),
                &self.identity,
                address,
                request,
                self.config.read_timeout,
            );
            match attempt.await {
                Ok(data) => match proof::verify(&hash, r.piece_start, r.piece_len, &data.proof) {
                    Ok(bytes) => return Some(bytes),
                    Err(e) => debug!(%address, "ranged read failed its proof: {e}"),
                },
                Err(e) => debug!(%address, "ranged read: {e}"),
            }
        }
        None
    }
}

/// Decoded segments kept for later reads, oldest evicted first, bounded in bytes.
///
/// It also remembers the segments read lately by ranges: a segment read a second time is
/// fetched whole and kept, so a working set that recurs is served from memory while one-off
/// point reads never decode (nor evict) whole segments.
#[derive(Debug, Default)]
pub struct SegmentCache {
    limit: usize,
    used: usize,
    order: VecDeque<wwt_engine::SegmentId>,
    segments: HashMap<wwt_engine::SegmentId, Arc<Vec<u8>>>,
    ranged_order: VecDeque<wwt_engine::SegmentId>,
    ranged: HashSet<wwt_engine::SegmentId>,
}

/// How many segments read by ranges a [`SegmentCache`] remembers.
const RANGED_MEMORY: usize = 4096;

impl SegmentCache {
    /// A cache of at most `limit` bytes (0 keeps nothing).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// How many decoded segments it holds.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// True when it holds no segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// True if `id` was read by ranges lately and the cache can keep segments: read it
    /// whole this time.
    fn ranged_before(&self, id: &wwt_engine::SegmentId) -> bool {
        self.limit > 0 && self.ranged.contains(id)
    }

    fn note_ranged(&mut self, id: wwt_engine::SegmentId) {
        if self.limit == 0 || !self.ranged.insert(id) {
            return;
        }
        self.ranged_order.push_back(id);
        if self.ranged_order.len() > RANGED_MEMORY
            && let Some(old) = self.ranged_order.pop_front()
        {
            self.ranged.remove(&old);
        }
    }

    fn get(&self, id: &wwt_engine::SegmentId) -> Option<Arc<Vec<u8>>> {
        self.segments.get(id).cloned()
    }

    /// Forgets a segment the owner deleted: what it held is read from nowhere any more.
    pub fn remove(&mut self, id: &wwt_engine::SegmentId) {
        if let Some(bytes) = self.segments.remove(id) {
            self.used -= bytes.len();
            self.order.retain(|o| o != id);
        }
    }

    fn insert(&mut self, id: wwt_engine::SegmentId, bytes: Arc<Vec<u8>>) {
        if bytes.len() > self.limit || self.segments.contains_key(&id) {
            return;
        }
        self.used += bytes.len();
        self.order.push_back(id);
        self.segments.insert(id, bytes);
        while self.used > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.segments.remove(&old) {
                self.used -= b.len();
            }
        }
    }
}
