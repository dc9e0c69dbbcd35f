//! The libp2p node: one actor task owning the swarm (TCP + noise + yamux, Kademlia, identify),
//! driven through a command channel by cloneable [`Node`] handles.
//!
//! The node's identity is the keystore's ed25519 key, so its `PeerId` and its [`NodeId`] name
//! the same key. Providers announce per segment (key = segment id) with Kademlia provider
//! records, and publish one small value record, `"wwt/addr/" ‖ node id` → gRPC address, so a
//! reader that found the holders of a segment through the DHT also learns where to call them.
//! Owners publish the head of their log ([`HeadRecord`]) under a key derived from the owner
//! id. A node keeps what peers put only if it is one of these: an address, or a head record
//! signed by the owner its key names and newer than the one it holds, so a replayed old head
//! never displaces a newer one at an honest node.
//! In a network smaller than kad's replication factor, announcements travel in batches
//! (`provide.rs`). Pieces never travel through the DHT.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStoreConfig, RecordStore};
use libp2p::kad::{
    self, GetProvidersOk, GetRecordOk, InboundRequest, K_VALUE, Mode, ProviderRecord, QueryId,
    QueryResult, Quorum, Record, RecordKey, StoreInserts,
};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, noise, tcp, yamux};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::NetError;
use crate::api::{Discovery, FoundHolder};
use crate::auth::{Identity, Signed, check_signature};
use crate::index::{HeadRecord, head_key, highest_head, replaces_head};
use crate::provide::{self, Announcer};
use crate::records::DiskStore;
use crate::types::{NodeId, SegmentId};

/// Multiaddresses, as daemons print them and clients join through them.
pub use libp2p::multiaddr;

/// The Kademlia protocol of wwt's DHT (kept apart from the public IPFS DHT).
const KAD_PROTOCOL: &str = "/wwt/kad/1.0.0";
/// The identify protocol version string.
const IDENTIFY_PROTOCOL: &str = "/wwt/id/1.0.0";
/// Prefix of the value records that map a node id to its gRPC address.
const ADDRESS_RECORD: &[u8] = b"wwt/addr/";
/// The longest gRPC address a node may publish.
const MAX_ADDRESS_BYTES: usize = 256;
/// The most bytes a signed [`AddressRecord`] may take.
const MAX_ADDRESS_RECORD_BYTES: usize = 512;

/// A node's gRPC address as the node publishes it in the DHT, signed by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRecord {
    /// Where the node's gRPC services listen.
    pub address: String,
}

impl TryFrom<crate::proto::AddressRecord> for AddressRecord {
    type Error = NetError;
    fn try_from(w: crate::proto::AddressRecord) -> Result<Self, NetError> {
        if w.address.len() > MAX_ADDRESS_BYTES {
            return Err(NetError::BadRequest(format!(
                "an address of {} bytes; at most {MAX_ADDRESS_BYTES} are allowed",
                w.address.len()
            )));
        }
        Ok(AddressRecord { address: w.address })
    }
}

impl From<AddressRecord> for crate::proto::AddressRecord {
    fn from(r: AddressRecord) -> Self {
        crate::proto::AddressRecord { address: r.address }
    }
}

/// Checks an address record as it came from the DHT for `node`: bounded and signed by `node`.
/// Returns when it was signed and the address.
pub fn open_address(node: &NodeId, bytes: &[u8]) -> Result<(u64, String), NetError> {
    if bytes.len() > MAX_ADDRESS_RECORD_BYTES {
        return Err(NetError::BadRequest(format!(
            "an address record of {} bytes; at most {MAX_ADDRESS_RECORD_BYTES} are allowed",
            bytes.len()
        )));
    }
    let signed = Signed::<AddressRecord>::from_bytes(bytes)?;
    if signed.auth().signer != *node {
        return Err(NetError::Unauthenticated(
            "an address record signed by another node than its key names".into(),
        ));
    }
    check_signature(&signed)?;
    let record =
        AddressRecord::try_from(crate::proto::AddressRecord::decode(signed.body().clone())?)?;
    Ok((signed.auth().timestamp_ms, record.address))
}

