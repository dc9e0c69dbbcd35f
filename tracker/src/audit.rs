//! Audits and repair: challenges on a Poisson schedule, credit, and the repair queue.
//!
//! An owner entrusts each stored segment to its tracker ([`wwt_net::audit::Entrust`]): the
//! segment manifest and the table's audit key. The tracker then challenges every piece at
//! exponentially distributed gaps (mean [`AuditConfig::mean_interval_ms`], seeded), with a
//! deadline:
//!
//! - a sentinel challenge asks for q piece positions, the next q sentinels in a per-piece
//!   secret order (derived from the audit key and the piece hash), each asked once; fewer
//!   than [`AuditConfig::refresh_below`] unused sentinels queue the piece for a refresh (a
//!   re-code with fresh whitening and sentinels, as a repair);
//! - a chunk challenge asks for a random 1 KiB chunk with its Bao proof against the piece hash.
//!
//! Each result goes to the hash-linked [`AuditLog`] and to the holder's [`Credit`]. A wrong
//! answer queues that piece for repair, and so does a piece that answers only inconclusively
//! for [`AuditConfig::offline_threshold_ms`] while other challenges pass; a provider with
//! [`AuditConfig::max_failures`] recent wrong answers, or missing every challenge for the
//! offline threshold, is condemned: credit 0 until it may be vetted again, and all its pieces
//! queued. Repair fetches k intact pieces,
//! rebuilds the queued ones in the next generation ([`wwt_engine::Codec::rebuild`], audit key
//! only), stores them on other providers under the tracker's own reservations, and updates the
//! piece map and the entrusted manifest. The queue is in sled, so it survives a restart.
//!
//! The copies a repair or refresh replaces (the old piece at each of its holders) are doomed
//! in the piece map's `doomed` tree, and each audit step deletes doomed copies at their holders
//! (`Provider/Delete`, in batches per holder; see [`crate::forget`]), forgets orphans (segments
//! mapped but never entrusted within [`AuditConfig::orphan_grace_ms`]) and skips segments their
//! owners deleted, whose audit state `Audits::forget` drops.
//!
//! Trees in the tracker's database: `entrusted` (segment → audit key ‖ manifest), `sentinels`
//! (piece id → sentinels used, u32 LE), `credit` (node → [`Credit`]), `repairs` (segment ‖ index
//! → reason byte ‖ holder to drop), `audit_meta` (counters: `repairs_done`, `pieces_deleted`,
//! u64 LE), `audit_log` ([`AuditLog`]). An entrusted record is written in a transaction with
//! the map's `forgotten` and `unentrusted` trees (`Audits::record`): a forgotten segment is
//! never entrusted again, and an entrusted one is no orphan. The map's trees are listed in
//! [`crate::map`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tracing::{debug, info, warn};
use wwt_engine::{AuditKey, Codec, PieceHash, PieceView, SegmentManifest, proof};
use wwt_net::audit::{
    AuditEntry, AuditReport, Challenge, ChallengeKind, Complaint, CreditRecord, Entrust,
    MAX_REPORT_ENTRIES,
};
use wwt_net::types::{ByteRange, NodeId, PieceId, PieceSpec, SegmentId};
use wwt_net::{Connector, NetError, now_ms, read_whole_piece, store_piece};

use crate::clock::Clock;
use crate::config::{AdmissionConfig, AuditConfig};
use crate::credit::CreditRules;
pub use crate::credit::{Credit, Outcome};
use crate::error::poisoned;
use crate::log::{AuditLog, Event};
use crate::map::{MappedPiece, Tombstone, u64_at};
use crate::service::Tracker;

/// Size of the chunk a chunk challenge asks for (one BLAKE3 chunk).
const CHUNK: u64 = 1024;
/// Segments repaired at once: each holds k pieces read and the pieces rebuilt.
const REPAIRS_AT_ONCE: usize = 4;
/// How long a repair read or store may take.
const REPAIR_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Why a right-sized answer failed (the only failure that says anything of an audit key).
const WRONG_ANSWER: &str = "wrong answer";
/// How often (audit clock) the registry learns the bytes each provider has proven.
const PROVEN_REFRESH_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// Owners whose complaints this hour are counted before old counts are pruned.
const MAX_COMPLAINANTS: usize = 4096;
/// How long a segment whose repair failed waits before it is tried again; it doubles with
/// each failure in a row...
const REPAIR_BACKOFF_MS: u64 = 10_000;
/// Holders asked at most when an audit key is checked at entrust...
const KEY_CHECK_HOLDERS: usize = 3;
/// ...each for at most this long.
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// ...up to this.
const MAX_REPAIR_BACKOFF_MS: u64 = 3_600_000;

fn db_err(e: sled::Error) -> NetError {
    NetError::Internal(format!("audit state: {e}"))
}

/// The tree of entrusted records (segment → audit key ‖ manifest).
pub(crate) const ENTRUSTED_TREE: &str = "entrusted";

/// An exponential gap with mean `mean_ms`, in milliseconds (at least 1).
fn gap(mean_ms: u64, rng: &mut StdRng) -> u64 {
    let u: f64 = rng.random();
    let gap = -(mean_ms as f64) * (1.0 - u).ln();
    (gap as u64).max(1)
}

/// One challenge of an audit step and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeResult {
    /// The provider challenged.
    pub provider: NodeId,
    /// The piece.
    pub piece: PieceId,
    /// `sentinel` or `chunk`.
    pub kind: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

/// What one audit step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// The challenges sent, with their results.
    pub challenges: Vec<ChallengeResult>,
    /// Providers condemned in this step.
    pub condemned: Vec<NodeId>,
    /// Pieces repaired or refreshed in this step.
    pub repaired: usize,
    /// Segments forgotten in this step as orphans: mapped, and not entrusted within
    /// [`AuditConfig::orphan_grace_ms`].
    pub orphans: usize,
    /// Copies deleted at their holders in this step (each holder answered its delete).
    pub deleted: usize,
}

/// A segment in the repair queue ([`Tracker::repair_queue`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRepair {
    /// The segment.
    pub segment: SegmentId,
    /// Its pieces that wait, each with the holder it was lost at (`None`: its sentinels
    /// are running out, a refresh).
    pub pieces: Vec<(u32, Option<NodeId>)>,
    /// Repairs of it that failed in a row, and when it may be tried again (0: now).
    pub failures: u32,
    /// See `failures`.
    pub retry_ms: u64,
}

/// A segment under audit: its audit key and current manifest.
struct Entrusted {
    audit: AuditKey,
    manifest: SegmentManifest,
}

impl Entrusted {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.audit.as_bytes().to_vec();
        out.extend_from_slice(&self.manifest.to_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Entrusted, NetError> {
        let corrupt = || NetError::Internal("corrupt entrusted segment".into());
        let key: [u8; 32] = bytes
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(corrupt)?;
        Ok(Entrusted {
            audit: AuditKey::from_bytes(key),
            manifest: SegmentManifest::from_bytes(&bytes[32..]).map_err(|_| corrupt())?,
        })
    }
}

/// Why a piece waits in the repair queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Lost at `holder` (failed a challenge, or its holder was condemned).
    Lost(NodeId),
    /// Its sentinels are running out.
    Refresh,
}

impl Reason {
    /// The holder it was lost at; `None` for a refresh.
    fn lost_at(self) -> Option<NodeId> {
        match self {
            Reason::Lost(node) => Some(node),
            Reason::Refresh => None,
        }
    }

    fn encode(self) -> Vec<u8> {
        match self {
            Reason::Lost(node) => [&[0u8][..], &node.0].concat(),
            Reason::Refresh => vec![1],
        }
    }

    fn decode(bytes: &[u8]) -> Option<Reason> {
        match bytes.split_first()? {
            (0, node) => NodeId::from_slice(node).ok().map(Reason::Lost),
            (1, _) => Some(Reason::Refresh),
            _ => None,
        }
    }
}

