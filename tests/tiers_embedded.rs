//! Storage tiers through the real binary: `hektor shard tier` moves a serving shard from
//! the hot engine to warm (int8 graph on LMDB) and cold (binary-quantized arroy +
//! rescoring) and back, while it keeps answering; the map records the tier and the node
//! reports the engine. On the warm tier a search may skip the rescoring (`"rescore":
//! false`): the same neighbours, scores from the int8 codes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn hektor(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(args)
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run hektor")
}

fn shard0(url: &str) -> Value {
    let (status, info) = get(&format!("{url}/collections/t"));
    assert_eq!(status, 200, "{info}");
    info["shards"][0].clone()
}

#[test]
fn a_shard_changes_tier_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &["--engine", "hnsw", "--no-planner"]);
    let url = &server.url;
    create_collection(url, "t", 384, 2);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/debian-minilm-384-sample");
    let (base, dim) =
        hektor_indexers::dataset::read_fvecs(&sample.join("base.fvecs"), Some(1500)).unwrap();
    let ids: Vec<String> = (0..base.len() / dim).map(|i| format!("r{i}")).collect();
    let token = upsert_rows(url, "t", &base, dim, &ids, 0..ids.len(), 500);
    // Each probe is a stored vector: it must come back first whatever the tier.
    let probe = |row: usize| {
        let (status, body) = post(
            &format!("{url}/collections/t/search"),
            &json!({"vector": &base[row * dim..(row + 1) * dim], "k": 5,
                    "consistency": {"after": token}}),
        );
        assert_eq!(status, 200, "{body}");
        // The data set has duplicate texts: the probe may tie with others at the top.
        let top = body["hits"][0]["score"].as_f64().unwrap();
        let found = body["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == json!(ids[row]) && h["score"].as_f64().unwrap() >= top - 1e-4);
        assert!(found, "row {row} is not among the best: {body}");
    };
    probe(3);
    let start = format!("{}", shard0(url)["range"]["start"].as_u64().unwrap());
    for tier in ["warm", "cold", "hot"] {
        let out = hektor(&["shard", "tier", "--url", url, "t", &start, tier]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let engine = if tier == "hot" { "hnsw" } else { tier };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut row = 0;
        loop {
            // Searches keep working during the switch.
            probe(row % ids.len());
            row += 97;
            let s = shard0(url);
            if s["tier"] == json!(tier) && s["engine"] == json!(engine) {
                break;
            }
            assert!(Instant::now() < deadline, "never reached {tier}: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
        for row in [0, 500, 1499] {
            probe(row);
        }
        if tier == "cold" {
            // The storage cost follows the tiers: one shard's bytes at the cold price,
            // the other's at the hot one (the heartbeats carry the sizes).
            let deadline = Instant::now() + Duration::from_secs(60);
            let cost = loop {
                let (status, view) = get(&format!("{url}/cluster"));
                assert_eq!(status, 200, "{view}");
                let cost = view["cost"].clone();
                let tier_of = |name: &str| {
                    cost["tiers"]
                        .as_array()
                        .and_then(|t| t.iter().find(|t| t["tier"] == json!(name)).cloned())
                        .unwrap_or_else(|| panic!("no tier {name}: {cost}"))
                };
                let (hot, cold) = (tier_of("hot"), tier_of("cold"));
                if hot["copies"] == json!(1)
                    && cold["copies"] == json!(1)
                    && cold["bytes"].as_u64().unwrap() > 0
                {
                    break cost;
                }
                assert!(
                    Instant::now() < deadline,
                    "cost never showed the tiers: {cost}"
                );
                std::thread::sleep(Duration::from_millis(200));
            };
            let (per_month, all_hot) = (
                cost["cost_per_month"].as_f64().unwrap(),
                cost["cost_all_hot"].as_f64().unwrap(),
            );
            assert!(per_month > 0.0 && per_month < all_hot, "{cost}");
            let out = hektor(&["cluster", "--url", url]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("storage cost"), "{text}");
        }
        if tier == "warm" {
            let search = |rescore: bool| {
                let (status, body) = post(
                    &format!("{url}/collections/t/search"),
                    &json!({"vector": &base[7 * dim..8 * dim], "k": 10, "rescore": rescore}),
                );
                assert_eq!(status, 200, "{body}");
                body["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h["id"].as_str().unwrap().to_owned(),
                            h["score"].as_f64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            let (exact, approx) = (search(true), search(false));
            let mut same = 0;
            for (id, score) in &approx {
                if let Some((_, e)) = exact.iter().find(|(x, _)| x == id) {
                    same += 1;
                    assert!((score - e).abs() < 0.02, "{id}: {score} vs exact {e}");
                }
            }
            // The other shard stays hot: only ties at the merge's edge may differ.
            assert!(same >= 8, "unscored hits {approx:?} vs rescored {exact:?}");
        }
    }
    // Bad requests are refused with a reason.
    let out = hektor(&["shard", "tier", "--url", url, "t", &start, "lukewarm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tier"));
    let out = hektor(&["shard", "tier", "--url", url, "t", "12345", "warm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shard starting at"));
}
