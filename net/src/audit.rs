//! Domain types of audits, validated on receipt: challenges to providers, segments entrusted to
//! a tracker, owners' complaints, and the tracker's audit report (log entries and credit).

use bytes::Bytes;

use crate::NetError;
use crate::proto;
use crate::types::{
    ByteRange, MAX_PIECE_SIZE, NodeId, PieceId, SegmentId, bounded_string, index_from,
};

/// The most sentinel positions one challenge may ask for.
pub const MAX_CHALLENGE_POSITIONS: usize = 256;
/// The largest chunk a chunk challenge may ask for.
pub const MAX_CHALLENGE_CHUNK: u64 = 64 << 10;
/// The largest manifest a segment may be entrusted with (256 pieces of 40 bytes and a header).
const MAX_MANIFEST: usize = 64 + 40 * 256;
/// The longest complaint reason and log detail kept.
const MAX_TEXT: usize = 512;
/// The most log entries one report returns.
pub const MAX_REPORT_ENTRIES: u32 = 1000;

/// What a challenge asks a provider to prove about a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeKind {
    /// The piece's bytes at these positions (sentinels, secretly).
    Sentinels(Vec<u64>),
    /// A byte range with its Bao proof against the piece id.
    Chunk(ByteRange),
}

/// A tracker's challenge on one piece (the signer is the tracker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The piece.
    pub piece: PieceId,
    /// What to answer.
    pub kind: ChallengeKind,
}

impl TryFrom<proto::ChallengeRequest> for Challenge {
    type Error = NetError;
    fn try_from(w: proto::ChallengeRequest) -> Result<Self, NetError> {
        let piece = PieceId::from_slice(&w.piece_id)?;
        let kind = if w.positions.is_empty() {
            if w.len == 0 || w.len > MAX_CHALLENGE_CHUNK {
                return Err(NetError::BadRequest(format!(
                    "a chunk challenge asks for 1..={MAX_CHALLENGE_CHUNK} bytes, not {}",
                    w.len
                )));
            }
            if w.offset
                .checked_add(w.len)
                .is_none_or(|e| e > MAX_PIECE_SIZE)
            {
                return Err(NetError::BadRequest(
                    "chunk challenge ends past the largest piece size".into(),
                ));
            }
            ChallengeKind::Chunk(ByteRange {
                offset: w.offset,
                len: w.len,
            })
        } else {
            if w.positions.len() > MAX_CHALLENGE_POSITIONS {
                return Err(NetError::BadRequest(format!(
                    "a sentinel challenge asks for at most {MAX_CHALLENGE_POSITIONS} positions, not {}",
                    w.positions.len()
                )));
            }
            if w.positions.iter().any(|&p| p >= MAX_PIECE_SIZE) {
                return Err(NetError::BadRequest(
                    "challenged position past the largest piece size".into(),
                ));
            }
            ChallengeKind::Sentinels(w.positions)
        };
        Ok(Challenge { piece, kind })
    }
}

impl From<Challenge> for proto::ChallengeRequest {
    fn from(c: Challenge) -> Self {
        let (positions, offset, len) = match c.kind {
            ChallengeKind::Sentinels(p) => (p, 0, 0),
            ChallengeKind::Chunk(r) => (Vec::new(), r.offset, r.len),
        };
        proto::ChallengeRequest {
            piece_id: c.piece.to_wire(),
            positions,
            offset,
            len,
        }
    }
}

/// A provider's answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeAnswer {
    /// The piece.
    pub piece: PieceId,
    /// One byte per position, or the chunk.
    pub data: Bytes,
    /// For a chunk: the Bao slice proving `data`.
    pub proof: Bytes,
}

impl ChallengeAnswer {
    /// Bytes on the wire, for the benchmark's accounting.
    pub fn wire_len(&self) -> usize {
        use prost::Message;
        proto::ChallengeResponse::from(self.clone()).encoded_len()
    }
}

