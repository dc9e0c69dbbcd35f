//! A segment's two trackers: the two ranked first by rendezvous hashing over the network's
//! trackers ([`rendezvous::pair`]) both keep its map entry and audit state.
//!
//! - **Mirroring.** Whichever of the two changes a segment (a confirm, an entrust, a repair,
//!   a forget) marks it for the other in the `handoff` tree (peer ‖ segment), durably, and
//!   sends the other its whole record of the segment ([`Mirror`]) at once; what cannot be sent
//!   stays marked and goes with the next audit step or lease renewal. The receiver merges: per
//!   piece the later whitening generation, holders of the same piece added, the owner checked.
//!   A merge is a join (order and repeats do not matter), so the two converge. A segment its
//!   owner deleted is the join's top: its record is only that, the receiver forgets it too,
//!   and a record of it that is not forgotten is ignored (and the tombstone sent back). An
//!   orphan's tombstone is not mirrored: each tracker forgets orphans on its own, and a record
//!   carrying an entrusted manifest lifts it (see [`crate::forget`]).
//! - **The lease.** The first tracker audits and repairs the segment; the second only while
//!   the first has not answered for [`TrackerConfig::lease_ms`] (audit clock). Each audit step
//!   first renews this tracker's lease with every peer ([`Lease`]); a peer answers a renewal
//!   only once its own step is over and it has mirrored its changes back, and from then on
//!   leaves the renewing tracker's segments alone. A first tracker (re)started audits once a
//!   second answered, or once it has not answered for a lease. So no segment is repaired by
//!   both at once, unless the two are cut off from each other while both run (each then takes
//!   the other for gone).
//! - Sentinels: the first tracker asks a piece's sentinels from the front of their secret
//!   order, the second from the back, so the one taking over never asks one already revealed.
//!
//! [`TrackerConfig::lease_ms`]: crate::TrackerConfig::lease_ms

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tracing::{debug, info, warn};
use wwt_engine::SegmentManifest;
use wwt_net::audit::{Lease, Mirror, MirroredPiece};
use wwt_net::types::{Locate, NodeId, PieceSpec, SegmentId};
use wwt_net::{NetError, Signed, now_ms, rendezvous};

use crate::Tracker;
use crate::map::{Forgetting, MappedPiece};

/// Segments mirrored to one peer per call of [`Tracker::hand_off`] from an audit step.
const HANDOFFS_PER_STEP: usize = 256;
/// How long a call to a peer tracker may take (real time): a busy peer is not a gone one.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// The tree of hand-off marks (peer ‖ segment → nothing).
pub(crate) const HANDOFF_TREE: &str = "handoff";

/// Whether a peer tracker answers.
#[derive(Debug, Default, Clone, Copy)]
struct Reach {
    /// It answered a lease renewal since this tracker started.
    answered: bool,
    /// Since when (audit clock) it has not answered, if it does not.
    down_since: Option<u64>,
}

/// This tracker's side of the pairs it is in.
pub(crate) struct Pair {
    /// peer ‖ segment → (): records that peer has not been sent since they changed.
    handoff: sled::Tree,
    /// `trackers` → the network's tracker ids (32 bytes each, sorted) when last started.
    meta: sled::Tree,
    reach: Mutex<HashMap<NodeId, Reach>>,
    lease_ms: u64,
    /// When this tracker last renewed its lease (audit clock): every quarter of a lease.
    renewed: Mutex<Option<u64>>,
    /// Held while an audit step runs: a lease renewal waits for it.
    pub(crate) step: tokio::sync::Mutex<()>,
}

impl Pair {
    pub(crate) fn open(db: &sled::Db, lease_ms: u64) -> Result<Pair, NetError> {
        Ok(Pair {
            handoff: db.open_tree(HANDOFF_TREE).map_err(db_err)?,
            meta: db.open_tree("pair_meta").map_err(db_err)?,
            reach: Mutex::new(HashMap::new()),
            lease_ms,
            renewed: Mutex::new(None),
            step: tokio::sync::Mutex::new(()),
        })
    }

