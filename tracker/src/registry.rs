//! The provider registry (soft state, rebuilt from heartbeats) and placement.
//!
//! Placement trusts what is proven, not what is claimed (Storj's vetting):
//! - A provider is *vetted* once audits say so ([`Standing::vetted`]) or when an operator key
//!   of the tracker's [`AdmissionConfig::operators`] certifies it.
//! - A segment's pieces go to distinct providers, operators and networks ([`network`]): at
//!   most one piece each, so one machine room or one operator's Sybils hold one piece.
//! - While enough vetted providers can take a whole segment, its pieces go to them, weighted
//!   by the bytes each has proven under audit (its claimed free space only caps that) times
//!   credit; one piece of a segment goes to an unvetted provider whenever that keeps the
//!   pieces newcomers got within [`AdmissionConfig::unvetted_share`] of those placed, so
//!   newcomers get audited and can earn their vetting, and never more than their share.
//! - Until then (a new network), vetted providers take what they can and unvetted ones the
//!   rest, drawn evenly, never by what they claim.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wwt_net::NetError;
use wwt_net::types::{Heartbeat, NodeId, PieceSpec, ProviderRecord};

use crate::config::AdmissionConfig;

/// Credit a provider starts with, per mille; audits move it ([`Registry::set_standing`]).
pub const INITIAL_CREDIT: u32 = 1000;

/// Proven bytes every vetted provider is weighted as having beyond what it has proven, so a
/// provider vetted by certificate, with nothing proven yet, is placed on too.
const PROVEN_FLOOR: u64 = 1 << 30;

/// Draws a placement tries before it gives up.
const PLACE_ATTEMPTS: u8 = 8;

/// What audits say of a provider, for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    /// Credit, per mille; 0: never placed on (condemned, not yet admitted again).
    credit: u32,
    /// It passed its vetting.
    vetted: bool,
    /// Bytes of pieces it holds under this tracker's audits, having passed a challenge:
    /// the capacity it has proven.
    proven: u64,
}

impl Default for Standing {
    fn default() -> Self {
        Standing {
            credit: INITIAL_CREDIT,
            vetted: false,
            proven: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    address: String,
    zone: String,
    capacity: u64,
    used: u64,
    pieces: u64,
    /// Also an index provider.
    index: bool,
    last_heartbeat_ms: u64,
    /// Bytes reserved since the last heartbeat (not yet in `used`).
    reserved: u64,
    /// The operator of a valid certificate it presented.
    operator: Option<NodeId>,
    /// That operator is one of the tracker's.
    certified: bool,
    /// Its network ([`network`]), as of its last heartbeat.
    network: Option<String>,
}

impl Entry {
    fn free(&self) -> u64 {
        self.capacity
            .saturating_sub(self.used.saturating_add(self.reserved))
    }
}

/// The host of an advertised address (`scheme://host:port/…`, `[v6]:port`).
pub fn host(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    }
}

/// The network a provider is in, for the one-piece-per-network rule: the /24 (IPv4) or /48
/// (IPv6) of its advertised address, or of the address its host name resolved to
/// (`resolved`). On loopback, an unspecified address, an unresolved name or an in-process
/// address, where the address says nothing, its declared zone stands for it; none ("" zone)
/// puts it in a network of its own.
pub fn network(address: &str, resolved: Option<IpAddr>, zone: &str) -> Option<String> {
    let ip = host(address).parse::<IpAddr>().ok().or(resolved);
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(ip)) if !ip.is_loopback() && !ip.is_unspecified() => {
            let [a, b, c, _] = ip.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        Some(IpAddr::V6(ip)) if !ip.is_loopback() && !ip.is_unspecified() => {
            let s = ip.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
        _ => (!zone.is_empty()).then(|| format!("zone {zone}")),
    }
}

/// The providers a tracker knows, by node id.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<NodeId, Entry>,
    /// What audits say, kept across the soft state (a provider may heartbeat later).
    standing: HashMap<NodeId, Standing>,
    liveness_timeout_ms: u64,
    admission: AdmissionConfig,
    /// Pieces placed while the network was established, and how many went to newcomers.
    placed: (u64, u64),
}

