//! `hektor bench move`: how long moving a shard of N vectors takes, and what it does to
//! query latency, on real node processes sharing a Kafka cluster.
//!
//! Three processes of this binary: `r` (router and controller, holds nothing), `a` (data)
//! and, later, `b` (data). A one-partition collection of N vectors from the data set lives
//! on `a`; clients search through `r` without pause. Then `b` starts and `a` drains
//! (SIGTERM): the controller creates a target on `b`, `b` replays the partition from the
//! log and builds its index while `a` serves, reports ready, and the map switches. The
//! bench prints one JSON object: the move's duration (drain start → switch), the query p50
//! / p99 before and during it, the queries that failed (must be 0), and the throughput of
//! each phase.
//!
//! This module only orchestrates and measures; moving is the control plane's job.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::dataset;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::bench_nodes::{percentile, start_node, timed_search, unique_name, wait_healthy, Sample};

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
    /// Concurrent search clients.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Seconds of load before the move starts.
    #[arg(long, default_value_t = 5)]
    pub before_s: u64,
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
    let flags: Vec<String> = ["--engine", &args.engine, "--no-planner"]
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

    // Search without pause through the router.
    let began = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queries = Arc::new(queries);
    let mut clients = Vec::new();
    for c in 0..args.clients.max(1) {
        let (http, samples, stop, queries) = (
            http.clone(),
            Arc::clone(&samples),
            Arc::clone(&stop),
            Arc::clone(&queries),
        );
        let url = format!("{router}/collections/{name}/search");
        clients.push(tokio::spawn(async move {
            let nq = queries.len() / dim;
            let mut i = c;
            // Bounded: at most 10 minutes whatever happens.
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && began.elapsed() < Duration::from_secs(600)
            {
                let q = &queries[(i % nq) * dim..(i % nq + 1) * dim];
                let body = json!({"vector": q, "k": 10, "without_payload": true});
                let sample = timed_search(&http, &url, &body, began).await;
                samples.lock().push(sample);
                i += args.clients.max(1);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.before_s)).await;
    // The move: b joins, a drains.
    let b = start("b", "data")?;
    wait_healthy(&http, &b.url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drain_at = began.elapsed().as_secs_f64();
    let status = Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "could not signal node a");
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
        if c["shards"][0]["replicas"] == json!(["b"]) {
            break began.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            began.elapsed().as_secs_f64() - drain_at < 600.0,
            "the shard never moved: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let samples = samples.lock().clone();
    let phase = |from: f64, to: f64| {
        let mut ms: Vec<f64> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to && s.ok)
            .map(|s| s.ms)
            .collect();
        let qps = ms.len() as f64 / (to - from).max(1e-9);
        (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99), qps)
    };
    let (p50_before, p99_before, qps_before) = phase(0.0, drain_at);
    let (p50_during, p99_during, qps_during) = phase(drain_at, switched_at);
    let failed = samples.iter().filter(|s| !s.ok).count();
    let report = json!({
        "bench": "move",
        "engine": args.engine,
        "vectors": n,
        "dimension": dim,
        "load_s": load_s,
        "move_s": switched_at - drain_at,
        "p50_before_ms": p50_before,
        "p99_before_ms": p99_before,
        "qps_before": qps_before,
        "p50_during_ms": p50_during,
        "p99_during_ms": p99_during,
        "qps_during": qps_during,
        "p99_ratio": if p99_before > 0.0 { p99_during / p99_before } else { 0.0 },
        "queries": samples.len(),
        "queries_failed": failed,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "moved a shard of {n} vectors ({}) in {:.1} s; p99 {:.2} ms before, {:.2} ms during \
             ({:.2}x); {} of {} queries failed",
            args.engine,
            switched_at - drain_at,
            p99_before,
            p99_during,
            report["p99_ratio"].as_f64().unwrap_or(0.0),
            failed,
            samples.len()
        );
    }
    Ok(())
}
