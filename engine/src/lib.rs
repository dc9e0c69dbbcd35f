//! The wwt storage engine: rows to verifiable pieces and back. Pure and synchronous: no
//! network, no async runtime.
//!
//! Write path: [`row::RowCipher`] seals rows (AES-256-SIV) → [`segment::SegmentPacker`]
//! packs them into segments → [`codec::Codec`] codes a segment with Reed-Solomon into k + m
//! shards, and [`piece::PieceView`] whitens each shard and injects its sentinels, giving the
//! pieces a provider stores. Read path: the reverse, from any k intact pieces, or from byte
//! ranges of the data pieces ([`codec::plan_read`]) verified with [`proof`].
//!
//! Layout:
//! - [`keys`]: keystore (master key + ed25519 identity) and every derived key.
//! - [`row`]: row ids and row encryption.
//! - [`segment`]: segments, extents, locators, the packer.
//! - [`codec`]: coding parameters, manifests, encode / decode / rebuild, ranged-read plans.
//! - [`piece`]: whitening, sentinels, challenges and their answers.
//! - [`proof`]: Bao chunk proofs against a piece hash.
//! - [`table`]: the pipeline of one table, rows in and rows out.
//! - [`error`]: the error type.

pub mod codec;
pub mod error;
pub mod keys;
pub mod piece;
pub mod proof;
pub mod row;
pub mod segment;
pub mod table;

pub use codec::{Codec, CodingParams, EncodedSegment, PieceInfo, RangeRead, SegmentManifest};
pub use error::{Error, Result};
pub use keys::{AuditKey, Keystore, MasterKey, TableId, TableKeys};
pub use piece::{PieceHash, PieceView};
pub use row::{RowCipher, RowId};
pub use segment::{Extent, Locator, Segment, SegmentId};
pub use table::Table;

/// A cursor over little-endian fields, for the engine's fixed binary encodings.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }
}
