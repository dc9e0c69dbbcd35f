//! A small network of trackers and providers, in memory or over loopback gRPC, and the client
//! steps the tests drive it with.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wwt_net::grpc::GrpcConnector;
use wwt_net::memory::{MemoryDht, MemoryNetwork};
use wwt_net::node::{Node, NodeConfig};
use wwt_net::types::{
    ConfirmStored, Locate, NodeId, PieceId, PieceSpec, Placement, ReadPiece, ReserveSegment,
    SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{Connector, Discovery, Identity, NetError, TrackerApi, rendezvous};
use wwt_provider::{Provider, ProviderConfig, TrackerEndpoint};
use wwt_tracker::{PeerTracker, Tracker, TrackerConfig};

/// Which transport a test network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Grpc,
}

/// How a node is stopped.
enum Stop {
    Memory {
        heartbeats: Option<JoinHandle<()>>,
    },
    Grpc {
        shutdown: oneshot::Sender<()>,
        task: JoinHandle<()>,
    },
}

pub struct NodeHandle {
    pub node: NodeId,
    pub address: String,
    pub dir: PathBuf,
    stop: Option<Stop>,
    /// A provider's configuration, to restart it.
    config: Option<ProviderConfig>,
}

pub struct Settings {
    pub trackers: usize,
    pub providers: usize,
    pub capacity: u64,
    pub max_piece: u64,
    pub liveness_timeout_ms: u64,
    /// Whether providers announce their segments (real libp2p nodes over gRPC, the memory DHT
    /// in memory); the test's discovery handle then sees them.
    pub dht: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trackers: 1,
            providers: 6,
            capacity: 64 << 20,
            max_piece: 1 << 20,
            liveness_timeout_ms: 60_000,
            dht: false,
        }
    }
}

pub struct TestNet {
    pub connector: Arc<dyn Connector>,
    pub memory: Option<MemoryNetwork>,
    pub trackers: Vec<NodeHandle>,
    pub providers: Vec<NodeHandle>,
    /// The client's view of the DHT (when `Settings::dht`).
    pub discovery: Option<Arc<dyn Discovery>>,
    _dir: tempfile::TempDir,
}

const HEARTBEAT_MS: u64 = 100;

/// Runs a test body, failing it (instead of hanging the run) after two minutes.
pub async fn within_deadline(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test timed out");
}

