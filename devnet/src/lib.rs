//! A whole local wwt network, for `wwt devnet`, `wwt demo`, the benchmarks and the
//! whole-system tests: tracker and provider daemons (the same `run` functions a deployment
//! uses) serving gRPC on 127.0.0.1, each with its own folder, and the endpoints file that the
//! other `wwt` commands read by default.
//!
//! Providers announce the segments they hold in a DHT: over gRPC, every tracker and provider
//! runs a real libp2p node joined through the devnet's own seed node (its addresses are in the
//! endpoints file); in memory, [`MemoryDht`]. [`LocalNet::discovery`] is a client's view of it.
//!
//! The same [`LocalNet`] also runs in memory ([`Transport::Memory`]): the same provider and
//! tracker services, called through the in-memory network, for fast whole-network tests.
//!
//! A crate of its own because the CLI, the benchmarks and the whole-system tests all start
//! networks, and no library may depend on the binary crate. Its errors are `anyhow`: they only
//! ever reach a person or a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wwt_net::grpc::GrpcConnector;
use wwt_net::memory::{MemoryDht, MemoryNetwork};
use wwt_net::node::{Node, NodeConfig};
use wwt_net::ops::Listeners;
use wwt_net::types::NodeId;
use wwt_net::{Connector, Discovery, Identity, IndexApi, ProviderApi};
use wwt_provider::{IndexService, Provider, ProviderConfig, TrackerEndpoint};
use wwt_tracker::clock::{Clock, SystemClock};
use wwt_tracker::{AdmissionConfig, AuditConfig, PeerTracker, Tracker, TrackerConfig};

/// The endpoints file inside a devnet folder.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// The default devnet folder of a wwt home.
pub fn default_dir(home: &Path) -> PathBuf {
    home.join("devnet")
}

/// One node of a devnet as the endpoints file records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// `tracker-0`, `provider-3`, …
    pub name: String,
    /// Its node id (ed25519 public key), hex.
    pub node: String,
    /// Its gRPC address.
    pub address: String,
    /// Its data folder.
    pub dir: PathBuf,
    /// Whether it serves the index service (an index provider).
    #[serde(default)]
    pub index: bool,
    /// Its operator's HTTP endpoint (`/metrics`, `/health`, its page), if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

impl NodeInfo {
    /// Its node id.
    pub fn node_id(&self) -> Result<NodeId> {
        let bytes = hex::decode(&self.node).with_context(|| format!("node id of {}", self.name))?;
        Ok(NodeId::from_slice(&bytes)?)
    }
}

/// Where every node of a devnet listens.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    /// The trackers.
    pub trackers: Vec<NodeInfo>,
    /// The providers.
    pub providers: Vec<NodeInfo>,
    /// Multiaddresses of the DHT seed node, to join the devnet's DHT through (gRPC only).
    #[serde(default)]
    pub dht: Vec<String>,
}

impl Endpoints {
    /// Reads the endpoints file of the devnet folder `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(ENDPOINTS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no devnet endpoints at {}: start one with `wwt devnet up`",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ENDPOINTS_FILE);
        let tmp = dir.join(format!("{ENDPOINTS_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The index provider clients of this devnet use: the first provider serving the index
    /// service (the first [`Shape::index_providers`] do; one holds an owner's indexes).
    pub fn index_address(&self) -> Result<String> {
        self.providers
            .iter()
            .find(|p| p.index)
            .map(|p| p.address.clone())
            .context("the devnet has no index provider")
    }

    /// The numbers of the providers that are also index providers.
    pub fn index_providers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.providers.len()).filter(|p| self.providers[*p].index)
    }

    /// The trackers as `(node id, address)` pairs, for [`crate::store::Storage::new`].
    pub fn tracker_list(&self) -> Result<Vec<(NodeId, String)>> {
        self.trackers
            .iter()
            .map(|t| Ok((t.node_id()?, t.address.clone())))
            .collect()
    }
}

enum Running {
    /// A daemon serving gRPC on its own task.
    Served {
        stop: oneshot::Sender<()>,
        task: JoinHandle<Result<()>>,
    },
    /// A service on the in-memory network, with its background task (a provider's heartbeats,
    /// a tracker's audit loop), if any.
    InMemory {
        address: String,
        task: Option<JoinHandle<()>>,
    },
}

