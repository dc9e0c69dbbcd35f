//! Pieces: a coded shard, whitened with its own keystream and watermarked with sentinels.
//!
//! A piece is the shard XORed with a keyed BLAKE3 keystream (seekable: byte `o` of the shard
//! uses keystream byte `o`), with `s` one-byte sentinels inserted at positions drawn from a
//! PRF. Both the keystream key and the sentinel seed come from the table's audit key and the
//! piece's (segment, index, generation), so a tracker holding the audit key can place
//! challenges and check answers, and two copies of one shard never look alike.
//!
//! Layout: the PRF draws `s` insertion points `x_i` in `0..=shard_len`, sorted; sentinel `i`
//! sits just before shard byte `x_i`, at piece position `x_i + i`. Shard byte `o` sits at
//! `o + #{i : x_i <= o}`.

use std::fmt;

use crate::error::{Error, Result};
use crate::keys::{AuditKey, PieceSecrets};
use crate::segment::SegmentId;

/// One sentinel per this many shard bytes (at least [`MIN_SENTINELS`]): 0.4 % overhead.
pub const SENTINEL_SPACING: u64 = 256;
/// Sentinels in even the smallest piece.
pub const MIN_SENTINELS: u64 = 32;

/// How many sentinels a piece of a `shard_len`-byte shard carries.
pub fn sentinel_count(shard_len: u64) -> u32 {
    (shard_len / SENTINEL_SPACING).clamp(MIN_SENTINELS, u32::MAX as u64) as u32
}

/// A piece's id: the BLAKE3 hash of its bytes (also the root of its Bao tree).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceHash(pub [u8; 32]);

impl PieceHash {
    /// The hash of `piece`.
    pub fn of(piece: &[u8]) -> Self {
        Self(*blake3::hash(piece).as_bytes())
    }
}

impl fmt::Debug for PieceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PieceHash({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for PieceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Everything the audit key says about one piece: where its sentinels are, what they hold,
/// and its whitening keystream. Built by the writer, the reader and the auditing tracker.
#[derive(Clone)]
pub struct PieceView {
    shard_len: u64,
    insert: Vec<u64>,
    values: Vec<u8>,
    whiten: [u8; 32],
}

impl fmt::Debug for PieceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PieceView")
            .field("shard_len", &self.shard_len)
            .field("sentinels", &self.insert.len())
            .finish_non_exhaustive()
    }
}

fn xor_from(dst: &mut [u8], a: &[u8], b: &[u8]) {
    for (d, (x, y)) in dst.iter_mut().zip(a.iter().zip(b)) {
        *d = x ^ y;
    }
}

impl PieceView {
    /// The view of piece `index` of `segment` in `generation`, for a shard of `shard_len`
    /// bytes carrying `sentinels` sentinels.
    pub fn new(
        audit: &AuditKey,
        segment: SegmentId,
        index: usize,
        generation: u64,
        shard_len: u64,
        sentinels: u32,
    ) -> Self {
        Self::from_secrets(
            &audit.piece(&segment.0, index, generation),
            shard_len,
            sentinels,
        )
    }

    pub(crate) fn from_secrets(secrets: &PieceSecrets, shard_len: u64, sentinels: u32) -> Self {
        let count = sentinels as usize;
        let mut stream = vec![0u8; count * 9];
        blake3::Hasher::new_keyed(&secrets.sentinels)
            .finalize_xof()
            .fill(&mut stream);
        let (draws, values) = stream.split_at(count * 8);
        let mut insert: Vec<u64> = draws
            .chunks_exact(8)
            .map(|c| {
                let r = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
                // Lemire's multiply-shift: uniform in 0..=shard_len.
                ((r as u128 * (shard_len as u128 + 1)) >> 64) as u64
            })
            .collect();
        insert.sort_unstable();
        Self {
            shard_len,
            insert,
            values: values.to_vec(),
            whiten: secrets.whiten,
        }
    }

    /// Length of the shard.
    pub fn shard_len(&self) -> u64 {
        self.shard_len
    }

    /// Length of the piece: shard plus sentinels.
    pub fn piece_len(&self) -> u64 {
        self.shard_len + self.insert.len() as u64
    }

    /// Number of sentinels.
    pub fn sentinel_count(&self) -> usize {
        self.insert.len()
    }

    /// The piece position of sentinel `i`.
    pub fn sentinel_position(&self, i: usize) -> u64 {
        self.insert[i] + i as u64
    }

    /// Sentinels inserted before shard byte `o`.
    fn sentinels_before(&self, o: u64) -> usize {
        self.insert.partition_point(|&x| x <= o)
    }

