//! Rendezvous (highest random weight) hashing: which of several trackers keep a segment.
//!
//! Every node ranks the trackers by `BLAKE3(tracker id ‖ key)` and picks the highest, so all
//! agree without coordination, and adding or removing a tracker moves only its own share.

use crate::types::NodeId;

/// The nodes ordered by preference for `key` (first = responsible).
pub fn rank<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a NodeId>) -> Vec<NodeId> {
    let mut scored: Vec<([u8; 32], NodeId)> = nodes
        .into_iter()
        .map(|node| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&node.0);
            hasher.update(key);
            (*hasher.finalize().as_bytes(), *node)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, node)| node).collect()
}

/// How many trackers keep each segment's map entry and audit state.
pub const TRACKERS_PER_SEGMENT: usize = 2;

/// The trackers that keep `key`'s segment: the first [`TRACKERS_PER_SEGMENT`] by rank (the
/// first audits it, the second takes over when the first is gone).
pub fn pair<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a NodeId>) -> Vec<NodeId> {
    let mut ranked = rank(key, nodes);
    ranked.truncate(TRACKERS_PER_SEGMENT);
    ranked
}

/// The node responsible for `key`, if there is any node.
pub fn responsible<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a NodeId>) -> Option<NodeId> {
    rank(key, nodes).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_balanced_and_stable_when_a_node_leaves() {
        let nodes: Vec<NodeId> = (0..4u8).map(|i| NodeId([i; 32])).collect();
        let mut counts = [0usize; 4];
        let mut owner_before = Vec::new();
        for k in 0..4000u32 {
            let owner = responsible(&k.to_le_bytes(), &nodes);
            let i = nodes.iter().position(|n| Some(*n) == owner).unwrap_or(0);
            counts[i] += 1;
            owner_before.push(owner);
        }
        for c in counts {
            assert!((800..1200).contains(&c), "unbalanced: {counts:?}");
        }
        let remaining = &nodes[..3];
        for (k, before) in owner_before.iter().enumerate() {
            if *before != Some(nodes[3]) {
                let after = responsible(&(k as u32).to_le_bytes(), remaining);
                assert_eq!(after, *before, "key {k} moved though its owner stayed");
            }
        }
    }
}
