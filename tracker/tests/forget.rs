//! Deletion at the tracker (DESIGN §13): an owner's forget stops the audits of its segments and
//! deletes every copy of their pieces at their holders, durably and once; a holder that cannot
//! be reached is asked again once it answers; segments never entrusted are forgotten past
//! their grace; the other tracker of a pair forgets too; a repair deletes the copy it replaces.
//!
//! A tracker (or a pair) with providers that keep pieces in memory (they answer challenges from
//! the bytes they hold and record the deletes they are sent), on a hand-driven audit clock.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use wwt_engine::segment::Segment;
use wwt_engine::{AuditKey, Codec, CodingParams, EncodedSegment, proof};
use wwt_net::audit::{Challenge, ChallengeAnswer, ChallengeKind, Entrust, Mirror, MirroredPiece};
use wwt_net::memory::MemoryNetwork;
use wwt_net::types::{
    ConfirmStored, DeletePieces, Deleted, Forget, Heartbeat, Locate, NodeId, PieceData, PieceId,
    PieceSpec, PieceStream, ProviderStatus, ReadPiece, ReserveSegment, SegmentId, SegmentLocation,
    StorePiece, StoreReceipt,
};
use wwt_net::{Identity, NetError, PeerKeys, ProviderApi, Signed, TrackerApi, Verifier};
use wwt_tracker::audit::{Outcome, StepReport};
use wwt_tracker::clock::{Clock, ManualClock};
use wwt_tracker::{AuditConfig, PeerTracker, Tracker, TrackerConfig};

/// The seed of the audit schedule and the placement draws.
const SEED: u64 = 0xde1e_7e5e;
/// Mean gap between two challenges of a piece (simulated ms).
const MEAN_MS: u64 = 60_000;
/// Long enough for every piece to come due (e^-10 odds that one does not).
const ALL_DUE_MS: u64 = 10 * MEAN_MS;

/// A provider keeping its pieces in memory: answers challenges from them, and records the
/// pieces each delete signed by the tracker names. While `down`, every call is unavailable.
struct Provider {
    address: String,
    identity: Identity,
    keys: PeerKeys,
    trackers: Vec<NodeId>,
    pieces: Mutex<HashMap<PieceId, Vec<u8>>>,
    deleted: Mutex<Vec<PieceId>>,
    down: AtomicBool,
    /// Answers every challenge wrongly.
    lies: AtomicBool,
    verifier: Verifier,
}

impl Provider {
    fn new(n: u8, trackers: Vec<NodeId>) -> Provider {
        let identity = Identity::from_secret([0x70 + n; 32]);
        Provider {
            address: format!("mem://provider-{n}"),
            keys: PeerKeys::new(&identity),
            identity,
            trackers,
            pieces: Mutex::new(HashMap::new()),
            deleted: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            lies: AtomicBool::new(false),
            verifier: Verifier::default(),
        }
    }

    fn up(&self) -> Result<(), NetError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(NetError::Unavailable(format!("{} is down", self.address))),
            false => Ok(()),
        }
    }

    fn check_tracker<T: wwt_net::auth::Body>(&self, request: Signed<T>) -> Result<T, NetError> {
        let (signer, body) = self.verifier.verify(request)?;
        if !self.trackers.contains(&signer) {
            return Err(NetError::Forbidden("not a trusted tracker".into()));
        }
        Ok(body)
    }

    fn holds(&self, piece: &PieceId) -> bool {
        self.pieces.lock().unwrap().contains_key(piece)
    }

    fn deleted(&self) -> Vec<PieceId> {
        self.deleted.lock().unwrap().clone()
    }
}

