//! The seams: what a provider, a tracker and piece discovery offer, as traits.
//!
//! The services implement these traits themselves; the gRPC client, the in-memory network and
//! the fault-injecting wrapper implement them too, so the same caller code runs against any.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::NetError;
use crate::audit::{
    AuditReport, Challenge, ChallengeAnswer, Complaint, Entrust, Entrusted, Lease, Mirror,
};
use crate::auth::{Identity, Signed};
use crate::index::{HeadRecord, IndexApi};
use crate::types::{
    ConfirmStored, Confirmed, DeletePieces, Deleted, Forget, Heartbeat, HeartbeatAck, Locate,
    NodeId, PieceData, PieceId, PieceStream, Placement, ProviderRecord, ProviderStatus, ReadPiece,
    Reservation, ReserveSegment, SegmentId, SegmentLocation, StorePiece, StoreReceipt,
};

/// A storage provider: holds pieces under tracker reservations and serves them to their owner.
#[async_trait]
pub trait ProviderApi: Send + Sync {
    /// Stores a piece (signed by the reservation's owner) whose bytes are `data`, checked
    /// before any byte is taken and hashed and written as the bytes arrive. Storing a piece
    /// already held for the same owner returns a fresh receipt without taking the bytes, so
    /// uploads resume cheaply.
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError>;
    /// Reads a whole piece or a byte range (signed by its owner or a trusted tracker).
    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError>;
    /// Capacity and usage.
    async fn status(&self) -> Result<ProviderStatus, NetError>;
    /// Answers an audit challenge on a piece (signed by a trusted tracker).
    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError>;
    /// Frees pieces (signed by their owner or a trusted tracker); pieces not held count as
    /// deleted already.
    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError>;
}

/// A tracker: knows the providers, places pieces, and maps pieces to their holders.
#[async_trait]
pub trait TrackerApi: Send + Sync {
    /// A provider reports itself (signed by the provider).
    async fn heartbeat(&self, request: Signed<Heartbeat>) -> Result<HeartbeatAck, NetError>;
    /// Reserves distinct live providers for a segment's pieces (signed by the owner).
    async fn reserve(&self, request: Signed<ReserveSegment>) -> Result<Placement, NetError>;
    /// Records providers' receipts in the piece map (signed by the owner).
    async fn confirm(&self, request: Signed<ConfirmStored>) -> Result<Confirmed, NetError>;
    /// Where a segment's pieces are (signed by the owner).
    async fn locate(&self, request: Signed<Locate>) -> Result<SegmentLocation, NetError>;
    /// The provider registry.
    async fn providers(&self) -> Result<Vec<ProviderRecord>, NetError>;
    /// Takes a stored segment under audit and repair (signed by its owner).
    async fn entrust(&self, request: Signed<Entrust>) -> Result<Entrusted, NetError>;
    /// Records an owner's complaint about a holder (signed by the segment's owner).
    async fn complain(&self, request: Signed<Complaint>) -> Result<(), NetError>;
    /// Takes another tracker's record of a segment both keep (signed by that tracker).
    async fn mirror(&self, request: Signed<Mirror>) -> Result<(), NetError>;
    /// Renews another tracker's lease on the segments it audits first (signed by it); answers
    /// once this tracker has stopped auditing them and mirrored its changes back.
    async fn lease(&self, request: Signed<Lease>) -> Result<(), NetError>;
    /// The owner deleted these segments (signed by it): stop auditing them and delete their
    /// pieces; returns how many this request forgot.
    async fn forget(&self, request: Signed<Forget>) -> Result<u32, NetError>;
    /// The latest `limit` audit log entries and every provider's credit.
    async fn audits(&self, limit: u32) -> Result<AuditReport, NetError>;
}

/// Turns an address into a handle on the service there: over gRPC, in memory, or through faults.
pub trait Connector: Send + Sync {
    /// The provider at `address`.
    fn provider(&self, address: &str) -> Result<Arc<dyn ProviderApi>, NetError>;
    /// The tracker at `address`.
    fn tracker(&self, address: &str) -> Result<Arc<dyn TrackerApi>, NetError>;
    /// The index service at `address` (an index provider).
    fn index(&self, address: &str) -> Result<Arc<dyn IndexApi>, NetError>;
}

/// Stores `data` under `reservation` at the provider at `address`, signed by `owner` (the
/// piece's owner, or the tracker repairing it), waiting at most `timeout`: no answer in time is
/// `Unavailable`. The receipt is unchecked.
pub async fn store_piece(
    connector: &dyn Connector,
    owner: &Identity,
    address: &str,
    reservation: Reservation,
    data: Bytes,
    timeout: Duration,
) -> Result<StoreReceipt, NetError> {
    let provider = connector.provider(address)?;
    let request = owner.sign(StorePiece { reservation })?;
    tokio::time::timeout(timeout, provider.store(request, PieceStream::whole(data)))
        .await
        .map_err(|_| NetError::Unavailable("store timed out".into()))?
}

/// Sends `request`, signed by `reader` (the piece's owner or a trusted tracker), to the
/// provider at `address` and waits at most `timeout`: no answer in time is `Unavailable`.
/// The answer is unchecked: see [`read_whole_piece`], or check a range's proof.
pub async fn read_piece(
    connector: &dyn Connector,
    reader: &Identity,
    address: &str,
    request: ReadPiece,
    timeout: Duration,
) -> Result<PieceData, NetError> {
    let provider = connector.provider(address)?;
    let request = reader.sign(request)?;
    tokio::time::timeout(timeout, provider.read(request))
        .await
        .map_err(|_| NetError::Unavailable("read timed out".into()))?
}

/// Reads the whole piece `piece` ([`read_piece`]) and checks that the bytes hash to `piece`:
/// bytes that do not are `Conflict`.
pub async fn read_whole_piece(
    connector: &dyn Connector,
    reader: &Identity,
    address: &str,
    piece: PieceId,
    timeout: Duration,
) -> Result<Bytes, NetError> {
    let request = ReadPiece { piece, range: None };
    let read = read_piece(connector, reader, address, request, timeout).await?;
    if PieceId::of(&read.data) != piece {
        return Err(NetError::Conflict("wrong bytes".into()));
    }
    Ok(read.data)
}

/// A provider found through discovery: who it is and where its service listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FoundHolder {
    /// Its node id.
    pub node: NodeId,
    /// Its service address, if it announced one.
    pub address: Option<String>,
}

/// What a reader finds without a tracker (the Kademlia DHT): the holders of a segment's
/// pieces, where a node serves, and the head of an owner's log.
#[async_trait]
pub trait Discovery: Send + Sync + std::fmt::Debug {
    /// Announces that this node holds pieces of `segment`.
    async fn announce(&self, segment: SegmentId) -> Result<(), NetError>;
    /// The nodes that announced pieces of `segment`.
    async fn holders(&self, segment: SegmentId) -> Result<Vec<FoundHolder>, NetError>;
    /// The gRPC address `node` published, if it can be found.
    async fn address(&self, node: NodeId) -> Result<Option<String>, NetError>;
    /// Publishes an owner's signed head record; DHT nodes keep it only over an older one.
    async fn publish_head(&self, record: &Signed<HeadRecord>) -> Result<(), NetError>;
    /// The highest valid head record of `owner` that can be found, checked
    /// ([`crate::index::open_head`]).
    async fn head(&self, owner: NodeId) -> Result<Option<HeadRecord>, NetError>;
}
