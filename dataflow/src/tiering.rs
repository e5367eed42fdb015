//! Tiers by hotness (seed §2.2): which storage tier each shard should be served from, as a
//! pure function of the query rate the hotness dataflow measures, the shard map's tiers
//! and replicas, and a per-node memory budget for the hot tier.
//!
//! This module owns the policy and its memory between rounds ([`TieringState`]); it does
//! not measure hotness ([`crate::hotness`]), publish decisions ([`crate::planner`] appends
//! them to the plan topic as [`hektor_topics::record::PlanAction::SetTier`]) nor switch
//! engines (the controller writes the tier into the shard map; the holders rebuild).
//!
//! **Bands.** A shard's rate is its queries over the last minute / 60 (`qps`). With
//! `promote_qps` P > `demote_qps` D > `cold_qps` C:
//!
//! | tier now | qps ≥ P | D ≤ qps < P | C ≤ qps < D | A ≤ qps < C | qps < A |
//! |---|---|---|---|---|---|
//! | hot  | stay | stay | → warm | → warm | → warm |
//! | warm | → hot | stay | stay | → cold | → cold |
//! | cold | → hot | → warm | stay | stay | → archive (only with `archive_dwell_ms`) |
//! | archive | stay | stay | stay | stay | stay |
//!
//! `archive_qps` A (below C) is the archive band, used only when archiving is on
//! (`archive_dwell_ms`, its own dwell; off by default, as it needs an object store). An archived shard is brought back by a read (its host restores
//! it and asks for cold), never by the policy: nothing reads it, so its rate is zero.
//!
//! The gaps between P and D and between D and C are the hysteresis: a shard promoted at
//! P is demoted only below D, a warm shard demoted to cold below C comes back to warm only
//! at D. On top of that, **dwell**: the rate must point at the same other tier at every
//! round for a dwell time before the change is decided: `promote_dwell_ms` for a move to
//! a hotter tier, `demote_dwell_ms` for hot → warm, `cold_dwell_ms` for warm → cold. A
//! hot shard goes to cold in two steps.
//!
//! **Hot budget.** A hot shard's engine keeps its graph and rows in memory; its size is
//! estimated by [`hot_bytes`] (`vectors × (5 × dim + 144)` bytes: the `f32` row, the int8
//! codes the hot walk uses, 2 × M = 32 layer-0 links of 4 bytes, and 16 bytes for upper
//! layers and bookkeeping). Each node's hot bytes are the sum over the hot shards it holds
//! a replica of (all collections together), counting a shard promoted but not yet switched
//! by the controller as hot already. Which nodes a promotion lands on follows the tier
//! roles ([`TierNodes`]: the live data nodes and the tiers each may hold, by
//! `hektor-cluster`'s `NodeSpec::may_hold`). When every holder may hold hot (always without
//! tier roles) the controller switches the holders in place, so the promotion must fit on
//! every replica's node. When a holder may not (a `cold`-only node, say) the controller
//! moves the shard to nodes that may, so their budget is the one that counts: there must
//! be as many live hot-eligible nodes as the shard has replicas, and the promotion is
//! charged to that many of them, those with the least hot bytes (then by name), until the
//! map shows it hot on the nodes the controller chose (the controller's placement picks
//! the actual targets; the charge is the policy's conservative stand-in); with no live
//! node that may hold hot it waits ("no live node may hold hot"). When it does not fit,
//! hot shards of the full nodes (the holders, or the chosen hot-eligible nodes) whose rate
//! is below `evict_ratio` × the candidate's (and not themselves about to change) are
//! demoted to warm first, coldest first, and the promotion waits until the map shows them
//! warm; a cold shard that finds no room goes to warm meanwhile (where a live node may
//! hold warm). Every hot-eligible node is listed in the plan's [`TierPlan::nodes`], even
//! one holding nothing yet; a node that may not hold hot only while it holds hot shards.
//! A node above its budget (its shards grew) has its coldest hot shards demoted at once,
//! without dwell.
//!
//! **Move budget.** At most `moves_per_round` decisions per round and `moves_per_min` in
//! any 60 s; budget demotions go first, then promotions (hottest first), then demotions
//! (coldest first). A shard with a decision not yet in the map is left alone until the
//! map shows it or `pending_timeout_ms` passes.
//!
//! **Defaults and the seed.** The seed promotes a single vector after 1,000 accesses in
//! 30 days and demotes it after 7 (hot → warm) and 30 (warm → cold) days without access.
//! Those are per-vector ages; a shard's tier change costs an engine rebuild, and the
//! planner's longest window is one day, so the defaults keep the seed's shape in shard
//! terms: hot from 20 queries/s sustained for 30 s, back to warm below 5 queries/s for an
//! hour, to cold below 0.1 queries/s (fewer than 6 a minute) for a day; at most 4 changes
//! a minute. The seed archives a vector cold for 180 days; archiving here is off unless
//! `archive_dwell_ms` is set (`--tier-archive-dwell-ms`, which needs `--archive-url`).
//! Every setting is a `hektor serve` flag, so a test shows the policy in seconds.

use std::collections::{BTreeMap, VecDeque};

use hektor_topics::record::{RingRange, Tier};

use crate::{DataflowError, Result};

/// Bytes per vector besides its dimension's (see the module doc): 32 layer-0 links of
/// 4 bytes and 16 bytes of upper layers and bookkeeping.
pub const HOT_OVERHEAD_BYTES_PER_VECTOR: u64 = 144;

/// Estimated memory of a hot shard: `vectors × (4 × dim + dim + 144)` bytes (the `f32`
/// rows, their int8 codes, the graph).
pub fn hot_bytes(vectors: u64, dimension: u32) -> u64 {
    vectors.saturating_mul(5 * u64::from(dimension) + HOT_OVERHEAD_BYTES_PER_VECTOR)
}

/// The policy's settings (see the module doc for what each does and why the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct TieringConfig {
    /// Decide tier changes at all.
    pub enabled: bool,
    /// A warm or cold shard at or above this rate wants the hot tier.
    pub promote_qps: f64,
    /// A hot shard below this rate wants the warm tier; a cold one at or above it, too.
    pub demote_qps: f64,
    /// A warm shard below this rate wants the cold tier.
    pub cold_qps: f64,
    /// Dwell before a move to a hotter tier (ms).
    pub promote_dwell_ms: u64,
    /// Dwell before hot → warm (ms).
    pub demote_dwell_ms: u64,
    /// Dwell before warm → cold (ms).
    pub cold_dwell_ms: u64,
    /// A cold shard below this rate wants the archive tier (only with
    /// `archive_dwell_ms`).
    pub archive_qps: f64,
    /// Dwell before cold → archive (ms); `None`: the policy never archives (a node
    /// without an object store, or an operator who archives by hand).
    pub archive_dwell_ms: Option<u64>,
    /// Memory for hot shards per node, in bytes ([`hot_bytes`]).
    pub hot_budget_bytes: u64,
    /// Tier changes decided in any 60 s.
    pub moves_per_min: usize,
    /// Tier changes decided in one round.
    pub moves_per_round: usize,
    /// A hot shard may be demoted to make room for one whose rate is at least
    /// 1 / `evict_ratio` times its own.
    pub evict_ratio: f64,
    /// A decision the map does not show after this long is forgotten (ms).
    pub pending_timeout_ms: u64,
}

impl Default for TieringConfig {
    fn default() -> Self {
        TieringConfig {
            enabled: true,
            promote_qps: 20.0,
            demote_qps: 5.0,
            cold_qps: 0.1,
            promote_dwell_ms: 30_000,
            demote_dwell_ms: 3_600_000,
            cold_dwell_ms: 86_400_000,
            archive_qps: 0.01,
            archive_dwell_ms: None,
            hot_budget_bytes: 8 << 30,
            moves_per_min: 4,
            moves_per_round: 2,
            evict_ratio: 0.5,
            pending_timeout_ms: 300_000,
        }
    }
}