impl Registry {
    /// An empty registry; providers silent for `liveness_timeout_ms` count as dead.
    pub fn new(liveness_timeout_ms: u64, admission: AdmissionConfig) -> Registry {
        Registry {
            entries: HashMap::new(),
            standing: HashMap::new(),
            liveness_timeout_ms,
            admission,
            placed: (0, 0),
        }
    }

    /// Sets what audits say of `node`: its credit (per mille; 0: never placed on) and whether
    /// it passed its vetting.
    pub fn set_standing(&mut self, node: NodeId, credit: u32, vetted: bool) {
        let s = self.standing.entry(node).or_default();
        s.credit = credit.min(1000);
        s.vetted = vetted;
    }

    /// Sets the bytes each provider has proven (those not named: none).
    pub fn set_proven(&mut self, proven: &HashMap<NodeId, u64>) {
        for (node, s) in &mut self.standing {
            s.proven = proven.get(node).copied().unwrap_or(0);
        }
        for (node, bytes) in proven {
            self.standing.entry(*node).or_default().proven = *bytes;
        }
    }

    fn standing(&self, node: &NodeId) -> Standing {
        self.standing.get(node).copied().unwrap_or_default()
    }

    /// Vetted by audits, or certified by one of the tracker's operators.
    fn vetted(&self, node: &NodeId, e: &Entry) -> bool {
        e.certified || self.standing(node).vetted
    }

    /// Records a heartbeat from `node` at `now_ms` (registering it if new). Refuses a
    /// certificate that is not for `node`, and, in a permissioned network, a provider that no
    /// operator of the tracker certifies.
    pub fn heartbeat(
        &mut self,
        node: NodeId,
        beat: Heartbeat,
        now_ms: u64,
    ) -> Result<(), NetError> {
        self.heartbeat_resolved(node, beat, None, now_ms)
    }

