//! (Weighted) consistent hashing with virtual nodes.
//!
//! Node `n` of weight `w` places `max(1, round(V × w))` virtual nodes on the ring; virtual
//! node `i` sits at [`vnode_position`]`(n, i)` = XXH3-64 of `"{n}#{i}"` (the ring's own
//! hash, [`hektor_topics::ring::hash`]), so every process and every version computes the
//! same ring from the same members. A position belongs to the first virtual node at or
//! after it, clockwise (wrapping past 2^64 to the first one).
//!
//! The ring is a pure function of the member set (ids and weights), not of the order of
//! joins. Hence the movement property: a join only adds points, so a position can only
//! move *to* the new node; a leave only removes the leaver's points, so only its positions
//! move; a reweight adds or removes points at the *tail* of that node's list (indices
//! `old..new` or `new..old`), so positions only move to (or away from) that node. The cost
//! is balance: a node's share is the sum of V random arcs, so its standard deviation is
//! ≈ 1/√V of the mean (≈ 8 % at V = 150); [`crate::placement::BalancedSlots`] does better.
//!
//! Lookups are a binary search over a sorted `Vec<u64>` of points (the benchmark compares
//! it with a `BTreeMap` walk). This module owns the ring and nothing else.

use hektor_topics::ring;

use crate::error::{Error, Result};
use crate::node::{Members, NodeSpec};

use super::{validate_vnodes, Placement};

/// The most virtual nodes one node may place (`V × weight`).
pub const MAX_VNODES_PER_NODE: usize = 1 << 20;

/// The ring position of virtual node `i` of `node`: XXH3-64 (seed 0) of `"{node}#{i}"`.
pub fn vnode_position(node: &str, i: usize) -> u64 {
    ring::hash(&format!("{node}#{i}"))
}

/// Weighted consistent hashing; see the module doc.
#[derive(Debug, Clone)]
pub struct ConsistentHash {
    members: Members,
    vnodes: usize,
    /// Positions of each member's virtual nodes, by member index, in vnode order.
    positions: Vec<Vec<u64>>,
    /// Every virtual node's position, sorted (ties by node id).
    points: Vec<u64>,
    /// Node index of each point.
    owners: Vec<u32>,
}

impl ConsistentHash {
    /// An empty ring with `vnodes` virtual nodes per unit weight (`1..=MAX_VNODES`).
    pub fn new(vnodes: usize) -> Result<Self> {
        validate_vnodes(vnodes)?;
        Ok(ConsistentHash {
            members: Members::default(),
            vnodes,
            positions: Vec::new(),
            points: Vec::new(),
            owners: Vec::new(),
        })
    }

    /// How many virtual nodes a node of this weight places.
    pub fn vnode_count(&self, weight: f64) -> usize {
        ((self.vnodes as f64 * weight).round() as usize).max(1)
    }

    fn checked_count(&self, node: &str, weight: f64) -> Result<usize> {
        let count = self.vnode_count(weight);
        if count > MAX_VNODES_PER_NODE {
            return Err(Error::InvalidWeight {
                node: node.to_owned(),
                weight,
                max: (MAX_VNODES_PER_NODE / self.vnodes) as f64,
            });
        }
        Ok(count)
    }

    /// Every virtual node as `(position, member index)`, in ring order.
    pub fn ring(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.points
            .iter()
            .zip(&self.owners)
            .map(|(&p, &o)| (p, o as usize))
    }

    fn rebuild(&mut self) {
        let mut all: Vec<(u64, u32)> =
            Vec::with_capacity(self.positions.iter().map(Vec::len).sum());
        for (node, ps) in self.positions.iter().enumerate() {
            all.extend(ps.iter().map(|&p| (p, node as u32)));
        }
        let nodes = self.members.nodes();
        all.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| nodes[a.1 as usize].id.cmp(&nodes[b.1 as usize].id))
        });
        self.points = all.iter().map(|e| e.0).collect();
        self.owners = all.iter().map(|e| e.1).collect();
    }

    fn point_index(&self, position: u64) -> usize {
        let i = self.points.partition_point(|&p| p < position);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }
}

