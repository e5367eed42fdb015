//! The `plan_catalog` target: bytes as a run of records in the catalog, plan and nodes
//! topics.
//!
//! This module owns the harness of the control plane's readers: the real
//! [`Catalog`] replay (every entry through `validate_spec`), the real
//! [`Plans`] follower (leases, shard maps, readiness reports and decisions, each through
//! its own check: the private `PlanState::absorb` and `check_change`, reached through
//! [`Plans::poll`]), heartbeats through [`check_heartbeat`] and [`NodeSpec::validate`],
//! and then what the controller does with all of it: [`next_map`], whose map every node
//! must accept.
//!
//! # Input
//!
//! Records separated by `\n@` (the first may start with `@`). A record is one byte naming
//! the topic (`c` catalog, `n` nodes, anything else: the plan topic of `docs`), one byte
//! naming the encoding header (`j` `json.v1`, `b` `bin.v1`, `-` none, any other: that
//! byte as an unknown header), the key up to the first `\n` (empty: no key), then the
//! value. The catalog starts with `docs` created (offset 0, so incarnation 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hektor_cluster::rules::{next_map, ControlConfig, ControlInput};
use hektor_cluster::{NodeSpec, ShardMap, Strategy};
use hektor_control::membership::{check_heartbeat, ROLE_DATA};
use hektor_control::plan::Plans;
use hektor_log::LogRecord;
use hektor_topics::catalog::{validate_spec, Catalog};
use hektor_topics::codec::{self, Encoding, ENCODING_HEADER};
use hektor_topics::record::{CatalogEntry, NodeHeartbeat, PlacementSpec};
use hektor_topics::topic::{topic_name, TopicKind, CATALOG_TOPIC};

use crate::memlog::MemLog;
use crate::record::docs_spec;

/// The readers' clock.
pub const NOW_MS: u64 = 1_700_000_000_000;
/// How long a node counts as alive after its heartbeat (and how far ahead it may be).
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// Most records one input may hold.
const MAX_FRAMES: usize = 64;

/// One record of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub topic: u8,
    pub header: u8,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Frame<'_> {
    /// The record as the log would hand it out.
    pub fn to_log_record(&self) -> LogRecord {
        let key = (!self.key.is_empty()).then(|| self.key.to_vec());
        let record = LogRecord::new(key, self.value.to_vec());
        match self.header {
            b'j' => record.with_header(ENCODING_HEADER, "json.v1"),
            b'b' => record.with_header(ENCODING_HEADER, "bin.v1"),
            b'-' => record,
            other => record.with_header(ENCODING_HEADER, vec![other]),
        }
    }
}

/// Split an input into its records (see the module doc).
pub fn frames(data: &[u8]) -> Vec<Frame<'_>> {
    let data = data.strip_prefix(b"@").unwrap_or(data);
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let (this, next) = match rest.windows(2).position(|w| w == b"\n@") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest, None),
        };
        if let [topic, header, tail @ ..] = this {
            let (key, value) = match tail.iter().position(|b| *b == b'\n') {
                Some(at) => (&tail[..at], &tail[at + 1..]),
                None => (tail, &[][..]),
            };
            out.push(Frame {
                topic: *topic,
                header: *header,
                key,
                value,
            });
        }
        match next {
            Some(n) => rest = n,
            None => return out,
        }
    }
}

/// Join records into an input (for the corpus).
pub fn join(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"@" } else { b"\n@" });
        out.push(f.topic);
        out.push(f.header);
        out.extend_from_slice(f.key);
        out.push(b'\n');
        out.extend_from_slice(f.value);
    }
    out
}

/// How far one run got (for the tests of the seeds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// Collections in the catalog after its replay.
    pub collections: usize,
    /// Heartbeats that passed their check.
    pub nodes: usize,
    /// Shard maps accepted from the plan topic.
    pub maps: usize,
    /// Decisions taken from the plan topic.
    pub decisions: usize,
    /// Maps the controller step made.
    pub next_maps: usize,
}