#[async_trait]
impl ProviderApi for Provider {
    /// A repair's store (the tests' uploads place their pieces by hand).
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        self.up()?;
        let req = self.check_tracker(request)?;
        let parts: Vec<Bytes> = data.try_collect().await?;
        let bytes = parts.concat();
        if PieceId::of(&bytes) != req.reservation.piece {
            return Err(NetError::BadRequest("wrong bytes".into()));
        }
        self.pieces
            .lock()
            .unwrap()
            .insert(req.reservation.piece, bytes);
        StoreReceipt::issue(req.reservation, &self.keys)
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        self.up()?;
        let req = self.check_tracker(request)?;
        let piece = self.pieces.lock().unwrap().get(&req.piece).cloned();
        let piece = piece.ok_or_else(|| NetError::NotFound("no such piece".into()))?;
        Ok(PieceData {
            piece: req.piece,
            piece_size: piece.len() as u64,
            offset: 0,
            data: Bytes::from(piece),
            proof: Bytes::new(),
        })
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        Err(NetError::Unavailable("not in this test".into()))
    }

    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        self.up()?;
        let req = self.check_tracker(request)?;
        let piece = self.pieces.lock().unwrap().get(&req.piece).cloned();
        let piece = piece.ok_or_else(|| NetError::NotFound("no such piece".into()))?;
        let (data, proof) = match req.kind {
            ChallengeKind::Sentinels(positions) => (
                wwt_engine::piece::answer_challenge(&piece, &positions).unwrap(),
                Vec::new(),
            ),
            ChallengeKind::Chunk(range) => {
                let (groups, _) = proof::groups(&piece);
                let size = piece.len() as u64;
                let proof =
                    proof::prove(Cursor::new(&piece), size, &groups, range.offset, range.len)
                        .unwrap();
                let at = range.offset as usize;
                (piece[at..at + range.len as usize].to_vec(), proof)
            }
        };
        let data = match self.lies.load(Ordering::SeqCst) {
            true => data.iter().map(|b| !b).collect(),
            false => data,
        };
        Ok(ChallengeAnswer {
            piece: req.piece,
            data: data.into(),
            proof: proof.into(),
        })
    }

    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        self.up()?;
        let req = self.check_tracker(request)?;
        let mut deleted = Deleted::default();
        let mut pieces = self.pieces.lock().unwrap();
        for piece in &req.pieces {
            if let Some(bytes) = pieces.remove(piece) {
                deleted.pieces += 1;
                deleted.freed += bytes.len() as u64;
            }
        }
        self.deleted.lock().unwrap().extend(req.pieces);
        Ok(deleted)
    }
}

/// A tracker on a hand-driven clock, its providers, and the network between them.
struct Net {
    /// The tracker's data directory, kept while the test runs.
    _dir: tempfile::TempDir,
    config: TrackerConfig,
    network: MemoryNetwork,
    clock: Arc<ManualClock>,
    tracker: Arc<Tracker>,
    providers: Vec<Arc<Provider>>,
}

impl Net {
    /// A tracker and `providers` providers.
    async fn start(orphan_grace_ms: u64, providers: u8) -> Net {
        println!("seed {SEED:#x}");
        let dir = tempfile::tempdir().unwrap();
        let config = TrackerConfig {
            data_dir: dir.path().to_path_buf(),
            placement_seed: Some(SEED),
            audit: audits(orphan_grace_ms),
            ..TrackerConfig::default()
        };
        let network = MemoryNetwork::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let tracker = open(&config, &network, &clock);
        let providers: Vec<Arc<Provider>> = (0..providers)
            .map(|n| Arc::new(Provider::new(n, vec![tracker.node_id()])))
            .collect();
        for p in &providers {
            network.add_provider(&p.address, p.clone());
        }
        Net {
            _dir: dir,
            config,
            network,
            clock,
            tracker,
            providers,
        }
        .heard()
        .await
    }

    /// Stops the tracker and opens it again on the same database.
    async fn restart(self) -> Net {
        let Net {
            _dir: dir,
            config,
            network,
            clock,
            tracker,
            providers,
        } = self;
        drop(tracker);
        let tracker = open(&config, &network, &clock);
        Net {
            _dir: dir,
            config,
            network,
            clock,
            tracker,
            providers,
        }
        .heard()
        .await
    }

    /// This network once the tracker has had every provider's heartbeat.
    async fn heard(self) -> Net {
        heartbeats(&self.tracker, &self.providers).await;
        self
    }

    fn provider(&self, address: &str) -> &Provider {
        self.providers
            .iter()
            .find(|p| p.address == address)
            .unwrap()
    }

    async fn upload(&self, owner: &Identity, n: u8, entrust: bool) -> Stored {
        upload(&self.tracker, &self.providers, owner, n, entrust).await
    }

    async fn locate(&self, owner: &Identity, segment: SegmentId) -> SegmentLocation {
        let request = owner.sign(Locate { segment }).unwrap();
        self.tracker.locate(request).await.unwrap()
    }

    async fn forget(&self, owner: &Identity, segments: &[SegmentId]) -> Result<u32, NetError> {
        let request = owner
            .sign(Forget {
                segments: segments.to_vec(),
            })
            .unwrap();
        self.tracker.forget(request).await
    }

