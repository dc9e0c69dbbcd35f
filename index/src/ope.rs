//! Client-side order-preserving encryption of 64-bit values, built from the `ope` crate.
//!
//! The `ope` crate (CryptDB's BCLO scheme) encrypts 16-bit plaintexts into 32-bit
//! ciphertexts, and only `0..=65532` keep their order. A 64-bit value is therefore split into
//! limbs of [`LIMB_BITS`] = 4, 15, 15, 15, 15 bits (every limb `< 32768`), most significant
//! first. Limb *i* is encrypted under a key derived from the OPE key and *all the limbs above
//! it*, and the five 32-bit ciphertexts are concatenated big-endian. Two values with the same
//! upper limbs share those limbs' ciphertexts and the key of the first differing limb, where
//! BCLO orders them; so byte order of [`OpeCiphertext`]s is the order of the plaintexts.
//!
//! One BCLO encryption costs 20–35 µs, so the encoder caches: the 16 ciphertexts of the top
//! limb are precomputed per column, and the ciphertext of every (limb, prefix) seen lately is
//! kept in a bounded two-generation cache. Values that share upper limbs (timestamps, prices,
//! ages) cost at most one BCLO call for their lowest new limb, and nothing when seen before.
//! [`OpeEncoder::encrypt_batch`] makes the calls a batch misses on every core.
//!
//! [`u64_from_i64`], [`u64_from_f64`], [`u64_from_timestamp_micros`] and
//! [`u64_from_text_prefix`] map other types onto unsigned order first. The `ope` crate's
//! `decrypt` is broken and never called: values are read back from the encrypted row.

use std::collections::HashMap;
use std::fmt;

use crate::error::IndexError;
use crate::types::fixed;

/// Width in bits of each limb, most significant first (sums to 64, each `< 16` so every limb
/// stays below the `ope` crate's limit of 65533).
pub const LIMB_BITS: [u32; LIMBS] = [4, 15, 15, 15, 15];

/// Number of limbs of a value.
pub const LIMBS: usize = 5;

/// Length in bytes of an [`OpeCiphertext`]: one big-endian `u32` per limb.
pub const OPE_LEN: usize = 4 * LIMBS;

/// Fewest missing limbs worth spreading over threads (each BCLO call is 20–35 µs).
const PARALLEL_MIN: usize = 64;

/// Default number of cached limb ciphertexts per encoder (about 2.5 MB at most).
pub const DEFAULT_CACHE_ENTRIES: usize = 65_536;

/// Right shift that brings limb `i` to the low bits.
const fn limb_shift(i: usize) -> u32 {
    let mut shift = 64;
    let mut j = 0;
    while j <= i {
        shift -= LIMB_BITS[j];
        j += 1;
    }
    shift
}

/// A column's 32-byte OPE key (derived from the master key by the engine).
#[derive(Clone)]
pub struct OpeKey([u8; 32]);

impl OpeKey {
    /// Wraps a raw key.
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The ciphertext of limb `key.0` of every value whose bits down to that limb are
    /// `key.1`.
    fn limb_ciphertext(&self, key: (u8, u64)) -> Result<u32, IndexError> {
        let level = usize::from(key.0);
        let prefix = key.1 >> LIMB_BITS[level];
        let limb = key.1 & ((1u64 << LIMB_BITS[level]) - 1);
        bclo(&self.limb_key(level, prefix), limb)
    }

    /// [`OpeKey::limb_ciphertext`] of each key, in order, spread over the machine's cores
    /// when there are many.
    fn limb_ciphertexts(&self, keys: &[(u8, u64)]) -> Result<Vec<u32>, IndexError> {
        // Asked only for a large batch: the answer costs system calls (cgroup files).
        let threads = if keys.len() < PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        if threads < 2 {
            return keys.iter().map(|k| self.limb_ciphertext(*k)).collect();
        }
        std::thread::scope(|s| {
            let workers: Vec<_> = keys
                .chunks(keys.len().div_ceil(threads))
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|k| self.limb_ciphertext(*k))
                            .collect::<Result<Vec<u32>, IndexError>>()
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(keys.len());
            for w in workers {
                out.extend(
                    w.join()
                        .map_err(|_| IndexError::Ope("an OPE worker panicked".into()))??,
                );
            }
            Ok(out)
        })
    }

    /// The BCLO key of limb `level` under the value bits above it (`prefix`).
    fn limb_key(&self, level: usize, prefix: u64) -> ope::OpeKey {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"wwt 2026-11 ope limb");
        hasher.update(&[level as u8]);
        hasher.update(&prefix.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        out
    }
}

