//! Elastic sharding on the real broker: `hektor node` processes on 127.0.0.1 sharing one
//! Kafka, under a steady load of writes and read-your-writes searches, while a node joins,
//! a node leaves gracefully, a node is killed with SIGKILL, and a shard is split. Checks
//! what users rely on: no acknowledged write is lost, no query fails (replication 2), every
//! answer names its epoch and finds the vector just written (exact engine: the vector
//! itself is its own nearest neighbour).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 16;

/// One `hektor node` process.
struct Node {
    id: String,
    url: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, id: &str, brokers: &str, cluster: &str, scope: &str) -> Node {
    let port = free_port();
    let data = dir.join(id);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_id = "{id}"
listen = "127.0.0.1:{port}"
brokers = "{brokers}"
data_dir = "{}"
cluster = "{cluster}"
only_collections = "{scope}"
engine = "exact"
roles = ["router", "data", "controller"]
heartbeat_ms = 250
dead_after_ms = 2500
grace_ms = 1500
"#,
            data.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .arg("node")
        .arg("--config")
        .arg(&config)
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hektor node");
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url, Duration::from_secs(60));
    Node {
        id: id.to_owned(),
        url,
        child,
    }
}

/// A deterministic pseudo-random unit vector for an id (a `StdRng` seeded by `seed`).
fn vector_of(seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

/// The collection's entry in a node's `GET /cluster`.
fn collection_view(url: &str, name: &str) -> Option<Value> {
    let (status, view) = get(&format!("{url}/cluster"));
    if status != 200 {
        return None;
    }
    view["collections"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// Wait until the map (as `url` sees it) satisfies `done`; returns it.
fn wait_map(url: &str, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(c) = collection_view(url, name) {
            if done(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "{what}: never happened: {c}");
        }
        assert!(Instant::now() < deadline, "{what}: no view from {url}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn replicas_of(c: &Value) -> Vec<Vec<String>> {
    c["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

fn settled(c: &Value) -> bool {
    c["targets"].as_array().is_some_and(|t| t.is_empty())
}

fn holds(c: &Value, node: &str) -> bool {
    replicas_of(c).iter().any(|r| r.iter().any(|n| n == node))
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<String>>,
    queries: AtomicU64,
    failures: Mutex<Vec<String>>,
    epochs: Mutex<std::collections::BTreeSet<u64>>,
}

/// Writes and read-your-writes searches against the nodes in `targets`, until `stop`
/// (and at most 10 minutes: the loop is bounded on its own).
fn run_load(
    lane: u64,
    name: String,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = client();
        let started = Instant::now();
        let mut seq: u64 = lane * 1_000_000;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
            let urls = targets.lock().unwrap().clone();
            let url = &urls[seq as usize % urls.len()];
            // A batch of writes.
            let ids: Vec<String> = (0..10).map(|j| format!("w{seq}-{j}")).collect();
            let upserts: Vec<Value> = ids
                .iter()
                .enumerate()
                .map(|(j, id)| json!({"id": id, "vector": vector_of(seq * 100 + j as u64)}))
                .collect();
            let resp = c
                .post(format!("{url}/collections/{name}/vectors"))
                .json(&json!({ "upserts": upserts }))
                .send();
            let token = match resp {
                Ok(r) if r.status().is_success() => {
                    let body: Value = r.json().unwrap();
                    tally.acked.lock().unwrap().extend(ids.iter().cloned());
                    body["token"].clone()
                }
                Ok(r) => {
                    let status = r.status();
                    tally.failures.lock().unwrap().push(format!(
                        "write to {url}: {status} {}",
                        r.text().unwrap_or_default()
                    ));
                    seq += 1;
                    continue;
                }
                // The node went away between the list update and the call: not acked.
                Err(_) => {
                    seq += 1;
                    continue;
                }
            };
            // Read the last one back through another node, with the write token.
            let reader = &urls[(seq as usize + 1) % urls.len()];
            let query = json!({
                "vector": vector_of(seq * 100 + 9),
                "k": 3,
                "consistency": {"after": token, "timeout_ms": 20_000},
            });
            tally.queries.fetch_add(1, Ordering::Relaxed);
            match c
                .post(format!("{reader}/collections/{name}/search"))
                .json(&query)
                .send()
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().unwrap_or(Value::Null);
                    if status != 200 {
                        tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("search at {reader}: {status} {body}"));
                    } else if body["hits"][0]["id"] != json!(ids[9]) {
                        tally.failures.lock().unwrap().push(format!(
                            "search at {reader} (epoch {}): expected {} first: {body}",
                            body["epoch"], ids[9]
                        ));
                    } else {
                        tally
                            .epochs
                            .lock()
                            .unwrap()
                            .insert(body["epoch"].as_u64().unwrap());
                    }
                }
                Err(e) => {
                    // The reader was removed from the list meanwhile: not a cluster failure.
                    if targets.lock().unwrap().contains(reader) {
                        tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("search at {reader}: {e}"));
                    }
                }
            }
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn nodes_join_leave_die_and_shards_split_under_load_without_losing_a_write_or_a_query() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = unique("elastic");
    let cluster = name.clone();
    let n1 = start_node(dir.path(), "n1", &brokers, &cluster, &name);
    let n2 = start_node(dir.path(), "n2", &brokers, &cluster, &name);
    let mut n3 = start_node(dir.path(), "n3", &brokers, &cluster, &name);
    // Let all three be seen before the first map is placed.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = put(
        &format!("{}/collections/{name}", n1.url),
        &json!({"dimension": DIM, "distance": "cosine", "partitions": 4, "replication": 2}),
    );
    assert!(status == 201 || status == 200, "{status} {body}");
    let first = wait_map(&n1.url, &name, "first map on 3 nodes", |c| {
        settled(c) && ["n1", "n2", "n3"].iter().all(|n| holds(c, n))
    });
    for r in replicas_of(&first) {
        assert_eq!(r.len(), 2, "replication 2: {first}");
    }
    // Some data before the load.
    let pre: Vec<Value> = (0..500)
        .map(|i| json!({"id": format!("pre-{i}"), "vector": vector_of(1_000_000 + i)}))
        .collect();
    let (status, body) = post(
        &format!("{}/collections/{name}/vectors", n2.url),
        &json!({ "upserts": pre }),
    );
    assert_eq!(status, 200, "{body}");

    let targets = Arc::new(Mutex::new(vec![
        n1.url.clone(),
        n2.url.clone(),
        n3.url.clone(),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load: Vec<_> = (0..3)
        .map(|lane| {
            run_load(
                lane,
                name.clone(),
                Arc::clone(&targets),
                Arc::clone(&stop),
                Arc::clone(&tally),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // 1. A node joins: it gets its share, built from the log while the others serve.
    let n4 = start_node(dir.path(), "n4", &brokers, &cluster, &name);
    targets.lock().unwrap().push(n4.url.clone());
    let joined = wait_map(&n1.url, &name, "n4 takes its share", |c| {
        settled(c) && holds(c, "n4")
    });
    let epoch_after_join = joined["epoch"].as_u64().unwrap();

    // 2. A node leaves gracefully: SIGTERM drains it, then it exits by itself.
    targets.lock().unwrap().retain(|u| *u != n2.url);
    let mut n2 = n2;
    sigterm(&n2.child);
    wait_map(&n1.url, &name, "n2 drained", |c| {
        settled(c) && !holds(c, "n2")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = n2.child.try_wait().unwrap() {
            assert!(status.success(), "n2 exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "n2 did not stop after draining");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 3. A node is killed: its replicas are dropped and rebuilt on the survivors.
    targets.lock().unwrap().retain(|u| *u != n3.url);
    n3.child.kill().unwrap();
    n3.child.wait().unwrap();
    let healed = wait_map(&n1.url, &name, "n3's replicas rebuilt", |c| {
        settled(c) && !holds(c, "n3") && replicas_of(c).iter().all(|r| r.len() == 2)
    });
    assert!(healed["epoch"].as_u64().unwrap() > epoch_after_join);

    // 4. A range shard splits in two, built beside the serving one.
    let shard0 = healed["shards"][0]["range"].clone();
    let (status, body) = post(
        &format!("{}/cluster/collections/{name}/plan", n4.url),
        &json!({"action": "split", "shard": shard0, "at": shard0["end"].as_u64().unwrap() / 2}),
    );
    assert_eq!(status, 202, "{body}");
    let split = wait_map(&n1.url, &name, "split of shard 0", |c| {
        settled(c) && c["shards"].as_array().unwrap().len() == 5
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for lane in load {
        lane.join().unwrap();
    }

    // Nothing failed, every acknowledged write is there, on every node's router.
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    let queries = tally.queries.load(Ordering::Relaxed);
    assert!(queries > 50, "the load ran only {queries} queries");
    let epochs = tally.epochs.lock().unwrap().clone();
    assert!(
        epochs.len() >= 3,
        "answers came from only {epochs:?}; the map changed meanwhile: {split}"
    );
    let acked = tally.acked.lock().unwrap().clone();
    let c = client();
    for (i, id) in acked
        .iter()
        .chain(&["pre-0".to_owned(), "pre-499".to_owned()])
        .enumerate()
    {
        let url = if i % 2 == 0 { &n1.url } else { &n4.url };
        let r = c
            .get(format!("{url}/collections/{name}/vectors/{id}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "acknowledged write {id} is lost");
    }
    eprintln!(
        "elastic: {} writes acknowledged, {queries} searches, epochs {epochs:?}, nodes {} {}",
        acked.len(),
        n1.id,
        n4.id
    );
}
