//! Scenarios run against `hektor serve` on either log backend (embedded or Kafka).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hektor_indexers::dataset::read_fvecs;
use hektor_ingest::http::{encode_bulk, BULK_CONTENT_TYPE};
use hektor_topics::record::{VectorRecord, VectorUpsert};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::*;

pub struct Data {
    pub dim: usize,
    pub base: Vec<f32>,
    pub ids: Vec<String>,
    pub queries: Vec<f32>,
    pub gt_scores: Vec<f32>,
    pub gt_k: usize,
}

impl Data {
    pub fn rows(&self) -> usize {
        self.base.len() / self.dim
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.base[i * self.dim..(i + 1) * self.dim]
    }
    pub fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }
}

pub fn load_data() -> Data {
    let dir = data_dir();
    let (base, dim) = read_fvecs(&dir.join("base.fvecs"), None).expect("base.fvecs");
    let (queries, _) = read_fvecs(&dir.join("query.fvecs"), None).expect("query.fvecs");
    let (gt_scores, gt_k) =
        read_fvecs(&dir.join("groundtruth.scores.fvecs"), None).expect("groundtruth.scores.fvecs");
    let ids: Vec<String> = std::fs::read_to_string(dir.join("base.ids"))
        .expect("base.ids")
        .lines()
        .map(str::to_owned)
        .collect();
    Data {
        dim,
        base,
        ids,
        queries,
        gt_scores,
        gt_k,
    }
}

/// Post rows in the binary bulk form; returns the merged token.
pub fn bulk_upsert(url: &str, collection: &str, data: &Data, rows: &[usize]) -> Value {
    let records: Vec<VectorRecord> = rows
        .iter()
        .map(|&i| {
            VectorRecord::Upsert(VectorUpsert {
                collection: collection.into(),
                id: data.ids[i].clone(),
                tenant: None,
                vector: data.row(i).to_vec(),
                payload: Some(json!({ "row": i })),
                hlc: Default::default(),
                origin: String::new(),
            })
        })
        .collect();
    let resp = client()
        .post(format!("{url}/collections/{collection}/vectors"))
        .header("content-type", BULK_CONTENT_TYPE)
        .body(encode_bulk(&records).unwrap())
        .send()
        .expect("bulk post");
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("json answer");
    assert_eq!(status, 200, "bulk upsert: {body}");
    body["token"].clone()
}

fn search(url: &str, collection: &str, body: &Value) -> Value {
    let (status, resp) = post(&format!("{url}/collections/{collection}/search"), body);
    assert_eq!(status, 200, "search: {resp}");
    resp
}