impl TryFrom<proto::ChallengeResponse> for ChallengeAnswer {
    type Error = NetError;
    fn try_from(w: proto::ChallengeResponse) -> Result<Self, NetError> {
        if w.data.len() as u64 > MAX_CHALLENGE_CHUNK {
            return Err(NetError::BadRequest("challenge answer too long".into()));
        }
        Ok(ChallengeAnswer {
            piece: PieceId::from_slice(&w.piece_id)?,
            data: w.data,
            proof: w.proof,
        })
    }
}

impl From<ChallengeAnswer> for proto::ChallengeResponse {
    fn from(a: ChallengeAnswer) -> Self {
        proto::ChallengeResponse {
            piece_id: a.piece.to_wire(),
            data: a.data,
            proof: a.proof,
        }
    }
}

/// An owner hands a tracker what it needs to audit and repair a segment (never the row key).
#[derive(Clone, PartialEq, Eq)]
pub struct Entrust {
    /// The segment.
    pub segment: SegmentId,
    /// Its manifest in the engine's encoding (the tracker decodes and checks it).
    pub manifest: Bytes,
    /// The table's audit key.
    pub audit_key: [u8; 32],
}

impl std::fmt::Debug for Entrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entrust")
            .field("segment", &self.segment)
            .field("manifest", &self.manifest.len())
            .field("audit_key", &"(redacted)")
            .finish()
    }
}

impl TryFrom<proto::EntrustRequest> for Entrust {
    type Error = NetError;
    fn try_from(w: proto::EntrustRequest) -> Result<Self, NetError> {
        if w.manifest.is_empty() || w.manifest.len() > MAX_MANIFEST {
            return Err(NetError::BadRequest(format!(
                "manifest is {} bytes, expected 1..={MAX_MANIFEST}",
                w.manifest.len()
            )));
        }
        Ok(Entrust {
            segment: SegmentId::from_slice(&w.segment_id)?,
            manifest: w.manifest,
            audit_key: <[u8; 32]>::try_from(w.audit_key.as_ref()).map_err(|_| {
                NetError::BadRequest(format!(
                    "audit key must be 32 bytes, got {}",
                    w.audit_key.len()
                ))
            })?,
        })
    }
}

impl From<Entrust> for proto::EntrustRequest {
    fn from(e: Entrust) -> Self {
        proto::EntrustRequest {
            segment_id: e.segment.to_wire(),
            manifest: e.manifest,
            audit_key: Bytes::copy_from_slice(&e.audit_key),
        }
    }
}

/// The tracker's answer to [`Entrust`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entrusted {
    /// Pieces of the segment now under audit.
    pub pieces: u32,
}

impl From<proto::EntrustResponse> for Entrusted {
    fn from(w: proto::EntrustResponse) -> Self {
        Entrusted { pieces: w.pieces }
    }
}

impl From<Entrusted> for proto::EntrustResponse {
    fn from(e: Entrusted) -> Self {
        proto::EntrustResponse { pieces: e.pieces }
    }
}

/// A tracker's whole record of a segment, for the segment's other tracker.
#[derive(Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The segment.
    pub segment: SegmentId,
    /// Its owner.
    pub owner: NodeId,
    /// Its mapped pieces, each with its holders.
    pub pieces: Vec<MirroredPiece>,
    /// The manifest and audit key, once the segment is entrusted.
    pub entrusted: Option<(Bytes, [u8; 32])>,
    /// The owner deleted the segment (then nothing else is sent).
    pub forgotten: bool,
}

/// One mapped piece in a [`Mirror`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredPiece {
    /// Its index in the segment.
    pub index: u32,
    /// Its id.
    pub piece: PieceId,
    /// Its size.
    pub size: u64,
    /// The providers that confirmed holding it.
    pub holders: Vec<NodeId>,
}

/// The most pieces, and holders per piece, a [`Mirror`] may carry.
const MAX_MIRRORED: usize = 256;

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("segment", &self.segment)
            .field("pieces", &self.pieces.len())
            .field("entrusted", &self.entrusted.is_some())
            .field("forgotten", &self.forgotten)
            .finish()
    }
}

