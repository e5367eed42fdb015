//! The live kinetic planner of one node: follows every in-scope collection's events topic,
//! feeds the events into one [`HotnessDriver`] per collection, and every `interval` closes
//! the current second, runs [`decide`] and appends the resulting [`PlanChange`]s (JSON, so
//! people can read them) to the collection's plan topic.
//!
//! **Decisions, carried out elsewhere.** The planner only publishes: the controller
//! (`hektor-control`) reads the plan topic and carries out splits, merges and tier changes
//! through the shard map, and moves for collections placed by load (`"placement":
//! {"strategy": "load"}`; under count balancing a move would be undone, so there it is only
//! recorded). The view shows each decision with `"carried_out_by": "controller"` or `null`
//! accordingly. The planner remembers every decision as acted on, so the same range is not
//! proposed again for `min_interval_s`.
//!
//! **Shards are the shard map's.** With a [`ClusterFeed`] (the binary wires the control
//! plane in), the planner follows each collection's current map: every event is counted
//! for the serving shard holding its ring position, a new map epoch reshards the running
//! dataflow ([`HotnessDriver::reshard`]: kept shards keep their ids and windows, the halves
//! of a split start fresh), sizes come from the holders' heartbeats, and a node's load is
//! busy time — the milliseconds per second the queries it served took over the last
//! 15 seconds, counted by the node named in each event ([`NodeBusy`], so it stays right while
//! new shards' windows fill) — over its capacity (`capacity × cores_per_capacity` cores). Without a feed (tests), shards are the
//! partitions, all on this node.
//!
//! **Tiers by hotness.** With a feed, after every round of decisions the leading planner
//! runs [`crate::tiering::plan_tiers`] once over all followed collections (the hot budget
//! is per node): each shard's query rate over the last minute, its tier and replicas from
//! the map, its size from the heartbeats, and the live data nodes with the tiers their
//! tier roles let them hold ([`ClusterFeed::tiers`]: a promotion that moves the shard off
//! holders that may not hold hot counts against the budget of nodes that may). Its
//! decisions are appended to the plan topics as [`PlanAction::SetTier`] changes (reasons
//! start `tier: `), which the controller carries out like an operator's; ranges a split,
//! merge or move of the same round touches are left alone. The view's `planner.tiering`
//! shows the settings, each node's hot bytes against its budget, the shards waiting
//! (dwell, or room) and the recent tier decisions.
//!
//! This module owns the follow-the-log loop, the per-collection drivers, the decision
//! history, Holt forecasts per shard, and an in-memory view (latest snapshot per
//! collection, last [`KEEP_DECISIONS`] decisions) for the HTTP `GET /cluster` route. It does
//! not compute hotness ([`crate::hotness`]), hold the rules ([`crate::decide`]) nor serve
//! HTTP.
//!
//! Where reading starts: when the planner first sees a collection (at start or when it
//! is created), each events partition is read from the first event appended within the
//! longest window (one day, plus a minute; `Log::offset_for_time`), so the 1-hour and
//! 1-day windows are right after a restart without re-reading the topic's whole
//! retention (7 days); events older than the window are skipped before they reach the
//! dataflow. Shard sizes come from the
//! upsert and delete events the node recorded (writes that bypass the HTTP API, e.g. the
//! Kafka intake, are not counted).
//!
//! The driver's timely workers run on their own threads; the async loop only sends to
//! their channels and waits for snapshots inside `spawn_blocking`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hektor_log::Log;
use hektor_topics::catalog::Catalog;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::hlc::wall_ms;
use hektor_topics::record::{
    CollectionSpec, Event, PlacementSpec, PlanAction, PlanChange, RingRange, Tier,
};
use hektor_topics::topic::{topic_name, TopicKind};
use serde_json::{json, Value};

use crate::decide::{decide, DecideConfig, Forecasts, History, LoadBasis};
use crate::driver::{HotnessDriver, HotnessSnapshot, NodeLoad, Setup};
use crate::hotness::{HotnessParams, WINDOWS};
use crate::predict::Predictor;
use crate::tiering::{plan_tiers, TierNodes, TierPlan, TierShard, TieringConfig, TieringState};
use crate::{DataflowError, Result};

/// Decisions kept in memory for the view.
pub const KEEP_DECISIONS: usize = 50;
/// Hotness points kept per shard for forecasts.
const KEEP_POINTS: usize = 120;
/// Records read per `Log::read` call.
const READ_BATCH: usize = 4096;

/// How the planner runs.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// This node's id (every shard is assigned to it).
    pub node: String,
    /// This node's capacity weight (1.0 = a standard node).
    pub capacity: f64,
    /// How often decisions are taken.
    pub interval: Duration,
    /// Timely worker threads per collection.
    pub workers: usize,
    pub params: HotnessParams,
    pub decide: DecideConfig,
    /// Feed Holt forecasts of each shard's hotness to the decision engine.
    pub forecast: bool,
    /// With a [`ClusterFeed`]: the cores of a node of capacity 1.0 (busy-time load).
    pub cores_per_capacity: f64,
    /// Tiers by hotness ([`crate::tiering`]); decided only with a [`ClusterFeed`], whose
    /// maps say each shard's tier.
    pub tiering: TieringConfig,
}

