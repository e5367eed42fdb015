//! Range placement: the ring cut into contiguous ranges, one per node, in ring order.
//!
//! Keeps ranges contiguous, so a tenant's range (2^32 positions) lands on one node and a
//! range scan touches few nodes. Balance is explicit, not automatic:
//!
//! - **join**: the range with the most ring per unit weight is split; the new node takes
//!   its upper part, in proportion to the two weights (moves part of one range only);
//! - **leave**: the leaver's range goes to the neighbour (before or after) with less ring
//!   per unit weight;
//! - **reweight**: the node's range grows into (or shrinks back to) its neighbours' until
//!   it is its weight's share of the ring, half on each side (moves only what the weight
//!   change requires, to or from that node, and leaves the neighbours lighter or heavier);
//! - [`RangePlacement::rebalance`]: every boundary is recomputed so each range is
//!   proportional to its node's weight, keeping the order of the nodes (balances, but
//!   moves what the boundary shifts cross: about 40 % of the keys after a 1 → 2 reweight
//!   of the first of 10 nodes);
//! - [`RangePlacement::set_boundary`] and [`RangePlacement::split`] adjust by hand.
//!
//! It owns the boundary list; the shard map's own ranges are [`crate::shard_map`]'s.

use crate::error::{Error, Result};
use crate::node::{Members, NodeSpec};

use super::Placement;

const RING: u128 = 1 << 64;

/// Contiguous ranges of the ring, one per node.
#[derive(Debug, Clone, Default)]
pub struct RangePlacement {
    members: Members,
    /// Start of each range, strictly growing from 0; range `i` ends where `i + 1` starts
    /// (the last at 2^64). Kept apart from `owners` so lookups search a dense `u64` list.
    starts: Vec<u64>,
    /// Node index of each range.
    owners: Vec<u32>,
}

impl RangePlacement {
    pub fn new() -> Self {
        Self::default()
    }

    /// `(start, end, node id)` of every range in ring order; `end` 2^64 as `None`.
    pub fn ranges(&self) -> Vec<(u64, Option<u64>, &str)> {
        (0..self.starts.len())
            .map(|i| {
                let id = self.members.nodes()[self.owners[i] as usize].id.as_str();
                (self.starts[i], self.starts.get(i + 1).copied(), id)
            })
            .collect()
    }

    fn width(&self, i: usize) -> u128 {
        let end = self.starts.get(i + 1).map_or(RING, |&e| e as u128);
        end - self.starts[i] as u128
    }

    fn weight_of_range(&self, i: usize) -> f64 {
        self.members.nodes()[self.owners[i] as usize].weight
    }

    /// Move the start of range `index` (1..len) to `at`; it must stay strictly between the
    /// starts of its neighbours.
    pub fn set_boundary(&mut self, index: usize, at: u64) -> Result<()> {
        let ok = index > 0
            && index < self.starts.len()
            && at > self.starts[index - 1]
            && self.starts.get(index + 1).is_none_or(|&next| at < next);
        if !ok {
            return Err(Error::InvalidBoundary { index, at });
        }
        self.starts[index] = at;
        Ok(())
    }

    /// Split the range holding `at` at `at`; `node` (a member) takes `[at, end)`.
    pub fn split(&mut self, at: u64, node: &str) -> Result<()> {
        let owner = self.members.require(node)? as u32;
        let i = self.range_index(at).ok_or(Error::NoNodes)?;
        if self.starts[i] == at {
            return Err(Error::InvalidBoundary { index: i, at });
        }
        self.starts.insert(i + 1, at);
        self.owners.insert(i + 1, owner);
        Ok(())
    }

    /// Recompute every boundary so each range's share of the ring is its node's share of
    /// the total weight, keeping the ranges' order.
    pub fn rebalance(&mut self) {
        if self.starts.is_empty() {
            return;
        }
        let weights: Vec<f64> = (0..self.starts.len())
            .map(|i| self.weight_of_range(i))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        for (i, w) in weights.iter().enumerate() {
            // f64 has 53 bits: boundaries are exact to about 2^-53 of the ring.
            self.starts[i] = ((acc / total) * RING as f64).min(u64::MAX as f64) as u64;
            acc += w;
        }
        self.starts[0] = 0;
        // Keep them strictly growing even for extreme weight ratios.
        for i in 1..self.starts.len() {
            if self.starts[i] <= self.starts[i - 1] {
                self.starts[i] = self.starts[i - 1].saturating_add(1);
            }
        }
    }