impl TryFrom<proto::MirrorRequest> for Mirror {
    type Error = NetError;
    fn try_from(w: proto::MirrorRequest) -> Result<Self, NetError> {
        if w.pieces.len() > MAX_MIRRORED || w.pieces.iter().any(|p| p.holders.len() > MAX_MIRRORED)
        {
            return Err(NetError::BadRequest(format!(
                "a mirrored segment has at most {MAX_MIRRORED} pieces of {MAX_MIRRORED} holders"
            )));
        }
        let entrusted = match (w.manifest.is_empty(), w.audit_key.is_empty()) {
            (true, true) => None,
            _ => {
                let e = Entrust::try_from(proto::EntrustRequest {
                    segment_id: w.segment_id.clone(),
                    manifest: w.manifest,
                    audit_key: w.audit_key,
                })?;
                Some((e.manifest, e.audit_key))
            }
        };
        Ok(Mirror {
            segment: SegmentId::from_slice(&w.segment_id)?,
            owner: NodeId::from_slice(&w.owner)?,
            pieces: w
                .pieces
                .into_iter()
                .map(|p| {
                    Ok(MirroredPiece {
                        index: index_from(p.index)?,
                        piece: PieceId::from_slice(&p.piece)?,
                        size: p.size,
                        holders: p
                            .holders
                            .iter()
                            .map(|h| NodeId::from_slice(h))
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, NetError>>()?,
            entrusted,
            forgotten: w.forgotten,
        })
    }
}

impl From<Mirror> for proto::MirrorRequest {
    fn from(m: Mirror) -> Self {
        let (manifest, audit_key) = match m.entrusted {
            Some((manifest, key)) => (manifest, Bytes::copy_from_slice(&key)),
            None => (Bytes::new(), Bytes::new()),
        };
        proto::MirrorRequest {
            segment_id: m.segment.to_wire(),
            owner: m.owner.to_wire(),
            pieces: m
                .pieces
                .into_iter()
                .map(|p| proto::MirroredPiece {
                    index: p.index,
                    piece: p.piece.to_wire(),
                    size: p.size,
                    holders: p.holders.iter().map(NodeId::to_wire).collect(),
                })
                .collect(),
            manifest,
            audit_key,
            forgotten: m.forgotten,
        }
    }
}

/// A tracker renews its lease on the segments it audits first ([`Mirror`]'s counterpart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease;

impl TryFrom<proto::LeaseRequest> for Lease {
    type Error = NetError;
    fn try_from(_: proto::LeaseRequest) -> Result<Self, NetError> {
        Ok(Lease)
    }
}

impl From<Lease> for proto::LeaseRequest {
    fn from(_: Lease) -> Self {
        proto::LeaseRequest {}
    }
}

/// An owner reports that a holder withheld a piece or served wrong bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// The segment.
    pub segment: SegmentId,
    /// The piece's index.
    pub index: u32,
    /// The holder complained of.
    pub provider: NodeId,
    /// What it did.
    pub reason: String,
}

impl TryFrom<proto::ComplainRequest> for Complaint {
    type Error = NetError;
    fn try_from(w: proto::ComplainRequest) -> Result<Self, NetError> {
        Ok(Complaint {
            segment: SegmentId::from_slice(&w.segment_id)?,
            index: index_from(w.index)?,
            provider: NodeId::from_slice(&w.provider)?,
            reason: bounded_string(w.reason, MAX_TEXT, "reason")?,
        })
    }
}

impl From<Complaint> for proto::ComplainRequest {
    fn from(c: Complaint) -> Self {
        proto::ComplainRequest {
            segment_id: c.segment.to_wire(),
            index: c.index,
            provider: c.provider.to_wire(),
            reason: c.reason,
        }
    }
}

/// One entry of a tracker's hash-linked audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its position in the log, from 0.
    pub seq: u64,
    /// The audit clock's time, in milliseconds.
    pub time_ms: u64,
    /// The provider concerned.
    pub provider: NodeId,
    /// The piece concerned.
    pub piece: PieceId,
    /// `sentinel`, `chunk`, `complaint`, `repair` or `refresh`.
    pub kind: String,
    /// `pass`, `fail`, `missed`, `done` or `error`.
    pub outcome: String,
    /// Free text: why it failed, where a piece went.
    pub detail: String,
    /// BLAKE3 over the previous entry's hash and this entry's fields.
    pub hash: [u8; 32],
}

impl TryFrom<proto::AuditEntry> for AuditEntry {
    type Error = NetError;
    fn try_from(w: proto::AuditEntry) -> Result<Self, NetError> {
        Ok(AuditEntry {
            seq: w.seq,
            time_ms: w.time_ms,
            provider: NodeId::from_slice(&w.provider)?,
            piece: PieceId::from_slice(&w.piece_id)?,
            kind: bounded_string(w.kind, 16, "kind")?,
            outcome: bounded_string(w.outcome, 16, "outcome")?,
            detail: bounded_string(w.detail, MAX_TEXT, "detail")?,
            hash: <[u8; 32]>::try_from(w.hash.as_ref())
                .map_err(|_| NetError::BadRequest("entry hash must be 32 bytes".into()))?,
        })
    }
}

impl From<AuditEntry> for proto::AuditEntry {
    fn from(e: AuditEntry) -> Self {
        proto::AuditEntry {
            seq: e.seq,
            time_ms: e.time_ms,
            provider: e.provider.to_wire(),
            piece_id: e.piece.to_wire(),
            kind: e.kind,
            outcome: e.outcome,
            detail: e.detail,
            hash: Bytes::copy_from_slice(&e.hash),
        }
    }
}

/// What a tracker's audits say about one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditRecord {
    /// The provider.
    pub node: NodeId,
    /// Its credit, 0..=1000 per mille.
    pub credit: u32,
    /// Challenges passed.
    pub passed: u64,
    /// Challenges answered wrongly.
    pub failed: u64,
    /// Challenges not answered by their deadline.
    pub missed: u64,
    /// Challenges that proved nothing either way (auth, clock or internal errors).
    pub inconclusive: u64,
    /// Whether it is vetted by audits.
    pub vetted: bool,
    /// Audit-clock milliseconds during which it answered.
    pub uptime_ms: u64,
    /// Piece bytes held × audit-clock seconds.
    pub byte_seconds: u64,
    /// Its pieces under audit.
    pub pieces: u64,
}

impl TryFrom<proto::ProviderCredit> for CreditRecord {
    type Error = NetError;
    fn try_from(w: proto::ProviderCredit) -> Result<Self, NetError> {
        Ok(CreditRecord {
            node: NodeId::from_slice(&w.node_id)?,
            credit: w.credit.min(1000),
            passed: w.passed,
            failed: w.failed,
            missed: w.missed,
            inconclusive: w.inconclusive,
            vetted: w.vetted,
            uptime_ms: w.uptime_ms,
            byte_seconds: w.byte_seconds,
            pieces: w.pieces,
        })
    }
}

impl From<CreditRecord> for proto::ProviderCredit {
    fn from(c: CreditRecord) -> Self {
        proto::ProviderCredit {
            node_id: c.node.to_wire(),
            credit: c.credit,
            passed: c.passed,
            failed: c.failed,
            missed: c.missed,
            inconclusive: c.inconclusive,
            vetted: c.vetted,
            uptime_ms: c.uptime_ms,
            byte_seconds: c.byte_seconds,
            pieces: c.pieces,
        }
    }
}

/// A tracker's audit report: the latest log entries, every provider's credit, repair counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditReport {
    /// The latest entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Per provider, sorted by node id.
    pub credits: Vec<CreditRecord>,
    /// Entries in the whole log.
    pub log_length: u64,
    /// The hash of the last entry (zeros for an empty log).
    pub head: [u8; 32],
    /// Pieces waiting for repair.
    pub repairs_pending: u64,
    /// Pieces repaired since the log began.
    pub repairs_done: u64,
}

