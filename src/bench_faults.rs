//! `hektor bench faults`: faults injected into real node processes under a steady load,
//! and a history checker that says what the clients would have seen.
//!
//! Each scenario starts its own cluster on the broker in `HEKTOR_KAFKA_BROKERS`: three
//! processes of this binary with every role (`n1`, `n2`, `n3`; heartbeats every 250 ms,
//! dead after 3 s, see `crate::bench_nodes`), in a cluster and a collection scope of its
//! own, and a collection of dimension 16 with `"replication": 2` over a few partitions,
//! on the `exact` engine (a written vector is always its own nearest hit, so a miss is
//! the cluster's, never an index's recall). Then, open loop (`crate::open_loop`: fixed
//! schedules, latency from the intended send):
//!
//! - **writes**: slot `i` upserts the fresh id `w<i>` (tenant `t<i mod 16>`, a vector
//!   drawn from a seed) through an alive node, in turn;
//! - **reads**: slot `i` searches, through an alive node other than the writer's, for the
//!   vector of the last acknowledged write with `consistency.after` = that write's token:
//!   read-your-writes says its id must be among the hits.
//!
//! Every write (id, seed, tenant, node, token, outcome) and every read (token, node,
//! hits or error) goes into the [`History`]. The fault comes `before_s` into the load: a
//! node is killed with SIGKILL and dropped from the clients' list (requests in flight to
//! it are *cut*: a client connected to a dead router, counted apart from failures).
//!
//! - `kill-data-node`: a node that is not the controller. `recovery_s`: until the maps of
//!   every alive node no longer list it (its replicas are dropped and re-placed).
//! - `kill-controller`: the node that wrote the collection's maps (by `GET /cluster`'s
//!   `map_changes`; else the smallest id, the election rule). `recovery_s`: until another
//!   node has written a new map epoch (in its own `map_changes`, stamped after the kill)
//!   and every alive node has accepted it.
//!
//! After the load the cluster is left to settle (every alive node ready, one epoch, no
//! targets, every shard on two alive replicas, no lag), then the final state is read:
//! every acknowledged id with `GET /collections/{c}/vectors/{id}`, a full scan of the
//! collection (one search with k = 1000 per tenant: with under 1000 vectors a tenant the
//! exact engine returns them all), and the vector count of every serving shard from
//! its holders. [`check`] turns history and final state into the verdict: writes lost,
//! duplicated, phantom, token violations, failed reads.
//!
//! - `kill-broker`: the cluster runs on a private broker of its own (`scripts/kafka.sh`
//!   with `HEKTOR_KAFKA_HOME` in a temporary directory and free ports, the jars of the
//!   repo's `.kafka/libs`), killed with SIGKILL, left down `--broker-down-s`, and started
//!   again on the same data. Writes fail meanwhile (not acknowledged, so not lost; some
//!   land later); reads of what was acknowledged need no broker. `recovery_s`: from the
//!   broker answering again to the first acknowledged write sent after that.
//!
//! Not built: network partitions (Toxiproxy), slow or full disks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bench_nodes::{start_node, unique_name, wait_healthy, NodeProc};
use crate::open_loop::{self, OpenLoopReport, Schedule};

/// Vector dimension of the collection.
const DIM: usize = 16;
/// Tenants the writes cycle through (the scan searches each with k = 1000).
const TENANTS: u64 = 16;
/// Hits asked for by a read-your-writes search.
const K: usize = 10;
/// The largest k a search takes: a tenant scan is complete when it returns fewer.
const SCAN_K: usize = 1000;
/// Replicas per shard.
const REPLICATION: usize = 2;
/// How long a read waits for its token (ms).
const CONSISTENCY_MS: u64 = 10_000;
/// Every role, on every node.
const ROLES: &str = "router,data,controller,planner";
/// At most this many examples of each kind of trouble in a report.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone, clap::Args)]
pub struct FaultsArgs {
    /// Kafka bootstrap servers (required: the nodes share a log).
    #[arg(long, env = "HEKTOR_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Run only this scenario (repeatable): kill-data-node, kill-controller. Default: all.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// A short run for tests: 3 s of load before the fault, 12 s after.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object per scenario.
    #[arg(long)]
    pub json: bool,
    /// Also write the history (every write, every read, the final state) as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Writes per second (one fresh id each).
    #[arg(long, default_value_t = 20.0)]
    pub writes_per_s: f64,
    /// Read-your-writes searches per second.
    #[arg(long, default_value_t = 20.0)]
    pub reads_per_s: f64,
    /// Partitions of the collection.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Index engine of the nodes.
    #[arg(long, default_value = "exact")]
    pub engine: String,
    /// Seconds of load before the fault (default 10; 3 with --quick).
    #[arg(long)]
    pub before_s: Option<f64>,
    /// Seconds of load after the fault (default 35; 12 with --quick).
    #[arg(long)]
    pub after_s: Option<f64>,
    /// Seconds the broker stays down in kill-broker (default 10; 5 with --quick).
    #[arg(long)]
    pub broker_down_s: Option<f64>,
    /// The script that runs the private broker of kill-broker.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))]
    pub kafka_script: PathBuf,
    /// A control for the checker: send reads without their write's token. Reads may then
    /// miss the write just acknowledged, and the checker should count token violations.
    #[arg(long)]
    pub without_token: bool,
}

/// A fault: what is killed with SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    DataNode,
    Controller,
    Broker,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::DataNode, Scenario::Controller, Scenario::Broker];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::DataNode => "kill-data-node",
            Scenario::Controller => "kill-controller",
            Scenario::Broker => "kill-broker",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Scenario> {
        match name {
            "kill-data-node" => Ok(Scenario::DataNode),
            "kill-controller" => Ok(Scenario::Controller),
            "kill-broker" => Ok(Scenario::Broker),
            other => {
                anyhow::bail!("unknown scenario `{other}`: use kill-data-node, kill-controller or kill-broker")
            }
        }
    }

    /// What `recovery_s` measures.
    fn recovery_measure(self) -> &'static str {
        match self {
            Scenario::DataNode => "kill until no alive node's map lists the dead node",
            Scenario::Controller => {
                "kill until another node wrote a new map epoch and every alive node accepted it"
            }
            Scenario::Broker => {
                "broker answering again until the first write sent after that was acknowledged"
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The history and its checker.

/// A write token: partition → offset.
pub type Token = BTreeMap<u32, u64>;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (a write's 200 with its token; a read's 200 with hits).
    Ok,
    /// An error answer, or a timeout, from a node that was alive.
    Failed,
    /// The connection to a node the bench had just killed broke.
    Cut,
    /// No answer by the end of the run.
    Pending,
}

/// One upsert of one fresh id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRecord {
    pub index: u64,
    pub id: String,
    pub tenant: String,
    /// The vector is `vector_of(seed)`.
    pub seed: u64,
    /// The node it was sent to.
    pub node: String,
    /// Seconds from the start of the load.
    pub sent_s: f64,
    pub done_s: Option<f64>,
    pub outcome: Outcome,
    #[serde(default)]
    pub token: Option<Token>,
    #[serde(default)]
    pub error: Option<String>,
}

