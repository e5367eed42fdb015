//! Moves by snapshot on the real broker: `hektor node` processes on 127.0.0.1 sharing one
//! Kafka. A router (`r`, no data) and a data node (`a`) hold a hot (HNSW) collection;
//! then `b` joins and `a` drains (SIGTERM). Each shard arrives on `b` as a snapshot of
//! `a`'s files (no replay of the partition, no rebuild), catches up with the writes made
//! during the move, and serves: every vector is its own nearest neighbour through the
//! router, none is lost, and no search fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 32;
const N: usize = 4000;

fn start_node(
    dir: &Path,
    id: &str,
    brokers: &str,
    cluster: &str,
    scope: &str,
    roles: &str,
) -> Node {
    start_config_node(dir, id, brokers, cluster, scope, roles, "")
}

/// Row `i`'s vector: a `StdRng` seeded by the row.
fn vector(i: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(i as u64);
    (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn write(url: &str, name: &str, rows: std::ops::Range<usize>) {
    let rows: Vec<usize> = rows.collect();
    for chunk in rows.chunks(500) {
        let upserts: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"id": format!("v{i}"), "vector": vector(i)}))
            .collect();
        let (status, body) = post(
            &format!("{url}/collections/{name}/vectors"),
            &json!({ "upserts": upserts }),
        );
        assert_eq!(status, 200, "write: {body}");
    }
}

/// The shards `url` holds of `name`, from its collection view.
fn local_shards(url: &str, name: &str) -> Vec<Value> {
    let (status, info) = get(&format!("{url}/collections/{name}"));
    if status != 200 {
        return Vec::new();
    }
    info["shards"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| !s["vectors"].is_null())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_draining_node_ships_its_shards_as_snapshots() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = unique("snapmove");
    let name = unique("snap");
    let r = start_node(
        dir.path(),
        "r",
        &brokers,
        &cluster,
        &name,
        r#""router", "controller""#,
    );
    let a = start_node(
        dir.path(),
        "a",
        &brokers,
        &cluster,
        &name,
        r#""router", "data""#,
    );
    create_collection(&r.url, &name, DIM, 2);
    write(&r.url, &name, 0..N);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let shards = local_shards(&a.url, &name);
        let vectors: u64 = shards.iter().filter_map(|s| s["vectors"].as_u64()).sum();
        if shards.len() == 2 && vectors == N as u64 && shards.iter().all(|s| s["pending"] == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "a never indexed: {shards:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let b = start_node(
        dir.path(),
        "b",
        &brokers,
        &cluster,
        &name,
        r#""router", "data""#,
    );
    // a drains: its shards move to b while it serves.
    let pid = a.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // Writes during the move reach b from the log after its snapshot.
    write(&r.url, &name, N..N + 300);
    let total = (N + 300) as u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let shards = loop {
        let shards = local_shards(&b.url, &name);
        let vectors: u64 = shards.iter().filter_map(|s| s["vectors"].as_u64()).sum();
        if shards.len() == 2 && vectors == total {
            break shards;
        }
        assert!(Instant::now() < deadline, "b never took over: {shards:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    for s in &shards {
        assert_eq!(s["origin"]["kind"], "snapshot", "{s}");
        assert_eq!(s["origin"]["from"], "a", "{s}");
        assert_eq!(s["origin"]["trimmed"], 0, "{s}");
        assert!(
            s["origin"]["bytes"].as_u64().unwrap() > (DIM * 4) as u64 * 1000,
            "{s}"
        );
    }
    // Through the router: every sampled vector finds itself, none fails.
    let mut missed = Vec::new();
    for i in (0..N + 300).step_by(11) {
        let (status, body) = post(
            &format!("{}/collections/{name}/search", r.url),
            &json!({"vector": vector(i), "k": 1}),
        );
        assert_eq!(status, 200, "search v{i}: {body}");
        if body["hits"][0]["id"] != json!(format!("v{i}")) {
            missed.push(i);
        }
    }
    assert!(
        missed.len() <= 3,
        "not their own nearest neighbour: {missed:?}"
    );
    drop(b);
}
