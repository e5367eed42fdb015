//! `hektor-bench kinetic`: does the kinetic planner relieve a hot spot on real node
//! processes sharing a Kafka cluster, and what does that do to query latency and the spread
//! of load between nodes?
//!
//! Two legs, same workload and seed, each on its own fresh `hektor` node processes
//! (`a`, `b`, `c`: router, data; `p`: controller and planner, no data): a **static**
//! leg (`--no-planner`, the shard map never changes but for placement) and a **kinetic**
//! leg (the planner reads the events topic and asks for splits, the controller carries them
//! out). Each leg loads `tenants × vectors-per-tenant` vectors of the data set, each tenant
//! in its own ring range, then issues tenant-filtered searches at `--qps` whose tenants
//! follow a Zipf law (plus a trickle of writes); half-way through, the Zipf ranking is
//! permuted so that the hottest tenant moves to another partition (the hot spot moves).
//!
//! The searches run open loop ([`crate::open_loop`]): a fixed schedule, `--clients` workers,
//! no slot skipped however late, each latency taken from the search's intended send into
//! an HDR histogram, so a stall's queueing shows in p99 instead of being omitted.
//!
//! Node load is the CPU time of each node process (`/proc/<pid>/stat` utime + stime, per
//! second), not request counts: a tenant's query searches every shard overlapping its
//! range, so a split spreads each query's CPU over two nodes rather than halving searches.
//!
//! Output: one JSON line per leg and second (`leg`, `t_s`, `qps`, `p99_ms`, `node_cpu`,
//! `max_over_mean`, `epoch`), then one summary line per leg (p99, max/mean node load once
//! settled, the time from a hot spot's onset to the first map change that re-cuts the
//! shard holding the hot tenant, splits, queries and failed queries, the open-loop counts
//! and HDR percentiles). Per-second lines bucket searches by completion. With `--plot`, the
//! lines go to `scripts/plot_kinetic.py`, which draws load and p99 over time.
//!
//! This module only orchestrates and measures; deciding and splitting are the planner's
//! and the controller's jobs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::dataset;
use hektor_topics::record::RingRange;
use hektor_topics::ring;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use crate::nodes::{search, start_node, unique_name, wait_healthy};
use crate::open_loop::{self, Percentiles, Schedule};
use crate::seeded::{self, Purpose};

