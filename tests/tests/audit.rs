//! Audits and repair on a whole network, in memory and over loopback gRPC: the same test
//! bodies. One of eight providers misbehaves (every provider's service is wrapped, served like
//! any other, and the one holding the first data piece of the first segment is armed); the
//! tracker's challenges, on a simulated clock with a seeded schedule, or its own reads of the
//! pieces the owner complained about, catch it; its pieces are re-coded onto other providers;
//! and every row still reads with two more of a segment's holders gone.
//!
//! Nothing waits on real time: challenge deadlines run on the simulated clock, which only the
//! test moves, so an honest answer is never late however loaded the machine, and the slow
//! cheater's answer waits for the clock too. Each test prints its seed (node keys, placement,
//! schedule and the cheater's guesses derive from it); `WWT_TEST_SEED=0x…` replays one.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use wwt_client::store::SegmentCache;
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};
use wwt_engine::{CodingParams, MasterKey, Table};
use wwt_net::audit::{Challenge, ChallengeAnswer, ChallengeKind};
use wwt_net::types::{
    DeletePieces, Deleted, Locate, NodeId, PieceData, PieceId, PieceStream, ProviderStatus,
    ReadPiece, SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{Identity, NetError, ProviderApi, Signed, proto};
use wwt_tracker::audit::{Outcome, StepReport};
use wwt_tracker::clock::{Clock, ManualClock};
use wwt_tracker::{AuditConfig, Tracker};

/// The seed these tests run with unless `WWT_TEST_SEED` replays another.
const SEED: u64 = 0xa0d1_7e57;
/// Simulated time after which a test gives up.
const GIVE_UP_MS: u64 = 6 * 3_600_000;
/// How long a challenge may take, in simulated milliseconds.
const DEADLINE_MS: u64 = 300;
/// Simulated time a provider may miss every challenge before it is condemned.
const OFFLINE_MS: u64 = 120_000;
/// Simulated time the cheater that keeps its pieces elsewhere takes to fetch one.
const FETCH_MS: u64 = 3_000;

/// How the cheating provider misbehaves once armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cheat {
    /// Deletes one of its pieces.
    DeletesPiece,
    /// Keeps only the Bao (Merkle) tree of each piece, not the bytes: guesses answers.
    KeepsOnlyTree,
    /// Lost 5 % of each piece's bytes; answers a guess where a byte is gone.
    DropsFivePercent,
    /// Keeps its pieces elsewhere and fetches them when challenged: [`FETCH_MS`] of simulated
    /// time, far past the deadline.
    FetchesElsewhere,
    /// Goes offline (the provider is stopped).
    Offline,
    /// Answers challenges but refuses its owner the pieces (holds them hostage).
    Withholds,
}

struct CheatState {
    /// The provider number that misbehaves (none until armed).
    target: AtomicUsize,
    victim: Mutex<Option<PieceId>>,
    /// The test's seed, which the cheater's guesses derive from.
    seed: u64,
    /// The simulated clock the fetching cheater waits on.
    clock: Arc<ManualClock>,
    /// When each of the fetching cheater's stalled answers is due, in simulated time.
    stalls: Mutex<Vec<u64>>,
}

impl CheatState {
    /// `n` bytes guessed for `piece` from position `at`: drawn from the seed and the question,
    /// so they are the same whatever order concurrent challenges come in.
    fn guess(&self, piece: &PieceId, at: u64, n: usize) -> Bytes {
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(&piece.0);
        h.update(&at.to_le_bytes());
        let mut out = vec![0u8; n];
        h.finalize_xof().fill(&mut out);
        Bytes::from(out)
    }

    /// The fetching cheater's answers still waiting for the clock at `now_ms`.
    fn stalled(&self, now_ms: u64) -> usize {
        let mut stalls = self.stalls.lock().unwrap();
        stalls.retain(|due| *due > now_ms);
        stalls.len()
    }
}

/// One audit step of `tracker`. The fetching cheater's answers wait for the simulated clock,
/// which moves on by [`FETCH_MS`] (past their deadlines) only once every challenge still out
/// is one it sits on: then each of them has two sleeps on the clock, the tracker's deadline
/// and the cheater's fetch, and no honest answer is on its way that the move could make late.
async fn audit_step(tracker: &Tracker, state: &CheatState) -> StepReport {
    wwt_tests::audit_step_past_stalls(tracker, &state.clock, FETCH_MS, |now| state.stalled(now))
        .await
}

