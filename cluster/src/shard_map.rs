//! The shard map of one collection: ring ranges that tile the ring, each with its replica
//! nodes and storage tier, at an epoch that only grows.
//!
//! A map changes only by [`PlanAction`]s ([`ShardMap::apply`]): split a shard at a point,
//! merge two adjacent shards, move a replica, set a tier. Each applied action gives a new
//! map at the next epoch and leaves the old one untouched, so a reader can keep serving
//! from epoch `e` while `e + 1` is being built. Every map that exists is valid: the
//! constructor, `apply` and deserialization all check that the shards tile the ring
//! exactly (sorted, no gap, no overlap, none empty) and that each shard has distinct,
//! well-formed replica nodes. Bad actions are errors, never panics.
//!
//! Serialized as JSON, as it goes to the plan topic:
//!
//! ```json
//! {"collection": "docs", "epoch": 3, "shards": [
//!   {"range": {"start": 0, "end": 9223372036854775808}, "replicas": ["n1", "n2"], "tier": "hot"},
//!   {"range": {"start": 9223372036854775808, "end": null}, "replicas": ["n2", "n3"], "tier": "hot"}]}
//! ```
//!
//! It also proposes size-triggered splits ([`ShardMap::split_by_size`]) from per-shard
//! sizes and median positions measured elsewhere. It does not measure sizes, choose
//! replica nodes for new shards (see [`crate::placement`]) or write to the log.

use hektor_topics::record::{PlanAction, PlanChange, RingRange, Tier};
use hektor_topics::ring;
use serde::{Deserialize, Serialize};

use crate::error::{fmt_range, Error, Result};
use crate::node::validate_id;
use crate::placement::Placement;

/// One shard: a ring range of a collection, where it is served and from which tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub range: RingRange,
    /// Node ids holding a replica, distinct; the first is the preferred one.
    pub replicas: Vec<String>,
    #[serde(default = "hot")]
    pub tier: Tier,
}

fn hot() -> Tier {
    Tier::Hot
}

fn check_replicas(range: &RingRange, replicas: &[String]) -> Result<()> {
    if replicas.is_empty() {
        return Err(Error::InvalidShardMap(format!(
            "shard {} has no replicas",
            fmt_range(range)
        )));
    }
    for (j, r) in replicas.iter().enumerate() {
        validate_id(r)?;
        if replicas[..j].contains(r) {
            return Err(Error::InvalidShardMap(format!(
                "shard {} lists node {r:?} twice",
                fmt_range(range)
            )));
        }
    }
    Ok(())
}

/// The size and data median of one shard, as measured by whoever hosts it: the input of
/// [`ShardMap::split_by_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSize {
    pub range: RingRange,
    /// Vectors (or bytes: any unit, the same as the threshold's).
    pub size: u64,
    /// The median ring position of the shard's data.
    pub median: u64,
}

/// A shard being built for a coming epoch: the nodes in `replicas` replay the log into
/// it while the serving shards keep answering. When every new holder has reported it
/// ready, the controller switches traffic to it (see [`crate::rules`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Target {
    pub range: RingRange,
    pub replicas: Vec<String>,
    #[serde(default = "hot")]
    pub tier: Tier,
    /// The epoch that created this target: only readiness reported at or after it counts.
    pub since: u64,
    /// Why it exists (move, split, re-replication), for people.
    #[serde(default)]
    pub reason: String,
}

impl Target {
    /// The serving shard this target becomes.
    pub fn to_shard(&self) -> Shard {
        Shard {
            range: self.range,
            replicas: self.replicas.clone(),
            tier: self.tier,
        }
    }
}

/// A collection's shard map at an epoch; always valid (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ShardMapRepr", into = "ShardMapRepr")]
pub struct ShardMap {
    collection: String,
    epoch: u64,
    shards: Vec<Shard>,
    targets: Vec<Target>,
    incarnation: u64,
    lease: Lease,
}

