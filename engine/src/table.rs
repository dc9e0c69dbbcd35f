//! The pipeline of one table: rows in, coded segments out, and rows back from pieces.

use crate::codec::{Codec, CodingParams, EncodedSegment, SegmentManifest, plan_read};
use crate::error::{Error, Result};
use crate::keys::{MasterKey, TableKeys};
use crate::row::{RowCipher, RowId};
use crate::segment::{Locator, SegmentIds, SegmentPacker};

/// One table's keys, cipher and codec. Keep one per table and thread.
#[derive(Debug)]
pub struct Table {
    keys: TableKeys,
    cipher: RowCipher,
    codec: Codec,
    segment_size: usize,
    ids: SegmentIds,
}

/// One row version to write.
#[derive(Clone, Copy, Debug)]
pub struct RowWrite<'a> {
    /// The row.
    pub row: RowId,
    /// Its version.
    pub version: u64,
    /// Its plaintext encoding.
    pub plaintext: &'a [u8],
}

/// Rows coded into segments: where each row went, and the segments' pieces.
#[derive(Debug)]
pub struct WriteBatch {
    /// One locator per row written, in order.
    pub locators: Vec<Locator>,
    /// The coded segments.
    pub segments: Vec<EncodedSegment>,
}

impl Table {
    /// The table named `name` under `master`, coded with `params` into segments of at most
    /// `segment_size` bytes.
    pub fn new(
        master: &MasterKey,
        name: &str,
        params: CodingParams,
        segment_size: usize,
    ) -> Result<Self> {
        let keys = master.table(name);
        Ok(Self {
            cipher: RowCipher::new(&keys.row, keys.id),
            keys,
            codec: Codec::new(params)?,
            segment_size,
            ids: SegmentIds::Random,
        })
    }

    /// The same table, sealing with nonces and naming segments with ids drawn from `seed`
    /// instead of the operating system: the same rows then write the same segments, and a
    /// test network that places them by id replays from its seed. Only for tests (see
    /// [`RowCipher::with_nonce_seed`] and [`SegmentIds::Seeded`]).
    pub fn with_seed(mut self, seed: [u8; 32]) -> Self {
        let derive = |what: &str| {
            let mut h = blake3::Hasher::new_keyed(&seed);
            h.update(what.as_bytes());
            *h.finalize().as_bytes()
        };
        self.cipher = RowCipher::with_nonce_seed(&self.keys.row, self.keys.id, derive("nonces"));
        self.ids = SegmentIds::Seeded {
            seed: derive("segment ids"),
            next: 0,
        };
        self
    }

    /// The table's keys.
    pub fn keys(&self) -> &TableKeys {
        &self.keys
    }