/// What the tracker asks and checks the answer against.
enum Check {
    /// A sentinel challenge: these sentinels at these positions.
    Sentinels {
        view: PieceView,
        which: Vec<u32>,
        positions: Vec<u64>,
    },
    /// A chunk challenge: this range, with its Bao proof against the piece hash.
    Chunk { hash: PieceHash, range: ByteRange },
    /// A read of the whole piece, as its owner reads it (checking an owner's complaint).
    Whole,
}

impl Check {
    fn name(&self) -> &'static str {
        match self {
            Check::Sentinels { .. } => "sentinel",
            Check::Chunk { .. } => "chunk",
            Check::Whole => "read",
        }
    }
}

/// A challenge ready to send.
struct Planned {
    segment: SegmentId,
    index: u32,
    piece: PieceId,
    provider: NodeId,
    address: String,
    check: Check,
}

/// A challenge of one piece at one holder, asked once at a given time: an owner's complaint
/// checked, or an inconclusive challenge asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OneOff {
    due: u64,
    segment: SegmentId,
    index: u32,
    holder: NodeId,
    /// Read the whole piece (a complaint) rather than draw a challenge.
    whole: bool,
}

struct Inner {
    /// (due, segment, index), earliest first.
    schedule: BinaryHeap<Reverse<(u64, [u8; 32], u32)>>,
    rng: StdRng,
    entrusted: HashMap<SegmentId, Arc<Entrusted>>,
    credit: HashMap<NodeId, Credit>,
    /// Since when each provider has missed every challenge.
    offline_since: HashMap<NodeId, u64>,
    /// When each piece last passed a challenge.
    last_pass: HashMap<PieceId, u64>,
    /// Challenges to send once, to one holder.
    one_offs: Vec<OneOff>,
    /// Per owner: the hour its complaints are counted in (audit clock) and how many it filed.
    complaints: HashMap<NodeId, (u64, u32)>,
    /// Per segment whose repair failed: failures in a row and when it may be tried again.
    backoff: HashMap<SegmentId, (u32, u64)>,
    /// When the registry last learnt the bytes each provider holds under audit.
    proven_ms: Option<u64>,
    /// Since when each (piece, holder, complaint read or not) has answered only
    /// inconclusively (a read: or not in time).
    unproven: HashMap<(PieceId, NodeId, bool), u64>,
    /// When any challenge last passed: this tracker's challenges get through.
    last_pass_ms: u64,
}

/// The audit state of a tracker (see the module docs).
pub struct Audits {
    pub(crate) config: AuditConfig,
    rules: CreditRules,
    complaints_per_hour: u32,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) connector: Arc<dyn Connector>,
    entrusted: sled::Tree,
    sentinels: sled::Tree,
    credit: sled::Tree,
    repairs: sled::Tree,
    meta: sled::Tree,
    /// The map's tombstones: a forgotten segment is never entrusted again.
    forgotten: sled::Tree,
    /// The map's segments mapped but not entrusted: an entrust clears its segment's mark.
    unentrusted: sled::Tree,
    log: AuditLog,
    inner: Mutex<Inner>,
    /// [`Tracker::held`] at a [`crate::map::PieceMap::version`].
    held: Mutex<Option<(u64, Held)>>,
}

/// Per provider, the pieces and bytes it holds under a tracker's audits.
type Held = Arc<HashMap<NodeId, (u64, u64)>>;

impl std::fmt::Debug for Audits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audits").finish_non_exhaustive()
    }
}

impl Audits {
    /// Opens the audit state in `db`, scheduling every entrusted piece afresh.
    pub(crate) fn open(
        db: &sled::Db,
        config: AuditConfig,
        admission: &AdmissionConfig,
        clock: Arc<dyn Clock>,
        connector: Arc<dyn Connector>,
    ) -> Result<Audits, NetError> {
        let tree = |name: &str| db.open_tree(name).map_err(db_err);
        let seed = config.seed.unwrap_or_else(rand::random);
        let mut inner = Inner {
            schedule: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(seed),
            entrusted: HashMap::new(),
            credit: HashMap::new(),
            offline_since: HashMap::new(),
            last_pass: HashMap::new(),
            one_offs: Vec::new(),
            complaints: HashMap::new(),
            backoff: HashMap::new(),
            proven_ms: None,
            unproven: HashMap::new(),
            last_pass_ms: 0,
        };
        let entrusted = tree(ENTRUSTED_TREE)?;
        let credit = tree("credit")?;
        let forgotten = tree("forgotten")?;
        let now = clock.now_ms();
        for item in entrusted.iter() {
            let (k, v) = item.map_err(db_err)?;
            let segment = SegmentId::from_slice(&k)?;
            // Deleted by its owner, and the tracker stopped before it dropped the record.
            if forgotten.contains_key(&k).map_err(db_err)? {
                entrusted.remove(&k).map_err(db_err)?;
                continue;
            }
            let e = Entrusted::decode(&v)?;
            for index in 0..e.manifest.pieces.len() as u32 {
                let due = now + gap(config.mean_interval_ms, &mut inner.rng);
                inner.schedule.push(Reverse((due, segment.0, index)));
            }
            inner.entrusted.insert(segment, Arc::new(e));
        }
        for item in credit.iter() {
            let (k, v) = item.map_err(db_err)?;
            if let Some(c) = Credit::decode(&v) {
                inner.credit.insert(NodeId::from_slice(&k)?, c);
            }
        }
        Ok(Audits {
            entrusted,
            sentinels: tree("sentinels")?,
            credit,
            repairs: tree("repairs")?,
            meta: tree("audit_meta")?,
            forgotten,
            unentrusted: tree("unentrusted")?,
            log: AuditLog::open(tree("audit_log")?)?,
            rules: CreditRules {
                half_life_ms: config.credit_half_life_ms,
                vetting_audits: admission.vetting_audits,
                vetting_ms: admission.vetting_ms,
                readmit_after_ms: admission.readmit_after_ms,
            },
            complaints_per_hour: admission.complaints_per_hour,
            config,
            clock,
            connector,
            inner: Mutex::new(inner),
            held: Mutex::new(None),
        })
    }

    /// The credit and vetting of every provider audited so far, for the registry.
    pub(crate) fn standings(&self) -> Result<Vec<(NodeId, u32, bool)>, NetError> {
        let now = self.clock.now_ms();
        Ok(self
            .inner()?
            .credit
            .iter()
            .map(|(n, c)| (*n, c.score(now, &self.rules), c.vetted_ms > 0))
            .collect())
    }

