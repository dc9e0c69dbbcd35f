//! A segment's two trackers, on a whole network in memory and over loopback gRPC (same
//! bodies): the two trackers ranked first by rendezvous hashing both know each segment the
//! owner stores; with the first stopped, the second audits its segments, and a provider lost
//! then is repaired by the second alone, each piece once; the first, back, gets the repairs
//! mirrored and audits again, and every row reads throughout.
//!
//! Audits run on a simulated clock that only the test moves; the seed is printed
//! (`WWT_TEST_SEED=0x…` replays one).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use wwt_client::store::{SegmentCache, Storage};
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};
use wwt_engine::table::WriteBatch;
use wwt_engine::{CodingParams, MasterKey, SegmentId as EngineSegmentId, SegmentManifest, Table};
use wwt_net::types::{Locate, NodeId, PieceId, SegmentId, SegmentLocation};
use wwt_net::{Identity, NetError, rendezvous};
use wwt_tracker::AuditConfig;
use wwt_tracker::clock::{Clock, ManualClock};

/// Simulated time after which the test gives up.
const GIVE_UP_MS: u64 = 6 * 3_600_000;
/// Simulated time a provider may miss every challenge before it is condemned.
const OFFLINE_MS: u64 = 120_000;

fn rows(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"id\":{i},\"note\":\"{}\"}}", "z".repeat(120 + i % 40)).into_bytes())
        .collect()
}

/// What tracker `t` says of `segment`.
async fn locate(
    net: &LocalNet,
    owner: &Identity,
    t: usize,
    segment: SegmentId,
) -> Result<SegmentLocation, NetError> {
    net.connector()
        .tracker(&net.endpoints.trackers[t].address)?
        .locate(owner.sign(Locate { segment })?)
        .await
}

/// Each piece and its holders' ids (not their liveness, which each tracker judges alone).
fn held(pieces: &[wwt_net::types::PieceLocation]) -> Vec<(u32, PieceId, Vec<NodeId>)> {
    pieces
        .iter()
        .map(|p| {
            let mut nodes: Vec<NodeId> = p.holders.iter().map(|h| h.node).collect();
            nodes.sort();
            (p.index, p.piece, nodes)
        })
        .collect()
}

/// Whether `location` maps every piece to a holder, none of them `lost`.
fn whole_without(location: &SegmentLocation, pieces: usize, lost: NodeId) -> bool {
    location.pieces.len() == pieces
        && location
            .pieces
            .iter()
            .all(|p| !p.holders.is_empty() && p.holders.iter().all(|h| h.node != lost))
}

/// Three trackers and `providers` providers, audits on a simulated clock with chunk
/// challenges only (sentinels running out would queue refreshes of whole segments, which a
/// few providers cannot place away from every holder); the trackers' ids.
async fn network(
    transport: Transport,
    seed: u64,
    providers: usize,
    dir: &std::path::Path,
) -> (LocalNet, Arc<ManualClock>, Vec<NodeId>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        audit: Some(AuditConfig {
            mean_interval_ms: 60_000,
            chunk_share: 1.0,
            deadline_ms: 300,
            offline_threshold_ms: OFFLINE_MS,
            repairs_per_step: 4,
            seed: Some(seed),
            ..AuditConfig::default()
        }),
        ..Hooks::default()
    };
    let shape = Shape {
        trackers: 3,
        providers,
        heartbeat_ms: 100,
        transport,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start_with(dir, shape, hooks).await.unwrap();
    let ids = net
        .endpoints
        .trackers
        .iter()
        .map(|t| t.node_id().unwrap())
        .collect();
    (net, clock, ids)
}

/// `n` rows of table "t" under master key `key`, written into 16 KiB segments (RS 4+2).
fn written(seed: u64, key: u8, n: usize) -> (Table, Vec<Vec<u8>>, WriteBatch) {
    let master = MasterKey::from_bytes([key; 32]);
    let mut table = Table::new(&master, "t", CodingParams::default(), 16 << 10)
        .unwrap()
        .with_seed(*blake3::hash(&seed.to_le_bytes()).as_bytes());
    let rows = rows(n);
    let batch = wwt_tests::write_rows(&mut table, &rows);
    (table, rows, batch)
}