    /// One audit step, `ms` of simulated time after the last.
    async fn step_after(&self, ms: u64) -> StepReport {
        self.clock.advance_by(ms);
        let report = self.tracker.audit_step().await.unwrap();
        assert!(report.challenges.iter().all(|c| c.outcome == Outcome::Pass));
        println!(
            "at {} ms: {} challenges, {} orphans, {} deleted, {} deletes pending",
            self.clock.now_ms(),
            report.challenges.len(),
            report.orphans,
            report.deleted,
            self.tracker.deletes_pending()
        );
        report
    }

    /// Every piece id the providers were told to delete.
    fn deleted(&self) -> Vec<PieceId> {
        self.providers.iter().flat_map(|p| p.deleted()).collect()
    }
}

/// Every provider tells `tracker` where it is.
async fn heartbeats(tracker: &Tracker, providers: &[Arc<Provider>]) {
    for (n, p) in providers.iter().enumerate() {
        let beat = Heartbeat {
            address: p.address.clone(),
            zone: format!("zone-{n}"),
            capacity: 1 << 30,
            used: 0,
            pieces: 0,
            index: false,
            operator: None,
        };
        let request = p.identity.sign(beat).unwrap();
        tracker.heartbeat(request).await.unwrap();
    }
}

/// Codes a segment of `owner`'s, reserves its three pieces at `tracker`, stores them (one on
/// each provider) and confirms them; entrusts it if `entrust`.
async fn upload(
    tracker: &Tracker,
    providers: &[Arc<Provider>],
    owner: &Identity,
    n: u8,
    entrust: bool,
) -> Stored {
    let audit = AuditKey::from_bytes([n; 32]);
    let segment = Segment {
        id: wwt_engine::SegmentId([n; 32]),
        bytes: (0..8192u32).map(|i| (i * 7 + u32::from(n)) as u8).collect(),
    };
    let codec = Codec::new(CodingParams::new(2, 1).unwrap()).unwrap();
    let encoded = codec.encode(&audit, &segment);
    let id = SegmentId(segment.id.0);
    let specs: Vec<PieceSpec> = pieces(&encoded)
        .into_iter()
        .enumerate()
        .map(|(i, piece)| PieceSpec {
            index: i as u32,
            piece,
            size: encoded.pieces[i].len() as u64,
        })
        .collect();
    let reserve = ReserveSegment {
        segment: id,
        pieces: specs,
    };
    let placement = tracker.reserve(owner.sign(reserve).unwrap()).await.unwrap();
    let mut receipts = Vec::new();
    for placed in placement.pieces {
        let provider = providers
            .iter()
            .find(|p| p.address == placed.address)
            .unwrap();
        let r = &placed.reservation;
        provider
            .pieces
            .lock()
            .unwrap()
            .insert(r.piece, encoded.pieces[r.index as usize].clone());
        receipts.push(StoreReceipt::issue(placed.reservation, &provider.keys).unwrap());
    }
    let confirm = ConfirmStored { receipts };
    tracker.confirm(owner.sign(confirm).unwrap()).await.unwrap();
    let stored = Stored {
        id,
        pieces: pieces(&encoded).into_iter().collect(),
        encoded,
        audit,
    };
    if entrust {
        tracker.entrust(stored.entrust(owner)).await.unwrap();
    }
    stored
}

/// A segment uploaded in a test.
struct Stored {
    id: SegmentId,
    pieces: HashSet<PieceId>,
    encoded: EncodedSegment,
    audit: AuditKey,
}

impl Stored {
    fn entrust(&self, owner: &Identity) -> Signed<Entrust> {
        let entrust = Entrust {
            segment: self.id,
            manifest: self.encoded.manifest.to_bytes().into(),
            audit_key: *self.audit.as_bytes(),
        };
        owner.sign(entrust).unwrap()
    }
}

fn pieces(encoded: &EncodedSegment) -> Vec<PieceId> {
    encoded
        .manifest
        .pieces
        .iter()
        .map(|p| PieceId(p.hash.0))
        .collect()
}

/// Opens the tracker of `config`. sled lets go of its file lock from background threads after
/// its last handle is dropped, so a tracker dropped just before may still hold it: wait for
/// that, up to 10 s, as a restarted daemon's supervisor would.
/// The tests' audits: stepped by hand, on this seed; sentinels run out on these small pieces
/// (chunk challenges follow, no refresh).
fn audits(orphan_grace_ms: u64) -> AuditConfig {
    AuditConfig {
        enabled: false,
        mean_interval_ms: MEAN_MS,
        refresh_below: 0,
        seed: Some(SEED),
        orphan_grace_ms,
        ..AuditConfig::default()
    }
}

