//! Membership: heartbeats on the `hektor.nodes` topic and the view of who is alive.
//!
//! A node appends a [`NodeHeartbeat`] (JSON, keyed by its id, so compaction keeps the
//! last one) every `heartbeat_every`; when it drains it sets `leaving`. Every node follows
//! the topic from its start and judges a node alive while its last heartbeat is younger
//! than `dead_after` (heartbeat times are the sender's wall clock: nodes' clocks must
//! agree to well within `dead_after`, as NTP gives).
//!
//! The topic is not trusted: every heartbeat read passes [`check_heartbeat`] (the same
//! check a node makes of its own before sending it) or is skipped with a rate-limited
//! warning and counted ([`Membership::refused_heartbeats`]), so a forged or malformed one
//! never becomes a member, a place for shards, or the controller. A heartbeat whose time
//! lies more than `dead_after` ahead of the reader's clock is refused, not clamped: it
//! could otherwise look alive forever (or, clamped, still for a while) and hold back the
//! sender's real heartbeats, which must be newer; a real node that far ahead has a clock
//! the liveness rule cannot work with anyway, and the warning says so. At most
//! [`MAX_MEMBERS`] nodes are remembered: a new one takes the place of the longest-dead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hektor_cluster::NodeSpec;
use hektor_log::Log;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::error::Refusals;
use hektor_topics::record::{HeldShard, NodeHeartbeat, MAX_HELD_SHARDS};
use hektor_topics::topic::NODES_TOPIC;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::{NodeInfo, Result};

