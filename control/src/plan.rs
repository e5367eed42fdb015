//! The plan topic of each collection, read and written: shard maps, readiness reports and
//! decisions, told apart by their key (see the crate doc), all JSON.
//!
//! [`Plans`] follows the plan topic of every collection in the catalog and keeps, per
//! collection, the accepted map (the highest epoch seen, for the collection's current
//! incarnation), the readiness reports, and the pending requests (splits, tier changes,
//! moves and merges) that the controller turns into maps. A request is forgotten once a map
//! has carried it out or made it moot (its shard gone).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hektor_cluster::control::{MoveAsk, Ready, SplitAsk};
use hektor_cluster::ShardMap;
use hektor_topics::catalog::Catalog;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::log::{Log, LogRecord};
use hektor_topics::record::{PlanAction, PlanChange, RingRange, Tier};
use hektor_topics::topic::{topic_name, TopicKind};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Result;

/// Key of shard-map records.
pub const MAP_KEY: &str = "map";
/// Prefix of readiness-report keys: `ready/<node>/<start>-<end>`.
pub const READY_PREFIX: &str = "ready/";
/// Decisions kept for `GET /cluster`.
const KEEP_DECISIONS: usize = 64;

/// A node's report that it holds `range` caught up (the value of a `ready/…` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyRecord {
    pub node: String,
    pub range: RingRange,
    /// The map epoch the node followed when it reported.
    pub epoch: u64,
    pub time_ms: u64,
}

/// What is known of one collection's plan.
#[derive(Debug, Clone, Default)]
pub struct PlanState {
    pub incarnation: u64,
    pub map: Option<Arc<ShardMap>>,
    pub ready: Vec<Ready>,
    /// Splits asked for and not done yet.
    pub splits: Vec<SplitAsk>,
    /// Replica moves asked for and not done yet.
    pub moves: Vec<MoveAsk>,
    /// Merges asked for and not done yet: `(left, right)`.
    pub merges: Vec<(RingRange, RingRange)>,
    /// Tier changes asked for.
    pub tiers: Vec<(RingRange, Tier)>,
    /// The latest decisions read (planner and operators), oldest first.
    pub decisions: VecDeque<PlanChange>,
    cursor: u64,
}