/// One read-your-writes search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadRecord {
    pub index: u64,
    /// The node it was sent to.
    pub node: String,
    /// The id of the acknowledged write whose token it carries, and whose vector it asks.
    pub target: String,
    pub token: Token,
    pub sent_s: f64,
    pub done_s: Option<f64>,
    pub outcome: Outcome,
    #[serde(default)]
    pub status: Option<u16>,
    /// The ids of the hits, best first (when it answered 200).
    #[serde(default)]
    pub hits: Vec<String>,
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Everything the clients did, in the order they sent it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub writes: Vec<WriteRecord>,
    pub reads: Vec<ReadRecord>,
}

/// What reading one id back gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Got {
    Found(Vec<f32>),
    /// 404 from every node asked.
    Missing,
    /// No definite answer (errors, timeouts).
    Error(String),
}

/// The collection once the cluster settled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// Every acknowledged id, read back.
    pub gets: BTreeMap<String, Got>,
    /// The ids of a full scan of the collection, with repeats.
    pub scan: Vec<String>,
    /// Whether the scan saw every vector (each tenant's search answered, under k hits).
    pub scan_complete: bool,
    /// The sum of the serving shards' vector counts, from their holders.
    pub stored: Option<u64>,
    /// Shards whose replicas hold different counts.
    pub replica_mismatch: u64,
}

/// What the history says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub writes_acked: u64,
    /// Acknowledged ids missing, with another vector, or unreadable at the end.
    pub writes_lost: u64,
    /// Ids present more than once (repeats in the scan, or more vectors stored than
    /// distinct ids scanned).
    pub writes_duplicated: u64,
    /// Ids in the collection that no client ever wrote.
    pub writes_phantom: u64,
    /// Acknowledged ids that read back by id but that the full scan did not find.
    pub scan_missing: u64,
    pub writes_failed: u64,
    pub writes_cut: u64,
    pub writes_pending: u64,
    pub reads: u64,
    /// Answered 200.
    pub reads_ok: u64,
    /// Errors and timeouts from alive nodes (and reads with no answer at the end).
    pub reads_failed: u64,
    pub reads_cut: u64,
    /// Reads that answered 200 without the write their token covers (read-your-writes).
    pub token_violations: u64,
    /// A few examples of each kind of trouble, as evidence.
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub violations: Vec<String>,
    pub read_errors: Vec<String>,
}

fn example(into: &mut Vec<String>, what: impl FnOnce() -> String) {
    if into.len() < EXAMPLES {
        into.push(what());
    }
}

/// Whether a stored vector is the one written (cosine collections may store it
/// normalized; ours are unit vectors already, so only rounding differs).
fn same_vector(stored: &[f32], written: &[f32]) -> bool {
    stored.len() == written.len()
        && stored
            .iter()
            .zip(written)
            .all(|(a, b)| (a - b).abs() <= 1e-4)
}

/// Check a history against the final state: `expected(seed)` is the vector a write of
/// that seed sent.
pub fn check(history: &History, last: &FinalState, expected: impl Fn(u64) -> Vec<f32>) -> Verdict {
    let mut v = Verdict::default();
    let mut scanned: BTreeMap<&str, u64> = BTreeMap::new();
    for id in &last.scan {
        *scanned.entry(id.as_str()).or_default() += 1;
    }
    for w in &history.writes {
        match w.outcome {
            Outcome::Ok => {
                v.writes_acked += 1;
                let got = last.gets.get(&w.id);
                let intact =
                    matches!(got, Some(Got::Found(vec)) if same_vector(vec, &expected(w.seed)));
                if !intact {
                    v.writes_lost += 1;
                    example(&mut v.lost, || {
                        let why = match got {
                            None => "never read back".to_owned(),
                            Some(Got::Missing) => "404".to_owned(),
                            Some(Got::Found(_)) => "another vector".to_owned(),
                            Some(Got::Error(e)) => format!("unreadable: {e}"),
                        };
                        format!(
                            "{} (acked by {} at {:.2} s, token {:?}): {why}",
                            w.id, w.node, w.sent_s, w.token
                        )
                    });
                } else if last.scan_complete && !scanned.contains_key(w.id.as_str()) {
                    v.scan_missing += 1;
                }
            }
            Outcome::Failed => v.writes_failed += 1,
            Outcome::Cut => v.writes_cut += 1,
            Outcome::Pending => v.writes_pending += 1,
        }
    }
    let repeats: u64 = scanned.values().map(|n| n - 1).sum();
    for (id, n) in scanned.iter().filter(|(_, n)| **n > 1) {
        example(&mut v.duplicated, || format!("{id} scanned {n} times"));
    }
    let distinct = scanned.len() as u64;
    let excess = match (last.scan_complete, last.stored) {
        (true, Some(stored)) if stored > distinct => {
            example(&mut v.duplicated, || {
                format!("{stored} vectors stored for {distinct} distinct ids scanned")
            });
            stored - distinct
        }
        _ => 0,
    };
    v.writes_duplicated = repeats.max(excess);
    let written: BTreeSet<&str> = history.writes.iter().map(|w| w.id.as_str()).collect();
    v.writes_phantom = scanned.keys().filter(|id| !written.contains(*id)).count() as u64;
    for r in &history.reads {
        v.reads += 1;
        match r.outcome {
            Outcome::Ok => {
                v.reads_ok += 1;
                if !r.hits.contains(&r.target) {
                    v.token_violations += 1;
                    example(&mut v.violations, || {
                        format!(
                            "read {} at {} ({:.2}–{:.2} s, epoch {:?}, token {:?}) missed {}: hits {:?}",
                            r.index,
                            r.node,
                            r.sent_s,
                            r.done_s.unwrap_or(f64::NAN),
                            r.epoch,
                            r.token,
                            r.target,
                            r.hits
                        )
                    });
                }
            }
            Outcome::Failed | Outcome::Pending => {
                v.reads_failed += 1;
                example(&mut v.read_errors, || {
                    format!(
                        "read {} at {} ({:.2} s): {:?} {}",
                        r.index,
                        r.node,
                        r.sent_s,
                        r.status,
                        r.error.as_deref().unwrap_or("no answer")
                    )
                });
            }
            Outcome::Cut => v.reads_cut += 1,
        }
    }
    v
}

