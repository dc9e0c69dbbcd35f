//! The client's storage path on a whole network, in memory and over loopback gRPC: the same
//! test bodies, through the real client, providers and trackers. Each test prints its seed
//! (node keys, placement, segment ids and faults derive from it); `WWT_TEST_SEED=0x…`
//! replays one, as the replay test checks.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wwt_client::store::{SEGMENTS_IN_FLIGHT, SegmentCache, Storage, StorageConfig, StoreError};
use wwt_devnet::{LocalNet, Shape, Transport};
use wwt_engine::{CodingParams, EncodedSegment, Locator, MasterKey, SegmentManifest, Table};
use wwt_net::Identity;
use wwt_net::faults::{Fault, Faults, FaultyConnector};
use wwt_net::types::{Locate, SegmentId};

/// The seed these tests run with unless `WWT_TEST_SEED` replays another.
const SEED: u64 = 0x77_2026;

/// Rows of ~200 bytes in 8 KiB segments: about 35 rows a segment.
fn rows(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"id\":{i},\"note\":\"{}\"}}", "x".repeat(160 + i % 40)).into_bytes())
        .collect()
}

struct Written {
    table: Table,
    rows: Vec<Vec<u8>>,
    locators: Vec<Locator>,
    manifests: HashMap<wwt_engine::SegmentId, SegmentManifest>,
    segments: Vec<EncodedSegment>,
}

/// Rows for `segments` segments, written with segment ids and nonces drawn from `seed`.
fn write(segments: usize, seed: u64) -> Written {
    let master = MasterKey::from_bytes([5; 32]);
    let mut table = Table::new(&master, "t", CodingParams::default(), 8 << 10)
        .unwrap()
        .with_seed(*blake3::hash(&seed.to_le_bytes()).as_bytes());
    // Enough rows for the segment count asked for.
    let rows = rows(segments * 37);
    let batch = wwt_tests::write_rows(&mut table, &rows);
    let manifests = batch
        .segments
        .iter()
        .map(|s| (s.manifest.segment, s.manifest.clone()))
        .collect();
    Written {
        table,
        rows,
        locators: batch.locators,
        manifests,
        segments: batch.segments,
    }
}

fn storage(
    net: &LocalNet,
    connector: Arc<dyn wwt_net::Connector>,
    config: StorageConfig,
) -> Storage {
    wwt_tests::storage_with(net, &Identity::from_secret([9; 32]), connector, config)
}

/// Six providers and a tracker over `transport`, their keys and placement drawn from `seed`,
/// in a folder that lives as long as the net.
async fn network(transport: Transport, seed: u64) -> (tempfile::TempDir, LocalNet) {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        transport,
        heartbeat_ms: 100,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    (dir, net)
}

/// Every row of `w`, read through `client` without a cache.
async fn every_row(client: &Storage, w: &mut Written) -> Vec<Vec<u8>> {
    client
        .read_rows(
            &mut w.table,
            &w.manifests,
            &w.locators,
            &mut SegmentCache::new(0),
        )
        .await
        .unwrap()
}

async fn put_all(storage: &Storage, segments: &[EncodedSegment]) {
    for chunk in segments.chunks(16) {
        let puts = chunk.iter().map(|s| storage.put(s));
        for r in futures::future::join_all(puts).await {
            r.unwrap();
        }
    }
}

