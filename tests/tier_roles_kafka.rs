//! Tier roles decide placement, on the real broker: two `hektor node` processes on
//! 127.0.0.1 sharing one Kafka, `h` (`router,data,controller,planner,hot`) and `c`
//! (`data,cold`). A collection's shards start hot, so on `h` only; `hektor shard tier ...
//! cold` for one of them cannot switch in place (`h` may not hold cold), so the controller
//! builds a cold copy on `c` (a snapshot of `h`'s files, then the log), switches when it
//! is ready, and `h` drops its copy. Searches through the router keep answering all along
//! (none fails, every answer has k hits, as good as brute force's), writes made during the
//! move are found after it, and a tier no node may hold (warm) changes nothing and
//! `GET /cluster` says why. `GET /cluster` lists each member's roles.
//!
//! A promotion by the planner (tiering on, three nodes) lands on the hot node whose hot
//! budget the planner charged, the decision's placement hint, where the placement rules
//! alone would have chosen the other hot node.
//!
//! The `gpu` role: a batch search the routing rule sends to the GPU (100 queries), sent
//! to a node without one, runs on the live `gpu` node (which holds every shard) and the
//! answer says where and on which device; the same exact hits as the CPU here and as
//! brute force; once no `gpu` node is alive it runs on this node's CPU, saying why.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const K: usize = 10;
/// Rows written before the move; the rest of the sample is written during it.
const BEFORE: usize = 2500;
/// The most searches the background searcher sends (it stops earlier when told).
const MAX_SEARCHES: usize = 50_000;

fn start_node(
    dir: &Path,
    id: &str,
    brokers: &str,
    cluster: &str,
    scope: &str,
    roles: &str,
) -> Node {
    // The tiering policy stays off: only the operator's tier change moves shards here.
    start_config_node(
        dir,
        id,
        brokers,
        cluster,
        scope,
        roles,
        "no_tiering = true\n",
    )
}

fn hektor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(args)
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run hektor")
}

/// The data set: the sample shipped in the repo (3,000 MiniLM vectors, 100 queries).
struct Data {
    base: Vec<f32>,
    queries: Vec<f32>,
    dim: usize,
}

impl Data {
    fn load() -> Data {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/debian-minilm-384-sample");
        let (base, dim) =
            hektor_indexers::dataset::read_fvecs(&dir.join("base.fvecs"), None).unwrap();
        let (queries, qdim) =
            hektor_indexers::dataset::read_fvecs(&dir.join("query.fvecs"), None).unwrap();
        assert_eq!(dim, qdim);
        Data { base, queries, dim }
    }

    fn rows(&self) -> usize {
        self.base.len() / self.dim
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.base[i * self.dim..(i + 1) * self.dim]
    }

    fn query(&self, i: usize) -> &[f32] {
        let n = self.queries.len() / self.dim;
        let i = i % n;
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }

    /// Cosine similarity of query `q` and row `i`.
    fn similarity(&self, q: &[f32], i: usize) -> f32 {
        let r = self.row(i);
        let dot: f32 = q.iter().zip(r).map(|(a, b)| a * b).sum();
        let nq: f32 = q.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nr: f32 = r.iter().map(|a| a * a).sum::<f32>().sqrt();
        dot / (nq * nr).max(f32::MIN_POSITIVE)
    }

    /// Brute force: the k-th best similarity to `q` among rows `0..rows`.
    fn kth_best(&self, q: &[f32], rows: usize) -> f32 {
        let mut all: Vec<f32> = (0..rows).map(|i| self.similarity(q, i)).collect();
        all.sort_by(|a, b| b.total_cmp(a));
        all[K - 1]
    }

    /// The share of `hits` that are as close to `q` as brute force's k-th best over rows
    /// `0..rows` (ties allowed: the data set has duplicate texts). Rows written later
    /// that rank higher count as good, so it holds whatever else is visible.
    fn quality(&self, q: &[f32], hits: &[usize], rows: usize) -> f64 {
        let kth = self.kth_best(q, rows);
        let good = hits
            .iter()
            .filter(|&&i| self.similarity(q, i) >= kth - 1e-4)
            .count();
        good as f64 / K as f64
    }
}

