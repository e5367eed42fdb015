//! Roles and restarts, through the real binary on the embedded log: a node stopped with
//! SIGTERM leaves a hot graph file in every shard and, started again, answers the same
//! searches as before (loading the graphs); a node without the `router` role answers the
//! client API with 421 and a message naming the role, while its views and health stay
//! open.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const DIM: usize = 16;
const ROWS: usize = 3_000;

fn rows() -> (Vec<f32>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
    let base: Vec<f32> = (0..ROWS * DIM)
        .map(|_| rng.random_range(-0.5f32..0.5))
        .collect();
    let ids = (0..ROWS).map(|i| format!("r{i}")).collect();
    (base, ids)
}

/// SIGTERM, then wait (bounded) for the process to exit by itself.
fn stop(mut server: Server) {
    let pid = server.child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the node ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn graph_files(dir: &Path) -> usize {
    let shards = dir.join("shards");
    let mut n = 0;
    let mut stack = vec![shards];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| f == "hnsw.graph") {
                n += 1;
            }
        }
    }
    n
}

fn answers(url: &str, name: &str, base: &[f32]) -> Vec<Vec<String>> {
    (0..20)
        .map(|q| {
            let (status, body) = post(
                &format!("{url}/collections/{name}/search"),
                &json!({"vector": &base[q * 97 * DIM..(q * 97 + 1) * DIM], "k": 10}),
            );
            assert_eq!(status, 200, "search: {body}");
            body["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn a_stopped_node_reloads_its_graphs_and_a_node_without_router_refuses_clients() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = unique("roles");
    let (base, ids) = rows();
    let server = start_server(&data, None, &["--engine", "hnsw"]);
    create_collection(&server.url, &name, DIM, 2);
    let token = upsert_rows(&server.url, &name, &base, DIM, &ids, 0..ROWS, 500);
    // Read-your-writes once, then wait for the index builds (pending 0 on every shard).
    let (status, body) = post(
        &format!("{}/collections/{name}/search", server.url),
        &json!({"vector": &base[..DIM], "k": 1, "consistency": {"after": token}}),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, view) = get(&format!("{}/collections/{name}", server.url));
        let shards = view["shards"].as_array().cloned().unwrap_or_default();
        if !shards.is_empty() && shards.iter().all(|s| s["pending"] == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "never indexed: {view}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = answers(&server.url, &name, &base);
    stop(server);
    assert_eq!(
        graph_files(&data),
        2,
        "a graph file per shard after a SIGTERM"
    );

    // The same data directory, without the router role.
    let data_only = start_server(&data, None, &["--roles", "data,controller"]);
    let url = &data_only.url;
    for (method, path, body) in [
        (
            "POST",
            format!("/collections/{name}/search"),
            Some(json!({"vector": &base[..DIM], "k": 1})),
        ),
        (
            "POST",
            format!("/collections/{name}/vectors"),
            Some(json!({"upserts": []})),
        ),
        ("GET", format!("/collections/{name}/vectors/r1"), None),
        (
            "PUT",
            "/collections/another".to_string(),
            Some(json!({"dimension": 3})),
        ),
        ("DELETE", format!("/collections/{name}"), None),
    ] {
        let (status, answer) = call(
            method.parse().unwrap(),
            &format!("{url}{path}"),
            body.as_ref(),
        );
        assert_eq!(status, 421, "{method} {path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains("router"), "{method} {path}: {answer}");
    }
    // Its shards open in the background: the view lists them at once, their counts once
    // they are open.
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = loop {
        let (status, view) = get(&format!("{url}/collections/{name}"));
        assert_eq!(status, 200, "views stay open: {view}");
        let counts: Vec<Option<u64>> = view["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s["vectors"].as_u64())
            .collect();
        if !counts.is_empty() && counts.iter().all(Option::is_some) {
            break counts.into_iter().flatten().sum::<u64>();
        }
        assert!(Instant::now() < deadline, "the shards never opened: {view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(total, ROWS as u64, "the data-only node holds the shards");
    assert_eq!(get(&format!("{url}/health")).0, 200);
    stop(data_only);

    // A full node again: the same answers, from the loaded graphs.
    let server = start_server(&data, None, &["--engine", "hnsw"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let got = answers(&server.url, &name, &base);
        if got == before || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after, before, "answers changed across the restart");
}