    fn reach(&self, peer: &NodeId) -> Reach {
        self.reach
            .lock()
            .map(|r| r.get(peer).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    /// `peer` called this tracker: it is not gone (but has not answered this tracker's
    /// renewal, which carries back what changed here, for all that).
    fn heard(&self, peer: NodeId) {
        if let Ok(mut reach) = self.reach.lock() {
            reach.entry(peer).or_default().down_since = None;
        }
    }

    fn set_reach(&self, peer: NodeId, answered: bool, now: u64) {
        if let Ok(mut reach) = self.reach.lock() {
            let r = reach.entry(peer).or_default();
            if answered {
                r.answered = true;
                r.down_since = None;
            } else {
                r.down_since.get_or_insert(now);
            }
        }
    }

    /// Whether `peer` has not answered for a whole lease.
    fn gone(&self, peer: &NodeId, now: u64) -> bool {
        self.reach(peer)
            .down_since
            .is_some_and(|since| now.saturating_sub(since) >= self.lease_ms)
    }
}

fn db_err(e: sled::Error) -> NetError {
    NetError::Internal(format!("handoff queue: {e}"))
}

/// `pieces` as a [`Mirror`] carries them.
fn mirrored(pieces: Vec<MappedPiece>) -> Vec<MirroredPiece> {
    pieces
        .into_iter()
        .map(|p| MirroredPiece {
            index: p.index,
            piece: p.piece,
            size: p.size,
            holders: p.holders,
        })
        .collect()
}

/// The hand-off mark of `segment` for `peer`.
pub(crate) fn handoff_key(peer: &NodeId, segment: &SegmentId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&peer.0);
    k[32..].copy_from_slice(&segment.0);
    k
}

impl Tracker {
    /// After the network's tracker list changed (a tracker added or removed since the last
    /// start), marks every segment known here for every other tracker of its pair under the
    /// new list: each pair's members that knew a segment hand it to the ones that did not,
    /// so none is left with fewer than two trackers while one of its old pair remains.
    pub(crate) fn rebalance(&self) -> Result<(), NetError> {
        let mut list: Vec<NodeId> = self.trackers.keys().copied().collect();
        list.sort();
        let list: Vec<u8> = list.iter().flat_map(|n| n.0).collect();
        let before = self.pair.meta.get("trackers").map_err(db_err)?;
        if before.as_deref() == Some(list.as_slice()) {
            return Ok(());
        }
        let me = self.node_id();
        let mut marked = 0;
        for segment in self.map.owned() {
            let segment = segment?;
            for peer in self.pair_of(&segment).into_iter().filter(|p| *p != me) {
                self.pair
                    .handoff
                    .insert(handoff_key(&peer, &segment), &[])
                    .map_err(db_err)?;
                marked += 1;
            }
        }
        self.pair.meta.insert("trackers", list).map_err(db_err)?;
        info!(
            marked,
            "the tracker list changed: segments marked for their new pairs"
        );
        Ok(())
    }

    /// The trackers that keep `segment`, first the one that audits it.
    pub(crate) fn pair_of(&self, segment: &SegmentId) -> Vec<NodeId> {
        rendezvous::pair(&segment.0, self.trackers.keys())
    }

    /// Whether this tracker audits and repairs `segment` now: it is the first of its pair and
    /// holds its lease, or the second and the first is gone.
    pub(crate) fn acting(&self, segment: &SegmentId, now: u64) -> bool {
        let me = self.node_id();
        match self.pair_of(segment).as_slice() {
            [only] => *only == me,
            [first, second] if *first == me => {
                self.pair.reach(second).answered || self.pair.gone(second, now)
            }
            [first, second] if *second == me => self.pair.gone(first, now),
            _ => false,
        }
    }

