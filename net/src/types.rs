//! Domain types, and their validated conversions from the wire (`TryFrom<proto::…>`).
//!
//! A value of a type here has been checked: ids have the right length, ranges fit, counts are
//! bounded. Nothing past this module looks at a protobuf message.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::proto;
use crate::{NetError, PeerKeys};

/// The largest piece any service accepts (the gRPC message limit is a little above it).
pub const MAX_PIECE_SIZE: u64 = 64 << 20;

/// The most pieces one segment may have (Reed–Solomon's limit).
pub const MAX_PIECES_PER_SEGMENT: usize = 256;

/// The longest address string a node may announce.
const MAX_ADDRESS_LEN: usize = 256;

/// The longest zone name a provider may announce.
const MAX_ZONE_LEN: usize = 64;

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses the id from exactly 32 bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, NetError> {
                <[u8; 32]>::try_from(bytes).map($name).map_err(|_| {
                    NetError::BadRequest(format!(
                        concat!($what, " must be 32 bytes, got {}"),
                        bytes.len()
                    ))
                })
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The bytes as a wire field.
            pub fn to_wire(&self) -> Bytes {
                Bytes::copy_from_slice(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &hex::encode(&self.0[..6]))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $name {
            type Err = NetError;
            fn from_str(s: &str) -> Result<Self, NetError> {
                let bytes = hex::decode(s).map_err(|e| {
                    NetError::BadRequest(format!(concat!($what, " is not hex: {}"), e))
                })?;
                Self::from_slice(&bytes)
            }
        }
    };
}

id32!(
    /// A node's id: its 32-byte ed25519 public key (the libp2p `PeerId` wraps the same key).
    NodeId,
    "node id"
);
id32!(
    /// A piece's id: the BLAKE3 hash of its bytes (= its Bao root).
    PieceId,
    "piece id"
);
id32!(
    /// A segment's id, chosen by the client.
    SegmentId,
    "segment id"
);

impl PieceId {
    /// The id of these piece bytes.
    pub fn of(data: &[u8]) -> PieceId {
        PieceId(*blake3::hash(data).as_bytes())
    }
}

fn tag_from(bytes: &[u8], what: &str) -> Result<[u8; 32], NetError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| NetError::BadRequest(format!("{what} must be 32 bytes, got {}", bytes.len())))
}

/// The keyed BLAKE3 of `parts` under `key`.
fn tag(key: &[u8; 32], parts: &[&[u8]]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// `Ok` if `tag` is `want` (compared in constant time), else `Forbidden` naming `what`.
fn tagged(tag: &[u8; 32], want: blake3::Hash, what: &str) -> Result<(), NetError> {
    if blake3::Hash::from_bytes(*tag) == want {
        Ok(())
    } else {
        Err(NetError::Forbidden(format!("{what} does not verify")))
    }
}

pub(crate) fn bounded_string(s: String, max: usize, what: &str) -> Result<String, NetError> {
    if s.len() > max {
        return Err(NetError::BadRequest(format!(
            "{what} is {} bytes long, at most {max} allowed",
            s.len()
        )));
    }
    Ok(s)
}

fn address_from(s: String) -> Result<String, NetError> {
    if s.is_empty() {
        return Err(NetError::BadRequest("address is empty".into()));
    }
    bounded_string(s, MAX_ADDRESS_LEN, "address")
}

pub(crate) fn piece_size_from(size: u64) -> Result<u64, NetError> {
    if size == 0 || size > MAX_PIECE_SIZE {
        return Err(NetError::BadRequest(format!(
            "piece size {size} is outside 1..={MAX_PIECE_SIZE}"
        )));
    }
    Ok(size)
}

fn required<T>(field: Option<T>, what: &str) -> Result<T, NetError> {
    field.ok_or_else(|| NetError::BadRequest(format!("{what} is missing")))
}

/// A tracker's permission for `owner` to store one piece on `provider`, tagged for the
/// provider and for the tracker itself (see [`crate::PeerKeys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The piece's id (hash).
    pub piece: PieceId,
    /// The piece's exact size in bytes.
    pub size: u64,
    /// The segment the piece belongs to.
    pub segment: SegmentId,
    /// The piece's index in its segment.
    pub index: u32,
    /// The provider that may store it.
    pub provider: NodeId,
    /// The client that may store and read it.
    pub owner: NodeId,
    /// Milliseconds since the Unix epoch after which the provider refuses it.
    pub expires_ms: u64,
    /// The tracker that issued it.
    pub tracker: NodeId,
    /// The tracker's tag under its own key: lets it know its reservations again at confirm.
    pub tracker_tag: [u8; 32],
    /// The tracker's tag under the key it shares with `provider`: lets the provider check it.
    pub provider_tag: [u8; 32],
}

