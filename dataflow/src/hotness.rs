//! The hotness dataflow: per-shard and per-sub-range load from the stream of events, as a
//! differential dataflow written as one plain function from input collections to output
//! collections ([`hotness`]).
//!
//! Two formulations compute the same output collections (tested on random event streams
//! in `tests/tallied.rs`):
//!
//! - [`hotness`]: one input record per event ([`Obs`]), each derived collection counted
//!   with `count` and reduced with `reduce`. The straightforward one: the specification
//!   and the reference.
//! - [`hotness_tallied`]: what the driver runs. Events arrive pre-aggregated per worker as
//!   weighted tallies ([`crate::tally`]), all counts go through one `count_total`, and the
//!   busiest tenant is one specialised operator ([`crate::busiest`]). It absorbs several
//!   times more events per second (`docs/bench/kinetic.md`).
//!
//! This module owns the logic (what is counted, over which windows, how hotness and the
//! hot/cold classes are derived); it does no I/O and runs no workers — feeding inputs,
//! advancing time and reading outputs into a snapshot is [`crate::driver`]'s job, and
//! deciding what to do about a hot shard is [`crate::decide`]'s.
//!
//! # Incremental windows
//!
//! Timestamps are seconds. Every observation enters a window at its own time and leaves it
//! `width` seconds later through its negation inserted at `time + width`
//! ([`sliding`]), so a count over a window is an ordinary `count` over keys and each event
//! changes only the keys it touches: one event of shard 3 re-runs shard 3's reduction and
//! nothing else.
//!
//! | output | key | window |
//! |---|---|---|
//! | [`HotnessOutputs::shards`] | shard | queries and writes over 1 min, 1 h, 1 day; latency sum and a log-bucket histogram over 1 min; net size over all time |
//! | [`HotnessOutputs::sub_ranges`] | (shard, sub-range of [`SUB_RANGES`]) | queries + writes over 1 min |
//! | [`HotnessOutputs::tenants`] | shard → its busiest tenant | tenant queries over 1 min |
//! | [`HotnessOutputs::nodes`] | node | ops/s of its shards over 1 min vs its capacity |

use differential_dataflow::input::Input as _;
use differential_dataflow::operators::CountTotal as _;
use differential_dataflow::VecCollection;
use hektor_topics::record::{Event, EventKind, RingRange};
use serde::{Deserialize, Serialize};
use timely::dataflow::Scope;

use crate::tally::{Tally, TallyRecord};

/// The timely timestamp of the hotness dataflow: seconds since the Unix epoch.
pub type Time = u64;

/// Number of equal sub-ranges each shard's ring range is cut into for load histograms.
pub const SUB_RANGES: u32 = 64;

/// Window widths in seconds: 1 minute, 1 hour, 1 day (index 0, 1, 2 of the count arrays).
pub const WINDOWS: [Time; 3] = [60, 3_600, 86_400];

const LOW32: u64 = 0xFFFF_FFFF;

/// Thresholds the dataflow classifies with (the seed's §4.4 defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotnessParams {
    /// A shard is hot when its hotness (qps_1m × p99_ms / 10) passes this.
    pub hot_hotness: f64,
    /// A shard is cold when it had fewer than this many queries in the last hour...
    pub cold_queries_1h: u64,
    /// ...and fewer than this many in the last day.
    pub cold_queries_1d: u64,
    /// Operations per second a node of capacity 1.0 serves at load 1.0.
    pub ops_per_capacity_unit: f64,
}

impl Default for HotnessParams {
    fn default() -> Self {
        HotnessParams {
            hot_hotness: 100.0,
            cold_queries_1h: 10,
            cold_queries_1d: 100,
            ops_per_capacity_unit: 1_000.0,
        }
    }
}

/// What an observation counts: the event kind as a small integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum ObsKind {
    #[default]
    Query,
    Upsert,
    Delete,
}

impl From<EventKind> for ObsKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Query => ObsKind::Query,
            EventKind::Upsert => ObsKind::Upsert,
            EventKind::Delete => ObsKind::Delete,
        }
    }
}

/// One event reduced to what the dataflow needs: the input record of [`hotness`].
///
/// The driver builds it from an [`Event`] and the shard's ring range ([`Obs::from_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Obs {
    pub shard: u32,
    pub kind: ObsKind,
    /// The sub-range of the shard the event's ring position falls in; `None` for a query
    /// without a tenant (it fans out to every shard and has no position).
    pub sub: Option<u8>,
    /// The high 32 bits of the tenant's range for a query scoped to a tenant.
    pub tenant: Option<u32>,
    pub latency_us: u32,
}