/// Whether the 5 %-dropping provider lost byte `at` of `piece` (13/256 ≈ 5.1 % of them).
fn dropped(piece: &PieceId, at: u64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&piece.0);
    h.update(&at.to_le_bytes());
    h.finalize().as_bytes()[0] < 13
}

/// A provider service wrapped to misbehave: stores go through; once armed, challenges and
/// reads are answered as `cheat` says.
struct Cheater {
    inner: Arc<dyn ProviderApi>,
    index: usize,
    cheat: Cheat,
    state: Arc<CheatState>,
}

impl Cheater {
    fn armed(&self) -> bool {
        self.state.target.load(Ordering::SeqCst) == self.index
    }

    fn damage(&self, piece: &PieceId, positions: impl Iterator<Item = u64>, data: &Bytes) -> Bytes {
        let mut out = data.to_vec();
        for (byte, at) in out.iter_mut().zip(positions) {
            if dropped(piece, at) {
                *byte = self.state.guess(piece, at, 1)[0];
            }
        }
        Bytes::from(out)
    }
}

#[async_trait]
impl ProviderApi for Cheater {
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        self.inner.store(request, data).await
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        if !self.armed() {
            return self.inner.read(request).await;
        }
        let asked = ReadPiece::try_from(proto::ReadRequest::decode(request.body().clone())?)?;
        match self.cheat {
            Cheat::DeletesPiece if Some(asked.piece) == *self.state.victim.lock().unwrap() => {
                Err(NetError::NotFound("deleted".into()))
            }
            Cheat::KeepsOnlyTree => Err(NetError::NotFound("only the tree is kept".into())),
            Cheat::Withholds => Err(NetError::Forbidden("pay the ransom first".into())),
            Cheat::DropsFivePercent => {
                let mut data = self.inner.read(request).await?;
                let start = data.offset;
                data.data = self.damage(&asked.piece, start.., &data.data);
                Ok(data)
            }
            _ => self.inner.read(request).await,
        }
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        self.inner.status().await
    }

    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        if !self.armed() {
            return self.inner.challenge(request).await;
        }
        let asked = Challenge::try_from(proto::ChallengeRequest::decode(request.body().clone())?)?;
        match self.cheat {
            Cheat::DeletesPiece if Some(asked.piece) == *self.state.victim.lock().unwrap() => {
                Err(NetError::NotFound("deleted".into()))
            }
            Cheat::KeepsOnlyTree => {
                // The tree proves the chunk's place, but the bytes must be guessed.
                let mut answer = self.inner.challenge(request).await?;
                let at = match &asked.kind {
                    ChallengeKind::Sentinels(positions) => positions.first().copied(),
                    ChallengeKind::Chunk(range) => Some(range.offset),
                };
                answer.data = self
                    .state
                    .guess(&asked.piece, at.unwrap_or(0), answer.data.len());
                Ok(answer)
            }
            Cheat::DropsFivePercent => {
                let mut answer = self.inner.challenge(request).await?;
                answer.data = match &asked.kind {
                    ChallengeKind::Sentinels(positions) => {
                        self.damage(&asked.piece, positions.iter().copied(), &answer.data)
                    }
                    ChallengeKind::Chunk(range) => {
                        self.damage(&asked.piece, range.offset.., &answer.data)
                    }
                };
                Ok(answer)
            }
            Cheat::FetchesElsewhere => {
                // Fetching the piece from where it really lives takes FETCH_MS: the answer
                // waits until the test's clock has moved that far.
                let clock = &self.state.clock;
                let due = clock.now_ms() + FETCH_MS;
                self.state.stalls.lock().unwrap().push(due);
                clock.sleep_until(due).await;
                self.inner.challenge(request).await
            }
            _ => self.inner.challenge(request).await,
        }
    }

    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        self.inner.delete(request).await
    }
}

fn rows(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"id\":{i},\"note\":\"{}\"}}", "y".repeat(150 + i % 50)).into_bytes())
        .collect()
}