/// Polls `check` until it returns true or 20 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestNet {
    pub async fn start(kind: Kind, settings: Settings) -> TestNet {
        let dir = tempfile::tempdir().unwrap();
        let memory = (kind == Kind::Memory).then(MemoryNetwork::new);
        let connector: Arc<dyn Connector> = match &memory {
            Some(m) => Arc::new(m.clone()),
            None => Arc::new(GrpcConnector::with_timeout(Duration::from_secs(20))),
        };

        // Trackers: identities and addresses first, as each lists the others.
        let mut listeners = Vec::new();
        let mut trackers = Vec::new();
        for t in 0..settings.trackers {
            let tdir = dir.path().join(format!("tracker-{t}"));
            let node = Identity::load_or_create(&tdir.join("node.key"))
                .unwrap()
                .node_id();
            let (address, listener) = address_for(kind, &format!("tracker-{t}")).await;
            listeners.push(listener);
            trackers.push(NodeHandle {
                node,
                address,
                dir: tdir,
                stop: None,
                config: None,
            });
        }
        for (t, listener) in listeners.into_iter().enumerate() {
            let config = TrackerConfig {
                data_dir: trackers[t].dir.clone(),
                peers: trackers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != t)
                    .map(|(_, p)| PeerTracker {
                        id: p.node,
                        address: p.address.clone(),
                    })
                    .collect(),
                heartbeat_interval_ms: HEARTBEAT_MS,
                liveness_timeout_ms: settings.liveness_timeout_ms,
                ..TrackerConfig::default()
            };
            trackers[t].stop = Some(match (&memory, listener) {
                (Some(m), _) => {
                    m.add_tracker(
                        &trackers[t].address,
                        Arc::new(Tracker::open(&config).unwrap()),
                    );
                    Stop::Memory { heartbeats: None }
                }
                (None, Some(listener)) => {
                    let (tx, rx) = oneshot::channel();
                    let task = tokio::spawn(async move {
                        wwt_tracker::run(config, listener, async move {
                            rx.await.ok();
                        })
                        .await
                        .unwrap();
                    });
                    Stop::Grpc { shutdown: tx, task }
                }
                (None, None) => unreachable!(),
            });
        }

        let endpoints: Vec<TrackerEndpoint> = trackers
            .iter()
            .map(|t| TrackerEndpoint {
                id: t.node,
                address: t.address.clone(),
            })
            .collect();
        // The client's DHT node doubles as the providers' bootstrap peer.
        let memory_dht = MemoryDht::new();
        let mut bootstrap = Vec::new();
        let discovery: Option<Arc<dyn Discovery>> = match (settings.dht, kind) {
            (false, _) => None,
            (true, Kind::Memory) => Some(Arc::new(memory_dht.node(NodeId([0; 32]), None))),
            (true, Kind::Grpc) => {
                let client = Identity::generate().unwrap();
                let (node, _task) = Node::start(&client, NodeConfig::loopback(Vec::new()))
                    .await
                    .unwrap();
                bootstrap = node
                    .listen_addrs()
                    .await
                    .unwrap()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                Some(Arc::new(node))
            }
        };
        let mut providers = Vec::new();
        for p in 0..settings.providers {
            let (address, listener) = address_for(kind, &format!("provider-{p}")).await;
            let config = ProviderConfig {
                data_dir: dir.path().join(format!("provider-{p}")),
                zone: String::new(),
                capacity_bytes: settings.capacity,
                max_piece_bytes: settings.max_piece,
                trackers: endpoints.clone(),
                heartbeat_interval_ms: HEARTBEAT_MS,
                dht: (settings.dht && kind == Kind::Grpc)
                    .then(|| NodeConfig::loopback(bootstrap.clone())),
                ..ProviderConfig::default()
            };
            let mut handle = NodeHandle {
                node: NodeId([0; 32]),
                address,
                dir: config.data_dir.clone(),
                stop: None,
                config: Some(config),
            };
            start_provider(
                &mut handle,
                listener,
                &memory,
                &connector,
                &memory_dht,
                settings.dht,
            )
            .await;
            providers.push(handle);
        }
        let net = TestNet {
            connector,
            memory,
            trackers,
            providers,
            discovery,
            _dir: dir,
        };
        net.wait_for_live(settings.providers).await;
        net
    }

    /// Waits until every tracker sees `n` live providers.
    pub async fn wait_for_live(&self, n: usize) {
        for t in 0..self.trackers.len() {
            let tracker = self.tracker(t);
            eventually("providers to register", || {
                let tracker = tracker.clone();
                async move {
                    tracker
                        .providers()
                        .await
                        .is_ok_and(|ps| ps.iter().filter(|p| p.alive).count() == n)
                }
            })
            .await;
        }
    }

    pub fn tracker(&self, t: usize) -> Arc<dyn TrackerApi> {
        self.connector.tracker(&self.trackers[t].address).unwrap()
    }

    /// The tracker responsible for `segment`.
    pub fn tracker_for(&self, segment: &SegmentId) -> Arc<dyn TrackerApi> {
        let ids: Vec<NodeId> = self.trackers.iter().map(|t| t.node).collect();
        let owner = rendezvous::responsible(&segment.0, &ids).unwrap();
        let t = ids.iter().position(|id| *id == owner).unwrap();
        self.tracker(t)
    }

    /// Stops provider `p` (its service goes away and it stops heartbeating).
    pub async fn kill_provider(&mut self, p: usize) {
        let handle = &mut self.providers[p];
        match handle.stop.take() {
            Some(Stop::Memory { heartbeats }) => {
                if let Some(memory) = &self.memory {
                    memory.remove(&handle.address);
                }
                if let Some(h) = heartbeats {
                    h.abort();
                }
            }
            Some(Stop::Grpc { shutdown, task }) => {
                shutdown.send(()).ok();
                tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .unwrap()
                    .unwrap();
            }
            None => {}
        }
    }
}