impl Obs {
    /// Reduce an event to an observation, given the ring range of the shard that served it.
    pub fn from_event(event: &Event, range: RingRange) -> Obs {
        let kind = ObsKind::from(event.kind);
        // A query carries its tenant's range start (low 32 bits zero), or 0 without one.
        let tenant_query = kind == ObsKind::Query && event.ring != 0 && event.ring & LOW32 == 0;
        let positioned = kind != ObsKind::Query || tenant_query;
        Obs {
            shard: event.shard,
            kind,
            sub: (positioned && range.contains(event.ring))
                .then(|| sub_range_of(event.ring, range)),
            tenant: tenant_query.then_some((event.ring >> 32) as u32),
            latency_us: event.latency_us,
        }
    }
}

/// Width of a ring range as a u128 (`end == None` is 2^64).
pub fn range_width(range: RingRange) -> u128 {
    let end = range.end.map_or(1u128 << 64, u128::from);
    end.saturating_sub(range.start as u128)
}

/// The sub-range (of [`SUB_RANGES`] equal ones) of `range` that `position` falls in;
/// positions outside the range are clamped to the first or last.
pub fn sub_range_of(position: u64, range: RingRange) -> u8 {
    let width = range_width(range).max(1);
    let offset = (position as u128).saturating_sub(range.start as u128);
    let sub = (offset * SUB_RANGES as u128 / width).min(SUB_RANGES as u128 - 1);
    sub as u8
}

/// The first ring position of sub-range `sub` of `range`.
pub fn sub_range_start(range: RingRange, sub: u32) -> u64 {
    let width = range_width(range);
    let offset = width * sub.min(SUB_RANGES) as u128 / SUB_RANGES as u128;
    (range.start as u128 + offset).min(u64::MAX as u128) as u64
}

/// Log-bucketed latency: 8 equal buckets per power of two, so a bucket's upper bound is
/// at most 12.5% above any value in it.
pub fn latency_bucket(latency_us: u32) -> u8 {
    let v = latency_us.max(1);
    let exp = 31 - v.leading_zeros(); // floor(log2 v), 0..=31
    let mantissa = if exp >= 3 {
        (v >> (exp - 3)) & 0b111
    } else {
        (v << (3 - exp)) & 0b111
    };
    (exp * 8 + mantissa) as u8
}

/// The upper bound (exclusive) in µs of a latency bucket: every latency `l` in bucket `b`
/// has `bucket_lower(b) <= l < bucket_upper(b)`.
pub fn bucket_upper(bucket: u8) -> f64 {
    let exp = (bucket / 8) as i32;
    let mantissa = (bucket % 8) as f64;
    2f64.powi(exp) * (1.0 + (mantissa + 1.0) / 8.0)
}

/// The lower bound in µs of a latency bucket.
pub fn bucket_lower(bucket: u8) -> f64 {
    let exp = (bucket / 8) as i32;
    let mantissa = (bucket % 8) as f64;
    2f64.powi(exp) * (1.0 + mantissa / 8.0)
}

/// Per-shard statistics, as the dataflow maintains them (integers so they can be data).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ShardStats {
    /// Queries over the last 1 min, 1 h, 1 day.
    pub queries: [u64; 3],
    /// Upserts + deletes over the last 1 min, 1 h, 1 day.
    pub writes: [u64; 3],
    /// Sum of query latencies over the last minute, µs.
    pub latency_sum_us: u64,
    /// p99 query latency over the last minute, µs (upper bound of its histogram bucket).
    pub p99_us: u64,
    /// Vectors: the size baseline plus upserts minus deletes.
    pub size: i64,
    /// The seed's hotness score × 1000 (qps_1m × p99_ms / 10).
    pub hotness_milli: u64,
    pub hot: bool,
    pub cold: bool,
}

impl ShardStats {
    pub fn qps_1m(&self) -> f64 {
        self.queries[0] as f64 / WINDOWS[0] as f64
    }

    pub fn hotness(&self) -> f64 {
        self.hotness_milli as f64 / 1000.0
    }

    pub fn avg_latency_ms(&self) -> f64 {
        if self.queries[0] == 0 {
            0.0
        } else {
            self.latency_sum_us as f64 / self.queries[0] as f64 / 1000.0
        }
    }
}