    /// [`Registry::heartbeat`], the host name of the provider's address resolved to
    /// `resolved`.
    pub fn heartbeat_resolved(
        &mut self,
        node: NodeId,
        beat: Heartbeat,
        resolved: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(), NetError> {
        if let Some(cert) = &beat.operator
            && !cert.certifies(&node)
        {
            return Err(NetError::BadRequest(format!(
                "the operator certificate is not {}'s for provider {node}; have the operator \
                 issue one for this node id",
                cert.operator
            )));
        }
        let operator = beat.operator.map(|c| c.operator);
        let certified = operator.is_some_and(|o| self.admission.operators.contains(&o));
        if self.admission.permissioned && !certified {
            return Err(NetError::Forbidden(
                "this network admits only providers certified by its operators; ask one of \
                 them for an operator certificate and set it in the provider's configuration"
                    .into(),
            ));
        }
        let entry = self.entries.entry(node).or_insert_with(|| Entry {
            address: String::new(),
            zone: String::new(),
            capacity: 0,
            used: 0,
            pieces: 0,
            index: false,
            last_heartbeat_ms: 0,
            reserved: 0,
            operator: None,
            certified: false,
            network: None,
        });
        entry.network = network(&beat.address, resolved, &beat.zone);
        entry.address = beat.address;
        entry.zone = beat.zone;
        entry.capacity = beat.capacity;
        entry.used = beat.used;
        entry.pieces = beat.pieces;
        entry.index = beat.index;
        entry.last_heartbeat_ms = now_ms;
        entry.operator = operator;
        entry.certified = certified;
        // The provider's own count now includes whatever was stored under earlier
        // reservations; unused ones are forgotten, as they expire anyway.
        entry.reserved = 0;
        Ok(())
    }

    fn alive(&self, entry: &Entry, now_ms: u64) -> bool {
        now_ms.saturating_sub(entry.last_heartbeat_ms) <= self.liveness_timeout_ms
    }

    /// The address of `node` and whether it is alive, if known.
    pub fn lookup(&self, node: &NodeId, now_ms: u64) -> Option<(String, bool)> {
        self.entries
            .get(node)
            .map(|e| (e.address.clone(), self.alive(e, now_ms)))
    }

    /// Bytes reserved on each known provider since its last heartbeat.
    pub fn reserved(&self) -> HashMap<NodeId, u64> {
        self.entries
            .iter()
            .map(|(node, e)| (*node, e.reserved))
            .collect()
    }

    /// Every known provider, sorted by node id.
    pub fn records(&self, now_ms: u64) -> Vec<ProviderRecord> {
        let mut records: Vec<ProviderRecord> = self
            .entries
            .iter()
            .map(|(node, e)| ProviderRecord {
                node: *node,
                address: e.address.clone(),
                zone: e.zone.clone(),
                capacity: e.capacity,
                used: e.used,
                pieces: e.pieces,
                credit: self.standing(node).credit,
                last_heartbeat_ms: e.last_heartbeat_ms,
                alive: self.alive(e, now_ms),
                index: e.index,
                vetted: self.vetted(node, e),
                operator: e.operator,
            })
            .collect();
        records.sort_by_key(|r| r.node);
        records
    }

    /// Chooses one live provider per piece, with credit and room for it, at most one piece
    /// per provider, operator and network (see the module docs for vetting and weights),
    /// preferring failure zones not yet used by the segment. Reserves the bytes.
    ///
    /// `holders` are the providers that already hold pieces of the segment (a resumed upload
    /// or a repair): they, their operators and their networks are not chosen again. Nor is
    /// any of `avoid` (a repair's lost holders), whose operators and networks stay open.
    /// Draws come from `seed`, so a placement is reproducible. Fails without reserving
    /// anything when the pieces cannot all be placed.
    pub fn place(
        &mut self,
        pieces: &[PieceSpec],
        holders: &HashSet<NodeId>,
        avoid: &HashSet<NodeId>,
        seed: [u8; 32],
        now_ms: u64,
    ) -> Result<Vec<(NodeId, String)>, NetError> {
        let mut drawn = self.draw(pieces, holders, avoid, seed, now_ms, true);
        // One pick can block two others (its operator one provider's, its network
        // another's): a failed draw is drawn again, without a newcomer's piece.
        for attempt in 1..PLACE_ATTEMPTS {
            if drawn.is_ok() {
                break;
            }
            let seed = *blake3::Hasher::new()
                .update(&seed)
                .update(&[attempt])
                .finalize()
                .as_bytes();
            drawn = self.draw(pieces, holders, avoid, seed, now_ms, false);
        }
        let drawn = drawn?;
        if drawn.established {
            let (placed, to_newcomers) = self.placed;
            self.placed = (
                placed + drawn.chosen.len() as u64,
                to_newcomers + drawn.newcomers,
            );
        }
        let mut placed = Vec::with_capacity(drawn.chosen.len());
        for (node, spec) in drawn.chosen.iter().zip(pieces) {
            if let Some(entry) = self.entries.get_mut(node) {
                entry.reserved = entry.reserved.saturating_add(spec.size);
                placed.push((*node, entry.address.clone()));
            }
        }
        Ok(placed)
    }

    /// One draw of [`Registry::place`]; a newcomer's piece only if `newcomer` allows it.
    fn draw(
        &self,
        pieces: &[PieceSpec],
        holders: &HashSet<NodeId>,
        avoid: &HashSet<NodeId>,
        seed: [u8; 32],
        now_ms: u64,
        newcomer: bool,
    ) -> Result<Draw, NetError> {
        let mut rng = StdRng::from_seed(seed);
        let mut taken = Taken::default();
        for node in holders {
            if let Some(e) = self.entries.get(node) {
                taken.add(node, e, self.vetted(node, e));
            }
        }
        let largest = pieces.iter().map(|p| p.size).max().unwrap_or(0);
        // Holders are in `taken`, so `Taken::allows` refuses them with their operators and
        // networks; `avoid` only here.
        let usable = |node: &NodeId, e: &Entry, size: u64| {
            self.alive(e, now_ms)
                && self.standing(node).credit > 0
                && !avoid.contains(node)
                && e.free() >= size
        };
        // Enough vetted providers, in operators and networks of their own, for the pieces?
        let mut room = taken.clone();
        let mut vetted: Vec<(&NodeId, &Entry)> = self
            .entries
            .iter()
            .filter(|(n, e)| self.vetted(n, e) && usable(n, e, largest))
            .collect();
        vetted.sort_by_key(|(n, _)| **n);
        let mut more = 0;
        for (node, e) in vetted {
            if room.allows(node, e) {
                room.add(node, e, true);
                more += 1;
            }
        }
        let established = more >= pieces.len();
        // In an established network, one piece of this segment (drawn at a random index)
        // goes to an unvetted provider if newcomers then still hold at most their share of
        // the pieces placed.
        let (placed, to_newcomers) = self.placed;
        let newcomer_piece = newcomer
            && established
            && taken.unvetted == 0
            && (to_newcomers + 1) as f64
                <= self.admission.unvetted_share * (placed + pieces.len() as u64) as f64;
        let newcomer_index = rng.random_range(0..pieces.len().max(1));
        let mut chosen: Vec<NodeId> = Vec::with_capacity(pieces.len());
        let mut newcomers = 0u64;
        for (i, spec) in pieces.iter().enumerate() {
            let candidates: Vec<(&NodeId, &Entry, bool)> = self
                .entries
                .iter()
                .filter(|(n, e)| usable(n, e, spec.size) && taken.allows(n, e))
                .map(|(n, e)| (n, e, self.vetted(n, e)))
                .collect();
            let want_vetted = !(newcomer_piece && i == newcomer_index);
            let mut pool: Vec<(&NodeId, &Entry, bool)> = candidates
                .iter()
                .filter(|(_, _, v)| *v == want_vetted)
                .copied()
                .collect();
            if pool.is_empty() {
                // A new network takes whoever can; otherwise a vetted provider takes the
                // newcomer's piece, and a newcomer takes a vetted one's only if the segment
                // has none yet.
                pool = candidates
                    .iter()
                    .filter(|(_, _, v)| !established || *v || taken.unvetted == 0)
                    .copied()
                    .collect();
            }
            // Prefer failure zones the segment does not use yet.
            let new_zone: Vec<(&NodeId, &Entry, bool)> = pool
                .iter()
                .filter(|(_, e, _)| e.zone.is_empty() || !taken.zones.contains(&e.zone))
                .copied()
                .collect();
            if !new_zone.is_empty() {
                pool = new_zone;
            }
            // Vetted providers first, by proven bytes (capped by claimed room) × credit;
            // unvetted ones evenly.
            let any_vetted = pool.iter().any(|(_, _, v)| *v);
            if any_vetted {
                pool.retain(|(_, _, v)| *v);
            }
            let weight = |n: &NodeId, e: &Entry| match any_vetted {
                true => {
                    let s = self.standing(n);
                    let proven = s.proven.saturating_add(PROVEN_FLOOR).min(e.free());
                    proven as f64 * f64::from(s.credit) / 1000.0
                }
                false => 1.0,
            };
            let pool: Vec<(&NodeId, &Entry)> = pool.iter().map(|(n, e, _)| (*n, *e)).collect();
            let Some((node, entry)) = pick_weighted(&mut rng, &pool, weight) else {
                return Err(NetError::NoCapacity(format!(
                    "only {} live providers in distinct networks and operators have room for \
                     this segment's {} pieces (besides the {} that already hold some of its \
                     pieces)",
                    chosen.len(),
                    pieces.len(),
                    holders.len()
                )));
            };
            let vetted = self.vetted(node, entry);
            newcomers += u64::from(!vetted);
            taken.add(node, entry, vetted);
            chosen.push(*node);
        }
        Ok(Draw {
            chosen,
            established,
            newcomers,
        })
    }
}

/// The providers one draw chose, piece by piece.
struct Draw {
    chosen: Vec<NodeId>,
    /// Whether enough vetted providers could take the segment.
    established: bool,
    /// How many of the chosen are unvetted.
    newcomers: u64,
}

/// What a segment's pieces already use: providers, operators, networks, zones.
#[derive(Default, Clone)]
struct Taken {
    nodes: HashSet<NodeId>,
    operators: HashSet<NodeId>,
    networks: HashSet<String>,
    zones: HashSet<String>,
    unvetted: usize,
}

impl Taken {
    fn allows(&self, node: &NodeId, e: &Entry) -> bool {
        !self.nodes.contains(node)
            && e.operator.is_none_or(|o| !self.operators.contains(&o))
            && e.network
                .as_ref()
                .is_none_or(|n| !self.networks.contains(n))
    }