    fn inner(&self) -> Result<MutexGuard<'_, Inner>, NetError> {
        self.inner.lock().map_err(|_| poisoned("audit state"))
    }

    fn gap(&self, rng: &mut StdRng) -> u64 {
        gap(self.config.mean_interval_ms, rng)
    }

    pub(crate) fn log(&self, event: Event) -> Result<(), NetError> {
        debug!(
            provider = %event.provider, piece = %event.piece, kind = event.kind,
            outcome = event.outcome, "audit"
        );
        self.log.append(event).map(|_| ())
    }

    fn save_credit(&self, node: &NodeId, credit: &Credit) -> Result<(), NetError> {
        self.credit
            .insert(node.0, credit.encode())
            .map_err(db_err)
            .map(|_| ())
    }

    fn queue(&self, segment: &SegmentId, index: u32, reason: Reason) -> Result<(), NetError> {
        let key = crate::map::key(segment, index);
        // A loss overrides a refresh; an entry already there otherwise stays.
        let existing = self
            .repairs
            .get(key)
            .map_err(db_err)?
            .and_then(|v| Reason::decode(&v));
        if existing.is_some() && !(existing == Some(Reason::Refresh) && reason != Reason::Refresh) {
            return Ok(());
        }
        self.repairs.insert(key, reason.encode()).map_err(db_err)?;
        Ok(())
    }

    /// Whether any piece of `segment` waits for repair.
    fn is_queued(&self, segment: &SegmentId) -> Result<bool, NetError> {
        Ok(self
            .repairs
            .scan_prefix(segment.0)
            .next()
            .transpose()
            .map_err(db_err)?
            .is_some())
    }

    /// Drops a queued repair of piece `index` of `segment`, if any.
    pub(crate) fn unqueue(&self, segment: &SegmentId, index: u32) -> Result<(), NetError> {
        self.repairs
            .remove(crate::map::key(segment, index))
            .map_err(db_err)
            .map(|_| ())
    }

    fn repairs_done(&self) -> Result<u64, NetError> {
        self.counter("repairs_done")
    }

    fn counter(&self, name: &str) -> Result<u64, NetError> {
        Ok(self
            .meta
            .get(name)
            .map_err(db_err)?
            .and_then(|v| u64_at(&v, 0))
            .unwrap_or(0))
    }

    /// Copies deleted at their holders since the tracker was created.
    pub(crate) fn pieces_deleted(&self) -> Result<u64, NetError> {
        self.counter("pieces_deleted")
    }

    /// Counts `n` more copies deleted at their holders.
    pub(crate) fn add_deleted(&self, n: u64) -> Result<(), NetError> {
        self.meta
            .update_and_fetch("pieces_deleted", |old| {
                let was = old.and_then(|v| u64_at(v, 0)).unwrap_or(0);
                Some(was.saturating_add(n).to_le_bytes().to_vec())
            })
            .map_err(db_err)?;
        Ok(())
    }

    /// Drops every trace of `segment`, which its owner deleted, from the audit state: its
    /// entrusted record, its queued repairs, the sentinel counts of `pieces` and of its
    /// manifest's pieces, its one-off challenges, backoff and unproven pieces. Its scheduled
    /// challenges are dropped when they come due ([`Tracker::plan_challenges`] skips what is
    /// not entrusted).
    pub(crate) fn forget(&self, segment: &SegmentId, pieces: &[PieceId]) -> Result<(), NetError> {
        let mut inner = self.inner()?;
        let mut ids: HashSet<PieceId> = pieces.iter().copied().collect();
        if let Some(e) = inner.entrusted.remove(segment) {
            ids.extend(e.manifest.pieces.iter().map(|p| PieceId(p.hash.0)));
        }
        self.entrusted.remove(segment.0).map_err(db_err)?;
        for key in self.repairs.scan_prefix(segment.0).keys() {
            self.repairs.remove(key.map_err(db_err)?).map_err(db_err)?;
        }
        for id in &ids {
            self.sentinels.remove(id.0).map_err(db_err)?;
            inner.last_pass.remove(id);
        }
        inner.one_offs.retain(|o| o.segment != *segment);
        inner.backoff.remove(segment);
        inner
            .unproven
            .retain(|(piece, _, _), _| !ids.contains(piece));
        Ok(())
    }

    /// Keeps `entrusted` as `segment`'s record (a repair moved its manifest on), unless its
    /// owner deleted it meanwhile; whether it was kept.
    fn keep(&self, segment: SegmentId, entrusted: Entrusted) -> Result<bool, NetError> {
        let mut inner = self.inner()?;
        if self.record(&segment, &entrusted)?.is_some() {
            return Ok(false);
        }
        inner.entrusted.insert(segment, Arc::new(entrusted));
        Ok(true)
    }

    /// Writes `entrusted` as `segment`'s record and clears its unentrusted mark, in one
    /// transaction that refuses a forgotten segment: then nothing is written, and its
    /// tombstone is returned. Orphan expiry decides in a transaction too
    /// ([`crate::map::PieceMap::forget`]), which proceeds only while the segment is marked
    /// and has no record: sled runs the two one after the other, so an entrust either sees
    /// the tombstone (and is refused) or leaves a record the expiry sees (and keeps).
    /// Callers hold the audit state's lock, which [`Audits::forget`] takes once a tombstone
    /// is down: a record written just before an owner's forget is dropped by it.
    fn record(
        &self,
        segment: &SegmentId,
        entrusted: &Entrusted,
    ) -> Result<Option<Tombstone>, NetError> {
        let encoded = entrusted.encode();
        let trees = (&self.forgotten, &self.entrusted, &self.unentrusted);
        trees
            .transaction(|(forgotten, records, unentrusted)| {
                if let Some(tombstone) = forgotten.get(segment.0)? {
                    return Ok(Some(tombstone));
                }
                records.insert(&segment.0[..], encoded.as_slice())?;
                unentrusted.remove(&segment.0[..])?;
                Ok::<_, ConflictableTransactionError<()>>(None)
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => db_err(e),
                TransactionError::Abort(()) => NetError::Internal("entrust aborted".into()),
            })?
            .map(|v| Tombstone::decode(&v))
            .transpose()
    }

    /// The queued repairs, grouped by segment.
    fn queued(&self) -> Result<BTreeMap<SegmentId, Vec<(u32, Reason)>>, NetError> {
        let mut out: BTreeMap<SegmentId, Vec<(u32, Reason)>> = BTreeMap::new();
        for item in self.repairs.iter() {
            let (k, v) = item.map_err(db_err)?;
            let corrupt = || NetError::Internal("corrupt repair queue entry".into());
            let (segment, index) = crate::map::split_key(&k)?;
            let reason = Reason::decode(&v).ok_or_else(corrupt)?;
            out.entry(segment).or_default().push((index, reason));
        }
        Ok(out)
    }
}

impl Audits {
    /// The manifest and audit key of `segment`, if it is entrusted here.
    pub(crate) fn entrusted_of(
        &self,
        segment: &SegmentId,
    ) -> Result<Option<(SegmentManifest, [u8; 32])>, NetError> {
        Ok(self
            .inner()?
            .entrusted
            .get(segment)
            .map(|e| (e.manifest.clone(), *e.audit.as_bytes())))
    }

    /// Keeps `manifest` and `audit` for `segment`, scheduling its pieces if it is new here;
    /// over a manifest already kept, takes only the pieces it names in later generations
    /// ([`SegmentManifest::merged`]). Returns the manifest kept.
    pub(crate) fn adopt(
        &self,
        segment: SegmentId,
        audit: [u8; 32],
        manifest: SegmentManifest,
    ) -> Result<SegmentManifest, NetError> {
        let mut inner = self.inner()?;
        let (entrusted, fresh) = match inner.entrusted.get(&segment) {
            Some(held) => {
                let merged = held.manifest.merged(&manifest);
                if merged == held.manifest {
                    return Ok(merged);
                }
                let audit = held.audit.clone();
                (
                    Entrusted {
                        audit,
                        manifest: merged,
                    },
                    false,
                )
            }
            None => (
                Entrusted {
                    audit: AuditKey::from_bytes(audit),
                    manifest,
                },
                true,
            ),
        };
        if let Some(tombstone) = self.record(&segment, &entrusted)? {
            return Err(tombstone.refusal(&segment));
        }
        if fresh {
            let now = self.clock.now_ms();
            for index in 0..entrusted.manifest.pieces.len() as u32 {
                let due = now + self.gap(&mut inner.rng);
                inner.schedule.push(Reverse((due, segment.0, index)));
            }
        }
        let kept = entrusted.manifest.clone();
        inner.entrusted.insert(segment, Arc::new(entrusted));
        Ok(kept)
    }
}