fn open(config: &TrackerConfig, network: &MemoryNetwork, clock: &Arc<ManualClock>) -> Arc<Tracker> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Tracker::open_with(config, Arc::new(network.clone()), clock.clone()) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Arc::new(other.unwrap()),
        }
    }
}

fn challenged(report: &StepReport, segment: &Stored) -> usize {
    report
        .challenges
        .iter()
        .filter(|c| segment.pieces.contains(&c.piece))
        .count()
}

#[tokio::test]
async fn an_owners_forget_stops_audits_and_deletes_every_copy_once() {
    let net = Net::start(u64::MAX, 3).await;
    let (owner, stranger) = (
        Identity::from_secret([1; 32]),
        Identity::from_secret([2; 32]),
    );
    let gone = net.upload(&owner, 1, true).await;
    let kept = net.upload(&owner, 2, true).await;
    let report = net.step_after(ALL_DUE_MS).await;
    assert!(challenged(&report, &gone) > 0 && challenged(&report, &kept) > 0);

    // Another owner may not delete it: refused whole, nothing changes.
    let refused = net.forget(&stranger, &[gone.id]).await.unwrap_err();
    println!("a stranger's forget: {refused}");
    assert!(matches!(refused, NetError::Forbidden(_)), "{refused}");
    assert_eq!(net.tracker.deletes_pending(), 0);
    assert_eq!(net.locate(&owner, gone.id).await.pieces.len(), 3);
    // The owner's: its segment forgotten, one never known counts as done.
    let forgotten = net.forget(&owner, &[gone.id, SegmentId([3; 32])]).await;
    assert_eq!(forgotten.unwrap(), 1);
    let location = net.locate(&owner, kept.id).await;
    assert!(!location.deleted && location.pieces.len() == 3 && !location.manifest.is_empty());

    // Deleted: said so, never mapped or entrusted again, never challenged again.
    let location = net.locate(&owner, gone.id).await;
    assert!(location.deleted && location.pieces.is_empty() && location.manifest.is_empty());
    let again = net.tracker.entrust(gone.entrust(&owner)).await.unwrap_err();
    println!("entrust after the forget: {again}");
    assert!(
        matches!(&again, NetError::Precondition(m) if m.contains("deleted by its owner")),
        "{again}"
    );
    let reserve = ReserveSegment {
        segment: gone.id,
        pieces: vec![PieceSpec {
            index: 0,
            piece: PieceId([4; 32]),
            size: 100,
        }],
    };
    let again = net
        .tracker
        .reserve(owner.sign(reserve).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&again, NetError::Precondition(m) if m.contains("deleted by its owner")),
        "{again}"
    );
    assert_eq!(net.tracker.deletes_pending(), 3);

    // The next step deletes its three copies, one at each holder, and challenges only the
    // segment kept.
    let report = net.step_after(ALL_DUE_MS).await;
    assert_eq!(challenged(&report, &gone), 0);
    assert!(challenged(&report, &kept) > 0);
    assert_eq!(report.deleted, 3);
    assert_eq!(net.tracker.deletes_pending(), 0);
    for p in &net.providers {
        let deleted = p.deleted();
        assert_eq!(deleted.len(), 1, "{} was sent {deleted:?}", p.address);
        assert!(gone.pieces.contains(&deleted[0]) && !p.holds(&deleted[0]));
        assert!(kept.pieces.iter().any(|piece| p.holds(piece)));
    }

    // Idempotent, and durable: after a restart it is still deleted, forgetting it again does
    // nothing, and nothing is challenged or deleted twice.
    assert_eq!(net.forget(&owner, &[gone.id]).await.unwrap(), 0);
    let net = net.restart().await;
    assert_eq!(net.forget(&owner, &[gone.id]).await.unwrap(), 0);
    assert!(net.locate(&owner, gone.id).await.deleted);
    assert!(!net.locate(&owner, kept.id).await.manifest.is_empty());
    let report = net.step_after(ALL_DUE_MS).await;
    assert_eq!(challenged(&report, &gone), 0);
    assert!(challenged(&report, &kept) > 0);
    assert_eq!(report.deleted, 0);
    assert_eq!(net.deleted().len(), 3);
    assert_eq!(net.tracker.pieces_deleted().unwrap(), 3);
    assert!(net.tracker.verify_audit_log().unwrap() > 0);
}

