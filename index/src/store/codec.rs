//! Byte encodings of what the store keeps in sled: table schemas, primary records and the
//! keys of the equality and range trees.

use crate::error::IndexError;
use crate::ope::{OPE_LEN, OpeCiphertext};
use crate::token::{EqToken, TOKEN_LEN};
use crate::types::{ColumnId, IndexKind, ROW_LEN, RowId, TableSchema};

/// The primary map's value for one row: latest version, locator, and the secondary entries
/// written with it (so that an update or delete can remove them).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PrimaryRecord {
    pub version: u64,
    pub deleted: bool,
    pub locator: Vec<u8>,
    pub equality: Vec<(ColumnId, EqToken)>,
    pub range: Vec<(ColumnId, OpeCiphertext)>,
    pub has_text: bool,
}

const FLAG_TEXT: u8 = 1;
const FLAG_DELETED: u8 = 2;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        if self.0.len() < n {
            return Err(IndexError::Corrupt("truncated record"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], IndexError> {
        self.take(N)?
            .try_into()
            .map_err(|_| IndexError::Corrupt("truncated record"))
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u8(&mut self) -> Result<u8, IndexError> {
        self.array::<1>().map(|[b]| b)
    }

    fn finish(self) -> Result<(), IndexError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(IndexError::Corrupt("trailing bytes in record"))
        }
    }
}

fn len_u32(n: usize) -> [u8; 4] {
    // Lengths are bounded by request validation far below u32::MAX.
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

impl PrimaryRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            18 + self.locator.len() + self.equality.len() * 20 + self.range.len() * 24,
        );
        out.extend_from_slice(&self.version.to_be_bytes());
        let mut flags = 0;
        if self.has_text {
            flags |= FLAG_TEXT;
        }
        if self.deleted {
            flags |= FLAG_DELETED;
        }
        out.push(flags);
        out.extend_from_slice(&len_u32(self.locator.len()));
        out.extend_from_slice(&self.locator);
        out.extend_from_slice(&len_u32(self.equality.len()));
        for (c, t) in &self.equality {
            out.extend_from_slice(&c.0.to_be_bytes());
            out.extend_from_slice(&t.0);
        }
        out.extend_from_slice(&len_u32(self.range.len()));
        for (c, o) in &self.range {
            out.extend_from_slice(&c.0.to_be_bytes());
            out.extend_from_slice(&o.0);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, IndexError> {
        let mut r = Reader(bytes);
        let version = u64::from_be_bytes(r.array()?);
        let flags = r.u8()?;
        let n = r.u32()? as usize;
        let locator = r.take(n)?.to_vec();
        let n = r.u32()? as usize;
        let mut equality = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            equality.push((ColumnId(r.u32()?), EqToken(r.array::<TOKEN_LEN>()?)));
        }
        let n = r.u32()? as usize;
        let mut range = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            range.push((ColumnId(r.u32()?), OpeCiphertext(r.array::<OPE_LEN>()?)));
        }
        r.finish()?;
        Ok(Self {
            version,
            deleted: flags & FLAG_DELETED != 0,
            locator,
            equality,
            range,
            has_text: flags & FLAG_TEXT != 0,
        })
    }
}

pub(crate) fn encode_schema(schema: &TableSchema) -> Vec<u8> {
    let mut out = Vec::with_capacity(schema.indexes.len() * 5);
    for (c, k) in &schema.indexes {
        out.extend_from_slice(&c.0.to_be_bytes());
        out.push(k.to_byte());
    }
    out
}

pub(crate) fn decode_schema(bytes: &[u8]) -> Result<TableSchema, IndexError> {
    let mut r = Reader(bytes);
    let mut indexes = Vec::new();
    while !r.0.is_empty() {
        let c = ColumnId(r.u32()?);
        let k = IndexKind::from_byte(r.u8()?).ok_or(IndexError::Corrupt("unknown index kind"))?;
        indexes.push((c, k));
    }
    Ok(TableSchema { indexes })
}

/// Equality tree key: column ‖ token ‖ row.
pub(crate) fn eq_key(
    column: ColumnId,
    token: &EqToken,
    row: &RowId,
) -> [u8; 4 + TOKEN_LEN + ROW_LEN] {
    let mut k = [0u8; 4 + TOKEN_LEN + ROW_LEN];
    k[..4].copy_from_slice(&column.0.to_be_bytes());
    k[4..4 + TOKEN_LEN].copy_from_slice(&token.0);
    k[4 + TOKEN_LEN..].copy_from_slice(&row.0);
    k
}

/// Range tree key: column ‖ OPE ciphertext ‖ row.
pub(crate) fn range_key(
    column: ColumnId,
    ct: &OpeCiphertext,
    row: &RowId,
) -> [u8; 4 + OPE_LEN + ROW_LEN] {
    let mut k = [0u8; 4 + OPE_LEN + ROW_LEN];
    k[..4].copy_from_slice(&column.0.to_be_bytes());
    k[4..4 + OPE_LEN].copy_from_slice(&ct.0);
    k[4 + OPE_LEN..].copy_from_slice(&row.0);
    k
}

/// The row id at the end of an equality or range key.
pub(crate) fn row_of_key(key: &[u8]) -> Result<RowId, IndexError> {
    key.len()
        .checked_sub(ROW_LEN)
        .and_then(|start| key[start..].try_into().ok())
        .map(RowId)
        .ok_or(IndexError::Corrupt("short index key"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn primary_record_round_trips(
            version in any::<u64>(),
            deleted in any::<bool>(),
            has_text in any::<bool>(),
            locator in proptest::collection::vec(any::<u8>(), 0..64),
            equality in proptest::collection::vec((any::<u32>(), any::<[u8; TOKEN_LEN]>()), 0..4),
            range in proptest::collection::vec((any::<u32>(), any::<[u8; OPE_LEN]>()), 0..4),
        ) {
            let rec = PrimaryRecord {
                version,
                deleted,
                locator,
                equality: equality.into_iter().map(|(c, t)| (ColumnId(c), EqToken(t))).collect(),
                range: range.into_iter().map(|(c, o)| (ColumnId(c), OpeCiphertext(o))).collect(),
                has_text,
            };
            let bytes = rec.encode();
            prop_assert_eq!(PrimaryRecord::decode(&bytes).unwrap(), rec);
            if !bytes.is_empty() {
                prop_assert!(PrimaryRecord::decode(&bytes[..bytes.len() - 1]).is_err());
            }
        }

        #[test]
        fn schema_round_trips(cols in proptest::collection::vec((any::<u32>(), 1u8..=3), 0..8)) {
            let schema = TableSchema {
                indexes: cols
                    .into_iter()
                    .map(|(c, k)| (ColumnId(c), IndexKind::from_byte(k).unwrap()))
                    .collect(),
            };
            prop_assert_eq!(decode_schema(&encode_schema(&schema)).unwrap(), schema);
        }
    }
}