/// Whether a DHT node keeps address record `new` for `node` in place of the one it `held`:
/// `new` is valid and signed no earlier, unless `held` is not valid. A replay of an older
/// address does not displace the node's newest.
pub fn replaces_address(node: &NodeId, new: &[u8], held: Option<&[u8]>) -> bool {
    let Ok((signed, _)) = open_address(node, new) else {
        return false;
    };
    match held.and_then(|h| open_address(node, h).ok()) {
        Some((held, _)) => signed >= held,
        None => true,
    }
}

/// Of address records found for `node`, the newest valid one's address: DHT peers may hold
/// older ones, or lie.
pub fn newest_address<'a>(
    node: &NodeId,
    found: impl IntoIterator<Item = &'a [u8]>,
) -> Option<String> {
    found
        .into_iter()
        .filter_map(|bytes| open_address(node, bytes).ok())
        .max_by_key(|(signed, _)| *signed)
        .map(|(_, address)| address)
}

/// Settings of the libp2p node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Multiaddress to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: String,
    /// Peers to join through: multiaddresses ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// How many keys this node may provide (one per segment it holds a piece of).
    /// kad's default of 1,024 is far too small for a provider.
    pub max_provided_keys: usize,
    /// How many value and provider records this node keeps for others.
    pub max_records: usize,
    /// This node's gRPC address, published in the DHT so readers can call it.
    pub service_address: Option<String>,
    /// How long one DHT query may run, in milliseconds.
    pub query_timeout_ms: u64,
    /// How long a connection may take to open, secure and multiplex, in milliseconds (libp2p's
    /// default is 10 s). A peer that never answers (a dead host, or a port that accepts and
    /// stays silent) fails its dial after this; start-up dials the bootstrap peers in turn.
    pub connect_timeout_ms: u64,
    /// Only ask the DHT, never serve it (a client that comes and goes: peers do not keep it
    /// in their routing tables).
    pub client: bool,
    /// Folder where the records this node holds are kept across restarts (the daemons use
    /// `<data dir>/dht`); none: in memory only.
    pub store_dir: Option<std::path::PathBuf>,
    /// How many peers a lookup asks at once (Kademlia's α).
    pub parallelism: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: "/ip4/0.0.0.0/tcp/0".into(),
            bootstrap: Vec::new(),
            max_provided_keys: 1 << 20,
            max_records: 1 << 16,
            service_address: None,
            query_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            client: false,
            store_dir: None,
            parallelism: 3,
        }
    }
}

impl NodeConfig {
    /// A node on 127.0.0.1 (any port) joining through `bootstrap`, with queries bounded to
    /// 5 s and connections to 2 s: local networks and tests.
    pub fn loopback(bootstrap: Vec<String>) -> NodeConfig {
        NodeConfig {
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            bootstrap,
            query_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            ..NodeConfig::default()
        }
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    kad: kad::Behaviour<DiskStore>,
    identify: identify::Behaviour,
    provide: request_response::Behaviour<provide::Codec>,
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), NetError>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    StartProviding(SegmentId, oneshot::Sender<Result<(), NetError>>),
    GetProviders(
        SegmentId,
        oneshot::Sender<Result<HashSet<PeerId>, NetError>>,
    ),
    PutRecord(Record, oneshot::Sender<Result<(), NetError>>),
    GetRecords(RecordKey, oneshot::Sender<Vec<Vec<u8>>>),
    Probe(RecordKey, oneshot::Sender<Probe>),
    Shutdown,
}

enum Pending {
    Done(oneshot::Sender<Result<(), NetError>>),
    Providers(
        HashSet<PeerId>,
        oneshot::Sender<Result<HashSet<PeerId>, NetError>>,
    ),
    Records(Vec<Vec<u8>>, oneshot::Sender<Vec<Vec<u8>>>),
    Probe(oneshot::Sender<Probe>),
}

/// How one lookup went ([`Node::probe_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Whether a record was found.
    pub found: bool,
    /// Requests sent until the first record came back (or the lookup ended): with a
    /// [`NodeConfig::parallelism`] of 1, one request per hop.
    pub requests: u32,
    /// How long it took.
    pub duration: Duration,
}

/// A handle on the node's actor task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    commands: mpsc::Sender<Command>,
    node: NodeId,
}

