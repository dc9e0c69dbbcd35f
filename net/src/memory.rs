//! The in-memory network: services registered under addresses inside one process.
//!
//! Every call is encoded to protobuf bytes and decoded again on both legs, and errors travel as
//! `tonic::Status`, so the validation that runs over gRPC runs here too. Removing a node
//! simulates a crash: calls to its address fail as `Unavailable`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prost::Message;
use tonic::Status;

use crate::api::{Connector, Discovery, FoundHolder, ProviderApi, TrackerApi};
use crate::audit::{
    AuditReport, Challenge, ChallengeAnswer, Complaint, Entrust, Entrusted, Lease, Mirror,
};
use crate::auth::Signed;
use crate::index::{
    Answer, Append, GetCatalog, GetEntries, GetHead, HeadRecord, IndexApi, LogHead, QueryTable,
    head_key, open_head, replaces_head,
};
use crate::types::{
    ConfirmStored, Confirmed, DeletePieces, Deleted, Forget, Heartbeat, HeartbeatAck, Locate,
    NodeId, PieceData, PieceStream, Placement, ProviderRecord, ProviderStatus, ReadPiece,
    ReserveSegment, SegmentId, SegmentLocation, StorePiece, StoreReceipt,
};
use crate::{NetError, proto};

#[derive(Clone)]
enum Node {
    Provider(Arc<dyn ProviderApi>),
    Tracker(Arc<dyn TrackerApi>),
}

/// Services reachable by address inside this process; clone it to share.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    nodes: Arc<Mutex<HashMap<String, Node>>>,
    /// Index services, by the address of the node that hosts them.
    indexes: Arc<Mutex<HashMap<String, Arc<dyn IndexApi>>>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNetwork")
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    /// Makes `provider` reachable at `address` (replacing whatever was there).
    pub fn add_provider(&self, address: &str, provider: Arc<dyn ProviderApi>) {
        self.insert(address, Node::Provider(provider));
    }

    /// Makes `tracker` reachable at `address` (replacing whatever was there).
    pub fn add_tracker(&self, address: &str, tracker: Arc<dyn TrackerApi>) {
        self.insert(address, Node::Tracker(tracker));
    }

    /// Makes the index service `index` reachable at `address` (beside the node there).
    pub fn add_index(&self, address: &str, index: Arc<dyn IndexApi>) {
        if let Ok(mut indexes) = self.indexes.lock() {
            indexes.insert(address.to_string(), index);
        }
    }

    /// Takes the node at `address` (and its index service) off the network, as if it had
    /// crashed.
    pub fn remove(&self, address: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.remove(address);
        }
        if let Ok(mut indexes) = self.indexes.lock() {
            indexes.remove(address);
        }
    }

    fn insert(&self, address: &str, node: Node) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(address.to_string(), node);
        }
    }

    fn lookup(&self, address: &str) -> Result<Node, NetError> {
        self.nodes
            .lock()
            .map_err(|_| NetError::Internal("memory network poisoned".into()))?
            .get(address)
            .cloned()
            .ok_or_else(|| NetError::Unavailable(format!("no node listens at {address}")))
    }
}

/// Sends a message through its wire encoding: encode, decode, validate.
fn through_wire<D, W>(value: D) -> Result<D, NetError>
where
    D: Into<W> + TryFrom<W, Error = NetError>,
    W: Message + Default,
{
    let bytes = value.into().encode_to_vec();
    D::try_from(W::decode(bytes.as_slice())?)
}

fn request<T>(signed: Signed<T>) -> Result<Signed<T>, NetError> {
    let bytes = proto::SignedRequest::from(signed).encode_to_vec();
    Signed::try_from(proto::SignedRequest::decode(bytes.as_slice())?)
}

/// An error as it arrives over gRPC.
fn as_status(err: NetError) -> NetError {
    NetError::from(Status::from(err))
}

/// A provider at an address of a [`MemoryNetwork`].
struct MemoryProvider {
    network: MemoryNetwork,
    address: String,
}

impl MemoryProvider {
    fn target(&self) -> Result<Arc<dyn ProviderApi>, NetError> {
        match self.network.lookup(&self.address)? {
            Node::Provider(p) => Ok(p),
            Node::Tracker(_) => Err(NetError::Unavailable(format!(
                "{} is a tracker, not a provider",
                self.address
            ))),
        }
    }
}

#[async_trait]
impl ProviderApi for MemoryProvider {
    async fn store(
        &self,
        req: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        let reply = self
            .target()?
            .store(request(req)?, data)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::StoreReceipt>(reply)
    }