#[tokio::test]
async fn a_delete_an_unreachable_holder_missed_is_sent_once_it_answers() {
    let net = Net::start(u64::MAX, 3).await;
    let owner = Identity::from_secret([1; 32]);
    let gone = net.upload(&owner, 1, true).await;
    let down = &net.providers[0];
    down.down.store(true, Ordering::SeqCst);
    assert_eq!(net.forget(&owner, &[gone.id]).await.unwrap(), 1);

    let report = net.step_after(1000).await;
    assert_eq!(report.deleted, 2);
    assert_eq!(net.tracker.deletes_pending(), 1);
    assert!(down.deleted().is_empty());
    assert!(gone.pieces.iter().any(|piece| down.holds(piece)));

    // Back: asked again (past its backoff), it deletes its copy too.
    down.down.store(false, Ordering::SeqCst);
    let mut report = StepReport::default();
    for _ in 0..10 {
        report = net.step_after(MEAN_MS).await;
        if report.deleted > 0 {
            break;
        }
    }
    assert_eq!(report.deleted, 1);
    assert_eq!(net.tracker.deletes_pending(), 0);
    assert_eq!(down.deleted().len(), 1);
    assert!(!gone.pieces.iter().any(|piece| down.holds(piece)));
    assert_eq!(net.deleted().len(), 3);
}

#[tokio::test]
async fn segments_never_entrusted_are_forgotten_past_their_grace() {
    const GRACE_MS: u64 = 120_000;
    let net = Net::start(GRACE_MS, 3).await;
    let owner = Identity::from_secret([1; 32]);
    let orphan = net.upload(&owner, 1, false).await;
    let kept = net.upload(&owner, 2, true).await;
    // Entrusted late, within the grace: no orphan either.
    let late = net.upload(&owner, 3, false).await;

    let report = net.step_after(GRACE_MS / 2).await;
    assert_eq!(report.orphans, 0);
    net.tracker.entrust(late.entrust(&owner)).await.unwrap();
    assert!(!net.locate(&owner, orphan.id).await.deleted);

    let report = net.step_after(GRACE_MS).await;
    assert_eq!(report.orphans, 1);
    assert_eq!(report.deleted, 3);
    let location = net.locate(&owner, orphan.id).await;
    assert!(location.deleted && location.pieces.is_empty());
    for stored in [&kept, &late] {
        let location = net.locate(&owner, stored.id).await;
        assert!(!location.deleted && location.pieces.len() == 3);
    }
    let deleted: HashSet<PieceId> = net.deleted().into_iter().collect();
    assert_eq!(deleted, orphan.pieces);
    assert!(
        !orphan
            .pieces
            .iter()
            .any(|piece| { net.providers.iter().any(|p| p.holds(piece)) })
    );
    // A later step finds nothing more to forget.
    let report = net.step_after(GRACE_MS).await;
    assert_eq!((report.orphans, report.deleted), (0, 0));
}

/// Two trackers (the pair of every segment), their three providers, on one hand-driven clock.
struct TwoTrackers {
    /// The trackers' data directories, kept while the test runs.
    _dirs: [tempfile::TempDir; 2],
    identities: Vec<Identity>,
    clock: Arc<ManualClock>,
    trackers: Vec<Arc<Tracker>>,
    providers: Vec<Arc<Provider>>,
}

impl TwoTrackers {
    async fn start(orphan_grace_ms: u64) -> TwoTrackers {
        println!("seed {SEED:#x}");
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let identities: Vec<Identity> = dirs
            .iter()
            .map(|d| Identity::load_or_create(&d.path().join("node.key")).unwrap())
            .collect();
        let addresses = ["mem://tracker-0", "mem://tracker-1"];
        let network = MemoryNetwork::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let trackers: Vec<Arc<Tracker>> = (0..2)
            .map(|i| {
                let config = TrackerConfig {
                    data_dir: dirs[i].path().to_path_buf(),
                    peers: vec![PeerTracker {
                        id: identities[1 - i].node_id(),
                        address: addresses[1 - i].into(),
                    }],
                    placement_seed: Some(SEED),
                    audit: audits(orphan_grace_ms),
                    ..TrackerConfig::default()
                };
                let tracker = open(&config, &network, &clock);
                network.add_tracker(addresses[i], tracker.clone());
                tracker
            })
            .collect();
        let ids: Vec<NodeId> = trackers.iter().map(|t| t.node_id()).collect();
        let providers: Vec<Arc<Provider>> = (0..3)
            .map(|n| Arc::new(Provider::new(n, ids.clone())))
            .collect();
        for p in &providers {
            network.add_provider(&p.address, p.clone());
        }
        for tracker in &trackers {
            heartbeats(tracker, &providers).await;
        }
        TwoTrackers {
            _dirs: dirs,
            identities,
            clock,
            trackers,
            providers,
        }
    }

