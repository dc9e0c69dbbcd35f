//! Chunk proofs: any byte range of a piece, with the Bao (BLAKE3 tree) proof that it belongs
//! to the piece hash. Anyone holding the hash can verify; no key is needed.
//!
//! A proof is a Bao slice (the `bao` crate's combined slice format): the 1 KiB chunks covering
//! the range and the tree nodes above them. The prover does not keep Bao's full outboard tree
//! (a node per chunk pair, 6 % of the piece, built one chunk at a time at about 0.85 GB/s);
//! it keeps the chaining value of each 16 KiB group of the piece ([`groups`], 0.2 % of the
//! piece, computed in one SIMD BLAKE3 pass at the speed of a plain hash), and builds the nodes
//! of a slice from them and from the groups the range covers, which it reads alone.

use std::io::{Read, Seek, SeekFrom};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::error::{Error, Result};
use crate::piece::PieceHash;

/// BLAKE3's chunk: the leaves of the tree, and the granularity of a proof.
const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// The bytes of one group: 16 chunks, a power of two, so every group is a subtree of the
/// piece's BLAKE3 tree (the last one possibly shorter).
const GROUP_LEN: u64 = 16 * CHUNK_LEN;

const CV_LEN: usize = 32;

/// The chaining value of the subtree `bytes` starting at byte `offset` of its piece.
fn subtree_cv(offset: u64, bytes: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(offset)
        .update(bytes)
        .finalize_non_root()
}

/// The chaining values of the 16 KiB groups of `piece`, 32 bytes each in order
/// ([`groups_len`] bytes), and the piece hash, in one pass.
pub fn groups(piece: &[u8]) -> (Vec<u8>, PieceHash) {
    let mut hasher = GroupHasher::default();
    hasher.update(piece);
    hasher.finalize()
}

/// [`groups`] over a piece that arrives in parts, in order: the same chaining values and hash
/// whatever the parts' sizes.
#[derive(Debug, Clone, Default)]
pub struct GroupHasher {
    /// The chaining values of the groups before the current one.
    groups: Vec<u8>,
    /// The current group's bytes so far (a full group is merged only once more bytes come, as
    /// a piece of one group hashes to that group's root, not its chaining value).
    current: blake3::Hasher,
    /// Bytes in the current group.
    filled: u64,
    /// Bytes so far.
    size: u64,
}

impl GroupHasher {
    /// Hashes the piece's next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.filled == GROUP_LEN {
                self.groups
                    .extend_from_slice(&self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
                self.current.set_input_offset(self.size);
                self.filled = 0;
            }
            let take = bytes.len().min((GROUP_LEN - self.filled) as usize);
            self.current.update(&bytes[..take]);
            self.filled += take as u64;
            self.size += take as u64;
            bytes = &bytes[take..];
        }
    }

    /// The chaining values of the piece's groups and the piece hash.
    pub fn finalize(mut self) -> (Vec<u8>, PieceHash) {
        let size = self.size;
        // One group is the whole tree: its root is not a merge of chaining values.
        if size <= GROUP_LEN {
            if size > 0 {
                self.groups
                    .extend_from_slice(&self.current.finalize_non_root());
            }
            return (self.groups, PieceHash(*self.current.finalize().as_bytes()));
        }
        self.groups
            .extend_from_slice(&self.current.finalize_non_root());
        let left = left_subtree_len(size);
        let (l, r) = (
            merged_cv(&self.groups, 0, left),
            merged_cv(&self.groups, left, size - left),
        );
        let hash = PieceHash(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes());
        (self.groups, hash)
    }
}

/// The length of the group chaining values of a piece of `size` bytes.
pub fn groups_len(size: u64) -> u64 {
    size.div_ceil(GROUP_LEN) * CV_LEN as u64
}

/// The chaining value of the subtree `start..start + len`, which starts at a group boundary and
/// is one whole group, the last group, or more groups, from the group chaining values.
fn merged_cv(groups: &[u8], start: u64, len: u64) -> ChainingValue {
    if len <= GROUP_LEN {
        let at = (start / GROUP_LEN) as usize * CV_LEN;
        let mut cv = [0u8; CV_LEN];
        cv.copy_from_slice(&groups[at..at + CV_LEN]);
        return cv;
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &merged_cv(groups, start, left),
        &merged_cv(groups, start + left, len - left),
        Mode::Hash,
    )
}