#[derive(Debug, Clone, clap::Args)]
pub struct KineticBenchArgs {
    /// Kafka bootstrap servers (the nodes share a log).
    #[arg(long, env = "HEKTOR_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Data set directory (base.fvecs, query.fvecs); default $HEKTOR_DATA or the shared set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Index engine of the shards.
    /// exact by default: a tenant-filtered exact search scans its shard, so a node's CPU
    /// follows the vectors it searches and a split visibly shares it out.
    #[arg(long, default_value = "exact")]
    pub engine: String,
    /// Tenants (each one contiguous ring range).
    #[arg(long, default_value_t = 16)]
    pub tenants: usize,
    /// Vectors loaded per tenant.
    #[arg(long, default_value_t = 2000)]
    pub vectors_per_tenant: usize,
    /// Partitions of the collection (initial shards).
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// Zipf exponent of the tenants' query shares.
    #[arg(long, default_value_t = 1.2)]
    pub zipf: f64,
    /// Target query rate, all clients together (queries per second).
    #[arg(long, default_value_t = 300.0)]
    pub qps: f64,
    /// Concurrent search workers of the open-loop schedule (a slot that finds them all
    /// busy waits for one, and its wait counts in its latency; no slot is skipped).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Vectors written per second during the run.
    #[arg(long, default_value_t = 10)]
    pub writes_per_s: usize,
    /// Seconds of workload per leg; the hot spot moves half-way.
    #[arg(long, default_value_t = 150)]
    pub duration_s: u64,
    /// Seed of the tenant draws and of the permutation.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Planner: hotness above which a shard is split (qps over the last minute × p99 ms / 10).
    #[arg(long, default_value_t = 30.0)]
    pub split_hotness: f64,
    /// Planner: how often it decides (milliseconds).
    #[arg(long, default_value_t = 1000)]
    pub planner_interval_ms: u64,
    /// Planner: seconds a range is left alone after a split.
    #[arg(long, default_value_t = 30)]
    pub planner_min_interval_s: u64,
    /// Planner: how far ahead its hotness forecasts look (seconds).
    #[arg(long, default_value_t = 20)]
    pub planner_lookahead_s: u64,
    /// The planner balances node load (busy time over capacity) from this load up; the
    /// bench's nodes are lightly loaded, so the default is low.
    #[arg(long, default_value_t = 0.01)]
    pub balance_min_load: f64,
    /// Run only this leg (static or kinetic); default both.
    #[arg(long)]
    pub leg: Option<String>,
    /// Accepted like the other benches' flag; this bench always prints JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Draw load and p99 over time into this PNG with scripts/plot_kinetic.py (the JSON
    /// lines it reads are kept in the temporary directory).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Tenants drawn by Zipf rank (0 the hottest): rand_distr's Zipf over ranks `1..=n`.
struct Zipf(rand_distr::Zipf<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> anyhow::Result<Zipf> {
        rand_distr::Zipf::new(n as f64, s)
            .map(Zipf)
            .map_err(|e| anyhow::anyhow!("--tenants {n} and --zipf {s}: {e}"))
    }

    fn rank(&self, rng: &mut impl Rng) -> usize {
        (rng.sample(self.0) as usize).saturating_sub(1)
    }
}

fn tenant_name(i: usize) -> String {
    format!("tenant-{i}")
}

fn partition_of_tenant(i: usize, partitions: u32) -> u32 {
    *ring::tenant_partitions(&tenant_name(i), partitions).start()
}

/// The two rankings: the first phase's, and a permutation of it whose hottest tenant lies
/// in another partition than the first phase's hottest.
fn rankings(args: &KineticBenchArgs) -> (Vec<usize>, Vec<usize>) {
    let n = args.tenants;
    let first: Vec<usize> = (0..n).collect();
    let mut second = first.clone();
    second.shuffle(&mut seeded::stream(args.seed, Purpose::KineticRanking, 0));
    let hot = partition_of_tenant(first[0], args.partitions);
    if partition_of_tenant(second[0], args.partitions) == hot {
        if let Some(k) = second
            .iter()
            .position(|t| partition_of_tenant(*t, args.partitions) != hot)
        {
            second.swap(0, k);
        }
    }
    (first, second)
}

/// What the sampler saw at one second.
struct Tick {
    t_s: u64,
    cpu: Vec<f64>,
    epoch: Option<u64>,
    /// Serving shards: range, first replica and the planner's hotness (0 without one).
    shards: Vec<(RingRange, String, f64)>,
    targets: usize,
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32, ticks_per_s: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    (field(11) + field(12)) / ticks_per_s
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

fn overlaps(a: RingRange, b: RingRange) -> bool {
    let end = |r: RingRange| r.end.map_or(u128::MAX, u128::from);
    (a.start as u128) < end(b) && (b.start as u128) < end(a)
}

pub async fn run(args: KineticBenchArgs) -> anyhow::Result<()> {
    let brokers = args
        .brokers
        .clone()
        .context("bench kinetic needs Kafka: --brokers HOST:PORT or HEKTOR_KAFKA_BROKERS")?;
    anyhow::ensure!(
        args.tenants >= 2 && args.partitions >= 2 && args.clients >= 1 && args.qps > 0.0,
        "bench kinetic needs at least 2 tenants, 2 partitions, 1 client and a positive --qps"
    );
    let legs: Vec<&str> = match args.leg.as_deref() {
        None => vec!["static", "kinetic"],
        Some(l @ ("static" | "kinetic")) => vec![l],
        Some(other) => anyhow::bail!("unknown leg `{other}`: use static or kinetic"),
    };
    let data = args.data.clone().unwrap_or_else(dataset::data_dir);
    let loaded_n = args.tenants * args.vectors_per_tenant;
    let spare = (args.duration_s as usize * args.writes_per_s).max(1);
    let (base, dim) = dataset::read_fvecs(&data.join("base.fvecs"), Some(loaded_n + spare))
        .with_context(|| format!("reading {}", data.display()))?;
    anyhow::ensure!(
        base.len() / dim > loaded_n,
        "the data set has {} vectors; --tenants × --vectors-per-tenant needs {}",
        base.len() / dim,
        loaded_n + 1
    );
    let (queries, _) = dataset::read_fvecs(&data.join("query.fvecs"), Some(1000))?;
    let base = Arc::new(base);
    let queries = Arc::new(queries);
    let mut lines: Vec<Value> = Vec::new();
    for leg in legs {
        let out = run_leg(&args, &brokers, leg, &base, &queries, dim).await?;
        for line in out {
            println!("{line}");
            lines.push(line);
        }
    }
    if let Some(png) = &args.plot {
        let jsonl =
            std::env::temp_dir().join(format!("hektor-kinetic-{}.jsonl", std::process::id()));
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&jsonl, text).with_context(|| format!("writing {}", jsonl.display()))?;
        let script = crate::nodes::in_source_tree("scripts/plot_kinetic.py");
        let status = Command::new("python3")
            .arg(&script)
            .arg(&jsonl)
            .arg(png)
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("plot: {} (from {})", png.display(), jsonl.display()),
            _ => eprintln!(
                "no plot drawn: it needs python3 with matplotlib (pip install -r \
                 scripts/requirements-bench.txt), then: python3 {} {} {}",
                script.display(),
                jsonl.display(),
                png.display()
            ),
        }
    }
    Ok(())
}

