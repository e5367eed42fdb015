//! `hektor-bench search`: recall, throughput and latency of hektor's search, measured in
//! one run on one data set (TEXMEX layout, see `hektor_indexers::dataset`), next to peer
//! libraries measured in the same run, and summarised as ratios against those peers.
//!
//! What it does, per `--engine`:
//! 1. **in-process**: builds a [`Shard`] in a temp dir from the base vectors (`build_s` =
//!    apply + `build_index`), then sweeps the engine's search-effort knob (arroy: the
//!    search-k factor, which is fixed when a shard is opened, so the shard is reopened per
//!    point; engines with a run-time knob such as hnsw's ef_search: set per point;
//!    engines without a knob: one point). Each point runs the queries one at a
//!    time on `--threads` threads, best of `--passes` passes (fewer when a point's
//!    `--point-budget-s` is spent). `rss_mb` is the growth of
//!    VmRSS while the shard is open.
//! 2. **http**: starts a node as a child process (`hektor serve`, the `hektor` beside this
//!    executable or `--server-exe`, embedded log in a temp dir), loads the base through `POST /vectors`
//!    in the binary bulk form (with `--payloads`, each vector with its description as
//!    payload), measures the ingest rate until a search carrying the merged write token
//!    answers, waits for the index build, then runs the queries through `POST /search`
//!    with each `--clients` count, each client on its own keep-alive connection, at the
//!    server's default effort and at each `--http-efforts` (the request's `effort`), best
//!    of `--passes` passes. The server's CPU per query (`server_cpu_us_per_query`) is the
//!    server process's utime + stime (`/proc/<pid>/stat`) over every timed pass of a point
//!    divided by the queries of those passes; `client_cpu_us_per_query` is the same for
//!    this process (the load generator), and `rss_mb` is the server's resident memory
//!    (`server_rss_mb` and `server_pss_mb`: Rss and Pss from `/proc/<pid>/smaps_rollup`).
//!    With `--grpc` the server also listens for gRPC and each point runs through gRPC's
//!    `Search` too (packed floats, one HTTP/2 connection per client; `"via": "grpc"`),
//!    right after its REST passes, with the same measures and a `grpc_vs_http` ratio line.
//! 3. **peers** (`--peers`): runs `scripts/peers.py --json --pick` and forwards its lines.
//! 4. Ratios against the peers and the issue's goals, as summary lines.
//!
//! This module owns only the measuring and the report; it does not tune engines, and it
//! adds no behaviour to the node it starts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::dataset::{data_dir, recall_at_k, Dataset};
use hektor_indexers::{ArroyParams, EngineKind, Shard, ShardConfig, ShardOp};
use hektor_ingest::http::{encode_bulk, BULK_CONTENT_TYPE};
use hektor_query::router::MAX_CONSISTENCY_TIMEOUT;
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{Distance, VectorRecord, VectorUpsert};
use hektor_topics::ring;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::open_loop::Percentiles;

/// Neighbours asked for and scored.
const K: usize = 10;
/// Recall targets at which the fastest point is picked and compared.
const TARGETS: [f64; 2] = [0.95, 0.99];
/// Name of the collection the HTTP phase creates.
const COLLECTION: &str = "bench";
/// Longest wait for the HTTP node to apply or index everything.
const HTTP_WAIT: Duration = Duration::from_secs(20 * 60);
/// Queries sent before the timed HTTP passes (connection set-up, page cache).
const HTTP_WARMUP: usize = 20;
/// Default search-k factors of the arroy sweep (nodes inspected = k × trees × factor).
const DEFAULT_ARROY_FACTORS: [usize; 5] = [25, 50, 100, 200, 400];

/// The issue's goals checked at the end.
const GOAL_HTTP_P99_MS: f64 = 1.0;
/// Searches per second through HTTP with [`GOAL_HTTP_CLIENTS`] clients, at recall ≥ 0.95.
const GOAL_HTTP_QPS: f64 = 10_000.0;
const GOAL_HTTP_CLIENTS: usize = 8;
const GOAL_INGEST_PER_S: f64 = 10_000.0;
/// The server's CPU per search through REST at recall ≥ 0.95, in µs (issue #16).
const GOAL_SERVER_CPU_US: f64 = 180.0;
/// The same through gRPC (issue #16).
const GOAL_GRPC_SERVER_CPU_US: f64 = 120.0;
/// gRPC's QPS over REST's with [`GOAL_HTTP_CLIENTS`] clients, at recall ≥ 0.95 (issue #16).
const GOAL_GRPC_OVER_HTTP_QPS: f64 = 2.0;

#[derive(Debug, clap::Args)]
pub struct SearchBenchArgs {
    /// Engine to measure (repeat for several): any name `EngineKind` knows (arroy, exact, ...),
    /// or `batch`: the batch search path against one-at-a-time exact search (`--batch-sizes`).
    #[arg(long = "engine", default_value = "arroy")]
    pub engines: Vec<String>,
    /// Threads issuing in-process queries (each one query at a time); also passed to the peers.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Data set directory (base.fvecs, base.ids, query.fvecs, groundtruth*); default
    /// $HEKTOR_DATA or ../shared/data/debian-minilm-384.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Concurrent HTTP clients, comma-separated; one pass over the queries per count.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub clients: Vec<usize>,
    /// Also run scripts/peers.py (hnswlib, faiss, usearch, numpy) on the same data.
    #[arg(long)]
    pub peers: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Use only the first N queries (everywhere, peers included).
    #[arg(long)]
    pub queries: Option<usize>,
    /// Passes per sweep point (in-process, and per client count through HTTP); the
    /// fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Time budget of one sweep point: no further pass starts once it is spent (at least
    /// one pass runs), which keeps slow points from dominating the run.
    #[arg(long, default_value_t = 20.0)]
    pub point_budget_s: f64,
    /// arroy search-k factors to sweep, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub arroy_factors: Option<Vec<usize>>,
    /// Search efforts to sweep for engines with a run-time knob (hnsw's ef_search).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,16,24,32,48,64,96,128,192,256"
    )]
    pub efforts: Vec<usize>,
    /// Partitions of the collection in the HTTP phase (one shard each). With arroy every
    /// shard inspects the same search-k, so more partitions cost more per query.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Vectors per `POST /vectors` in the HTTP phase.
    #[arg(long, default_value_t = 2_000)]
    pub batch: usize,
    /// Search efforts to also run through HTTP (each as the request's `effort`), after a
    /// run at the server's default; comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub http_efforts: Vec<usize>,
    /// Skip the HTTP phase.
    #[arg(long)]
    pub no_http: bool,
    /// In the HTTP phase, also serve gRPC (`--grpc-listen`) and run every effort and
    /// client count through gRPC's `Search` too, right after the REST passes of the same
    /// point (points with `"via": "grpc"`), and compare the two doors.
    #[arg(long)]
    pub grpc: bool,
    /// Skip the in-process phase.
    #[arg(long)]
    pub no_in_process: bool,
    /// Through HTTP, load every base vector with a payload (`{"package": id, "text": its
    /// line of base.txt}`) and ask searches for the payloads of their hits.
    #[arg(long)]
    pub payloads: bool,
    /// The binary the HTTP phase runs as its server (`EXE serve ...`); default the
    /// `hektor` beside `hektor-bench` (or --hektor). A bench of this version can so
    /// measure another version's server.
    #[arg(long)]
    pub server_exe: Option<PathBuf>,
    /// Extra flags for the HTTP phase's server (repeat; e.g. `--server-arg=--search-threads=1`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Batch sizes of `--engine batch` (the batch search route's CPU path against
    /// one-at-a-time exact search, in-process), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub batch_sizes: Vec<usize>,
    /// Peer engines to run (passed to peers.py --engines).
    #[arg(long, default_value = "hnswlib,faiss,usearch,numpy")]
    pub peer_engines: String,
    /// Path of peers.py (default: scripts/peers.py of this source tree, else ./scripts).
    #[arg(long)]
    pub peers_script: Option<PathBuf>,
    /// Threads of the in-process hot engine's index build (`HnswParams::build_threads`),
    /// also the peers' build threads (`peers.py --build-threads`), so builds compare at
    /// the same threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub build_threads: u64,
    /// Where the in-process hot engine's build takes candidate neighbour lists from:
    /// `off` (the beam search alone, as hnswlib), `cpu` or `gpu` (the batch worker;
    /// `gpu` needs the `gpu` feature and a device, else runs as `cpu`).
    #[arg(long, default_value = "off", value_parser = ["off", "cpu", "gpu"])]
    pub build_candidates: String,
    /// Beam width of the in-process hot engine's build (`HnswParams::ef_construction`).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub ef_construction: u64,
}

