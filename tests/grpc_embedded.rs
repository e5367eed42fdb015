//! The gRPC door (`hektor serve --grpc-listen`, issue #16) through the real binary on the
//! embedded log: vectors written over gRPC are found by searches over gRPC with the same
//! hits (ids, scores, payloads) as the HTTP API gives for the same queries; a batch search
//! over gRPC equals the HTTP batch; a delete over gRPC is seen by the next search that
//! carries its token; every bad input (wrong dimension, NaN, empty batch, huge k, unknown
//! or malformed collection, bad payload, a message that does not decode, one past the
//! size limit, an unknown method) gets its status code and the node keeps serving; and,
//! with API keys, calls without a key or with a wrong one are UNAUTHENTICATED, a key
//! without the scope or the collection PERMISSION_DENIED.

mod common;

use std::collections::BTreeMap;

use common::*;
use hektor_grpc::proto as pb;
use hektor_grpc::{Client, Code, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 16;
const ROWS: usize = 300;
const K: u32 = 10;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn rows(rng: &mut StdRng, n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// `hektor serve` with a gRPC listener on a free port; (server, gRPC address).
fn start_with_grpc(dir: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut flags = vec!["--grpc-listen", grpc.as_str()];
    flags.extend_from_slice(extra);
    let server = start_server(dir, None, &flags);
    (server, grpc)
}

fn code_of<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_owned())
}