impl Running {
    /// Spawns a daemon: `run` gets the future that resolves when the daemon is to stop.
    fn serve<F, Fut>(run: F) -> Running
    where
        F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            rx.await.ok();
        })));
        Running::Served { stop, task }
    }

    /// Stops the node in `slots[i]`, if it runs.
    async fn stop_slot(
        slots: &mut [Option<Running>],
        i: usize,
        memory: Option<&MemoryNetwork>,
    ) -> Result<()> {
        match slots.get_mut(i).and_then(Option::take) {
            Some(running) => running.stop(memory).await,
            None => Ok(()),
        }
    }

    async fn stop(self, memory: Option<&MemoryNetwork>) -> Result<()> {
        match self {
            Running::Served { stop, task } => {
                stop.send(()).ok();
                tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .context("a node did not stop within 20 s")??
            }
            Running::InMemory { address, task } => {
                if let Some(memory) = memory {
                    memory.remove(&address);
                }
                if let Some(t) = task {
                    t.abort();
                    let _ = t.await;
                }
                Ok(())
            }
        }
    }
}

/// How the nodes of a [`LocalNet`] are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gRPC on 127.0.0.1, each daemon on its own port.
    Grpc,
    /// The in-memory network: the same services, called in-process through their wire encoding.
    Memory,
}

/// Sizes of a devnet, and the seed it replays from.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Trackers.
    pub trackers: usize,
    /// Providers.
    pub providers: usize,
    /// How many of the providers (the first ones) are also index providers.
    pub index_providers: usize,
    /// Bytes each provider offers.
    pub capacity: u64,
    /// The largest piece each provider takes.
    pub max_piece_bytes: u64,
    /// Milliseconds between provider heartbeats.
    pub heartbeat_ms: u64,
    /// How the nodes are reached.
    pub transport: Transport,
    /// Whether each node also serves its operator's HTTP endpoint (gRPC only).
    pub http: bool,
    /// Seed of every node's key ([`node_identity`]) and of the trackers' placement and audit
    /// draws (unless [`Hooks::audit`] sets its own), so a network started again with the same
    /// seed places the same segments on the same nodes: tests print it for a replay. Unset,
    /// keys are random. Nodes whose folder already holds a key keep it.
    pub seed: Option<u64>,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            trackers: 1,
            providers: 6,
            index_providers: 3,
            capacity: 1 << 30,
            max_piece_bytes: ProviderConfig::default().max_piece_bytes,
            heartbeat_ms: 1_000,
            transport: Transport::Grpc,
            http: false,
            seed: None,
        }
    }
}

/// A value derived from a devnet's seed for `purpose` (a node's name, `placement`, …).
fn derive(seed: u64, purpose: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("wwt devnet seed 2026");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    *h.finalize().as_bytes()
}

