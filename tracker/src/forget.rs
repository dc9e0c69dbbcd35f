//! Deletion (DESIGN §13): segments their owners deleted are forgotten, and copies nothing
//! maps any more are deleted at their holders.
//!
//! - **Forget.** An owner's `Tracker/Forget` names segments it deleted. For each one known
//!   here the tracker leaves a tombstone (the map's `forgotten` tree), dooms every mapped copy
//!   of its pieces (the map's `doomed` tree), drops its map entry and audit state, and tells
//!   the other tracker of its pair (a [`Mirror`](wwt_net::audit::Mirror) with `forgotten` set,
//!   which that tracker applies the same way; marked for it in the hand-off queue in the
//!   transaction that leaves the tombstone, so a crash cannot keep it untold). The tombstone
//!   wins over every other record of the segment: it is never reserved, confirmed, entrusted
//!   or merged again, and `Locate` says it was deleted. Forgetting again, or a segment never
//!   known, does nothing (and the request is not recorded against replays).
//! - **Orphans.** A segment mapped here but not entrusted within
//!   [`AuditConfig::orphan_grace_ms`](crate::AuditConfig::orphan_grace_ms) (an upload given
//!   up before its entrust) is forgotten too, by each tracker of its pair on its own, under a
//!   tombstone marked an orphan's that is not mirrored. No orphan expiry destroys a segment
//!   entrusted at either tracker of its pair:
//!   - *Here*, expiry and entrust are one decision. The expiry leaves its tombstone in a sled
//!     transaction that proceeds only while the segment is still marked unentrusted past its
//!     grace and has no entrusted record ([`crate::map::PieceMap::forget`]); an entrust
//!     writes its record and clears the mark in a transaction that refuses a tombstoned
//!     segment. sled runs the two one after the other, so the one that runs second sees the
//!     other's outcome: the expiry keeps the segment, or the entrust is refused.
//!   - *Across the pair*, neither tracker can decide alone: the first knows what its second
//!     took only as of the last lease renewal the second answered (which mirrors back its
//!     changes up to then), and an owner may entrust at the second meanwhile. So an orphan's
//!     copies are not doomed when it is forgotten, but held aside (the map's `orphaned`
//!     tree) until the other tracker of its pair says it forgot the segment too (its
//!     `Locate` answers that the segment was deleted); one that does not know the segment is
//!     sent the record held here, and judges it in turn. From then on both refuse its
//!     entrust, so neither can hold it entrusted. Until then, a mirror from the other tracker
//!     that carries an entrusted manifest lifts the tombstone here and maps the held copies
//!     again ([`crate::map::PieceMap::take_back`]): nothing of it was deleted.
//!   - A tracker alone in its pair (the only tracker of its network) dooms an orphan's
//!     copies at once. An owner's forget of an orphan turns its tombstone into an owner's:
//!     its held copies are doomed, and the other tracker told.
//! - **Deletes.** Each audit step sends `Provider/Delete`, signed by the tracker, to holders
//!   with doomed copies: one call per holder of up to [`MAX_DELETE`] pieces, up to
//!   [`DELETE_CALLS_PER_STEP`] holders a step, in turn. A call answered clears its pieces; a
//!   holder that fails, or whose address is not known, is asked again later (10 s, doubling to
//!   1 h). A copy whose holder has not deleted it within [`DOOMED_FOR_MS`] is given up on.
//!   Both trackers of a pair send the same deletes: providers count a piece they no longer
//!   hold as deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::future::join_all;
use tracing::{debug, info, warn};
use wwt_net::types::{DeletePieces, MAX_DELETE, NodeId, PieceId, SegmentId};
use wwt_net::{NetError, now_ms};

use crate::audit::StepReport;
use crate::error::poisoned;
use crate::log::Event;
use crate::map::{DoomedPiece, Forgetting, Forgot, MappedPiece};
use crate::service::Tracker;

/// A copy whose holder has not deleted it this long after it was doomed (audit clock) is
/// given up on: the holder is gone, or no longer trusts this tracker.
pub const DOOMED_FOR_MS: u64 = 30 * 24 * 3_600_000;
/// Delete calls an audit step sends at most (one per holder, all at once).
pub const DELETE_CALLS_PER_STEP: usize = 16;
/// Holders an audit step looks at at most, those backing off included.
const HOLDERS_PER_STEP: usize = 256;
/// How long a delete call may take (real time).
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a holder whose delete failed waits before it is asked again; it doubles with
/// each failure in a row, up to [`MAX_DELETE_BACKOFF_MS`].
const DELETE_BACKOFF_MS: u64 = 10_000;
const MAX_DELETE_BACKOFF_MS: u64 = 3_600_000;
/// Orphaned segments forgotten per audit step at most, and forgotten orphans whose copies
/// held aside are settled with the other tracker of their pair.
const ORPHANS_PER_STEP: usize = 64;
const DAY_MS: u64 = 24 * 3_600_000;