/// The libp2p `PeerId` of a node.
pub fn peer_id(node: &NodeId) -> Result<PeerId, NetError> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&node.0)
        .map_err(|e| NetError::BadRequest(format!("node id is not an ed25519 key: {e}")))?;
    Ok(PeerId::from_public_key(&key.into()))
}

/// The node id inside a `PeerId` (ed25519 peer ids embed their public key).
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(NodeId(key.try_into_ed25519().ok()?.to_bytes()))
}

fn address_key(node: &NodeId) -> RecordKey {
    RecordKey::new(&[ADDRESS_RECORD, &node.0[..]].concat())
}

fn unavailable(what: &str) -> impl FnOnce(String) -> NetError + '_ {
    move |e| NetError::Unavailable(format!("{what}: {e}"))
}

impl Node {
    /// Starts the node's actor: listens, dials the bootstrap peers and (if configured)
    /// publishes its service address. Returns the handle and the actor's task.
    pub async fn start(
        identity: &Identity,
        config: NodeConfig,
    ) -> Result<(Node, JoinHandle<()>), NetError> {
        let keypair = Keypair::ed25519_from_bytes(identity.secret())
            .map_err(|e| NetError::Internal(format!("identity as libp2p key: {e}")))?;
        let local = keypair.public().to_peer_id();
        let store_config = MemoryStoreConfig {
            max_records: config.max_records,
            max_provided_keys: config.max_provided_keys,
            ..MemoryStoreConfig::default()
        };
        let store = DiskStore::open(local, store_config, config.store_dir.as_deref())?;
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        let query_timeout = Duration::from_millis(config.query_timeout_ms);
        kad_config.set_query_timeout(query_timeout);
        if let Some(alpha) = std::num::NonZeroUsize::new(config.parallelism) {
            kad_config.set_parallelism(alpha);
        }
        kad_config.set_provider_record_ttl(Some(provide::RECORD_TTL));
        // Records peers put are checked before they are kept (`Actor::record_put`).
        kad_config.set_record_filtering(StoreInserts::FilterBoth);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetError::Internal(format!("libp2p transport: {e}")))?
            // `/memory/<n>` addresses: many nodes in one process (`wwt bench-dht`).
            .with_other_transport(|key| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    <libp2p::core::transport::MemoryTransport as libp2p::Transport>::upgrade(
                        libp2p::core::transport::MemoryTransport::default(),
                        libp2p::core::upgrade::Version::V1,
                    )
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| NetError::Internal(format!("libp2p memory transport: {e}")))?
            .with_behaviour(|key| Behaviour {
                kad: kad::Behaviour::with_config(local, store, kad_config),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_push_listen_addr_updates(true),
                ),
                provide: request_response::Behaviour::new(
                    [(provide::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(query_timeout),
                ),
            })
            .map_err(|e| NetError::Internal(format!("libp2p behaviour: {e}")))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .with_connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .build();
        // Every wwt node but a client answers DHT queries; kad's automatic mode would wait for a
        // confirmed external address, which loopback and private networks never get.
        let mode = if config.client {
            Mode::Client
        } else {
            Mode::Server
        };
        swarm.behaviour_mut().kad.set_mode(Some(mode));
        let listen: Multiaddr = config.listen.parse().map_err(|e| {
            NetError::BadRequest(format!("listen address {:?}: {e}", config.listen))
        })?;
        swarm
            .listen_on(listen)
            .map_err(|e| NetError::Unavailable(format!("cannot listen: {e}")))?;

        let (tx, rx) = mpsc::channel(256);
        let (listening, is_listening) = oneshot::channel();
        let task = tokio::spawn(Actor::new(swarm, listening).run(rx));
        // Dial only once the listener is up: identify tells peers our listen addresses when the
        // connection opens, and a peer that learns none cannot put us in its routing table.
        is_listening
            .await
            .map_err(|_| NetError::Unavailable("libp2p node stopped before listening".into()))?;
        let node = Node {
            commands: tx,
            node: identity.node_id(),
        };
        for peer in &config.bootstrap {
            let addr: Multiaddr = peer
                .parse()
                .map_err(|e| NetError::BadRequest(format!("bootstrap address {peer:?}: {e}")))?;
            if let Err(e) = node.dial(addr).await {
                warn!(peer = %peer, error = %e, "bootstrap peer unreachable");
            }
        }
        if let Some(address) = config.service_address {
            node.publish_address(identity, &address).await?;
        }
        info!(node = %node.node, peer = %local, "libp2p node started");
        Ok((node, task))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Unavailable("libp2p node has stopped".into()))?;
        rx.await
            .map_err(|_| NetError::Unavailable("libp2p node has stopped".into()))
    }

    /// Connects to a peer (a multiaddress ending in `/p2p/<peer id>`) and adds it to the DHT.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|tx| Command::Dial(addr, tx)).await?
    }

    /// The addresses the node listens on, each ending in `/p2p/<its peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(Command::ListenAddrs).await
    }

    /// Publishes this node's gRPC address as a DHT value record signed by `identity` (this
    /// node's); a node started with [`NodeConfig::service_address`] does at start.
    pub async fn publish_address(
        &self,
        identity: &Identity,
        address: &str,
    ) -> Result<(), NetError> {
        let signed = identity.sign(AddressRecord {
            address: address.to_string(),
        })?;
        let record = Record::new(address_key(&self.node), signed.to_bytes());
        self.call(|tx| Command::PutRecord(record, tx)).await?
    }

    /// The gRPC address `node` published last, if it can be found.
    pub async fn address_of(&self, node: &NodeId) -> Result<Option<String>, NetError> {
        let found = self
            .call(|tx| Command::GetRecords(address_key(node), tx))
            .await?;
        Ok(newest_address(node, found.iter().map(Vec::as_slice)))
    }

    /// Looks up `node`'s address record once and says how the lookup went: found or not,
    /// requests until the first record came back, and time (`wwt bench-dht`).
    pub async fn probe_address(&self, node: &NodeId) -> Result<Probe, NetError> {
        self.call(|tx| Command::Probe(address_key(node), tx)).await
    }

    /// Stops the actor.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

