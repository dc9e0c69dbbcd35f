//! The tracker service: registry, placement, reservations and the piece map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{debug, info};
use wwt_net::audit::{AuditReport, Complaint, Entrust, Entrusted, Lease, Mirror};
use wwt_net::grpc::GrpcConnector;
use wwt_net::types::{
    ConfirmStored, Confirmed, Forget, Heartbeat, HeartbeatAck, Holder, Locate, NodeId,
    PieceLocation, PieceSpec, PlacedPiece, Placement, ProviderRecord, Reservation, ReserveSegment,
    SegmentId, SegmentLocation,
};
use wwt_net::{Connector, Identity, NetError, PeerKeys, Signed, TrackerApi, Verifier, now_ms};

use crate::TrackerError;
use crate::audit::Audits;
use crate::clock::{Clock, SystemClock};
use crate::config::TrackerConfig;
use crate::error::poisoned;
use crate::forget::Deleting;
use crate::map::PieceMap;
use crate::pair::Pair;
use crate::registry::Registry;

/// One tracker of the network.
pub struct Tracker {
    pub(crate) identity: Identity,
    /// The keys that tag its reservations and check its providers' receipts.
    pub(crate) keys: PeerKeys,
    pub(crate) verifier: Verifier,
    registry: Mutex<Registry>,
    pub(crate) map: PieceMap,
    /// Every tracker of the network (this one included) → its address ("" for this one).
    pub(crate) trackers: HashMap<NodeId, String>,
    heartbeat_interval_ms: u64,
    pub(crate) reservation_ttl_ms: u64,
    /// [`crate::AdmissionConfig::owner_quota_bytes`].
    owner_quota_bytes: Option<u64>,
    pub(crate) audits: Audits,
    /// Its side of the segment pairs it is in: lease and mirroring.
    pub(crate) pair: Pair,
    /// [`TrackerConfig::placement_seed`], and how many draws each segment had under it.
    placement_seed: Option<(u64, Mutex<HashMap<SegmentId, u64>>)>,
    /// Providers' host names → the address each resolved to (if any) and until when
    /// (ms) that holds.
    resolved: Mutex<HashMap<String, (Option<IpAddr>, u64)>>,
    /// Per owner under a quota: its open reservations.
    reserved: Mutex<OpenReservations>,
    /// The deletes of doomed copies: which holders back off.
    pub(crate) deleting: Deleting,
}

/// Per owner: its open reservations' bytes and when each expires (ms).
type OpenReservations = HashMap<NodeId, Vec<(u64, u64)>>;

/// Owners with open reservations kept before the expired ones are swept.
const MAX_RESERVING_OWNERS: usize = 4096;
/// Open reservations one owner may hold under a quota.
const MAX_OPEN_RESERVATIONS: usize = 65_536;