/// Per holder whose delete failed: failures in a row and when to ask again (audit clock).
type Backoff = HashMap<NodeId, (u32, u64)>;

/// Where the deletes stand: which holders back off, and where the next step starts.
#[derive(Debug, Default)]
pub(crate) struct Deleting {
    backoff: Mutex<Backoff>,
    /// The holder the next step starts from: steps take the holders in turn.
    cursor: Mutex<Option<NodeId>>,
}

impl Deleting {
    fn backoff(&self) -> Result<MutexGuard<'_, Backoff>, NetError> {
        self.backoff.lock().map_err(|_| poisoned("delete state"))
    }

    fn cursor(&self) -> Result<MutexGuard<'_, Option<NodeId>>, NetError> {
        self.cursor.lock().map_err(|_| poisoned("delete state"))
    }

    /// `holder` failed a delete at `now`: asked again after its backoff.
    fn failed(&self, holder: NodeId, now: u64) -> Result<(), NetError> {
        let mut backoff = self.backoff()?;
        let failures = backoff.get(&holder).map_or(0, |(n, _)| *n);
        let wait = (DELETE_BACKOFF_MS << failures.min(16)).min(MAX_DELETE_BACKOFF_MS);
        backoff.insert(holder, (failures + 1, now.saturating_add(wait)));
        Ok(())
    }
}

/// The id right after `id` in byte order; none after the last.
fn after(id: &NodeId) -> Option<NodeId> {
    let mut next = id.0;
    for byte in next.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(NodeId(next));
        }
    }
    None
}

/// One delete call to send: a holder, its address, and the copies to delete there.
struct Batch {
    holder: NodeId,
    address: String,
    pieces: Vec<DoomedPiece>,
}

/// Logs that `pieces` copies doomed at `holder` were given up on, past [`DOOMED_FOR_MS`].
fn warn_given_up(holder: &NodeId, pieces: usize) {
    if pieces > 0 {
        let days = DOOMED_FOR_MS / DAY_MS;
        warn!(holder = %holder, pieces, "doomed pieces not deleted in {days} days; given up");
    }
}

impl Tracker {
    /// The other trackers of `segment`'s pair.
    fn peers_of(&self, segment: &SegmentId) -> Vec<NodeId> {
        let me = self.node_id();
        self.pair_of(segment)
            .into_iter()
            .filter(|p| *p != me)
            .collect()
    }

    /// Forgets `segment` of `owner` here at `now` (audit clock) as `how` says: tombstone,
    /// every mapped copy doomed (or held, for an orphan), map entry and audit state dropped,
    /// and `mark_for` marked in the hand-off queue, in the tombstone's transaction
    /// ([`crate::map::PieceMap::forget`], [`crate::audit::Audits::forget`]). Whether it was
    /// forgotten now. `why` goes to the audit log.
    pub(crate) fn forget_segment(
        &self,
        segment: &SegmentId,
        owner: &NodeId,
        now: u64,
        how: Forgetting,
        mark_for: &[NodeId],
        why: &str,
    ) -> Result<bool, NetError> {
        let forgot = self.map.forget(segment, owner, now, how, mark_for)?;
        let pieces: Vec<MappedPiece> = match forgot {
            Forgot::Now(pieces) => pieces,
            Forgot::Already | Forgot::Unknown | Forgot::Kept => return Ok(false),
        };
        let ids: Vec<PieceId> = pieces.iter().map(|p| p.piece).collect();
        self.audits.forget(segment, &ids)?;
        let copies: usize = pieces.iter().map(|p| p.holders.len()).sum();
        let when = match how {
            Forgetting::Orphan { held: true, .. } => {
                "once the other tracker of its pair forgets it too"
            }
            _ => "now",
        };
        info!(segment = %segment, pieces = pieces.len(), copies, why, "segment forgotten");
        self.audits.log(Event {
            time_ms: now,
            provider: NodeId([0; 32]),
            piece: PieceId([0; 32]),
            kind: "forget",
            outcome: "done",
            detail: format!(
                "segment {segment} {why}; {copies} copies of {} pieces to delete {when}",
                pieces.len()
            ),
        })?;
        Ok(true)
    }

