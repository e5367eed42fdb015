//! `hektor-bench faults`: faults injected into real node processes under a steady load,
//! and a history checker that says what the clients would have seen.
//!
//! Each scenario starts its own cluster on the broker in `HEKTOR_KAFKA_BROKERS`: three
//! `hektor` processes with every role (`n1`, `n2`, `n3`; heartbeats every 250 ms,
//! dead after 3 s, see `crate::nodes`), in a cluster and a collection scope of its
//! own, and a collection of dimension 16 with `"replication": 2` over a few partitions,
//! on the `exact` engine (a written vector is always its own nearest hit, so a miss is
//! the cluster's, never an index's recall). Then, open loop (`crate::open_loop`: fixed
//! schedules, latency from the intended send):
//!
//! - **writes**: slot `i` upserts the fresh id `w<i>` (tenant `t<i mod 16>`, a vector
//!   drawn from a seed) through an alive node, in turn;
//! - **reads**: slot `i` belongs to reader session `i mod --sessions`; it lists, through
//!   an alive node other than the writer's, the tenant of the last acknowledged write
//!   (a search for that write's vector with the tenant's filter and k = 1000: under 1000
//!   vectors a tenant, the exact engine returns them all), with `consistency.after` = the
//!   session's token: the merge (per partition, the larger offset) of every token the
//!   session has been handed, this write's included. A client keeps one token per
//!   session this way, and it is what hektor's consistency promise is stated in.
//!
//! Every write (id, seed, tenant, node, token, outcome) and every read (token, node,
//! hits or error) goes into the [`History`]. Both schedules have enough workers that
//! requests a fault holds up never hold the next ones back. The fault comes `before_s`
//! into the load. In the kill scenarios a node is killed with SIGKILL and dropped from
//! the clients' list (requests in flight to it are *cut*: a client connected to a dead
//! router, counted apart from failures).
//!
//! - `kill-data-node`: a node that is not the controller. `recovery_s`: until the maps of
//!   every alive node no longer list it (its replicas are dropped and re-placed).
//! - `kill-controller`: the node that wrote the collection's maps (by `GET /cluster`'s
//!   `map_changes`; else the smallest id, the election rule). `recovery_s`: until another
//!   node has written a new map epoch (in its own `map_changes`, stamped after the kill)
//!   and every alive node has accepted it.
//! - `kill-broker`: the cluster runs on a private broker of its own (`scripts/kafka.sh`
//!   with `HEKTOR_KAFKA_HOME` in a temporary directory and free ports, the jars of the
//!   repo's `.kafka/libs`), killed with SIGKILL, left down `--broker-down-s`, and started
//!   again on the same data. Writes fail meanwhile (not acknowledged, so not lost; some
//!   land later); reads of what was acknowledged need no broker. `recovery_s`: from the
//!   broker answering again to the first acknowledged write sent after that.
//!
//! Faults that kill nothing leave every node in the clients' list; what fails, fails
//! (a failed request is not acknowledged, so a write that fails is not lost, and may
//! land). The fault lasts `--fault-s`, then is healed; `recovery_s` runs from the heal
//! until the cluster is whole again — all three nodes ready, one map epoch, every shard
//! on two of them, no targets — and no request sent from then on fails (null when that
//! never happened before the load ended and the cluster settled).
//!
//! - `partition-node`: every node advertises (`--advertise`) a Toxiproxy proxy of its
//!   own to its peers, so node↔node calls (a router's shard searches and gets) go
//!   through proxies. The victim (`n1`, the replica its peers ask first when none is
//!   busier; `--victim`) has its proxy cut (`--cut`: by default a black hole, where
//!   connections stay open and carry nothing, as behind a switch that drops packets).
//!   Its peers cannot reach it; it still reaches them (a node has one advertised
//!   address, so one proxy: a peer cannot be cut from it alone), and its heartbeats
//!   travel through Kafka, so the cluster still counts it alive: the data path and the
//!   failure detector disagree.
//! - `partition-broker`: the cluster runs on a private broker (as kill-broker) with an
//!   extra listener that advertises a proxy's address; the victim (`n3`; `--victim`),
//!   started with that proxy as its bootstrap server, reaches the broker only through
//!   it (writes, heartbeats, shard consumers, plan and catalog readers), and the proxy
//!   is cut. The others see its heartbeats stop, drop it from the maps and
//!   re-replicate; it sees the others stop.
//! - `full-disk`: the victim's (`n3`; `--victim`) data directory is a tmpfs of its own
//!   (`mount -t tmpfs`, so the bench must run as root; without the permission the
//!   scenario fails and says why), shrunk at the fault to what it uses plus
//!   `--disk-headroom-kib` (0), so that its shards' writes fill it during the load, and
//!   grown back at the heal. Writes go to Kafka, not to the disk, so writes keep being
//!   acknowledged; the victim's shards stop applying and the node should say so
//!   (`/health` 503) rather than drop or corrupt anything, and catch up once there is
//!   room.
//!
//! After the load the cluster is left to settle (every alive node ready, one epoch, no
//! targets, every shard on two alive replicas, no lag) and every holder to apply every
//! acknowledged write (its shards' `next_offset` past the merge of their tokens), then
//! the final state is read:
//! every acknowledged id with `GET /collections/{c}/vectors/{id}`, a full scan of the
//! collection (one search with k = 1000 per tenant: with under 1000 vectors a tenant the
//! exact engine returns them all; with `consistency.after` = the merge of every
//! acknowledged token, so a replica still applying the last writes is waited for, not
//! taken for one that lost them), and the vector count of every serving shard from its
//! holders (read again for up to 10 s until they agree). [`check`] turns history and
//! final state into the verdict: writes lost, duplicated, phantom, token violations,
//! monotonic-read violations, failed reads:
//!
//! - a **token violation** is a read that answered without a write its token covers:
//!   its target, or any acknowledged write of its tenant whose offset the token covers
//!   (read-your-writes);
//! - a **monotonic violation** is a read that saw an older state than an earlier read
//!   of its session and tenant had (one that had answered before it was sent): an id
//!   that earlier read returned is missing (nothing is ever deleted), or an
//!   acknowledged write that earlier read's token covered is (monotonic reads).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::nodes::{start_node, unique_name, wait_healthy, NodeProc};
use crate::open_loop::{self, OpenLoopReport, Schedule};