/// What the planner reads of the cluster: the shard maps and the data nodes. The binary
/// implements it over the control plane; see the module doc.
pub trait ClusterFeed: Send + Sync {
    /// The collection's serving shards at its current map epoch (`None` before it has a
    /// map).
    fn shards(&self, collection: &str) -> Option<FeedMap>;
    /// The data nodes that may hold shards, with their capacity weights.
    fn nodes(&self) -> BTreeMap<String, f64>;
    /// The same nodes, each with the tiers it may hold (from its tier roles, by placement's
    /// rule: the binary gives `hektor_cluster::NodeSpec::tiers_held`). The tiering policy
    /// charges a promotion that must move (its holders may not hold hot) to nodes that
    /// may. By default every node holds every tier, as without tier roles.
    fn tiers(&self) -> BTreeMap<String, Vec<Tier>> {
        self.nodes()
            .into_keys()
            .map(|n| (n, vec![Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archive]))
            .collect()
    }
    /// Whether this node's planner decides: one planner per cluster, the controller's.
    /// Every planner keeps counting hotness (so a new controller's planner is warm), but
    /// only the leading one appends decisions.
    fn leads(&self) -> bool {
        true
    }
}

/// One collection's serving shards, as a [`ClusterFeed`] reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedMap {
    pub epoch: u64,
    pub shards: Vec<FeedShard>,
}

/// One serving shard: its range, replicas (first = primary) and size when reported.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedShard {
    pub range: RingRange,
    pub replicas: Vec<String>,
    pub vectors: Option<u64>,
    /// Bytes on disk of one copy.
    pub bytes: Option<u64>,
    /// The tier the map serves it from.
    pub tier: Tier,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            node: "node-1".into(),
            capacity: 1.0,
            interval: Duration::from_secs(5),
            workers: 1,
            params: HotnessParams::default(),
            decide: DecideConfig::default(),
            forecast: true,
            cores_per_capacity: std::thread::available_parallelism()
                .map_or(1.0, |n| n.get() as f64),
            tiering: TieringConfig::default(),
        }
    }
}

/// One decision as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub change: PlanChange,
    /// Who carries it out: `Some("controller")`, or `None` for a move of a collection not
    /// placed by load (recorded only).
    pub carried_out_by: Option<&'static str>,
}

impl Decision {
    pub fn to_json(&self) -> Value {
        json!({
            "collection": self.change.collection,
            "epoch": self.change.epoch,
            "action": self.change.action,
            "reason": self.change.reason,
            "time_ms": self.change.time_ms,
            "carried_out_by": self.carried_out_by,
        })
    }
}

#[derive(Default)]
struct View {
    snapshots: BTreeMap<String, HotnessSnapshot>,
    epochs: BTreeMap<String, u64>,
    decisions: VecDeque<Decision>,
    rounds: u64,
    last_error: Option<String>,
    /// The tiering policy's last round (per node hot bytes, shards waiting) and its
    /// recent decisions.
    tiering: Option<TierPlan>,
    tier_decisions: VecDeque<Decision>,
}

/// A handle on the running planner: its view, for the HTTP route.
#[derive(Clone)]
pub struct Planner {
    view: Arc<Mutex<View>>,
    config: Arc<PlannerConfig>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

/// The shards the planner counts events for: ids of ring ranges, and the map epoch they
/// come from (`None`: the partitions, before a map is seen or without a feed).
#[derive(Debug, Clone, Default)]
struct Layout {
    epoch: Option<u64>,
    /// Shard id of each range, ordered by range start.
    ids: BTreeMap<RingRange, u32>,
    next_id: u32,
    /// Sizes reported for the current shards.
    vectors: BTreeMap<u32, u64>,
    bytes: BTreeMap<u32, u64>,
    /// Tier and replicas of the current shards, as the map says.
    tiers: BTreeMap<u32, Tier>,
    replicas: BTreeMap<u32, Vec<String>>,
}

impl Layout {
    fn partitions(partitions: u32) -> Layout {
        Layout {
            epoch: None,
            ids: (0..partitions)
                .map(|i| (hektor_topics::ring::partition_range(i, partitions), i))
                .collect(),
            next_id: partitions,
            vectors: BTreeMap::new(),
            bytes: BTreeMap::new(),
            tiers: BTreeMap::new(),
            replicas: BTreeMap::new(),
        }
    }

    /// The id of the shard holding `position`.
    fn shard_of(&self, position: u64) -> Option<u32> {
        self.ids
            .range(
                // Every range starting at or before `position` sorts at or below this key.
                ..=RingRange {
                    start: position,
                    end: Some(u64::MAX),
                },
            )
            .next_back()
            .filter(|(r, _)| r.contains(position))
            .map(|(_, id)| *id)
    }

    /// Follow `map`: kept ranges keep their ids, new ones get fresh ids. Returns the
    /// driver setup for it (sizes for new ids only matter to the driver).
    fn follow(&mut self, map: &FeedMap, nodes: &BTreeMap<String, f64>) -> Setup {
        let mut ids = BTreeMap::new();
        for s in &map.shards {
            let id = match self.ids.get(&s.range) {
                Some(id) => *id,
                None => {
                    self.next_id += 1;
                    self.next_id - 1
                }
            };
            ids.insert(s.range, id);
        }
        self.ids = ids;
        self.epoch = Some(map.epoch);
        self.sizes(map);
        let mut setup = Setup::default();
        for s in &map.shards {
            let id = self.ids[&s.range];
            setup.ranges.insert(id, s.range);
            setup
                .sizes
                .insert(id, self.vectors.get(&id).copied().unwrap_or(0));
            if let Some(node) = s.replicas.first() {
                setup.assignment.insert(id, node.clone());
            }
        }
        setup.capacities = nodes.clone();
        setup
    }

