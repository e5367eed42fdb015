//! TLS on the listener, through the real binary: a node started with `--tls-cert` and
//! `--tls-key` serves HTTPS with that certificate (a client trusting the CA reads and
//! writes; one that does not trust it, or speaks plain HTTP, gets nothing), and the
//! `hektor` commands reach it with `HEKTOR_TLS_CA`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_with_a_certificate_serves_https_only_to_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path());
    let port = free_port();
    let name = unique("tls");
    let _node = Node(
        Command::new(env!("CARGO_BIN_EXE_hektor"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--only-collections",
                &name,
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("HEKTOR_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let trusting = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while trusting.get(format!("{url}/health")).send().is_err() {
        assert!(
            Instant::now() < deadline,
            "the node never answered over TLS"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Create, write, read back with the token: all over TLS.
    let created = trusting
        .put(format!("{url}/collections/{name}"))
        .json(&json!({"dimension": 3, "partitions": 2}))
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let written: Value = trusting
        .post(format!("{url}/collections/{name}/vectors"))
        .json(&json!({"upserts": [{"id": "a", "vector": [1.0, 0.0, 0.0]}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let found: Value = trusting
        .post(format!("{url}/collections/{name}/search"))
        .json(
            &json!({"vector": [1.0, 0.0, 0.0], "k": 1, "consistency": {"after": written["token"]}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(found["hits"][0]["id"], "a", "{found}");

    // A client that does not trust the CA is refused by its own TLS check; plain HTTP
    // on the TLS port gets no HTTP answer.
    let stranger = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = stranger.get(format!("{url}/health")).send().unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // The node still serves after both.
    assert!(trusting
        .get(format!("{url}/health"))
        .send()
        .unwrap()
        .status()
        .is_success());

    // The commands reach it with HEKTOR_TLS_CA.
    let out = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(["cluster", "--json", "--url", &url])
        .env("HEKTOR_TLS_CA", &ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(view["collections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == name.as_str()));
}
