//! The plan topic of each collection, read and written: shard maps, readiness reports and
//! decisions, told apart by their key (see the crate doc), all JSON.
//!
//! [`Plans`] follows the plan topic of every collection in the catalog and keeps, per
//! collection, the controller lease, the accepted map, the readiness reports, and the
//! pending requests (splits, tier changes, moves and merges) that the controller turns
//! into maps. A request is forgotten once a map has carried it out or made it moot (its
//! shard gone).
//!
//! # One controller at a time: leases with fencing
//!
//! A node that wants to write a collection's maps first appends a lease record
//! (`lease/<term>/<node>`, term = the highest seen + 1). Every reader takes, per term, the
//! **first** lease record of that term in the log as its holder, and a higher term
//! replaces a lower one. A map record (`map/<term>/<node>`) is accepted only when it was
//! written under the current lease (its term and writer are the latest lease's term and
//! holder, as of where it lies in the log) and its epoch is higher than the accepted one.
//! Every reader reads the same log in the same order, so every reader accepts the same
//! maps: a controller that lost its lease (a later term was appended before its map) is
//! fenced off everywhere, and two maps with one epoch are never both accepted. The holder
//! writes a map only after its previous one was read back, and opens its term by
//! re-writing the accepted map under it, so compaction (which keeps the last record per
//! key, in log order) always leaves an accepted map of the latest term.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hektor_cluster::rules::{MoveAsk, Ready, SplitAsk, TierAsk};
use hektor_cluster::ShardMap;
use hektor_log::{Log, LogRecord};
use hektor_topics::catalog::Catalog;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::record::{is_node_id, PlanAction, PlanChange, RingRange};
use hektor_topics::topic::{topic_name, TopicKind};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Result;

/// Key of shard-map records written before leases (accepted only while no lease exists).
pub const MAP_KEY: &str = "map";
/// Prefix of shard-map record keys: `map/<term>/<node>`.
pub const MAP_PREFIX: &str = "map/";
/// Prefix of lease record keys: `lease/<term>/<node>`.
pub const LEASE_PREFIX: &str = "lease/";
/// Prefix of readiness-report keys: `ready/<node>/<start>-<end>`.
pub const READY_PREFIX: &str = "ready/";
/// Decisions kept for `GET /cluster`.
const KEEP_DECISIONS: usize = 64;
/// Pending asks (splits, moves, merges, tier changes) and readiness reports kept per
/// collection; beyond it the oldest go, so a flood of plan records cannot grow a node.
const MAX_PENDING: usize = 4096;

/// The field of a decision's JSON that names where a tier move should go: the planner's
/// promotions under tier roles name the hot-eligible nodes whose hot budget they charged
/// (`hektor_dataflow`'s `TierDecision::on`). Not a field of [`PlanChange`] (old readers
/// ignore it; old records lack it); read by [`placement_hint`].
pub const HINT_FIELD: &str = "on";
/// The most nodes a placement hint may name (a shard has at most this many replicas that
/// matter here); a longer one is ignored.
pub const MAX_HINT_NODES: usize = 16;

fn trim_front<T>(list: &mut Vec<T>) {
    let excess = list.len().saturating_sub(MAX_PENDING);
    list.drain(..excess);
}

/// A node's report that it holds `range` caught up (the value of a `ready/…` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyRecord {
    pub node: String,
    pub range: RingRange,
    /// The map epoch the node followed when it reported.
    pub epoch: u64,
    pub time_ms: u64,
}

/// A controller lease (the value of a `lease/…` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    pub term: u64,
    pub node: String,
    pub time_ms: u64,
}