    /// Take the sizes, tiers and replicas `map` reports for its shards.
    fn sizes(&mut self, map: &FeedMap) {
        self.tiers = map
            .shards
            .iter()
            .filter_map(|s| Some((*self.ids.get(&s.range)?, s.tier)))
            .collect();
        self.replicas = map
            .shards
            .iter()
            .filter_map(|s| Some((*self.ids.get(&s.range)?, s.replicas.clone())))
            .collect();
        self.vectors = map
            .shards
            .iter()
            .filter_map(|s| Some((*self.ids.get(&s.range)?, s.vectors?)))
            .collect();
        self.bytes = map
            .shards
            .iter()
            .filter_map(|s| Some((*self.ids.get(&s.range)?, s.bytes?)))
            .collect();
    }
}

/// Query service time per node over the last [`NodeBusy::WINDOW_S`] seconds, from the
/// events' `node` field: one bucket per second, each event touching one bucket.
#[derive(Debug, Clone, Default)]
struct NodeBusy {
    /// Per node: µs per second.
    buckets: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl NodeBusy {
    /// Short, so a move shows in the loads within seconds (shards keep their 1-minute
    /// windows); `DecideConfig::node_settle_s` waits for it.
    const WINDOW_S: u64 = 15;

    fn add(&mut self, event: &Event) {
        if event.kind != hektor_topics::record::EventKind::Query || event.node.is_empty() {
            return;
        }
        let second = event.time_ms / 1000;
        *self
            .buckets
            .entry(event.node.clone())
            .or_default()
            .entry(second)
            .or_default() += event.latency_us as u64;
    }

    /// Milliseconds of service per second over the minute ending at `now` (seconds).
    fn ms_per_s(&mut self, node: &str, now: u64) -> f64 {
        let Some(b) = self.buckets.get_mut(node) else {
            return 0.0;
        };
        // Keep the seconds (now - window, now].
        *b = b.split_off(&(now + 1).saturating_sub(Self::WINDOW_S));
        b.range(..=now).map(|(_, us)| *us as f64).sum::<f64>() / 1000.0 / Self::WINDOW_S as f64
    }
}

/// Put the cluster's view into a snapshot: reported sizes, and every data node's load as
/// busy time over its capacity (see the module doc).
fn with_cluster(
    mut snapshot: HotnessSnapshot,
    layout: &Layout,
    nodes: &BTreeMap<String, f64>,
    busy: &mut NodeBusy,
    cores_per_capacity: f64,
) -> HotnessSnapshot {
    for (id, m) in snapshot.shards.iter_mut() {
        if let Some(v) = layout.vectors.get(id) {
            m.size_vectors = *v;
        }
        m.size_bytes = layout.bytes.get(id).copied();
    }
    let now = snapshot.time_s;
    snapshot.nodes = nodes
        .iter()
        .map(|(n, weight)| {
            let ms = busy.ms_per_s(n, now);
            let capacity_ms = (weight * cores_per_capacity * 1000.0).max(1e-9);
            (
                n.clone(),
                NodeLoad {
                    node: n.clone(),
                    capacity: *weight,
                    ops_per_s: ms,
                    load: ms / capacity_ms,
                },
            )
        })
        .collect();
    snapshot
}

/// What the planner tracks of one collection.
struct Tracked {
    spec: CollectionSpec,
    incarnation: u64,
    /// `None` only while the driver is lent to a blocking task.
    driver: Option<HotnessDriver>,
    /// Next offset to read, per events partition.
    cursors: Vec<u64>,
    history: History,
    points: BTreeMap<u32, VecDeque<f64>>,
    layout: Layout,
    busy: NodeBusy,
    /// Ranges this round's decisions touch (the tiering policy leaves them alone).
    acted: Vec<RingRange>,
    /// Whether this round's planner leads (decides).
    leads: bool,
}

impl Planner {
    /// Start the planning loop on the current tokio runtime; with a `feed` it plans the
    /// shard maps' shards (see the module doc).
    pub fn start(
        catalog: Arc<Catalog>,
        config: PlannerConfig,
        feed: Option<Arc<dyn ClusterFeed>>,
    ) -> Planner {
        let view = Arc::new(Mutex::new(View::default()));
        let config = Arc::new(config);
        let task = tokio::spawn(run(catalog, Arc::clone(&config), Arc::clone(&view), feed));
        Planner {
            view,
            config,
            task: Arc::new(task),
        }
    }

    /// The latest snapshot of a collection's hotness.
    pub fn snapshot(&self, collection: &str) -> Option<HotnessSnapshot> {
        self.view
            .lock()
            .ok()
            .and_then(|v| v.snapshots.get(collection).cloned())
    }

