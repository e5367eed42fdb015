//! Placement: which node owns a ring position, and which R nodes hold its replicas.
//!
//! This module owns the [`Placement`] trait, the replica choice shared by every strategy
//! (R distinct nodes, distinct failure domains first) and [`Strategy`], the serde
//! description a placement is built from. The strategies live in their own modules:
//!
//! | strategy | module | join moves | balance |
//! |---|---|---|---|
//! | [`HashMod`] | [`hash_mod`] | ≈ N/(N+1) of keys (almost all) | even |
//! | [`RangePlacement`] | [`range`] | half of one range | manual (split / [`RangePlacement::rebalance`]) |
//! | [`ConsistentHash`] (weighted, V vnodes per unit weight) | [`consistent`] | ≈ 1/(N+1), all to the new node | σ ≈ 1/√V of the mean |
//! | [`BalancedSlots`] | [`balanced`] | ≈ 1/(N+1), all to the new node | within one slot of ideal |
//!
//! It does not own the shard map (ranges with replica lists and an epoch: that is
//! [`crate::shard_map`]) nor membership detection (heartbeats).
//!
//! **Why a trait and not an enum of strategies**: the strategies keep different state (a
//! slot list, range boundaries, a sorted vnode ring, a slot table) and share only their
//! behaviour. A trait lets every property test and the benchmark run the same code over
//! `&mut dyn Placement`, lets a router that knows its strategy call a concrete type with
//! static dispatch, and keeps each strategy's invariants private to its module. The
//! serde-friendly choice of a strategy is [`Strategy`], which builds a `Box<dyn Placement>`.

pub mod balanced;
pub mod consistent;
pub mod hash_mod;
pub mod range;

use serde::{Deserialize, Serialize};

pub use balanced::BalancedSlots;
pub use consistent::ConsistentHash;
pub use hash_mod::HashMod;
pub use range::RangePlacement;

use crate::error::{Error, Result};
use crate::node::{Members, NodeSpec};

/// Default virtual nodes per node (per unit of weight).
pub const DEFAULT_VNODES: usize = 150;

/// The most virtual nodes per node (per unit of weight) a strategy accepts.
pub const MAX_VNODES: usize = 10_000;

pub(crate) fn validate_vnodes(vnodes: usize) -> Result<()> {
    if (1..=MAX_VNODES).contains(&vnodes) {
        Ok(())
    } else {
        Err(Error::InvalidVnodes {
            vnodes,
            max: MAX_VNODES,
        })
    }
}

/// Weighted consistent hashing is [`ConsistentHash`]: every node gets `round(V × weight)`
/// virtual nodes, so with all weights 1.0 it is plain consistent hashing.
pub type WeightedConsistentHash = ConsistentHash;

/// A placement strategy: maps a ring position to the node that owns it, and to the R
/// nodes that hold its replicas, and changes with membership.
///
/// Node indices are positions in [`Placement::members`]; they change when a node leaves,
/// so keep node ids, not indices, across membership changes.
pub trait Placement: Send + Sync + std::fmt::Debug {
    /// The strategy's name, as in [`Strategy`]'s JSON (`hash_mod`, `range`, ...).
    fn strategy(&self) -> &'static str;

    /// Virtual nodes per unit of weight, for strategies that have them.
    fn vnodes(&self) -> Option<usize>;

    /// The members, in index order.
    fn members(&self) -> &Members;

    /// Add a node.
    fn join(&mut self, node: NodeSpec) -> Result<()>;

    /// Remove a node; its positions go to the remaining nodes.
    fn leave(&mut self, node: &str) -> Result<()>;

    /// Change a node's capacity weight.
    fn reweight(&mut self, node: &str, weight: f64) -> Result<()>;

    /// The index of the node that owns `position`; `None` only without members.
    fn owner_index(&self, position: u64) -> Option<usize>;

    /// Node indices in replica-preference order from `position`: the owner first, then
    /// the nodes that follow it (for ring strategies: clockwise). May repeat nodes; it is
    /// finite and ends after one turn of the strategy's table.
    fn walk(&self, position: u64) -> Box<dyn Iterator<Item = usize> + '_>;

    /// The id of the node that owns `position`; `None` only without members.
    fn owner(&self, position: u64) -> Option<&str> {
        let i = self.owner_index(position)?;
        self.members().get(i).map(|n| n.id.as_str())
    }

    /// The indices of the `r` nodes holding replicas of `position`; see
    /// [`Placement::replicas`].
    fn replica_indices(&self, position: u64, r: usize) -> Result<Vec<usize>> {
        choose_replicas(self.members(), self.walk(position), r)
    }