/// Vector dimension of the collection.
const DIM: usize = 16;
/// Tenants the writes cycle through (the scan searches each with k = 1000).
const TENANTS: u64 = 16;
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
    /// Run only this scenario (repeatable): kill-data-node, kill-controller, kill-broker,
    /// partition-node, partition-broker, full-disk. Default: all.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// A short run for tests: 3 s of load before the fault, 12 s after (after the heal
    /// where it heals: a partition lasts 5 s, a full disk 15 s).
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
    /// Seconds of load after the fault, or after its heal where it heals (default 35; 12
    /// with --quick).
    #[arg(long)]
    pub after_s: Option<f64>,
    /// Seconds the broker stays down in kill-broker (default 10; 5 with --quick).
    #[arg(long)]
    pub broker_down_s: Option<f64>,
    /// Seconds a partition or a full disk lasts before it is healed (default: a partition
    /// 10, 5 with --quick; a full disk 30, 15 with --quick).
    #[arg(long)]
    pub fault_s: Option<f64>,
    /// How partition-node and partition-broker cut their link: blackhole (connections
    /// stay open and carry nothing), reset (reset by peer), refuse (connections refused),
    /// or slow (not a cut: 1 s ± 0.5 s of latency each way).
    #[arg(long, default_value = "blackhole")]
    pub cut: String,
    /// Reader sessions: read slot `i` belongs to session `i mod N`, which carries the
    /// merge of the tokens it was handed and must never see an older state.
    #[arg(long, default_value_t = 4)]
    pub sessions: u64,
    /// The node to fault (n1, n2 or n3) in kill-data-node, partition-node,
    /// partition-broker and full-disk. Default: kill-data-node the largest id that is not
    /// the controller; partition-node n1 (the replica its peers ask first); the others n3.
    #[arg(long)]
    pub victim: Option<String>,
    /// full-disk: the free space left on the victim's data directory at the fault (KiB).
    #[arg(long, default_value_t = 0)]
    pub disk_headroom_kib: u64,
    /// A Toxiproxy server to use (its API, `http://HOST:PORT`) for the partition
    /// scenarios. Default: one of the bench's own, from --toxiproxy-script.
    #[arg(long, env = "HEKTOR_TOXIPROXY")]
    pub toxiproxy: Option<String>,
    /// The script that installs Toxiproxy (`install` prints the server binary).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/toxiproxy.sh"))]
    pub toxiproxy_script: PathBuf,
    /// The script that runs the private broker of kill-broker and partition-broker.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh"))]
    pub kafka_script: PathBuf,
    /// A control for the checker: send reads without their write's token. Reads may then
    /// miss the write just acknowledged, and the checker should count token violations.
    #[arg(long)]
    pub without_token: bool,
}