    /// The last decisions, oldest first.
    pub fn decisions(&self) -> Vec<Decision> {
        self.view
            .lock()
            .map(|v| v.decisions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The view as JSON: `{"planner": {...}, "collections": {name: {"time_s", "epoch",
    /// "shards": {"<shard>": {...}}}}, "nodes": [...], "decisions": [...]}`.
    pub fn view(&self) -> Value {
        let Ok(v) = self.view.lock() else {
            return json!({ "error": "planner view unavailable" });
        };
        let mut collections = serde_json::Map::new();
        let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
        for (name, snap) in &v.snapshots {
            let shards: serde_json::Map<String, Value> = snap
                .shards
                .values()
                .map(|m| {
                    (
                        m.shard.to_string(),
                        json!({
                            "range": m.range,
                            "node": m.node,
                            "hotness": m.hotness,
                            "qps_1m": m.qps_1m(),
                            "p99_ms": m.p99_latency_ms,
                            "avg_ms": m.avg_latency_ms,
                            "queries_1m": m.queries_1m,
                            "queries_1h": m.queries_1h,
                            "writes_1m": m.writes_1m,
                            "vectors": m.size_vectors,
                            "bytes": m.size_bytes,
                            "hot": m.hot,
                            "cold": m.cold,
                        }),
                    )
                })
                .collect();
            collections.insert(
                name.clone(),
                json!({
                    "time_s": snap.time_s,
                    "epoch": v.epochs.get(name).copied().unwrap_or(0),
                    "shards": shards,
                }),
            );
            // Node load summed over collections (one dataflow per collection).
            for n in snap.nodes.values() {
                let entry = nodes.entry(n.node.clone()).or_insert_with(|| {
                    json!({"node": n.node, "capacity": n.capacity, "ops_per_s": 0.0, "load": 0.0})
                });
                let ops = entry["ops_per_s"].as_f64().unwrap_or(0.0) + n.ops_per_s;
                let load = entry["load"].as_f64().unwrap_or(0.0) + n.load;
                entry["ops_per_s"] = json!(ops);
                entry["load"] = json!(load);
            }
        }
        nodes.entry(self.config.node.clone()).or_insert_with(|| {
            json!({"node": self.config.node, "capacity": self.config.capacity,
                   "ops_per_s": 0.0, "load": 0.0})
        });
        json!({
            "planner": {
                "node": self.config.node,
                "interval_ms": self.config.interval.as_millis() as u64,
                "rounds": v.rounds,
                "running": !self.task.is_finished(),
                "last_error": v.last_error,
                "carries_out": "splits, merges and tier changes (its own, by hotness, and operators'; and moves when placed by load), by the controller",
                "thresholds": {
                    "split_hotness": self.config.decide.split_hotness,
                    "split_vectors": self.config.decide.split_vectors,
                    "min_split_vectors": self.config.decide.min_split_vectors,
                    "merge_hotness": self.config.decide.merge_hotness,
                    "migrate_load": self.config.decide.migrate_load,
                },
                "tiering": tiering_view(&self.config.tiering, &v),
            },
            "collections": collections,
            "nodes": nodes.into_values().collect::<Vec<_>>(),
            "decisions": v.decisions.iter().map(Decision::to_json).collect::<Vec<_>>(),
        })
    }
}

async fn run(
    catalog: Arc<Catalog>,
    config: Arc<PlannerConfig>,
    view: Arc<Mutex<View>>,
    feed: Option<Arc<dyn ClusterFeed>>,
) {
    let log = Arc::clone(catalog.log());
    let mut changes = catalog.subscribe();
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut tiering = TieringState::default();
    let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    // The catalog is gone: the node is shutting down.
                    break;
                }
                sync(&catalog, &log, &config, &mut tracked, &view).await;
                continue;
            }
        }
        sync(&catalog, &log, &config, &mut tracked, &view).await;
        let mut error = None;
        let mut dead = Vec::new();
        for (name, t) in tracked.iter_mut() {
            if let Err(err) = round(&log, &config, feed.as_deref(), t, &view).await {
                tracing::warn!(collection = %t.spec.name, %err, "planner round failed");
                error = Some(format!("{}: {err}", t.spec.name));
                if matches!(err, DataflowError::Stopped | DataflowError::Timely(_)) {
                    dead.push(name.clone());
                }
            }
        }
        if let Some(feed) = feed.as_deref() {
            if let Err(err) =
                tier_round(&log, &config, feed, &mut tracked, &mut tiering, &view).await
            {
                tracing::warn!(%err, "tiering round failed");
                error = Some(format!("tiering: {err}"));
            }
        }
        // A dataflow whose workers died is started again (from the events topic) by the
        // next sync, never left dead.
        for name in dead {
            if let Some(t) = tracked.remove(&name) {
                tracing::warn!(collection = %name, "restarting the hotness dataflow");
                retire(t);
            }
        }
        if let Ok(mut v) = view.lock() {
            v.rounds += 1;
            v.last_error = error;
        }
    }
    for (_, t) in tracked {
        retire(t);
    }
}

