//! Cluster members as placement sees them: a node id, a capacity weight, an optional
//! failure domain (zone or rack) and the storage tiers it may hold, and the member list
//! every strategy keeps.
//!
//! **Tier roles.** A data node started with one or more of the roles `hot`, `warm`,
//! `cold` ([`tier_of_role`]) holds only shards of those tiers ([`NodeSpec::may_hold`]);
//! a `cold` node also holds `archive` shards (it archives and restores them). A data node
//! with no tier role holds any tier, so a cluster without tier roles places as before.
//!
//! This module owns the validation of a node's description, the tier eligibility rule
//! and the index bookkeeping of the member list. It does not decide where anything goes
//! (that is [`crate::placement`] and [`crate::rules`]) and does not read heartbeats from
//! the log (it only converts one).

use hektor_topics::record::{NodeHeartbeat, Tier};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest capacity weight a node may declare (a standard node is 1.0). It bounds the
/// virtual nodes of weighted strategies: `vnodes × weight` per node.
pub const MAX_WEIGHT: f64 = 1000.0;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node id; also the name its virtual nodes are hashed from.
    pub id: String,
    /// Relative capacity (1.0 = a standard node): weighted strategies give it a share of
    /// the ring proportional to this.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// The failure domain (zone, rack): replicas prefer distinct ones. A node without one
    /// is its own domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The tiers it may hold (from its tier roles); empty: any tier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
}

/// The tier a role names: `hot`, `warm` and `cold` are tier roles; any other role is not.
pub fn tier_of_role(role: &str) -> Option<Tier> {
    match role {
        "hot" => Some(Tier::Hot),
        "warm" => Some(Tier::Warm),
        "cold" => Some(Tier::Cold),
        _ => None,
    }
}

fn default_weight() -> f64 {
    1.0
}

impl NodeSpec {
    /// A node of weight 1.0 and no zone.
    pub fn new(id: impl Into<String>) -> Self {
        NodeSpec {
            id: id.into(),
            weight: 1.0,
            zone: None,
            tiers: Vec::new(),
        }
    }

    /// The same node with this weight.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// The same node in this failure domain.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The same node, holding only these tiers (none: any tier).
    pub fn with_tiers(mut self, tiers: impl IntoIterator<Item = Tier>) -> Self {
        self.tiers = tiers.into_iter().collect();
        self.tiers.sort_unstable();
        self.tiers.dedup();
        self
    }

    /// A node from its heartbeat: capacity becomes the weight, region the failure domain,
    /// its tier roles the tiers it may hold.
    pub fn from_heartbeat(hb: &NodeHeartbeat) -> Self {
        NodeSpec {
            id: hb.node.clone(),
            weight: hb.capacity,
            zone: (!hb.region.is_empty()).then(|| hb.region.clone()),
            tiers: Vec::new(),
        }
        .with_tiers(hb.roles.iter().filter_map(|r| tier_of_role(r)))
    }

    /// The failure domain replicas are spread over: the zone, or the node itself.
    pub fn domain(&self) -> &str {
        self.zone.as_deref().unwrap_or(&self.id)
    }

    /// Whether this node may hold a shard of `tier`: a node without tier roles holds any;
    /// one with tier roles holds those, and a `cold` node also the archive tier.
    pub fn may_hold(&self, tier: Tier) -> bool {
        self.tiers.is_empty()
            || self.tiers.contains(&tier)
            || (tier == Tier::Archive && self.tiers.contains(&Tier::Cold))
    }

    /// Every tier this node may hold ([`NodeSpec::may_hold`]), hottest first: what a
    /// reader without this crate (the tiering policy of `hektor-dataflow`) is given, so
    /// the rule stays here.
    pub fn tiers_held(&self) -> Vec<Tier> {
        [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive]
            .into_iter()
            .filter(|t| self.may_hold(*t))
            .collect()
    }

    /// Check the id and the weight.
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        validate_weight(&self.id, self.weight)
    }
}

pub(crate) fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().any(char::is_control) {
        return Err(Error::InvalidNodeId(id.to_owned()));
    }
    Ok(())
}

pub(crate) fn validate_weight(node: &str, weight: f64) -> Result<()> {
    if weight.is_finite() && weight > 0.0 && weight <= MAX_WEIGHT {
        Ok(())
    } else {
        Err(Error::InvalidWeight {
            node: node.to_owned(),
            weight,
            max: MAX_WEIGHT,
        })
    }
}

/// The member list of a strategy: nodes by a dense index (`u32`, what lookup tables
/// store), and the number of distinct failure domains.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Members {
    nodes: Vec<NodeSpec>,
}