fn derive_u64(seed: u64, purpose: &str) -> u64 {
    let bytes = derive(seed, purpose);
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// The identity of node `name` (`tracker-0`, `provider-3`, `dht-seed`) in a devnet seeded
/// with `seed`: an ed25519 key derived from both with BLAKE3.
pub fn node_identity(seed: u64, name: &str) -> Identity {
    Identity::from_secret(derive(seed, name))
}

/// Node `name`'s identity from the key file `path`, or a new one there: derived from the
/// seed, or random without one.
fn identity_at(path: &Path, seed: Option<u64>, name: &str) -> Result<Identity> {
    let fresh = || match seed {
        Some(seed) => Ok(node_identity(seed, name)),
        None => Identity::generate(),
    };
    Identity::load_or_create_with(path, fresh)
        .with_context(|| format!("the key of {name} at {}", path.display()))
}

/// Wraps a provider's service (by provider number) before it is served.
pub type ProviderLayer =
    Arc<dyn Fn(usize, Arc<dyn ProviderApi>) -> Arc<dyn ProviderApi> + Send + Sync>;

/// Wraps an index provider's service (by provider number) before it is served.
pub type IndexLayer = Arc<dyn Fn(usize, Arc<dyn IndexApi>) -> Arc<dyn IndexApi> + Send + Sync>;

/// Changes a provider's configuration (by provider number, with its node id) before it
/// starts: its zone, capacity, operator certificate.
pub type ProviderSetup = Arc<dyn Fn(usize, NodeId, &mut ProviderConfig) + Send + Sync>;

/// What a test changes in a [`LocalNet`]: the audits' clock and settings, and misbehaving
/// providers.
#[derive(Clone, Default)]
pub struct Hooks {
    /// The trackers' audit clock. When set, no audit loop runs: the caller steps each tracker
    /// ([`LocalNet::tracker`], [`Tracker::audit_step`]), and a challenge's deadline passes
    /// only when the caller moves the clock past it. Unset: each tracker audits by itself on
    /// the system clock.
    pub audit_clock: Option<Arc<dyn Clock>>,
    /// The trackers' audit settings (default: [`AuditConfig::default`]).
    pub audit: Option<AuditConfig>,
    /// Wraps each provider's service before it is served, in memory or over gRPC.
    pub provider_layer: Option<ProviderLayer>,
    /// Wraps each index provider's service before it is served, in memory or over gRPC.
    pub index_layer: Option<IndexLayer>,
    /// The trackers' admission settings (default: [`AdmissionConfig::default`]).
    pub admission: Option<AdmissionConfig>,
    /// Changes each provider's configuration before it starts.
    pub provider_setup: Option<ProviderSetup>,
}

/// A running local network.
pub struct LocalNet {
    /// Where its nodes listen.
    pub endpoints: Endpoints,
    connector: Arc<dyn Connector>,
    memory: Option<MemoryNetwork>,
    discovery: Arc<dyn Discovery>,
    /// The DHT seed node (gRPC only).
    seed: Option<Node>,
    dir: PathBuf,
    trackers: Vec<Option<Running>>,
    tracker_services: Vec<Option<Arc<Tracker>>>,
    tracker_configs: Vec<TrackerConfig>,
    clock: Arc<dyn Clock>,
    providers: Vec<Option<Running>>,
    provider_configs: Vec<ProviderConfig>,
    memory_dht: MemoryDht,
    hooks: Hooks,
    /// The trackers on the network's list, by number.
    listed: Vec<usize>,
}

/// Opens tracker `config` and serves it at `address`: over gRPC on `listeners`, or on the
/// in-memory network (with its audit loop when `config.audit.enabled`).
fn start_tracker(
    config: TrackerConfig,
    address: &str,
    listeners: Option<Listeners>,
    memory: Option<&MemoryNetwork>,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<Tracker>, Running)> {
    let tracker = Arc::new(Tracker::open_with(&config, connector, clock)?);
    let running = match (memory, listeners) {
        (Some(m), _) => {
            m.add_tracker(address, tracker.clone());
            Running::InMemory {
                address: address.to_string(),
                task: config
                    .audit
                    .enabled
                    .then(|| wwt_tracker::audit::spawn_audits(tracker.clone())),
            }
        }
        (None, Some(listeners)) => {
            let served = tracker.clone();
            Running::serve(|shutdown| async move {
                Ok(wwt_tracker::serve(served, &config, listeners, shutdown).await?)
            })
        }
        (None, None) => bail!("a gRPC tracker needs a listener"),
    };
    Ok((tracker, running))
}

/// Where node `name` is reached, `(listeners, address, HTTP address)`: loopback listeners
/// for gRPC (and the operator endpoint, when `shape` asks for one), or a name in memory.
async fn bind(shape: &Shape, name: &str) -> Result<(Option<Listeners>, String, Option<String>)> {
    match shape.transport {
        Transport::Grpc => {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let listeners = Listeners::bind(loopback, shape.http.then_some(loopback)).await?;
            let address = format!("http://{}", listeners.grpc.local_addr()?);
            let http = match &listeners.http {
                Some(l) => Some(format!("http://{}", l.local_addr()?)),
                None => None,
            };
            Ok((Some(listeners), address, http))
        }
        Transport::Memory => Ok((None, format!("mem://{name}"), None)),
    }
}

/// Binds a restarted node's listeners at the addresses `node` had, trying again for up to
/// `until` while a port is still held (by the stopped node's last connections).
async fn rebind(node: &NodeInfo, until: Instant) -> Result<Listeners> {
    let at = |url: &str| -> Result<SocketAddr> {
        url.trim_start_matches("http://")
            .parse()
            .with_context(|| format!("{}'s address {url:?}", node.name))
    };
    let (grpc, http) = (
        at(&node.address)?,
        node.http.as_deref().map(at).transpose()?,
    );
    loop {
        match Listeners::bind(grpc, http).await {
            Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bound => return Ok(bound?),
        }
    }
}

impl LocalNet {
    /// Starts `shape.trackers` trackers and `shape.providers` providers on loopback, with
    /// their folders under `dir`, writes `dir/endpoints.json`, and waits until every tracker
    /// sees every provider alive.
    pub async fn start(dir: &Path, shape: Shape) -> Result<Self> {
        Self::start_with(dir, shape, Hooks::default()).await
    }

    /// [`LocalNet::start`] with the changes of `hooks`.
    pub async fn start_with(dir: &Path, shape: Shape, hooks: Hooks) -> Result<Self> {
        if shape.index_providers > shape.providers {
            bail!(
                "{} index providers asked for, but only {} providers: index providers are \
                 providers that also host indexes",
                shape.index_providers,
                shape.providers
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let memory = (shape.transport == Transport::Memory).then(MemoryNetwork::new);
        let connector: Arc<dyn Connector> = match &memory {
            Some(m) => Arc::new(m.clone()),
            None => Arc::new(GrpcConnector::new()),
        };
        let mut endpoints = Endpoints::default();
        // The DHT: a seed node every node joins through, or the in-memory table.
        let memory_dht = MemoryDht::new();
        let seed = match &memory {
            Some(_) => None,
            None => Some(
                Node::start(
                    &match shape.seed {
                        Some(seed) => node_identity(seed, "dht-seed"),
                        None => Identity::generate()?,
                    },
                    NodeConfig::loopback(Vec::new()),
                )
                .await?
                .0,
            ),
        };
        let discovery: Arc<dyn Discovery> = match &seed {
            Some(node) => {
                endpoints.dht = node
                    .listen_addrs()
                    .await?
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                Arc::new(node.clone())
            }
            None => Arc::new(memory_dht.node(NodeId([0; 32]), None)),
        };
        let mut listeners = Vec::new();
        for t in 0..shape.trackers {
            let name = format!("tracker-{t}");
            let tdir = dir.join(&name);
            let identity = identity_at(&tdir.join("node.key"), shape.seed, &name)?;
            let (bound, address, http) = bind(&shape, &name).await?;
            listeners.push(bound);
            endpoints.trackers.push(NodeInfo {
                name,
                node: hex::encode(identity.node_id().0),
                address,
                dir: tdir,
                index: false,
                http,
            });
        }
        let mut trackers = Vec::new();
        let mut tracker_services = Vec::new();
        let mut tracker_configs = Vec::new();
        let clock: Arc<dyn Clock> = hooks
            .audit_clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        for (t, bound) in listeners.into_iter().enumerate() {
            let peers = endpoints
                .trackers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != t)
                .map(|(_, p)| {
                    Ok(PeerTracker {
                        id: p.node_id()?,
                        address: p.address.clone(),
                    })
                })
                .collect::<Result<_>>()?;
            let mut audit = hooks.audit.clone().unwrap_or_default();
            audit.enabled = hooks.audit_clock.is_none();
            let draws = |what: &str| {
                shape
                    .seed
                    .map(|seed| derive_u64(seed, &format!("{what} {t}")))
            };
            audit.seed = audit.seed.or_else(|| draws("audit"));
            let config = TrackerConfig {
                data_dir: endpoints.trackers[t].dir.clone(),
                peers,
                heartbeat_interval_ms: shape.heartbeat_ms,
                liveness_timeout_ms: shape.heartbeat_ms * 5,
                lease_ms: shape.heartbeat_ms * 5,
                placement_seed: draws("placement"),
                audit,
                admission: hooks.admission.clone().unwrap_or_default(),
                dht: seed
                    .is_some()
                    .then(|| NodeConfig::loopback(endpoints.dht.clone())),
                ..TrackerConfig::default()
            };
            let (tracker, running) = start_tracker(
                config.clone(),
                &endpoints.trackers[t].address,
                bound,
                memory.as_ref(),
                connector.clone(),
                clock.clone(),
            )?;
            tracker_services.push(Some(tracker));
            trackers.push(Some(running));
            tracker_configs.push(config);
        }
        let tracker_endpoints: Vec<TrackerEndpoint> = endpoints
            .trackers
            .iter()
            .map(|t| {
                Ok(TrackerEndpoint {
                    id: t.node_id()?,
                    address: t.address.clone(),
                })
            })
            .collect::<Result<_>>()?;
        let mut configs = Vec::new();
        let mut listeners = Vec::new();
        for p in 0..shape.providers {
            let name = format!("provider-{p}");
            let pdir = dir.join(&name);
            let mut config = ProviderConfig {
                data_dir: pdir.clone(),
                capacity_bytes: shape.capacity,
                max_piece_bytes: shape.max_piece_bytes,
                trackers: tracker_endpoints.clone(),
                heartbeat_interval_ms: shape.heartbeat_ms,
                dht: seed
                    .is_some()
                    .then(|| NodeConfig::loopback(endpoints.dht.clone())),
                index: p < shape.index_providers,
                ..ProviderConfig::default()
            };
            let identity = identity_at(&config.identity_path(), shape.seed, &name)?;
            if let Some(setup) = &hooks.provider_setup {
                setup(p, identity.node_id(), &mut config);
            }
            let (bound, address, http) = bind(&shape, &name).await?;
            endpoints.providers.push(NodeInfo {
                name,
                node: hex::encode(identity.node_id().0),
                address: address.clone(),
                dir: pdir,
                index: config.index,
                http,
            });
            configs.push(config);
            listeners.push(bound);
        }
        endpoints.save(dir)?;
        let mut net = Self {
            endpoints,
            connector,
            memory,
            memory_dht,
            discovery,
            seed,
            dir: dir.to_path_buf(),
            trackers,
            tracker_services,
            tracker_configs,
            clock,
            providers: Vec::new(),
            provider_configs: configs,
            hooks,
            listed: (0..shape.trackers).collect(),
        };
        for (p, bound) in listeners.into_iter().enumerate() {
            let running = net.start_provider(p, bound)?;
            net.providers.push(Some(running));
        }
        net.wait_alive(shape.providers).await?;
        Ok(net)
    }

    /// Starts provider `p` from its config and folder, at its address.
    fn start_provider(&self, p: usize, listeners: Option<Listeners>) -> Result<Running> {
        let config = self.provider_configs[p].clone();
        let address = self.endpoints.providers[p].address.clone();
        let provider_layer = self.hooks.provider_layer.clone();
        let wrap = move |api: Arc<dyn ProviderApi>| match &provider_layer {
            Some(layer) => layer(p, api),
            None => api,
        };
        let index_layer = self.hooks.index_layer.clone();
        let wrap_index = move |api: Arc<dyn IndexApi>| match &index_layer {
            Some(layer) => layer(p, api),
            None => api,
        };
        Ok(match (&self.memory, listeners) {
            (Some(m), _) => {
                let provider = Provider::open(&config)?;
                let me = self
                    .memory_dht
                    .node(provider.node_id(), Some(address.clone()));
                let provider = Arc::new(provider.with_discovery(Arc::new(me))?);
                m.add_provider(&address, wrap(provider.clone()));
                if config.index {
                    let index = IndexService::open(&config, self.connector.clone())?;
                    m.add_index(&address, wrap_index(Arc::new(index)));
                }
                let beats = wwt_provider::spawn_heartbeats(
                    provider,
                    self.connector.clone(),
                    address.clone(),
                    config.heartbeat_interval(),
                );
                Running::InMemory {
                    address,
                    task: Some(beats),
                }
            }
            (None, Some(listeners)) => Running::serve(|shutdown| async move {
                Ok(wwt_provider::run_with(config, listeners, shutdown, wrap, wrap_index).await?)
            }),
            (None, None) => bail!("a gRPC provider needs a listener"),
        })
    }

    /// How to reach the nodes.
    pub fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    /// Tracker `t`'s service, to step its audits or read its report in process.
    pub fn tracker(&self, t: usize) -> Result<Arc<Tracker>> {
        self.tracker_services[t]
            .clone()
            .filter(|_| self.trackers[t].is_some())
            .with_context(|| format!("tracker {t} is not running"))
    }

    /// A client's view of the DHT in which the providers announce their segments.
    pub fn discovery(&self) -> Arc<dyn Discovery> {
        self.discovery.clone()
    }

    /// The network's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves when a node serving over gRPC stops without being asked to (it failed, or
    /// found its folder locked): its name and why. Pending forever on the in-memory network.
    pub async fn failure(&mut self) -> (String, anyhow::Error) {
        loop {
            let nodes = self.trackers.iter_mut().zip(&self.endpoints.trackers);
            let nodes = nodes.chain(self.providers.iter_mut().zip(&self.endpoints.providers));
            for (slot, node) in nodes {
                if let Some(Running::Served { task, .. }) = slot
                    && task.is_finished()
                {
                    let why = match task.await {
                        Ok(Ok(())) => anyhow::anyhow!("it stopped serving"),
                        Ok(Err(e)) => e,
                        Err(e) => anyhow::anyhow!("its task failed: {e}"),
                    };
                    *slot = None;
                    return (node.name.clone(), why);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every running tracker sees `n` live providers (20 s at most).
    pub async fn wait_alive(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let running = self.endpoints.trackers.iter().zip(&self.trackers);
        for (t, _) in running.filter(|(_, slot)| slot.is_some()) {
            let tracker = self.connector.tracker(&t.address)?;
            loop {
                let alive = tracker
                    .providers()
                    .await
                    .map(|ps| ps.iter().filter(|p| p.alive).count())
                    .unwrap_or(0);
                if alive == n {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} sees {alive} live providers of {n} after 20 s", t.name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Stops provider `p`, as a crash would: its service goes away and it stops heartbeating.
    pub async fn stop_provider(&mut self, p: usize) -> Result<()> {
        Running::stop_slot(&mut self.providers, p, self.memory.as_ref()).await
    }

    /// Stops provider `p` and starts it again from its folder at the same address, as after a
    /// crash and restart; with `wipe_index`, its index folder (indexes and owner logs) is
    /// deleted in between, as if its disk had been replaced.
    pub async fn restart_provider(&mut self, p: usize, wipe_index: bool) -> Result<()> {
        self.stop_provider(p).await?;
        let index_dir = self.provider_configs[p].index_dir();
        if wipe_index && index_dir.exists() {
            std::fs::remove_dir_all(&index_dir)
                .with_context(|| format!("wiping {}", index_dir.display()))?;
        }
        // What the stopped node held (its databases' locks) goes once the calls and tasks
        // that still hold it end: try again until then, as a restarted process would.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listeners = match self.memory {
                Some(_) => None,
                None => Some(rebind(&self.endpoints.providers[p], deadline).await?),
            };
            match self.start_provider(p, listeners) {
                Ok(running) => {
                    self.providers[p] = Some(running);
                    return Ok(());
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops tracker `t`: clients and providers can no longer reach it.
    pub async fn stop_tracker(&mut self, t: usize) -> Result<()> {
        Running::stop_slot(&mut self.trackers, t, self.memory.as_ref()).await
    }

    /// Makes `listed` (tracker numbers) the network's tracker list, as an operator adding or
    /// removing trackers would: trackers left out stop; each listed one restarts with the
    /// others as its peers (a new one starts for the first time); every provider restarts
    /// reporting to them. Clients are handed [`LocalNet::tracker_list`].
    pub async fn set_trackers(&mut self, listed: &[usize]) -> Result<()> {
        let endpoint = |t: usize| -> Result<TrackerEndpoint> {
            Ok(TrackerEndpoint {
                id: self.endpoints.trackers[t].node_id()?,
                address: self.endpoints.trackers[t].address.clone(),
            })
        };
        let list: Vec<TrackerEndpoint> =
            listed.iter().map(|t| endpoint(*t)).collect::<Result<_>>()?;
        for t in 0..self.endpoints.trackers.len() {
            if !listed.contains(&t) {
                self.stop_tracker(t).await?;
                continue;
            }
            self.tracker_configs[t].peers = list
                .iter()
                .zip(listed)
                .filter(|(_, other)| **other != t)
                .map(|(e, _)| PeerTracker {
                    id: e.id,
                    address: e.address.clone(),
                })
                .collect();
            self.restart_tracker(t).await?;
        }
        for p in 0..self.provider_configs.len() {
            self.provider_configs[p].trackers = list.clone();
            if self.providers[p].is_some() {
                self.restart_provider(p, false).await?;
            }
        }
        self.listed = listed.to_vec();
        Ok(())
    }

    /// The network's trackers as `(node id, address)`, for clients: every tracker, or those
    /// [`LocalNet::set_trackers`] listed last.
    pub fn tracker_list(&self) -> Result<Vec<(NodeId, String)>> {
        self.listed
            .iter()
            .map(|t| {
                let t = &self.endpoints.trackers[*t];
                Ok((t.node_id()?, t.address.clone()))
            })
            .collect()
    }

    /// Stops every tracker: only the DHT is left to find segments' holders.
    pub async fn stop_trackers(&mut self) -> Result<()> {
        for t in 0..self.endpoints.trackers.len() {
            self.stop_tracker(t).await?;
        }
        Ok(())
    }

    /// Stops tracker `t` and starts it again from its folder at the same address, as after a
    /// crash and restart: what it knows comes from disk (and from the next heartbeats).
    pub async fn restart_tracker(&mut self, t: usize) -> Result<()> {
        if let Some(running) = self.trackers[t].take() {
            running.stop(self.memory.as_ref()).await?;
        }
        // Drop the last handle, so the database is closed before it is opened again. Calls in
        // flight when it stopped still hold it: wait for them to finish, as a process would.
        let address = self.endpoints.trackers[t].address.clone();
        if let Some(mut old) = self.tracker_services[t].take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(_closed) => break,
                    Err(held) if Instant::now() < deadline => {
                        old = held;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => bail!("tracker {t} is still in use elsewhere; cannot restart it"),
                }
            }
        }
        // sled lets go of its files' lock from its own flusher thread, a moment after the last
        // handle is dropped (a restarted process waits for the old one to exit the same way).
        let deadline = Instant::now() + Duration::from_secs(10);
        let bind = || async {
            match self.memory {
                Some(_) => Ok(None),
                None => rebind(&self.endpoints.trackers[t], deadline)
                    .await
                    .map(Some),
            }
        };
        let (tracker, running) = loop {
            let started = start_tracker(
                self.tracker_configs[t].clone(),
                &address,
                bind().await?,
                self.memory.as_ref(),
                self.connector.clone(),
                self.clock.clone(),
            );
            match started {
                Err(e) if format!("{e:#}").contains("could not acquire lock") => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        self.tracker_services[t] = Some(tracker);
        self.trackers[t] = Some(running);
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<()> {
        self.tracker_services.clear();
        for running in self.providers.iter_mut().chain(&mut self.trackers) {
            if let Some(r) = running.take() {
                r.stop(self.memory.as_ref()).await?;
            }
        }
        if let Some(seed) = self.seed {
            seed.shutdown().await;
        }
        Ok(())
    }
}

/// What a folder holds, and where the plaintext a party must never hold turns up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Files under the folder.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// `(needle, file)` for each needle found in a file.
    pub hits: Vec<(String, PathBuf)>,
}

/// Reads every file under `dir` and looks for each of `needles` in it.
pub fn scan(dir: &Path, needles: &[&str]) -> Result<Scan> {
    let mut out = Scan::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.files += 1;
            out.bytes += data.len() as u64;
            for n in needles {
                if data.windows(n.len()).any(|w| w == n.as_bytes()) {
                    out.hits.push((n.to_string(), path.clone()));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_stops_on_its_own_is_named_with_its_error() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let shape = Shape {
            providers: 2,
            index_providers: 0,
            transport: Transport::Memory,
            ..Shape::default()
        };
        let mut net = LocalNet::start(dir.path(), shape).await?;
        let quiet = tokio::time::timeout(Duration::from_millis(500), net.failure()).await;
        assert!(quiet.is_err(), "a failure reported while every node runs");
        // Provider 1's daemon, as if its disk failed under it.
        net.stop_provider(1).await?;
        net.providers[1] = Some(Running::serve(|_stop| async { bail!("disk unreadable") }));
        let (name, why) = tokio::time::timeout(Duration::from_secs(10), net.failure()).await?;
        assert_eq!(name, "provider-1");
        assert_eq!(format!("{why:#}"), "disk unreadable");
        assert!(
            net.providers[1].is_none(),
            "a failed node is not stopped again"
        );
        net.shutdown().await
    }
}