/// Start tracking new collections and stop tracking dropped ones.
async fn sync(
    catalog: &Catalog,
    log: &Arc<dyn Log>,
    config: &PlannerConfig,
    tracked: &mut BTreeMap<String, Tracked>,
    view: &Mutex<View>,
) {
    let current: BTreeMap<String, (CollectionSpec, u64)> = catalog
        .list_incarnations()
        .into_iter()
        .map(|(spec, inc)| (spec.name.clone(), (spec, inc)))
        .collect();
    let gone: Vec<String> = tracked
        .iter()
        .filter(|(name, t)| {
            current
                .get(*name)
                .is_none_or(|(_, inc)| *inc != t.incarnation)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(t) = tracked.remove(&name) {
            retire(t);
        }
        if let Ok(mut v) = view.lock() {
            v.snapshots.remove(&name);
            v.epochs.remove(&name);
        }
    }
    for (name, (spec, incarnation)) in current {
        if tracked.contains_key(&name) {
            continue;
        }
        match track(log, config, spec, incarnation).await {
            Ok(t) => {
                tracked.insert(name, t);
            }
            Err(err) => tracing::warn!(collection = %name, %err, "planner cannot follow"),
        }
    }
}

/// Stop a collection's driver off the async threads (joining workers blocks).
fn retire(t: Tracked) {
    if let Some(driver) = t.driver {
        tokio::task::spawn_blocking(move || {
            let _ = driver.shutdown();
        });
    }
}

async fn track(
    log: &Arc<dyn Log>,
    config: &PlannerConfig,
    spec: CollectionSpec,
    incarnation: u64,
) -> Result<Tracked> {
    let events = topic_name(&spec.name, TopicKind::Events);
    let partitions = log.partitions(&events).await?;
    let mut setup = Setup::equal(spec.partitions, &[config.node.as_str()]);
    setup
        .capacities
        .insert(config.node.clone(), config.capacity);
    let (workers, params) = (config.workers, config.params);
    let driver = tokio::task::spawn_blocking(move || HotnessDriver::spawn(workers, params, setup))
        .await
        .map_err(|e| DataflowError::Timely(e.to_string()))??;
    let epoch = last_epoch(log, &spec.name).await?;
    // Events older than the longest window are never counted: start each partition at
    // the first one appended since then (a minute's slack for the sinks' batching), not
    // at offset 0 of a topic that keeps days of events.
    let since_ms = wall_ms().saturating_sub((WINDOWS[WINDOWS.len() - 1] + 60) * 1000);
    let mut cursors = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        cursors.push(log.offset_for_time(&events, partition, since).await?);
    }
    Ok(Tracked {
        incarnation,
        driver: Some(driver),
        cursors,
        history: History {
            epoch,
            ..History::default()
        },
        points: BTreeMap::new(),
        layout: Layout::partitions(spec.partitions),
        busy: NodeBusy::default(),
        acted: Vec::new(),
        leads: false,
        spec,
    })
}

/// The epoch of the last change in the plan topic (0 if none), so epochs keep growing
/// across restarts.
async fn last_epoch(log: &Arc<dyn Log>, collection: &str) -> Result<u64> {
    let topic = topic_name(collection, TopicKind::Plan);
    let high = log.high_watermark(&topic, 0).await?;
    if high == 0 {
        return Ok(0);
    }
    let batch = log.read(&topic, 0, high - 1, 1, Duration::ZERO).await?;
    Ok(batch
        .last()
        .and_then(|r| codec::from_log_record::<PlanChange>(&r.record).ok())
        .map_or(0, |c| c.epoch))
}