/// Per-node load, as the dataflow maintains it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeStats {
    /// Capacity weight × 1000 (from the node's heartbeat).
    pub capacity_milli: u64,
    /// Queries + writes over the last minute on the shards assigned to it.
    pub ops_1m: u64,
    /// Load as a fraction of capacity × 1000.
    pub load_milli: u64,
}

/// One fact about a shard, the input of the per-shard reduction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Fact {
    /// (window index, is_query, count)
    Count(u8, bool, i64),
    Bucket(u8, i64),
    LatencySum(i64),
    Size(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum NodeFact {
    Capacity(u64),
    Ops(i64),
}

/// The output collections of [`hotness`].
pub struct HotnessOutputs<'s> {
    /// `(shard, stats)`: one record per shard that has seen anything.
    pub shards: VecCollection<'s, Time, (u32, ShardStats)>,
    /// `((shard, sub_range), ops in the last minute)`.
    pub sub_ranges: VecCollection<'s, Time, ((u32, u8), isize)>,
    /// `(shard, (tenant queries in the last minute, tenant high 32 bits))`: the busiest
    /// tenant of each shard.
    pub tenants: VecCollection<'s, Time, (u32, (isize, u32))>,
    /// `(node, stats)` for every node with a capacity.
    pub nodes: VecCollection<'s, Time, (String, NodeStats)>,
}

/// `collection` as a sliding window of `width`: every update is retracted `width` later.
pub fn sliding<'s, D>(
    collection: VecCollection<'s, Time, D>,
    width: Time,
) -> VecCollection<'s, Time, D>
where
    D: Clone + 'static,
{
    collection
        .clone()
        .concat(collection.negate().delay(move |t| t.saturating_add(width)))
}

/// The hotness dataflow, one record per event: the reference formulation (the driver
/// runs [`hotness_tallied`], which computes the same collections).
///
/// - `obs`: observations at the second they happened (see [`Obs::from_event`]).
/// - `sizes`: a size baseline per shard, as `shard` with the vector count as its weight
///   (e.g. from a shard's stored count at start); upserts and deletes adjust it.
/// - `assignment`: `(shard, node)` for each shard's serving node.
/// - `capacities`: `(node, capacity × 1000)` from the nodes' heartbeats.
pub fn hotness<'s>(
    params: HotnessParams,
    obs: VecCollection<'s, Time, Obs>,
    sizes: VecCollection<'s, Time, u32>,
    assignment: VecCollection<'s, Time, (u32, String)>,
    capacities: VecCollection<'s, Time, (String, u64)>,
) -> HotnessOutputs<'s> {
    let scope = obs.scope();

    // Counts per (shard, window, is_query) over the three windows.
    let per_shard = obs.clone().map(|o| (o.shard, o.kind == ObsKind::Query));
    let windowed = WINDOWS
        .iter()
        .enumerate()
        .map(|(w, &width)| sliding(per_shard.clone(), width).map(move |(s, q)| (s, w as u8, q)));
    let counts = differential_dataflow::collection::concatenate(scope, windowed)
        .count()
        .map(|((s, w, q), n)| (s, Fact::Count(w, q, n as i64)));

    // Query latency over the last minute: a histogram and a sum.
    let queries = obs.clone().filter(|o| o.kind == ObsKind::Query);
    let buckets = sliding(
        queries
            .clone()
            .map(|o| (o.shard, latency_bucket(o.latency_us))),
        WINDOWS[0],
    )
    .count()
    .map(|((s, b), n)| (s, Fact::Bucket(b, n as i64)));
    let latency_sum = sliding(
        queries
            .clone()
            .explode(|o| Some((o.shard, o.latency_us as isize))),
        WINDOWS[0],
    )
    .count()
    .map(|(s, n)| (s, Fact::LatencySum(n as i64)));

    // Size: the baseline plus the net of upserts and deletes, over all time.
    let size = obs
        .clone()
        .explode(|o| match o.kind {
            ObsKind::Query => None,
            ObsKind::Upsert => Some((o.shard, 1isize)),
            ObsKind::Delete => Some((o.shard, -1isize)),
        })
        .concat(sizes)
        .count()
        .map(|(s, n)| (s, Fact::Size(n as i64)));

    let shards =
        differential_dataflow::collection::concatenate(scope, [counts, buckets, latency_sum, size])
            .reduce(move |_shard, facts, out| {
                out.push((shard_stats(&params, facts), 1));
            });

    // Load per sub-range of each shard over the last minute.
    let sub_ranges = sliding(
        obs.clone().flat_map(|o| o.sub.map(|sub| (o.shard, sub))),
        WINDOWS[0],
    )
    .count();

    // The busiest tenant of each shard over the last minute.
    let tenants = sliding(
        queries.flat_map(|o| o.tenant.map(|t| (o.shard, t))),
        WINDOWS[0],
    )
    .count()
    .map(|((s, t), n)| (s, (n, t)))
    .reduce(|_shard, input, out| {
        if let Some((top, _)) = input.iter().max_by_key(|(v, _)| **v) {
            out.push((**top, 1));
        }
    });

    // Node load: ops of the shards assigned to each node against its capacity.
    let ops = shards
        .clone()
        .map(|(s, st)| (s, st.queries[0] + st.writes[0]))
        .join(assignment)
        .explode(|(_s, (ops, node))| Some((node, ops as isize)))
        .count()
        .map(|(node, n)| (node, NodeFact::Ops(n as i64)));
    let nodes = capacities
        .map(|(node, c)| (node, NodeFact::Capacity(c)))
        .concat(ops)
        .reduce(move |_node, facts, out| out.push((node_stats(&params, facts), 1)))
        // Nodes known only from assignments (no heartbeat yet) have no capacity row; keep
        // those that have one.
        .filter(|(_node, st)| st.capacity_milli > 0);

    HotnessOutputs {
        shards,
        sub_ranges,
        tenants,
        nodes,
    }
}