/// How long a host name's resolution is kept, and how long one may take.
const RESOLVED_FOR_MS: u64 = 300_000;
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Host names kept resolved at most; past it the cache starts again.
const MAX_RESOLVED: usize = 4096;

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("node", &self.identity.node_id())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Opens the tracker described by `config`: audits on the system clock, providers reached
    /// over gRPC.
    pub fn open(config: &TrackerConfig) -> Result<Tracker, TrackerError> {
        // Challenges carry their own deadline; repairs' reads and stores the default timeout.
        Tracker::open_with(
            config,
            Arc::new(GrpcConnector::new()),
            Arc::new(SystemClock),
        )
    }

    /// Opens the tracker described by `config`, reaching providers through `connector` and
    /// scheduling audits on `clock`.
    pub fn open_with(
        config: &TrackerConfig,
        connector: Arc<dyn Connector>,
        clock: Arc<dyn Clock>,
    ) -> Result<Tracker, TrackerError> {
        if config.liveness_timeout_ms < config.heartbeat_interval_ms {
            return Err(TrackerError::BadConfig(
                "liveness_timeout_ms must be at least heartbeat_interval_ms".into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.admission.unvetted_share) {
            return Err(TrackerError::BadConfig(
                "admission.unvetted_share must be a fraction between 0 and 1 (0.05: 5 %)".into(),
            ));
        }
        let identity = Identity::load_or_create(&config.identity_path())?;
        let mut trackers: HashMap<NodeId, String> = config
            .peers
            .iter()
            .map(|p| (p.id, p.address.clone()))
            .collect();
        trackers.insert(identity.node_id(), String::new());
        let map = PieceMap::open(&config.data_dir.join("map"))?;
        let audits = Audits::open(
            map.db(),
            config.audit.clone(),
            &config.admission,
            clock,
            connector,
        )?;
        let pair = Pair::open(map.db(), config.lease_ms)?;
        let mut registry = Registry::new(config.liveness_timeout_ms, config.admission.clone());
        for (node, credit, vetted) in audits.standings()? {
            registry.set_standing(node, credit, vetted);
        }
        let tracker = Tracker {
            map,
            keys: PeerKeys::new(&identity),
            identity,
            verifier: Verifier::new(Duration::from_millis(config.signature_window_ms)),
            registry: Mutex::new(registry),
            trackers,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            reservation_ttl_ms: config.reservation_ttl_ms,
            owner_quota_bytes: config.admission.owner_quota_bytes,
            audits,
            pair,
            placement_seed: config
                .placement_seed
                .map(|seed| (seed, Mutex::new(HashMap::new()))),
            resolved: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
            deleting: Deleting::default(),
        };
        tracker.rebalance()?;
        Ok(tracker)
    }

    /// The IP address the host name of a provider's gRPC `address` resolves to, so that
    /// providers behind many names on one machine room's addresses share its network; none
    /// for an IP address, an in-process address, and a name that does not resolve within
    /// [`RESOLVE_TIMEOUT`].
    async fn resolve(&self, address: &str) -> Result<Option<IpAddr>, NetError> {
        let host = crate::registry::host(address);
        let named = address.starts_with("http://") || address.starts_with("https://");
        if !named || host.is_empty() || host.parse::<IpAddr>().is_ok() {
            return Ok(None);
        }
        let now = now_ms();
        let cached = self
            .resolved
            .lock()
            .map_err(|_| poisoned("resolved names"))?
            .get(host)
            .copied();
        if let Some((ip, until)) = cached
            && now < until
        {
            return Ok(ip);
        }
        let lookup = tokio::net::lookup_host((host, 0));
        let ip = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(mut addresses)) => addresses.next().map(|a| a.ip()),
            _ => None,
        };
        let mut resolved = self
            .resolved
            .lock()
            .map_err(|_| poisoned("resolved names"))?;
        if resolved.len() >= MAX_RESOLVED {
            resolved.clear();
        }
        resolved.insert(host.to_owned(), (ip, now + RESOLVED_FOR_MS));
        Ok(ip)
    }

    /// Refuses `asked` more bytes to `owner` past its quota, counting what it keeps here and
    /// its open reservations; else holds them as open until they expire or are confirmed.
    fn check_quota(&self, owner: &NodeId, asked: u64, now: u64) -> Result<(), NetError> {
        let Some(quota) = self.owner_quota_bytes else {
            return Ok(());
        };
        let used = self.map.usage(owner)?;
        let mut reserved = self.reserved()?;
        if reserved.len() >= MAX_RESERVING_OWNERS {
            reserved.retain(|_, open| {
                open.retain(|(expires, _)| *expires > now);
                !open.is_empty()
            });
        }
        let open = reserved.entry(*owner).or_default();
        open.retain(|(expires, _)| *expires > now);
        let pending: u64 = open.iter().map(|(_, bytes)| bytes).sum();
        if used.saturating_add(pending).saturating_add(asked) > quota {
            return Err(NetError::NoCapacity(format!(
                "you keep {used} bytes under this tracker and have reserved {pending} more, and \
                 {asked} more would pass your quota of {quota} bytes; delete data, wait for \
                 your uploads to finish, or ask the tracker's operator for a larger quota"
            )));
        }
        if open.len() >= MAX_OPEN_RESERVATIONS {
            return Err(NetError::NoCapacity(format!(
                "{MAX_OPEN_RESERVATIONS} reservations of yours are open; confirm or abandon some \
                 first"
            )));
        }
        if asked > 0 {
            open.push((now.saturating_add(self.reservation_ttl_ms), asked));
        }
        Ok(())
    }

    /// Closes `bytes` of `owner`'s open reservations, oldest first: confirmed, they count as
    /// kept.
    fn close_reserved(&self, owner: &NodeId, mut bytes: u64) -> Result<(), NetError> {
        let mut reserved = self.reserved()?;
        let Some(open) = reserved.get_mut(owner) else {
            return Ok(());
        };
        while bytes > 0
            && let Some((_, first)) = open.first_mut()
        {
            let closed = bytes.min(*first);
            (*first, bytes) = (*first - closed, bytes - closed);
            if *first == 0 {
                open.remove(0);
            }
        }
        if open.is_empty() {
            reserved.remove(owner);
        }
        Ok(())
    }

    fn reserved(&self) -> Result<MutexGuard<'_, OpenReservations>, NetError> {
        self.reserved
            .lock()
            .map_err(|_| poisoned("open reservations"))
    }

    /// Every provider known from heartbeats, sorted by node id.
    pub fn records(&self) -> Result<Vec<ProviderRecord>, NetError> {
        Ok(self.registry()?.records(now_ms()))
    }

    /// Bytes reserved on each provider since its last heartbeat (placed, not yet reported).
    pub fn placed_bytes(&self) -> Result<HashMap<NodeId, u64>, NetError> {
        Ok(self.registry()?.reserved())
    }

    /// This tracker's node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    pub(crate) fn registry(&self) -> Result<MutexGuard<'_, Registry>, NetError> {
        self.registry.lock().map_err(|_| poisoned("registry"))
    }

    /// Refuses requests about `segment` by anyone but its owner (and segments not kept here,
    /// or deleted).
    pub(crate) fn check_owner(&self, segment: &SegmentId, signer: &NodeId) -> Result<(), NetError> {
        self.check_responsible(segment)?;
        let owner = self.map.owner(segment)?;
        // Checked after the owner is read: a forget drops the owner as it leaves the
        // tombstone, so a segment forgotten meanwhile is refused as such.
        self.map.check_kept(segment)?;
        match owner {
            Some(o) if o == *signer => Ok(()),
            Some(_) => Err(NetError::Forbidden(format!(
                "segment {segment} belongs to another owner"
            ))),
            None => Err(NetError::NotFound(format!(
                "segment {segment} has no confirmed pieces here; store it first"
            ))),
        }
    }

    /// Refuses segments this tracker is not one of the pair of, naming the first of it.
    pub(crate) fn check_responsible(&self, segment: &SegmentId) -> Result<(), NetError> {
        let pair = self.pair_of(segment);
        match pair.first() {
            Some(first) if !pair.contains(&self.node_id()) => Err(NetError::Precondition(format!(
                "segment {segment} is kept by tracker {first} at {}; ask it",
                self.trackers.get(first).map_or("?", String::as_str)
            ))),
            _ => Ok(()),
        }
    }

    /// The seed of one placement draw for `segment` (`purpose` tells a repair's from a
    /// reservation's): from the time `now_ms`, or, under a configured placement seed, from
    /// that seed and how many draws the segment had before, so a replay draws the same.
    pub(crate) fn placement_draw(
        &self,
        purpose: &[u8],
        segment: &SegmentId,
        now_ms: u64,
    ) -> Result<[u8; 32], NetError> {
        let mut seed = blake3::Hasher::new();
        seed.update(purpose);
        seed.update(&segment.0);
        match &self.placement_seed {
            None => {
                seed.update(&now_ms.to_le_bytes());
            }
            Some((fixed, draws)) => {
                let mut draws = draws.lock().map_err(|_| poisoned("placement draws"))?;
                let n = draws.entry(*segment).or_default();
                seed.update(&fixed.to_le_bytes());
                seed.update(&n.to_le_bytes());
                *n += 1;
            }
        }
        Ok(*seed.finalize().as_bytes())
    }

    /// Refuses a `Confirm` with receipts for forgotten segments. The pieces those receipts
    /// say were stored under segments their owners deleted are doomed, as nothing will map
    /// them; an orphan's are left alone, as the other tracker of its pair may still keep the
    /// segment (see [`crate::forget`]).
    fn refuse_deleted(&self, req: &ConfirmStored) -> Result<(), NetError> {
        let now = self.audits.clock.now_ms();
        let mut refused = None;
        for receipt in &req.receipts {
            let r = &receipt.reservation;
            if let Some(tombstone) = self.map.forgotten_by(&r.segment)? {
                if !tombstone.orphan {
                    self.map
                        .doom(&r.segment, &r.provider, &r.piece, r.size, now)?;
                }
                refused.get_or_insert((r.segment, tombstone));
            }
        }
        match refused {
            Some((segment, tombstone)) => Err(tombstone.refusal(&segment)),
            None => Ok(()),
        }
    }

    pub(crate) fn reservation(
        &self,
        owner: NodeId,
        segment: SegmentId,
        spec: &wwt_net::types::PieceSpec,
        provider: NodeId,
        expires_ms: u64,
    ) -> Result<Reservation, NetError> {
        Reservation {
            piece: spec.piece,
            size: spec.size,
            segment,
            index: spec.index,
            provider,
            owner,
            expires_ms,
            tracker: self.node_id(),
            tracker_tag: [0; 32],
            provider_tag: [0; 32],
        }
        .issue(&self.keys)
    }
}