/// Read what is new on the events topic, close the current second, decide, publish.
async fn round(
    log: &Arc<dyn Log>,
    config: &PlannerConfig,
    feed: Option<&dyn ClusterFeed>,
    t: &mut Tracked,
    view: &Mutex<View>,
) -> Result<()> {
    // Follow the shard map first, so this round's events count for its shards.
    let cluster = feed.and_then(|f| Some((f.shards(&t.spec.name)?, f.nodes())));
    if let Some((map, nodes)) = &cluster {
        if t.layout.epoch != Some(map.epoch) {
            let known = t.layout.epoch.is_some();
            let before: Vec<RingRange> = t.layout.ids.keys().copied().collect();
            let setup = t.layout.follow(map, nodes);
            if known {
                // Ranges this map created (an operator's split or merge, the size rule's,
                // or our own) are left alone for `min_interval_s`, as our own actions are:
                // a split just made is not merged back because its halves are quiet yet.
                let now = wall_ms() / 1000;
                for range in setup.ranges.values() {
                    if !before.contains(range) {
                        t.history.recent.push((*range, now));
                    }
                }
            }
            t.points.retain(|id, _| setup.ranges.contains_key(id));
            t.driver
                .as_mut()
                .ok_or(DataflowError::Stopped)?
                .reshard(setup)?;
        } else {
            t.layout.sizes(map);
        }
    }
    let now_ms = wall_ms();
    let now = now_ms / 1000;
    let oldest_ms = now_ms.saturating_sub(WINDOWS[WINDOWS.len() - 1] * 1000);
    let events_topic = topic_name(&t.spec.name, TopicKind::Events);
    for (partition, cursor) in t.cursors.iter_mut().enumerate() {
        let high = log.high_watermark(&events_topic, partition as u32).await?;
        while *cursor < high {
            let batch = log
                .read(
                    &events_topic,
                    partition as u32,
                    *cursor,
                    READ_BATCH,
                    Duration::ZERO,
                )
                .await?;
            let Some(last) = batch.last() else { break };
            *cursor = last.offset + 1;
            let events: Vec<Event> = batch
                .iter()
                .filter_map(|r| match codec::from_log_record::<Event>(&r.record) {
                    Ok(e) => Some(e),
                    Err(err) => {
                        tracing::debug!(%err, offset = r.offset, "skipping unreadable event");
                        None
                    }
                })
                .filter(|e| e.time_ms >= oldest_ms)
                .inspect(|e| t.busy.add(e))
                .filter_map(|mut e| {
                    if t.layout.epoch.is_some() {
                        e.shard = t.layout.shard_of(e.ring)?;
                    }
                    Some(e)
                })
                .collect();
            if !events.is_empty() {
                if let Some(driver) = t.driver.as_mut() {
                    driver.feed(events)?;
                }
            }
        }
    }
    let mut driver = t.driver.take().ok_or(DataflowError::Stopped)?;
    let (driver, snapshot) = tokio::task::spawn_blocking(move || {
        let snapshot = driver.advance_to(now);
        (driver, snapshot)
    })
    .await
    .map_err(|e| DataflowError::Timely(e.to_string()))?;
    t.driver = Some(driver);
    let mut snapshot = snapshot?;
    let mut decide_config = DecideConfig {
        partitions: t.spec.partitions,
        ..config.decide.clone()
    };
    if let Some((_, nodes)) = &cluster {
        decide_config.load_basis = LoadBasis::BusyMs;
        snapshot = with_cluster(
            snapshot,
            &t.layout,
            nodes,
            &mut t.busy,
            config.cores_per_capacity,
        );
    }

    // Forecasts: Holt over one point per round, `lookahead_s` ahead.
    for (shard, m) in &snapshot.shards {
        let points = t.points.entry(*shard).or_default();
        points.push_back(m.hotness);
        while points.len() > KEEP_POINTS {
            points.pop_front();
        }
    }
    let forecasts = config.forecast.then(|| {
        let steps = config.decide.lookahead_s as f64 / config.interval.as_secs_f64().max(0.05);
        let mut f = Forecasts::default();
        for (shard, points) in &t.points {
            let series: Vec<f64> = points.iter().copied().collect();
            if let Some(v) = Predictor::HOLT.forecast(&series, steps) {
                f.hotness.insert(*shard, v.max(0.0));
            }
        }
        f
    });

    t.history.expire(now, &decide_config);
    let leads = feed.is_none_or(|f| f.leads());
    t.leads = leads;
    let changes = if !leads {
        Vec::new()
    } else {
        decide(
            &t.spec.name,
            &snapshot,
            &decide_config,
            &t.history,
            forecasts.as_ref(),
            now,
        )
    };
    t.acted = changes
        .iter()
        .flat_map(|c| match &c.action {
            PlanAction::Split { shard, .. }
            | PlanAction::Move { shard, .. }
            | PlanAction::SetTier { shard, .. } => vec![*shard],
            PlanAction::Merge { left, right } => vec![*left, *right],
        })
        .collect();
    if !changes.is_empty() {
        let records = changes
            .iter()
            .map(|c| {
                codec::to_log_record(Some(c.collection.as_bytes().to_vec()), c, Encoding::Json)
            })
            .collect::<hektor_topics::Result<Vec<_>>>()?;
        log.append(&topic_name(&t.spec.name, TopicKind::Plan), 0, records)
            .await?;
        for c in &changes {
            // Remember it so the range is left alone for `min_interval_s`.
            t.history.record(c, now, 0);
            tracing::info!(collection = %c.collection, epoch = c.epoch, reason = %c.reason,
                "plan change decided");
        }
    }
    if let Ok(mut v) = view.lock() {
        v.snapshots.insert(t.spec.name.clone(), snapshot);
        v.epochs.insert(t.spec.name.clone(), t.history.epoch);
        for c in changes {
            let carried_out_by = match c.action {
                PlanAction::Split { .. }
                | PlanAction::SetTier { .. }
                | PlanAction::Merge { .. } => Some("controller"),
                PlanAction::Move { .. } => {
                    (t.spec.placement == PlacementSpec::Load).then_some("controller")
                }
            };
            v.decisions.push_back(Decision {
                change: c,
                carried_out_by,
            });
        }
        while v.decisions.len() > KEEP_DECISIONS {
            v.decisions.pop_front();
        }
    }
    Ok(())
}

/// A tier decision as a plan-topic record: JSON keyed by its collection, as every
/// decision, plus, when the change must move the shard to hot-eligible nodes, their ids
/// under `"on"`: the placement hint the controller prefers (read and checked by
/// `hektor_control::plan::placement_hint`; readers from before it ignore the field).
fn tier_record(change: &PlanChange, on: &[String]) -> Result<hektor_log::LogRecord> {
    let key = Some(change.collection.as_bytes().to_vec());
    if on.is_empty() {
        return Ok(codec::to_log_record(key, change, Encoding::Json)?);
    }
    let bad = |e: serde_json::Error| DataflowError::Input(format!("a tier decision: {e}"));
    let mut value: Value =
        serde_json::from_slice(&codec::encode(change, Encoding::Json)?).map_err(bad)?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("on".to_owned(), json!(on));
    }
    Ok(
        hektor_log::LogRecord::new(key, serde_json::to_vec(&value).map_err(bad)?)
            .with_header(codec::ENCODING_HEADER, Encoding::Json.header_value()),
    )
}

