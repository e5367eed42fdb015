//! The kinetic-sharding simulator behind `hektor sim kinetic`: one simulated day (after a
//! warm-up day) of the seed's scenario — 1B vectors, 100K QPS at peak, 80% of queries on
//! 20% of the key space, diurnal load, hot spots that ramp up, live a few hours and move —
//! under five strategies: static hash, static range, consistent hashing (2 manual
//! rebalances a day), kinetic reactive and kinetic predictive.
//!
//! The kinetic strategies run the decision engine itself ([`crate::decide::decide`]) every
//! simulated minute on a [`HotnessSnapshot`] built from the model (the same struct the
//! dataflow produces; the dataflow is not run on 8.6 billion synthetic events).
//!
//! This module owns the workload model, the latency model and the node-count search; the
//! command line is the binary's (`src/sim_cmd.rs`). The model is documented in
//! `docs/bench/kinetic.md`, with where each constant comes from.
//!
//! # Random draws
//! Where the hot spots land, static hash's unit placement and consistent hashing's ring
//! are drawn from rand's `StdRng`, one stream per purpose (and per hot spot and life, or
//! per node), keyed by the scenario's seed (`--seed`): a seed gives the same day on every
//! run and thread count.
//!
//! # Latency model
//! A query is routed by its key to the one shard holding it. A query on a shard of `n`
//! vectors takes `D(n) = ln(n) / ln(n_ref) / r` seconds of one thread, where `r` is the
//! measured per-thread query rate of the engine at `n_ref` vectors (ANN search cost grows
//! with log n). A node of `c` threads is an M/M/c queue (Erlang C) whose waiting time is
//! added to the deterministic service time: `P(R > x) = P_wait · exp(-(cμ - λ)(x - D))`.
//! The reported p99 is the 99th percentile over every query of the measured day.
//!
//! # Node count
//! Each strategy gets the fewest nodes for which, over the measured day, at most 1% of
//! queries are served by a node above the target utilisation (0.7).

use std::collections::BTreeMap;

use hektor_topics::record::{PlanAction, PlanChange, RingRange};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::decide::{decide, DecideConfig, Forecasts, History};
use crate::driver::{HotnessSnapshot, NodeLoad, ShardMetrics};
use crate::hotness::SUB_RANGES;
use crate::predict::Predictor;

/// The scenario and the model's constants.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub vectors: u64,
    pub peak_qps: f64,
    /// Key groups (tenants / key ranges) the ring is cut into; the unit of placement.
    pub units: u32,
    /// Share of queries on the hot units...
    pub hot_query_share: f64,
    /// ...which are this share of the units.
    pub hot_unit_share: f64,
    /// Adjacent units per hot spot.
    pub hotspot_units: u32,
    /// Seconds a hot spot lives before it moves elsewhere.
    pub hotspot_life_s: u64,
    /// Seconds a hot spot takes to heat up (and to cool down).
    pub hotspot_ramp_s: u64,
    /// Measured queries per second per thread of the engine at `reference_vectors`.
    pub service_qps_per_thread: f64,
    pub reference_vectors: f64,
    pub threads_per_node: u32,
    /// Utilisation the node count is sized for.
    pub target_utilisation: f64,
    /// Seconds between decision rounds (and model steps).
    pub step_s: u64,
    /// Units per shard in the kinetic strategies' initial layout.
    pub initial_shard_units: u32,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            vectors: 1_000_000_000,
            peak_qps: 100_000.0,
            units: 16_384,
            hot_query_share: 0.8,
            hot_unit_share: 0.2,
            hotspot_units: 64,
            hotspot_life_s: 6 * 3600,
            hotspot_ramp_s: 1800,
            // arroy engine, recall 0.95, 62k-vector shard: 83-120 QPS per thread measured;
            // the midpoint (see docs/bench/kinetic.md).
            service_qps_per_thread: 100.0,
            reference_vectors: 62_000.0,
            threads_per_node: 16,
            target_utilisation: 0.7,
            step_s: 60,
            initial_shard_units: 128,
            seed: 42,
        }
    }
}

