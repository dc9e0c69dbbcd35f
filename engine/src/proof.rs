//! Chunk proofs: any byte range of a piece, with the Bao (BLAKE3 tree) proof that it belongs
//! to the piece hash. Anyone holding the hash can verify; no key is needed.
//!
//! A provider keeps a piece's outboard tree (about 6 % of the piece) or recomputes it; a
//! proof is a Bao slice: the 1 KiB chunks covering the range and the tree nodes above them.

use std::io::{Cursor, Read};

use crate::error::{Error, Result};
use crate::piece::PieceHash;

/// The outboard Bao tree of `piece`, and its hash (equal to [`PieceHash::of`]).
pub fn outboard(piece: &[u8]) -> (Vec<u8>, PieceHash) {
    let (tree, hash) = bao::encode::outboard(piece);
    (tree, PieceHash(*hash.as_bytes()))
}

/// The length of the outboard tree of a piece of `size` bytes.
pub fn outboard_len(size: u64) -> u64 {
    u64::try_from(bao::encode::outboard_size(size)).unwrap_or(u64::MAX)
}

/// The proof for bytes `start..start + len` of `piece`, given its outboard tree.
pub fn prove(piece: &[u8], tree: &[u8], start: u64, len: u64) -> Result<Vec<u8>> {
    if len == 0
        || start
            .checked_add(len)
            .is_none_or(|end| end > piece.len() as u64)
    {
        return Err(Error::OutOfRange {
            start,
            len,
            size: piece.len() as u64,
        });
    }
    let mut slice = Vec::new();
    bao::encode::SliceExtractor::new_outboard(Cursor::new(piece), Cursor::new(tree), start, len)
        .read_to_end(&mut slice)
        .map_err(|e| Error::Malformed {
            what: "outboard tree",
            why: e.to_string(),
        })?;
    Ok(slice)
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn proofs_verify_and_fail_on_tampering(
            piece in proptest::collection::vec(any::<u8>(), 1..20_000),
            a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let (tree, hash) = outboard(&piece);
            prop_assert_eq!(hash, PieceHash::of(&piece));
            let (x, y) = (a.index(piece.len()), b.index(piece.len()));
            let (start, len) = (x.min(y) as u64, (x.max(y) - x.min(y) + 1) as u64);
            let proof = prove(&piece, &tree, start, len).unwrap();
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
            let forged = prove(&corrupt, &tree, start, len).unwrap();
            prop_assert!(verify(&hash, start, len, &forged).is_err());
            let mut other = hash.0;
            other[0] ^= 1;
            prop_assert!(verify(&PieceHash(other), start, len, &proof).is_err());
        }
    }

    #[test]
    fn a_range_outside_the_piece_is_refused() {
        let piece = vec![7u8; 3000];
        let (tree, _) = outboard(&piece);
        assert!(prove(&piece, &tree, 2990, 20).is_err());
        assert!(prove(&piece, &tree, 0, 0).is_err());
    }
}
