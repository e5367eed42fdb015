//! The intake re-partitioner on the embedded log (no Kafka): records written to the intake
//! topic with arbitrary partitioning reach the vectors topic at their ring partition, stamped
//! deterministically; a crash (tasks aborted, everything dropped and reopened) loses
//! nothing and re-forwards at most one batch per partition; poison records reach the
//! dead-letter topic with their reason and source; a dropped and re-created collection is
//! followed from the start of its new intake topic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_ingest::intake::{intake_hlc, Intake, IntakeConfig};
use hektor_ingest::Writer;
use hektor_log::embedded::EmbeddedLog;
use hektor_log::{Log, LogRecord, StoredRecord};
use hektor_topics::catalog::Catalog;
use hektor_topics::codec;
use hektor_topics::hlc::{wall_ms, Hlc, HlcClock};
use hektor_topics::record::{CollectionSpec, Distance, VectorRecord};
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind, DLQ_REASON_HEADER, DLQ_SOURCE_HEADER};
use serde_json::json;

const REGION: &str = "test-region";
const PARTITIONS: u32 = 4;
const BATCH: usize = 7;

struct Node {
    log: Arc<dyn Log>,
    catalog: Arc<Catalog>,
    writer: Arc<Writer>,
    intake: Arc<Intake>,
}

async fn open(dir: &Path) -> Node {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir).expect("open the embedded log"));
    let catalog = Catalog::open(Arc::clone(&log), 1)
        .await
        .expect("open the catalog");
    let writer = Arc::new(Writer::new(
        Arc::clone(&catalog),
        Arc::new(HlcClock::new()),
        REGION,
    ));
    let intake = Intake::start(
        Arc::clone(&writer),
        IntakeConfig {
            batch: BATCH,
            wait: Duration::from_millis(50),
            replication: 1,
        },
    )
    .await
    .expect("start the intake");
    Node {
        log,
        catalog,
        writer,
        intake,
    }
}

fn spec(name: &str, partitions: u32) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        dimension: 3,
        distance: Distance::Cosine,
        partitions,
        replication: 1,
        placement: Default::default(),
        merge: Default::default(),
        write_level: Default::default(),
    }
}

/// A JSON intake record as a foreign producer writes it (no header, any key).
fn json_record(value: serde_json::Value) -> LogRecord {
    LogRecord::new(Some(b"any-key".to_vec()), value.to_string().into_bytes())
}

fn upsert(collection: &str, i: usize) -> LogRecord {
    json_record(json!({
        "op": "upsert", "collection": collection, "id": format!("v{i}"),
        "tenant": format!("t{}", i % 5), "vector": [1.0 + i as f32, 2.0, 3.0],
        "payload": {"i": i},
    }))
}

/// Append records round-robin over the intake partitions (as a partitioner that knows
/// nothing of the ring would).
async fn produce(log: &Arc<dyn Log>, collection: &str, records: Vec<LogRecord>) {
    let topic = topic_name(collection, TopicKind::Intake);
    let partitions = log.partitions(&topic).await.expect("intake topic exists");
    let mut by_partition: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
    for (i, record) in records.into_iter().enumerate() {
        by_partition
            .entry(i as u32 % partitions)
            .or_default()
            .push(record);
    }
    for (partition, batch) in by_partition {
        log.append(&topic, partition, batch).await.expect("append");
    }
}

async fn read_partition(log: &Arc<dyn Log>, topic: &str, partition: u32) -> Vec<StoredRecord> {
    let high = log.high_watermark(topic, partition).await.expect("hw");
    let mut out = Vec::new();
    let mut from = 0;
    while from < high {
        let batch = log
            .read(topic, partition, from, 1000, Duration::from_millis(100))
            .await
            .expect("read");
        let Some(last) = batch.last() else { break };
        from = last.offset + 1;
        out.extend(batch);
    }
    out
}