impl Reservation {
    /// The bytes the tags cover: a domain tag and every field but the tags.
    fn tagged_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + 32 * 5 + 8 * 2 + 4);
        out.extend_from_slice(b"wwt reservation v2\0");
        out.extend_from_slice(&self.piece.0);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.segment.0);
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.provider.0);
        out.extend_from_slice(&self.owner.0);
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.tracker.0);
        out
    }

    /// Tags the reservation as issued by the tracker whose keys are `keys` (its `tracker` must
    /// be that tracker).
    pub fn issue(mut self, keys: &PeerKeys) -> Result<Reservation, NetError> {
        let bytes = self.tagged_bytes();
        self.tracker_tag = *tag(keys.own(), &[&bytes]).as_bytes();
        self.provider_tag = *tag(&keys.shared(&self.provider)?, &[&bytes]).as_bytes();
        Ok(self)
    }

    /// The provider's check: the tracker named in the reservation issued it for this provider,
    /// whose keys are `keys` (not whether the tracker is trusted: the caller decides that).
    pub fn check_for_provider(&self, keys: &PeerKeys) -> Result<(), NetError> {
        if self.provider != keys.node_id() {
            return Err(NetError::Forbidden(format!(
                "reservation is for provider {}, not this one",
                self.provider
            )));
        }
        let want = tag(&keys.shared(&self.tracker)?, &[&self.tagged_bytes()]);
        tagged(&self.provider_tag, want, "reservation tag")
    }

    /// The tracker's check: it issued this reservation itself (`keys` are its own).
    pub fn check_issued_by(&self, keys: &PeerKeys) -> Result<(), NetError> {
        if self.tracker != keys.node_id() {
            return Err(NetError::Forbidden(format!(
                "reservation of piece {} was issued by tracker {}, not this one",
                self.piece, self.tracker
            )));
        }
        let want = tag(keys.own(), &[&self.tagged_bytes()]);
        tagged(&self.tracker_tag, want, "reservation tag")
    }
}

impl TryFrom<proto::Reservation> for Reservation {
    type Error = NetError;
    fn try_from(w: proto::Reservation) -> Result<Self, NetError> {
        Ok(Reservation {
            piece: PieceId::from_slice(&w.piece_id)?,
            size: piece_size_from(w.size)?,
            segment: SegmentId::from_slice(&w.segment_id)?,
            index: index_from(w.index)?,
            provider: NodeId::from_slice(&w.provider)?,
            owner: NodeId::from_slice(&w.owner)?,
            expires_ms: w.expires_ms,
            tracker: NodeId::from_slice(&w.tracker)?,
            tracker_tag: tag_from(&w.tracker_tag, "reservation tracker tag")?,
            provider_tag: tag_from(&w.provider_tag, "reservation provider tag")?,
        })
    }
}

impl From<Reservation> for proto::Reservation {
    fn from(r: Reservation) -> Self {
        proto::Reservation {
            piece_id: r.piece.to_wire(),
            size: r.size,
            segment_id: r.segment.to_wire(),
            index: r.index,
            provider: r.provider.to_wire(),
            owner: r.owner.to_wire(),
            expires_ms: r.expires_ms,
            tracker: r.tracker.to_wire(),
            tracker_tag: Bytes::copy_from_slice(&r.tracker_tag),
            provider_tag: Bytes::copy_from_slice(&r.provider_tag),
        }
    }
}

pub(crate) fn index_from(index: u32) -> Result<u32, NetError> {
    if index as usize >= MAX_PIECES_PER_SEGMENT {
        return Err(NetError::BadRequest(format!(
            "piece index {index} is not below {MAX_PIECES_PER_SEGMENT}"
        )));
    }
    Ok(index)
}

/// Store one piece under a reservation.
///
/// Signed, only the reservation is in the body; the piece's bytes follow as a [`PieceStream`],
/// bound to the signature by the reservation's piece id and size only: the receiver must check
/// that they are `reservation.size` bytes hashing to `reservation.piece` before it keeps or
/// trusts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePiece {
    /// The tracker's reservation for this piece.
    pub reservation: Reservation,
}

impl TryFrom<proto::StoreRequest> for StorePiece {
    type Error = NetError;
    fn try_from(w: proto::StoreRequest) -> Result<Self, NetError> {
        Ok(StorePiece {
            reservation: required(w.reservation, "reservation")?.try_into()?,
        })
    }
}

impl From<StorePiece> for proto::StoreRequest {
    fn from(s: StorePiece) -> Self {
        proto::StoreRequest {
            reservation: Some(s.reservation.into()),
        }
    }
}

/// The parts a piece held whole is sent in: small enough that the provider hashes and writes
/// one while the next arrives, large enough that each costs little.
pub const STORE_PART: usize = 256 << 10;

/// The bytes of a piece being stored, in order, as they arrive (over gRPC, one part per
/// `StorePart` message). The receiver checks their total size and hash against the
/// reservation; an `Err` part ends the upload with that error.
pub struct PieceStream(BoxStream<'static, Result<Bytes, NetError>>);

impl PieceStream {
    /// A stream of parts.
    pub fn new(parts: impl Stream<Item = Result<Bytes, NetError>> + Send + 'static) -> Self {
        PieceStream(parts.boxed())
    }

    /// The parts of a piece held whole: slices of [`STORE_PART`] bytes, not copies.
    pub fn whole(data: Bytes) -> Self {
        let parts = (0..data.len())
            .step_by(STORE_PART)
            .map(move |at| Ok(data.slice(at..data.len().min(at + STORE_PART))));
        PieceStream::new(futures::stream::iter(parts.collect::<Vec<_>>()))
    }
}

impl fmt::Debug for PieceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PieceStream")
    }
}

impl Stream for PieceStream {
    type Item = Result<Bytes, NetError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_next_unpin(cx)
    }
}

