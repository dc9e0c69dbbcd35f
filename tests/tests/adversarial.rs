//! An open network under attack, in memory and over loopback gRPC (same bodies): Sybil
//! providers claiming huge disks, an owner filing complaints to evict honest providers,
//! manifests built to crash or mislead the tracker, a tracker with a wrong clock, repairs that
//! cannot succeed, and strangers flooding a provider ([`flood`]).
//!
//! Audits run on a simulated clock that only the test moves. Each case prints its seed
//! (node keys, placement and audit draws derive from it); `WWT_TEST_SEED=0x…` replays one.
#![allow(clippy::unwrap_used)]

#[path = "adversarial/flood.rs"]
mod flood;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prost::Message;
use wwt_client::store::{SegmentCache, Storage};
use wwt_devnet::{Hooks, LocalNet, ProviderSetup, Shape, Transport};
use wwt_engine::table::WriteBatch;
use wwt_engine::{CodingParams, MasterKey, SegmentManifest, Table};
use wwt_net::audit::{Challenge, ChallengeAnswer, Complaint, Entrust};
use wwt_net::types::{
    DeletePieces, Deleted, Locate, NodeId, OperatorCert, PieceData, PieceId, PieceLocation,
    PieceStream, ProviderStatus, ReadPiece, SegmentId, SegmentLocation, StorePiece, StoreReceipt,
};
use wwt_net::{Identity, NetError, ProviderApi, Signed, TrackerApi, proto};
use wwt_tracker::clock::{Clock, ManualClock};
use wwt_tracker::{AdmissionConfig, AuditConfig};

/// Simulated time, and audit steps, after which a test gives up waiting for the audits.
const GIVE_UP_MS: u64 = 6 * 3_600_000;
const MAX_STEPS: usize = 5_000;

/// Pieces some providers pretend to have lost: they refuse to read or prove them. Providers
/// that answer every read and challenge with an internal error, whatever they hold. And
/// pieces whose reads a provider sits on for [`STALL_MS`] of simulated time.
#[derive(Clone, Default)]
struct Dropped {
    pieces: Arc<Mutex<HashSet<(usize, PieceId)>>>,
    dodging: Arc<Mutex<HashSet<usize>>>,
    stalling: Arc<Mutex<HashSet<(usize, PieceId)>>>,
    /// When each read sat on is answered, and the clock it waits on.
    stalls: Arc<Mutex<Vec<u64>>>,
    clock: Arc<std::sync::OnceLock<Arc<ManualClock>>>,
}

/// How long a stalled read takes, in simulated time: past any deadline.
const STALL_MS: u64 = 3_600_000;

impl Dropped {
    fn drop_piece(&self, provider: usize, piece: PieceId) {
        self.pieces.lock().unwrap().insert((provider, piece));
    }

    fn dodge(&self, provider: usize) {
        self.dodging.lock().unwrap().insert(provider);
    }

    fn stall_reads(&self, provider: usize, piece: PieceId) {
        self.stalling.lock().unwrap().insert((provider, piece));
    }

    /// Sits on a read of `piece` at `provider` if it is one to stall: answers it
    /// [`STALL_MS`] later.
    async fn stall(&self, provider: usize, piece: &PieceId) -> Option<NetError> {
        if !self.stalling.lock().unwrap().contains(&(provider, *piece)) {
            return None;
        }
        let clock = self.clock.get().unwrap().clone();
        let due = clock.now_ms() + STALL_MS;
        self.stalls.lock().unwrap().push(due);
        clock.sleep_until(due).await;
        Some(NetError::Unavailable("busy".into()))
    }

    /// Reads sat on and not yet answered at `now_ms`.
    fn stalled(&self, now_ms: u64) -> usize {
        let mut stalls = self.stalls.lock().unwrap();
        stalls.retain(|due| *due > now_ms);
        stalls.len()
    }

    /// What `provider` answers when asked for `piece`, if not the truth.
    fn refusal(&self, provider: usize, piece: &PieceId) -> Option<NetError> {
        if self.dodging.lock().unwrap().contains(&provider) {
            return Some(NetError::Internal("disk error".into()));
        }
        let dropped = self.pieces.lock().unwrap().contains(&(provider, *piece));
        dropped.then(|| NetError::NotFound("dropped".into()))
    }
}