/// A sharding strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    StaticHash,
    StaticRange,
    ConsistentHash,
    KineticReactive,
    KineticPredictive,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::StaticHash,
        Strategy::StaticRange,
        Strategy::ConsistentHash,
        Strategy::KineticReactive,
        Strategy::KineticPredictive,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::StaticHash => "static hash",
            Strategy::StaticRange => "static range",
            Strategy::ConsistentHash => "consistent hash",
            Strategy::KineticReactive => "kinetic reactive",
            Strategy::KineticPredictive => "kinetic predictive",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    pub strategy: Strategy,
    pub p99_ms: f64,
    pub nodes: usize,
    pub rebalances_per_day: usize,
    /// Query-weighted mean node utilisation over the measured day.
    pub mean_utilisation: f64,
    /// Highest node utilisation seen in the measured day.
    pub max_utilisation: f64,
}

/// What one simulated day at a given node count gives.
#[derive(Debug, Clone, PartialEq)]
pub struct DayOutcome {
    pub p99_ms: f64,
    pub rebalances: usize,
    pub max_utilisation: f64,
    pub share_over_target: f64,
    pub mean_utilisation: f64,
}

const DAY: u64 = 86_400;
/// Points of per-shard history the predictive strategy keeps.
const HISTORY_POINTS: usize = 60;

/// What a stream of random draws is for; part of its key, so no two uses share a stream.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Purpose {
    /// Where a hot spot starts in one of its lives; index = (spot, generation).
    HotSpot = 1,
    /// Static hash: the node of each unit, in unit order.
    StaticHash = 2,
    /// Consistent hash: the ring positions of one node's virtual nodes; index = the node.
    VirtualNodes = 3,
    /// Consistent hash: the ring position of each unit, in unit order.
    UnitPositions = 4,
}

/// The stream for `purpose` and index `(a, b)` under the scenario's seed: rand's
/// [`StdRng`] keyed by the four numbers (the pattern of `hektor-bench`'s `seeded.rs`), so
/// a draw depends only on what it is for, never on how many draws came before it.
fn stream(seed: u64, purpose: Purpose, a: u64, b: u64) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&a.to_le_bytes());
    key[24..].copy_from_slice(&b.to_le_bytes());
    StdRng::from_seed(key)
}

/// The workload: per-unit query rates over time.
struct Workload {
    config: SimConfig,
    /// Hot spots.
    spots: usize,
}

impl Workload {
    fn new(config: &SimConfig) -> Workload {
        let hot_units = (config.units as f64 * config.hot_unit_share).round() as u32;
        let n = (hot_units / config.hotspot_units.max(1)).max(1);
        Workload {
            config: config.clone(),
            spots: n as usize,
        }
    }

    fn diurnal(&self, t: u64) -> f64 {
        let phase = ((t % DAY) as f64 - 14.0 * 3600.0) / DAY as f64 * std::f64::consts::TAU;
        0.6 + 0.4 * phase.cos()
    }

    /// Query rate per unit at time `t`.
    fn rates(&self, t: u64) -> Vec<f64> {
        let c = &self.config;
        let u = c.units as usize;
        let life = c.hotspot_life_s.max(1);
        let mut heat = vec![0.0f64; u];
        for i in 0..self.spots {
            // Staggered lives: spot i starts its first life at offset i/n of a life.
            let offset = life * i as u64 / self.spots as u64;
            let age_total = t + life - offset;
            let generation = age_total / life;
            let age = age_total % life;
            // Each life starts at a uniformly drawn unit.
            let first = stream(c.seed, Purpose::HotSpot, i as u64, generation)
                .random_range(0..c.units) as usize;
            let ramp = c.hotspot_ramp_s.max(1) as f64;
            let intensity = (age as f64 / ramp)
                .min((life - age) as f64 / ramp)
                .clamp(0.0, 1.0);
            for k in 0..c.hotspot_units as usize {
                heat[(first + k) % u] += intensity;
            }
        }
        let total_heat: f64 = heat.iter().sum();
        let qps = c.peak_qps * self.diurnal(t);
        let hot_units = self.spots as f64 * c.hotspot_units as f64;
        // Hot units share hot_query_share in proportion to their heat; the rest is even.
        let hot_qps = qps * c.hot_query_share * (total_heat / hot_units).min(1.0);
        let cold_each = (qps - hot_qps) / u as f64;
        heat.iter()
            .map(|h| {
                cold_each
                    + if total_heat > 0.0 {
                        hot_qps * h / total_heat
                    } else {
                        0.0
                    }
            })
            .collect()
    }
}

