//! End-to-end test of the intake topic on the real Kafka broker (`HEKTOR_KAFKA_BROKERS`;
//! under CI=true a missing broker fails): a Python program using a real Kafka client
//! (`examples/python/produce_intake.py`, confluent-kafka, the client's default
//! partitioner) writes vectors to `hektor.C.intake`, and the real `hektor serve` binary
//! re-partitions them by ring position: each one is found exactly once, at its tenant's
//! shard, and the poison records are in the dead-letter topic with their reasons.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hektor_log::kafka::{KafkaConfig, KafkaLog};
use hektor_log::Log;
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind, DLQ_REASON_HEADER, DLQ_SOURCE_HEADER};
use serde_json::{json, Value};

const DIMENSION: usize = 8;
const PARTITIONS: u32 = 4;
const COUNT: usize = 200;

/// Whether `python3` with `confluent_kafka` is there: under CI=true it must be; elsewhere
/// the test says loudly that it did not run.
fn python_with_kafka_client() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return true;
    }
    assert!(
        !is_ci(),
        "CI=true but python3 with confluent_kafka is missing: run `python3 -m pip install -r examples/python/requirements.txt`"
    );
    eprintln!(
        "WARNING: intake Kafka test NOT RUN: python3 with confluent_kafka is missing (python3 -m pip install -r examples/python/requirements.txt)"
    );
    false
}

#[test]
fn kafka_intake_records_from_a_python_client_land_once_at_their_ring_partition() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    if !python_with_kafka_client() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = unique("k-intake");
    let server = start_server(dir.path(), Some(&brokers), &["--only-collections", &name]);
    create_collection(&server.url, &name, DIMENSION, PARTITIONS);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/produce_intake.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--brokers", &brokers, "--collection", &name])
        .args(["--dimension", &DIMENSION.to_string()])
        .args(["--count", &COUNT.to_string(), "--tenants", "3", "--poison"])
        .output()
        .expect("run produce_intake.py");
    assert!(
        out.status.success(),
        "produce_intake.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let produced: Value = serde_json::from_slice(&out.stdout).expect("its JSON summary");
    let written = produced["written"].as_array().expect("written records");
    assert_eq!(written.len(), COUNT);

    // Bounded wait until every vector is applied (nothing more: poison is never applied).
    let collection_url = format!("{}/collections/{name}", server.url);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = get(&collection_url);
        assert_eq!(status, 200, "{body}");
        let vectors = body["vectors"].as_u64().unwrap_or(0);
        if vectors >= COUNT as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {vectors} of {COUNT} intake vectors were applied: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Each one exactly once, at its tenant's shard, as written.
    for record in written {
        let id = record["id"].as_str().expect("id");
        let tenant = record["tenant"].as_str().expect("tenant");
        let (status, body) = get(&format!("{collection_url}/vectors/{id}?tenant={tenant}"));
        assert_eq!(status, 200, "{id} of {tenant}: {body}");
        let shard = ring::partition_of(ring::position(Some(tenant), id), PARTITIONS);
        assert_eq!(body["shard"], json!(shard), "{id} of {tenant}");
        assert_eq!(body["payload"], record["payload"], "{id}");
        let got = body["vector"].as_array().expect("vector");
        let want = record["vector"].as_array().expect("vector");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.as_f64().unwrap_or(f64::NAN), w.as_f64().unwrap_or(0.0));
            assert!((g - w).abs() < 1e-6, "{id}: {g} != {w}");
        }
    }
    let (_, body) = get(&collection_url);
    assert_eq!(
        body["vectors"],
        json!(COUNT),
        "every id exactly once, no poison: {body}"
    );
    let (status, _) = get(&format!("{collection_url}/vectors/poison-dimension"));
    assert_eq!(status, 404, "the wrong-dimension record was applied");

    // A tenant's search finds its own vectors.
    for record in written.iter().take(6) {
        let (status, body) = post(
            &format!("{collection_url}/search"),
            &json!({"vector": record["vector"], "k": 3, "tenant": record["tenant"]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["hits"][0]["id"], record["id"], "{body}");
    }

    // The two poison records are dead-lettered with their reasons and their source.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let log = KafkaLog::connect(&brokers, KafkaConfig::default()).unwrap();
    let dlq = topic_name(&name, TopicKind::DeadLetter);
    let intake = topic_name(&name, TopicKind::Intake);
    let wanted = [
        ("poison-dimension", "9 dimensions"),
        ("poison-undecodable", "invalid JSON"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let found: Vec<(String, String, String)> = loop {
        let batch = runtime
            .block_on(log.read(&dlq, 0, 0, 100, Duration::from_secs(2)))
            .unwrap();
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let found: Vec<_> = batch
            .iter()
            .map(|s| {
                (
                    text(s.record.key.as_deref()),
                    text(s.record.header(DLQ_REASON_HEADER)),
                    text(s.record.header(DLQ_SOURCE_HEADER)),
                )
            })
            .collect();
        let all = wanted
            .iter()
            .all(|(key, _)| found.iter().any(|(k, _, _)| k == key));
        if all || Instant::now() >= deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (key, needle) in wanted {
        let Some((_, reason, source)) = found.iter().find(|(k, _, _)| k == key) else {
            panic!("{key} is not in {dlq}: {found:?}");
        };
        assert!(
            reason.contains(needle),
            "{key}: reason {reason:?} lacks {needle:?}"
        );
        assert!(
            source.starts_with(&format!("{intake}/")),
            "{key}: source {source:?} is not the intake topic"
        );
    }
    assert!(
        found.iter().all(|(k, _, _)| k.starts_with("poison-")),
        "a good record was dead-lettered: {found:?}"
    );
}