/// A provider's statement that it holds a reserved piece, tagged under the key it shares with
/// the reservation's tracker (see [`crate::PeerKeys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReceipt {
    /// The reservation the piece was stored under.
    pub reservation: Reservation,
    /// The provider's tag over the reservation, its tags included.
    pub tag: [u8; 32],
}

impl StoreReceipt {
    /// The tag of a receipt for `reservation` under `key`.
    fn tag(reservation: &Reservation, key: &[u8; 32]) -> blake3::Hash {
        let r = reservation;
        let parts: [&[u8]; 4] = [
            b"wwt receipt v2\0",
            &r.tagged_bytes(),
            &r.tracker_tag,
            &r.provider_tag,
        ];
        tag(key, &parts)
    }

    /// The receipt of the provider whose keys are `keys` for `reservation`.
    pub fn issue(reservation: Reservation, keys: &PeerKeys) -> Result<StoreReceipt, NetError> {
        let tag = *Self::tag(&reservation, &keys.shared(&reservation.tracker)?).as_bytes();
        Ok(StoreReceipt { reservation, tag })
    }

    /// The tracker's check (`keys` are its own): the provider named in the reservation
    /// issued this receipt.
    pub fn check(&self, keys: &PeerKeys) -> Result<(), NetError> {
        let want = Self::tag(&self.reservation, &keys.shared(&self.reservation.provider)?);
        tagged(&self.tag, want, "receipt tag")
    }
}

impl TryFrom<proto::StoreReceipt> for StoreReceipt {
    type Error = NetError;
    fn try_from(w: proto::StoreReceipt) -> Result<Self, NetError> {
        Ok(StoreReceipt {
            reservation: required(w.reservation, "reservation")?.try_into()?,
            tag: tag_from(&w.tag, "receipt tag")?,
        })
    }
}

impl From<StoreReceipt> for proto::StoreReceipt {
    fn from(r: StoreReceipt) -> Self {
        proto::StoreReceipt {
            reservation: Some(r.reservation.into()),
            tag: Bytes::copy_from_slice(&r.tag),
        }
    }
}

/// A byte range of a piece (`len` ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// Read a whole piece or a byte range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPiece {
    /// The piece.
    pub piece: PieceId,
    /// The range to read; `None` reads the whole piece.
    pub range: Option<ByteRange>,
}

impl TryFrom<proto::ReadRequest> for ReadPiece {
    type Error = NetError;
    fn try_from(w: proto::ReadRequest) -> Result<Self, NetError> {
        let piece = PieceId::from_slice(&w.piece_id)?;
        let range = match (w.offset, w.len) {
            (0, 0) => None,
            (_, 0) => {
                return Err(NetError::BadRequest(
                    "a range read needs len ≥ 1 (offset = len = 0 reads the whole piece)".into(),
                ));
            }
            (offset, len) if offset.checked_add(len).is_none_or(|e| e > MAX_PIECE_SIZE) => {
                return Err(NetError::BadRequest(format!(
                    "range {offset}+{len} ends past the largest piece size {MAX_PIECE_SIZE}"
                )));
            }
            (offset, len) => Some(ByteRange { offset, len }),
        };
        Ok(ReadPiece { piece, range })
    }
}

impl From<ReadPiece> for proto::ReadRequest {
    fn from(r: ReadPiece) -> Self {
        let (offset, len) = r.range.map_or((0, 0), |r| (r.offset, r.len));
        proto::ReadRequest {
            piece_id: r.piece.to_wire(),
            offset,
            len,
        }
    }
}

/// Bytes read from a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceData {
    /// The piece.
    pub piece: PieceId,
    /// The size of the whole piece.
    pub piece_size: u64,
    /// Where `data` starts in the piece.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// For a range read, the Bao slice proving `data` against the piece id (check it with
    /// `wwt_engine::proof::verify`); empty for whole pieces, which the reader hashes.
    pub proof: Bytes,
}

impl PieceData {
    /// Checks that a whole-piece read hashes to its id.
    pub fn verify_whole(&self) -> Result<(), NetError> {
        if self.offset != 0 || self.data.len() as u64 != self.piece_size {
            return Err(NetError::BadRequest("not a whole-piece read".into()));
        }
        if PieceId::of(&self.data) != self.piece {
            return Err(NetError::Conflict(format!(
                "piece {} returned bytes that hash to something else",
                self.piece
            )));
        }
        Ok(())
    }
}

impl TryFrom<proto::ReadResponse> for PieceData {
    type Error = NetError;
    fn try_from(w: proto::ReadResponse) -> Result<Self, NetError> {
        let piece_size = piece_size_from(w.piece_size)?;
        if w.offset.saturating_add(w.data.len() as u64) > piece_size {
            return Err(NetError::BadRequest(
                "read response extends past the end of the piece".into(),
            ));
        }
        Ok(PieceData {
            piece: PieceId::from_slice(&w.piece_id)?,
            piece_size,
            offset: w.offset,
            data: w.data,
            proof: w.proof,
        })
    }
}

impl From<PieceData> for proto::ReadResponse {
    fn from(p: PieceData) -> Self {
        proto::ReadResponse {
            piece_id: p.piece.to_wire(),
            piece_size: p.piece_size,
            offset: p.offset,
            data: p.data,
            proof: p.proof,
        }
    }
}