/// The controller lease a map was written under: the term of the lease and the node that
/// held it (see `hektor_control::plan`). Readers take a map only from the holder of the
/// latest term, so a controller that lost its lease is fenced off. Term 0 with no writer
/// is a map from before leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub term: u64,
    pub writer: String,
}

/// The unchecked wire form; deserialization goes through [`ShardMap::new`].
#[derive(Serialize, Deserialize)]
struct ShardMapRepr {
    collection: String,
    epoch: u64,
    shards: Vec<Shard>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    targets: Vec<Target>,
    #[serde(default)]
    incarnation: u64,
    #[serde(default)]
    term: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    writer: String,
}

impl TryFrom<ShardMapRepr> for ShardMap {
    type Error = Error;

    fn try_from(r: ShardMapRepr) -> Result<Self> {
        Ok(ShardMap::new(r.collection, r.epoch, r.shards)?
            .with_incarnation(r.incarnation)
            .with_targets(r.targets)?
            .with_lease(Lease {
                term: r.term,
                writer: r.writer,
            }))
    }
}

impl From<ShardMap> for ShardMapRepr {
    fn from(m: ShardMap) -> Self {
        ShardMapRepr {
            collection: m.collection,
            epoch: m.epoch,
            shards: m.shards,
            targets: m.targets,
            incarnation: m.incarnation,
            term: m.lease.term,
            writer: m.lease.writer,
        }
    }
}

impl ShardMap {
    /// A map from its parts; shards may come in any order. Fails unless they tile the
    /// ring and every replica list is valid.
    pub fn new(collection: impl Into<String>, epoch: u64, mut shards: Vec<Shard>) -> Result<Self> {
        shards.sort_by_key(|s| s.range.start);
        let map = ShardMap {
            collection: collection.into(),
            epoch,
            shards,
            targets: Vec::new(),
            incarnation: 0,
            lease: Lease::default(),
        };
        map.validate()?;
        Ok(map)
    }

    /// The same map for this incarnation of the collection (see
    /// `hektor_topics::catalog::Catalog::incarnation`).
    pub fn with_incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// The same map with these shards being built; each must lie inside one serving
    /// shard and have distinct, well-formed replicas.
    pub fn with_targets(mut self, targets: Vec<Target>) -> Result<Self> {
        self.targets = targets;
        self.targets.sort_by_key(|t| (t.range.start, t.since));
        self.validate()?;
        Ok(self)
    }

