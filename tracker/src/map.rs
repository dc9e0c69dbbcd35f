//! The piece map in sled: which providers hold which piece of which segment, and who owns it.
//!
//! Trees:
//! - `segments`: segment id → owner node id (claimed at its first reservation).
//! - `pieces`: segment id ‖ index (u32 BE) → piece id ‖ size (u64 LE) ‖ holder ids (32 bytes each).
//! - `claimed`: segment id → when it was claimed (ms, u64 LE), until its first piece is mapped;
//!   a claim nothing was stored under expires ([`PieceMap::expire_claims`]).
//! - `usage`: owner → bytes of its pieces mapped here, each holder's copy counted (u64 LE).

use std::path::Path;

use wwt_net::NetError;
use wwt_net::types::{NodeId, PieceId, PieceSpec, SegmentId};

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
    claimed: sled::Tree,
    usage: sled::Tree,
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
            claimed: db.open_tree("claimed")?,
            usage: db.open_tree("usage")?,
            db,
        })
    }

    /// The owner of `segment`, if it was claimed.
    pub fn owner(&self, segment: &SegmentId) -> Result<Option<NodeId>, NetError> {
        match self.segments.get(segment.0).map_err(db_err)? {
            Some(v) => Ok(Some(NodeId::from_slice(&v).map_err(|_| {
                NetError::Internal("corrupt segment owner entry".into())
            })?)),
            None => Ok(None),
        }
    }

    /// Claims `segment` for `owner` at `now_ms`; fails if another owner holds it. Claiming
    /// again a segment that holds no piece yet renews the claim.
    pub fn claim(&self, segment: &SegmentId, owner: &NodeId, now_ms: u64) -> Result<(), NetError> {
        self.take_owner(segment, owner)?;
        if self.pieces.scan_prefix(segment.0).next().is_none() {
            self.claimed
                .insert(segment.0, &now_ms.to_le_bytes())
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Makes `owner` the owner of `segment` unless it has one; fails if that is another.
    fn take_owner(&self, segment: &SegmentId, owner: &NodeId) -> Result<(), NetError> {
        let swapped = self
            .segments
            .compare_and_swap(segment.0, None::<&[u8]>, Some(&owner.0[..]))
            .map_err(db_err)?;
        match swapped {
            Err(current) if current.current.as_deref() != Some(&owner.0[..]) => Err(
                NetError::Forbidden(format!("segment {segment} belongs to another owner")),
            ),
            _ => Ok(()),
        }
    }

    /// Records that `holder` stores piece `index` of `owner`'s `segment`; whether that is news
    /// (not a holder recorded before). A different piece id at the same index (a re-coded
    /// piece) replaces the old one and its holders.
    pub fn add_holder(
        &self,
        segment: &SegmentId,
        owner: &NodeId,
        piece: &PieceSpec,
        holder: NodeId,
    ) -> Result<bool, NetError> {
        let &PieceSpec { index, piece, size } = piece;
        let k = key(segment, index);
        let mut failure = None;
        let (mut fresh, mut added, mut replaced) = (false, 0, 0);
        self.pieces
            .update_and_fetch(k, |old| {
                (fresh, added, replaced) = (false, 0, 0);
                let mut entry = match old.map(|b| MappedPiece::decode(index, b)) {
                    Some(Ok(e)) if e.piece == piece => e,
                    Some(Err(e)) => {
                        failure = Some(e);
                        return old.map(<[u8]>::to_vec);
                    }
                    old => {
                        if let Some(Ok(e)) = old {
                            replaced = e.size.saturating_mul(e.holders.len() as u64);
                        }
                        MappedPiece {
                            index,
                            piece,
                            size,
                            holders: Vec::new(),
                        }
                    }
                };
                if !entry.holders.contains(&holder) {
                    entry.holders.push(holder);
                    (fresh, added) = (true, size);
                }
                Some(entry.encode())
            })
            .map_err(db_err)?;
        if let Some(e) = failure {
            return Err(e);
        }
        // Mapped first, owned second: a claim expiring meanwhile cannot orphan the piece.
        self.take_owner(segment, owner)?;
        self.claimed.remove(segment.0).map_err(db_err)?;
        if added != replaced {
            self.usage
                .update_and_fetch(owner.0, |old| {
                    let used = old
                        .and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
                        .unwrap_or(0);
                    Some(
                        used.saturating_add(added)
                            .saturating_sub(replaced)
                            .to_le_bytes()
                            .to_vec(),
                    )
                })
                .map_err(db_err)?;
        }
        Ok(fresh)
    }

    /// Bytes of `owner`'s pieces mapped here, each holder's copy counted (a re-coded piece
    /// replaces the bytes of the one it replaces).
    pub fn usage(&self, owner: &NodeId) -> Result<u64, NetError> {
        Ok(self
            .usage
            .get(owner.0)
            .map_err(db_err)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0))
    }

    /// Drops the claims made before `before_ms` under which no piece was stored (an upload
    /// abandoned, or reservations taken and never used); returns how many.
    pub fn expire_claims(&self, before_ms: u64) -> Result<usize, NetError> {
        let mut expired = 0;
        for entry in self.claimed.iter() {
            let (k, v) = entry.map_err(db_err)?;
            let at = v.as_ref().try_into().map(u64::from_le_bytes).unwrap_or(0);
            if at >= before_ms || self.pieces.scan_prefix(&k).next().is_some() {
                continue;
            }
            let owner = self.segments.remove(&k).map_err(db_err)?;
            self.claimed.remove(&k).map_err(db_err)?;
            // A piece confirmed meanwhile keeps its owner (`add_holder` maps, then owns).
            if let Some(owner) = owner
                && self.pieces.scan_prefix(&k).next().is_some()
            {
                let _ = self
                    .segments
                    .compare_and_swap(&k, None::<&[u8]>, Some(owner))
                    .map_err(db_err)?;
                continue;
            }
            expired += 1;
        }
        Ok(expired)
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

    fn spec(index: u32, piece: [u8; 32], size: u64) -> PieceSpec {
        PieceSpec {
            index,
            piece: PieceId(piece),
            size,
        }
    }

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
            map.claim(&seg, &NodeId([9; 32]), 0).unwrap();
            assert!(map.claim(&seg, &NodeId([8; 32]), 0).is_err());
            // Piece 1 at two holders (one of them twice), piece 0 at one.
            for (index, piece, holder, fresh) in [
                (1, [2; 32], 3, true),
                (1, [2; 32], 4, true),
                (1, [2; 32], 4, false),
                (0, [5; 32], 3, true),
            ] {
                let added = map.add_holder(
                    &seg,
                    &NodeId([9; 32]),
                    &spec(index, piece, 10),
                    NodeId([holder; 32]),
                );
                assert_eq!(added.unwrap(), fresh);
            }
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
        // Three copies of 10 bytes, the repeated one counted once.
        assert_eq!(map.usage(&NodeId([9; 32])).unwrap(), 30);
        // Piece 1 re-coded on one holder: its two old copies no longer count.
        map.add_holder(
            &seg,
            &NodeId([9; 32]),
            &spec(1, [6; 32], 10),
            NodeId([5; 32]),
        )
        .unwrap();
        assert_eq!(map.usage(&NodeId([9; 32])).unwrap(), 20);
        assert!(
            map.add_holder(
                &seg,
                &NodeId([8; 32]),
                &spec(2, [7; 32], 10),
                NodeId([5; 32])
            )
            .is_err()
        );
    }

    #[test]
    fn claims_nothing_was_stored_under_expire() {
        let dir = tempfile::tempdir().unwrap();
        let map = open(dir.path());
        let (used, idle, fresh) = (SegmentId([1; 32]), SegmentId([2; 32]), SegmentId([3; 32]));
        let owner = NodeId([9; 32]);
        for (s, at) in [(used, 100), (idle, 100), (fresh, 900)] {
            map.claim(&s, &owner, at).unwrap();
        }
        map.add_holder(
            &used,
            &NodeId([9; 32]),
            &spec(0, [5; 32], 10),
            NodeId([3; 32]),
        )
        .unwrap();
        assert_eq!(map.expire_claims(500).unwrap(), 1);
        assert_eq!(map.owner(&used).unwrap(), Some(owner));
        assert_eq!(map.owner(&idle).unwrap(), None);
        assert_eq!(map.owner(&fresh).unwrap(), Some(owner));
        // Another owner may now take the expired id; the kept ones stay refused.
        map.claim(&idle, &NodeId([8; 32]), 600).unwrap();
        assert!(map.claim(&used, &NodeId([8; 32]), 600).is_err());
        assert_eq!(map.expire_claims(u64::MAX).unwrap(), 2);
        assert_eq!(map.owner(&used).unwrap(), Some(owner));
    }
}