async fn any_two_lost_then_three(kind: Transport) {
    let seed = wwt_tests::seed(SEED);
    let (_dir, mut net) = network(kind, seed).await;
    let mut w = write(1000, seed);
    assert!(w.segments.len() >= 1000, "{} segments", w.segments.len());
    let client = storage(&net, net.connector(), StorageConfig::default());
    put_all(&client, &w.segments).await;

    // Any two: drawn from the seed, which the output names for a replay.
    let a = (seed % 6) as usize;
    let b = (a + 1 + (seed / 6 % 5) as usize) % 6;
    println!("seed {seed:#x}: killing providers {a} and {b}");
    net.stop_provider(a).await.unwrap();
    net.stop_provider(b).await.unwrap();
    let back = every_row(&client, &mut w).await;
    assert_eq!(back, w.rows, "every row reads with two providers gone");

    let c = (0..6).find(|p| *p != a && *p != b).unwrap();
    net.stop_provider(c).await.unwrap();
    let some = &w.locators[..50];
    let err = client
        .read_rows(&mut w.table, &w.manifests, some, &mut SegmentCache::new(0))
        .await
        .unwrap_err();
    let StoreError::RowsLost { rows, cause } = &err else {
        panic!("expected lost rows, got {err}");
    };
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0], some[0].row.to_string());
    assert!(err.to_string().contains(&rows[0]), "{err}");
    assert!(
        matches!(
            **cause,
            StoreError::Unrecoverable {
                intact: 3,
                needed: 4,
                ..
            }
        ),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_1000_segments_survive_two_lost_providers_and_name_rows_lost_to_three() {
    any_two_lost_then_three(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_1000_segments_survive_two_lost_providers_and_name_rows_lost_to_three() {
    any_two_lost_then_three(Transport::Grpc).await;
}

/// Provider 0 corrupts what it serves; provider 3 stops answering until healed, so only the
/// client's read deadline moves it on (nothing races that deadline).
fn lie_and_stall(faults: &Faults, net: &LocalNet) {
    faults.set(
        &net.endpoints.providers[0].address,
        Fault {
            corrupt_reads: true,
            ..Fault::default()
        },
    );
    faults.set(
        &net.endpoints.providers[3].address,
        Fault {
            stalled: true,
            ..Fault::default()
        },
    );
}

async fn lying_and_slow_providers_are_skipped(kind: Transport) {
    let seed = wwt_tests::seed(SEED);
    let (_dir, net) = network(kind, seed).await;
    let mut w = write(20, seed);
    put_all(
        &storage(&net, net.connector(), StorageConfig::default()),
        &w.segments,
    )
    .await;

    let faults = Faults::new(seed);
    lie_and_stall(&faults, &net);
    let connector = Arc::new(FaultyConnector::new(net.connector(), faults.clone()));
    // The stalled provider never answers: this deadline alone moves the client on. 1 s: far
    // above a healthy read while the other tests load the machine (300 ms was not: healthy
    // reads from disk timed out in CI).
    let config = StorageConfig {
        read_timeout: Duration::from_secs(1),
        // The faults are in this client's own connector, not at the providers: no complaints.
        complain: false,
        ..StorageConfig::default()
    };
    let client = storage(&net, connector, config);
    let back = every_row(&client, &mut w).await;
    assert_eq!(back, w.rows);
    // The liar's and the slow provider's pieces were passed over: where either holds a data
    // piece (tried first), that slot stays empty and a parity piece stands in for it.
    let tracker = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)
        .unwrap();
    let skippers = [(0, "lying"), (3, "slow")];
    let mut skipped = [0; 2];
    for m in w.manifests.values() {
        let locate = Identity::from_secret([9; 32])
            .sign(Locate {
                segment: SegmentId(m.segment.0),
            })
            .unwrap();
        let location = tracker.locate(locate).await.unwrap();
        let pieces = client.fetch(m).await.unwrap();
        for ((p, what), count) in skippers.iter().zip(&mut skipped) {
            let address = &net.endpoints.providers[*p].address;
            let held = location
                .pieces
                .iter()
                .find(|piece| piece.holders.iter().any(|h| &h.address == address))
                .map(|piece| piece.index as usize)
                .unwrap();
            assert!(
                pieces[held].is_none(),
                "the {what} provider's piece {held} was used"
            );
            if held < 4 {
                *count += 1;
                assert!(pieces[4..].iter().any(Option::is_some));
            }
        }
    }
    for ((_, what), count) in skippers.iter().zip(skipped) {
        assert!(
            count > 0,
            "the {what} provider held no data piece: the test checked nothing"
        );
    }
    assert!(
        faults.stalls() > 0,
        "no read waited on the stalled provider"
    );
}

/// Rows read one at a time take a few bytes of one data piece each (checked by proof), not a
/// whole segment: nothing is decoded. A lying, a slow and a dead holder are passed over: those
/// rows come from their whole segment, decoded from other pieces. A segment read by ranges
/// once is read whole (and kept) the second time.
async fn point_reads_take_ranges_and_fall_back_to_whole_segments(kind: Transport) {
    let seed = wwt_tests::seed(SEED);
    let (_dir, mut net) = network(kind, seed).await;
    let mut w = write(12, seed);
    put_all(
        &storage(&net, net.connector(), StorageConfig::default()),
        &w.segments,
    )
    .await;
    let faults = Faults::new(seed);
    let connector = Arc::new(FaultyConnector::new(net.connector(), faults.clone()));
    // The stalled provider never answers: this deadline alone moves the client on.
    let config = StorageConfig {
        read_timeout: Duration::from_secs(1),
        complain: false,
        ..StorageConfig::default()
    };
    let client = storage(&net, connector, config);
    let picks: Vec<usize> = (0..w.locators.len()).step_by(7).collect();
    // Each row with a fresh cache, which then holds the segment if one was decoded.
    let read_each = async |w: &mut Written| {
        let mut decoded = 0;
        for &i in &picks {
            let mut cache = SegmentCache::new(64 << 20);
            let back = client
                .read_rows(
                    &mut w.table,
                    &w.manifests,
                    std::slice::from_ref(&w.locators[i]),
                    &mut cache,
                )
                .await
                .unwrap();
            assert_eq!(back, vec![w.rows[i].clone()], "row {i}");
            decoded += cache.len();
        }
        decoded
    };
    assert_eq!(
        read_each(&mut w).await,
        0,
        "a healthy network serves point reads by ranges, decoding no segment"
    );

    lie_and_stall(&faults, &net);
    let decoded = read_each(&mut w).await;
    assert!(
        decoded > 0,
        "no row's data piece was on the liar or the slow provider: the test checked nothing"
    );
    println!("{decoded} segments decoded whole after ranged reads were refused");
    assert!(
        faults.stalls() > 0,
        "no read waited on the stalled provider"
    );
    faults.heal_all();
    let mut cache = SegmentCache::new(64 << 20);
    for _ in 0..2 {
        client
            .read_rows(
                &mut w.table,
                &w.manifests,
                std::slice::from_ref(&w.locators[1]),
                &mut cache,
            )
            .await
            .unwrap();
    }
    assert_eq!(cache.len(), 1, "the second read of a segment keeps it");
    net.stop_provider(1).await.unwrap();
    net.stop_provider(5).await.unwrap();
    assert!(
        read_each(&mut w).await > 0,
        "no row's data piece was on a stopped provider: the test checked nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_point_reads_take_ranges_and_fall_back_to_whole_segments() {
    point_reads_take_ranges_and_fall_back_to_whole_segments(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_point_reads_take_ranges_and_fall_back_to_whole_segments() {
    point_reads_take_ranges_and_fall_back_to_whole_segments(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lying_and_slow_providers_are_skipped() {
    lying_and_slow_providers_are_skipped(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_lying_and_slow_providers_are_skipped() {
    lying_and_slow_providers_are_skipped(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_resumes_without_resending_stored_pieces() {
    let seed = wwt_tests::seed(SEED);
    let (_dir, net) = network(Transport::Memory, seed).await;
    let w = write(1, seed);
    let segment = &w.segments[0];
    // Two providers cut off from the client: their stores fail, the others succeed.
    let faults = Faults::new(seed);
    for p in [1, 2] {
        faults.set(
            &net.endpoints.providers[p].address,
            Fault {
                partitioned: true,
                ..Fault::default()
            },
        );
    }
    let connector = Arc::new(FaultyConnector::new(net.connector(), faults.clone()));
    let config = StorageConfig {
        upload_rounds: 1,
        ..StorageConfig::default()
    };
    let client = storage(&net, connector, config);
    let err = client.put(segment).await.unwrap_err();
    assert!(matches!(err, StoreError::Upload { failed: 2, .. }), "{err}");
    assert!(err.to_string().contains("retry the upload"), "{err}");

    for p in [1, 2] {
        faults.set(&net.endpoints.providers[p].address, Fault::default());
    }
    let report = client.put(segment).await.unwrap();
    assert_eq!((report.sent, report.skipped), (2, 4), "{report:?}");
    assert_eq!(report.bytes_sent, 2 * segment.manifest.piece_len());
    let again = client.put(segment).await.unwrap();
    assert_eq!((again.sent, again.skipped), (0, 6));
    // The re-reserved pieces went to the two providers that held none: six distinct holders.
    let tracker = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)
        .unwrap();
    let locate = Identity::from_secret([9; 32])
        .sign(Locate {
            segment: SegmentId(segment.manifest.segment.0),
        })
        .unwrap();
    let holders: HashSet<_> = tracker
        .locate(locate)
        .await
        .unwrap()
        .pieces
        .iter()
        .flat_map(|p| p.holders.iter().map(|h| h.node))
        .collect();
    assert_eq!(holders.len(), 6, "pieces of one segment share a provider");
}

/// A tracker that stops answering costs the `Locate`s in flight their timeout; the reads after
/// them go to the DHT without asking it again.
async fn a_silent_tracker_is_asked_once(kind: Transport) {
    let seed = wwt_tests::seed(SEED);
    let (_dir, net) = network(kind, seed).await;
    let mut w = write(12, seed);
    let faults = Faults::new(seed);
    let connector = Arc::new(FaultyConnector::new(net.connector(), faults.clone()));
    let config = StorageConfig {
        read_timeout: Duration::from_secs(1),
        tracker_retry: Duration::from_secs(3600),
        ..StorageConfig::default()
    };
    let client = storage(&net, connector, config).with_discovery(net.discovery());
    put_all(&client, &w.segments).await;
    announced(&net, &w).await;
    let stalled = Fault {
        stalled: true,
        ..Fault::default()
    };
    faults.set(&net.endpoints.trackers[0].address, stalled);
    let mut stalls = Vec::new();
    for _ in 0..2 {
        let back = every_row(&client, &mut w).await;
        assert_eq!(back, w.rows);
        stalls.push(faults.stalls());
    }
    // The segments read at once each waited on it once; the next read did not ask it at all.
    assert!(
        (1..=SEGMENTS_IN_FLIGHT as u64).contains(&stalls[0]),
        "{stalls:?}"
    );
    assert_eq!(stalls[1], stalls[0], "the silent tracker was asked again");
    faults.heal_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_silent_tracker_is_asked_once() {
    a_silent_tracker_is_asked_once(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_silent_tracker_is_asked_once() {
    a_silent_tracker_is_asked_once(Transport::Grpc).await;
}

/// Waits until the DHT lists the six holders of every segment of `w` (providers announce in
/// the background).
async fn announced(net: &LocalNet, w: &Written) {
    let discovery = net.discovery();
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in w.manifests.values() {
        loop {
            let found = discovery.holders(SegmentId(m.segment.0)).await.unwrap();
            if found.len() == 6 && found.iter().all(|h| h.address.is_some()) {
                break;
            }
            assert!(Instant::now() < deadline, "the DHT lists {found:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn segments_read_through_the_dht_with_the_tracker_down(kind: Transport) {
    let seed = wwt_tests::seed(SEED);
    let (_dir, mut net) = network(kind, seed).await;
    let mut w = write(1000, seed);
    assert!(w.segments.len() >= 1000, "{} segments", w.segments.len());
    let config = StorageConfig {
        read_timeout: Duration::from_secs(2),
        ..StorageConfig::default()
    };
    let client = storage(&net, net.connector(), config.clone()).with_discovery(net.discovery());
    put_all(&client, &w.segments).await;
    announced(&net, &w).await;

    net.stop_tracker(0).await.unwrap();
    net.stop_provider(2).await.unwrap();
    let back = every_row(&client, &mut w).await;
    assert_eq!(
        back, w.rows,
        "every row reads with the tracker and a provider down"
    );

    // The same read without the DHT fails, naming the tracker: the DHT found the holders.
    let blind = storage(&net, net.connector(), config);
    let err = blind
        .read_rows(
            &mut w.table,
            &w.manifests,
            &w.locators[..3],
            &mut SegmentCache::new(0),
        )
        .await
        .unwrap_err();
    let StoreError::RowsLost { rows, cause } = &err else {
        panic!("expected lost rows, got {err}");
    };
    assert_eq!(rows.len(), 3);
    assert!(matches!(**cause, StoreError::Tracker { .. }), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_1000_segments_read_through_the_dht_with_the_tracker_down() {
    segments_read_through_the_dht_with_the_tracker_down(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_1000_segments_read_through_the_dht_with_the_tracker_down() {
    segments_read_through_the_dht_with_the_tracker_down(Transport::Grpc).await;
}

/// Which provider (by number) holds each piece of each of `segments`, in order, as the
/// tracker says.
async fn placement(net: &LocalNet, segments: &[EncodedSegment]) -> Vec<Vec<Vec<usize>>> {
    let tracker = net
        .connector()
        .tracker(&net.endpoints.trackers[0].address)
        .unwrap();
    let number = |node| {
        net.endpoints
            .providers
            .iter()
            .position(|p| p.node_id().unwrap() == node)
            .unwrap()
    };
    let mut out = Vec::new();
    for s in segments {
        let locate = Identity::from_secret([9; 32])
            .sign(Locate {
                segment: SegmentId(s.manifest.segment.0),
            })
            .unwrap();
        let mut pieces = tracker.locate(locate).await.unwrap().pieces;
        pieces.sort_by_key(|p| p.index);
        out.push(
            pieces
                .iter()
                .map(|p| p.holders.iter().map(|h| number(h.node)).collect())
                .collect(),
        );
    }
    out
}

/// The seed a test prints replays it: the same node keys, the same segments, and each piece
/// on the same provider. (A terabyte a provider, so the few kilobytes that heartbeats and
/// reservations move between draws cannot tip one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_seed_replays_node_keys_segments_and_placement() {
    let seed = wwt_tests::seed(SEED);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let shape = Shape {
            transport: Transport::Memory,
            heartbeat_ms: 100,
            capacity: 1 << 40,
            seed: Some(seed),
            ..Shape::default()
        };
        let net = LocalNet::start(dir.path(), shape).await.unwrap();
        let w = write(12, seed);
        let client = storage(&net, net.connector(), StorageConfig::default());
        for s in &w.segments {
            client.put(s).await.unwrap();
        }
        let nodes: Vec<String> = net
            .endpoints
            .providers
            .iter()
            .map(|p| p.node.clone())
            .collect();
        let segments: Vec<_> = w.segments.iter().map(|s| s.manifest.segment).collect();
        let placed = placement(&net, &w.segments).await;
        assert!(placed.iter().flatten().all(|h| h.len() == 1));
        net.shutdown().await.unwrap();
        runs.push((nodes, segments, placed));
    }
    assert_eq!(runs[0].0, runs[1].0, "node keys");
    assert_eq!(runs[0].1, runs[1].1, "segment ids");
    assert_eq!(runs[0].2, runs[1].2, "placement");
    let used: HashSet<usize> = runs[0].2.iter().flatten().flatten().copied().collect();
    assert_eq!(used.len(), 6, "placement drew from every provider");
}

/// A tracker sizes its audits by the manifest an owner entrusts: one that names more
/// sentinels or longer pieces than were stored is refused (a huge sentinel count used to make
/// the next challenge allocate gigabytes, at every restart), and the real one is taken.
async fn entrusted_manifests_must_say_what_was_stored(kind: Transport) {
    let seed = wwt_tests::seed(SEED);
    let (_dir, net) = network(kind, seed).await;
    let w = write(1, seed);
    let client = storage(&net, net.connector(), StorageConfig::default());
    let segment = &w.segments[0];
    client.put(segment).await.unwrap();
    let audit = &w.table.keys().audit;
    let real = &segment.manifest;
    let inflated = |shard_len: u64, sentinels: u32| SegmentManifest {
        shard_len,
        sentinels,
        ..real.clone()
    };
    let refusals = [
        (inflated(real.shard_len, u32::MAX), "sentinel count"),
        (
            inflated(
                real.shard_len * 2,
                wwt_engine::piece::sentinel_count(real.shard_len * 2),
            ),
            "stored with",
        ),
        (inflated(u64::MAX / 8, u32::MAX), "shards longer"),
    ];
    for (manifest, says) in refusals {
        let err = client.entrust(&manifest, audit).await.unwrap_err();
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    // The tracker still serves, and takes the manifest that says what was stored.
    client.entrust(real, audit).await.unwrap();
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_entrusted_manifests_must_say_what_was_stored() {
    entrusted_manifests_must_say_what_was_stored(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_entrusted_manifests_must_say_what_was_stored() {
    entrusted_manifests_must_say_what_was_stored(Transport::Grpc).await;
}