/// One round of the tiering policy over every followed collection (the hot budget is
/// per node, across collections): its decisions go to each collection's plan topic as
/// [`PlanAction::SetTier`] changes (reason prefixed `tier: `), which the controller
/// carries out like an operator's `hektor shard tier`.
async fn tier_round(
    log: &Arc<dyn Log>,
    config: &PlannerConfig,
    feed: &dyn ClusterFeed,
    tracked: &mut BTreeMap<String, Tracked>,
    state: &mut TieringState,
    view: &Mutex<View>,
) -> Result<()> {
    // Only the leading planner decides; it follows maps (tiers) only with a feed.
    if !tracked
        .values()
        .any(|t| t.leads && t.layout.epoch.is_some())
    {
        return Ok(());
    }
    let snapshots = view
        .lock()
        .map(|v| v.snapshots.clone())
        .map_err(|_| DataflowError::Input("the planner view is poisoned".into()))?;
    let mut shards = Vec::new();
    for (name, t) in tracked.iter() {
        if !t.leads || t.layout.epoch.is_none() {
            continue;
        }
        let snap = snapshots.get(name);
        for (range, id) in &t.layout.ids {
            let metrics = snap.and_then(|s| s.shards.get(id));
            shards.push(TierShard {
                collection: name.clone(),
                range: *range,
                tier: t.layout.tiers.get(id).copied().unwrap_or(Tier::Hot),
                replicas: t.layout.replicas.get(id).cloned().unwrap_or_default(),
                vectors: t
                    .layout
                    .vectors
                    .get(id)
                    .copied()
                    .or(metrics.map(|m| m.size_vectors))
                    .unwrap_or(0),
                dimension: t.spec.dimension,
                qps: metrics.map_or(0.0, |m| m.qps_1m()),
                busy: t.acted.iter().any(|a| a == range),
            });
        }
    }
    // The live data nodes and their tiers: a promotion whose holders may not hold hot is
    // charged to nodes that may.
    let tier_nodes = TierNodes::new(feed.tiers());
    let now_ms = wall_ms();
    let plan = plan_tiers(&shards, &tier_nodes, &config.tiering, state, now_ms);
    // Each change with the nodes whose hot budget it was charged to (a move's placement
    // hint for the controller; empty for a change in place).
    let mut by_collection: BTreeMap<String, Vec<(PlanChange, Vec<String>)>> = BTreeMap::new();
    for d in &plan.decisions {
        let Some(t) = tracked.get_mut(&d.collection) else {
            continue;
        };
        t.history.epoch += 1;
        by_collection.entry(t.spec.name.clone()).or_default().push((
            PlanChange {
                collection: d.collection.clone(),
                epoch: t.history.epoch,
                action: PlanAction::SetTier {
                    shard: d.range,
                    tier: d.to,
                },
                reason: format!("tier: {}", d.reason),
                time_ms: now_ms,
                place: None,
            },
            d.on.clone(),
        ));
    }
    let mut published = Vec::new();
    for (name, changes) in by_collection {
        let records = changes
            .iter()
            .map(|(c, on)| tier_record(c, on))
            .collect::<Result<Vec<_>>>()?;
        let changes: Vec<PlanChange> = changes.into_iter().map(|(c, _)| c).collect();
        log.append(&topic_name(&name, TopicKind::Plan), 0, records)
            .await?;
        for c in &changes {
            tracing::info!(collection = %c.collection, epoch = c.epoch, reason = %c.reason,
                "tier change decided");
        }
        published.extend(changes);
    }
    if let Ok(mut v) = view.lock() {
        for c in published {
            v.epochs.insert(c.collection.clone(), c.epoch);
            let d = Decision {
                change: c,
                carried_out_by: Some("controller"),
            };
            v.decisions.push_back(d.clone());
            v.tier_decisions.push_back(d);
        }
        while v.decisions.len() > KEEP_DECISIONS {
            v.decisions.pop_front();
        }
        while v.tier_decisions.len() > KEEP_DECISIONS {
            v.tier_decisions.pop_front();
        }
        v.tiering = Some(plan);
    }
    Ok(())
}