#[test]
fn grpc_writes_searches_and_batches_agree_with_rest_and_bad_inputs_cost_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let (server, grpc) = start_with_grpc(dir.path(), &[]);
    let url = server.url.clone();
    let name = unique("grpc");
    create_collection(&url, &name, DIM, 2);
    let mut rng = StdRng::seed_from_u64(16);
    let base = rows(&mut rng, ROWS);
    let queries = rows(&mut rng, 20);
    let rt = runtime();
    let mut client = rt
        .block_on(Client::connect(&grpc))
        .expect("connect over gRPC");

    // Writes over gRPC, in two batches, with payloads; one vector in a tenant.
    let mut token: BTreeMap<u32, u64> = BTreeMap::new();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(150) {
        let upserts = chunk
            .iter()
            .map(|&i| pb::Upsert {
                id: format!("v{i}"),
                vector: base[i].clone(),
                tenant: None,
                payload_json: Some(json!({"row": i}).to_string()),
            })
            .collect();
        let answer = rt
            .block_on(client.write(pb::WriteRequest {
                collection: name.clone(),
                upserts,
                ..Default::default()
            }))
            .expect("write over gRPC");
        assert_eq!(answer.written as usize, chunk.len());
        for (p, o) in answer.token {
            let e = token.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
    }
    let consistency = |token: &BTreeMap<u32, u64>| pb::Consistency {
        after: token.clone(),
        timeout_ms: Some(30_000),
        ..Default::default()
    };
    // The first search waits for the writes (read-your-writes through the token).
    let first = rt
        .block_on(client.search(pb::SearchRequest {
            collection: name.clone(),
            vector: queries[0].clone(),
            k: Some(K),
            consistency: Some(consistency(&token)),
            ..Default::default()
        }))
        .expect("search over gRPC");
    assert_eq!(first.hits.len(), K as usize);
    assert_eq!(first.shards, 2);

    // The same hits through both doors, payloads included.
    for (q, query) in queries.iter().enumerate() {
        let g = rt
            .block_on(client.search(pb::SearchRequest {
                collection: name.clone(),
                vector: query.clone(),
                k: Some(K),
                ..Default::default()
            }))
            .expect("search over gRPC");
        let (status, r) = post(
            &format!("{url}/collections/{name}/search"),
            &json!({"vector": query, "k": K}),
        );
        assert_eq!(status, 200, "{r}");
        let rest = r["hits"].as_array().unwrap();
        assert_eq!(g.hits.len(), rest.len(), "query {q}");
        for (a, b) in g.hits.iter().zip(rest) {
            assert_eq!(a.id, b["id"].as_str().unwrap(), "query {q}");
            assert!((a.score as f64 - b["score"].as_f64().unwrap()).abs() < 1e-6);
            let payload: Value = serde_json::from_str(a.payload_json.as_deref().unwrap()).unwrap();
            assert_eq!(payload, b["payload"], "query {q}");
            assert_eq!(payload["row"], json!(a.id[1..].parse::<usize>().unwrap()));
        }
    }
    // without_payload leaves them out, as over HTTP.
    let lean = rt
        .block_on(client.search(pb::SearchRequest {
            collection: name.clone(),
            vector: queries[0].clone(),
            without_payload: true,
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(lean.hits.len(), 10, "k defaults to 10");
    assert!(lean.hits.iter().all(|h| h.payload_json.is_none()));

    // A batch search over gRPC equals the HTTP batch.
    let batch = rt
        .block_on(
            client.search_batch(pb::BatchSearchRequest {
                collection: name.clone(),
                vectors: queries
                    .iter()
                    .map(|v| pb::Vector { values: v.clone() })
                    .collect(),
                k: Some(5),
                ..Default::default()
            }),
        )
        .expect("batch search over gRPC");
    let (status, rest) = post(
        &format!("{url}/collections/{name}/search/batch"),
        &json!({"vectors": queries, "k": 5}),
    );
    assert_eq!(status, 200, "{rest}");
    assert_eq!(batch.queries as usize, queries.len());
    assert_eq!(batch.ran_on, rest["ran_on"].as_str().unwrap());
    assert_eq!(batch.why, rest["why"].as_str().unwrap());
    for (g, r) in batch
        .results
        .iter()
        .zip(rest["results"].as_array().unwrap())
    {
        let ids: Vec<&str> = g.hits.iter().map(|h| h.id.as_str()).collect();
        let want: Vec<&str> = r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, want);
    }

    // A delete over gRPC: the next search with its token no longer finds the vector.
    let top = first.hits[0].id.clone();
    let deleted = rt
        .block_on(client.write(pb::WriteRequest {
            collection: name.clone(),
            upserts: vec![],
            deletes: vec![pb::Delete {
                id: top.clone(),
                tenant: None,
            }],
            ..Default::default()
        }))
        .expect("delete over gRPC");
    assert_eq!(deleted.written, 1);
    let after = rt
        .block_on(client.search(pb::SearchRequest {
            collection: name.clone(),
            vector: queries[0].clone(),
            k: Some(K),
            consistency: Some(consistency(&deleted.token)),
            ..Default::default()
        }))
        .unwrap();
    assert!(after.hits.iter().all(|h| h.id != top), "{top} was deleted");

    // Bad inputs: each call gets its code and the HTTP API's message.
    let search = |vector: Vec<f32>, k: Option<u32>, collection: &str| pb::SearchRequest {
        collection: collection.to_owned(),
        vector,
        k,
        ..Default::default()
    };
    let (code, msg) = code_of(rt.block_on(client.search(search(vec![0.5; DIM - 1], None, &name))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("has 15 dimensions, the collection has 16"),
        "{msg}"
    );
    let mut nan = vec![0.5; DIM];
    nan[3] = f32::NAN;
    let (code, msg) = code_of(rt.block_on(client.search(search(nan.clone(), None, &name))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("vector[3] is not a finite number"), "{msg}");
    let (code, msg) =
        code_of(rt.block_on(client.search(search(vec![0.5; DIM], Some(1_000_000), &name))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("k must be between 1 and 1000"), "{msg}");
    let (code, _) = code_of(rt.block_on(client.search(search(vec![0.5; DIM], Some(0), &name))));
    assert_eq!(code, Code::InvalidArgument);
    let (code, msg) = code_of(rt.block_on(client.search(search(vec![0.5; DIM], None, "no-such"))));
    assert_eq!(code, Code::NotFound);
    assert_eq!(msg, "collection `no-such` does not exist");
    let (code, _) = code_of(rt.block_on(client.search(search(vec![0.5; DIM], None, "../x"))));
    assert_eq!(code, Code::InvalidArgument);
    let (code, msg) = code_of(rt.block_on(client.search_batch(pb::BatchSearchRequest {
        collection: name.clone(),
        ..Default::default()
    })));
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("the batch is empty"), "{msg}");
    let (code, msg) = code_of(rt.block_on(client.search_batch(pb::BatchSearchRequest {
        collection: name.clone(),
        vectors: vec![
            pb::Vector {
                values: vec![0.5; DIM],
            },
            pb::Vector {
                values: nan.clone(),
            },
        ],
        ..Default::default()
    })));
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("vectors[1][3] is not a finite number"),
        "{msg}"
    );
    let (code, _) = code_of(rt.block_on(client.search_batch(pb::BatchSearchRequest {
        collection: name.clone(),
        vectors: vec![pb::Vector {
            values: vec![0.5; DIM],
        }],
        device: "tpu".into(),
        ..Default::default()
    })));
    assert_eq!(code, Code::InvalidArgument);
    let upsert = |vector: Vec<f32>, payload: Option<&str>| pb::WriteRequest {
        collection: name.clone(),
        upserts: vec![pb::Upsert {
            id: "bad".into(),
            vector,
            tenant: None,
            payload_json: payload.map(str::to_owned),
        }],
        ..Default::default()
    };
    let (code, msg) = code_of(rt.block_on(client.write(upsert(nan.clone(), None))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("upserts[0] (id \"bad\")"), "{msg}");
    let (code, _) = code_of(rt.block_on(client.write(upsert(vec![0.5; 3], None))));
    assert_eq!(code, Code::InvalidArgument);
    let (code, msg) = code_of(rt.block_on(client.write(upsert(vec![0.5; DIM], Some("[1, 2]")))));
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    let (code, msg) = code_of(rt.block_on(client.write(upsert(vec![0.5; DIM], Some("{nope")))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("payload_json is not JSON"), "{msg}");
    // Write levels: an unknown one and an out-of-range wait are refused as over HTTP
    // (400, said in the metadata); a sync write on a node of one region is answered with
    // that region as having applied it.
    let leveled = |replication: &str, timeout_ms: Option<u64>| pb::WriteRequest {
        replication: replication.into(),
        timeout_ms,
        ..upsert(vec![0.25; DIM], None)
    };
    for (replication, timeout) in [("always", None), ("sync", Some(0)), ("sync", Some(120_001))] {
        let refused = rt
            .block_on(client.write(leveled(replication, timeout)))
            .expect_err("a bad write level");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(
            refused
                .metadata()
                .get("hektor-http-status")
                .map(|v| v.to_str().unwrap()),
            Some("400"),
            "{refused:?}"
        );
    }
    let synced = rt
        .block_on(client.write(leveled("sync", Some(5_000))))
        .expect("a sync write in one region");
    assert_eq!(synced.written, 1);
    assert_eq!(
        synced.regions,
        vec![pb::RegionApplied {
            region: "local".into(),
            applied: true
        }]
    );
    let plain = rt
        .block_on(client.write(leveled("", None)))
        .expect("an async write");
    assert!(plain.regions.is_empty(), "{:?}", plain.regions);
    // A message past the 2 MiB search limit, one that does not decode, an unknown method.
    let (code, _) = code_of(rt.block_on(client.search(search(vec![0.5; 600_000], None, &name))));
    assert_eq!(
        code,
        Code::OutOfRange,
        "tonic's code for a message past the limit"
    );
    let garbage = pb::Vector {
        values: vec![f32::from_bits(0xFFFF_FFFF); 4],
    };
    let (code, msg) = code_of(rt.block_on(
        client.unary::<pb::Vector, pb::SearchResponse>(pb::SEARCH_PATH, garbage.clone()),
    ));
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("not a valid hektor.v1.SearchRequest"), "{msg}");
    let (code, _) = code_of(rt.block_on(
        client.unary::<pb::Vector, pb::SearchResponse>("/hektor.v1.Hektor/Nope", garbage),
    ));
    assert_eq!(code, Code::Unimplemented);

    // The node still serves both doors.
    let again = rt
        .block_on(client.search(search(queries[1].clone(), Some(3), &name)))
        .expect("a good search after the bad ones");
    assert_eq!(again.hits.len(), 3);
    assert_eq!(get(&format!("{url}/health")).0, 200);
}

const WRITER: &str = "writer-key-1b2c3d4e5f60718a";
const READER: &str = "reader-key-9e8d7c6b5a493827";
const ADMIN: &str = "admin-key-7f3a9c2e51d04b8e";

#[test]
fn grpc_calls_pass_the_same_gate_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("grpckeys");
    let other = format!("{name}-other");
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [
            {"name": "ops", "key": ADMIN, "scopes": ["read", "write", "admin"]},
            {"name": "app", "key": WRITER, "scopes": ["read", "write"], "collections": [name]},
            {"name": "viewer", "key": READER, "scopes": ["read"], "collections": [name]},
        ]})
        .to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (server, grpc) = start_with_grpc(&data, &["--api-keys", keys.to_str().unwrap()]);
    for c in [&name, &other] {
        let status = client()
            .put(format!("{}/collections/{c}", server.url))
            .bearer_auth(ADMIN)
            .json(&json!({"dimension": 3, "partitions": 2}))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "create {c}: {status}");
    }
    let rt = runtime();
    let plain = rt.block_on(Client::connect(&grpc)).unwrap();
    let keyed = |key: &str| plain.clone().with_key(key).unwrap();
    let write = |c: &str| pb::WriteRequest {
        collection: c.to_owned(),
        upserts: vec![pb::Upsert {
            id: "a".into(),
            vector: vec![1.0, 0.0, 0.0],
            ..Default::default()
        }],
        ..Default::default()
    };
    let search = |c: &str| pb::SearchRequest {
        collection: c.to_owned(),
        vector: vec![1.0, 0.0, 0.0],
        k: Some(1),
        ..Default::default()
    };

    let (code, msg) = code_of(rt.block_on(plain.clone().search(search(&name))));
    assert_eq!(code, Code::Unauthenticated);
    assert!(msg.contains("Authorization: Bearer"), "{msg}");
    let (code, msg) =
        code_of(rt.block_on(keyed("wrong-key-0123456789abcdef").search(search(&name))));
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(msg, "unknown API key");
    let (code, msg) = code_of(rt.block_on(keyed(READER).write(write(&name))));
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("lacks the `write` scope"), "{msg}");
    let (code, msg) = code_of(rt.block_on(keyed(WRITER).search(search(&other))));
    assert_eq!(code, Code::PermissionDenied);
    assert!(msg.contains("does not open collection"), "{msg}");
    let (code, _) = code_of(rt.block_on(plain.clone().write(write(&name))));
    assert_eq!(code, Code::Unauthenticated);

    // The right keys pass: the writer writes, the reader reads it back.
    let written = rt
        .block_on(keyed(WRITER).write(write(&name)))
        .expect("a write with the write scope");
    let found = rt
        .block_on(keyed(READER).search(pb::SearchRequest {
            consistency: Some(pb::Consistency {
                after: written.token,
                timeout_ms: Some(30_000),
                ..Default::default()
            }),
            ..search(&name)
        }))
        .expect("a search with the read scope");
    assert_eq!(found.hits[0].id, "a");
    let batch = rt
        .block_on(keyed(READER).search_batch(pb::BatchSearchRequest {
            collection: name.clone(),
            vectors: vec![pb::Vector {
                values: vec![1.0, 0.0, 0.0],
            }],
            ..Default::default()
        }))
        .expect("a batch search with the read scope");
    assert_eq!(batch.results[0].hits[0].id, "a");
    let (code, _) = code_of(
        rt.block_on(plain.clone().search_batch(pb::BatchSearchRequest {
            collection: name.clone(),
            ..Default::default()
        })),
    );
    assert_eq!(code, Code::Unauthenticated);
}