    /// The first and the second tracker of `segment`'s pair.
    fn pair_of(&self, segment: SegmentId) -> (&Arc<Tracker>, &Arc<Tracker>) {
        let ids: Vec<NodeId> = self.trackers.iter().map(|t| t.node_id()).collect();
        let first = match wwt_net::rendezvous::pair(&segment.0, ids.iter())[0] == ids[0] {
            true => 0,
            false => 1,
        };
        (&self.trackers[first], &self.trackers[1 - first])
    }

    /// Uploads segment `n` of `owner`'s through its first tracker.
    async fn upload(&self, owner: &Identity, n: u8, entrust: bool) -> Stored {
        let (first, _) = self.pair_of(SegmentId([n; 32]));
        upload(first, &self.providers, owner, n, entrust).await
    }
}

async fn locate(tracker: &Tracker, owner: &Identity, segment: SegmentId) -> SegmentLocation {
    let request = owner.sign(Locate { segment }).unwrap();
    tracker.locate(request).await.unwrap()
}

#[tokio::test]
async fn the_other_tracker_of_the_pair_forgets_too_and_keeps_it_forgotten() {
    let net = TwoTrackers::start(u64::MAX).await;
    let (identities, clock, providers) = (&net.identities, &net.clock, &net.providers);
    let owner = Identity::from_secret([1; 32]);
    let segment = SegmentId([1; 32]);
    let (first, second) = net.pair_of(segment);
    let gone = net.upload(&owner, 1, true).await;
    // Mirrored at its confirm and entrust.
    assert!(!locate(second, &owner, segment).await.manifest.is_empty());

    // The owner's forget reaches only the first; it tells the second.
    let forget = Forget {
        segments: vec![segment],
    };
    assert_eq!(first.forget(owner.sign(forget).unwrap()).await.unwrap(), 1);
    for tracker in [first, second] {
        assert!(locate(tracker, &owner, segment).await.deleted);
        assert_eq!(tracker.deletes_pending(), 3);
    }

    // A record of it that is not forgotten (one sent before the forget, arriving late) is
    // ignored: the tombstone wins.
    let first_identity = identities.iter().find(|i| i.node_id() == first.node_id());
    let stale = Mirror {
        segment,
        owner: owner.node_id(),
        pieces: pieces(&gone.encoded)
            .into_iter()
            .enumerate()
            .map(|(i, piece)| MirroredPiece {
                index: i as u32,
                piece,
                size: gone.encoded.pieces[i].len() as u64,
                holders: vec![providers[i].identity.node_id()],
            })
            .collect(),
        entrusted: None,
        forgotten: false,
    };
    let stale = first_identity.unwrap().sign(stale).unwrap();
    second.mirror(stale).await.unwrap();
    let location = locate(second, &owner, segment).await;
    assert!(location.deleted && location.pieces.is_empty());

    // Both delete what they doomed; the providers count a piece deleted twice once.
    clock.advance_by(1000);
    for tracker in [first, second] {
        let report = tracker.audit_step().await.unwrap();
        assert!(report.challenges.is_empty());
        assert_eq!(report.deleted, 3);
        assert_eq!(tracker.deletes_pending(), 0);
    }
    for p in providers {
        let deleted: HashSet<PieceId> = p.deleted().into_iter().collect();
        assert_eq!(deleted.len(), 1);
        assert!(deleted.is_subset(&gone.pieces));
        assert!(!gone.pieces.iter().any(|piece| p.holds(piece)));
    }
}