/// Load the whole data set, then recall@10 over its queries must be ≥ 0.95 (ties counted
/// by the data README's convention: a hit's true cosine ≥ the 10th true score − 1e-5).
pub fn recall_at_10(server: &Server, name: &str) {
    let data = load_data();
    let name = name.to_owned();
    create_collection(&server.url, &name, data.dim, 8);
    let rows: Vec<usize> = (0..data.rows()).collect();
    let mut token = serde_json::Map::new();
    for chunk in rows.chunks(2000) {
        merge_token(&mut token, &bulk_upsert(&server.url, &name, &data, chunk));
    }
    let row_of: HashMap<&str, usize> = data
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let nq = data.queries.len() / data.dim;
    // Recall@10 over the first `nq` queries, each searched with `extra` in its body.
    let recall_of = |nq: usize, extra: serde_json::Value| {
        let mut hits = 0usize;
        for q in 0..nq {
            let mut body = json!({"vector": data.query(q), "k": 10, "without_payload": true});
            if q == 0 {
                body["consistency"] = json!({"after": token, "timeout_ms": 120_000});
            }
            for (key, value) in extra.as_object().into_iter().flatten() {
                body[key] = value.clone();
            }
            let resp = search(&server.url, &name, &body);
            let threshold = data.gt_scores[q * data.gt_k + 9] - 1e-5;
            for hit in resp["hits"].as_array().unwrap() {
                let row = row_of[hit["id"].as_str().unwrap()];
                let cos: f32 = data
                    .row(row)
                    .iter()
                    .zip(data.query(q))
                    .map(|(a, b)| a * b)
                    .sum();
                if cos >= threshold {
                    hits += 1;
                }
            }
        }
        hits as f64 / (nq * 10) as f64
    };
    let recall = recall_of(nq, json!({}));
    eprintln!(
        "recall@10 over {nq} queries, {} vectors: {recall:.4}",
        data.rows()
    );
    assert!(recall >= 0.95, "recall@10 {recall} < 0.95");
    let (_, info) = get(&format!("{}/collections/{name}", server.url));
    assert_eq!(info["vectors"].as_u64(), Some(data.rows() as u64), "{info}");

    // A search's own `effort` reaches the engines: once every shard's index is built (no
    // exactly-searched tail left), the narrowest beam finds fewer true neighbours than a
    // wide one.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, info) = get(&format!("{}/collections/{name}", server.url));
        let pending: u64 = info["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["pending"].as_u64().unwrap_or(u64::MAX))
            .sum();
        if pending == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shards still have {pending} vectors waiting for the index: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = nq.min(200);
    let narrow = recall_of(n, json!({"effort": 1}));
    let wide = recall_of(n, json!({"effort": 400}));
    eprintln!("recall@10 over {n} queries: {narrow:.4} at effort 1, {wide:.4} at effort 400");
    assert!(
        wide > narrow && wide >= 0.98,
        "recall@10 {wide} at effort 400 vs {narrow} at effort 1"
    );
}

/// A search carrying the token of a just-acknowledged write always sees it.
pub fn read_your_writes(server: &Server, name: &str) {
    let name = name.to_owned();
    let dim = 16;
    create_collection(&server.url, &name, dim, 4);
    let mut rng = StdRng::seed_from_u64(7);
    let mut next = || rng.random_range(-0.5f32..0.5);
    for i in 0..50 {
        let vector: Vec<f32> = (0..dim).map(|_| next()).collect();
        let id = format!("w{i}");
        let (status, body) = post(
            &format!("{}/collections/{name}/vectors", server.url),
            &json!({"upserts": [{"id": id, "vector": vector, "payload": {"i": i}}]}),
        );
        assert_eq!(status, 200, "{body}");
        let resp = search(
            &server.url,
            &name,
            &json!({"vector": vector, "k": 1, "consistency": {"after": body["token"]}}),
        );
        assert_eq!(
            resp["hits"][0]["id"],
            json!(id),
            "write {i} not visible: {resp}"
        );
        assert_eq!(resp["hits"][0]["payload"]["i"], json!(i));
    }
    let (status, got) = get(&format!("{}/collections/{name}/vectors/w3", server.url));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["payload"]["i"], json!(3));
}

