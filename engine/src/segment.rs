//! Segments: many sealed rows packed into one buffer, each row found again by its locator.
//!
//! A sealed row lives at one extent (segment, offset, length) of one segment. A row too large
//! to share a segment (a quarter of the segment size or more) gets segments of its own and
//! its locator lists their extents in order; reading concatenates them.

use std::fmt;

use crate::error::{Error, Result};
use crate::row::{RowCipher, RowId, SEAL_OVERHEAD};

/// Default segment size: 4 MiB.
pub const DEFAULT_SEGMENT_SIZE: usize = 4 << 20;

/// A segment's id: random, fixed when the segment is opened.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub [u8; 32]);

impl SegmentId {
    /// A fresh random id.
    pub fn random() -> Self {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).expect("the operating system's random source failed");
        Self(id)
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A byte range of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The segment.
    pub segment: SegmentId,
    /// First byte within the segment.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Where one version of a row is stored: its sealed bytes are the concatenation of the extents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locator {
    /// The row.
    pub row: RowId,
    /// The row version the sealed bytes hold.
    pub version: u64,
    /// Its extents, in order.
    pub extents: Vec<Extent>,
}

impl Locator {
    /// Length of the sealed row.
    pub fn sealed_len(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// Encodes the locator: row (16) ‖ version (8) ‖ count (4) ‖ per extent segment (32) ‖
    /// offset (8) ‖ length (8), little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + 48 * self.extents.len());
        out.extend_from_slice(&self.row.0);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.extents.len() as u32).to_le_bytes());
        for e in &self.extents {
            out.extend_from_slice(&e.segment.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        out
    }

    /// Decodes what [`Locator::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Malformed {
            what: "locator",
            why: why.to_string(),
        };
        let mut r = crate::Reader::new(bytes);
        let row = RowId(r.array().ok_or_else(|| bad("short row id"))?);
        let version = r.u64().ok_or_else(|| bad("short version"))?;
        let count = r.u32().ok_or_else(|| bad("short extent count"))? as usize;
        if r.remaining() != count * 48 {
            return Err(bad("extent list length does not match its count"));
        }
        let mut extents = Vec::with_capacity(count);
        for _ in 0..count {
            let segment = SegmentId(r.array().ok_or_else(|| bad("short segment id"))?);
            let offset = r.u64().ok_or_else(|| bad("short offset"))?;
            let len = r.u64().ok_or_else(|| bad("short length"))?;
            extents.push(Extent {
                segment,
                offset,
                len,
            });
        }
        Ok(Self {
            row,
            version,
            extents,
        })
    }
}

/// A packed segment, ready to be coded into pieces.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Its id.
    pub id: SegmentId,
    /// The concatenated sealed rows.
    pub bytes: Vec<u8>,
}

/// Where a [`SegmentPacker`] takes its segments' ids from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SegmentIds {
    /// The operating system's randomness, as every real writer does.
    Random,
    /// A sequence keyed by `seed`, from its `next`-th id: the same ids every run, so a test
    /// network that places segments by their ids replays. Never for data that matters: the
    /// ids of every writer with the seed are known in advance.
    Seeded {
        /// The key of the sequence.
        seed: [u8; 32],
        /// The position of the next id in it.
        next: u64,
    },
}

impl SegmentIds {
    fn draw(&mut self) -> SegmentId {
        match self {
            SegmentIds::Random => SegmentId::random(),
            SegmentIds::Seeded { seed, next } => {
                let mut h = blake3::Hasher::new_keyed(seed);
                h.update(&next.to_le_bytes());
                *next += 1;
                SegmentId(*h.finalize().as_bytes())
            }
        }
    }
}

impl fmt::Debug for SegmentIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentIds::Random => write!(f, "Random"),
            SegmentIds::Seeded { next, .. } => write!(f, "Seeded {{ next: {next}, .. }}"),
        }
    }
}

/// Seals rows straight into segments of at most `segment_size` bytes.
#[derive(Debug)]
pub struct SegmentPacker {
    segment_size: usize,
    open: Option<Segment>,
    done: Vec<Segment>,
    ids: SegmentIds,
}

impl SegmentPacker {
    /// A packer for segments of at most `segment_size` bytes (at least 1 KiB), with random
    /// ids.
    pub fn new(segment_size: usize) -> Self {
        Self::with_ids(segment_size, SegmentIds::Random)
    }

    /// A packer for segments of at most `segment_size` bytes (at least 1 KiB), with ids from
    /// `ids`.
    pub fn with_ids(segment_size: usize, ids: SegmentIds) -> Self {
        Self {
            segment_size: segment_size.max(1024),
            open: None,
            done: Vec::new(),
            ids,
        }
    }