/// Provider `at`, which refuses the pieces [`Dropped`] names for it.
struct Dropping {
    inner: Arc<dyn ProviderApi>,
    at: usize,
    dropped: Dropped,
}

#[async_trait]
impl ProviderApi for Dropping {
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        self.inner.store(request, data).await
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        let asked = ReadPiece::try_from(proto::ReadRequest::decode(request.body().clone())?)?;
        if let Some(refusal) = self.dropped.refusal(self.at, &asked.piece) {
            return Err(refusal);
        }
        if let Some(late) = self.dropped.stall(self.at, &asked.piece).await {
            return Err(late);
        }
        self.inner.read(request).await
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        self.inner.status().await
    }

    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        let asked = Challenge::try_from(proto::ChallengeRequest::decode(request.body().clone())?)?;
        if let Some(refusal) = self.dropped.refusal(self.at, &asked.piece) {
            return Err(refusal);
        }
        self.inner.challenge(request).await
    }

    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        self.inner.delete(request).await
    }
}

/// How a test's network differs from the default one.
struct Options {
    admission: AdmissionConfig,
    /// Changes each provider's configuration.
    setup: Option<ProviderSetup>,
    /// Recent failures that condemn a provider.
    max_failures: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admission: AdmissionConfig::default(),
            setup: None,
            max_failures: 2,
        }
    }
}

/// A network of one tracker and `providers` providers, audits on a simulated clock (chunk
/// challenges only, every minute per piece), providers refusing what `dropped` names.
async fn network(
    transport: Transport,
    seed: u64,
    providers: usize,
    dir: &std::path::Path,
    dropped: &Dropped,
    options: Options,
) -> (LocalNet, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let _ = dropped.clock.set(clock.clone());
    let dropped = dropped.clone();
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        audit: Some(AuditConfig {
            mean_interval_ms: 60_000,
            chunk_share: 1.0,
            deadline_ms: 300,
            max_failures: options.max_failures,
            offline_threshold_ms: 120_000,
            seed: Some(seed),
            ..AuditConfig::default()
        }),
        admission: Some(options.admission),
        provider_setup: options.setup,
        provider_layer: Some(Arc::new(move |at, inner| {
            Arc::new(Dropping {
                inner,
                at,
                dropped: dropped.clone(),
            }) as Arc<dyn ProviderApi>
        })),
        ..Hooks::default()
    };
    let shape = Shape {
        providers,
        heartbeat_ms: 100,
        transport,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start_with(dir, shape, hooks).await.unwrap();
    net.wait_alive(providers).await.unwrap();
    (net, clock)
}

/// `n` rows of a table under master key `key`, in 16 KiB segments (RS 4+2).
fn written(seed: u64, key: u8, n: usize) -> (Table, Vec<Vec<u8>>, WriteBatch) {
    let master = MasterKey::from_bytes([key; 32]);
    let mut table = Table::new(&master, "t", CodingParams::default(), 16 << 10)
        .unwrap()
        .with_seed(*blake3::hash(&[&seed.to_le_bytes()[..], &[key]].concat()).as_bytes());
    let rows: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"k\":{key},\"note\":\"{}\"}}",
                "q".repeat(100 + i % 50)
            )
        })
        .map(String::into_bytes)
        .collect();
    let batch = wwt_tests::write_rows(&mut table, &rows);
    (table, rows, batch)
}

/// Stores and entrusts every segment of `batch`; their ids.
async fn store(client: &Storage, table: &Table, batch: &WriteBatch) -> Vec<SegmentId> {
    let audit = table.keys().audit.clone();
    for s in &batch.segments {
        client.put_audited(s, &audit).await.unwrap();
    }
    batch
        .segments
        .iter()
        .map(|s| SegmentId(s.manifest.segment.0))
        .collect()
}

async fn locate(net: &LocalNet, owner: &Identity, segment: SegmentId) -> SegmentLocation {
    net.tracker(0)
        .unwrap()
        .locate(owner.sign(Locate { segment }).unwrap())
        .await
        .unwrap()
}

