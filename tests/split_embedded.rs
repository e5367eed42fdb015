//! Range shards split by size on their own: with a small `--split-vectors`, a shard that
//! grows past it is split at the median ring position of its data, the halves are built
//! beside it from the log and take over, and nothing written is lost or searched twice.

mod common;

use std::time::{Duration, Instant};

use common::*;
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
    assert!(info["epoch"].as_u64().unwrap() >= 2, "{info}");
    for i in [0, 499, 999] {
        let (status, v) = get(&format!("{url}/collections/s/vectors/v{i}"));
        assert_eq!(status, 200, "{v}");
    }
}