/// Tenant searches stay inside the tenant; deletes disappear.
pub fn tenant_and_delete(server: &Server, name: &str) {
    let name = name.to_owned();
    create_collection(&server.url, &name, 4, 8);
    let mut upserts = Vec::new();
    for t in ["acme", "globex"] {
        for i in 0..20 {
            upserts.push(json!({"id": format!("{t}-{i}"), "tenant": t,
                "vector": [1.0, i as f32 / 20.0, if t == "acme" {0.0} else {0.01}, 0.5]}));
        }
    }
    let (status, body) = post(
        &format!("{}/collections/{name}/vectors", server.url),
        &json!({"upserts": upserts}),
    );
    assert_eq!(status, 200, "{body}");
    let resp = search(
        &server.url,
        &name,
        &json!({"vector": [1.0, 0.0, 0.01, 0.5], "k": 10, "tenant": "acme",
        "consistency": {"after": body["token"]}}),
    );
    let hits = resp["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10, "{resp}");
    assert!(
        hits.iter()
            .all(|h| h["id"].as_str().unwrap().starts_with("acme-")),
        "{resp}"
    );
    assert_eq!(hits[0]["id"], json!("acme-0"));
    // Delete acme-0 (with its tenant: it is part of the ring position).
    let (status, body) = post(
        &format!("{}/collections/{name}/vectors", server.url),
        &json!({"deletes": [{"id": "acme-0", "tenant": "acme"}]}),
    );
    assert_eq!(status, 200, "{body}");
    let resp = search(
        &server.url,
        &name,
        &json!({"vector": [1.0, 0.0, 0.01, 0.5], "k": 3, "tenant": "acme",
        "consistency": {"after": body["token"]}}),
    );
    assert!(
        resp["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != json!("acme-0")),
        "{resp}"
    );
    let (status, _) = get(&format!(
        "{}/collections/{name}/vectors/acme-0?tenant=acme",
        server.url
    ));
    assert_eq!(status, 404);
}

/// One id written by two tenants sharing a shard (one partition) is two vectors: each is
/// read, searched and deleted on its own, and stays so across a restart and (on the
/// embedded log) a compaction of the vectors topic with the shards rebuilt from it.
pub fn same_id_two_tenants(data_dir: &Path, brokers: Option<&str>, name: &str) {
    let port = free_port();
    let scope = ["--only-collections", name];
    let server = start_server_on(data_dir, brokers, port, &scope);
    let url = server.url.clone();
    create_collection(&url, name, 4, 1);
    let vector = |t: &str| match t {
        "a" => json!([1.0, 0.0, 0.0, 0.0]),
        _ => json!([0.0, 1.0, 0.0, 0.0]),
    };
    let write = |body: Value| {
        let (status, body) = post(&format!("{url}/collections/{name}/vectors"), &body);
        assert_eq!(status, 200, "{body}");
        body["token"].clone()
    };
    // An older value of a's `x` first (compaction drops it), then both tenants in one batch.
    write(json!({"upserts": [{"id": "x", "tenant": "a", "vector": [0.0, 0.0, 1.0, 0.0]}]}));
    let token = write(json!({"upserts": [
        {"id": "x", "tenant": "a", "vector": vector("a"), "payload": {"t": "a"}},
        {"id": "x", "tenant": "b", "vector": vector("b"), "payload": {"t": "b"}},
    ]}));
    // Each tenant finds (the search waits for the token) and reads its own `x`.
    let check = |url: &str, a_live: bool, token: &Value, phase: &str| {
        for t in ["a", "b"] {
            let live = t == "b" || a_live;
            let resp = search(
                url,
                name,
                &json!({"vector": vector(t), "k": 5, "tenant": t,
                        "consistency": {"after": token}}),
            );
            let hits = resp["hits"].as_array().unwrap();
            if live {
                assert_eq!(hits.len(), 1, "{phase}: tenant {t}: {resp}");
                assert_eq!(hits[0]["id"], json!("x"), "{phase}: tenant {t}: {resp}");
                assert_eq!(
                    hits[0]["payload"]["t"],
                    json!(t),
                    "{phase}: tenant {t}: {resp}"
                );
                assert!(
                    hits[0]["score"].as_f64().unwrap() > 0.999,
                    "{phase}: {resp}"
                );
            } else {
                assert!(hits.is_empty(), "{phase}: tenant {t}: {resp}");
            }
            let (status, got) = get(&format!("{url}/collections/{name}/vectors/x?tenant={t}"));
            if live {
                assert_eq!(status, 200, "{phase}: {t}'s x: {got}");
                assert_eq!(got["vector"], vector(t), "{phase}: {t}'s x: {got}");
                assert_eq!(got["payload"]["t"], json!(t), "{phase}: {t}'s x: {got}");
            } else {
                assert_eq!(status, 404, "{phase}: {t}'s x: {got}");
            }
        }
        // No tenant: no `x` was written without one.
        let (status, got) = get(&format!("{url}/collections/{name}/vectors/x"));
        assert_eq!(status, 404, "{phase}: x without a tenant: {got}");
    };
    check(&url, true, &token, "written");
    // Deleting a's `x` leaves b's.
    let token = write(json!({"deletes": [{"id": "x", "tenant": "a"}]}));
    check(&url, false, &token, "a's x deleted");

    // Restart on the same data directory: the shards reopen.
    drop(server);
    let server = start_server_on(data_dir, brokers, port, &scope);
    wait_caught_up(&server.url, name, 1);
    check(&server.url, false, &json!({}), "restarted");

    if brokers.is_none() {
        // Compact the vectors topic (keyed by tenant and id, it keeps a's delete and b's
        // upsert) and rebuild the shards from it.
        drop(server);
        let log_dir = data_dir.join("log");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let log = hektor_log::embedded::EmbeddedLog::open(&log_dir).unwrap();
            let topic =
                hektor_topics::topic::topic_name(name, hektor_topics::topic::TopicKind::Vectors);
            let removed = log.compact(&topic).await.unwrap();
            assert!(removed >= 1, "the older value of a's x is compacted away");
        });
        drop(runtime);
        std::fs::remove_dir_all(data_dir.join("shards")).unwrap();
        let server = start_server_on(data_dir, brokers, port, &scope);
        wait_caught_up(&server.url, name, 1);
        check(&server.url, false, &json!({}), "compacted and rebuilt");
    }
}