/// Reads every row of `batch` (no cache) and checks it is `rows`.
async fn reads_every_row(
    client: &Storage,
    table: &mut Table,
    batch: &WriteBatch,
    rows: &[Vec<u8>],
) {
    let manifests = batch
        .segments
        .iter()
        .map(|s| (s.manifest.segment, s.manifest.clone()))
        .collect();
    let back = client
        .read_rows(
            table,
            &manifests,
            &batch.locators,
            &mut SegmentCache::new(0),
        )
        .await
        .unwrap();
    assert_eq!(back, rows);
}

/// One audit step, the clock first moved to the next work due (at least `min_ms` on).
async fn step(net: &LocalNet, clock: &ManualClock, min_ms: u64) -> wwt_tracker::audit::StepReport {
    let tracker = net.tracker(0).unwrap();
    let now = clock.now_ms();
    let next = tracker.next_audit_ms().unwrap_or(now + 1000);
    clock.advance_to(next.max(now + min_ms));
    tracker.audit_step().await.unwrap()
}

/// [`step`], the clock moved on by [`STALL_MS`] once every challenge still out is a read
/// that `dropped` sits on (each then has two sleeps on the clock: the tracker's deadline and
/// the stall), so no honest answer on its way is made late.
async fn step_past_stalls(
    net: &LocalNet,
    clock: &ManualClock,
    dropped: &Dropped,
) -> wwt_tracker::audit::StepReport {
    let tracker = net.tracker(0).unwrap();
    let now = clock.now_ms();
    clock.advance_to(tracker.next_audit_ms().unwrap_or(now + 1000).max(now));
    wwt_tests::audit_step_past_stalls(&tracker, clock, STALL_MS, |now| dropped.stalled(now)).await
}

/// `owner`'s complaint about the first holder of `piece` of `segment`.
async fn complain(
    net: &LocalNet,
    owner: &Identity,
    segment: SegmentId,
    piece: &PieceLocation,
    reason: &str,
) {
    let complaint = Complaint {
        segment,
        index: piece.index,
        provider: piece.holders[0].node,
        reason: reason.into(),
    };
    net.tracker(0)
        .unwrap()
        .complain(owner.sign(complaint).unwrap())
        .await
        .unwrap();
}

fn node(net: &LocalNet, p: usize) -> NodeId {
    net.endpoints.providers[p].node_id().unwrap()
}

