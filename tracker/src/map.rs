//! The piece map in sled: which providers hold which piece of which segment, and who owns it.
//!
//! Trees:
//! - `segments`: segment id → owner node id (claimed at its first reservation).
//! - `pieces`: segment id ‖ index (u32 BE) → piece id ‖ size (u64 LE) ‖ holder ids (32 bytes each).
//! - `claimed`: segment id → when it was claimed (ms, u64 LE), until its first piece is mapped;
//!   a claim nothing was stored under expires ([`PieceMap::expire_claims`]).
//! - `usage`: owner → bytes of its pieces mapped here, each holder's copy counted (u64 LE).
//! - `forgotten`: segment id → owner (32 bytes) ‖ when it was forgotten (ms, u64 LE) ‖ why (one
//!   byte: 0 its owner deleted it, 1 it was an orphan): a tombstone ([`Tombstone`]). A
//!   forgotten segment is never mapped, claimed or entrusted again ([`PieceMap::forget`]),
//!   except that an orphan's is lifted when the other tracker of its pair has the segment
//!   entrusted ([`PieceMap::take_back`]).
//! - `unentrusted`: segment id → when a piece of it was first mapped while it was not
//!   entrusted (ms, u64 LE), cleared at its entrust: a segment still here past
//!   [`crate::AuditConfig::orphan_grace_ms`] is an orphan.
//! - `orphaned`: keyed and valued as `pieces`: the pieces of orphans forgotten here whose
//!   copies wait for the other tracker of their pair to forget them too
//!   ([`PieceMap::release_orphan`]; see [`crate::forget`]).
//! - `doomed`: holder id ‖ piece id → segment id ‖ size (u64 LE) ‖ when doomed (ms, u64 LE):
//!   copies nothing maps any more (their segment deleted, or re-coded by a repair), to delete
//!   at their holders; keyed by holder so the deletes go in batches per holder.
//!
//! [`PieceMap::forget`] also reads the audits' `entrusted` tree and writes the pair's `handoff`
//! tree, in the transaction that leaves the tombstone.
//!
//! Every write takes the map's gate shared, and [`PieceMap::forget`], [`PieceMap::take_back`]
//! and [`PieceMap::release_orphan`] take it alone, so a piece is never mapped under a segment
//! as it is forgotten.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use wwt_net::NetError;
use wwt_net::types::{NodeId, PieceId, PieceSpec, SegmentId};

use crate::error::poisoned;

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
        let size = u64_at(bytes, 32).ok_or_else(corrupt)?;
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

/// The u64 (little-endian) at byte `at` of `bytes`, if they are long enough.
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// A copy nothing maps any more, waiting to be deleted at its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoomedPiece {
    /// The provider holding it.
    pub holder: NodeId,
    /// The piece.
    pub piece: PieceId,
    /// The segment it was a piece of.
    pub segment: SegmentId,
    /// Its size.
    pub size: u64,
    /// When it was doomed (audit clock, ms).
    pub since_ms: u64,
}

impl DoomedPiece {
    fn key(holder: &NodeId, piece: &PieceId) -> [u8; 64] {
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&holder.0);
        k[32..].copy_from_slice(&piece.0);
        k
    }

    fn value(&self) -> [u8; 48] {
        let mut v = [0u8; 48];
        v[..32].copy_from_slice(&self.segment.0);
        v[32..40].copy_from_slice(&self.size.to_le_bytes());
        v[40..].copy_from_slice(&self.since_ms.to_le_bytes());
        v
    }

    fn decode(k: &[u8], v: &[u8]) -> Result<DoomedPiece, NetError> {
        let corrupt = || NetError::Internal("corrupt doomed piece entry".into());
        let id = |b: Option<&[u8]>| b.and_then(|b| <[u8; 32]>::try_from(b).ok());
        Ok(DoomedPiece {
            holder: NodeId(id(k.get(..32)).ok_or_else(corrupt)?),
            piece: PieceId(id(k.get(32..64)).ok_or_else(corrupt)?),
            segment: SegmentId(id(v.get(..32)).ok_or_else(corrupt)?),
            size: u64_at(v, 32).ok_or_else(corrupt)?,
            since_ms: u64_at(v, 40).ok_or_else(corrupt)?,
        })
    }
}

/// A forgotten segment's tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// The segment's owner.
    pub owner: NodeId,
    /// When it was forgotten (audit clock, ms).
    pub at_ms: u64,
    /// Forgotten as an orphan (never entrusted within its grace), not deleted by its owner.
    pub orphan: bool,
}