    /// The piece byte range `(start, len)` that holds shard bytes `start..start + len`.
    pub fn piece_range(&self, start: u64, len: u64) -> Result<(u64, u64)> {
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.shard_len)
            || len == 0
        {
            return Err(Error::OutOfRange {
                start,
                len,
                size: self.shard_len,
            });
        }
        let first = start + self.sentinels_before(start) as u64;
        let last = start + len - 1;
        let last = last + self.sentinels_before(last) as u64;
        Ok((first, last + 1 - first))
    }

    fn keystream(&self, start: u64, len: usize) -> Vec<u8> {
        let mut ks = vec![0u8; len];
        let mut reader = blake3::Hasher::new_keyed(&self.whiten).finalize_xof();
        reader.set_position(start);
        reader.fill(&mut ks);
        ks
    }

    /// Builds the piece of `shard`: whiten, then insert the sentinels.
    pub fn build(&self, shard: &[u8]) -> Vec<u8> {
        debug_assert_eq!(shard.len() as u64, self.shard_len);
        let ks = self.keystream(0, shard.len());
        let mut piece = vec![0u8; self.piece_len() as usize];
        let mut from = 0usize;
        let mut at = 0usize;
        for (&x, &value) in self.insert.iter().zip(&self.values) {
            let to = x as usize;
            let n = to - from;
            xor_from(&mut piece[at..at + n], &shard[from..to], &ks[from..to]);
            at += n;
            piece[at] = value;
            at += 1;
            from = to;
        }
        xor_from(&mut piece[at..], &shard[from..], &ks[from..]);
        piece
    }

    /// Recovers shard bytes `start..start + len` from the piece bytes of
    /// [`PieceView::piece_range`]`(start, len)`: strip sentinels, undo whitening.
    pub fn open_range(&self, start: u64, len: u64, piece_bytes: &[u8]) -> Result<Vec<u8>> {
        let (pstart, plen) = self.piece_range(start, len)?;
        if piece_bytes.len() as u64 != plen {
            return Err(Error::OutOfRange {
                start: pstart,
                len: piece_bytes.len() as u64,
                size: plen,
            });
        }
        let ks = self.keystream(start, len as usize);
        let mut out = vec![0u8; len as usize];
        let first = self.sentinels_before(start);
        let last = self.sentinels_before(start + len - 1);
        // Sentinels first..last sit inside the range, before shard bytes insert[i].
        let mut from = 0usize; // in out / ks
        let mut at = 0usize; // in piece_bytes
        for &x in &self.insert[first..last] {
            let to = (x - start) as usize;
            let n = to - from;
            xor_from(&mut out[from..to], &piece_bytes[at..at + n], &ks[from..to]);
            at += n + 1;
            from = to;
        }
        xor_from(&mut out[from..], &piece_bytes[at..], &ks[from..]);
        Ok(out)
    }

    /// Recovers the whole shard from the whole piece.
    pub fn open(&self, piece: &[u8]) -> Result<Vec<u8>> {
        if piece.len() as u64 != self.piece_len() {
            return Err(Error::OutOfRange {
                start: 0,
                len: piece.len() as u64,
                size: self.piece_len(),
            });
        }
        if self.shard_len == 0 {
            return Ok(Vec::new());
        }
        // Sentinels may stand before the first and after the last shard byte.
        let (start, len) = self.piece_range(0, self.shard_len)?;
        self.open_range(
            0,
            self.shard_len,
            &piece[start as usize..(start + len) as usize],
        )
    }

    /// The piece positions a challenge on sentinels `which` asks for.
    pub fn challenge(&self, which: &[u32]) -> Vec<u64> {
        which
            .iter()
            .map(|&i| self.sentinel_position(i as usize))
            .collect()
    }

    /// Whether `answer` holds the sentinel values of sentinels `which`, in order.
    pub fn verify(&self, which: &[u32], answer: &[u8]) -> bool {
        which.len() == answer.len()
            && which
                .iter()
                .zip(answer)
                .all(|(&i, &b)| self.values.get(i as usize) == Some(&b))
    }
}

