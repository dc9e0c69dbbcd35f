//! Segments to pieces and back: Reed-Solomon coding over whitened, watermarked pieces.
//!
//! The code is systematic: data piece `i` holds bytes `i·shard_len..(i+1)·shard_len` of the
//! segment (zero-padded at the end), so a row is read from the data pieces that hold its
//! bytes alone ([`plan_read`]). Otherwise any k intact pieces decode the segment; a piece
//! whose bytes do not match its hash counts as missing.

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::{Error, Result};
use crate::keys::AuditKey;
use crate::piece::{PieceHash, PieceView, sentinel_count};
use crate::segment::{Extent, Segment, SegmentId};

/// Reed-Solomon parameters: k data pieces and m parity pieces per segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodingParams {
    /// Data pieces (k): any k pieces decode a segment.
    pub data: usize,
    /// Parity pieces (m): a segment survives the loss of any m pieces.
    pub parity: usize,
}

impl Default for CodingParams {
    fn default() -> Self {
        Self { data: 4, parity: 2 }
    }
}

impl CodingParams {
    /// Checked parameters: k ≥ 1 and k + m ≤ 256.
    pub fn new(data: usize, parity: usize) -> Result<Self> {
        if data == 0 || data + parity > 256 {
            return Err(Error::InvalidParams { data, parity });
        }
        Ok(Self { data, parity })
    }

    /// k + m.
    pub fn total(&self) -> usize {
        self.data + self.parity
    }
}

/// One stored piece as the manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceInfo {
    /// Its hash, which is also its id.
    pub hash: PieceHash,
    /// Its whitening generation: a repaired piece gets a new one.
    pub generation: u64,
}

/// The longest shard a manifest may name (1 GiB): far above any segment the engine writes
/// (megabytes; pieces travel in one message of at most 64 MiB), and small enough that what is
/// sized by it (a piece's sentinel layout) stays bounded.
pub const MAX_SHARD_LEN: u64 = 1 << 30;

/// What a reader needs to find, check and decode the pieces of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentManifest {
    /// The segment.
    pub segment: SegmentId,
    /// Its coding parameters.
    pub params: CodingParams,
    /// Its length before padding.
    pub segment_len: u64,
    /// The length of each shard.
    pub shard_len: u64,
    /// Sentinels per piece.
    pub sentinels: u32,
    /// The k + m pieces, data pieces first.
    pub pieces: Vec<PieceInfo>,
}

impl SegmentManifest {
    /// The length of each piece.
    pub fn piece_len(&self) -> u64 {
        self.shard_len + self.sentinels as u64
    }

    /// The audit view of piece `index`: sentinels and whitening.
    pub fn view(&self, audit: &AuditKey, index: usize) -> PieceView {
        PieceView::new(
            audit,
            self.segment,
            index,
            self.pieces[index].generation,
            self.shard_len,
            self.sentinels,
        )
    }

    fn mismatch(&self, what: impl Into<String>) -> Error {
        Error::ManifestMismatch {
            segment: hex::encode(self.segment.0),
            what: what.into(),
        }
    }

    /// This manifest with every piece `other` names in a later generation (a repair re-coded
    /// it), where `other` describes the same segment the same way; as it is otherwise.
    pub fn merged(&self, other: &SegmentManifest) -> SegmentManifest {
        let mut out = self.clone();
        let same = other.segment == self.segment
            && other.params == self.params
            && other.segment_len == self.segment_len
            && other.shard_len == self.shard_len
            && other.sentinels == self.sentinels
            && other.pieces.len() == self.pieces.len();
        if same {
            for (mine, theirs) in out.pieces.iter_mut().zip(&other.pieces) {
                if theirs.generation > mine.generation {
                    *mine = *theirs;
                }
            }
        }
        out
    }