    fn range_index(&self, position: u64) -> Option<usize> {
        self.starts
            .partition_point(|&s| s <= position)
            .checked_sub(1)
    }
}

impl Placement for RangePlacement {
    fn strategy(&self) -> &'static str {
        "range"
    }

    fn vnodes(&self) -> Option<usize> {
        None
    }

    fn members(&self) -> &Members {
        &self.members
    }

    fn join(&mut self, node: NodeSpec) -> Result<()> {
        let new_weight = node.weight;
        let index = self.members.add(node)? as u32;
        if self.starts.is_empty() {
            self.starts.push(0);
            self.owners.push(index);
            return Ok(());
        }
        // The range with the most ring per unit of weight, first one on ties.
        let mut best = 0;
        let mut best_load = 0.0;
        for i in 0..self.starts.len() {
            let load = self.width(i) as f64 / self.weight_of_range(i);
            if load > best_load {
                best = i;
                best_load = load;
            }
        }
        let width = self.width(best);
        if width < 2 {
            // Nothing left to split; the node owns no range until a rebalance.
            self.starts.push(u64::MAX);
            self.owners.push(index);
            self.rebalance();
            return Ok(());
        }
        let keep = self.weight_of_range(best) / (self.weight_of_range(best) + new_weight);
        let cut = ((width as f64 * keep) as u128).clamp(1, width - 1);
        let at = (self.starts[best] as u128 + cut) as u64;
        self.starts.insert(best + 1, at);
        self.owners.insert(best + 1, index);
        Ok(())
    }

    fn leave(&mut self, node: &str) -> Result<()> {
        let index = self.members.require(node)?;
        // Each of its ranges goes to the lighter neighbour.
        while let Some(i) = self.owners.iter().position(|&o| o as usize == index) {
            if self.starts.len() == 1 {
                self.starts.clear();
                self.owners.clear();
                break;
            }
            let load = |j: usize| self.width(j) as f64 / self.weight_of_range(j);
            let to_prev = match (i.checked_sub(1), i + 1 < self.starts.len()) {
                (Some(p), true) => load(p) <= load(i + 1),
                (Some(_), false) => true,
                (None, _) => false,
            };
            if to_prev {
                // The previous range grows to the end of range i.
                self.starts.remove(i);
                self.owners.remove(i);
            } else {
                // The next range grows down to the start of range i.
                self.starts.remove(i + 1);
                self.owners.remove(i);
            }
        }
        let (_, renumbered) = self.members.swap_remove(index);
        if let Some((old, new)) = renumbered {
            for o in &mut self.owners {
                if *o as usize == old {
                    *o = new as u32;
                }
            }
        }
        Ok(())
    }

    fn reweight(&mut self, node: &str, weight: f64) -> Result<()> {
        let index = self.members.require(node)?;
        self.members.set_weight(index, weight)?;
        let Some(i) = self.owners.iter().position(|&o| o as usize == index) else {
            return Ok(());
        };
        let target = (RING as f64 * weight / self.members.total_weight()) as u128;
        let width = self.width(i);
        let has_prev = i > 0;
        let has_next = i + 1 < self.starts.len();
        if target > width {
            // Take what is missing from the neighbours, half each where both exist, each
            // keeping at least one position.
            let need = target - width;
            let prev_room = if has_prev { self.width(i - 1) - 1 } else { 0 };
            let next_room = if has_next { self.width(i + 1) - 1 } else { 0 };
            let half = if has_prev && has_next { need / 2 } else { need };
            let from_prev = half.min(prev_room);
            let from_next = (need - from_prev).min(next_room);
            let from_prev = (need - from_next).min(prev_room);
            self.starts[i] -= from_prev as u64;
            if has_next {
                self.starts[i + 1] += from_next as u64;
            }
        } else {
            // Hand the surplus to the neighbours, half each where both exist, keeping at
            // least one position.
            let give = (width - target).min(width - 1);
            let to_prev = match (has_prev, has_next) {
                (true, true) => give / 2,
                (true, false) => give,
                _ => 0,
            };
            let to_next = if has_next { give - to_prev } else { 0 };
            self.starts[i] += to_prev as u64;
            if has_next {
                self.starts[i + 1] -= to_next as u64;
            }
        }
        Ok(())
    }

    fn owner_index(&self, position: u64) -> Option<usize> {
        self.range_index(position).map(|i| self.owners[i] as usize)
    }

    fn walk(&self, position: u64) -> Box<dyn Iterator<Item = usize> + '_> {
        let n = self.starts.len();
        let start = self.range_index(position).unwrap_or(0);
        Box::new((0..n).map(move |j| self.owners[(start + j) % n] as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_splits_the_widest_range_and_leave_merges_it_back() {
        let mut p = RangePlacement::new();
        p.join(NodeSpec::new("a")).unwrap();
        p.join(NodeSpec::new("b")).unwrap();
        assert_eq!(
            p.ranges(),
            vec![(0, Some(1 << 63), "a"), (1 << 63, None, "b")]
        );
        p.join(NodeSpec::new("c")).unwrap();
        assert_eq!(p.ranges()[1], (1 << 62, Some(1 << 63), "c"));
        assert_eq!(p.owner(1 << 62), Some("c"));
        assert_eq!(p.owner((1 << 62) - 1), Some("a"));
        p.leave("c").unwrap();
        assert_eq!(
            p.ranges(),
            vec![(0, Some(1 << 63), "a"), (1 << 63, None, "b")]
        );
        assert!(p.set_boundary(1, 0).is_err());
        assert!(p.set_boundary(2, 5).is_err());
        p.set_boundary(1, 10).unwrap();
        assert_eq!(p.owner(9), Some("a"));
        assert_eq!(p.owner(10), Some("b"));
        p.split(20, "a").unwrap();
        assert_eq!(p.owner(20), Some("a"));
        assert!(p.split(20, "b").is_err());
        assert!(p.split(30, "zz").is_err());
    }

    #[test]
    fn reweight_is_local_and_rebalance_is_proportional() {
        let mut p = RangePlacement::new();
        for id in ["a", "b", "c"] {
            p.join(NodeSpec::new(id)).unwrap();
        }
        // Successive joins halve: a [0, 1/4), c [1/4, 1/2), b [1/2, 1).
        let shares = |p: &RangePlacement| -> Vec<(f64, String)> {
            (0..p.starts.len())
                .map(|i| (p.width(i) as f64 / RING as f64, p.ranges()[i].2.to_owned()))
                .collect()
        };
        assert_eq!(shares(&p)[1], (0.25, "c".to_owned()));
        p.rebalance();
        for (share, _) in shares(&p) {
            assert!((share - 1.0 / 3.0).abs() < 1e-12);
        }
        // c (in the middle) to weight 2: it takes 1/12 from each neighbour.
        let before: Vec<u64> = p.starts.clone();
        p.reweight("c", 2.0).unwrap();
        let s = shares(&p);
        assert_eq!(s[1].1, "c");
        for (got, want) in s.iter().map(|x| x.0).zip([0.25, 0.5, 0.25]) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        assert!(p.starts[1] < before[1] && p.starts[2] > before[2]);
        // And back: the neighbours get it back.
        p.reweight("c", 1.0).unwrap();
        for (share, _) in shares(&p) {
            assert!((share - 1.0 / 3.0).abs() < 1e-12);
        }
        // The first range has no left neighbour: it grows to the right only.
        p.reweight("a", 2.0).unwrap();
        assert_eq!(p.starts[0], 0);
        assert!((shares(&p)[0].0 - 0.5).abs() < 1e-12);
        assert!(RangePlacement::new().reweight("a", 1.0).is_err());
        RangePlacement::new().rebalance();
    }
}