    /// Where the next segment's id comes from (to hand on to the next packer).
    pub fn ids(&self) -> SegmentIds {
        self.ids
    }

    /// Seals one row version into the open segment, or into segments of its own when it is
    /// large, and returns where it went.
    pub fn push(
        &mut self,
        cipher: &mut RowCipher,
        row: RowId,
        version: u64,
        plaintext: &[u8],
    ) -> Locator {
        let sealed_len = plaintext.len() + SEAL_OVERHEAD;
        if sealed_len >= self.segment_size / 4 {
            return self.push_large(cipher.seal(row, version, plaintext), row, version);
        }
        let full = self
            .open
            .as_ref()
            .is_some_and(|s| s.bytes.len() + sealed_len > self.segment_size);
        if full {
            self.done.extend(self.open.take());
        }
        let size = self.segment_size;
        let ids = &mut self.ids;
        let seg = self.open.get_or_insert_with(|| Segment {
            id: ids.draw(),
            bytes: Vec::with_capacity(size),
        });
        let offset = seg.bytes.len() as u64;
        cipher.seal_into(row, version, plaintext, &mut seg.bytes);
        Locator {
            row,
            version,
            extents: vec![Extent {
                segment: seg.id,
                offset,
                len: sealed_len as u64,
            }],
        }
    }

    fn push_large(&mut self, sealed: Vec<u8>, row: RowId, version: u64) -> Locator {
        let extents = sealed
            .chunks(self.segment_size)
            .map(|chunk| {
                let seg = Segment {
                    id: self.ids.draw(),
                    bytes: chunk.to_vec(),
                };
                let extent = Extent {
                    segment: seg.id,
                    offset: 0,
                    len: chunk.len() as u64,
                };
                self.done.push(seg);
                extent
            })
            .collect();
        Locator {
            row,
            version,
            extents,
        }
    }

    /// Takes the segments that are full, leaving the open one to fill further.
    pub fn take_full(&mut self) -> Vec<Segment> {
        std::mem::take(&mut self.done)
    }

    /// Closes the open segment and returns every segment not yet taken.
    pub fn finish(mut self) -> Vec<Segment> {
        self.done.extend(self.open.take());
        self.done
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::MasterKey;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn read(segments: &HashMap<SegmentId, Vec<u8>>, loc: &Locator) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &loc.extents {
            out.extend_from_slice(
                &segments[&e.segment][e.offset as usize..(e.offset + e.len) as usize],
            );
        }
        out
    }

    proptest! {
        #[test]
        fn every_row_reads_back_from_its_locator(
            rows in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..60),
            size in 1024usize..8192,
        ) {
            let keys = MasterKey::from_bytes([5; 32]).table("t");
            let mut cipher = RowCipher::new(&keys.row, keys.id);
            let mut packer = SegmentPacker::new(size);
            let locs: Vec<_> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| packer.push(&mut cipher, RowId([i as u8; 16]), 1, r))
                .collect();
            let segments: HashMap<_, _> =
                packer.finish().into_iter().map(|s| (s.id, s.bytes)).collect();
            for s in segments.values() {
                prop_assert!(s.len() <= size);
            }
            for (loc, plain) in locs.iter().zip(&rows) {
                let back = cipher.open(loc.row, loc.version, &read(&segments, loc)).unwrap();
                prop_assert_eq!(&back, plain);
                let decoded = Locator::from_bytes(&loc.to_bytes()).unwrap();
                prop_assert_eq!(&decoded, loc);
            }
        }
    }

    #[test]
    fn a_large_value_gets_segments_of_its_own() {
        let keys = MasterKey::from_bytes([5; 32]).table("t");
        let mut cipher = RowCipher::new(&keys.row, keys.id);
        let mut packer = SegmentPacker::new(4096);
        let small = packer.push(&mut cipher, RowId([1; 16]), 1, b"small");
        let blob = vec![9u8; 10_000];
        let large = packer.push(&mut cipher, RowId([2; 16]), 1, &blob);
        assert_eq!(large.extents.len(), 3);
        assert!(large.extents.iter().all(|e| e.offset == 0));
        assert!(
            large
                .extents
                .iter()
                .all(|e| e.segment != small.extents[0].segment)
        );
        assert_eq!(large.sealed_len(), (blob.len() + SEAL_OVERHEAD) as u64);
        assert_eq!(packer.finish().len(), 4);
    }

    #[test]
    fn malformed_locators_are_refused() {
        assert!(Locator::from_bytes(&[0; 10]).is_err());
        let mut bytes = Locator {
            row: RowId([0; 16]),
            version: 1,
            extents: vec![],
        }
        .to_bytes();
        bytes[24] = 5;
        assert!(Locator::from_bytes(&bytes).is_err());
    }
}