    fn add(&mut self, node: &NodeId, e: &Entry, vetted: bool) {
        self.nodes.insert(*node);
        self.operators.extend(e.operator);
        self.networks.extend(e.network.clone());
        if !e.zone.is_empty() {
            self.zones.insert(e.zone.clone());
        }
        self.unvetted += usize::from(!vetted);
    }
}

/// Picks one entry with probability proportional to `weight` (uniform if all are zero).
fn pick_weighted<'a>(
    rng: &mut StdRng,
    pool: &[(&'a NodeId, &'a Entry)],
    weight: impl Fn(&NodeId, &Entry) -> f64,
) -> Option<(&'a NodeId, &'a Entry)> {
    if pool.is_empty() {
        return None;
    }
    // Stable order, so a seed replays to the same choice whatever the map's iteration order.
    let mut pool = pool.to_vec();
    pool.sort_by_key(|(n, _)| **n);
    let total: f64 = pool.iter().map(|(n, e)| weight(n, e)).sum();
    if total <= 0.0 {
        return Some(pool[rng.random_range(0..pool.len())]);
    }
    let mut x = rng.random::<f64>() * total;
    for &(node, entry) in &pool {
        x -= weight(node, entry);
        if x < 0.0 {
            return Some((node, entry));
        }
    }
    pool.last().copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wwt_net::Identity;
    use wwt_net::types::{OperatorCert, PieceId};

    fn beat(capacity: u64, zone: &str) -> Heartbeat {
        Heartbeat {
            address: "mem://p".into(),
            zone: zone.into(),
            capacity,
            used: 0,
            pieces: 0,
            index: false,
            operator: None,
        }
    }

    fn specs(n: u32, size: u64) -> Vec<PieceSpec> {
        (0..n)
            .map(|index| PieceSpec {
                index,
                piece: PieceId([index as u8; 32]),
                size,
            })
            .collect()
    }

    fn registry(liveness_ms: u64) -> Registry {
        Registry::new(liveness_ms, AdmissionConfig::default())
    }

    fn seed(s: u32) -> [u8; 32] {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&s.to_le_bytes());
        seed
    }

    #[test]
    fn index_providers_are_listed_as_such_and_capacity_zero_gets_no_pieces() {
        let mut reg = registry(1000);
        for i in 0..4u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 20, ""), 10_000)
                .unwrap();
        }
        let index_only = Heartbeat {
            index: true,
            ..beat(0, "")
        };
        reg.heartbeat(NodeId([9; 32]), index_only, 10_000).unwrap();
        let roles: Vec<(NodeId, bool)> = reg
            .records(10_000)
            .iter()
            .map(|r| (r.node, r.index))
            .collect();
        assert!(roles.contains(&(NodeId([9; 32]), true)));
        assert!(roles.contains(&(NodeId([0; 32]), false)));
        for s in 0..50 {
            let placed = reg
                .place(
                    &specs(4, 1),
                    &HashSet::new(),
                    &HashSet::new(),
                    seed(s),
                    10_000,
                )
                .unwrap();
            assert!(placed.iter().all(|(n, _)| *n != NodeId([9; 32])));
        }
    }

    #[test]
    fn pieces_go_to_distinct_live_providers_with_room() {
        let mut reg = registry(1000);
        for i in 0..6u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 20, ""), 10_000)
                .unwrap();
        }
        reg.heartbeat(NodeId([6; 32]), beat(1 << 20, ""), 1_000)
            .unwrap(); // dead by 10_000
        reg.heartbeat(NodeId([7; 32]), beat(10, ""), 10_000)
            .unwrap(); // no room
        let placed = reg
            .place(
                &specs(6, 100),
                &HashSet::new(),
                &HashSet::new(),
                [1; 32],
                10_000,
            )
            .unwrap();
        let distinct: HashSet<NodeId> = placed.iter().map(|(n, _)| *n).collect();
        assert_eq!(distinct.len(), 6);
        assert!(!distinct.contains(&NodeId([6; 32])));
        assert!(!distinct.contains(&NodeId([7; 32])));
        let err = reg
            .place(
                &specs(7, 100),
                &HashSet::new(),
                &HashSet::new(),
                [1; 32],
                10_000,
            )
            .unwrap_err();
        assert!(matches!(err, NetError::NoCapacity(_)), "{err}");
        // A provider without credit (condemned by audits) is never chosen.
        reg.set_standing(NodeId([1; 32]), 0, true);
        let placed = reg
            .place(
                &specs(5, 100),
                &HashSet::new(),
                &HashSet::new(),
                [2; 32],
                10_000,
            )
            .unwrap();
        assert!(placed.iter().all(|(n, _)| *n != NodeId([1; 32])));
        assert!(
            reg.place(
                &specs(6, 100),
                &HashSet::new(),
                &HashSet::new(),
                [2; 32],
                10_000
            )
            .is_err()
        );
    }

    #[test]
    fn a_resumed_segment_avoids_providers_holding_its_other_pieces() {
        let mut reg = registry(u64::MAX);
        for i in 0..8u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 30, ""), 0)
                .unwrap();
        }
        let holders: HashSet<NodeId> = (0..4u8).map(|i| NodeId([i; 32])).collect();
        for s in 0..50 {
            let placed = reg
                .place(&specs(2, 1), &holders, &HashSet::new(), seed(s), 0)
                .unwrap();
            assert!(
                placed.iter().all(|(n, _)| !holders.contains(n)),
                "seed {s}: {placed:?}"
            );
        }
        // Two pieces, four providers left: fine; five pieces: refused, naming the holders.
        let err = reg
            .place(&specs(5, 1), &holders, &HashSet::new(), [0; 32], 0)
            .unwrap_err();
        assert!(err.to_string().contains("already hold"), "{err}");
    }

    #[test]
    fn a_new_network_draws_evenly_never_by_claimed_capacity() {
        let mut reg = registry(u64::MAX);
        reg.heartbeat(NodeId([1; 32]), beat(1 << 60, ""), 0)
            .unwrap();
        for i in 2..=6u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 30, ""), 0)
                .unwrap();
        }
        let mut big = 0;
        for s in 0..600 {
            let placed = reg
                .place(&specs(1, 1), &HashSet::new(), &HashSet::new(), seed(s), 0)
                .unwrap();
            big += usize::from(placed[0].0 == NodeId([1; 32]));
        }
        // Six unvetted providers: each takes about a sixth, whatever it claims.
        assert!((60..140).contains(&big), "the 2^60 claim won {big} of 600");
    }

    #[test]
    fn vetted_providers_are_weighted_by_proven_bytes_capped_by_their_claims() {
        let mut reg = registry(u64::MAX);
        // Proven 9 GiB, room for 100 GiB; proven nothing, claims 2^60; proven 50 GiB, room 1.
        reg.heartbeat(NodeId([1; 32]), beat(100 << 30, ""), 0)
            .unwrap();
        reg.heartbeat(NodeId([2; 32]), beat(1 << 60, ""), 0)
            .unwrap();
        reg.heartbeat(NodeId([3; 32]), beat(1 << 30, ""), 0)
            .unwrap();
        for i in 1..=3u8 {
            reg.set_standing(NodeId([i; 32]), 1000, true);
        }
        let proven = HashMap::from([(NodeId([1; 32]), 9 << 30), (NodeId([3; 32]), 50 << 30)]);
        reg.set_proven(&proven);
        let mut wins = [0usize; 4];
        for s in 0..1200 {
            let placed = reg
                .place(&specs(1, 1), &HashSet::new(), &HashSet::new(), seed(s), 0)
                .unwrap();
            wins[usize::from(placed[0].0.0[0])] += 1;
        }
        // Weights 10 : 1 : 1 GiB.
        assert!((900..1100).contains(&wins[1]), "{wins:?}");
        assert!((40..160).contains(&wins[2]), "{wins:?}");
        assert!((40..160).contains(&wins[3]), "{wins:?}");
    }

    #[test]
    fn newcomers_get_a_small_share_and_one_piece_of_a_segment_at_most() {
        let mut reg = registry(u64::MAX);
        for i in 1..=6u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 30, &format!("z{i}")), 0)
                .unwrap();
            reg.set_standing(NodeId([i; 32]), 1000, true);
        }
        for i in 11..=13u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 60, &format!("s{i}")), 0)
                .unwrap();
        }
        let (mut unvetted, mut total) = (0, 0);
        for s in 0..1000 {
            let placed = reg
                .place(&specs(6, 1), &HashSet::new(), &HashSet::new(), seed(s), 0)
                .unwrap();
            let here = placed.iter().filter(|(n, _)| n.0[0] > 10).count();
            assert!(here <= 1, "seed {s}: {here} newcomer pieces in one segment");
            unvetted += here;
            total += placed.len();
        }
        let share = unvetted as f64 / total as f64;
        assert!((0.045..=0.05).contains(&share), "newcomers took {share:.3}");
    }

    #[test]
    fn a_pick_that_blocks_two_others_is_drawn_again() {
        let mut reg = registry(u64::MAX);
        let operator = Identity::from_secret([7; 32]);
        let (v1, v2, v3) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let cert = |node: &NodeId| Some(OperatorCert::issue(&operator, node));
        // v1 shares v2's network and v3's operator: only {v2, v3} holds two pieces.
        for (node, address, operator) in [
            (v1, "http://10.1.2.3:7000", cert(&v1)),
            (v2, "http://10.1.2.4:7000", None),
            (v3, "http://10.7.7.7:7000", cert(&v3)),
        ] {
            let beat = Heartbeat {
                address: address.into(),
                operator,
                ..beat(1 << 30, "")
            };
            reg.heartbeat(node, beat, 0).unwrap();
        }
        for s in 0..100 {
            let placed = reg
                .place(&specs(2, 1), &HashSet::new(), &HashSet::new(), seed(s), 0)
                .unwrap();
            let mut nodes: Vec<NodeId> = placed.iter().map(|(n, _)| *n).collect();
            nodes.sort();
            assert_eq!(nodes, [v2, v3], "seed {s}");
        }
    }

    #[test]
    fn one_piece_per_network_and_per_operator() {
        let mut reg = registry(u64::MAX);
        let operator = Identity::from_secret([7; 32]);
        let at = |address: &str, zone: &str| Heartbeat {
            address: address.into(),
            ..beat(1 << 30, zone)
        };
        // Two in one /24, two in one zone on loopback, two of one operator, three alone.
        reg.heartbeat(NodeId([1; 32]), at("http://10.1.2.3:7000", ""), 0)
            .unwrap();
        reg.heartbeat(NodeId([2; 32]), at("http://10.1.2.99:7000", "x"), 0)
            .unwrap();
        reg.heartbeat(NodeId([3; 32]), at("http://127.0.0.1:7001", "rack"), 0)
            .unwrap();
        reg.heartbeat(NodeId([4; 32]), at("http://127.0.0.1:7002", "rack"), 0)
            .unwrap();
        for i in 5..=6u8 {
            let node = NodeId([i; 32]);
            let beat = Heartbeat {
                operator: Some(OperatorCert::issue(&operator, &node)),
                ..at(&format!("http://10.9.{i}.1:7000"), "")
            };
            reg.heartbeat(node, beat, 0).unwrap();
        }
        for i in 7..=9u8 {
            reg.heartbeat(
                NodeId([i; 32]),
                at(&format!("http://[2001:db8:{i}::1]:7000"), ""),
                0,
            )
            .unwrap();
        }
        let groups = [[1u8, 2], [3, 4], [5, 6]];
        for s in 0..200 {
            let placed = reg
                .place(&specs(6, 1), &HashSet::new(), &HashSet::new(), seed(s), 0)
                .unwrap();
            for g in groups {
                let n = placed.iter().filter(|(n, _)| g.contains(&n.0[0])).count();
                assert_eq!(n, 1, "seed {s}: {n} pieces in group {g:?}");
            }
        }
        assert!(
            reg.place(&specs(7, 1), &HashSet::new(), &HashSet::new(), [0; 32], 0)
                .is_err()
        );
        // A certificate for another node is refused, and a permissioned network admits only
        // providers its operators certified.
        let stolen = Heartbeat {
            operator: Some(OperatorCert::issue(&operator, &NodeId([5; 32]))),
            ..beat(1, "")
        };
        let err = reg.heartbeat(NodeId([8; 32]), stolen, 0).unwrap_err();
        assert!(matches!(err, NetError::BadRequest(_)), "{err}");
        let mut closed = Registry::new(
            u64::MAX,
            AdmissionConfig {
                operators: vec![operator.node_id()],
                permissioned: true,
                ..AdmissionConfig::default()
            },
        );
        let err = closed
            .heartbeat(NodeId([1; 32]), beat(1, ""), 0)
            .unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
        let node = NodeId([5; 32]);
        let certified = Heartbeat {
            operator: Some(OperatorCert::issue(&operator, &node)),
            ..beat(1, "")
        };
        closed.heartbeat(node, certified, 0).unwrap();
        assert!(
            closed.records(0)[0].vetted,
            "certified by the network's operator"
        );
    }

    #[test]
    fn networks_come_from_addresses_or_zones_where_addresses_say_nothing() {
        let n = |a: &str, z: &str| network(a, None, z);
        assert_eq!(
            n("http://192.0.2.7:7000", "a").as_deref(),
            Some("192.0.2.0/24")
        );
        assert_eq!(
            n("https://[2001:db8:1:2::9]:7000", "").as_deref(),
            Some("2001:db8:1::/48")
        );
        assert_eq!(n("http://127.0.0.1:7000", "a").as_deref(), Some("zone a"));
        assert_eq!(n("http://[::1]:7000", "").as_deref(), None);
        assert_eq!(n("mem://provider-3", "b").as_deref(), Some("zone b"));
        assert_eq!(n("http://0.0.0.0:7000", "").as_deref(), None);
        // IPv4 written as IPv6 is the IPv4 network.
        assert_eq!(
            n("http://[::ffff:192.0.2.7]:7000", "").as_deref(),
            Some("192.0.2.0/24")
        );
        // A host name: the network of the address it resolved to, else the zone.
        let resolved = "192.0.2.200".parse().ok();
        assert_eq!(
            network("http://p1.example:7000", resolved, "z").as_deref(),
            Some("192.0.2.0/24")
        );
        assert_eq!(n("http://p1.example:7000", "z").as_deref(), Some("zone z"));
        assert_eq!(host("http://p1.example:7000/x"), "p1.example");
    }
}