/// The door for decisions read from the plan topic: node ids that can be node ids,
/// non-empty ranges, a split point inside its shard, a bounded reason.
fn check_change(change: &PlanChange) -> Result<()> {
    let bad = |why: &str| {
        Err(crate::Error::BadRecord(format!(
            "decision for `{}` at epoch {}: {why}",
            change.collection.chars().take(80).collect::<String>(),
            change.epoch
        )))
    };
    let empty = |r: &RingRange| r.end.is_some_and(|e| e <= r.start);
    if change.reason.len() > 4096 {
        return bad("the reason is longer than 4096 bytes");
    }
    if change.place.as_deref().is_some_and(|p| !is_node_id(p)) {
        return bad("`place` is not a node id");
    }
    match &change.action {
        PlanAction::Split { shard, at } => {
            if empty(shard) || !(shard.contains(*at) && *at > shard.start) {
                return bad("the split point does not lie inside the shard");
            }
        }
        PlanAction::SetTier { shard, .. } => {
            if empty(shard) {
                return bad("the shard range is empty");
            }
        }
        PlanAction::Move { shard, from, to } => {
            if empty(shard) || !is_node_id(from) || !is_node_id(to) || from == to {
                return bad("a move needs a range and two different node ids");
            }
        }
        PlanAction::Merge { left, right } => {
            if empty(left) || empty(right) || left.end != Some(right.start) {
                return bad("a merge needs two adjacent ranges");
            }
        }
    }
    Ok(())
}

/// The placement hint of a decision read from the plan topic ([`HINT_FIELD`]): the node
/// ids it names, when it names at most [`MAX_HINT_NODES`] distinct ones that can all be
/// node ids; otherwise (a malformed or oversized hint, a binary record, an old record
/// without one) none, and the decision is carried out as without it. Whether the nodes
/// are live and may hold the tier is the rules' check (`hektor_cluster::rules`), each
/// time the controller acts.
pub fn placement_hint(record: &LogRecord) -> Vec<String> {
    #[derive(Deserialize)]
    struct Hinted {
        #[serde(default)]
        on: Option<serde_json::Value>,
    }
    let json = codec::Encoding::from_header(record.header(codec::ENCODING_HEADER))
        .is_ok_and(|e| e == Encoding::Json);
    if !json {
        return Vec::new();
    }
    let Ok(Hinted { on: Some(on) }) = serde_json::from_slice::<Hinted>(&record.value) else {
        return Vec::new();
    };
    let nodes: Option<Vec<String>> = on.as_array().and_then(|list| {
        if list.len() > MAX_HINT_NODES {
            return None;
        }
        list.iter()
            .map(|n| n.as_str().filter(|n| is_node_id(n)).map(str::to_owned))
            .collect()
    });
    match nodes {
        Some(mut nodes) => {
            let mut seen = std::collections::BTreeSet::new();
            nodes.retain(|n| seen.insert(n.clone()));
            nodes
        }
        None => {
            tracing::debug!(
                "ignoring a decision's placement hint: not a list of at most \
                 {MAX_HINT_NODES} node ids"
            );
            Vec::new()
        }
    }
}

/// A decision as a plan-topic record (JSON, keyed by its collection), with the placement
/// hint `on` ([`HINT_FIELD`]) when not empty.
pub fn decision_record(change: &PlanChange, on: &[String]) -> Result<LogRecord> {
    let key = Some(change.collection.as_bytes().to_vec());
    if on.is_empty() {
        return Ok(codec::to_log_record(key, change, Encoding::Json)?);
    }
    // Encoded as any decision (the record's own checks), then the hint beside its fields.
    let mut value: serde_json::Value =
        serde_json::from_slice(&codec::encode(change, Encoding::Json)?)?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert(HINT_FIELD.to_owned(), serde_json::json!(on));
    }
    Ok(LogRecord::new(key, serde_json::to_vec(&value)?)
        .with_header(codec::ENCODING_HEADER, Encoding::Json.header_value()))
}

/// What is known of one collection's plan.
#[derive(Debug, Clone, Default)]
pub struct PlanState {
    pub incarnation: u64,
    /// The current controller lease: the first record of the highest term.
    pub lease: Option<LeaseRecord>,
    pub map: Option<Arc<ShardMap>>,
    pub ready: Vec<Ready>,
    /// Splits asked for and not done yet.
    pub splits: Vec<SplitAsk>,
    /// Replica moves asked for and not done yet.
    pub moves: Vec<MoveAsk>,
    /// Merges asked for and not done yet: `(left, right)`.
    pub merges: Vec<(RingRange, RingRange)>,
    /// Tier changes asked for, with the asker's placement hint (see [`HINT_FIELD`]).
    pub tiers: Vec<TierAsk>,
    /// The latest decisions read (planner and operators), oldest first.
    pub decisions: VecDeque<PlanChange>,
    cursor: u64,
}

