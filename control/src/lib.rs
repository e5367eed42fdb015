//! hektor-control: the control plane of a hektor cluster, over the same log as the data.
//!
//! - [`membership`]: every node heart-beats on the `hektor.nodes` topic (id, address,
//!   region, roles, capacity, draining or not); every node follows it and knows which
//!   nodes are alive (a heartbeat within `dead_after`), which may take shards, and where
//!   to reach them.
//! - [`plan`]: the plan topic of each collection holds controller leases (key
//!   `lease/<term>/<node>`), its shard maps (key `map/<term>/<node>`, one JSON
//!   [`hektor_cluster::ShardMap`] per epoch), readiness reports of shards being built (key
//!   `ready/<node>/<range>`) and decisions (key = the collection: the kinetic planner's
//!   and operators' [`hektor_topics::record::PlanChange`]s). [`plan::Plans`] follows them
//!   all; a map is accepted only if it was written under the current lease and its epoch
//!   is higher than the one held (fencing: see [`plan`]).
//! - [`controller`]: on the controller node (the alive node with the `controller` role
//!   and the smallest id, holding each collection's lease) a loop turns membership, readiness and decisions into the next
//!   map with [`hektor_cluster::rules::next_map`]; on every node a loop reports the
//!   targets it has caught up with.
//! - [`Routing`]: what routers and hosts follow: the accepted maps and the nodes'
//!   addresses, republished on every change.
//!
//! It does not open shards or answer queries: the indexers' host and the query router
//! follow [`Routing`].

pub mod controller;
pub mod error;
pub mod membership;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use hektor_cluster::ShardMap;

pub use controller::{Control, ControlSettings, ShardFacts};
pub use error::{Error, Result};

/// A node as routers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// `host:port` of its HTTP service.
    pub address: String,
    pub alive: bool,
    pub leaving: bool,
    /// Its roles (`router`, `data`, tier roles, `gpu`, ...), from its heartbeat.
    pub roles: Vec<String>,
    /// The shards its last heartbeat says it holds, with their sizes.
    pub shards: Vec<hektor_topics::record::HeldShard>,
}

/// The cluster as routers and hosts follow it.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// This node's id.
    pub me: String,
    /// The accepted shard map of each collection.
    pub maps: BTreeMap<String, Arc<ShardMap>>,
    pub nodes: BTreeMap<String, NodeInfo>,
}
