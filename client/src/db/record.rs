//! The row record: `format ‖ parent? ‖ row`, sealed as one row version. The parent is the
//! previous version's locator and the BLAKE3 hash of its record, so a row's history is a hash
//! chain.

use super::{ClientError, Result};

const RECORD_FORMAT: u8 = 1;

/// `format ‖ parent? ‖ row`: parent = 1 ‖ locator length (u16 LE) ‖ locator ‖ BLAKE3 of the
/// parent's record, or 0 for a first version.
pub(super) fn make_record(parent: Option<&(Vec<u8>, [u8; 32])>, row: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + 4);
    out.push(RECORD_FORMAT);
    match parent {
        None => out.push(0),
        Some((locator, hash)) => {
            out.push(1);
            out.extend_from_slice(&(locator.len() as u16).to_le_bytes());
            out.extend_from_slice(locator);
            out.extend_from_slice(hash);
        }
    }
    out.extend_from_slice(row);
    out
}

/// A previous version: its locator and the hash of its record.
pub(super) type Parent = Option<(Vec<u8>, [u8; 32])>;

pub(super) fn split_record(record: &[u8]) -> Result<(Parent, &[u8])> {
    let bad = || ClientError::Damaged("a row record is malformed".into());
    match record {
        [RECORD_FORMAT, 0, row @ ..] => Ok((None, row)),
        [RECORD_FORMAT, 1, a, b, rest @ ..] => {
            let n = usize::from(u16::from_le_bytes([*a, *b]));
            let locator = rest.get(..n).ok_or_else(bad)?;
            let hash: [u8; 32] = rest
                .get(n..n + 32)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(bad)?;
            Ok((Some((locator.to_vec(), hash)), &rest[n + 32..]))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod vectors {
    use super::*;

    #[test]
    fn row_records() {
        let first = make_record(None, b"row bytes");
        assert_eq!(hex::encode(&first), "0100726f77206279746573");
        let parent = (vec![9u8; 5], [3u8; 32]);
        let next = make_record(Some(&parent), b"row bytes");
        assert_eq!(
            hex::encode(&next),
            "0101050009090909090303030303030303030303030303030303030303030303030303030303030303726f77206279746573"
        );
        let (p, row) = split_record(&next).expect("splits");
        assert_eq!((p, row), (Some(parent), &b"row bytes"[..]));
    }
}