/// Wait (bounded) until the intake has forwarded everything in the collection's intake topic.
async fn wait_caught_up(node: &Node, collection: &str) {
    let topic = topic_name(collection, TopicKind::Intake);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut highs = Vec::new();
        for p in 0..node.log.partitions(&topic).await.expect("partitions") {
            highs.push(node.log.high_watermark(&topic, p).await.expect("hw"));
        }
        if node.intake.next_offsets(collection).as_ref() == Some(&highs) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the intake of {collection} did not catch up: at {:?}, intake ends at {highs:?}",
            node.intake.next_offsets(collection)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_records_reach_their_ring_partition_once_across_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "docs";
    let first = 400;
    let second = 200;

    // Phase 1: records arrive, the intake forwards some of them, then "crashes".
    let node = open(dir.path()).await;
    node.catalog
        .create(spec(name, PARTITIONS))
        .await
        .expect("create");
    let mut records: Vec<LogRecord> = (0..first).map(|i| upsert(name, i)).collect();
    records.insert(
        10,
        json_record(json!({"op": "upsert", "collection": name, "id": "bad-dim", "vector": [1.0]})),
    );
    records.insert(20, LogRecord::new(None, b"\x00 not a record {".to_vec()));
    produce(&node.log, name, records).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.intake.forwarded() < 100 {
        assert!(Instant::now() < deadline, "the intake forwarded nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.intake.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let forwarded_before_crash = node.intake.forwarded();
    drop(node);

    // Phase 2: reopen everything, more records arrive (deletes, a foreign hlc, poison).
    let node = open(dir.path()).await;
    let future_hlc = Hlc::new(wall_ms() + 30_000, 9);
    let mut records: Vec<LogRecord> = (first..first + second).map(|i| upsert(name, i)).collect();
    records.push(json_record(
        json!({"op": "delete", "collection": name, "id": "never-written", "tenant": "t3"}),
    ));
    records.push(json_record(
        json!({"op": "delete", "collection": name, "id": "gone", "hlc": future_hlc.0}),
    ));
    records.push(json_record(json!({"op": "upsert", "collection": "elsewhere", "id": "bad-coll", "vector": [1.0, 2.0, 3.0]})));
    records.push(json_record(json!({"op": "upsert", "collection": name, "id": "bad-payload", "vector": [1.0, 2.0, 3.0], "payload": 7})));
    produce(&node.log, name, records).await;
    wait_caught_up(&node, name).await;

    // What the intake topic holds: every good record, with the stamp it must get.
    let intake = topic_name(name, TopicKind::Intake);
    let mut expected: BTreeMap<String, VectorRecord> = BTreeMap::new();
    let mut poison: BTreeMap<String, &str> = BTreeMap::new();
    for p in 0..PARTITIONS {
        for stored in read_partition(&node.log, &intake, p).await {
            let source = format!("{intake}/{p}/{}", stored.offset);
            match codec::from_log_record::<VectorRecord>(&stored.record) {
                Ok(record) if record.id() == "bad-dim" => {
                    poison.insert(source, "vector has 1 dimensions");
                }
                Ok(record) if record.id() == "bad-coll" => {
                    poison.insert(source, "collection `elsewhere`");
                }
                Ok(record) if record.id() == "bad-payload" => {
                    poison.insert(source, "payload must be a JSON object");
                }
                Ok(mut record) => {
                    let stamp = if record.hlc() == Hlc::default() {
                        intake_hlc(&stored)
                    } else {
                        record.hlc()
                    };
                    match &mut record {
                        VectorRecord::Upsert(u) => {
                            u.hlc = stamp;
                            u.origin = REGION.into();
                        }
                        VectorRecord::Delete(d) => {
                            d.hlc = stamp;
                            d.origin = REGION.into();
                        }
                        VectorRecord::Tick(_) => unreachable!("the test writes no ticks"),
                    }
                    expected.insert(record.id().to_owned(), record);
                }
                Err(_) => {
                    poison.insert(source, "invalid JSON");
                }
            }
        }
    }
    assert_eq!(expected.len(), first + second + 2);
    assert_eq!(poison.len(), 4);

    // The vectors topic: every good record, at its ring partition, as expected; nothing else.
    let vectors = topic_name(name, TopicKind::Vectors);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut total = 0;
    for p in 0..PARTITIONS {
        for stored in read_partition(&node.log, &vectors, p).await {
            total += 1;
            let record: VectorRecord =
                codec::from_log_record(&stored.record).expect("forwarded records decode");
            let at = ring::partition_of(ring::position(record.tenant(), record.id()), PARTITIONS);
            assert_eq!(
                at,
                p,
                "{} is in partition {p}, its ring partition is {at}",
                record.id()
            );
            assert_eq!(stored.record.key, Some(record.key()));
            let want = expected
                .get(record.id())
                .unwrap_or_else(|| panic!("{} was never a good intake record", record.id()));
            assert_eq!(
                &record, want,
                "a forwarded copy differs from its intake record"
            );
            seen.insert(record.id().to_owned());
        }
    }
    let missing: Vec<_> = expected.keys().filter(|id| !seen.contains(*id)).collect();
    assert!(missing.is_empty(), "lost across the crash: {missing:?}");
    assert!(total >= expected.len());

    // Progress survived the crash: the second run re-forwarded at most one batch per
    // partition of what the first had committed.
    let not_forwarded_before = (first as u64).saturating_sub(forwarded_before_crash);
    let bound = not_forwarded_before + second as u64 + 2 + (PARTITIONS as usize * BATCH) as u64;
    assert!(
        node.intake.forwarded() <= bound,
        "after the restart {} records were forwarded, at most {bound} expected: progress was lost",
        node.intake.forwarded()
    );

    // The clock observed the foreign stamp: later local writes order after it.
    assert!(node.writer.clock().now() > future_hlc);

    // Poison: each one in the dead-letter topic with its reason and source; nothing else.
    let dlq = topic_name(name, TopicKind::DeadLetter);
    let mut dead: BTreeMap<String, String> = BTreeMap::new();
    for stored in read_partition(&node.log, &dlq, 0).await {
        let header =
            |n| String::from_utf8_lossy(stored.record.header(n).unwrap_or_default()).into_owned();
        dead.insert(header(DLQ_SOURCE_HEADER), header(DLQ_REASON_HEADER));
    }
    assert_eq!(
        dead.keys().collect::<Vec<_>>(),
        poison.keys().collect::<Vec<_>>(),
        "dead-lettered sources"
    );
    for (source, needle) in &poison {
        assert!(
            dead[source].contains(needle),
            "{source}: {:?} lacks {needle:?}",
            dead[source]
        );
    }
    node.intake.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_collection_is_followed_from_the_start_of_its_new_intake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "again";
    let node = open(dir.path()).await;
    node.catalog.create(spec(name, 1)).await.expect("create");
    produce(&node.log, name, (0..5).map(|i| upsert(name, i)).collect()).await;
    wait_caught_up(&node, name).await;
    assert_eq!(node.intake.next_offsets(name), Some(vec![5]));

    assert!(node.catalog.drop_collection(name).await.expect("drop"));
    node.catalog
        .create(spec(name, 1))
        .await
        .expect("create again");
    // The new intake topic starts at offset 0, below the old progress (5).
    produce(
        &node.log,
        name,
        (100..103).map(|i| upsert(name, i)).collect(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let vectors = topic_name(name, TopicKind::Vectors);
    loop {
        let ids: BTreeSet<String> = read_partition(&node.log, &vectors, 0)
            .await
            .iter()
            .filter_map(|s| codec::from_log_record::<VectorRecord>(&s.record).ok())
            .map(|r| r.id().to_owned())
            .collect();
        let want: BTreeSet<String> = (100..103).map(|i| format!("v{i}")).collect();
        if ids == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the re-created collection's vectors are {ids:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.intake.stop();
}