    async fn read(&self, req: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        let reply = self
            .target()?
            .read(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::ReadResponse>(reply)
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        let reply = self.target()?.status().await.map_err(as_status)?;
        through_wire::<_, proto::ProviderStatus>(reply)
    }

    async fn challenge(&self, req: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        let reply = self
            .target()?
            .challenge(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::ChallengeResponse>(reply)
    }

    async fn delete(&self, req: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        let reply = self
            .target()?
            .delete(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::DeleteResponse>(reply)
    }
}

/// A tracker at an address of a [`MemoryNetwork`].
struct MemoryTracker {
    network: MemoryNetwork,
    address: String,
}

impl MemoryTracker {
    fn target(&self) -> Result<Arc<dyn TrackerApi>, NetError> {
        match self.network.lookup(&self.address)? {
            Node::Tracker(t) => Ok(t),
            Node::Provider(_) => Err(NetError::Unavailable(format!(
                "{} is a provider, not a tracker",
                self.address
            ))),
        }
    }
}

#[async_trait]
impl TrackerApi for MemoryTracker {
    async fn heartbeat(&self, req: Signed<Heartbeat>) -> Result<HeartbeatAck, NetError> {
        let reply = self
            .target()?
            .heartbeat(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::HeartbeatAck>(reply)
    }

    async fn reserve(&self, req: Signed<ReserveSegment>) -> Result<Placement, NetError> {
        let reply = self
            .target()?
            .reserve(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::Placement>(reply)
    }

    async fn confirm(&self, req: Signed<ConfirmStored>) -> Result<Confirmed, NetError> {
        let reply = self
            .target()?
            .confirm(request(req)?)
            .await
            .map_err(as_status)?;
        let bytes = proto::ConfirmResponse::from(reply).encode_to_vec();
        Ok(proto::ConfirmResponse::decode(bytes.as_slice())?.into())
    }

    async fn locate(&self, req: Signed<Locate>) -> Result<SegmentLocation, NetError> {
        let reply = self
            .target()?
            .locate(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::SegmentLocation>(reply)
    }

    async fn providers(&self) -> Result<Vec<ProviderRecord>, NetError> {
        let reply = self.target()?.providers().await.map_err(as_status)?;
        reply
            .into_iter()
            .map(through_wire::<_, proto::ProviderRecord>)
            .collect()
    }

    async fn entrust(&self, req: Signed<Entrust>) -> Result<Entrusted, NetError> {
        let reply = self
            .target()?
            .entrust(request(req)?)
            .await
            .map_err(as_status)?;
        let bytes = proto::EntrustResponse::from(reply).encode_to_vec();
        Ok(proto::EntrustResponse::decode(bytes.as_slice())?.into())
    }

    async fn complain(&self, req: Signed<Complaint>) -> Result<(), NetError> {
        self.target()?
            .complain(request(req)?)
            .await
            .map_err(as_status)
    }

    async fn mirror(&self, req: Signed<Mirror>) -> Result<(), NetError> {
        self.target()?
            .mirror(request(req)?)
            .await
            .map_err(as_status)
    }

    async fn lease(&self, req: Signed<Lease>) -> Result<(), NetError> {
        self.target()?.lease(request(req)?).await.map_err(as_status)
    }

    async fn forget(&self, req: Signed<Forget>) -> Result<u32, NetError> {
        self.target()?
            .forget(request(req)?)
            .await
            .map_err(as_status)
    }

    async fn audits(&self, limit: u32) -> Result<AuditReport, NetError> {
        let reply = self.target()?.audits(limit).await.map_err(as_status)?;
        through_wire::<_, proto::AuditReport>(reply)
    }
}

/// An index service at an address of a [`MemoryNetwork`].
struct MemoryIndex {
    network: MemoryNetwork,
    address: String,
}

impl MemoryIndex {
    fn target(&self) -> Result<Arc<dyn IndexApi>, NetError> {
        self.network
            .indexes
            .lock()
            .map_err(|_| NetError::Internal("memory network poisoned".into()))?
            .get(&self.address)
            .cloned()
            .ok_or_else(|| {
                NetError::Unavailable(format!("no index service listens at {}", self.address))
            })
    }
}

#[async_trait]
impl IndexApi for MemoryIndex {
    async fn append(&self, entry: Signed<Append>) -> Result<LogHead, NetError> {
        let reply = self
            .target()?
            .append(request(entry)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::LogHead>(reply)
    }

    async fn head(&self, req: Signed<GetHead>) -> Result<Option<Signed<Append>>, NetError> {
        let reply = self
            .target()?
            .head(request(req)?)
            .await
            .map_err(as_status)?;
        reply.map(request).transpose()
    }

    async fn entries(&self, req: Signed<GetEntries>) -> Result<Vec<Signed<Append>>, NetError> {
        let reply = self
            .target()?
            .entries(request(req)?)
            .await
            .map_err(as_status)?;
        reply.into_iter().map(request).collect()
    }

    async fn query(
        &self,
        req: Signed<QueryTable>,
    ) -> Result<Answer<wwt_index::QueryOutput>, NetError> {
        let reply = self
            .target()?
            .query(request(req)?)
            .await
            .map_err(as_status)?;
        through_wire::<_, proto::QueryResponse>(reply)
    }

    async fn catalog(
        &self,
        req: Signed<GetCatalog>,
    ) -> Result<Answer<wwt_index::CatalogBlob>, NetError> {
        let reply = self
            .target()?
            .catalog(request(req)?)
            .await
            .map_err(as_status)?;
        let bytes = proto::CatalogResponse::from(reply).encode_to_vec();
        Ok(proto::CatalogResponse::decode(bytes.as_slice())?.into())
    }
}

impl Connector for MemoryNetwork {
    fn provider(&self, address: &str) -> Result<Arc<dyn ProviderApi>, NetError> {
        Ok(Arc::new(MemoryProvider {
            network: self.clone(),
            address: address.to_string(),
        }))
    }

    fn tracker(&self, address: &str) -> Result<Arc<dyn TrackerApi>, NetError> {
        Ok(Arc::new(MemoryTracker {
            network: self.clone(),
            address: address.to_string(),
        }))
    }

    fn index(&self, address: &str) -> Result<Arc<dyn IndexApi>, NetError> {
        Ok(Arc::new(MemoryIndex {
            network: self.clone(),
            address: address.to_string(),
        }))
    }
}

/// The in-memory twin of the DHT: segment → announcing nodes, node → address, and owners'
/// head records, kept by the same rules as a DHT node keeps them.
#[derive(Clone, Default, Debug)]
pub struct MemoryDht {
    table: Arc<Mutex<HashMap<SegmentId, HashSet<FoundHolder>>>>,
    addresses: Arc<Mutex<HashMap<NodeId, String>>>,
    heads: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, NetError> {
    m.lock()
        .map_err(|_| NetError::Internal("memory DHT poisoned".into()))
}

impl MemoryDht {
    /// An empty table.
    pub fn new() -> MemoryDht {
        MemoryDht::default()
    }

    /// The [`Discovery`] handle of one node in this table; a node with an address publishes it.
    pub fn node(&self, node: NodeId, address: Option<String>) -> MemoryDiscovery {
        if let (Some(address), Ok(mut addresses)) = (&address, lock(&self.addresses)) {
            addresses.insert(node, address.clone());
        }
        MemoryDiscovery {
            dht: self.clone(),
            me: FoundHolder { node, address },
        }
    }
}

/// One node's view of a [`MemoryDht`].
#[derive(Clone, Debug)]
pub struct MemoryDiscovery {
    dht: MemoryDht,
    me: FoundHolder,
}

#[async_trait]
impl Discovery for MemoryDiscovery {
    async fn announce(&self, segment: SegmentId) -> Result<(), NetError> {
        lock(&self.dht.table)?
            .entry(segment)
            .or_default()
            .insert(self.me.clone());
        Ok(())
    }

    async fn holders(&self, segment: SegmentId) -> Result<Vec<FoundHolder>, NetError> {
        let mut found: Vec<FoundHolder> = lock(&self.dht.table)?
            .get(&segment)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        found.sort_by_key(|h| h.node);
        Ok(found)
    }

    async fn address(&self, node: NodeId) -> Result<Option<String>, NetError> {
        Ok(lock(&self.dht.addresses)?.get(&node).cloned())
    }

    async fn publish_head(&self, record: &Signed<HeadRecord>) -> Result<(), NetError> {
        let key = head_key(&record.auth().signer);
        let bytes = record.to_bytes();
        let mut heads = lock(&self.dht.heads)?;
        if replaces_head(&key, &bytes, heads.get(&key).map(Vec::as_slice)) {
            heads.insert(key, bytes);
        }
        Ok(())
    }

    async fn head(&self, owner: NodeId) -> Result<Option<HeadRecord>, NetError> {
        let key = head_key(&owner);
        Ok(lock(&self.dht.heads)?
            .get(&key)
            .and_then(|bytes| open_head(&key, bytes).ok())
            .map(|(_, record)| record))
    }
}
