//! End-to-end test of batch search (`POST /collections/{c}/search/batch`, seed §2.3) on
//! the embedded log, through the real binary: a 4-partition collection of a few hundred
//! vectors, a batch of 150 queries and one of 3, each query's hits checked against the
//! exact top k computed here by brute force; where the batch ran and why (this build has
//! no GPU, so the CPU, saying so); a tenant's batch; and the door's 4xx answers.

mod common;

use std::collections::HashMap;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 16;
const ROWS: usize = 400;
const K: usize = 10;

fn random_rows(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n * DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// The exact top `K` of `query` among `base` (ids `ids`), best first.
fn exact_top(base: &[f32], ids: &[String], query: &[f32]) -> Vec<(String, f32)> {
    let mut all: Vec<(String, f32)> = base
        .chunks_exact(DIM)
        .zip(ids)
        .map(|(v, id)| (id.clone(), cosine(query, v)))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(K);
    all
}

/// Check every query's hits against the exact answer: the same scores (to float
/// rounding) in the same order, the same ids where scores are not within rounding of a
/// neighbour's, and each hit's payload the one stored with its id.
fn check_exact(answer: &Value, queries: &[f32], base: &[f32], ids: &[String]) {
    let row_of: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), queries.len() / DIM, "{answer}");
    for (q, result) in results.iter().enumerate() {
        let query = &queries[q * DIM..(q + 1) * DIM];
        let want = exact_top(base, ids, query);
        let hits = result["hits"].as_array().expect("hits");
        assert_eq!(hits.len(), K, "query {q}: {result}");
        for (i, (hit, (id, score))) in hits.iter().zip(&want).enumerate() {
            let got = hit["score"].as_f64().unwrap() as f32;
            assert!(
                (got - score).abs() < 1e-4,
                "query {q} hit {i}: score {got}, exact {score}"
            );
            let tie = want
                .iter()
                .filter(|(_, s)| (s - score).abs() < 1e-5)
                .count()
                > 1;
            if !tie {
                assert_eq!(hit["id"], json!(id), "query {q} hit {i}: {result}");
            }
            let row = row_of[hit["id"].as_str().unwrap()];
            assert_eq!(hit["payload"], json!({"row": row}), "query {q} hit {i}");
        }
    }
}

fn batch(url: &str, name: &str, body: &Value) -> (u16, Value) {
    post(&format!("{url}/collections/{name}/search/batch"), body)
}

fn as_vectors(flat: &[f32]) -> Vec<Vec<f32>> {
    flat.chunks_exact(DIM).map(<[f32]>::to_vec).collect()
}