#[async_trait]
impl TrackerApi for Tracker {
    async fn heartbeat(&self, request: Signed<Heartbeat>) -> Result<HeartbeatAck, NetError> {
        let (provider, beat) = self.verifier.verify(request)?;
        debug!(provider = %provider, address = %beat.address, used = beat.used, "heartbeat");
        let resolved = self.resolve(&beat.address).await?;
        self.registry()?
            .heartbeat_resolved(provider, beat, resolved, now_ms())?;
        Ok(HeartbeatAck {
            tracker: self.node_id(),
            interval_ms: self.heartbeat_interval_ms,
        })
    }

    async fn reserve(&self, request: Signed<ReserveSegment>) -> Result<Placement, NetError> {
        let (owner, req) = self.verifier.verify(request)?;
        self.check_responsible(&req.segment)?;
        self.map.check_kept(&req.segment)?;
        self.check_placing(&req.segment)?;
        let now = now_ms();
        // A resumed upload: pieces already mapped are not placed again, and the providers
        // holding its other pieces are not chosen again.
        let mapped = self.map.segment(&req.segment)?;
        let (held, wanted): (Vec<PieceSpec>, Vec<PieceSpec>) =
            req.pieces.iter().copied().partition(|spec| {
                mapped.iter().any(|p| {
                    p.index == spec.index && p.piece == spec.piece && !p.holders.is_empty()
                })
            });
        let asked: u64 = wanted.iter().map(|spec| spec.size).sum();
        self.check_quota(&owner, asked, now)?;
        self.map.claim(&req.segment, &owner, now)?;
        let held = held.iter().map(|spec| spec.index).collect();
        let holders = mapped.into_iter().flat_map(|p| p.holders).collect();
        let placed = match wanted.is_empty() {
            true => Vec::new(),
            false => {
                let seed = self.placement_draw(b"", &req.segment, now)?;
                self.registry()?
                    .place(&wanted, &holders, &Default::default(), seed, now)?
            }
        };
        let expires_ms = now.saturating_add(self.reservation_ttl_ms);
        let pieces = wanted
            .iter()
            .zip(placed)
            .map(|(spec, (provider, address))| {
                Ok(PlacedPiece {
                    reservation: self.reservation(
                        owner,
                        req.segment,
                        spec,
                        provider,
                        expires_ms,
                    )?,
                    address,
                })
            })
            .collect::<Result<_, NetError>>()?;
        info!(segment = %req.segment, pieces = wanted.len(), "segment placed");
        Ok(Placement {
            segment: req.segment,
            pieces,
            held,
        })
    }

