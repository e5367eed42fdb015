//! The kinetic decision engine: split, merge, migrate or stay, as pure functions of a
//! [`HotnessSnapshot`], a [`DecideConfig`], the [`History`] of past actions and optional
//! hotness forecasts. Its output is a list of [`PlanChange`]s whose reasons carry the
//! numbers that led to them.
//!
//! This module owns the rules (seed §4.4) and the cost model; it does not compute hotness
//! ([`crate::hotness`]), forecast it ([`crate::predict`]) nor apply a plan (the cluster).
//!
//! Rules, in order:
//! 1. **Split** a shard that is hot (hotness > `split_hotness`, or forecast to be) or too
//!    large (> `split_vectors`), when the benefit (latency saved × queries over the payback
//!    horizon) exceeds the cost (moving half its bytes over the network + rebuilding half
//!    its index). The split point divides the last minute's load evenly between the halves
//!    (from the sub-range histogram); a shard whose load is dominated by one tenant is split
//!    inside that tenant's range, by id (the low 32 bits of the ring position).
//!    The right half goes to the least loaded other node (named in the change's `place`),
//!    and the loads are updated as if it had moved before the next rule looks at them.
//! 2. **Migrate** a shard off a node whose load passes `migrate_load`, or whose load
//!    passes `balance_ratio` × the mean node load (when above `balance_min_load`), to the
//!    least loaded node: the shard whose move leaves the lower of the two nodes' maximum,
//!    when it fits there and benefit > cost.
//! 3. **Merge** two adjacent shards of one partition that are both cold (hotness <
//!    `merge_hotness`) and small (< `merge_vectors` each), when the merged shard stays far
//!    from the split threshold.
//!
//! With `indexes_ship` (moves by snapshot; the live planner's setting unless
//! `--no-snapshot-moves`) the cost of a split or a move is the bytes sent, with no rebuild
//! on the new holder; a merge still rebuilds.
//!
//! **Load** is measured in one of two units ([`LoadBasis`]): operations per second (the
//! simulator, where every operation costs the same), or busy time — the milliseconds of
//! service per second a shard's queries took over the last minute (the live planner,
//! where a query on a large shard costs more than one on a small shard).
//!
//! No thrashing: the split and merge thresholds are far apart (hysteresis), a range acted
//! on is left alone for `min_interval_s`, and at most `max_in_flight` changes run at once.

use std::collections::BTreeMap;

use hektor_topics::record::{PlanAction, PlanChange, RingRange};

use crate::driver::{HotnessSnapshot, ShardMetrics};
use crate::hotness::{sub_range_start, SUB_RANGES};

/// Thresholds and cost-model constants (seed §4.4 defaults where the seed has them).
#[derive(Debug, Clone, PartialEq)]
pub struct DecideConfig {
    /// Split when hotness passes this (seed: 100).
    pub split_hotness: f64,
    /// Split when a shard holds more vectors than this (seed: 50M).
    pub split_vectors: u64,
    /// Never split a shard smaller than this (its halves would be merge candidates).
    pub min_split_vectors: u64,
    /// Merge candidates are below this hotness (seed: 5)...
    pub merge_hotness: f64,
    /// ...and hold fewer vectors than this (seed: 1M).
    pub merge_vectors: u64,
    /// Migrate off a node whose load passes this fraction of capacity (seed: 0.8).
    pub migrate_load: f64,
    /// A target node must stay below this load after taking a shard.
    pub target_load: f64,
    /// Seconds a range is left alone after an action on it.
    pub min_interval_s: u64,
    /// Changes allowed in flight at once.
    pub max_in_flight: usize,
    /// Bytes per stored vector (768-dim f32 + overhead by default).
    pub bytes_per_vector: f64,
    /// Network bandwidth for moving shards, bytes/s (10 Gbit/s).
    pub network_bytes_per_s: f64,
    /// Index build rate, vectors/s.
    pub index_build_vectors_per_s: f64,
    /// Fraction of p99 a split saves on the split shard's queries (seed: 0.5).
    pub split_latency_gain: f64,
    /// Seconds over which the benefit of a change is counted.
    pub payback_horizon_s: f64,
    /// Value of one query-millisecond saved, in cost units (seconds of node time).
    pub value_per_ms_saved: f64,
    /// Value of removing one shard (bookkeeping, memory), in cost units per horizon.
    pub shard_overhead_value: f64,
    /// Two cold shards merge only if the merged hotness stays below this fraction of
    /// `split_hotness` (part of the hysteresis).
    pub merge_headroom: f64,
    /// A tenant whose queries are at least this share of its shard's is split by id.
    pub tenant_share: f64,
    /// How far ahead (seconds) forecasts look; splits are scheduled that far ahead.
    pub lookahead_s: u64,
    /// Migrate off a node whose load passes this multiple of the mean node load...
    pub balance_ratio: f64,
    /// ...when its load is at least this (an idle cluster is not rebalanced).
    pub balance_min_load: f64,
    /// What a shard's and a node's load count (see the module doc).
    pub load_basis: LoadBasis,
    /// The collection's partitions: shards merge only inside one (0: any adjacent pair).
    pub partitions: u32,
    /// A move must lower the busier of its two nodes' loads by at least this fraction of
    /// the source's load (no moves for marginal gains).
    pub move_min_gain: f64,
    /// Seconds a node is left alone (no move from or to it) after a move touched it, so
    /// the measured loads catch up with the move before the next one (no overshoot); with
    /// 0 (loads known at once, as in the simulator) a round may move several shards off one
    /// node.
    pub node_settle_s: u64,
    /// Moves and splits ship the shard's files, index included (snapshots): the new
    /// holder does not rebuild, so their cost is the bytes sent ([`DecideConfig::ship_cost`]).
    /// Merges still rebuild (no one holder has the merged range).
    pub indexes_ship: bool,
}