async fn run_leg(
    args: &KineticBenchArgs,
    brokers: &str,
    leg: &str,
    base: &Arc<Vec<f32>>,
    queries: &Arc<Vec<f32>>,
    dim: usize,
) -> anyhow::Result<Vec<Value>> {
    let kinetic = leg == "kinetic";
    let tmp = tempfile::tempdir()?;
    let name = unique_name(&format!("benchkinetic-{leg}"));
    let mut flags: Vec<String> = vec![
        "--engine".into(),
        args.engine.clone(),
        "--split-vectors".into(),
        "0".into(),
        "--search-threads".into(),
        "2".into(),
        "--drain-timeout-ms".into(),
        "1000".into(),
    ];
    if kinetic {
        flags.extend([
            "--planner-interval-ms".into(),
            args.planner_interval_ms.to_string(),
            "--split-hotness".into(),
            args.split_hotness.to_string(),
            "--split-min-vectors".into(),
            "100".into(),
            "--planner-min-interval-s".into(),
            args.planner_min_interval_s.to_string(),
            "--planner-lookahead-s".into(),
            args.planner_lookahead_s.to_string(),
            "--balance-min-load".into(),
            args.balance_min_load.to_string(),
        ]);
    } else {
        flags.push("--no-planner".into());
    }
    let start = |id: &str, roles: &str| start_node(id, roles, brokers, &name, tmp.path(), &flags);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // The controller and planner get a process of their own (no data, no clients), so
    // the data nodes' CPU is the workload's and nothing else.
    let p = start("p", "router,controller,planner")?;
    let nodes = [
        start("a", "router,data")?,
        start("b", "router,data")?,
        start("c", "router,data")?,
    ];
    let p_url = p.url.clone();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for url in urls.iter().chain([&p_url]) {
        wait_healthy(&http, url).await?;
    }
    // Let the heartbeats meet so that the first map places partitions on all three.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let created = http
        .put(format!("{p_url}/collections/{name}"))
        .json(&json!({"dimension": dim, "distance": "cosine",
            "partitions": args.partitions, "replication": 1,
            "placement": {"strategy": "load"}}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "create: {}",
        created.text().await?
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Load: tenant i gets rows i*V .. (i+1)*V.
    let per = args.vectors_per_tenant;
    let loaded_n = args.tenants * per;
    let loading = Instant::now();
    for chunk in 0..loaded_n.div_ceil(500) {
        let rows = chunk * 500..((chunk + 1) * 500).min(loaded_n);
        let upserts: Vec<Value> = rows
            .map(|i| {
                json!({"id": format!("v{i}"), "tenant": tenant_name(i / per),
                    "vector": &base[i * dim..(i + 1) * dim]})
            })
            .collect();
        let url = &urls[chunk % urls.len()];
        let r = http
            .post(format!("{url}/collections/{name}/vectors"))
            .json(&json!({ "upserts": upserts }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "load: {}", r.text().await?);
    }
    loop {
        let mut vectors = 0u64;
        let mut busy = false;
        for url in &urls {
            let info: Value = http
                .get(format!("{url}/collections/{name}"))
                .send()
                .await?
                .json()
                .await?;
            for s in info["shards"].as_array().into_iter().flatten() {
                vectors += s["vectors"].as_u64().unwrap_or(0);
                busy |=
                    s["pending"].as_u64().unwrap_or(0) >= 512 || s["lag"].as_u64().unwrap_or(0) > 0;
            }
        }
        if vectors >= loaded_n as u64 && !busy {
            break;
        }
        anyhow::ensure!(
            loading.elapsed() < Duration::from_secs(600),
            "loading never finished ({vectors} of {loaded_n} vectors indexed)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let load_s = loading.elapsed().as_secs_f64();

    // The workload.
    let (first, second) = rankings(args);
    let move_at = args.duration_s as f64 / 2.0;
    let zipf = Arc::new(Zipf::new(args.tenants, args.zipf)?);
    let rankings = Arc::new([first.clone(), second.clone()]);
    let began = tokio::time::Instant::now();
    let duration = Duration::from_secs(args.duration_s);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // The searches: slot i at began + i / qps, sent to the routers in turn, its tenant and
    // query drawn from a generator seeded by the slot (the same schedule every run).
    let schedule = Schedule::new(args.qps, duration, args.clients)
        .with_timeout(Duration::from_secs(10))
        .starting_at(began);
    let searches = {
        let (http, queries, zipf, rankings) = (
            http.clone(),
            Arc::clone(queries),
            Arc::clone(&zipf),
            Arc::clone(&rankings),
        );
        let search_urls: Vec<String> = urls
            .iter()
            .map(|u| format!("{u}/collections/{name}/search"))
            .collect();
        let seed = args.seed;
        tokio::spawn(open_loop::run(schedule, move |slot| {
            let nq = queries.len() / dim;
            let mut rng = seeded::stream(seed, Purpose::KineticSearch, slot.index);
            let phase = usize::from(slot.intended_s >= move_at);
            let tenant = rankings[phase][zipf.rank(&mut rng)];
            let qi = rng.random_range(0..nq);
            let body = json!({"vector": &queries[qi * dim..(qi + 1) * dim], "k": 10,
                "tenant": tenant_name(tenant), "without_payload": true});
            let url = search_urls[(slot.index % search_urls.len() as u64) as usize].clone();
            let http = http.clone();
            async move { search(&http, &url, &body).await }
        }))
    };
    let writes_failed = Arc::new(AtomicU64::new(0));
    if args.writes_per_s > 0 {
        let (http, stop, base, zipf, rankings, failed) = (
            http.clone(),
            Arc::clone(&stop),
            Arc::clone(base),
            Arc::clone(&zipf),
            Arc::clone(&rankings),
            Arc::clone(&writes_failed),
        );
        let url = format!("{}/collections/{name}/vectors", urls[1 % urls.len()]);
        let writes = args.writes_per_s;
        let mut rng = seeded::stream(args.seed, Purpose::KineticWrites, 0);
        tasks.push(tokio::spawn(async move {
            let spare = base.len() / dim - loaded_n;
            let mut written = 0usize;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) && began.elapsed() < duration {
                tick.tick().await;
                let phase = usize::from(began.elapsed().as_secs_f64() >= move_at);
                let upserts: Vec<Value> = (0..writes)
                    .map(|_| {
                        let row = loaded_n + written % spare;
                        written += 1;
                        json!({"id": format!("w{written}"),
                            "tenant": tenant_name(rankings[phase][zipf.rank(&mut rng)]),
                            "vector": &base[row * dim..(row + 1) * dim]})
                    })
                    .collect();
                let ok = http
                    .post(&url)
                    .json(&json!({ "upserts": upserts }))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // The sampler: node CPU and the shard map, once a second.
    let ticks_per_s = clock_ticks();
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    let mut last: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p, ticks_per_s)).collect();
    let mut last_at = Instant::now();
    let mut ticks: Vec<Tick> = Vec::new();
    let mut interval =
        tokio::time::interval_at(began + Duration::from_secs(1), Duration::from_secs(1));
    let mut map_changes = Value::Null;
    for t_s in 1..=args.duration_s {
        interval.tick().await;
        let now: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p, ticks_per_s)).collect();
        let dt = last_at.elapsed().as_secs_f64().max(1e-3);
        last_at = Instant::now();
        let cpu: Vec<f64> = now.iter().zip(&last).map(|(n, l)| (n - l) / dt).collect();
        last = now;
        let view: Option<Value> = match http
            .get(format!("{p_url}/cluster"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let col = view.as_ref().and_then(|v| {
            v["collections"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name.as_str()))
                .cloned()
        });
        if let Some(v) = &view {
            map_changes = v["map_changes"].clone();
        }
        let shards = col
            .as_ref()
            .and_then(|c| c["shards"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|s| {
                let range: RingRange = serde_json::from_value(s["range"].clone()).ok()?;
                let node = s["replicas"][0].as_str().unwrap_or("").to_string();
                Some((range, node, s["hotness"].as_f64().unwrap_or(0.0)))
            })
            .collect();
        ticks.push(Tick {
            t_s,
            cpu,
            epoch: col.as_ref().and_then(|c| c["epoch"].as_u64()),
            shards,
            targets: col
                .as_ref()
                .and_then(|c| c["targets"].as_array().map(Vec::len))
                .unwrap_or(0),
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Bounded: the schedule ends at duration_s, stragglers 10 s later at the latest.
    let searched = searches.await??;
    let planner_cpu_s = cpu_seconds(p.pid(), ticks_per_s);
    drop(nodes);
    drop(p);
    // Latencies (from the intended send) of the searches that succeeded and completed in
    // [from, to) seconds.
    let ok_between = |from: f64, to: f64| {
        Percentiles::of_latencies(
            searched
                .outcomes
                .iter()
                .filter(|o| o.ok && o.done_s >= from && o.done_s < to)
                .map(|o| o.latency_us),
        )
    };

    // Per second.
    let mut out = Vec::new();
    let ratio = |cpu: &[f64]| {
        let mean = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
        let max = cpu.iter().copied().fold(0.0, f64::max);
        if mean > 1e-3 {
            max / mean
        } else {
            1.0
        }
    };
    for tick in &ticks {
        let hot = if (tick.t_s as f64) <= move_at {
            first[0]
        } else {
            second[0]
        };
        let hot_range = ring::tenant_range(&tenant_name(hot));
        let (mut hot_hotness, mut other_hotness) = (0.0f64, 0.0f64);
        for (r, _, h) in &tick.shards {
            if overlaps(*r, hot_range) {
                hot_hotness = hot_hotness.max(*h);
            } else {
                other_hotness = other_hotness.max(*h);
            }
        }
        let second = ok_between(tick.t_s as f64 - 1.0, tick.t_s as f64);
        out.push(json!({
            "leg": leg,
            "t_s": tick.t_s,
            "qps": second.count as f64,
            "p99_ms": second.p99_ms,
            "node_cpu": tick.cpu.iter().map(|c| (c * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            "max_over_mean": (ratio(&tick.cpu) * 1000.0).round() / 1000.0,
            "epoch": tick.epoch,
            "targets": tick.targets,
            "hot_shard_hotness": (hot_hotness * 100.0).round() / 100.0,
            "other_max_hotness": (other_hotness * 100.0).round() / 100.0,
        }));
    }

    // Per hot spot: onset, relief (the shard map re-cuts the shards holding the hot
    // tenant), p99 and load before and after relief, load once settled (last third).
    let phases = [
        (0.0, move_at, first[0]),
        (move_at, args.duration_s as f64, second[0]),
    ];
    let mut spots = Vec::new();
    let mut settled_ratios = Vec::new();
    for (onset, end, hot) in phases {
        let range = ring::tenant_range(&tenant_name(hot));
        let holding = |tick: &Tick| -> BTreeSet<(u64, Option<u64>, String)> {
            tick.shards
                .iter()
                .filter(|(r, _, _)| overlaps(*r, range))
                .map(|(r, n, _)| (r.start, r.end, n.clone()))
                .collect()
        };
        let in_phase: Vec<&Tick> = ticks
            .iter()
            .filter(|t| t.t_s as f64 > onset && t.t_s as f64 <= end)
            .collect();
        let at_onset = in_phase
            .iter()
            .find(|t| !t.shards.is_empty())
            .map(|t| holding(t));
        let relief_at = at_onset.as_ref().and_then(|o| {
            in_phase
                .iter()
                .find(|t| !t.shards.is_empty() && holding(t) != *o)
                .map(|t| t.t_s as f64)
        });
        let p99_between = |from: f64, to: f64| {
            let p = ok_between(from, to);
            (p.count > 0).then_some(p.p99_ms)
        };
        let load_between = |from: f64, to: f64| {
            let r: Vec<f64> = in_phase
                .iter()
                .filter(|t| t.t_s as f64 > from && t.t_s as f64 <= to)
                .map(|t| ratio(&t.cpu))
                .collect();
            (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
        };
        let settled_from = end - (end - onset) / 3.0;
        let settled = load_between(settled_from, end);
        if let Some(s) = settled {
            settled_ratios.push(s);
        }
        let split = relief_at.unwrap_or(end);
        spots.push(json!({
            "onset_s": onset,
            "hot_tenant": tenant_name(hot),
            "hot_partition": partition_of_tenant(hot, args.partitions),
            "relief_s": relief_at.map(|r| r - onset),
            "p99_before_relief_ms": p99_between(onset, split),
            "p99_after_relief_ms": relief_at.and_then(|r| p99_between(r, end)),
            "max_over_mean_before_relief": load_between(onset, split),
            "max_over_mean_after_relief": relief_at.and_then(|r| load_between(r, end)),
            "max_over_mean_settled": settled,
        }));
    }
    let all = searched.percentiles();
    let splits = map_changes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["collection"] == name.as_str())
        .flat_map(|c| c["reasons"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.as_str().is_some_and(|r| r.contains("split at")))
        .count();
    let settled = (!settled_ratios.is_empty())
        .then(|| settled_ratios.iter().sum::<f64>() / settled_ratios.len() as f64);
    out.push(json!({
        "leg": leg,
        "summary": true,
        "engine": args.engine,
        "tenants": args.tenants,
        "vectors": loaded_n,
        "partitions": args.partitions,
        "target_qps": args.qps,
        "duration_s": args.duration_s,
        "move_at_s": move_at,
        "load_s": load_s,
        "controller_planner_cpu_s": planner_cpu_s,
        "open_loop": true,
        "clients": searched.workers,
        "achieved_qps": searched.achieved_rate(),
        "p50_ms": all.p50_ms,
        "p90_ms": all.p90_ms,
        "p99_ms": all.p99_ms,
        "p999_ms": all.p999_ms,
        "max_ms": all.max_ms,
        "max_over_mean_settled": settled,
        "relief_s": spots.iter().map(|s| s["relief_s"].clone()).collect::<Vec<_>>(),
        "splits": splits,
        "final_shards": ticks.last().map_or(0, |t| t.shards.len()),
        "queries": searched.slots,
        "queries_sent": searched.sent,
        "queries_failed": searched.failed,
        "queries_unsent": searched.unsent,
        "write_batches_failed": writes_failed.load(Ordering::Relaxed),
        "hot_spots": spots,
        "map_changes": map_changes,
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_ranks_follow_their_weights() {
        let z = Zipf::new(16, 1.2).unwrap();
        let mut rng = seeded::stream(1, Purpose::KineticSearch, 0);
        let mut counts = [0usize; 16];
        for _ in 0..100_000 {
            counts[z.rank(&mut rng)] += 1;
        }
        // Rank 1 over rank 2 is 2^1.2 ≈ 2.30 in expectation.
        let r = counts[0] as f64 / counts[1] as f64;
        assert!((2.1..2.5).contains(&r), "rank 1 / rank 2 = {r}");
        assert!(counts.windows(2).all(|w| w[0] >= w[1] / 2));
    }

    #[test]
    fn the_hot_spot_moves_to_another_partition() {
        let args = KineticBenchArgs {
            brokers: None,
            data: None,
            engine: "exact".into(),
            tenants: 16,
            vectors_per_tenant: 10,
            partitions: 6,
            zipf: 1.2,
            qps: 1.0,
            clients: 1,
            writes_per_s: 0,
            duration_s: 1,
            seed: 7,
            split_hotness: 1.0,
            planner_interval_ms: 1000,
            planner_min_interval_s: 1,
            planner_lookahead_s: 1,
            balance_min_load: 0.01,
            leg: None,
            json: false,
            plot: None,
        };
        let (first, second) = rankings(&args);
        let mut sorted = second.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, first);
        assert_ne!(
            partition_of_tenant(first[0], 6),
            partition_of_tenant(second[0], 6)
        );
    }
}
