//! The live kinetic planner of one node: follows every in-scope collection's events topic,
//! feeds the events into one [`HotnessDriver`] per collection, and every `interval` closes
//! the current second, runs [`decide`] and appends the resulting [`PlanChange`]s (JSON, so
//! people can read them) to the collection's plan topic.
//!
//! **Decisions, carried out elsewhere.** The planner only publishes: the controller
//! (`hektor-control`) reads the plan topic and carries out splits and tier changes through
//! the shard map; moves and merges are recorded, not carried out. The view shows each
//! decision with `"carried_out_by": "controller"` or `null` accordingly. The planner
//! remembers every decision as acted on, so the same range is not proposed again for
//! `min_interval_s`.
//!
//! This module owns the follow-the-log loop, the per-collection drivers, the decision
//! history, Holt forecasts per shard, and an in-memory view (latest snapshot per
//! collection, last [`KEEP_DECISIONS`] decisions) for the HTTP `GET /cluster` route. It does
//! not compute hotness ([`crate::hotness`]), hold the rules ([`crate::decide`]) nor serve
//! HTTP.
//!
//! Where reading starts: each collection's events partitions are read **from offset 0**
//! when the planner first sees the collection (at start or when it is created), so the
//! 1-hour and 1-day windows are right after a restart; events older than the longest
//! window (one day) are skipped before they reach the dataflow. Shard sizes come from the
//! upsert and delete events the node recorded (writes that bypass the HTTP API, e.g. the
//! Kafka intake, are not counted).
//!
//! Shards are the partitions (ranges from [`hektor_topics::ring::partition_range`]), all
//! on this node, with the capacity it is configured with. The driver's timely workers run
//! on their own threads; the async loop only sends to their channels and waits for
//! snapshots inside `spawn_blocking`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hektor_topics::catalog::Catalog;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::hlc::wall_ms;
use hektor_topics::log::Log;
use hektor_topics::record::{CollectionSpec, Event, PlanAction, PlanChange};
use hektor_topics::topic::{topic_name, TopicKind};
use serde_json::{json, Value};

use crate::decide::{decide, DecideConfig, Forecasts, History};
use crate::driver::{HotnessDriver, HotnessSnapshot, Setup};
use crate::hotness::{HotnessParams, WINDOWS};
use crate::predict::Predictor;
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
        }
    }
}

/// One decision as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub change: PlanChange,
    /// Who carries it out: `Some("controller")` for splits and tier changes; `None` for
    /// moves and merges, which are recorded only.
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
}

/// A handle on the running planner: its view, for the HTTP route.
#[derive(Clone)]
pub struct Planner {
    view: Arc<Mutex<View>>,
    config: Arc<PlannerConfig>,
    task: Arc<tokio::task::JoinHandle<()>>,
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
}

impl Planner {
    /// Start the planning loop on the current tokio runtime.
    pub fn start(catalog: Arc<Catalog>, config: PlannerConfig) -> Planner {
        let view = Arc::new(Mutex::new(View::default()));
        let config = Arc::new(config);
        let task = tokio::spawn(run(catalog, Arc::clone(&config), Arc::clone(&view)));
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
                            "vectors_seen": m.size_vectors,
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
                "carries_out": "splits and tier changes, by the controller",
                "thresholds": {
                    "split_hotness": self.config.decide.split_hotness,
                    "split_vectors": self.config.decide.split_vectors,
                    "min_split_vectors": self.config.decide.min_split_vectors,
                    "merge_hotness": self.config.decide.merge_hotness,
                    "migrate_load": self.config.decide.migrate_load,
                },
            },
            "collections": collections,
            "nodes": nodes.into_values().collect::<Vec<_>>(),
            "decisions": v.decisions.iter().map(Decision::to_json).collect::<Vec<_>>(),
        })
    }
}

async fn run(catalog: Arc<Catalog>, config: Arc<PlannerConfig>, view: Arc<Mutex<View>>) {
    let log = Arc::clone(catalog.log());
    let mut changes = catalog.subscribe();
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
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
        for t in tracked.values_mut() {
            if let Err(err) = round(&log, &config, t, &view).await {
                tracing::warn!(collection = %t.spec.name, %err, "planner round failed");
                error = Some(format!("{}: {err}", t.spec.name));
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
    Ok(Tracked {
        spec,
        incarnation,
        driver: Some(driver),
        cursors: vec![0; partitions as usize],
        history: History {
            epoch,
            ..History::default()
        },
        points: BTreeMap::new(),
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
    t: &mut Tracked,
    view: &Mutex<View>,
) -> Result<()> {
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
    let snapshot = snapshot?;

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

    t.history.expire(now, &config.decide);
    let changes = decide(
        &t.spec.name,
        &snapshot,
        &config.decide,
        &t.history,
        forecasts.as_ref(),
        now,
    );
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
                PlanAction::Split { .. } | PlanAction::SetTier { .. } => Some("controller"),
                PlanAction::Move { .. } | PlanAction::Merge { .. } => None,
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