/// The unit of load (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBasis {
    /// Queries and writes per second over the last minute.
    #[default]
    Ops,
    /// Milliseconds of query service per second over the last minute.
    BusyMs,
}

impl Default for DecideConfig {
    fn default() -> Self {
        DecideConfig {
            split_hotness: 100.0,
            split_vectors: 50_000_000,
            min_split_vectors: 1_000_000,
            merge_hotness: 5.0,
            merge_vectors: 1_000_000,
            migrate_load: 0.8,
            target_load: 0.7,
            min_interval_s: 600,
            max_in_flight: 8,
            bytes_per_vector: 3_200.0,
            network_bytes_per_s: 1.25e9,
            index_build_vectors_per_s: 50_000.0,
            split_latency_gain: 0.5,
            payback_horizon_s: 600.0,
            value_per_ms_saved: 1e-3,
            shard_overhead_value: 50.0,
            merge_headroom: 0.5,
            tenant_share: 0.5,
            lookahead_s: 600,
            balance_ratio: 1.25,
            balance_min_load: 0.05,
            load_basis: LoadBasis::Ops,
            partitions: 0,
            move_min_gain: 0.1,
            node_settle_s: 20,
            indexes_ship: false,
        }
    }
}

impl DecideConfig {
    /// Seconds of work to move `vectors` over the network and rebuild their index.
    pub fn move_cost(&self, vectors: u64) -> f64 {
        let v = vectors as f64;
        v * self.bytes_per_vector / self.network_bytes_per_s + v / self.index_build_vectors_per_s
    }

    /// Seconds of work to move `fraction` of shard `s`: its measured bytes when the
    /// holders report them, else `bytes_per_vector` per vector.
    pub fn shard_move_cost(&self, s: &ShardMetrics, fraction: f64) -> f64 {
        let fraction = fraction.clamp(0.0, 1.0);
        let vectors = s.size_vectors as f64 * fraction;
        let bytes = s
            .size_bytes
            .map_or(vectors * self.bytes_per_vector, |b| b as f64 * fraction);
        bytes / self.network_bytes_per_s + vectors / self.index_build_vectors_per_s
    }

    /// Seconds of work to give a new holder the part of shard `s` it takes (`fraction`
    /// of it): with [`DecideConfig::indexes_ship`], the whole shard's bytes cross the
    /// network (a snapshot is of the whole shard; a split's half trims the rest) and
    /// nothing is rebuilt; otherwise [`DecideConfig::shard_move_cost`].
    pub fn ship_cost(&self, s: &ShardMetrics, fraction: f64) -> f64 {
        if !self.indexes_ship {
            return self.shard_move_cost(s, fraction);
        }
        let bytes = s
            .size_bytes
            .map_or(s.size_vectors as f64 * self.bytes_per_vector, |b| b as f64);
        bytes / self.network_bytes_per_s
    }

