//! The running control plane of one node: its heartbeat, the membership and plan
//! followers, the controller loop (acting only on the elected controller node), the
//! readiness reporter, and the [`Routing`] it publishes.
//!
//! Election is by membership: the alive node with the `controller` role and the smallest
//! id is the candidate. Before it writes a collection's maps it takes that collection's
//! lease (a new term on the plan topic, see [`crate::plan`]) and waits to read it back;
//! readers accept maps only from the current term's holder, so when two nodes briefly
//! both think they are elected (their views of membership differ), the one whose term
//! came later in the log is the only writer everywhere, and the other is fenced off. The
//! holder writes one map at a time (the next only once the last was read back) and
//! opens its term by re-writing the accepted map under it. A controller that has just
//! started waits one `dead_after` before re-placing anything, so a restarting cluster does
//! not move every shard to the first node that comes back.
//!
//! Placement follows the nodes' roles: each placeable node's tier roles come with it
//! ([`hektor_cluster::NodeSpec::from_heartbeat`]), and the rules place a shard only on
//! nodes that may hold its tier, and a tier move goes first to the nodes its ask names
//! (the planner's placement hint, read and checked by [`crate::plan`]). What the rules
//! cannot do now (a tier no live node may hold) is recorded with the map changes, once
//! each time it changes, so `GET /cluster` shows why a shard stays where it is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_cluster::rules::{decide, ControlConfig, ControlInput};
use hektor_cluster::{Lease, Strategy};
use hektor_topics::catalog::Catalog;
use hektor_topics::record::{NodeHeartbeat, PlacementSpec, PlanAction, PlanChange, RingRange};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::membership::{nodes_topic, wall_ms, Heartbeater, Membership};
use crate::plan::{LeaseRecord, PlanState, Plans, ReadyRecord};
use crate::{Result, Routing};
use hektor_log::{Cleanup, TopicSpec};

/// What the control plane asks this node's shard host.
pub trait ShardFacts: Send + Sync {
    /// Whether this node holds `(collection, incarnation, range)` caught up with the log
    /// (and its index built): the condition for reporting a target ready.
    fn caught_up(&self, collection: &str, incarnation: u64, range: RingRange) -> bool;

    /// The number of vectors this node holds in the shard and their median ring position,
    /// when it holds it. May walk an index: called off the hot path, every few seconds.
    fn size(&self, collection: &str, incarnation: u64, range: RingRange) -> Option<(u64, u64)>;

    /// The shards held here with their live vector counts (cheap: sent with every
    /// heartbeat). None by default.
    fn held(&self) -> Vec<hektor_topics::record::HeldShard> {
        Vec::new()
    }
}

/// How this node takes part in the control plane.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// This node's heartbeat (its `time_ms` and `leaving` are filled in when sent).
    pub node: NodeHeartbeat,
    pub heartbeat_every: Duration,
    /// A node whose last heartbeat is older than this is dead.
    pub dead_after: Duration,
    /// How often the controller and the reporter look at the state.
    pub tick: Duration,
    /// Shard builds in flight at once, per collection.
    pub max_moves: usize,
    /// The cluster's name, when several share a log (see [`crate::membership::nodes_topic`]).
    pub cluster: Option<String>,
    /// A shard holding more vectors than this is split at its median ring position (asked
    /// for by its first replica); `None` never splits by size.
    pub split_vectors: Option<u64>,
    /// How often a node checks its shards' sizes.
    pub size_every: Duration,
}

impl ControlSettings {
    /// Settings with the defaults: heartbeat every second, dead after 10 s, tick 250 ms.
    pub fn new(node: NodeHeartbeat) -> Self {
        ControlSettings {
            node,
            heartbeat_every: Duration::from_secs(1),
            dead_after: Duration::from_secs(10),
            tick: Duration::from_millis(250),
            max_moves: 4,
            cluster: None,
            split_vectors: None,
            size_every: Duration::from_secs(5),
        }
    }
}

/// The control plane of this node.
pub struct Control {
    me: String,
    catalog: Arc<Catalog>,
    membership: Arc<Membership>,
    plans: Arc<Plans>,
    heartbeater: Heartbeater,
    routing: watch::Sender<Arc<Routing>>,
    /// Decisions taken by this node as controller, newest last, for `GET /cluster`.
    log_of_decisions: Mutex<Vec<serde_json::Value>>,
    /// Per collection, the (term, epoch) of the last map this node wrote and the term it
    /// last claimed: nothing more is written until they are read back.
    /// Keyed by (collection, incarnation): a name dropped and created again starts over.
    written: Mutex<BTreeMap<(String, u64), (u64, u64)>>,
    claimed: Mutex<BTreeMap<(String, u64), u64>>,
    /// Per collection, what the rules last said waits (recorded when it changes).
    held_back: Mutex<BTreeMap<(String, u64), Vec<String>>>,
}

