//! The controller's decisions, as a pure function: from the current shard map, the nodes
//! that are alive, what they report ready and the splits asked for, the next shard map
//! (or none when nothing needs to change).
//!
//! How a map moves (each step is one new epoch, written by the controller to the plan
//! topic; see `hektor-control` for the I/O):
//!
//! 1. **Dead replicas** leave the serving list at once when another replica of the shard
//!    is alive, so routers stop trying them. A shard's last replica stays listed: its
//!    range has no other copy until a target is built.
//! 2. **Targets**: a serving shard whose wanted replicas differ from its current ones (a
//!    node joined, left, died, changed weight) gets a [`Target`] with the wanted replicas;
//!    a split asked for (by size, by the kinetic planner, by an operator) gets two targets
//!    covering its halves. The new holders replay the log into them while the serving
//!    replicas keep answering. At most `max_moves` targets are in flight.
//! 3. **Switch**: when every new holder of every target inside a serving shard has
//!    reported it ready (caught up to the high watermark it saw), the targets replace the
//!    shard. Old copies are dropped by their hosts after a grace period.
//!
//! Wanted replicas are chosen "sticky and balanced": a shard keeps its live replicas
//! unless their node holds more than its weighted share, and missing replicas go to the
//! node with the lowest load per unit of weight, preferring failure domains the shard does
//! not use yet. So a join moves only the joiner's share and a leave only the leaver's.
//!
//! **Tiers limit placement.** A shard goes only to nodes that may hold its tier
//! ([`NodeSpec::may_hold`]: a node with tier roles holds those tiers, one without holds
//! any), under every strategy: [`assign`] and the strategies only see those nodes. A tier
//! change whose holders may all hold the new tier switches their engines in place; one
//! whose holders may not becomes a move: the shard keeps serving at its tier from its
//! holders while a target at the new tier is built on nodes that may hold it, and the
//! target replaces it when ready. A tier ask may name where such a move should go
//! ([`TierAsk::on`]: the planner's promotions name the nodes whose hot budget they
//! charged); the named nodes that are placeable and may hold the tier are taken first,
//! the rest as without it (under a strategy the strategy places). Once there, the shard
//! is sticky like any other: count balancing moves it only off a node above its share.
//! When no live node may hold the tier, nothing changes and [`Outcome::held_back`] says
//! why. A first map starts hot, or at the hottest tier a live node may hold.
//!
//! **Placed by load** (`ControlConfig::by_load`, a collection's `"placement": {"strategy":
//! "load"}`): shards keep their live replicas whatever the counts, missing replicas still go
//! to the node with the fewest shards, and the balance comes from the kinetic planner's
//! decisions, which name nodes: a **move** replaces one replica of a shard (a target with
//! the new set), a split's right half goes to the node the planner names. Moves are carried
//! out only under this strategy (under count balancing the next tick would undo them).
//! **Merges** of two adjacent shards of one partition are carried out under every
//! strategy: a target covering both, held by the left shard's replicas, replaces them
//! when it is ready.
//!
//! This module owns those rules; it does no I/O and keeps no clock.

use std::collections::{BTreeMap, BTreeSet};

use hektor_topics::record::{RingRange, Tier};

use crate::error::{fmt_range, Result};
use crate::node::NodeSpec;
use crate::placement::{Placement, Strategy};
use crate::shard_map::{Shard, ShardMap, Target};

/// A node's report that it holds a shard's range, caught up with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub node: String,
    pub range: RingRange,
    /// The map epoch the node was following when it became ready.
    pub epoch: u64,
}

/// A split asked for: the shard it named, the point, and where the right half should go
/// (the planner names the least loaded node; `None` lets placement choose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitAsk {
    pub shard: RingRange,
    pub at: u64,
    pub place: Option<String>,
}

/// A replica move asked for (by the kinetic planner): `shard`'s copy on `from` goes to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveAsk {
    pub shard: RingRange,
    pub from: String,
    pub to: String,
}

/// A tier change asked for: the shard, the tier, and `on`, where the asker wants the
/// shard when the change must move it (the planner's promotions under tier roles: the
/// hot-eligible nodes whose hot budget it charged). `on` is a hint: the nodes of it that
/// are placeable and may hold the tier are taken first, the rest chosen as without it;
/// empty, or none of it usable, leaves placement to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierAsk {
    pub shard: RingRange,
    pub tier: Tier,
    pub on: Vec<String>,
}

impl From<(RingRange, Tier)> for TierAsk {
    fn from((shard, tier): (RingRange, Tier)) -> Self {
        TierAsk {
            shard,
            tier,
            on: Vec::new(),
        }
    }
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Copies of each shard (capped by the number of live data nodes).
    pub replication: usize,
    /// Shard builds in flight at once (targets).
    pub max_moves: usize,
    /// Place each shard by this strategy (of its range start) instead of sticky and
    /// balanced.
    pub strategy: Option<Strategy>,
    /// Placed by load: no rebalancing by shard count; the planner's moves are carried out.
    pub by_load: bool,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            replication: 1,
            max_moves: 4,
            strategy: None,
            by_load: false,
        }
    }
}

/// The wanted replicas of `ranges` (of tiers `tiers`): by `strategy` when given, else
/// [`assign`]. Only nodes that may hold a range's tier are chosen for it; a range no node
/// may hold gets no replicas.
fn wanted(
    ranges: &[RingRange],
    tiers: &[Tier],
    held: &[Vec<String>],
    nodes: &[NodeSpec],
    config: &ControlConfig,
) -> Result<Vec<Vec<String>>> {
    let Some(strategy) = config.strategy else {
        return Ok(assign(
            ranges,
            tiers,
            held,
            nodes,
            config.replication,
            !config.by_load,
        ));
    };
    // One placement per set of eligible nodes (tiers admitting the same nodes share it),
    // built from those nodes only.
    let mut built: Vec<(Vec<bool>, Option<PlacementOf>)> = Vec::new();
    let mut out = Vec::with_capacity(ranges.len());
    for (range, tier) in ranges.iter().zip(tiers) {
        let mask = eligible(nodes, *tier);
        let at = match built.iter().position(|(m, _)| *m == mask) {
            Some(at) => at,
            None => {
                let pool: Vec<NodeSpec> = nodes
                    .iter()
                    .zip(&mask)
                    .filter(|(_, ok)| **ok)
                    .map(|(n, _)| n.clone())
                    .collect();
                let placement = if pool.is_empty() {
                    None
                } else {
                    Some(strategy.build(pool)?)
                };
                built.push((mask, placement));
                built.len() - 1
            }
        };
        let Some(placement) = &built[at].1 else {
            out.push(Vec::new());
            continue;
        };
        let r = config.replication.clamp(1, placement.members().len());
        out.push(
            placement
                .replicas(range.start, r)?
                .into_iter()
                .map(str::to_owned)
                .collect(),
        );
    }
    Ok(out)
}

/// A placement built from the nodes that may hold a tier.
type PlacementOf = Box<dyn Placement>;

/// Which of `nodes` may hold a shard of `tier`, by position.
fn eligible(nodes: &[NodeSpec], tier: Tier) -> Vec<bool> {
    nodes.iter().map(|n| n.may_hold(tier)).collect()
}

/// A tier as roles and the API spell it.
fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Hot => "hot",
        Tier::Warm => "warm",
        Tier::Cold => "cold",
        Tier::Archive => "archive",
    }
}

/// The role that lets a node hold `tier` (a cold node holds archive shards).
fn role_for(tier: Tier) -> &'static str {
    match tier {
        Tier::Archive => "cold",
        t => tier_name(t),
    }
}

/// What the controller knows at one tick.
#[derive(Debug, Clone, Default)]
pub struct ControlInput<'a> {
    /// The map now (`None` before the collection has one).
    pub current: Option<&'a ShardMap>,
    /// The collection's partition ranges for a first map (epoch 0 has one shard each).
    pub partitions: u32,
    pub incarnation: u64,
    /// Data nodes that are alive and not leaving: where shards may be placed.
    pub placeable: &'a [NodeSpec],
    /// Every node that is alive (leaving ones included): replicas on them still serve.
    pub alive: &'a [String],
    pub ready: &'a [Ready],
    /// Splits asked for.
    pub splits: &'a [SplitAsk],
    /// Replica moves asked for (carried out only when placed by load).
    pub moves: &'a [MoveAsk],
    /// Merges asked for: `(left, right)`, adjacent shards of one partition.
    pub merges: &'a [(RingRange, RingRange)],
    /// Tier changes asked for: in place where the holders may hold the new tier, else a
    /// move (to the ask's `on` nodes where they are usable).
    pub tiers: &'a [TierAsk],
}

/// The next map and why, or `None` when the current map stands.
#[derive(Debug, Clone)]
pub struct Decision {
    pub map: ShardMap,
    pub reasons: Vec<String>,
}

/// What the controller decides at one tick: the next map, if it changes, and what it
/// cannot do now and why.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub decision: Option<Decision>,
    /// Asked-for or wanted changes that wait, each with its reason: a tier no live data
    /// node may hold (the shard stays where it is, at its tier). The same input gives the
    /// same list, so a caller can report it when it changes.
    pub held_back: Vec<String>,
}

