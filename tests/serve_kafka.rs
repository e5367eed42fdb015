//! End-to-end tests of `hektor serve --brokers` on the real Kafka broker
//! (`HEKTOR_KAFKA_BROKERS`; under CI=true a missing broker fails): recall, read-your-writes,
//! crash safety, and poison records reaching the dead-letter topic.

mod common;
mod scenarios;

use std::time::Duration;

use common::*;
use hektor_topics::log::kafka::{KafkaConfig, KafkaLog};
use hektor_topics::log::{Log, LogRecord};
use hektor_topics::topic::{topic_name, TopicKind};
use serde_json::json;

#[test]
fn kafka_recall_at_10_on_real_embeddings() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), Some(&brokers), &[]);
    scenarios::recall_at_10(&server, "k-recall");
}

#[test]
fn kafka_read_your_writes() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), Some(&brokers), &[]);
    scenarios::read_your_writes(&server, "k-ryw");
}

#[test]
fn kafka_kill_9_during_bulk_load_loses_and_duplicates_nothing() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    scenarios::crash_during_load(dir.path(), Some(&brokers), "k-crash");
}

#[test]
fn kafka_poison_records_go_to_the_dead_letter_topic_and_the_indexer_goes_on() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), Some(&brokers), &[]);
    let name = unique("k-poison");
    create_collection(&server.url, &name, 3, 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let log = KafkaLog::connect(&brokers, KafkaConfig::default()).unwrap();
    let vectors = topic_name(&name, TopicKind::Vectors);
    let dlq = topic_name(&name, TopicKind::DeadLetter);
    runtime.block_on(async {
        let garbage = LogRecord::new(Some(b"junk".to_vec()), b"\x01\xff not a record".to_vec())
            .with_header("hektor-encoding", "bin.v1");
        let wrong_dim = LogRecord::new(
            Some(b"w".to_vec()),
            json!({"op": "upsert", "collection": name, "id": "w", "vector": [1.0]})
                .to_string()
                .into_bytes(),
        );
        log.append(&vectors, 0, vec![garbage, wrong_dim])
            .await
            .unwrap();
    });
    // A good write after the poison is applied: the indexer went on.
    let (status, body) = post(
        &format!("{}/collections/{name}/vectors", server.url),
        &json!({"upserts": [{"id": "good", "vector": [0.1, 0.2, 0.3]}]}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, resp) = post(
        &format!("{}/collections/{name}/search", server.url),
        &json!({"vector": [0.1, 0.2, 0.3], "k": 5, "consistency": {"after": body["token"]}}),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["hits"].as_array().unwrap().len(), 1, "{resp}");
    assert_eq!(resp["hits"][0]["id"], json!("good"));
    // Both poison records are in the dead-letter topic, with a reason.
    let dead = runtime.block_on(async {
        let mut got = Vec::new();
        for _ in 0..50 {
            got = log
                .read(&dlq, 0, 0, 10, Duration::from_millis(200))
                .await
                .unwrap();
            if got.len() >= 2 {
                break;
            }
        }
        got
    });
    assert_eq!(dead.len(), 2, "dead letters: {dead:?}");
    let reasons: Vec<String> = dead
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.record.header("hektor-dlq-reason").unwrap()).into_owned()
        })
        .collect();
    assert!(reasons[1].contains("dimensions"), "{reasons:?}");
    assert_eq!(dead[0].record.value, b"\x01\xff not a record".to_vec());
    let (_, info) = get(&format!("{}/collections/{name}", server.url));
    assert_eq!(info["shards"][0]["dead_lettered"], json!(2), "{info}");
}