impl Control {
    /// Start heart-beating, following and (when elected) controlling.
    pub async fn start(
        catalog: Arc<Catalog>,
        settings: ControlSettings,
        facts: Arc<dyn ShardFacts>,
    ) -> Result<Arc<Control>> {
        if settings.node.node.is_empty() {
            return Err(crate::Error::Config("the node id is empty".into()));
        }
        let log = Arc::clone(catalog.log());
        let topic = nodes_topic(settings.cluster.as_deref());
        log.ensure_topic(&TopicSpec {
            name: topic.clone(),
            partitions: 1,
            cleanup: Cleanup::Compact,
            replication: catalog.replication(),
        })
        .await?;
        let membership = Membership::start(Arc::clone(&log), topic.clone(), settings.dead_after);
        let plans = Plans::start(Arc::clone(&catalog), settings.tick / 2);
        let held_by = Arc::clone(&facts);
        let heartbeater = Heartbeater::start(
            log,
            topic,
            settings.node.clone(),
            settings.heartbeat_every,
            Arc::new(move || held_by.held()),
        )
        .await?;
        let control = Arc::new(Control {
            me: settings.node.node.clone(),
            catalog,
            membership,
            plans,
            heartbeater,
            routing: watch::channel(Arc::new(Routing {
                me: settings.node.node.clone(),
                ..Default::default()
            }))
            .0,
            log_of_decisions: Mutex::new(Vec::new()),
            written: Mutex::new(BTreeMap::new()),
            claimed: Mutex::new(BTreeMap::new()),
            held_back: Mutex::new(BTreeMap::new()),
        });
        let runner = Arc::clone(&control);
        tokio::spawn(async move { runner.run(settings, facts).await });
        Ok(control)
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The maps and nodes, republished on every change.
    pub fn routing(&self) -> watch::Receiver<Arc<Routing>> {
        self.routing.subscribe()
    }

    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn plans(&self) -> &Arc<Plans> {
        &self.plans
    }

    /// Start draining: take nothing new; the controller moves this node's shards away.
    pub fn leave(&self) {
        self.heartbeater.leave();
    }

    /// Whether no map lists this node (serving or building): a draining node may stop.
    pub fn holds_nothing(&self) -> bool {
        self.plans
            .maps()
            .values()
            .all(|m| m.ranges_of(&self.me).is_empty())
    }

    /// Ask the controller to split a shard (an operator's or the planner's request).
    pub async fn request(&self, collection: &str, action: PlanAction, reason: &str) -> Result<()> {
        let epoch = self
            .plans
            .get(collection)
            .and_then(|s| s.map)
            .map_or(0, |m| m.epoch().saturating_add(1));
        self.plans
            .publish_decision(&PlanChange {
                collection: collection.to_owned(),
                epoch,
                action,
                reason: reason.to_owned(),
                time_ms: wall_ms(),
                place: None,
            })
            .await
    }

    /// The recent map changes this node made as controller.
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        self.log_of_decisions.lock().clone()
    }