async fn sybils_claiming_huge_disks_never_capture_a_segment(transport: Transport) {
    let seed = wwt_tests::seed(0x5b1_2026);
    let dir = tempfile::tempdir().unwrap();
    // Six honest providers, each certified by its own operator, whom the tracker lists; three
    // Sybils claiming 2^60 bytes each, from one network of their own (on loopback, their
    // declared zone stands for their /24).
    let operators: Vec<Identity> = (0..6u8)
        .map(|i| Identity::from_secret([100 + i; 32]))
        .collect();
    let listed = operators.iter().map(Identity::node_id).collect();
    let certs = operators.clone();
    let setup: ProviderSetup = Arc::new(move |p, node, config| match p {
        0..6 => config.operator_certificate = Some(OperatorCert::issue(&certs[p], &node)),
        _ => {
            config.capacity_bytes = 1 << 60;
            config.zone = "sybil-net".into();
        }
    });
    let admission = AdmissionConfig {
        operators: listed,
        vetting_audits: 3,
        vetting_ms: 600_000,
        ..AdmissionConfig::default()
    };
    let dropped = Dropped::default();
    let (mut net, clock) = network(
        transport,
        seed,
        9,
        dir.path(),
        &dropped,
        Options {
            admission,
            setup: Some(setup),
            ..Options::default()
        },
    )
    .await;
    let sybils: HashSet<NodeId> = (6..9).map(|p| node(&net, p)).collect();
    let owner = Identity::from_secret([1; 32]);
    let client = wwt_tests::storage(&net, &owner);
    let sybil_pieces = |locations: &[SegmentLocation]| -> Vec<usize> {
        locations
            .iter()
            .map(|l| {
                l.pieces
                    .iter()
                    .filter(|p| p.holders.iter().any(|h| sybils.contains(&h.node)))
                    .count()
            })
            .collect()
    };

    // While unvetted: a small share of new pieces, never two of one segment.
    let (mut first, first_rows, first_batch) = written(seed, 1, 9000);
    let segments = store(&client, &first, &first_batch).await;
    let mut locations = Vec::new();
    for s in &segments {
        locations.push(locate(&net, &owner, *s).await);
    }
    let per_segment = sybil_pieces(&locations);
    let held: usize = per_segment.iter().sum();
    let share = held as f64 / (6 * segments.len()) as f64;
    println!(
        "{transport:?} (seed {seed:#x}): unvetted Sybils hold {held} of {} pieces ({:.1} %)",
        6 * segments.len(),
        100.0 * share
    );
    assert!(
        per_segment.iter().all(|n| *n <= 1),
        "seed {seed:#x}: {per_segment:?}"
    );
    assert!(
        share <= AdmissionConfig::default().unvetted_share,
        "seed {seed:#x}: Sybils took {share:.3} of the pieces"
    );

    // The audits vet them: they pass three challenges over ten simulated minutes.
    let tracker = net.tracker(0).unwrap();
    let start = clock.now_ms();
    loop {
        assert!(
            clock.now_ms() - start < GIVE_UP_MS,
            "seed {seed:#x}: Sybils never vetted"
        );
        step(&net, &clock, 0).await;
        let records = tracker.providers().await.unwrap();
        if records
            .iter()
            .filter(|r| sybils.contains(&r.node))
            .all(|r| r.vetted)
        {
            break;
        }
    }
    // Vetted, still one network: never two pieces of one segment.
    let (mut second, second_rows, second_batch) = written(seed, 2, 9000);
    let segments = store(&client, &second, &second_batch).await;
    let mut locations = Vec::new();
    for s in &segments {
        locations.push(locate(&net, &owner, *s).await);
    }
    let per_segment = sybil_pieces(&locations);
    println!(
        "{transport:?} (seed {seed:#x}): vetted Sybils hold {} of {} pieces",
        per_segment.iter().sum::<usize>(),
        6 * segments.len()
    );
    assert!(
        per_segment.iter().all(|n| *n <= 1),
        "seed {seed:#x}: {per_segment:?}"
    );

    // Then they drop everything: every row still reads.
    for p in 6..9 {
        net.stop_provider(p).await.unwrap();
    }
    reads_every_row(&client, &mut first, &first_batch, &first_rows).await;
    reads_every_row(&client, &mut second, &second_batch, &second_rows).await;
    net.shutdown().await.unwrap();
}