/// One node's queue at one step, for the latency mixture.
struct QueueSample {
    /// Queries per second per distinct service time on the node: (rate, service s).
    shards: Vec<(f64, f64)>,
    p_wait: f64,
    /// Exponential decay rate of the waiting time, 1/s.
    theta: f64,
}

fn erlang_c(c: u32, a: f64) -> f64 {
    let rho = a / c as f64;
    if rho >= 1.0 {
        return 1.0;
    }
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    b / (1.0 - rho * (1.0 - b))
}

/// p99 in seconds of the query-weighted mixture of samples.
fn mixture_p99(samples: &[QueueSample]) -> f64 {
    let total: f64 = samples
        .iter()
        .flat_map(|s| s.shards.iter().map(|(r, _)| r))
        .sum();
    if total <= 0.0 {
        return 0.0;
    }
    let tail = |x: f64| -> f64 {
        let mut t = 0.0;
        for s in samples {
            for (rate, d) in &s.shards {
                let p = if x < *d {
                    1.0
                } else {
                    s.p_wait * (-(s.theta) * (x - d)).exp()
                };
                t += rate * p;
            }
        }
        t / total
    };
    let (mut lo, mut hi) = (0.0, 1.0);
    while tail(hi) > 0.01 && hi < 1e4 {
        hi *= 2.0;
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if tail(mid) > 0.01 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// A shard of the simulated layout: a contiguous range of units on a node.
#[derive(Debug, Clone, PartialEq)]
struct SimShard {
    first: u32,
    end: u32,
    node: usize,
}

fn unit_start(u: u32, units: u32) -> u64 {
    ((u as u128) << 64).div_ceil(units as u128) as u64
}

fn shard_range(s: &SimShard, units: u32) -> RingRange {
    RingRange {
        start: unit_start(s.first, units),
        end: (s.end < units).then(|| unit_start(s.end, units)),
    }
}

/// The unit boundary nearest to a ring position.
fn unit_at(position: u64, units: u32) -> u32 {
    (((position as u128 * units as u128) + (1u128 << 63)) >> 64) as u32
}

struct Model<'a> {
    config: &'a SimConfig,
    vectors_per_unit: f64,
}

impl Model<'_> {
    fn service_s(&self, vectors: f64) -> f64 {
        let n = vectors.max(2.0);
        (n.ln() / self.config.reference_vectors.ln()) / self.config.service_qps_per_thread
    }

    /// Per-node queues for a placement of shards (each shard: units, node, vectors).
    fn queues(
        &self,
        nodes: usize,
        shards: &[(f64, f64, usize)], // (rate, vectors, node)
    ) -> (Vec<QueueSample>, Vec<f64>) {
        let c = self.config.threads_per_node;
        let mut per_node: Vec<Vec<(f64, f64)>> = vec![Vec::new(); nodes];
        for (rate, vectors, node) in shards {
            if let Some(list) = per_node.get_mut(*node) {
                list.push((*rate, self.service_s(*vectors)));
            }
        }
        let mut samples = Vec::with_capacity(nodes);
        let mut util = Vec::with_capacity(nodes);
        for list in per_node {
            let lambda: f64 = list.iter().map(|(r, _)| r).sum();
            let work: f64 = list.iter().map(|(r, d)| r * d).sum();
            let rho = work / c as f64;
            util.push(rho);
            if lambda <= 0.0 {
                samples.push(QueueSample {
                    shards: list,
                    p_wait: 0.0,
                    theta: 1.0,
                });
                continue;
            }
            let mean_d = work / lambda;
            let mu = 1.0 / mean_d;
            let rho_c = rho.min(0.999);
            let a = rho_c * c as f64;
            samples.push(QueueSample {
                shards: list,
                p_wait: erlang_c(c, a),
                theta: (c as f64 * mu - a * mu).max(1e-3),
            });
        }
        (samples, util)
    }
}