/// Decide the next map. See the module doc for the rules; [`decide`] also says what waits.
pub fn next_map(
    collection: &str,
    input: &ControlInput<'_>,
    config: &ControlConfig,
) -> Result<Option<Decision>> {
    Ok(decide(collection, input, config)?.decision)
}

/// Decide the next map, and say what cannot be done now. See the module doc.
pub fn decide(
    collection: &str,
    input: &ControlInput<'_>,
    config: &ControlConfig,
) -> Result<Outcome> {
    let mut held_back = Vec::new();
    let decision = decide_map(collection, input, config, &mut held_back)?;
    Ok(Outcome {
        decision,
        held_back,
    })
}

fn decide_map(
    collection: &str,
    input: &ControlInput<'_>,
    config: &ControlConfig,
    held_back: &mut Vec<String>,
) -> Result<Option<Decision>> {
    let spec_of = |id: &str| input.placeable.iter().find(|n| n.id == id);
    let any_may_hold = |tier: Tier| input.placeable.iter().any(|n| n.may_hold(tier));
    let Some(current) = input.current else {
        if input.placeable.is_empty() {
            return Ok(None);
        }
        // Shards start hot, or at the hottest tier a live data node may hold.
        let tier = [Tier::Hot, Tier::Warm, Tier::Cold]
            .into_iter()
            .find(|t| any_may_hold(*t))
            .unwrap_or(Tier::Hot);
        let ranges: Vec<RingRange> = (0..input.partitions.max(1))
            .map(|i| hektor_topics::ring::partition_range(i, input.partitions.max(1)))
            .collect();
        let held: Vec<Vec<String>> = vec![Vec::new(); ranges.len()];
        let tiers = vec![tier; ranges.len()];
        let wanted = wanted(&ranges, &tiers, &held, input.placeable, config)?;
        let shards = ranges
            .iter()
            .zip(wanted)
            .map(|(range, replicas)| Shard {
                range: *range,
                replicas,
                tier,
            })
            .collect();
        let map = ShardMap::new(collection, 0, shards)?.with_incarnation(input.incarnation);
        let mut reason = format!(
            "first map: {} shards on {} nodes",
            input.partitions,
            input.placeable.len()
        );
        if tier != Tier::Hot {
            reason.push_str(&format!(
                ", tier {}: no live data node may hold hot",
                tier_name(tier)
            ));
        }
        return Ok(Some(Decision {
            map,
            reasons: vec![reason],
        }));
    };
    let alive: BTreeSet<&str> = input.alive.iter().map(String::as_str).collect();
    // The current map comes from the plan topic: its epoch may be the counter's last.
    let epoch = current
        .epoch()
        .checked_add(1)
        .ok_or(crate::Error::EpochOverflow(current.epoch()))?;
    let mut reasons = Vec::new();
    let mut shards: Vec<Shard> = current.shards().to_vec();
    let mut targets: Vec<Target> = current.targets().to_vec();

    // 0. Tier changes: in place where every live holder may hold the new tier; else a
    // move (the shard serves at its tier until a target at the new one, on nodes that
    // may hold it, is ready: see 2b); else, with no live node that may hold it, nothing.
    let mut moving: BTreeMap<RingRange, Tier> = BTreeMap::new();
    // The asks' placement hints of the shards that move (see `hinted`).
    let mut hints: BTreeMap<RingRange, &[String]> = BTreeMap::new();
    for ask in input.tiers {
        let (range, tier) = (&ask.shard, ask.tier);
        let Some(s) = shards.iter_mut().find(|s| s.range == *range) else {
            continue;
        };
        if s.tier != tier {
            let barred: Vec<&String> = s
                .replicas
                .iter()
                .filter(|r| spec_of(r).is_some_and(|n| !n.may_hold(tier)))
                .collect();
            if barred.is_empty() {
                reasons.push(format!(
                    "shard {}: tier {:?} -> {:?}",
                    fmt_range(range),
                    s.tier,
                    tier
                ));
                s.tier = tier;
            } else if !any_may_hold(tier) {
                held_back.push(format!(
                    "shard {}: tier {} -> {} waits: no live data node may hold {} (start one \
                     with the `{}` role, or one without tier roles); it stays {} on {:?}",
                    fmt_range(range),
                    tier_name(s.tier),
                    tier_name(tier),
                    tier_name(tier),
                    role_for(tier),
                    tier_name(s.tier),
                    s.replicas
                ));
                continue;
            } else {
                moving.insert(*range, tier);
                if !ask.on.is_empty() {
                    hints.insert(*range, &ask.on);
                }
            }
        }
        // Targets inside it being built at another tier take the new one where their
        // holders may hold it, else they are abandoned (and planned again at the new tier).
        targets.retain_mut(|t| {
            if !within(&t.range, range) || t.tier == tier {
                return true;
            }
            if t.replicas
                .iter()
                .all(|r| spec_of(r).is_some_and(|n| n.may_hold(tier)))
            {
                t.tier = tier;
                return true;
            }
            reasons.push(format!(
                "target {}: abandoned, {:?} may not all hold tier {}",
                fmt_range(&t.range),
                t.replicas,
                tier_name(tier)
            ));
            false
        });
    }
    // The tier a shard is placed for: the one it is moving to, else its own.
    let want_tier = |s: &Shard| moving.get(&s.range).copied().unwrap_or(s.tier);

    // 1. Dead replicas out, while another replica of the shard lives.
    for s in &mut shards {
        let live: Vec<String> = s
            .replicas
            .iter()
            .filter(|r| alive.contains(r.as_str()))
            .cloned()
            .collect();
        if !live.is_empty() && live.len() < s.replicas.len() {
            reasons.push(format!(
                "shard {}: dropped dead replicas {:?}",
                fmt_range(&s.range),
                s.replicas
                    .iter()
                    .filter(|r| !live.contains(r))
                    .collect::<Vec<_>>()
            ));
            s.replicas = live;
        }
    }
    // Targets with a dead or no longer placeable new holder, or one that may not hold
    // the target's tier (it came back with other roles), are abandoned (and re-planned).
    let placeable: BTreeSet<&str> = input.placeable.iter().map(|n| n.id.as_str()).collect();
    targets.retain(|t| {
        let gone = t.replicas.iter().any(|r| !placeable.contains(r.as_str()));
        let barred = t
            .replicas
            .iter()
            .any(|r| spec_of(r).is_some_and(|n| !n.may_hold(t.tier)));
        if gone {
            reasons.push(format!(
                "target {}: abandoned, a new holder of {:?} is gone",
                fmt_range(&t.range),
                t.replicas
            ));
        } else if barred {
            reasons.push(format!(
                "target {}: abandoned, a new holder of {:?} may not hold tier {}",
                fmt_range(&t.range),
                t.replicas,
                tier_name(t.tier)
            ));
        }
        !gone && !barred
    });

    // 3. Switch the serving shards whose targets are all ready.
    let is_ready = |t: &Target, node: &str, serving: &[Shard]| {
        serving
            .iter()
            .any(|s| s.range == t.range && s.replicas.iter().any(|r| r == node))
            || input
                .ready
                .iter()
                .any(|r| r.node == node && r.range == t.range && r.epoch >= t.since)
    };
    // Merge targets (covering several serving shards) replace all of them at once.
    let spanning: Vec<Target> = targets
        .iter()
        .filter(|t| !shards.iter().any(|s| within(&t.range, &s.range)))
        .cloned()
        .collect();
    for t in spanning {
        let covered: Vec<usize> = (0..shards.len())
            .filter(|i| within(&shards[*i].range, &t.range))
            .collect();
        let (Some(&first), Some(&last)) = (covered.first(), covered.last()) else {
            continue;
        };
        if !t.replicas.iter().all(|n| is_ready(&t, n, &shards)) {
            continue;
        }
        reasons.push(format!(
            "shards {} merged into {} on {:?}",
            shards[first..=last]
                .iter()
                .map(|s| fmt_range(&s.range))
                .collect::<Vec<_>>()
                .join(" + "),
            fmt_range(&t.range),
            t.replicas
        ));
        shards.splice(first..=last, [t.to_shard()]);
        targets.retain(|x| x.range != t.range);
    }
    let mut i = 0;
    while i < shards.len() {
        let range = shards[i].range;
        let inside: Vec<&Target> = targets
            .iter()
            .filter(|t| within(&t.range, &range))
            .collect();
        if !inside.is_empty()
            && tiles(&range, &inside)
            && inside
                .iter()
                .all(|t| t.replicas.iter().all(|n| is_ready(t, n, &shards)))
        {
            let replacement: Vec<Shard> = inside.iter().map(|t| t.to_shard()).collect();
            reasons.push(format!(
                "shard {} switched to {}",
                fmt_range(&range),
                replacement
                    .iter()
                    .map(|s| format!("{} on {:?}", fmt_range(&s.range), s.replicas))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            targets.retain(|t| !within(&t.range, &range));
            let n = replacement.len();
            shards.splice(i..=i, replacement);
            i += n;
        } else {
            i += 1;
        }
    }

    let has_target =
        |targets: &[Target], range: &RingRange| targets.iter().any(|t| overlaps(&t.range, range));
    // 2a. Splits asked for. A split names a point: it cuts whichever serving shard holds
    // it now (the shard it named may have been split or merged since it was asked for).
    for ask in input.splits {
        let at = &ask.at;
        if targets.len() >= config.max_moves {
            break;
        }
        let Some(s) = shards
            .iter()
            .find(|s| s.range.contains(*at) && *at > s.range.start)
        else {
            continue;
        };
        let range = s.range;
        let tier = want_tier(s);
        if has_target(&targets, &range) {
            continue;
        }
        let halves = [
            RingRange {
                start: range.start,
                end: Some(*at),
            },
            RingRange {
                start: *at,
                end: range.end,
            },
        ];
        let replicas = if s
            .replicas
            .iter()
            .all(|r| spec_of(r).is_some_and(|n| n.may_hold(tier)))
        {
            s.replicas.clone()
        } else {
            let held = vec![s.replicas.clone()];
            assign(
                &[range],
                &[tier],
                &held,
                input.placeable,
                config.replication,
                !config.by_load,
            )
            .pop()
            .unwrap_or_default()
        };
        if replicas.is_empty() {
            continue;
        }
        // The left half stays where the shard is; the right half goes where placement
        // wants a new shard (the least loaded nodes), so a hot range's load is shared out
        // by the split itself.
        let mut all: Vec<RingRange> = shards.iter().map(|s| s.range).collect();
        let mut held: Vec<Vec<String>> = shards
            .iter()
            .map(|s| {
                s.replicas
                    .iter()
                    .filter(|r| placeable.contains(r.as_str()))
                    .cloned()
                    .collect()
            })
            .collect();
        let mut tiers: Vec<Tier> = shards.iter().map(want_tier).collect();
        all.push(halves[1]);
        held.push(Vec::new());
        tiers.push(tier);
        // Away from the shard's current nodes when there are enough others.
        let others: Vec<NodeSpec> = input
            .placeable
            .iter()
            .filter(|n| !replicas.contains(&n.id))
            .cloned()
            .collect();
        let pool =
            if others.iter().filter(|n| n.may_hold(tier)).count() >= config.replication.max(1) {
                &others[..]
            } else {
                input.placeable
            };
        let mut fresh = wanted(&all, &tiers, &held, pool, config)?
            .pop()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| replicas.clone());
        // The node the planner named (by measured load) first, when it may hold it.
        if let Some(place) = ask
            .place
            .as_deref()
            .filter(|p| spec_of(p).is_some_and(|n| n.may_hold(tier)))
        {
            let n = fresh.len().max(1);
            fresh.retain(|r| r != place);
            fresh.insert(0, place.to_owned());
            fresh.truncate(n);
        }
        for (half, replicas) in halves.into_iter().zip([replicas.clone(), fresh]) {
            targets.push(Target {
                range: half,
                replicas,
                tier,
                since: epoch,
                reason: format!("split of {} at {at:#x}", fmt_range(&range)),
            });
        }
        reasons.push(format!(
            "shard {}: split at {at:#x} begun",
            fmt_range(&range)
        ));
    }

    // 2c. Moves asked for by the planner, when placed by load: one replica replaced.
    for m in input.moves.iter().filter(|_| config.by_load) {
        if targets.len() >= config.max_moves {
            break;
        }
        let Some(s) = shards.iter().find(|s| s.range == m.shard) else {
            continue;
        };
        if has_target(&targets, &s.range)
            || moving.contains_key(&s.range)
            || !s.replicas.contains(&m.from)
            || s.replicas.contains(&m.to)
            || !spec_of(&m.to).is_some_and(|n| n.may_hold(s.tier))
        {
            continue;
        }
        let replicas: Vec<String> = s
            .replicas
            .iter()
            .map(|r| {
                if *r == m.from {
                    m.to.clone()
                } else {
                    r.clone()
                }
            })
            .collect();
        reasons.push(format!(
            "shard {}: move {} -> {} begun",
            fmt_range(&s.range),
            m.from,
            m.to
        ));
        targets.push(Target {
            range: s.range,
            replicas,
            tier: s.tier,
            since: epoch,
            reason: format!("move from {} to {} (by load)", m.from, m.to),
        });
    }

    // 2d. Merges asked for: adjacent serving shards of one partition, neither changing.
    for (left, right) in input.merges {
        if targets.len() >= config.max_moves {
            break;
        }
        let (Some(l), Some(r)) = (
            shards.iter().position(|s| s.range == *left),
            shards.iter().position(|s| s.range == *right),
        ) else {
            continue;
        };
        let last = right.end.map_or(u64::MAX, |e| e.saturating_sub(1));
        let partitions = input.partitions.max(1);
        if r != l + 1
            || left.end != Some(right.start)
            || hektor_topics::ring::partition_of(left.start, partitions)
                != hektor_topics::ring::partition_of(last, partitions)
            || has_target(&targets, left)
            || has_target(&targets, right)
        {
            continue;
        }
        let union = RingRange {
            start: left.start,
            end: right.end,
        };
        let tier = want_tier(&shards[l]).min(want_tier(&shards[r]));
        let keep = |s: &Shard| -> Vec<String> {
            s.replicas
                .iter()
                .filter(|n| spec_of(n).is_some_and(|n| n.may_hold(tier)))
                .cloned()
                .collect()
        };
        let mut replicas = keep(&shards[l]);
        if replicas.is_empty() {
            replicas = keep(&shards[r]);
        }
        if replicas.is_empty() {
            continue;
        }
        reasons.push(format!(
            "shards {} + {}: merge into {} on {:?} begun",
            fmt_range(left),
            fmt_range(right),
            fmt_range(&union),
            replicas
        ));
        targets.push(Target {
            range: union,
            replicas,
            tier,
            since: epoch,
            reason: format!("merge of {} and {}", fmt_range(left), fmt_range(right)),
        });
    }

    // 2b. Re-placement: sticky, balanced wanted replicas.
    if !input.placeable.is_empty() {
        let ranges: Vec<RingRange> = shards.iter().map(|s| s.range).collect();
        let held: Vec<Vec<String>> = shards
            .iter()
            .map(|s| {
                // A shard being rebuilt counts where it is going.
                let going: Vec<&Target> = targets
                    .iter()
                    .filter(|t| overlaps(&t.range, &s.range))
                    .collect();
                match going.first() {
                    Some(t) => t.replicas.clone(),
                    None => s
                        .replicas
                        .iter()
                        .filter(|r| placeable.contains(r.as_str()))
                        .cloned()
                        .collect(),
                }
            })
            .collect();
        let tiers: Vec<Tier> = shards.iter().map(want_tier).collect();
        let wanted = wanted(&ranges, &tiers, &held, input.placeable, config)?;
        for (s, want) in shards.iter().zip(wanted) {
            let tier = want_tier(s);
            // A tier move the asker placed (the planner charged those nodes' hot budget)
            // goes there when it can; a strategy's placement is left alone (it would move
            // the shard back at the next tick).
            let want = match hints.get(&s.range) {
                Some(on) if config.strategy.is_none() && tier != s.tier => {
                    hinted(on, want, tier, input.placeable)
                }
                _ => want,
            };
            if want.is_empty() && !any_may_hold(tier) {
                held_back.push(format!(
                    "shard {}: no live data node may hold tier {} (start one with the `{}` \
                     role, or one without tier roles); it stays on {:?}",
                    fmt_range(&s.range),
                    tier_name(tier),
                    role_for(tier),
                    s.replicas
                ));
            }
            if targets.len() >= config.max_moves {
                break;
            }
            if has_target(&targets, &s.range) || want.is_empty() {
                continue;
            }
            let mut a = s.replicas.clone();
            let mut b = want.clone();
            a.sort();
            b.sort();
            if a == b {
                continue;
            }
            let reason = if tier != s.tier {
                let barred: Vec<&String> = s
                    .replicas
                    .iter()
                    .filter(|r| spec_of(r).is_some_and(|n| !n.may_hold(tier)))
                    .collect();
                reasons.push(format!(
                    "shard {}: tier {} -> {} moves it from {:?} to {:?} ({:?} may not hold \
                     {}); it serves from {:?} until the new copies are ready",
                    fmt_range(&s.range),
                    tier_name(s.tier),
                    tier_name(tier),
                    s.replicas,
                    want,
                    barred,
                    tier_name(tier),
                    s.replicas
                ));
                format!("tier change to {}", tier_name(tier))
            } else {
                reasons.push(format!(
                    "shard {}: replicas {:?} -> {:?}",
                    fmt_range(&s.range),
                    s.replicas,
                    want
                ));
                "re-placement".into()
            };
            targets.push(Target {
                range: s.range,
                replicas: want,
                tier,
                since: epoch,
                reason,
            });
        }
    }

    if reasons.is_empty() {
        return Ok(None);
    }
    let map = ShardMap::new(collection, epoch, shards)?
        .with_incarnation(current.incarnation())
        .with_targets(targets)?;
    if map.shards() == current.shards() && map.targets() == current.targets() {
        return Ok(None);
    }
    Ok(Some(Decision { map, reasons }))
}

/// The replicas of a tier move with a placement hint: the hinted nodes that are placeable
/// and may hold `tier` first (in the hint's order, no repeats), then the rules' own choice
/// (`want`) for the rest, as many as `want` has. With no usable hinted node, `want`.
fn hinted(on: &[String], want: Vec<String>, tier: Tier, placeable: &[NodeSpec]) -> Vec<String> {
    let copies = want.len();
    let mut out: Vec<String> = Vec::with_capacity(copies);
    for node in on {
        if out.len() >= copies {
            break;
        }
        let usable = placeable.iter().any(|n| n.id == *node && n.may_hold(tier));
        if usable && !out.contains(node) {
            out.push(node.clone());
        }
    }
    if out.is_empty() {
        return want;
    }
    for node in want {
        if out.len() >= copies {
            break;
        }
        if !out.contains(&node) {
            out.push(node);
        }
    }
    out
}

/// Whether two ranges share a position.
fn overlaps(a: &RingRange, b: &RingRange) -> bool {
    let end = |r: &RingRange| r.end.map_or(u128::MAX, u128::from);
    (a.start as u128) < end(b) && (b.start as u128) < end(a)
}

/// Whether `inner` lies inside `outer`.
fn within(inner: &RingRange, outer: &RingRange) -> bool {
    inner.start >= outer.start
        && match (inner.end, outer.end) {
            (_, None) => true,
            (Some(i), Some(o)) => i <= o,
            (None, Some(_)) => false,
        }
}

/// Whether the targets cover `range` exactly, without overlap.
fn tiles(range: &RingRange, targets: &[&Target]) -> bool {
    let mut sorted: Vec<&RingRange> = targets.iter().map(|t| &t.range).collect();
    sorted.sort_by_key(|r| r.start);
    let mut at = range.start;
    for (i, r) in sorted.iter().enumerate() {
        if r.start != at {
            return false;
        }
        match r.end {
            Some(end) => at = end,
            None => return i == sorted.len() - 1 && range.end.is_none(),
        }
    }
    Some(at) == range.end
}

/// Sticky, balanced replica sets for `ranges` of tiers `tiers`, given who holds each now
/// (`held`, only placeable nodes): see the module doc. A range goes only to nodes that may
/// hold its tier (none: no replicas), at most `replication` of them. With `rebalance`
/// false, current holders are kept whatever their counts (placement by load).
/// Deterministic.
pub fn assign(
    ranges: &[RingRange],
    tiers: &[Tier],
    held: &[Vec<String>],
    nodes: &[NodeSpec],
    replication: usize,
    rebalance: bool,
) -> Vec<Vec<String>> {
    debug_assert_eq!(ranges.len(), tiers.len());
    debug_assert_eq!(ranges.len(), held.len());
    if nodes.is_empty() {
        return vec![Vec::new(); ranges.len()];
    }
    let masks: Vec<Vec<bool>> = tiers.iter().map(|t| eligible(nodes, *t)).collect();
    let copies: Vec<usize> = masks
        .iter()
        .map(|m| match m.iter().filter(|ok| **ok).count() {
            0 => 0,
            e => replication.clamp(1, e),
        })
        .collect();
    // Each node's share of the replicas, rounded up: nobody sheds below its share. Ranges
    // whose tiers admit the same nodes form a class whose replicas are shared out by
    // weight over those nodes; a node's share sums its classes' (one class, all nodes,
    // without tier roles).
    let mut classes: Vec<(&[bool], usize)> = Vec::new();
    for (mask, c) in masks.iter().zip(&copies) {
        match classes.iter_mut().find(|(m, _)| *m == &mask[..]) {
            Some(class) => class.1 += c,
            None => classes.push((mask, *c)),
        }
    }
    let mut fair = vec![0.0f64; nodes.len()];
    for (mask, slots) in &classes {
        let total: f64 = nodes
            .iter()
            .zip(mask.iter())
            .filter(|(_, ok)| **ok)
            .map(|(n, _)| n.weight)
            .sum();
        for (i, n) in nodes.iter().enumerate() {
            if mask[i] && total > 0.0 {
                fair[i] += *slots as f64 * n.weight / total;
            }
        }
    }
    let share: BTreeMap<&str, usize> = nodes
        .iter()
        .zip(&fair)
        .map(|(n, f)| (n.id.as_str(), f.ceil().max(1.0) as usize))
        .collect();
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let weight: BTreeMap<&str, f64> = nodes.iter().map(|n| (n.id.as_str(), n.weight)).collect();
    let zone: BTreeMap<&str, &str> = nodes.iter().map(|n| (n.id.as_str(), n.domain())).collect();
    let mut load: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
    // Keep current holders that may hold the tier, up to r per shard and up to each
    // node's share.
    let mut out: Vec<Vec<String>> = Vec::with_capacity(ranges.len());
    for (i, h) in held.iter().enumerate() {
        let mut keep = Vec::new();
        for node in h {
            if keep.len() >= copies[i] {
                break;
            }
            if !index.get(node.as_str()).is_some_and(|&at| masks[i][at]) {
                continue;
            }
            if let Some(l) = load.get_mut(node.as_str()) {
                if (!rebalance || *l < share[node.as_str()]) && !keep.contains(node) {
                    *l += 1;
                    keep.push(node.clone());
                }
            }
        }
        out.push(keep);
    }
    // Fill the gaps with the least loaded nodes per unit of weight, new domains first.
    for (i, replicas) in out.iter_mut().enumerate() {
        while replicas.len() < copies[i] {
            let used: Vec<&str> = replicas.iter().map(|n| zone[n.as_str()]).collect();
            let best = nodes
                .iter()
                .zip(&masks[i])
                .filter(|(_, ok)| **ok)
                .map(|(n, _)| n.id.as_str())
                .filter(|id| !replicas.iter().any(|x| x == id))
                .min_by(|a, b| {
                    let fresh = |id: &str| used.contains(&zone[id]) as u8;
                    let per = |id: &str| load[id] as f64 / weight[id];
                    fresh(a)
                        .cmp(&fresh(b))
                        .then(per(a).total_cmp(&per(b)))
                        .then(a.cmp(b))
                });
            let Some(best) = best else { break };
            *load.get_mut(best).expect("node has a load") += 1;
            replicas.push(best.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<NodeSpec> {
        ids.iter().map(|i| NodeSpec::new(*i)).collect()
    }

    fn alive(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn first(n: &[NodeSpec], partitions: u32, r: usize) -> ShardMap {
        let config = ControlConfig {
            replication: r,
            max_moves: 64,
            strategy: None,
            by_load: false,
        };
        let ids: Vec<String> = n.iter().map(|n| n.id.clone()).collect();
        next_map(
            "c",
            &ControlInput {
                partitions,
                placeable: n,
                alive: &ids,
                ..Default::default()
            },
            &config,
        )
        .unwrap()
        .unwrap()
        .map
    }

    fn step(
        map: &ShardMap,
        n: &[NodeSpec],
        alive: &[String],
        ready: &[Ready],
        r: usize,
    ) -> Option<ShardMap> {
        next_map(
            "c",
            &ControlInput {
                current: Some(map),
                partitions: 0,
                incarnation: 0,
                placeable: n,
                alive,
                ready,
                tiers: &[],
                ..Default::default()
            },
            &ControlConfig {
                replication: r,
                max_moves: 64,
                strategy: None,
                by_load: false,
            },
        )
        .unwrap()
        .map(|d| d.map)
    }

    fn step_with(
        map: &ShardMap,
        n: &[NodeSpec],
        alive: &[String],
        ready: &[Ready],
        config: &ControlConfig,
    ) -> Option<ShardMap> {
        next_map(
            "c",
            &ControlInput {
                current: Some(map),
                placeable: n,
                alive,
                ready,
                ..Default::default()
            },
            config,
        )
        .unwrap()
        .map(|d| d.map)
    }

    fn held_by(map: &ShardMap, node: &str) -> usize {
        map.shards()
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r == node))
            .count()
    }

    /// Report every target ready for its new holders.
    fn all_ready(map: &ShardMap) -> Vec<Ready> {
        map.targets()
            .iter()
            .flat_map(|t| {
                t.replicas.iter().map(|n| Ready {
                    node: n.clone(),
                    range: t.range,
                    epoch: map.epoch(),
                })
            })
            .collect()
    }

    /// Found with the `plan_catalog` fuzz harness (fuzz/) on a boundary input: a shard
    /// map read from the plan topic at epoch `u64::MAX` made the next step overflow its
    /// epoch (a panic with overflow checks, a wrap to epoch 0 without). It is an error now.
    #[test]
    fn a_map_at_the_last_epoch_is_an_error_not_an_overflow() {
        let n = nodes(&["a", "b"]);
        let ids = alive(&["a", "b"]);
        let last = first(&n, 2, 1).at_epoch(u64::MAX);
        let tiers = [TierAsk::from((last.shards()[0].range, Tier::Cold))];
        let result = next_map(
            "c",
            &ControlInput {
                current: Some(&last),
                placeable: &n,
                alive: &ids,
                tiers: &tiers,
                ..Default::default()
            },
            &ControlConfig::default(),
        );
        assert!(matches!(result, Err(crate::Error::EpochOverflow(u64::MAX))));
        // One short of it still steps, to the last epoch.
        let late = last.at_epoch(u64::MAX - 1);
        let next = step_with(&late, &n, &ids, &[], &ControlConfig::default());
        let tiered = next_map(
            "c",
            &ControlInput {
                current: Some(&late),
                placeable: &n,
                alive: &ids,
                tiers: &tiers,
                ..Default::default()
            },
            &ControlConfig::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(tiered.map.epoch(), u64::MAX);
        assert!(next.is_none_or(|m| m.epoch() == u64::MAX));
    }

    #[test]
    fn first_map_spreads_replicas_evenly_on_distinct_nodes() {
        let n = nodes(&["a", "b", "c"]);
        let map = first(&n, 12, 2);
        assert_eq!(map.shards().len(), 12);
        for s in map.shards() {
            assert_eq!(s.replicas.len(), 2);
            assert_ne!(s.replicas[0], s.replicas[1]);
        }
        for id in ["a", "b", "c"] {
            assert_eq!(held_by(&map, id), 8, "{id}");
        }
    }

    #[test]
    fn a_join_moves_only_the_joiners_share_and_only_after_it_is_ready() {
        let n3 = nodes(&["a", "b", "c"]);
        let map = first(&n3, 12, 1);
        let n4 = nodes(&["a", "b", "c", "d"]);
        let al = alive(&["a", "b", "c", "d"]);
        let building = step(&map, &n4, &al, &[], 1).unwrap();
        assert_eq!(
            building.shards(),
            map.shards(),
            "serving must not change yet"
        );
        assert_eq!(building.targets().len(), 3, "d's share of 12 shards");
        assert!(building.targets().iter().all(|t| t.replicas == ["d"]));
        // Nothing new while not ready.
        assert!(step(&building, &n4, &al, &[], 1).is_none());
        // Ready at an older epoch does not count.
        let stale: Vec<Ready> = all_ready(&building)
            .into_iter()
            .map(|r| Ready { epoch: 0, ..r })
            .collect();
        assert!(step(&building, &n4, &al, &stale, 1).is_none());
        let switched = step(&building, &n4, &al, &all_ready(&building), 1).unwrap();
        assert!(switched.targets().is_empty());
        for id in ["a", "b", "c", "d"] {
            assert_eq!(held_by(&switched, id), 3, "{id}");
        }
        let moved = map
            .shards()
            .iter()
            .zip(switched.shards())
            .filter(|(x, y)| x.replicas != y.replicas)
            .count();
        assert_eq!(moved, 3);
        assert!(step(&switched, &n4, &al, &[], 1).is_none(), "stable");
    }

    #[test]
    fn a_dead_replica_is_dropped_at_once_and_replaced_by_a_target() {
        let n = nodes(&["a", "b", "c"]);
        let map = first(&n, 6, 2);
        let n2 = nodes(&["a", "b"]);
        let al = alive(&["a", "b"]);
        let next = step(&map, &n2, &al, &[], 2).unwrap();
        for s in next.shards() {
            assert!(!s.replicas.contains(&"c".to_string()));
            assert!(!s.replicas.is_empty());
        }
        let rebuilt = next.targets().len();
        assert_eq!(rebuilt, held_by(&map, "c"));
        let done = step(&next, &n2, &al, &all_ready(&next), 2).unwrap();
        for s in done.shards() {
            assert_eq!(s.replicas.len(), 2);
        }
    }

    #[test]
    fn the_last_replica_of_a_shard_stays_listed_even_when_dead() {
        let n = nodes(&["a", "b"]);
        let map = first(&n, 4, 1);
        let next = step(&map, &nodes(&["a"]), &alive(&["a"]), &[], 1).unwrap();
        assert_eq!(next.shards(), map.shards());
        assert_eq!(next.targets().len(), held_by(&map, "b"));
    }

    #[test]
    fn a_split_switches_when_both_halves_are_ready() {
        let n = nodes(&["a", "b"]);
        let map = first(&n, 2, 1);
        let s0 = map.shards()[0].range;
        let at = s0.start + (s0.end.unwrap() - s0.start) / 2;
        let al = alive(&["a", "b"]);
        let d = next_map(
            "c",
            &ControlInput {
                current: Some(&map),
                placeable: &n,
                alive: &al,
                splits: &[SplitAsk {
                    shard: s0,
                    at,
                    place: None,
                }],
                ..Default::default()
            },
            &ControlConfig::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.map.targets().len(), 2);
        let mut one = all_ready(&d.map);
        one.pop();
        assert!(step(&d.map, &n, &al, &one, 1).is_none());
        // The right half goes to the less loaded node, the left one stays.
        let holder = &map.shards()[0].replicas;
        assert_eq!(&d.map.targets()[0].replicas, holder);
        assert_ne!(&d.map.targets()[1].replicas, holder);
        let done = step(&d.map, &n, &al, &all_ready(&d.map), 1).unwrap();
        assert_eq!(done.shards().len(), 3);
        assert_eq!(done.shards()[0].range.end, Some(at));
        assert_eq!(done.shards()[1].range.start, at);
    }

    #[test]
    fn moves_in_flight_are_capped() {
        let map = first(&nodes(&["a"]), 16, 1);
        let n = nodes(&["a", "b"]);
        let d = next_map(
            "c",
            &ControlInput {
                current: Some(&map),
                placeable: &n,
                alive: &alive(&["a", "b"]),
                ..Default::default()
            },
            &ControlConfig {
                replication: 1,
                max_moves: 3,
                strategy: None,
                by_load: false,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.map.targets().len(), 3);
    }

    #[test]
    fn a_collection_may_be_placed_by_consistent_hashing() {
        let n = nodes(&["a", "b", "c"]);
        let config = ControlConfig {
            replication: 2,
            max_moves: 64,
            strategy: Some(Strategy::ConsistentHash { vnodes: 150 }),
            by_load: false,
        };
        let ids = alive(&["a", "b", "c"]);
        let input = ControlInput {
            partitions: 16,
            placeable: &n,
            alive: &ids,
            ..Default::default()
        };
        let map = next_map("c", &input, &config).unwrap().unwrap().map;
        let ring = Strategy::ConsistentHash { vnodes: 150 }
            .build(n.clone())
            .unwrap();
        for s in map.shards() {
            let want: Vec<&str> = ring.replicas(s.range.start, 2).unwrap();
            assert_eq!(s.replicas, want);
        }
        // A joiner takes over only the shards whose ring positions it now owns.
        let n4 = nodes(&["a", "b", "c", "d"]);
        let ids4 = alive(&["a", "b", "c", "d"]);
        let next = next_map(
            "c",
            &ControlInput {
                current: Some(&map),
                placeable: &n4,
                alive: &ids4,
                ..Default::default()
            },
            &config,
        )
        .unwrap()
        .unwrap()
        .map;
        let ring4 = Strategy::ConsistentHash { vnodes: 150 }.build(n4).unwrap();
        for t in next.targets() {
            assert_eq!(t.replicas, ring4.replicas(t.range.start, 2).unwrap());
            assert!(t.replicas.iter().any(|r| r == "d"), "{t:?}");
        }
    }

    #[test]
    fn replicas_prefer_distinct_failure_domains() {
        let n = vec![
            NodeSpec::new("a").with_zone("z1"),
            NodeSpec::new("b").with_zone("z1"),
            NodeSpec::new("c").with_zone("z2"),
            NodeSpec::new("d").with_zone("z2"),
        ];
        let map = first(&n, 8, 2);
        let zone = |id: &str| n.iter().find(|x| x.id == id).unwrap().domain().to_owned();
        for s in map.shards() {
            assert_ne!(zone(&s.replicas[0]), zone(&s.replicas[1]), "{s:?}");
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let n = vec![NodeSpec::new("a").with_weight(3.0), NodeSpec::new("b")];
        let map = first(&n, 8, 1);
        assert_eq!(held_by(&map, "a"), 6);
        assert_eq!(held_by(&map, "b"), 2);
    }
    fn by_load() -> ControlConfig {
        ControlConfig {
            replication: 1,
            max_moves: 8,
            strategy: None,
            by_load: true,
        }
    }

    #[test]
    fn a_split_places_its_right_half_where_the_planner_names() {
        let n = nodes(&["a", "b", "c"]);
        let map = first(&n, 3, 1);
        let s0 = map.shards()[0].clone();
        let at = s0.range.start + (s0.range.end.unwrap() - s0.range.start) / 2;
        // Either other node, as named (placement alone would pick one by shard count).
        let others: Vec<&str> = ["a", "b", "c"]
            .into_iter()
            .filter(|x| s0.replicas[0] != *x)
            .collect();
        for place in others {
            let d = next_map(
                "c",
                &ControlInput {
                    current: Some(&map),
                    placeable: &n,
                    alive: &alive(&["a", "b", "c"]),
                    splits: &[SplitAsk {
                        shard: s0.range,
                        at,
                        place: Some(place.into()),
                    }],
                    ..Default::default()
                },
                &ControlConfig::default(),
            )
            .unwrap()
            .unwrap();
            let right = d
                .map
                .targets()
                .iter()
                .find(|t| t.range.start == at)
                .unwrap();
            assert_eq!(right.replicas, vec![place.to_string()]);
            let left = d
                .map
                .targets()
                .iter()
                .find(|t| t.range.end == Some(at))
                .unwrap();
            assert_eq!(left.replicas, s0.replicas);
        }
    }

    #[test]
    fn moves_are_carried_out_and_stay_when_placed_by_load() {
        let n = nodes(&["a", "b"]);
        let al = alive(&["a", "b"]);
        let map = first(&n, 4, 1);
        let s = map
            .shards()
            .iter()
            .find(|s| s.replicas == ["a"])
            .unwrap()
            .clone();
        let ask = [MoveAsk {
            shard: s.range,
            from: "a".into(),
            to: "b".into(),
        }];
        let input = |m| ControlInput {
            current: Some(m),
            placeable: &n,
            alive: &al,
            moves: &ask,
            ..Default::default()
        };
        // Under count balancing a move is not carried out.
        assert!(next_map("c", &input(&map), &ControlConfig::default())
            .unwrap()
            .is_none());
        let d = next_map("c", &input(&map), &by_load()).unwrap().unwrap();
        assert_eq!(d.map.targets().len(), 1);
        assert_eq!(d.map.targets()[0].replicas, vec!["b".to_string()]);
        let done = step_with(&d.map, &n, &al, &all_ready(&d.map), &by_load()).unwrap();
        assert_eq!(held_by(&done, "b"), 3);
        assert_eq!(held_by(&done, "a"), 1);
        // Placed by load, the uneven counts stand: nothing moves back.
        assert!(step_with(&done, &n, &al, &[], &by_load()).is_none());
        // Under count balancing the same map would be rebalanced.
        assert!(step_with(&done, &n, &al, &[], &ControlConfig::default()).is_some());
    }

    #[test]
    fn adjacent_shards_of_one_partition_merge() {
        let n = nodes(&["a", "b"]);
        let al = alive(&["a", "b"]);
        let map = first(&n, 2, 1);
        // Split shard 0, then merge its halves back.
        let s0 = map.shards()[0].range;
        let at = s0.start + (s0.end.unwrap() - s0.start) / 2;
        let split = next_map(
            "c",
            &ControlInput {
                current: Some(&map),
                partitions: 2,
                placeable: &n,
                alive: &al,
                splits: &[SplitAsk {
                    shard: s0,
                    at,
                    place: None,
                }],
                ..Default::default()
            },
            &by_load(),
        )
        .unwrap()
        .unwrap()
        .map;
        let split = step_with(&split, &n, &al, &all_ready(&split), &by_load()).unwrap();
        assert_eq!(split.shards().len(), 3);
        let (left, right) = (split.shards()[0].range, split.shards()[1].range);
        let across = (split.shards()[1].range, split.shards()[2].range);
        let merge = |asks: &[(RingRange, RingRange)]| {
            next_map(
                "c",
                &ControlInput {
                    current: Some(&split),
                    partitions: 2,
                    placeable: &n,
                    alive: &al,
                    merges: asks,
                    ..Default::default()
                },
                &by_load(),
            )
            .unwrap()
        };
        // Shards of different partitions never merge.
        assert!(merge(&[across]).is_none());
        let d = merge(&[(left, right)]).unwrap().map;
        assert_eq!(d.targets().len(), 1);
        assert_eq!(d.targets()[0].range, s0);
        assert_eq!(d.targets()[0].replicas, split.shards()[0].replicas);
        // Not before its holder is ready; then one shard replaces both.
        assert!(step_with(&d, &n, &al, &[], &by_load()).is_none());
        let ready = vec![Ready {
            node: d.targets()[0].replicas[0].clone(),
            range: s0,
            epoch: d.epoch(),
        }];
        let done = step_with(&d, &n, &al, &ready, &by_load()).unwrap();
        assert_eq!(done.shards().len(), 2);
        assert_eq!(done.shards()[0].range, s0);
        assert!(done.targets().is_empty());
    }

    fn tiered(id: &str, tiers: &[Tier]) -> NodeSpec {
        NodeSpec::new(id).with_tiers(tiers.iter().copied())
    }

    fn tier_step(
        map: &ShardMap,
        n: &[NodeSpec],
        ready: &[Ready],
        tiers: &[(RingRange, Tier)],
        config: &ControlConfig,
    ) -> Outcome {
        let asks: Vec<TierAsk> = tiers.iter().copied().map(TierAsk::from).collect();
        hinted_step(map, n, ready, &asks, config)
    }

    fn hinted_step(
        map: &ShardMap,
        n: &[NodeSpec],
        ready: &[Ready],
        tiers: &[TierAsk],
        config: &ControlConfig,
    ) -> Outcome {
        let ids: Vec<String> = n.iter().map(|n| n.id.clone()).collect();
        decide(
            "c",
            &ControlInput {
                current: Some(map),
                placeable: n,
                alive: &ids,
                ready,
                tiers,
                ..Default::default()
            },
            config,
        )
        .unwrap()
    }

    fn ask(shard: RingRange, tier: Tier, on: &[&str]) -> TierAsk {
        TierAsk {
            shard,
            tier,
            on: on.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Three hot nodes, two cold ones, every shard cold on the cold nodes: the setting of
    /// the planner's promotions under tier roles.
    fn cold_cluster() -> (Vec<NodeSpec>, ShardMap) {
        let n = vec![
            tiered("h1", &[Tier::Hot]),
            tiered("h2", &[Tier::Hot]),
            tiered("h3", &[Tier::Hot]),
            tiered("c1", &[Tier::Cold]),
            tiered("c2", &[Tier::Cold]),
        ];
        let cold_only: Vec<NodeSpec> = n[3..].to_vec();
        let map = first(&cold_only, 4, 1);
        assert!(map.shards().iter().all(|s| s.tier == Tier::Cold));
        (n, map)
    }

    #[test]
    fn a_hinted_promotion_lands_on_the_hinted_nodes() {
        let (n, map) = cold_cluster();
        let s0 = map.shards()[0].range;
        let config = ControlConfig::default();
        // Without a hint the rules choose (the least loaded hot node: h1, by name).
        let plain = tier_step(&map, &n, &[], &[(s0, Tier::Hot)], &config)
            .decision
            .unwrap()
            .map;
        assert_eq!(plain.targets()[0].replicas, ["h1"]);
        // With one, the shard goes where the planner charged the budget.
        let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Hot, &["h3"])], &config)
            .decision
            .unwrap();
        assert_eligible(&d.map, &n);
        let t = &d.map.targets()[0];
        assert_eq!(
            (t.range, t.tier, &t.replicas[..]),
            (s0, Tier::Hot, &["h3".to_string()][..])
        );
        // It serves cold from its holder meanwhile, and switches there when ready.
        assert_eq!(d.map.shards(), map.shards());
        let done = hinted_step(
            &d.map,
            &n,
            &all_ready(&d.map),
            &[ask(s0, Tier::Hot, &["h3"])],
            &config,
        )
        .decision
        .unwrap()
        .map;
        let s = done.shards().iter().find(|s| s.range == s0).unwrap();
        assert_eq!(
            (s.tier, &s.replicas[..]),
            (Tier::Hot, &["h3".to_string()][..])
        );
        // Two replicas: both hinted nodes, in the hint's order.
        let two = ControlConfig {
            replication: 2,
            ..ControlConfig::default()
        };
        let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Hot, &["h3", "h2"])], &two)
            .decision
            .unwrap();
        assert_eq!(d.map.targets()[0].replicas, ["h3", "h2"]);
        // A hint longer than the copies wanted is cut; one shorter is filled by the rules.
        let d = hinted_step(
            &map,
            &n,
            &[],
            &[ask(s0, Tier::Hot, &["h3", "h2", "h1"])],
            &config,
        )
        .decision
        .unwrap();
        assert_eq!(d.map.targets()[0].replicas, ["h3"]);
        let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Hot, &["h3"])], &two)
            .decision
            .unwrap();
        let r = &d.map.targets()[0].replicas;
        assert_eq!((r.len(), r[0].as_str()), (2, "h3"), "{r:?}");
        assert_ne!(r[1], "h3");
        assert_eligible(&d.map, &n);
    }

    #[test]
    fn a_dead_or_ineligible_hint_falls_back_to_the_rules_choice() {
        let (n, map) = cold_cluster();
        let s0 = map.shards()[0].range;
        let config = ControlConfig::default();
        let plain = tier_step(&map, &n, &[], &[(s0, Tier::Hot)], &config)
            .decision
            .unwrap()
            .map;
        // A node that is not placeable (dead, leaving, unknown), one that may not hold
        // hot, an empty hint: the rules' own choice.
        for on in [&["h9"][..], &["c2"], &[], &["c1", "nope"]] {
            let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Hot, on)], &config)
                .decision
                .unwrap()
                .map;
            assert_eq!(d, plain, "hint {on:?}");
        }
        // The usable part of a hint is kept, the rest filled by the rules.
        let two = ControlConfig {
            replication: 2,
            ..ControlConfig::default()
        };
        let d = hinted_step(
            &map,
            &n,
            &[],
            &[ask(s0, Tier::Hot, &["c1", "h3", "h9"])],
            &two,
        )
        .decision
        .unwrap();
        let r = &d.map.targets()[0].replicas;
        assert_eq!((r.len(), r[0].as_str()), (2, "h3"), "{r:?}");
        assert_eligible(&d.map, &n);
        // h3 dies while the hinted target is built: abandoned, and re-placed by the rules.
        let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Hot, &["h3"])], &config)
            .decision
            .unwrap()
            .map;
        let without_h3: Vec<NodeSpec> = n.iter().filter(|x| x.id != "h3").cloned().collect();
        let again = hinted_step(
            &d,
            &without_h3,
            &[],
            &[ask(s0, Tier::Hot, &["h3"])],
            &config,
        )
        .decision
        .unwrap()
        .map;
        assert_eligible(&again, &without_h3);
        assert_eq!(again.targets().len(), 1, "{:?}", again.targets());
        assert_ne!(again.targets()[0].replicas, ["h3"]);
    }

    #[test]
    fn a_hint_is_ignored_in_place_and_under_a_strategy() {
        // Holders that may hold the new tier switch in place: the hint moves nothing.
        let n = nodes(&["a", "b"]);
        let map = first(&n, 2, 1);
        let s0 = map.shards()[0].range;
        let config = ControlConfig::default();
        let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Cold, &["b"])], &config)
            .decision
            .unwrap();
        assert!(d.map.targets().is_empty());
        assert_eq!(d.map.shards()[0].replicas, map.shards()[0].replicas);
        // Under a strategy, the strategy places (it would move the shard back otherwise).
        let (n, map) = cold_cluster();
        let s0 = map.shards()[0].range;
        let hashed = ControlConfig {
            strategy: Some(Strategy::HashMod),
            ..ControlConfig::default()
        };
        let plain = tier_step(&map, &n, &[], &[(s0, Tier::Hot)], &hashed)
            .decision
            .unwrap()
            .map;
        for on in ["h1", "h2", "h3"] {
            let d = hinted_step(&map, &n, &[], &[ask(s0, Tier::Hot, &[on])], &hashed)
                .decision
                .unwrap()
                .map;
            assert_eq!(d, plain);
        }
    }

    /// Every serving shard and every target lies only on nodes that may hold its tier.
    fn assert_eligible(map: &ShardMap, n: &[NodeSpec]) {
        let spec = |id: &str| n.iter().find(|x| x.id == id).unwrap();
        for s in map.shards() {
            assert!(!s.replicas.is_empty(), "{s:?}");
            for r in &s.replicas {
                assert!(spec(r).may_hold(s.tier), "{s:?} on {:?}", spec(r));
            }
        }
        for t in map.targets() {
            assert!(!t.replicas.is_empty(), "{t:?}");
            for r in &t.replicas {
                assert!(spec(r).may_hold(t.tier), "{t:?} on {:?}", spec(r));
            }
        }
    }

    #[test]
    fn shards_start_on_nodes_that_may_hold_hot_or_at_the_hottest_tier_there_is() {
        let n = vec![tiered("h", &[Tier::Hot]), tiered("c", &[Tier::Cold])];
        let map = first(&n, 4, 1);
        assert!(map.shards().iter().all(|s| s.replicas == ["h"]));
        assert!(map.shards().iter().all(|s| s.tier == Tier::Hot));
        // Replication is capped by the nodes that may hold the tier.
        let map = first(&n, 4, 2);
        assert!(map.shards().iter().all(|s| s.replicas == ["h"]));
        // A cluster of cold nodes starts its shards cold (never an empty placement).
        let n = vec![tiered("c1", &[Tier::Cold]), tiered("c2", &[Tier::Cold])];
        let map = first(&n, 4, 1);
        assert!(map.shards().iter().all(|s| s.tier == Tier::Cold));
        assert_eq!(held_by(&map, "c1"), 2);
        assert_eq!(held_by(&map, "c2"), 2);
    }

    #[test]
    fn a_tier_its_holders_cannot_serve_moves_the_shard_and_it_serves_meanwhile() {
        let n = vec![
            tiered("h", &[Tier::Hot]),
            tiered("c1", &[Tier::Cold]),
            tiered("c2", &[Tier::Cold]),
        ];
        let config = ControlConfig::default();
        let map = first(&n, 4, 1);
        let s0 = map.shards()[0].range;
        let ask = [(s0, Tier::Cold)];
        let out = tier_step(&map, &n, &[], &ask, &config);
        assert!(out.held_back.is_empty(), "{:?}", out.held_back);
        let d = out.decision.expect("a move begins");
        assert_eligible(&d.map, &n);
        // The shard serves from the hot node, at hot, while the cold copy is built.
        assert_eq!(d.map.shards(), map.shards());
        assert_eq!(d.map.targets().len(), 1, "{:?}", d.map.targets());
        let t = &d.map.targets()[0];
        assert_eq!((t.range, t.tier), (s0, Tier::Cold));
        assert_eq!(t.replicas.len(), 1);
        assert!(t.replicas[0].starts_with('c'), "{t:?}");
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("tier hot -> cold moves it")),
            "{:?}",
            d.reasons
        );
        // Not before the new holder is ready; the ask is still pending meanwhile.
        assert!(tier_step(&d.map, &n, &[], &ask, &config).decision.is_none());
        let done = tier_step(&d.map, &n, &all_ready(&d.map), &ask, &config)
            .decision
            .expect("switched");
        assert_eligible(&done.map, &n);
        assert!(done.map.targets().is_empty());
        assert_eq!(done.map.shards()[0].tier, Tier::Cold);
        assert_eq!(done.map.shards()[0].replicas, t.replicas);
        assert_eq!(
            done.map.shards()[1..],
            map.shards()[1..],
            "others untouched"
        );
        // Settled: the ask is done, and nothing moves back.
        assert!(tier_step(&done.map, &n, &[], &[], &config)
            .decision
            .is_none());
    }

    #[test]
    fn asking_back_for_the_old_tier_abandons_the_move() {
        let n = vec![tiered("h", &[Tier::Hot]), tiered("c", &[Tier::Cold])];
        let config = ControlConfig::default();
        let map = first(&n, 2, 1);
        let s0 = map.shards()[0].range;
        let moving = tier_step(&map, &n, &[], &[(s0, Tier::Cold)], &config)
            .decision
            .unwrap()
            .map;
        assert_eq!(moving.targets()[0].replicas, ["c"]);
        let back = tier_step(&moving, &n, &[], &[(s0, Tier::Hot)], &config)
            .decision
            .expect("the cold copy is abandoned")
            .map;
        assert!(back.targets().is_empty(), "{:?}", back.targets());
        assert_eq!(back.shards(), map.shards());
    }

    #[test]
    fn holders_that_may_hold_the_new_tier_switch_in_place() {
        // Without tier roles (every deployment before them) and with both roles.
        for n in [
            nodes(&["a", "b"]),
            vec![
                tiered("a", &[Tier::Hot, Tier::Cold]),
                tiered("b", &[Tier::Hot, Tier::Cold]),
            ],
        ] {
            let map = first(&n, 2, 2);
            let two = ControlConfig {
                replication: 2,
                ..ControlConfig::default()
            };
            let s0 = map.shards()[0].range;
            let d = tier_step(&map, &n, &[], &[(s0, Tier::Cold)], &two)
                .decision
                .unwrap();
            assert!(d.map.targets().is_empty());
            assert_eq!(d.map.shards()[0].tier, Tier::Cold);
            assert_eq!(d.map.shards()[0].replicas, map.shards()[0].replicas);
            // A cold node also holds the archive tier: archiving is in place too.
            let d = tier_step(&d.map, &n, &[], &[(s0, Tier::Archive)], &two)
                .decision
                .unwrap();
            assert!(d.map.targets().is_empty());
            assert_eq!(d.map.shards()[0].tier, Tier::Archive);
        }
    }

    #[test]
    fn a_tier_no_live_node_may_hold_changes_nothing_and_says_why() {
        let n = vec![tiered("h", &[Tier::Hot]), tiered("w", &[Tier::Warm])];
        let map = first(&n, 2, 1);
        let s0 = map.shards()[0].range;
        for config in [
            ControlConfig::default(),
            by_load(),
            ControlConfig {
                strategy: Some(Strategy::ConsistentHash { vnodes: 50 }),
                ..ControlConfig::default()
            },
        ] {
            let out = tier_step(&map, &n, &[], &[(s0, Tier::Cold)], &config);
            assert!(out.decision.is_none(), "{:?}", out.decision);
            assert_eq!(out.held_back.len(), 1, "{:?}", out.held_back);
            let why = &out.held_back[0];
            assert!(
                why.contains("no live data node may hold cold") && why.contains("`cold` role"),
                "{why}"
            );
        }
        // A shard whose only eligible node died stays listed where it is, and says so.
        let only_warm = vec![tiered("w", &[Tier::Warm])];
        let out = tier_step(&map, &only_warm, &[], &[], &ControlConfig::default());
        assert!(out.decision.is_none(), "{:?}", out.decision);
        assert!(
            out.held_back
                .iter()
                .any(|w| w.contains("no live data node may hold tier hot")),
            "{:?}",
            out.held_back
        );
    }

    #[test]
    fn splits_merges_and_moves_choose_only_eligible_nodes() {
        let n = vec![
            tiered("h1", &[Tier::Hot]),
            tiered("h2", &[Tier::Hot]),
            tiered("c", &[Tier::Cold]),
        ];
        let map = first(&n, 2, 1);
        let s0 = map.shards()[0].range;
        let at = s0.start + (s0.end.unwrap() - s0.start) / 2;
        let ids = alive(&["h1", "h2", "c"]);
        // The planner names the cold node for a hot shard's right half: not taken.
        let d = next_map(
            "c",
            &ControlInput {
                current: Some(&map),
                placeable: &n,
                alive: &ids,
                splits: &[SplitAsk {
                    shard: s0,
                    at,
                    place: Some("c".into()),
                }],
                ..Default::default()
            },
            &ControlConfig::default(),
        )
        .unwrap()
        .unwrap();
        assert_eligible(&d.map, &n);
        assert_eq!(d.map.targets().len(), 2);
        // A planner's move to a node that may not hold the tier is not carried out.
        let s = &map.shards()[0];
        let d = next_map(
            "c",
            &ControlInput {
                current: Some(&map),
                placeable: &n,
                alive: &ids,
                moves: &[MoveAsk {
                    shard: s.range,
                    from: s.replicas[0].clone(),
                    to: "c".into(),
                }],
                ..Default::default()
            },
            &by_load(),
        )
        .unwrap();
        assert!(d.is_none(), "{d:?}");
    }

    /// Subsets of {hot, warm, cold} by bit.
    fn tiers_of(bits: u8) -> Vec<Tier> {
        [Tier::Hot, Tier::Warm, Tier::Cold]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, t)| t)
            .collect()
    }

    const TIERS: [Tier; 4] = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// A tier move with a hint: its target holds the usable hinted nodes (placeable,
        /// may hold the tier) first, up to the copies wanted, and as many copies as
        /// without the hint; never a node that may not hold the tier. A hint with no
        /// usable node, or on a change in place, changes nothing.
        #[test]
        fn a_hinted_move_takes_the_usable_hinted_nodes_first(
            roles in proptest::collection::vec(0u8..8, 2..7),
            partitions in 1u32..6,
            replication in 1usize..4,
            by_load in proptest::bool::ANY,
            pick in 0usize..8,
            tier in 0usize..3,
            hint in proptest::collection::vec(0usize..9, 0..5),
            dead in proptest::collection::vec(0usize..7, 0..3),
        ) {
            let all: Vec<NodeSpec> = roles
                .iter()
                .enumerate()
                .map(|(i, bits)| tiered(&format!("n{i}"), &tiers_of(*bits)))
                .collect();
            let config = ControlConfig {
                replication,
                max_moves: 8,
                strategy: None,
                by_load,
            };
            let ids: Vec<String> = all.iter().map(|n| n.id.clone()).collect();
            let Some(first) = next_map(
                "c",
                &ControlInput { partitions, placeable: &all, alive: &ids, ..Default::default() },
                &config,
            )
            .unwrap() else {
                return Ok(());
            };
            let map = first.map;
            // Some nodes die (not those holding the shard's only copy: that is another rule).
            let tier = TIERS[tier];
            let shard = map.shards()[pick % map.shards().len()].clone();
            let live: Vec<NodeSpec> = all
                .iter()
                .enumerate()
                .filter(|(i, x)| !dead.contains(i) || shard.replicas.contains(&x.id))
                .map(|(_, x)| x.clone())
                .collect();
            // Hinted names: node ids (some dead, some ineligible) and one unknown name.
            let on: Vec<String> = hint.iter().map(|h| format!("n{h}")).collect();
            let plain = hinted_step(&map, &live, &[], &[TierAsk::from((shard.range, tier))], &config);
            let with = hinted_step(&map, &live, &[], &[TierAsk { shard: shard.range, tier, on: on.clone() }], &config);
            let target = |o: &Outcome| {
                o.decision.as_ref().and_then(|d| {
                    d.map.targets().iter().find(|t| t.range == shard.range).cloned()
                })
            };
            let usable: Vec<&String> = on
                .iter()
                .filter(|h| live.iter().any(|x| &x.id == *h && x.may_hold(tier)))
                .collect();
            match (target(&plain), target(&with)) {
                (None, None) => {
                    // No move (in place, or no eligible node): the hint changes nothing.
                    let a = plain.decision.map(|d| d.map);
                    let b = with.decision.map(|d| d.map);
                    proptest::prop_assert_eq!(a, b);
                }
                (Some(p), Some(w)) => {
                    proptest::prop_assert_eq!(p.replicas.len(), w.replicas.len());
                    proptest::prop_assert_eq!(p.tier, w.tier);
                    for r in &w.replicas {
                        let spec = live.iter().find(|x| x.id == *r).unwrap();
                        proptest::prop_assert!(spec.may_hold(w.tier), "{w:?}");
                    }
                    let mut distinct = w.replicas.clone();
                    distinct.sort();
                    distinct.dedup();
                    proptest::prop_assert_eq!(distinct.len(), w.replicas.len());
                    // A hint places only a tier move (some holder may not hold the tier);
                    // a change in place, and a re-placement after it, are the rules' own.
                    let moves = shard.tier != tier
                        && shard.replicas.iter().any(|r| live.iter().any(|x| x.id == *r && !x.may_hold(tier)));
                    if usable.is_empty() || !moves {
                        proptest::prop_assert_eq!(&p, &w);
                    } else {
                        let mut firsts: Vec<&String> = Vec::new();
                        for u in &usable {
                            if !firsts.contains(u) {
                                firsts.push(u);
                            }
                        }
                        firsts.truncate(w.replicas.len());
                        let head: Vec<&String> = w.replicas.iter().take(firsts.len()).collect();
                        proptest::prop_assert_eq!(head, firsts);
                    }
                }
                (p, w) => proptest::prop_assert!(false, "a hint changed whether it moves: {p:?} / {w:?}"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Whatever the nodes' tier roles, strategy and tier asks: no shard and no target
        /// ever lies on a node that may not hold its tier; a tier some live node may hold
        /// is reached (holders switched when ready); one no live node may hold changes
        /// nothing and is reported.
        #[test]
        fn no_shard_is_ever_placed_on_a_node_that_may_not_hold_its_tier(
            roles in proptest::collection::vec(0u8..8, 1..6),
            partitions in 1u32..7,
            replication in 1usize..4,
            strategy in 0usize..5,
            asks in proptest::collection::vec((0usize..8, 0usize..4), 1..6),
        ) {
            let n: Vec<NodeSpec> = roles
                .iter()
                .enumerate()
                .map(|(i, bits)| tiered(&format!("n{i}"), &tiers_of(*bits)))
                .collect();
            let config = ControlConfig {
                replication,
                max_moves: 3,
                strategy: match strategy {
                    0 | 1 => None,
                    2 => Some(Strategy::ConsistentHash { vnodes: 20 }),
                    3 => Some(Strategy::HashMod),
                    _ => Some(Strategy::Range),
                },
                by_load: strategy == 1,
            };
            let ids: Vec<String> = n.iter().map(|n| n.id.clone()).collect();
            let mut map = next_map(
                "c",
                &ControlInput { partitions, placeable: &n, alive: &ids, ..Default::default() },
                &config,
            )
            .unwrap()
            .unwrap()
            .map;
            assert_eligible(&map, &n);
            for (pick, tier) in asks {
                let tier = TIERS[tier];
                let range = map.shards()[pick % map.shards().len()].range;
                let ask = [(range, tier)];
                let possible = n.iter().any(|x| x.may_hold(tier));
                let before = map.clone();
                // Step with every target ready until the map settles.
                let mut settled = false;
                let mut last = Outcome::default();
                for _ in 0..32 {
                    last = tier_step(&map, &n, &all_ready(&map), &ask, &config);
                    match &last.decision {
                        Some(d) => {
                            assert_eligible(&d.map, &n);
                            map = d.map.clone();
                        }
                        None => {
                            settled = true;
                            break;
                        }
                    }
                }
                proptest::prop_assert!(settled, "never settled: {map:?}");
                let shard = map.shards().iter().find(|s| s.range == range).unwrap();
                if possible {
                    proptest::prop_assert_eq!(shard.tier, tier);
                } else {
                    let was = before.shards().iter().find(|s| s.range == range).unwrap();
                    proptest::prop_assert_eq!(shard, was);
                    if was.tier != tier {
                        proptest::prop_assert!(
                            last.held_back.iter().any(|w| w.contains("waits")),
                            "{:?}", last.held_back
                        );
                    }
                }
            }
        }
    }
}