    async fn confirm(&self, request: Signed<ConfirmStored>) -> Result<Confirmed, NetError> {
        let checked = self.verifier.check(request)?;
        let owner = checked.signer();
        for receipt in &checked.body().receipts {
            let r = &receipt.reservation;
            r.check_issued_by(&self.keys)?;
            receipt.check(&self.keys)?;
            if r.owner != owner {
                return Err(NetError::Forbidden(
                    "receipts must be confirmed by the reservation's owner".into(),
                ));
            }
        }
        let (owner, req) = self.verifier.accept(checked)?;
        self.refuse_deleted(&req)?;
        for receipt in &req.receipts {
            self.map
                .claim(&receipt.reservation.segment, &owner, now_ms())?;
        }
        // Only receipts news to the map close open reservations: a receipt confirmed again
        // closes nothing.
        let mut confirmed = 0;
        for receipt in &req.receipts {
            let r = &receipt.reservation;
            let spec = PieceSpec {
                index: r.index,
                piece: r.piece,
                size: r.size,
            };
            if self.map.add_holder(&r.segment, &owner, &spec, r.provider)? {
                confirmed += r.size;
            }
        }
        self.close_reserved(&owner, confirmed)?;
        let segments: std::collections::BTreeSet<SegmentId> =
            req.receipts.iter().map(|r| r.reservation.segment).collect();
        let now = self.audits.clock.now_ms();
        for segment in &segments {
            if self.audits.entrusted_of(segment)?.is_none() {
                self.map.mark_unentrusted(segment, now)?;
            }
        }
        self.map.flush().await?;
        for segment in &segments {
            self.changed(segment).await?;
        }
        let recorded = u32::try_from(req.receipts.len()).unwrap_or(u32::MAX);
        debug!(recorded, "receipts confirmed");
        Ok(Confirmed { recorded })
    }