/// Builds one slice, reading the piece a group at a time.
struct Prover<'a, R> {
    piece: R,
    size: u64,
    groups: &'a [u8],
    start: u64,
    end: u64,
    /// The last group read: its index and bytes.
    group: Option<(u64, Vec<u8>)>,
    out: Vec<u8>,
}

impl<R: Read + Seek> Prover<'_, R> {
    /// `len` bytes at `start`, which lie within one group.
    fn bytes(&mut self, start: u64, len: u64) -> Result<&[u8]> {
        let index = start / GROUP_LEN;
        if self.group.as_ref().is_none_or(|(i, _)| *i != index) {
            let from = index * GROUP_LEN;
            let n = GROUP_LEN.min(self.size - from);
            let mut buf = vec![0u8; n as usize];
            let io = |e: std::io::Error| Error::Malformed {
                what: "piece",
                why: format!("reading bytes {from}+{n}: {e}"),
            };
            self.piece.seek(SeekFrom::Start(from)).map_err(io)?;
            self.piece.read_exact(&mut buf).map_err(io)?;
            self.group = Some((index, buf));
        }
        let (_, buf) = self.group.as_ref().expect("the group was just read");
        let at = (start % GROUP_LEN) as usize;
        Ok(&buf[at..at + len as usize])
    }

    fn cv(&mut self, start: u64, len: u64) -> Result<ChainingValue> {
        if start.is_multiple_of(GROUP_LEN) && (len >= GROUP_LEN || start + len == self.size) {
            return Ok(merged_cv(self.groups, start, len));
        }
        let bytes = self.bytes(start, len)?;
        Ok(subtree_cv(start, bytes))
    }

    /// Appends the slice of the subtree `start..start + len` (which overlaps the range): its
    /// node, then the slices of its children that overlap the range; or its chunk.
    fn encode(&mut self, start: u64, len: u64) -> Result<()> {
        if len <= CHUNK_LEN {
            let chunk = self.bytes(start, len)?.to_vec();
            self.out.extend_from_slice(&chunk);
            return Ok(());
        }
        let left = left_subtree_len(len);
        let l = self.cv(start, left)?;
        let r = self.cv(start + left, len - left)?;
        self.out.extend_from_slice(&l);
        self.out.extend_from_slice(&r);
        if self.start < start + left {
            self.encode(start, left)?;
        }
        if self.end > start + left {
            self.encode(start + left, len - left)?;
        }
        Ok(())
    }
}

/// The proof for bytes `start..start + len` of a piece of `size` bytes, read from `piece`,
/// given its group chaining values ([`groups`]). Reads only the groups the range covers.
pub fn prove<R: Read + Seek>(
    piece: R,
    size: u64,
    groups: &[u8],
    start: u64,
    len: u64,
) -> Result<Vec<u8>> {
    if len == 0 || start.checked_add(len).is_none_or(|end| end > size) {
        return Err(Error::OutOfRange { start, len, size });
    }
    if groups.len() as u64 != groups_len(size) {
        return Err(Error::Malformed {
            what: "group chaining values",
            why: format!(
                "{} bytes for a {size}-byte piece, which has {}",
                groups.len(),
                groups_len(size)
            ),
        });
    }
    let mut prover = Prover {
        piece,
        size,
        groups,
        start,
        end: start + len,
        group: None,
        out: size.to_le_bytes().to_vec(),
    };
    prover.encode(0, size)?;
    Ok(prover.out)
}