impl fmt::Debug for OpeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpeKey(..)")
    }
}

/// An order-preserving ciphertext of a 64-bit value: compare with `Ord` (byte order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpeCiphertext(pub [u8; OPE_LEN]);

impl fmt::Debug for OpeCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpeCiphertext(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl TryFrom<&[u8]> for OpeCiphertext {
    type Error = IndexError;
    fn try_from(bytes: &[u8]) -> Result<Self, IndexError> {
        fixed("OPE ciphertext", bytes).map(Self)
    }
}

/// Counters of an encoder, for benchmarks and tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpeStats {
    /// Values encrypted.
    pub values: u64,
    /// BCLO encryptions performed (cache misses).
    pub bclo_calls: u64,
}

/// Encrypts values of one column; keeps a bounded cache of limb ciphertexts.
pub struct OpeEncoder {
    key: OpeKey,
    top: [u32; 1 << LIMB_BITS[0]],
    /// Current and previous generation: `(level, value >> limb_shift(level))` → ciphertext.
    current: HashMap<(u8, u64), u32>,
    previous: HashMap<(u8, u64), u32>,
    generation_size: usize,
    stats: OpeStats,
}

impl fmt::Debug for OpeEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpeEncoder")
            .field("cached", &(self.current.len() + self.previous.len()))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn bclo(key: &ope::OpeKey, limb: u64) -> Result<u32, IndexError> {
    let c = ope::get_ope(key)
        .encrypt(limb)
        .map_err(|e| IndexError::Ope(format!("{e:?}")))?;
    u32::try_from(c).map_err(|_| IndexError::Ope("ciphertext exceeds 32 bits".into()))
}

impl OpeEncoder {
    /// An encoder with the default cache size; precomputes the top limb's 16 ciphertexts.
    pub fn new(key: OpeKey) -> Result<Self, IndexError> {
        Self::with_cache(key, DEFAULT_CACHE_ENTRIES)
    }

