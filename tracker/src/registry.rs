//! The provider registry (soft state, rebuilt from heartbeats) and placement.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wwt_net::NetError;
use wwt_net::types::{Heartbeat, NodeId, PieceSpec, ProviderRecord};

/// Credit a provider starts with, per mille; audits move it ([`Registry::set_credit`]).
pub const INITIAL_CREDIT: u32 = 1000;

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
}

impl Entry {
    fn free(&self) -> u64 {
        self.capacity
            .saturating_sub(self.used.saturating_add(self.reserved))
    }
}

/// The providers a tracker knows, by node id.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<NodeId, Entry>,
    /// Credit set by audits, kept across the soft state (a provider may heartbeat later).
    credits: HashMap<NodeId, u32>,
    liveness_timeout_ms: u64,
}

impl Registry {
    /// An empty registry; providers silent for `liveness_timeout_ms` count as dead.
    pub fn new(liveness_timeout_ms: u64) -> Registry {
        Registry {
            entries: HashMap::new(),
            credits: HashMap::new(),
            liveness_timeout_ms,
        }
    }

    /// Sets the credit of `node` (per mille); a provider with credit 0 is never placed on.
    pub fn set_credit(&mut self, node: NodeId, credit: u32) {
        self.credits.insert(node, credit.min(1000));
    }

    /// The credit of `node` (per mille).
    fn credit(&self, node: &NodeId) -> u32 {
        self.credits.get(node).copied().unwrap_or(INITIAL_CREDIT)
    }