    /// Encodes the manifest (little-endian, fixed layout; see the source for the order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 4 + 20 + 40 * self.pieces.len());
        out.extend_from_slice(&self.segment.0);
        out.extend_from_slice(&(self.params.data as u16).to_le_bytes());
        out.extend_from_slice(&(self.params.parity as u16).to_le_bytes());
        out.extend_from_slice(&self.segment_len.to_le_bytes());
        out.extend_from_slice(&self.shard_len.to_le_bytes());
        out.extend_from_slice(&self.sentinels.to_le_bytes());
        for p in &self.pieces {
            out.extend_from_slice(&p.hash.0);
            out.extend_from_slice(&p.generation.to_le_bytes());
        }
        out
    }

    /// Decodes and checks what [`SegmentManifest::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Malformed {
            what: "segment manifest",
            why: why.to_string(),
        };
        let mut r = crate::Reader::new(bytes);
        let segment = SegmentId(r.array().ok_or_else(|| bad("short segment id"))?);
        let data = r.u16().ok_or_else(|| bad("short parameters"))? as usize;
        let parity = r.u16().ok_or_else(|| bad("short parameters"))? as usize;
        let params = CodingParams::new(data, parity)?;
        let segment_len = r.u64().ok_or_else(|| bad("short length"))?;
        let shard_len = r.u64().ok_or_else(|| bad("short shard length"))?;
        let sentinels = r.u32().ok_or_else(|| bad("short sentinel count"))?;
        // Checked before anything is sized by them: a manifest comes from the index provider
        // or, at a tracker, from any owner, and an audit allocates per sentinel.
        if shard_len > MAX_SHARD_LEN {
            return Err(bad("shards longer than the largest the engine writes"));
        }
        if sentinels != sentinel_count(shard_len) {
            return Err(bad("a sentinel count other than the shard length gives"));
        }
        if shard_len
            .checked_mul(data as u64)
            .is_none_or(|n| n < segment_len)
        {
            return Err(bad("shards too short for the segment"));
        }
        if r.remaining() != params.total() * 40 {
            return Err(bad("piece list does not match the parameters"));
        }
        let mut pieces = Vec::with_capacity(params.total());
        for _ in 0..params.total() {
            let hash = PieceHash(r.array().ok_or_else(|| bad("short piece hash"))?);
            let generation = r.u64().ok_or_else(|| bad("short generation"))?;
            pieces.push(PieceInfo { hash, generation });
        }
        Ok(Self {
            segment,
            params,
            segment_len,
            shard_len,
            sentinels,
            pieces,
        })
    }
}

/// A segment coded into pieces.
#[derive(Clone, Debug)]
pub struct EncodedSegment {
    /// How to read it back.
    pub manifest: SegmentManifest,
    /// The k + m pieces, in manifest order.
    pub pieces: Vec<Vec<u8>>,
}

/// Pieces rebuilt by repair, and the manifest that names them.
#[derive(Clone, Debug)]
pub struct Rebuilt {
    /// The manifest with the new pieces' hashes and generations.
    pub manifest: SegmentManifest,
    /// `(index, piece)` for each rebuilt piece.
    pub pieces: Vec<(usize, Vec<u8>)>,
}

/// Codes segments with one set of parameters. Keep one around: it holds the RS matrices.
#[derive(Debug)]
pub struct Codec {
    params: CodingParams,
    rs: Option<ReedSolomon>,
}

impl Codec {
    /// A codec for `params`.
    pub fn new(params: CodingParams) -> Result<Self> {
        let rs = if params.parity == 0 {
            None
        } else {
            Some(ReedSolomon::new(params.data, params.parity).map_err(|_| {
                Error::InvalidParams {
                    data: params.data,
                    parity: params.parity,
                }
            })?)
        };
        Ok(Self { params, rs })
    }

    /// Its parameters.
    pub fn params(&self) -> CodingParams {
        self.params
    }