/// A fault: what is killed with SIGKILL, cut off, or filled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    DataNode,
    Controller,
    Broker,
    PartitionNode,
    PartitionBroker,
    FullDisk,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::DataNode,
        Scenario::Controller,
        Scenario::Broker,
        Scenario::PartitionNode,
        Scenario::PartitionBroker,
        Scenario::FullDisk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::DataNode => "kill-data-node",
            Scenario::Controller => "kill-controller",
            Scenario::Broker => "kill-broker",
            Scenario::PartitionNode => "partition-node",
            Scenario::PartitionBroker => "partition-broker",
            Scenario::FullDisk => "full-disk",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario `{name}`: use {}", names.join(", "))
            })
    }

    /// A fault that kills nothing and is healed after `--fault-s`.
    fn heals(self) -> bool {
        matches!(
            self,
            Scenario::PartitionNode | Scenario::PartitionBroker | Scenario::FullDisk
        )
    }

    /// Whether the cluster runs on a private broker of the bench's own.
    fn private_broker(self) -> bool {
        matches!(self, Scenario::Broker | Scenario::PartitionBroker)
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
            Scenario::PartitionNode | Scenario::PartitionBroker => {
                "link healed until the cluster was whole (three nodes ready, one epoch, every \
                 shard on two, no targets) and no read or write sent from then on failed"
            }
            Scenario::FullDisk => {
                "space freed until the cluster was whole (three nodes ready, one epoch, every \
                 shard on two, no targets) and no read or write sent from then on failed"
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
    /// The reader session it belongs to.
    #[serde(default)]
    pub session: u64,
    /// The node it was sent to.
    pub node: String,
    /// The id of the acknowledged write whose vector it asks (its token is in `token`).
    pub target: String,
    /// The tenant it lists (a search with the tenant's filter and k = [`SCAN_K`]); none
    /// for a search of the whole collection, whose hits say nothing of what is missing.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The token it carried (`consistency.after`).
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
    /// Shards whose replicas hold different counts (after up to 10 s for them to agree).
    pub replica_mismatch: u64,
    /// Those shards, with each count and its holders.
    #[serde(default)]
    pub mismatched: Vec<String>,
    /// How long the holders' counts took to agree (none: they never did).
    #[serde(default)]
    pub counts_agreed_s: Option<f64>,
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
    /// Reads that answered 200 without a write their token covers: the target, or (for a
    /// tenant listing) any acknowledged write of the tenant (read-your-writes).
    pub token_violations: u64,
    /// Reads that answered 200 with an older state than an earlier read of the same
    /// session and tenant, answered before this one was sent, had seen: an id it
    /// returned, or an acknowledged write its token covered, is missing (monotonic
    /// reads).
    pub monotonic_violations: u64,
    /// A few examples of each kind of trouble, as evidence.
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub violations: Vec<String>,
    pub monotonic: Vec<String>,
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
    // Acknowledged writes by tenant, with their tokens.
    let mut acked: BTreeMap<&str, Vec<(&str, &Token)>> = BTreeMap::new();
    for w in history.writes.iter().filter(|w| w.outcome == Outcome::Ok) {
        if let Some(token) = &w.token {
            acked
                .entry(w.tenant.as_str())
                .or_default()
                .push((w.id.as_str(), token));
        }
    }
    // The acknowledged writes of `tenant` that `token` covers.
    let covered = |tenant: &str, token: &Token| -> Vec<&str> {
        acked
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|(_, t)| covers(token, t))
            .map(|(id, _)| *id)
            .collect()
    };
    for r in &history.reads {
        v.reads += 1;
        match r.outcome {
            Outcome::Ok => {
                v.reads_ok += 1;
                let mut missed: Vec<&str> = Vec::new();
                if !r.hits.contains(&r.target) {
                    missed.push(r.target.as_str());
                }
                if let Some(tenant) = r.tenant.as_deref().filter(|_| r.hits.len() < SCAN_K) {
                    let hits: BTreeSet<&str> = r.hits.iter().map(String::as_str).collect();
                    missed.extend(
                        covered(tenant, &r.token)
                            .into_iter()
                            .filter(|id| !hits.contains(id) && *id != r.target),
                    );
                }
                if !missed.is_empty() {
                    v.token_violations += 1;
                    example(&mut v.violations, || {
                        format!(
                            "read {} at {} ({:.2}–{:.2} s, epoch {:?}, token {:?}) missed {}: {} hits {:?}",
                            r.index,
                            r.node,
                            r.sent_s,
                            r.done_s.unwrap_or(f64::NAN),
                            r.epoch,
                            r.token,
                            missed.join(", "),
                            r.hits.len(),
                            &r.hits[..r.hits.len().min(12)]
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
    // Monotonic reads: each session's tenant listings, against the ones of the same
    // session and tenant that had answered before they were sent.
    let mut listings: BTreeMap<(u64, &str), Vec<&ReadRecord>> = BTreeMap::new();
    for r in history.reads.iter().filter(|r| r.outcome == Outcome::Ok) {
        if let Some(tenant) = r.tenant.as_deref() {
            listings.entry((r.session, tenant)).or_default().push(r);
        }
    }
    for ((session, tenant), reads) in &listings {
        for later in reads.iter().filter(|r| r.hits.len() < SCAN_K) {
            let hits: BTreeSet<&str> = later.hits.iter().map(String::as_str).collect();
            let earlier: Vec<&&ReadRecord> = reads
                .iter()
                .filter(|e| e.done_s.is_some_and(|d| d <= later.sent_s))
                .collect();
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            let mut token = Token::new();
            for e in &earlier {
                seen.extend(e.hits.iter().map(String::as_str));
                merge(&mut token, &e.token);
            }
            seen.extend(covered(tenant, &token));
            let missing: Vec<&str> = seen.into_iter().filter(|id| !hits.contains(id)).collect();
            if let Some(first) = missing.first() {
                v.monotonic_violations += 1;
                // The earlier read that saw the first missing id (else whose token said so).
                let witness = earlier
                    .iter()
                    .rev()
                    .find(|e| e.hits.iter().any(|h| h == first))
                    .or(earlier.last())
                    .map(|e| e.index);
                example(&mut v.monotonic, || {
                    format!(
                        "read {} of session {session} at {} ({:.2}–{:.2} s, tenant {tenant}, token {:?}) \
                         missed {} seen before it was sent (by read {:?}): {} hits",
                        later.index,
                        later.node,
                        later.sent_s,
                        later.done_s.unwrap_or(f64::NAN),
                        later.token,
                        missing.join(", "),
                        witness,
                        later.hits.len()
                    )
                });
            }
        }
    }
    v
}

/// Whether token `t` covers every offset of token `of` (a write's).
fn covers(t: &Token, of: &Token) -> bool {
    !of.is_empty()
        && of
            .iter()
            .all(|(p, o)| t.get(p).is_some_and(|have| have >= o))
}

/// Merge token `more` into `into`: per partition, the larger offset.
pub fn merge(into: &mut Token, more: &Token) {
    for (p, o) in more {
        let have = into.entry(*p).or_insert(*o);
        *have = (*have).max(*o);
    }
}

/// A deterministic unit vector for a seed (a direction drawn uniformly from the cube).
pub fn vector_of(seed: u64) -> Vec<f32> {
    let mut rng = crate::seeded::stream(seed, crate::seeded::Purpose::FaultsVector, 0);
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
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
    /// Each reader session's token: the merge of the tokens it was handed.
    sessions: Vec<Mutex<Token>>,
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
        let session = index % self.sessions.len() as u64;
        let token = {
            let mut t = self.sessions[session as usize].lock();
            merge(&mut t, target.token.as_ref().unwrap_or(&Token::new()));
            t.clone()
        };
        let at = {
            let mut h = self.history.lock();
            h.reads.push(ReadRecord {
                index,
                session,
                node,
                target: target.id.clone(),
                tenant: Some(target.tenant.clone()),
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
            "k": SCAN_K,
            "tenant": target.tenant,
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
/// its shards have no lag; `all_hold`: every node holds a shard; `lag`: check the lag
/// (not while writes go on: a shard is behind for a moment after every write).
async fn settled(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    collection: &str,
    all_hold: bool,
    lag: bool,
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
        if !lag {
            continue;
        }
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
        if settled(http, nodes, collection, all_hold, true).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Wait (up to `within`) until every shard that a node of `nodes` holds has applied
/// `frontier` for its partition: how long it took, or none.
async fn wait_applied(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    collection: &str,
    frontier: &Token,
    within: Duration,
) -> Option<f64> {
    let began = Instant::now();
    while began.elapsed() < within {
        let mut behind = false;
        for (_, url) in nodes {
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
                behind = true;
                break;
            };
            behind |= info["shards"].as_array().into_iter().flatten().any(|s| {
                let (Some(p), Some(next)) = (s["shard"].as_u64(), s["next_offset"].as_u64()) else {
                    return false; // not held here
                };
                frontier
                    .get(&(p as u32))
                    .is_some_and(|needed| next <= *needed)
            });
        }
        if !behind {
            return Some(began.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
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
    // The scan: each tenant with k = 1000, after every acknowledged write (the merge of
    // their tokens), as a client that wants them all asks.
    let mut frontier = Token::new();
    for w in &acked {
        merge(&mut frontier, w.token.as_ref().unwrap_or(&Token::new()));
    }
    last.scan_complete = true;
    for t in 0..TENANTS {
        let body = json!({"vector": vector_of(u64::MAX - t), "k": SCAN_K,
            "tenant": format!("t{t}"), "without_payload": true,
            "consistency": {"after": frontier, "timeout_ms": CONSISTENCY_MS}});
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
    // The serving shards' counts, from every holder: until the holders agree (a replica
    // may still be applying the last writes: the settle's lag check polls the high
    // watermark every 500 ms), for up to 10 s.
    let began = Instant::now();
    loop {
        let mut counts: BTreeMap<String, BTreeMap<u64, Vec<&str>>> = BTreeMap::new();
        for (id, url) in nodes {
            let info: Value = http
                .get(format!("{url}/collections/{collection}"))
                .send()
                .await?
                .json()
                .await?;
            for s in info["shards"].as_array().into_iter().flatten() {
                let seen = counts.entry(s["range"].to_string()).or_default();
                if let Some(n) = s["vectors"].as_u64() {
                    seen.entry(n).or_default().push(id.as_str());
                }
            }
        }
        let mismatched: Vec<String> = counts
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .map(|(range, c)| format!("shard {range}: vectors (holders) {c:?}"))
            .collect();
        last.replica_mismatch = mismatched.len() as u64;
        last.mismatched = mismatched;
        last.stored = counts
            .values()
            .map(|c| c.keys().next().copied())
            .sum::<Option<u64>>();
        if last.replica_mismatch == 0 || began.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last.counts_agreed_s = (last.replica_mismatch == 0).then(|| began.elapsed().as_secs_f64());
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
    /// How long a partition or a full disk lasts (`--fault-s`; else by scenario).
    fault: Option<Duration>,
    quick: bool,
}

impl Timing {
    /// How long `scenario`'s fault lasts: a partition 10 s (5 with --quick); a full disk
    /// 30 s (15), as its shards take several seconds to need a new page (LMDB reuses
    /// the pages it freed first).
    fn fault(&self, scenario: Scenario) -> Duration {
        self.fault.unwrap_or(match (scenario, self.quick) {
            (Scenario::FullDisk, false) => Duration::from_secs(30),
            (Scenario::FullDisk, true) => Duration::from_secs(15),
            (_, false) => Duration::from_secs(10),
            (_, true) => Duration::from_secs(5),
        })
    }
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
    /// partition-broker: a third client listener (EXTRA) on this port, advertising that
    /// address (a proxy's), so that clients bootstrapped through the proxy stay behind it.
    extra: Option<(u16, String)>,
}

/// A free port on 127.0.0.1 (free when asked).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PrivateBroker {
    async fn start(
        script: &std::path::Path,
        extra_advertised: Option<String>,
    ) -> anyhow::Result<PrivateBroker> {
        anyhow::ensure!(
            script.exists(),
            "kill-broker and partition-broker run a private broker with {} (--kafka-script), which is missing",
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
        let extra = match extra_advertised {
            Some(advertised) => Some((free_port()?, advertised)),
            None => None,
        };
        let broker = PrivateBroker {
            script: script.to_owned(),
            home,
            ports,
            extra,
        };
        broker.run_start().await?;
        Ok(broker)
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    /// `kafka.sh start` on this home and these ports: returns once the broker answers.
    async fn run_start(&self) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new("bash");
        if let Some((port, advertised)) = &self.extra {
            command
                .env("HEKTOR_KAFKA_EXTRA_PORT", port.to_string())
                .env("HEKTOR_KAFKA_EXTRA_ADVERTISED", advertised);
        }
        let run = command
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

/// (used, size) in bytes of the filesystem holding `dir`, from `df`.
fn disk_usage(dir: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=used,size"])
        .arg(dir)
        .output()
        .context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [used, size] => Ok((used, size)),
        _ => anyhow::bail!("df {}: {text}", dir.display()),
    }
}

/// full-disk's tmpfs on a node's data directory, unmounted when dropped (after the node
/// process is gone).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// What the tmpfs holds while nothing fills it (bytes).
    const ROOMY: u64 = 256 << 20;

    fn mount(dir: &std::path::Path) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let size = format!("size={}", Self::ROOMY);
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "hektor-full-disk"])
            .arg(dir)
            .output()
            .context("full-disk mounts a tmpfs on the victim's data directory, but `mount` could not be run")?;
        anyhow::ensure!(
            out.status.success(),
            "full-disk needs a size-limited filesystem for the victim's data directory and \
             makes one with `mount -t tmpfs -o {size} hektor-full-disk {}`, which failed ({}): \
             {} — run the bench as root (CAP_SYS_ADMIN) where mounting is allowed; the \
             scenario cannot run without it",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    /// (used, size) in bytes.
    fn usage(&self) -> anyhow::Result<(u64, u64)> {
        disk_usage(&self.dir)
    }

    /// Remount with `bytes` of room.
    fn resize(&self, bytes: u64) -> anyhow::Result<()> {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .output()
            .context("running mount -o remount")?;
        anyhow::ensure!(
            out.status.success(),
            "remounting {} with size={bytes}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Leave `headroom` bytes free: the size is what is used now plus that (retried, as
    /// the node may write in between and tmpfs refuses a size under its usage).
    fn fill(&self, headroom: u64) -> anyhow::Result<(u64, u64)> {
        let mut last = None;
        for _ in 0..5 {
            let (used, _) = self.usage()?;
            match self.resize(used + headroom) {
                Ok(()) => return self.usage(),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("could not shrink the tmpfs")))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) {
            std::thread::sleep(Duration::from_millis(500));
            if !umount(false) {
                umount(true);
            }
        }
    }
}

/// Whether the cluster is whole: every node of `nodes` ready, one map epoch, every
/// shard on `REPLICATION` of them, no targets (writes may go on: lag is not checked).
async fn whole(http: &reqwest::Client, nodes: &[(String, String)], collection: &str) -> bool {
    settled(http, nodes, collection, false, false).await
}

/// The victim's `/health` and `/ready` at `t_s` (status codes; 0: no answer), and
/// (full-disk) its data directory's (used, size).
#[derive(Debug, Clone, Copy)]
struct Pulse {
    t_s: f64,
    health: u16,
    ready: u16,
    disk: Option<(u64, u64)>,
}

async fn pulse(http: &reqwest::Client, url: &str, t_s: f64) -> Pulse {
    let code = |r: Result<reqwest::Response, reqwest::Error>| r.map_or(0, |r| r.status().as_u16());
    let health = http
        .get(format!("{url}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let ready = http
        .get(format!("{url}/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    Pulse {
        t_s,
        health: code(health),
        ready: code(ready),
        disk: None,
    }
}

/// What a scenario holds for its fault: the Toxiproxy server and the proxy to cut, the
/// tmpfs to fill.
#[derive(Default)]
struct Rig {
    toxiproxy: Option<crate::toxiproxy::Toxiproxy>,
    /// partition-node: each node's proxy (the address its peers call it at).
    node_proxies: BTreeMap<String, String>,
    /// partition-broker: the proxy the victim reaches the broker through.
    broker_proxy: Option<String>,
    tmpfs: Option<Tmpfs>,
}

impl Rig {
    fn toxiproxy(&self) -> anyhow::Result<&crate::toxiproxy::Toxiproxy> {
        self.toxiproxy.as_ref().context("no Toxiproxy")
    }

    /// The proxy cut by the fault on `victim`.
    fn proxy_for(&self, victim: &str) -> anyhow::Result<String> {
        self.broker_proxy
            .clone()
            .or_else(|| self.node_proxies.get(victim).cloned())
            .with_context(|| format!("no proxy in front of {victim}"))
    }
}

async fn run_scenario(
    args: &FaultsArgs,
    brokers: Option<&str>,
    scenario: Scenario,
    timing: &Timing,
) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir()?;
    let name = unique_name(&format!("faults-{}", scenario.name()));
    let cut = crate::toxiproxy::Cut::parse(&args.cut)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(CONSISTENCY_MS + 2_000))
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    let mut rig = Rig::default();
    if matches!(
        scenario,
        Scenario::PartitionNode | Scenario::PartitionBroker
    ) {
        rig.toxiproxy = Some(match &args.toxiproxy {
            Some(api) => crate::toxiproxy::Toxiproxy::connect(api).await?,
            None => crate::toxiproxy::Toxiproxy::start(&args.toxiproxy_script).await?,
        });
    }
    // The victim of the faults that must be set up before the nodes start (the largest
    // id: the controller is elected as the smallest, so it is a plain data node).
    if let Some(v) = &args.victim {
        anyhow::ensure!(
            ["n1", "n2", "n3"].contains(&v.as_str()),
            "--victim must be n1, n2 or n3, not `{v}`"
        );
        anyhow::ensure!(
            !matches!(scenario, Scenario::Controller | Scenario::Broker),
            "--victim does not apply to {} (its victim is the {})",
            scenario.name(),
            if scenario == Scenario::Broker {
                "broker"
            } else {
                "controller"
            }
        );
    }
    let early_victim = args.victim.as_deref().unwrap_or("n3");
    // The private broker of kill-broker and partition-broker: stopped when dropped,
    // after the nodes. partition-broker's has an extra listener behind a proxy.
    let broker_proxy_port = match scenario {
        Scenario::PartitionBroker => Some(free_port()?),
        _ => None,
    };
    let broker = match scenario.private_broker() {
        true => Some(
            PrivateBroker::start(
                &args.kafka_script,
                broker_proxy_port.map(|p| format!("127.0.0.1:{p}")),
            )
            .await?,
        ),
        false => None,
    };
    if let (Some(b), Some(port)) = (&broker, broker_proxy_port) {
        let extra = b.extra.as_ref().context("no extra listener")?.0;
        let proxy = format!("{name}-broker");
        rig.toxiproxy()?
            .create(
                &proxy,
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{extra}"),
            )
            .await?;
        rig.broker_proxy = Some(proxy);
    }
    let brokers = match &broker {
        Some(b) => b.brokers(),
        None => brokers.context("no broker")?.to_owned(),
    };
    if scenario == Scenario::FullDisk {
        rig.tmpfs = Some(Tmpfs::mount(&tmp.path().join(early_victim))?);
    }
    // The processes, killed when dropped (on every path out of here, before the tmpfs
    // is unmounted and the proxies go).
    let mut procs: BTreeMap<String, NodeProc> = BTreeMap::new();
    for id in ["n1", "n2", "n3"] {
        let mut flags = vec!["--engine".to_owned(), args.engine.clone()];
        let mut node_brokers = brokers.clone();
        let mut proxy_port = None;
        match scenario {
            Scenario::PartitionNode => {
                let port = free_port()?;
                flags.extend(["--advertise".to_owned(), format!("127.0.0.1:{port}")]);
                proxy_port = Some(port);
            }
            Scenario::PartitionBroker if id == early_victim => {
                node_brokers = format!("127.0.0.1:{}", broker_proxy_port.context("no proxy")?);
            }
            _ => {}
        }
        let node = start_node(id, ROLES, &node_brokers, &name, tmp.path(), &flags)?;
        if let Some(port) = proxy_port {
            let proxy = format!("{name}-{id}");
            let upstream = node.url.trim_start_matches("http://").to_owned();
            rig.toxiproxy()?
                .create(&proxy, &format!("127.0.0.1:{port}"), &upstream)
                .await?;
            rig.node_proxies.insert(id.to_owned(), proxy);
        }
        procs.insert(id.to_owned(), node);
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
        _ if args.victim.is_some() => early_victim.to_owned(),
        // The node its peers ask first among a shard's replicas when none is busier
        // (they order by in-flight calls, then by id): the smallest id.
        Scenario::PartitionNode => nodes[0].0.clone(),
        Scenario::DataNode => nodes
            .iter()
            .rev()
            .map(|(id, _)| id)
            .find(|id| **id != controller)
            .cloned()
            .context("no node besides the controller")?,
        Scenario::Broker => "broker".to_owned(),
        Scenario::PartitionBroker | Scenario::FullDisk => early_victim.to_owned(),
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
        sessions: (0..args.sessions.max(1))
            .map(|_| Mutex::new(Token::new()))
            .collect(),
    });
    let duration = match scenario {
        Scenario::Broker => timing.before + timing.down + RESTART_ALLOWANCE + timing.after,
        s if s.heals() => timing.before + timing.fault(s) + timing.after,
        _ => timing.before + timing.after,
    };
    let request_timeout = Duration::from_millis(CONSISTENCY_MS + 5_000);
    // Enough workers that requests a fault holds up never hold back the schedule (open
    // loop: each slot is sent at its time whatever is still in flight).
    let schedule = |rate: f64| {
        let workers = (rate * request_timeout.as_secs_f64()).ceil() as usize + 8;
        Schedule::new(rate, duration, workers.min(2_000))
            .with_timeout(request_timeout)
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
    // The watcher: every alive node's view every 200 ms, and the victim's health, until
    // told to stop (and at most ten minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let snaps: Arc<Mutex<Vec<Snap>>> = Arc::new(Mutex::new(Vec::new()));
    let pulses: Arc<Mutex<Vec<Pulse>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (load, stop, snaps, pulses, name) = (
            Arc::clone(&load),
            Arc::clone(&stop),
            Arc::clone(&snaps),
            Arc::clone(&pulses),
            name.clone(),
        );
        let watched = victim_url.clone().filter(|_| scenario.heals());
        let disk_dir = rig.tmpfs.as_ref().map(|t| t.dir.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && load.began.elapsed() < Duration::from_secs(600) {
                let t_s = load.now_s();
                let alive = load.alive.lock().clone();
                let mut views = Vec::new();
                for (id, url) in &alive {
                    views.push((id.clone(), map_view(&load.http, url, &name).await));
                }
                snaps.lock().push(Snap { t_s, views });
                if let Some(url) = &watched {
                    let mut p = pulse(&load.http, url, load.now_s()).await;
                    p.disk = disk_dir.as_deref().and_then(|d| disk_usage(d).ok());
                    pulses.lock().push(p);
                }
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
    // full-disk: (used, size) of the tmpfs at the fault.
    let mut disk_at_fault: Option<(u64, u64)> = None;
    match scenario {
        Scenario::Broker => {
            let broker = broker.as_ref().context("no private broker")?;
            broker.kill()?;
            tokio::time::sleep(timing.down).await;
            let t = load.now_s();
            broker.run_start().await.context("restarting the broker")?;
            let back = load.now_s();
            restarted = Some((back - t, back));
        }
        Scenario::DataNode | Scenario::Controller => {
            let url = victim_url.clone().context("no victim")?;
            load.alive.lock().retain(|(id, _)| *id != victim);
            load.killed.lock().insert(url);
            drop(procs.remove(&victim)); // SIGKILL, then reaped
        }
        Scenario::PartitionNode | Scenario::PartitionBroker => {
            rig.toxiproxy()?
                .cut(&rig.proxy_for(&victim)?, cut)
                .await
                .context("cutting the link")?;
        }
        Scenario::FullDisk => {
            let tmpfs = rig.tmpfs.as_ref().context("no tmpfs")?;
            disk_at_fault = Some(tmpfs.fill(args.disk_headroom_kib << 10)?);
        }
    }
    // The heal, after --fault-s; then, until told to stop, the first time the whole
    // cluster is back.
    let mut heal_s = None;
    let whole_at: Arc<Mutex<Option<f64>>> = Arc::new(Mutex::new(None));
    let mut whole_watch = None;
    if scenario.heals() {
        tokio::time::sleep_until(began + timing.before + timing.fault(scenario)).await;
        match scenario {
            Scenario::FullDisk => rig
                .tmpfs
                .as_ref()
                .context("no tmpfs")?
                .resize(Tmpfs::ROOMY)
                .context("freeing space")?,
            _ => rig
                .toxiproxy()?
                .heal(&rig.proxy_for(&victim)?, cut)
                .await
                .context("healing the link")?,
        }
        heal_s = Some(load.now_s());
        let (load, stop, whole_at, nodes, name) = (
            Arc::clone(&load),
            Arc::clone(&stop),
            Arc::clone(&whole_at),
            nodes.clone(),
            name.clone(),
        );
        whole_watch = Some(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = load.now_s();
                if whole(&load.http, &nodes, &name).await {
                    *whole_at.lock() = Some(t);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
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
    if calm && heal_s.is_some() {
        let mut w = whole_at.lock();
        if w.is_none() {
            *w = Some(load.now_s());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    if let Some(w) = whole_watch {
        let _ = w.await;
    }
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
    // Every holder past every acknowledged write, so that reads by id (which carry no
    // token) and the counts see them all: the settle's lag check polls the high
    // watermark only every 500 ms.
    let mut frontier = Token::new();
    for w in history.writes.iter().filter(|w| w.outcome == Outcome::Ok) {
        merge(&mut frontier, w.token.as_ref().unwrap_or(&Token::new()));
    }
    let applied_s =
        wait_applied(&http, &survivors, &name, &frontier, Duration::from_secs(30)).await;
    let last = final_state(&http, &survivors, &name, &history).await?;
    let verdict = check(&history, &last, vector_of);
    let disk_at_end = rig.tmpfs.as_ref().and_then(|t| t.usage().ok());

    // What the watcher saw.
    let snaps = std::mem::take(&mut *snaps.lock());
    let pulses = std::mem::take(&mut *pulses.lock());
    let node_victim = victim_url.is_some();
    // No map of another node lists the victim (a partitioned victim's own is stale).
    let unlisted_s = first_after(&snaps, kill_s, |s| {
        s.views
            .iter()
            .filter(|(id, _)| *id != victim)
            .all(|(_, v)| v.as_ref().is_some_and(|v| !v.lists(&victim)))
    })
    .filter(|_| node_victim);
    // Every shard on two nodes other than the victim, as the others see it.
    let others: Vec<String> = nodes
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| *id != victim)
        .collect();
    let rereplicated_s = first_after(&snaps, kill_s, |s| {
        let vs: Option<Vec<&MapView>> = s
            .views
            .iter()
            .filter(|(id, _)| *id != victim)
            .map(|(_, v)| v.as_ref())
            .collect();
        vs.is_some_and(|vs| {
            vs.iter()
                .all(|v| v.settled(&others, REPLICATION.min(others.len())))
        })
    })
    .filter(|_| node_victim);
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
    // Failures around a healed fault: (writes, reads) sent while it lasted, and after;
    // the last failed request sent after the heal.
    let failing = |o: Outcome| matches!(o, Outcome::Failed | Outcome::Pending);
    let failed_sends: Vec<f64> = history
        .writes
        .iter()
        .filter(|w| failing(w.outcome))
        .map(|w| w.sent_s)
        .chain(
            history
                .reads
                .iter()
                .filter(|r| failing(r.outcome))
                .map(|r| r.sent_s),
        )
        .collect();
    let count_in = |from: f64, to: f64| {
        let w = history
            .writes
            .iter()
            .filter(|w| failing(w.outcome) && w.sent_s >= from && w.sent_s < to)
            .count();
        let r = history
            .reads
            .iter()
            .filter(|r| failing(r.outcome) && r.sent_s >= from && r.sent_s < to)
            .count();
        (w, r)
    };
    let during = heal_s.map(|h| count_in(kill_s, h));
    let after_heal = heal_s.map(|h| count_in(h, f64::INFINITY));
    let failing_after_heal_s = heal_s.map(|h| {
        failed_sends
            .iter()
            .filter(|t| **t >= h)
            .map(|t| t - h)
            .fold(0.0, f64::max)
    });
    let whole_s = heal_s.and_then(|h| whole_at.lock().map(|w| (w - h).max(0.0)));
    let load_end_s = duration.as_secs_f64();
    let still_failing = heal_s.is_some_and(|h| {
        failed_sends
            .iter()
            .any(|t| *t >= h && *t > load_end_s - 2.0)
    });
    let healed_s = match (whole_s, failing_after_heal_s) {
        (Some(w), Some(f)) if !still_failing => Some(w.max(f)),
        _ => None,
    };
    // The victim's health: first answer that was not 200 after the fault, first time
    // healthy and ready again after the heal.
    let unhealthy_s = pulses
        .iter()
        .find(|p| p.t_s >= kill_s && p.health != 200)
        .map(|p| p.t_s - kill_s);
    let unready_s = pulses
        .iter()
        .find(|p| p.t_s >= kill_s && p.ready != 200)
        .map(|p| p.t_s - kill_s);
    let disk_full_s = pulses
        .iter()
        .find(|p| p.t_s >= kill_s && p.disk.is_some_and(|(used, size)| used >= size))
        .map(|p| p.t_s - kill_s);
    let healthy_again_s = heal_s.and_then(|h| {
        pulses
            .iter()
            .find(|p| p.t_s >= h && p.health == 200 && p.ready == 200)
            .map(|p| p.t_s - h)
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
        Scenario::PartitionNode | Scenario::PartitionBroker | Scenario::FullDisk => healed_s,
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
        "monotonic_violations": verdict.monotonic_violations,
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
    let healed = scenario.heals().then(|| {
        json!({
            "fault_s": timing.fault(scenario).as_secs_f64(),
            "heal_at_s": heal_s,
            "cut": matches!(scenario, Scenario::PartitionNode | Scenario::PartitionBroker)
                .then(|| cut.name()),
            "whole_s": whole_s,
            "failing_after_heal_s": failing_after_heal_s,
            "writes_failed_during_fault": during.map(|d| d.0),
            "reads_failed_during_fault": during.map(|d| d.1),
            "writes_failed_after_heal": after_heal.map(|d| d.0),
            "reads_failed_after_heal": after_heal.map(|d| d.1),
            "victim_unhealthy_s": unhealthy_s,
            "victim_unready_s": unready_s,
            "victim_healthy_again_s": healthy_again_s,
            "disk_full_s": disk_full_s,
            "disk_used_at_fault": disk_at_fault.map(|d| d.0),
            "disk_size_at_fault": disk_at_fault.map(|d| d.1),
            "disk_used_at_end": disk_at_end.map(|d| d.0),
        })
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
        "counts_agreed_s": last.counts_agreed_s,
        "applied_s": applied_s,
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
        "sessions": load.sessions.len(),
        "engine": args.engine,
        "quick": args.quick,
        "without_token": args.without_token,
        "examples": {
            "lost": verdict.lost,
            "duplicated": verdict.duplicated,
            "token_violations": verdict.violations,
            "monotonic_violations": verdict.monotonic,
            "read_errors": verdict.read_errors,
            "replica_mismatch": last.mismatched,
        },
    });
    for extra in [healed, Some(more)].into_iter().flatten() {
        if let (Some(to), Value::Object(extra)) = (report.as_object_mut(), extra) {
            to.extend(extra);
        }
    }
    drop(procs);
    if let Some(t) = &rig.toxiproxy {
        t.delete_all().await;
    }
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
        "{}: victim {} — {} writes acked, {} lost, {} duplicated; {} reads, {} failed, {} token \
         violations, {} monotonic violations; recovery {} ({}); read p99 {:.1} ms",
        report["scenario"].as_str().unwrap_or(""),
        report["victim"].as_str().unwrap_or(""),
        report["writes_acked"],
        report["writes_lost"],
        report["writes_duplicated"],
        report["reads"],
        report["reads_failed"],
        report["token_violations"],
        report["monotonic_violations"],
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
        brokers.is_some() || scenarios.iter().all(|s| s.private_broker()),
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
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    crate::toxiproxy::Cut::parse(&args.cut)?;
    let timing = Timing {
        fault: args.fault_s.map(|s| Duration::from_secs_f64(s.max(0.5))),
        quick: args.quick,
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

/// `hektor-bench faults`. Interrupted (SIGINT, SIGTERM), it stops its nodes first.
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
            session: 0,
            node: "n2".into(),
            target: format!("w{target}"),
            tenant: None,
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
            mismatched: Vec::new(),
            counts_agreed_s: Some(0.0),
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

    /// A tenant listing of session `session`, sent at `sent_s`, answered 0.1 s later.
    fn listing(
        index: u64,
        session: u64,
        tenant: &str,
        token: &[(u32, u64)],
        sent_s: f64,
        hits: &[&str],
    ) -> ReadRecord {
        ReadRecord {
            index,
            session,
            node: "n1".into(),
            target: hits.first().map_or("w0".into(), |h| h.to_string()),
            tenant: Some(tenant.into()),
            token: token.iter().copied().collect(),
            sent_s,
            done_s: Some(sent_s + 0.1),
            outcome: Outcome::Ok,
            status: Some(200),
            hits: hits.iter().map(|h| h.to_string()).collect(),
            epoch: Some(1),
            error: None,
        }
    }

    /// Writes w0..w5 of tenant `t0`, acknowledged at offsets 0..5 of partition 0.
    fn one_tenant() -> History {
        History {
            writes: (0..6)
                .map(|i| WriteRecord {
                    tenant: "t0".into(),
                    ..write(i, Outcome::Ok)
                })
                .collect(),
            reads: Vec::new(),
        }
    }

    #[test]
    fn a_listing_must_hold_every_write_its_token_covers() {
        let mut h = one_tenant();
        // Token {0: 3} covers w0..w3: w2 is missing although the target w3 is there.
        h.reads
            .push(listing(0, 0, "t0", &[(0, 3)], 10.0, &["w3", "w0", "w1"]));
        // Beyond the token, anything may be missing or present.
        h.reads
            .push(listing(1, 1, "t0", &[(0, 1)], 10.0, &["w1", "w0", "w5"]));
        let v = check(&h, &faithful(&h), vector_of);
        assert_eq!(v.token_violations, 1);
        assert!(v.violations[0].contains("missed w2"), "{:?}", v.violations);
        assert_eq!(v.monotonic_violations, 0);
    }

    #[test]
    fn monotonic_reads_hold_in_a_faithful_session() {
        let mut h = one_tenant();
        let s = 2;
        h.reads
            .push(listing(0, s, "t0", &[(0, 1)], 10.0, &["w1", "w0", "w2"]));
        h.reads.push(listing(
            1,
            s,
            "t0",
            &[(0, 2)],
            11.0,
            &["w2", "w0", "w1", "w4"],
        ));
        h.reads.push(listing(
            2,
            s,
            "t0",
            &[(0, 4)],
            12.0,
            &["w4", "w0", "w1", "w2", "w3"],
        ));
        let v = check(&h, &faithful(&h), vector_of);
        assert_eq!((v.token_violations, v.monotonic_violations), (0, 0));
    }

    #[test]
    fn a_session_that_sees_an_older_state_breaks_monotonic_reads() {
        let mut h = one_tenant();
        // Read 0 sees w4 (beyond its token: fine); read 1, sent after read 0 answered,
        // misses it: within its own token, but an older state than the session saw.
        h.reads
            .push(listing(0, 0, "t0", &[(0, 1)], 10.0, &["w1", "w0", "w4"]));
        h.reads
            .push(listing(1, 0, "t0", &[(0, 2)], 11.0, &["w2", "w0", "w1"]));
        // The same regression in another session's read is no violation of this one's;
        // nor is a read of the session sent before read 0 answered (concurrent).
        h.reads
            .push(listing(2, 1, "t0", &[(0, 2)], 11.0, &["w2", "w0", "w1"]));
        h.reads
            .push(listing(3, 0, "t0", &[(0, 2)], 10.05, &["w2", "w0", "w1"]));
        // A later read whose own token is smaller than an earlier read's: it must still
        // hold what that earlier token covered (w0..w3 by read 4's token {0: 3}).
        h.reads.push(listing(
            4,
            3,
            "t0",
            &[(0, 3)],
            20.0,
            &["w3", "w0", "w1", "w2"],
        ));
        h.reads
            .push(listing(5, 3, "t0", &[(0, 1)], 21.0, &["w1", "w0"]));
        let v = check(&h, &faithful(&h), vector_of);
        assert_eq!(v.token_violations, 0, "{:?}", v.violations);
        assert_eq!(v.monotonic_violations, 2, "{:?}", v.monotonic);
        assert!(
            v.monotonic[0].contains("read 1 of session 0") && v.monotonic[0].contains("missed w4"),
            "{:?}",
            v.monotonic
        );
        assert!(
            v.monotonic[0].contains("(by read Some(0))"),
            "{:?}",
            v.monotonic
        );
        assert!(
            v.monotonic[1].contains("read 5 of session 3") && v.monotonic[1].contains("w2, w3"),
            "{:?}",
            v.monotonic
        );
        // Whole-collection searches (no tenant) and failed reads prove nothing either way.
        let mut h2 = one_tenant();
        h2.reads
            .push(listing(0, 0, "t0", &[(0, 1)], 10.0, &["w1", "w0", "w4"]));
        let mut blind = listing(1, 0, "t0", &[(0, 1)], 11.0, &["w1"]);
        blind.tenant = None;
        h2.reads.push(blind);
        let mut failed = listing(2, 0, "t0", &[(0, 1)], 12.0, &[]);
        failed.outcome = Outcome::Failed;
        h2.reads.push(failed);
        let v = check(&h2, &faithful(&h2), vector_of);
        assert_eq!(v.monotonic_violations, 0, "{:?}", v.monotonic);
    }

    #[test]
    fn tokens_merge_per_partition_and_cover_offsets() {
        let mut t = Token::from([(0, 5), (1, 2)]);
        merge(&mut t, &Token::from([(1, 7), (2, 1), (0, 3)]));
        assert_eq!(t, Token::from([(0, 5), (1, 7), (2, 1)]));
        assert!(covers(&t, &Token::from([(1, 7)])));
        assert!(!covers(&t, &Token::from([(1, 8)])));
        assert!(!covers(&t, &Token::from([(3, 0)])));
        assert!(!covers(&t, &Token::new()));
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
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()).unwrap(), s);
        }
        assert!(Scenario::parse("nope")
            .unwrap_err()
            .to_string()
            .contains("partition-broker"));
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