    /// Records a heartbeat from `node` at `now_ms` (registering it if new).
    pub fn heartbeat(&mut self, node: NodeId, beat: Heartbeat, now_ms: u64) {
        let entry = self.entries.entry(node).or_insert_with(|| Entry {
            address: String::new(),
            zone: String::new(),
            capacity: 0,
            used: 0,
            pieces: 0,
            index: false,
            last_heartbeat_ms: 0,
            reserved: 0,
        });
        entry.address = beat.address;
        entry.zone = beat.zone;
        entry.capacity = beat.capacity;
        entry.used = beat.used;
        entry.pieces = beat.pieces;
        entry.index = beat.index;
        entry.last_heartbeat_ms = now_ms;
        // The provider's own count now includes whatever was stored under earlier
        // reservations; unused ones are forgotten, as they expire anyway.
        entry.reserved = 0;
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
                credit: self.credit(node),
                last_heartbeat_ms: e.last_heartbeat_ms,
                alive: self.alive(e, now_ms),
                index: e.index,
            })
            .collect();
        records.sort_by_key(|r| r.node);
        records
    }

    /// Chooses one distinct live provider per piece, with credit and room for it, weighted by
    /// free bytes times credit, preferring failure zones not yet used by the segment. Reserves
    /// the bytes.
    ///
    /// `holders` are the providers that already hold pieces of the segment (a resumed upload
    /// or a repair): they are never chosen, so the segment's pieces stay on distinct providers.
    /// Draws come from `seed`, so a placement is reproducible. Fails without reserving
    /// anything when the pieces cannot all be placed.
    pub fn place(
        &mut self,
        pieces: &[PieceSpec],
        holders: &HashSet<NodeId>,
        seed: [u8; 32],
        now_ms: u64,
    ) -> Result<Vec<(NodeId, String)>, NetError> {
        let mut rng = StdRng::from_seed(seed);
        let mut chosen: Vec<NodeId> = Vec::with_capacity(pieces.len());
        let mut zones: HashSet<&str> = HashSet::new();
        for spec in pieces {
            let fits = |node: &NodeId, e: &Entry| {
                self.alive(e, now_ms)
                    && self.credit(node) > 0
                    && !chosen.contains(node)
                    && !holders.contains(node)
                    && e.free() >= spec.size
            };
            let candidates: Vec<(&NodeId, &Entry)> =
                self.entries.iter().filter(|(n, e)| fits(n, e)).collect();
            let new_zone: Vec<(&NodeId, &Entry)> = candidates
                .iter()
                .filter(|(_, e)| e.zone.is_empty() || !zones.contains(e.zone.as_str()))
                .copied()
                .collect();
            let pool = if new_zone.is_empty() {
                candidates
            } else {
                new_zone
            };
            let weight =
                |n: &NodeId, e: &Entry| e.free() as f64 * f64::from(self.credit(n)) / 1000.0;
            let Some((node, entry)) = pick_weighted(&mut rng, &pool, weight) else {
                return Err(NetError::NoCapacity(format!(
                    "only {} live providers have room for this segment's {} pieces \
                     (besides the {} that already hold some of its pieces)",
                    chosen.len(),
                    pieces.len(),
                    holders.len()
                )));
            };
            chosen.push(*node);
            if !entry.zone.is_empty() {
                zones.insert(entry.zone.as_str());
            }
        }
        let mut placed = Vec::with_capacity(chosen.len());
        for (node, spec) in chosen.iter().zip(pieces) {
            if let Some(entry) = self.entries.get_mut(node) {
                entry.reserved = entry.reserved.saturating_add(spec.size);
                placed.push((*node, entry.address.clone()));
            }
        }
        Ok(placed)
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
    use wwt_net::types::PieceId;

    fn beat(capacity: u64, zone: &str) -> Heartbeat {
        Heartbeat {
            address: "mem://p".into(),
            zone: zone.into(),
            capacity,
            used: 0,
            pieces: 0,
            index: false,
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

    #[test]
    fn index_providers_are_listed_as_such_and_capacity_zero_gets_no_pieces() {
        let mut reg = Registry::new(1000);
        for i in 0..4u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 20, ""), 10_000);
        }
        let index_only = Heartbeat {
            index: true,
            ..beat(0, "")
        };
        reg.heartbeat(NodeId([9; 32]), index_only, 10_000);
        let roles: Vec<(NodeId, bool)> = reg
            .records(10_000)
            .iter()
            .map(|r| (r.node, r.index))
            .collect();
        assert!(roles.contains(&(NodeId([9; 32]), true)));
        assert!(roles.contains(&(NodeId([0; 32]), false)));
        for seed in 0..50u8 {
            let placed = reg
                .place(&specs(4, 1), &HashSet::new(), [seed; 32], 10_000)
                .unwrap();
            assert!(placed.iter().all(|(n, _)| *n != NodeId([9; 32])));
        }
    }

    #[test]
    fn pieces_go_to_distinct_live_providers_with_room() {
        let mut reg = Registry::new(1000);
        for i in 0..6u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 20, ""), 10_000);
        }
        reg.heartbeat(NodeId([6; 32]), beat(1 << 20, ""), 1_000); // dead by 10_000
        reg.heartbeat(NodeId([7; 32]), beat(10, ""), 10_000); // no room
        let placed = reg
            .place(&specs(6, 100), &HashSet::new(), [1; 32], 10_000)
            .unwrap();
        let distinct: HashSet<NodeId> = placed.iter().map(|(n, _)| *n).collect();
        assert_eq!(distinct.len(), 6);
        assert!(!distinct.contains(&NodeId([6; 32])));
        assert!(!distinct.contains(&NodeId([7; 32])));
        let err = reg
            .place(&specs(7, 100), &HashSet::new(), [1; 32], 10_000)
            .unwrap_err();
        assert!(matches!(err, NetError::NoCapacity(_)), "{err}");
        // A provider without credit (condemned by audits) is never chosen.
        reg.set_credit(NodeId([1; 32]), 0);
        let placed = reg
            .place(&specs(5, 100), &HashSet::new(), [2; 32], 10_000)
            .unwrap();
        assert!(placed.iter().all(|(n, _)| *n != NodeId([1; 32])));
        assert!(
            reg.place(&specs(6, 100), &HashSet::new(), [2; 32], 10_000)
                .is_err()
        );
    }

    #[test]
    fn a_resumed_segment_avoids_providers_holding_its_other_pieces() {
        let mut reg = Registry::new(u64::MAX);
        for i in 0..8u8 {
            reg.heartbeat(NodeId([i; 32]), beat(1 << 30, ""), 0);
        }
        let holders: HashSet<NodeId> = (0..4u8).map(|i| NodeId([i; 32])).collect();
        for s in 0..50u8 {
            let placed = reg.place(&specs(2, 1), &holders, [s; 32], 0).unwrap();
            assert!(
                placed.iter().all(|(n, _)| !holders.contains(n)),
                "seed {s}: {placed:?}"
            );
        }
        // Two pieces, four providers left: fine; five pieces: refused, naming the holders.
        let err = reg.place(&specs(5, 1), &holders, [0; 32], 0).unwrap_err();
        assert!(err.to_string().contains("already hold"), "{err}");
    }

    #[test]
    fn placement_is_weighted_by_free_space_and_spreads_zones() {
        let mut reg = Registry::new(u64::MAX);
        reg.heartbeat(NodeId([1; 32]), beat(9 << 30, "a"), 0);
        reg.heartbeat(NodeId([2; 32]), beat(1 << 30, "a"), 0);
        reg.heartbeat(NodeId([3; 32]), beat(1 << 30, "b"), 0);
        let mut big = 0;
        for s in 0..400u16 {
            let mut seed = [0u8; 32];
            seed[..2].copy_from_slice(&s.to_le_bytes());
            let placed = reg.place(&specs(1, 1), &HashSet::new(), seed, 0).unwrap();
            big += usize::from(placed[0].0 == NodeId([1; 32]));
        }
        // Free space 9:1:1, so the big provider takes about 9/11 of single pieces.
        assert!(
            (280..370).contains(&big),
            "big provider chosen {big} of 400 times"
        );
        // Two pieces: the second always goes to the other zone.
        for s in 0..50u8 {
            let placed = reg
                .place(&specs(2, 1), &HashSet::new(), [s; 32], 0)
                .unwrap();
            let zone_b = placed.iter().filter(|(n, _)| *n == NodeId([3; 32])).count();
            assert_eq!(zone_b, 1, "seed {s}: {placed:?}");
        }
    }
}