#[async_trait]
impl Discovery for Node {
    async fn announce(&self, segment: SegmentId) -> Result<(), NetError> {
        self.call(|tx| Command::StartProviding(segment, tx)).await?
    }

    async fn address(&self, node: NodeId) -> Result<Option<String>, NetError> {
        self.address_of(&node).await
    }

    async fn publish_head(&self, record: &Signed<HeadRecord>) -> Result<(), NetError> {
        let key = RecordKey::new(&head_key(&record.auth().signer));
        let record = Record::new(key, record.to_bytes());
        self.call(|tx| Command::PutRecord(record, tx)).await?
    }

    async fn head(&self, owner: NodeId) -> Result<Option<HeadRecord>, NetError> {
        let key = head_key(&owner);
        let found = self
            .call(|tx| Command::GetRecords(RecordKey::new(&key), tx))
            .await?;
        Ok(highest_head(&key, found.iter().map(Vec::as_slice)).map(|(_, record)| record))
    }

    async fn holders(&self, segment: SegmentId) -> Result<Vec<FoundHolder>, NetError> {
        let peers = self.call(|tx| Command::GetProviders(segment, tx)).await??;
        let nodes = peers.iter().filter_map(|peer| {
            let node = node_id(peer);
            if node.is_none() {
                debug!(peer = %peer, "provider record from a non-ed25519 peer; skipped");
            }
            node
        });
        // Address lookups run concurrently: one slow or missing record does not delay the rest.
        let mut found = futures::future::join_all(nodes.map(|node| async move {
            let address = self.address_of(&node).await.unwrap_or(None);
            FoundHolder { node, address }
        }))
        .await;
        found.sort_by_key(|h| h.node);
        Ok(found)
    }
}

struct Actor {
    swarm: Swarm<Behaviour>,
    /// Fired at the first listen address.
    listening: Option<oneshot::Sender<()>>,
    pending: HashMap<QueryId, Pending>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>>,
    announcer: Announcer,
}