/// Simulate a warm-up day and a measured day with `nodes` nodes.
pub fn run_day(config: &SimConfig, strategy: Strategy, nodes: usize) -> DayOutcome {
    let nodes = nodes.max(1);
    let workload = Workload::new(config);
    let model = Model {
        config,
        vectors_per_unit: config.vectors as f64 / config.units as f64,
    };
    let units = config.units;
    // Static placements: unit -> node.
    let mut unit_node: Vec<usize> = match strategy {
        // A uniform hash of each unit modulo the node count: a uniformly drawn node per unit.
        Strategy::StaticHash => {
            let mut rng = stream(config.seed, Purpose::StaticHash, 0, 0);
            (0..units).map(|_| rng.random_range(0..nodes)).collect()
        }
        Strategy::StaticRange => (0..units)
            .map(|u| (u as usize * nodes) / units as usize)
            .collect(),
        Strategy::ConsistentHash => consistent_hash(config.seed, units, nodes, 64),
        _ => Vec::new(),
    };
    let kinetic = matches!(
        strategy,
        Strategy::KineticReactive | Strategy::KineticPredictive
    );
    let mut shards: Vec<SimShard> = Vec::new();
    if kinetic {
        let per = config.initial_shard_units.max(1);
        let mut first = 0;
        let mut i = 0;
        while first < units {
            let end = (first + per).min(units);
            shards.push(SimShard {
                first,
                end,
                node: i % nodes,
            });
            first = end;
            i += 1;
        }
    }
    let decide_config = DecideConfig {
        migrate_load: config.target_utilisation * 0.9,
        target_load: config.target_utilisation * 0.85,
        // The simulator knows each node's load at once (no measurement lag to wait out),
        // and its nodes are sized by the absolute rule above: balancing towards the mean
        // as well (the live default) measured 173-181 nodes instead of 137-145 here (with
        // the former SplitMix64 streams), as it moves shards through the diurnal trough
        // that the peak then has to undo.
        node_settle_s: 0,
        balance_ratio: f64::INFINITY,
        move_min_gain: 0.0,
        ..DecideConfig::default()
    };
    let mut history = History::default();
    let mut pending: Vec<(PlanChange, u64)> = Vec::new();
    let mut rate_history: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
    let mut samples: Vec<QueueSample> = Vec::new();
    let mut rebalances = 0usize;
    let (mut max_util, mut over, mut total, mut util_weighted) = (0.0f64, 0.0, 0.0, 0.0);
    let step = config.step_s.max(1);
    let mut t = 0;
    while t < 2 * DAY {
        let measured = t >= DAY;
        let rates = workload.rates(t);
        // Consistent hashing: an operator rebalances twice a day.
        if strategy == Strategy::ConsistentHash && (t % DAY == 9 * 3600 || t % DAY == 15 * 3600) {
            manual_rebalance(config, &model, &rates, &mut unit_node, nodes);
            if measured {
                rebalances += 1;
            }
        }
        if kinetic {
            // Apply the changes whose work is done.
            let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, d)| *d <= t);
            pending = rest;
            for (change, _) in done {
                apply(&mut shards, &change, units, nodes, &rates, &model);
            }
        }
        // Placement at this step: (rate, vectors, node) per shard.
        let placed: Vec<(f64, f64, usize)> = if kinetic {
            shards
                .iter()
                .map(|s| {
                    let rate: f64 = rates[s.first as usize..s.end as usize].iter().sum();
                    let vectors = (s.end - s.first) as f64 * model.vectors_per_unit;
                    (rate, vectors, s.node)
                })
                .collect()
        } else {
            // One shard per node holding all of its units.
            let mut per_node = vec![(0.0, 0.0, 0usize); nodes];
            for (i, slot) in per_node.iter_mut().enumerate() {
                slot.2 = i;
            }
            for (u, n) in unit_node.iter().enumerate() {
                per_node[*n].0 += rates[u];
                per_node[*n].1 += model.vectors_per_unit;
            }
            per_node
        };
        let (queues, util) = model.queues(nodes, &placed);
        if measured {
            for (q, rho) in queues.iter().zip(&util) {
                let lambda: f64 = q.shards.iter().map(|(r, _)| r).sum();
                max_util = max_util.max(*rho);
                total += lambda;
                util_weighted += lambda * rho;
                if *rho > config.target_utilisation {
                    over += lambda;
                }
            }
        }
        if kinetic {
            let snapshot = kinetic_snapshot(t, &shards, &placed, &queues, &util, units, &rates);
            let forecasts = (strategy == Strategy::KineticPredictive).then(|| {
                let steps = decide_config.lookahead_s as f64 / step as f64;
                let mut f = Forecasts::default();
                let threads = config.threads_per_node as f64;
                let mut node_forecast = vec![0.0; nodes];
                for (id, m) in &snapshot.shards {
                    let s = &shards[*id as usize];
                    let (rate, vectors, node) = placed[*id as usize];
                    let h = rate_history.entry((s.first, s.end)).or_default();
                    h.push(rate);
                    if h.len() > HISTORY_POINTS {
                        h.remove(0);
                    }
                    let qps = Predictor::HOLT.forecast(h, steps).unwrap_or(rate).max(0.0);
                    f.hotness.insert(*id, qps * m.p99_latency_ms / 10.0);
                    node_forecast[node] += qps * model.service_s(vectors) / threads;
                }
                for (i, v) in node_forecast.iter().enumerate() {
                    f.node_load.insert(format!("n{i}"), *v);
                }
                f
            });
            history.expire(t, &decide_config);
            let changes = decide(
                "sim",
                &snapshot,
                &decide_config,
                &history,
                forecasts.as_ref(),
                t,
            );
            for c in changes {
                let moved = moved_vectors(&c, &shards, units, &model);
                let duration = decide_config.move_cost(moved).ceil() as u64;
                history.record(&c, t, duration);
                pending.push((c, t + duration));
                if measured {
                    rebalances += 1;
                }
            }
        }
        if measured {
            samples.extend(queues);
        }
        t += step;
    }
    DayOutcome {
        p99_ms: mixture_p99(&samples) * 1000.0,
        rebalances,
        max_utilisation: max_util,
        share_over_target: if total > 0.0 { over / total } else { 0.0 },
        mean_utilisation: if total > 0.0 {
            util_weighted / total
        } else {
            0.0
        },
    }
}

