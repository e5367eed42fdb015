//! hektor-cluster: which node holds which part of the ring.
//!
//! This crate owns two things, both pure data structures with no I/O:
//!
//! - [`placement`]: strategies mapping a ring position (see [`hektor_topics::ring`]) to the
//!   node that owns it and to R replica nodes in distinct failure domains: hash mod N,
//!   contiguous ranges, (weighted) consistent hashing with virtual nodes, and balanced
//!   slots. Membership changes (join, leave, reweight) and the keys they move.
//! - [`shard_map`]: a collection's shard map, ring ranges with their replica nodes and
//!   tier at an epoch, changed only by [`hektor_topics::record::PlanAction`]s, and the
//!   size-triggered splits that produce them.
//!
//! - [`cost`]: what the stored bytes cost per month by tier, at the seed's prices.
//!
//! It does not read or write the log, watch heartbeats or move data: the plan topic's
//! writer and the shard hosts do that with these types.

pub mod cost;
pub mod error;
pub mod node;
pub mod placement;
pub mod rules;
pub mod shard_map;

pub use error::{Error, Result};
pub use node::NodeSpec;
pub use placement::{Placement, Strategy};
pub use shard_map::{Lease, Shard, ShardMap, ShardSize, Target};
