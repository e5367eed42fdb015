//! The archive tier through the real binary and a real S3-compatible server (s3proxy,
//! started by `scripts/s3.sh`): a cold shard is archived (`hektor shard tier ... archive`),
//! its snapshot lies in the bucket and its local files are gone; writes made meanwhile go
//! to the log; the first search that covers it restores it (same hits as before, no
//! vector lost, the writes visible); archived again and then assigned tier hot (no read,
//! no holder), it comes back from the archive's snapshot rather than a replay of the log;
//! archived a third time and its object corrupted, the restore
//! fails with the digest error while the other shards keep serving.
//!
//! The server: `HEKTOR_S3_ENDPOINT` (+ `HEKTOR_S3_BUCKET`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`), as `.ci/run` exports them; required under `CI=true`.
//! Elsewhere the test starts one with `scripts/s3.sh start`, or says loudly why it skips.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use hektor_archive::object_store::ObjectStore;
use hektor_topics::record::RingRange;
use serde_json::{json, Value};

fn hektor(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(args)
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run hektor")
}

fn set_tier(url: &str, start: u64, tier: &str) {
    let out = hektor(&["shard", "tier", "--url", url, "c", &start.to_string(), tier]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entry of the shard starting at `start` in `GET /cluster`.
fn cluster_shard(url: &str, start: u64) -> Value {
    let (status, cluster) = get(&format!("{url}/cluster"));
    assert_eq!(status, 200, "{cluster}");
    cluster["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c")
        .and_then(|c| {
            c["shards"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["range"]["start"] == json!(start))
                .cloned()
        })
        .expect("the shard in GET /cluster")
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + within;
    loop {
        let why = match done() {
            None => return,
            Some(why) => why,
        };
        assert!(Instant::now() < deadline, "{what}: {why}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A search answered 200, retried (bounded) while the answer is a 503 with Retry-After
/// (the archived shard being restored); anything else fails the test.
fn search(url: &str, body: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let resp = client()
            .post(format!("{url}/collections/c/search"))
            .json(body)
            .send()
            .expect("search sent");
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").cloned();
        let text = resp.text().unwrap_or_default();
        if status == 200 {
            return serde_json::from_str(&text).unwrap();
        }
        assert_eq!(status, 503, "{text}");
        assert!(retry.is_some(), "a 503 without Retry-After: {text}");
        assert!(!text.contains("sha256"), "the restore failed: {text}");
        assert!(Instant::now() < deadline, "still unavailable: {text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ids_of(body: &Value) -> Vec<(String, f64)> {
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
        .collect()
}

/// Exact cosine top-`k` over `rows` of `base`.
fn brute_force(
    base: &[f32],
    dim: usize,
    rows: &[(String, usize)],
    query: &[f32],
    k: usize,
) -> Vec<String> {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let qn = norm(query);
    let mut scored: Vec<(f32, &String)> = rows
        .iter()
        .map(|(id, r)| {
            let v = &base[r * dim..(r + 1) * dim];
            let dot: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
            (dot / (norm(v) * qn), id)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.clone())
        .collect()
}

#[test]
fn a_cold_shard_is_archived_to_s3_and_restored_by_a_search() {
    let Some(s3) = s3::server("tests/archive_s3.rs") else {
        return;
    };
    let prefix = unique("archive");
    let archive_url = format!("s3://{}/{prefix}", s3.bucket);
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--engine".to_owned(), "hnsw".into(), "--no-planner".into()];
    args.extend(s3.serve_args(&prefix));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start_server(dir.path(), None, &args);
    let url = &server.url;
    create_collection(url, "c", 384, 4);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/debian-minilm-384-sample");
    let (base, dim) =
        hektor_indexers::dataset::read_fvecs(&sample.join("base.fvecs"), Some(2400)).unwrap();
    let ids: Vec<String> = (0..base.len() / dim).map(|i| format!("r{i}")).collect();
    let loaded = 2000;
    let token = std::cell::RefCell::new(serde_json::Map::new());
    merge_token(
        &mut token.borrow_mut(),
        &upsert_rows(url, "c", &base, dim, &ids, 0..loaded, 500),
    );

    // The shard to archive: the second of four; made cold first (the tier it is restored to).
    let (status, info) = get(&format!("{url}/collections/c"));
    assert_eq!(status, 200, "{info}");
    let shard = info["shards"][1].clone();
    let range: RingRange = serde_json::from_value(shard["range"].clone()).unwrap();
    let start = range.start;
    let in_range = |id: &str| range.contains(hektor_topics::ring::position(None, id));
    set_tier(url, start, "cold");
    wait_for("the shard turns cold", Duration::from_secs(120), || {
        let (_, info) = get(&format!("{url}/collections/c"));
        let s = &info["shards"][1];
        (s["engine"] != "cold").then(|| s.to_string())
    });
    // Answers before archiving: probes whose nearest neighbours lie in the shard.
    let probes: Vec<usize> = (0..loaded)
        .filter(|&r| in_range(&ids[r]))
        .step_by(37)
        .take(6)
        .collect();
    assert!(probes.len() >= 3, "too few rows in the shard");
    let query = |row: usize, k: usize| {
        json!({"vector": &base[row * dim..(row + 1) * dim], "k": k,
               "consistency": {"after": Value::Object(token.borrow().clone())}})
    };
    let before: BTreeMap<usize, Vec<(String, f64)>> = probes
        .iter()
        .map(|&r| (r, ids_of(&search(url, &query(r, 10)))))
        .collect();
    // Every write is applied (the searches above waited for the token) and the shards'
    // counts follow within a moment.
    wait_for(
        "the shards hold every vector",
        Duration::from_secs(60),
        || {
            let (_, info) = get(&format!("{url}/collections/c"));
            let held: u64 = info["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["vectors"].as_u64().unwrap_or(0))
                .sum();
            (held != loaded as u64).then(|| info.to_string())
        },
    );

    // Archive it.
    set_tier(url, start, "archive");
    let shard_dirs = dir.path().join("shards/c");
    let local_dir = || {
        std::fs::read_dir(&shard_dirs)
            .unwrap()
            .flatten()
            .map(|inc| {
                let end = range.end.map_or("end".into(), |e| format!("{e:016x}"));
                inc.path().join(format!("{start:016x}-{end}"))
            })
            .next()
            .unwrap()
    };
    let mut location = String::new();
    wait_for("the shard is archived", Duration::from_secs(120), || {
        let s = cluster_shard(url, start);
        match s["archive"]["location"].as_str() {
            Some(l) if s["tier"] == "archive" && !local_dir().exists() => {
                location = l.to_owned();
                None
            }
            _ => Some(s.to_string()),
        }
    });
    let archived = cluster_shard(url, start);
    assert!(
        location.starts_with(&format!("{archive_url}/c/")),
        "{archived}"
    );
    assert!(
        archived["archive"]["bytes"].as_u64().unwrap() > 0,
        "{archived}"
    );
    assert_eq!(
        archived["vectors"],
        Value::Null,
        "no engine holds it: {archived}"
    );

    // The objects are in the bucket (listed through the S3 API).
    let store = hektor_archive::Archive::open(
        &archive_url,
        &hektor_archive::ArchiveOptions {
            endpoint: Some(s3.endpoint.clone()),
            access_key_id: Some(s3.key.clone()),
            secret_access_key: Some(s3.secret.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let list = |store: &hektor_archive::Archive| -> Vec<(String, u64)> {
        runtime.block_on(async {
            let mut out = Vec::new();
            let mut listed = store.store().list(Some(&store.path("c")));
            while let Some(meta) = listed.next().await {
                let meta = meta.unwrap();
                out.push((meta.location.to_string(), meta.size));
            }
            out.sort();
            out
        })
    };
    let objects = list(&store);
    let names: Vec<&str> = objects
        .iter()
        .filter_map(|(p, _)| p.rsplit('/').next())
        .collect();
    assert!(names.contains(&"manifest.json"), "{objects:?}");
    assert!(names.contains(&"data.mdb"), "{objects:?}");

    // Writes while archived: new vectors and deletes, some of them in the archived range.
    merge_token(
        &mut token.borrow_mut(),
        &upsert_rows(url, "c", &base, dim, &ids, loaded..ids.len(), 200),
    );
    let deleted: Vec<String> = (0..loaded)
        .filter(|&r| in_range(&ids[r]) && !probes.contains(&r))
        .take(5)
        .map(|r| ids[r].clone())
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/c/vectors"),
        &json!({"deletes": deleted.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()}),
    );
    assert_eq!(status, 200, "{body}");
    merge_token(&mut token.borrow_mut(), &body["token"]);

    // The first search restores the shard: same hits as before archiving.
    for (&row, hits) in &before {
        let after = ids_of(&search(url, &query(row, 10)));
        let new: HashSet<&str> = after.iter().map(|(id, _)| id.as_str()).collect();
        let old: HashSet<&str> = hits.iter().map(|(id, _)| id.as_str()).collect();
        // Differences only from the writes made meanwhile (new rows, deleted ids).
        for id in old.difference(&new) {
            assert!(
                deleted.iter().any(|d| d == id) || after.len() == 10,
                "row {row}: {id} lost: {hits:?} vs {after:?}"
            );
        }
        for id in new.difference(&old) {
            let r: usize = id[1..].parse().unwrap();
            assert!(
                r >= loaded,
                "row {row}: {id} appeared: {hits:?} vs {after:?}"
            );
        }
        assert_eq!(
            after[0].0, ids[row],
            "row {row} is not its own nearest: {after:?}"
        );
    }
    let restored = cluster_shard(url, start);
    let (_, info) = get(&format!("{url}/collections/c"));
    let entry = &info["shards"][1];
    assert_eq!(entry["origin"]["kind"], "archive", "{entry}");
    assert_eq!(entry["engine"], "cold", "{entry}");
    // The map says cold again once the controller carried out the restore's request.
    wait_for(
        "the restored shard is cold in the map",
        Duration::from_secs(60),
        || {
            let s = cluster_shard(url, start);
            (s["tier"] != "cold").then(|| format!("{s} (after restore: {restored})"))
        },
    );

    // No vector lost, the writes visible: every live id is there, the deleted ones gone.
    let expected = ids.len() - deleted.len();
    wait_for("every vector is back", Duration::from_secs(60), || {
        let (_, info) = get(&format!("{url}/collections/c"));
        let total: u64 = info["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["vectors"].as_u64().unwrap_or(0))
            .sum();
        (total != expected as u64).then(|| format!("{total} vectors, want {expected}: {info}"))
    });
    for (row, id) in ids.iter().enumerate() {
        if !in_range(id) {
            continue;
        }
        let (status, body) = get(&format!("{url}/collections/c/vectors/{id}"));
        if deleted.contains(id) {
            assert_eq!(status, 404, "{id}: {body}");
        } else {
            assert_eq!(status, 200, "{id} (row {row}) lost: {body}");
        }
    }
    // Exact search agrees with brute force over what the collection holds now.
    let live: Vec<(String, usize)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !deleted.contains(id))
        .map(|(r, id)| (id.clone(), r))
        .collect();
    let new_in_range = (loaded..ids.len()).find(|&r| in_range(&ids[r])).unwrap();
    let got = ids_of(&search(url, &query(new_in_range, 5)));
    let want = brute_force(
        &base,
        dim,
        &live,
        &base[new_in_range * dim..(new_in_range + 1) * dim],
        5,
    );
    assert_eq!(
        got[0].0, want[0],
        "written while archived: {got:?} vs {want:?}"
    );

    // Archived again, then its object corrupted: the restore fails with the digest
    // error, and the other shards keep serving.
    set_tier(url, start, "archive");
    wait_for("archived again", Duration::from_secs(120), || {
        let s = cluster_shard(url, start);
        match s["archive"]["location"].as_str() {
            Some(l) if l != location && !local_dir().exists() => {
                location = l.to_owned();
                None
            }
            _ => Some(s.to_string()),
        }
    });
    let in_range_live = live.iter().filter(|(id, _)| in_range(id)).count();
    // Assigned a tier again without a read (an operator, or the planner promoting it): no
    // holder has it, so it comes from the archive's snapshot, not a replay of the log.
    set_tier(url, start, "hot");
    wait_for(
        "the archived shard serves hot",
        Duration::from_secs(120),
        || {
            let (_, info) = get(&format!("{url}/collections/c"));
            let s = &info["shards"][1];
            (s["engine"] != "hnsw" || s["vectors"].as_u64() != Some(in_range_live as u64))
                .then(|| s.to_string())
        },
    );
    let (_, info) = get(&format!("{url}/collections/c"));
    let entry = &info["shards"][1];
    assert_eq!(entry["origin"]["kind"], "archive", "{entry}");
    let got = ids_of(&search(url, &query(new_in_range, 5)));
    assert_eq!(got[0].0, want[0], "restored hot: {got:?} vs {want:?}");
    set_tier(url, start, "archive");
    // At the same log offset as the second time (nothing written since): the same
    // location, so wait for the engine and the local files to go.
    wait_for("archived a third time", Duration::from_secs(120), || {
        let s = cluster_shard(url, start);
        let archived = s["archive"]["location"].is_string() && s["vectors"].is_null();
        (!archived || local_dir().exists()).then(|| s.to_string())
    });
    let objects = list(&store);
    let (data, _) = objects
        .iter()
        .find(|(p, _)| p.ends_with("/data.mdb"))
        .cloned()
        .expect("the data object");
    assert_eq!(
        objects
            .iter()
            .filter(|(p, _)| p.ends_with("/data.mdb"))
            .count(),
        1,
        "older snapshots are deleted: {objects:?}"
    );
    runtime.block_on(async {
        let path = hektor_archive::object_store::path::Path::from(data.as_str());
        let mut bytes = store
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x5A;
        store
            .store()
            .put(&path, hektor_archive::object_store::PutPayload::from(bytes))
            .await
            .unwrap();
    });
    let resp = client()
        .post(format!("{url}/collections/c/search"))
        .json(&json!({"vector": &base[0..dim], "k": 5}))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers().get("retry-after").is_some());
    let text = resp.text().unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("sha256") && text.contains("corrupt"),
        "{text}"
    );
    let s = cluster_shard(url, start);
    assert!(
        s["archive"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("sha256")),
        "{s}"
    );
    // The other shards answer: every vector outside the archived range reads back.
    for id in ids.iter().filter(|id| !in_range(id)).step_by(10) {
        let (status, body) = get(&format!("{url}/collections/c/vectors/{id}"));
        assert_eq!(status, 200, "{id}: {body}");
    }
    let (status, health) = get(&format!("{url}/health"));
    assert_eq!(status, 200, "{health}");
    let _ = std::fs::remove_dir_all(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".s3/data")
            .join(&s3.bucket)
            .join(&prefix),
    );
}
