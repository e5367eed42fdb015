//! `hektor-bench move`: how long moving a shard of N vectors takes, and what it does to
//! query latency, on real node processes sharing a Kafka cluster.
//!
//! `hektor` processes: `r` (router and controller, holds nothing), `a` (data), and
//! later `b` and `c`. A one-partition collection of N vectors from the data set lives on
//! `a`; searches go through `r` on an open-loop schedule (`--rate`, timed from their
//! intended send, HDR histograms) the whole time. Move 1: `b` joins and `a` drains
//! (SIGTERM); `b` receives the shard as a snapshot of `a`'s files and catches up from the
//! log. Move 2, the baseline in the same run: `c` joins with `--no-snapshot-moves` and `b`
//! drains; `c` replays the partition from the log and builds its index. The bench prints
//! one JSON object per move (its duration from drain start to the map's switch, the
//! receiving shard's origin, open-loop p50/p99 before and during it, failed queries) and a
//! summary with the speed-up.
//!
//! This module only orchestrates and measures; moving is the control plane's job.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::dataset;
use serde_json::{json, Value};

use crate::nodes::{search, start_node, unique_name, wait_healthy};
use crate::open_loop::{self, Percentiles, Schedule};

#[derive(Debug, Clone, clap::Args)]
pub struct MoveBenchArgs {
    /// Kafka bootstrap servers (a move needs several processes sharing a log).
    #[arg(long, env = "HEKTOR_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Vectors in the shard that moves.
    #[arg(long, default_value_t = 20_000)]
    pub vectors: usize,
    /// Data set directory (base.fvecs, query.fvecs); default $HEKTOR_DATA or the shared set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Index engine of the shard.
    #[arg(long, default_value = "hnsw")]
    pub engine: String,
    /// Searches per second through the router (open loop: timed from their intended send).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of load before the move starts.
    #[arg(long, default_value_t = 5)]
    pub before_s: u64,
    /// Skip move 2 (the log-replay baseline); no summary line then.
    #[arg(long)]
    pub no_baseline: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: MoveBenchArgs) -> anyhow::Result<()> {
    let brokers = args
        .brokers
        .clone()
        .context("bench move needs Kafka: --brokers HOST:PORT or HEKTOR_KAFKA_BROKERS")?;
    let data = args.data.clone().unwrap_or_else(dataset::data_dir);
    let (base, dim) = dataset::read_fvecs(&data.join("base.fvecs"), Some(args.vectors))
        .with_context(|| format!("reading {}", data.display()))?;
    let (queries, _) = dataset::read_fvecs(&data.join("query.fvecs"), Some(200))?;
    let n = base.len() / dim;
    let tmp = tempfile::tempdir()?;
    let name = unique_name("benchmove");
    // A drain waits as long as a move by log replay may take (the default 2 minutes is
    // shorter than replaying and rebuilding 250k vectors here): the baseline measures the
    // move, not a holder that gave up.
    let flags: Vec<String> = [
        "--engine",
        &args.engine,
        "--no-planner",
        "--drain-timeout-ms",
        "900000",
    ]
    .map(String::from)
    .to_vec();
    let start = |id: &str, roles: &str| start_node(id, roles, &brokers, &name, tmp.path(), &flags);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let r = start("r", "router,controller")?;
    let a = start("a", "data")?;
    let (router, a_url) = (r.url.clone(), a.url.clone());
    wait_healthy(&http, &router).await?;
    wait_healthy(&http, &a_url).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let created = http
        .put(format!("{router}/collections/{name}"))
        .json(&json!({"dimension": dim, "distance": "cosine", "partitions": 1}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "create: {}",
        created.text().await?
    );
    // Load the shard.
    let loaded = Instant::now();
    for chunk in 0..n.div_ceil(500) {
        let rows = chunk * 500..((chunk + 1) * 500).min(n);
        let upserts: Vec<Value> = rows
            .map(|i| json!({"id": format!("v{i}"), "vector": &base[i * dim..(i + 1) * dim]}))
            .collect();
        let r = http
            .post(format!("{router}/collections/{name}/vectors"))
            .json(&json!({ "upserts": upserts }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "load: {}", r.text().await?);
    }
    // Wait until a holds it all, indexed.
    loop {
        let info: Value = http
            .get(format!("{a_url}/collections/{name}"))
            .send()
            .await?
            .json()
            .await?;
        let s = &info["shards"][0];
        if s["vectors"].as_u64() == Some(n as u64) && s["pending"] == 0 && s["lag"] == 0 {
            break;
        }
        anyhow::ensure!(
            loaded.elapsed() < Duration::from_secs(600),
            "load never finished: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load_s = loaded.elapsed().as_secs_f64();

    // Searches through the router on an open-loop schedule (timed from their intended
    // send), from now until the last move is over.
    let began = tokio::time::Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(search_load(
        http.clone(),
        format!("{router}/collections/{name}/search"),
        Arc::new(queries),
        dim,
        args.rate,
        began,
        Arc::clone(&stop),
    ));
    let since = |t: tokio::time::Instant| t.saturating_duration_since(began).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.before_s)).await;
    // Move 1, by snapshot: b joins, a drains. Move 2, by log replay: c joins with
    // --no-snapshot-moves, b drains. Same shard, same load, same run.
    let mut moves = Vec::new();
    let mut holder = a;
    let mut quiet_from = 0.0;
    let plan: &[(&str, &str)] = if args.no_baseline {
        &[("b", "snapshot")]
    } else {
        &[("b", "snapshot"), ("c", "log")]
    };
    for &(next, transfer) in plan {
        let node = if transfer == "log" {
            let mut replay = flags.clone();
            replay.push("--no-snapshot-moves".into());
            start_node(next, "router,data", &brokers, &name, tmp.path(), &replay)?
        } else {
            start_node(next, "router,data", &brokers, &name, tmp.path(), &flags)?
        };
        wait_healthy(&http, &node.url).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let drain_at = since(tokio::time::Instant::now());
        let status = Command::new("kill")
            .args(["-TERM", &holder.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "could not signal the holder");
        let switched_at = loop {
            let view: Value = http
                .get(format!("{router}/cluster"))
                .send()
                .await?
                .json()
                .await?;
            let c = view["collections"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            if c["shards"][0]["replicas"] == json!([next]) {
                break since(tokio::time::Instant::now());
            }
            anyhow::ensure!(
                since(tokio::time::Instant::now()) - drain_at < 600.0,
                "the shard never moved to {next}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let info: Value = http
            .get(format!("{}/collections/{name}", node.url))
            .send()
            .await?
            .json()
            .await?;
        moves.push((
            transfer,
            quiet_from,
            drain_at,
            switched_at,
            info["shards"][0]["origin"].clone(),
        ));
        // The old holder finishes its drain and exits; the next phase starts settled.
        tokio::time::sleep(Duration::from_secs(3)).await;
        quiet_from = since(tokio::time::Instant::now());
        holder = node;
        tokio::time::sleep(Duration::from_secs(args.before_s)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = load.await??;
    let phase = |from: f64, to: f64| {
        let window: Vec<&(f64, u64, bool)> = outcomes
            .iter()
            .filter(|(at, _, _)| *at >= from && *at < to)
            .collect();
        let p = Percentiles::of_latencies(window.iter().filter(|o| o.2).map(|o| o.1));
        let failed = window.iter().filter(|o| !o.2).count();
        (p, failed, window.len())
    };
    let mut reports = Vec::new();
    for (transfer, quiet_from, drain_at, switched_at, origin) in &moves {
        let (before, failed_before, _) = phase(*quiet_from, *drain_at);
        let (during, failed_during, sent) = phase(*drain_at, *switched_at);
        let report = json!({
            "bench": "move",
            "transfer": transfer,
            "engine": args.engine,
            "vectors": n,
            "dimension": dim,
            "load_s": load_s,
            "rate": args.rate,
            "move_s": switched_at - drain_at,
            "origin": origin,
            "p50_before_ms": before.p50_ms,
            "p99_before_ms": before.p99_ms,
            "p50_during_ms": during.p50_ms,
            "p99_during_ms": during.p99_ms,
            "p99_ratio": if before.p99_ms > 0.0 { during.p99_ms / before.p99_ms } else { 0.0 },
            "queries_during": sent,
            "queries_failed": failed_before + failed_during,
        });
        if args.json {
            println!("{report}");
        } else {
            println!(
                "moved a shard of {n} vectors ({}) by {transfer} in {:.1} s; open-loop p99 {:.2} ms \
                 before, {:.2} ms during ({:.2}x); {} queries failed",
                args.engine,
                switched_at - drain_at,
                before.p99_ms,
                during.p99_ms,
                report["p99_ratio"].as_f64().unwrap_or(0.0),
                failed_before + failed_during,
            );
        }
        reports.push(report);
    }
    if reports.len() < 2 {
        drop(holder);
        return Ok(());
    }
    let secs = |i: usize| reports[i]["move_s"].as_f64().unwrap_or(0.0);
    let summary = json!({
        "bench": "move",
        "summary": true,
        "vectors": n,
        "snapshot_move_s": secs(0),
        "log_move_s": secs(1),
        "speedup": if secs(0) > 0.0 { secs(1) / secs(0) } else { 0.0 },
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "a move by snapshot took {:.1} s, by log replay {:.1} s ({:.1}x)",
            secs(0),
            secs(1),
            summary["speedup"].as_f64().unwrap_or(0.0)
        );
    }
    drop(holder);
    Ok(())
}

/// Searches on back-to-back open-loop schedules of one second each until `stop`
/// (bounded: 20 minutes at most). Returns per request: its intended send (seconds since
/// `began`), its latency in µs from that intended send, and whether it succeeded.
async fn search_load(
    http: reqwest::Client,
    url: String,
    queries: Arc<Vec<f32>>,
    dim: usize,
    rate: f64,
    began: tokio::time::Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Vec<(f64, u64, bool)>> {
    let mut out = Vec::new();
    let mut at = began;
    let nq = queries.len() / dim;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && at.saturating_duration_since(began) < Duration::from_secs(1200)
    {
        let schedule = Schedule::new(rate, Duration::from_secs(1), 32)
            .with_timeout(Duration::from_secs(10))
            .starting_at(at);
        let offset = at.saturating_duration_since(began).as_secs_f64();
        let (http, url, queries) = (http.clone(), url.clone(), Arc::clone(&queries));
        let report = open_loop::run(schedule, move |slot| {
            let (http, url) = (http.clone(), url.clone());
            let q = (slot.index as usize + (offset * rate) as usize) % nq.max(1);
            let body = json!({"vector": &queries[q * dim..(q + 1) * dim], "k": 10, "without_payload": true});
            async move { search(&http, &url, &body).await }
        })
        .await?;
        out.extend(
            report
                .outcomes
                .iter()
                .map(|o| (offset + o.index as f64 / rate, o.latency_us, o.ok)),
        );
        at += Duration::from_secs(1);
    }
    Ok(out)
}