    /// A shard's load in this config's [`LoadBasis`].
    pub fn shard_load(&self, s: &ShardMetrics) -> f64 {
        let minute = crate::hotness::WINDOWS[0] as f64;
        match self.load_basis {
            LoadBasis::Ops => (s.queries_1m + s.writes_1m) as f64 / minute,
            LoadBasis::BusyMs => s.queries_1m as f64 * s.avg_latency_ms / minute,
        }
    }
}

/// What the engine remembers between rounds: recent actions and changes in flight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The last shard-map epoch issued.
    pub epoch: u64,
    /// Ranges acted on, with the second of the action.
    pub recent: Vec<(RingRange, u64)>,
    /// Changes in flight, with the second they are expected to complete.
    pub in_flight: Vec<(PlanChange, u64)>,
    /// Nodes a move (or a split's placement) touched, with the second of the action.
    pub nodes: Vec<(String, u64)>,
}

impl History {
    /// Remember a change the caller starts applying at `now`, done `duration_s` later
    /// (e.g. [`DecideConfig::move_cost`] of the vectors it moves).
    pub fn record(&mut self, change: &PlanChange, now: u64, duration_s: u64) {
        self.epoch = self.epoch.max(change.epoch);
        for r in touched(&change.action) {
            self.recent.push((r, now));
        }
        if let PlanAction::Move { from, to, .. } = &change.action {
            self.nodes.push((from.clone(), now));
            self.nodes.push((to.clone(), now));
        }
        if let Some(place) = &change.place {
            self.nodes.push((place.clone(), now));
        }
        self.in_flight.push((change.clone(), now + duration_s));
    }

    /// Whether a move touched `node` less than `node_settle_s` ago.
    fn settling(&self, node: &str, now: u64, config: &DecideConfig) -> bool {
        self.nodes
            .iter()
            .any(|(n, t)| n == node && now < t.saturating_add(config.node_settle_s))
    }

    /// Forget what is done and what is older than the minimum interval.
    pub fn expire(&mut self, now: u64, config: &DecideConfig) {
        self.in_flight.retain(|(_, done)| *done > now);
        self.recent
            .retain(|(_, t)| now < t.saturating_add(config.min_interval_s));
        self.nodes
            .retain(|(_, t)| now < t.saturating_add(config.node_settle_s));
    }

    fn blocked(&self, range: RingRange, now: u64, config: &DecideConfig) -> bool {
        self.recent
            .iter()
            .any(|(r, t)| now < t.saturating_add(config.min_interval_s) && overlaps(*r, range))
    }

    fn in_flight_at(&self, now: u64) -> usize {
        self.in_flight
            .iter()
            .filter(|(_, done)| *done > now)
            .count()
    }
}

/// The ranges a change acts on.
fn touched(action: &PlanAction) -> Vec<RingRange> {
    match action {
        PlanAction::Split { shard, .. } => vec![*shard],
        PlanAction::Merge { left, right } => vec![*left, *right],
        PlanAction::Move { shard, .. } => vec![*shard],
        PlanAction::SetTier { shard, .. } => vec![*shard],
    }
}

fn overlaps(a: RingRange, b: RingRange) -> bool {
    let a_end = a.end.map_or(u128::MAX, u128::from);
    let b_end = b.end.map_or(u128::MAX, u128::from);
    (a.start as u128) < b_end && (b.start as u128) < a_end
}

/// Inputs of one round besides the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Forecasts {
    /// Forecast hotness per shard, `lookahead_s` ahead.
    pub hotness: BTreeMap<u32, f64>,
    /// Forecast load (fraction of capacity) per node, `lookahead_s` ahead: a node is
    /// relieved when its current or its forecast load passes `migrate_load`.
    pub node_load: BTreeMap<String, f64>,
}

/// Where to split a shard, and why there.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPoint {
    pub at: u64,
    /// Share of the last minute's load left of `at` (0..1).
    pub left_share: f64,
    /// The split is inside a dominant tenant's range.
    pub tenant: bool,
}