impl TieringConfig {
    /// The door for settings: finite rates with `promote > demote > cold ≥ 0`, a budget,
    /// at least one move a minute and a round, an eviction ratio in (0, 1].
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(DataflowError::Input(why));
        for (name, v) in [
            ("promote qps", self.promote_qps),
            ("demote qps", self.demote_qps),
            ("cold qps", self.cold_qps),
            ("archive qps", self.archive_qps),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!(
                    "the tier {name} must be a finite rate ≥ 0, not {v}"
                ));
            }
        }
        if self.demote_qps >= self.promote_qps {
            return bad(format!(
                "the tier demote qps ({}) must be below the promote qps ({}): the gap is the hysteresis",
                self.demote_qps, self.promote_qps
            ));
        }
        if self.cold_qps >= self.demote_qps {
            return bad(format!(
                "the tier cold qps ({}) must be below the demote qps ({})",
                self.cold_qps, self.demote_qps
            ));
        }
        if self.archive_dwell_ms.is_some() && self.archive_qps >= self.cold_qps {
            return bad(format!(
                "the tier archive qps ({}) must be below the cold qps ({})",
                self.archive_qps, self.cold_qps
            ));
        }
        if self.hot_budget_bytes == 0 {
            return bad("the hot budget must be more than 0 bytes".into());
        }
        if self.moves_per_min == 0 || self.moves_per_round == 0 {
            return bad("tier moves per minute and per round must be at least 1".into());
        }
        if !(self.evict_ratio > 0.0 && self.evict_ratio <= 1.0) {
            return bad(format!(
                "the eviction ratio must lie in (0, 1], not {}",
                self.evict_ratio
            ));
        }
        Ok(())
    }

    fn dwell_ms(&self, from: Tier, to: Tier) -> u64 {
        if to < from {
            self.promote_dwell_ms
        } else if to == Tier::Archive {
            self.archive_dwell_ms.unwrap_or(u64::MAX)
        } else if to == Tier::Cold {
            self.cold_dwell_ms
        } else {
            self.demote_dwell_ms
        }
    }

    /// The tier a shard on `tier` at `qps` points at (the table in the module doc).
    pub fn wanted(&self, tier: Tier, qps: f64) -> Tier {
        match tier {
            Tier::Hot if qps < self.demote_qps => Tier::Warm,
            Tier::Hot => Tier::Hot,
            Tier::Warm if qps >= self.promote_qps => Tier::Hot,
            Tier::Warm if qps < self.cold_qps => Tier::Cold,
            Tier::Warm => Tier::Warm,
            Tier::Cold if qps >= self.promote_qps => Tier::Hot,
            Tier::Cold if qps >= self.demote_qps => Tier::Warm,
            Tier::Cold if self.archive_dwell_ms.is_some() && qps < self.archive_qps => {
                Tier::Archive
            }
            Tier::Cold => Tier::Cold,
            // A read restores an archived shard (its host then asks for cold); the
            // policy never brings one back by itself: nothing reads it.
            Tier::Archive => Tier::Archive,
        }
    }
}

/// A shard as the policy sees it: which collection, where, on what tier, how big and how
/// hot.
#[derive(Debug, Clone, PartialEq)]
pub struct TierShard {
    pub collection: String,
    pub range: RingRange,
    /// The tier in the current shard map.
    pub tier: Tier,
    /// The nodes holding it.
    pub replicas: Vec<String>,
    pub vectors: u64,
    pub dimension: u32,
    /// Queries per second over the last minute.
    pub qps: f64,
    /// Another decision of this round touches it (a split, a merge, a move): leave it.
    pub busy: bool,
}

impl TierShard {
    fn key(&self) -> ShardKey {
        (self.collection.clone(), self.range)
    }

    fn bytes(&self) -> u64 {
        hot_bytes(self.vectors, self.dimension)
    }
}

type ShardKey = (String, RingRange);

/// The live data nodes the controller places shards on, each with the tiers it may hold.
/// The rule from tier roles is `hektor-cluster`'s (`NodeSpec::may_hold`); the caller
/// applies it (`NodeSpec::tiers_held`) and the policy only reads the result. A node not
/// listed (dead, leaving, or nothing known) does not bar a tier: the controller switches
/// such a holder's tier in place, as it does every holder without tier roles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierNodes {
    tiers: BTreeMap<String, Vec<Tier>>,
}

impl TierNodes {
    /// Each live data node with the tiers it may hold.
    pub fn new(tiers: impl IntoIterator<Item = (String, Vec<Tier>)>) -> Self {
        TierNodes {
            tiers: tiers.into_iter().collect(),
        }
    }

    /// Live data nodes without tier roles: each may hold every tier.
    pub fn any_tier(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let all = vec![Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive];
        TierNodes::new(nodes.into_iter().map(|n| (n.into(), all.clone())))
    }

    /// Whether `node`, a live data node, may hold `tier`; `None` when it is not listed.
    pub fn may_hold(&self, node: &str, tier: Tier) -> Option<bool> {
        self.tiers.get(node).map(|t| t.contains(&tier))
    }

    /// The live data nodes that may hold `tier`, by name.
    pub fn eligible(&self, tier: Tier) -> impl Iterator<Item = &String> {
        self.tiers
            .iter()
            .filter(move |(_, t)| t.contains(&tier))
            .map(|(n, _)| n)
    }

    /// A live data node that may not hold `tier`: a shard of that tier held there moves.
    fn barred(&self, node: &str, tier: Tier) -> bool {
        self.may_hold(node, tier) == Some(false)
    }
}

/// Whether a shard may become warm: its holders may hold warm (switched in place), or a
/// live node may (the controller moves it there).
fn may_go_warm(s: &TierShard, tier_nodes: &TierNodes) -> bool {
    !s.replicas.iter().any(|n| tier_nodes.barred(n, Tier::Warm))
        || tier_nodes.eligible(Tier::Warm).next().is_some()
}

/// One decided tier change, with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierDecision {
    pub collection: String,
    pub range: RingRange,
    pub from: Tier,
    pub to: Tier,
    pub qps: f64,
    pub reason: String,
    /// A promotion whose holders may not hold hot (the controller moves the shard): the
    /// hot-eligible nodes whose budget it was charged to. Empty otherwise. The planner
    /// writes it into the decision's record as the placement hint (`"on"`) the
    /// controller's rules prefer, so the shard lands where the budget was charged.
    pub on: Vec<String>,
}

/// A node's hot tier after a round: estimated bytes (decided promotions included) and
/// its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHot {
    pub hot_bytes: u64,
    pub budget_bytes: u64,
    pub hot_shards: usize,
}