#[tokio::test]
async fn a_repair_deletes_the_copy_it_replaces() {
    let net = Net::start(u64::MAX, 4).await;
    let owner = Identity::from_secret([1; 32]);
    let stored = net.upload(&owner, 1, true).await;
    let before = net.locate(&owner, stored.id).await;
    let lost = before.pieces[0].clone();
    let liar = net.provider(&lost.holders[0].address);
    liar.lies.store(true, Ordering::SeqCst);

    // Its wrong answer queues piece 0; the step re-codes it onto the provider that held
    // nothing, and deletes the old copy at the liar.
    net.clock.advance_by(ALL_DUE_MS);
    let report = net.tracker.audit_step().await.unwrap();
    println!(
        "{} challenges, {} repaired, {} deleted",
        report.challenges.len(),
        report.repaired,
        report.deleted
    );
    assert_eq!(report.repaired, 1);
    assert_eq!(report.deleted, 1);
    let after = net.locate(&owner, stored.id).await;
    let moved = &after.pieces[0];
    assert_ne!(moved.piece, lost.piece);
    assert_eq!(liar.deleted(), vec![lost.piece]);
    assert!(!liar.holds(&lost.piece));
    let new_holder = net.provider(&moved.holders[0].address);
    assert!(new_holder.holds(&moved.piece) && new_holder.deleted().is_empty());
    assert_eq!(net.tracker.deletes_pending(), 0);
    // The other pieces stay where they were, untouched.
    assert_eq!(after.pieces[1..], before.pieces[1..]);
    assert_eq!(net.deleted(), vec![lost.piece]);
}

#[tokio::test]
async fn a_forget_that_changes_nothing_is_not_recorded_so_strangers_cannot_fill_the_replay_cache() {
    let net = Net::start(u64::MAX, 3).await;
    let (owner, stranger) = (
        Identity::from_secret([1; 32]),
        Identity::from_secret([2; 32]),
    );
    let stored = net.upload(&owner, 1, true).await;

    // Segments unknown here: nothing to do, and the request is not recorded, so the very same
    // request answers 0 again instead of being refused as a replay.
    let unknown = Forget {
        segments: vec![SegmentId([3; 32]), SegmentId([4; 32])],
    };
    let unknown = stranger.sign(unknown).unwrap();
    for _ in 0..2 {
        assert_eq!(net.tracker.forget(unknown.clone()).await.unwrap(), 0);
    }
    // Another owner's segment is still refused whole.
    let theirs = Forget {
        segments: vec![SegmentId([3; 32]), stored.id],
    };
    let refused = net
        .tracker
        .forget(stranger.sign(theirs).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(refused, NetError::Forbidden(_)), "{refused}");

    // The owner's forget does something, once; its replay changes nothing and answers 0.
    let forget = owner
        .sign(Forget {
            segments: vec![stored.id],
        })
        .unwrap();
    assert_eq!(net.tracker.forget(forget.clone()).await.unwrap(), 1);
    assert_eq!(net.tracker.forget(forget).await.unwrap(), 0);
    assert!(net.locate(&owner, stored.id).await.deleted);
}