    /// An owner's `Forget` (checked and accepted): forgets each of `segments` known here,
    /// marking it for the other tracker of its pair with its tombstone, makes that durable,
    /// and sends it there. Returns how many were forgotten now.
    pub(crate) async fn forget_segments(
        &self,
        owner: &NodeId,
        segments: &[SegmentId],
    ) -> Result<u32, NetError> {
        let now = self.audits.clock.now_ms();
        let how = Forgetting::Owner { unknown_too: false };
        let mut forgotten = Vec::new();
        for segment in segments {
            let peers = self.peers_of(segment);
            if self.forget_segment(segment, owner, now, how, &peers, "deleted by its owner")? {
                forgotten.push(*segment);
            }
        }
        self.map.flush().await?;
        self.changed_all(&forgotten).await?;
        Ok(u32::try_from(forgotten.len()).unwrap_or(u32::MAX))
    }

    /// Forgets up to [`ORPHANS_PER_STEP`] segments mapped but not entrusted for
    /// [`crate::AuditConfig::orphan_grace_ms`] (see the module docs); made durable by the
    /// step.
    pub(crate) fn forget_orphans(&self, report: &mut StepReport, now: u64) -> Result<(), NetError> {
        let Some(since_by) = now.checked_sub(self.audits.config.orphan_grace_ms) else {
            return Ok(());
        };
        let why = "was never entrusted (an orphan)";
        for (segment, since) in self.map.unentrusted()? {
            if report.orphans >= ORPHANS_PER_STEP {
                break;
            }
            let owner = match self.map.owner(&segment)? {
                Some(owner) if self.audits.entrusted_of(&segment)?.is_none() => owner,
                // Entrusted, or gone: no orphan.
                _ => {
                    self.map.clear_unentrusted(&segment)?;
                    continue;
                }
            };
            if since > since_by {
                continue;
            }
            let held = !self.peers_of(&segment).is_empty();
            let how = Forgetting::Orphan { since_by, held };
            if self.forget_segment(&segment, &owner, now, how, &[], why)? {
                report.orphans += 1;
            }
        }
        Ok(())
    }

    /// Dooms at `now` the copies held aside for up to [`ORPHANS_PER_STEP`] orphans forgotten
    /// here that the other tracker of their pair has forgotten too (see the module docs).
    pub(crate) async fn release_orphans(&self, now: u64) -> Result<(), NetError> {
        let held = self.map.held_orphans(ORPHANS_PER_STEP)?;
        let settled = held.into_iter().map(|segment| async move {
            for peer in self.peers_of(&segment) {
                if !self.forgotten_at(&peer, &segment).await? {
                    return Ok((segment, false));
                }
            }
            Ok::<_, NetError>((segment, true))
        });
        let mut released = 0;
        for settled in join_all(settled).await {
            let (segment, forgotten) = settled?;
            if forgotten {
                let copies = self.map.release_orphan(&segment, now)?;
                info!(segment = %segment, copies, "orphan forgotten by its pair: copies doomed");
                released += 1;
            }
        }
        if released > 0 {
            self.map.flush().await?;
        }
        Ok(())
    }

    /// Sends the deletes of doomed copies due this step (see the module docs) and clears
    /// those their holders answered.
    pub(crate) async fn delete_doomed(
        &self,
        report: &mut StepReport,
        now: u64,
    ) -> Result<(), NetError> {
        let batches = self.delete_batches(now)?;
        if batches.is_empty() {
            return Ok(());
        }
        let clock = &self.audits.clock;
        let calls = batches.into_iter().map(|batch| async move {
            let request = self.identity.sign_with(
                DeletePieces {
                    pieces: batch.pieces.iter().map(|d| d.piece).collect(),
                },
                clock.wall_ms(),
                rand::random(),
            );
            let call = async {
                let provider = self.audits.connector.provider(&batch.address)?;
                provider.delete(request).await
            };
            let result = tokio::time::timeout(DELETE_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| Err(NetError::Unavailable("no answer in time".into())));
            (batch, result)
        });
        let mut total = 0;
        for (batch, result) in join_all(calls).await {
            match result {
                Ok(deleted) => {
                    for d in &batch.pieces {
                        self.map.undoom(&batch.holder, &d.piece)?;
                    }
                    self.deleting.backoff()?.remove(&batch.holder);
                    total += batch.pieces.len();
                    info!(
                        holder = %batch.holder, pieces = batch.pieces.len(),
                        deleted = deleted.pieces, freed = deleted.freed, "doomed pieces deleted"
                    );
                }
                Err(e) => {
                    debug!(
                        holder = %batch.holder, pieces = batch.pieces.len(), error = %e,
                        "doomed pieces not deleted yet"
                    );
                    self.deleting.failed(batch.holder, now)?;
                    self.expire_doomed(&batch.holder, now)?;
                }
            }
        }
        if total > 0 {
            report.deleted += total;
            self.audits.add_deleted(total as u64)?;
        }
        Ok(())
    }