/// What [`hotness`] computes, from pre-aggregated tallies instead of one record per
/// event: the dataflow the driver runs.
///
/// - `tallies`: `(shard, tally)` at the second it happened, weighted by how many events
///   (or µs of latency, or vectors) it stands for (see [`crate::tally::TallyBuffer`]);
///   the size baseline of a shard is `(shard, Tally::Size)` weighted by its vector count.
/// - `assignment`, `capacities`: as for [`hotness`].
///
/// All counts go through one `count_total` (timestamps are totally ordered, so no
/// per-key history replay): key `(shard, window, tally)`, where the window index is 0
/// for everything of the last minute and for sizes (which are not windowed), 1 and 2
/// for the operations of the last hour and day.
pub fn hotness_tallied<'s>(
    params: HotnessParams,
    tallies: VecCollection<'s, Time, TallyRecord>,
    assignment: VecCollection<'s, Time, (u32, String)>,
    capacities: VecCollection<'s, Time, (String, u64)>,
) -> HotnessOutputs<'s> {
    let scope = tallies.scope();
    let minute = sliding(
        tallies
            .clone()
            .filter(|(_s, t)| !matches!(t, Tally::Size | Tally::Tenant(_)))
            .map(|(s, t)| (s, 0u8, t)),
        WINDOWS[0],
    );
    let ops = tallies.clone().filter(|(_s, t)| matches!(t, Tally::Op(_)));
    let longer: Vec<_> = WINDOWS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(w, &width)| sliding(ops.clone().map(move |(s, t)| (s, w as u8, t)), width))
        .collect();
    let sizes = tallies
        .clone()
        .filter(|(_s, t)| *t == Tally::Size)
        .map(|(s, t)| (s, 0u8, t));
    let counted = differential_dataflow::collection::concatenate(
        scope,
        std::iter::once(minute)
            .chain(longer)
            .chain(std::iter::once(sizes)),
    )
    .count_total();

    let facts = counted.clone().flat_map(|((s, w, t), n)| {
        let n = n as i64;
        match t {
            Tally::Op(q) => Some((s, Fact::Count(w, q, n))),
            Tally::Bucket(b) => Some((s, Fact::Bucket(b, n))),
            Tally::LatencyUs => Some((s, Fact::LatencySum(n))),
            Tally::Size => Some((s, Fact::Size(n))),
            Tally::Sub(_) | Tally::Tenant(_) => None,
        }
    });
    let shards = facts.reduce(move |_shard, facts, out| {
        out.push((shard_stats(&params, facts), 1));
    });

    let sub_ranges = counted.clone().flat_map(|((s, _w, t), n)| match t {
        Tally::Sub(sub) => Some(((s, sub), n)),
        _ => None,
    });

    // Tenants are many (one key per tenant and shard): their count and maximum is one
    // specialised operator rather than two arrangements and a reduce.
    let tenants = crate::busiest::busiest_tenants(sliding(
        tallies.flat_map(|(s, t)| match t {
            Tally::Tenant(tenant) => Some((s, tenant)),
            _ => None,
        }),
        WINDOWS[0],
    ));

    let ops = shards
        .clone()
        .map(|(s, st)| (s, st.queries[0] + st.writes[0]))
        .join(assignment)
        .explode(|(_s, (ops, node))| Some((node, ops as isize)))
        .count_total()
        .map(|(node, n)| (node, NodeFact::Ops(n as i64)));
    let nodes = capacities
        .map(|(node, c)| (node, NodeFact::Capacity(c)))
        .concat(ops)
        .reduce(move |_node, facts, out| out.push((node_stats(&params, facts), 1)))
        .filter(|(_node, st)| st.capacity_milli > 0);

    HotnessOutputs {
        shards,
        sub_ranges,
        tenants,
        nodes,
    }
}