impl Tracker {
    /// Takes a segment under audit (the owner's [`Entrust`]); a segment already entrusted
    /// keeps the tracker's manifest, which repairs may have moved on.
    pub(crate) async fn entrust_segment(
        &self,
        owner: NodeId,
        req: Entrust,
    ) -> Result<u32, NetError> {
        self.check_owner(&req.segment, &owner)?;
        let manifest = SegmentManifest::from_bytes(&req.manifest)
            .map_err(|e| NetError::BadRequest(format!("manifest: {e}")))?;
        if manifest.segment.0 != req.segment.0 {
            return Err(NetError::BadRequest(
                "the manifest is for another segment".into(),
            ));
        }
        for mapped in self.map.segment(&req.segment)? {
            if manifest.pieces.get(mapped.index as usize).map(|p| p.hash.0) != Some(mapped.piece.0)
            {
                return Err(NetError::BadRequest(format!(
                    "the manifest's piece {} is not the one stored",
                    mapped.index
                )));
            }
            // Audits size their reads by the manifest: it must say what was reserved.
            if manifest.piece_len() != mapped.size {
                return Err(NetError::BadRequest(format!(
                    "the manifest's pieces are {} bytes, but piece {} was stored with {}",
                    manifest.piece_len(),
                    mapped.index,
                    mapped.size
                )));
            }
        }
        let count = manifest.pieces.len() as u32;
        if self.audits.entrusted_of(&req.segment)?.is_none() {
            let candidate = Entrusted {
                audit: AuditKey::from_bytes(req.audit_key),
                manifest,
            };
            if let Err(e) = self.check_audit_key(&req.segment, &candidate).await {
                // Forgotten meanwhile (an orphan), its holders asked may have deleted it.
                self.map.check_kept(&req.segment)?;
                return Err(e);
            }
            self.audits
                .adopt(req.segment, req.audit_key, candidate.manifest)?;
            info!(segment = %req.segment, pieces = count, "segment entrusted");
        }
        // `adopt` cleared the mark with the record; a confirm may have marked it since.
        self.map.clear_unentrusted(&req.segment)?;
        Ok(count)
    }

    /// The manifest the tracker keeps for `segment` (engine encoding), if entrusted.
    pub(crate) fn current_manifest(&self, segment: &SegmentId) -> Result<Bytes, NetError> {
        Ok(self
            .audits
            .inner()?
            .entrusted
            .get(segment)
            .map(|e| Bytes::from(e.manifest.to_bytes()))
            .unwrap_or_default())
    }

    /// An owner's complaint that a holder refused its piece or served wrong bytes: the
    /// tracker reads that piece from that holder itself at the next audit step, and only a
    /// refusal or wrong bytes then count against the holder. An owner may file
    /// [`AdmissionConfig::complaints_per_hour`] complaints an hour.
    pub(crate) fn complaint(&self, owner: NodeId, c: Complaint) -> Result<(), NetError> {
        self.check_owner(&c.segment, &owner)?;
        let mapped = self
            .map
            .segment(&c.segment)?
            .into_iter()
            .find(|p| p.index == c.index && p.holders.contains(&c.provider))
            .ok_or_else(|| {
                NetError::NotFound(format!(
                    "provider {} holds no piece {} of segment {}",
                    c.provider, c.index, c.segment
                ))
            })?;
        let audits = &self.audits;
        let now = audits.clock.now_ms();
        {
            let mut inner = audits.inner()?;
            if inner.complaints.len() >= MAX_COMPLAINANTS {
                inner
                    .complaints
                    .retain(|_, (hour, _)| now.saturating_sub(*hour) < HOUR_MS);
            }
            let (hour, filed) = inner.complaints.entry(owner).or_insert((now, 0));
            if now.saturating_sub(*hour) >= HOUR_MS {
                *hour = now;
                *filed = 0;
            }
            if *filed >= audits.complaints_per_hour {
                return Err(NetError::NoCapacity(format!(
                    "{filed} complaints this hour already, the most one owner may file; \
                     complain again later"
                )));
            }
            *filed += 1;
        }
        audits.log(Event {
            time_ms: now,
            provider: c.provider,
            piece: mapped.piece,
            kind: "complaint",
            outcome: "filed",
            detail: c.reason,
        })?;
        self.one_off(c.segment, c.index, c.provider, true, now)
    }

    /// Per provider, the pieces and bytes it holds under this tracker's audits. Summing them
    /// reads the whole map, so the sums are kept until the map changes: the unauthenticated
    /// `Audits` report and each metrics scrape cost a scan only after a change, and callers
    /// at the same time wait for one scan.
    fn held(&self) -> Result<Held, NetError> {
        let mut kept = self
            .audits
            .held
            .lock()
            .map_err(|_| poisoned("held pieces"))?;
        let version = self.map.version();
        if let Some((at, held)) = kept.as_ref()
            && *at == version
        {
            return Ok(held.clone());
        }
        let mut held: HashMap<NodeId, (u64, u64)> = HashMap::new();
        for (_, piece) in self.map.all()? {
            for h in piece.holders {
                let (pieces, bytes) = held.entry(h).or_default();
                *pieces += 1;
                *bytes += piece.size;
            }
        }
        let held = Arc::new(held);
        *kept = Some((version, held.clone()));
        Ok(held)
    }

    /// Tells the registry the bytes each provider has proven (holds under audit, having
    /// passed a challenge) and every provider's standing, at most once per
    /// [`PROVEN_REFRESH_MS`]: so a condemned provider, holding nothing to be challenged on,
    /// is placed on again once its wait is over.
    fn refresh_proven(&self, now: u64) -> Result<(), NetError> {
        {
            let mut inner = self.audits.inner()?;
            if inner
                .proven_ms
                .is_some_and(|at| now.saturating_sub(at) < PROVEN_REFRESH_MS)
            {
                return Ok(());
            }
            inner.proven_ms = Some(now);
        }
        let mut proven: HashMap<NodeId, u64> = HashMap::new();
        let held = self.held()?;
        {
            let inner = self.audits.inner()?;
            for (node, (_, bytes)) in held.iter() {
                if inner.credit.get(node).is_some_and(|c| c.passed > 0) {
                    proven.insert(*node, *bytes);
                }
            }
        }
        let standings = self.audits.standings()?;
        let mut registry = self.registry()?;
        registry.set_proven(&proven);
        for (node, credit, vetted) in standings {
            registry.set_standing(node, credit, vetted);
        }
        Ok(())
    }

    /// The audit report: the latest `limit` log entries, credit, repair counts.
    pub fn audit_report(&self, limit: u32) -> Result<AuditReport, NetError> {
        let audits = &self.audits;
        let entries = audits.log.latest(limit.min(MAX_REPORT_ENTRIES) as usize)?;
        let (log_length, head) = audits.log.head();
        let held = self.held()?;
        let now = audits.clock.now_ms();
        let inner = audits.inner()?;
        let mut nodes: HashSet<NodeId> = inner.credit.keys().copied().collect();
        nodes.extend(held.keys().copied());
        let mut credits: Vec<CreditRecord> = nodes
            .into_iter()
            .map(|node| {
                let c = inner.credit.get(&node).copied().unwrap_or_default();
                CreditRecord {
                    node,
                    credit: c.score(now, &audits.rules),
                    passed: c.passed,
                    failed: c.failed,
                    missed: c.missed,
                    inconclusive: c.inconclusive,
                    vetted: c.vetted_ms > 0,
                    uptime_ms: c.uptime_ms,
                    byte_seconds: c.byte_seconds,
                    pieces: held.get(&node).map_or(0, |(pieces, _)| *pieces),
                }
            })
            .collect();
        credits.sort_by_key(|c| c.node);
        Ok(AuditReport {
            entries,
            credits,
            log_length,
            head,
            repairs_pending: audits.repairs.len() as u64,
            repairs_done: audits.repairs_done()?,
        })
    }

    /// The repair queue: how many segments wait, and the first `limit` of them.
    pub fn repair_queue(&self, limit: usize) -> Result<(usize, Vec<QueuedRepair>), NetError> {
        let queued = self.audits.queued()?;
        let inner = self.audits.inner()?;
        let first = queued
            .iter()
            .take(limit)
            .map(|(segment, pieces)| {
                let (failures, retry_ms) = inner.backoff.get(segment).copied().unwrap_or((0, 0));
                QueuedRepair {
                    segment: *segment,
                    pieces: pieces
                        .iter()
                        .map(|(index, reason)| (*index, reason.lost_at()))
                        .collect(),
                    failures,
                    retry_ms,
                }
            })
            .collect();
        Ok((queued.len(), first))
    }

    /// The audit log's entries from `from_ms` on (audit clock), oldest first: at most
    /// `max` of the latest, and whether older ones in the span were left out.
    pub fn audit_entries_since(
        &self,
        from_ms: u64,
        max: usize,
    ) -> Result<(Vec<AuditEntry>, bool), NetError> {
        self.audits.log.since(from_ms, max)
    }

