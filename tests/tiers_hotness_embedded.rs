//! Tiers by hotness through the real binary (issue #18, seed §2.2): the kinetic planner
//! moves shards between the hot, warm and cold tiers from their measured query rates,
//! within a per-node hot budget, and the controller carries its decisions out.
//!
//! One node on the embedded log, thresholds scaled to seconds, a hot budget (1 MiB) that
//! holds one shard of the collection (4 shards, one tenant each, 3,000 vectors of 16
//! dimensions: 0.64 MiB by the estimate `vectors × (5 × dim + 144)`). With no queries
//! every shard leaves the hot tier and ends cold; then a skewed load (tenant A ~30 qps,
//! tenant B ~10 qps, the other two none): A's shard is promoted to hot, B's (hot-worthy
//! too, but the budget is full and its rate is not twice below A's to evict it) goes to
//! warm, the two idle ones, never read, are archived by the planner to a real S3 server
//! (s3proxy, `tests/common/s3.rs`) and their local copies removed; then a search of each
//! idle tenant restores its shard from the bucket with exact answers. Every decision's
//! reason is in `GET /cluster`; no query fails; no vector is lost; from the moment the
//! load's excess was shed, the hot tier never exceeds the budget.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hektor_topics::record::RingRange;
use hektor_topics::ring;
use serde_json::{json, Value};

const DIM: usize = 16;
const PER_TENANT: usize = 3_000;
const BUDGET_MIB: u64 = 1;

/// Four tenants whose ranges lie in four different partitions of 4.
fn tenants() -> Vec<(String, RingRange)> {
    let mut found: Vec<(String, RingRange)> = Vec::new();
    for i in 0.. {
        let name = format!("tenant-{i}");
        let range = ring::tenant_range(&name);
        let p = ring::partition_of(range.start, 4);
        if !found
            .iter()
            .any(|(_, r)| ring::partition_of(r.start, 4) == p)
        {
            found.push((name, range));
        }
        if found.len() == 4 {
            break;
        }
    }
    found
}

