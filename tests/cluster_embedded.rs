//! The kinetic planner inside `hektor serve`, through the real binary on the embedded log:
//! a burst of one tenant's queries makes its shard the hottest in `GET /cluster`, the
//! planner proposes splitting it, the controller carries the split out, and `hektor
//! cluster` prints it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 8;
const PARTITIONS: u32 = 4;

/// A deterministic pseudo-random vector (a `StdRng` seeded by `seed`).
fn vector(seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..DIM).map(|_| rng.random_range(-0.5f32..0.5)).collect()
}

/// The queries per second over the last minute of every shard of a partition.
fn partition_qps(view: &Value, collection: &str, partition: u32) -> f64 {
    view["collections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == collection))
        .and_then(|c| c["shards"].as_array())
        .map(|shards| {
            shards
                .iter()
                .filter(|s| s["shard"] == partition)
                .filter_map(|s| s["qps_1m"].as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

#[test]
fn a_tenant_burst_makes_its_shard_hot_and_the_planner_proposes_a_split() {
    let dir = tempfile::tempdir().unwrap();
    // Thresholds low enough that a few dozen queries per second on a small shard are "hot"
    // (the defaults, hotness 100 and 1M vectors, are meant for production shards).
    let server = start_server(
        dir.path(),
        None,
        &[
            "--engine",
            "exact",
            "--planner-interval-ms",
            "500",
            "--split-hotness",
            "0.001",
            "--split-min-vectors",
            "0",
        ],
    );
    let name = "kinetic";
    create_collection(&server.url, name, DIM, PARTITIONS);

    // 200 vectors of tenant `acme` (all on one shard) and 200 without a tenant.
    let tenant = "acme";
    let hot = hektor_topics::ring::tenant_partitions(tenant, PARTITIONS);
    assert_eq!(hot.start(), hot.end(), "a tenant lies on one partition");
    let hot = *hot.start();
    let upserts: Vec<Value> = (0..400u64)
        .map(|i| {
            if i < 200 {
                json!({"id": format!("a{i}"), "tenant": tenant, "vector": vector(i)})
            } else {
                json!({"id": format!("g{i}"), "vector": vector(i)})
            }
        })
        .collect();
    for chunk in upserts.chunks(100) {
        let (status, body) = post(
            &format!("{}/collections/{name}/vectors", server.url),
            &json!({ "upserts": chunk }),
        );
        assert_eq!(status, 200, "upsert: {body}");
    }

    // A few queries without a tenant reach every shard; then the tenant's burst.
    let search = format!("{}/collections/{name}/search", server.url);
    for i in 0..50u64 {
        let (status, body) = post(&search, &json!({"vector": vector(1000 + i), "k": 3}));
        assert_eq!(status, 200, "{body}");
    }
    for i in 0..3000u64 {
        let (status, body) = post(
            &search,
            &json!({"vector": vector(5000 + i), "k": 3, "tenant": tenant}),
        );
        assert_eq!(status, 200, "{body}");
    }

    // Poll until the planner has seen the burst and proposed splitting the hot shard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let (status, view) = get(&format!("{}/cluster", server.url));
        assert_eq!(status, 200, "{view}");
        // Per partition, over every shard of it (the controller may already have carried
        // a split out on a slow machine).
        let qps: Vec<f64> = (0..PARTITIONS)
            .map(|s| partition_qps(&view, name, s))
            .collect();
        let hottest = qps[hot as usize] > 0.0
            && (0..PARTITIONS as usize).all(|s| s == hot as usize || qps[s] < qps[hot as usize]);
        let hot_range = json!(hektor_topics::ring::partition_range(hot, PARTITIONS));
        let split = view["decisions"].as_array().is_some_and(|ds| {
            ds.iter().any(|d| {
                d["collection"] == name
                    && d["action"]["action"] == "split"
                    && d["action"]["shard"] == hot_range
            })
        });
        if hottest && split {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the planner never showed shard {hot} hottest with a split: {view}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };

    // The map's shards tile the ring (some may be split already), and every shard of the
    // hot partition shows it hot.
    let all: Vec<Value> = view["collections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["shards"].as_array().cloned())
        .unwrap();
    let mut ranges: Vec<(u64, Option<u64>)> = all
        .iter()
        .map(|s| {
            (
                s["range"]["start"].as_u64().unwrap(),
                s["range"]["end"].as_u64(),
            )
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges[0].0, 0, "{view}");
    for w in ranges.windows(2) {
        assert_eq!(w[0].1, Some(w[1].0), "ranges must tile the ring: {view}");
    }
    assert_eq!(ranges[ranges.len() - 1].1, None, "{view}");
    // The hot partition's shard (or, once split, one of its halves) is marked hot.
    let hot_shard = view["collections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["shards"].as_array())
        .unwrap()
        .iter()
        .filter(|s| s["shard"] == hot)
        .find(|s| s["hot"] == json!(true))
        .cloned()
        .unwrap_or_else(|| panic!("no shard of partition {hot} is hot: {view}"));
    assert!(hot_shard["p99_ms"].as_f64().unwrap() > 0.0);

    // The split of the hot partition is there, with a reason.
    let hot_range = json!(hektor_topics::ring::partition_range(hot, PARTITIONS));
    let split = view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"]["action"] == "split" && d["action"]["shard"] == hot_range)
        .unwrap_or_else(|| panic!("no split of shard {hot}: {view}"));
    assert!(split["epoch"].as_u64().unwrap() >= 1, "{split}");
    let reason = split["reason"].as_str().unwrap();
    assert!(reason.contains("hotness"), "{reason}");
    let at = split["action"]["at"].as_u64().unwrap();
    assert!(at > hot_range["start"].as_u64().unwrap(), "{split}");
    assert!(
        hot_range["end"].as_u64().is_none_or(|end| at < end),
        "{split}"
    );
    // The controller carries it out: a shard boundary appears at the split point, the
    // halves are built from the log, and every vector is still there once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, info) = get(&format!("{}/collections/{name}", server.url));
        let shards = info["shards"].as_array().unwrap();
        let cut = shards.iter().any(|s| s["range"]["start"] == json!(at));
        if cut && info["targets"] == json!([]) && info["complete"] == json!(true) {
            assert!(shards.len() > PARTITIONS as usize, "{info}");
            assert_eq!(info["vectors"], json!(400), "{info}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the split at {at:#x} was never carried out: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The CLI prints the same view as a table.
    let out = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(["cluster", "--url", &server.url])
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run hektor cluster");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("collection {name}")), "{text}");
    assert!(text.contains("hot"), "{text}");
    assert!(text.contains("split:"), "{text}");
    assert!(text.contains("split at"), "{text}");
}