    /// Recomputes the audit log's hash chain; returns its length.
    pub fn verify_audit_log(&self) -> Result<u64, NetError> {
        self.audits.log.verify()
    }

    /// When the next audit step has work: the earliest due challenge, or now if repairs wait.
    pub fn next_audit_ms(&self) -> Option<u64> {
        // Only repairs this tracker makes now: the other of a pair makes its own. A segment
        // whose repair failed waits for its backoff.
        let now = self.audits.clock.now_ms();
        let queued = self.audits.queued().ok()?;
        let inner = self.audits.inner().ok()?;
        let repairs = queued
            .keys()
            .filter(|segment| self.acting(segment, now))
            .map(|segment| {
                inner
                    .backoff
                    .get(segment)
                    .map_or(now, |(_, at)| (*at).max(now))
            });
        let challenges = inner.schedule.peek().map(|Reverse((due, _, _))| *due);
        let one_offs = inner.one_offs.iter().map(|o| o.due.max(now));
        repairs.chain(challenges).chain(one_offs).min()
    }

    /// One audit step at the audit clock's now: sends the challenges due (concurrently, each
    /// with its deadline), records the results, condemns providers past their limits,
    /// repairs up to [`AuditConfig::repairs_per_step`] queued segments, forgets orphans, and
    /// then (the step's lock let go: these touch nothing a peer tracker waits for) lets go of
    /// the orphans' copies the other tracker of their pair forgot too and deletes doomed copies
    /// at their holders.
    pub async fn audit_step(&self) -> Result<StepReport, NetError> {
        let now = self.audits.clock.now_ms();
        self.renew_leases(now).await;
        let step = self.pair.step.lock().await;
        let planned = self.plan_challenges(now)?;
        let results: Vec<(Planned, Outcome)> = futures::stream::iter(planned)
            .map(|p| async move {
                let outcome = self.send_challenge(&p).await;
                (p, outcome)
            })
            .buffer_unordered(self.audits.config.concurrency.max(1))
            .collect()
            .await;
        let mut report = StepReport::default();
        for (p, outcome) in results {
            let kind = p.check.name();
            let size = self.piece_size(&p);
            self.apply(
                &mut report,
                p.segment,
                p.index,
                p.piece,
                p.provider,
                kind,
                outcome,
                size,
                now,
            )?;
        }
        self.check_offline(&mut report, now)?;
        self.repair_some(&mut report, now).await?;
        self.forget_orphans(&mut report, now)?;
        self.refresh_proven(now)?;
        // Claims under reservations that expired unused.
        self.map
            .expire_claims(now_ms().saturating_sub(self.reservation_ttl_ms))?;
        self.map.flush().await?;
        drop(step);
        self.release_orphans(now).await?;
        self.delete_doomed(&mut report, now).await?;
        Ok(report)
    }

    fn piece_size(&self, p: &Planned) -> u64 {
        self.audits
            .inner()
            .ok()
            .and_then(|i| i.entrusted.get(&p.segment).map(|e| e.manifest.piece_len()))
            .unwrap_or(0)
    }

    /// Pops the challenges due by `now`, reschedules their pieces, and draws each challenge;
    /// adds the one-off challenges due.
    fn plan_challenges(&self, now: u64) -> Result<Vec<Planned>, NetError> {
        let audits = &self.audits;
        let mut due = Vec::new();
        let one_offs: Vec<OneOff>;
        {
            let mut inner = audits.inner()?;
            while let Some(Reverse((at, segment, index))) = inner.schedule.peek().copied() {
                if at > now {
                    break;
                }
                inner.schedule.pop();
                let segment = SegmentId(segment);
                if let Some(e) = inner.entrusted.get(&segment).cloned() {
                    let next = now + audits.gap(&mut inner.rng);
                    inner.schedule.push(Reverse((next, segment.0, index)));
                    due.push((segment, index, e, None));
                }
            }
            let (ready, later) = inner.one_offs.iter().partition(|o| o.due <= now);
            one_offs = ready;
            inner.one_offs = later;
            for o in &one_offs {
                if let Some(e) = inner.entrusted.get(&o.segment).cloned() {
                    due.push((o.segment, o.index, e, Some(*o)));
                }
            }
        }
        // The other tracker of a segment's pair audits it while it holds the lease.
        due.retain(|(segment, _, _, _)| self.acting(segment, now));
        let registry_now = now_ms();
        let mut planned = Vec::new();
        for (segment, index, e, one_off) in due {
            let Some(mapped) = self
                .map
                .segment(&segment)?
                .into_iter()
                .find(|p| p.index == index)
            else {
                continue;
            };
            let Some(info) = e.manifest.pieces.get(index as usize) else {
                continue;
            };
            if info.hash.0 != mapped.piece.0 {
                continue; // a repair is moving it
            }
            let holders = match one_off {
                Some(o) => vec![o.holder],
                None => mapped.holders.clone(),
            };
            for holder in holders.iter().filter(|h| mapped.holders.contains(h)) {
                let written_off = audits
                    .inner()?
                    .credit
                    .get(holder)
                    .is_some_and(|c| c.written_off(now, &audits.rules));
                let address = self
                    .registry()?
                    .lookup(holder, registry_now)
                    .map(|(a, _)| a);
                let (Some(address), false) = (address, written_off) else {
                    continue; // no address yet (after a restart), or already written off
                };
                let check = match one_off {
                    Some(OneOff { whole: true, .. }) => Check::Whole,
                    _ => self.draw_challenge(&segment, index, &e, &mapped)?,
                };
                planned.push(Planned {
                    segment,
                    index,
                    piece: mapped.piece,
                    provider: *holder,
                    address,
                    check,
                });
            }
        }
        Ok(planned)
    }

    /// Asks piece `index` of `segment` of `holder` once at `due` (unless already asked to).
    fn one_off(
        &self,
        segment: SegmentId,
        index: u32,
        holder: NodeId,
        whole: bool,
        due: u64,
    ) -> Result<(), NetError> {
        let mut inner = self.audits.inner()?;
        let same =
            |o: &OneOff| (o.segment, o.index, o.holder, o.whole) == (segment, index, holder, whole);
        if !inner.one_offs.iter().any(same) {
            inner.one_offs.push(OneOff {
                due,
                segment,
                index,
                holder,
                whole,
            });
        }
        Ok(())
    }

    /// Draws one challenge on piece `index`: sentinels ([`Tracker::take_sentinels`]) or a
    /// chunk.
    fn draw_challenge(
        &self,
        segment: &SegmentId,
        index: u32,
        e: &Entrusted,
        mapped: &MappedPiece,
    ) -> Result<Check, NetError> {
        let config = &self.audits.config;
        let (chunk, offset) = {
            let mut inner = self.audits.inner()?;
            let chunk = inner.rng.random_bool(config.chunk_share.clamp(0.0, 1.0));
            let offset = inner.rng.random_range(0..e.manifest.piece_len().max(1));
            (chunk, offset)
        };
        let q = config.sentinels_per_challenge.max(1);
        if !chunk && let Some((check, left)) = self.take_sentinels(segment, index, e, mapped, q)? {
            if left < config.refresh_below {
                self.audits.queue(segment, index, Reason::Refresh)?;
            }
            return Ok(check);
        }
        let start = offset / CHUNK * CHUNK;
        let range = ByteRange {
            offset: start,
            len: CHUNK.min(e.manifest.piece_len() - start),
        };
        Ok(Check::Chunk {
            hash: PieceHash(mapped.piece.0),
            range,
        })
    }