/// The role that serves the client API (searches, writes, collection changes).
pub const ROLE_ROUTER: &str = "router";
/// The role that makes a node hold shards.
pub const ROLE_DATA: &str = "data";
/// The role that makes a node eligible to run the controller.
pub const ROLE_CONTROLLER: &str = "controller";
/// The role that runs the kinetic planner.
pub const ROLE_PLANNER: &str = "planner";
/// Tier roles: a data node with one or more holds only shards of those tiers (a `cold`
/// node also archive ones); one with none holds any tier. See
/// [`hektor_cluster::node::tier_of_role`].
pub const ROLE_HOT: &str = "hot";
pub const ROLE_WARM: &str = "warm";
pub const ROLE_COLD: &str = "cold";
/// The role of a node that runs GPU batch work.
pub const ROLE_GPU: &str = "gpu";
/// Every role a node may be given.
pub const ROLES: [&str; 8] = [
    ROLE_ROUTER,
    ROLE_DATA,
    ROLE_CONTROLLER,
    ROLE_PLANNER,
    ROLE_HOT,
    ROLE_WARM,
    ROLE_COLD,
    ROLE_GPU,
];
/// The most nodes a membership remembers (alive or not).
pub const MAX_MEMBERS: usize = 4096;
/// At most one warning about refused heartbeats per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The nodes topic of a named cluster: `hektor.nodes` for the default one, else
/// `hektor.nodes.<name>`. Nodes of different clusters may share a log (and collections
/// stay apart by name prefix, see `Catalog::open_scoped`) without seeing each other.
pub fn nodes_topic(cluster: Option<&str>) -> String {
    match cluster {
        None | Some("") => NODES_TOPIC.to_owned(),
        Some(name) => format!("{NODES_TOPIC}.{name}"),
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Check a node's own roles (`hektor serve --roles`): each one of [`ROLES`], and the tier
/// roles only with `data` (they limit which shards a data node holds).
pub fn check_roles(roles: &[String]) -> Result<()> {
    for role in roles {
        if !ROLES.contains(&role.as_str()) {
            return Err(crate::Error::Config(format!(
                "unknown role `{role}`: use {}",
                ROLES.join(", ")
            )));
        }
    }
    let tiers: Vec<&str> = roles
        .iter()
        .map(String::as_str)
        .filter(|r| hektor_cluster::node::tier_of_role(r).is_some())
        .collect();
    if !tiers.is_empty() && !roles.iter().any(|r| r == ROLE_DATA) {
        return Err(crate::Error::Config(format!(
            "the tier roles {} limit which shards a data node holds: add the `data` role, or \
             drop them",
            tiers.join(", ")
        )));
    }
    Ok(())
}

/// The one check of a heartbeat: for each one read from the nodes topic (at the reader's
/// clock `now_ms`) and for this node's own before it is sent. Its shape and sizes are
/// [`NodeHeartbeat::validate`]'s; its time may be at most `max_ahead` past `now_ms`.
pub fn check_heartbeat(
    hb: &NodeHeartbeat,
    now_ms: u64,
    max_ahead: Duration,
) -> hektor_topics::Result<()> {
    hb.validate()?;
    let ahead = hb.time_ms.saturating_sub(now_ms);
    let allowed = u64::try_from(max_ahead.as_millis()).unwrap_or(u64::MAX);
    if ahead > allowed {
        return Err(hektor_topics::Error::InvalidHeartbeat {
            node: hb.node.chars().take(80).collect(),
            reason: format!(
                "its time is {ahead} ms ahead of this node's clock, more than the {allowed} ms \
                 allowed (keep the nodes' clocks in sync, with NTP)"
            ),
        });
    }
    Ok(())
}

/// The nodes of the cluster, from their heartbeats.
pub struct Membership {
    log: Arc<dyn Log>,
    topic: String,
    dead_after: Duration,
    nodes: RwLock<BTreeMap<String, NodeHeartbeat>>,
    /// Bumped whenever a node appears, changes or is judged dead.
    version: watch::Sender<u64>,
    /// Heartbeats read and not taken (undecodable or failing [`check_heartbeat`]).
    refused: Refusals,
}

impl Membership {
    /// Follow the nodes topic `topic` in the background (see [`nodes_topic`]).
    pub fn start(log: Arc<dyn Log>, topic: String, dead_after: Duration) -> Arc<Membership> {
        let m = Arc::new(Membership::new(log, topic, dead_after));
        let follower = Arc::clone(&m);
        tokio::spawn(async move { follower.follow().await });
        m
    }

    /// A membership that knows no node yet and does not follow the topic.
    fn new(log: Arc<dyn Log>, topic: String, dead_after: Duration) -> Membership {
        Membership {
            log,
            topic,
            dead_after,
            nodes: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
            refused: Refusals::new("heartbeat", WARN_EVERY),
        }
    }

    async fn follow(self: Arc<Self>) {
        let mut cursor = 0u64;
        let mut alive_before: Vec<String> = Vec::new();
        loop {
            match self
                .log
                .read(&self.topic, 0, cursor, 1024, Duration::from_millis(200))
                .await
            {
                Ok(batch) => {
                    for stored in &batch {
                        cursor = stored.offset + 1;
                        let taken = codec::from_log_record::<NodeHeartbeat>(&stored.record)
                            .and_then(|hb| self.absorb(hb, wall_ms()));
                        match taken {
                            Ok(true) => self.version.send_modify(|v| *v += 1),
                            Ok(false) => {}
                            Err(err) => self.refused.refuse(stored.offset, &err),
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "reading the nodes topic failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let alive: Vec<String> = self.alive().into_iter().map(|h| h.node).collect();
            if alive != alive_before {
                alive_before = alive;
                self.version.send_modify(|v| *v += 1);
            }
        }
    }

    /// Take one heartbeat read at `now` (the reader's clock) if it passes
    /// [`check_heartbeat`]; returns whether the node appeared or changed.
    fn absorb(&self, hb: NodeHeartbeat, now: u64) -> hektor_topics::Result<bool> {
        check_heartbeat(&hb, now, self.dead_after)?;
        let mut nodes = self.nodes.write();
        match nodes.get(&hb.node) {
            Some(old) if old.time_ms > hb.time_ms => return Ok(false),
            Some(_) => {}
            None if nodes.len() >= MAX_MEMBERS => {
                let longest_dead = nodes
                    .values()
                    .filter(|old| !self.is_alive(old, now))
                    .min_by_key(|old| old.time_ms)
                    .map(|old| old.node.clone());
                let Some(gone) = longest_dead else {
                    return Err(hektor_topics::Error::InvalidHeartbeat {
                        node: hb.node.chars().take(80).collect(),
                        reason: format!(
                            "{MAX_MEMBERS} nodes are alive already, the most a membership holds"
                        ),
                    });
                };
                nodes.remove(&gone);
            }
            None => {}
        }
        let changed = nodes.get(&hb.node).is_none_or(|old| {
            old.leaving != hb.leaving
                || old.address != hb.address
                || old.capacity != hb.capacity
                || old.roles != hb.roles
        });
        nodes.insert(hb.node.clone(), hb);
        Ok(changed)
    }

    /// Changes whenever membership does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// How many heartbeats were read and refused (undecodable or invalid) so far.
    pub fn refused_heartbeats(&self) -> u64 {
        self.refused.total()
    }

    fn is_alive(&self, hb: &NodeHeartbeat, now: u64) -> bool {
        now.saturating_sub(hb.time_ms) < self.dead_after.as_millis() as u64
    }

    /// The last heartbeat of every node alive now, by id.
    pub fn alive(&self) -> Vec<NodeHeartbeat> {
        self.alive_at(wall_ms())
    }

    fn alive_at(&self, now: u64) -> Vec<NodeHeartbeat> {
        self.nodes
            .read()
            .values()
            .filter(|hb| self.is_alive(hb, now))
            .cloned()
            .collect()
    }

    /// The time (wall ms, as its sender stamped it) of the newest heartbeat read from
    /// `node`, if any is held.
    pub fn last_heard(&self, node: &str) -> Option<u64> {
        self.nodes.read().get(node).map(|hb| hb.time_ms)
    }

    /// Alive data nodes that are not draining: where shards may go.
    pub fn placeable(&self) -> Vec<NodeSpec> {
        self.placeable_at(wall_ms())
    }

    fn placeable_at(&self, now: u64) -> Vec<NodeSpec> {
        self.alive_at(now)
            .iter()
            .filter(|hb| !hb.leaving && hb.roles.iter().any(|r| r == ROLE_DATA))
            .map(NodeSpec::from_heartbeat)
            .collect()
    }

    /// The controller: the alive node with the controller role and the smallest id.
    pub fn controller(&self) -> Option<String> {
        self.controller_at(wall_ms())
    }

    fn controller_at(&self, now: u64) -> Option<String> {
        self.alive_at(now)
            .into_iter()
            .filter(|hb| hb.roles.iter().any(|r| r == ROLE_CONTROLLER))
            .map(|hb| hb.node)
            .min()
    }

    /// Every node heard of (the last [`MAX_MEMBERS`]), with its address and state.
    pub fn nodes(&self) -> BTreeMap<String, NodeInfo> {
        let now = wall_ms();
        self.nodes
            .read()
            .values()
            .map(|hb| {
                (
                    hb.node.clone(),
                    NodeInfo {
                        address: hb.address.clone(),
                        alive: self.is_alive(hb, now),
                        leaving: hb.leaving,
                        roles: hb.roles.clone(),
                        shards: hb.shards.clone(),
                    },
                )
            })
            .collect()
    }
}

/// What a heartbeat reports of the shards held here (sizes for the kinetic planner).
pub type HeldShards = Arc<dyn Fn() -> Vec<HeldShard> + Send + Sync>;

/// This node's heartbeat, sent every `every` until dropped.
pub struct Heartbeater {
    leaving: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeater {
    /// Send one heartbeat now, then keep sending.
    pub async fn start(
        log: Arc<dyn Log>,
        topic: String,
        template: NodeHeartbeat,
        every: Duration,
        held: HeldShards,
    ) -> Result<Heartbeater> {
        send(&log, &topic, &template, false, Vec::new()).await?;
        let leaving = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (l, w) = (Arc::clone(&leaving), Arc::clone(&wake));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = w.notified() => {}
                }
                let shards = held();
                if let Err(err) =
                    send(&log, &topic, &template, l.load(Ordering::Relaxed), shards).await
                {
                    tracing::warn!(%err, "heartbeat failed");
                }
            }
        });
        Ok(Heartbeater {
            leaving,
            wake,
            task,
        })
    }

    /// Announce that this node drains (at once, then with every heartbeat).
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

impl Drop for Heartbeater {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send(
    log: &Arc<dyn Log>,
    topic: &str,
    template: &NodeHeartbeat,
    leaving: bool,
    mut shards: Vec<HeldShard>,
) -> Result<()> {
    if shards.len() > MAX_HELD_SHARDS {
        // Report the largest: the kinetic planner moves and splits by size.
        shards.sort_unstable_by_key(|s| std::cmp::Reverse((s.bytes, s.vectors)));
        shards.truncate(MAX_HELD_SHARDS);
    }
    let hb = NodeHeartbeat {
        time_ms: wall_ms(),
        leaving,
        shards,
        ..template.clone()
    };
    // The check every reader makes; what it refuses would make this node look dead.
    check_heartbeat(&hb, hb.time_ms, Duration::ZERO)
        .map_err(|err| crate::Error::Config(err.to_string()))?;
    let record = codec::to_log_record(Some(hb.node.as_bytes().to_vec()), &hb, Encoding::Json)?;
    log.append(topic, 0, vec![record]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hektor_log::embedded::EmbeddedLog;
    use hektor_log::{Cleanup, TopicSpec};
    use hektor_topics::record::MAX_CAPACITY;

    const DEAD_AFTER: Duration = Duration::from_secs(10);
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

    fn heartbeat(node: &str, time_ms: u64) -> NodeHeartbeat {
        NodeHeartbeat {
            node: node.into(),
            address: "127.0.0.1:7700".into(),
            region: "local".into(),
            roles: vec![ROLE_DATA.into(), ROLE_CONTROLLER.into()],
            capacity: 1.0,
            memory_bytes: 0,
            time_ms,
            leaving: false,
            shards: Vec::new(),
        }
    }

    /// Forged heartbeats that would each win the election (their ids sort before
    /// "node-1") if they were taken.
    fn forgeries(now: u64) -> Vec<NodeHeartbeat> {
        vec![
            NodeHeartbeat {
                address: "x".into(),
                ..heartbeat("0", now)
            },
            heartbeat("", now),
            heartbeat("1-future", now + YEAR_MS),
            NodeHeartbeat {
                capacity: f64::NAN,
                ..heartbeat("2-nan", now)
            },
            NodeHeartbeat {
                capacity: f64::INFINITY,
                ..heartbeat("3-inf", now)
            },
            NodeHeartbeat {
                capacity: -1.0,
                ..heartbeat("4-neg", now)
            },
            NodeHeartbeat {
                roles: vec![ROLE_CONTROLLER.into(); 5000],
                ..heartbeat("5-roles", now)
            },
            heartbeat(&"0".repeat(100_000), now),
        ]
    }

    async fn embedded(dir: &std::path::Path) -> Arc<dyn Log> {
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir).expect("open log"));
        log.ensure_topic(&TopicSpec {
            name: NODES_TOPIC.into(),
            partitions: 1,
            cleanup: Cleanup::Compact,
            replication: 1,
        })
        .await
        .expect("nodes topic");
        log
    }

    #[tokio::test]
    async fn forged_heartbeats_are_no_members_nor_controller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Membership::new(embedded(dir.path()).await, NODES_TOPIC.into(), DEAD_AFTER);
        let now = 1_700_000_000_000;
        for forged in forgeries(now) {
            let node = forged.node.clone();
            assert!(m.absorb(forged, now).is_err(), "forged `{node:.20}` taken");
        }
        assert!(m.absorb(heartbeat("node-1", now), now).expect("good one"));
        let alive: Vec<String> = m.alive_at(now).into_iter().map(|h| h.node).collect();
        assert_eq!(alive, ["node-1"]);
        let placeable: Vec<String> = m.placeable_at(now).into_iter().map(|n| n.id).collect();
        assert_eq!(placeable, ["node-1"]);
        assert_eq!(m.controller_at(now).as_deref(), Some("node-1"));
        assert_eq!(m.nodes.read().len(), 1);
    }

    #[tokio::test]
    async fn liveness_follows_heartbeat_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Membership::new(embedded(dir.path()).await, NODES_TOPIC.into(), DEAD_AFTER);
        let now = 1_700_000_000_000;
        let dead_after = DEAD_AFTER.as_millis() as u64;
        m.absorb(heartbeat("a", now - 1_000), now).expect("a");
        m.absorb(heartbeat("b", now - dead_after), now).expect("b");
        // A little ahead of this clock (within dead_after) is skew, and taken.
        m.absorb(heartbeat("c", now + dead_after), now).expect("c");
        // Further ahead is refused: it would look alive long after the sender stopped.
        assert!(m.absorb(heartbeat("d", now + dead_after + 1), now).is_err());
        let alive =
            |at: u64| -> Vec<String> { m.alive_at(at).into_iter().map(|h| h.node).collect() };
        assert_eq!(alive(now), ["a", "c"]);
        assert_eq!(alive(now + dead_after - 1_001), ["a", "c"]);
        assert_eq!(alive(now + dead_after - 1_000), ["c"]);
        assert_eq!(alive(now + 2 * dead_after), Vec::<String>::new());
        assert_eq!(m.controller_at(now).as_deref(), Some("a"));
        assert_eq!(m.controller_at(now + dead_after).as_deref(), Some("c"));

        // An older heartbeat of a known node does not roll it back.
        m.absorb(heartbeat("a", now - 5_000), now).expect("old a");
        assert_eq!(m.nodes.read()["a"].time_ms, now - 1_000);
        // A draining node stays alive but takes no shards.
        let leaving = NodeHeartbeat {
            leaving: true,
            ..heartbeat("a", now)
        };
        assert!(m.absorb(leaving, now).expect("leaving a"));
        let placeable: Vec<String> = m.placeable_at(now).into_iter().map(|n| n.id).collect();
        assert_eq!(placeable, ["c"]);
    }

    #[tokio::test]
    async fn a_full_membership_replaces_the_longest_dead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Membership::new(embedded(dir.path()).await, NODES_TOPIC.into(), DEAD_AFTER);
        let now = 1_700_000_000_000;
        m.absorb(heartbeat("dead-0", now - 60_000), now)
            .expect("dead");
        for i in 1..MAX_MEMBERS {
            m.absorb(heartbeat(&format!("n{i:05}"), now), now)
                .expect("alive");
        }
        assert!(m
            .absorb(heartbeat("late", now), now)
            .expect("takes the dead one's place"));
        assert!(!m.nodes.read().contains_key("dead-0"));
        assert!(
            m.absorb(heartbeat("later", now), now).is_err(),
            "all alive: no room"
        );
        assert_eq!(m.nodes.read().len(), MAX_MEMBERS);
    }

    /// The whole door: heartbeats appended to the nodes topic, read by the follower.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_follower_refuses_forged_heartbeats_from_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = embedded(dir.path()).await;
        let now = wall_ms();
        let mut records: Vec<_> = forgeries(now)
            .iter()
            .map(|hb| {
                let key = Some(hb.node.as_bytes().to_vec());
                codec::to_log_record(key.clone(), hb, Encoding::Json).unwrap_or_else(|_| {
                    // The codec writes no NaN or infinity: forge one past it, as an
                    // out-of-range JSON number.
                    let finite = NodeHeartbeat {
                        capacity: 1.0,
                        ..hb.clone()
                    };
                    let mut record =
                        codec::to_log_record(key, &finite, Encoding::Json).expect("encode");
                    let json = String::from_utf8(record.value).expect("utf-8");
                    assert!(json.contains("\"capacity\":1.0"), "{json}");
                    record.value = json
                        .replace("\"capacity\":1.0", "\"capacity\":1e999")
                        .into();
                    record
                })
            })
            .collect();
        records.push(hektor_log::LogRecord::new(
            Some(b"junk".to_vec()),
            b"{not json".to_vec(),
        ));
        let forged = records.len() as u64;
        log.append(NODES_TOPIC, 0, records).await.expect("append");
        let m = Membership::start(Arc::clone(&log), NODES_TOPIC.into(), DEAD_AFTER);
        let template = NodeHeartbeat {
            time_ms: 0,
            ..heartbeat("node-1", 0)
        };
        let held: HeldShards = Arc::new(Vec::new);
        let _me = Heartbeater::start(
            Arc::clone(&log),
            NODES_TOPIC.into(),
            template,
            Duration::from_millis(50),
            held,
        )
        .await
        .expect("a good heartbeat is sent");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while m.controller().is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(m.controller().as_deref(), Some("node-1"));
        assert_eq!(m.nodes().into_keys().collect::<Vec<_>>(), ["node-1"]);
        assert_eq!(m.placeable().len(), 1);
        assert_eq!(m.refused_heartbeats(), forged);
    }

    #[tokio::test]
    async fn a_node_does_not_send_a_heartbeat_readers_would_refuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = embedded(dir.path()).await;
        let bad = NodeHeartbeat {
            address: "http://127.0.0.1:7700/".into(),
            ..heartbeat("node-1", 0)
        };
        let held: HeldShards = Arc::new(Vec::new);
        let err = Heartbeater::start(Arc::clone(&log), NODES_TOPIC.into(), bad, DEAD_AFTER, held)
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, crate::Error::Config(_)), "{err}");
        assert_eq!(log.high_watermark(NODES_TOPIC, 0).await.expect("hw"), 0);
    }

    #[tokio::test]
    async fn a_node_holding_too_many_shards_reports_its_largest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = embedded(dir.path()).await;
        let shards: Vec<HeldShard> = (0..=MAX_HELD_SHARDS as u64)
            .map(|i| HeldShard {
                collection: "docs".into(),
                range: hektor_topics::record::RingRange {
                    start: i,
                    end: Some(i + 1),
                },
                vectors: i,
                bytes: (i + 1) % (MAX_HELD_SHARDS as u64 + 1),
            })
            .collect();
        send(&log, NODES_TOPIC, &heartbeat("node-1", 0), false, shards)
            .await
            .expect("sent, not refused");
        let read = log
            .read(NODES_TOPIC, 0, 0, 1, Duration::from_millis(100))
            .await
            .expect("read");
        let hb: NodeHeartbeat = codec::from_log_record(&read[0].record).expect("decode");
        assert_eq!(hb.shards.len(), MAX_HELD_SHARDS);
        assert!(
            hb.shards.iter().all(|s| s.bytes > 0),
            "the smallest was kept"
        );
    }

    #[tokio::test]
    async fn roles_are_checked_and_tier_roles_reach_placement() {
        use hektor_topics::record::Tier;
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_roles(&roles(&["router", "data", "controller", "planner"])).is_ok());
        assert!(check_roles(&roles(&["data", "hot", "gpu"])).is_ok());
        assert!(check_roles(&roles(&["router", "gpu"])).is_ok());
        let err = check_roles(&roles(&["data", "lukewarm"])).unwrap_err();
        assert!(err.to_string().contains("unknown role `lukewarm`"), "{err}");
        let err = check_roles(&roles(&["router", "cold"])).unwrap_err();
        assert!(err.to_string().contains("add the `data` role"), "{err}");

        let now = 1_700_000_000_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Membership::new(embedded(dir.path()).await, NODES_TOPIC.into(), DEAD_AFTER);
        let cold = NodeHeartbeat {
            roles: roles(&["data", "cold"]),
            ..heartbeat("c", now)
        };
        m.absorb(cold, now).expect("c");
        m.absorb(heartbeat("a", now), now).expect("a");
        let tiers: Vec<(String, Vec<Tier>)> = m
            .placeable_at(now)
            .into_iter()
            .map(|n| (n.id, n.tiers))
            .collect();
        assert_eq!(
            tiers,
            [
                ("a".to_string(), vec![]),
                ("c".to_string(), vec![Tier::Cold])
            ]
        );
        // The view routers and `GET /cluster` follow carries the roles.
        assert_eq!(m.nodes()["c"].roles, ["data", "cold"]);
    }

    #[test]
    fn capacity_bound_is_placements_weight_bound() {
        assert_eq!(MAX_CAPACITY, hektor_cluster::node::MAX_WEIGHT);
        let mut hb = heartbeat("n", 0);
        hb.capacity = MAX_CAPACITY;
        assert!(check_heartbeat(&hb, 0, Duration::ZERO).is_ok());
        assert!(NodeSpec::from_heartbeat(&hb).validate().is_ok());
    }
}