/// One measured point (ours or a peer's), in the shape `peers.py` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Point {
    engine: String,
    threads: usize,
    recall_at_10: f64,
    qps: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    build_s: Option<f64>,
    rss_mb: Option<f64>,
    via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clients: Option<usize>,
    #[serde(default)]
    params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pick: Option<f64>,
    /// In-process only: the part of `build_s` spent applying the vectors (LMDB writes),
    /// the rest being `build_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apply_s: Option<f64>,
    /// HTTP only: CPU time (user + system) of the server process per query, in µs, over
    /// every timed pass of the point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_cpu_us_per_query: Option<f64>,
    /// HTTP only: the same for the bench process (the clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cpu_us_per_query: Option<f64>,
    /// HTTP and gRPC: the server's resident memory (`Rss`) after the point, in MiB, from
    /// `/proc/<pid>/smaps_rollup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_rss_mb: Option<f64>,
    /// The same for its proportional set size (`Pss`: shared pages divided among the
    /// processes mapping them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_pss_mb: Option<f64>,
}

/// The ingest measurement of the HTTP phase.
#[derive(Debug, Clone, Serialize)]
struct IngestLine {
    ingest_vectors_per_s: f64,
    engine: String,
    vectors: usize,
    batch: usize,
    partitions: u32,
    /// Seconds from the first write until the last write was acknowledged (durable).
    acked_s: f64,
    /// Seconds from the first write until a search with the merged token answered.
    searchable_s: f64,
    /// Seconds from the first write until no shard had vectors waiting for the index.
    indexed_s: f64,
    via: &'static str,
}

/// Collects what has been measured and prints it as it comes.
struct Report {
    json: bool,
    ours: Vec<Point>,
    peers: Vec<Point>,
    ingest: Vec<IngestLine>,
    table_header_printed: bool,
}

impl Report {
    fn print_value(&self, value: &Value) {
        println!("{value}");
    }

    fn point(&mut self, point: Point, peer: bool) {
        if self.json {
            let mut v = serde_json::to_value(&point).unwrap_or(Value::Null);
            if peer {
                v["peer"] = Value::Bool(true);
            }
            self.print_value(&v);
        } else {
            if !self.table_header_printed {
                println!(
                    "{:<11} {:<12} {:>4} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  params",
                    "via",
                    "engine",
                    "thr",
                    "recall",
                    "qps",
                    "p50_ms",
                    "p99_ms",
                    "build_s",
                    "rss_mb",
                    "srv_us/q",
                    "cli_us/q"
                );
                self.table_header_printed = true;
            }
            let opt = |v: Option<f64>, prec: usize| match v {
                Some(x) => format!("{x:.prec$}"),
                None => "-".to_owned(),
            };
            let via = match (peer, point.clients) {
                (true, _) => "peer".to_owned(),
                (false, Some(c)) => format!("{} c={c}", point.via),
                (false, None) => point.via.clone(),
            };
            let mut params = point.params.to_string();
            if let Some(p) = point.pick {
                params = format!("{params} [pick {p}]");
            }
            println!(
                "{:<11} {:<12} {:>4} {:>7.4} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
                via,
                point.engine,
                point.threads,
                point.recall_at_10,
                point.qps,
                opt(point.p50_ms, 3),
                opt(point.p99_ms, 3),
                opt(point.build_s, 1),
                opt(point.rss_mb, 0),
                opt(point.server_cpu_us_per_query, 1),
                opt(point.client_cpu_us_per_query, 1),
                params
            );
        }
        if peer {
            self.peers.push(point);
        } else {
            self.ours.push(point);
        }
    }

    fn ingest(&mut self, line: IngestLine) {
        if self.json {
            self.print_value(&serde_json::to_value(&line).unwrap_or(Value::Null));
        } else {
            println!(
                "ingest {} via http: {} vectors in batches of {} over {} partition(s): {:.0} vectors/s until searchable (acked {:.1}s, searchable {:.1}s, indexed {:.1}s)",
                line.engine,
                line.vectors,
                line.batch,
                line.partitions,
                line.ingest_vectors_per_s,
                line.acked_s,
                line.searchable_s,
                line.indexed_s
            );
        }
        self.ingest.push(line);
    }

    fn summary(&self, value: Value) {
        if self.json {
            self.print_value(&value);
        } else {
            let text = value
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            println!("{text}");
        }
    }
}

/// The engine named `name` (any name [`EngineKind`] deserialises from).
fn parse_engine(name: &str) -> anyhow::Result<EngineKind> {
    serde_json::from_value(Value::String(name.to_owned()))
        .map_err(|_| anyhow::anyhow!("unknown engine `{name}`"))
}

/// One point of an engine's sweep: how to set it, and how to describe it.
struct SweepPoint {
    /// Reopen the shard with this configuration (a knob fixed at open: arroy's search-k).
    reopen: Option<ShardConfig>,
    /// Set this per-search effort on the open shard (`Shard::set_search_effort`).
    effort: Option<usize>,
    params: Value,
}