    /// Refuses to place `segment` here while its first tracker answers: the second places
    /// only when the first is down (else a stranger who learnt a new segment's id from the
    /// DHT could claim it here before the first's mirror arrives).
    pub(crate) fn check_placing(&self, segment: &SegmentId) -> Result<(), NetError> {
        match self.pair_of(segment).as_slice() {
            [first, _]
                if *first != self.node_id() && self.pair.reach(first).down_since.is_none() =>
            {
                Err(NetError::Precondition(format!(
                    "segment {segment} is placed by tracker {first} at {} while it answers; ask it",
                    self.trackers.get(first).map_or("?", String::as_str)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether this tracker is the second of `segment`'s pair.
    pub(crate) fn second_of(&self, segment: &SegmentId) -> bool {
        self.pair_of(segment).get(1) == Some(&self.node_id())
    }

    /// Marks `segment` as changed here, for the other tracker of its pair, and sends it there
    /// now; what is not delivered goes later.
    pub(crate) async fn changed(&self, segment: &SegmentId) -> Result<(), NetError> {
        self.changed_all(std::slice::from_ref(segment)).await
    }

    /// [`Tracker::changed`] for many segments: marks each for the other tracker of its pair,
    /// then sends each peer its segments in turn, until one is not delivered.
    pub(crate) async fn changed_all(&self, segments: &[SegmentId]) -> Result<(), NetError> {
        let me = self.node_id();
        let mut by_peer: BTreeMap<NodeId, Vec<SegmentId>> = BTreeMap::new();
        for segment in segments {
            for peer in self.pair_of(segment).into_iter().filter(|p| *p != me) {
                self.mark(&peer, segment)?;
                by_peer.entry(peer).or_default().push(*segment);
            }
        }
        for (peer, segments) in by_peer {
            // A peer known to be down is not waited for: it gets them when it is back.
            if self.pair.reach(&peer).down_since.is_none() {
                self.hand_off(&peer, Some(&segments), segments.len()).await;
            }
        }
        Ok(())
    }

    /// Marks `segment` for `peer`, to be sent with the next hand-off.
    fn mark(&self, peer: &NodeId, segment: &SegmentId) -> Result<(), NetError> {
        self.pair
            .handoff
            .insert(handoff_key(peer, segment), &[])
            .map_err(db_err)?;
        Ok(())
    }

    /// Mirrors to `peer` up to `limit` of the segments marked for it (only `only`, if given).
    /// Returns whether everything marked was delivered.
    async fn hand_off(&self, peer: &NodeId, only: Option<&[SegmentId]>, limit: usize) -> bool {
        let Some(api) = self.peer_api(peer) else {
            return false;
        };
        let keys: Vec<SegmentId> = match only {
            Some(segments) => segments.iter().take(limit).copied().collect(),
            None => self
                .pair
                .handoff
                .scan_prefix(peer.0)
                .keys()
                .filter_map(|k| k.ok())
                .filter_map(|k| SegmentId::from_slice(&k[32..]).ok())
                .take(limit)
                .collect(),
        };
        for segment in keys {
            let sent = match self.mirror_of(&segment) {
                Ok(Some(mirror)) => match self.identity.sign(mirror) {
                    Ok(request) => tokio::time::timeout(PEER_TIMEOUT, api.mirror(request))
                        .await
                        .unwrap_or_else(|_| Err(NetError::Unavailable("timed out".into()))),
                    Err(e) => Err(e),
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => self.unmark(peer, &segment),
                // Refused for good (the peer left the segment's pair, or disagrees on its
                // owner): sending it again would only hold up the rest.
                Err(
                    e @ (NetError::Precondition(_)
                    | NetError::Forbidden(_)
                    | NetError::BadRequest(_)),
                ) => {
                    warn!(peer = %peer, segment = %segment, error = %e, "mirror refused");
                    self.unmark(peer, &segment);
                }
                Err(e) => {
                    debug!(peer = %peer, segment = %segment, error = %e, "not mirrored yet");
                    return false;
                }
            }
        }
        true
    }

    fn unmark(&self, peer: &NodeId, segment: &SegmentId) {
        if let Err(e) = self.pair.handoff.remove(handoff_key(peer, segment)) {
            warn!(error = %e, "handoff queue");
        }
    }

    pub(crate) fn peer_api(
        &self,
        peer: &NodeId,
    ) -> Option<std::sync::Arc<dyn wwt_net::TrackerApi>> {
        let address = self.trackers.get(peer).filter(|a| !a.is_empty())?;
        self.audits.connector.tracker(address).ok()
    }

    /// This tracker's whole record of `segment`, if it knows the segment: only that it was
    /// forgotten, once its owner deleted it; nothing for an orphan forgotten here (that stays
    /// local, see [`crate::forget`]).
    fn mirror_of(&self, segment: &SegmentId) -> Result<Option<Mirror>, NetError> {
        match self.map.forgotten_by(segment)? {
            Some(tombstone) if tombstone.orphan => return Ok(None),
            Some(tombstone) => {
                return Ok(Some(Mirror {
                    segment: *segment,
                    owner: tombstone.owner,
                    pieces: Vec::new(),
                    entrusted: None,
                    forgotten: true,
                }));
            }
            None => {}
        }
        let Some(owner) = self.map.owner(segment)? else {
            return Ok(None);
        };
        let pieces = mirrored(self.map.segment(segment)?);
        let entrusted = self
            .audits
            .entrusted_of(segment)?
            .map(|(manifest, key)| (Bytes::from(manifest.to_bytes()), key));
        Ok(Some(Mirror {
            segment: *segment,
            owner,
            pieces,
            entrusted,
            forgotten: false,
        }))
    }

    /// Whether `peer`, the other tracker of the pair of `segment` (an orphan forgotten here),
    /// has forgotten it too: its `Locate` says the segment was deleted. A peer that does not
    /// know the segment at all is sent the record held here, as a segment not entrusted, so
    /// that it forgets it as an orphan in turn, or takes its entrust and sends that back.
    pub(crate) async fn forgotten_at(
        &self,
        peer: &NodeId,
        segment: &SegmentId,
    ) -> Result<bool, NetError> {
        // A peer known to be down is not waited for: it is asked again at a later step.
        let api = match self.peer_api(peer) {
            Some(api) if self.pair.reach(peer).down_since.is_none() => api,
            _ => return Ok(false),
        };
        let request = self.identity.sign(Locate { segment: *segment })?;
        let located = tokio::time::timeout(PEER_TIMEOUT, api.locate(request))
            .await
            .unwrap_or_else(|_| Err(NetError::Unavailable("timed out".into())));
        let error = match located {
            Ok(location) => return Ok(location.deleted),
            Err(NetError::NotFound(_)) => {
                let (Some(tombstone), held) = (
                    self.map.forgotten_by(segment)?,
                    self.map.orphaned_of(segment)?,
                ) else {
                    return Ok(false);
                };
                let request = self.identity.sign(Mirror {
                    segment: *segment,
                    owner: tombstone.owner,
                    pieces: mirrored(held),
                    entrusted: None,
                    forgotten: false,
                })?;
                match tokio::time::timeout(PEER_TIMEOUT, api.mirror(request)).await {
                    Ok(Ok(())) => return Ok(false),
                    Ok(Err(e)) => e,
                    Err(_) => NetError::Unavailable("timed out".into()),
                }
            }
            Err(e) => e,
        };
        debug!(
            peer = %peer, segment = %segment, error = %error,
            "orphan not settled with its other tracker yet"
        );
        Ok(false)
    }

    /// Renews this tracker's lease with every peer, if a quarter of a lease has passed since
    /// the last time, and mirrors to each that answers what is marked for it.
    pub(crate) async fn renew_leases(&self, now: u64) {
        if let Ok(mut renewed) = self.pair.renewed.lock() {
            if renewed.is_some_and(|at| now.saturating_sub(at) < self.pair.lease_ms / 4) {
                return;
            }
            *renewed = Some(now);
        }
        let me = self.node_id();
        let peers: Vec<NodeId> = self.trackers.keys().copied().filter(|p| *p != me).collect();
        let renewals = peers.iter().map(|peer| async move {
            let answered = match (self.peer_api(peer), self.identity.sign(Lease)) {
                (Some(api), Ok(request)) => tokio::time::timeout(PEER_TIMEOUT, api.lease(request))
                    .await
                    .is_ok_and(|r| r.is_ok()),
                _ => false,
            };
            if !answered && !self.pair.gone(peer, now) {
                debug!(peer = %peer, "peer tracker did not renew");
            }
            self.pair.set_reach(*peer, answered, now);
            if answered {
                self.hand_off(peer, None, HANDOFFS_PER_STEP).await;
            }
        });
        join_all(renewals).await;
    }

    /// A peer renews its lease: from now on this tracker leaves the peer's segments alone.
    /// Answers once the step running here (which may be auditing them) is over and what
    /// changed here is mirrored back.
    pub(crate) async fn grant_lease(&self, request: Signed<Lease>) -> Result<(), NetError> {
        let checked = self.verifier.check(request)?;
        self.check_peer(&checked.signer())?;
        let (peer, Lease) = self.verifier.accept(checked)?;
        let now = self.audits.clock.now_ms();
        let took_over = self.pair.gone(&peer, now);
        self.pair.heard(peer);
        let _step = self.pair.step.lock().await;
        if took_over {
            info!(peer = %peer, "peer tracker is back: handing its segments back");
        }
        if self.hand_off(&peer, None, usize::MAX).await {
            Ok(())
        } else {
            Err(NetError::Unavailable(
                "could not mirror every change back yet".into(),
            ))
        }
    }

    /// Refuses signers that are not another tracker of this network.
    fn check_peer(&self, signer: &NodeId) -> Result<(), NetError> {
        if *signer == self.node_id() || !self.trackers.contains_key(signer) {
            return Err(NetError::Forbidden(
                "only another tracker of this network may do this".into(),
            ));
        }
        Ok(())
    }

    /// Takes a peer's record of a segment this tracker keeps and merges it into its own.
    pub(crate) async fn merge_mirror(&self, request: Signed<Mirror>) -> Result<(), NetError> {
        let checked = self.verifier.check(request)?;
        self.check_peer(&checked.signer())?;
        let (peer, m) = self.verifier.accept(checked)?;
        // The sender may have left the segment's pair (the tracker list changed).
        if !self.pair_of(&m.segment).contains(&self.node_id()) {
            return Err(NetError::Precondition(format!(
                "segment {} is not kept by this tracker",
                m.segment
            )));
        }
        if m.forgotten {
            let now = self.audits.clock.now_ms();
            let why = "deleted by its owner (told by its other tracker)";
            let how = Forgetting::Owner { unknown_too: true };
            self.forget_segment(&m.segment, &m.owner, now, how, &[], why)?;
            return self.map.flush().await;
        }
        let entrusted = match &m.entrusted {
            Some((manifest, key)) => {
                let manifest = SegmentManifest::from_bytes(manifest)
                    .map_err(|e| NetError::BadRequest(format!("manifest: {e}")))?;
                if manifest.segment.0 != m.segment.0 {
                    return Err(NetError::BadRequest(
                        "the manifest is for another segment".into(),
                    ));
                }
                Some((manifest, *key))
            }
            None => None,
        };
        match self.map.forgotten_by(&m.segment)? {
            // Forgotten here as an orphan, entrusted there: taken back, with the copies held
            // aside (none of which was deleted: see `crate::forget`).
            Some(tombstone) if tombstone.orphan && entrusted.is_some() => {
                self.map.take_back(&m.segment, &m.owner)?;
                info!(
                    peer = %peer, segment = %m.segment,
                    "orphan entrusted at its other tracker: taken back"
                );
            }
            Some(tombstone) => {
                // The tombstone wins; an owner's is sent to the sender with its next hand-off.
                debug!(peer = %peer, segment = %m.segment, "mirror of a forgotten segment ignored");
                return match tombstone.orphan {
                    true => Ok(()),
                    false => self.mark(&peer, &m.segment),
                };
            }
            None => {}
        }
        self.map.claim(&m.segment, &m.owner, now_ms())?;
        let manifest = match entrusted {
            Some((manifest, key)) => Some(self.audits.adopt(m.segment, key, manifest)?),
            None => self.audits.entrusted_of(&m.segment)?.map(|(m, _)| m),
        };
        let mapped = self.map.segment(&m.segment)?;
        for p in &m.pieces {
            let ours = mapped.iter().find(|q| q.index == p.index);
            let current = manifest
                .as_ref()
                .and_then(|m| m.pieces.get(p.index as usize))
                .map(|info| info.hash.0);
            let take = match ours {
                Some(q) if q.piece == p.piece => true,
                // A repair re-coded it: the merged manifest says which piece is current.
                _ if current.is_some() => current == Some(p.piece.0),
                None => true,
                Some(_) => false,
            };
            if take && ours.is_some_and(|q| q.piece != p.piece) {
                // Re-coded there: a repair queued here for the old piece is moot.
                self.audits.unqueue(&m.segment, p.index)?;
            }
            if take {
                for holder in &p.holders {
                    let spec = PieceSpec {
                        index: p.index,
                        piece: p.piece,
                        size: p.size,
                    };
                    self.map.add_holder(&m.segment, &m.owner, &spec, *holder)?;
                }
            }
        }
        match manifest {
            Some(_) => self.map.clear_unentrusted(&m.segment)?,
            None if !m.pieces.is_empty() => self
                .map
                .mark_unentrusted(&m.segment, self.audits.clock.now_ms())?,
            None => {}
        }
        self.map.flush().await
    }
}
