//! End-to-end tests of `hektor serve --brokers` on the real Kafka broker
//! (`HEKTOR_KAFKA_BROKERS`; under CI=true a missing broker fails): recall, read-your-writes,
//! crash safety, and poison records reaching the dead-letter topic.

mod common;
mod scenarios;

use std::time::Duration;

use common::*;
use hektor_log::kafka::{KafkaConfig, KafkaLog};
use hektor_log::{Log, LogRecord};
use hektor_topics::topic::{topic_name, TopicKind};
use serde_json::json;

#[test]
fn kafka_recall_at_10_on_real_embeddings() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = unique("k-recall");
    let server = start_server(dir.path(), Some(&brokers), &["--only-collections", &name]);
    scenarios::recall_at_10(&server, &name);
}

#[test]
fn kafka_read_your_writes() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = unique("k-ryw");
    let server = start_server(dir.path(), Some(&brokers), &["--only-collections", &name]);
    scenarios::read_your_writes(&server, &name);
}

#[test]
fn kafka_kill_9_during_bulk_load_loses_and_duplicates_nothing() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    scenarios::crash_during_load(dir.path(), Some(&brokers), &unique("k-crash"));
}

#[test]
fn kafka_the_same_id_of_two_tenants_is_two_vectors() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    scenarios::same_id_two_tenants(dir.path(), Some(&brokers), &unique("k-twotenants"));
}

#[test]
fn kafka_poison_records_go_to_the_dead_letter_topic_and_the_indexer_goes_on() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = unique("k-poison");
    let server = start_server(dir.path(), Some(&brokers), &["--only-collections", &name]);
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

#[test]
fn kafka_every_query_and_write_becomes_an_event() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = unique("k-events");
    let server = start_server(dir.path(), Some(&brokers), &["--only-collections", &name]);
    create_collection(&server.url, &name, 3, 2);
    let (status, body) = post(
        &format!("{}/collections/{name}/vectors", server.url),
        &json!({"upserts": [{"id": "a", "vector": [0.1, 0.2, 0.3], "tenant": "t"}], "deletes": ["b"]}),
    );
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        let (status, resp) = post(
            &format!("{}/collections/{name}/search", server.url),
            &json!({"vector": [0.1, 0.2, 0.3], "tenant": "t", "consistency": {"after": body["token"]}}),
        );
        assert_eq!(status, 200, "{resp}");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let log = KafkaLog::connect(&brokers, KafkaConfig::default()).unwrap();
    let topic = topic_name(&name, TopicKind::Events);
    let tenant_shard = hektor_topics::ring::tenant_partitions("t", 2);
    let events: Vec<hektor_topics::record::Event> = runtime.block_on(async {
        let mut events = Vec::new();
        for _ in 0..50 {
            events.clear();
            for p in 0..2 {
                for r in log
                    .read(&topic, p, 0, 100, Duration::from_millis(100))
                    .await
                    .unwrap()
                {
                    events.push(hektor_topics::codec::from_log_record(&r.record).unwrap());
                }
            }
            if events.len() >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        events
    });
    use hektor_topics::record::EventKind;
    let count = |k: EventKind| events.iter().filter(|e| e.kind == k).count();
    assert_eq!(count(EventKind::Upsert), 1, "{events:?}");
    assert_eq!(count(EventKind::Delete), 1, "{events:?}");
    assert_eq!(
        count(EventKind::Query),
        3,
        "a tenant query touches only the tenant's shard: {events:?}"
    );
    for e in &events {
        assert_eq!(e.collection, name);
        if e.kind == EventKind::Query {
            assert!(tenant_shard.contains(&e.shard));
        }
    }
    let upsert = events.iter().find(|e| e.kind == EventKind::Upsert).unwrap();
    assert_eq!(upsert.ring, hektor_topics::ring::position(Some("t"), "a"));
}