/// Where each segment's pieces are, by index, as the tracker says.
async fn holders(
    net: &LocalNet,
    owner: &Identity,
    segments: &[SegmentId],
) -> HashMap<SegmentId, Vec<(PieceId, Vec<NodeId>)>> {
    let tracker = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)
        .unwrap();
    let mut out = HashMap::new();
    for s in segments {
        let location = tracker
            .locate(owner.sign(Locate { segment: *s }).unwrap())
            .await
            .unwrap();
        let pieces = location
            .pieces
            .into_iter()
            .map(|p| (p.piece, p.holders.into_iter().map(|h| h.node).collect()))
            .collect();
        out.insert(*s, pieces);
    }
    out
}

/// How many pieces among the first `k` (the data pieces, which reads try first) of each of
/// `segments` `node` holds.
async fn data_pieces_held(
    net: &LocalNet,
    owner: &Identity,
    segments: &[SegmentId],
    k: u32,
    node: NodeId,
) -> usize {
    let tracker = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)
        .unwrap();
    let mut held = 0;
    for s in segments {
        let location = tracker
            .locate(owner.sign(Locate { segment: *s }).unwrap())
            .await
            .unwrap();
        held += location
            .pieces
            .iter()
            .filter(|p| p.index < k && p.holders.iter().any(|h| h.node == node))
            .count();
    }
    held
}

/// Log entries of `kind` about `node` in `tracker`'s report.
fn entries(tracker: &Tracker, kind: &str, node: NodeId) -> usize {
    let report = tracker.audit_report(1000).unwrap();
    assert!(report.log_length <= 1000, "the report holds the whole log");
    report
        .entries
        .iter()
        .filter(|e| e.kind == kind && e.provider == node)
        .count()
}