#[test]
fn batches_are_exact_in_query_order_and_say_where_they_ran() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("batch");
    let server = start_server(dir.path(), None, &["--only-collections", &name]);
    let url = &server.url;
    create_collection(url, &name, DIM, 4);
    let mut rng = StdRng::seed_from_u64(18);
    let base = random_rows(&mut rng, ROWS);
    let ids: Vec<String> = (0..ROWS).map(|i| format!("v{i}")).collect();
    let token = upsert_rows(url, &name, &base, DIM, &ids, 0..ROWS, 100);
    // Read-your-writes through the single search: once it answers, every shard applied
    // the token (the batch route has no consistency wait of its own).
    let (status, body) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": &base[..DIM], "k": 1, "consistency": {"after": token}}),
    );
    assert_eq!(status, 200, "{body}");

    // 150 queries: the GPU's size, but this build has none.
    let queries = random_rows(&mut rng, 150);
    let (status, answer) = batch(
        url,
        &name,
        &json!({"vectors": as_vectors(&queries), "k": K}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queries"], 150);
    assert_eq!(answer["ran_on"], "cpu", "{answer}");
    let why = answer["why"].as_str().unwrap();
    assert!(
        why.contains("no GPU is available") && why.contains("`gpu` feature"),
        "{why}"
    );
    assert_eq!(answer["shards"], 4, "{answer}");
    check_exact(&answer, &queries, &base, &ids);

    // 3 queries stay on the CPU for their size.
    let queries = random_rows(&mut rng, 3);
    let (status, answer) = batch(
        url,
        &name,
        &json!({"vectors": as_vectors(&queries), "k": K}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["ran_on"], &answer["queries"]),
        (&json!("cpu"), &json!(3))
    );
    let why = answer["why"].as_str().unwrap();
    assert!(
        why.contains("3 queries") && why.contains("stay on the CPU"),
        "{why}"
    );
    check_exact(&answer, &queries, &base, &ids);

    // The same queries by the single search agree with the batch (exact at this size).
    let (_, single) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": &queries[..DIM], "k": K, "effort": 10_000}),
    );
    assert_eq!(
        single["hits"][0]["id"],
        answer["results"][0]["hits"][0]["id"]
    );

    // Asking for the GPU falls back with the reason; forcing the CPU says so;
    // without_payload leaves payloads out.
    let (status, answer) = batch(
        url,
        &name,
        &json!({"vectors": as_vectors(&queries), "device": "gpu", "without_payload": true}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ran_on"], "cpu");
    assert!(
        answer["why"]
            .as_str()
            .unwrap()
            .contains("\"gpu\" was asked for"),
        "{answer}"
    );
    assert!(
        answer["results"][0]["hits"][0].get("payload").is_none(),
        "{answer}"
    );
    let (_, answer) = batch(
        url,
        &name,
        &json!({"vectors": as_vectors(&queries), "device": "cpu"}),
    );
    assert!(
        answer["why"]
            .as_str()
            .unwrap()
            .contains("\"cpu\" was asked for"),
        "{answer}"
    );

    // A write after the batch is seen by the next one (the cached matrix is rebuilt).
    let (status, body) = post(
        &format!("{url}/collections/{name}/vectors"),
        &json!({"upserts": [{"id": "new", "vector": &queries[..DIM]}]}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": &queries[..DIM], "k": 1, "consistency": {"after": body["token"]}}),
    );
    assert_eq!(status, 200);
    let (_, answer) = batch(
        url,
        &name,
        &json!({"vectors": as_vectors(&queries[..DIM]), "k": 1}),
    );
    assert_eq!(answer["results"][0]["hits"][0]["id"], "new", "{answer}");

    // A tenant's batch searches only the tenant's vectors.
    let upserts: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("acme-{i}"), "tenant": "acme", "vector": &base[i * DIM..(i + 1) * DIM]}))
        .collect();
    let (status, body) = post(
        &format!("{url}/collections/{name}/vectors"),
        &json!({"upserts": upserts}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": &base[..DIM], "k": 1, "tenant": "acme", "consistency": {"after": body["token"]}}),
    );
    assert_eq!(status, 200);
    let (status, answer) = batch(
        url,
        &name,
        &json!({"vectors": as_vectors(&base[..5 * DIM]), "k": 5, "tenant": "acme"}),
    );
    assert_eq!(status, 200, "{answer}");
    for (q, result) in answer["results"].as_array().unwrap().iter().enumerate() {
        let hits = result["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 5, "{result}");
        assert!(
            hits.iter()
                .all(|h| h["id"].as_str().unwrap().starts_with("acme-")),
            "{result}"
        );
        assert_eq!(hits[0]["id"], json!(format!("acme-{q}")), "{result}");
    }

    // The door.
    let one = as_vectors(&queries[..DIM]);
    let bad: [(Value, u16, &str); 8] = [
        (json!({"vectors": [[1.0, 2.0]]}), 422, "has 2 dimensions"),
        (
            json!({"vectors": one, "k": 0}),
            422,
            "k must be between 1 and 1000",
        ),
        (
            json!({"vectors": one, "k": 1001}),
            422,
            "k must be between 1 and 1000",
        ),
        (json!({"vectors": []}), 422, "the batch is empty"),
        (
            json!({"vectors": vec![vec![0.5f32; DIM]; 10_001]}),
            422,
            "at most 10000",
        ),
        (json!({"vectors": vec![vec![0.5f32; DIM]; 40_000]}), 413, ""),
        (
            json!({"vectors": one, "device": "tpu"}),
            400,
            "unknown variant",
        ),
        (json!({"vector": &queries[..DIM]}), 400, "unknown field"),
    ];
    for (body, want, says) in bad {
        let (status, answer) = batch(url, &name, &body);
        assert_eq!(status, want, "{answer}");
        if !says.is_empty() {
            assert!(
                answer["error"].as_str().unwrap_or("").contains(says),
                "{answer}"
            );
        }
    }
    let (status, answer) = batch(url, "no-such-collection", &json!({"vectors": one}));
    assert_eq!(status, 404, "{answer}");
}