/// One run of the target.
pub fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let frames = frames(data);
    if frames.len() > MAX_FRAMES {
        return reached;
    }
    let log = Arc::new(MemLog::new(usize::MAX));
    let docs = docs_spec();
    log.push(
        CATALOG_TOPIC,
        0,
        codec::to_log_record(
            Some(docs.name.clone().into_bytes()),
            &CatalogEntry::Create(docs.clone()),
            Encoding::Json,
        )
        .expect("the spec encodes"),
    );
    let plan_topic = topic_name(&docs.name, TopicKind::Plan);
    let mut heartbeats = Vec::new();
    for frame in &frames {
        let record = frame.to_log_record();
        match frame.topic {
            b'c' => {
                log.push(CATALOG_TOPIC, 0, record);
            }
            b'n' => heartbeats.push(record),
            _ => {
                log.push(&plan_topic, 0, record);
            }
        }
    }
    let nodes = membership(&heartbeats);
    reached.nodes = nodes.len();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let catalog = Catalog::open(log.clone(), 1)
            .await
            .expect("a catalog opens whatever its topic holds");
        // The follower task `start` spawns never runs: nothing here waits. `poll` is the
        // step it repeats.
        let plans = Plans::start(Arc::clone(&catalog), Duration::from_secs(86_400));
        plans.poll().await.expect("reading an in-memory log");
        let collections = catalog.list_incarnations();
        reached.collections = collections.len();
        for (spec, incarnation) in collections {
            assert!(validate_spec(&spec).is_ok(), "the catalog took {spec:?}");
            let Some(state) = plans.get(&spec.name) else {
                continue;
            };
            reached.decisions += state.decisions.len();
            if let Some(map) = &state.map {
                reached.maps += 1;
                assert!(map.validate().is_ok());
                assert_eq!(map.incarnation(), incarnation);
                assert_eq!(&round_trip(map), &**map);
                for change in &state.decisions {
                    if let Ok(next) = map.apply_change(change) {
                        assert!(next.validate().is_ok());
                    }
                }
            }
            if control(&spec, incarnation, &state, &nodes) {
                reached.next_maps += 1;
            }
        }
    });
    reached
}

/// The heartbeats a membership keeps (the latest of each node that passes
/// [`check_heartbeat`]), as the node specs placement takes.
fn membership(records: &[LogRecord]) -> Vec<(NodeHeartbeat, NodeSpec)> {
    let mut nodes: BTreeMap<String, NodeHeartbeat> = BTreeMap::new();
    for record in records {
        let Ok(hb) = codec::from_log_record::<NodeHeartbeat>(record) else {
            continue;
        };
        if check_heartbeat(&hb, NOW_MS, DEAD_AFTER).is_err() {
            continue;
        }
        if nodes
            .get(&hb.node)
            .is_some_and(|old| old.time_ms > hb.time_ms)
        {
            continue;
        }
        nodes.insert(hb.node.clone(), hb);
    }
    nodes
        .into_values()
        .map(|hb| {
            let spec = NodeSpec::from_heartbeat(&hb);
            if let Err(e) = spec.validate() {
                panic!("a heartbeat that passed check_heartbeat is no node spec: {e}: {hb:?}");
            }
            (hb, spec)
        })
        .collect()
}

/// One step of the controller for one collection (as `hektor_control::controller` runs
/// it): the next map must be one every node accepts. Whether it made one.
fn control(
    spec: &hektor_topics::record::CollectionSpec,
    incarnation: u64,
    state: &hektor_control::plan::PlanState,
    nodes: &[(NodeHeartbeat, NodeSpec)],
) -> bool {
    let alive_now = |hb: &NodeHeartbeat| NOW_MS.saturating_sub(hb.time_ms) < 10_000;
    let alive: Vec<String> = nodes
        .iter()
        .filter(|(hb, _)| alive_now(hb))
        .map(|(hb, _)| hb.node.clone())
        .collect();
    let placeable: Vec<NodeSpec> = nodes
        .iter()
        .filter(|(hb, _)| alive_now(hb) && !hb.leaving && hb.roles.iter().any(|r| r == ROLE_DATA))
        .map(|(_, s)| s.clone())
        .collect();
    let config = ControlConfig {
        replication: spec.replication.max(1) as usize,
        max_moves: 4,
        strategy: match spec.placement {
            PlacementSpec::Balanced | PlacementSpec::Load => None,
            PlacementSpec::HashMod => Some(Strategy::HashMod),
            PlacementSpec::Range => Some(Strategy::Range),
            PlacementSpec::ConsistentHash { vnodes } => Some(Strategy::ConsistentHash { vnodes }),
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
        moves: &state.moves,
        merges: &state.merges,
        tiers: &state.tiers,
    };
    if let Ok(Some(decision)) = next_map(&spec.name, &input, &config) {
        let map = decision.map;
        assert!(map.validate().is_ok());
        assert_eq!(map.incarnation(), incarnation);
        if let Some(current) = &state.map {
            assert!(map.epoch() > current.epoch(), "the next map is not later");
        }
        assert_eq!(round_trip(&map), map);
        return true;
    }
    false
}

/// A map as another node reads it from the plan topic.
fn round_trip(map: &ShardMap) -> ShardMap {
    let bytes = serde_json::to_vec(map).expect("a map serializes");
    match serde_json::from_slice(&bytes) {
        Ok(back) => back,
        Err(e) => panic!("a valid map does not read back: {e}: {map:?}"),
    }
}
