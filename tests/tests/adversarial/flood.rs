//! A flood from strangers over loopback gRPC: 1,000 throwaway keys, over connections of their
//! own, send a provider validly signed reads, challenges and stores of the owner's pieces as
//! fast as it answers, and keep on while the owner reads its pieces there and the tracker
//! audits it. Every stranger is refused as forbidden, never as a node out of room or time;
//! every read of the owner and every challenge of the tracker is answered, and right.
//!
//! The strangers' keys and the network's keys, placement and audit draws derive from the seed,
//! printed; `WWT_TEST_SEED=0x…` replays one. The audits run on a simulated clock that only the
//! test moves, so no challenge is late however loaded the machine.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wwt_devnet::{Hooks, LocalNet, Shape, Transport};
use wwt_engine::{CodingParams, MasterKey, Table};
use wwt_net::audit::{Challenge, ChallengeKind};
use wwt_net::grpc::GrpcConnector;
use wwt_net::types::{
    Locate, NodeId, PieceId, PieceStream, ReadPiece, Reservation, SegmentId, StorePiece,
};
use wwt_net::{Connector, Identity, NetError, ProviderApi, now_ms};
use wwt_tracker::AuditConfig;
use wwt_tracker::audit::Outcome;
use wwt_tracker::clock::{Clock, ManualClock};

/// The seed this test runs with unless `WWT_TEST_SEED` replays another.
const SEED: u64 = 0xf100_d2026;
/// Throwaway keys in the flood.
const STRANGERS: usize = 1000;
/// Connections the flood comes over, and requests in flight on each.
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 32;
/// Challenges of the flooded provider the tracker must see answered during the flood.
const CHALLENGES: usize = 5;
/// Audit steps after which the test gives up finding that many.
const MAX_STEPS: usize = 500;

/// What the strangers' requests met: refusals as forbidden, and anything else.
#[derive(Default)]
struct Tally {
    forbidden: AtomicUsize,
    other: Mutex<Vec<String>>,
}