/// The split point of a shard: inside a dominant tenant (by id), else the sub-range
/// boundary that divides the last minute's load most evenly, else the middle.
pub fn split_point(shard: &ShardMetrics, config: &DecideConfig) -> Option<SplitPoint> {
    let range = shard.range;
    let inside = |p: u64| p > range.start && range.end.is_none_or(|e| p < e);
    if let Some(t) = &shard.top_tenant {
        let share = t.queries_1m as f64 / shard.queries_1m.max(1) as f64;
        let mid = t.start | 0x8000_0000;
        if share >= config.tenant_share && inside(mid) {
            return Some(SplitPoint {
                at: mid,
                left_share: 0.5,
                tenant: true,
            });
        }
    }
    let total: u64 = shard.sub_load.iter().sum();
    if total > 0 {
        let mut best: Option<(u32, u64, f64)> = None;
        let mut left = 0u64;
        for k in 1..SUB_RANGES {
            left += shard.sub_load.get(k as usize - 1).copied().unwrap_or(0);
            let imbalance = (2.0 * left as f64 - total as f64).abs();
            if best.is_none_or(|(_, _, b)| imbalance < b) {
                best = Some((k, left, imbalance));
            }
        }
        if let Some((k, left, _)) = best {
            let at = sub_range_start(range, k);
            if inside(at) {
                return Some(SplitPoint {
                    at,
                    left_share: left as f64 / total as f64,
                    tenant: false,
                });
            }
        }
    }
    let at = sub_range_start(range, SUB_RANGES / 2);
    inside(at).then_some(SplitPoint {
        at,
        left_share: 0.5,
        tenant: false,
    })
}

fn change(
    collection: &str,
    history_epoch: &mut u64,
    action: PlanAction,
    reason: String,
    now: u64,
) -> PlanChange {
    *history_epoch += 1;
    PlanChange {
        collection: collection.to_string(),
        epoch: *history_epoch,
        action,
        reason,
        time_ms: now * 1000,
        place: None,
    }
}