/// What one round decided, and the state of every node's hot tier.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TierPlan {
    pub decisions: Vec<TierDecision>,
    pub nodes: BTreeMap<String, NodeHot>,
    /// Shards whose rate points at another tier, waiting: `(collection, range, wanted,
    /// why they wait)`.
    pub waiting: Vec<(String, RingRange, Tier, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Watch {
    want: Tier,
    since_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Pending {
    to: Tier,
    since_ms: u64,
    /// A promotion that moves the shard: the nodes its hot bytes are charged to until
    /// the map shows it hot (empty: its holders).
    on: Vec<String>,
}

/// What the policy remembers between rounds: since when each shard's rate has pointed
/// at another tier, decisions not yet in the map, and when recent decisions were taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TieringState {
    watch: BTreeMap<ShardKey, Watch>,
    pending: BTreeMap<ShardKey, Pending>,
    moves: VecDeque<u64>,
}

impl TieringState {
    /// Decisions still waiting for the map to show them.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn lower(tier: Tier) -> &'static str {
    match tier {
        Tier::Hot => "hot",
        Tier::Warm => "warm",
        Tier::Cold => "cold",
        Tier::Archive => "archive",
    }
}

/// Remember a decision: pending until the map shows it, counted against the move budget.
fn record(
    plan: &mut TierPlan,
    state: &mut TieringState,
    s: &TierShard,
    to: Tier,
    reason: String,
    on: Vec<String>,
    now_ms: u64,
) {
    state.pending.insert(
        s.key(),
        Pending {
            to,
            since_ms: now_ms,
            on: on.clone(),
        },
    );
    state.watch.remove(&s.key());
    state.moves.push_back(now_ms);
    plan.decisions.push(TierDecision {
        collection: s.collection.clone(),
        range: s.range,
        from: s.tier,
        to,
        qps: s.qps,
        reason,
        on,
    });
}

/// Hot shards of `node` free to be demoted now (no decision pending, not busy), coldest
/// first, the larger first among equals.
fn demotable<'a>(shards: &'a [TierShard], node: &str, state: &TieringState) -> Vec<&'a TierShard> {
    let mut v: Vec<&TierShard> = shards
        .iter()
        .filter(|s| {
            s.tier == Tier::Hot
                && !s.busy
                && s.replicas.iter().any(|r| r == node)
                && !state.pending.contains_key(&s.key())
        })
        .collect();
    v.sort_by(|a, b| a.qps.total_cmp(&b.qps).then(b.bytes().cmp(&a.bytes())));
    v
}