impl TryFrom<proto::AuditReport> for AuditReport {
    type Error = NetError;
    fn try_from(w: proto::AuditReport) -> Result<Self, NetError> {
        if w.entries.len() > MAX_REPORT_ENTRIES as usize {
            return Err(NetError::BadRequest("too many audit entries".into()));
        }
        Ok(AuditReport {
            entries: w
                .entries
                .into_iter()
                .map(AuditEntry::try_from)
                .collect::<Result<_, _>>()?,
            credits: w
                .credits
                .into_iter()
                .map(CreditRecord::try_from)
                .collect::<Result<_, _>>()?,
            log_length: w.log_length,
            head: if w.head.is_empty() {
                [0; 32]
            } else {
                <[u8; 32]>::try_from(w.head.as_ref())
                    .map_err(|_| NetError::BadRequest("log head must be 32 bytes".into()))?
            },
            repairs_pending: w.repairs_pending,
            repairs_done: w.repairs_done,
        })
    }
}

impl From<AuditReport> for proto::AuditReport {
    fn from(r: AuditReport) -> Self {
        proto::AuditReport {
            entries: r.entries.into_iter().map(Into::into).collect(),
            credits: r.credits.into_iter().map(Into::into).collect(),
            log_length: r.log_length,
            head: Bytes::copy_from_slice(&r.head),
            repairs_pending: r.repairs_pending,
            repairs_done: r.repairs_done,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    proptest! {
        #[test]
        fn challenges_survive_the_wire(
            piece: [u8; 32],
            positions in prop::collection::vec(0..MAX_PIECE_SIZE, 0..MAX_CHALLENGE_POSITIONS),
            offset in 0..MAX_PIECE_SIZE / 2, len in 1..=MAX_CHALLENGE_CHUNK,
        ) {
            let kind = if positions.is_empty() {
                ChallengeKind::Chunk(ByteRange { offset, len })
            } else {
                ChallengeKind::Sentinels(positions)
            };
            let c = Challenge { piece: PieceId(piece), kind };
            let bytes = proto::ChallengeRequest::from(c.clone()).encode_to_vec();
            let back = Challenge::try_from(proto::ChallengeRequest::decode(bytes.as_slice()).unwrap()).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(w) = proto::ChallengeRequest::decode(bytes.as_slice()) {
                let _ = Challenge::try_from(w);
            }
            if let Ok(w) = proto::EntrustRequest::decode(bytes.as_slice()) {
                let _ = Entrust::try_from(w);
            }
            if let Ok(w) = proto::AuditReport::decode(bytes.as_slice()) {
                let _ = AuditReport::try_from(w);
            }
        }
    }

    #[test]
    fn oversized_challenges_are_refused() {
        let req = |positions: Vec<u64>, len| proto::ChallengeRequest {
            piece_id: Bytes::from(vec![0; 32]),
            positions,
            offset: 0,
            len,
        };
        assert!(Challenge::try_from(req(vec![1; MAX_CHALLENGE_POSITIONS + 1], 0)).is_err());
        assert!(Challenge::try_from(req(vec![], 0)).is_err());
        assert!(Challenge::try_from(req(vec![], MAX_CHALLENGE_CHUNK + 1)).is_err());
        assert!(Challenge::try_from(req(vec![MAX_PIECE_SIZE], 0)).is_err());
    }

    #[test]
    fn entrusting_shows_no_key_in_debug() {
        let e = Entrust {
            segment: SegmentId([1; 32]),
            manifest: Bytes::from_static(b"m"),
            audit_key: [0xab; 32],
        };
        let shown = format!("{e:?}");
        // The key's bytes would print as decimal (171) or hex (ab).
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
    }
}
