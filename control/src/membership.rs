//! Membership: heartbeats on the `hektor.nodes` topic and the view of who is alive.
//!
//! A node appends a [`NodeHeartbeat`] (JSON, keyed by its id, so compaction keeps the
//! last one) every `heartbeat_every`; when it drains it sets `leaving`. Every node follows
//! the topic from its start and judges a node alive while its last heartbeat is younger
//! than `dead_after` (heartbeat times are the sender's wall clock: nodes' clocks must
//! agree to well within `dead_after`, as NTP gives).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hektor_cluster::NodeSpec;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::log::Log;
use hektor_topics::record::{HeldShard, NodeHeartbeat};
use hektor_topics::topic::NODES_TOPIC;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::{NodeInfo, Result};

/// The role that makes a node hold shards.
pub const ROLE_DATA: &str = "data";
/// The role that makes a node eligible to run the controller.
pub const ROLE_CONTROLLER: &str = "controller";

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

/// The nodes of the cluster, from their heartbeats.
pub struct Membership {
    log: Arc<dyn Log>,
    topic: String,
    dead_after: Duration,
    nodes: RwLock<BTreeMap<String, NodeHeartbeat>>,
    /// Bumped whenever a node appears, changes or is judged dead.
    version: watch::Sender<u64>,
}

impl Membership {
    /// Follow the nodes topic `topic` in the background (see [`nodes_topic`]).
    pub fn start(log: Arc<dyn Log>, topic: String, dead_after: Duration) -> Arc<Membership> {
        let m = Arc::new(Membership {
            log,
            topic,
            dead_after,
            nodes: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
        });
        let follower = Arc::clone(&m);
        tokio::spawn(async move { follower.follow().await });
        m
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
                        match codec::from_log_record::<NodeHeartbeat>(&stored.record) {
                            Ok(hb) => {
                                let mut nodes = self.nodes.write();
                                let newer = nodes
                                    .get(&hb.node)
                                    .is_none_or(|old| old.time_ms <= hb.time_ms);
                                if newer {
                                    let changed = nodes.get(&hb.node).is_none_or(|old| {
                                        old.leaving != hb.leaving
                                            || old.address != hb.address
                                            || old.capacity != hb.capacity
                                            || old.roles != hb.roles
                                    });
                                    nodes.insert(hb.node.clone(), hb);
                                    if changed {
                                        self.version.send_modify(|v| *v += 1);
                                    }
                                }
                            }
                            Err(err) => {
                                tracing::debug!(%err, offset = stored.offset, "skipping unreadable heartbeat")
                            }
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

    /// Changes whenever membership does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn is_alive(&self, hb: &NodeHeartbeat, now: u64) -> bool {
        now.saturating_sub(hb.time_ms) < self.dead_after.as_millis() as u64
    }

    /// The last heartbeat of every node alive now, by id.
    pub fn alive(&self) -> Vec<NodeHeartbeat> {
        let now = wall_ms();
        self.nodes
            .read()
            .values()
            .filter(|hb| self.is_alive(hb, now))
            .cloned()
            .collect()
    }

    /// Alive data nodes that are not draining: where shards may go.
    pub fn placeable(&self) -> Vec<NodeSpec> {
        self.alive()
            .iter()
            .filter(|hb| !hb.leaving && hb.roles.iter().any(|r| r == ROLE_DATA))
            .map(NodeSpec::from_heartbeat)
            .collect()
    }

    /// The controller: the alive node with the controller role and the smallest id.
    pub fn controller(&self) -> Option<String> {
        self.alive()
            .into_iter()
            .filter(|hb| hb.roles.iter().any(|r| r == ROLE_CONTROLLER))
            .map(|hb| hb.node)
            .min()
    }

    /// Every node ever heard of, with its address and state.
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
    shards: Vec<HeldShard>,
) -> Result<()> {
    let hb = NodeHeartbeat {
        time_ms: wall_ms(),
        leaving,
        shards,
        ..template.clone()
    };
    let record = codec::to_log_record(Some(hb.node.as_bytes().to_vec()), &hb, Encoding::Json)?;
    log.append(topic, 0, vec![record]).await?;
    Ok(())
}