/// Starts the provider of `handle` from its configuration.
async fn start_provider(
    handle: &mut NodeHandle,
    listener: Option<TcpListener>,
    memory: &Option<MemoryNetwork>,
    connector: &Arc<dyn Connector>,
    memory_dht: &MemoryDht,
    dht: bool,
) {
    let config = handle.config.clone().unwrap();
    let address = handle.address.clone();
    handle.stop = Some(match (memory, listener) {
        (Some(m), _) => {
            let mut provider = Provider::open(&config).unwrap();
            if dht {
                let me = memory_dht.node(provider.node_id(), Some(address.clone()));
                provider = provider.with_discovery(Arc::new(me)).unwrap();
            }
            let provider = Arc::new(provider);
            handle.node = provider.node_id();
            m.add_provider(&address, provider.clone());
            let beats = wwt_provider::spawn_heartbeats(
                provider,
                connector.clone(),
                address,
                config.heartbeat_interval(),
            );
            Stop::Memory {
                heartbeats: Some(beats),
            }
        }
        (None, Some(listener)) => {
            handle.node = Identity::load_or_create(&config.identity_path())
                .unwrap()
                .node_id();
            let (tx, rx) = oneshot::channel();
            let task = tokio::spawn(async move {
                wwt_provider::run(config, listener, async move {
                    rx.await.ok();
                })
                .await
                .unwrap();
            });
            Stop::Grpc { shutdown: tx, task }
        }
        (None, None) => unreachable!(),
    });
}

async fn address_for(kind: Kind, name: &str) -> (String, Option<TcpListener>) {
    match kind {
        Kind::Memory => (format!("mem://{name}"), None),
        Kind::Grpc => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = format!("http://{}", listener.local_addr().unwrap());
            (address, Some(listener))
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes_from(seed: &[u8], len: usize) -> Bytes {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    Bytes::from(out)
}

/// A segment id and its `n` pieces of `len` bytes, derived from `seed`.
pub fn segment(seed: u64, n: usize, len: usize) -> (SegmentId, Vec<Bytes>) {
    let id = SegmentId(*blake3::hash(&seed.to_le_bytes()).as_bytes());
    let pieces = (0..n)
        .map(|i| bytes_from(&[&seed.to_le_bytes()[..], &[i as u8]].concat(), len))
        .collect();
    (id, pieces)
}

pub fn specs(pieces: &[Bytes]) -> Vec<PieceSpec> {
    pieces
        .iter()
        .enumerate()
        .map(|(i, data)| PieceSpec {
            index: i as u32,
            piece: PieceId::of(data),
            size: data.len() as u64,
        })
        .collect()
}

/// Reserves at the responsible tracker.
pub async fn reserve(
    net: &TestNet,
    client: &Identity,
    segment: SegmentId,
    pieces: &[Bytes],
) -> Result<Placement, NetError> {
    let req = ReserveSegment {
        segment,
        pieces: specs(pieces),
    };
    net.tracker_for(&segment).reserve(client.sign(req)?).await
}

/// What a client does to put a segment: reserve, store all pieces in parallel, confirm.
pub async fn put_segment(
    net: &TestNet,
    client: &Identity,
    segment: SegmentId,
    pieces: &[Bytes],
) -> Result<Vec<StoreReceipt>, NetError> {
    let placement = reserve(net, client, segment, pieces).await?;
    let stores = placement.pieces.iter().zip(pieces).map(|(placed, data)| {
        let provider = net.connector.provider(&placed.address);
        let req = client.sign(StorePiece {
            reservation: placed.reservation.clone(),
            data: data.clone(),
        });
        async move { provider?.store(req?).await }
    });
    let receipts = try_join_all(stores).await?;
    net.tracker_for(&segment)
        .confirm(client.sign(ConfirmStored {
            receipts: receipts.clone(),
        })?)
        .await?;
    Ok(receipts)
}

/// How many of a segment's pieces can be read back intact from some holder.
pub async fn readable_pieces(
    net: &TestNet,
    connector: &dyn Connector,
    client: &Identity,
    segment: SegmentId,
) -> usize {
    let location = net
        .tracker_for(&segment)
        .locate(client.sign(Locate { segment }).unwrap())
        .await
        .unwrap();
    let mut good = 0;
    for piece in &location.pieces {
        for holder in &piece.holders {
            let Ok(provider) = connector.provider(&holder.address) else {
                continue;
            };
            let req = client
                .sign(ReadPiece {
                    piece: piece.piece,
                    range: None,
                })
                .unwrap();
            if let Ok(data) = provider.read(req).await
                && data.verify_whole().is_ok()
            {
                good += 1;
                break;
            }
        }
    }
    good
}