/// Unit -> node on a ring of `vnodes` uniformly drawn positions per node (a node's
/// positions are its own stream's, so they do not depend on how many nodes there are) and
/// a uniformly drawn position per unit.
fn consistent_hash(seed: u64, units: u32, nodes: usize, vnodes: u64) -> Vec<usize> {
    let mut ring: Vec<(u64, usize)> = (0..nodes)
        .flat_map(|n| {
            let mut rng = stream(seed, Purpose::VirtualNodes, n as u64, 0);
            (0..vnodes).map(move |_| (rng.random::<u64>(), n))
        })
        .collect();
    ring.sort_unstable();
    let mut positions = stream(seed, Purpose::UnitPositions, 0, 0);
    (0..units)
        .map(|_| {
            let h: u64 = positions.random();
            let i = ring.partition_point(|(p, _)| *p < h) % ring.len();
            ring[i].1
        })
        .collect()
}

/// The operator's rebalance: move the busiest units off the busiest node to the least
/// busy one while that lowers the maximum (at most 64 units).
fn manual_rebalance(
    config: &SimConfig,
    model: &Model,
    rates: &[f64],
    unit_node: &mut [usize],
    nodes: usize,
) {
    let d = model.service_s(config.vectors as f64 / nodes as f64);
    let c = config.threads_per_node as f64;
    for _ in 0..64 {
        let mut load = vec![0.0; nodes];
        for (u, n) in unit_node.iter().enumerate() {
            load[*n] += rates[u] * d / c;
        }
        let (max_n, max_l) =
            load.iter().enumerate().fold(
                (0, f64::MIN),
                |acc, (i, l)| if *l > acc.1 { (i, *l) } else { acc },
            );
        let (min_n, min_l) =
            load.iter().enumerate().fold(
                (0, f64::MAX),
                |acc, (i, l)| if *l < acc.1 { (i, *l) } else { acc },
            );
        let Some((u, r)) = unit_node
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == max_n)
            .map(|(u, _)| (u, rates[u] * d / c))
            .filter(|(_, r)| min_l + r < max_l)
            .max_by(|a, b| a.1.total_cmp(&b.1))
        else {
            break;
        };
        let _ = r;
        unit_node[u] = min_n;
    }
}