    /// A sentinel challenge of `q` sentinels on piece `index`: the next unused ones in the
    /// piece's secret order, marked used now (sending reveals them), with how many are left;
    /// none if fewer than `q` are left.
    fn take_sentinels(
        &self,
        segment: &SegmentId,
        index: u32,
        e: &Entrusted,
        mapped: &MappedPiece,
        q: u32,
    ) -> Result<Option<(Check, u32)>, NetError> {
        let audits = &self.audits;
        let hash = PieceHash(mapped.piece.0);
        let used = audits
            .sentinels
            .get(mapped.piece.0)
            .map_err(db_err)?
            .and_then(|v| v.as_ref().try_into().ok().map(u32::from_le_bytes))
            .unwrap_or(0);
        let total = e.manifest.sentinels;
        if used.saturating_add(q) > total {
            return Ok(None);
        }
        let mut order = e.audit.sentinel_order(&hash, total);
        // The second of the pair asks from the back: never one the first revealed.
        if self.second_of(segment) {
            order.reverse();
        }
        let which = order[used as usize..(used + q) as usize].to_vec();
        audits
            .sentinels
            .insert(mapped.piece.0, &(used + q).to_le_bytes())
            .map_err(db_err)?;
        let view = e.manifest.view(&e.audit, index as usize);
        let positions = view.challenge(&which);
        let check = Check::Sentinels {
            view,
            which,
            positions,
        };
        Ok(Some((check, total - used - q)))
    }

    /// Checks an owner's audit key before auditing with it, as audits with a wrong key would
    /// fail honest providers: asks holders, in turn, for one sentinel each, until one answers
    /// right. Refused when holders answered wrong sentinel values and none right; unavailable
    /// when none of up to [`KEY_CHECK_HOLDERS`] answered with sentinel values within
    /// [`KEY_CHECK_TIMEOUT`] (a lost piece says nothing of the key).
    async fn check_audit_key(&self, segment: &SegmentId, e: &Entrusted) -> Result<(), NetError> {
        let registry_now = now_ms();
        let (mut wrong, mut asked) = (0, 0);
        for mapped in self.map.segment(segment)? {
            for holder in &mapped.holders {
                if asked == KEY_CHECK_HOLDERS {
                    break;
                }
                let Some((address, _)) = self.registry()?.lookup(holder, registry_now) else {
                    continue;
                };
                let Some((check, _)) = self.take_sentinels(segment, mapped.index, e, &mapped, 1)?
                else {
                    continue;
                };
                asked += 1;
                let planned = Planned {
                    segment: *segment,
                    index: mapped.index,
                    piece: mapped.piece,
                    provider: *holder,
                    address,
                    check,
                };
                match tokio::time::timeout(KEY_CHECK_TIMEOUT, self.ask(&planned)).await {
                    Ok(Outcome::Pass) => return Ok(()),
                    Ok(Outcome::Fail(why)) if why == WRONG_ANSWER => wrong += 1,
                    _ => {}
                }
            }
        }
        match wrong {
            0 => Err(NetError::Unavailable(format!(
                "no holder of segment {segment} answered a check of its audit key; entrust it \
                 again later"
            ))),
            _ => Err(NetError::BadRequest(format!(
                "the audit key does not match the stored pieces of segment {segment}: {wrong} \
                 holders answered its sentinels wrongly; entrust the segment with the audit \
                 key of its table"
            ))),
        }
    }

    /// Sends one challenge and judges the answer. The deadline runs on the audit clock, and
    /// wins a tie: an answer that comes once the clock has passed it is late.
    async fn send_challenge(&self, p: &Planned) -> Outcome {
        // A whole piece's read is given the time of its bytes at 1 MB/s besides.
        let deadline_ms = match p.check {
            Check::Whole => self.audits.config.deadline_ms + self.piece_size(p) / 1000,
            _ => self.audits.config.deadline_ms,
        };
        let clock = &self.audits.clock;
        let deadline = clock.sleep_until(clock.now_ms().saturating_add(deadline_ms));
        tokio::select! {
            biased;
            () = deadline => Outcome::Missed(format!("no answer within {deadline_ms} ms")),
            outcome = self.ask(p) => outcome,
        }
    }

    /// Asks one challenge, signed at the clock's wall time ([`Clock::wall_ms`]), and judges
    /// the answer.
    async fn ask(&self, p: &Planned) -> Outcome {
        let clock = &self.audits.clock;
        let kind = match &p.check {
            Check::Sentinels { positions, .. } => ChallengeKind::Sentinels(positions.clone()),
            Check::Chunk { range, .. } => ChallengeKind::Chunk(*range),
            Check::Whole => {
                let read = read_whole_piece(
                    self.audits.connector.as_ref(),
                    &self.identity,
                    &p.address,
                    p.piece,
                    REPAIR_CALL_TIMEOUT,
                );
                return match read.await {
                    Ok(_) => Outcome::Pass,
                    // Refusing the piece's own tracker is withholding it, as the owner said.
                    Err(NetError::Forbidden(why)) => Outcome::Fail(format!("forbidden: {why}")),
                    Err(e) => Outcome::of_error(e),
                };
            }
        };
        let request = Challenge {
            piece: p.piece,
            kind,
        };
        let request = self
            .identity
            .sign_with(request, clock.wall_ms(), rand::random());
        let answer = async {
            let provider = self.audits.connector.provider(&p.address)?;
            provider.challenge(request).await
        };
        let answer = match answer.await {
            Err(e) => return Outcome::of_error(e),
            Ok(answer) => answer,
        };
        let right = match &p.check {
            Check::Sentinels { view, which, .. } => view.verify(which, &answer.data),
            Check::Chunk { hash, range } => {
                proof::verify(hash, range.offset, range.len, &answer.proof)
                    .is_ok_and(|bytes| bytes[..] == answer.data[..])
            }
            Check::Whole => false,
        };
        if right {
            Outcome::Pass
        } else {
            Outcome::Fail(WRONG_ANSWER.into())
        }
    }