    /// The ids of the `r` distinct nodes holding replicas of `position`, the owner first.
    /// Nodes are taken in [`Placement::walk`] order, skipping a node whose failure domain
    /// is already used while unused domains remain; so replicas lie in `min(r, domains)`
    /// distinct domains. Deterministic: the same members give the same answer.
    fn replicas(&self, position: u64, r: usize) -> Result<Vec<&str>> {
        let members = self.members();
        Ok(self
            .replica_indices(position, r)?
            .into_iter()
            .filter_map(|i| members.get(i).map(|n| n.id.as_str()))
            .collect())
    }
}

/// Pick `r` distinct nodes from `walk` (then, if the walk missed some, the remaining
/// members in index order), preferring unused failure domains.
pub(crate) fn choose_replicas(
    members: &Members,
    walk: impl Iterator<Item = usize>,
    r: usize,
) -> Result<Vec<usize>> {
    let n = members.len();
    if r == 0 {
        return Err(Error::ZeroReplication);
    }
    if n == 0 {
        return Err(Error::NoNodes);
    }
    if r > n {
        return Err(Error::NotEnoughNodes { wanted: r, have: n });
    }
    let want_domains = r.min(members.domains());
    let mut seen = vec![false; n];
    let mut distinct: Vec<usize> = Vec::with_capacity(r);
    let mut picked: Vec<usize> = Vec::with_capacity(r);
    let mut picked_domains: Vec<&str> = Vec::with_capacity(r);
    for i in walk.chain(0..n) {
        if i >= n || seen[i] {
            continue;
        }
        seen[i] = true;
        distinct.push(i);
        let domain = members.nodes()[i].domain();
        if picked.len() < want_domains && !picked_domains.contains(&domain) {
            picked.push(i);
            picked_domains.push(domain);
        }
        if picked.len() == want_domains && distinct.len() >= r {
            break;
        }
    }
    for &i in &distinct {
        if picked.len() == r {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    Ok(picked)
}

/// A placement strategy and its parameters, as written in configuration or a plan record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum Strategy {
    /// `position mod` (slots), see [`HashMod`].
    HashMod,
    /// Contiguous ranges, see [`RangePlacement`].
    Range,
    /// Weighted consistent hashing with `vnodes` virtual nodes per unit weight.
    ConsistentHash { vnodes: usize },
    /// Equal ring slots dealt to nodes by weight, see [`BalancedSlots`].
    BalancedSlots { vnodes: usize },
}

impl Strategy {
    /// Build the strategy with these nodes, joined in the order given. For [`Range`]
    /// the ranges are then rebalanced, so the initial layout is proportional to the
    /// weights (equal ranges for equal weights) rather than the halvings of successive
    /// joins.
    ///
    /// [`Range`]: Strategy::Range
    pub fn build(&self, nodes: impl IntoIterator<Item = NodeSpec>) -> Result<Box<dyn Placement>> {
        fn joined<P: Placement>(mut p: P, nodes: impl IntoIterator<Item = NodeSpec>) -> Result<P> {
            for node in nodes {
                p.join(node)?;
            }
            Ok(p)
        }
        Ok(match *self {
            Strategy::HashMod => Box::new(joined(HashMod::new(), nodes)?),
            Strategy::Range => {
                let mut p = joined(RangePlacement::new(), nodes)?;
                p.rebalance();
                Box::new(p)
            }
            Strategy::ConsistentHash { vnodes } => {
                Box::new(joined(ConsistentHash::new(vnodes)?, nodes)?)
            }
            Strategy::BalancedSlots { vnodes } => {
                Box::new(joined(BalancedSlots::new(vnodes)?, nodes)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(zones: &[&str]) -> Members {
        let mut m = Members::default();
        for (i, z) in zones.iter().enumerate() {
            m.add(NodeSpec::new(format!("n{i}")).with_zone(*z)).unwrap();
        }
        m
    }

    #[test]
    fn replicas_prefer_new_domains_then_fill_in_walk_order() {
        let m = members(&["a", "a", "b", "b", "c"]);
        // Walk 0,1,2,3,4: one per zone first (0, 2, 4), then 1.
        assert_eq!(choose_replicas(&m, 0..5, 3).unwrap(), vec![0, 2, 4]);
        assert_eq!(choose_replicas(&m, 0..5, 4).unwrap(), vec![0, 2, 4, 1]);
        // Walk repeats and misses nodes: still distinct, fallback covers the rest.
        assert_eq!(
            choose_replicas(&m, [1, 1, 0, 1].into_iter(), 3).unwrap(),
            vec![1, 2, 4]
        );
        assert!(matches!(
            choose_replicas(&m, 0..5, 6),
            Err(Error::NotEnoughNodes { wanted: 6, have: 5 })
        ));
        assert!(matches!(
            choose_replicas(&m, 0..5, 0),
            Err(Error::ZeroReplication)
        ));
        assert!(matches!(
            choose_replicas(&Members::default(), 0..0, 1),
            Err(Error::NoNodes)
        ));
    }
}