    /// The table's codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Seals, packs and codes `rows`.
    pub fn write<'a>(&mut self, rows: impl IntoIterator<Item = RowWrite<'a>>) -> WriteBatch {
        let mut packer = SegmentPacker::with_ids(self.segment_size, self.ids);
        let locators = rows
            .into_iter()
            .map(|r| packer.push(&mut self.cipher, r.row, r.version, r.plaintext))
            .collect();
        self.ids = packer.ids();
        let segments = packer
            .finish()
            .iter()
            .map(|s| self.codec.encode(&self.keys.audit, s))
            .collect();
        WriteBatch { locators, segments }
    }

    /// Decodes a whole segment from any k intact pieces.
    pub fn decode_segment(
        &self,
        manifest: &SegmentManifest,
        pieces: &[Option<&[u8]>],
    ) -> Result<Vec<u8>> {
        self.codec.decode(&self.keys.audit, manifest, pieces)
    }

    /// Reads one row from decoded segments (`segment(manifest id)` gives its bytes).
    pub fn read_row<'s>(
        &mut self,
        locator: &Locator,
        mut segment: impl FnMut(&crate::segment::SegmentId) -> Option<&'s [u8]>,
    ) -> Result<Vec<u8>> {
        let mut sealed = Vec::with_capacity(locator.sealed_len() as usize);
        for e in &locator.extents {
            let bytes = segment(&e.segment).ok_or_else(|| Error::ManifestMismatch {
                segment: hex::encode(e.segment.0),
                what: "segment not available".into(),
            })?;
            let range = e.offset as usize..(e.offset + e.len) as usize;
            sealed.extend_from_slice(bytes.get(range).ok_or(Error::OutOfRange {
                start: e.offset,
                len: e.len,
                size: bytes.len() as u64,
            })?);
        }
        self.cipher.open(locator.row, locator.version, &sealed)
    }

    /// Reads one row from byte ranges of the data pieces that hold it: `fetch(manifest,
    /// read)` returns the piece bytes of one [`crate::RangeRead`] (already verified against
    /// the piece hash, e.g. with [`crate::proof::verify`]).
    pub fn read_row_ranged<'m>(
        &mut self,
        locator: &Locator,
        manifest: impl Fn(&crate::segment::SegmentId) -> Option<&'m SegmentManifest>,
        mut fetch: impl FnMut(&SegmentManifest, &crate::RangeRead) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let mut sealed = Vec::with_capacity(locator.sealed_len() as usize);
        for e in &locator.extents {
            let m = manifest(&e.segment).ok_or_else(|| Error::ManifestMismatch {
                segment: hex::encode(e.segment.0),
                what: "no manifest for this segment".into(),
            })?;
            for read in plan_read(&self.keys.audit, m, e)? {
                let bytes = fetch(m, &read)?;
                let view = m.view(&self.keys.audit, read.piece);
                sealed.extend(view.open_range(read.shard_start, read.len, &bytes)?);
            }
        }
        self.cipher.open(locator.row, locator.version, &sealed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proof;
    use crate::segment::SegmentId;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn rows_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::collection::vec(any::<u8>(), 0..400),
                1 => proptest::collection::vec(any::<u8>(), 2000..9000),
            ],
            1..80,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn rows_to_pieces_to_rows_from_any_k_pieces(
            rows in rows_strategy(), k in 1usize..7, m in 0usize..4,
            seg_kib in 2usize..16, drop_seed in any::<u64>(),
        ) {
            let master = MasterKey::from_bytes([11; 32]);
            let mut table = Table::new(&master, "t", CodingParams::new(k, m).unwrap(), seg_kib * 1024).unwrap();
            let writes: Vec<RowWrite> = rows.iter().enumerate().map(|(i, r)| RowWrite {
                row: table.keys().row_id.row_id(&(i as u64).to_le_bytes()), version: 1, plaintext: r,
            }).collect();
            let batch = table.write(writes);
            // Decode each segment from a pseudo-random k of its k + m pieces.
            let mut decoded: HashMap<SegmentId, Vec<u8>> = HashMap::new();
            for (n, enc) in batch.segments.iter().enumerate() {
                let mut idx: Vec<usize> = (0..k + m).collect();
                let mut s = drop_seed.wrapping_add(n as u64);
                for i in (1..idx.len()).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    idx.swap(i, (s >> 33) as usize % (i + 1));
                }
                let given: Vec<Option<&[u8]>> = (0..k + m)
                    .map(|i| idx[..k].contains(&i).then(|| enc.pieces[i].as_slice()))
                    .collect();
                decoded.insert(enc.manifest.segment, table.decode_segment(&enc.manifest, &given).unwrap());
            }
            for (loc, plain) in batch.locators.iter().zip(&rows) {
                let back = table.read_row(loc, |id| decoded.get(id).map(Vec::as_slice)).unwrap();
                prop_assert_eq!(&back, plain);
            }
            // Ranged reads through verified chunk proofs give the same rows.
            let pieces: HashMap<SegmentId, &EncodedSegment> =
                batch.segments.iter().map(|e| (e.manifest.segment, e)).collect();
            for (loc, plain) in batch.locators.iter().zip(&rows).take(10) {
                let back = table.read_row_ranged(
                    loc,
                    |id| pieces.get(id).map(|e| &e.manifest),
                    |m, r| {
                        let piece = &pieces[&m.segment].pieces[r.piece];
                        let (groups, _) = proof::groups(piece);
                        let size = piece.len() as u64;
                        let p = proof::prove(std::io::Cursor::new(piece), size, &groups, r.piece_start, r.piece_len)?;
                        proof::verify(&m.pieces[r.piece].hash, r.piece_start, r.piece_len, &p)
                    },
                ).unwrap();
                prop_assert_eq!(&back, plain);
            }
        }
    }

    #[test]
    fn the_wrong_master_key_fails_with_a_clear_error_never_garbage() {
        let mine = MasterKey::from_bytes([1; 32]);
        let theirs = MasterKey::from_bytes([2; 32]);
        let mut table = Table::new(&mine, "t", CodingParams::default(), 64 << 10).unwrap();
        let row = table.keys().row_id.row_id(b"pk-1");
        let batch = table.write([RowWrite {
            row,
            version: 3,
            plaintext: b"balance=100",
        }]);
        let enc = &batch.segments[0];
        let all: Vec<Option<&[u8]>> = enc.pieces.iter().map(|p| Some(p.as_slice())).collect();
        // Someone else's keys: the audit key opens the pieces to other bytes, and the row
        // cipher refuses them.
        let mut other = Table::new(&theirs, "t", CodingParams::default(), 64 << 10).unwrap();
        let seg = other.decode_segment(&enc.manifest, &all).unwrap();
        let err = other
            .read_row(&batch.locators[0], |_| Some(seg.as_slice()))
            .unwrap_err();
        assert!(
            matches!(err, Error::Undecryptable { version: 3, .. }),
            "{err}"
        );
        // The right keys read it.
        let seg = table.decode_segment(&enc.manifest, &all).unwrap();
        assert_eq!(
            table
                .read_row(&batch.locators[0], |_| Some(seg.as_slice()))
                .unwrap(),
            b"balance=100"
        );
    }

    #[test]
    fn no_piece_contains_the_plaintext() {
        let master = MasterKey::from_bytes([1; 32]);
        let mut table = Table::new(&master, "t", CodingParams::default(), 64 << 10).unwrap();
        let rows: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("user-{i}@example.com").into_bytes())
            .collect();
        let batch = table.write(rows.iter().enumerate().map(|(i, r)| RowWrite {
            row: RowId([i as u8; 16]),
            version: 1,
            plaintext: r,
        }));
        for piece in batch.segments.iter().flat_map(|s| &s.pieces) {
            assert!(!piece.windows(7).any(|w| w == b"example"));
        }
    }

    #[test]
    fn a_seeded_table_writes_the_same_segments_every_run_and_new_ids_each_batch() {
        let master = MasterKey::from_bytes([2; 32]);
        let rows: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; 100 + i % 7]).collect();
        let write = |table: &mut Table| {
            let batch = table.write(rows.iter().enumerate().map(|(i, r)| RowWrite {
                row: RowId([i as u8; 16]),
                version: 1,
                plaintext: r,
            }));
            batch
                .segments
                .into_iter()
                .map(|s| (s.manifest.segment, s.pieces))
                .collect::<Vec<_>>()
        };
        let seeded = || {
            Table::new(&master, "t", CodingParams::default(), 4 << 10)
                .unwrap()
                .with_seed([7; 32])
        };
        let (mut a, mut b) = (seeded(), seeded());
        let first = write(&mut a);
        assert!(first.len() > 1);
        assert_eq!(first, write(&mut b), "one seed, one set of segments");
        let second = write(&mut a);
        assert!(
            second
                .iter()
                .all(|(id, _)| first.iter().all(|(f, _)| f != id)),
            "a second batch takes new ids"
        );
        let mut random = Table::new(&master, "t", CodingParams::default(), 4 << 10).unwrap();
        assert_ne!(write(&mut random)[0].0, first[0].0);
    }
}