/// Each segment's manifest, by segment.
fn manifests(batch: &WriteBatch) -> HashMap<EngineSegmentId, SegmentManifest> {
    batch
        .segments
        .iter()
        .map(|s| (s.manifest.segment, s.manifest.clone()))
        .collect()
}

/// Reads every row of `batch` through `client` (no cache) and checks it is `rows`.
async fn reads_every_row(
    client: &Storage,
    table: &mut Table,
    batch: &WriteBatch,
    rows: &[Vec<u8>],
    seed: u64,
) {
    let back = client
        .read_rows(
            table,
            &manifests(batch),
            &batch.locators,
            &mut SegmentCache::new(0),
        )
        .await
        .unwrap();
    assert_eq!(back, rows, "seed {seed:#x}");
}

async fn the_second_tracker_takes_over(transport: Transport) {
    let seed = wwt_tests::seed(0x7a1_2026);
    let dir = tempfile::tempdir().unwrap();
    let (mut net, clock, ids) = network(transport, seed, 8, dir.path()).await;
    let at = |id: &NodeId| ids.iter().position(|i| i == id).unwrap();

    // An owner stores 600 rows and entrusts them.
    let (mut table, rows, batch) = written(seed, 7, 600);
    let owner = Identity::from_secret([8; 32]);
    let client = wwt_tests::storage(&net, &owner);
    let audit = table.keys().audit.clone();
    for s in &batch.segments {
        client.put_audited(s, &audit).await.unwrap();
    }
    let manifests = manifests(&batch);
    let pieces = CodingParams::default().data + CodingParams::default().parity;
    let segments: Vec<SegmentId> = manifests.keys().map(|s| SegmentId(s.0)).collect();
    let pair = |s: &SegmentId| rendezvous::pair(&s.0, &ids);

    // Both trackers of each segment's pair know it, manifest and holders alike.
    for s in &segments {
        let [first, second] = pair(s)[..] else {
            panic!("three trackers give a pair");
        };
        let a = locate(&net, &owner, at(&first), *s).await.unwrap();
        let b = locate(&net, &owner, at(&second), *s).await.unwrap();
        assert!(!a.manifest.is_empty(), "seed {seed:#x}: not entrusted");
        assert_eq!(
            (a.manifest, held(&a.pieces)),
            (b.manifest, held(&b.pieces)),
            "seed {seed:#x}: the pair of {s} disagree"
        );
    }

    // The tracker that leads the most segments stops; a provider holding a piece of one of
    // them is lost.
    let mut led: HashMap<NodeId, Vec<SegmentId>> = HashMap::new();
    for s in &segments {
        led.entry(pair(s)[0]).or_default().push(*s);
    }
    let (gone, gone_led) = led.iter().max_by_key(|(_, l)| l.len()).unwrap();
    let (gone, gone_led) = (*gone, gone_led.clone());
    let first_of_gone = locate(&net, &owner, at(&gone), gone_led[0]).await.unwrap();
    let lost = first_of_gone.pieces[0].holders[0].node;
    let lost_at = net
        .endpoints
        .providers
        .iter()
        .position(|p| p.node_id().unwrap() == lost)
        .unwrap();
    let affected: Vec<SegmentId> = {
        let mut out = Vec::new();
        for s in &gone_led {
            let l = locate(&net, &owner, at(&gone), *s).await.unwrap();
            if l.pieces
                .iter()
                .any(|p| p.holders.iter().any(|h| h.node == lost))
            {
                out.push(*s);
            }
        }
        out
    };
    net.stop_tracker(at(&gone)).await.unwrap();
    net.stop_provider(lost_at).await.unwrap();
    net.wait_alive(7).await.unwrap();

    // The others step on the simulated clock until the second of each affected segment
    // maps it whole without the lost provider.
    let start = clock.now_ms();
    loop {
        let now = clock.now_ms();
        if now - start >= GIVE_UP_MS {
            let t = at(&pair(&affected[0])[1]);
            let report = net.tracker(t).unwrap().audit_report(20).unwrap();
            let last: Vec<String> = report
                .entries
                .iter()
                .map(|e| format!("{} {} {}", e.kind, e.outcome, e.detail))
                .collect();
            panic!("seed {seed:#x}: not repaired by the second trackers: {last:#?}");
        }
        clock.advance_to(now + 10_000);
        for t in (0..ids.len()).filter(|t| ids[*t] != gone) {
            net.tracker(t).unwrap().audit_step().await.unwrap();
        }
        let mut done = true;
        for s in &affected {
            let second = at(&pair(s)[1]);
            let l = locate(&net, &owner, second, *s).await.unwrap();
            done &= whole_without(&l, pieces, lost);
        }
        if done {
            break;
        }
    }
    // Each lost piece re-coded once, by the second of its segment's pair.
    let repairs = |net: &LocalNet| {
        let mut repaired: HashMap<String, usize> = HashMap::new();
        let mut by: HashSet<NodeId> = HashSet::new();
        for t in (0..ids.len()).filter(|t| net.tracker(*t).is_ok()) {
            let report = net.tracker(t).unwrap().audit_report(10_000).unwrap();
            for e in report
                .entries
                .iter()
                .filter(|e| e.kind == "repair" && e.outcome == "done")
            {
                let piece = e.detail.split(" re-coded").next().unwrap().to_string();
                *repaired.entry(piece).or_default() += 1;
                by.insert(ids[t]);
            }
        }
        (repaired, by)
    };
    let (repaired, by) = repairs(&net);
    assert!(!repaired.is_empty(), "seed {seed:#x}: nothing repaired");
    assert!(
        repaired.values().all(|n| *n == 1),
        "seed {seed:#x}: a piece repaired twice: {repaired:?}"
    );
    for s in &affected {
        assert!(
            by.contains(&pair(s)[1]),
            "seed {seed:#x}: not by the second"
        );
    }

    // The first comes back: the repairs are mirrored to it, and it leads again.
    net.restart_tracker(at(&gone)).await.unwrap();
    net.wait_alive(7).await.unwrap();
    for _ in 0..10 {
        clock.advance_to(clock.now_ms() + 60_000);
        for t in 0..ids.len() {
            net.tracker(t).unwrap().audit_step().await.unwrap();
        }
    }
    // Nobody repairs again what was repaired (the other trackers may finish their own
    // segments' repairs meanwhile), and no tracker keeps a repair queued.
    let (after, _) = repairs(&net);
    assert!(
        repaired.keys().all(|p| after.contains_key(p)) && after.values().all(|n| *n == 1),
        "seed {seed:#x}: repaired again: {after:?}"
    );
    for t in 0..ids.len() {
        let report = net.tracker(t).unwrap().audit_report(0).unwrap();
        assert_eq!(
            report.repairs_pending, 0,
            "seed {seed:#x}: tracker {t} {report:?}"
        );
    }
    for s in &affected {
        let l = locate(&net, &owner, at(&gone), *s).await.unwrap();
        assert!(
            whole_without(&l, pieces, lost),
            "seed {seed:#x}: the repair of {s} did not reach its first tracker"
        );
    }
    // Every row reads, with pieces as the trackers map them now.
    reads_every_row(&client, &mut table, &batch, &rows, seed).await;
    println!(
        "seed {seed:#x}: {} segments, {} led by the stopped tracker, {} repaired by their second ({} pieces)",
        segments.len(),
        gone_led.len(),
        affected.len(),
        repaired.len()
    );
    net.shutdown().await.unwrap();
}

