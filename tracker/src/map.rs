//! The piece map in sled: which providers hold which piece of which segment, and who owns it.
//!
//! Trees:
//! - `segments`: segment id → owner node id (set by the first confirmed receipt).
//! - `pieces`: segment id ‖ index (u32 BE) → piece id ‖ size (u64 LE) ‖ holder ids (32 bytes each).

use std::path::Path;

use wwt_net::NetError;
use wwt_net::types::{NodeId, PieceId, SegmentId};

/// One recorded piece of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedPiece {
    /// Its index in the segment.
    pub index: u32,
    /// Its id.
    pub piece: PieceId,
    /// Its size.
    pub size: u64,
    /// Providers that confirmed holding it.
    pub holders: Vec<NodeId>,
}

impl MappedPiece {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + 32 * self.holders.len());
        out.extend_from_slice(&self.piece.0);
        out.extend_from_slice(&self.size.to_le_bytes());
        for h in &self.holders {
            out.extend_from_slice(&h.0);
        }
        out
    }

    fn decode(index: u32, bytes: &[u8]) -> Result<MappedPiece, NetError> {
        let corrupt = || NetError::Internal("corrupt piece map entry".into());
        if bytes.len() < 40 || !(bytes.len() - 40).is_multiple_of(32) {
            return Err(corrupt());
        }
        let piece = PieceId::from_slice(&bytes[..32]).map_err(|_| corrupt())?;
        let size = u64::from_le_bytes(bytes[32..40].try_into().map_err(|_| corrupt())?);
        let holders = bytes[40..]
            .chunks_exact(32)
            .map(|c| NodeId::from_slice(c).map_err(|_| corrupt()))
            .collect::<Result<_, _>>()?;
        Ok(MappedPiece {
            index,
            piece,
            size,
            holders,
        })
    }
}

fn db_err(e: sled::Error) -> NetError {
    NetError::Internal(format!("piece map: {e}"))
}