/// A provider's capacity and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    /// The provider's node id.
    pub node: NodeId,
    /// Its failure zone ("" if unknown).
    pub zone: String,
    /// Bytes it offers.
    pub capacity: u64,
    /// Bytes it holds.
    pub used: u64,
    /// Pieces it holds.
    pub pieces: u64,
    /// Bytes given back by deletes since its store was created.
    pub freed: u64,
}

impl TryFrom<proto::ProviderStatus> for ProviderStatus {
    type Error = NetError;
    fn try_from(w: proto::ProviderStatus) -> Result<Self, NetError> {
        Ok(ProviderStatus {
            node: NodeId::from_slice(&w.node_id)?,
            zone: bounded_string(w.zone, MAX_ZONE_LEN, "zone")?,
            capacity: w.capacity,
            used: w.used,
            pieces: w.pieces,
            freed: w.freed,
        })
    }
}

impl From<ProviderStatus> for proto::ProviderStatus {
    fn from(s: ProviderStatus) -> Self {
        proto::ProviderStatus {
            node_id: s.node.to_wire(),
            zone: s.zone,
            capacity: s.capacity,
            used: s.used,
            pieces: s.pieces,
            freed: s.freed,
        }
    }
}

/// A provider's periodic report to a tracker (the signer is the provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Where the provider's service listens.
    pub address: String,
    /// Its failure zone ("" if unknown).
    pub zone: String,
    /// Bytes it offers.
    pub capacity: u64,
    /// Bytes it holds.
    pub used: u64,
    /// Pieces it holds.
    pub pieces: u64,
    /// Whether it is also an index provider (serves `wwt.v1.Index`).
    pub index: bool,
    /// Its operator's certificate, if it declares one.
    pub operator: Option<OperatorCert>,
}

impl TryFrom<proto::Heartbeat> for Heartbeat {
    type Error = NetError;
    fn try_from(w: proto::Heartbeat) -> Result<Self, NetError> {
        Ok(Heartbeat {
            address: address_from(w.address)?,
            zone: bounded_string(w.zone, MAX_ZONE_LEN, "zone")?,
            capacity: w.capacity,
            used: w.used,
            pieces: w.pieces,
            index: w.index,
            operator: match w.operator_certificate.is_empty() {
                true => None,
                false => Some(OperatorCert::from_bytes(&w.operator_certificate)?),
            },
        })
    }
}

impl From<Heartbeat> for proto::Heartbeat {
    fn from(h: Heartbeat) -> Self {
        proto::Heartbeat {
            address: h.address,
            zone: h.zone,
            capacity: h.capacity,
            used: h.used,
            pieces: h.pieces,
            index: h.index,
            operator_certificate: h
                .operator
                .map(|c| Bytes::from(c.to_bytes()))
                .unwrap_or_default(),
        }
    }
}

/// An operator's statement that a provider is one of its nodes: the operator key's ed25519
/// signature over `"wwt operator certificate v1" ‖ provider node id`. Trackers give a segment
/// at most one piece per operator, and vet at once the providers certified by the operator
/// keys in their configuration (a network's own operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorCert {
    /// The operator's public key.
    pub operator: NodeId,
    /// Its signature over the statement.
    pub signature: [u8; 64],
}

impl OperatorCert {
    const CONTEXT: &'static [u8] = b"wwt operator certificate v1";
    /// Encoded length: operator key (32) ‖ signature (64).
    pub const LEN: usize = 96;

    fn statement(provider: &NodeId) -> Vec<u8> {
        [Self::CONTEXT, &provider.0].concat()
    }

    /// The certificate `operator` issues for `provider`.
    pub fn issue(operator: &crate::Identity, provider: &NodeId) -> OperatorCert {
        OperatorCert {
            operator: operator.node_id(),
            signature: operator.sign_detached(&Self::statement(provider)),
        }
    }

    /// Whether this certificate is the operator's, for `provider`.
    pub fn certifies(&self, provider: &NodeId) -> bool {
        crate::auth::verify_detached(&self.operator, &Self::statement(provider), &self.signature)
    }

    /// Operator key ‖ signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.operator.0[..], &self.signature].concat()
    }

    /// Decodes what [`OperatorCert::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<OperatorCert, NetError> {
        if bytes.len() != Self::LEN {
            return Err(NetError::BadRequest(format!(
                "an operator certificate is {} bytes, not {}",
                Self::LEN,
                bytes.len()
            )));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[32..]);
        Ok(OperatorCert {
            operator: NodeId::from_slice(&bytes[..32])?,
            signature,
        })
    }
}

impl fmt::Display for OperatorCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl FromStr for OperatorCert {
    type Err = NetError;
    fn from_str(s: &str) -> Result<OperatorCert, NetError> {
        let bytes = hex::decode(s.trim())
            .map_err(|e| NetError::BadRequest(format!("an operator certificate is hex: {e}")))?;
        OperatorCert::from_bytes(&bytes)
    }
}