impl Tombstone {
    fn encode(&self) -> [u8; 41] {
        let mut v = [0u8; 41];
        v[..32].copy_from_slice(&self.owner.0);
        v[32..40].copy_from_slice(&self.at_ms.to_le_bytes());
        v[40] = u8::from(self.orphan);
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Tombstone, NetError> {
        let corrupt = || NetError::Internal("corrupt forgotten segment entry".into());
        if v.len() != 41 || v[40] > 1 {
            return Err(corrupt());
        }
        Ok(Tombstone {
            owner: NodeId::from_slice(&v[..32]).map_err(|_| corrupt())?,
            at_ms: u64_at(v, 32).ok_or_else(corrupt)?,
            orphan: v[40] == 1,
        })
    }

    /// The refusal to store, map or entrust `segment` again, saying why it is gone.
    pub(crate) fn refusal(&self, segment: &SegmentId) -> NetError {
        let why = match self.orphan {
            false => "was deleted by its owner",
            true => {
                "was not entrusted within the tracker's grace after its pieces were stored, so \
                 it was dropped as an abandoned upload"
            }
        };
        NetError::Precondition(format!(
            "segment {segment} {why}; it is not stored again: write its rows to a new segment"
        ))
    }
}

/// How [`PieceMap::forget`] forgets a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgetting {
    /// Its owner deleted it. With `unknown_too` (the other tracker of its pair says so), a
    /// segment not known here is forgotten too.
    Owner {
        /// Forget it even if nothing is known of it here.
        unknown_too: bool,
    },
    /// An orphan: forgotten only if, in the transaction that leaves the tombstone, it has no
    /// entrusted record and is marked unentrusted since `since_by` (ms) or before. With
    /// `held`, its copies are kept aside in `orphaned` until [`PieceMap::release_orphan`]
    /// (or [`PieceMap::take_back`]) instead of doomed now.
    Orphan {
        /// The latest unentrusted mark that makes it an orphan.
        since_by: u64,
        /// Hold its copies for the other tracker of its pair.
        held: bool,
    },
}

/// What [`PieceMap::forget`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgot {
    /// The segment was forgotten before.
    Already,
    /// Nothing is known of the segment here; nothing was done.
    Unknown,
    /// Not an orphan (any more): entrusted, or marked again, meanwhile; nothing was done.
    Kept,
    /// Forgotten now: these were its pieces, and every copy of them is doomed (or held).
    Now(Vec<MappedPiece>),
}

