//! A secured cluster on the real broker, through the real binary: nodes serve HTTPS with
//! certificates of one CA, clients need API keys, and a router calls the data node's
//! internal routes over HTTPS with the cluster secret. A router with the wrong secret is
//! refused by the data node, so its searches fail instead of reading data it may not.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY: &str = "cluster-test-key-0123456789";

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    dir: &Path,
    id: &str,
    roles: &str,
    brokers: &str,
    cluster: &str,
    scope: &str,
    secret: &Path,
    tls: &(PathBuf, PathBuf, PathBuf),
) -> (Node, String) {
    let port = free_port();
    let keys = dir.join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [{"key": KEY, "scopes": ["read", "write", "admin"]}]}).to_string(),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args([
            "serve",
            "--node-id",
            id,
            "--roles",
            roles,
            "--brokers",
            brokers,
        ])
        .args([
            "--cluster",
            cluster,
            "--only-collections",
            scope,
            "--engine",
            "exact",
        ])
        .args(["--heartbeat-ms", "250", "--dead-after-ms", "2500"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join(id))
        .arg("--api-keys")
        .arg(&keys)
        .arg("--cluster-secret-file")
        .arg(secret)
        .arg("--tls-cert")
        .arg(&tls.1)
        .arg("--tls-key")
        .arg(&tls.2)
        .arg("--tls-ca")
        .arg(&tls.0)
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hektor serve");
    (Node(child), format!("https://127.0.0.1:{port}"))
}

#[test]
fn a_router_reaches_the_data_node_over_https_with_the_cluster_secret_only() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tls = test_certificates(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the-cluster-secret-0123456789").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-cluster-secret-98765").unwrap();
    let cluster = unique("sec");
    let name = unique("secure");
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&tls.0).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let call = |method: reqwest::Method, url: String, body: Option<Value>| -> (u16, Value) {
        let mut req = client.request(method, url).bearer_auth(KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send() {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    };
    let (_data, data_url) = start(
        dir.path(),
        "d1",
        "data,controller",
        &brokers,
        &cluster,
        &name,
        &secret,
        &tls,
    );
    let (_router, router_url) = start(
        dir.path(),
        "r1",
        "router",
        &brokers,
        &cluster,
        &name,
        &secret,
        &tls,
    );
    let (_rogue, rogue_url) = start(
        dir.path(),
        "r2",
        "router",
        &brokers,
        &cluster,
        &name,
        &wrong,
        &tls,
    );
    for url in [&data_url, &router_url, &rogue_url] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while call(reqwest::Method::GET, format!("{url}/health"), None).0 != 200 {
            assert!(Instant::now() < deadline, "{url} never became healthy");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{router_url}/collections/{name}"),
        Some(json!({"dimension": 3, "partitions": 2})),
    );
    assert!(status == 201 || status == 200, "{status} {body}");
    // The router holds no shard: every search it answers went to the data node.
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{router_url}/collections/{name}/vectors"),
            Some(json!({"upserts": [{"id": "a", "vector": [1.0, 0.0, 0.0]}]})),
        );
        if status == 200 {
            break body["token"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "writes never succeeded: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let query = json!({"vector": [1.0, 0.0, 0.0], "k": 1, "consistency": {"after": token}});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{router_url}/collections/{name}/search"),
            Some(query.clone()),
        );
        if status == 200 {
            assert_eq!(body["hits"][0]["id"], "a", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the router never searched the data node: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The router with the wrong secret is refused by the data node's internal route.
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{rogue_url}/collections/{name}/search"),
        Some(query),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string().contains("401"),
        "the data node's refusal shows: {body}"
    );
    // And a client key does not open the internal route either.
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{data_url}/internal/collections/{name}/shard-search"),
        Some(json!({})),
    );
    assert_eq!(status, 403);
}
