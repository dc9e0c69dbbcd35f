//! Reads without trackers, in memory and over loopback gRPC with real libp2p (same bodies):
//! with the DHT, a client on a new device finds the owner's replicas (the owner's head record
//! names them, address records say where they listen) and each segment's holders (provider
//! records), so with every tracker stopped every row still reads (writes wait for a tracker).
//! The head in the DHT is also a floor: replicas behind it are refused, never shown as the
//! database, and the start of the log in pieces: with it, recovery needs no tracker either. A DHT that names strangers as holders costs calls, never a row; one that names
//! nobody fails the read, naming the rows.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wwt_client::db::{Client, ClientConfig};
use wwt_devnet::{LocalNet, Shape, Transport};
use wwt_engine::Keystore;
use wwt_net::index::HeadRecord;
use wwt_net::types::{NodeId, SegmentId};
use wwt_net::{Discovery, FoundHolder, Identity, NetError, Signed};
use wwt_query::{Outcome, Value};

/// Rows per INSERT statement; each statement stores its own segment.
const ROWS_PER_STATEMENT: i64 = 25;
/// INSERT statements: segments of the table.
const STATEMENTS: i64 = 20;

async fn network(transport: Transport, seed: u64) -> (tempfile::TempDir, LocalNet) {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        trackers: 2,
        heartbeat_ms: 200,
        transport,
        seed: Some(seed),
        ..Shape::default()
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    (dir, net)
}

/// A client of `keys` that joins the devnet's DHT.
fn with_dht(net: &LocalNet) -> ClientConfig {
    let mut config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    config.discovery = Some(net.discovery());
    config
}

/// A network, one owner's keys, and a client of the owner that joined the DHT and created
/// `notes`.
async fn writer(
    transport: Transport,
    seed: u64,
) -> (tempfile::TempDir, LocalNet, Keystore, Client) {
    let (dir, net) = network(transport, seed).await;
    let keys = Keystore::generate();
    let writer = Client::connect(&keys, net.connector(), with_dht(&net))
        .await
        .unwrap();
    writer
        .execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    (dir, net, keys, writer)
}

/// The rows of `notes`, in id order, or the error.
async fn notes(client: &Client) -> Result<Vec<(i64, String)>, String> {
    let outcome = client
        .execute("SELECT id, body FROM notes ORDER BY id")
        .await
        .map_err(|e| e.to_string())?;
    let Some(Outcome::Rows(rows)) = outcome.into_iter().next() else {
        return Err("not rows".into());
    };
    Ok(rows
        .rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [Value::Int(id), Value::Text(body)] => (*id, body.clone()),
            other => panic!("unexpected row {other:?}"),
        })
        .collect())
}