    /// The delete calls of this step: the holders with doomed copies in turn from where the
    /// last step stopped, skipping those backing off; for each, up to [`MAX_DELETE`] copies.
    /// Copies past [`DOOMED_FOR_MS`] are given up on, and copies mapped again at their holder
    /// (never, but checked) are kept.
    fn delete_batches(&self, now: u64) -> Result<Vec<Batch>, NetError> {
        let start = self.deleting.cursor()?.unwrap_or(NodeId([0; 32]));
        let backoff = self.deleting.backoff()?.clone();
        let registry_now = now_ms();
        let mut batches = Vec::new();
        let (mut from, mut wrapped, mut looked) = (Some(start), false, 0);
        while batches.len() < DELETE_CALLS_PER_STEP && looked < HOLDERS_PER_STEP {
            let found = match from {
                Some(from) => self.map.doomed_holder_from(&from)?,
                None => None,
            };
            let holder = match found {
                Some(holder) if !(wrapped && holder >= start) => holder,
                Some(_) => break,
                None if !wrapped && start != NodeId([0; 32]) => {
                    (from, wrapped) = (Some(NodeId([0; 32])), true);
                    continue;
                }
                None => break,
            };
            looked += 1;
            from = after(&holder);
            if backoff.get(&holder).is_some_and(|(_, at)| *at > now) {
                continue;
            }
            let pieces = self.live_doomed(&holder, now)?;
            if pieces.is_empty() {
                continue;
            }
            let address = self
                .registry()?
                .lookup(&holder, registry_now)
                .map(|(a, _)| a);
            match address {
                Some(address) => batches.push(Batch {
                    holder,
                    address,
                    pieces,
                }),
                // Not heard from (since a restart, or gone): asked once it is.
                None => {
                    self.deleting.failed(holder, now)?;
                    self.expire_doomed(&holder, now)?;
                }
            }
        }
        *self.deleting.cursor()? = from;
        Ok(batches)
    }

    /// Up to [`MAX_DELETE`] copies doomed at `holder` to delete now; those given up on or
    /// mapped again are dropped from the queue.
    fn live_doomed(&self, holder: &NodeId, now: u64) -> Result<Vec<DoomedPiece>, NetError> {
        let mut mapped: BTreeMap<SegmentId, Vec<MappedPiece>> = BTreeMap::new();
        let (mut live, mut given_up) = (Vec::new(), 0);
        for d in self.map.doomed_at(holder, MAX_DELETE)? {
            if now.saturating_sub(d.since_ms) >= DOOMED_FOR_MS {
                self.map.undoom(holder, &d.piece)?;
                given_up += 1;
                continue;
            }
            let pieces = match mapped.get(&d.segment) {
                Some(pieces) => pieces,
                None => mapped
                    .entry(d.segment)
                    .or_insert(self.map.segment(&d.segment)?),
            };
            if pieces
                .iter()
                .any(|p| p.piece == d.piece && p.holders.contains(holder))
            {
                warn!(holder = %holder, piece = %d.piece, "a doomed piece is mapped again; kept");
                self.map.undoom(holder, &d.piece)?;
                continue;
            }
            live.push(d);
        }
        warn_given_up(holder, given_up);
        Ok(live)
    }

    /// Gives up on every copy at `holder` doomed [`DOOMED_FOR_MS`] ago or more (a holder
    /// that fails is swept whole, once per backoff).
    fn expire_doomed(&self, holder: &NodeId, now: u64) -> Result<(), NetError> {
        let expired = self
            .map
            .expire_doomed(holder, now.saturating_sub(DOOMED_FOR_MS))?;
        warn_given_up(holder, expired);
        Ok(())
    }

    /// Copies waiting to be deleted at their holders (their segment deleted, or a repair
    /// replaced them).
    pub fn deletes_pending(&self) -> usize {
        self.map.doomed_len()
    }

    /// Copies deleted at their holders since this tracker's database was created.
    pub fn pieces_deleted(&self) -> Result<u64, NetError> {
        self.audits.pieces_deleted()
    }
}