impl Actor {
    fn new(swarm: Swarm<Behaviour>, listening: oneshot::Sender<()>) -> Actor {
        Actor {
            swarm,
            listening: Some(listening),
            pending: HashMap::new(),
            dials: HashMap::new(),
            announcer: Announcer::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.command(command),
                },
                event = self.swarm.select_next_some() => self.event(event),
                () = self.announcer.due(), if self.announcer.has_queued() => self.announce(),
            }
        }
        debug!("libp2p node stopped");
    }

    fn command(&mut self, command: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match command {
            Command::Dial(addr, reply) => {
                let Some(peer) = addr.iter().find_map(|p| match p {
                    libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                    _ => None,
                }) else {
                    let _ = reply.send(Err(NetError::BadRequest(format!(
                        "{addr} does not end in /p2p/<peer id>"
                    ))));
                    return;
                };
                kad.add_address(&peer, addr.clone());
                match self.swarm.dial(addr) {
                    Ok(()) => self.dials.entry(peer).or_default().push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(unavailable("dial")(e.to_string())));
                    }
                }
            }
            Command::ListenAddrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::StartProviding(segment, reply)
                if kad.kbuckets().map(|b| b.num_entries()).sum::<usize>() < K_VALUE.get() =>
            {
                let local = *self.swarm.local_peer_id();
                let record = ProviderRecord::new(RecordKey::new(&segment.0), local, Vec::new());
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(record)
                {
                    Ok(()) => {
                        if self.announcer.queue(segment, reply) {
                            self.announce();
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::NoCapacity(format!(
                            "cannot provide more segments: {e}"
                        ))));
                    }
                }
            }
            Command::StartProviding(segment, reply) => {
                match kad.start_providing(RecordKey::new(&segment.0)) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Done(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::NoCapacity(format!(
                            "cannot provide more segments: {e}"
                        ))));
                    }
                }
            }
            Command::GetProviders(segment, reply) => {
                let id = kad.get_providers(RecordKey::new(&segment.0));
                self.pending
                    .insert(id, Pending::Providers(HashSet::new(), reply));
            }
            Command::PutRecord(record, reply) => match kad.put_record(record, Quorum::One) {
                Ok(id) => {
                    self.pending.insert(id, Pending::Done(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::NoCapacity(format!(
                        "cannot store record: {e}"
                    ))));
                }
            },
            Command::GetRecords(key, reply) => {
                let id = kad.get_record(key);
                self.pending.insert(id, Pending::Records(Vec::new(), reply));
            }
            Command::Probe(key, reply) => {
                let id = kad.get_record(key);
                self.pending.insert(id, Pending::Probe(reply));
            }
            Command::Shutdown => {}
        }
    }

    /// Sends the queued announcements to every peer of the routing table (fewer than kad's
    /// replication factor, or they would have taken kad's per-key path).
    fn announce(&mut self) {
        let local = kad::KBucketKey::from(*self.swarm.local_peer_id());
        let behaviour = self.swarm.behaviour_mut();
        let peers: Vec<PeerId> = behaviour
            .kad
            .get_closest_local_peers(&local)
            .map(|k| *k.preimage())
            .collect();
        self.announcer.flush(&peers, &mut behaviour.provide);
    }

    /// Keeps the records of a peer's batch: the peer, authenticated by the connection, is the
    /// provider of each.
    fn provided(&mut self, peer: PeerId, segments: Vec<SegmentId>) -> u32 {
        let expires = Some(std::time::Instant::now() + provide::RECORD_TTL);
        let kad = &mut self.swarm.behaviour_mut().kad;
        // With the records, where the peer listens: kad leaves out of its answers a provider
        // it has no address for (one gone from its routing table, as after a restart).
        let addresses: Vec<Multiaddr> = kad
            .kbucket(peer)
            .and_then(|bucket| {
                bucket
                    .iter()
                    .find(|e| e.node.key.preimage() == &peer)
                    .map(|e| e.node.value.iter().cloned().collect())
            })
            .unwrap_or_default();
        let store = kad.store_mut();
        let mut accepted = 0;
        for segment in segments {
            let record = ProviderRecord {
                key: RecordKey::new(&segment.0),
                provider: peer,
                expires,
                addresses: addresses.clone(),
            };
            match store.add_provider(record) {
                Ok(()) => accepted += 1,
                Err(e) => debug!(peer = %peer, error = %e, "provider record not kept"),
            }
        }
        accepted
    }

    /// Keeps a record a peer put if it is one wwt stores: a node's address, or an owner's head
    /// record over an older one. Anything else is dropped, so strangers cannot fill the store
    /// with records nobody reads.
    fn record_put(&mut self, record: Record) {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let key = record.key.to_vec();
        let held = store.get(&record.key).map(|r| r.value.clone());
        let keep = match key.strip_prefix(ADDRESS_RECORD) {
            Some(node) => <[u8; 32]>::try_from(node)
                .is_ok_and(|node| replaces_address(&NodeId(node), &record.value, held.as_deref())),
            None => replaces_head(&key, &record.value, held.as_deref()),
        };
        if !keep {
            debug!("a record put by a peer was not kept");
        } else if let Err(e) = store.put(record) {
            debug!(error = %e, "record not kept");
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                debug!(%address, "listening");
                if let Some(listening) = self.listening.take() {
                    let _ = listening.send(());
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                for reply in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                for reply in self.dials.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(unavailable("dial")(error.to_string())));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    InboundRequest::PutRecord {
                        record: Some(record),
                        ..
                    },
            })) => self.record_put(record),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    InboundRequest::AddProvider {
                        record: Some(record),
                    },
            })) => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(record)
                {
                    debug!(error = %e, "provider record not kept");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            })) => self.query_progressed(id, result, step.last, &stats),
            SwarmEvent::Behaviour(BehaviourEvent::Provide(event)) => match event {
                request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                } => {
                    let accepted = self.provided(peer, request);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .provide
                        .send_response(channel, accepted);
                }
                request_response::Event::Message {
                    message: request_response::Message::Response { request_id, .. },
                    ..
                } => self.announcer.finished(request_id),
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                } => {
                    debug!(peer = %peer, error = %error, "provider records not replicated yet");
                    self.announcer.finished(request_id);
                }
                request_response::Event::InboundFailure { peer, error, .. } => {
                    debug!(peer = %peer, error = %error, "refused a provide batch");
                }
                request_response::Event::ResponseSent { .. } => {}
            },
            _ => {}
        }
    }

    fn query_progressed(
        &mut self,
        id: QueryId,
        result: QueryResult,
        last: bool,
        stats: &kad::QueryStats,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match (pending, result) {
            (Pending::Done(reply), QueryResult::StartProviding(result)) => {
                // The record is in the local store either way; failing to reach peers only
                // means readers find it later, after republication.
                if let Err(e) = result {
                    debug!(error = %e, "provider record not replicated yet");
                }
                let _ = reply.send(Ok(()));
            }
            (Pending::Done(reply), QueryResult::PutRecord(result)) => {
                if let Err(e) = result {
                    debug!(error = %e, "address record not replicated yet");
                }
                let _ = reply.send(Ok(()));
            }
            (Pending::Providers(mut found, reply), QueryResult::GetProviders(result)) => {
                let done = match result {
                    Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                        found.extend(providers);
                        last
                    }
                    Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
                    Err(e) => {
                        debug!(error = %e, "provider lookup ended");
                        true
                    }
                };
                if done {
                    let _ = reply.send(Ok(found));
                } else {
                    self.pending.insert(id, Pending::Providers(found, reply));
                }
            }
            // Every record the lookup meets: peers may hold older ones, or lie.
            (Pending::Records(mut found, reply), QueryResult::GetRecord(result)) => {
                let done = match result {
                    Ok(GetRecordOk::FoundRecord(peer_record)) => {
                        found.push(peer_record.record.value);
                        last
                    }
                    Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
                };
                if done {
                    let _ = reply.send(found);
                } else {
                    self.pending.insert(id, Pending::Records(found, reply));
                }
            }
            (Pending::Probe(reply), QueryResult::GetRecord(result)) => {
                let found = matches!(result, Ok(GetRecordOk::FoundRecord(_)));
                if found && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    query.finish();
                }
                if found || last {
                    let _ = reply.send(Probe {
                        found,
                        requests: stats.num_requests(),
                        duration: stats.duration().unwrap_or_default(),
                    });
                } else {
                    self.pending.insert(id, Pending::Probe(reply));
                }
            }
            (pending, _) if !last => {
                self.pending.insert(id, pending);
            }
            _ => {}
        }
    }
}