impl PlanState {
    fn absorb(&mut self, key: &[u8], record: &LogRecord) -> Result<bool> {
        if key.starts_with(LEASE_PREFIX.as_bytes()) {
            let lease: LeaseRecord = serde_json::from_slice(&record.value)?;
            if !is_node_id(&lease.node) || lease.term == 0 {
                return Err(crate::Error::BadRecord(format!(
                    "lease record with node {:?} and term {} is not a lease",
                    lease.node, lease.term
                )));
            }
            if self.lease.as_ref().is_none_or(|l| lease.term > l.term) {
                self.lease = Some(lease);
                return Ok(true);
            }
            return Ok(false);
        }
        if key == MAP_KEY.as_bytes() || key.starts_with(MAP_PREFIX.as_bytes()) {
            let map: ShardMap = serde_json::from_slice(&record.value)?;
            if map.incarnation() != self.incarnation {
                return Ok(false);
            }
            // Fencing: only the current lease's holder writes maps.
            let under_lease = match &self.lease {
                Some(l) => map.lease().term == l.term && map.lease().writer == l.node,
                None => map.lease().term == 0,
            };
            if !under_lease {
                tracing::debug!(collection = map.collection(), epoch = map.epoch(),
                    term = map.lease().term, writer = %map.lease().writer,
                    "ignoring a shard map written without the current lease");
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
            if !is_node_id(&r.node) || r.range.end.is_some_and(|e| e <= r.range.start) {
                return Err(crate::Error::BadRecord(format!(
                    "readiness report of node {:?} for range {:?} is not one",
                    r.node.chars().take(80).collect::<String>(),
                    r.range
                )));
            }
            self.ready
                .retain(|x| !(x.node == r.node && x.range == r.range));
            self.ready.push(Ready {
                node: r.node,
                range: r.range,
                epoch: r.epoch,
            });
            trim_front(&mut self.ready);
            return Ok(true);
        }
        let change: PlanChange = codec::from_log_record(record)?;
        check_change(&change)?;
        match &change.action {
            PlanAction::Split { shard, at } => {
                // One pending split per shard: the latest ask wins.
                self.splits.retain(|a| a.shard != *shard);
                self.splits.push(SplitAsk {
                    shard: *shard,
                    at: *at,
                    place: change.place.clone(),
                });
            }
            PlanAction::SetTier { shard, tier } => {
                self.tiers.retain(|a| a.shard != *shard);
                self.tiers.push(TierAsk {
                    shard: *shard,
                    tier: *tier,
                    on: placement_hint(record),
                });
            }
            PlanAction::Move { shard, from, to } => {
                self.moves.retain(|m| m.shard != *shard);
                self.moves.push(MoveAsk {
                    shard: *shard,
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            PlanAction::Merge { left, right } => {
                self.merges.retain(|m| *m != (*left, *right));
                self.merges.push((*left, *right));
            }
        }
        // Whatever the plan topic holds, pending asks stay bounded (oldest dropped).
        trim_front(&mut self.splits);
        trim_front(&mut self.moves);
        trim_front(&mut self.merges);
        trim_front(&mut self.tiers);
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
        self.tiers.retain(|ask| {
            map.shards()
                .iter()
                .any(|s| s.range == ask.shard && s.tier != ask.tier)
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
                    Err(hektor_log::LogError::UnknownTopic(_)) => break,
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

    /// Append a map written under its lease (see [`ShardMap::lease`]). It is accepted
    /// here, as everywhere, only when read back from the log under the current lease.
    pub async fn publish_map(&self, map: ShardMap) -> Result<()> {
        let key = format!(
            "{MAP_PREFIX}{:020}/{}",
            map.lease().term,
            map.lease().writer
        );
        let record = LogRecord::new(Some(key.into_bytes()), serde_json::to_vec(&map)?);
        self.log()
            .append(
                &topic_name(map.collection(), TopicKind::Plan),
                0,
                vec![record],
            )
            .await?;
        Ok(())
    }

    /// Append a claim to the controller lease of `collection` at `term`. It holds only if
    /// it is the first record of that term in the log (see the module doc).
    pub async fn publish_lease(&self, collection: &str, lease: &LeaseRecord) -> Result<()> {
        let key = format!("{LEASE_PREFIX}{:020}/{}", lease.term, lease.node);
        let record = LogRecord::new(Some(key.into_bytes()), serde_json::to_vec(lease)?);
        self.log()
            .append(&topic_name(collection, TopicKind::Plan), 0, vec![record])
            .await?;
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
        let record = decision_record(change, &[])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use hektor_cluster::{Lease, Shard};
    use hektor_topics::record::Tier;

    fn lease(term: u64, node: &str) -> (String, Vec<u8>) {
        let record = LeaseRecord {
            term,
            node: node.into(),
            time_ms: 1,
        };
        (
            format!("{LEASE_PREFIX}{term:020}/{node}"),
            serde_json::to_vec(&record).unwrap(),
        )
    }

    /// A map at `epoch` whose one shard is held by `holder`, written under (term, writer).
    fn map(epoch: u64, holder: &str, term: u64, writer: &str) -> (String, Vec<u8>) {
        let shards = vec![Shard {
            range: RingRange {
                start: 0,
                end: None,
            },
            replicas: vec![holder.into()],
            tier: Tier::Hot,
        }];
        let m = ShardMap::new("c", epoch, shards)
            .unwrap()
            .with_incarnation(7)
            .with_lease(Lease {
                term,
                writer: writer.into(),
            });
        (
            format!("{MAP_PREFIX}{term:020}/{writer}"),
            serde_json::to_vec(&m).unwrap(),
        )
    }

    /// What a reader accepts after reading `records` in order: (epoch, holder of the
    /// shard, lease term) of the accepted map.
    fn read(records: &[(String, Vec<u8>)]) -> Option<(u64, String, u64)> {
        let mut state = PlanState {
            incarnation: 7,
            ..Default::default()
        };
        for (key, value) in records {
            let record = LogRecord::new(Some(key.clone().into_bytes()), value.clone());
            let _ = state.absorb(key.as_bytes(), &record);
        }
        state
            .map
            .map(|m| (m.epoch(), m.shards()[0].replicas[0].clone(), m.lease().term))
    }

    /// The log as compaction leaves it: the last record of each key, in log order.
    fn compacted(records: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
        records
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| !records[i + 1..].iter().any(|(later, _)| later == k))
            .map(|(_, r)| r.clone())
            .collect()
    }

    #[test]
    fn the_first_claim_of_a_term_holds_and_only_its_holder_writes_maps() {
        let log = vec![
            lease(1, "a"),
            lease(1, "b"), // came second: b does not hold term 1
            map(0, "b", 1, "b"),
            map(0, "a", 1, "a"),
        ];
        assert_eq!(read(&log), Some((0, "a".into(), 1)));
        // Two maps of one epoch: only the holder's counts, on every reader.
        let log = vec![
            lease(1, "a"),
            map(0, "a", 1, "a"),
            map(1, "x", 1, "b"),
            map(1, "y", 1, "a"),
        ];
        assert_eq!(read(&log), Some((1, "y".into(), 1)));
        // Without a lease, a map claiming one is not taken, nor one with another term.
        assert_eq!(read(&[map(0, "a", 1, "a")]), None);
        assert_eq!(read(&[lease(2, "a"), map(0, "a", 1, "a")]), None);
        // A map from before leases is taken while no lease exists, and not after.
        assert_eq!(read(&[map(0, "a", 0, "")]), Some((0, "a".into(), 0)));
        assert_eq!(read(&[lease(1, "a"), map(0, "a", 0, "")]), None);
    }

    #[test]
    fn a_controller_that_lost_its_lease_is_fenced_off_even_after_compaction() {
        let log = vec![
            lease(1, "a"),
            map(0, "a", 1, "a"),
            map(1, "a", 1, "a"),
            // b takes over; a, partitioned, still writes a map with a higher epoch.
            lease(2, "b"),
            map(5, "stale", 1, "a"),
            // b opens its term by re-writing the accepted map, then moves on.
            map(2, "a", 2, "b"),
            map(3, "b", 2, "b"),
            map(9, "stale", 1, "a"),
        ];
        assert_eq!(read(&log), Some((3, "b".into(), 2)));
        // A node that joins after compaction accepts the same map.
        assert_eq!(read(&compacted(&log)), read(&log));
        // Before b's first map, every reader keeps a's last map from before the handover.
        assert_eq!(read(&log[..5]), Some((1, "a".into(), 1)));
        // An older or equal term never replaces the lease.
        let log = vec![
            lease(2, "b"),
            lease(1, "a"),
            lease(2, "a"),
            map(0, "a", 2, "a"),
            map(0, "b", 2, "b"),
        ];
        assert_eq!(read(&log), Some((0, "b".into(), 2)));
    }

    #[test]
    fn forged_reports_and_decisions_are_refused_and_good_ones_kept() {
        let mut state = PlanState::default();
        let feed = |state: &mut PlanState, key: &str, value: serde_json::Value| {
            let record = LogRecord::new(
                Some(key.as_bytes().to_vec()),
                value.to_string().into_bytes(),
            );
            state.absorb(key.as_bytes(), &record)
        };
        let range = serde_json::json!({"start": 0, "end": 100});
        assert!(feed(
            &mut state,
            "ready/n1/0-100",
            serde_json::json!({"node": "n1", "range": range, "epoch": 1, "time_ms": 1})
        )
        .is_ok());
        assert!(feed(
            &mut state,
            "ready/x",
            serde_json::json!({"node": "", "range": range, "epoch": 1, "time_ms": 1})
        )
        .is_err());
        assert!(feed(
            &mut state,
            "ready/x",
            serde_json::json!({"node": "n 2", "range": range, "epoch": 1, "time_ms": 1})
        )
        .is_err());
        assert!(feed(&mut state, "ready/x", serde_json::json!({"node": "n2", "range": {"start": 9, "end": 9}, "epoch": 1, "time_ms": 1})).is_err());
        assert_eq!(state.ready.len(), 1);
        let change = |action: serde_json::Value, place: Option<&str>| serde_json::json!({"collection": "c", "epoch": 1, "action": action, "reason": "r", "time_ms": 1, "place": place});
        let good = [
            change(
                serde_json::json!({"action": "split", "shard": range, "at": 50}),
                Some("n2"),
            ),
            change(
                serde_json::json!({"action": "move", "shard": range, "from": "n1", "to": "n2"}),
                None,
            ),
        ];
        for g in good {
            assert!(feed(&mut state, "c", g.clone()).is_ok(), "{g}");
        }
        let bad = [
            change(
                serde_json::json!({"action": "split", "shard": range, "at": 0}),
                None,
            ),
            change(
                serde_json::json!({"action": "split", "shard": range, "at": 500}),
                None,
            ),
            change(
                serde_json::json!({"action": "split", "shard": range, "at": 50}),
                Some(""),
            ),
            change(
                serde_json::json!({"action": "move", "shard": range, "from": "n1", "to": "n1"}),
                None,
            ),
            change(
                serde_json::json!({"action": "merge", "left": range, "right": {"start": 200, "end": null}}),
                None,
            ),
        ];
        for b in bad {
            assert!(feed(&mut state, "c", b.clone()).is_err(), "{b}");
        }
        assert_eq!(
            (state.splits.len(), state.moves.len(), state.merges.len()),
            (1, 1, 0)
        );
    }

    #[test]
    fn a_tier_decisions_placement_hint_is_read_checked_or_ignored() {
        let range = serde_json::json!({"start": 0, "end": 100});
        let decision = |on: Option<serde_json::Value>| {
            let mut v = serde_json::json!({"collection": "c", "epoch": 1,
                "action": {"action": "set_tier", "shard": range, "tier": "hot"},
                "reason": "tier: cold → hot", "time_ms": 1});
            if let Some(on) = on {
                v[HINT_FIELD] = on;
            }
            v
        };
        let read = |value: serde_json::Value, header: Option<&str>| {
            let mut state = PlanState::default();
            let mut record = LogRecord::new(Some(b"c".to_vec()), value.to_string().into_bytes());
            if let Some(h) = header {
                record = record.with_header(codec::ENCODING_HEADER, h);
            }
            state.absorb(b"c", &record).map(|_| state.tiers)
        };
        let hot = RingRange {
            start: 0,
            end: Some(100),
        };
        // A record from before hints decodes, without one.
        let old = read(decision(None), Some("json.v1")).unwrap();
        assert_eq!(old, [TierAsk::from((hot, Tier::Hot))]);
        // The planner's hint is kept (duplicates once), with or without the header.
        for header in [Some("json.v1"), None] {
            let hinted = read(
                decision(Some(serde_json::json!(["h2", "h1", "h2"]))),
                header,
            )
            .unwrap();
            assert_eq!(hinted[0].on, ["h2", "h1"]);
        }
        // Malformed or oversized hints are ignored; the decision stands.
        let long: Vec<String> = (0..=MAX_HINT_NODES).map(|i| format!("n{i}")).collect();
        for bad in [
            serde_json::json!("h1"),
            serde_json::json!([""]),
            serde_json::json!(["h 1"]),
            serde_json::json!(["h1", 7]),
            serde_json::json!({"h1": true}),
            serde_json::json!(["x".repeat(hektor_topics::record::MAX_NODE_ID_LEN + 1)]),
            serde_json::json!(long),
            serde_json::Value::Null,
        ] {
            let tiers = read(decision(Some(bad.clone())), None).unwrap();
            assert_eq!(tiers, [TierAsk::from((hot, Tier::Hot))], "{bad}");
        }
        // A hint at the limit is taken.
        let most: Vec<String> = long[..MAX_HINT_NODES].to_vec();
        let tiers = read(decision(Some(serde_json::json!(most))), None).unwrap();
        assert_eq!(tiers[0].on, most);
        // A record as `Plans::publish_decision` writes it carries none.
        let change: PlanChange = serde_json::from_value(decision(None)).unwrap();
        let record = decision_record(&change, &[]).unwrap();
        assert!(placement_hint(&record).is_empty());
        let record = decision_record(&change, &["h1".into()]).unwrap();
        assert_eq!(placement_hint(&record), ["h1"]);
        let decoded: PlanChange = codec::from_log_record(&record).unwrap();
        assert_eq!(decoded, change);
        // The ask is forgotten once the map shows the tier, as without a hint.
        let mut state = PlanState {
            tiers: read(decision(Some(serde_json::json!(["h1"]))), None).unwrap(),
            ..Default::default()
        };
        let m = ShardMap::new(
            "c",
            2,
            vec![
                Shard {
                    range: hot,
                    replicas: vec!["h1".into()],
                    tier: Tier::Hot,
                },
                Shard {
                    range: RingRange {
                        start: 100,
                        end: None,
                    },
                    replicas: vec!["h1".into()],
                    tier: Tier::Hot,
                },
            ],
        )
        .unwrap();
        state.forget_done(&m);
        assert!(state.tiers.is_empty());
    }

    #[test]
    fn malformed_leases_are_refused() {
        let mut state = PlanState::default();
        for bad in [
            br#"{"term": 0, "node": "a", "time_ms": 1}"#.to_vec(),
            br#"{"term": 1, "node": "", "time_ms": 1}"#.to_vec(),
            br#"{"term": 1, "node": "a"}"#.to_vec(),
            b"not json".to_vec(),
        ] {
            let record = LogRecord::new(Some(b"lease/1/a".to_vec()), bad);
            assert!(state.absorb(b"lease/1/a", &record).is_err());
        }
        assert!(state.lease.is_none());
    }
}