/// A provider's answer to a sentinel challenge: the piece's bytes at `positions`.
pub fn answer_challenge(piece: &[u8], positions: &[u64]) -> Result<Vec<u8>> {
    positions
        .iter()
        .map(|&p| {
            piece.get(p as usize).copied().ok_or(Error::OutOfRange {
                start: p,
                len: 1,
                size: piece.len() as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::MasterKey;
    use proptest::prelude::*;

    fn view(shard_len: u64, generation: u64) -> PieceView {
        let audit = MasterKey::from_bytes([3; 32]).table("t").audit;
        PieceView::new(
            &audit,
            SegmentId([1; 32]),
            2,
            generation,
            shard_len,
            sentinel_count(shard_len),
        )
    }

    proptest! {
        #[test]
        fn build_then_open_any_range_round_trips(
            shard in proptest::collection::vec(any::<u8>(), 1..5000),
            a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
        ) {
            let v = view(shard.len() as u64, 0);
            let piece = v.build(&shard);
            prop_assert_eq!(piece.len() as u64, v.piece_len());
            prop_assert_eq!(v.open(&piece).unwrap(), shard.clone());
            let (x, y) = (a.index(shard.len()), b.index(shard.len()));
            let (start, end) = (x.min(y), x.max(y) + 1);
            let (ps, pl) = v.piece_range(start as u64, (end - start) as u64).unwrap();
            let got = v
                .open_range(start as u64, (end - start) as u64, &piece[ps as usize..(ps + pl) as usize])
                .unwrap();
            prop_assert_eq!(&got[..], &shard[start..end]);
        }

        #[test]
        fn sentinel_challenge_passes_intact_and_fails_on_any_altered_byte(
            shard in proptest::collection::vec(any::<u8>(), 64..4000),
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..20),
            victim in any::<prop::sample::Index>(), delta in 1u8..=255,
        ) {
            let v = view(shard.len() as u64, 0);
            let mut piece = v.build(&shard);
            let which: Vec<u32> = picks.iter().map(|p| p.index(v.sentinel_count()) as u32).collect();
            let positions = v.challenge(&which);
            prop_assert!(v.verify(&which, &answer_challenge(&piece, &positions).unwrap()));
            let hit = positions[victim.index(positions.len())] as usize;
            piece[hit] = piece[hit].wrapping_add(delta);
            prop_assert!(!v.verify(&which, &answer_challenge(&piece, &positions).unwrap()));
        }
    }

    /// SplitMix64: a seeded, dependency-free generator for the detection trials.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            ((self.next() as u128 * n as u128) >> 64) as u64
        }
    }

    #[test]
    fn share_of_caught_pieces_matches_one_minus_one_minus_f_to_the_q() {
        const SEED: u64 = 0x5eed_2026;
        const TRIALS: usize = 2000;
        println!("detection trials: seed {SEED:#x}, {TRIALS} trials per point");
        let v = view(64 << 10, 0);
        let shard: Vec<u8> = (0..64u32 << 10).map(|i| (i * 31 % 251) as u8).collect();
        let piece = v.build(&shard);
        let mut rng = SplitMix(SEED);
        for f in [0.01, 0.05, 0.10] {
            for q in [4usize, 16] {
                let mut caught = 0;
                for _ in 0..TRIALS {
                    // Alter each byte with probability f (to a different value).
                    let mut bad = piece.clone();
                    let threshold = (f * u64::MAX as f64) as u64;
                    for b in bad.iter_mut() {
                        if rng.next() < threshold {
                            *b ^= 1 + rng.below(255) as u8;
                        }
                    }
                    // q distinct sentinels, drawn at random.
                    let mut which: Vec<u32> = Vec::with_capacity(q);
                    while which.len() < q {
                        let i = rng.below(v.sentinel_count() as u64) as u32;
                        if !which.contains(&i) {
                            which.push(i);
                        }
                    }
                    let answer = answer_challenge(&bad, &v.challenge(&which)).unwrap();
                    if !v.verify(&which, &answer) {
                        caught += 1;
                    }
                }
                let measured = caught as f64 / TRIALS as f64;
                let expected = 1.0 - (1.0 - f).powi(q as i32);
                let sigma = (expected * (1.0 - expected) / TRIALS as f64).sqrt();
                println!("f={f:.2} q={q:2}: caught {measured:.3}, formula {expected:.3}");
                assert!(
                    (measured - expected).abs() <= 4.0 * sigma + 0.005,
                    "f={f} q={q}: measured {measured}, expected {expected}"
                );
            }
        }
    }

    #[test]
    fn sentinels_are_spread_over_the_whole_piece() {
        let v = view(1 << 20, 0);
        assert_eq!(v.sentinel_count(), 4096);
        let positions: Vec<u64> = (0..v.sentinel_count())
            .map(|i| v.sentinel_position(i))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        // Each quarter of the piece holds roughly a quarter of the sentinels.
        let quarter = v.piece_len() / 4;
        for q in 0..4 {
            let n = positions.iter().filter(|&&p| p / quarter == q).count();
            assert!((800..1250).contains(&n), "quarter {q} holds {n}");
        }
    }

    #[test]
    fn copies_of_one_shard_in_two_generations_differ_everywhere() {
        let shard = vec![0u8; 4096];
        let a = view(4096, 0).build(&shard);
        let b = view(4096, 1).build(&shard);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        // Independent keystreams agree on about 1 byte in 256.
        assert!(same < 64, "{same} equal bytes");
        assert_ne!(PieceHash::of(&a), PieceHash::of(&b));
    }

    #[test]
    fn whitened_pieces_do_not_contain_their_plaintext() {
        let shard = b"alice@example.com ".repeat(200);
        let piece = view(shard.len() as u64, 0).build(&shard);
        assert!(!piece.windows(5).any(|w| w == b"alice"));
    }

    #[test]
    fn a_challenge_beyond_the_piece_is_an_error() {
        assert!(answer_challenge(&[1, 2, 3], &[3]).is_err());
    }
}