async fn complaints_are_checked_not_believed(transport: Transport) {
    let seed = wwt_tests::seed(0xc0_2026);
    let dir = tempfile::tempdir().unwrap();
    let dropped = Dropped::default();
    // Seven providers: a piece moved off one of a segment's six holders has somewhere to go.
    let (net, clock) = network(transport, seed, 7, dir.path(), &dropped, Options::default()).await;
    let tracker = net.tracker(0).unwrap();
    let at = |node: NodeId| {
        (0..7)
            .find(|p| net.endpoints.providers[*p].node_id().unwrap() == node)
            .unwrap()
    };

    // A spiteful owner complains 100 times about the honest holders of its own pieces.
    let spiteful = Identity::from_secret([2; 32]);
    let (table, _, batch) = written(seed, 3, 500);
    let segments = store(&wwt_tests::storage(&net, &spiteful), &table, &batch).await;
    let mut targets = Vec::new();
    for s in &segments {
        for p in locate(&net, &spiteful, *s).await.pieces {
            targets.push((*s, p.index, p.holders[0].node));
        }
    }
    let (mut filed, mut refused) = (0, 0);
    for i in 0..100 {
        let (segment, index, provider) = targets[i % targets.len()];
        let complaint = Complaint {
            segment,
            index,
            provider,
            reason: "spite".into(),
        };
        match tracker.complain(spiteful.sign(complaint).unwrap()).await {
            Ok(()) => filed += 1,
            Err(NetError::NoCapacity(_)) => refused += 1,
            Err(e) => panic!("seed {seed:#x}: {e}"),
        }
    }
    let checks = step(&net, &clock, 0).await;
    let reads: Vec<_> = checks
        .challenges
        .iter()
        .filter(|c| c.kind == "read")
        .collect();
    println!(
        "{transport:?} (seed {seed:#x}): 100 complaints, {filed} filed, {refused} refused; \
         {} checked by the tracker's reads",
        reads.len()
    );
    assert_eq!(
        filed,
        AdmissionConfig::default().complaints_per_hour as usize
    );
    assert!(
        !reads.is_empty()
            && reads
                .iter()
                .all(|c| c.outcome == wwt_tracker::audit::Outcome::Pass)
    );
    let report = tracker.audit_report(0).unwrap();
    assert!(
        checks.condemned.is_empty(),
        "seed {seed:#x}: {:?}",
        checks.condemned
    );
    assert!(
        report.credits.iter().all(|c| c.credit > 0 && c.failed == 0),
        "{:?}",
        report.credits
    );

    // An honest owner's complaint about a provider that really dropped its piece: the
    // tracker's read at the next step fails, and the piece goes to repair.
    let honest = Identity::from_secret([3; 32]);
    let (table, _, batch) = written(seed, 4, 100);
    let segment = store(&wwt_tests::storage(&net, &honest), &table, &batch).await[0];
    let piece = locate(&net, &honest, segment).await.pieces[0].clone();
    let thief = piece.holders[0].node;
    dropped.drop_piece(at(thief), piece.piece);
    complain(&net, &honest, segment, &piece, "refused my piece").await;
    let caught = step(&net, &clock, 0).await;
    assert!(
        caught.challenges.iter().any(|c| c.provider == thief
            && c.kind == "read"
            && c.piece == piece.piece
            && matches!(c.outcome, wwt_tracker::audit::Outcome::Fail(_))),
        "seed {seed:#x}: {caught:?}"
    );
    let report = tracker.audit_report(0).unwrap();
    assert!(
        report.repairs_pending > 0 || report.repairs_done > 0,
        "{report:?}"
    );

    // A holder that answers challenges but sits on every read of a piece, the tracker's
    // too: the complaint's read is asked again until the piece has stayed unproven for the
    // offline threshold, and then the piece moves.
    let piece = locate(&net, &honest, segment).await.pieces[1].clone();
    let staller = piece.holders[0].node;
    dropped.stall_reads(at(staller), piece.piece);
    complain(&net, &honest, segment, &piece, "my reads time out").await;
    let start = clock.now_ms();
    let (mut late, mut steps) = (0, 0);
    loop {
        let holders = locate(&net, &honest, segment).await.pieces[piece.index as usize]
            .holders
            .clone();
        if holders.iter().all(|h| h.node != staller) {
            break;
        }
        let report = step_past_stalls(&net, &clock, &dropped).await;
        late += report
            .challenges
            .iter()
            .filter(|c| c.provider == staller && c.kind == "read")
            .inspect(|c| {
                assert!(
                    matches!(c.outcome, wwt_tracker::audit::Outcome::Missed(_)),
                    "{c:?}"
                )
            })
            .count();
        steps += 1;
        assert!(
            clock.now_ms() - start < GIVE_UP_MS && steps < MAX_STEPS,
            "seed {seed:#x}: the staller still holds the piece after {late} late reads"
        );
    }
    println!(
        "{transport:?} (seed {seed:#x}): a piece whose reads stall moved after {late} late \
         reads, {:.0} s of audits",
        (clock.now_ms() - start) as f64 / 1000.0
    );
    drop(tracker);
    net.shutdown().await.unwrap();
}