/// A deterministic unit vector for a seed.
pub fn vector_of(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

// ---------------------------------------------------------------------------------------
// The load.

/// What the load's requests share.
struct Load {
    http: reqwest::Client,
    collection: String,
    began: Instant,
    /// Seeds of this run's writes start here.
    salt: u64,
    /// The nodes clients send to: (id, url).
    alive: Mutex<Vec<(String, String)>>,
    /// Urls of the nodes the bench killed.
    killed: Mutex<BTreeSet<String>>,
    history: Mutex<History>,
    /// The acknowledged write of the highest index so far.
    latest: Mutex<Option<WriteRecord>>,
    /// Reads leave their token out (`--without-token`).
    without_token: bool,
}

impl Load {
    fn now_s(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    /// An alive node for slot `index`, not `avoid` when there is another.
    fn pick(&self, index: u64, avoid: Option<&str>) -> Option<(String, String)> {
        let alive = self.alive.lock();
        if alive.is_empty() {
            return None;
        }
        let mut i = (index % alive.len() as u64) as usize;
        if alive.len() > 1 && Some(alive[i].0.as_str()) == avoid {
            i = (i + 1) % alive.len();
        }
        Some(alive[i].clone())
    }

    /// A transport error: cut when the bench killed that node, else failed.
    fn broken(&self, url: &str) -> Outcome {
        if self.killed.lock().contains(url) {
            Outcome::Cut
        } else {
            Outcome::Failed
        }
    }

    async fn write(&self, index: u64) -> bool {
        let Some((node, url)) = self.pick(index, None) else {
            return false;
        };
        let (id, tenant, seed) = (
            format!("w{index}"),
            format!("t{}", index % TENANTS),
            self.salt + index,
        );
        let at = {
            let mut h = self.history.lock();
            h.writes.push(WriteRecord {
                index,
                id: id.clone(),
                tenant: tenant.clone(),
                seed,
                node,
                sent_s: self.now_s(),
                done_s: None,
                outcome: Outcome::Pending,
                token: None,
                error: None,
            });
            h.writes.len() - 1
        };
        let body = json!({"upserts": [{"id": id, "tenant": tenant, "vector": vector_of(seed)}]});
        let sent = self
            .http
            .post(format!("{url}/collections/{}/vectors", self.collection))
            .json(&body)
            .send()
            .await;
        let (outcome, token, error) = match sent {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(b) => match serde_json::from_value::<Token>(b["token"].clone()) {
                    Ok(t) => (Outcome::Ok, Some(t), None),
                    Err(e) => (Outcome::Failed, None, Some(format!("token of {b}: {e}"))),
                },
                Err(e) => (self.broken(&url), None, Some(e.to_string())),
            },
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (Outcome::Failed, None, Some(format!("{status} {text}")))
            }
            Err(e) => (self.broken(&url), None, Some(e.to_string())),
        };
        let done_s = self.now_s();
        let record = {
            let mut h = self.history.lock();
            let w = &mut h.writes[at];
            w.done_s = Some(done_s);
            w.outcome = outcome;
            w.token = token;
            w.error = error;
            w.clone()
        };
        if outcome == Outcome::Ok {
            let mut latest = self.latest.lock();
            if latest.as_ref().is_none_or(|l| l.index < index) {
                *latest = Some(record);
            }
        }
        outcome == Outcome::Ok
    }

    async fn read(&self, index: u64) -> bool {
        // Before the first acknowledged write there is nothing to read.
        let Some(target) = self.latest.lock().clone() else {
            return true;
        };
        let Some((node, url)) = self.pick(index, Some(&target.node)) else {
            return false;
        };
        let token = target.token.clone().unwrap_or_default();
        let at = {
            let mut h = self.history.lock();
            h.reads.push(ReadRecord {
                index,
                node,
                target: target.id.clone(),
                token: token.clone(),
                sent_s: self.now_s(),
                done_s: None,
                outcome: Outcome::Pending,
                status: None,
                hits: Vec::new(),
                epoch: None,
                error: None,
            });
            h.reads.len() - 1
        };
        let mut body = json!({
            "vector": vector_of(target.seed),
            "k": K,
            "without_payload": true,
            "consistency": {"after": token, "timeout_ms": CONSISTENCY_MS},
        });
        if let Some(b) = body.as_object_mut().filter(|_| self.without_token) {
            b.remove("consistency");
        }
        let sent = self
            .http
            .post(format!("{url}/collections/{}/search", self.collection))
            .json(&body)
            .send()
            .await;
        let (outcome, status, hits, epoch, error) = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.text().await {
                    Ok(text) if status == 200 => match serde_json::from_str::<Value>(&text) {
                        Ok(b) => {
                            let hits = b["hits"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|h| h["id"].as_str().map(String::from))
                                .collect();
                            (Outcome::Ok, Some(status), hits, b["epoch"].as_u64(), None)
                        }
                        Err(e) => (
                            Outcome::Failed,
                            Some(status),
                            vec![],
                            None,
                            Some(e.to_string()),
                        ),
                    },
                    Ok(text) => (Outcome::Failed, Some(status), vec![], None, Some(text)),
                    Err(e) => (
                        self.broken(&url),
                        Some(status),
                        vec![],
                        None,
                        Some(e.to_string()),
                    ),
                }
            }
            Err(e) => (self.broken(&url), None, vec![], None, Some(e.to_string())),
        };
        let done_s = self.now_s();
        let mut h = self.history.lock();
        let r = &mut h.reads[at];
        r.done_s = Some(done_s);
        r.outcome = outcome;
        r.status = status;
        r.hits = hits;
        r.epoch = epoch;
        r.error = error;
        outcome == Outcome::Ok
    }
}

// ---------------------------------------------------------------------------------------
// Watching the cluster.

/// A collection as one node's `GET /cluster` shows it.
#[derive(Debug, Clone, Default)]
struct MapView {
    epoch: u64,
    /// Replicas of each serving shard.
    shards: Vec<Vec<String>>,
    /// Replicas of each target being built.
    targets: Vec<Vec<String>>,
    /// The maps this node wrote as controller: (epoch, time_ms, reasons).
    written: Vec<(u64, u64, Value)>,
}

impl MapView {
    fn lists(&self, node: &str) -> bool {
        self.shards
            .iter()
            .chain(&self.targets)
            .any(|r| r.iter().any(|n| n == node))
    }

    /// Settled: no targets, every shard on `replicas` nodes of `alive`.
    fn settled(&self, alive: &[String], replicas: usize) -> bool {
        self.targets.is_empty()
            && !self.shards.is_empty()
            && self
                .shards
                .iter()
                .all(|r| r.len() == replicas && r.iter().all(|n| alive.contains(n)))
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(String::from))
        .collect()
}