/// Checks a proof for bytes `start..start + len` against the piece hash and returns those
/// bytes; fails with [`Error::BadProof`] on any tampering.
pub fn verify(hash: &PieceHash, start: u64, len: u64, proof: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let root = bao::Hash::from(hash.0);
    bao::decode::SliceDecoder::new(proof, &root, start, len)
        .read_to_end(&mut out)
        .map_err(|_| Error::BadProof {
            piece: hex::encode(hash.0),
            start,
            len,
        })?;
    if out.len() as u64 != len {
        return Err(Error::BadProof {
            piece: hex::encode(hash.0),
            start,
            len,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn piece(size: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; size];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// The proof as the `bao` crate slices it from its full outboard tree.
    fn bao_slice(piece: &[u8], start: u64, len: u64) -> Vec<u8> {
        let (tree, _) = bao::encode::outboard(piece);
        let mut slice = Vec::new();
        bao::encode::SliceExtractor::new_outboard(
            Cursor::new(piece),
            Cursor::new(tree),
            start,
            len,
        )
        .read_to_end(&mut slice)
        .unwrap();
        slice
    }

    fn prove_bytes(piece: &[u8], groups: &[u8], start: u64, len: u64) -> Result<Vec<u8>> {
        prove(Cursor::new(piece), piece.len() as u64, groups, start, len)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn proofs_are_bao_slices_verify_and_fail_on_tampering(
            size in 1usize..150_000, seed in any::<u64>(),
            a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let piece = piece(size, seed);
            let (groups, hash) = groups(&piece);
            prop_assert_eq!(hash, PieceHash::of(&piece));
            prop_assert_eq!(groups.len() as u64, groups_len(size as u64));
            let (x, y) = (a.index(size), b.index(size));
            let (start, len) = (x.min(y) as u64, (x.max(y) - x.min(y) + 1) as u64);
            let proof = prove_bytes(&piece, &groups, start, len).unwrap();
            prop_assert_eq!(&proof, &bao_slice(&piece, start, len));
            let got = verify(&hash, start, len, &proof).unwrap();
            prop_assert_eq!(&got[..], &piece[start as usize..(start + len) as usize]);

            // A flipped proof byte is refused, or falls outside what the decoder reads:
            // never does it yield other bytes.
            let mut bad = proof.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x40;
            if let Ok(bytes) = verify(&hash, start, len, &bad) {
                prop_assert_eq!(&bytes[..], &piece[start as usize..(start + len) as usize]);
            }
            // A provider whose stored bytes changed inside the range cannot prove them.
            let mut corrupt = piece.clone();
            corrupt[(start + flip.index(len as usize) as u64) as usize] ^= 0x40;
            let forged = prove_bytes(&corrupt, &groups, start, len).unwrap();
            prop_assert!(verify(&hash, start, len, &forged).is_err());
            let mut other = hash.0;
            other[0] ^= 1;
            prop_assert!(verify(&PieceHash(other), start, len, &proof).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn a_piece_hashed_in_parts_gives_the_same_groups_and_hash(
            size in 0usize..100_000, seed in any::<u64>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let piece = piece(size, seed);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(size + 1)).collect();
            cuts.extend([0, size]);
            cuts.sort_unstable();
            let mut hasher = GroupHasher::default();
            for part in cuts.windows(2) {
                hasher.update(&piece[part[0]..part[1]]);
            }
            let (groups, hash) = hasher.finalize();
            prop_assert_eq!(hash, PieceHash::of(&piece));
            prop_assert_eq!(groups.len() as u64, groups_len(size as u64));
            let whole: Vec<u8> = piece
                .chunks(GROUP_LEN as usize)
                .enumerate()
                .flat_map(|(i, g)| subtree_cv(i as u64 * GROUP_LEN, g))
                .collect();
            prop_assert_eq!(groups, whole);
        }
    }

    #[test]
    fn proofs_at_chunk_and_group_boundaries_are_bao_slices() {
        let c = CHUNK_LEN as usize;
        let g = GROUP_LEN as usize;
        for size in [
            1,
            c - 1,
            c,
            c + 1,
            g - 1,
            g,
            g + 1,
            2 * g,
            2 * g + c,
            5 * g + 3,
        ] {
            let piece = piece(size, size as u64);
            let (groups, hash) = groups(&piece);
            assert_eq!(hash, PieceHash::of(&piece), "size {size}");
            for start in [0, c - 1, c, g - 1, g, g + c, size - 1] {
                for len in [1, c, g, size] {
                    if start < size && start + len <= size {
                        let (s, l) = (start as u64, len as u64);
                        let proof = prove_bytes(&piece, &groups, s, l).unwrap();
                        assert_eq!(proof, bao_slice(&piece, s, l), "size {size} {start}+{len}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_range_outside_the_piece_or_the_wrong_groups_are_refused() {
        let piece = vec![7u8; 3000];
        let (groups, _) = groups(&piece);
        assert!(prove_bytes(&piece, &groups, 2990, 20).is_err());
        assert!(prove_bytes(&piece, &groups, 0, 0).is_err());
        assert!(prove_bytes(&piece, &groups[1..], 0, 10).is_err());
    }
}