    /// Codes `segment` into k + m pieces in generation 0.
    pub fn encode(&self, audit: &AuditKey, segment: &Segment) -> EncodedSegment {
        let k = self.params.data;
        let shard_len = segment.bytes.len().div_ceil(k).max(1);
        // Full shards are read in place; only the tail is copied and zero-padded.
        let full = segment.bytes.len() / shard_len;
        let mut tail = segment.bytes[full * shard_len..].to_vec();
        tail.resize((k - full) * shard_len, 0);
        let data: Vec<&[u8]> = segment.bytes[..full * shard_len]
            .chunks(shard_len)
            .chain(tail.chunks(shard_len))
            .collect();
        let mut parity = vec![vec![0u8; shard_len]; self.params.parity];
        if let Some(rs) = &self.rs {
            rs.encode_sep(&data, &mut parity)
                .expect("shards are equal-sized and match the parameters");
        }
        let sentinels = sentinel_count(shard_len as u64);
        let mut pieces = Vec::with_capacity(self.params.total());
        let mut infos = Vec::with_capacity(self.params.total());
        for (index, shard) in data
            .iter()
            .copied()
            .chain(parity.iter().map(Vec::as_slice))
            .enumerate()
        {
            let view = PieceView::new(audit, segment.id, index, 0, shard_len as u64, sentinels);
            let piece = view.build(shard);
            infos.push(PieceInfo {
                hash: PieceHash::of(&piece),
                generation: 0,
            });
            pieces.push(piece);
        }
        EncodedSegment {
            manifest: SegmentManifest {
                segment: segment.id,
                params: self.params,
                segment_len: segment.bytes.len() as u64,
                shard_len: shard_len as u64,
                sentinels,
                pieces: infos,
            },
            pieces,
        }
    }

    /// Recovers the shards of the segment from whatever pieces are at hand (`None` for a
    /// missing one): each piece is checked against its hash, data pieces are preferred, and
    /// only k pieces are opened. Returns all k + m slots, data shards filled.
    fn recover_shards(
        &self,
        audit: &AuditKey,
        manifest: &SegmentManifest,
        pieces: &[Option<&[u8]>],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if manifest.params != self.params {
            return Err(manifest.mismatch("coded with other parameters than this codec"));
        }
        if pieces.len() != self.params.total() {
            return Err(manifest.mismatch(format!(
                "{} pieces given for a {}+{} segment",
                pieces.len(),
                self.params.data,
                self.params.parity
            )));
        }
        let k = self.params.data;
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; self.params.total()];
        let mut intact = 0;
        for (index, piece) in pieces.iter().enumerate() {
            if intact == k {
                break;
            }
            let Some(piece) = piece else { continue };
            if PieceHash::of(piece) != manifest.pieces[index].hash {
                continue;
            }
            shards[index] = Some(manifest.view(audit, index).open(piece)?);
            intact += 1;
        }
        if intact < k {
            return Err(Error::NotEnoughPieces {
                segment: hex::encode(manifest.segment.0),
                intact,
                needed: k,
            });
        }
        if let Some(rs) = &self.rs
            && shards[..k].iter().any(Option::is_none)
        {
            rs.reconstruct_data(&mut shards)
                .map_err(|e| manifest.mismatch(e.to_string()))?;
        }
        Ok(shards)
    }

    /// Decodes the segment from any k intact pieces.
    pub fn decode(
        &self,
        audit: &AuditKey,
        manifest: &SegmentManifest,
        pieces: &[Option<&[u8]>],
    ) -> Result<Vec<u8>> {
        let shards = self.recover_shards(audit, manifest, pieces)?;
        let mut out = Vec::with_capacity(manifest.shard_len as usize * self.params.data);
        for shard in shards.iter().take(self.params.data).flatten() {
            out.extend_from_slice(shard);
        }
        out.truncate(manifest.segment_len as usize);
        Ok(out)
    }

    /// Repair: rebuilds pieces `which` from any k intact pieces, each in a new generation (fresh
    /// whitening and sentinels), and returns the updated manifest with the new pieces. Needs
    /// only the audit key, never the row key.
    pub fn rebuild(
        &self,
        audit: &AuditKey,
        manifest: &SegmentManifest,
        pieces: &[Option<&[u8]>],
        which: &[usize],
    ) -> Result<Rebuilt> {
        if let Some(&bad) = which.iter().find(|&&i| i >= self.params.total()) {
            return Err(manifest.mismatch(format!("no piece {bad} to rebuild")));
        }
        let mut shards = self.recover_shards(audit, manifest, pieces)?;
        if let Some(rs) = &self.rs
            && which.iter().any(|&i| i >= self.params.data)
        {
            rs.reconstruct(&mut shards)
                .map_err(|e| manifest.mismatch(e.to_string()))?;
        }
        let mut updated = manifest.clone();
        let mut rebuilt = Vec::with_capacity(which.len());
        for &index in which {
            let shard = shards[index]
                .as_deref()
                .ok_or_else(|| manifest.mismatch(format!("piece {index} was not recovered")))?;
            updated.pieces[index].generation += 1;
            let piece = updated.view(audit, index).build(shard);
            updated.pieces[index].hash = PieceHash::of(&piece);
            rebuilt.push((index, piece));
        }
        Ok(Rebuilt {
            manifest: updated,
            pieces: rebuilt,
        })
    }
}