fn kinetic_snapshot(
    t: u64,
    shards: &[SimShard],
    placed: &[(f64, f64, usize)],
    queues: &[QueueSample],
    util: &[f64],
    units: u32,
    rates: &[f64],
) -> HotnessSnapshot {
    let mut snap = HotnessSnapshot {
        time_s: t,
        ..HotnessSnapshot::default()
    };
    for (i, (s, (rate, vectors, node))) in shards.iter().zip(placed).enumerate() {
        let q = &queues[*node];
        let d = q
            .shards
            .iter()
            .find(|(r, _)| (r - rate).abs() < 1e-12)
            .map_or(0.0, |(_, d)| *d);
        let p99 = d + if q.p_wait > 0.01 {
            (q.p_wait / 0.01).ln() / q.theta
        } else {
            0.0
        };
        let p99_ms = p99 * 1000.0;
        // Sub-range load: each unit's queries spread evenly over its share of the bins.
        let n_units = (s.end - s.first) as usize;
        let mut sub_load = vec![0u64; SUB_RANGES as usize];
        for (k, slot) in sub_load.iter_mut().enumerate() {
            let u = s.first as usize + k * n_units / SUB_RANGES as usize;
            let bins_of_unit = (SUB_RANGES as usize).div_ceil(n_units).max(1);
            let per_bin = if n_units >= SUB_RANGES as usize {
                // Several units per bin.
                let lo = s.first as usize + k * n_units / SUB_RANGES as usize;
                let hi = s.first as usize + (k + 1) * n_units / SUB_RANGES as usize;
                rates[lo..hi].iter().sum::<f64>()
            } else {
                rates[u] / bins_of_unit as f64
            };
            *slot = (per_bin * 60.0).round() as u64;
        }
        let queries_1m = (rate * 60.0).round() as u64;
        let hotness = rate * p99_ms / 10.0;
        snap.shards.insert(
            i as u32,
            ShardMetrics {
                shard: i as u32,
                range: shard_range(s, units),
                node: Some(format!("n{node}")),
                queries_1m,
                queries_1h: (rate * 3600.0) as u64,
                queries_1d: (rate * 86400.0) as u64,
                writes_1m: 0,
                writes_1h: 0,
                writes_1d: 0,
                avg_latency_ms: d * 1000.0,
                p99_latency_ms: p99_ms,
                size_vectors: vectors.round() as u64,
                size_bytes: None,
                update_rate: 0.0,
                hotness,
                hot: hotness > 100.0,
                cold: false,
                sub_load,
                top_tenant: None,
            },
        );
    }
    for (i, rho) in util.iter().enumerate() {
        let lambda: f64 = queues[i].shards.iter().map(|(r, _)| r).sum();
        snap.nodes.insert(
            format!("n{i}"),
            NodeLoad {
                node: format!("n{i}"),
                capacity: 1.0,
                ops_per_s: lambda,
                load: *rho,
            },
        );
    }
    snap
}

fn find_shard(shards: &[SimShard], range: RingRange, units: u32) -> Option<usize> {
    shards.iter().position(|s| shard_range(s, units) == range)
}

fn moved_vectors(change: &PlanChange, shards: &[SimShard], units: u32, model: &Model) -> u64 {
    let size = |r: RingRange| {
        find_shard(shards, r, units)
            .map(|i| (shards[i].end - shards[i].first) as f64 * model.vectors_per_unit)
            .unwrap_or(0.0)
    };
    let v = match &change.action {
        PlanAction::Split { shard, .. } => size(*shard) / 2.0,
        PlanAction::Merge { left, right } => size(*left).min(size(*right)),
        PlanAction::Move { shard, .. } => size(*shard),
        PlanAction::SetTier { .. } => 0.0,
    };
    v.round() as u64
}

fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n').and_then(|n| n.parse().ok())
}