fn row_of(id: &str) -> usize {
    id.strip_prefix('r')
        .and_then(|n| n.parse().ok())
        .expect("ids are r<row>")
}

/// The answer of one search through the router: (status, hit rows).
fn search(url: &str, name: &str, q: &[f32]) -> (u16, Vec<usize>, Value) {
    let (status, body) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": q, "k": K}),
    );
    let rows = body["hits"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|h| h["id"].as_str())
                .map(row_of)
                .collect()
        })
        .unwrap_or_default();
    (status, rows, body)
}

/// The collection's shards as `GET /cluster` on `url` shows them.
fn cluster_shards(url: &str, name: &str) -> Vec<Value> {
    let (status, view) = get(&format!("{url}/cluster"));
    assert_eq!(status, 200, "{view}");
    view["collections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == json!(name)))
        .and_then(|c| c["shards"].as_array().cloned())
        .unwrap_or_default()
}

/// The shards `url` holds of `name` (with their local state), by range start.
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

fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the background searcher saw.
#[derive(Default)]
struct Seen {
    searches: usize,
    failed: Vec<String>,
    short: Vec<String>,
    quality: f64,
}

#[test]
fn a_tier_its_holder_may_not_hold_moves_the_shard_to_a_node_that_may() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let data = Arc::new(Data::load());
    let dim = data.dim;
    let dir = tempfile::tempdir().unwrap();
    let cluster = unique("tierroles");
    let name = unique("tierroles");
    let h = start_node(
        dir.path(),
        "h",
        &brokers,
        &cluster,
        &name,
        r#""router", "data", "controller", "planner", "hot""#,
    );
    let c = start_node(
        dir.path(),
        "c",
        &brokers,
        &cluster,
        &name,
        r#""data", "cold""#,
    );

    // Both members, with their roles, in the router's view.
    wait_for("both members with roles", Duration::from_secs(60), || {
        let (_, view) = get(&format!("{}/cluster", h.url));
        let roles = |id: &str| view["members"][id]["roles"].clone();
        (roles("h") == json!(["router", "data", "controller", "planner", "hot"])
            && roles("c") == json!(["data", "cold"]))
        .then_some(())
    });

    create_collection(&h.url, &name, dim, 2);
    let ids: Vec<String> = (0..data.rows()).map(|i| format!("r{i}")).collect();
    upsert_rows(&h.url, &name, &data.base, dim, &ids, 0..BEFORE, 500);
    // Hot shards, on the hot node only.
    let before = wait_for(
        "the hot shards indexed on h",
        Duration::from_secs(180),
        || {
            let shards = local_shards(&h.url, &name);
            let vectors: u64 = shards.iter().filter_map(|s| s["vectors"].as_u64()).sum();
            (shards.len() == 2
                && vectors == BEFORE as u64
                && shards.iter().all(|s| s["pending"] == 0))
            .then_some(shards)
        },
    );
    for s in &before {
        assert_eq!(s["replicas"], json!(["h"]), "{s}");
        assert_eq!(s["tier"], "hot", "{s}");
    }
    assert!(
        local_shards(&c.url, &name).is_empty(),
        "a cold node took a hot shard"
    );
    let start = before[0]["range"]["start"].as_u64().unwrap();
    let other = before[1]["range"]["start"].as_u64().unwrap();

    // Searches through the router all along, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let searcher = {
        let (url, name, data, stop, done) = (
            h.url.clone(),
            name.clone(),
            Arc::clone(&data),
            Arc::clone(&stop),
            Arc::clone(&done),
        );
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut quality = 0.0;
            while !stop.load(Ordering::Relaxed) && seen.searches < MAX_SEARCHES {
                let q = data.query(seen.searches);
                let (status, rows, body) = search(&url, &name, q);
                seen.searches += 1;
                done.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    seen.failed.push(format!("{status}: {body}"));
                    continue;
                }
                if rows.len() != K {
                    seen.short.push(format!("{} hits: {body}", rows.len()));
                }
                // Rows 0..BEFORE are visible throughout; later ones may be too.
                quality += data.quality(q, &rows, BEFORE);
            }
            let answered = seen.searches - seen.failed.len();
            seen.quality = quality / answered.max(1) as f64;
            seen
        })
    };

    // The tier change: the hot node may not hold cold, so the shard moves to `c`.
    let asked_at = done.load(Ordering::Relaxed);
    let out = hektor(&[
        "shard",
        "tier",
        "--url",
        &h.url,
        &name,
        &start.to_string(),
        "cold",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Writes during the move reach the new copy from the log.
    upsert_rows(
        &h.url,
        &name,
        &data.base,
        dim,
        &ids,
        BEFORE..data.rows(),
        250,
    );
    let moved = wait_for(
        "the shard on the cold node",
        Duration::from_secs(240),
        || {
            cluster_shards(&h.url, &name)
                .into_iter()
                .find(|s| s["range"]["start"].as_u64() == Some(start))
                .filter(|s| s["replicas"] == json!(["c"]) && s["tier"] == "cold")
        },
    );
    assert_eq!(moved["tier"], "cold");
    let during = done.load(Ordering::Relaxed) - asked_at;
    // The other shard stays hot on the hot node.
    let kept = cluster_shards(&h.url, &name)
        .into_iter()
        .find(|s| s["range"]["start"].as_u64() == Some(other))
        .unwrap();
    assert_eq!(
        (kept["replicas"].clone(), kept["tier"].clone()),
        (json!(["h"]), json!("hot"))
    );
    // Every vector is held once: the cold shard on c, the hot one on h; h dropped its
    // old copy after the grace period.
    wait_for("every vector in place", Duration::from_secs(180), || {
        let on_c = local_shards(&c.url, &name);
        let on_h = local_shards(&h.url, &name);
        let count =
            |shards: &[Value]| -> u64 { shards.iter().filter_map(|s| s["vectors"].as_u64()).sum() };
        (on_c.len() == 1
            && on_c[0]["range"]["start"].as_u64() == Some(start)
            && on_c[0]["engine"] == "cold"
            && on_h.len() == 1
            && on_h[0]["range"]["start"].as_u64() == Some(other)
            && count(&on_c) + count(&on_h) == data.rows() as u64)
            .then_some(())
    });
    let origin = local_shards(&c.url, &name)[0]["origin"].clone();
    eprintln!("the cold copy came from: {origin}");
    // The controller said why it moved.
    let (_, view) = get(&format!("{}/cluster", h.url));
    let said = view["map_changes"].to_string();
    assert!(said.contains("tier hot -> cold moves it"), "{said}");

    // A few more seconds of searches on the new placement, then stop.
    let after = Instant::now();
    while after.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = searcher.join().unwrap();
    eprintln!(
        "searches: {} ({during} while the shard moved), failed {}, short {}, quality {:.3}",
        seen.searches,
        seen.failed.len(),
        seen.short.len(),
        seen.quality
    );
    assert!(during > 0, "no search ran while the shard moved");
    assert!(
        seen.failed.is_empty(),
        "searches failed: {:?}",
        &seen.failed[..seen.failed.len().min(5)]
    );
    assert!(
        seen.short.is_empty(),
        "short answers: {:?}",
        &seen.short[..seen.short.len().min(5)]
    );
    assert!(
        seen.quality >= 0.9,
        "answers worse than brute force: {:.3}",
        seen.quality
    );

    // After the move, against brute force over every row (including those written during
    // it): each query's hits as good as the exact top k.
    let n_queries = data.queries.len() / dim;
    let mut quality = 0.0;
    for i in 0..n_queries {
        let q = data.query(i);
        let (status, rows, body) = search(&h.url, &name, q);
        assert_eq!(status, 200, "{body}");
        assert_eq!(rows.len(), K, "{body}");
        quality += data.quality(q, &rows, data.rows());
    }
    let quality = quality / n_queries as f64;
    eprintln!(
        "after the move: recall@{K} against brute force {quality:.3} over {n_queries} queries"
    );
    assert!(
        quality >= 0.9,
        "recall@{K} {quality:.3} against brute force"
    );
    // Rows written during the move are found (each is its own nearest neighbour, or ties
    // with a duplicate text).
    for i in (BEFORE..data.rows()).step_by(25) {
        let (status, rows, body) = search(&h.url, &name, data.row(i));
        assert_eq!(status, 200, "{body}");
        let top = rows.first().copied().unwrap_or(usize::MAX);
        assert!(
            top == i || data.similarity(data.row(i), top) > 0.9999,
            "row {i} written during the move is not found: {body}"
        );
    }

    // No live node may hold warm: the ask changes nothing, and the controller says why.
    let out = hektor(&[
        "shard",
        "tier",
        "--url",
        &h.url,
        &name,
        &other.to_string(),
        "warm",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the reason a warm shard waits",
        Duration::from_secs(30),
        || {
            let (_, view) = get(&format!("{}/cluster", h.url));
            view["map_changes"].as_array().and_then(|changes| {
                changes
                    .iter()
                    .find(|m| {
                        m["unchanged"] == json!(true)
                            && m["reasons"]
                                .to_string()
                                .contains("no live data node may hold warm")
                    })
                    .cloned()
            })
        },
    );
    let kept = cluster_shards(&h.url, &name)
        .into_iter()
        .find(|s| s["range"]["start"].as_u64() == Some(other))
        .unwrap();
    assert_eq!(
        (kept["replicas"].clone(), kept["tier"].clone()),
        (json!(["h"]), json!("hot"))
    );
    drop(c);
}

/// The tiering policy's settings of the promotion test: a shard queried at a few per
/// second is promoted within seconds; nothing is demoted for an hour.
const TIERING: &str = "tier_promote_qps = 2.0
tier_demote_qps = 1.0
tier_cold_qps = 0.1
tier_dwell_ms = 1000
tier_demote_dwell_ms = 3600000
tier_cold_dwell_ms = 86400000
planner_interval_ms = 500
";

/// A tenant whose vectors all lie in `partition` (of `partitions`).
fn tenant_in(partition: u32, partitions: u32) -> String {
    (0..1_000_000)
        .map(|i| format!("t{i}"))
        .find(|t| {
            let p = hektor_topics::ring::tenant_partitions(t, partitions);
            *p.start() == partition && *p.end() == partition
        })
        .expect("a tenant inside the partition")
}

/// The planner promotes a cold shard held by a cold-only node: the controller must move
/// it to a hot node, and it goes to the one the planner charged the hot budget to (the
/// decision's placement hint), not to the one the placement rules would choose on their
/// own. Three `hektor node`s on one Kafka: `h1` (router, controller, planner, hot), `h2`
/// (hot), `c` (cold), a collection of 3 partitions: the first map puts partitions 0 and 2
/// on `h1`, 1 on `h2`. Partition 0 gets most rows, 1 a few, 2 a tenant's rows; the
/// operator sends partition 2 cold (to `c`). Then `h1` holds one big hot shard and `h2` a
/// small one: by count the rules would take `h1` (a tie, broken by name); by hot bytes the
/// planner charges `h2`. Searches of the tenant make the planner promote it: it lands on
/// `h2`, and no search fails meanwhile.
#[test]
fn a_promotion_lands_on_the_hot_node_the_planner_charged() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let data = Arc::new(Data::load());
    let dim = data.dim;
    let dir = tempfile::tempdir().unwrap();
    let cluster = unique("tierhint");
    let name = unique("tierhint");
    let node = |id: &str, roles: &str| {
        start_config_node(dir.path(), id, &brokers, &cluster, &name, roles, TIERING)
    };
    let h1 = node("h1", r#""router", "data", "controller", "planner", "hot""#);
    let h2 = node("h2", r#""data", "hot""#);
    let c = node("c", r#""data", "cold""#);
    wait_for("three members", Duration::from_secs(60), || {
        let (_, view) = get(&format!("{}/cluster", h1.url));
        ["h1", "h2", "c"]
            .iter()
            .all(|id| view["members"][*id]["roles"].is_array())
            .then_some(())
    });
    const PARTITIONS: u32 = 3;
    create_collection(&h1.url, &name, dim, PARTITIONS);
    let range_of = |p: u32| hektor_topics::ring::partition_range(p, PARTITIONS);
    let shard_at = |start: u64| {
        cluster_shards(&h1.url, &name)
            .into_iter()
            .find(|s| s["range"]["start"].as_u64() == Some(start))
    };
    let first = wait_for("the first map", Duration::from_secs(60), || {
        let shards = cluster_shards(&h1.url, &name);
        (shards.len() == PARTITIONS as usize).then_some(shards)
    });
    let holder = |p: u32| {
        first
            .iter()
            .find(|s| s["range"]["start"].as_u64() == Some(range_of(p).start))
            .map(|s| s["replicas"].clone())
    };
    assert_eq!(
        (holder(0), holder(1), holder(2)),
        (
            Some(json!(["h1"])),
            Some(json!(["h2"])),
            Some(json!(["h1"]))
        ),
        "the first map (sticky, balanced, ties by name): {first:?}"
    );

    // Rows: partition 0 all its own (big on h1), partition 1 a few (small on h2), and
    // partition 2 the tenant's.
    let partition_of = |id: &str| {
        hektor_topics::ring::partition_of(hektor_topics::ring::position(None, id), PARTITIONS)
    };
    let ids: Vec<String> = (0..data.rows()).map(|i| format!("r{i}")).collect();
    let big: Vec<usize> = (0..2000).filter(|&i| partition_of(&ids[i]) == 0).collect();
    let small: Vec<usize> = (0..2000)
        .filter(|&i| partition_of(&ids[i]) == 1)
        .take(20)
        .collect();
    let tenant = tenant_in(2, PARTITIONS);
    let tenant_rows: Vec<usize> = (2000..2300).collect();
    let write = |rows: &[usize], tenant: Option<&str>| {
        for chunk in rows.chunks(250) {
            let upserts: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    let mut u = json!({"id": ids[i], "vector": data.row(i)});
                    if let Some(t) = tenant {
                        u["tenant"] = json!(t);
                    }
                    u
                })
                .collect();
            let (status, body) = post(
                &format!("{}/collections/{name}/vectors", h1.url),
                &json!({ "upserts": upserts }),
            );
            assert_eq!(status, 200, "upsert: {body}");
        }
    };
    write(&big, None);
    write(&small, None);
    write(&tenant_rows, Some(&tenant));
    let total = (big.len() + small.len() + tenant_rows.len()) as u64;
    wait_for("every row indexed", Duration::from_secs(180), || {
        let shards: Vec<Value> = [&h1.url, &h2.url]
            .iter()
            .flat_map(|u| local_shards(u, &name))
            .collect();
        let vectors: u64 = shards.iter().filter_map(|s| s["vectors"].as_u64()).sum();
        (vectors == total && shards.iter().all(|s| s["pending"] == 0)).then_some(())
    });

    // The operator sends partition 2 cold: h1 may not hold cold, so it moves to c.
    let d = range_of(2).start;
    let out = hektor(&[
        "shard",
        "tier",
        "--url",
        &h1.url,
        &name,
        &d.to_string(),
        "cold",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("partition 2 cold on c", Duration::from_secs(240), || {
        shard_at(d).filter(|s| s["replicas"] == json!(["c"]) && s["tier"] == "cold")
    });
    wait_for("h1's old copy dropped", Duration::from_secs(120), || {
        (local_shards(&h1.url, &name).len() == 1).then_some(())
    });

    // The tenant's searches make the planner promote it.
    let stop = Arc::new(AtomicBool::new(false));
    let searcher = {
        let (url, name, data, stop, tenant) = (
            h1.url.clone(),
            name.clone(),
            Arc::clone(&data),
            Arc::clone(&stop),
            tenant.clone(),
        );
        std::thread::spawn(move || {
            let (mut searches, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) && searches < MAX_SEARCHES {
                let (status, body) = post(
                    &format!("{url}/collections/{name}/search"),
                    &json!({"vector": data.query(searches % 100), "k": K, "tenant": tenant}),
                );
                searches += 1;
                if status != 200 || body["hits"].as_array().map_or(0, Vec::len) != K {
                    failed.push(format!("{status}: {body}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (searches, failed)
        })
    };
    let mut seen_on: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let promoted = loop {
        if let Some(s) = shard_at(d) {
            if !seen_on.contains(&s["replicas"]) {
                seen_on.push(s["replicas"].clone());
            }
            if s["tier"] == "hot" {
                break s;
            }
        }
        if Instant::now() > deadline {
            let (_, view) = get(&format!("{}/cluster", h1.url));
            panic!(
                "partition 2 not promoted: held by {seen_on:?}; the planner's tiering: {}; \
                 map changes: {}",
                view["planner"]["tiering"], view["map_changes"]
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    let (searches, failed) = searcher.join().unwrap();
    eprintln!(
        "partition 2 held by {seen_on:?}; {searches} searches, {} failed",
        failed.len()
    );
    // The planner's decision says where it charged the budget ...
    let (_, view) = get(&format!("{}/cluster", h1.url));
    let reasons: Vec<String> = view["planner"]["tiering"]["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["action"]["shard"]["start"].as_u64() == Some(d))
        .filter_map(|x| x["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("cold → hot") && r.contains("charged to h2")),
        "{reasons:?}"
    );
    // ... and the shard landed there, never on h1.
    assert_eq!(promoted["replicas"], json!(["h2"]), "{promoted}");
    assert!(!seen_on.contains(&json!(["h1"])), "{seen_on:?}");
    assert!(
        failed.is_empty(),
        "searches failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    // The other shards stay where they were.
    assert_eq!(
        shard_at(range_of(0).start).unwrap()["replicas"],
        json!(["h1"])
    );
    assert_eq!(
        shard_at(range_of(1).start).unwrap()["replicas"],
        json!(["h2"])
    );
    drop((h2, c));
}

/// One batch search through `url`: (status, answer).
fn batch(url: &str, name: &str, queries: &[&[f32]], device: &str) -> (u16, Value) {
    post(
        &format!("{url}/collections/{name}/search/batch"),
        &json!({"vectors": queries, "k": K, "device": device}),
    )
}

/// Per query, the hit rows of a batch answer.
fn batch_rows(answer: &Value) -> Vec<Vec<usize>> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| row_of(h["id"].as_str().expect("id")))
                .collect()
        })
        .collect()
}

#[test]
fn a_gpu_sized_batch_runs_on_the_gpu_node_and_on_the_cpu_once_none_is_alive() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    const ROWS: usize = 1000;
    let data = Data::load();
    let dim = data.dim;
    let dir = tempfile::tempdir().unwrap();
    let cluster = unique("gpuroute");
    let name = unique("gpuroute");
    let a = start_node(
        dir.path(),
        "a",
        &brokers,
        &cluster,
        &name,
        r#""router", "data", "controller", "planner""#,
    );
    let g = start_node(
        dir.path(),
        "g",
        &brokers,
        &cluster,
        &name,
        r#""data", "gpu""#,
    );
    wait_for("the gpu member", Duration::from_secs(60), || {
        let (_, view) = get(&format!("{}/cluster", a.url));
        (view["members"]["g"]["roles"] == json!(["data", "gpu"])).then_some(())
    });
    // Both nodes hold every shard: a batch runs where every shard is local.
    let (status, body) = put(
        &format!("{}/collections/{name}", a.url),
        &json!({"dimension": dim, "distance": "cosine", "partitions": 2, "replication": 2}),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let ids: Vec<String> = (0..data.rows()).map(|i| format!("r{i}")).collect();
    upsert_rows(&a.url, &name, &data.base, dim, &ids, 0..ROWS, 500);
    for node in [&a, &g] {
        wait_for(
            "every shard on both nodes",
            Duration::from_secs(180),
            || {
                let shards = local_shards(&node.url, &name);
                let vectors: u64 = shards.iter().filter_map(|s| s["vectors"].as_u64()).sum();
                (shards.len() == 2 && vectors == ROWS as u64).then_some(())
            },
        );
    }
    let n_queries = data.queries.len() / dim;
    assert!(n_queries >= 100, "the rule sends 100 queries to the GPU");
    let queries: Vec<&[f32]> = (0..100).map(|i| data.query(i)).collect();

    // 100 queries: the rule wants the GPU; `a` has none, so `g` runs it and says so.
    let (status, forwarded) = batch(&a.url, &name, &queries, "auto");
    assert_eq!(status, 200, "{forwarded}");
    assert_eq!(forwarded["node"], "g", "{}", forwarded["why"]);
    assert_eq!(forwarded["forwarded_by"], "a", "{}", forwarded["why"]);
    let why = forwarded["why"].as_str().unwrap();
    eprintln!(
        "100 queries sent to a: ran on {} ({}): {why}",
        forwarded["node"], forwarded["ran_on"]
    );
    assert!(why.contains("forwarded to the `gpu` node g"), "{why}");
    // Truthful about the device: without a GPU on `g` too, its CPU, and why.
    if forwarded["ran_on"] == "cpu" {
        assert!(why.contains("no GPU is available"), "{why}");
    }
    // The same exact answer as `a`'s own CPU, and as brute force.
    let (status, here) = batch(&a.url, &name, &queries, "cpu");
    assert_eq!(status, 200, "{here}");
    assert_eq!(
        (here["node"].clone(), here["forwarded_by"].clone()),
        (json!("a"), Value::Null)
    );
    assert_eq!(here["ran_on"], "cpu");
    let (there, local) = (batch_rows(&forwarded), batch_rows(&here));
    assert_eq!(there.len(), 100);
    for (q, (x, y)) in there.iter().zip(&local).enumerate() {
        assert_eq!(x.len(), K);
        let quality = data.quality(queries[q], x, ROWS);
        assert!(quality >= 0.999, "query {q}: {quality} against brute force");
        let mut xs = x.clone();
        let mut ys = y.clone();
        xs.sort_unstable();
        ys.sort_unstable();
        if xs != ys {
            // Only ties at the k-th place may differ.
            let kth = data.kth_best(queries[q], ROWS);
            for r in xs.iter().chain(&ys) {
                assert!(
                    data.similarity(queries[q], *r) >= kth - 1e-4,
                    "query {q}: {x:?} on g vs {y:?} on a"
                );
            }
        }
    }
    // A small batch stays on the CPU of the node it is sent to.
    let (status, small) = batch(&a.url, &name, &queries[..5], "auto");
    assert_eq!(status, 200, "{small}");
    assert_eq!(
        (small["node"].clone(), small["ran_on"].clone()),
        (json!("a"), json!("cpu"))
    );
    assert!(
        small["why"].as_str().unwrap().contains("stay on the CPU"),
        "{small}"
    );

    // No `gpu` node alive: the GPU-sized batch runs on `a`'s CPU, and says why.
    drop(g);
    wait_for("g dead", Duration::from_secs(30), || {
        let (_, view) = get(&format!("{}/cluster", a.url));
        (view["members"]["g"]["alive"] == json!(false)).then_some(())
    });
    let (status, fallback) = batch(&a.url, &name, &queries, "auto");
    assert_eq!(status, 200, "{fallback}");
    assert_eq!(
        (
            fallback["node"].clone(),
            fallback["forwarded_by"].clone(),
            fallback["ran_on"].clone()
        ),
        (json!("a"), Value::Null, json!("cpu"))
    );
    let why = fallback["why"].as_str().unwrap();
    eprintln!(
        "with g dead: ran on {} ({}): {why}",
        fallback["node"], fallback["ran_on"]
    );
    assert!(why.contains("no live `gpu` node"), "{why}");
    assert_eq!(batch_rows(&fallback), local);
}