    async fn locate(&self, request: Signed<Locate>) -> Result<SegmentLocation, NetError> {
        let checked = self.verifier.check(request)?;
        let (signer, segment) = (checked.signer(), checked.body().segment);
        self.check_responsible(&segment)?;
        // Forgotten: only that is said (a reader holding a locator into it read an index
        // that has moved on since).
        if let Some(tombstone) = self.map.forgotten_by(&segment)? {
            if tombstone.owner != signer && !self.trackers.contains_key(&signer) {
                return Err(NetError::Forbidden(
                    "only the segment's owner or a tracker may locate it".into(),
                ));
            }
            self.verifier.accept(checked)?;
            return Ok(SegmentLocation {
                segment,
                pieces: Vec::new(),
                manifest: Bytes::new(),
                deleted: true,
            });
        }
        match self.map.owner(&segment)? {
            None => {
                return Err(NetError::NotFound(format!(
                    "segment {segment} is not known here"
                )));
            }
            Some(owner) if owner != signer && !self.trackers.contains_key(&signer) => {
                return Err(NetError::Forbidden(
                    "only the segment's owner or a tracker may locate it".into(),
                ));
            }
            Some(_) => {}
        }
        let (_, req) = self.verifier.accept(checked)?;
        let now = now_ms();
        let registry = self.registry()?;
        let pieces = self
            .map
            .segment(&req.segment)?
            .into_iter()
            .map(|p| PieceLocation {
                index: p.index,
                piece: p.piece,
                size: p.size,
                holders: p
                    .holders
                    .iter()
                    .filter_map(|node| {
                        let (address, alive) = registry.lookup(node, now)?;
                        Some(Holder {
                            node: *node,
                            address,
                            alive,
                        })
                    })
                    .collect(),
            })
            .collect();
        drop(registry);
        Ok(SegmentLocation {
            segment: req.segment,
            pieces,
            manifest: self.current_manifest(&req.segment)?,
            deleted: false,
        })
    }