/// Steps every running tracker of `listed` once, `by` simulated milliseconds later.
async fn step(net: &LocalNet, clock: &ManualClock, listed: &[usize], by: u64) {
    clock.advance_to(clock.now_ms() + by);
    for t in listed {
        net.tracker(*t).unwrap().audit_step().await.unwrap();
    }
}

/// Whether tracker `t` knows `segment` whole (its entrusted manifest).
async fn knows(net: &LocalNet, owner: &Identity, t: usize, segment: SegmentId) -> bool {
    locate(net, owner, t, segment)
        .await
        .is_ok_and(|l| !l.manifest.is_empty())
}

async fn trackers_joining_and_leaving_hand_segments_over(transport: Transport) {
    let seed = wwt_tests::seed(0x7a2_2026);
    let dir = tempfile::tempdir().unwrap();
    let (mut net, clock, ids) = network(transport, seed, 6, dir.path()).await;
    let at = |id: &NodeId| ids.iter().position(|i| i == id).unwrap();

    // A network of trackers 0 and 1 stores 1,500 rows.
    net.set_trackers(&[0, 1]).await.unwrap();
    net.wait_alive(6).await.unwrap();
    let (mut table, rows, batch) = written(seed, 5, 1500);
    let owner = Identity::from_secret([4; 32]);
    let audit = table.keys().audit.clone();
    let writer = wwt_tests::storage(&net, &owner);
    for s in &batch.segments {
        writer.put_audited(s, &audit).await.unwrap();
    }
    let segments: Vec<SegmentId> = batch
        .segments
        .iter()
        .map(|s| SegmentId(s.manifest.segment.0))
        .collect();

    // Tracker 2 joins: the segments whose pair it enters reach it, and it audits those it
    // leads; a tracker audits no segment it does not lead.
    net.set_trackers(&[0, 1, 2]).await.unwrap();
    net.wait_alive(6).await.unwrap();
    let all = [0, 1, 2];
    let pair = |s: &SegmentId| rendezvous::pair(&s.0, &ids);
    let led_by_new: Vec<SegmentId> = segments
        .iter()
        .copied()
        .filter(|s| pair(s)[0] == ids[2])
        .collect();
    assert!(
        !led_by_new.is_empty(),
        "seed {seed:#x}: tracker 2 leads nothing"
    );
    let mut rounds = 0;
    loop {
        step(&net, &clock, &all, 10_000).await;
        let mut whole = true;
        for s in &segments {
            for t in pair(s) {
                whole &= knows(&net, &owner, at(&t), *s).await;
            }
        }
        if whole {
            break;
        }
        rounds += 1;
        assert!(
            rounds < 50,
            "seed {seed:#x}: the new pairs never got their segments"
        );
    }
    let marks: Vec<u64> = all
        .iter()
        .map(|t| net.tracker(*t).unwrap().audit_report(0).unwrap().log_length)
        .collect();
    for _ in 0..30 {
        step(&net, &clock, &all, 60_000).await;
    }
    let mut piece_of: HashMap<PieceId, SegmentId> = HashMap::new();
    for s in &segments {
        for p in locate(&net, &owner, at(&pair(s)[0]), *s)
            .await
            .unwrap()
            .pieces
        {
            piece_of.insert(p.piece, *s);
        }
    }
    let mut new_audited = HashSet::new();
    for t in all {
        let report = net.tracker(t).unwrap().audit_report(10_000).unwrap();
        for e in report
            .entries
            .iter()
            .filter(|e| e.seq >= marks[t] && e.kind == "chunk")
        {
            let s = piece_of[&e.piece];
            assert_eq!(
                pair(&s)[0],
                ids[t],
                "seed {seed:#x}: tracker {t} audited {s}, which it does not lead"
            );
            if t == 2 {
                new_audited.insert(s);
            }
        }
    }
    assert_eq!(
        new_audited.len(),
        led_by_new.len(),
        "seed {seed:#x}: tracker 2 audits every segment it leads"
    );

    // Tracker 1 leaves: every segment is left with both trackers 0 and 2.
    net.set_trackers(&[0, 2]).await.unwrap();
    net.wait_alive(6).await.unwrap();
    let mut rounds = 0;
    loop {
        step(&net, &clock, &[0, 2], 10_000).await;
        let mut whole = true;
        for s in &segments {
            whole &= knows(&net, &owner, 0, *s).await && knows(&net, &owner, 2, *s).await;
        }
        if whole {
            break;
        }
        rounds += 1;
        assert!(
            rounds < 50,
            "seed {seed:#x}: a segment was left with one tracker"
        );
    }
    reads_every_row(
        &wwt_tests::storage(&net, &owner),
        &mut table,
        &batch,
        &rows,
        seed,
    )
    .await;
    println!(
        "seed {seed:#x}: {} segments; tracker 2 joined and leads {}, tracker 1 left",
        segments.len(),
        led_by_new.len()
    );
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trackers_joining_and_leaving_hand_segments_over_in_memory() {
    trackers_joining_and_leaving_hand_segments_over(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trackers_joining_and_leaving_hand_segments_over_over_grpc() {
    trackers_joining_and_leaving_hand_segments_over(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_tracker_takes_over_in_memory() {
    the_second_tracker_takes_over(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_tracker_takes_over_over_grpc() {
    the_second_tracker_takes_over(Transport::Grpc).await;
}