/// The per-node reduction: a node's capacity and ops into its load.
fn node_stats(params: &HotnessParams, facts: &[(&NodeFact, isize)]) -> NodeStats {
    let mut st = NodeStats::default();
    for (fact, mult) in facts {
        if *mult <= 0 {
            continue;
        }
        match fact {
            NodeFact::Capacity(c) => st.capacity_milli = st.capacity_milli.max(*c),
            NodeFact::Ops(n) => st.ops_1m = (*n).max(0) as u64,
        }
    }
    let per_second = st.ops_1m as f64 / WINDOWS[0] as f64;
    let capacity = st.capacity_milli as f64 / 1000.0 * params.ops_per_capacity_unit;
    st.load_milli = if capacity > 0.0 {
        (per_second / capacity * 1000.0).round() as u64
    } else if per_second > 0.0 {
        u64::MAX
    } else {
        0
    };
    st
}

/// The per-shard reduction: all facts of one shard into its statistics.
fn shard_stats(params: &HotnessParams, facts: &[(&Fact, isize)]) -> ShardStats {
    let mut st = ShardStats::default();
    let mut histogram: Vec<(u8, u64)> = Vec::new();
    for (fact, mult) in facts {
        if *mult <= 0 {
            continue;
        }
        match fact {
            Fact::Count(w, true, n) => st.queries[*w as usize % 3] = (*n).max(0) as u64,
            Fact::Count(w, false, n) => st.writes[*w as usize % 3] = (*n).max(0) as u64,
            Fact::Bucket(b, n) => histogram.push((*b, (*n).max(0) as u64)),
            Fact::LatencySum(n) => st.latency_sum_us = (*n).max(0) as u64,
            Fact::Size(n) => st.size = *n,
        }
    }
    st.p99_us = percentile_from_histogram(&histogram, 0.99).ceil() as u64;
    let p99_ms = st.p99_us as f64 / 1000.0;
    let hotness = st.qps_1m() * p99_ms / 10.0;
    st.hotness_milli = (hotness * 1000.0).round() as u64;
    st.hot = hotness > params.hot_hotness;
    st.cold = st.queries[1] < params.cold_queries_1h && st.queries[2] < params.cold_queries_1d;
    st
}

/// The `q` quantile (0..1) of a bucketed histogram `(bucket, count)` (sorted by bucket),
/// reported as the upper bound of the bucket it falls in; 0 for an empty histogram.
pub fn percentile_from_histogram(histogram: &[(u8, u64)], q: f64) -> f64 {
    let total: u64 = histogram.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return 0.0;
    }
    // The rank of the quantile, 1-based: the smallest r with r >= q * total.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, n) in histogram {
        seen += n;
        if seen >= rank {
            return bucket_upper(*bucket);
        }
    }
    histogram.last().map_or(0.0, |(b, _)| bucket_upper(*b))
}

/// New input sessions in `scope` and the collections they feed, ready for
/// [`hotness_tallied`].
pub fn new_inputs<'s>(scope: Scope<'s, Time>) -> (crate::driver::Inputs, InputCollections<'s>) {
    let (tallies_in, tallies) = scope.new_collection::<TallyRecord, isize>();
    let (assign_in, assignment) = scope.new_collection::<(u32, String), isize>();
    let (cap_in, capacities) = scope.new_collection::<(String, u64), isize>();
    (
        crate::driver::Inputs {
            tallies: tallies_in,
            assignment: assign_in,
            capacities: cap_in,
        },
        InputCollections {
            tallies,
            assignment,
            capacities,
        },
    )
}

/// The input collections of [`hotness_tallied`], as created by [`new_inputs`].
pub struct InputCollections<'s> {
    pub tallies: VecCollection<'s, Time, TallyRecord>,
    pub assignment: VecCollection<'s, Time, (u32, String)>,
    pub capacities: VecCollection<'s, Time, (String, u64)>,
}