/// The key of piece `index` of `segment`: segment ‖ index (big-endian), so a segment's
/// pieces sort together.
pub(crate) fn key(segment: &SegmentId, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&segment.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The segment and index of a [`key`].
pub(crate) fn split_key(k: &[u8]) -> Result<(SegmentId, u32), NetError> {
    let corrupt = || NetError::Internal("corrupt piece map key".into());
    let segment = SegmentId::from_slice(k.get(..32).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let index = k
        .get(32..36)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(corrupt)?;
    Ok((segment, index))
}

/// The tracker's durable piece map.
#[derive(Debug)]
pub struct PieceMap {
    segments: sled::Tree,
    pieces: sled::Tree,
    db: sled::Db,
}

impl PieceMap {
    /// Opens (or creates) the map in `dir`.
    pub fn open(dir: &Path) -> Result<PieceMap, sled::Error> {
        PieceMap::in_db(sled::open(dir)?)
    }

    /// The map kept in `db` (whose other trees the audits use).
    fn in_db(db: sled::Db) -> Result<PieceMap, sled::Error> {
        Ok(PieceMap {
            segments: db.open_tree("segments")?,
            pieces: db.open_tree("pieces")?,
            db,
        })
    }

    /// The owner of `segment`, if any piece of it was confirmed.
    pub fn owner(&self, segment: &SegmentId) -> Result<Option<NodeId>, NetError> {
        match self.segments.get(segment.0).map_err(db_err)? {
            Some(v) => Ok(Some(NodeId::from_slice(&v).map_err(|_| {
                NetError::Internal("corrupt segment owner entry".into())
            })?)),
            None => Ok(None),
        }
    }

    /// Claims `segment` for `owner`; fails if another owner holds it.
    pub fn claim(&self, segment: &SegmentId, owner: &NodeId) -> Result<(), NetError> {
        let swapped = self
            .segments
            .compare_and_swap(segment.0, None::<&[u8]>, Some(&owner.0[..]))
            .map_err(db_err)?;
        match swapped {
            Ok(()) => Ok(()),
            Err(current) if current.current.as_deref() == Some(&owner.0[..]) => Ok(()),
            Err(_) => Err(NetError::Forbidden(format!(
                "segment {segment} belongs to another owner"
            ))),
        }
    }

    /// Records that `holder` stores piece `index` of `segment`. A different piece id at the same
    /// index (a re-coded piece) replaces the old one and its holders.
    pub fn add_holder(
        &self,
        segment: &SegmentId,
        index: u32,
        piece: PieceId,
        size: u64,
        holder: NodeId,
    ) -> Result<(), NetError> {
        let k = key(segment, index);
        let mut failure = None;
        self.pieces
            .update_and_fetch(k, |old| {
                let mut entry = match old.map(|b| MappedPiece::decode(index, b)) {
                    Some(Ok(e)) if e.piece == piece => e,
                    Some(Err(e)) => {
                        failure = Some(e);
                        return old.map(<[u8]>::to_vec);
                    }
                    _ => MappedPiece {
                        index,
                        piece,
                        size,
                        holders: Vec::new(),
                    },
                };
                if !entry.holders.contains(&holder) {
                    entry.holders.push(holder);
                }
                Some(entry.encode())
            })
            .map_err(db_err)?;
        failure.map_or(Ok(()), Err)
    }

    /// The database the map lives in.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every recorded change durable, on a blocking thread (not sled's `flush_async`,
    /// whose small thread pool deadlocks under concurrent flushes).
    pub async fn flush(&self) -> Result<(), NetError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| NetError::Internal(format!("flush task failed: {e}")))?
            .map_err(db_err)?;
        Ok(())
    }

    /// Every recorded piece with its segment (a full scan: for audits' bookkeeping and reports).
    pub fn all(&self) -> Result<Vec<(SegmentId, MappedPiece)>, NetError> {
        self.pieces
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(db_err)?;
                let (segment, index) = split_key(&k)?;
                Ok((segment, MappedPiece::decode(index, &v)?))
            })
            .collect()
    }

    /// Every segment with an owner here.
    pub fn owned(&self) -> impl Iterator<Item = Result<SegmentId, NetError>> + '_ {
        self.segments
            .iter()
            .keys()
            .map(|k| SegmentId::from_slice(&k.map_err(db_err)?))
    }

    /// The recorded pieces of `segment`, by index.
    pub fn segment(&self, segment: &SegmentId) -> Result<Vec<MappedPiece>, NetError> {
        self.pieces
            .scan_prefix(segment.0)
            .map(|entry| {
                let (k, v) = entry.map_err(db_err)?;
                MappedPiece::decode(split_key(&k)?.1, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Opens the map at `dir`. sled lets go of its file lock from background threads after
    /// its last handle is dropped, so a map dropped just before may still hold it: wait for
    /// that, up to 10 s, as a restarted daemon's supervisor would.
    fn open(dir: &Path) -> PieceMap {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match PieceMap::open(dir) {
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn entries_round_trip(index: u32, piece: [u8; 32], size: u64, holders: Vec<[u8; 32]>) {
            let entry = MappedPiece {
                index,
                piece: PieceId(piece),
                size,
                holders: holders.into_iter().map(NodeId).collect(),
            };
            proptest::prop_assert_eq!(MappedPiece::decode(index, &entry.encode()).unwrap(), entry.clone());
            let encoded = entry.encode();
            proptest::prop_assert!(MappedPiece::decode(index, &encoded[..encoded.len() - 1]).is_err());
        }
    }

    #[tokio::test]
    async fn holders_accumulate_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentId([1; 32]);
        {
            let map = open(dir.path());
            map.claim(&seg, &NodeId([9; 32])).unwrap();
            assert!(map.claim(&seg, &NodeId([8; 32])).is_err());
            map.add_holder(&seg, 1, PieceId([2; 32]), 10, NodeId([3; 32]))
                .unwrap();
            map.add_holder(&seg, 1, PieceId([2; 32]), 10, NodeId([4; 32]))
                .unwrap();
            map.add_holder(&seg, 1, PieceId([2; 32]), 10, NodeId([4; 32]))
                .unwrap();
            map.add_holder(&seg, 0, PieceId([5; 32]), 10, NodeId([3; 32]))
                .unwrap();
            map.flush().await.unwrap();
        }
        let map = open(dir.path());
        assert_eq!(map.owner(&seg).unwrap(), Some(NodeId([9; 32])));
        let pieces = map.segment(&seg).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].index, 0);
        assert_eq!(pieces[1].holders, vec![NodeId([3; 32]), NodeId([4; 32])]);
        let all = map.all().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|(s, _)| *s == seg));
        assert!(map.segment(&SegmentId([2; 32])).unwrap().is_empty());
    }
}