impl serde::Serialize for OperatorCert {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for OperatorCert {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OperatorCert, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A tracker's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The tracker's node id.
    pub tracker: NodeId,
    /// When it wants the next heartbeat, in milliseconds.
    pub interval_ms: u64,
}

impl TryFrom<proto::HeartbeatAck> for HeartbeatAck {
    type Error = NetError;
    fn try_from(w: proto::HeartbeatAck) -> Result<Self, NetError> {
        Ok(HeartbeatAck {
            tracker: NodeId::from_slice(&w.tracker)?,
            interval_ms: w.interval_ms,
        })
    }
}

impl From<HeartbeatAck> for proto::HeartbeatAck {
    fn from(a: HeartbeatAck) -> Self {
        proto::HeartbeatAck {
            tracker: a.tracker.to_wire(),
            interval_ms: a.interval_ms,
        }
    }
}

/// One piece a client wants to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSpec {
    /// Its index in the segment.
    pub index: u32,
    /// Its id.
    pub piece: PieceId,
    /// Its size in bytes.
    pub size: u64,
}

/// Ask a tracker to place the pieces of a segment on distinct providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveSegment {
    /// The segment.
    pub segment: SegmentId,
    /// Its pieces, with distinct indexes.
    pub pieces: Vec<PieceSpec>,
}