async fn cheater_is_caught_and_repaired(transport: Transport, cheat: Cheat) {
    let seed = wwt_tests::seed(SEED);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let state = Arc::new(CheatState {
        target: AtomicUsize::new(usize::MAX),
        victim: Mutex::new(None),
        seed,
        clock: clock.clone(),
        stalls: Mutex::new(Vec::new()),
    });
    let layer_state = state.clone();
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        audit: Some(AuditConfig {
            mean_interval_ms: 60_000,
            chunk_share: 0.25,
            sentinels_per_challenge: 4,
            refresh_below: 4,
            deadline_ms: DEADLINE_MS,
            max_failures: 2,
            offline_threshold_ms: OFFLINE_MS,
            repairs_per_step: 2,
            seed: Some(seed),
            ..AuditConfig::default()
        }),
        provider_layer: Some(Arc::new(move |index, api| {
            Arc::new(Cheater {
                inner: api,
                index,
                cheat,
                state: layer_state.clone(),
            })
        })),
        ..Hooks::default()
    };
    let shape = Shape {
        providers: 8,
        heartbeat_ms: 100,
        transport,
        seed: Some(seed),
        ..Shape::default()
    };
    let mut net = LocalNet::start_with(dir.path(), shape, hooks)
        .await
        .unwrap();

    // An owner writes 1,100 rows into 32 KiB segments (RS 4+2) and entrusts them.
    let master = MasterKey::from_bytes([6; 32]);
    let mut table = Table::new(&master, "t", CodingParams::default(), 32 << 10)
        .unwrap()
        .with_seed(*blake3::hash(&seed.to_le_bytes()).as_bytes());
    let rows = rows(1100);
    let batch = wwt_tests::write_rows(&mut table, &rows);
    let owner = Identity::from_secret([9; 32]);
    let client = wwt_tests::storage(&net, &owner);
    let audit = table.keys().audit.clone();
    for s in &batch.segments {
        client.put_audited(s, &audit).await.unwrap();
    }
    let manifests: HashMap<_, _> = batch
        .segments
        .iter()
        .map(|s| (s.manifest.segment, s.manifest.clone()))
        .collect();
    let segments: Vec<SegmentId> = batch
        .segments
        .iter()
        .map(|s| SegmentId(s.manifest.segment.0))
        .collect();

    // The cheater holds the first data piece of the first segment (so the owner's reads,
    // data pieces first, meet it); its pieces, and one segment it holds a piece of.
    let mut segments = segments;
    segments.sort();
    let before = holders(&net, &owner, &segments).await;
    let cheater = before[&segments[0]][0].1[0];
    let cheater_at = net
        .endpoints
        .providers
        .iter()
        .position(|p| p.node_id().unwrap() == cheater)
        .unwrap();
    let mut held: Vec<(SegmentId, PieceId)> = before
        .iter()
        .flat_map(|(s, pieces)| {
            pieces
                .iter()
                .filter(|(_, h)| h.contains(&cheater))
                .map(|(p, _)| (*s, *p))
        })
        .collect();
    held.sort();
    assert!(!held.is_empty(), "the cheater holds no piece");
    let (watched, victim) = held[0];
    *state.victim.lock().unwrap() = Some(victim);
    state.target.store(cheater_at, Ordering::SeqCst);
    if cheat == Cheat::Offline {
        net.stop_provider(cheater_at).await.unwrap();
    }
    // The owner's complaints, all made before any audit step (a log that short is reported
    // whole).
    let mut complaints = 0;
    if cheat == Cheat::Withholds {
        // The owner reads everything twice (from other pieces); each refusal is reported.
        let k = u32::try_from(CodingParams::default().data).unwrap();
        let refusals = 2 * data_pieces_held(&net, &owner, &segments, k, cheater).await;
        assert!(
            refusals > 0,
            "the cheater holds no data piece: nothing to refuse"
        );
        for _ in 0..2 {
            let back = client
                .read_rows(
                    &mut table,
                    &manifests,
                    &batch.locators,
                    &mut SegmentCache::new(0),
                )
                .await
                .unwrap();
            assert_eq!(back, rows);
        }
        complaints = entries(&net.tracker(0).unwrap(), "complaint", cheater);
        assert_eq!(complaints, refusals, "one complaint per refused piece");
    }
    let tracker = net.tracker(0).unwrap();
    assert_eq!(entries(&tracker, "complaint", cheater), complaints);
    drop(tracker);
    let lost: Vec<PieceId> = match cheat {
        Cheat::DeletesPiece => vec![victim],
        _ => held.iter().map(|(_, p)| *p).collect(),
    };

    // Step the audits on the simulated clock until the lost pieces are re-coded elsewhere.
    let start = clock.now_ms();
    let mut challenged = 0;
    let mut detected: Option<(usize, u64)> = None;
    // Kinds of the cheater's challenges up to its detection.
    let mut kinds: Vec<&str> = Vec::new();
    let mut restarted = false;
    loop {
        let tracker = net.tracker(0).unwrap();
        let now = clock.now_ms();
        assert!(
            now - start < GIVE_UP_MS,
            "{cheat:?}: not detected and repaired within {} h simulated",
            GIVE_UP_MS / 3_600_000
        );
        clock.advance_to(tracker.next_audit_ms().unwrap_or(now + 1000).max(now));
        let step = audit_step(&tracker, &state).await;
        for c in step.challenges.iter().filter(|c| c.provider == cheater) {
            challenged += 1;
            if detected.is_none() {
                kinds.push(c.kind);
            }
            let caught = match cheat {
                Cheat::DeletesPiece => c.piece == victim && c.outcome != Outcome::Pass,
                _ => false,
            };
            if detected.is_none() && (caught || step.condemned.contains(&cheater)) {
                detected = Some((challenged, clock.now_ms() - start));
            }
        }
        let report = tracker.audit_report(0).unwrap();
        let condemned = report
            .credits
            .iter()
            .any(|c| c.node == cheater && c.credit == 0);
        if detected.is_none() && condemned {
            detected = Some((challenged, clock.now_ms() - start));
        }
        if detected.is_some() && report.repairs_pending > 0 && !restarted {
            // A tracker restart in the middle of the repairs: the queue is on disk.
            drop(tracker);
            net.restart_tracker(0).await.unwrap();
            let alive = if cheat == Cheat::Offline { 7 } else { 8 };
            net.wait_alive(alive).await.unwrap();
            restarted = true;
            continue;
        }
        let now_held = holders(&net, &owner, &segments).await;
        let still_lost = now_held.values().flatten().any(|(p, h)| {
            lost.contains(p) || (cheat != Cheat::DeletesPiece && h.contains(&cheater))
        });
        if detected.is_some() && report.repairs_pending == 0 && !still_lost {
            break;
        }
    }
    let tracker = net.tracker(0).unwrap();
    let report = tracker.audit_report(1000).unwrap();
    let (after, sim_ms) = detected.unwrap();
    println!(
        "{cheat:?} over {transport:?} (seed {seed:#x}): detected after {after} challenges and {complaints} complaints about it and {:.1} s of simulated time; {} pieces repaired or refreshed ({} lost){}",
        sim_ms as f64 / 1000.0,
        report.repairs_done,
        lost.len(),
        if restarted {
            ", across a tracker restart"
        } else {
            ""
        }
    );
    assert!(report.repairs_done >= lost.len() as u64, "{report:?}");
    // Caught by its challenges, which it answers right; the withholding cheater by the
    // tracker's own reads of the pieces its owner complained about, which it refuses.
    assert!(after > 0, "detected without a challenge");
    match cheat {
        Cheat::Withholds => assert!(kinds.contains(&"read"), "{kinds:?}"),
        _ => assert!(!kinds.contains(&"read"), "{kinds:?}"),
    }
    // A provider that only misses its deadlines is condemned once it has missed them all
    // for the offline threshold, not sooner.
    if matches!(cheat, Cheat::FetchesElsewhere | Cheat::Offline) {
        let c = report.credits.iter().find(|c| c.node == cheater).unwrap();
        assert!(c.missed > 0 && c.passed == 0 && c.failed == 0, "{c:?}");
        assert!(sim_ms >= OFFLINE_MS, "condemned after {sim_ms} ms");
    }
    assert_eq!(tracker.verify_audit_log().unwrap(), report.log_length);
    let honest = report.credits.iter().filter(|c| c.node != cheater);
    for c in honest {
        assert!(c.credit > 0, "honest provider {} was condemned", c.node);
    }
    if cheat != Cheat::DeletesPiece {
        let c = report.credits.iter().find(|c| c.node == cheater).unwrap();
        assert_eq!((c.credit, c.pieces), (0, 0), "{c:?}");
    }

    // What the owner checks: every row reads, from the segment's repaired pieces, with two
    // more of that segment's holders (and a condemned cheater) gone.
    let after_repair = holders(&net, &owner, &segments).await;
    let others: Vec<usize> = after_repair[&watched]
        .iter()
        .flat_map(|(_, h)| h.iter().copied())
        .filter(|n| *n != cheater)
        .filter(|n| {
            // Not the holders of the re-coded pieces: those are what the read must use.
            !after_repair[&watched]
                .iter()
                .any(|(p, h)| !before[&watched].iter().any(|(q, _)| q == p) && h.contains(n))
        })
        .map(|n| {
            net.endpoints
                .providers
                .iter()
                .position(|p| p.node_id().unwrap() == n)
                .unwrap()
        })
        .take(2)
        .collect();
    assert_eq!(others.len(), 2, "{after_repair:?}");
    // The piece-deleting provider keeps its other pieces, which other segments need.
    let gone = (cheat != Cheat::DeletesPiece).then_some(cheater_at);
    for p in others.into_iter().chain(gone) {
        net.stop_provider(p).await.unwrap();
    }
    let back = client
        .read_rows(
            &mut table,
            &manifests,
            &batch.locators,
            &mut SegmentCache::new(0),
        )
        .await
        .unwrap();
    assert_eq!(back, rows, "every row reads after the repair");
    net.shutdown().await.unwrap();
}

