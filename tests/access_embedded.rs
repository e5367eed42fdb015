//! The doors of a node, through the real binary on the embedded log: API keys with
//! scopes and collections (401 without a valid key on every route but /health, 403
//! without the scope or the collection, decided before the body is read), the cluster
//! secret on the internal routes (no client key opens them), and load shedding (a request
//! past --max-concurrent-requests is a 429 with Retry-After, not a queue).

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-7f3a9c2e51d04b8e";
const WRITER: &str = "writer-key-1b2c3d4e5f60718a";
const READER: &str = "reader-key-9e8d7c6b5a493827";
const SECRET: &str = "cluster-secret-5c4b3a2918273645";

/// (status, body) of `method url` with an optional bearer token and body.
fn send(method: Method, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn keys_scopes_collections_and_the_cluster_secret_guard_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("keys");
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
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let data = dir.path().join("data");
    let server = start_server(
        &data,
        None,
        &[
            "--only-collections",
            &name,
            "--api-keys",
            keys.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let url = &server.url;
    let coll = format!("{url}/collections/{name}");
    let dim3 = json!({"dimension": 3, "partitions": 2});
    let upsert = json!({"upserts": [{"id": "a", "vector": [1.0, 0.0, 0.0]}]});
    let query = json!({"vector": [1.0, 0.0, 0.0], "k": 1});
    let internal = format!("{url}/internal/collections/{name}/shard-search");

    // Only an admin key creates collections.
    assert_eq!(
        send(Method::PUT, &coll, Some(WRITER), Some(dim3.clone())).0,
        403
    );
    let (status, body) = send(Method::PUT, &coll, Some(ADMIN), Some(dim3.clone()));
    assert_eq!(status, 201, "admin creates: {body}");
    let (status, body) = send(
        Method::PUT,
        &format!("{url}/collections/{other}"),
        Some(ADMIN),
        Some(dim3),
    );
    assert_eq!(status, 201, "admin creates a second collection: {body}");

    // No key, or an unknown one: 401 everywhere but /health, with a JSON message.
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("{url}/collections"), None),
        (Method::GET, coll.clone(), None),
        (Method::DELETE, coll.clone(), None),
        (Method::POST, format!("{coll}/search"), Some(query.clone())),
        (
            Method::POST,
            format!("{coll}/vectors"),
            Some(upsert.clone()),
        ),
        (Method::GET, format!("{coll}/vectors/a"), None),
        (Method::GET, format!("{url}/cluster"), None),
        (
            Method::POST,
            format!("{url}/cluster/collections/{name}/plan"),
            Some(json!({})),
        ),
        (Method::GET, format!("{url}/metrics"), None),
        (Method::POST, internal.clone(), Some(json!({}))),
        (Method::GET, format!("{url}/no-such-route"), None),
    ];
    for (method, target, body) in &routes {
        for token in [None, Some("not-a-key-of-this-node-0000")] {
            let (status, answer) = send(method.clone(), target, token, body.clone());
            assert_eq!(status, 401, "{method} {target} with {token:?}: {answer}");
            assert!(answer["error"].is_string(), "{method} {target}: {answer}");
        }
    }
    assert_eq!(
        send(Method::GET, &format!("{url}/health"), None, None).0,
        200
    );

    // Scopes and collections: 403 with the reason.
    let (status, answer) = send(
        Method::POST,
        &format!("{coll}/vectors"),
        Some(READER),
        Some(upsert.clone()),
    );
    assert_eq!(status, 403, "a read key writes: {answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("write"),
        "{answer}"
    );
    let (status, answer) = send(
        Method::POST,
        &format!("{url}/collections/{other}/search"),
        Some(WRITER),
        Some(query.clone()),
    );
    assert_eq!(
        status, 403,
        "a key for one collection searches another: {answer}"
    );
    assert!(
        answer["error"].as_str().unwrap().contains(&other),
        "{answer}"
    );
    assert_eq!(send(Method::DELETE, &coll, Some(WRITER), None).0, 403);
    assert_eq!(
        send(Method::GET, &format!("{url}/cluster"), Some(READER), None).0,
        403
    );
    assert_eq!(
        send(
            Method::POST,
            &format!("{url}/cluster/collections/{name}/plan"),
            Some(WRITER),
            Some(json!({}))
        )
        .0,
        403
    );

    // The right keys work end to end: write, then read it back with the token.
    let (status, written) = send(
        Method::POST,
        &format!("{coll}/vectors"),
        Some(WRITER),
        Some(upsert),
    );
    assert_eq!(status, 200, "{written}");
    let search =
        json!({"vector": [1.0, 0.0, 0.0], "k": 1, "consistency": {"after": written["token"]}});
    let (status, found) = send(
        Method::POST,
        &format!("{coll}/search"),
        Some(READER),
        Some(search),
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["hits"][0]["id"], "a");
    assert_eq!(
        send(Method::GET, &format!("{url}/metrics"), Some(ADMIN), None).0,
        200
    );

    // Internal routes: the cluster secret, never a client key.
    let (status, answer) = send(Method::POST, &internal, Some(ADMIN), Some(json!({})));
    assert_eq!(status, 403, "an admin key on an internal route: {answer}");
    let (status, answer) = send(Method::POST, &internal, Some(SECRET), Some(json!({})));
    assert_eq!(
        status, 400,
        "the secret passes the gate, and the empty call is a 400: {answer}"
    );
    assert_eq!(
        send(
            Method::POST,
            &format!("{coll}/search"),
            Some(SECRET),
            Some(query)
        )
        .0,
        401
    );

    // Refused before the body is read: a 50 MB upload without a key is a quick 401.
    let started = Instant::now();
    let resp = client()
        .post(format!("{coll}/vectors"))
        .header("content-type", "application/json")
        .body(vec![b' '; 50 << 20])
        .send();
    if let Ok(resp) = resp {
        assert_eq!(resp.status().as_u16(), 401);
    } // The node may also close the connection while the client still sends.
    assert!(started.elapsed() < Duration::from_secs(30));
    let (status, _) = send(Method::GET, &format!("{url}/health"), None, None);
    assert_eq!(status, 200, "the node is still up");
}

#[test]
fn a_request_past_the_concurrency_limit_is_a_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("shed");
    let server = start_server(
        dir.path(),
        None,
        &[
            "--only-collections",
            &name,
            "--max-concurrent-requests",
            "2",
        ],
    );
    let url = server.url.clone();
    create_collection(&url, &name, 3, 1);
    // Two searches that wait for a write that never comes hold both slots for 3 s.
    let waiting = json!({"vector": [1.0, 0.0, 0.0], "consistency": {"after": {"0": 1_000_000}, "timeout_ms": 3000}});
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (url, name, body) = (url.clone(), name.clone(), waiting.clone());
            std::thread::spawn(move || post(&format!("{url}/collections/{name}/search"), &body).0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let resp = client()
        .post(format!("{url}/collections/{name}/search"))
        .json(&json!({"vector": [1.0, 0.0, 0.0]}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429, "a third request while two run");
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
    for h in holders {
        assert_eq!(h.join().unwrap(), 504, "the holders time out waiting");
    }
    // Once they are done, the node serves again.
    let (status, body) = post(
        &format!("{url}/collections/{name}/search"),
        &json!({"vector": [1.0, 0.0, 0.0]}),
    );
    assert_eq!(status, 200, "{body}");
}