async fn bad_manifests_are_refused_at_entrust(transport: Transport) {
    let seed = wwt_tests::seed(0xe7_2026);
    let dir = tempfile::tempdir().unwrap();
    let dropped = Dropped::default();
    let (net, clock) = network(transport, seed, 6, dir.path(), &dropped, Options::default()).await;
    let owner = Identity::from_secret([5; 32]);
    let client = wwt_tests::storage(&net, &owner);
    let (table, _, batch) = written(seed, 5, 100);
    let encoded = &batch.segments[0];
    client.put(encoded).await.unwrap();
    let m = encoded.manifest.clone();
    let segment = SegmentId(m.segment.0);
    let audit_key = *table.keys().audit.as_bytes();
    let tracker = net.tracker(0).unwrap();
    let entrust = |manifest: Vec<u8>, audit_key: [u8; 32]| {
        let request = owner
            .sign(Entrust {
                segment,
                manifest: manifest.into(),
                audit_key,
            })
            .unwrap();
        let tracker = tracker.clone();
        async move { tracker.entrust(request).await }
    };
    let huge_sentinels = SegmentManifest {
        sentinels: u32::MAX,
        ..m.clone()
    };
    let huge_shards = SegmentManifest {
        shard_len: 1 << 40,
        ..m.clone()
    };
    // Sizes that agree with each other (the sentinel rule) but not with what was stored.
    let shard_len = m.shard_len + 4096;
    let wrong_sizes = SegmentManifest {
        shard_len,
        sentinels: wwt_engine::piece::sentinel_count(shard_len),
        ..m.clone()
    };
    for (what, manifest, key) in [
        (
            "a huge sentinel count",
            huge_sentinels.to_bytes(),
            audit_key,
        ),
        ("a huge shard length", huge_shards.to_bytes(), audit_key),
        ("wrong sizes", wrong_sizes.to_bytes(), audit_key),
        ("a wrong audit key", m.to_bytes(), [9; 32]),
    ] {
        let err = entrust(manifest, key).await.unwrap_err();
        println!("{transport:?} (seed {seed:#x}): {what}: {err}");
        assert!(matches!(err, NetError::BadRequest(_)), "{what}: {err}");
    }
    // The tracker keeps running: the true manifest is taken, and its audits pass.
    entrust(m.to_bytes(), audit_key).await.unwrap();
    let mut passed = 0;
    while passed < 6 {
        let report = step(&net, &clock, 1000).await;
        assert!(
            report
                .challenges
                .iter()
                .all(|c| c.outcome == wwt_tracker::audit::Outcome::Pass),
            "{report:?}"
        );
        passed += report.challenges.len();
    }
    drop(tracker);
    net.shutdown().await.unwrap();
}

async fn a_tracker_with_a_wrong_clock_condemns_nobody(transport: Transport) {
    let seed = wwt_tests::seed(0xc10c_2026);
    let dir = tempfile::tempdir().unwrap();
    let dropped = Dropped::default();
    let (net, clock) = network(transport, seed, 6, dir.path(), &dropped, Options::default()).await;
    let owner = Identity::from_secret([6; 32]);
    let (table, _, batch) = written(seed, 6, 300);
    store(&wwt_tests::storage(&net, &owner), &table, &batch).await;
    let tracker = net.tracker(0).unwrap();

    // Ten minutes slow: every provider refuses its challenges as stale, for longer than the
    // offline threshold.
    clock.set_skew(-600_000);
    let start = clock.now_ms();
    let mut unsure = 0;
    while clock.now_ms() - start < 4 * 120_000 {
        let report = step(&net, &clock, 0).await;
        assert!(
            report.condemned.is_empty(),
            "seed {seed:#x}: {:?}",
            report.condemned
        );
        for c in &report.challenges {
            assert!(
                matches!(c.outcome, wwt_tracker::audit::Outcome::Inconclusive(_)),
                "{c:?}"
            );
            unsure += 1;
        }
    }
    let report = tracker.audit_report(0).unwrap();
    println!("{transport:?} (seed {seed:#x}): {unsure} challenges inconclusive, nobody condemned");
    assert!(unsure > 0);
    assert!(
        report
            .credits
            .iter()
            .all(|c| c.credit > 0 && c.failed == 0 && c.missed == 0),
        "{:?}",
        report.credits
    );
    // The clock set right, the same providers pass.
    clock.set_skew(0);
    let report = step(&net, &clock, 60_000).await;
    assert!(!report.challenges.is_empty());
    assert!(
        report
            .challenges
            .iter()
            .all(|c| c.outcome == wwt_tracker::audit::Outcome::Pass),
        "{report:?}"
    );
    drop(tracker);
    net.shutdown().await.unwrap();
}