#[tokio::test]
async fn an_orphan_entrusted_at_either_tracker_of_its_pair_is_never_deleted() {
    const GRACE_MS: u64 = 120_000;
    let net = TwoTrackers::start(GRACE_MS).await;
    let owner = Identity::from_secret([1; 32]);
    // Two uploads given up before their entrust, mirrored to both trackers at their confirm.
    let late = net.upload(&owner, 1, false).await;
    let orphan = net.upload(&owner, 2, false).await;
    let (trackers, providers) = (&net.trackers, &net.providers);
    let steps = |tracker: &Arc<Tracker>| {
        let tracker = tracker.clone();
        async move {
            let report = tracker.audit_step().await.unwrap();
            assert!(report.challenges.iter().all(|c| c.outcome == Outcome::Pass));
            println!(
                "{}: {} orphans, {} deleted",
                tracker.node_id(),
                report.orphans,
                report.deleted
            );
            report
        }
    };

    // Past their grace, one tracker forgets both, but deletes nothing: the other has not
    // forgotten them (and may yet be handed their entrust).
    net.clock.advance_by(GRACE_MS);
    let report = steps(&trackers[0]).await;
    assert_eq!((report.orphans, report.deleted), (2, 0));
    assert_eq!(trackers[0].deletes_pending(), 0);
    for stored in [&late, &orphan] {
        assert!(locate(&trackers[0], &owner, stored.id).await.deleted);
        assert!(!locate(&trackers[1], &owner, stored.id).await.deleted);
    }

    // The owner's entrust of one reaches the other tracker: taken back at the first, whole.
    trackers[1].entrust(late.entrust(&owner)).await.unwrap();
    for tracker in trackers {
        let location = locate(tracker, &owner, late.id).await;
        assert!(!location.deleted && !location.manifest.is_empty());
        assert!(location.pieces.iter().all(|p| p.holders.len() == 1));
    }
    // A late entrust at the tracker that forgot the other is refused, saying why.
    let refused = trackers[0]
        .entrust(orphan.entrust(&owner))
        .await
        .unwrap_err();
    println!("a late entrust: {refused}");
    assert!(
        matches!(&refused, NetError::Precondition(m) if m.contains("abandoned upload")),
        "{refused}"
    );

    // The other tracker forgets the orphan too; now both delete its copies, and only its.
    let report = steps(&trackers[1]).await;
    assert_eq!((report.orphans, report.deleted), (1, 3));
    let report = steps(&trackers[0]).await;
    assert_eq!((report.orphans, report.deleted), (0, 3));
    for tracker in trackers {
        assert_eq!(tracker.deletes_pending(), 0);
        assert!(locate(tracker, &owner, orphan.id).await.deleted);
    }
    for p in providers {
        let deleted: HashSet<PieceId> = p.deleted().into_iter().collect();
        assert!(
            deleted.is_subset(&orphan.pieces),
            "{} deleted {deleted:?}",
            p.address
        );
        assert!(late.pieces.iter().any(|piece| p.holds(piece)));
        assert!(!orphan.pieces.iter().any(|piece| p.holds(piece)));
    }

    // The segment taken back is audited, and neither tracker forgets it later.
    net.clock.advance_by(ALL_DUE_MS);
    let mut challenged = 0;
    for tracker in trackers {
        let report = steps(tracker).await;
        assert_eq!((report.orphans, report.deleted), (0, 0));
        challenged += report
            .challenges
            .iter()
            .filter(|c| late.pieces.contains(&c.piece))
            .count();
    }
    assert!(challenged > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entrusts_racing_an_orphan_expiry_either_keep_their_segment_whole_or_are_refused() {
    const GRACE_MS: u64 = 120_000;
    const SEGMENTS: u8 = 8;
    let net = Net::start(GRACE_MS, 3).await;
    let owner = Identity::from_secret([1; 32]);
    let mut uploads = Vec::new();
    for n in 1..=SEGMENTS {
        uploads.push(Arc::new(net.upload(&owner, n, false).await));
    }

    // Past their grace, the step that forgets orphans starts while their entrusts arrive.
    net.clock.advance_by(GRACE_MS);
    let entrust = |stored: &Stored| {
        let (tracker, request) = (net.tracker.clone(), stored.entrust(&owner));
        tokio::spawn(async move { tracker.entrust(request).await })
    };
    let half = uploads.len() / 2;
    let mut entrusts: Vec<_> = uploads[..half].iter().map(|s| entrust(s)).collect();
    let step = tokio::spawn({
        let tracker = net.tracker.clone();
        async move { tracker.audit_step().await.unwrap() }
    });
    entrusts.extend(uploads[half..].iter().map(|s| entrust(s)));
    let report = step.await.unwrap();
    let mut kept = 0;
    for (stored, entrust) in uploads.iter().zip(entrusts) {
        let location = net.locate(&owner, stored.id).await;
        match entrust.await.unwrap() {
            // Entrusted: never forgotten, not one copy deleted.
            Ok(_) => {
                kept += 1;
                assert!(!location.deleted && !location.manifest.is_empty());
                for piece in &stored.pieces {
                    assert!(net.providers.iter().any(|p| p.holds(piece)));
                }
            }
            // Forgotten first: the entrust is refused, saying why.
            Err(e) => {
                assert!(
                    matches!(&e, NetError::Precondition(m) if m.contains("abandoned upload")),
                    "{e}"
                );
                assert!(location.deleted);
            }
        }
    }
    println!("{kept} entrusted, {} forgotten as orphans", report.orphans);
    assert_eq!(kept + report.orphans, usize::from(SEGMENTS));
    // Nothing entrusted is forgotten or deleted later either.
    let report = net.step_after(GRACE_MS).await;
    assert_eq!((report.orphans, report.deleted), (0, 0));
    let deleted: HashSet<PieceId> = net.deleted().into_iter().collect();
    for stored in &uploads {
        let location = net.locate(&owner, stored.id).await;
        assert_eq!(location.deleted, stored.pieces.is_subset(&deleted));
        assert!(location.deleted || stored.pieces.is_disjoint(&deleted));
    }
}