macro_rules! both {
    ($memory:ident, $grpc:ident, $cheat:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            cheater_is_caught_and_repaired(Transport::Memory, $cheat).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $grpc() {
            cheater_is_caught_and_repaired(Transport::Grpc, $cheat).await;
        }
    };
}

both!(
    memory_a_deleted_piece_is_caught_and_repaired,
    grpc_a_deleted_piece_is_caught_and_repaired,
    Cheat::DeletesPiece
);
both!(
    memory_a_provider_keeping_only_the_tree_is_caught_and_repaired,
    grpc_a_provider_keeping_only_the_tree_is_caught_and_repaired,
    Cheat::KeepsOnlyTree
);
both!(
    memory_a_provider_dropping_5_percent_is_caught_and_repaired,
    grpc_a_provider_dropping_5_percent_is_caught_and_repaired,
    Cheat::DropsFivePercent
);
both!(
    memory_a_provider_fetching_elsewhere_misses_deadlines_and_is_repaired,
    grpc_a_provider_fetching_elsewhere_misses_deadlines_and_is_repaired,
    Cheat::FetchesElsewhere
);
both!(
    memory_an_offline_provider_is_repaired,
    grpc_an_offline_provider_is_repaired,
    Cheat::Offline
);
both!(
    memory_a_provider_withholding_pieces_from_its_owner_is_reported_and_repaired,
    grpc_a_provider_withholding_pieces_from_its_owner_is_reported_and_repaired,
    Cheat::Withholds
);