/// The key of piece `index` of `segment`: segment ‖ index (big-endian), so a segment's
/// pieces sort together.
pub(crate) fn key(segment: &SegmentId, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&segment.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The pieces of entries of `pieces` or `orphaned`, by index.
fn decode_pieces(entries: sled::Iter) -> Result<Vec<MappedPiece>, NetError> {
    entries
        .map(|entry| {
            let (k, v) = entry.map_err(db_err)?;
            MappedPiece::decode(split_key(&k)?.1, &v)
        })
        .collect()
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
    forgotten: sled::Tree,
    unentrusted: sled::Tree,
    orphaned: sled::Tree,
    doomed: sled::Tree,
    /// The audits' `entrusted` tree: an orphan is forgotten only while it has no record there.
    entrusted: sled::Tree,
    /// The pair's hand-off queue: an owner's forget marks its segment for the other tracker of
    /// its pair in the transaction that leaves the tombstone.
    handoff: sled::Tree,
    /// Shared by every write, held alone by [`PieceMap::forget`], [`PieceMap::take_back`] and
    /// [`PieceMap::release_orphan`].
    gate: RwLock<()>,
    /// Counts the changes to the pieces and their holders ([`PieceMap::version`]).
    changes: AtomicU64,
    db: sled::Db,
}

fn tx_err(e: TransactionError<()>) -> NetError {
    match e {
        TransactionError::Storage(e) => db_err(e),
        TransactionError::Abort(()) => NetError::Internal("piece map transaction aborted".into()),
    }
}

fn another_owner(segment: &SegmentId) -> NetError {
    NetError::Forbidden(format!("segment {segment} belongs to another owner"))
}

/// Bytes of the copies of `pieces`, each holder's counted.
fn bytes(pieces: &[MappedPiece]) -> u64 {
    pieces
        .iter()
        .map(|p| p.size.saturating_mul(p.holders.len() as u64))
        .sum()
}

/// Dooms, in a transaction on the `doomed` tree, every copy of `piece` of `segment` at `now_ms`.
fn doom_copies(
    doomed: &TransactionalTree,
    segment: &SegmentId,
    piece: &MappedPiece,
    now_ms: u64,
) -> Result<(), UnabortableTransactionError> {
    for holder in &piece.holders {
        let doomed_piece = DoomedPiece {
            holder: *holder,
            piece: piece.piece,
            segment: *segment,
            size: piece.size,
            since_ms: now_ms,
        };
        doomed.insert(
            &DoomedPiece::key(holder, &piece.piece)[..],
            &doomed_piece.value()[..],
        )?;
    }
    Ok(())
}

/// Adds `add` and takes `take` bytes from `owner`'s usage, in a transaction on `usage`.
fn change_usage(
    usage: &TransactionalTree,
    owner: &NodeId,
    add: u64,
    take: u64,
) -> Result<(), UnabortableTransactionError> {
    if add != take {
        let used = usage.get(owner.0)?.and_then(|v| u64_at(&v, 0)).unwrap_or(0);
        let used = used.saturating_add(add).saturating_sub(take);
        usage.insert(&owner.0[..], &used.to_le_bytes()[..])?;
    }
    Ok(())
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
            forgotten: db.open_tree("forgotten")?,
            unentrusted: db.open_tree("unentrusted")?,
            orphaned: db.open_tree("orphaned")?,
            doomed: db.open_tree("doomed")?,
            entrusted: db.open_tree(crate::audit::ENTRUSTED_TREE)?,
            handoff: db.open_tree(crate::pair::HANDOFF_TREE)?,
            gate: RwLock::new(()),
            changes: AtomicU64::new(0),
            db,
        })
    }

    /// Moves after every change to the pieces or their holders is written (since the map
    /// was opened): a summary of [`PieceMap::all`] taken after reading a version is current
    /// while the version stays the same.
    pub fn version(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn shared(&self) -> Result<RwLockReadGuard<'_, ()>, NetError> {
        self.gate.read().map_err(|_| poisoned("piece map gate"))
    }

    fn alone(&self) -> Result<RwLockWriteGuard<'_, ()>, NetError> {
        self.gate.write().map_err(|_| poisoned("piece map gate"))
    }

    /// `segment`'s tombstone, if it was forgotten.
    pub fn forgotten_by(&self, segment: &SegmentId) -> Result<Option<Tombstone>, NetError> {
        match self.forgotten.get(segment.0).map_err(db_err)? {
            Some(v) => Ok(Some(Tombstone::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Refuses `segment` if it was forgotten, saying why.
    pub(crate) fn check_kept(&self, segment: &SegmentId) -> Result<(), NetError> {
        match self.forgotten_by(segment)? {
            Some(tombstone) => Err(tombstone.refusal(segment)),
            None => Ok(()),
        }
    }

    /// Forgets `segment` of `owner` at `now_ms` as `how` says, in one transaction: leaves a
    /// tombstone, dooms every mapped copy of its pieces (or holds them, for an orphan), drops
    /// its owner, claim, pieces and their bytes from the owner's usage, and marks it for each
    /// of `mark_for` in the pair's hand-off queue. A segment known here under another owner is
    /// refused (`Forbidden`); one not known at all is left alone unless `unknown_too`. An
    /// owner's forget of an orphan forgotten here turns its tombstone into an owner's and
    /// dooms the copies held aside.
    pub fn forget(
        &self,
        segment: &SegmentId,
        owner: &NodeId,
        now_ms: u64,
        how: Forgetting,
        mark_for: &[NodeId],
    ) -> Result<Forgot, NetError> {
        let _alone = self.alone()?;
        let (orphan, unknown_too, held) = match how {
            Forgetting::Owner { unknown_too } => (None, unknown_too, false),
            Forgetting::Orphan { since_by, held } => (Some(since_by), false, held),
        };
        let was = self.forgotten_by(segment)?;
        match was {
            Some(t) if t.orphan && orphan.is_none() && t.owner != *owner => {
                return Err(another_owner(segment));
            }
            Some(t) if t.orphan && orphan.is_none() => {}
            Some(_) => return Ok(Forgot::Already),
            None => {}
        }
        match self.owner(segment)? {
            Some(known) if known != *owner => return Err(another_owner(segment)),
            None if was.is_none() && !unknown_too => return Ok(Forgot::Unknown),
            _ => {}
        }
        let mapped = self.segment(segment)?;
        // Only when an owner's forget follows an orphan's: the copies held aside.
        let aside = self.orphaned_of(segment)?;
        let tombstone = Tombstone {
            owner: *owner,
            at_ms: now_ms,
            orphan: orphan.is_some(),
        }
        .encode();
        let marks: Vec<[u8; 64]> = mark_for
            .iter()
            .map(|peer| crate::pair::handoff_key(peer, segment))
            .collect();
        let trees = (
            &self.segments,
            &self.pieces,
            &self.claimed,
            &self.usage,
            &self.forgotten,
            &self.unentrusted,
            &self.orphaned,
            &self.doomed,
            &self.entrusted,
            &self.handoff,
        );
        let forgot = trees
            .transaction(
                |(
                    segments,
                    pieces,
                    claimed,
                    usage,
                    forgotten,
                    unentrusted,
                    orphaned,
                    doomed,
                    entrusted,
                    handoff,
                )| {
                    // An orphan is decided here, in the transaction that leaves its tombstone;
                    // an entrust decides in its own (`Audits::record`), which refuses a
                    // tombstoned segment as it writes the entrusted record and clears the
                    // unentrusted mark. sled runs transactions one at a time, so whichever
                    // runs second sees the other: an entrusted segment is never forgotten as
                    // an orphan, and an orphan forgotten is never entrusted.
                    if let Some(since_by) = orphan {
                        if entrusted.get(segment.0)?.is_some() {
                            unentrusted.remove(&segment.0[..])?;
                            return Ok(false);
                        }
                        match unentrusted.get(segment.0)?.and_then(|v| u64_at(&v, 0)) {
                            Some(since) if since <= since_by => {}
                            _ => return Ok(false),
                        }
                    }
                    forgotten.insert(&segment.0[..], &tombstone[..])?;
                    segments.remove(&segment.0[..])?;
                    claimed.remove(&segment.0[..])?;
                    unentrusted.remove(&segment.0[..])?;
                    for p in &mapped {
                        let k = key(segment, p.index);
                        pieces.remove(&k[..])?;
                        match held {
                            true => {
                                orphaned.insert(&k[..], p.encode())?;
                            }
                            false => doom_copies(doomed, segment, p, now_ms)?,
                        }
                    }
                    for p in &aside {
                        orphaned.remove(&key(segment, p.index)[..])?;
                        doom_copies(doomed, segment, p, now_ms)?;
                    }
                    change_usage(usage, owner, 0, bytes(&mapped))?;
                    for mark in &marks {
                        handoff.insert(&mark[..], &[][..])?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(true)
                },
            )
            .map_err(tx_err)?;
        self.changed();
        Ok(match forgot {
            true => Forgot::Now(mapped.into_iter().chain(aside).collect()),
            false => Forgot::Kept,
        })
    }

    /// Lifts the tombstone of `segment`, an orphan forgotten here that the other tracker of
    /// its pair has entrusted (see [`crate::forget`]), in one transaction: its pieces held
    /// aside are mapped again, with its owner and their bytes in the owner's usage. Whether
    /// there was an orphan's tombstone of `owner` to lift.
    pub fn take_back(&self, segment: &SegmentId, owner: &NodeId) -> Result<bool, NetError> {
        let _alone = self.alone()?;
        match self.forgotten_by(segment)? {
            Some(t) if t.orphan && t.owner == *owner => {}
            Some(t) if t.orphan => return Err(another_owner(segment)),
            _ => return Ok(false),
        }
        let held = self.orphaned_of(segment)?;
        let trees = (
            &self.segments,
            &self.pieces,
            &self.usage,
            &self.forgotten,
            &self.orphaned,
        );
        trees
            .transaction(|(segments, pieces, usage, forgotten, orphaned)| {
                forgotten.remove(&segment.0[..])?;
                segments.insert(&segment.0[..], &owner.0[..])?;
                for p in &held {
                    let k = key(segment, p.index);
                    orphaned.remove(&k[..])?;
                    pieces.insert(&k[..], p.encode())?;
                }
                change_usage(usage, owner, bytes(&held), 0)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_err)?;
        self.changed();
        Ok(true)
    }

    /// Dooms at `now_ms` the copies held aside for `segment`, an orphan forgotten here that
    /// the other tracker of its pair has forgotten too; returns how many.
    pub fn release_orphan(&self, segment: &SegmentId, now_ms: u64) -> Result<usize, NetError> {
        let _alone = self.alone()?;
        let held = self.orphaned_of(segment)?;
        (&self.orphaned, &self.doomed)
            .transaction(|(orphaned, doomed)| {
                for p in &held {
                    orphaned.remove(&key(segment, p.index)[..])?;
                    doom_copies(doomed, segment, p, now_ms)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_err)?;
        Ok(held.iter().map(|p| p.holders.len()).sum())
    }

    /// The pieces of `segment` held aside since it was forgotten here as an orphan.
    pub fn orphaned_of(&self, segment: &SegmentId) -> Result<Vec<MappedPiece>, NetError> {
        decode_pieces(self.orphaned.scan_prefix(segment.0))
    }

    /// Up to `limit` orphans forgotten here whose copies are held aside, by id.
    pub fn held_orphans(&self, limit: usize) -> Result<Vec<SegmentId>, NetError> {
        let mut held: Vec<SegmentId> = Vec::new();
        for k in self.orphaned.iter().keys() {
            let (segment, _) = split_key(&k.map_err(db_err)?)?;
            if held.last() != Some(&segment) {
                if held.len() == limit {
                    break;
                }
                held.push(segment);
            }
        }
        Ok(held)
    }

    /// Records that a piece of `segment` was mapped at `now_ms` while it is not entrusted,
    /// unless an earlier time is recorded.
    pub fn mark_unentrusted(&self, segment: &SegmentId, now_ms: u64) -> Result<(), NetError> {
        let _shared = self.shared()?;
        self.check_kept(segment)?;
        let _ = self
            .unentrusted
            .compare_and_swap(segment.0, None::<&[u8]>, Some(&now_ms.to_le_bytes()[..]))
            .map_err(db_err)?;
        Ok(())
    }

    /// `segment` is entrusted (or gone): it is no orphan.
    pub fn clear_unentrusted(&self, segment: &SegmentId) -> Result<(), NetError> {
        let _shared = self.shared()?;
        self.unentrusted.remove(segment.0).map_err(db_err)?;
        Ok(())
    }

    /// Every segment mapped but not entrusted, with when that began (ms).
    pub fn unentrusted(&self) -> Result<Vec<(SegmentId, u64)>, NetError> {
        self.unentrusted
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(db_err)?;
                let at = u64_at(&v, 0)
                    .ok_or_else(|| NetError::Internal("corrupt unentrusted entry".into()))?;
                Ok((SegmentId::from_slice(&k)?, at))
            })
            .collect()
    }

    /// Queues the copy of `piece` (of `segment`, `size` bytes) at `holder` for deletion at
    /// `now_ms`; whether it was queued. A piece still mapped at that holder is not (nor one
    /// queued already, which keeps its first time).
    pub fn doom(
        &self,
        segment: &SegmentId,
        holder: &NodeId,
        piece: &PieceId,
        size: u64,
        now_ms: u64,
    ) -> Result<bool, NetError> {
        let _shared = self.shared()?;
        if self.maps(segment, holder, piece)? {
            return Ok(false);
        }
        let doomed = DoomedPiece {
            holder: *holder,
            piece: *piece,
            segment: *segment,
            size,
            since_ms: now_ms,
        };
        let swapped = self
            .doomed
            .compare_and_swap(
                DoomedPiece::key(holder, piece),
                None::<&[u8]>,
                Some(&doomed.value()[..]),
            )
            .map_err(db_err)?;
        Ok(swapped.is_ok())
    }

    /// Whether `holder` is mapped as holding `piece` of `segment`.
    pub fn maps(
        &self,
        segment: &SegmentId,
        holder: &NodeId,
        piece: &PieceId,
    ) -> Result<bool, NetError> {
        Ok(self
            .segment(segment)?
            .iter()
            .any(|p| p.piece == *piece && p.holders.contains(holder)))
    }

    /// The first holder with doomed pieces at or after `from` (in id order).
    pub fn doomed_holder_from(&self, from: &NodeId) -> Result<Option<NodeId>, NetError> {
        match self.doomed.range(from.0..).keys().next() {
            Some(k) => Ok(Some(NodeId::from_slice(
                k.map_err(db_err)?.get(..32).unwrap_or_default(),
            )?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` of the pieces doomed at `holder`, by piece id.
    pub fn doomed_at(&self, holder: &NodeId, limit: usize) -> Result<Vec<DoomedPiece>, NetError> {
        self.doomed
            .scan_prefix(holder.0)
            .take(limit)
            .map(|entry| {
                let (k, v) = entry.map_err(db_err)?;
                DoomedPiece::decode(&k, &v)
            })
            .collect()
    }

    /// Drops `piece` at `holder` from the pieces to delete (deleted, or given up on).
    pub fn undoom(&self, holder: &NodeId, piece: &PieceId) -> Result<(), NetError> {
        let _shared = self.shared()?;
        self.doomed
            .remove(DoomedPiece::key(holder, piece))
            .map_err(db_err)?;
        Ok(())
    }

    /// Drops every copy at `holder` doomed before `before_ms`; returns how many.
    pub fn expire_doomed(&self, holder: &NodeId, before_ms: u64) -> Result<usize, NetError> {
        let _shared = self.shared()?;
        let mut expired = 0;
        for entry in self.doomed.scan_prefix(holder.0) {
            let (k, v) = entry.map_err(db_err)?;
            if DoomedPiece::decode(&k, &v)?.since_ms < before_ms {
                self.doomed.remove(k).map_err(db_err)?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// How many copies wait to be deleted (a full count).
    pub fn doomed_len(&self) -> usize {
        self.doomed.len()
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
        let _shared = self.shared()?;
        self.check_kept(segment)?;
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
            Err(current) if current.current.as_deref() != Some(&owner.0[..]) => {
                Err(another_owner(segment))
            }
            _ => Ok(()),
        }
    }

    /// Records that `holder` stores piece `index` of `owner`'s `segment`; whether that is news
    /// (not a holder recorded before). A different piece id at the same index (a re-coded
    /// piece) replaces the old one and its holders. A segment its owner deleted is refused.
    pub fn add_holder(
        &self,
        segment: &SegmentId,
        owner: &NodeId,
        piece: &PieceSpec,
        holder: NodeId,
    ) -> Result<bool, NetError> {
        Ok(self.add_holder_replacing(segment, owner, piece, holder)?.0)
    }

    /// [`PieceMap::add_holder`], also returning the entry it replaced: the old piece at that
    /// index with its holders, when the piece id differs.
    pub fn add_holder_replacing(
        &self,
        segment: &SegmentId,
        owner: &NodeId,
        piece: &PieceSpec,
        holder: NodeId,
    ) -> Result<(bool, Option<MappedPiece>), NetError> {
        let _shared = self.shared()?;
        self.check_kept(segment)?;
        let &PieceSpec { index, piece, size } = piece;
        let k = key(segment, index);
        let mut failure = None;
        let (mut fresh, mut added, mut replaced) = (false, 0, 0);
        let mut old_entry = None;
        self.pieces
            .update_and_fetch(k, |old| {
                (fresh, added, replaced, old_entry) = (false, 0, 0, None);
                let mut entry = match old.map(|b| MappedPiece::decode(index, b)) {
                    Some(Ok(e)) if e.piece == piece => e,
                    Some(Err(e)) => {
                        failure = Some(e);
                        return old.map(<[u8]>::to_vec);
                    }
                    old => {
                        if let Some(Ok(e)) = old {
                            replaced = e.size.saturating_mul(e.holders.len() as u64);
                            old_entry = Some(e);
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
        if fresh || old_entry.is_some() {
            self.changed();
        }
        // Mapped first, owned second: a claim expiring meanwhile cannot orphan the piece.
        self.take_owner(segment, owner)?;
        self.claimed.remove(segment.0).map_err(db_err)?;
        if added != replaced {
            self.usage
                .update_and_fetch(owner.0, |old| {
                    let used = old.and_then(|v| u64_at(v, 0)).unwrap_or(0);
                    Some(
                        used.saturating_add(added)
                            .saturating_sub(replaced)
                            .to_le_bytes()
                            .to_vec(),
                    )
                })
                .map_err(db_err)?;
        }
        Ok((fresh, old_entry))
    }

    /// Bytes of `owner`'s pieces mapped here, each holder's copy counted (a re-coded piece
    /// replaces the bytes of the one it replaces).
    pub fn usage(&self, owner: &NodeId) -> Result<u64, NetError> {
        Ok(self
            .usage
            .get(owner.0)
            .map_err(db_err)?
            .and_then(|v| u64_at(&v, 0))
            .unwrap_or(0))
    }

    /// Drops the claims made before `before_ms` under which no piece was stored (an upload
    /// abandoned, or reservations taken and never used); returns how many.
    pub fn expire_claims(&self, before_ms: u64) -> Result<usize, NetError> {
        let _shared = self.shared()?;
        let mut expired = 0;
        for entry in self.claimed.iter() {
            let (k, v) = entry.map_err(db_err)?;
            let at = u64_at(&v, 0).unwrap_or(0);
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
        decode_pieces(self.pieces.scan_prefix(segment.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BY_OWNER: Forgetting = Forgetting::Owner { unknown_too: false };

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

        #[test]
        fn tombstones_round_trip(owner: [u8; 32], at_ms: u64, orphan: bool) {
            let tombstone = Tombstone { owner: NodeId(owner), at_ms, orphan };
            let encoded = tombstone.encode();
            proptest::prop_assert_eq!(Tombstone::decode(&encoded).unwrap(), tombstone);
            proptest::prop_assert!(Tombstone::decode(&encoded[..40]).is_err());
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

    #[test]
    fn a_forgotten_segment_leaves_a_tombstone_and_every_copy_doomed() {
        let dir = tempfile::tempdir().unwrap();
        let map = open(dir.path());
        let (seg, other) = (SegmentId([1; 32]), SegmentId([2; 32]));
        let (owner, stranger) = (NodeId([9; 32]), NodeId([8; 32]));
        for (s, index, piece, holder) in [
            (seg, 0, [5; 32], 3),
            (seg, 0, [5; 32], 4),
            (other, 0, [6; 32], 3),
        ] {
            map.add_holder(&s, &owner, &spec(index, piece, 10), NodeId([holder; 32]))
                .unwrap();
        }
        map.mark_unentrusted(&seg, 100).unwrap();
        assert_eq!(map.usage(&owner).unwrap(), 30);
        // A piece still mapped at its holder is never doomed there.
        assert!(
            !map.doom(&seg, &NodeId([3; 32]), &PieceId([5; 32]), 10, 100)
                .unwrap()
        );
        let peer = NodeId([7; 32]);
        assert!(map.forget(&seg, &stranger, 200, BY_OWNER, &[peer]).is_err());
        assert_eq!(
            map.forget(&SegmentId([7; 32]), &owner, 200, BY_OWNER, &[peer])
                .unwrap(),
            Forgot::Unknown
        );
        assert!(map.handoff.is_empty());

        let forgot = map.forget(&seg, &owner, 200, BY_OWNER, &[peer]).unwrap();
        let Forgot::Now(pieces) = forgot else {
            panic!("not forgotten");
        };
        assert_eq!(pieces.len(), 1);
        // The other tracker of its pair is marked with the tombstone.
        let mark = crate::pair::handoff_key(&peer, &seg);
        assert!(map.handoff.contains_key(mark).unwrap());
        assert_eq!(
            map.forget(&seg, &owner, 300, BY_OWNER, &[]).unwrap(),
            Forgot::Already
        );
        let tombstone = Tombstone {
            owner,
            at_ms: 200,
            orphan: false,
        };
        assert_eq!(map.forgotten_by(&seg).unwrap(), Some(tombstone));
        assert_eq!(
            (map.owner(&seg).unwrap(), map.segment(&seg).unwrap()),
            (None, vec![])
        );
        assert!(map.unentrusted().unwrap().is_empty());
        assert_eq!(map.usage(&owner).unwrap(), 10);
        let doomed = map.doomed_at(&NodeId([3; 32]), 10).unwrap();
        assert_eq!(doomed.len(), 1);
        assert_eq!(
            (
                doomed[0].piece,
                doomed[0].segment,
                doomed[0].size,
                doomed[0].since_ms
            ),
            (PieceId([5; 32]), seg, 10, 200)
        );
        assert_eq!(map.doomed_len(), 2);
        assert_eq!(
            map.doomed_holder_from(&NodeId([0; 32])).unwrap(),
            Some(NodeId([3; 32]))
        );
        assert_eq!(
            map.doomed_holder_from(&NodeId([4; 32])).unwrap(),
            Some(NodeId([4; 32]))
        );
        assert_eq!(map.doomed_holder_from(&NodeId([5; 32])).unwrap(), None);

        // Never claimed or mapped again, by anyone.
        for who in [owner, stranger] {
            let refused = map.claim(&seg, &who, 400).unwrap_err();
            assert!(matches!(refused, NetError::Precondition(_)), "{refused}");
            assert!(
                map.add_holder(&seg, &who, &spec(1, [7; 32], 10), NodeId([3; 32]))
                    .is_err()
            );
        }
        assert_eq!(map.expire_doomed(&NodeId([3; 32]), 201).unwrap(), 1);
        map.undoom(&NodeId([4; 32]), &PieceId([5; 32])).unwrap();
        assert_eq!(map.doomed_len(), 0);
        assert_eq!(map.segment(&other).unwrap().len(), 1);
    }

    /// Summaries of the whole map are kept while [`PieceMap::version`] stays: it must move
    /// with every change to a piece or its holders, and only then.
    #[test]
    fn the_version_moves_with_each_change_to_pieces_and_holders() {
        let dir = tempfile::tempdir().unwrap();
        let map = open(dir.path());
        let (seg, orphan, owner) = (SegmentId([1; 32]), SegmentId([2; 32]), NodeId([9; 32]));
        let add = |s: &SegmentId, piece: [u8; 32], holder: u8| {
            map.add_holder(s, &owner, &spec(0, piece, 10), NodeId([holder; 32]))
                .unwrap()
        };
        let moved = |before: &mut u64| {
            let now = map.version();
            let moved = now != *before;
            *before = now;
            moved
        };
        let mut at = map.version();
        assert!(add(&seg, [5; 32], 3) && moved(&mut at), "a first holder");
        assert!(
            !add(&seg, [5; 32], 3) && !moved(&mut at),
            "a holder known already"
        );
        assert!(add(&seg, [5; 32], 4) && moved(&mut at), "a second holder");
        add(&seg, [6; 32], 4);
        assert!(moved(&mut at), "a re-coded piece replacing both");
        assert!(
            map.forget(&seg, &NodeId([8; 32]), 100, BY_OWNER, &[])
                .is_err()
        );
        assert!(!moved(&mut at), "a forget refused");
        map.forget(&seg, &owner, 100, BY_OWNER, &[]).unwrap();
        assert!(moved(&mut at), "a forgotten segment");

        assert!(add(&orphan, [7; 32], 3) && moved(&mut at));
        map.mark_unentrusted(&orphan, 100).unwrap();
        assert!(!moved(&mut at), "a mark changes no holder");
        let held_aside = Forgetting::Orphan {
            since_by: 400,
            held: true,
        };
        map.forget(&orphan, &owner, 500, held_aside, &[]).unwrap();
        assert!(moved(&mut at), "an orphan's pieces held aside");
        assert!(map.take_back(&orphan, &owner).unwrap());
        assert!(moved(&mut at), "an orphan taken back");
    }

    #[test]
    fn an_orphan_is_forgotten_only_unentrusted_and_its_copies_held_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let map = open(dir.path());
        let (orphan, entrusted, released) =
            (SegmentId([1; 32]), SegmentId([2; 32]), SegmentId([3; 32]));
        let (owner, stranger) = (NodeId([9; 32]), NodeId([8; 32]));
        for (s, piece) in [(orphan, [5; 32]), (entrusted, [6; 32]), (released, [7; 32])] {
            for holder in [3, 4] {
                map.add_holder(&s, &owner, &spec(0, piece, 10), NodeId([holder; 32]))
                    .unwrap();
            }
            map.mark_unentrusted(&s, 100).unwrap();
        }
        assert_eq!(map.usage(&owner).unwrap(), 60);
        let orphan_since = |since_by| Forgetting::Orphan {
            since_by,
            held: true,
        };

        // Entrusted, though marked again (a confirm racing the entrust): kept, mark cleared.
        map.entrusted.insert(entrusted.0, &b"record"[..]).unwrap();
        let forgot = map.forget(&entrusted, &owner, 500, orphan_since(400), &[]);
        assert_eq!(forgot.unwrap(), Forgot::Kept);
        assert_eq!(map.segment(&entrusted).unwrap().len(), 1);
        assert!(!map.unentrusted.contains_key(entrusted.0).unwrap());
        // Marked after the grace's start: kept.
        let forgot = map.forget(&orphan, &owner, 500, orphan_since(99), &[]);
        assert_eq!(forgot.unwrap(), Forgot::Kept);

        // Forgotten: its copies held aside, none doomed; a late entrust or store refused.
        for s in [orphan, released] {
            let forgot = map.forget(&s, &owner, 500, orphan_since(400), &[]).unwrap();
            assert!(
                matches!(forgot, Forgot::Now(ref p) if p.len() == 1),
                "{forgot:?}"
            );
        }
        assert_eq!(map.doomed_len(), 0);
        assert_eq!(map.orphaned_of(&orphan).unwrap().len(), 1);
        assert_eq!(map.held_orphans(10).unwrap(), vec![orphan, released]);
        assert_eq!(map.held_orphans(1).unwrap(), vec![orphan]);
        assert_eq!(map.usage(&owner).unwrap(), 20);
        assert!(map.forgotten_by(&orphan).unwrap().unwrap().orphan);
        let refused = map.claim(&orphan, &owner, 600).unwrap_err();
        assert!(
            refused.to_string().contains("abandoned upload"),
            "{refused}"
        );
        let again = map.forget(&orphan, &owner, 600, orphan_since(600), &[]);
        assert_eq!(again.unwrap(), Forgot::Already);

        // Entrusted at the pair's other tracker: taken back whole, by its owner only.
        assert!(map.take_back(&orphan, &stranger).is_err());
        assert!(map.take_back(&orphan, &owner).unwrap());
        assert!(!map.take_back(&orphan, &owner).unwrap());
        assert_eq!(map.forgotten_by(&orphan).unwrap(), None);
        assert_eq!(map.owner(&orphan).unwrap(), Some(owner));
        assert_eq!(map.segment(&orphan).unwrap()[0].holders.len(), 2);
        assert!(map.orphaned_of(&orphan).unwrap().is_empty());
        assert_eq!(map.usage(&owner).unwrap(), 40);

        // Forgotten by the other tracker too: its copies doomed, its tombstone kept.
        assert_eq!(map.release_orphan(&released, 700).unwrap(), 2);
        assert_eq!(map.doomed_len(), 2);
        assert!(map.held_orphans(10).unwrap().is_empty());
        assert!(map.forgotten_by(&released).unwrap().unwrap().orphan);

        // An owner's forget of a held orphan dooms its copies and makes the tombstone its own.
        map.mark_unentrusted(&orphan, 100).unwrap();
        let forgot = map
            .forget(&orphan, &owner, 800, orphan_since(800), &[])
            .unwrap();
        assert!(matches!(forgot, Forgot::Now(_)));
        assert!(map.forget(&orphan, &stranger, 900, BY_OWNER, &[]).is_err());
        let forgot = map.forget(&orphan, &owner, 900, BY_OWNER, &[]).unwrap();
        assert!(
            matches!(forgot, Forgot::Now(ref p) if p.len() == 1),
            "{forgot:?}"
        );
        assert_eq!(map.doomed_len(), 4);
        assert!(map.orphaned_of(&orphan).unwrap().is_empty());
        assert!(!map.forgotten_by(&orphan).unwrap().unwrap().orphan);
        assert_eq!(map.usage(&owner).unwrap(), 20);
        assert_eq!(
            map.forget(&orphan, &owner, 950, BY_OWNER, &[]).unwrap(),
            Forgot::Already
        );
    }
}