/// The tiering part of the view: settings, each node's hot tier against its budget,
/// shards waiting for their dwell or for room, recent decisions.
fn tiering_view(config: &TieringConfig, v: &View) -> Value {
    let plan = v.tiering.as_ref();
    json!({
        "enabled": config.enabled,
        "promote_qps": config.promote_qps,
        "demote_qps": config.demote_qps,
        "cold_qps": config.cold_qps,
        "promote_dwell_ms": config.promote_dwell_ms,
        "demote_dwell_ms": config.demote_dwell_ms,
        "cold_dwell_ms": config.cold_dwell_ms,
        "archive_qps": config.archive_qps,
        "archive_dwell_ms": config.archive_dwell_ms,
        "hot_budget_bytes": config.hot_budget_bytes,
        "moves_per_min": config.moves_per_min,
        "moves_per_round": config.moves_per_round,
        "hot_bytes_per_vector": "5 x dimension + 144",
        "nodes": plan.map_or_else(Vec::new, |p| p.nodes.iter().map(|(n, h)| json!({
            "node": n,
            "hot_bytes": h.hot_bytes,
            "budget_bytes": h.budget_bytes,
            "hot_shards": h.hot_shards,
        })).collect()),
        "waiting": plan.map_or_else(Vec::new, |p| p.waiting.iter().map(|(c, r, want, why)| json!({
            "collection": c,
            "range": r,
            "wants": want,
            "why": why,
        })).collect()),
        "decisions": v.tier_decisions.iter().map(Decision::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_record_carries_its_placement_hint_beside_the_decision() {
        let change = PlanChange {
            collection: "c".into(),
            epoch: 3,
            action: PlanAction::SetTier {
                shard: RingRange {
                    start: 0,
                    end: Some(10),
                },
                tier: Tier::Hot,
            },
            reason: "tier: cold → hot".into(),
            time_ms: 1,
            place: None,
        };
        for on in [vec![], vec!["h1".to_string(), "h2".to_string()]] {
            let record = tier_record(&change, &on).unwrap();
            assert_eq!(record.key.as_deref(), Some(&b"c"[..]));
            // Every reader decodes the decision as before.
            let back: PlanChange = codec::from_log_record(&record).unwrap();
            assert_eq!(back, change);
            let value: Value = serde_json::from_slice(&record.value).unwrap();
            if on.is_empty() {
                assert!(value.get("on").is_none(), "{value}");
            } else {
                assert_eq!(value["on"], json!(on));
            }
        }
    }

    fn map(epoch: u64, cuts: &[u64]) -> FeedMap {
        let mut shards = Vec::new();
        let mut start = 0;
        for (i, cut) in cuts.iter().copied().map(Some).chain([None]).enumerate() {
            shards.push(FeedShard {
                range: RingRange { start, end: cut },
                replicas: vec![format!("n{}", i % 2)],
                vectors: Some(100 * (i as u64 + 1)),
                bytes: None,
                tier: Tier::Hot,
            });
            start = cut.unwrap_or(0);
        }
        FeedMap { epoch, shards }
    }

    #[test]
    fn a_layout_keeps_ids_of_kept_ranges_and_places_positions() {
        let nodes: BTreeMap<String, f64> = [("n0".to_string(), 1.0), ("n1".to_string(), 1.0)]
            .into_iter()
            .collect();
        let mut layout = Layout::partitions(2);
        let half = 1u64 << 63;
        // Epoch 0 is the partitions: the same ranges keep ids 0 and 1.
        let setup = layout.follow(&map(0, &[half]), &nodes);
        assert_eq!(setup.ranges.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(layout.shard_of(0), Some(0));
        assert_eq!(layout.shard_of(half - 1), Some(0));
        assert_eq!(layout.shard_of(half), Some(1));
        assert_eq!(layout.shard_of(u64::MAX), Some(1));
        // Split the right half: the left keeps its id, the halves get new ones.
        let q = half + (1 << 62);
        let setup = layout.follow(&map(1, &[half, q]), &nodes);
        assert_eq!(
            setup.ranges.keys().copied().collect::<Vec<_>>(),
            vec![0, 2, 3]
        );
        assert_eq!(layout.shard_of(half), Some(2));
        assert_eq!(layout.shard_of(q), Some(3));
        assert_eq!(setup.sizes[&3], 300);
        assert_eq!(setup.assignment[&2], "n1");
    }

    #[test]
    fn node_load_is_busy_time_over_capacity_for_every_data_node() {
        let mut snap = HotnessSnapshot {
            time_s: 1_000,
            ..HotnessSnapshot::default()
        };
        let mut m = crate::driver::ShardMetrics {
            shard: 0,
            range: RingRange::FULL,
            node: Some("a".into()),
            queries_1m: 6_000,
            queries_1h: 0,
            queries_1d: 0,
            writes_1m: 0,
            writes_1h: 0,
            writes_1d: 0,
            avg_latency_ms: 2.0,
            p99_latency_ms: 4.0,
            size_vectors: 7,
            size_bytes: None,
            update_rate: 0.0,
            hotness: 0.0,
            hot: false,
            cold: false,
            sub_load: Vec::new(),
            top_tenant: None,
        };
        snap.shards.insert(0, m.clone());
        m.shard = 1;
        m.node = Some("b".into());
        m.queries_1m = 600;
        snap.shards.insert(1, m);
        let nodes: BTreeMap<String, f64> = [("a", 1.0), ("b", 2.0), ("c", 1.0)]
            .into_iter()
            .map(|(n, w)| (n.to_string(), w))
            .collect();
        let mut layout = Layout::partitions(1);
        layout.vectors.insert(0, 5_000);
        // Node a served 1,500 queries of 2 ms in the last 15 s, b some; and old ones
        // (15 s ago or more) no longer count.
        let mut busy = NodeBusy::default();
        let ev = |node: &str, second: u64| Event {
            collection: "c".into(),
            shard: 0,
            ring: 0,
            kind: hektor_topics::record::EventKind::Query,
            latency_us: 2_000,
            time_ms: second * 1000 + 5,
            node: node.into(),
        };
        for i in 0..1_500u64 {
            busy.add(&ev("a", 986 + i % 15));
        }
        for i in 0..600u64 {
            busy.add(&ev("b", 900 + i % 100));
        }
        let out = with_cluster(snap, &layout, &nodes, &mut busy, 2.0);
        // a: 1,500 x 2 ms / 15 s = 200 ms/s over 2 cores = 0.1.
        assert!((out.nodes["a"].load - 0.1).abs() < 1e-9, "{:?}", out.nodes);
        // b: the 84 queries of seconds 986..=999 count (6 per second, 14 seconds):
        // 11.2 ms/s over 2 x 2 cores.
        assert!(
            (out.nodes["b"].load - 0.0028).abs() < 1e-9,
            "{:?}",
            out.nodes
        );
        assert_eq!(out.nodes["c"].load, 0.0);
        assert_eq!(out.shards[&0].size_vectors, 5_000);
        assert_eq!(out.shards[&1].size_vectors, 7);
    }
}