/// Apply a finished change to the layout. A split's right half goes to the least loaded
/// node (the executor places new shards there); a merge keeps the left shard's node.
fn apply(
    shards: &mut Vec<SimShard>,
    change: &PlanChange,
    units: u32,
    nodes: usize,
    rates: &[f64],
    model: &Model,
) {
    match &change.action {
        PlanAction::Split { shard, at } => {
            let Some(i) = find_shard(shards, *shard, units) else {
                return;
            };
            let s = shards[i].clone();
            let cut =
                unit_at(*at, units).clamp(s.first + 1, s.end.saturating_sub(1).max(s.first + 1));
            if cut <= s.first || cut >= s.end {
                return;
            }
            let mut load = vec![0.0; nodes];
            for sh in shards.iter() {
                let r: f64 = rates[sh.first as usize..sh.end as usize].iter().sum();
                load[sh.node] +=
                    r * model.service_s((sh.end - sh.first) as f64 * model.vectors_per_unit);
            }
            let target = load
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or(s.node, |(n, _)| n);
            shards[i].end = cut;
            shards.insert(
                i + 1,
                SimShard {
                    first: cut,
                    end: s.end,
                    node: target,
                },
            );
        }
        PlanAction::Merge { left, right } => {
            let (Some(l), Some(r)) = (
                find_shard(shards, *left, units),
                find_shard(shards, *right, units),
            ) else {
                return;
            };
            if shards[l].end != shards[r].first {
                return;
            }
            shards[l].end = shards[r].end;
            shards.remove(r);
        }
        PlanAction::Move { shard, to, .. } => {
            if let (Some(i), Some(n)) = (find_shard(shards, *shard, units), node_index(to)) {
                if n < nodes {
                    shards[i].node = n;
                }
            }
        }
        PlanAction::SetTier { .. } => {}
    }
}

fn acceptable(day: &DayOutcome) -> bool {
    day.share_over_target <= 0.01
}

/// The fewest nodes that meet the utilisation criterion, and that day's outcome.
pub fn simulate(config: &SimConfig, strategy: Strategy) -> SimResult {
    let peak_work = config.peak_qps * (config.vectors as f64 / config.units as f64).ln()
        / config.reference_vectors.ln()
        / config.service_qps_per_thread;
    let lower = ((peak_work / (config.threads_per_node as f64 * config.target_utilisation)).floor()
        as usize)
        .max(1);
    let (mut lo, mut hi) = (lower, lower * 2);
    while !acceptable(&run_day(config, strategy, hi)) && hi < lower * 16 {
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if acceptable(&run_day(config, strategy, mid)) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let day = run_day(config, strategy, hi);
    SimResult {
        strategy,
        p99_ms: day.p99_ms,
        nodes: hi,
        rebalances_per_day: day.rebalances,
        mean_utilisation: day.mean_utilisation,
        max_utilisation: day.max_utilisation,
    }
}

/// Forecast accuracy of the two predictors on the simulator's hotness traces: mean
/// absolute error of `lookahead_steps`-ahead forecasts per hot-spot unit over a day.
pub fn predictor_errors(config: &SimConfig, lookahead_steps: usize) -> (f64, f64) {
    let workload = Workload::new(config);
    let step = config.step_s.max(1);
    let series: Vec<Vec<f64>> = {
        let mut per_unit = vec![Vec::new(); config.units as usize];
        let mut t = 0;
        while t < DAY {
            for (u, r) in workload.rates(t).iter().enumerate() {
                per_unit[u].push(*r);
            }
            t += step;
        }
        per_unit
    };
    let (mut lin, mut holt) = (0.0, 0.0);
    // Every 16th unit keeps this quick.
    for s in series.iter().step_by(16) {
        lin += crate::predict::backtest(Predictor::LINEAR, s, lookahead_steps, 30);
        holt += crate::predict::backtest(Predictor::HOLT, s, lookahead_steps, 30);
    }
    (lin, holt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_fixes_the_hot_spots() {
        let rates = |seed| {
            Workload::new(&SimConfig {
                seed,
                ..SimConfig::default()
            })
            .rates(3 * 3600)
        };
        assert_eq!(rates(42), rates(42));
        assert_ne!(rates(42), rates(7));
    }

    #[test]
    fn a_new_node_takes_only_its_share_of_the_consistent_hash_ring() {
        let units = 16_384;
        let before = consistent_hash(42, units, 10, 64);
        let after = consistent_hash(42, units, 11, 64);
        let moved: Vec<usize> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(_, a)| *a)
            .collect();
        assert!(
            moved.iter().all(|n| *n == 10),
            "units moved between old nodes"
        );
        // About 1/11 of the units.
        let share = moved.len() as f64 / units as f64;
        assert!((0.04..0.2).contains(&share), "share {share}");
    }
}