/// The sweep of `kind`'s search-effort knob. Engines with a run-time effort knob
/// (`Shard::search_effort` is `Some`, e.g. hnsw's ef_search) sweep `--efforts`; arroy,
/// whose search-k is fixed when a shard opens, reopens per `--arroy-factors` point; any
/// other engine is measured once at its defaults. A new engine with a run-time knob needs
/// no change here.
fn sweep(kind: EngineKind, shard: &Shard, args: &SearchBenchArgs) -> Vec<SweepPoint> {
    if kind == EngineKind::Arroy {
        let factors = args
            .arroy_factors
            .clone()
            .unwrap_or_else(|| DEFAULT_ARROY_FACTORS.to_vec());
        return factors
            .into_iter()
            .filter(|&f| f > 0)
            .map(|factor| {
                let mut config = shard.config().clone();
                config.arroy = ArroyParams {
                    search_k_factor: factor,
                    ..config.arroy
                };
                let trees = config.arroy.n_trees;
                SweepPoint {
                    params: json!({
                        "search_k_factor": factor,
                        "search_k": trees.map(|t| K * t * factor),
                        "n_trees": trees,
                        "split_after": config.arroy.split_after,
                    }),
                    reopen: Some(config),
                    effort: None,
                }
            })
            .collect();
    }
    if shard.search_effort().is_some() {
        return args
            .efforts
            .iter()
            .map(|&effort| SweepPoint {
                reopen: None,
                effort: Some(effort),
                params: json!({ "search_effort": effort }),
            })
            .collect();
    }
    vec![SweepPoint {
        reopen: None,
        effort: None,
        params: json!({}),
    }]
}

/// Resident memory of this process, in MiB (None where /proc is unavailable).
fn rss_mib() -> Option<f64> {
    rss_mib_of("self")
}

/// Resident memory of process `pid` ("self" or a number), in MiB.
fn rss_mib_of(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Rss and Pss of process `pid`, in MiB, from `/proc/<pid>/smaps_rollup` (None where it
/// is unavailable).
fn rss_pss_mib_of(pid: &str) -> (Option<f64>, Option<f64>) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return (None, None);
    };
    let field = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    (field("Rss:"), field("Pss:"))
}

/// CPU time (utime + stime, in clock ticks) process `pid` ("self" or a number) has used,
/// from `/proc/<pid>/stat`; None where /proc is unavailable.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) may hold spaces and parentheses: count from its last ')'.
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU used by the server and by this process over some passes.
#[derive(Default)]
struct CpuTally {
    server_ticks: u64,
    client_ticks: u64,
    queries: usize,
    /// Whether every reading worked (else nothing is reported).
    complete: bool,
}

impl CpuTally {
    fn new() -> CpuTally {
        CpuTally {
            complete: true,
            ..CpuTally::default()
        }
    }

    /// Per query, in µs: (server, client).
    fn per_query_us(&self, ticks_per_s: f64) -> (Option<f64>, Option<f64>) {
        if !self.complete || self.queries == 0 {
            return (None, None);
        }
        let us = |ticks: u64| ticks as f64 / ticks_per_s * 1e6 / self.queries as f64;
        (Some(us(self.server_ticks)), Some(us(self.client_ticks)))
    }
}

/// One query's outcome: its number, its latency and the base rows it returned.
type QueryResult = (usize, Duration, Vec<u32>);

/// One timed pass over the queries.
struct Pass {
    qps: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    recall: f64,
}

impl Pass {
    /// From per-query (latency, returned base rows) and the wall time of the pass.
    fn from_results(ds: &Dataset, results: Vec<QueryResult>, wall: Duration) -> Pass {
        let n = results.len();
        let latency = Percentiles::of_durations(results.iter().map(|r| r.1));
        let some = |ms: f64| (latency.count > 0).then_some(ms);
        let recall = if n == 0 {
            0.0
        } else {
            results
                .iter()
                .map(|(q, _, rows)| recall_at_k(ds, *q, rows, K))
                .sum::<f64>()
                / n as f64
        };
        Pass {
            qps: n as f64 / wall.as_secs_f64().max(1e-9),
            p50_ms: some(latency.p50_ms),
            p99_ms: some(latency.p99_ms),
            recall,
        }
    }
}

/// The data set with its id → base row map, shared by every phase.
struct Bench {
    ds: Dataset,
    rows: HashMap<String, u32>,
    n_queries: usize,
}

impl Bench {
    fn rows_of<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<u32> {
        ids.map(|id| self.rows.get(id).copied().unwrap_or(u32::MAX))
            .collect()
    }
}