    /// The same map at another epoch (the controller numbers the maps it writes).
    pub fn at_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The same map, written under this controller lease.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = lease;
        self
    }

    /// The controller lease this map was written under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Which creation of the collection this map is for.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Shards being built for a coming epoch.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The ranges `node` must hold: every serving shard and target listing it.
    pub fn ranges_of(&self, node: &str) -> Vec<(RingRange, Tier)> {
        let mut out: Vec<(RingRange, Tier)> = self
            .shards
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r == node))
            .map(|s| (s.range, s.tier))
            .chain(
                self.targets
                    .iter()
                    .filter(|t| t.replicas.iter().any(|r| r == node))
                    .map(|t| (t.range, t.tier)),
            )
            .collect();
        out.sort_by_key(|(r, _)| (r.start, r.end));
        out.dedup_by_key(|(r, _)| *r);
        out
    }

    /// Epoch 0 of a collection with `partitions` equal shards (the ranges of
    /// [`ring::partition_range`]), each replicated on the `replication` nodes `placement`
    /// picks for the shard's start.
    pub fn uniform(
        collection: impl Into<String>,
        partitions: u32,
        placement: &dyn Placement,
        replication: usize,
    ) -> Result<Self> {
        ring::validate_partitions(partitions).map_err(|e| Error::InvalidShardMap(e.to_string()))?;
        let shards = (0..partitions)
            .map(|i| {
                let range = ring::partition_range(i, partitions);
                let replicas = placement
                    .replicas(range.start, replication)?
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                Ok(Shard {
                    range,
                    replicas,
                    tier: Tier::Hot,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        ShardMap::new(collection, 0, shards)
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The shards in ring order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Check every invariant (the constructor and `apply` already do).
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidShardMap(why));
        if self.collection.is_empty() {
            return bad("the collection name is empty".into());
        }
        let Some(first) = self.shards.first() else {
            return bad("no shards: at least one must cover the ring".into());
        };
        if first.range.start != 0 {
            return bad(format!(
                "the first shard starts at {:#x}, not 0",
                first.range.start
            ));
        }
        for (i, s) in self.shards.iter().enumerate() {
            match (s.range.end, self.shards.get(i + 1)) {
                (Some(end), _) if end <= s.range.start => {
                    return bad(format!("shard {} is empty", fmt_range(&s.range)));
                }
                (Some(end), Some(next)) if next.range.start != end => {
                    return bad(format!(
                        "shard {} is followed by {}: {}",
                        fmt_range(&s.range),
                        fmt_range(&next.range),
                        if next.range.start < end {
                            "they overlap"
                        } else {
                            "gap between them"
                        }
                    ));
                }
                (Some(end), None) => {
                    return bad(format!("the last shard ends at {end:#x}, not 2^64"));
                }
                (None, Some(next)) => {
                    return bad(format!(
                        "shard {} runs to 2^64 but {} follows it",
                        fmt_range(&s.range),
                        fmt_range(&next.range)
                    ));
                }
                _ => {}
            }
            check_replicas(&s.range, &s.replicas)?;
        }
        for t in &self.targets {
            let holder = self.shard_for(t.range.start);
            let inside = t.range.start >= holder.range.start
                && match (t.range.end, holder.range.end) {
                    (Some(te), Some(he)) => te > t.range.start && te <= he,
                    (Some(te), None) => te > t.range.start,
                    (None, he) => he.is_none(),
                };
            // A merge target covers whole adjacent serving shards instead.
            let whole = holder.range.start == t.range.start
                && match t.range.end {
                    None => true,
                    Some(te) => {
                        te > t.range.start && self.shards.iter().any(|s| s.range.end == Some(te))
                    }
                };
            if !inside && !whole {
                return bad(format!(
                    "target {} neither lies inside one serving shard nor covers whole ones",
                    fmt_range(&t.range)
                ));
            }
            check_replicas(&t.range, &t.replicas)?;
        }
        Ok(())
    }

    /// Index of the shard holding `position`.
    pub fn shard_index(&self, position: u64) -> usize {
        // The first shard starts at 0, so at least one start is <= position.
        self.shards
            .partition_point(|s| s.range.start <= position)
            .saturating_sub(1)
    }

    /// The shard holding `position`.
    pub fn shard_for(&self, position: u64) -> &Shard {
        &self.shards[self.shard_index(position)]
    }

    /// The shards overlapping `range`, in ring order (for fanning out a tenant's query
    /// over [`ring::tenant_range`]). An empty range yields the shard of its start.
    pub fn overlapping(&self, range: RingRange) -> &[Shard] {
        let first = self.shard_index(range.start);
        let last = match range.end {
            None => self.shards.len() - 1,
            Some(end) if end > range.start => self.shard_index(end - 1),
            Some(_) => first,
        };
        &self.shards[first..=last]
    }

    /// Index of the shard with exactly this range.
    fn find(&self, range: &RingRange) -> Result<usize> {
        let i = self.shard_index(range.start);
        if self.shards[i].range == *range {
            Ok(i)
        } else {
            Err(Error::UnknownShard {
                collection: self.collection.clone(),
                range: *range,
                epoch: self.epoch,
            })
        }
    }

    /// The map after `action`, at the next epoch. `self` is unchanged.
    pub fn apply(&self, action: &PlanAction) -> Result<ShardMap> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(Error::EpochOverflow(self.epoch))?;
        let mut shards = self.shards.clone();
        match action {
            PlanAction::Split { shard, at } => {
                let i = self.find(shard)?;
                if !(shard.contains(*at) && *at > shard.start) {
                    return Err(Error::SplitOutside {
                        shard: *shard,
                        at: *at,
                    });
                }
                let mut right = shards[i].clone();
                right.range.start = *at;
                shards[i].range.end = Some(*at);
                shards.insert(i + 1, right);
            }
            PlanAction::Merge { left, right } => {
                let l = self.find(left)?;
                let r = self.find(right)?;
                if left.end != Some(right.start) || r != l + 1 {
                    return Err(Error::NotAdjacent {
                        left: *left,
                        right: *right,
                    });
                }
                let (a, b) = (&shards[l], &shards[r]);
                let mut ra = a.replicas.clone();
                let mut rb = b.replicas.clone();
                ra.sort();
                rb.sort();
                let why = if ra != rb {
                    Some(format!(
                        "replicas differ ({:?} vs {:?})",
                        a.replicas, b.replicas
                    ))
                } else if a.tier != b.tier {
                    Some(format!("tiers differ ({:?} vs {:?})", a.tier, b.tier))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(Error::MergeMismatch {
                        left: *left,
                        right: *right,
                        why,
                    });
                }
                shards[l].range.end = right.end;
                shards.remove(r);
            }
            PlanAction::Move { shard, from, to } => {
                let i = self.find(shard)?;
                validate_id(to)?;
                let s = &mut shards[i];
                if s.replicas.contains(to) {
                    return Err(Error::DuplicateReplica {
                        shard: *shard,
                        node: to.clone(),
                    });
                }
                let Some(slot) = s.replicas.iter_mut().find(|r| *r == from) else {
                    return Err(Error::ReplicaNotFound {
                        shard: *shard,
                        node: from.clone(),
                    });
                };
                *slot = to.clone();
            }
            PlanAction::SetTier { shard, tier } => {
                let i = self.find(shard)?;
                shards[i].tier = *tier;
            }
        }
        let next = ShardMap {
            collection: self.collection.clone(),
            epoch,
            shards,
            targets: Vec::new(),
            incarnation: self.incarnation,
            lease: self.lease.clone(),
        };
        next.validate()?;
        Ok(next)
    }

    /// Apply a plan-topic record: it must be for this collection and create exactly the
    /// next epoch.
    pub fn apply_change(&self, change: &PlanChange) -> Result<ShardMap> {
        if change.collection != self.collection {
            return Err(Error::WrongCollection {
                expected: self.collection.clone(),
                got: change.collection.clone(),
            });
        }
        if Some(change.epoch) != self.epoch.checked_add(1) {
            return Err(Error::EpochMismatch {
                current: self.epoch,
                got: change.epoch,
            });
        }
        self.apply(&change.action)
    }

    /// The splits that bring every shard larger than `max_size` back under it: each such
    /// shard is split at the median ring position of its data, so both halves get about
    /// half the data whatever its distribution. Sizes for ranges that are not shards of
    /// this map (stale measurements from an older epoch) are ignored, and so is a shard
    /// whose median is not strictly inside it (its data sits on one position and cannot
    /// be split by position). The actions touch distinct shards, in ring order, so they
    /// can be applied one after the other.
    pub fn split_by_size(&self, sizes: &[ShardSize], max_size: u64) -> Vec<PlanAction> {
        let mut actions: Vec<PlanAction> = sizes
            .iter()
            .filter(|s| s.size > max_size)
            .filter(|s| self.find(&s.range).is_ok())
            .filter(|s| s.range.contains(s.median) && s.median > s.range.start)
            .map(|s| PlanAction::Split {
                shard: s.range,
                at: s.median,
            })
            .collect();
        actions.sort_by_key(|a| match a {
            PlanAction::Split { shard, .. } => shard.start,
            _ => 0,
        });
        // One split per shard: the first measurement given for it.
        actions.dedup_by_key(|a| match a {
            PlanAction::Split { shard, .. } => *shard,
            _ => RingRange::FULL,
        });
        actions
    }
}