impl TryFrom<proto::ReserveRequest> for ReserveSegment {
    type Error = NetError;
    fn try_from(w: proto::ReserveRequest) -> Result<Self, NetError> {
        if w.pieces.is_empty() || w.pieces.len() > MAX_PIECES_PER_SEGMENT {
            return Err(NetError::BadRequest(format!(
                "a segment has 1..={MAX_PIECES_PER_SEGMENT} pieces, got {}",
                w.pieces.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let pieces = w
            .pieces
            .into_iter()
            .map(|p| {
                let spec = PieceSpec {
                    index: index_from(p.index)?,
                    piece: PieceId::from_slice(&p.piece_id)?,
                    size: piece_size_from(p.size)?,
                };
                if !seen.insert(spec.index) {
                    return Err(NetError::BadRequest(format!(
                        "piece index {} appears twice",
                        spec.index
                    )));
                }
                Ok(spec)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReserveSegment {
            segment: SegmentId::from_slice(&w.segment_id)?,
            pieces,
        })
    }
}

impl From<ReserveSegment> for proto::ReserveRequest {
    fn from(r: ReserveSegment) -> Self {
        proto::ReserveRequest {
            segment_id: r.segment.to_wire(),
            pieces: r
                .pieces
                .into_iter()
                .map(|p| proto::PieceSpec {
                    index: p.index,
                    piece_id: p.piece.to_wire(),
                    size: p.size,
                })
                .collect(),
        }
    }
}

/// One reserved piece and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPiece {
    /// The reservation to present to the provider.
    pub reservation: Reservation,
    /// The provider's address.
    pub address: String,
}

/// Where a tracker placed a segment's pieces (one distinct provider per piece).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The segment.
    pub segment: SegmentId,
    /// One entry per requested piece the tracker does not map yet, in request order.
    pub pieces: Vec<PlacedPiece>,
    /// Indices of requested pieces the tracker already maps (same piece id, at least one
    /// holder): not placed again.
    pub held: Vec<u32>,
}

impl TryFrom<proto::Placement> for Placement {
    type Error = NetError;
    fn try_from(w: proto::Placement) -> Result<Self, NetError> {
        Ok(Placement {
            segment: SegmentId::from_slice(&w.segment_id)?,
            pieces: w
                .pieces
                .into_iter()
                .map(|p| {
                    Ok(PlacedPiece {
                        reservation: required(p.reservation, "reservation")?.try_into()?,
                        address: address_from(p.address)?,
                    })
                })
                .collect::<Result<_, NetError>>()?,
            held: w
                .held
                .into_iter()
                .map(index_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<Placement> for proto::Placement {
    fn from(p: Placement) -> Self {
        proto::Placement {
            segment_id: p.segment.to_wire(),
            pieces: p
                .pieces
                .into_iter()
                .map(|p| proto::PlacedPiece {
                    reservation: Some(p.reservation.into()),
                    address: p.address,
                })
                .collect(),
            held: p.held,
        }
    }
}

/// Report stored pieces to the tracker that reserved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmStored {
    /// The providers' receipts.
    pub receipts: Vec<StoreReceipt>,
}

impl TryFrom<proto::ConfirmRequest> for ConfirmStored {
    type Error = NetError;
    fn try_from(w: proto::ConfirmRequest) -> Result<Self, NetError> {
        if w.receipts.len() > MAX_PIECES_PER_SEGMENT * 64 {
            return Err(NetError::BadRequest("too many receipts in one call".into()));
        }
        Ok(ConfirmStored {
            receipts: w
                .receipts
                .into_iter()
                .map(StoreReceipt::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<ConfirmStored> for proto::ConfirmRequest {
    fn from(c: ConfirmStored) -> Self {
        proto::ConfirmRequest {
            receipts: c.receipts.into_iter().map(Into::into).collect(),
        }
    }
}

/// How many receipts a tracker recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// Receipts recorded (already-known ones count too).
    pub recorded: u32,
}

impl From<proto::ConfirmResponse> for Confirmed {
    fn from(w: proto::ConfirmResponse) -> Self {
        Confirmed {
            recorded: w.recorded,
        }
    }
}

impl From<Confirmed> for proto::ConfirmResponse {
    fn from(c: Confirmed) -> Self {
        proto::ConfirmResponse {
            recorded: c.recorded,
        }
    }
}

/// Ask where a segment's pieces are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locate {
    /// The segment.
    pub segment: SegmentId,
}

impl TryFrom<proto::LocateRequest> for Locate {
    type Error = NetError;
    fn try_from(w: proto::LocateRequest) -> Result<Self, NetError> {
        Ok(Locate {
            segment: SegmentId::from_slice(&w.segment_id)?,
        })
    }
}

impl From<Locate> for proto::LocateRequest {
    fn from(l: Locate) -> Self {
        proto::LocateRequest {
            segment_id: l.segment.to_wire(),
        }
    }
}

/// The most pieces one [`DeletePieces`] names, and segments one [`Forget`].
pub const MAX_DELETE: usize = 1024;

/// The ids of a delete or forget request: 1..=[`MAX_DELETE`] of them, none twice.
fn delete_ids<T: Ord + Copy>(
    wire: &[Bytes],
    what: &str,
    parse: impl Fn(&[u8]) -> Result<T, NetError>,
) -> Result<Vec<T>, NetError> {
    if wire.is_empty() || wire.len() > MAX_DELETE {
        return Err(NetError::BadRequest(format!(
            "a request names 1 to {MAX_DELETE} {what}s, not {}",
            wire.len()
        )));
    }
    let mut ids = wire
        .iter()
        .map(|b| parse(b))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Free pieces (signed by their owner or a trusted tracker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePieces {
    /// The pieces, 1..=[`MAX_DELETE`] of them.
    pub pieces: Vec<PieceId>,
}

impl TryFrom<proto::DeleteRequest> for DeletePieces {
    type Error = NetError;
    fn try_from(w: proto::DeleteRequest) -> Result<Self, NetError> {
        Ok(DeletePieces {
            pieces: delete_ids(&w.piece_ids, "piece", PieceId::from_slice)?,
        })
    }
}

impl From<DeletePieces> for proto::DeleteRequest {
    fn from(d: DeletePieces) -> Self {
        proto::DeleteRequest {
            piece_ids: d.pieces.iter().map(PieceId::to_wire).collect(),
        }
    }
}

/// What a delete freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Pieces deleted by the request (not those gone already).
    pub pieces: u32,
    /// The bytes they held.
    pub freed: u64,
}

impl TryFrom<proto::DeleteResponse> for Deleted {
    type Error = NetError;
    fn try_from(w: proto::DeleteResponse) -> Result<Self, NetError> {
        Ok(Deleted {
            pieces: w.deleted,
            freed: w.freed,
        })
    }
}

impl From<Deleted> for proto::DeleteResponse {
    fn from(d: Deleted) -> Self {
        proto::DeleteResponse {
            deleted: d.pieces,
            freed: d.freed,
        }
    }
}

/// The owner deleted these segments: stop auditing them and delete their pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forget {
    /// The segments, 1..=[`MAX_DELETE`] of them.
    pub segments: Vec<SegmentId>,
}

impl TryFrom<proto::ForgetRequest> for Forget {
    type Error = NetError;
    fn try_from(w: proto::ForgetRequest) -> Result<Self, NetError> {
        Ok(Forget {
            segments: delete_ids(&w.segment_ids, "segment", SegmentId::from_slice)?,
        })
    }
}

impl From<Forget> for proto::ForgetRequest {
    fn from(f: Forget) -> Self {
        proto::ForgetRequest {
            segment_ids: f.segments.iter().map(SegmentId::to_wire).collect(),
        }
    }
}

/// A provider holding a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its node id.
    pub node: NodeId,
    /// Its address.
    pub address: String,
    /// Whether its heartbeats are recent.
    pub alive: bool,
}

/// Where one piece of a segment is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceLocation {
    /// Its index in the segment.
    pub index: u32,
    /// Its id.
    pub piece: PieceId,
    /// Its size.
    pub size: u64,
    /// The providers that confirmed holding it.
    pub holders: Vec<Holder>,
}

/// Where a segment's pieces are held, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentLocation {
    /// The segment.
    pub segment: SegmentId,
    /// Its confirmed pieces, by index.
    pub pieces: Vec<PieceLocation>,
    /// The segment's current manifest (the engine's encoding), kept up to date by repairs;
    /// empty if the segment was never entrusted to the tracker.
    pub manifest: Bytes,
    /// Its owner deleted the segment: nothing else is sent.
    pub deleted: bool,
}

impl TryFrom<proto::SegmentLocation> for SegmentLocation {
    type Error = NetError;
    fn try_from(w: proto::SegmentLocation) -> Result<Self, NetError> {
        Ok(SegmentLocation {
            segment: SegmentId::from_slice(&w.segment_id)?,
            pieces: w
                .pieces
                .into_iter()
                .map(|p| {
                    Ok(PieceLocation {
                        index: index_from(p.index)?,
                        piece: PieceId::from_slice(&p.piece_id)?,
                        size: piece_size_from(p.size)?,
                        holders: p
                            .holders
                            .into_iter()
                            .map(|h| {
                                Ok(Holder {
                                    node: NodeId::from_slice(&h.node_id)?,
                                    address: address_from(h.address)?,
                                    alive: h.alive,
                                })
                            })
                            .collect::<Result<_, NetError>>()?,
                    })
                })
                .collect::<Result<_, NetError>>()?,
            manifest: w.manifest,
            deleted: w.deleted,
        })
    }
}

impl From<SegmentLocation> for proto::SegmentLocation {
    fn from(s: SegmentLocation) -> Self {
        proto::SegmentLocation {
            segment_id: s.segment.to_wire(),
            pieces: s
                .pieces
                .into_iter()
                .map(|p| proto::PieceLocation {
                    index: p.index,
                    piece_id: p.piece.to_wire(),
                    size: p.size,
                    holders: p
                        .holders
                        .into_iter()
                        .map(|h| proto::Holder {
                            node_id: h.node.to_wire(),
                            address: h.address,
                            alive: h.alive,
                        })
                        .collect(),
                })
                .collect(),
            manifest: s.manifest,
            deleted: s.deleted,
        }
    }
}

/// A tracker's view of one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The provider's node id.
    pub node: NodeId,
    /// Its address.
    pub address: String,
    /// Its failure zone.
    pub zone: String,
    /// Bytes it offers.
    pub capacity: u64,
    /// Bytes it reported holding.
    pub used: u64,
    /// Pieces it reported holding.
    pub pieces: u64,
    /// Its credit, 0..=1000 per mille.
    pub credit: u32,
    /// When its last heartbeat arrived, in milliseconds since the Unix epoch.
    pub last_heartbeat_ms: u64,
    /// Whether that heartbeat is recent enough.
    pub alive: bool,
    /// Whether it said it is also an index provider.
    pub index: bool,
    /// Whether it is vetted: passed enough audits over enough time, or certified by one of
    /// the tracker's operators. Unvetted providers get at most one piece of a segment.
    pub vetted: bool,
    /// The operator that certified it, if any.
    pub operator: Option<NodeId>,
}

impl TryFrom<proto::ProviderRecord> for ProviderRecord {
    type Error = NetError;
    fn try_from(w: proto::ProviderRecord) -> Result<Self, NetError> {
        Ok(ProviderRecord {
            node: NodeId::from_slice(&w.node_id)?,
            address: address_from(w.address)?,
            zone: bounded_string(w.zone, MAX_ZONE_LEN, "zone")?,
            capacity: w.capacity,
            used: w.used,
            pieces: w.pieces,
            credit: w.credit.min(1000),
            last_heartbeat_ms: w.last_heartbeat_ms,
            alive: w.alive,
            index: w.index,
            vetted: w.vetted,
            operator: match w.operator.is_empty() {
                true => None,
                false => Some(NodeId::from_slice(&w.operator)?),
            },
        })
    }
}

impl From<ProviderRecord> for proto::ProviderRecord {
    fn from(r: ProviderRecord) -> Self {
        proto::ProviderRecord {
            node_id: r.node.to_wire(),
            address: r.address,
            zone: r.zone,
            capacity: r.capacity,
            used: r.used,
            pieces: r.pieces,
            credit: r.credit,
            last_heartbeat_ms: r.last_heartbeat_ms,
            alive: r.alive,
            index: r.index,
            vetted: r.vetted,
            operator: r.operator.map(|o| o.to_wire()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn reservation() -> impl Strategy<Value = Reservation> {
        (
            any::<[u8; 32]>(),
            1..=MAX_PIECE_SIZE,
            any::<[u8; 32]>(),
            0..MAX_PIECES_PER_SEGMENT as u32,
            any::<[[u8; 32]; 3]>(),
            any::<u64>(),
            any::<[[u8; 32]; 2]>(),
        )
            .prop_map(
                |(piece, size, segment, index, [provider, owner, tracker], expires_ms, tags)| {
                    Reservation {
                        piece: PieceId(piece),
                        size,
                        segment: SegmentId(segment),
                        index,
                        provider: NodeId(provider),
                        owner: NodeId(owner),
                        expires_ms,
                        tracker: NodeId(tracker),
                        tracker_tag: tags[0],
                        provider_tag: tags[1],
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn store_requests_survive_the_wire(r in reservation()) {
            let request = StorePiece { reservation: r };
            let signed = crate::Identity::from_secret([1; 32]).sign(request.clone()).unwrap();
            let bytes = proto::SignedRequest::from(signed).encode_to_vec();
            let wire = proto::SignedRequest::decode(bytes.as_slice()).unwrap();
            let (_, back) = crate::Verifier::default()
                .verify(crate::Signed::<StorePiece>::try_from(wire).unwrap())
                .unwrap();
            prop_assert_eq!(back, request);
        }

        #[test]
        fn placements_survive_the_wire(r in reservation(), address in "[a-z:/0-9.]{1,40}") {
            let placement = Placement {
                segment: r.segment,
                pieces: vec![PlacedPiece { reservation: r, address }],
                held: vec![1, 5],
            };
            let bytes = proto::Placement::from(placement.clone()).encode_to_vec();
            let back = Placement::try_from(proto::Placement::decode(bytes.as_slice()).unwrap()).unwrap();
            prop_assert_eq!(back, placement);
        }

        #[test]
        fn reservations_and_receipts_are_checked_by_their_parties_only(
            r in reservation(),
            flip in 0..32usize,
            secrets in any::<[[u8; 32]; 3]>(),
        ) {
            let [tracker, provider, other] = secrets.map(crate::Identity::from_secret);
            prop_assume!(other.node_id() != tracker.node_id());
            prop_assume!(other.node_id() != provider.node_id());
            let [t, p, o] = [&tracker, &provider, &other].map(PeerKeys::new);
            let r = Reservation { tracker: t.node_id(), provider: p.node_id(), ..r };
            let r = r.issue(&t).unwrap();
            prop_assert!(r.check_issued_by(&t).is_ok());
            prop_assert!(r.check_for_provider(&p).is_ok());
            // Nobody else takes it: another tracker or provider, or one named in it instead.
            prop_assert!(r.check_issued_by(&o).is_err());
            prop_assert!(r.check_for_provider(&o).is_err());
            let moved = Reservation { provider: o.node_id(), ..r.clone() };
            prop_assert!(moved.check_for_provider(&o).is_err());
            let claimed = Reservation { tracker: o.node_id(), ..r.clone() };
            prop_assert!(claimed.check_issued_by(&o).is_err());
            prop_assert!(claimed.check_for_provider(&p).is_err());
            // Any change, or any flipped bit of a tag, is refused.
            let longer = Reservation { expires_ms: r.expires_ms.wrapping_add(1), ..r.clone() };
            prop_assert!(longer.check_issued_by(&t).is_err());
            prop_assert!(longer.check_for_provider(&p).is_err());
            let mut forged = r.clone();
            forged.tracker_tag[flip] ^= 1;
            prop_assert!(forged.check_issued_by(&t).is_err());
            prop_assert!(forged.check_for_provider(&p).is_ok(), "each check reads its own tag");
            let mut forged = r.clone();
            forged.provider_tag[flip] ^= 1;
            prop_assert!(forged.check_for_provider(&p).is_err());
            prop_assert!(forged.check_issued_by(&t).is_ok(), "each check reads its own tag");
            // The provider shares the key of its tag, so it can make one for itself; the
            // tracker still does not take such a reservation as its own.
            let mut selfmade = longer.clone();
            let shared = p.shared(&t.node_id()).unwrap();
            selfmade.provider_tag = *tag(&shared, &[&selfmade.tagged_bytes()]).as_bytes();
            prop_assert!(selfmade.check_for_provider(&p).is_ok());
            prop_assert!(selfmade.check_issued_by(&t).is_err());
            // Receipts: the named provider's is taken, another's or a changed one is not.
            let receipt = StoreReceipt::issue(r.clone(), &p).unwrap();
            prop_assert!(receipt.check(&t).is_ok());
            let tag = StoreReceipt::issue(r.clone(), &o).unwrap().tag;
            let by_other = StoreReceipt { tag, ..receipt.clone() };
            prop_assert!(by_other.check(&t).is_err());
            let mut flipped = receipt.clone();
            flipped.tag[flip] ^= 1;
            prop_assert!(flipped.check(&t).is_err());
            let other_reservation = StoreReceipt { reservation: longer, ..receipt };
            prop_assert!(other_reservation.check(&t).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(w) = proto::StoreRequest::decode(bytes.as_slice()) {
                let _ = StorePiece::try_from(w);
            }
            if let Ok(w) = proto::ReserveRequest::decode(bytes.as_slice()) {
                let _ = ReserveSegment::try_from(w);
            }
            if let Ok(w) = proto::SegmentLocation::decode(bytes.as_slice()) {
                let _ = SegmentLocation::try_from(w);
            }
            if let Ok(w) = proto::ReadRequest::decode(bytes.as_slice()) {
                let _ = ReadPiece::try_from(w);
            }
        }
    }

    #[test]
    fn ids_refuse_wrong_lengths_and_round_trip_hex() {
        assert!(matches!(
            PieceId::from_slice(&[1; 31]),
            Err(NetError::BadRequest(_))
        ));
        let id = SegmentId([7; 32]);
        assert_eq!(id.to_string().parse::<SegmentId>().unwrap(), id);
        assert!("zz".parse::<NodeId>().is_err());
    }

    #[test]
    fn read_ranges_are_checked() {
        let req = |offset, len| proto::ReadRequest {
            piece_id: Bytes::from(vec![0; 32]),
            offset,
            len,
        };
        assert_eq!(ReadPiece::try_from(req(0, 0)).unwrap().range, None);
        assert!(ReadPiece::try_from(req(5, 0)).is_err());
        assert!(ReadPiece::try_from(req(u64::MAX, 2)).is_err());
        let r = ReadPiece::try_from(req(5, 10)).unwrap().range.unwrap();
        assert_eq!((r.offset, r.end()), (5, 15));
    }

    #[test]
    fn reserve_refuses_duplicate_indexes_and_oversize_pieces() {
        let spec = |index, size| proto::PieceSpec {
            index,
            piece_id: Bytes::from(vec![1; 32]),
            size,
        };
        let req = |pieces| proto::ReserveRequest {
            segment_id: Bytes::from(vec![2; 32]),
            pieces,
        };
        assert!(ReserveSegment::try_from(req(vec![spec(0, 10), spec(1, 10)])).is_ok());
        assert!(ReserveSegment::try_from(req(vec![spec(0, 10), spec(0, 10)])).is_err());
        assert!(ReserveSegment::try_from(req(vec![spec(0, MAX_PIECE_SIZE + 1)])).is_err());
        assert!(ReserveSegment::try_from(req(vec![])).is_err());
    }
}