/// Run every query once on `threads` threads against `shard`.
fn shard_pass(bench: &Bench, shard: &Shard, threads: usize) -> anyhow::Result<Pass> {
    let threads = threads.max(1);
    let nq = bench.n_queries;
    let started = Instant::now();
    let per_thread: Vec<anyhow::Result<Vec<QueryResult>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<Vec<QueryResult>> {
                    let mut out = Vec::with_capacity(nq / threads + 1);
                    for q in (t..nq).step_by(threads) {
                        let t0 = Instant::now();
                        let hits = shard.search(bench.ds.query(q), K, None)?;
                        let latency = t0.elapsed();
                        out.push((q, latency, hits));
                    }
                    Ok(out
                        .into_iter()
                        .map(|(q, l, hits)| {
                            (q, l, bench.rows_of(hits.iter().map(|h| h.id.as_str())))
                        })
                        .collect())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a query thread panicked")))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut results = Vec::with_capacity(nq);
    for r in per_thread {
        results.extend(r?);
    }
    Ok(Pass::from_results(&bench.ds, results, wall))
}

/// Phase 1 for one engine: build, then sweep. Emits one point per sweep point (the
/// fastest of `--passes` passes).
fn in_process(
    bench: &Bench,
    name: &str,
    kind: EngineKind,
    args: &SearchBenchArgs,
    mut emit: impl FnMut(Point),
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temp dir for the shard")?;
    let rss_before = rss_mib();
    let build_started = Instant::now();
    let mut config = ShardConfig::new(bench.ds.dim, Distance::Cosine, kind);
    config.hnsw.build_threads = args.build_threads as usize;
    config.hnsw.ef_construction = args.ef_construction as usize;
    config.hnsw.candidates = hektor_indexers::BuildCandidates::parse(&args.build_candidates)?;
    let candidates_before = hektor_indexers::candidate_stats();
    let mut shard =
        Shard::open(dir.path(), config).with_context(|| format!("opening a {name} shard"))?;
    let ds = &bench.ds;
    let mut offset = 0u64;
    for chunk in (0..ds.len()).collect::<Vec<_>>().chunks(2_000) {
        let ops: Vec<(u64, ShardOp)> = chunk
            .iter()
            .map(|&row| {
                let id = &ds.ids[row];
                offset += 1;
                (
                    offset - 1,
                    ShardOp::Upsert {
                        id: id.clone(),
                        tenant: None,
                        ring: ring::position(None, id),
                        vector: ds.base_vector(row).to_vec(),
                        payload: None,
                        hlc: Hlc(1),
                    },
                )
            })
            .collect();
        let report = shard.apply(&ops)?;
        if let Some(bad) = report.rejected.first() {
            anyhow::bail!(
                "{} base vectors rejected, e.g. {}: {}",
                report.rejected.len(),
                bad.id,
                bad.reason
            );
        }
    }
    let apply_s = build_started.elapsed().as_secs_f64();
    shard.build_index()?;
    let build_s = build_started.elapsed().as_secs_f64();
    let build_threads = (kind == EngineKind::Hnsw).then_some(args.build_threads);
    let candidates = hektor_indexers::candidate_stats();
    let listed = json!({
        "build_candidates": args.build_candidates,
        "ef_construction": args.ef_construction,
        "candidate_rows_cpu": candidates.cpu_rows - candidates_before.cpu_rows,
        "candidate_rows_gpu": candidates.gpu_rows - candidates_before.gpu_rows,
        "candidate_s": candidates.seconds - candidates_before.seconds,
    });
    eprintln!(
        "{name}: applied {} vectors in {apply_s:.1}s, built the index in {:.1}s{}",
        ds.len(),
        build_s - apply_s,
        build_threads.map_or(String::new(), |t| format!(" on {t} thread(s)"))
    );
    for point in sweep(kind, &shard, args) {
        if let Some(config) = point.reopen {
            // The environment must be closed before it is opened again.
            drop(shard);
            shard = Shard::open(dir.path(), config)?;
        }
        if let Some(effort) = point.effort {
            shard.set_search_effort(effort);
        }
        // Best of `--passes` passes; a slow point stops early once it has used its time
        // budget (at least one pass always runs). The passes run are in the params.
        let mut best: Option<Pass> = None;
        let point_started = Instant::now();
        let mut passes = 0usize;
        while passes < args.passes.max(1)
            && (passes == 0 || point_started.elapsed().as_secs_f64() < args.point_budget_s)
        {
            let pass = shard_pass(bench, &shard, args.threads)?;
            passes += 1;
            if best.as_ref().is_none_or(|b| pass.qps > b.qps) {
                best = Some(pass);
            }
        }
        let mut params = point.params;
        params["passes"] = json!(passes);
        if let Some(t) = build_threads {
            params["build_threads"] = json!(t);
            for (k, v) in listed.as_object().into_iter().flatten() {
                params[k] = v.clone();
            }
        }
        let rss_mb = match (rss_before, rss_mib()) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        if let Some(best) = best {
            emit(Point {
                engine: name.to_owned(),
                threads: args.threads.max(1),
                recall_at_10: best.recall,
                qps: best.qps,
                p50_ms: best.p50_ms,
                p99_ms: best.p99_ms,
                build_s: Some(build_s),
                rss_mb,
                via: "in-process".into(),
                clients: None,
                params,
                pick: None,
                apply_s: Some(apply_s),
                server_cpu_us_per_query: None,
                client_cpu_us_per_query: None,
                server_rss_mb: None,
                server_pss_mb: None,
            });
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct SearchResponse {
    hits: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct SearchHit {
    id: String,
}

/// POST `body` and return the response body; a non-2xx answer is an error with its text.
async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<bytes::Bytes> {
    let response = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(bytes)
}

/// The body of one timed search: the vector as `f32`s (each in its shortest exact
/// decimal form, as a Rust client's `serde_json` writes it).
#[derive(Serialize)]
struct QueryBody<'a> {
    vector: &'a [f32],
    k: usize,
    without_payload: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    effort: Option<usize>,
}

/// One search client's connection: HTTP/1.1 keep-alive over hyper's bare client
/// connection. The clients share the node's cores, so the load generator is kept lean
/// (no connection pool, no URL parsing per request).
pub(crate) struct SearchConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: String,
}

impl SearchConn {
    pub(crate) async fn open(addr: std::net::SocketAddr) -> anyhow::Result<SearchConn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(SearchConn {
            sender,
            host: addr.to_string(),
        })
    }

    /// POST `body` to `path`; the answer's body, or an error naming the status.
    async fn post(&mut self, path: &str, body: bytes::Bytes) -> anyhow::Result<bytes::Bytes> {
        let (status, bytes) = self.post_status(path, body).await?;
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }

    /// POST `body` to `path`; the answer's status and body, whatever the status.
    pub(crate) async fn post_status(
        &mut self,
        path: &str,
        body: bytes::Bytes,
    ) -> anyhow::Result<(u16, bytes::Bytes)> {
        use http_body_util::BodyExt;
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

/// One pass of every query through `POST /search` from `clients` concurrent tasks, each
/// on its own keep-alive connection.
async fn http_pass(
    bench: &Arc<Bench>,
    addr: std::net::SocketAddr,
    path: &Arc<str>,
    bodies: &Arc<Vec<bytes::Bytes>>,
    clients: usize,
) -> anyhow::Result<Pass> {
    let clients = clients.max(1);
    let nq = bodies.len();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(SearchConn::open(addr).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (t, mut conn) in conns.into_iter().enumerate() {
        let path = Arc::clone(path);
        let bodies = Arc::clone(bodies);
        let bench = Arc::clone(bench);
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(nq / clients + 1);
            for q in (t..nq).step_by(clients) {
                let t0 = Instant::now();
                let bytes = conn.post(&path, bodies[q].clone()).await?;
                let latency = t0.elapsed();
                let response: SearchResponse =
                    serde_json::from_slice(&bytes).context("decoding a search response")?;
                let rows = bench.rows_of(response.hits.iter().map(|h| h.id.as_str()));
                out.push((q, latency, rows));
            }
            anyhow::Ok(out)
        });
    }
    let mut results = Vec::with_capacity(nq);
    while let Some(joined) = tasks.join_next().await {
        results.extend(joined.context("a client task panicked")??);
    }
    let wall = started.elapsed();
    Ok(Pass::from_results(&bench.ds, results, wall))
}

/// One pass of every query through gRPC's `Search` from `clients` concurrent tasks, each
/// on its own HTTP/2 connection (the same lean shape as [`http_pass`]: one request in
/// flight per client, the requests built before the clock starts).
async fn grpc_pass(
    bench: &Arc<Bench>,
    addr: std::net::SocketAddr,
    requests: &Arc<Vec<hektor_grpc::proto::SearchRequest>>,
    clients: usize,
) -> anyhow::Result<Pass> {
    let clients = clients.max(1);
    let nq = requests.len();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(hektor_grpc::Client::connect_lean(addr).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (t, mut conn) in conns.into_iter().enumerate() {
        let requests = Arc::clone(requests);
        let bench = Arc::clone(bench);
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(nq / clients + 1);
            for q in (t..nq).step_by(clients) {
                let t0 = Instant::now();
                let response = conn.search(requests[q].clone()).await.map_err(|s| {
                    anyhow::anyhow!("gRPC Search answered {:?}: {}", s.code(), s.message())
                })?;
                let latency = t0.elapsed();
                let rows = bench.rows_of(response.hits.iter().map(|h| h.id.as_str()));
                out.push((q, latency, rows));
            }
            anyhow::Ok(out)
        });
    }
    let mut results = Vec::with_capacity(nq);
    while let Some(joined) = tasks.join_next().await {
        results.extend(joined.context("a client task panicked")??);
    }
    let wall = started.elapsed();
    Ok(Pass::from_results(&bench.ds, results, wall))
}

/// The HTTP phase's server: `hektor serve` as a child process, killed when dropped.
struct ServerProc {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    addr: std::net::SocketAddr,
    /// The gRPC listener's address, when started with one.
    grpc: Option<std::net::SocketAddr>,
}

impl ServerProc {
    /// Start `exe serve` for engine `name` with its data in `dir`, on a free port.
    fn start(
        exe: &Path,
        name: &str,
        dir: &Path,
        extra: &[String],
        grpc: bool,
    ) -> anyhow::Result<ServerProc> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let grpc = if grpc {
            Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
        } else {
            None
        };
        let grpc_flags: Vec<String> = grpc
            .map(|a| vec!["--grpc-listen".to_owned(), a.to_string()])
            .unwrap_or_default();
        let child = std::process::Command::new(exe)
            .arg("serve")
            .args(&grpc_flags)
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--node-id", "bench", "--engine", name, "--no-planner"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        Ok(ServerProc {
            child,
            url: format!("http://{addr}"),
            addr,
            grpc,
        })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Vectors waiting for the index over every shard of the collection at `url`, once every
/// one of its `partitions` shards is open on the server (`GET /collections/{c}`).
async fn pending_over_http(
    client: &reqwest::Client,
    url: &str,
    partitions: u32,
) -> anyhow::Result<Option<u64>> {
    let view: Value = client.get(url).send().await?.json().await?;
    let shards = view["shards"].as_array().cloned().unwrap_or_default();
    let open: Vec<u64> = shards
        .iter()
        .filter_map(|s| s.get("pending").and_then(Value::as_u64))
        .collect();
    if open.len() < partitions.max(1) as usize {
        return Ok(None);
    }
    Ok(Some(open.iter().sum()))
}

/// Phase 2 for one engine: a node in a child process, ingest through HTTP, then search.
async fn http_phase(
    bench: &Arc<Bench>,
    name: &str,
    args: &SearchBenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temp dir for the node")?;
    let exe = match &args.server_exe {
        Some(exe) => exe.clone(),
        None => crate::nodes::hektor_exe()?,
    };
    let server = ServerProc::start(&exe, name, dir.path(), &args.server_args, args.grpc)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    crate::nodes::wait_healthy(&client, &server.url).await?;
    eprintln!(
        "{name} http: server {} (pid {}) at {}",
        exe.display(),
        server.pid(),
        server.url
    );
    let result = http_measure(bench, name, args, report, &client, &server).await;
    drop(server);
    result
}

async fn http_measure(
    bench: &Arc<Bench>,
    name: &str,
    args: &SearchBenchArgs,
    report: &mut Report,
    client: &reqwest::Client,
    server: &ServerProc,
) -> anyhow::Result<()> {
    let addr = server.addr;
    let base = format!("{}/collections/{COLLECTION}", server.url);
    let create =
        json!({ "dimension": bench.ds.dim, "distance": "cosine", "partitions": args.partitions });
    let response = client.put(&base).json(&create).send().await?;
    if !response.status().is_success() {
        anyhow::bail!(
            "creating the collection: {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let texts: Vec<String> = if args.payloads {
        let dir = args.data.clone().unwrap_or_else(data_dir);
        std::fs::read_to_string(dir.join("base.txt"))
            .with_context(|| format!("--payloads reads {}", dir.join("base.txt").display()))?
            .lines()
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };

    // Encode every batch before the clock starts: the rate is the server's, not the encoder's.
    let ds = &bench.ds;
    let batch = args.batch.max(1);
    let mut bodies = Vec::new();
    for start in (0..ds.len()).step_by(batch) {
        let records: Vec<VectorRecord> = (start..(start + batch).min(ds.len()))
            .map(|row| {
                VectorRecord::Upsert(VectorUpsert {
                    collection: COLLECTION.into(),
                    id: ds.ids[row].clone(),
                    tenant: None,
                    vector: ds.base_vector(row).to_vec(),
                    payload: args.payloads.then(|| {
                        json!({
                            "package": ds.ids[row],
                            "text": texts.get(row).map_or("", String::as_str),
                        })
                    }),
                    hlc: Hlc::default(),
                    origin: String::new(),
                })
            })
            .collect();
        bodies.push(encode_bulk(&records)?);
    }
    let vectors_url = format!("{base}/vectors");
    let search_url = format!("{base}/search");
    let mut token: BTreeMap<u32, u64> = BTreeMap::new();
    let started = Instant::now();
    for body in bodies {
        let bytes = post(client, &vectors_url, BULK_CONTENT_TYPE, body).await?;
        let answer: Value = serde_json::from_slice(&bytes)?;
        let part: BTreeMap<String, u64> =
            serde_json::from_value(answer["token"].clone()).context("reading the write token")?;
        for (p, offset) in part {
            let p: u32 = p.parse().context("a token partition is not a number")?;
            let e = token.entry(p).or_insert(offset);
            *e = (*e).max(offset);
        }
    }
    let acked_s = started.elapsed().as_secs_f64();
    // Searchable: a search carrying the merged token answers (it waits for every shard).
    let probe = serde_json::to_vec(&json!({
        "vector": ds.query(0), "k": K, "without_payload": true,
        "consistency": {
            "after": token,
            "timeout_ms": HTTP_WAIT.min(MAX_CONSISTENCY_TIMEOUT).as_millis() as u64,
        },
    }))?;
    post(client, &search_url, "application/json", probe).await?;
    let searchable_s = started.elapsed().as_secs_f64();
    eprintln!("{name} http: acked in {acked_s:.1}s, searchable after {searchable_s:.1}s; waiting for the index build");
    // Then wait for the background index build, so the searches below hit the index.
    let deadline = Instant::now() + HTTP_WAIT;
    loop {
        let waiting = pending_over_http(client, &base, args.partitions)
            .await?
            .unwrap_or(u64::MAX);
        if waiting == 0 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the index build did not finish within {HTTP_WAIT:?} ({waiting} vectors waiting)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let indexed_s = started.elapsed().as_secs_f64();
    report.ingest(IngestLine {
        ingest_vectors_per_s: ds.len() as f64 / searchable_s.max(1e-9),
        engine: name.to_owned(),
        vectors: ds.len(),
        batch,
        partitions: args.partitions,
        acked_s,
        searchable_s,
        indexed_s,
        via: "http",
    });

    let search_path: Arc<str> = Arc::from(format!("/collections/{COLLECTION}/search"));
    let pool_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ticks_per_s = clock_ticks_per_s();
    let server_pid = server.pid();
    // The server's default effort, then each asked-for one.
    let efforts: Vec<Option<usize>> = std::iter::once(None)
        .chain(args.http_efforts.iter().map(|&e| Some(e)))
        .collect();
    for effort in efforts {
        let queries: Arc<Vec<bytes::Bytes>> = Arc::new(
            (0..bench.n_queries)
                .map(|q| {
                    serde_json::to_vec(&QueryBody {
                        vector: ds.query(q),
                        k: K,
                        without_payload: !args.payloads,
                        effort,
                    })
                    .map(bytes::Bytes::from)
                })
                .collect::<Result<_, _>>()?,
        );
        let warm: Arc<Vec<bytes::Bytes>> =
            Arc::new(queries.iter().take(HTTP_WARMUP).cloned().collect());
        http_pass(bench, addr, &search_path, &warm, 1).await?;
        // The same queries as gRPC messages (packed floats), when asked for.
        let grpc_requests: Option<Arc<Vec<hektor_grpc::proto::SearchRequest>>> =
            server.grpc.map(|_| {
                Arc::new(
                    (0..bench.n_queries)
                        .map(|q| hektor_grpc::proto::SearchRequest {
                            collection: COLLECTION.into(),
                            vector: ds.query(q).to_vec(),
                            k: Some(K as u32),
                            without_payload: !args.payloads,
                            effort: effort.map(|e| e as u32),
                            ..Default::default()
                        })
                        .collect(),
                )
            });
        if let (Some(grpc), Some(requests)) = (server.grpc, &grpc_requests) {
            let warm = Arc::new(requests.iter().take(HTTP_WARMUP).cloned().collect());
            grpc_pass(bench, grpc, &warm, 1).await?;
        }
        for &clients in &args.clients {
            let vias: &[&str] = if grpc_requests.is_some() {
                &["http", "grpc"]
            } else {
                &["http"]
            };
            for &via in vias {
                // The fastest of `--passes` passes, like the in-process sweep; CPU over all.
                let mut best: Option<Pass> = None;
                let mut cpu = CpuTally::new();
                let budget = Instant::now();
                for pass_no in 0..args.passes.max(1) {
                    if pass_no > 0 && budget.elapsed().as_secs_f64() > args.point_budget_s {
                        break;
                    }
                    let before = (cpu_ticks(&server_pid), cpu_ticks("self"));
                    let pass = match (via, server.grpc, &grpc_requests) {
                        ("grpc", Some(grpc), Some(requests)) => {
                            grpc_pass(bench, grpc, requests, clients).await?
                        }
                        _ => http_pass(bench, addr, &search_path, &queries, clients).await?,
                    };
                    match (before, (cpu_ticks(&server_pid), cpu_ticks("self"))) {
                        ((Some(s0), Some(c0)), (Some(s1), Some(c1))) => {
                            cpu.server_ticks += s1.saturating_sub(s0);
                            cpu.client_ticks += c1.saturating_sub(c0);
                            cpu.queries += queries.len();
                        }
                        _ => cpu.complete = false,
                    }
                    if best.as_ref().is_none_or(|b| pass.qps > b.qps) {
                        best = Some(pass);
                    }
                }
                let Some(pass) = best else { continue };
                let (server_cpu, client_cpu) = cpu.per_query_us(ticks_per_s);
                let mut params = match effort {
                    Some(e) => json!({ "partitions": args.partitions, "effort": e }),
                    None => json!({ "partitions": args.partitions, "defaults": true }),
                };
                if args.payloads {
                    params["payloads"] = json!(true);
                }
                let (server_rss_mb, server_pss_mb) = rss_pss_mib_of(&server_pid);
                report.point(
                    Point {
                        engine: name.to_owned(),
                        threads: pool_threads,
                        recall_at_10: pass.recall,
                        qps: pass.qps,
                        p50_ms: pass.p50_ms,
                        p99_ms: pass.p99_ms,
                        build_s: None,
                        rss_mb: rss_mib_of(&server_pid),
                        via: via.into(),
                        clients: Some(clients),
                        params,
                        pick: None,
                        apply_s: None,
                        server_cpu_us_per_query: server_cpu,
                        client_cpu_us_per_query: client_cpu,
                        server_rss_mb,
                        server_pss_mb,
                    },
                    false,
                );
            }
        }
    }
    // Drop the collection: stops its consumers so they cost nothing in later phases.
    let _ = client.delete(&base).send().await;
    Ok(())
}

/// Where peers.py is.
fn peers_script(args: &SearchBenchArgs) -> PathBuf {
    if let Some(p) = &args.peers_script {
        return p.clone();
    }
    let in_tree = crate::nodes::in_source_tree("scripts/peers.py");
    if in_tree.exists() {
        in_tree
    } else {
        PathBuf::from("scripts/peers.py")
    }
}

/// Phase 3: run peers.py and forward its lines. A missing python or module is a note.
async fn peers_phase(data: &Path, args: &SearchBenchArgs, report: &mut Report) {
    use tokio::io::AsyncBufReadExt;
    let script = peers_script(args);
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&script)
        .arg("--data")
        .arg(data)
        .arg("--json")
        .arg("--pick")
        .arg("--threads")
        .arg(args.threads.max(1).to_string())
        .arg("--build-threads")
        .arg(args.build_threads.to_string())
        .arg("--engines")
        .arg(&args.peer_engines)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(n) = args.queries {
        cmd.arg("--queries").arg(n.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!(
                "note: peers not measured: could not run python3 {}: {err}",
                script.display()
            );
            return;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        eprintln!("note: peers not measured: no stdout from peers.py");
        return;
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(mut value) = serde_json::from_str::<Value>(&line) else {
            eprintln!("peers.py: {line}");
            continue;
        };
        if value.get("skipped").is_some() {
            eprintln!(
                "note: peer {} skipped: {}",
                value["engine"], value["skipped"]
            );
            if report.json {
                value["peer"] = Value::Bool(true);
                report.print_value(&value);
            }
            continue;
        }
        match serde_json::from_value::<Point>(value.clone()) {
            Ok(point) => report.point(point, true),
            Err(err) => eprintln!("note: unreadable peer line ({err}): {line}"),
        }
    }
    match child.wait().await {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!(
            "note: peers.py exited with {status} (a missing module? pip install -r scripts/requirements-bench.txt); going on"
        ),
        Err(err) => eprintln!("note: waiting for peers.py: {err}"),
    }
}

/// The fastest point with recall at least `target`.
fn fastest_at<'a>(points: impl Iterator<Item = &'a Point>, target: f64) -> Option<&'a Point> {
    points
        .filter(|p| p.recall_at_10 >= target)
        .max_by(|a, b| a.qps.total_cmp(&b.qps))
}

/// Phase 4: picks, ratios against the peers, and the issue's goals.
fn summarise(report: &mut Report, engines: &[String]) {
    let ours_in_process: Vec<Point> = report
        .ours
        .iter()
        .filter(|p| p.via == "in-process")
        .cloned()
        .collect();
    // Picks of ours, like peers.py --pick.
    for engine in engines {
        for target in TARGETS {
            let mine = ours_in_process.iter().filter(|p| &p.engine == engine);
            match fastest_at(mine, target) {
                Some(p) => {
                    let mut p = p.clone();
                    p.pick = Some(target);
                    report.point(p, false);
                }
                None if ours_in_process.iter().any(|p| &p.engine == engine) => {
                    eprintln!("note: {engine} never reached recall {target} in its sweep");
                }
                None => {}
            }
        }
    }
    let mut peer_names: Vec<String> = Vec::new();
    for p in &report.peers {
        if !peer_names.contains(&p.engine) {
            peer_names.push(p.engine.clone());
        }
    }
    for engine in engines {
        let mine: Vec<&Point> = ours_in_process
            .iter()
            .filter(|p| &p.engine == engine)
            .collect();
        if mine.is_empty() {
            continue;
        }
        for peer in &peer_names {
            let theirs: Vec<&Point> = report.peers.iter().filter(|p| &p.engine == peer).collect();
            for target in TARGETS {
                let Some(t) = fastest_at(theirs.iter().copied(), target) else {
                    continue;
                };
                let m = fastest_at(mine.iter().copied(), target);
                report.summary(json!({
                    "ratio": format!("qps_at_{target}"),
                    "engine": engine,
                    "vs": peer,
                    "value": m.map(|m| m.qps / t.qps.max(1e-9)),
                    "engine_qps": m.map(|m| m.qps),
                    "vs_qps": t.qps,
                    "threads": t.threads,
                }));
            }
            let my_build = mine.iter().find_map(|p| p.build_s);
            let their_build = theirs.iter().find_map(|p| p.build_s);
            if let (Some(a), Some(b)) = (my_build, their_build) {
                if b > 0.0 {
                    // `build_s` is apply + index build; `index_value` compares the index
                    // build alone (what the peer's `build_s` is).
                    let index_s = mine.iter().find_map(|p| Some(p.build_s? - p.apply_s?));
                    let threads = |ps: &[&Point]| {
                        ps.iter()
                            .find_map(|p| p.params.get("build_threads").cloned())
                    };
                    report.summary(json!({
                        "ratio": "build_s", "engine": engine, "vs": peer, "value": a / b,
                        "engine_build_s": a, "vs_build_s": b,
                        "engine_index_s": index_s, "index_value": index_s.map(|i| i / b),
                        "build_threads": threads(&mine), "vs_build_threads": threads(&theirs),
                    }));
                }
            }
        }
    }
    // The issue's goals.
    for engine in engines {
        let mine = ours_in_process.iter().filter(|p| &p.engine == engine);
        let ours = fastest_at(mine, 0.95).map(|p| p.qps);
        if let Some(h) = fastest_at(report.peers.iter().filter(|p| p.engine == "hnswlib"), 0.95) {
            report.summary(json!({
                "goal": "in-process qps at recall >= 0.95 >= hnswlib's",
                "engine": engine, "value": ours, "target": h.qps,
                "met": ours.is_some_and(|q| q >= h.qps),
            }));
        }
        let http = |clients: usize| {
            report
                .ours
                .iter()
                .filter(move |p| &p.engine == engine && p.via == "http")
                .filter(move |p| p.clients == Some(clients))
        };
        if let Some(p) = fastest_at(http(1), 0.95) {
            let goal = json!({
                "goal": format!("http p99 ms at recall >= 0.95, 1 client <= {GOAL_HTTP_P99_MS}"),
                "engine": engine, "value": p.p99_ms, "target": GOAL_HTTP_P99_MS,
                "met": p.p99_ms.is_some_and(|v| v <= GOAL_HTTP_P99_MS), "params": p.params,
            });
            report.summary(goal);
        }
        if let Some(p) = fastest_at(http(GOAL_HTTP_CLIENTS), 0.95) {
            let goal = json!({
                "goal": format!(
                    "http qps at recall >= 0.95, {GOAL_HTTP_CLIENTS} clients >= {GOAL_HTTP_QPS}"
                ),
                "engine": engine, "value": p.qps, "target": GOAL_HTTP_QPS,
                "met": p.qps >= GOAL_HTTP_QPS, "params": p.params,
                "recall_at_10": p.recall_at_10,
            });
            report.summary(goal);
        }
        // Per client count: the point at recall >= 0.95 whose server spent least per search.
        let mut client_counts: Vec<usize> = report
            .ours
            .iter()
            .filter(|p| &p.engine == engine && p.via == "http")
            .filter_map(|p| p.clients)
            .collect();
        client_counts.sort_unstable();
        client_counts.dedup();
        for clients in client_counts {
            let cheapest = http(clients)
                .filter(|p| p.recall_at_10 >= 0.95)
                .filter(|p| p.server_cpu_us_per_query.is_some())
                .min_by(|a, b| {
                    let cpu = |p: &Point| p.server_cpu_us_per_query.unwrap_or(f64::MAX);
                    cpu(a).total_cmp(&cpu(b))
                });
            if let Some(p) = cheapest {
                report.summary(json!({
                    "goal": format!(
                        "http server cpu us per search at recall >= 0.95, {clients} client(s) <= {GOAL_SERVER_CPU_US}"
                    ),
                    "engine": engine, "value": p.server_cpu_us_per_query,
                    "target": GOAL_SERVER_CPU_US,
                    "met": p.server_cpu_us_per_query.is_some_and(|v| v <= GOAL_SERVER_CPU_US),
                    "params": p.params, "recall_at_10": p.recall_at_10, "qps": p.qps,
                }));
            }
        }
        // gRPC (issue #16): per point, its ratios to REST's at the same effort and client
        // count in this run; the cheapest gRPC point at recall >= 0.95 per client count;
        // gRPC's QPS over REST's with 8 clients.
        let via = |via: &'static str, clients: usize| {
            report
                .ours
                .iter()
                .filter(move |p| &p.engine == engine && p.via == via)
                .filter(move |p| p.clients == Some(clients))
        };
        let mut grpc_counts: Vec<usize> = report
            .ours
            .iter()
            .filter(|p| &p.engine == engine && p.via == "grpc")
            .filter_map(|p| p.clients)
            .collect();
        grpc_counts.sort_unstable();
        grpc_counts.dedup();
        for &clients in &grpc_counts {
            for g in via("grpc", clients) {
                let Some(h) = via("http", clients).find(|h| h.params == g.params) else {
                    continue;
                };
                let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                report.summary(json!({
                    "ratio": "grpc_vs_http", "engine": engine, "clients": clients,
                    "params": g.params, "qps": g.qps / h.qps.max(1e-9),
                    "server_cpu_us_per_query": ratio(g.server_cpu_us_per_query, h.server_cpu_us_per_query),
                    "grpc_qps": g.qps, "http_qps": h.qps,
                    "grpc_server_cpu_us": g.server_cpu_us_per_query,
                    "http_server_cpu_us": h.server_cpu_us_per_query,
                    "grpc_recall_at_10": g.recall_at_10, "http_recall_at_10": h.recall_at_10,
                }));
            }
            let cheapest = via("grpc", clients)
                .filter(|p| p.recall_at_10 >= 0.95)
                .filter(|p| p.server_cpu_us_per_query.is_some())
                .min_by(|a, b| {
                    let cpu = |p: &Point| p.server_cpu_us_per_query.unwrap_or(f64::MAX);
                    cpu(a).total_cmp(&cpu(b))
                });
            if let Some(p) = cheapest {
                report.summary(json!({
                    "goal": format!(
                        "grpc server cpu us per search at recall >= 0.95, {clients} client(s) <= {GOAL_GRPC_SERVER_CPU_US}"
                    ),
                    "engine": engine, "value": p.server_cpu_us_per_query,
                    "target": GOAL_GRPC_SERVER_CPU_US,
                    "met": p.server_cpu_us_per_query.is_some_and(|v| v <= GOAL_GRPC_SERVER_CPU_US),
                    "params": p.params, "recall_at_10": p.recall_at_10, "qps": p.qps,
                }));
            }
        }
        if let (Some(g), Some(h)) = (
            fastest_at(via("grpc", GOAL_HTTP_CLIENTS), 0.95),
            fastest_at(via("http", GOAL_HTTP_CLIENTS), 0.95),
        ) {
            let value = g.qps / h.qps.max(1e-9);
            report.summary(json!({
                "goal": format!(
                    "grpc qps / http qps at recall >= 0.95, {GOAL_HTTP_CLIENTS} clients >= {GOAL_GRPC_OVER_HTTP_QPS}"
                ),
                "engine": engine, "value": value, "target": GOAL_GRPC_OVER_HTTP_QPS,
                "met": value >= GOAL_GRPC_OVER_HTTP_QPS,
                "grpc_qps": g.qps, "http_qps": h.qps,
                "grpc_params": g.params, "http_params": h.params,
            }));
        }
        if let Some(i) = report.ingest.iter().find(|i| &i.engine == engine) {
            report.summary(json!({
                "goal": "ingest vectors/s until searchable >= 10000", "engine": engine,
                "value": i.ingest_vectors_per_s, "target": GOAL_INGEST_PER_S,
                "met": i.ingest_vectors_per_s >= GOAL_INGEST_PER_S,
            }));
        }
    }
}