async fn map_view(http: &reqwest::Client, url: &str, collection: &str) -> Option<MapView> {
    let view: Value = http
        .get(format!("{url}/cluster"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let c = view["collections"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == collection)?;
    Some(MapView {
        epoch: c["epoch"].as_u64()?,
        shards: c["shards"]
            .as_array()?
            .iter()
            .map(|s| names(&s["replicas"]))
            .collect(),
        targets: c["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| names(&t["replicas"]))
            .collect(),
        written: view["map_changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["collection"] == collection)
            .filter_map(|m| {
                Some((
                    m["epoch"].as_u64()?,
                    m["time_ms"].as_u64()?,
                    m["reasons"].clone(),
                ))
            })
            .collect(),
    })
}

/// One round of views from the nodes alive then, at `t_s` after the load began.
struct Snap {
    t_s: f64,
    views: Vec<(String, Option<MapView>)>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The node that wrote the collection's newest map (by the nodes' own `map_changes`).
fn writer_of(views: &[(String, Option<MapView>)]) -> Option<String> {
    views
        .iter()
        .filter_map(|(id, v)| Some((v.as_ref()?.written.iter().map(|w| w.0).max()?, id)))
        .max()
        .map(|(_, id)| id.clone())
}

/// Whether every node alive now answers ready, sees one settled map of one epoch, and
/// its shards have no lag; `all_hold`: every node holds a shard.
async fn settled(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    collection: &str,
    all_hold: bool,
) -> bool {
    let alive: Vec<String> = nodes.iter().map(|(id, _)| id.clone()).collect();
    let replicas = REPLICATION.min(alive.len());
    let mut epochs = BTreeSet::new();
    for (id, url) in nodes {
        let ready = http
            .get(format!("{url}/ready"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let Some(view) = map_view(http, url, collection).await else {
            return false;
        };
        if !ready || !view.settled(&alive, replicas) || (all_hold && !view.lists(id)) {
            return false;
        }
        epochs.insert(view.epoch);
        let info: Option<Value> = match http
            .get(format!("{url}/collections/{collection}"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let Some(info) = info else {
            return false;
        };
        let lagging = info["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["lag"].as_u64().is_some_and(|l| l > 0));
        if lagging {
            return false;
        }
    }
    epochs.len() == 1
}

async fn wait_settled(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    collection: &str,
    all_hold: bool,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if settled(http, nodes, collection, all_hold).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------
// The final state.

/// Read `id` of `tenant` back, asking up to three alive nodes in turn.
async fn get_back(
    http: reqwest::Client,
    nodes: Arc<Vec<(String, String)>>,
    collection: Arc<str>,
    id: String,
    tenant: String,
    turn: usize,
) -> (String, Got) {
    let mut missing = 0;
    let mut last = String::new();
    for attempt in 0..3 {
        let url = &nodes[(turn + attempt) % nodes.len()].1;
        let answer = http
            .get(format!("{url}/collections/{collection}/vectors/{id}"))
            .query(&[("tenant", &tenant)])
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(b) => {
                    let vector = b["vector"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_f64().map(|x| x as f32))
                        .collect();
                    return (id, Got::Found(vector));
                }
                Err(e) => last = e.to_string(),
            },
            Ok(r) if r.status().as_u16() == 404 => {
                missing += 1;
                last = format!("404 {}", r.text().await.unwrap_or_default());
                // Two nodes agreeing is an answer.
                if missing >= 2 || nodes.len() == 1 {
                    return (id, Got::Missing);
                }
            }
            Ok(r) => {
                let status = r.status().as_u16();
                last = format!("{status} {}", r.text().await.unwrap_or_default());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (id, Got::Error(last))
}

async fn final_state(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    collection: &str,
    history: &History,
) -> anyhow::Result<FinalState> {
    anyhow::ensure!(
        !nodes.is_empty(),
        "no node left to read the final state from"
    );
    let shared = Arc::new(nodes.to_vec());
    let name: Arc<str> = Arc::from(collection);
    let mut last = FinalState::default();
    // Every acknowledged id, 16 at a time.
    let acked: Vec<&WriteRecord> = history
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .collect();
    for (c, chunk) in acked.chunks(16).enumerate() {
        let mut gets = JoinSet::new();
        for (i, w) in chunk.iter().enumerate() {
            gets.spawn(get_back(
                http.clone(),
                Arc::clone(&shared),
                Arc::clone(&name),
                w.id.clone(),
                w.tenant.clone(),
                c * 16 + i,
            ));
        }
        while let Some(done) = gets.join_next().await {
            let (id, got) = done?;
            last.gets.insert(id, got);
        }
    }
    // The scan: each tenant with k = 1000.
    last.scan_complete = true;
    for t in 0..TENANTS {
        let body = json!({"vector": vector_of(u64::MAX - t), "k": SCAN_K,
            "tenant": format!("t{t}"), "without_payload": true});
        let mut hits = None;
        for attempt in 0..3 {
            let url = &nodes[(t as usize + attempt) % nodes.len()].1;
            let answer = http
                .post(format!("{url}/collections/{collection}/search"))
                .json(&body)
                .send()
                .await;
            if let Ok(r) = answer {
                if r.status().is_success() {
                    if let Ok(b) = r.json::<Value>().await {
                        hits = Some(
                            b["hits"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|h| h["id"].as_str().map(String::from))
                                .collect::<Vec<_>>(),
                        );
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match hits {
            Some(h) => {
                last.scan_complete &= h.len() < SCAN_K;
                last.scan.extend(h);
            }
            None => last.scan_complete = false,
        }
    }
    // The serving shards' counts, from every holder.
    let mut counts: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (_, url) in nodes {
        let info: Value = http
            .get(format!("{url}/collections/{collection}"))
            .send()
            .await?
            .json()
            .await?;
        for s in info["shards"].as_array().into_iter().flatten() {
            let seen = counts.entry(s["range"].to_string()).or_default();
            if let Some(n) = s["vectors"].as_u64() {
                seen.insert(n);
            }
        }
    }
    last.replica_mismatch = counts.values().filter(|c| c.len() > 1).count() as u64;
    last.stored = counts
        .values()
        .map(|c| c.iter().next().copied())
        .sum::<Option<u64>>();
    Ok(last)
}

// ---------------------------------------------------------------------------------------
// Running a scenario.

/// One scenario's report, with its history and final state for `--history`.
struct Run {
    report: Value,
    history: History,
    last: FinalState,
}

struct Timing {
    before: Duration,
    after: Duration,
    /// How long the broker stays down (kill-broker).
    down: Duration,
}

/// What kill-broker's load schedule allows for the broker's restart.
const RESTART_ALLOWANCE: Duration = Duration::from_secs(25);

/// A Kafka broker of kill-broker's own: `scripts/kafka.sh` with a temporary
/// `HEKTOR_KAFKA_HOME` and free ports. Stopped when dropped (TERM, then KILL); only ever
/// signals the process whose command line names its home, so the shared broker is never
/// touched.
struct PrivateBroker {
    script: PathBuf,
    home: tempfile::TempDir,
    /// PLAINTEXT, SASL_SSL, KRaft controller.
    ports: [u16; 3],
}

impl PrivateBroker {
    async fn start(script: &std::path::Path) -> anyhow::Result<PrivateBroker> {
        anyhow::ensure!(
            script.exists(),
            "kill-broker runs a private broker with {} (--kafka-script), which is missing",
            script.display()
        );
        let home = tempfile::Builder::new()
            .prefix("hektor-faults-kafka-")
            .tempdir()?;
        // The jars of the repo's broker when it has them (else the script asks Maven).
        let libs = script
            .parent()
            .and_then(|d| d.parent())
            .map(|root| root.join(".kafka/libs"))
            .filter(|libs| libs.join(".complete").exists());
        if let Some(libs) = libs {
            std::os::unix::fs::symlink(&libs, home.path().join("libs"))?;
        }
        let listeners = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut ports = [0u16; 3];
        for (port, l) in ports.iter_mut().zip(&listeners) {
            *port = l.local_addr()?.port();
        }
        drop(listeners);
        let broker = PrivateBroker {
            script: script.to_owned(),
            home,
            ports,
        };
        broker.run_start().await?;
        Ok(broker)
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    /// `kafka.sh start` on this home and these ports: returns once the broker answers.
    async fn run_start(&self) -> anyhow::Result<()> {
        let run = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg("start")
            .env("HEKTOR_KAFKA_HOME", self.home.path())
            .env("HEKTOR_KAFKA_PORT", self.ports[0].to_string())
            .env("HEKTOR_KAFKA_SASL_PORT", self.ports[1].to_string())
            .env("HEKTOR_KAFKA_CONTROLLER_PORT", self.ports[2].to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(180), run)
            .await
            .context("the private broker did not start within 180 s")??;
        anyhow::ensure!(
            out.status.success(),
            "starting the private broker ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The broker's pid while it runs: the pid file's process, if its command line names
    /// this home.
    fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home.path().join("kafka.pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let home = self.home.path().to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .contains(home.as_ref())
            .then_some(pid)
    }

    fn signal(pid: u32, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// Wait (up to `within`) until the broker is gone.
    fn wait_gone(&self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while self.pid().is_some() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// SIGKILL.
    fn kill(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("the private broker is not running")?;
        Self::signal(pid, "-KILL");
        anyhow::ensure!(
            self.wait_gone(Duration::from_secs(5)),
            "the private broker (pid {pid}) outlived SIGKILL"
        );
        Ok(())
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            Self::signal(pid, "-TERM");
            if !self.wait_gone(Duration::from_secs(15)) {
                Self::signal(pid, "-KILL");
                self.wait_gone(Duration::from_secs(5));
            }
        }
    }
}

/// The first time (s after the kill) a snapshot after `kill_s` satisfies `ok`.
fn first_after(snaps: &[Snap], kill_s: f64, ok: impl Fn(&Snap) -> bool) -> Option<f64> {
    snaps
        .iter()
        .filter(|s| s.t_s >= kill_s)
        .find(|s| ok(s))
        .map(|s| s.t_s - kill_s)
}

fn all_views(s: &Snap) -> Option<Vec<&MapView>> {
    s.views.iter().map(|(_, v)| v.as_ref()).collect()
}

async fn run_scenario(
    args: &FaultsArgs,
    brokers: Option<&str>,
    scenario: Scenario,
    timing: &Timing,
) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir()?;
    let name = unique_name(&format!("faults-{}", scenario.name()));
    let flags = vec!["--engine".to_owned(), args.engine.clone()];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(CONSISTENCY_MS + 2_000))
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    // kill-broker's own broker: stopped when dropped, after the nodes.
    let broker = match scenario {
        Scenario::Broker => Some(PrivateBroker::start(&args.kafka_script).await?),
        _ => None,
    };
    let brokers = match &broker {
        Some(b) => b.brokers(),
        None => brokers.context("no broker")?.to_owned(),
    };
    let brokers = brokers.as_str();
    // The processes, killed when dropped (on every path out of here).
    let mut procs: BTreeMap<String, NodeProc> = BTreeMap::new();
    for id in ["n1", "n2", "n3"] {
        procs.insert(
            id.to_owned(),
            start_node(id, ROLES, brokers, &name, tmp.path(), &flags)?,
        );
    }
    let nodes: Vec<(String, String)> = procs
        .iter()
        .map(|(id, p)| (id.clone(), p.url.clone()))
        .collect();
    for (_, url) in &nodes {
        wait_healthy(&http, url).await?;
    }
    // Let the heartbeats meet so the first map places shards on all three.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let created = http
        .put(format!("{}/collections/{name}", nodes[0].1))
        .json(&json!({"dimension": DIM, "distance": "cosine",
            "partitions": args.partitions, "replication": REPLICATION}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "create: {}",
        created.text().await?
    );
    let placed = wait_settled(&http, &nodes, &name, true, Duration::from_secs(60)).await;
    anyhow::ensure!(
        placed,
        "the collection never settled on three nodes: {:?}",
        map_view(&http, &nodes[0].1, &name).await
    );
    let mut views = Vec::new();
    for (id, url) in &nodes {
        views.push((id.clone(), map_view(&http, url, &name).await));
    }
    let controller = writer_of(&views).unwrap_or_else(|| nodes[0].0.clone());
    let epoch_before = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().map(|v| v.epoch))
        .max();
    let victim = match scenario {
        Scenario::Controller => controller.clone(),
        Scenario::DataNode => nodes
            .iter()
            .rev()
            .map(|(id, _)| id)
            .find(|id| **id != controller)
            .cloned()
            .context("no node besides the controller")?,
        Scenario::Broker => "broker".to_owned(),
    };
    let victim_url = procs.get(&victim).map(|p| p.url.clone());
    let victim_shards = victim_url.as_ref().and_then(|_| {
        let view = views.iter().find_map(|(_, v)| v.as_ref())?;
        Some(view.shards.iter().filter(|r| r.contains(&victim)).count())
    });

    // The load.
    let began = Instant::now();
    let load = Arc::new(Load {
        http: http.clone(),
        collection: name.clone(),
        began,
        salt: wall_ms() << 20,
        alive: Mutex::new(nodes.clone()),
        killed: Mutex::new(BTreeSet::new()),
        history: Mutex::new(History::default()),
        latest: Mutex::new(None),
        without_token: args.without_token,
    });
    let duration = match scenario {
        Scenario::Broker => timing.before + timing.down + RESTART_ALLOWANCE + timing.after,
        _ => timing.before + timing.after,
    };
    let schedule = |rate: f64| {
        Schedule::new(rate, duration, 8)
            .with_timeout(Duration::from_millis(CONSISTENCY_MS + 5_000))
            .starting_at(began)
    };
    let writes = {
        let load = Arc::clone(&load);
        tokio::spawn(open_loop::run(schedule(args.writes_per_s), move |slot| {
            let load = Arc::clone(&load);
            async move { load.write(slot.index).await }
        }))
    };
    let reads = {
        let load = Arc::clone(&load);
        tokio::spawn(open_loop::run(schedule(args.reads_per_s), move |slot| {
            let load = Arc::clone(&load);
            async move { load.read(slot.index).await }
        }))
    };
    // The watcher: every alive node's view every 200 ms, until told to stop (and at most
    // ten minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let snaps: Arc<Mutex<Vec<Snap>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (load, stop, snaps, name) = (
            Arc::clone(&load),
            Arc::clone(&stop),
            Arc::clone(&snaps),
            name.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && load.began.elapsed() < Duration::from_secs(600) {
                let t_s = load.now_s();
                let alive = load.alive.lock().clone();
                let mut views = Vec::new();
                for (id, url) in &alive {
                    views.push((id.clone(), map_view(&load.http, url, &name).await));
                }
                snaps.lock().push(Snap { t_s, views });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The fault.
    tokio::time::sleep_until(began + timing.before).await;
    let kill_s = load.now_s();
    let kill_wall = wall_ms();
    // kill-broker: (restart took, broker back at), in seconds of the load.
    let mut restarted: Option<(f64, f64)> = None;
    match (&broker, victim_url) {
        (Some(broker), _) => {
            broker.kill()?;
            tokio::time::sleep(timing.down).await;
            let t = load.now_s();
            broker.run_start().await.context("restarting the broker")?;
            let back = load.now_s();
            restarted = Some((back - t, back));
        }
        (None, Some(url)) => {
            load.alive.lock().retain(|(id, _)| *id != victim);
            load.killed.lock().insert(url);
            drop(procs.remove(&victim)); // SIGKILL, then reaped
        }
        (None, None) => anyhow::bail!("no node {victim} to kill"),
    }
    let survivors: Vec<(String, String)> = load.alive.lock().clone();

    let writes = writes.await??;
    let reads = reads.await??;
    let load_s = load.now_s();
    let settle_for = if args.quick { 45 } else { 120 };
    let calm = wait_settled(
        &http,
        &survivors,
        &name,
        false,
        Duration::from_secs(settle_for),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    // One last look, so a cluster that settled after the watcher's last round counts.
    let mut views = Vec::new();
    for (id, url) in &survivors {
        views.push((id.clone(), map_view(&http, url, &name).await));
    }
    snaps.lock().push(Snap {
        t_s: load.now_s(),
        views,
    });
    let history = load.history.lock().clone();
    let last = final_state(&http, &survivors, &name, &history).await?;
    let verdict = check(&history, &last, vector_of);

    // What the watcher saw.
    let snaps = std::mem::take(&mut *snaps.lock());
    let node_killed = broker.is_none();
    let unlisted_s = first_after(&snaps, kill_s, |s| {
        all_views(s).is_some_and(|vs| vs.iter().all(|v| !v.lists(&victim)))
    })
    .filter(|_| node_killed);
    let alive_ids: Vec<String> = survivors.iter().map(|(id, _)| id.clone()).collect();
    let rereplicated_s = first_after(&snaps, kill_s, |s| {
        all_views(s).is_some_and(|vs| {
            vs.iter()
                .all(|v| v.settled(&alive_ids, REPLICATION.min(alive_ids.len())))
        })
    })
    .filter(|_| node_killed);
    // A map written after the kill by a node that is not the victim, accepted by all.
    let new_writer = |s: &Snap| -> Option<(String, u64)> {
        let vs = all_views(s)?;
        let (id, epoch) = s
            .views
            .iter()
            .filter(|(id, _)| *id != victim)
            .filter_map(|(id, v)| {
                let e = v
                    .as_ref()?
                    .written
                    .iter()
                    .filter(|w| w.1 >= kill_wall)
                    .map(|w| w.0)
                    .min()?;
                Some((id.clone(), e))
            })
            .min_by_key(|x| x.1)?;
        vs.iter().all(|v| v.epoch >= epoch).then_some((id, epoch))
    };
    let new_map_s = first_after(&snaps, kill_s, |s| new_writer(s).is_some());
    let controller_after = snaps
        .iter()
        .rev()
        .find_map(|s| writer_of(&s.views))
        .or_else(|| {
            snaps
                .iter()
                .filter(|s| s.t_s >= kill_s)
                .find_map(|s| new_writer(s).map(|w| w.0))
        });
    let epoch_after = snaps.last().and_then(|s| {
        s.views
            .iter()
            .filter_map(|(_, v)| v.as_ref().map(|v| v.epoch))
            .max()
    });
    // The longest time without an acknowledgement, and the first one for a write sent
    // once the broker was back.
    let mut acked_at: Vec<f64> = history
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .filter_map(|w| w.done_s)
        .collect();
    acked_at.sort_by(f64::total_cmp);
    let write_gap_s = acked_at.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let writes_back_s = restarted.and_then(|(_, back)| {
        history
            .writes
            .iter()
            .filter(|w| w.outcome == Outcome::Ok && w.sent_s >= back)
            .filter_map(|w| w.done_s)
            .min_by(f64::total_cmp)
            .map(|done| done - back)
    });
    // The maps written since the kill, by whom and why (from the last look).
    let mut maps_since: Vec<(u64, Value)> = snaps
        .last()
        .into_iter()
        .flat_map(|s| &s.views)
        .filter_map(|(id, v)| Some((id, v.as_ref()?)))
        .flat_map(|(id, v)| {
            v.written
                .iter()
                .filter(|w| w.1 >= kill_wall)
                .map(move |(epoch, at, reasons)| {
                    let after_s = (*at - kill_wall) as f64 / 1e3;
                    let seen = json!({"epoch": epoch, "writer": id, "after_kill_s": after_s,
                        "reasons": reasons});
                    (*epoch, seen)
                })
        })
        .collect();
    maps_since.sort_by_key(|m| m.0);
    let maps_since: Vec<Value> = maps_since.into_iter().map(|m| m.1).collect();
    let recovery_s = match scenario {
        Scenario::DataNode => unlisted_s,
        Scenario::Controller => new_map_s,
        Scenario::Broker => writes_back_s,
    };
    let (wp, rp) = (writes.percentiles(), reads.percentiles());
    let rate = |r: &OpenLoopReport| r.achieved_rate();
    let mut report = json!({
        "bench": "faults",
        "scenario": scenario.name(),
        "writes_acked": verdict.writes_acked,
        "writes_lost": verdict.writes_lost,
        "writes_duplicated": verdict.writes_duplicated,
        "reads": verdict.reads,
        "reads_failed": verdict.reads_failed,
        "token_violations": verdict.token_violations,
        "recovery_s": recovery_s,
        "recovery_measure": scenario.recovery_measure(),
        "victim": victim,
        "victim_shards": victim_shards,
        "controller_before": controller,
        "controller_after": controller_after,
        "epoch_before": epoch_before,
        "epoch_after": epoch_after,
        "unlisted_s": unlisted_s,
        "rereplicated_s": rereplicated_s,
        "new_map_s": new_map_s,
    });
    let more = json!({
        "settled": calm,
        "write_gap_s": write_gap_s,
        "maps_since_kill": maps_since,
        "broker_down_s": restarted.map(|_| timing.down.as_secs_f64()),
        "broker_restart_s": restarted.map(|r| r.0),
        "broker_back_at_s": restarted.map(|r| r.1),
        "writes_failed": verdict.writes_failed,
        "writes_cut": verdict.writes_cut,
        "writes_pending": verdict.writes_pending,
        "writes_phantom": verdict.writes_phantom,
        "scan_missing": verdict.scan_missing,
        "scan_complete": last.scan_complete,
        "vectors_stored": last.stored,
        "replica_mismatch": last.replica_mismatch,
        "reads_ok": verdict.reads_ok,
        "reads_cut": verdict.reads_cut,
        "write_qps": rate(&writes),
        "read_qps": rate(&reads),
        "write_p99_ms": wp.p99_ms,
        "write_max_ms": wp.max_ms,
        "read_p50_ms": rp.p50_ms,
        "read_p99_ms": rp.p99_ms,
        "read_max_ms": rp.max_ms,
        "open_loop": true,
        "kill_at_s": kill_s,
        "load_s": load_s,
        "partitions": args.partitions,
        "replication": REPLICATION,
        "engine": args.engine,
        "quick": args.quick,
        "without_token": args.without_token,
        "examples": {
            "lost": verdict.lost,
            "duplicated": verdict.duplicated,
            "token_violations": verdict.violations,
            "read_errors": verdict.read_errors,
        },
    });
    if let (Some(to), Value::Object(more)) = (report.as_object_mut(), more) {
        to.extend(more);
    }
    drop(procs);
    Ok(Run {
        report,
        history,
        last,
    })
}

fn append_history(path: &PathBuf, scenario: Scenario, run: &Run) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let name = scenario.name();
    for w in &run.history.writes {
        writeln!(
            out,
            "{}",
            json!({"scenario": name, "kind": "write", "write": w})
        )?;
    }
    for r in &run.history.reads {
        writeln!(
            out,
            "{}",
            json!({"scenario": name, "kind": "read", "read": r})
        )?;
    }
    writeln!(
        out,
        "{}",
        json!({"scenario": name, "kind": "final", "final": run.last, "report": run.report})
    )?;
    out.flush()?;
    Ok(())
}

fn print(report: &Value, json: bool) {
    if json {
        println!("{report}");
        return;
    }
    let secs = |k: &str| {
        report[k]
            .as_f64()
            .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"))
    };
    println!(
        "{}: killed {} — {} writes acked, {} lost, {} duplicated; {} reads, {} failed, {} token \
         violations; recovery {} ({}); read p99 {:.1} ms",
        report["scenario"].as_str().unwrap_or(""),
        report["victim"].as_str().unwrap_or(""),
        report["writes_acked"],
        report["writes_lost"],
        report["writes_duplicated"],
        report["reads"],
        report["reads_failed"],
        report["token_violations"],
        secs("recovery_s"),
        report["recovery_measure"].as_str().unwrap_or(""),
        report["read_p99_ms"].as_f64().unwrap_or(0.0),
    );
}

async fn run_all(args: FaultsArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let brokers = args.brokers.clone();
    anyhow::ensure!(
        brokers.is_some() || scenarios.iter().all(|s| *s == Scenario::Broker),
        "bench faults needs Kafka: --brokers HOST:PORT or HEKTOR_KAFKA_BROKERS (start one with \
         `bash scripts/kafka.sh start`)"
    );
    anyhow::ensure!(
        args.writes_per_s > 0.0 && args.reads_per_s > 0.0,
        "--writes-per-s and --reads-per-s must be positive"
    );
    let (before, after) = if args.quick {
        (3.0, 12.0)
    } else {
        (10.0, 35.0)
    };
    let down = if args.quick { 5.0 } else { 10.0 };
    let timing = Timing {
        before: Duration::from_secs_f64(args.before_s.unwrap_or(before).max(0.5)),
        after: Duration::from_secs_f64(args.after_s.unwrap_or(after).max(1.0)),
        down: Duration::from_secs_f64(args.broker_down_s.unwrap_or(down).max(0.0)),
    };
    if let Some(path) = &args.history {
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    }
    for scenario in scenarios {
        let run = run_scenario(&args, brokers.as_deref(), scenario, &timing)
            .await
            .with_context(|| format!("scenario {}", scenario.name()))?;
        if let Some(path) = &args.history {
            append_history(path, scenario, &run)?;
        }
        print(&run.report, args.json);
    }
    Ok(())
}

/// `hektor bench faults`. Interrupted (SIGINT, SIGTERM), it stops its nodes first.
pub async fn run(args: FaultsArgs) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        done = run_all(args) => done,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the nodes were stopped"),
        _ = term.recv() => anyhow::bail!("terminated; the nodes were stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(index: u64, outcome: Outcome) -> WriteRecord {
        WriteRecord {
            index,
            id: format!("w{index}"),
            tenant: format!("t{}", index % TENANTS),
            seed: 1000 + index,
            node: "n1".into(),
            sent_s: index as f64,
            done_s: Some(index as f64 + 0.01),
            outcome,
            token: (outcome == Outcome::Ok).then(|| Token::from([(0, index)])),
            error: None,
        }
    }

    fn read(index: u64, target: u64, outcome: Outcome, hits: &[&str]) -> ReadRecord {
        ReadRecord {
            index,
            node: "n2".into(),
            target: format!("w{target}"),
            token: Token::from([(0, target)]),
            sent_s: index as f64,
            done_s: Some(index as f64 + 0.01),
            outcome,
            status: (outcome == Outcome::Ok).then_some(200),
            hits: hits.iter().map(|h| h.to_string()).collect(),
            epoch: Some(3),
            error: None,
        }
    }

    /// The final state of a cluster that kept exactly the acknowledged writes.
    fn faithful(h: &History) -> FinalState {
        let acked: Vec<&WriteRecord> = h
            .writes
            .iter()
            .filter(|w| w.outcome == Outcome::Ok)
            .collect();
        FinalState {
            gets: acked
                .iter()
                .map(|w| (w.id.clone(), Got::Found(vector_of(w.seed))))
                .collect(),
            scan: acked.iter().map(|w| w.id.clone()).collect(),
            scan_complete: true,
            stored: Some(acked.len() as u64),
            replica_mismatch: 0,
        }
    }

    fn clean_history() -> History {
        History {
            writes: (0..5).map(|i| write(i, Outcome::Ok)).collect(),
            reads: vec![
                read(0, 0, Outcome::Ok, &["w0", "w3"]),
                read(1, 2, Outcome::Ok, &["w1", "w2"]),
            ],
        }
    }

    #[test]
    fn a_faithful_cluster_passes() {
        let h = clean_history();
        let v = check(&h, &faithful(&h), vector_of);
        assert_eq!(
            (v.writes_acked, v.writes_lost, v.writes_duplicated),
            (5, 0, 0)
        );
        assert_eq!(
            (v.reads, v.reads_ok, v.reads_failed, v.token_violations),
            (2, 2, 0, 0)
        );
        assert_eq!((v.writes_phantom, v.scan_missing), (0, 0));
        assert!(v.lost.is_empty() && v.violations.is_empty() && v.duplicated.is_empty());
    }

    #[test]
    fn a_missing_or_altered_acked_write_is_lost() {
        let h = clean_history();
        let mut last = faithful(&h);
        last.gets.insert("w1".into(), Got::Missing);
        last.gets.insert("w2".into(), Got::Found(vector_of(7)));
        last.gets
            .insert("w3".into(), Got::Error("503 no replica".into()));
        last.gets.remove("w4");
        let v = check(&h, &last, vector_of);
        assert_eq!(v.writes_lost, 4);
        assert_eq!(v.lost.len(), 4);
        assert!(
            v.lost[0].contains("w1") && v.lost[0].contains("404"),
            "{:?}",
            v.lost
        );
        assert!(v.lost[1].contains("another vector"), "{:?}", v.lost);
    }

    #[test]
    fn unacknowledged_writes_may_land_or_not() {
        let mut h = clean_history();
        h.writes.push(write(5, Outcome::Failed));
        h.writes.push(write(6, Outcome::Cut));
        h.writes.push(write(7, Outcome::Pending));
        let mut last = faithful(&h);
        // w6 landed although its answer was cut: not lost, not a phantom, not a duplicate.
        last.scan.push("w6".into());
        last.stored = Some(6);
        let v = check(&h, &last, vector_of);
        assert_eq!((v.writes_failed, v.writes_cut, v.writes_pending), (1, 1, 1));
        assert_eq!(
            (v.writes_lost, v.writes_duplicated, v.writes_phantom),
            (0, 0, 0)
        );
    }

    #[test]
    fn duplicates_are_flagged_from_the_scan_or_the_counts() {
        let h = clean_history();
        let mut last = faithful(&h);
        last.scan.push("w2".into());
        let v = check(&h, &last, vector_of);
        assert_eq!(v.writes_duplicated, 1);
        assert!(v.duplicated[0].contains("w2 scanned 2 times"));

        // The same id held by two shards: the scan may show it once, the counts do not.
        let mut last = faithful(&h);
        last.stored = Some(7);
        assert_eq!(check(&h, &last, vector_of).writes_duplicated, 2);
        // An incomplete scan proves nothing from the counts.
        last.scan_complete = false;
        assert_eq!(check(&h, &last, vector_of).writes_duplicated, 0);
    }

    #[test]
    fn ids_nobody_wrote_are_phantoms_and_scan_gaps_are_counted() {
        let h = clean_history();
        let mut last = faithful(&h);
        last.scan.retain(|id| id != "w3");
        last.scan.push("x9".into());
        let v = check(&h, &last, vector_of);
        assert_eq!((v.writes_phantom, v.scan_missing, v.writes_lost), (1, 1, 0));
    }

    #[test]
    fn a_read_that_misses_its_token_write_is_a_violation() {
        let mut h = clean_history();
        h.reads.push(read(2, 4, Outcome::Ok, &["w3", "w1"]));
        h.reads.push(read(3, 4, Outcome::Ok, &[]));
        let v = check(&h, &faithful(&h), vector_of);
        assert_eq!(v.token_violations, 2);
        assert!(v.violations[0].contains("missed w4"), "{:?}", v.violations);
        assert_eq!(v.reads_failed, 0);
    }

    #[test]
    fn errors_fail_reads_but_cut_connections_do_not() {
        let mut h = clean_history();
        let mut failed = read(2, 1, Outcome::Failed, &[]);
        failed.status = Some(503);
        failed.error = Some("no replica of shard 2 answered".into());
        h.reads.push(failed);
        h.reads.push(read(3, 1, Outcome::Pending, &[]));
        h.reads.push(read(4, 1, Outcome::Cut, &[]));
        let v = check(&h, &faithful(&h), vector_of);
        assert_eq!((v.reads, v.reads_failed, v.reads_cut), (5, 2, 1));
        assert_eq!(v.token_violations, 0);
        assert!(v.read_errors[0].contains("503"), "{:?}", v.read_errors);
    }

    #[test]
    fn histories_round_trip_as_json_lines() {
        let h = clean_history();
        let text = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
        let last = faithful(&h);
        let back: FinalState =
            serde_json::from_str(&serde_json::to_string(&last).unwrap()).unwrap();
        assert_eq!(back, last);
    }

    #[test]
    fn scenarios_parse() {
        assert_eq!(
            Scenario::parse("kill-data-node").unwrap(),
            Scenario::DataNode
        );
        assert_eq!(
            Scenario::parse("kill-controller").unwrap(),
            Scenario::Controller
        );
        assert_eq!(Scenario::parse("kill-broker").unwrap(), Scenario::Broker);
        assert!(Scenario::parse("nope").is_err());
    }

    #[test]
    fn vectors_are_unit_and_deterministic() {
        let (a, b) = (vector_of(42), vector_of(42));
        assert_eq!(a, b);
        assert_eq!(a.len(), DIM);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_ne!(vector_of(43), a);
    }
}