/// The serving shard of collection `h` holding `position`, from `GET /cluster`.
fn shard_of(cluster: &Value, position: u64) -> Value {
    cluster["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "h")
        .and_then(|c| {
            c["shards"].as_array().unwrap().iter().find(|s| {
                let start = s["range"]["start"].as_u64().unwrap();
                let end = s["range"]["end"].as_u64();
                start <= position && end.is_none_or(|e| position < e)
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no shard holds {position:#x}: {cluster}"))
}

fn tier_of(cluster: &Value, position: u64) -> String {
    shard_of(cluster, position)["tier"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Hot bytes on this node by the map's tiers and the shards' vector counts.
fn hot_bytes(cluster: &Value) -> u64 {
    cluster["collections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["shards"].as_array().unwrap().iter())
        .filter(|s| s["tier"] == "hot")
        .map(|s| {
            hektor_dataflow::tiering::hot_bytes(s["vectors"].as_u64().unwrap_or(0), DIM as u32)
        })
        .sum()
}

fn cluster(url: &str) -> Value {
    let (status, body) = get(&format!("{url}/cluster"));
    assert_eq!(status, 200, "{body}");
    body
}

fn tier_decisions(cluster: &Value) -> Vec<Value> {
    cluster["planner"]["tiering"]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The latest tier decision for the shard holding `position` to `tier`, if any.
fn decided(cluster: &Value, position: u64, tier: &str) -> Option<Value> {
    tier_decisions(cluster).into_iter().rev().find(|d| {
        let shard = &d["action"]["shard"];
        let start = shard["start"].as_u64().unwrap_or(u64::MAX);
        let end = shard["end"].as_u64();
        d["action"]["tier"] == tier && start <= position && end.is_none_or(|e| position < e)
    })
}

#[test]
fn shards_move_between_tiers_by_hotness_within_the_hot_budget() {
    let Some(s3) = s3::server("tests/tiers_hotness_embedded.rs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--engine",
        "hnsw",
        "--planner-interval-ms",
        "300",
        "--heartbeat-ms",
        "300",
        "--hot-budget-mb",
        &BUDGET_MIB.to_string(),
        "--tier-promote-qps",
        "2",
        "--tier-demote-qps",
        "0.5",
        "--tier-cold-qps",
        "0.05",
        "--tier-dwell-ms",
        "1500",
        "--tier-demote-dwell-ms",
        "2000",
        "--tier-cold-dwell-ms",
        "2000",
        "--tier-moves-per-min",
        "60",
        "--tier-archive-dwell-ms",
        "5000",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(s3.serve_args(&unique("tiers")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start_server(dir.path(), None, &args);
    let url = server.url.clone();
    create_collection(&url, "h", DIM, 4);
    let tenants = tenants();
    let total = PER_TENANT * tenants.len();
    // Vectors: a fixed pseudo-random direction per row.
    let vector = |row: usize| -> Vec<f32> {
        (0..DIM)
            .map(|d| (((row * 31 + d * 17) % 97) as f32 / 97.0) - 0.5 + d as f32 * 1e-3)
            .collect()
    };
    let mut token = serde_json::Map::new();
    for (t, (tenant, _)) in tenants.iter().enumerate() {
        for chunk in (0..PER_TENANT).collect::<Vec<_>>().chunks(500) {
            let upserts: Vec<Value> = chunk
                .iter()
                .map(|&i| json!({"id": format!("v{i}"), "tenant": tenant, "vector": vector(t * PER_TENANT + i)}))
                .collect();
            let (status, body) = post(
                &format!("{url}/collections/h/vectors"),
                &json!({ "upserts": upserts }),
            );
            assert_eq!(status, 200, "upsert: {body}");
            merge_token(&mut token, &body["token"]);
        }
    }
    let token = Value::Object(token);
    let count = |url: &str| -> u64 {
        let (status, info) = get(&format!("{url}/collections/h"));
        assert_eq!(status, 200, "{info}");
        info["vectors"].as_u64().unwrap_or(0)
    };
    // Every write applied before anything is measured.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&url) != total as u64 {
        assert!(Instant::now() < deadline, "the load never applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (a, b) = (tenants[0].1.start, tenants[1].1.start);
    let idle = [tenants[2].1.start, tenants[3].1.start];

    // Phase 1: no queries. Four hot shards exceed the budget and none is queried: all
    // leave the hot tier and end cold, each change with its reason (the first may be on
    // its way to the archive already).
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let c = cluster(&url);
        let tiers: Vec<String> = tenants.iter().map(|(_, r)| tier_of(&c, r.start)).collect();
        if tiers.iter().all(|t| t == "cold" || t == "archive") {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the idle shards never went cold: {tiers:?}; {}",
            c["planner"]["tiering"]
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (_, r) in &tenants {
        let d = decided(&settled, r.start, "cold").expect("a decision to cold");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("tier: warm → cold: qps 0.0 < cold 0.05 for"),
            "{reason}"
        );
        assert_eq!(d["carried_out_by"], "controller", "{d}");
    }
    // The same decisions are among the planner's (and so in `hektor cluster`).
    assert!(settled["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["reason"].as_str().unwrap_or("").starts_with("tier: ")));

    // Phase 2: a skewed load. Two client threads search their tenant only (so only its
    // shard is counted), A about 3x as often as B; a third samples the hot tier.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for (tenant, pause_ms) in [(tenants[0].0.clone(), 30u64), (tenants[1].0.clone(), 100)] {
        let (url, stop, failures, served, token) = (
            url.clone(),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&served),
            token.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let mut i = 0usize;
            let until = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let q: Vec<f32> = (0..DIM).map(|d| ((i + d) % 7) as f32 - 3.0).collect();
                let (status, body) = post(
                    &format!("{url}/collections/h/search"),
                    &json!({"vector": q, "k": 5, "tenant": tenant,
                            "consistency": {"after": token}}),
                );
                if status != 200 || body["hits"].as_array().is_none_or(|h| h.len() != 5) {
                    eprintln!("search failed: {status} {body}");
                    failures.fetch_add(1, Ordering::Relaxed);
                } else {
                    served.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
        }));
    }
    let budget = BUDGET_MIB << 20;
    let deadline = Instant::now() + Duration::from_secs(75);
    let mut samples = 0;
    let mut b_blocked = false;
    let end = loop {
        let c = cluster(&url);
        samples += 1;
        let hot = hot_bytes(&c);
        assert!(
            hot <= budget,
            "the hot tier holds {hot} bytes > budget {budget}: {}",
            c["collections"]
        );
        for n in c["planner"]["tiering"]["nodes"].as_array().unwrap() {
            assert!(
                n["hot_bytes"].as_u64().unwrap() <= n["budget_bytes"].as_u64().unwrap(),
                "{n}"
            );
        }
        assert_ne!(tier_of(&c, b), "hot", "B's shard cannot fit beside A's");
        // B, hot-worthy too, waits for room (or went to warm for want of it).
        let b_range = json!(shard_of(&c, b)["range"]);
        b_blocked |= c["planner"]["tiering"]["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["range"] == b_range && w["why"].as_str().unwrap_or("").contains("is full"))
            || decided(&c, b, "warm")
                .is_some_and(|d| d["reason"].as_str().unwrap_or("").contains("is full"));
        // The idle shards, never read, end in the bucket (their local copies removed).
        let archived = |p: u64| {
            let s = shard_of(&c, p);
            s["tier"] == "archive" && s["archive"]["location"].is_string()
        };
        let done = tier_of(&c, a) == "hot"
            && tier_of(&c, b) == "warm"
            && b_blocked
            && idle.iter().all(|p| archived(*p));
        if done {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "A never hot / B never warm / idle never archived: A {}, B {}, idle {:?}; {}",
            tier_of(&c, a),
            tier_of(&c, b),
            idle.map(|p| shard_of(&c, p)),
            c["planner"]["tiering"]
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Keep the load a little longer on the settled tiers: nothing flaps, nothing fails.
    let calm = Instant::now() + Duration::from_secs(3);
    while Instant::now() < calm {
        let c = cluster(&url);
        assert!(hot_bytes(&c) <= budget);
        assert_eq!(tier_of(&c, a), "hot");
        assert_ne!(tier_of(&c, b), "hot");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    // A's rate ramps up through the demote threshold (cold → warm) to the promote one,
    // so it may pass through warm on its way.
    let up = decided(&end, a, "hot").expect("A's promotion");
    let reason = up["reason"].as_str().unwrap();
    assert!(
        (reason.starts_with("tier: cold → hot: qps ")
            || reason.starts_with("tier: warm → hot: qps "))
            && reason.contains("≥ promote 2 for")
            && reason.contains("fits the hot budget"),
        "{reason}"
    );
    for p in idle {
        let d = decided(&end, p, "archive").expect("an idle shard's archiving");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("tier: cold → archive: qps 0.0 < archive 0.01 for"),
            "{reason}"
        );
        assert!(shard_of(&end, p)["archive"]["bytes"].as_u64().unwrap() > 0);
    }
    let warm = decided(&end, b, "warm").expect("B's move to warm");
    let reason = warm["reason"].as_str().unwrap();
    assert!(reason.starts_with("tier: cold → warm: qps "), "{reason}");
    assert!(
        b_blocked,
        "B was never shown waiting for room in the hot tier: {}",
        end["planner"]["tiering"]
    );
    // The node reports the engines: A's shard on the hot engine, B's on the warm one,
    // the archived ones on none (once their rebuilds are done).
    let engine_of = |info: &Value, p: u64| {
        info["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                let start = s["range"]["start"].as_u64().unwrap();
                start <= p && s["range"]["end"].as_u64().is_none_or(|e| p < e)
            })
            .map(|s| s["engine"].clone())
            .unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let (_, info) = get(&format!("{url}/collections/h"));
        let engines: Vec<Value> = [a, b, idle[0], idle[1]]
            .iter()
            .map(|p| engine_of(&info, *p))
            .collect();
        if engines == [json!("hnsw"), json!("warm"), Value::Null, Value::Null] {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "engines never followed the tiers: {engines:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "engines: A {} B {}; {} searches, {} samples",
        engine_of(&info, a),
        engine_of(&info, b),
        served.load(Ordering::Relaxed),
        samples
    );
    // `hektor cluster` prints the hot tier against its budget and the tier decisions.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(["cluster", "--url", &url])
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run hektor cluster");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("hot tier (tiers by hotness on)")
            && printed.contains("MiB of 1.0 MiB budget, 1 hot shards")
            && printed.contains("tier: "),
        "{printed}"
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "some searches failed");
    assert!(served.load(Ordering::Relaxed) > 100);

    // Phase 3: a search of each idle tenant restores its shard from the bucket (the read
    // waits for the restore; a 503 must carry Retry-After and is retried) and answers
    // exactly: the scores of brute force over the tenant's rows.
    let mut unavailable = 0;
    for t in [2, 3] {
        let (tenant, range) = &tenants[t];
        let rows: Vec<Vec<f32>> = (0..PER_TENANT)
            .map(|i| vector(t * PER_TENANT + i))
            .collect();
        for q in 0..3 {
            let query = vector(t * PER_TENANT + 1 + q * 500);
            let deadline = Instant::now() + Duration::from_secs(60);
            let hits = loop {
                let resp = client()
                    .post(format!("{url}/collections/h/search"))
                    .json(&json!({"vector": query, "k": 5, "tenant": tenant,
                                  "consistency": {"after": token}}))
                    .send()
                    .expect("search sent");
                let status = resp.status().as_u16();
                let retry = resp.headers().contains_key("retry-after");
                let body: Value = resp.json().unwrap_or(Value::Null);
                if status == 200 {
                    break body["hits"].as_array().cloned().unwrap_or_default();
                }
                assert!(
                    status == 503 && retry,
                    "a search of an archived shard failed: {status} {body}"
                );
                unavailable += 1;
                assert!(Instant::now() < deadline, "never restored: {body}");
                std::thread::sleep(Duration::from_millis(300));
            };
            let mut exact: Vec<f64> = rows.iter().map(|r| cosine(r, &query)).collect();
            exact.sort_by(|x, y| y.total_cmp(x));
            let got: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
            assert_eq!(got.len(), 5, "{hits:?}");
            for (g, e) in got.iter().zip(&exact) {
                assert!(
                    (g - e).abs() < 1e-3,
                    "restored answers {got:?}, exact {:?}",
                    &exact[..5]
                );
            }
        }
        // The host asks the controller for cold once it restored the shard.
        let deadline = Instant::now() + Duration::from_secs(30);
        while tier_of(&cluster(&url), range.start) == "archive" {
            assert!(
                Instant::now() < deadline,
                "restored, yet the map still says archive"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!("restores: {unavailable} answers 503 + Retry-After while restoring");
    // Every vector is back: none lost to the archive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&url) != total as u64 {
        assert!(
            Instant::now() < deadline,
            "vectors lost: {} of {total}",
            count(&url)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    f64::from(dot / (norm(a) * norm(b)))
}

#[test]
fn bad_tiering_flags_are_refused_with_a_reason() {
    for (flags, says) in [
        (
            vec!["--tier-promote-qps", "1", "--tier-demote-qps", "2"],
            "must be below the promote qps",
        ),
        (vec!["--tier-cold-qps", "9"], "must be below the demote qps"),
        (
            vec!["--hot-budget-mb", "0"],
            "--hot-budget-mb must be at least 1",
        ),
        (vec!["--tier-moves-per-min", "0"], "at least 1"),
        (vec!["--tier-promote-qps", "NaN"], "finite"),
        (
            vec!["--tier-archive-dwell-ms", "1000"],
            "give it one with --archive-url",
        ),
        (
            vec![
                "--tier-archive-dwell-ms",
                "1000",
                "--archive-url",
                "file:///tmp/hektor-never-used",
                "--tier-archive-qps",
                "0.5",
            ],
            "archive qps (0.5) must be below the cold qps",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hektor"))
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(&flags)
            .env("HEKTOR_LOG", "warn")
            .output()
            .expect("run hektor");
        assert!(!out.status.success(), "{flags:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}
