//! `hektor topics create` against the real broker: makes the cluster's and a collection's
//! topics with their partition counts, idempotently.

mod common;

use std::process::Command;

use common::*;
use hektor_log::kafka::{KafkaConfig, KafkaLog};
use hektor_log::Log;
use hektor_topics::topic::{topic_name, TopicKind};

#[test]
fn kafka_topics_create_is_idempotent_and_sets_partitions() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let name = unique("k-topics");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_hektor"))
            .args([
                "topics",
                "create",
                "--brokers",
                &brokers,
                "--collection",
                &name,
                "--partitions",
                "6",
            ])
            .env("HEKTOR_LOG", "warn")
            .output()
            .expect("run hektor topics create")
    };
    for attempt in 0..2 {
        let out = run();
        assert!(
            out.status.success(),
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("hektor.{name}.vectors (6 partitions")),
            "{stdout}"
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let log = KafkaLog::connect(&brokers, KafkaConfig::default()).unwrap();
    runtime.block_on(async {
        assert_eq!(
            log.partitions(&topic_name(&name, TopicKind::Vectors))
                .await
                .unwrap(),
            6
        );
        assert_eq!(
            log.partitions(&topic_name(&name, TopicKind::Events))
                .await
                .unwrap(),
            6
        );
        assert_eq!(
            log.partitions(&topic_name(&name, TopicKind::Plan))
                .await
                .unwrap(),
            1
        );
        assert_eq!(log.partitions("hektor.catalog").await.unwrap(), 1);
        for kind in TopicKind::ALL {
            log.delete_topic(&topic_name(&name, kind)).await.unwrap();
        }
    });
    // A bad broker address fails fast with a message naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(["topics", "create", "--brokers", "127.0.0.1:1"])
        .env("HEKTOR_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