/// One round of decisions for `collection` at `now` (seconds).
pub fn decide(
    collection: &str,
    snapshot: &HotnessSnapshot,
    config: &DecideConfig,
    history: &History,
    forecasts: Option<&Forecasts>,
    now: u64,
) -> Vec<PlanChange> {
    let mut out = Vec::new();
    let mut epoch = history.epoch;
    let mut budget = config
        .max_in_flight
        .saturating_sub(history.in_flight_at(now));
    let mut acted: Vec<RingRange> = Vec::new();
    let free = |r: RingRange, acted: &[RingRange]| {
        !history.blocked(r, now, config) && !acted.iter().any(|a| overlaps(*a, r))
    };

    // Node loads (current, or forecast when higher) and capacities in load units.
    let mut loads: BTreeMap<String, f64> = snapshot
        .nodes
        .iter()
        .map(|(n, l)| {
            let forecast = forecasts
                .and_then(|f| f.node_load.get(n))
                .copied()
                .unwrap_or(0.0);
            (n.clone(), l.load.max(forecast))
        })
        .collect();
    let capacity_of = |node: &str| -> f64 {
        snapshot
            .nodes
            .get(node)
            .map(|l| {
                if l.load > 0.0 {
                    l.ops_per_s / l.load
                } else {
                    0.0
                }
            })
            .unwrap_or(0.0)
    };
    // A node with no load yet has no measured capacity: assume the largest one seen.
    let widest = snapshot
        .nodes
        .keys()
        .map(|n| capacity_of(n))
        .fold(0.0, f64::max);
    let capacity_ops = |node: &str| -> f64 {
        let c = capacity_of(node);
        if c > 0.0 {
            c
        } else {
            widest
        }
    };

    // 1. Splits, hottest first.
    let mut shards: Vec<&ShardMetrics> = snapshot.shards.values().collect();
    shards.sort_by(|a, b| b.hotness.total_cmp(&a.hotness));
    for s in &shards {
        if budget == 0 {
            break;
        }
        let forecast = forecasts.and_then(|f| f.hotness.get(&s.shard)).copied();
        let hot_now = s.hotness > config.split_hotness;
        let hot_soon = !hot_now && forecast.is_some_and(|f| f > config.split_hotness);
        let too_large = s.size_vectors > config.split_vectors;
        if !(hot_now || hot_soon || too_large)
            || s.size_vectors < config.min_split_vectors
            || !free(s.range, &acted)
        {
            continue;
        }
        let Some(point) = split_point(s, config) else {
            continue;
        };
        // Benefit: p99 × gain saved on the shard's queries over the horizon, at the
        // forecast rate when splitting ahead of it.
        let hotness_basis = if hot_soon {
            forecast.unwrap_or(s.hotness)
        } else {
            s.hotness
        };
        let qps = if s.p99_latency_ms > 0.0 {
            hotness_basis * 10.0 / s.p99_latency_ms
        } else {
            s.qps_1m()
        };
        let benefit = s.p99_latency_ms
            * config.split_latency_gain
            * qps
            * config.payback_horizon_s
            * config.value_per_ms_saved;
        let cost = config.ship_cost(s, 1.0 - point.left_share);
        let why = if too_large && !hot_now && !hot_soon {
            format!("size {} > {} vectors", s.size_vectors, config.split_vectors)
        } else if hot_soon {
            format!(
                "forecast hotness {:.1} > {} in {} s (now {:.1}; qps {:.1}, p99 {:.1} ms)",
                hotness_basis,
                config.split_hotness,
                config.lookahead_s,
                s.hotness,
                s.qps_1m(),
                s.p99_latency_ms
            )
        } else {
            format!(
                "hotness {:.1} > {} (qps {:.1}, p99 {:.1} ms)",
                s.hotness,
                config.split_hotness,
                s.qps_1m(),
                s.p99_latency_ms
            )
        };
        if !too_large && benefit <= cost {
            continue;
        }
        let place = if point.tenant {
            "inside its dominant tenant's range, by id".to_string()
        } else {
            format!(
                "where the load divides {:.0}%/{:.0}%",
                point.left_share * 100.0,
                (1.0 - point.left_share) * 100.0
            )
        };
        // The right half goes to the least loaded other node, preferring nodes no recent
        // move touched (their measured load lags); its share of the load moves with it (a
        // tenant split leaves half the tenant's work on each side).
        let to = loads
            .iter()
            .filter(|(n, _)| Some(n.as_str()) != s.node.as_deref())
            .min_by(|a, b| {
                let settling = |n: &str| history.settling(n, now, config);
                settling(a.0)
                    .cmp(&settling(b.0))
                    .then(a.1.total_cmp(b.1))
                    .then(a.0.cmp(b.0))
            })
            .map(|(n, l)| (n.clone(), *l));
        let mut reason = format!("split: {why}; benefit {benefit:.1} > cost {cost:.1}; at {place}");
        if let Some((to, to_load)) = &to {
            let work = config.shard_load(s) * (1.0 - point.left_share);
            let (from_cap, to_cap) = (
                s.node.as_deref().map_or(0.0, capacity_ops),
                capacity_ops(to),
            );
            if let Some(from) = s.node.as_deref() {
                if from_cap > 0.0 {
                    if let Some(l) = loads.get_mut(from) {
                        *l = (*l - work / from_cap).max(0.0);
                    }
                }
            }
            if to_cap > 0.0 {
                loads.insert(to.clone(), to_load + work / to_cap);
            }
            reason.push_str(&format!("; right half to {to} (load {to_load:.2})"));
        }
        let mut c = change(
            collection,
            &mut epoch,
            PlanAction::Split {
                shard: s.range,
                at: point.at,
            },
            reason,
            now,
        );
        c.place = to.map(|(n, _)| n);
        out.push(c);
        acted.push(s.range);
        budget -= 1;
    }

    // 2. Migrations off overloaded or out-of-balance nodes, most loaded first.
    let node_qps = |node: &str| -> f64 {
        snapshot
            .shards
            .values()
            .filter(|s| s.node.as_deref() == Some(node))
            .map(ShardMetrics::qps_1m)
            .sum()
    };
    let mut nodes: Vec<(String, f64)> = loads.iter().map(|(n, l)| (n.clone(), *l)).collect();
    nodes.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Nodes a move touched recently, or in this round: their loads are not settled.
    let mut settling: Vec<String> = loads
        .keys()
        .filter(|n| history.settling(n, now, config))
        .cloned()
        .collect();
    for (node, _) in nodes {
        let node_cap = capacity_ops(&node);
        loop {
            if budget == 0 || settling.contains(&node) {
                break;
            }
            let load = loads.get(&node).copied().unwrap_or(0.0);
            let mean = loads.values().sum::<f64>() / loads.len().max(1) as f64;
            let over = load > config.migrate_load;
            let unbalanced = load >= config.balance_min_load && load > mean * config.balance_ratio;
            if !(over || unbalanced) || node_cap <= 0.0 {
                break;
            }
            // Candidates: each shard of the node moved to the least loaded other node;
            // the best leaves the lower maximum of the two, benefit > cost.
            let Some((target, target_load)) = loads
                .iter()
                .filter(|(n, _)| **n != node && !settling.contains(n))
                .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0)))
                .map(|(n, l)| (n.clone(), *l))
            else {
                break;
            };
            let target_cap = capacity_ops(&target);
            if target_cap <= 0.0 {
                break;
            }
            let mut best: Option<(&ShardMetrics, f64, f64, f64, f64)> = None;
            for s in snapshot
                .shards
                .values()
                .filter(|s| s.node.as_deref() == Some(node.as_str()) && free(s.range, &acted))
            {
                let work = config.shard_load(s);
                if work <= 0.0 {
                    continue;
                }
                let target_after = target_load + work / target_cap;
                let from_after = load - work / node_cap;
                let peak = from_after.max(target_after);
                if target_after > config.target_load || peak > load * (1.0 - config.move_min_gain) {
                    continue;
                }
                // Benefit: queueing delay saved on every query of the source node.
                let before = queue_factor(load);
                let after = queue_factor(from_after).max(queue_factor(target_after));
                let base_ms = s.p99_latency_ms / before.max(1.0);
                let saved_ms = (base_ms * (before - after)).max(0.0);
                let benefit = saved_ms
                    * node_qps(&node)
                    * config.payback_horizon_s
                    * config.value_per_ms_saved;
                let cost = config.ship_cost(s, 1.0);
                if benefit <= cost {
                    continue;
                }
                if best.is_none_or(|(_, p, ..)| peak < p) {
                    best = Some((s, peak, from_after, target_after, benefit - cost));
                }
            }
            let Some((s, _, from_after, target_after, _)) = best else {
                break;
            };
            let cost = config.ship_cost(s, 1.0);
            let why = if over {
                format!("load {load:.2} > {}", config.migrate_load)
            } else {
                format!("load {load:.2} > {} x mean {mean:.2}", config.balance_ratio)
            };
            out.push(change(
                collection,
                &mut epoch,
                PlanAction::Move {
                    shard: s.range,
                    from: node.clone(),
                    to: target.clone(),
                },
                format!(
                    "move: node {node} {why} ({:.1} load units/s of shard {}); {node} goes to {from_after:.2}, {target} goes {target_load:.2} -> {target_after:.2}; cost {cost:.1}",
                    config.shard_load(s),
                    s.shard,
                ),
                now,
            ));
            acted.push(s.range);
            loads.insert(node.clone(), from_after);
            loads.insert(target.clone(), target_after);
            if config.node_settle_s > 0 {
                settling.push(node.clone());
                settling.push(target);
            }
            budget -= 1;
        }
    }

    // 3. Merges of adjacent cold, small shards.
    let mut by_start: Vec<&ShardMetrics> = snapshot.shards.values().collect();
    by_start.sort_by_key(|s| s.range.start);
    let mut i = 0;
    while i + 1 < by_start.len() && budget > 0 {
        let (l, r) = (by_start[i], by_start[i + 1]);
        let last = r.range.end.map_or(u64::MAX, |e| e.saturating_sub(1));
        let adjacent = l.range.end == Some(r.range.start)
            && (config.partitions == 0
                || hektor_topics::ring::partition_of(l.range.start, config.partitions)
                    == hektor_topics::ring::partition_of(last, config.partitions));
        let cold = |s: &ShardMetrics| {
            s.hotness < config.merge_hotness && s.size_vectors < config.merge_vectors
        };
        let merged_hotness = l.hotness + r.hotness;
        if adjacent
            && cold(l)
            && cold(r)
            && merged_hotness < config.split_hotness * config.merge_headroom
            && free(l.range, &acted)
            && free(r.range, &acted)
        {
            let smaller = if l.size_vectors <= r.size_vectors {
                l
            } else {
                r
            };
            let cost = config.shard_move_cost(smaller, 1.0);
            let benefit = config.shard_overhead_value;
            if benefit > cost {
                out.push(change(
                    collection,
                    &mut epoch,
                    PlanAction::Merge {
                        left: l.range,
                        right: r.range,
                    },
                    format!(
                        "merge: shards {} and {} are cold (hotness {:.1}, {:.1} < {}) and small ({} + {} < {} vectors each); benefit {benefit:.1} > cost {cost:.1}",
                        l.shard, r.shard, l.hotness, r.hotness, config.merge_hotness,
                        l.size_vectors, r.size_vectors, config.merge_vectors
                    ),
                    now,
                ));
                acted.push(l.range);
                acted.push(r.range);
                budget -= 1;
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Latency multiplier of a queue at utilisation `rho` (M/M/1: 1 / (1 - rho)), capped.
pub fn queue_factor(rho: f64) -> f64 {
    1.0 / (1.0 - rho.clamp(0.0, 0.99))
}