pub async fn run(args: SearchBenchArgs) -> anyhow::Result<()> {
    let data = args.data.clone().unwrap_or_else(data_dir);
    let mut kinds = Vec::new();
    for name in args.engines.iter().filter(|n| *n != "batch") {
        kinds.push((name.clone(), parse_engine(name)?));
    }
    if args.clients.contains(&0) {
        anyhow::bail!("--clients counts must be at least 1");
    }
    let load_dir = data.clone();
    let ds = tokio::task::spawn_blocking(move || Dataset::load(&load_dir, None))
        .await?
        .with_context(|| format!("loading the data set in {}", data.display()))?;
    let n_queries = args.queries.unwrap_or(usize::MAX).min(ds.n_queries());
    if n_queries == 0 {
        anyhow::bail!("no queries to run");
    }
    eprintln!(
        "data: {} base × {}, {n_queries} queries, from {}",
        ds.len(),
        ds.dim,
        data.display()
    );
    let rows = ds
        .ids
        .iter()
        .enumerate()
        .map(|(row, id)| (id.clone(), row as u32))
        .collect();
    let bench = Arc::new(Bench {
        ds,
        rows,
        n_queries,
    });
    if args.engines.iter().any(|n| n == "batch") {
        let (b, sizes, json) = (Arc::clone(&bench), args.batch_sizes.clone(), args.json);
        tokio::task::spawn_blocking(move || crate::batch::run(&b.ds, b.n_queries, &sizes, json))
            .await
            .context("the batch bench panicked")??;
        if kinds.is_empty() {
            return Ok(());
        }
    }
    let args = Arc::new(args);
    let mut report = Report {
        json: args.json,
        ours: Vec::new(),
        peers: Vec::new(),
        ingest: Vec::new(),
        table_header_printed: false,
    };

    if !args.no_in_process {
        for (name, kind) in &kinds {
            let (b, a, n, k) = (Arc::clone(&bench), Arc::clone(&args), name.clone(), *kind);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let work = tokio::task::spawn_blocking(move || {
                in_process(&b, &n, k, &a, |p| {
                    let _ = tx.send(p);
                })
            });
            while let Some(point) = rx.recv().await {
                report.point(point, false);
            }
            work.await.context("the in-process bench panicked")??;
        }
    }
    if !args.no_http {
        for (name, _) in &kinds {
            if let Err(err) = http_phase(&bench, name, &args, &mut report).await {
                eprintln!("note: http phase for {name} failed: {err:#}");
            }
        }
    }
    if args.peers {
        peers_phase(&data, &args, &mut report).await;
    }
    summarise(&mut report, &args.engines);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_by_name_and_unknown_is_an_error() {
        assert_eq!(parse_engine("arroy").ok(), Some(EngineKind::Arroy));
        assert_eq!(parse_engine("exact").ok(), Some(EngineKind::Exact));
        assert!(parse_engine("annoy").is_err());
    }

    #[test]
    fn fastest_at_picks_the_fastest_point_meeting_the_target() {
        let p = |recall, qps| Point {
            engine: "x".into(),
            threads: 1,
            recall_at_10: recall,
            qps,
            p50_ms: None,
            p99_ms: None,
            build_s: None,
            rss_mb: None,
            via: "in-process".into(),
            clients: None,
            params: Value::Null,
            pick: None,
            apply_s: None,
            server_cpu_us_per_query: None,
            client_cpu_us_per_query: None,
            server_rss_mb: None,
            server_pss_mb: None,
        };
        let points = [
            p(0.90, 500.0),
            p(0.96, 200.0),
            p(0.995, 100.0),
            p(0.97, 150.0),
        ];
        assert_eq!(fastest_at(points.iter(), 0.95).map(|p| p.qps), Some(200.0));
        assert_eq!(fastest_at(points.iter(), 0.99).map(|p| p.qps), Some(100.0));
        assert!(fastest_at(points.iter(), 0.999).is_none());
    }

    #[test]
    fn a_peer_line_reads_as_a_point() {
        let line = r#"{"engine": "hnswlib", "threads": 1, "recall_at_10": 0.97, "qps": 5000.0,
            "p50_ms": null, "p99_ms": null, "build_s": 12.5, "rss_mb": 100.0,
            "via": "python", "params": {"ef": 32}, "pick": 0.95}"#;
        let p: Point = serde_json::from_str(line).expect("peer line");
        assert_eq!(p.engine, "hnswlib");
        assert_eq!(p.pick, Some(0.95));
        assert_eq!(p.p50_ms, None);
    }
}
