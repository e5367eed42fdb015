//! Range shards split by size on their own: with a small `--split-vectors`, a shard that
//! grows past it is split at the median ring position of its data, the halves start as
//! snapshots of it (trimmed to their ranges), catch up from the log and take over, and
//! nothing written is lost or searched twice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[test]
fn oversized_shards_split_at_their_median_until_small_enough() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        dir.path(),
        None,
        &[
            "--engine",
            "exact",
            "--no-planner",
            "--split-vectors",
            "300",
        ],
    );
    let url = &server.url;
    create_collection(url, "s", 4, 1);
    let upserts: Vec<_> = (0..1000)
        .map(|i| {
            let x = i as f32;
            json!({"id": format!("v{i}"), "vector": [1.0, x.sin(), x.cos(), x / 1000.0]})
        })
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/s/vectors"),
        &json!({ "upserts": upserts }),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let info = loop {
        let (_, info) = get(&format!("{url}/collections/s"));
        let shards = info["shards"].as_array().unwrap();
        let sizes: Vec<u64> = shards
            .iter()
            .map(|s| s["vectors"].as_u64().unwrap_or(u64::MAX))
            .collect();
        if info["targets"].as_array().unwrap().is_empty()
            && sizes.iter().all(|&n| n <= 300)
            && info["complete"] == json!(true)
        {
            break info;
        }
        assert!(Instant::now() < deadline, "never split down to 300: {info}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let shards = info["shards"].as_array().unwrap();
    assert!(shards.len() >= 4, "{info}");
    // Every vector is in exactly one shard.
    assert_eq!(info["vectors"], json!(1000), "{info}");
    // Splits cut at data medians: no shard is tiny.
    for s in shards {
        assert!(s["vectors"].as_u64().unwrap() >= 100, "{info}");
    }
    // Each half started as a copy of the shard it split from (a local snapshot, trimmed
    // to its range), not as a replay of the partition.
    for s in shards {
        assert_eq!(s["origin"]["kind"], "snapshot", "{info}");
        assert!(s["origin"]["trimmed"].as_u64().unwrap() > 0, "{info}");
    }
    assert!(info["epoch"].as_u64().unwrap() >= 2, "{info}");
    for i in [0, 499, 999] {
        let (status, v) = get(&format!("{url}/collections/s/vectors/v{i}"));
        assert_eq!(status, 200, "{v}");
    }
}

/// An operator splits a shard and merges the halves back through the plan route: the
/// merged shard is built beside them from the log and replaces both, every vector stays
/// readable and is counted once; merges that cannot happen are refused with a 4xx.
#[test]
fn split_halves_merge_back_into_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &["--engine", "exact", "--no-planner"]);
    let url = &server.url;
    create_collection(url, "m", 4, 2);
    let upserts: Vec<_> = (0..400)
        .map(|i| {
            let x = i as f32;
            json!({"id": format!("v{i}"), "vector": [1.0, x.sin(), x.cos(), x / 400.0]})
        })
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/m/vectors"),
        &json!({ "upserts": upserts }),
    );
    assert_eq!(status, 200, "{body}");
    let settled = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, info) = get(&format!("{url}/collections/m"));
            if info["targets"].as_array().unwrap().is_empty()
                && info["shards"].as_array().unwrap().len() == want
                && info["complete"] == json!(true)
                && info["vectors"] == json!(400)
            {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {want} shards: {info}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let info = settled(2);
    let first = info["shards"][0]["range"].clone();
    let second = info["shards"][1]["range"].clone();
    let start = first["start"].as_u64().unwrap();
    let end = first["end"].as_u64().unwrap();
    let at = start + (end - start) / 2;
    let plan = format!("{url}/cluster/collections/m/plan");
    let (status, body) = post(&plan, &json!({"action": "split", "shard": first, "at": at}));
    assert_eq!(status, 202, "{body}");
    let info = settled(3);
    let left = info["shards"][0]["range"].clone();
    let right = info["shards"][1]["range"].clone();
    assert_eq!(right["start"].as_u64(), Some(at), "{info}");
    // Shards of two partitions never merge; unknown shards are not found.
    let (status, body) = post(
        &plan,
        &json!({"action": "merge", "left": right, "right": second}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("one partition"),
        "{body}"
    );
    let (status, _) = post(
        &plan,
        &json!({"action": "merge", "left": first, "right": right}),
    );
    assert_eq!(status, 404);
    // Moves need placement by load.
    let (status, body) = post(
        &plan,
        &json!({"action": "move", "shard": left, "from": "node-1", "to": "node-2"}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(
        &plan,
        &json!({"action": "merge", "left": left, "right": right}),
    );
    assert_eq!(status, 202, "{body}");
    let info = settled(2);
    assert_eq!(info["shards"][0]["range"], first, "{info}");
    assert!(info["epoch"].as_u64().unwrap() >= 4, "{info}");
    for i in 0..400 {
        let (status, v) = get(&format!("{url}/collections/m/vectors/v{i}"));
        assert_eq!(status, 200, "v{i}: {v}");
    }
}

/// A hot (HNSW) shard split by an operator: each half starts from the parent's saved
/// graph and store (a local snapshot), drops the other half's vectors, and catches up
/// with writes made during the split; every vector is then found as its own nearest
/// neighbour through the search API, in the half that holds it.
#[test]
fn hot_split_halves_start_from_the_parents_graph() {
    const DIM: usize = 16;
    const N: usize = 3000;
    let vector = |i: usize| -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(i as u64);
        (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &["--engine", "hnsw", "--no-planner"]);
    let url = &server.url;
    create_collection(url, "h", DIM, 1);
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let upserts: Vec<_> = chunk
            .iter()
            .map(|&i| json!({"id": format!("v{i}"), "vector": vector(i)}))
            .collect();
        let (status, body) = post(
            &format!("{url}/collections/h/vectors"),
            &json!({ "upserts": upserts }),
        );
        assert_eq!(status, 200, "{body}");
    }
    let info_of = || get(&format!("{url}/collections/h")).1;
    let deadline = Instant::now() + Duration::from_secs(120);
    let info = loop {
        let info = info_of();
        if info["vectors"] == json!(N) && info["shards"][0]["pending"] == json!(0) {
            break info;
        }
        assert!(Instant::now() < deadline, "never indexed: {info}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let whole = info["shards"][0]["range"].clone();
    let at = 1u64 << 63;
    let (status, body) = post(
        &format!("{url}/cluster/collections/h/plan"),
        &json!({"action": "split", "shard": whole, "at": at}),
    );
    assert_eq!(status, 202, "{body}");
    // Writes while the halves are made: they arrive from the log after the snapshot.
    let extra: Vec<_> = (N..N + 100)
        .map(|i| json!({"id": format!("v{i}"), "vector": vector(i)}))
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/h/vectors"),
        &json!({ "upserts": extra }),
    );
    assert_eq!(status, 200, "{body}");
    let total = N + 100;
    let deadline = Instant::now() + Duration::from_secs(120);
    let info = loop {
        let info = info_of();
        if info["shards"].as_array().unwrap().len() == 2
            && info["targets"].as_array().unwrap().is_empty()
            && info["complete"] == json!(true)
            && info["vectors"] == json!(total)
        {
            break info;
        }
        assert!(Instant::now() < deadline, "never split: {info}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for s in info["shards"].as_array().unwrap() {
        assert_eq!(s["origin"]["kind"], "snapshot", "{info}");
        let trimmed = s["origin"]["trimmed"].as_u64().unwrap();
        let kept = s["vectors"].as_u64().unwrap();
        assert!(trimmed > 0 && kept > 0 && kept < total as u64, "{info}");
    }
    let mut missed = Vec::new();
    for i in (0..total).step_by(7) {
        let (status, body) = post(
            &format!("{url}/collections/h/search"),
            &json!({"vector": vector(i), "k": 1}),
        );
        assert_eq!(status, 200, "{body}");
        if body["hits"][0]["id"] != json!(format!("v{i}")) {
            missed.push(i);
        }
    }
    assert!(
        missed.len() <= 2,
        "not their own nearest neighbour: {missed:?}"
    );
}

/// An operator's split stands: with the kinetic planner on, the two quiet halves an
/// operator just made are not merged back as cold shards (ranges a map creates are left
/// alone for the planner's minimum interval, as its own actions are).
#[test]
fn an_operators_split_is_not_merged_back_by_the_planner() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        dir.path(),
        None,
        &["--engine", "exact", "--planner-interval-ms", "300"],
    );
    let url = &server.url;
    create_collection(url, "o", 4, 1);
    let upserts: Vec<_> = (0..200)
        .map(|i| {
            let x = i as f32;
            json!({"id": format!("v{i}"), "vector": [1.0, x.sin(), x.cos(), x / 200.0]})
        })
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/o/vectors"),
        &json!({ "upserts": upserts }),
    );
    assert_eq!(status, 200, "{body}");
    // Let the planner see the first map before the split.
    std::thread::sleep(Duration::from_secs(2));
    let (_, info) = get(&format!("{url}/collections/o"));
    let whole = info["shards"][0]["range"].clone();
    let (status, body) = post(
        &format!("{url}/cluster/collections/o/plan"),
        &json!({"action": "split", "shard": whole, "at": 1u64 << 63}),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let epoch = loop {
        let (_, info) = get(&format!("{url}/collections/o"));
        if info["shards"].as_array().unwrap().len() == 2
            && info["targets"].as_array().unwrap().is_empty()
        {
            break info["epoch"].clone();
        }
        assert!(Instant::now() < deadline, "never split: {info}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // A few searches, so the planner counts both halves (and finds them cold); many
    // planner rounds later, the halves are still there.
    for i in 0..20 {
        let x = i as f32 * 10.0;
        let (status, body) = post(
            &format!("{url}/collections/o/search"),
            &json!({"vector": [1.0, x.sin(), x.cos(), x / 200.0], "k": 3}),
        );
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(Duration::from_secs(8));
    let (_, info) = get(&format!("{url}/collections/o"));
    assert_eq!(info["shards"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["epoch"], epoch, "{info}");
}