    async fn run(self: Arc<Self>, settings: ControlSettings, facts: Arc<dyn ShardFacts>) {
        let mut started = Instant::now();
        let mut sized = Instant::now();
        let mut asked: BTreeSet<(String, u64, RingRange)> = BTreeSet::new();
        let mut reported: BTreeSet<(String, RingRange, u64)> = BTreeSet::new();
        let mut plans_rx = self.plans.subscribe();
        let mut members_rx = self.membership.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(settings.tick) => {}
                _ = plans_rx.changed() => {}
                _ = members_rx.changed() => {}
            }
            self.publish_routing();
            // This node's view of the cluster is only as fresh as the log it reads: when its
            // own heartbeats stop coming back (the log is down or this node is cut off),
            // every other node soon looks dead too. Decide nothing on such a view, and wait
            // one `dead_after` again once it is fresh, as at start. (Reports and size
            // checks go on: they describe this node, not the cluster.)
            let heard = self.membership.last_heard(&self.me).unwrap_or(0);
            let stale_after = (settings.heartbeat_every * 3).as_millis() as u64;
            let fresh = wall_ms().saturating_sub(heard) <= stale_after.max(500);
            if !fresh {
                started = Instant::now();
            }
            if fresh && self.membership.controller().as_deref() == Some(self.me.as_str()) {
                let settled = started.elapsed() >= settings.dead_after;
                if let Err(err) = self.control_round(&settings, settled).await {
                    tracing::warn!(%err, "controller round failed");
                }
            }
            if let Err(err) = self.report_ready(facts.as_ref(), &mut reported).await {
                tracing::warn!(%err, "readiness report failed");
            }
            if let Some(limit) = settings.split_vectors {
                if sized.elapsed() >= settings.size_every {
                    sized = Instant::now();
                    if let Err(err) = self.split_by_size(&facts, limit, &mut asked).await {
                        tracing::warn!(%err, "size check failed");
                    }
                }
            }
        }
    }

    /// Ask for a split at the median of every shard this node is first replica of that
    /// holds more than `limit` vectors (once per shard and epoch).
    async fn split_by_size(
        &self,
        facts: &Arc<dyn ShardFacts>,
        limit: u64,
        asked: &mut BTreeSet<(String, u64, RingRange)>,
    ) -> Result<()> {
        for (name, map) in self.plans.maps() {
            for shard in map.shards() {
                if shard.replicas.first() != Some(&self.me)
                    || map
                        .targets()
                        .iter()
                        .any(|t| shard.range.contains(t.range.start))
                {
                    continue;
                }
                let key = (name.clone(), map.epoch(), shard.range);
                if asked.contains(&key) {
                    continue;
                }
                // Walking the ring index touches LMDB: off the async workers.
                let (f, n, inc, range) = (
                    Arc::clone(facts),
                    name.clone(),
                    map.incarnation(),
                    shard.range,
                );
                let size = tokio::task::spawn_blocking(move || f.size(&n, inc, range))
                    .await
                    .ok()
                    .flatten();
                let Some((vectors, median)) = size else {
                    continue;
                };
                if vectors <= limit || !(shard.range.contains(median) && median > shard.range.start)
                {
                    continue;
                }
                let reason =
                    format!("size: {vectors} vectors > {limit}; split at the median ring position");
                tracing::info!(collection = %name, at = median, %reason, "asking for a split");
                self.request(
                    &name,
                    PlanAction::Split {
                        shard: shard.range,
                        at: median,
                    },
                    &reason,
                )
                .await?;
                asked.insert(key);
            }
        }
        asked.retain(|(name, epoch, _)| {
            self.plans
                .get(name)
                .and_then(|s| s.map)
                .is_some_and(|m| m.epoch() == *epoch)
        });
        Ok(())
    }

    fn publish_routing(&self) {
        let maps = self.plans.maps();
        let nodes = self.membership.nodes();
        let current = self.routing.borrow().clone();
        let same = current.nodes == nodes
            && current.maps.len() == maps.len()
            && current
                .maps
                .iter()
                .zip(&maps)
                .all(|((a, x), (b, y))| a == b && x.epoch() == y.epoch());
        if !same {
            self.routing.send_replace(Arc::new(Routing {
                me: self.me.clone(),
                maps,
                nodes,
            }));
        }
    }

    async fn control_round(&self, settings: &ControlSettings, settled: bool) -> Result<()> {
        let current = self.catalog.list_incarnations();
        let known =
            |key: &(String, u64)| current.iter().any(|(s, i)| s.name == key.0 && *i == key.1);
        self.claimed.lock().retain(|k, _| known(k));
        self.written.lock().retain(|k, _| known(k));
        self.held_back.lock().retain(|k, _| known(k));
        let placeable = self.membership.placeable();
        let alive: Vec<String> = self
            .membership
            .alive()
            .into_iter()
            .map(|h| h.node)
            .collect();
        for (spec, incarnation) in current {
            let Some(state): Option<PlanState> = self.plans.get(&spec.name) else {
                continue;
            };
            if state.incarnation != incarnation || (state.map.is_some() && !settled) {
                continue;
            }
            // The lease: claim a new term unless this node holds the current one, then
            // wait for the claim to be read back (it holds only if it came first).
            let term = state.lease.as_ref().map_or(0, |l| l.term);
            if state.lease.as_ref().is_none_or(|l| l.node != self.me) {
                let claimed = self
                    .claimed
                    .lock()
                    .get(&(spec.name.clone(), incarnation))
                    .copied();
                if claimed.is_some_and(|t| t > term) {
                    continue; // our claim is not read back yet
                }
                // A lease at the last term (a forged record) cannot be outbid: say so.
                let Some(next_term) = term.checked_add(1) else {
                    tracing::error!(collection = %spec.name, term,
                        "the plan topic holds a lease at the last term; no controller can claim this collection");
                    continue;
                };
                let lease = LeaseRecord {
                    term: next_term,
                    node: self.me.clone(),
                    time_ms: wall_ms(),
                };
                tracing::info!(collection = %spec.name, term = lease.term, "claiming the controller lease");
                self.plans.publish_lease(&spec.name, &lease).await?;
                self.claimed
                    .lock()
                    .insert((spec.name.clone(), incarnation), lease.term);
                continue;
            }
            // One map at a time: the last one written must be read back first.
            let accepted = state.map.as_ref().map(|m| (m.lease().term, m.epoch()));
            let last = self
                .written
                .lock()
                .get(&(spec.name.clone(), incarnation))
                .copied();
            if last.is_some_and(|w| w.0 == term && accepted.is_none_or(|a| a < w)) {
                continue;
            }
            let config = ControlConfig {
                replication: spec.replication.max(1) as usize,
                max_moves: settings.max_moves,
                strategy: match spec.placement {
                    PlacementSpec::Balanced => None,
                    PlacementSpec::HashMod => Some(Strategy::HashMod),
                    PlacementSpec::Range => Some(Strategy::Range),
                    PlacementSpec::ConsistentHash { vnodes } => {
                        Some(Strategy::ConsistentHash { vnodes })
                    }
                    PlacementSpec::Load => None,
                },
                by_load: spec.placement == PlacementSpec::Load,
            };
            let input = ControlInput {
                current: state.map.as_deref(),
                partitions: spec.partitions,
                incarnation,
                placeable: &placeable,
                alive: &alive,
                ready: &state.ready,
                splits: &state.splits,
                tiers: &state.tiers,
                moves: &state.moves,
                merges: &state.merges,
            };
            let lease = Lease {
                term,
                writer: self.me.clone(),
            };
            let outcome = decide(&spec.name, &input, &config)?;
            // What waits (a tier no live node may hold) is recorded when it changes.
            let waits = {
                let mut last = self.held_back.lock();
                let key = (spec.name.clone(), incarnation);
                if last.get(&key) == Some(&outcome.held_back) {
                    Vec::new()
                } else {
                    last.insert(key, outcome.held_back.clone());
                    outcome.held_back
                }
            };
            if !waits.is_empty() {
                tracing::warn!(collection = %spec.name, reasons = ?waits, "shard map change held back");
            }
            // A new term opens with the accepted map re-written under it.
            let decision = outcome.decision.or_else(|| match &state.map {
                Some(map) if map.lease().term != term && map.epoch() < u64::MAX => {
                    Some(hektor_cluster::rules::Decision {
                        map: map.as_ref().clone().at_epoch(map.epoch() + 1),
                        reasons: vec![format!(
                            "controller {} took the lease at term {term}",
                            self.me
                        )],
                    })
                }
                _ => None,
            });
            let Some(decision) = decision else {
                if !waits.is_empty() {
                    self.record(serde_json::json!({
                        "collection": spec.name,
                        "epoch": state.map.as_ref().map(|m| m.epoch()),
                        "time_ms": wall_ms(),
                        "unchanged": true,
                        "reasons": waits,
                    }));
                }
                continue;
            };
            let mut reasons = decision.reasons;
            reasons.extend(waits);
            let decision = hektor_cluster::rules::Decision {
                map: decision.map.with_lease(lease),
                reasons,
            };
            tracing::info!(collection = %spec.name, epoch = decision.map.epoch(), term,
                reasons = ?decision.reasons, "shard map changed");
            let record = serde_json::json!({
                "collection": spec.name,
                "epoch": decision.map.epoch(),
                "time_ms": wall_ms(),
                "reasons": decision.reasons,
            });
            self.written.lock().insert(
                (spec.name.clone(), incarnation),
                (term, decision.map.epoch()),
            );
            self.plans.publish_map(decision.map).await?;
            self.record(record);
        }
        Ok(())
    }

    /// Keep a decision for `GET /cluster` (the last 64).
    fn record(&self, record: serde_json::Value) {
        let mut log = self.log_of_decisions.lock();
        log.push(record);
        let excess = log.len().saturating_sub(64);
        log.drain(..excess);
    }

    /// Report the targets listing this node that it has caught up with.
    async fn report_ready(
        &self,
        facts: &dyn ShardFacts,
        reported: &mut BTreeSet<(String, RingRange, u64)>,
    ) -> Result<()> {
        let maps = self.plans.maps();
        let mut wanted: BTreeMap<(String, RingRange, u64), (u64, u64)> = BTreeMap::new();
        for (name, map) in &maps {
            for t in map.targets() {
                if t.replicas.contains(&self.me) {
                    wanted.insert(
                        (name.clone(), t.range, t.since),
                        (map.incarnation(), map.epoch()),
                    );
                }
            }
        }
        reported.retain(|k| wanted.contains_key(k));
        for ((name, range, since), (incarnation, epoch)) in wanted {
            let key = (name.clone(), range, since);
            if reported.contains(&key) || !facts.caught_up(&name, incarnation, range) {
                continue;
            }
            self.plans
                .publish_ready(
                    &name,
                    ReadyRecord {
                        node: self.me.clone(),
                        range,
                        epoch,
                        time_ms: wall_ms(),
                    },
                )
                .await?;
            reported.insert(key);
        }
        Ok(())
    }
}