    /// Records one result: log, credit, and the consequences (repair, condemnation).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        report: &mut StepReport,
        segment: SegmentId,
        index: u32,
        piece: PieceId,
        provider: NodeId,
        kind: &'static str,
        outcome: Outcome,
        size: u64,
        now: u64,
    ) -> Result<(), NetError> {
        let audits = &self.audits;
        audits.log(Event {
            time_ms: now,
            provider,
            piece,
            kind,
            outcome: outcome.name(),
            detail: outcome.detail(),
        })?;
        // A complaint's read counts only when it fails: an owner cannot wear a provider's
        // credit down with reads it serves slowly or passes.
        let counts = kind != "read" || matches!(outcome, Outcome::Fail(_));
        let (credit, (unsure, unprovable)) = {
            let mut inner = audits.inner()?;
            // A complaint's read that times out proves nothing either: it is asked again, as
            // an inconclusive answer is, so stalling the tracker's reads cannot bury it.
            let read = kind == "read";
            let unsure = matches!(outcome, Outcome::Inconclusive(_))
                || (read && matches!(outcome, Outcome::Missed(_)));
            let key = (piece, provider, read);
            let unprovable = if unsure {
                let since = *inner.unproven.entry(key).or_insert(now);
                // Unproven for the offline threshold while other challenges pass: the fault
                // is the holder's, whatever it answers, and the piece moves.
                now.saturating_sub(since) >= audits.config.offline_threshold_ms
                    && inner.last_pass_ms > since
            } else {
                inner.unproven.remove(&key);
                false
            };
            if outcome == Outcome::Pass {
                inner.last_pass_ms = now;
                let previous = inner.last_pass.insert(piece, now);
                let entry = inner.credit.entry(provider).or_default();
                if let Some(t) = previous {
                    entry.byte_seconds += size * now.saturating_sub(t) / 1000;
                }
            }
            let entry = inner.credit.entry(provider).or_default();
            if counts {
                entry.record(&outcome, now, &audits.rules);
            }
            let credit = *entry;
            // An inconclusive answer proves neither presence nor absence.
            match &outcome {
                Outcome::Missed(_) if counts => {
                    inner.offline_since.entry(provider).or_insert(now);
                }
                Outcome::Pass | Outcome::Fail(_) if counts => {
                    inner.offline_since.remove(&provider);
                }
                _ => {}
            }
            if unprovable {
                inner.unproven.remove(&key);
            }
            (credit, (unsure, unprovable))
        };
        audits.save_credit(&provider, &credit)?;
        if matches!(outcome, Outcome::Fail(_)) || unprovable {
            if unprovable {
                warn!(provider = %provider, segment = %segment, index, "piece unproven for the offline threshold; it goes to repair");
            }
            audits.queue(&segment, index, Reason::Lost(provider))?;
        } else if unsure {
            let retry = now + gap(audits.config.mean_interval_ms / 8, &mut audits.inner()?.rng);
            self.one_off(segment, index, provider, kind == "read", retry)?;
        }
        let written_off = credit.written_off(now, &audits.rules);
        if !written_off
            && credit.recent_failures(now, &audits.rules)
                >= audits.config.max_failures.max(1) as f64 - 0.5
        {
            self.condemn(report, provider, now, "too many wrong answers")?;
        } else {
            let score = credit.score(now, &audits.rules);
            self.registry()?
                .set_standing(provider, score, credit.vetted_ms > 0);
        }
        report.challenges.push(ChallengeResult {
            provider,
            piece,
            kind,
            outcome,
        });
        Ok(())
    }

    /// Condemns providers that have missed every challenge for the offline threshold.
    fn check_offline(&self, report: &mut StepReport, now: u64) -> Result<(), NetError> {
        let threshold = self.audits.config.offline_threshold_ms;
        let gone: Vec<NodeId> = self
            .audits
            .inner()?
            .offline_since
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= threshold)
            .map(|(node, _)| *node)
            .collect();
        for node in gone {
            self.condemn(report, node, now, "offline past the threshold")?;
        }
        Ok(())
    }

    /// Writes a provider off: credit 0, and every piece it holds queued for repair.
    fn condemn(
        &self,
        report: &mut StepReport,
        node: NodeId,
        now: u64,
        why: &str,
    ) -> Result<(), NetError> {
        let audits = &self.audits;
        let credit = {
            let mut inner = audits.inner()?;
            inner.offline_since.remove(&node);
            let entry = inner.credit.entry(node).or_default();
            if entry.written_off(now, &audits.rules) {
                return Ok(());
            }
            entry.condemn(now);
            *entry
        };
        audits.save_credit(&node, &credit)?;
        self.registry()?.set_standing(node, 0, false);
        let mut pieces = 0;
        for (segment, piece) in self.map.all()? {
            if piece.holders.contains(&node) {
                audits.queue(&segment, piece.index, Reason::Lost(node))?;
                pieces += 1;
            }
        }
        warn!(provider = %node, pieces, why, "provider condemned; its pieces go to repair");
        audits.log(Event {
            time_ms: now,
            provider: node,
            piece: PieceId([0; 32]),
            kind: "condemn",
            outcome: "done",
            detail: format!("{why}; {pieces} pieces queued for repair"),
        })?;
        report.condemned.push(node);
        Ok(())
    }

    /// Repairs up to `repairs_per_step` queued segments.
    async fn repair_some(&self, report: &mut StepReport, now: u64) -> Result<(), NetError> {
        let audits = &self.audits;
        let backoff = audits.inner()?.backoff.clone();
        let mut ready: Vec<(SegmentId, Vec<(u32, Reason)>)> = audits
            .queued()?
            .into_iter()
            .filter(|(segment, _)| {
                self.acting(segment, now) && backoff.get(segment).is_none_or(|(_, at)| *at <= now)
            })
            .collect();
        // Segments never failed first, then those that failed longest ago: one that keeps
        // failing goes to the back and cannot hold the others up.
        ready.sort_by_key(|(segment, _)| backoff.get(segment).map(|(_, at)| *at));
        // Up to `REPAIRS_AT_ONCE` at a time: a repair waits mostly on reads and stores.
        let results: Vec<(SegmentId, Result<usize, NetError>)> = futures::stream::iter(
            ready
                .into_iter()
                .take(audits.config.repairs_per_step.max(1)),
        )
        .map(|(segment, items)| async move {
            (segment, self.repair_segment(segment, &items, now).await)
        })
        .buffered(REPAIRS_AT_ONCE)
        .collect()
        .await;
        for (segment, result) in results {
            let failures = backoff.get(&segment).map_or(0, |(n, _)| *n);
            let again = match &result {
                Ok(_) if !audits.is_queued(&segment)? => None,
                _ => Some(now + (REPAIR_BACKOFF_MS << failures.min(16)).min(MAX_REPAIR_BACKOFF_MS)),
            };
            match again {
                None => audits.inner()?.backoff.remove(&segment),
                Some(at) => audits.inner()?.backoff.insert(segment, (failures + 1, at)),
            };
            match result {
                Ok(n) => report.repaired += n,
                Err(e) => {
                    warn!(segment = %segment, error = %e, "repair failed; will retry");
                    audits.log(Event {
                        time_ms: now,
                        provider: NodeId([0; 32]),
                        piece: PieceId([0; 32]),
                        kind: "repair",
                        outcome: "error",
                        detail: format!("segment {segment}: {e}"),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the queued pieces of one segment from k intact others and stores them on new
    /// providers. Returns how many were repaired; pieces not stored stay queued.
    async fn repair_segment(
        &self,
        segment: SegmentId,
        items: &[(u32, Reason)],
        now: u64,
    ) -> Result<usize, NetError> {
        let audits = &self.audits;
        let Some(e) = audits.inner()?.entrusted.get(&segment).cloned() else {
            for (index, _) in items {
                audits.unqueue(&segment, *index)?;
            }
            return Ok(0);
        };
        let owner = self
            .map
            .owner(&segment)?
            .ok_or_else(|| NetError::Internal("entrusted segment without owner".into()))?;
        let mapped = self.map.segment(&segment)?;
        let m = &e.manifest;
        let k = m.params.data;
        let condemned: HashSet<NodeId> = audits
            .inner()?
            .credit
            .iter()
            .filter(|(_, c)| c.written_off(now, &audits.rules))
            .map(|(n, _)| *n)
            .collect();
        let lost: HashMap<u32, Option<NodeId>> = items
            .iter()
            .map(|(i, r)| {
                (
                    *i,
                    match r {
                        Reason::Lost(n) => Some(*n),
                        Reason::Refresh => None,
                    },
                )
            })
            .collect();
        let untrusted = |index: u32, node: &NodeId| {
            condemned.contains(node) || lost.get(&index) == Some(&Some(*node))
        };
        // Candidate sources: (index, address) of every holder not written off, data first.
        let registry_now = now_ms();
        let mut sources: Vec<(usize, String)> = Vec::new();
        {
            let registry = self.registry()?;
            for p in &mapped {
                if m.pieces.get(p.index as usize).map(|i| i.hash.0) != Some(p.piece.0) {
                    continue;
                }
                for h in p.holders.iter().filter(|h| !untrusted(p.index, h)) {
                    if let Some((address, _)) = registry.lookup(h, registry_now) {
                        sources.push((p.index as usize, address));
                    }
                }
            }
        }
        sources.sort_by_key(|(i, _)| *i);
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; m.pieces.len()];
        let mut intact = 0;
        let mut next = 0;
        while intact < k && next < sources.len() {
            let mut batch = Vec::new();
            while batch.len() < k - intact && next < sources.len() {
                let (index, _) = &sources[next];
                if pieces[*index].is_none() && !batch.iter().any(|(i, _)| i == index) {
                    batch.push(sources[next].clone());
                }
                next += 1;
            }
            let fetched = join_all(batch.iter().map(|(i, address)| {
                read_whole_piece(
                    self.audits.connector.as_ref(),
                    &self.identity,
                    address,
                    PieceId(m.pieces[*i].hash.0),
                    REPAIR_CALL_TIMEOUT,
                )
            }))
            .await;
            for ((i, _), result) in batch.into_iter().zip(fetched) {
                if let Ok(bytes) = result
                    && pieces[i].is_none()
                {
                    pieces[i] = Some(bytes.to_vec());
                    intact += 1;
                }
            }
        }
        if intact < k {
            return Err(NetError::Unavailable(format!(
                "only {intact} of the {k} intact pieces needed could be read"
            )));
        }
        let which: Vec<usize> = items.iter().map(|(i, _)| *i as usize).collect();
        let audit = e.audit.clone();
        let manifest = m.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let refs: Vec<Option<&[u8]>> = pieces.iter().map(Option::as_deref).collect();
            Codec::new(manifest.params)?.rebuild(&audit, &manifest, &refs, &which)
        })
        .await
        .map_err(|e| NetError::Internal(format!("repair task failed: {e}")))?
        .map_err(|e| NetError::Internal(format!("rebuild: {e}")))?;

        // The copies that stay count against their operators and networks; the lost ones
        // and the condemned providers are only not chosen.
        let (mut lost_holders, mut holders) = (condemned.clone(), HashSet::new());
        for p in &mapped {
            for h in &p.holders {
                if untrusted(p.index, h) || lost.contains_key(&p.index) {
                    lost_holders.insert(*h);
                } else {
                    holders.insert(*h);
                }
            }
        }
        let specs: Vec<PieceSpec> = rebuilt
            .pieces
            .iter()
            .map(|(i, piece)| PieceSpec {
                index: *i as u32,
                piece: PieceId(rebuilt.manifest.pieces[*i].hash.0),
                size: piece.len() as u64,
            })
            .collect();
        let seed = self.placement_draw(b"repair", &segment, registry_now)?;
        let placed = self
            .registry()?
            .place(&specs, &holders, &lost_holders, seed, registry_now)?;
        let expires = registry_now + self.reservation_ttl_ms;
        let stores = specs.iter().zip(&rebuilt.pieces).zip(placed).map(
            |((spec, (_, data)), (provider, address))| async move {
                let reservation = self.reservation(owner, segment, spec, provider, expires)?;
                let receipt = store_piece(
                    self.audits.connector.as_ref(),
                    &self.identity,
                    &address,
                    reservation,
                    Bytes::copy_from_slice(data),
                    REPAIR_CALL_TIMEOUT,
                )
                .await?;
                receipt.check(&self.keys)?;
                Ok::<_, NetError>((spec, provider, address))
            },
        );
        let mut updated = m.clone();
        let (mut done, mut deleted) = (0, false);
        for result in join_all(stores).await {
            let (spec, provider, address) = match result {
                Ok(stored) => stored,
                Err(err) => {
                    warn!(segment = %segment, error = %err, "repaired piece not stored; will retry");
                    continue;
                }
            };
            let i = spec.index as usize;
            let replaced = match self
                .map
                .add_holder_replacing(&segment, &owner, spec, provider)
            {
                Ok((_, replaced)) => replaced,
                // Its owner deleted it meanwhile: the new copy goes too.
                Err(e) => match self.map.forgotten_by(&segment)? {
                    Some(_) => {
                        self.map
                            .doom(&segment, &provider, &spec.piece, spec.size, now)?;
                        deleted = true;
                        continue;
                    }
                    None => return Err(e),
                },
            };
            // The copies of the piece it replaces: nothing maps them any more.
            if let Some(old) = replaced.filter(|old| old.piece != spec.piece) {
                for holder in &old.holders {
                    self.map.doom(&segment, holder, &old.piece, old.size, now)?;
                }
            }
            updated.pieces[i] = rebuilt.manifest.pieces[i];
            audits.unqueue(&segment, spec.index)?;
            let (kind, old) = match lost.get(&spec.index) {
                Some(Some(node)) => ("repair", *node),
                _ => ("refresh", NodeId([0; 32])),
            };
            audits.log(Event {
                time_ms: now,
                provider: old,
                piece: PieceId(m.pieces[i].hash.0),
                kind,
                outcome: "done",
                detail: format!(
                    "segment {segment} piece {i} re-coded in generation {} as {} on {address}",
                    updated.pieces[i].generation, spec.piece
                ),
            })?;
            done += 1;
        }
        if deleted {
            info!(segment = %segment, "segment deleted during its repair; repaired pieces doomed");
            return Ok(0);
        }
        if done > 0 {
            let entrusted = Entrusted {
                audit: e.audit.clone(),
                manifest: updated,
            };
            if !audits.keep(segment, entrusted)? {
                return Ok(0);
            }
            audits
                .meta
                .insert(
                    "repairs_done",
                    &(audits.repairs_done()? + done as u64).to_le_bytes(),
                )
                .map_err(db_err)?;
            info!(segment = %segment, pieces = done, "pieces repaired");
            self.changed(&segment).await?;
        }
        Ok(done)
    }
}

/// Runs audit steps on the system clock until aborted: each step when the next challenge is
/// due, at least once a second (so queued repairs proceed at `repairs_per_step` a second).
pub fn spawn_audits(tracker: Arc<Tracker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = tracker.audit_step().await {
                warn!(error = %e, "audit step failed");
            }
            let now = tracker.audits.clock.now_ms();
            let wait = tracker
                .next_audit_ms()
                .map_or(1000, |due| due.saturating_sub(now).clamp(10, 1000));
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wwt_engine::piece::answer_challenge;
    use wwt_engine::segment::SegmentId as EngineSegment;

    /// The detection curve: a provider that discarded a fraction f of a piece (and answers a
    /// random byte where it has none) against c challenges of q sentinels, each drawn as the
    /// tracker draws them (the piece's secret order, every sentinel once), over 1,000 seeded
    /// trials per point, next to 1 − (1 − f)^(q·c).
    #[test]
    fn detection_curve_matches_the_formula() {
        const SEED: u64 = 0xa0d1_2026;
        const TRIALS: u64 = 1000;
        let audit = AuditKey::from_bytes([3; 32]);
        let shard: Vec<u8> = (0..64u32 << 10).map(|i| (i * 31 % 251) as u8).collect();
        let mut rng = StdRng::seed_from_u64(SEED);
        println!("detection curve: seed {SEED:#x}, {TRIALS} trials per point, 64 KiB shards");
        println!("   f   q   c  measured  1-(1-f)^(qc)");
        let points: Vec<(f64, u32, u32)> = [0.01, 0.05, 0.10]
            .into_iter()
            .flat_map(|f| {
                [(4, 1), (4, 4), (8, 1), (8, 4), (8, 16), (16, 8)]
                    .into_iter()
                    .map(move |(q, c)| (f, q, c))
            })
            .collect();
        let mut caught = vec![0u64; points.len()];
        for trial in 0..TRIALS {
            // A fresh piece per trial (its own generation: new sentinels, new order).
            let view = PieceView::new(
                &audit,
                EngineSegment([9; 32]),
                0,
                trial,
                shard.len() as u64,
                wwt_engine::piece::sentinel_count(shard.len() as u64),
            );
            let piece = view.build(&shard);
            let hash = PieceHash::of(&piece);
            let order = audit.sentinel_order(&hash, view.sentinel_count() as u32);
            for (slot, &(f, q, c)) in points.iter().enumerate() {
                // Discard each byte with probability f; a discarded byte is answered by a guess.
                let threshold = (f * u64::MAX as f64) as u64;
                let positions = view.challenge(&order[..(q * c) as usize]);
                let mut answer = answer_challenge(&piece, &positions).unwrap();
                for byte in answer.iter_mut() {
                    if rng.random::<u64>() < threshold {
                        *byte = rng.random();
                    }
                }
                let detected = order[..(q * c) as usize]
                    .chunks(q as usize)
                    .zip(answer.chunks(q as usize))
                    .any(|(which, bytes)| !view.verify(which, bytes));
                caught[slot] += u64::from(detected);
            }
        }
        for (&(f, q, c), &n) in points.iter().zip(&caught) {
            let measured = n as f64 / TRIALS as f64;
            let formula = 1.0 - (1.0 - f).powi((q * c) as i32);
            // A guess is right one time in 256: the exact rate is the formula with f·255/256.
            let exact = 1.0 - (1.0 - f * 255.0 / 256.0).powi((q * c) as i32);
            println!("{f:>4.2} {q:>3} {c:>3}  {measured:>8.3}  {formula:>12.3}");
            let sigma = (exact * (1.0 - exact) / TRIALS as f64).sqrt();
            assert!(
                (measured - exact).abs() <= 4.0 * sigma + 0.005,
                "f={f} q={q} c={c}: measured {measured}, expected {exact}"
            );
        }
    }
}