/// One request of `stranger` at `provider`, the `round`-th: a read, a challenge or a store of
/// `piece` (of `segment`), each validly signed, which only the owner, a trusted tracker or a
/// reservation's holder may make.
async fn stranger_request(
    provider: &dyn ProviderApi,
    stranger: &Identity,
    round: usize,
    (segment, piece): (SegmentId, PieceId),
    (node, tracker): (NodeId, NodeId),
) -> Result<(), NetError> {
    match round % 3 {
        0 => {
            let read = ReadPiece { piece, range: None };
            provider.read(stranger.sign(read)?).await.map(drop)
        }
        1 => {
            let challenge = Challenge {
                piece,
                kind: ChallengeKind::Sentinels(vec![0, 1, 2, 3]),
            };
            provider
                .challenge(stranger.sign(challenge)?)
                .await
                .map(drop)
        }
        _ => {
            // A reservation in the tracker's name whose tag the stranger cannot make.
            let reservation = Reservation {
                piece,
                size: 1000,
                segment,
                index: 0,
                provider: node,
                owner: stranger.node_id(),
                expires_ms: now_ms() + 60_000,
                tracker,
                tracker_tag: [0; 32],
                provider_tag: [0; 32],
            };
            let request = stranger.sign(StorePiece { reservation })?;
            let data = PieceStream::whole(Bytes::from(vec![0; 1000]));
            provider.store(request, data).await.map(drop)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_leaves_the_owner_and_the_tracker_served() {
    tokio::time::timeout(Duration::from_secs(300), flood())
        .await
        .expect("test timed out");
}

async fn flood() {
    let seed = wwt_tests::seed(SEED);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let hooks = Hooks {
        audit_clock: Some(clock.clone()),
        audit: Some(AuditConfig {
            mean_interval_ms: 60_000,
            seed: Some(seed),
            ..AuditConfig::default()
        }),
        ..Hooks::default()
    };
    let shape = Shape {
        index_providers: 0,
        heartbeat_ms: 100,
        transport: Transport::Grpc,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start_with(dir.path(), shape, hooks)
        .await
        .unwrap();

    // The owner stores a few segments (RS 4+2 on the six providers) under audit.
    let owner = Identity::from_secret(
        *blake3::hash(&[&seed.to_le_bytes()[..], b"owner"].concat()).as_bytes(),
    );
    let master = MasterKey::from_bytes([7; 32]);
    let mut table = Table::new(&master, "t", CodingParams::default(), 8 << 10)
        .unwrap()
        .with_seed(*blake3::hash(&seed.to_le_bytes()).as_bytes());
    let rows: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("{{\"id\":{i},\"note\":\"{}\"}}", "z".repeat(160)).into_bytes())
        .collect();
    let batch = wwt_tests::write_rows(&mut table, &rows);
    let trackers = net.endpoints.tracker_list().unwrap();
    let storage = wwt_tests::storage(&net, &owner);
    let audit = table.keys().audit.clone();
    for s in &batch.segments {
        storage.put_audited(s, &audit).await.unwrap();
    }

    // The flooded provider: the holder of the first segment's first piece; the owner's pieces
    // there.
    let tracker_api = net.connector().tracker(&trackers[0].1).unwrap();
    let mut held: Vec<(SegmentId, PieceId)> = Vec::new();
    let mut target: Option<(NodeId, String)> = None;
    for s in &batch.segments {
        let segment = SegmentId(s.manifest.segment.0);
        let location = tracker_api
            .locate(owner.sign(Locate { segment }).unwrap())
            .await
            .unwrap();
        for piece in location.pieces {
            let holder = &piece.holders[0];
            let (node, _) = target.get_or_insert_with(|| (holder.node, holder.address.clone()));
            if piece.holders.iter().any(|h| h.node == *node) {
                held.push((segment, piece.piece));
            }
        }
    }
    let (node, address) = target.unwrap();
    let tracker_id = trackers[0].0;
    println!(
        "{} of the owner's pieces on the flooded provider {node}",
        held.len()
    );

    // The flood: each connection keeps IN_FLIGHT requests going, each from the next stranger,
    // until told to stop.
    let strangers: Arc<Vec<Identity>> = Arc::new(
        (0..STRANGERS)
            .map(|i| {
                let secret = [&seed.to_le_bytes()[..], &(i as u64).to_le_bytes()].concat();
                Identity::from_secret(*blake3::hash(&secret).as_bytes())
            })
            .collect(),
    );
    let held = Arc::new(held);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut flood = Vec::new();
    for c in 0..CONNECTIONS {
        let provider = GrpcConnector::new().provider(&address).unwrap();
        for l in 0..IN_FLIGHT {
            let (provider, strangers, held) = (provider.clone(), strangers.clone(), held.clone());
            let (stop, tally) = (stop.clone(), tally.clone());
            flood.push(tokio::spawn(async move {
                let mut round = c * IN_FLIGHT + l;
                while !stop.load(Ordering::SeqCst) {
                    let stranger = &strangers[round % STRANGERS];
                    let piece = held[round % held.len()];
                    let sent = stranger_request(
                        provider.as_ref(),
                        stranger,
                        round,
                        piece,
                        (node, tracker_id),
                    )
                    .await;
                    match sent {
                        Err(NetError::Forbidden(_)) => {
                            tally.forbidden.fetch_add(1, Ordering::SeqCst);
                        }
                        other => tally.other.lock().unwrap().push(format!("{other:?}")),
                    }
                    round += CONNECTIONS * IN_FLIGHT;
                }
            }));
        }
    }
    // Every stranger has been refused once before the owner and the tracker start.
    let mut refused = tally.forbidden.load(Ordering::SeqCst);
    while refused < STRANGERS {
        assert!(
            tally.other.lock().unwrap().is_empty(),
            "a stranger was not refused as forbidden: {:?}",
            tally.other.lock().unwrap()
        );
        tokio::task::yield_now().await;
        refused = tally.forbidden.load(Ordering::SeqCst);
    }

    // In turns, the owner reads one of its pieces there, whole, over a connection of its own,
    // and the tracker takes an audit step, until the owner has read each piece and the tracker
    // has challenged the flooded provider CHALLENGES times.
    let reader = GrpcConnector::new().provider(&address).unwrap();
    let tracker = net.tracker(0).unwrap();
    let mut outcomes: HashMap<NodeId, Vec<Outcome>> = HashMap::new();
    for step in 0..MAX_STEPS {
        if step >= held.len() && outcomes.get(&node).map_or(0, Vec::len) >= CHALLENGES {
            break;
        }
        let read = ReadPiece {
            piece: held[step % held.len()].1,
            range: None,
        };
        let data = reader.read(owner.sign(read).unwrap()).await.unwrap();
        data.verify_whole().unwrap();
        let now = clock.now_ms();
        clock.advance_to(tracker.next_audit_ms().unwrap_or(now + 1000).max(now));
        for c in tracker.audit_step().await.unwrap().challenges {
            outcomes.entry(c.provider).or_default().push(c.outcome);
        }
    }
    let during = tally.forbidden.load(Ordering::SeqCst) - refused;
    stop.store(true, Ordering::SeqCst);
    for task in flood {
        task.await.unwrap();
    }

    let total = tally.forbidden.load(Ordering::SeqCst);
    println!(
        "{total} requests of {STRANGERS} strangers refused as forbidden, {during} of them while \
         the owner read its {} pieces and the tracker sent {} challenges",
        held.len(),
        outcomes.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        tally.other.lock().unwrap().is_empty(),
        "strangers' requests not refused as forbidden: {:?}",
        tally.other.lock().unwrap()
    );
    assert!(
        during > 0,
        "the flood was over before the owner and tracker came"
    );
    let challenged = &outcomes[&node];
    assert!(
        challenged.len() >= CHALLENGES,
        "the flooded provider was challenged {} times in {MAX_STEPS} steps",
        challenged.len()
    );
    for (provider, results) in &outcomes {
        assert!(
            results.iter().all(|o| *o == Outcome::Pass),
            "{provider}: {results:?}"
        );
    }
    net.shutdown().await.unwrap();
}