/// Wait until a collection's shards have applied their whole partitions and hold
/// `vectors`.
pub fn wait_caught_up(url: &str, name: &str, vectors: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, info) = get(&format!("{url}/collections/{name}"));
        let lag: Option<u64> = info["shards"].as_array().and_then(|shards| {
            shards
                .iter()
                .map(|s| s["lag"].as_u64())
                .sum::<Option<u64>>()
        });
        if status == 200 && lag == Some(0) && info["vectors"] == json!(vectors) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never caught up: {status} {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every validation rule answers with its documented status and names the bad item; a
/// rejected batch writes nothing.
pub fn bad_input(server: &Server, name: &str) {
    let url = &server.url;
    let name = name.to_owned();
    create_collection(url, &name, 3, 2);
    let vectors = format!("{url}/collections/{name}/vectors");
    let ok = json!({"id": "ok", "vector": [0.1, 0.2, 0.3]});
    // (what, method, url, body, expected status, a phrase the error message must hold)
    type Case<'a> = (
        &'a str,
        reqwest::Method,
        String,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("malformed JSON", reqwest::Method::POST, vectors.clone(), Some("{\"upserts\": [".into()), 400, "invalid JSON"),
        ("unknown field", reqwest::Method::POST, vectors.clone(), Some(r#"{"upsert": []}"#.into()), 400, "unknown field"),
        ("unknown collection", reqwest::Method::POST, format!("{url}/collections/nope-{name}/vectors"), Some(json!({"upserts": [ok]}).to_string()), 404, "does not exist"),
        ("wrong dimension", reqwest::Method::POST, vectors.clone(), Some(json!({"upserts": [ok, {"id": "bad", "vector": [1.0]}]}).to_string()), 422, "upserts[1]"),
        ("empty id", reqwest::Method::POST, vectors.clone(), Some(json!({"upserts": [{"id": "", "vector": [0.1, 0.2, 0.3]}]}).to_string()), 422, "id must be"),
        ("payload not an object", reqwest::Method::POST, vectors.clone(), Some(json!({"upserts": [{"id": "p", "vector": [0.1, 0.2, 0.3], "payload": 5}]}).to_string()), 422, "payload"),
        ("too many items", reqwest::Method::POST, vectors.clone(), Some(json!({"deletes": (0..10_001).map(|i| i.to_string()).collect::<Vec<_>>()}).to_string()), 413, "at most"),
        ("collection exists with other settings", reqwest::Method::PUT, format!("{url}/collections/{name}"), Some(json!({"dimension": 5}).to_string()), 409, "already exists"),
        ("bad collection name", reqwest::Method::PUT, format!("{url}/collections/bad.name"), Some(json!({"dimension": 5}).to_string()), 400, "collection name"),
        ("outside this node's scope", reqwest::Method::PUT, format!("{url}/collections/other-{name}"), Some(json!({"dimension": 5}).to_string()), 400, "serves only"),
        ("zero dimension", reqwest::Method::PUT, format!("{url}/collections/{name}-z"), Some(json!({"dimension": 0}).to_string()), 400, "dimension"),
        ("search wrong dimension", reqwest::Method::POST, format!("{url}/collections/{name}/search"), Some(json!({"vector": [1.0], "k": 3}).to_string()), 422, "dimensions"),
        ("search k = 0", reqwest::Method::POST, format!("{url}/collections/{name}/search"), Some(json!({"vector": [1.0, 0.0, 0.0], "k": 0}).to_string()), 422, "k must be"),
        ("search effort = 0", reqwest::Method::POST, format!("{url}/collections/{name}/search"), Some(json!({"vector": [1.0, 0.0, 0.0], "effort": 0}).to_string()), 422, "effort must be"),
        ("search unknown collection", reqwest::Method::POST, format!("{url}/collections/nope-{name}/search"), Some(json!({"vector": [1.0, 0.0, 0.0]}).to_string()), 404, "does not exist"),
        ("unknown vector", reqwest::Method::GET, format!("{url}/collections/{name}/vectors/missing"), None, 404, "not found"),
        ("consistency wait times out", reqwest::Method::POST, format!("{url}/collections/{name}/search"), Some(json!({"vector": [1.0, 0.0, 0.0], "consistency": {"after": {"0": 1_000_000}, "timeout_ms": 300}}).to_string()), 504, "timed out"),
    ];
    for (what, method, target, body, status, needle) in cases {
        let mut req = client()
            .request(method, &target)
            .header("content-type", "application/json");
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().unwrap();
        let got = resp.status().as_u16();
        let text = resp.text().unwrap();
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{what}: body is not JSON: {text}"));
        let message = parsed["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field: {text}"));
        assert_eq!(got, status, "{what}: {message}");
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
    }
    // The per-shard internal route is a door too: a shard this node holds, asked with an
    // absurd k (it once aborted the process allocating for it), an endless consistency
    // wait or a bad body, is a 4xx for that call and the node keeps serving.
    let (_, shown) = get(&format!("{url}/collections/{name}"));
    let shard = &shown["shards"][0];
    let internal = format!("{url}/internal/collections/{name}/shard-search");
    let call = |k: Value, timeout_ms: Value| {
        json!({"incarnation": shown["incarnation"], "range": shard["range"], "partition": shard["shard"],
               "vector": [1.0, 0.0, 0.0], "k": k, "timeout_ms": timeout_ms})
    };
    let (status, body) = post(&internal, &call(json!(3), Value::Null));
    assert_eq!(status, 200, "a good internal call: {body}");
    for (what, body, code, needle) in [
        (
            "k = 10^15",
            call(json!(1_000_000_000_000_000u64), Value::Null),
            422,
            "k must be",
        ),
        ("k = 0", call(json!(0), Value::Null), 422, "k must be"),
        (
            "a day's wait",
            call(json!(3), json!(86_400_000)),
            422,
            "timeout_ms",
        ),
        (
            "no vector",
            json!({"incarnation": 0, "range": shard["range"], "k": 3}),
            400,
            "invalid JSON",
        ),
    ] {
        let (status, answer) = post(&internal, &body);
        assert_eq!(status, code, "internal {what}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "internal {what}: {answer}");
        let (alive, _) = get(&format!("{url}/health"));
        assert_eq!(alive, 200, "the node must survive internal {what}");
    }
    let (status, body) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": [1.0, 0.0, 0.0], "consistency": {"timeout_ms": 86_400_000}}),
    );
    assert_eq!(status, 422, "an endless consistency wait: {body}");
    // The rejected batch with a good first item wrote nothing.
    let (status, _) = get(&format!("{url}/collections/{name}/vectors/ok"));
    assert_eq!(status, 404, "a rejected batch must write nothing");
    // Too large a body is 413 with a JSON error.
    let big = vec![b' '; 65 * 1024 * 1024];
    let resp = client()
        .post(&vectors)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}

/// kill -9 the server during a bulk load, restart it: every acknowledged vector is there
/// exactly once.
pub fn crash_during_load(data_dir: &Path, brokers: Option<&str>, name: &str) {
    let data = load_data();
    let port = free_port();
    let scope = ["--only-collections", name];
    let server = start_server_on(data_dir, brokers, port, &scope);
    let name = name.to_owned();
    create_collection(&server.url, &name, data.dim, 4);
    let url = server.url.clone();
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (acked, stop, name) = (Arc::clone(&acked), Arc::clone(&stop), name.clone());
        let rows = data.rows().min(20_000);
        let data = load_data();
        std::thread::spawn(move || {
            for start in (0..rows).step_by(250) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let chunk: Vec<usize> = (start..(start + 250).min(rows)).collect();
                let records: Vec<VectorRecord> = chunk
                    .iter()
                    .map(|&i| {
                        VectorRecord::Upsert(VectorUpsert {
                            collection: name.clone(),
                            id: data.ids[i].clone(),
                            tenant: None,
                            vector: data.row(i).to_vec(),
                            payload: None,
                            hlc: Default::default(),
                            origin: String::new(),
                        })
                    })
                    .collect();
                let resp = client()
                    .post(format!("{url}/collections/{name}/vectors"))
                    .header("content-type", BULK_CONTENT_TYPE)
                    .body(encode_bulk(&records).unwrap())
                    .send();
                match resp {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().extend(chunk),
                    _ => return, // the server died mid-request: not acknowledged
                }
            }
        })
    };
    // Let some batches be acknowledged, then kill -9.
    while acked.lock().unwrap().len() < 3_000 && !loader.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut server = server;
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    stop.store(true, Ordering::Relaxed);
    let _ = loader.join();
    drop(server);
    let acked: Vec<usize> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3_000);
    // Restart on the same data directory (and the same broker).
    let server = start_server_on(data_dir, brokers, port, &scope);
    // Wait until the shards have caught up with the log: the count stops changing.
    let mut last = u64::MAX;
    let mut count = 0;
    for _ in 0..600 {
        let (status, info) = get(&format!("{}/collections/{name}", server.url));
        assert_eq!(status, 200, "{info}");
        count = info["vectors"].as_u64().unwrap();
        let lag: u64 = info["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["lag"].as_u64().unwrap_or(1)) // 1: not open here yet
            .sum();
        if lag == 0 && count == last && count >= acked.len() as u64 {
            break;
        }
        last = count;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing acknowledged is lost; at most the one in-flight batch was also applied.
    assert!(
        count >= acked.len() as u64,
        "lost writes: {count} stored < {} acknowledged",
        acked.len()
    );
    assert!(
        count <= acked.len() as u64 + 250,
        "{count} stored, {} acknowledged + 250 in flight",
        acked.len()
    );
    // Every acknowledged vector is found, exactly once, as its own nearest neighbour.
    let mut missing = Vec::new();
    for &row in acked.iter().step_by(17) {
        let resp = search(
            &server.url,
            &name,
            &json!({"vector": data.row(row), "k": 5, "without_payload": true}),
        );
        let ids: Vec<&str> = resp["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        let distinct: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "duplicate hits: {ids:?}");
        if !ids.contains(&data.ids[row].as_str()) {
            missing.push(row);
        }
        let (status, _) = get(&format!(
            "{}/collections/{name}/vectors/{}",
            server.url, data.ids[row]
        ));
        assert_eq!(status, 200, "acknowledged vector {} is gone", data.ids[row]);
    }
    assert!(
        missing.is_empty(),
        "acknowledged vectors not found by search: {missing:?}"
    );
}