/// One round of the policy at `now_ms` over every shard of every collection (the budget
/// is per node, across collections), with the live data nodes and the tiers each may hold
/// (`tier_nodes`). Updates `state`; see the module doc for the rules.
pub fn plan_tiers(
    shards: &[TierShard],
    tier_nodes: &TierNodes,
    config: &TieringConfig,
    state: &mut TieringState,
    now_ms: u64,
) -> TierPlan {
    let mut plan = TierPlan::default();
    let by_key: BTreeMap<ShardKey, &TierShard> = shards.iter().map(|s| (s.key(), s)).collect();

    // Forget what the map shows, what is gone and what is too old.
    state.pending.retain(|key, p| {
        by_key.get(key).is_some_and(|s| s.tier != p.to)
            && now_ms < p.since_ms.saturating_add(config.pending_timeout_ms)
    });
    state.watch.retain(|key, _| by_key.contains_key(key));
    while state
        .moves
        .front()
        .is_some_and(|t| now_ms >= t.saturating_add(60_000))
    {
        state.moves.pop_front();
    }

    // Hot bytes per node, conservatively: hot in the map, or promoted and not shown yet
    // (a promotion that moves the shard counts on the nodes it was charged to, not on its
    // holders). `leaving`: hot in the map with a demotion decided (counted above until
    // shown). Every node that may hold hot is listed, even with nothing on it.
    let empty = NodeHot {
        hot_bytes: 0,
        budget_bytes: config.hot_budget_bytes,
        hot_shards: 0,
    };
    let mut nodes: BTreeMap<String, NodeHot> = tier_nodes
        .eligible(Tier::Hot)
        .map(|n| (n.clone(), empty.clone()))
        .collect();
    let mut leaving: BTreeMap<String, u64> = BTreeMap::new();
    for s in shards {
        let p = state.pending.get(&s.key());
        let pending = p.map(|p| p.to);
        let hot = s.tier == Tier::Hot || pending == Some(Tier::Hot);
        let charged = match p {
            Some(p) if p.to == Tier::Hot && !p.on.is_empty() => &p.on,
            _ => &s.replicas,
        };
        for n in &s.replicas {
            nodes.entry(n.clone()).or_insert_with(|| empty.clone());
            if s.tier == Tier::Hot && pending.is_some_and(|p| p != Tier::Hot) {
                *leaving.entry(n.clone()).or_default() += s.bytes();
            }
        }
        if hot {
            for n in charged {
                let e = nodes.entry(n.clone()).or_insert_with(|| empty.clone());
                e.hot_bytes = e.hot_bytes.saturating_add(s.bytes());
                e.hot_shards += 1;
            }
        }
    }
    // The nodes shown: a node that may not hold hot only while it holds hot shards.
    let shown = |mut nodes: BTreeMap<String, NodeHot>| {
        nodes.retain(|n, h| h.hot_shards > 0 || !tier_nodes.barred(n, Tier::Hot));
        nodes
    };
    let staying = |nodes: &BTreeMap<String, NodeHot>, leaving: &BTreeMap<String, u64>, n: &str| {
        nodes
            .get(n)
            .map_or(0, |h| h.hot_bytes)
            .saturating_sub(leaving.get(n).copied().unwrap_or(0))
    };

    // Where each shard's rate points, and since when.
    let mut ready: Vec<(&TierShard, Tier, u64)> = Vec::new();
    for s in shards {
        let key = s.key();
        let want = config.wanted(s.tier, s.qps);
        if want == s.tier {
            state.watch.remove(&key);
            continue;
        }
        let w = state.watch.entry(key.clone()).or_insert(Watch {
            want,
            since_ms: now_ms,
        });
        if w.want != want {
            *w = Watch {
                want,
                since_ms: now_ms,
            };
        }
        let held = now_ms.saturating_sub(w.since_ms);
        if state.pending.contains_key(&key) || s.busy {
            continue;
        }
        let dwell = config.dwell_ms(s.tier, want);
        if held >= dwell {
            ready.push((s, want, held));
        } else {
            plan.waiting.push((
                s.collection.clone(),
                s.range,
                want,
                format!(
                    "qps {:.1} for {} of the {} dwell",
                    s.qps,
                    fmt_ms(held),
                    fmt_ms(dwell)
                ),
            ));
        }
    }
    if !config.enabled {
        plan.nodes = shown(nodes);
        return plan;
    }
    let mut allowed = config
        .moves_per_round
        .min(config.moves_per_min.saturating_sub(state.moves.len()));

    // 1. Nodes over budget (their hot shards grew, or a replica arrived): their coldest
    // hot shards go to warm, without dwell.
    let over: Vec<String> = nodes
        .keys()
        .filter(|n| staying(&nodes, &leaving, n) > config.hot_budget_bytes)
        .cloned()
        .collect();
    for node in over {
        for s in demotable(shards, &node, state) {
            let used = staying(&nodes, &leaving, &node);
            if used <= config.hot_budget_bytes || allowed == 0 {
                break;
            }
            let reason = format!(
                "hot → warm: hot tier of {node} at {} > budget {}; its coldest hot shard (qps {:.1}, {}) leaves",
                mib(used),
                mib(config.hot_budget_bytes),
                s.qps,
                mib(s.bytes())
            );
            record(&mut plan, state, s, Tier::Warm, reason, Vec::new(), now_ms);
            allowed -= 1;
            for n in &s.replicas {
                *leaving.entry(n.clone()).or_default() += s.bytes();
            }
        }
    }

    // 2. Moves to a hotter tier, hottest first; 3. demotions, coldest first.
    let (mut up, mut down): (Vec<_>, Vec<_>) = ready
        .into_iter()
        .filter(|(s, ..)| !state.pending.contains_key(&s.key()))
        .partition(|(s, want, _)| *want < s.tier);
    up.sort_by(|a, b| b.0.qps.total_cmp(&a.0.qps));
    down.sort_by(|a, b| a.0.qps.total_cmp(&b.0.qps));
    for (s, want, held) in up {
        if allowed == 0 {
            break;
        }
        if want != Tier::Hot {
            // Cold → warm only where warm can go (its holders, or a live node, may hold
            // it); under tier roles without a warm node the shard waits for the promote
            // rate instead (a decision the controller cannot carry out would hold it).
            if !may_go_warm(s, tier_nodes) {
                plan.waiting.push((
                    s.collection.clone(),
                    s.range,
                    want,
                    format!(
                        "qps {:.1} ≥ demote {} for {}, but no live data node may hold warm: it waits for the promote rate {}",
                        s.qps,
                        config.demote_qps,
                        fmt_ms(held),
                        config.promote_qps
                    ),
                ));
                continue;
            }
            let reason = format!(
                "{} → {}: qps {:.1} ≥ demote {} for {}",
                lower(s.tier),
                lower(want),
                s.qps,
                config.demote_qps,
                fmt_ms(held)
            );
            record(&mut plan, state, s, want, reason, Vec::new(), now_ms);
            allowed -= 1;
            continue;
        }
        let why = format!(
            "qps {:.1} ≥ promote {} for {}",
            s.qps,
            config.promote_qps,
            fmt_ms(held)
        );
        let bytes = s.bytes();
        let waiting = |plan: &mut TierPlan, why: String| {
            plan.waiting
                .push((s.collection.clone(), s.range, Tier::Hot, why));
        };
        if bytes > config.hot_budget_bytes {
            waiting(
                &mut plan,
                format!("{why}, but its {} exceed the whole hot budget", mib(bytes)),
            );
            continue;
        }
        // Where it will be hot: on its holders when they may all hold hot (the controller
        // switches their engines in place); else it moves, and the controller builds it on
        // nodes that may hold hot: charge it to as many of those as it has replicas, the
        // ones with the most room (the least hot bytes, then by name).
        let barred: Vec<&str> = s
            .replicas
            .iter()
            .filter(|n| tier_nodes.barred(n, Tier::Hot))
            .map(String::as_str)
            .collect();
        let moving = !barred.is_empty();
        let eligible: Vec<&String> = tier_nodes.eligible(Tier::Hot).collect();
        let names = |v: &[&String]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
        let on: Vec<String> = if !moving {
            s.replicas.clone()
        } else {
            let copies = s.replicas.len().max(1);
            if eligible.is_empty() {
                waiting(
                    &mut plan,
                    format!(
                        "{why}, but no live node may hold hot (its holders {} may not)",
                        barred.join(", ")
                    ),
                );
                continue;
            }
            if eligible.len() < copies {
                waiting(
                    &mut plan,
                    format!(
                        "{why}, but its holders {} may not hold hot and only {} live node{} may ({}), fewer than its {copies} replicas",
                        barred.join(", "),
                        eligible.len(),
                        if eligible.len() == 1 { "" } else { "s" },
                        names(&eligible)
                    ),
                );
                continue;
            }
            let hot_of = |n: &str| nodes.get(n).map_or(0, |h| h.hot_bytes);
            let mut by_room = eligible.clone();
            by_room.sort_by(|a, b| hot_of(a).cmp(&hot_of(b)).then(a.cmp(b)));
            by_room.into_iter().take(copies).cloned().collect()
        };
        // Room on a node counts only what the map shows (conservative `hot_bytes`).
        let need = |n: &String| {
            nodes
                .get(n)
                .map_or(0, |h| h.hot_bytes.saturating_add(bytes))
                .saturating_sub(config.hot_budget_bytes)
        };
        let full: Vec<&String> = on.iter().filter(|n| need(n) > 0).collect();
        if full.is_empty() {
            let reason = if moving {
                format!(
                    "{} → hot: {why}; its holders {} may not hold hot: it moves, charged to {} ({} more of {} each)",
                    lower(s.tier),
                    barred.join(", "),
                    on.join(", "),
                    mib(bytes),
                    mib(config.hot_budget_bytes)
                )
            } else {
                format!(
                    "{} → hot: {why}; fits the hot budget ({} more of {} on {})",
                    lower(s.tier),
                    mib(bytes),
                    mib(config.hot_budget_bytes),
                    s.replicas.join(", ")
                )
            };
            for n in &on {
                if let Some(h) = nodes.get_mut(n) {
                    h.hot_bytes = h.hot_bytes.saturating_add(bytes);
                    h.hot_shards += 1;
                }
            }
            let charged = if moving { on } else { Vec::new() };
            record(&mut plan, state, s, Tier::Hot, reason, charged, now_ms);
            allowed -= 1;
            continue;
        }
        // Make room: hot shards clearly colder than this one, coldest first, on every
        // full node (what already leaves counts); the promotion waits for the map.
        let mut evict: Vec<&TierShard> = Vec::new();
        let mut possible = true;
        for node in &full {
            let mut short = need(node).saturating_sub(leaving.get(*node).copied().unwrap_or(0));
            for e in &evict {
                if e.replicas.contains(node) {
                    short = short.saturating_sub(e.bytes());
                }
            }
            for c in demotable(shards, node, state) {
                if short == 0 || c.qps >= s.qps * config.evict_ratio {
                    break;
                }
                if !evict.iter().any(|e| e.key() == c.key()) {
                    short = short.saturating_sub(c.bytes());
                    evict.push(c);
                }
            }
            possible &= short == 0;
        }
        if !possible || evict.len() > allowed {
            let full_why = if moving {
                format!(
                    "{why}, but its holders {} may not hold hot and the hot tier of {} is full (the live nodes that may hold hot: {})",
                    barred.join(", "),
                    names(&full),
                    names(&eligible)
                )
            } else {
                format!("{why}, but the hot tier of {} is full", names(&full))
            };
            // Warm instead only where it can go: its holders, or a live node, may hold it.
            if s.tier == Tier::Cold && may_go_warm(s, tier_nodes) {
                // No room in memory: the disk graph serves it much better than cold.
                let reason = format!("cold → warm: {full_why}");
                record(&mut plan, state, s, Tier::Warm, reason, Vec::new(), now_ms);
                allowed -= 1;
            } else {
                waiting(&mut plan, full_why);
            }
            continue;
        }
        for e in &evict {
            let reason = format!(
                "hot → warm: making room in the hot budget ({}) for {} [{:#x}, …) at qps {:.1} ≥ promote {}; this shard's qps {:.1} < {} × that",
                mib(config.hot_budget_bytes),
                s.collection,
                s.range.start,
                s.qps,
                config.promote_qps,
                e.qps,
                config.evict_ratio
            );
            record(&mut plan, state, e, Tier::Warm, reason, Vec::new(), now_ms);
            allowed -= 1;
            for n in &e.replicas {
                *leaving.entry(n.clone()).or_default() += e.bytes();
            }
        }
        let wait_why = if moving {
            format!(
                "{why}; waiting for colder hot shards to leave the hot tier of {} (its holders {} may not hold hot)",
                on.join(", "),
                barred.join(", ")
            )
        } else {
            format!("{why}; waiting for colder hot shards to leave the hot tier")
        };
        waiting(&mut plan, wait_why);
    }
    for (s, want, held) in down {
        if allowed == 0 {
            break;
        }
        if state.pending.contains_key(&s.key()) {
            continue;
        }
        let (threshold, name) = if want == Tier::Archive {
            (config.archive_qps, "archive")
        } else if want == Tier::Cold {
            (config.cold_qps, "cold")
        } else {
            (config.demote_qps, "demote")
        };
        let reason = format!(
            "{} → {}: qps {:.1} < {name} {threshold} for {}",
            lower(s.tier),
            lower(want),
            s.qps,
            fmt_ms(held)
        );
        record(&mut plan, state, s, want, reason, Vec::new(), now_ms);
        allowed -= 1;
    }
    plan.nodes = shown(nodes);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn range(i: u64) -> RingRange {
        RingRange {
            start: i << 60,
            end: Some((i + 1) << 60),
        }
    }

    /// A shard of `vectors` 384-dim vectors on `nodes`.
    fn shard(i: u64, tier: Tier, qps: f64, vectors: u64, nodes: &[&str]) -> TierShard {
        TierShard {
            collection: "c".into(),
            range: range(i),
            tier,
            replicas: nodes.iter().map(|n| n.to_string()).collect(),
            vectors,
            dimension: 384,
            qps,
            busy: false,
        }
    }

    fn config() -> TieringConfig {
        TieringConfig {
            promote_dwell_ms: 30_000,
            demote_dwell_ms: 60_000,
            cold_dwell_ms: 120_000,
            hot_budget_bytes: 10 * MIB,
            moves_per_min: 10,
            moves_per_round: 4,
            ..TieringConfig::default()
        }
    }

    /// Apply decisions as the controller would.
    fn apply(shards: &mut [TierShard], plan: &TierPlan) {
        for d in &plan.decisions {
            for s in shards.iter_mut() {
                if s.range == d.range {
                    s.tier = d.to;
                }
            }
        }
    }

    /// Apply decisions as the controller would under tier roles, a promotion that moves
    /// landing where the policy charged it.
    fn apply_moves(shards: &mut [TierShard], plan: &TierPlan) {
        apply(shards, plan);
        for d in plan.decisions.iter().filter(|d| !d.on.is_empty()) {
            for s in shards.iter_mut().filter(|s| s.range == d.range) {
                s.replicas = d.on.clone();
            }
        }
    }

    /// Nodes `a`, `b`, `c` without tier roles.
    fn plain() -> TierNodes {
        TierNodes::any_tier(["a", "b", "c"])
    }

    /// The tiers of the roles `hot`, `warm`, `cold` (a cold node also holds archive).
    const HOT: &[Tier] = &[Tier::Hot];
    const WARM: &[Tier] = &[Tier::Warm];
    const COLD: &[Tier] = &[Tier::Cold, Tier::Archive];

    /// Nodes with tier roles.
    fn roles(nodes: &[(&str, &[Tier])]) -> TierNodes {
        TierNodes::new(nodes.iter().map(|(n, t)| (n.to_string(), t.to_vec())))
    }

    #[test]
    fn the_bands_have_gaps() {
        let c = TieringConfig::default();
        assert_eq!(c.wanted(Tier::Hot, 10.0), Tier::Hot);
        assert_eq!(c.wanted(Tier::Hot, 4.9), Tier::Warm);
        assert_eq!(c.wanted(Tier::Hot, 0.0), Tier::Warm);
        assert_eq!(c.wanted(Tier::Warm, 19.9), Tier::Warm);
        assert_eq!(c.wanted(Tier::Warm, 20.0), Tier::Hot);
        assert_eq!(c.wanted(Tier::Warm, 0.05), Tier::Cold);
        assert_eq!(c.wanted(Tier::Cold, 1.0), Tier::Cold);
        assert_eq!(c.wanted(Tier::Cold, 5.0), Tier::Warm);
        assert_eq!(c.wanted(Tier::Cold, 25.0), Tier::Hot);
        assert_eq!(hot_bytes(1_000, 384), 1_000 * (5 * 384 + 144));
    }

    #[test]
    fn a_promotion_waits_for_its_dwell_and_says_why() {
        let c = config();
        let mut state = TieringState::default();
        let shards = vec![shard(0, Tier::Warm, 41.2, 1_000, &["a"])];
        let t0 = 1_000_000;
        for dt in [0, 10_000, 29_999] {
            let plan = plan_tiers(&shards, &plain(), &c, &mut state, t0 + dt);
            assert!(plan.decisions.is_empty(), "{plan:?}");
            assert_eq!(plan.waiting.len(), 1);
        }
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, t0 + 30_000);
        assert_eq!(plan.decisions.len(), 1);
        let d = &plan.decisions[0];
        assert_eq!((d.from, d.to), (Tier::Warm, Tier::Hot));
        assert!(
            d.reason.contains("qps 41.2 ≥ promote 20 for 30 s"),
            "{}",
            d.reason
        );
        // Pending until the map shows it: not decided again.
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, t0 + 35_000);
        assert!(plan.decisions.is_empty());
        assert_eq!(state.pending(), 1);
    }

    #[test]
    fn a_dip_restarts_the_dwell() {
        let c = config();
        let mut state = TieringState::default();
        let mut shards = vec![shard(0, Tier::Hot, 1.0, 1_000, &["a"])];
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 0);
        assert!(plan.decisions.is_empty());
        // Back in the band at 50 s: the hot shard stays; the clock restarts.
        shards[0].qps = 6.0;
        assert!(plan_tiers(&shards, &plain(), &c, &mut state, 50_000)
            .decisions
            .is_empty());
        shards[0].qps = 1.0;
        assert!(plan_tiers(&shards, &plain(), &c, &mut state, 70_000)
            .decisions
            .is_empty());
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 130_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        assert!(plan.decisions[0]
            .reason
            .starts_with("hot → warm: qps 1.0 < demote 5 for 60 s"));
    }

    #[test]
    fn between_the_thresholds_nothing_moves() {
        let c = config();
        let mut state = TieringState::default();
        let shards = vec![
            shard(0, Tier::Hot, 10.0, 1_000, &["a"]),
            shard(1, Tier::Warm, 10.0, 1_000, &["a"]),
            shard(2, Tier::Warm, 1.0, 1_000, &["a"]),
            shard(3, Tier::Cold, 1.0, 1_000, &["a"]),
        ];
        for t in 0..100 {
            let plan = plan_tiers(&shards, &plain(), &c, &mut state, t * 10_000);
            assert!(plan.decisions.is_empty(), "{plan:?}");
        }
    }

    #[test]
    fn a_cold_shard_goes_to_cold_after_its_dwell_in_two_steps() {
        let c = config();
        let mut state = TieringState::default();
        let mut shards = vec![shard(0, Tier::Hot, 0.0, 1_000, &["a"])];
        let mut changes = Vec::new();
        for t in 0..40 {
            let plan = plan_tiers(&shards, &plain(), &c, &mut state, t * 10_000);
            apply(&mut shards, &plan);
            changes.extend(plan.decisions.iter().map(|d| (t * 10, d.to)));
        }
        // Hot → warm after 60 s; warm → cold 120 s after the first round that saw it
        // warm (70 s).
        assert_eq!(changes, vec![(60, Tier::Warm), (190, Tier::Cold)]);
    }

    #[test]
    fn an_unread_cold_shard_is_archived_only_when_archiving_is_on() {
        let mut shards = vec![
            shard(0, Tier::Cold, 0.0, 1_000, &["a"]),
            // Read now and then: above the archive rate, below cold.
            shard(1, Tier::Cold, 0.05, 1_000, &["a"]),
        ];
        // Off (the default): a cold shard nobody reads stays cold for ever.
        let mut state = TieringState::default();
        for t in 0..100 {
            let plan = plan_tiers(&shards, &plain(), &config(), &mut state, t * 10_000);
            assert!(plan.decisions.is_empty(), "{plan:?}");
        }
        let c = TieringConfig {
            archive_dwell_ms: Some(300_000),
            ..config()
        };
        let mut state = TieringState::default();
        let mut changes = Vec::new();
        for t in 0..100 {
            let plan = plan_tiers(&shards, &plain(), &c, &mut state, t * 10_000);
            apply(&mut shards, &plan);
            changes.extend(
                plan.decisions
                    .iter()
                    .map(|d| (t * 10, d.range, d.to, d.reason.clone())),
            );
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (at, range, to, reason) = &changes[0];
        assert_eq!(
            (*at, *range, *to),
            (300, shard(0, Tier::Cold, 0.0, 0, &[]).range, Tier::Archive)
        );
        assert!(
            reason.starts_with("cold → archive: qps 0.0 < archive 0.01 for 300 s"),
            "{reason}"
        );
        // An archived shard stays archived whatever its rate: a read restores it.
        assert_eq!(c.wanted(Tier::Archive, 100.0), Tier::Archive);
        assert_eq!(c.wanted(Tier::Cold, 0.05), Tier::Cold);
        // The archive band lies below the cold one.
        let bad = TieringConfig {
            archive_qps: 0.5,
            ..c
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("archive qps"));
    }

    #[test]
    fn promotions_stay_within_the_hot_budget_hottest_first() {
        let c = config();
        let mut state = TieringState::default();
        // 4,000 vectors of 384 dims: 7.9 MiB each; the budget holds one.
        let mut shards = vec![
            shard(0, Tier::Warm, 30.0, 4_000, &["a"]),
            shard(1, Tier::Warm, 50.0, 4_000, &["a"]),
        ];
        plan_tiers(&shards, &plain(), &c, &mut state, 0);
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 30_000);
        assert_eq!(plan.decisions.len(), 1);
        assert_eq!(plan.decisions[0].range, range(1));
        assert!(plan.waiting.iter().any(|w| w.3.contains("is full")));
        apply(&mut shards, &plan);
        for t in 4..20 {
            let plan = plan_tiers(&shards, &plain(), &c, &mut state, t * 10_000);
            assert!(plan.decisions.is_empty(), "{plan:?}");
            assert!(plan.nodes["a"].hot_bytes <= c.hot_budget_bytes);
        }
    }

    #[test]
    fn a_promotion_off_cold_only_holders_is_charged_to_the_hot_nodes() {
        let c = config();
        let nodes = roles(&[("c1", COLD), ("c2", COLD), ("h1", HOT), ("h2", HOT)]);
        let mut state = TieringState::default();
        // 7.9 MiB each; the 10 MiB budget holds one, and one beside h1's 2 MiB shard.
        let mut shards = vec![
            shard(0, Tier::Cold, 50.0, 4_000, &["c1"]),
            shard(1, Tier::Cold, 40.0, 4_000, &["c2"]),
            shard(2, Tier::Cold, 30.0, 4_000, &["c1"]),
            shard(3, Tier::Hot, 30.0, 1_000, &["h1"]),
        ];
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 0);
        // Every node that may hold hot is listed, h2 with nothing on it; the cold-only
        // nodes, which hold nothing hot, are not.
        assert_eq!(
            plan.nodes.keys().collect::<Vec<_>>(),
            ["h1", "h2"],
            "{plan:?}"
        );
        assert_eq!(plan.nodes["h2"].hot_bytes, 0);
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 30_000);
        let out: Vec<_> = plan
            .decisions
            .iter()
            .map(|d| (d.range, d.to, d.on.clone()))
            .collect();
        // The hottest goes to the node with the most room (h2), the next to the other
        // (h1: 2 + 7.9 MiB ≤ 10 MiB); the third fits on neither (h2, with the most room,
        // is full) and, with no node that may hold warm, waits.
        assert_eq!(
            out,
            vec![
                (range(0), Tier::Hot, vec!["h2".to_string()]),
                (range(1), Tier::Hot, vec!["h1".to_string()]),
            ],
            "{plan:?}"
        );
        assert!(
            plan.decisions[0]
                .reason
                .contains("its holders c1 may not hold hot: it moves, charged to h2"),
            "{}",
            plan.decisions[0].reason
        );
        let why = &plan
            .waiting
            .iter()
            .find(|w| w.1 == range(2))
            .expect("shard 2 waits")
            .3;
        assert!(
            why.contains("the hot tier of h2 is full (the live nodes that may hold hot: h1, h2)"),
            "{why}"
        );
        for n in ["h1", "h2"] {
            assert!(plan.nodes[n].hot_bytes <= c.hot_budget_bytes, "{plan:?}");
        }
        assert_eq!(plan.nodes["h2"].hot_bytes, shards[0].bytes());
        assert_eq!(
            plan.nodes["h1"].hot_bytes,
            shards[1].bytes() + shards[3].bytes()
        );
        // Until the map shows them hot, the pending moves stay charged to h1 and h2.
        let decided = plan;
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 35_000);
        assert!(plan.decisions.is_empty(), "{plan:?}");
        assert_eq!(plan.nodes["h2"].hot_bytes, shards[0].bytes());
        assert!(plan.waiting.iter().any(|w| w.1 == range(2)));
        // The controller moves them where they were charged; the budgets hold, and
        // nothing more moves.
        apply_moves(&mut shards, &decided);
        assert_eq!(shards[0].replicas, ["h2"]);
        assert_eq!(shards[1].replicas, ["h1"]);
        for t in 4..20 {
            let plan = plan_tiers(&shards, &nodes, &c, &mut state, t * 10_000);
            assert!(plan.decisions.is_empty(), "{plan:?}");
            for n in ["h1", "h2"] {
                assert!(plan.nodes[n].hot_bytes <= c.hot_budget_bytes, "{plan:?}");
            }
            assert_eq!(plan.nodes["h2"].hot_bytes, shards[0].bytes());
        }
    }

    #[test]
    fn a_move_to_hot_makes_room_on_the_hot_nodes_not_the_holders() {
        let c = config();
        let nodes = roles(&[("c1", COLD), ("h1", HOT), ("w1", WARM)]);
        let mut state = TieringState::default();
        let mut shards = vec![
            shard(0, Tier::Hot, 6.0, 4_000, &["h1"]),
            shard(1, Tier::Cold, 50.0, 4_000, &["c1"]),
        ];
        plan_tiers(&shards, &nodes, &c, &mut state, 0);
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 30_000);
        // The cold-only holder has no hot bytes, but h1, where it goes, is full: its
        // colder hot shard leaves first.
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        let d = &plan.decisions[0];
        assert_eq!((d.range, d.to), (range(0), Tier::Warm));
        assert!(d.reason.contains("making room"), "{}", d.reason);
        let why = &plan.waiting.iter().find(|w| w.1 == range(1)).unwrap().3;
        assert!(why.contains("leave the hot tier of h1"), "{why}");
        apply(&mut shards, &plan);
        // The controller moves the demoted shard off h1, to w1, which may hold warm.
        shards[0].replicas = vec!["w1".into()];
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 40_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        let d = &plan.decisions[0];
        assert_eq!(
            (d.range, d.to, d.on.clone()),
            (range(1), Tier::Hot, vec!["h1".into()])
        );
        assert!(plan.nodes["h1"].hot_bytes <= c.hot_budget_bytes);
    }

    #[test]
    fn a_warming_cold_shard_without_a_warm_node_waits_for_the_promote_rate() {
        // Hot and cold nodes only: cold → warm could never be carried out (and would
        // hold the shard as a pending decision), so a cold shard between the demote and
        // the promote rate waits, and goes to hot once it is hot enough.
        let c = config();
        let nodes = roles(&[("c1", COLD), ("h1", HOT)]);
        let mut state = TieringState::default();
        let mut shards = vec![shard(0, Tier::Cold, 10.0, 1_000, &["c1"])];
        for t in [0, 30_000, 60_000] {
            let plan = plan_tiers(&shards, &nodes, &c, &mut state, t);
            assert!(plan.decisions.is_empty(), "{plan:?}");
            if t > 0 {
                let why = &plan.waiting[0].3;
                assert!(why.contains("no live data node may hold warm"), "{why}");
            }
        }
        shards[0].qps = 50.0;
        plan_tiers(&shards, &nodes, &c, &mut state, 70_000);
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 100_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        let d = &plan.decisions[0];
        assert_eq!(
            (d.from, d.to, d.on.clone()),
            (Tier::Cold, Tier::Hot, vec!["h1".to_string()])
        );
        // With a warm node it warms as before.
        let nodes = roles(&[("c1", COLD), ("h1", HOT), ("w1", WARM)]);
        let mut state = TieringState::default();
        shards[0].qps = 10.0;
        plan_tiers(&shards, &nodes, &c, &mut state, 0);
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 30_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        assert_eq!(plan.decisions[0].to, Tier::Warm);
    }

    #[test]
    fn a_promotion_off_cold_only_holders_waits_without_a_hot_node() {
        let c = config();
        let mut state = TieringState::default();
        let nodes = roles(&[("c1", COLD), ("c2", COLD), ("w1", WARM)]);
        let shards = vec![shard(0, Tier::Cold, 50.0, 1_000, &["c1"])];
        plan_tiers(&shards, &nodes, &c, &mut state, 0);
        for t in [30_000, 60_000] {
            let plan = plan_tiers(&shards, &nodes, &c, &mut state, t);
            assert!(plan.decisions.is_empty(), "{plan:?}");
            assert_eq!(plan.waiting.len(), 1, "{plan:?}");
            assert!(
                plan.waiting[0]
                    .3
                    .ends_with("but no live node may hold hot (its holders c1 may not)"),
                "{}",
                plan.waiting[0].3
            );
            assert!(plan.nodes.is_empty(), "{plan:?}");
        }
        // Two replicas and one node that may hold hot: it waits too, and says so.
        let nodes = roles(&[("c1", COLD), ("c2", COLD), ("h1", HOT)]);
        let shards = vec![shard(0, Tier::Cold, 50.0, 1_000, &["c1", "c2"])];
        let mut state = TieringState::default();
        plan_tiers(&shards, &nodes, &c, &mut state, 0);
        let plan = plan_tiers(&shards, &nodes, &c, &mut state, 30_000);
        assert!(plan.decisions.is_empty(), "{plan:?}");
        assert!(
            plan.waiting[0]
                .3
                .ends_with("only 1 live node may (h1), fewer than its 2 replicas"),
            "{}",
            plan.waiting[0].3
        );
        assert_eq!(plan.nodes["h1"].hot_bytes, 0);
    }

    #[test]
    fn holders_that_may_hold_hot_keep_the_budget_on_the_holders() {
        // The same rounds with nothing known of the nodes, with nodes without tier roles,
        // and with tier roles that let every holder hold hot (c is cold-only and idle):
        // the same decisions and waits, charged to the holders, as before tier roles.
        let c = config();
        type Round = (Vec<TierDecision>, Vec<(String, RingRange, Tier, String)>);
        let runs: Vec<Vec<Round>> = [
            TierNodes::default(),
            TierNodes::any_tier(["a", "b", "x"]),
            roles(&[
                ("a", &[Tier::Hot, Tier::Warm]),
                ("b", &[Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive]),
                ("c", COLD),
            ]),
        ]
        .iter()
        .map(|nodes| {
            let mut state = TieringState::default();
            let mut shards = vec![
                shard(0, Tier::Hot, 6.0, 4_000, &["a", "b"]),
                shard(1, Tier::Warm, 50.0, 4_000, &["a"]),
                shard(2, Tier::Warm, 30.0, 4_000, &["b"]),
                shard(3, Tier::Warm, 25.0, 2_000, &["b"]),
                shard(4, Tier::Cold, 22.0, 4_000, &["b"]),
            ];
            let mut rounds = Vec::new();
            for t in 0..12 {
                let plan = plan_tiers(&shards, nodes, &c, &mut state, t * 10_000);
                for n in ["a", "b"] {
                    if let Some(h) = plan.nodes.get(n) {
                        assert!(h.hot_bytes <= c.hot_budget_bytes, "{plan:?}");
                    }
                }
                assert!(plan.decisions.iter().all(|d| d.on.is_empty()), "{plan:?}");
                apply_moves(&mut shards, &plan);
                rounds.push((plan.decisions, plan.waiting));
            }
            rounds
        })
        .collect();
        assert_eq!(runs[0], runs[1]);
        assert_eq!(runs[0], runs[2]);
        let decided: Vec<(RingRange, Tier)> = runs[0]
            .iter()
            .flat_map(|r| r.0.iter().map(|d| (d.range, d.to)))
            .collect();
        // Shard 0 leaves a and b to make room for shard 1; once it is warm, shard 1 moves
        // in on a and shard 2 on b; shard 3 (3.9 MiB) no longer fits on b and waits, and
        // the cold one, no more room either, goes warm meanwhile.
        assert_eq!(
            decided,
            vec![
                (range(0), Tier::Warm),
                (range(1), Tier::Hot),
                (range(2), Tier::Hot),
                (range(4), Tier::Warm),
            ],
            "{runs:?}"
        );
    }

    #[test]
    fn a_hot_worthy_cold_shard_without_room_goes_warm() {
        let c = config();
        let mut state = TieringState::default();
        let shards = vec![
            shard(0, Tier::Hot, 30.0, 4_000, &["a"]),
            shard(1, Tier::Cold, 25.0, 4_000, &["a"]),
        ];
        plan_tiers(&shards, &plain(), &c, &mut state, 0);
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 30_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        let d = &plan.decisions[0];
        assert_eq!((d.range, d.to), (range(1), Tier::Warm));
        assert!(
            d.reason.starts_with(
                "cold → warm: qps 25.0 ≥ promote 20 for 30 s, but the hot tier of a is full"
            ),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_much_hotter_shard_makes_room_then_moves_in() {
        let c = config();
        let mut state = TieringState::default();
        let mut shards = vec![
            shard(0, Tier::Hot, 6.0, 4_000, &["a", "b"]),
            shard(1, Tier::Warm, 50.0, 4_000, &["a"]),
        ];
        plan_tiers(&shards, &plain(), &c, &mut state, 0);
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 30_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        let d = &plan.decisions[0];
        assert_eq!((d.range, d.to), (range(0), Tier::Warm));
        assert!(d.reason.contains("making room"), "{}", d.reason);
        // Not yet in the map: nothing more (no second eviction, no promotion).
        assert!(plan_tiers(&shards, &plain(), &c, &mut state, 35_000)
            .decisions
            .is_empty());
        apply(&mut shards, &plan);
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 40_000);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        assert_eq!(
            (plan.decisions[0].range, plan.decisions[0].to),
            (range(1), Tier::Hot)
        );
    }

    #[test]
    fn a_node_over_budget_sheds_its_coldest_hot_shards_at_once() {
        let c = config();
        let mut state = TieringState::default();
        let shards = vec![
            shard(0, Tier::Hot, 9.0, 3_000, &["a"]),
            shard(1, Tier::Hot, 7.0, 3_000, &["a"]),
            shard(2, Tier::Hot, 8.0, 3_000, &["a"]),
        ];
        // 3 × 5.9 MiB > 10 MiB: two must go, the two coldest.
        let plan = plan_tiers(&shards, &plain(), &c, &mut state, 0);
        let out: Vec<_> = plan.decisions.iter().map(|d| d.range).collect();
        assert_eq!(out, vec![range(1), range(2)], "{plan:?}");
        assert!(plan.decisions[0].reason.contains("> budget"));
        // Pending demotions count as leaving: nothing more next round.
        assert!(plan_tiers(&shards, &plain(), &c, &mut state, 5_000)
            .decisions
            .is_empty());
    }

    #[test]
    fn the_move_budget_caps_rounds_and_minutes() {
        let c = TieringConfig {
            moves_per_round: 2,
            moves_per_min: 3,
            hot_budget_bytes: 1 << 40,
            ..config()
        };
        let mut state = TieringState::default();
        let mut shards: Vec<TierShard> = (0..8)
            .map(|i| shard(i, Tier::Warm, 100.0, 10, &["a"]))
            .collect();
        plan_tiers(&shards, &plain(), &c, &mut state, 0);
        let mut per_time = Vec::new();
        for t in 3..20u64 {
            let plan = plan_tiers(&shards, &plain(), &c, &mut state, t * 10_000);
            apply(&mut shards, &plan);
            per_time.push((t * 10, plan.decisions.len()));
        }
        let counts: Vec<usize> = per_time.iter().map(|p| p.1).collect();
        // 2 at 30 s, 1 at 40 s (3 a minute), none until 90 s, then 2, 1 ...
        assert_eq!(
            &counts[..10],
            &[2, 1, 0, 0, 0, 0, 2, 1, 0, 0],
            "{per_time:?}"
        );
    }

    #[test]
    fn busy_and_disabled_shards_are_left_alone() {
        let mut c = config();
        let mut state = TieringState::default();
        let mut shards = vec![shard(0, Tier::Warm, 100.0, 10, &["a"])];
        shards[0].busy = true;
        plan_tiers(&shards, &plain(), &c, &mut state, 0);
        assert!(plan_tiers(&shards, &plain(), &c, &mut state, 60_000)
            .decisions
            .is_empty());
        shards[0].busy = false;
        c.enabled = false;
        assert!(plan_tiers(&shards, &plain(), &c, &mut state, 70_000)
            .decisions
            .is_empty());
        c.enabled = true;
        assert_eq!(
            plan_tiers(&shards, &plain(), &c, &mut state, 80_000)
                .decisions
                .len(),
            1
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = TieringConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            TieringConfig {
                demote_qps: 20.0,
                ..ok.clone()
            },
            TieringConfig {
                cold_qps: 6.0,
                ..ok.clone()
            },
            TieringConfig {
                promote_qps: f64::NAN,
                ..ok.clone()
            },
            TieringConfig {
                cold_qps: -1.0,
                ..ok.clone()
            },
            TieringConfig {
                hot_budget_bytes: 0,
                ..ok.clone()
            },
            TieringConfig {
                moves_per_min: 0,
                ..ok.clone()
            },
            TieringConfig {
                evict_ratio: 1.5,
                ..ok.clone()
            },
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.starts_with("invalid input: "), "{err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever the rates (changing every few rounds), the nodes' tier roles (none,
        /// `hot`, `warm` or `cold` each) and however late the controller carries decisions
        /// out (in place where the holders may hold the new tier, else moving the shard:
        /// a promotion where the policy charged it, other changes to the first nodes that
        /// may hold the tier, none when no node may): every node's hot tier in the map
        /// stays within its budget (it started within), rounds and minutes keep their
        /// move budgets, and under steady rates a shard settles (no flapping).
        #[test]
        fn the_budget_and_move_caps_hold(
            sizes in prop::collection::vec(100u64..3_000, 2..8),
            placement in prop::collection::vec(0usize..3, 8),
            rates in prop::collection::vec(prop::collection::vec(0.0f64..80.0, 8), 1..4),
            delays in prop::collection::vec(0u64..3, 64),
            budget_mib in 3u64..12,
            node_roles in prop::collection::vec(0usize..5, 3),
        ) {
            let nodes = ["a", "b", "c"];
            // 0 and 4: no tier role (half the cases have none at all, or some).
            let held: Vec<&[Tier]> = node_roles
                .iter()
                .map(|r| match r {
                    1 => HOT,
                    2 => WARM,
                    3 => COLD,
                    _ => &[Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive][..],
                })
                .collect();
            let tier_nodes = TierNodes::new(
                nodes.iter().zip(&held).map(|(n, t)| (n.to_string(), t.to_vec())),
            );
            let may = |n: &str, t: Tier| tier_nodes.may_hold(n, t) == Some(true);
            // Shards start warm, or cold without a node that may hold warm, on nodes that
            // may hold that tier.
            let start = [Tier::Warm, Tier::Cold]
                .into_iter()
                .find(|t| nodes.iter().any(|n| may(n, *t)));
            prop_assume!(start.is_some());
            let start = start.unwrap_or(Tier::Warm);
            let pool: Vec<&str> = nodes.iter().copied().filter(|n| may(n, start)).collect();
            let c = TieringConfig {
                promote_dwell_ms: 3_000,
                demote_dwell_ms: 5_000,
                cold_dwell_ms: 8_000,
                hot_budget_bytes: budget_mib * MIB,
                moves_per_min: 5,
                moves_per_round: 2,
                ..TieringConfig::default()
            };
            let mut shards: Vec<TierShard> = sizes
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let p = placement[i];
                    let k = pool.len();
                    let replicas = if p == 2 && k >= 2 { vec![pool[i % k], pool[(i + 1) % k]] } else { vec![pool[(i + p) % k]] };
                    shard(i as u64, start, 0.0, *v, &replicas)
                })
                .collect();
            let map_hot = |shards: &[TierShard], node: &str| -> u64 {
                shards
                    .iter()
                    .filter(|s| s.tier == Tier::Hot && s.replicas.iter().any(|r| r == node))
                    .map(TierShard::bytes)
                    .sum()
            };
            let mut state = TieringState::default();
            // Decisions waiting for the "controller": (apply at round, range, tier, on).
            let mut queue: Vec<(usize, RingRange, Tier, Vec<String>)> = Vec::new();
            let mut times: Vec<u64> = Vec::new();
            let mut changes = vec![0usize; shards.len()];
            let rounds = 120usize;
            let steady_from = rounds / 2;
            for round in 0..rounds {
                let now = round as u64 * 1_000;
                let phase = (round * rates.len() / steady_from).min(rates.len() - 1);
                for (i, s) in shards.iter_mut().enumerate() {
                    s.qps = rates[phase][i];
                }
                for (at, r, t, on) in &queue {
                    if *at > round {
                        continue;
                    }
                    let Some(s) = shards.iter_mut().find(|s| s.range == *r) else {
                        continue;
                    };
                    if !s.replicas.iter().all(|n| may(n, *t)) {
                        // A move: where the promotion was charged, else the first nodes
                        // that may hold the tier; with none, the controller holds back.
                        let to: Vec<String> = if on.is_empty() {
                            nodes
                                .iter()
                                .filter(|n| may(n, *t))
                                .take(s.replicas.len())
                                .map(|n| n.to_string())
                                .collect()
                        } else {
                            on.clone()
                        };
                        if to.is_empty() {
                            continue;
                        }
                        s.replicas = to;
                    }
                    s.tier = *t;
                    if round >= steady_from {
                        let i = (s.range.start >> 60) as usize;
                        changes[i] += 1;
                    }
                }
                queue.retain(|(at, ..)| *at > round);
                let plan = plan_tiers(&shards, &tier_nodes, &c, &mut state, now);
                prop_assert!(plan.decisions.len() <= c.moves_per_round);
                for (k, d) in plan.decisions.iter().enumerate() {
                    let s = shards.iter().find(|s| s.range == d.range).unwrap();
                    let moves = !s.replicas.iter().all(|n| may(n, d.to));
                    if d.to == Tier::Hot && moves {
                        // Charged to as many nodes that may hold hot as it has replicas.
                        prop_assert_eq!(d.on.len(), s.replicas.len(), "{:?}", d);
                        prop_assert!(d.on.iter().all(|n| may(n, Tier::Hot)), "{:?}", d);
                    } else {
                        prop_assert!(d.on.is_empty(), "{:?}", d);
                    }
                    times.push(now);
                    queue.push((round + 1 + delays[(round + k) % delays.len()] as usize, d.range, d.to, d.on.clone()));
                }
                for n in nodes {
                    prop_assert!(map_hot(&shards, n) <= c.hot_budget_bytes,
                        "node {} holds {} hot bytes > {}", n, map_hot(&shards, n), c.hot_budget_bytes);
                    if may(n, Tier::Hot) {
                        prop_assert!(plan.nodes.contains_key(n), "{} not listed: {:?}", n, plan.nodes);
                    }
                }
            }
            for (i, t) in times.iter().enumerate() {
                let in_minute = times[i..].iter().filter(|u| **u < t + 60_000).count();
                prop_assert!(in_minute <= c.moves_per_min, "{} moves in the minute from {} ms", in_minute, t);
            }
            for (i, n) in changes.iter().enumerate() {
                prop_assert!(*n <= 4, "shard {} changed tier {} times under steady rates", i, n);
            }
        }
    }
}