/// Reads `notes` until it answers (providers announce their segments in the background, so
/// a read may find too few holders at first); the answer must be `expected`, at once.
async fn reads_every_row(reader: &Client, expected: &[(i64, String)], seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match notes(reader).await {
            Ok(rows) => {
                assert_eq!(rows, expected, "seed {seed:#x}");
                return;
            }
            Err(e) => assert!(Instant::now() < deadline, "seed {seed:#x}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn every_row_reads_with_every_tracker_stopped(transport: Transport) {
    let seed = wwt_tests::seed(0x4e9_2026);
    let (_dir, mut net, keys, writer) = writer(transport, seed).await;
    let mut expected = Vec::new();
    for s in 0..STATEMENTS {
        let rows: Vec<String> = (0..ROWS_PER_STATEMENT)
            .map(|r| {
                let id = s * ROWS_PER_STATEMENT + r;
                expected.push((id, format!("note {id}")));
                format!("({id}, 'note {id}')")
            })
            .collect();
        writer
            .execute(&format!("INSERT INTO notes VALUES {}", rows.join(", ")))
            .await
            .unwrap();
    }
    writer.flush().await;
    drop(writer);
    net.stop_trackers().await.unwrap();
    // Without the DHT a new device finds nothing.
    let config = ClientConfig::new(net.endpoints.tracker_list().unwrap());
    let err = Client::connect(&keys, net.connector(), config)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tracker"), "{err}");
    // With it, every row; writes wait for the trackers.
    let reader = Client::connect(&keys, net.connector(), with_dht(&net))
        .await
        .unwrap();
    reads_every_row(&reader, &expected, seed).await;
    let err = reader
        .execute("CREATE TABLE later (id BIGINT PRIMARY KEY)")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("writes need the trackers"),
        "{err}"
    );
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_reads_with_every_tracker_stopped_in_memory() {
    every_row_reads_with_every_tracker_stopped(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_reads_with_every_tracker_stopped_over_grpc() {
    every_row_reads_with_every_tracker_stopped(Transport::Grpc).await;
}

async fn wiped_replicas_are_refused_then_recovered_without_trackers(transport: Transport) {
    let seed = wwt_tests::seed(0x5e9_2026);
    let (_dir, mut net, keys, writer) = writer(transport, seed).await;
    let mut expected = Vec::new();
    for id in 0..5 {
        writer
            .execute(&format!("INSERT INTO notes VALUES ({id}, 'kept {id}')"))
            .await
            .unwrap();
        expected.push((id, format!("kept {id}")));
    }
    writer
        .execute("CREATE TABLE later (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    writer.flush().await;
    drop(writer);
    // Every replica loses the log, and no tracker is there to lead to the log in pieces.
    let index: Vec<usize> = net.endpoints.index_providers().collect();
    for p in index {
        net.restart_provider(p, true).await.unwrap();
    }
    net.stop_trackers().await.unwrap();
    let err = Client::connect(&keys, net.connector(), with_dht(&net))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("behind seq") && err.contains("head record in the DHT"),
        "seed {seed:#x}: {err}"
    );
    // The head record leads to the newest entry's segment, each segment to the one before:
    // the keys and the DHT alone rebuild the replicas.
    let (reader, recovered) = Client::recover(&keys, net.connector(), with_dht(&net))
        .await
        .unwrap();
    let tables: Vec<(String, i64)> = recovered
        .tables
        .iter()
        .map(|(name, rows)| (name.to_lowercase(), *rows))
        .collect();
    assert_eq!(
        tables,
        [("later".to_string(), 0), ("notes".to_string(), 5)],
        "seed {seed:#x}"
    );
    reads_every_row(&reader, &expected, seed).await;
    println!("seed {seed:#x}: recovered {} entries", recovered.entries);
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_replicas_are_refused_then_recovered_without_trackers_in_memory() {
    wiped_replicas_are_refused_then_recovered_without_trackers(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_replicas_are_refused_then_recovered_without_trackers_over_grpc() {
    wiped_replicas_are_refused_then_recovered_without_trackers(Transport::Grpc).await;
}

/// What a lying DHT answers for a segment's holders.
#[derive(Clone, Copy, Debug)]
enum Holders {
    /// Strangers first (nodes that hold nothing, at a dead address or at providers that do not
    /// hold the piece), then the true holders.
    Wrong,
    /// Nobody.
    None,
}

/// The DHT as a lying peer makes it look: heads and addresses as they are, holders as `lie`.
#[derive(Debug)]
struct LyingDht {
    inner: Arc<dyn Discovery>,
    lie: Holders,
    /// Addresses that hold nothing of the segment asked for, or nothing at all.
    decoys: Vec<String>,
}

#[async_trait]
impl Discovery for LyingDht {
    async fn announce(&self, segment: SegmentId) -> Result<(), NetError> {
        self.inner.announce(segment).await
    }

    async fn holders(&self, segment: SegmentId) -> Result<Vec<FoundHolder>, NetError> {
        match self.lie {
            Holders::None => Ok(Vec::new()),
            Holders::Wrong => {
                let mut found: Vec<FoundHolder> = self
                    .decoys
                    .iter()
                    .map(|address| FoundHolder {
                        node: Identity::generate().unwrap().node_id(),
                        address: Some(address.clone()),
                    })
                    .collect();
                found.extend(self.inner.holders(segment).await?);
                Ok(found)
            }
        }
    }

    async fn address(&self, node: NodeId) -> Result<Option<String>, NetError> {
        self.inner.address(node).await
    }

    async fn publish_head(&self, record: &Signed<HeadRecord>) -> Result<(), NetError> {
        self.inner.publish_head(record).await
    }

    async fn head(&self, owner: NodeId) -> Result<Option<HeadRecord>, NetError> {
        self.inner.head(owner).await
    }
}

async fn a_lying_dht_costs_calls_never_rows(transport: Transport) {
    let seed = wwt_tests::seed(0x6e9_2026);
    let (_dir, mut net, keys, writer) = writer(transport, seed).await;
    let values: Vec<String> = (0..100).map(|i| format!("({i}, 'note {i}')")).collect();
    writer
        .execute(&format!("INSERT INTO notes VALUES {}", values.join(", ")))
        .await
        .unwrap();
    writer.flush().await;
    drop(writer);
    net.stop_trackers().await.unwrap();
    let lying = |lie| {
        let mut decoys: Vec<String> = net
            .endpoints
            .providers
            .iter()
            .map(|p| p.address.clone())
            .collect();
        decoys.push(match transport {
            Transport::Memory => "mem://nobody".into(),
            Transport::Grpc => "http://127.0.0.1:1".into(),
        });
        let mut config = with_dht(&net);
        config.discovery = Some(Arc::new(LyingDht {
            inner: net.discovery(),
            lie,
            decoys,
        }));
        config
    };
    // Strangers named before the holders cost calls; every row still reads, and right.
    let reader = Client::connect(&keys, net.connector(), lying(Holders::Wrong))
        .await
        .unwrap();
    let expected: Vec<(i64, String)> = (0..100).map(|i| (i, format!("note {i}"))).collect();
    reads_every_row(&reader, &expected, seed).await;
    // No holders at all: the read fails, naming the rows it cannot read.
    let reader = Client::connect(&keys, net.connector(), lying(Holders::None))
        .await
        .unwrap();
    let err = notes(&reader).await.unwrap_err();
    assert!(
        err.contains("100 rows cannot be read"),
        "seed {seed:#x}: {err}"
    );
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_dht_costs_calls_never_rows_in_memory() {
    a_lying_dht_costs_calls_never_rows(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_dht_costs_calls_never_rows_over_grpc() {
    a_lying_dht_costs_calls_never_rows(Transport::Grpc).await;
}
