//! Row encryption: AES-256-SIV with a random nonce, bound to its table, row id and version.
//!
//! Nonces are random: 128 bits read from a BLAKE3 keystream keyed by the OS random source
//! (or by a given seed, [`RowCipher::with_nonce_seed`], for reproducible known answers).
//! A sealed row is `nonce (16) ‖ SIV tag (16) ‖ ciphertext`. The associated data is
//! `table id ‖ row id ‖ version`, so a ciphertext moved to another row, table or version fails
//! to open instead of decrypting to the wrong row.

use std::fmt;

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes256Siv;

use crate::error::{Error, Result};
use crate::keys::{RowKey, TableId};

/// Bytes a sealed row adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// A row's id: a PRF of its primary key (see [`crate::keys::RowIdKey`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId(pub [u8; 16]);

impl fmt::Debug for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowId({})", hex::encode(self.0))
    }
}

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Seals and opens the rows of one table. Keep one around: it holds the expanded key and
/// its nonce source.
pub struct RowCipher {
    table: TableId,
    siv: Aes256Siv,
    nonces: NonceSource,
}

/// Random nonces without a system call per row: a BLAKE3 keystream under a 256-bit key drawn
/// from the operating system when the cipher is made, read a block at a time.
struct NonceSource {
    stream: blake3::OutputReader,
    buf: [u8; 1024],
    used: usize,
}

impl NonceSource {
    fn new() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random source failed");
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            stream: blake3::Hasher::new_keyed(seed).finalize_xof(),
            buf: [0; 1024],
            used: 1024,
        }
    }

    fn next(&mut self) -> [u8; NONCE_LEN] {
        if self.used == self.buf.len() {
            self.stream.fill(&mut self.buf);
            self.used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.buf[self.used..self.used + NONCE_LEN]);
        self.used += NONCE_LEN;
        nonce
    }
}

impl fmt::Debug for RowCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowCipher")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn aad(table: TableId, row: RowId, version: u64) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..16].copy_from_slice(&table.0);
    aad[16..32].copy_from_slice(&row.0);
    aad[32..].copy_from_slice(&version.to_le_bytes());
    aad
}

impl RowCipher {
    /// A cipher for the rows of `table`.
    pub fn new(key: &RowKey, table: TableId) -> Self {
        Self {
            table,
            siv: Aes256Siv::new(key.as_bytes().into()),
            nonces: NonceSource::new(),
        }
    }

    /// A cipher whose nonces come from the keystream of `seed` instead of the operating
    /// system: it seals the same rows to the same bytes every run, for known-answer vectors
    /// and reproducible fixtures. Opening does not depend on the nonce source. Two ciphers of
    /// one table with one seed issue the same nonces; AES-SIV then still hides everything but
    /// the equality of identical (row, version, plaintext) seals, but real writers use
    /// [`RowCipher::new`].
    pub fn with_nonce_seed(key: &RowKey, table: TableId, seed: [u8; 32]) -> Self {
        Self {
            table,
            siv: Aes256Siv::new(key.as_bytes().into()),
            nonces: NonceSource::from_seed(&seed),
        }
    }

    /// Appends the sealed form of `plaintext` to `out`.
    pub fn seal_into(&mut self, row: RowId, version: u64, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.nonces.next());
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(plaintext);
        let aad = aad(self.table, row, version);
        let (head, body) = out[start..].split_at_mut(SEAL_OVERHEAD);
        let tag = self
            .siv
            .encrypt_inout_detached([&aad[..], &head[..NONCE_LEN]], body.into())
            .expect("two headers are within AES-SIV's limit");
        head[NONCE_LEN..].copy_from_slice(tag.as_slice());
    }

    /// The sealed form of `plaintext`.
    pub fn seal(&mut self, row: RowId, version: u64, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(row, version, plaintext, &mut out);
        out
    }

    /// Opens a sealed row; fails with [`Error::Undecryptable`] on a wrong key, a wrong
    /// row id, table or version, or altered bytes — never returns garbage.
    pub fn open(&mut self, row: RowId, version: u64, sealed: &[u8]) -> Result<Vec<u8>> {
        let refuse = || Error::Undecryptable {
            row: hex::encode(row.0),
            version,
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(refuse());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (tag, body) = rest.split_at(TAG_LEN);
        let tag = aes_siv::Tag::try_from(tag).map_err(|_| refuse())?;
        let mut plain = body.to_vec();
        let aad = aad(self.table, row, version);
        self.siv
            .decrypt_inout_detached([&aad[..], nonce], plain.as_mut_slice().into(), &tag)
            .map_err(|_| refuse())?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::MasterKey;
    use proptest::prelude::*;

    fn cipher(seed: u8, table: &str) -> RowCipher {
        let keys = MasterKey::from_bytes([seed; 32]).table(table);
        RowCipher::new(&keys.row, keys.id)
    }

    proptest! {
        #[test]
        fn seal_open_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..2000),
                                 row in any::<[u8; 16]>(), version in any::<u64>()) {
            let mut c = cipher(1, "t");
            let sealed = c.seal(RowId(row), version, &plain);
            prop_assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
            prop_assert_eq!(c.open(RowId(row), version, &sealed).unwrap(), plain);
        }

        #[test]
        fn any_flipped_byte_is_refused(plain in proptest::collection::vec(any::<u8>(), 1..300),
                                       at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut c = cipher(1, "t");
            let mut sealed = c.seal(RowId([3; 16]), 1, &plain);
            let i = at.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(c.open(RowId([3; 16]), 1, &sealed).is_err());
        }
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let mut c = cipher(1, "t");
        assert_ne!(
            c.seal(RowId([0; 16]), 0, b"alice"),
            c.seal(RowId([0; 16]), 0, b"alice")
        );
    }

    #[test]
    fn wrong_key_row_table_or_version_is_a_clear_error() {
        let mut c = cipher(1, "t");
        let sealed = c.seal(RowId([1; 16]), 7, b"secret row");
        let err = cipher(2, "t").open(RowId([1; 16]), 7, &sealed).unwrap_err();
        assert!(matches!(err, Error::Undecryptable { version: 7, .. }));
        assert!(err.to_string().contains("wrong master key"), "{err}");
        assert!(cipher(1, "u").open(RowId([1; 16]), 7, &sealed).is_err());
        assert!(c.open(RowId([2; 16]), 7, &sealed).is_err());
        assert!(c.open(RowId([1; 16]), 8, &sealed).is_err());
        assert!(c.open(RowId([1; 16]), 7, &sealed[..20]).is_err());
    }
}
