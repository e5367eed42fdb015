//! The command line and the operator's view on the embedded log, through the real binary:
//! `hektor produce`, `hektor replay`, listing and dropping collections, and `/metrics`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn sample() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/debian-minilm-384-sample")
}

fn hektor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(args)
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run hektor")
}

/// Wait until the collection holds `n` vectors and no shard lags.
fn wait_for_count(url: &str, name: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, info) = get(&format!("{url}/collections/{name}"));
        assert_eq!(status, 200, "{info}");
        let lag: u64 = info["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["lag"].as_u64().unwrap_or(1)) // 1: not open here yet
            .sum();
        if info["vectors"].as_u64() == Some(n) && lag == 0 {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {n} vectors: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn produce_loads_fvecs_with_sibling_ids_and_texts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    create_collection(&server.url, "docs", 384, 4);
    let base = sample().join("base.fvecs");
    let out = hektor(&[
        "produce",
        "--collection",
        "docs",
        base.to_str().unwrap(),
        "--url",
        &server.url,
        "--limit",
        "1200",
        "--batch",
        "500",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("produced 1200 vectors"), "{stdout}");
    wait_for_count(&server.url, "docs", 1200);
    // The id comes from base.ids and the payload text from base.txt, row for row.
    let ids = std::fs::read_to_string(sample().join("base.ids")).unwrap();
    let texts = std::fs::read_to_string(sample().join("base.txt")).unwrap();
    let (id, text) = (ids.lines().nth(7).unwrap(), texts.lines().nth(7).unwrap());
    let (status, got) = get(&format!("{}/collections/docs/vectors/{id}", server.url));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["payload"]["text"], json!(text));
    // An unknown collection is refused with the server's message.
    let out = hektor(&[
        "produce",
        "--collection",
        "nope",
        base.to_str().unwrap(),
        "--url",
        &server.url,
        "--limit",
        "10",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn replay_rebuilds_lost_shards_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Exact search: the hits before and after must be the same, not just as good.
    let server = start_server_on(dir.path(), None, port, &["--engine", "exact"]);
    create_collection(&server.url, "docs", 384, 4);
    let base = sample().join("base.fvecs");
    let out = hektor(&[
        "produce",
        "--collection",
        "docs",
        base.to_str().unwrap(),
        "--url",
        &server.url,
        "--limit",
        "2000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = wait_for_count(&server.url, "docs", 2000);
    let query = json!({"vector": vec![0.05f32; 384], "k": 5, "without_payload": true});
    let (_, hits_before) = post(&format!("{}/collections/docs/search", server.url), &query);
    drop(server);
    // Lose every shard, then rebuild them from the log.
    std::fs::remove_dir_all(dir.path().join("shards/docs")).unwrap();
    let out = hektor(&[
        "replay",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--collection",
        "docs",
        "--engine",
        "exact",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 2000 records"));
    let server = start_server_on(dir.path(), None, port, &["--engine", "exact"]);
    let after = wait_for_count(&server.url, "docs", 2000);
    for (b, a) in before["shards"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["shards"].as_array().unwrap())
    {
        assert_eq!(b["vectors"], a["vectors"]);
        assert_eq!(
            b["next_offset"], a["next_offset"],
            "replay resumes where the log ends"
        );
    }
    let (_, hits_after) = post(&format!("{}/collections/docs/search", server.url), &query);
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&hits_before),
        ids(&hits_after),
        "{hits_before} vs {hits_after}"
    );
    // Replaying an unknown shard is a clear error.
    drop(server);
    let out = hektor(&[
        "replay",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--collection",
        "docs",
        "--shard",
        "9",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("partition 9 does not exist"));
}

#[test]
fn collections_are_listed_shown_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    let url = &server.url;
    create_collection(url, "a", 8, 2);
    create_collection(url, "b", 16, 3);
    // Creating again with the same settings is fine (idempotent).
    create_collection(url, "a", 8, 2);
    let (_, list) = get(&format!("{url}/collections"));
    let names: Vec<&str> = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let (status, info) = get(&format!("{url}/collections/b"));
    assert_eq!(status, 200);
    assert_eq!(info["settings"]["dimension"], json!(16));
    assert_eq!(info["shards"].as_array().unwrap().len(), 3);
    let (status, _) = call(
        reqwest::Method::DELETE,
        &format!("{url}/collections/a"),
        None,
    );
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{url}/collections/a"));
    assert_eq!(status, 404);
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{url}/collections/a"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    // A dropped name can be created again, fresh.
    create_collection(url, "a", 4, 1);
    let (_, info) = get(&format!("{url}/collections/a"));
    assert_eq!(info["vectors"], json!(0));
}

#[test]
fn metrics_count_requests_and_report_shards() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    let url = &server.url;
    create_collection(url, "m", 3, 2);
    let (_, body) = post(
        &format!("{url}/collections/m/vectors"),
        &json!({"upserts": [{"id": "x", "vector": [1.0, 0.0, 0.0]}]}),
    );
    for _ in 0..3 {
        let (status, _) = post(
            &format!("{url}/collections/m/search"),
            &json!({"vector": [1.0, 0.0, 0.0], "consistency": {"after": body["token"]}}),
        );
        assert_eq!(status, 200);
    }
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains(
            r#"hektor_requests_total{route="POST /collections/{collection}/search",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains("hektor_request_seconds_bucket"), "{text}");
    let stored: i64 = text
        .lines()
        .filter(|l| l.starts_with("hektor_shard_vectors{collection=\"m\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(stored, 1, "{text}");
    assert!(text.contains("hektor_shard_lag{collection=\"m\""), "{text}");
}