impl Placement for ConsistentHash {
    fn strategy(&self) -> &'static str {
        "consistent_hash"
    }

    fn vnodes(&self) -> Option<usize> {
        Some(self.vnodes)
    }

    fn members(&self) -> &Members {
        &self.members
    }

    fn join(&mut self, node: NodeSpec) -> Result<()> {
        node.validate()?;
        let count = self.checked_count(&node.id, node.weight)?;
        let ps = (0..count).map(|i| vnode_position(&node.id, i)).collect();
        self.members.add(node)?;
        self.positions.push(ps);
        self.rebuild();
        Ok(())
    }

    fn leave(&mut self, node: &str) -> Result<()> {
        let index = self.members.require(node)?;
        self.members.swap_remove(index);
        self.positions.swap_remove(index);
        self.rebuild();
        Ok(())
    }

    fn reweight(&mut self, node: &str, weight: f64) -> Result<()> {
        let index = self.members.require(node)?;
        crate::node::validate_weight(node, weight)?;
        let count = self.checked_count(node, weight)?;
        self.members.set_weight(index, weight)?;
        let ps = &mut self.positions[index];
        if count < ps.len() {
            ps.truncate(count);
        } else {
            let have = ps.len();
            ps.extend((have..count).map(|i| vnode_position(node, i)));
        }
        self.rebuild();
        Ok(())
    }

    fn owner_index(&self, position: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.owners[self.point_index(position)] as usize)
    }

    fn walk(&self, position: u64) -> Box<dyn Iterator<Item = usize> + '_> {
        let n = self.points.len();
        let start = if n == 0 {
            0
        } else {
            self.point_index(position)
        };
        Box::new((0..n).map(move |j| self.owners[(start + j) % n] as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vnode positions. Cross-checked with the Python binding of the reference C
    /// implementation (`xxhash` 4.1.0: `xxhash.xxh3_64_intdigest(b"node-a#0")`), which
    /// printed exactly these numbers. If this fails, every consistent-hash ring has moved
    /// and every deployed node would disagree about ownership: do not "fix" the numbers.
    #[test]
    fn vnode_positions_are_pinned() {
        assert_eq!(vnode_position("node-a", 0), GOLDEN[0]);
        assert_eq!(vnode_position("node-a", 1), GOLDEN[1]);
        assert_eq!(vnode_position("node-b", 149), GOLDEN[2]);
        assert_eq!(vnode_position("10.0.0.7:7700", 42), GOLDEN[3]);
    }

    const GOLDEN: [u64; 4] = [
        4_815_193_572_393_157_671,
        17_319_960_686_457_127_630,
        99_411_158_398_809_915,
        18_080_402_416_585_056_008,
    ];

    #[test]
    fn the_ring_does_not_depend_on_join_order() {
        let ids = ["a", "b", "c", "d"];
        let mut x = ConsistentHash::new(20).unwrap();
        let mut y = ConsistentHash::new(20).unwrap();
        for id in ids {
            x.join(NodeSpec::new(id)).unwrap();
        }
        for id in ids.iter().rev() {
            y.join(NodeSpec::new(*id)).unwrap();
        }
        let rx: Vec<(u64, &str)> = x
            .ring()
            .map(|(p, i)| (p, x.members().nodes()[i].id.as_str()))
            .collect();
        let ry: Vec<(u64, &str)> = y
            .ring()
            .map(|(p, i)| (p, y.members().nodes()[i].id.as_str()))
            .collect();
        assert_eq!(rx, ry);
        assert_eq!(rx.len(), 80);
    }

    #[test]
    fn positions_belong_to_the_next_vnode_clockwise() {
        let mut c = ConsistentHash::new(3).unwrap();
        c.join(NodeSpec::new("a")).unwrap();
        c.join(NodeSpec::new("b")).unwrap();
        let ring: Vec<(u64, usize)> = c.ring().collect();
        for w in ring.windows(2) {
            assert_eq!(c.owner_index(w[0].0), Some(w[0].1));
            assert_eq!(c.owner_index(w[0].0 + 1), Some(w[1].1));
        }
        let (last, first) = (ring[ring.len() - 1], ring[0]);
        assert_eq!(c.owner_index(last.0.wrapping_add(1)), Some(first.1));
        assert_eq!(c.owner_index(0), Some(first.1));
        assert!(ConsistentHash::new(0).is_err());
        assert!(ConsistentHash::new(crate::placement::MAX_VNODES + 1).is_err());
    }
}