async fn a_provider_dodging_every_challenge_loses_its_pieces_to_repair(transport: Transport) {
    let seed = wwt_tests::seed(0xd0d6_2026);
    let dir = tempfile::tempdir().unwrap();
    let dropped = Dropped::default();
    let (net, clock) = network(transport, seed, 7, dir.path(), &dropped, Options::default()).await;
    let owner = Identity::from_secret([7; 32]);
    let (mut table, rows, batch) = written(seed, 7, 300);
    let client = wwt_tests::storage(&net, &owner);
    let segments = store(&client, &table, &batch).await;
    let tracker = net.tracker(0).unwrap();
    let held = |p: usize| {
        let report = tracker.audit_report(0).unwrap();
        let node = node(&net, p);
        report
            .credits
            .iter()
            .find(|c| c.node == node)
            .map_or(0, |c| c.pieces)
    };
    let dodger = (0..7).max_by_key(|p| held(*p)).unwrap();
    let before = held(dodger);
    assert!(before > 0);

    // Every challenge it gets, it answers with an internal error: inconclusive, never a
    // failure, while the others pass. Its pieces move once they stay unproven for the
    // offline threshold.
    dropped.dodge(dodger);
    let start = clock.now_ms();
    let (mut unsure, mut steps) = (0, 0);
    while held(dodger) > 0 {
        let report = step(&net, &clock, 0).await;
        for c in report
            .challenges
            .iter()
            .filter(|c| c.provider == node(&net, dodger))
        {
            assert!(
                matches!(c.outcome, wwt_tracker::audit::Outcome::Inconclusive(_)),
                "seed {seed:#x}: {c:?}"
            );
            unsure += 1;
        }
        steps += 1;
        assert!(
            clock.now_ms() - start < GIVE_UP_MS && steps < MAX_STEPS,
            "seed {seed:#x}: the dodger still holds {} pieces",
            held(dodger)
        );
    }
    println!(
        "{transport:?} (seed {seed:#x}): {before} pieces of a provider answering only errors \
         moved after {unsure} inconclusive challenges, {:.0} s of audits",
        (clock.now_ms() - start) as f64 / 1000.0
    );
    for segment in segments {
        let location = locate(&net, &owner, segment).await;
        assert!(
            location
                .pieces
                .iter()
                .all(|p| p.holders.iter().all(|h| h.node != node(&net, dodger)))
        );
    }
    reads_every_row(&client, &mut table, &batch, &rows).await;
    drop(tracker);
    net.shutdown().await.unwrap();
}

async fn unrepairable_segments_do_not_block_the_repair_queue(transport: Transport) {
    let seed = wwt_tests::seed(0x4e9_2026);
    let dir = tempfile::tempdir().unwrap();
    let dropped = Dropped::default();
    // Failures never condemn here, so only the pieces dropped go to repair.
    let (net, clock) = network(
        transport,
        seed,
        8,
        dir.path(),
        &dropped,
        Options {
            max_failures: 1000,
            ..Options::default()
        },
    )
    .await;
    let owner = Identity::from_secret([7; 32]);
    let (table, _, batch) = written(seed, 7, 1200);
    let mut segments = store(&wwt_tests::storage(&net, &owner), &table, &batch).await;
    segments.sort();
    assert!(segments.len() >= 5, "{} segments", segments.len());
    let at = |node: NodeId| {
        (0..8)
            .find(|p| net.endpoints.providers[*p].node_id().unwrap() == node)
            .unwrap()
    };
    // The four first segments of the queue lose three pieces each (k = 4: unrepairable);
    // the last one piece.
    let mut doomed = HashMap::new();
    for s in &segments[..4] {
        let location = locate(&net, &owner, *s).await;
        for p in &location.pieces[..3] {
            dropped.drop_piece(at(p.holders[0].node), p.piece);
        }
        doomed.insert(*s, location);
    }
    let last = *segments.last().unwrap();
    let before = locate(&net, &owner, last).await;
    let lost = &before.pieces[0];
    dropped.drop_piece(at(lost.holders[0].node), lost.piece);

    let tracker = net.tracker(0).unwrap();
    let start = clock.now_ms();
    for steps in 0.. {
        assert!(
            clock.now_ms() - start < GIVE_UP_MS && steps < MAX_STEPS,
            "seed {seed:#x}: the repairable segment waited behind the others"
        );
        step(&net, &clock, 0).await;
        let now = locate(&net, &owner, last).await;
        if now.pieces[0].piece != lost.piece {
            break;
        }
    }
    let report = tracker.audit_report(0).unwrap();
    println!(
        "{transport:?} (seed {seed:#x}): repaired behind 4 unrepairable segments after {:.0} s simulated; {} repairs pending",
        (clock.now_ms() - start) as f64 / 1000.0,
        report.repairs_pending
    );
    assert!(report.repairs_pending >= 4, "{report:?}");
    drop(tracker);
    net.shutdown().await.unwrap();
}