    /// An encoder caching at most about `entries` limb ciphertexts.
    pub fn with_cache(key: OpeKey, entries: usize) -> Result<Self, IndexError> {
        let top_key = key.limb_key(0, 0);
        let mut top = [0u32; 1 << LIMB_BITS[0]];
        for (limb, slot) in top.iter_mut().enumerate() {
            *slot = bclo(&top_key, limb as u64)?;
        }
        Ok(Self {
            key,
            top,
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_size: (entries / 2).max(1),
            stats: OpeStats {
                values: 0,
                bclo_calls: top.len() as u64,
            },
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> OpeStats {
        self.stats
    }

    fn remember(&mut self, key: (u8, u64), c: u32) {
        if self.current.len() >= self.generation_size {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, c);
    }

    /// Encrypts one value (already mapped onto unsigned order).
    pub fn encrypt(&mut self, value: u64) -> Result<OpeCiphertext, IndexError> {
        let mut out = self.encrypt_batch(&[value])?;
        out.pop()
            .ok_or(IndexError::Corrupt("an OPE batch of one returned nothing"))
    }

    /// Encrypts many values, returned in input order. The limbs the cache does not hold are
    /// independent BCLO calls (a limb's key depends only on the value bits above it), so a
    /// large batch computes them on every core. Limbs found in the older cache generation are
    /// kept in the newer one.
    pub fn encrypt_batch(&mut self, values: &[u64]) -> Result<Vec<OpeCiphertext>, IndexError> {
        /// A limb of a value: its ciphertext, or its place in `missing`.
        enum Limb {
            Known(u32),
            Missing(usize),
        }
        let mut missing = Vec::new();
        let mut slot_of: HashMap<(u8, u64), usize> = HashMap::new();
        let mut limbs = Vec::with_capacity(values.len() * (LIMBS - 1));
        for &v in values {
            for level in 1..LIMBS {
                let key = (level as u8, v >> limb_shift(level));
                limbs.push(if let Some(c) = self.current.get(&key) {
                    Limb::Known(*c)
                } else if let Some(&i) = slot_of.get(&key) {
                    Limb::Missing(i)
                } else if let Some(&c) = self.previous.get(&key) {
                    // Kept in the newer generation now, so later values sharing it find it there.
                    self.remember(key, c);
                    Limb::Known(c)
                } else {
                    slot_of.insert(key, missing.len());
                    missing.push(key);
                    Limb::Missing(missing.len() - 1)
                });
            }
        }
        let computed = self.key.limb_ciphertexts(&missing)?;
        let mut out = Vec::with_capacity(values.len());
        for (&v, limbs) in values.iter().zip(limbs.chunks(LIMBS - 1)) {
            let mut c = [0u8; OPE_LEN];
            c[..4].copy_from_slice(&self.top[(v >> limb_shift(0)) as usize].to_be_bytes());
            for (level, limb) in (1..LIMBS).zip(limbs) {
                let x = match limb {
                    Limb::Known(x) => *x,
                    Limb::Missing(i) => computed[*i],
                };
                c[4 * level..4 * level + 4].copy_from_slice(&x.to_be_bytes());
            }
            out.push(OpeCiphertext(c));
        }
        self.stats.bclo_calls += missing.len() as u64;
        self.stats.values += values.len() as u64;
        for (key, c) in missing.into_iter().zip(computed) {
            self.remember(key, c);
        }
        Ok(out)
    }
}

/// Maps `i64` onto `u64` keeping order (flips the sign bit).
pub fn u64_from_i64(x: i64) -> u64 {
    (x as u64) ^ (1 << 63)
}

/// Maps `f64` onto `u64` in IEEE 754 total order (`f64::total_cmp`): −NaN < −∞ < … < −0.0 <
/// +0.0 < … < +∞ < +NaN. Clients that want `-0.0 == 0.0` should normalize before mapping.
pub fn u64_from_f64(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Maps a timestamp in microseconds since the Unix epoch (negative before it) onto `u64`.
pub fn u64_from_timestamp_micros(micros: i64) -> u64 {
    u64_from_i64(micros)
}

/// Maps a string onto `u64` by its first 8 UTF-8 bytes, zero-padded, big-endian: monotone
/// (never reverses byte order) but not injective, so strings sharing 8 bytes tie. A range
/// predicate on text is pushed down with inclusive bounds and re-checked on the client.
pub fn u64_from_text_prefix(text: &str) -> u64 {
    let mut buf = [0u8; 8];
    let bytes = text.as_bytes();
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;

    thread_local! {
        static ENC: RefCell<OpeEncoder> =
            RefCell::new(OpeEncoder::new(OpeKey::new([42u8; 32])).unwrap());
    }

    fn enc(v: u64) -> OpeCiphertext {
        ENC.with(|e| e.borrow_mut().encrypt(v).unwrap())
    }

    #[test]
    fn limbs_cover_64_bits_below_the_ope_limit() {
        assert_eq!(LIMB_BITS.iter().sum::<u32>(), 64);
        assert!(LIMB_BITS.iter().all(|&b| (1u64 << b) - 1 <= 65532));
        assert_eq!(limb_shift(0), 60);
        assert_eq!(limb_shift(LIMBS - 1), 0);
    }

    #[test]
    fn order_holds_at_boundaries_and_limb_edges() {
        let mut values = vec![
            0,
            1,
            2,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 63) - 1,
            (1 << 63) + 1,
        ];
        for b in [15u32, 30, 45, 60] {
            values.extend([(1u64 << b) - 1, 1u64 << b, (1u64 << b) + 1]);
        }
        values.extend([32767, 32768, 65532, 65533, 65534, 65535, 65536]);
        values.sort_unstable();
        values.dedup();
        let cts: Vec<_> = values.iter().map(|&v| enc(v)).collect();
        for w in cts.windows(2) {
            assert!(w[0] < w[1]);
        }
    }

    #[test]
    fn ciphertexts_are_deterministic_and_key_dependent() {
        let mut a = OpeEncoder::with_cache(OpeKey::new([42u8; 32]), 2).unwrap();
        let mut b = OpeEncoder::new(OpeKey::new([43u8; 32])).unwrap();
        for v in [5u64, 1 << 40, u64::MAX] {
            assert_eq!(a.encrypt(v).unwrap(), enc(v));
            assert_ne!(b.encrypt(v).unwrap(), enc(v));
        }
    }

    #[test]
    fn batch_equals_single_and_uses_the_cache() {
        let values: Vec<u64> = (0..200u64).map(|i| 1_700_000_000 + (i * 7) % 50).collect();
        let mut e = OpeEncoder::new(OpeKey::new([42u8; 32])).unwrap();
        let batch = e.encrypt_batch(&values).unwrap();
        for (v, c) in values.iter().zip(&batch) {
            assert_eq!(*c, enc(*v));
        }
        let s = e.stats();
        assert_eq!(s.values, 200);
        // 16 precomputed, then at most the distinct limbs: 50 low limbs and few upper ones.
        assert!(s.bclo_calls <= 16 + 50 + 3 * 2, "{s:?}");
    }

    #[test]
    fn a_batch_spread_over_threads_equals_single_encryptions() {
        // Far more missing limbs than PARALLEL_MIN, with repeats and shared upper limbs.
        let values: Vec<u64> = (0..2_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 40))
            .chain([0, 1, u64::MAX, 0, 1])
            .collect();
        // A tiny cache: the batch's own results must not depend on what the cache keeps.
        let mut e = OpeEncoder::with_cache(OpeKey::new([42u8; 32]), 8).unwrap();
        let batch = e.encrypt_batch(&values).unwrap();
        for (v, c) in values.iter().zip(&batch) {
            assert_eq!(*c, enc(*v), "value {v}");
        }
        assert_eq!(e.stats().values, values.len() as u64);
        assert_eq!(e.encrypt_batch(&values).unwrap(), batch);
    }

    #[test]
    fn type_mappings_keep_order() {
        let ints = [
            i64::MIN,
            i64::MIN + 1,
            -65533,
            -1,
            0,
            1,
            65532,
            65533,
            i64::MAX,
        ];
        for w in ints.windows(2) {
            assert!(u64_from_i64(w[0]) < u64_from_i64(w[1]));
        }
        let floats = [
            f64::NEG_INFINITY,
            f64::MIN,
            -1.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            f64::MAX,
            f64::INFINITY,
        ];
        for w in floats.windows(2) {
            assert!(u64_from_f64(w[0]) < u64_from_f64(w[1]), "{} {}", w[0], w[1]);
        }
        assert!(u64_from_text_prefix("") < u64_from_text_prefix("a"));
        assert!(u64_from_text_prefix("ab") < u64_from_text_prefix("b"));
        assert_eq!(
            u64_from_text_prefix("abcdefgh1"),
            u64_from_text_prefix("abcdefgh2")
        );
    }

    #[test]
    fn malformed_ciphertext_is_refused() {
        assert!(matches!(
            OpeCiphertext::try_from(&[0u8; 19][..]),
            Err(IndexError::MalformedToken {
                expected: OPE_LEN,
                got: 19,
                ..
            })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn order_over_whole_u64_domain(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(enc(a).cmp(&enc(b)), a.cmp(&b));
        }

        #[test]
        fn order_of_close_values(a in any::<u64>(), d in 0u64..70_000) {
            let b = a.saturating_add(d);
            prop_assert_eq!(enc(a).cmp(&enc(b)), a.cmp(&b));
        }

        #[test]
        fn order_of_i64(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(enc(u64_from_i64(a)).cmp(&enc(u64_from_i64(b))), a.cmp(&b));
        }

        #[test]
        fn order_of_f64(a in any::<f64>(), b in any::<f64>()) {
            prop_assert_eq!(enc(u64_from_f64(a)).cmp(&enc(u64_from_f64(b))), a.total_cmp(&b));
        }

        #[test]
        fn order_of_text_prefixes(a in "\\PC{0,10}", b in "\\PC{0,10}") {
            let (ca, cb) = (enc(u64_from_text_prefix(&a)), enc(u64_from_text_prefix(&b)));
            // Monotone: a strict ciphertext order never contradicts the byte order.
            if ca < cb { prop_assert!(a.as_bytes() < b.as_bytes()); }
            if ca > cb { prop_assert!(a.as_bytes() > b.as_bytes()); }
        }
    }
}