impl Members {
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&NodeSpec> {
        self.nodes.get(index)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Like [`Members::index_of`], as an error naming the node.
    pub fn require(&self, id: &str) -> Result<usize> {
        self.index_of(id)
            .ok_or_else(|| Error::UnknownNode(id.to_owned()))
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> f64 {
        self.nodes.iter().map(|n| n.weight).sum()
    }

    /// Number of distinct failure domains.
    pub fn domains(&self) -> usize {
        let mut d: Vec<&str> = self.nodes.iter().map(NodeSpec::domain).collect();
        d.sort_unstable();
        d.dedup();
        d.len()
    }

    /// Validate and append a node; returns its index.
    pub fn add(&mut self, node: NodeSpec) -> Result<usize> {
        node.validate()?;
        if self.index_of(&node.id).is_some() {
            return Err(Error::DuplicateNode(node.id));
        }
        if self.nodes.len() >= u32::MAX as usize {
            return Err(Error::InvalidNodeId(node.id));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Remove the node at `index` by swapping the last node into its place. Returns the
    /// removed node and, when another node changed index, `(old_index, new_index)` so the
    /// caller can renumber its tables.
    pub fn swap_remove(&mut self, index: usize) -> (NodeSpec, Option<(usize, usize)>) {
        let last = self.nodes.len() - 1;
        let removed = self.nodes.swap_remove(index);
        (removed, (index != last).then_some((last, index)))
    }

    /// Validate and set a node's weight; returns the old one.
    pub fn set_weight(&mut self, index: usize, weight: f64) -> Result<f64> {
        let node = &mut self.nodes[index];
        validate_weight(&node.id, weight)?;
        Ok(std::mem::replace(&mut node.weight, weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_nodes_are_refused() {
        let mut m = Members::default();
        assert!(matches!(
            m.add(NodeSpec::new("")),
            Err(Error::InvalidNodeId(_))
        ));
        assert!(matches!(
            m.add(NodeSpec::new("a\n")),
            Err(Error::InvalidNodeId(_))
        ));
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_WEIGHT * 2.0] {
            assert!(matches!(
                m.add(NodeSpec::new("a").with_weight(w)),
                Err(Error::InvalidWeight { .. })
            ));
        }
        m.add(NodeSpec::new("a")).unwrap();
        assert!(matches!(
            m.add(NodeSpec::new("a")),
            Err(Error::DuplicateNode(_))
        ));
        assert!(m.set_weight(0, 0.0).is_err());
        assert_eq!(m.nodes()[0].weight, 1.0);
    }

    #[test]
    fn tier_roles_limit_the_tiers_a_node_may_hold() {
        let any = NodeSpec::new("a");
        for tier in [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive] {
            assert!(any.may_hold(tier), "{tier:?}");
        }
        let hb = NodeHeartbeat {
            node: "c".into(),
            address: "127.0.0.1:7700".into(),
            region: String::new(),
            roles: vec!["data".into(), "cold".into(), "gpu".into(), "warm".into()],
            capacity: 1.0,
            memory_bytes: 0,
            time_ms: 0,
            leaving: false,
            shards: Vec::new(),
        };
        let cold = NodeSpec::from_heartbeat(&hb);
        assert_eq!(cold.tiers, [Tier::Warm, Tier::Cold]);
        assert!(!cold.may_hold(Tier::Hot));
        assert!(cold.may_hold(Tier::Warm) && cold.may_hold(Tier::Cold));
        assert!(
            cold.may_hold(Tier::Archive),
            "cold nodes archive and restore"
        );
        let hot = NodeSpec::new("h").with_tiers([Tier::Hot]);
        assert!(hot.may_hold(Tier::Hot));
        assert!(!hot.may_hold(Tier::Warm) && !hot.may_hold(Tier::Cold));
        assert!(!hot.may_hold(Tier::Archive));
        assert_eq!(
            any.tiers_held(),
            [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive]
        );
        assert_eq!(cold.tiers_held(), [Tier::Warm, Tier::Cold, Tier::Archive]);
        assert_eq!(hot.tiers_held(), [Tier::Hot]);
        assert_eq!(tier_of_role("gpu"), None);
        assert_eq!(tier_of_role("data"), None);
    }

    #[test]
    fn domains_count_zones_and_zoneless_nodes() {
        let mut m = Members::default();
        m.add(NodeSpec::new("a").with_zone("z1")).unwrap();
        m.add(NodeSpec::new("b").with_zone("z1")).unwrap();
        m.add(NodeSpec::new("c")).unwrap();
        assert_eq!(m.domains(), 2);
        let (gone, moved) = m.swap_remove(0);
        assert_eq!(gone.id, "a");
        assert_eq!(moved, Some((2, 0)));
        assert_eq!(m.index_of("c"), Some(0));
    }
}