    async fn providers(&self) -> Result<Vec<ProviderRecord>, NetError> {
        self.records()
    }

    async fn entrust(&self, request: Signed<Entrust>) -> Result<Entrusted, NetError> {
        let checked = self.verifier.check(request)?;
        self.check_owner(&checked.body().segment, &checked.signer())?;
        let (owner, req) = self.verifier.accept(checked)?;
        let segment = req.segment;
        let pieces = self.entrust_segment(owner, req).await?;
        self.map.flush().await?;
        self.changed(&segment).await?;
        Ok(Entrusted { pieces })
    }

    async fn complain(&self, request: Signed<Complaint>) -> Result<(), NetError> {
        let checked = self.verifier.check(request)?;
        self.check_owner(&checked.body().segment, &checked.signer())?;
        let (owner, req) = self.verifier.accept(checked)?;
        self.complaint(owner, req)?;
        self.map.flush().await
    }

    async fn audits(&self, limit: u32) -> Result<AuditReport, NetError> {
        self.audit_report(limit)
    }

    async fn forget(&self, request: Signed<Forget>) -> Result<u32, NetError> {
        let checked = self.verifier.check(request)?;
        let signer = checked.signer();
        // Every segment known here must be the signer's, or nothing is forgotten.
        let mut to_forget = false;
        for segment in &checked.body().segments {
            let (owner, live) = match self.map.forgotten_by(segment)? {
                // An orphan's tombstone becomes an owner's.
                Some(tombstone) => (Some(tombstone.owner), tombstone.orphan),
                None => (self.map.owner(segment)?, true),
            };
            match owner {
                Some(o) if o != signer => {
                    return Err(NetError::Forbidden(format!(
                        "segment {segment} belongs to another owner; nothing was deleted"
                    )));
                }
                Some(_) => to_forget |= live,
                None => {}
            }
        }
        // Nothing of the signer's to forget here: the request changes nothing, so a replay of
        // it is harmless, and it is not recorded (else anyone could fill the replay cache
        // with throwaway identities and have every signed call refused).
        if !to_forget {
            return Ok(0);
        }
        let (owner, req) = self.verifier.accept(checked)?;
        let forgotten = self.forget_segments(&owner, &req.segments).await?;
        info!(owner = %owner, asked = req.segments.len(), forgotten, "segments forgotten");
        Ok(forgotten)
    }

    async fn mirror(&self, request: Signed<Mirror>) -> Result<(), NetError> {
        self.merge_mirror(request).await
    }

    async fn lease(&self, request: Signed<Lease>) -> Result<(), NetError> {
        self.grant_lease(request).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn host_names_resolve_and_addresses_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrackerConfig {
            data_dir: dir.path().to_path_buf(),
            ..TrackerConfig::default()
        };
        let tracker = Tracker::open(&config).unwrap();
        let local = tracker.resolve("http://localhost:7000").await.unwrap();
        assert!(local.is_some_and(|ip| ip.is_loopback()), "{local:?}");
        assert_eq!(
            tracker.resolve("http://192.0.2.1:7000").await.unwrap(),
            None
        );
        assert_eq!(tracker.resolve("mem://provider-1").await.unwrap(), None);
        // RFC 2606: `.invalid` never resolves.
        assert_eq!(
            tracker.resolve("https://p.invalid:7000").await.unwrap(),
            None
        );
    }
}