impl PlanState {
    fn absorb(&mut self, key: &[u8], record: &LogRecord) -> Result<bool> {
        if key == MAP_KEY.as_bytes() {
            let map: ShardMap = serde_json::from_slice(&record.value)?;
            if map.incarnation() != self.incarnation {
                return Ok(false);
            }
            if self.map.as_ref().is_none_or(|m| map.epoch() > m.epoch()) {
                self.forget_done(&map);
                self.map = Some(Arc::new(map));
                return Ok(true);
            }
            return Ok(false);
        }
        if key.starts_with(READY_PREFIX.as_bytes()) {
            let r: ReadyRecord = serde_json::from_slice(&record.value)?;
            self.ready
                .retain(|x| !(x.node == r.node && x.range == r.range));
            self.ready.push(Ready {
                node: r.node,
                range: r.range,
                epoch: r.epoch,
            });
            return Ok(true);
        }
        let change: PlanChange = codec::from_log_record(record)?;
        match &change.action {
            PlanAction::Split { shard, at } => self.splits.push(SplitAsk {
                shard: *shard,
                at: *at,
                place: change.place.clone(),
            }),
            PlanAction::SetTier { shard, tier } => {
                self.tiers.retain(|(r, _)| r != shard);
                self.tiers.push((*shard, *tier));
            }
            PlanAction::Move { shard, from, to } => {
                self.moves.retain(|m| m.shard != *shard);
                self.moves.push(MoveAsk {
                    shard: *shard,
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            PlanAction::Merge { left, right } => self.merges.push((*left, *right)),
        }
        self.decisions.push_back(change);
        while self.decisions.len() > KEEP_DECISIONS {
            self.decisions.pop_front();
        }
        Ok(true)
    }

    /// Drop the requests a map has carried out (or made moot).
    fn forget_done(&mut self, map: &ShardMap) {
        // A split is done once a shard boundary lies at its point.
        self.splits
            .retain(|ask| !map.shards().iter().any(|s| s.range.start == ask.at));
        // A move is pending while its shard is still served from `from` and not `to`.
        self.moves.retain(|m| {
            map.shards().iter().any(|s| {
                s.range == m.shard && s.replicas.contains(&m.from) && !s.replicas.contains(&m.to)
            })
        });
        // A merge is pending while both shards are still served.
        self.merges.retain(|(l, r)| {
            map.shards().iter().any(|s| s.range == *l) && map.shards().iter().any(|s| s.range == *r)
        });
        self.tiers.retain(|(range, tier)| {
            map.shards()
                .iter()
                .any(|s| s.range == *range && s.tier != *tier)
        });
        self.ready.retain(|r| {
            map.targets().iter().any(|t| t.range == r.range)
                || map.shards().iter().any(|s| s.range == r.range)
        });
    }
}

/// Every collection's plan, followed from the log.
pub struct Plans {
    catalog: Arc<Catalog>,
    state: RwLock<BTreeMap<String, PlanState>>,
    version: watch::Sender<u64>,
}

impl Plans {
    /// Follow the plan topics of the catalog's collections, polling every `every`.
    pub fn start(catalog: Arc<Catalog>, every: Duration) -> Arc<Plans> {
        let plans = Arc::new(Plans {
            catalog,
            state: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
        });
        let follower = Arc::clone(&plans);
        tokio::spawn(async move {
            loop {
                if let Err(err) = follower.poll().await {
                    tracing::debug!(%err, "plan topic poll failed");
                }
                tokio::time::sleep(every).await;
            }
        });
        plans
    }

    /// Changes whenever a map, a report or a decision is read.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn log(&self) -> &Arc<dyn Log> {
        self.catalog.log()
    }

    /// Read what is new in every collection's plan topic.
    pub async fn poll(&self) -> Result<()> {
        let wanted = self.catalog.list_incarnations();
        let mut changed = false;
        {
            let mut state = self.state.write();
            let before = state.len();
            state.retain(|name, s| {
                wanted
                    .iter()
                    .any(|(spec, inc)| &spec.name == name && *inc == s.incarnation)
            });
            changed |= state.len() != before;
            for (spec, incarnation) in &wanted {
                state.entry(spec.name.clone()).or_insert_with(|| PlanState {
                    incarnation: *incarnation,
                    ..Default::default()
                });
            }
        }
        for (spec, incarnation) in wanted {
            let topic = topic_name(&spec.name, TopicKind::Plan);
            loop {
                let cursor = match self.state.read().get(&spec.name) {
                    Some(s) if s.incarnation == incarnation => s.cursor,
                    _ => break,
                };
                let batch = match self
                    .log()
                    .read(&topic, 0, cursor, 1024, Duration::ZERO)
                    .await
                {
                    Ok(b) => b,
                    Err(hektor_topics::Error::UnknownTopic(_)) => break,
                    Err(e) => return Err(e.into()),
                };
                if batch.is_empty() {
                    break;
                }
                let mut state = self.state.write();
                let Some(s) = state.get_mut(&spec.name) else {
                    break;
                };
                for stored in &batch {
                    s.cursor = stored.offset + 1;
                    let key = stored.record.key.clone().unwrap_or_default();
                    match s.absorb(&key, &stored.record) {
                        Ok(c) => changed |= c,
                        Err(err) => tracing::debug!(%err, %topic, offset = stored.offset,
                            "skipping unreadable plan record"),
                    }
                }
            }
        }
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// One collection's plan as known now.
    pub fn get(&self, collection: &str) -> Option<PlanState> {
        self.state.read().get(collection).cloned()
    }

    /// Every collection's accepted map.
    pub fn maps(&self) -> BTreeMap<String, Arc<ShardMap>> {
        self.state
            .read()
            .iter()
            .filter_map(|(n, s)| s.map.clone().map(|m| (n.clone(), m)))
            .collect()
    }

    /// Write a new map and take it as accepted here at once (others read it).
    pub async fn publish_map(&self, map: ShardMap) -> Result<()> {
        let record = LogRecord::new(Some(MAP_KEY.as_bytes().to_vec()), serde_json::to_vec(&map)?);
        self.log()
            .append(
                &topic_name(map.collection(), TopicKind::Plan),
                0,
                vec![record],
            )
            .await?;
        let mut state = self.state.write();
        if let Some(s) = state.get_mut(map.collection()) {
            if s.incarnation == map.incarnation()
                && s.map.as_ref().is_none_or(|m| map.epoch() > m.epoch())
            {
                s.forget_done(&map);
                s.map = Some(Arc::new(map));
            }
        }
        drop(state);
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Report that `node` holds `range` of `collection` caught up.
    pub async fn publish_ready(&self, collection: &str, report: ReadyRecord) -> Result<()> {
        let key = format!(
            "{READY_PREFIX}{}/{:016x}-{}",
            report.node,
            report.range.start,
            report
                .range
                .end
                .map_or_else(|| "end".to_owned(), |e| format!("{e:016x}"))
        );
        let record = LogRecord::new(Some(key.into_bytes()), serde_json::to_vec(&report)?);
        self.log()
            .append(&topic_name(collection, TopicKind::Plan), 0, vec![record])
            .await?;
        Ok(())
    }

    /// Append a decision (an operator's or the planner's) for the controller to carry out.
    pub async fn publish_decision(&self, change: &PlanChange) -> Result<()> {
        let record = codec::to_log_record(
            Some(change.collection.as_bytes().to_vec()),
            change,
            Encoding::Json,
        )?;
        self.log()
            .append(
                &topic_name(&change.collection, TopicKind::Plan),
                0,
                vec![record],
            )
            .await?;
        Ok(())
    }
}
