//! Shared helpers of the integration tests: start the real `hektor` binary, talk to it
//! over HTTP, find the data set, and find the Kafka broker (or start one: `kafka.rs`) and
//! the S3 server of the archive tier (`s3.rs`), and a Python environment (`python.rs`).
#![allow(dead_code)]

pub mod kafka;
pub mod python;
pub mod s3;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `hektor serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Start `hektor serve` on `data_dir` (embedded log, or Kafka when `brokers` is given).
pub fn start_server(data_dir: &Path, brokers: Option<&str>, extra: &[&str]) -> Server {
    start_server_on(data_dir, brokers, free_port(), extra)
}

pub fn start_server_on(
    data_dir: &Path,
    brokers: Option<&str>,
    port: u16,
    extra: &[&str],
) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hektor"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(brokers) = brokers {
        cmd.arg("--brokers").arg(brokers);
    }
    let child = cmd.spawn().expect("start hektor serve");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        data_dir: data_dir.to_path_buf(),
    };
    wait_healthy(&server.url, Duration::from_secs(60));
    server
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

pub fn wait_healthy(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let c = client();
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("{url}/health")).send() {
            if r.status().is_success() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("hektor at {url} did not become healthy within {within:?}");
}

/// Send a JSON request; returns (status, body).
pub fn call(method: reqwest::Method, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub fn put(url: &str, body: &Value) -> (u16, Value) {
    call(reqwest::Method::PUT, url, Some(body))
}

pub fn post(url: &str, body: &Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(body))
}

pub fn get(url: &str) -> (u16, Value) {
    call(reqwest::Method::GET, url, None)
}

/// The data set: `$HEKTOR_DATA`, else `../shared/data/debian-minilm-384` next to the repo
/// (required under CI=true), else the sample shipped in the repo.
pub fn data_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(dir) = std::env::var("HEKTOR_DATA") {
        return PathBuf::from(dir);
    }
    let shared = root.join("../shared/data/debian-minilm-384");
    if shared.join("base.fvecs").exists() {
        return shared;
    }
    assert!(
        !is_ci(),
        "CI=true but the data set is missing at {}",
        shared.display()
    );
    eprintln!("NOTE: ../shared/data is absent; using the 3,000-vector sample shipped in the repo");
    root.join("samples/debian-minilm-384-sample")
}

pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether some `host:port` of a comma-separated broker list accepts a TCP connection.
pub fn reachable(brokers: &str) -> bool {
    brokers.split(',').any(|addr| {
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
            })
    })
}

/// A test CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files in
/// `dir`: (ca.pem, node.pem, node.key).
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hektor test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&node_key, &ca, &ca_key)
            .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, node.pem()).unwrap();
    std::fs::write(&paths.2, node_key.serialize_pem()).unwrap();
    paths
}

/// The Kafka broker for tests: `HEKTOR_KAFKA_BROKERS`; where that is unset and a Docker
/// engine answers, a broker container shared by the tests of this binary ([`kafka`]).
/// Under CI=true no broker fails the test; elsewhere the test says loudly that it did not
/// run.
pub fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("HEKTOR_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty());
    if brokers.as_deref().is_some_and(reachable) {
        return brokers;
    }
    let why = match &brokers {
        None => match kafka::container_brokers() {
            Ok(container) => return Some(container),
            Err(why) => why,
        },
        Some(_) => "HEKTOR_KAFKA_BROKERS is set: no container is started".to_string(),
    };
    if is_ci() {
        panic!(
            "CI=true but no Kafka broker is reachable at HEKTOR_KAFKA_BROKERS={brokers:?} ({why}); start one with scripts/kafka.sh start"
        );
    }
    eprintln!(
        "WARNING: Kafka test NOT RUN: no broker at HEKTOR_KAFKA_BROKERS={brokers:?} ({why}); start one with `bash scripts/kafka.sh start` and export HEKTOR_KAFKA_BROKERS=127.0.0.1:9092, or unset it where Docker runs"
    );
    None
}

/// A collection name unique to this test run (tests share a broker).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn create_collection(url: &str, name: &str, dim: usize, partitions: u32) {
    let (status, body) = put(
        &format!("{url}/collections/{name}"),
        &json!({"dimension": dim, "distance": "cosine", "partitions": partitions}),
    );
    assert!(
        status == 201 || status == 200,
        "create {name}: {status} {body}"
    );
}

/// Upsert rows `range` of `base` with ids from `ids`; returns the merged token.
pub fn upsert_rows(
    url: &str,
    collection: &str,
    base: &[f32],
    dim: usize,
    ids: &[String],
    range: std::ops::Range<usize>,
    batch: usize,
) -> Value {
    let mut token = serde_json::Map::new();
    let rows: Vec<usize> = range.collect();
    for chunk in rows.chunks(batch) {
        let upserts: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"id": ids[i], "vector": &base[i * dim..(i + 1) * dim], "payload": {"row": i}}))
            .collect();
        let (status, body) = post(
            &format!("{url}/collections/{collection}/vectors"),
            &json!({ "upserts": upserts }),
        );
        assert_eq!(status, 200, "upsert: {body}");
        merge_token(&mut token, &body["token"]);
    }
    Value::Object(token)
}

pub fn merge_token(into: &mut serde_json::Map<String, Value>, token: &Value) {
    if let Some(obj) = token.as_object() {
        for (p, off) in obj {
            let off = off.as_u64().unwrap_or(0);
            let cur = into.get(p).and_then(Value::as_u64).unwrap_or(0);
            into.insert(p.clone(), json!(cur.max(off)));
        }
    }
}

/// A `hektor node --config` process (a TOML file in its own data directory), killed
/// when dropped.
pub struct Node {
    pub url: String,
    pub child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start node `id` of `cluster` on Kafka `brokers`, holding only the collections of
/// `scope`, with `roles` (TOML array items, e.g. `"data", "router"`), short heartbeat and
/// grace settings, and `extra` TOML lines; waits until it answers.
pub fn start_config_node(
    dir: &Path,
    id: &str,
    brokers: &str,
    cluster: &str,
    scope: &str,
    roles: &str,
    extra: &str,
) -> Node {
    let port = free_port();
    let data = dir.join(id);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_id = "{id}"
listen = "127.0.0.1:{port}"
brokers = "{brokers}"
data_dir = "{}"
cluster = "{cluster}"
only_collections = "{scope}"
engine = "hnsw"
roles = [{roles}]
heartbeat_ms = 250
dead_after_ms = 2500
grace_ms = 1500
{extra}"#,
            data.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .arg("node")
        .arg("--config")
        .arg(&config)
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hektor node");
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url, Duration::from_secs(60));
    Node { url, child }
}