async fn an_owner_past_its_quota_is_refused_and_others_are_not(transport: Transport) {
    let seed = wwt_tests::seed(0x9a07_2026);
    let dir = tempfile::tempdir().unwrap();
    let dropped = Dropped::default();
    let quota = 256 << 10;
    let admission = AdmissionConfig {
        owner_quota_bytes: Some(quota),
        ..AdmissionConfig::default()
    };
    let (net, _clock) = network(
        transport,
        seed,
        6,
        dir.path(),
        &dropped,
        Options {
            admission,
            ..Options::default()
        },
    )
    .await;
    let greedy = Identity::from_secret([8; 32]);
    let (table, _, batch) = written(seed, 8, 3000);
    let client = wwt_tests::storage(&net, &greedy);
    let audit = table.keys().audit.clone();
    let mut stored = 0;
    let err = loop {
        let s = batch
            .segments
            .get(stored)
            .expect("the quota never refused a segment");
        match client.put_audited(s, &audit).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    println!("{transport:?} (seed {seed:#x}): {stored} segments stored, then: {err}");
    assert!(err.to_string().contains("quota"), "{err}");
    let used = net
        .tracker(0)
        .unwrap()
        .audit_report(0)
        .unwrap()
        .credits
        .iter()
        .map(|c| c.pieces)
        .sum::<u64>();
    assert!(stored > 0 && used > 0);
    // An owner uploading twenty segments at once: reserved but not yet confirmed bytes count
    // too, so together they stay within the quota.
    let hasty = Identity::from_secret([10; 32]);
    let (table, _, batch) = written(seed, 10, 6000);
    let client = wwt_tests::storage(&net, &hasty);
    let audit = table.keys().audit.clone();
    let puts = batch
        .segments
        .iter()
        .take(20)
        .map(|s| client.put_audited(s, &audit));
    let kept: u64 = futures::future::join_all(puts)
        .await
        .iter()
        .zip(&batch.segments)
        .filter(|(put, _)| put.is_ok())
        .map(|(_, s)| s.manifest.piece_len() * s.manifest.pieces.len() as u64)
        .sum();
    println!("{transport:?} (seed {seed:#x}): 20 segments at once, {kept} bytes kept");
    assert!(
        kept > 0 && kept <= quota,
        "{kept} bytes kept, quota {quota}"
    );
    // Another owner still stores.
    let other = Identity::from_secret([9; 32]);
    let (table, _, batch) = written(seed, 9, 100);
    store(&wwt_tests::storage(&net, &other), &table, &batch).await;
    net.shutdown().await.unwrap();
}

macro_rules! both {
    ($memory:ident, $grpc:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $memory() {
            $body(Transport::Memory).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $grpc() {
            $body(Transport::Grpc).await;
        }
    };
}

both!(
    memory_sybils_claiming_huge_disks_never_capture_a_segment,
    grpc_sybils_claiming_huge_disks_never_capture_a_segment,
    sybils_claiming_huge_disks_never_capture_a_segment
);
both!(
    memory_complaints_are_checked_not_believed,
    grpc_complaints_are_checked_not_believed,
    complaints_are_checked_not_believed
);
both!(
    memory_bad_manifests_are_refused_at_entrust,
    grpc_bad_manifests_are_refused_at_entrust,
    bad_manifests_are_refused_at_entrust
);
both!(
    memory_a_tracker_with_a_wrong_clock_condemns_nobody,
    grpc_a_tracker_with_a_wrong_clock_condemns_nobody,
    a_tracker_with_a_wrong_clock_condemns_nobody
);
both!(
    memory_unrepairable_segments_do_not_block_the_repair_queue,
    grpc_unrepairable_segments_do_not_block_the_repair_queue,
    unrepairable_segments_do_not_block_the_repair_queue
);
both!(
    memory_an_owner_past_its_quota_is_refused_and_others_are_not,
    grpc_an_owner_past_its_quota_is_refused_and_others_are_not,
    an_owner_past_its_quota_is_refused_and_others_are_not
);
both!(
    memory_a_provider_dodging_every_challenge_loses_its_pieces_to_repair,
    grpc_a_provider_dodging_every_challenge_loses_its_pieces_to_repair,
    a_provider_dodging_every_challenge_loses_its_pieces_to_repair
);