/// One ranged read of one data piece, part of reading an extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeRead {
    /// The data piece.
    pub piece: usize,
    /// First shard byte wanted.
    pub shard_start: u64,
    /// Shard bytes wanted.
    pub len: u64,
    /// First piece byte to fetch.
    pub piece_start: u64,
    /// Piece bytes to fetch (the shard bytes and the sentinels among them).
    pub piece_len: u64,
}

/// The ranged reads of data pieces that together hold `extent` of the segment, in order.
pub fn plan_read(
    audit: &AuditKey,
    manifest: &SegmentManifest,
    extent: &Extent,
) -> Result<Vec<RangeRead>> {
    if extent.segment != manifest.segment {
        return Err(manifest.mismatch("extent of another segment"));
    }
    if extent.len == 0
        || extent
            .offset
            .checked_add(extent.len)
            .is_none_or(|end| end > manifest.segment_len)
    {
        return Err(Error::OutOfRange {
            start: extent.offset,
            len: extent.len,
            size: manifest.segment_len,
        });
    }
    let mut reads = Vec::new();
    let mut at = extent.offset;
    let end = extent.offset + extent.len;
    while at < end {
        let piece = (at / manifest.shard_len) as usize;
        let shard_start = at % manifest.shard_len;
        let len = (manifest.shard_len - shard_start).min(end - at);
        let (piece_start, piece_len) = manifest.view(audit, piece).piece_range(shard_start, len)?;
        reads.push(RangeRead {
            piece,
            shard_start,
            len,
            piece_start,
            piece_len,
        });
        at += len;
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::MasterKey;
    use crate::proof;
    use proptest::prelude::*;

    fn audit() -> AuditKey {
        MasterKey::from_bytes([9; 32]).table("t").audit
    }

    fn segment(bytes: Vec<u8>) -> Segment {
        Segment {
            id: SegmentId([4; 32]),
            bytes,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn any_k_pieces_in_any_order_decode(
            bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
            k in 1usize..8, m in 0usize..5,
            order in Just(()).prop_perturb(|_, mut rng| {
                let mut idx: Vec<usize> = (0..12).collect();
                for i in (1..idx.len()).rev() { idx.swap(i, rng.random_range(0..=i)); }
                idx
            }),
        ) {
            let codec = Codec::new(CodingParams::new(k, m).unwrap()).unwrap();
            let seg = segment(bytes.clone());
            let enc = codec.encode(&audit(), &seg);
            prop_assert_eq!(enc.pieces.len(), k + m);
            // Keep a random k of the k + m pieces.
            let keep: Vec<usize> = order.iter().copied().filter(|&i| i < k + m).take(k).collect();
            let given: Vec<Option<&[u8]>> = (0..k + m)
                .map(|i| keep.contains(&i).then(|| enc.pieces[i].as_slice()))
                .collect();
            prop_assert_eq!(codec.decode(&audit(), &enc.manifest, &given).unwrap(), bytes);
            let back = SegmentManifest::from_bytes(&enc.manifest.to_bytes()).unwrap();
            prop_assert_eq!(back, enc.manifest);
        }

        #[test]
        fn ranged_reads_return_exactly_the_extent(
            bytes in proptest::collection::vec(any::<u8>(), 1..30_000),
            a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
        ) {
            let codec = Codec::new(CodingParams::default()).unwrap();
            let enc = codec.encode(&audit(), &segment(bytes.clone()));
            let (x, y) = (a.index(bytes.len()), b.index(bytes.len()));
            let extent = Extent { segment: SegmentId([4; 32]), offset: x.min(y) as u64, len: (x.max(y) - x.min(y) + 1) as u64 };
            let mut got = Vec::new();
            for r in plan_read(&audit(), &enc.manifest, &extent).unwrap() {
                prop_assert!(r.piece < 4, "ranged reads use data pieces only");
                let piece = &enc.pieces[r.piece];
                let (groups, _) = proof::groups(piece);
                let proof = proof::prove(std::io::Cursor::new(piece), piece.len() as u64, &groups, r.piece_start, r.piece_len).unwrap();
                let hash = enc.manifest.pieces[r.piece].hash;
                let fetched = proof::verify(&hash, r.piece_start, r.piece_len, &proof).unwrap();
                got.extend(enc.manifest.view(&audit(), r.piece).open_range(r.shard_start, r.len, &fetched).unwrap());
            }
            prop_assert_eq!(&got[..], &bytes[extent.offset as usize..(extent.offset + extent.len) as usize]);
        }
    }

    #[test]
    fn corrupted_pieces_count_as_missing() {
        let codec = Codec::new(CodingParams::default()).unwrap();
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let mut enc = codec.encode(&audit(), &segment(bytes.clone()));
        enc.pieces[0][100] ^= 1;
        enc.pieces[3][7] ^= 1;
        let all: Vec<Option<&[u8]>> = enc.pieces.iter().map(|p| Some(p.as_slice())).collect();
        assert_eq!(codec.decode(&audit(), &enc.manifest, &all).unwrap(), bytes);
        enc.pieces[5][0] ^= 1;
        let all: Vec<Option<&[u8]>> = enc.pieces.iter().map(|p| Some(p.as_slice())).collect();
        let err = codec.decode(&audit(), &enc.manifest, &all).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotEnoughPieces {
                    intact: 3,
                    needed: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rebuilt_pieces_decode_and_differ_from_the_lost_ones() {
        let codec = Codec::new(CodingParams::default()).unwrap();
        let bytes: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let enc = codec.encode(&audit(), &segment(bytes.clone()));
        let survivors: Vec<Option<&[u8]>> = enc
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (i != 1 && i != 4).then_some(p.as_slice()))
            .collect();
        let Rebuilt {
            manifest,
            pieces: rebuilt,
        } = codec
            .rebuild(&audit(), &enc.manifest, &survivors, &[1, 4])
            .unwrap();
        assert_eq!(manifest.pieces[1].generation, 1);
        assert_ne!(manifest.pieces[1].hash, enc.manifest.pieces[1].hash);
        let mut pieces: Vec<Option<&[u8]>> = vec![None; 6];
        for (i, p) in &rebuilt {
            pieces[*i] = Some(p.as_slice());
        }
        pieces[0] = Some(&enc.pieces[0]);
        pieces[2] = Some(&enc.pieces[2]);
        assert_eq!(codec.decode(&audit(), &manifest, &pieces).unwrap(), bytes);
    }

    #[test]
    fn bad_parameters_and_manifests_are_refused() {
        assert!(CodingParams::new(0, 2).is_err());
        assert!(CodingParams::new(200, 57).is_err());
        assert!(CodingParams::new(200, 56).is_ok());
        let codec = Codec::new(CodingParams::default()).unwrap();
        let enc = codec.encode(&audit(), &segment(vec![1; 100]));
        let bytes = enc.manifest.to_bytes();
        assert!(SegmentManifest::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut zero_k = bytes.clone();
        zero_k[32] = 0;
        assert!(SegmentManifest::from_bytes(&zero_k).is_err());
        // Sentinel counts and shard lengths size an audit's work: only what encode writes.
        let with = |shard_len: u64, sentinels: u32| {
            let mut m = enc.manifest.clone();
            m.shard_len = shard_len;
            m.segment_len = shard_len;
            m.sentinels = sentinels;
            SegmentManifest::from_bytes(&m.to_bytes())
        };
        assert!(with(enc.manifest.shard_len, u32::MAX).is_err());
        assert!(with(enc.manifest.shard_len, enc.manifest.sentinels + 1).is_err());
        assert!(with(MAX_SHARD_LEN + 1, sentinel_count(MAX_SHARD_LEN + 1)).is_err());
        assert!(with(u64::MAX / 8, u32::MAX).is_err());
        assert!(with(MAX_SHARD_LEN, sentinel_count(MAX_SHARD_LEN)).is_ok());
    }
}
