//! Opening the log the command line asks for, and `hektor topics create`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hektor_log::embedded::EmbeddedLog;
use hektor_log::kafka::{parse_properties, parse_property, KafkaConfig, KafkaLog};
use hektor_log::Log;
use hektor_topics::topic;

use crate::LogArgs;

/// The embedded log under `DATA_DIR/log`, or Kafka when `--brokers` is given.
/// How often the embedded log's expired records are removed.
const RETENTION_SWEEP: Duration = Duration::from_secs(60);

pub async fn open_log(args: &LogArgs) -> anyhow::Result<Arc<dyn Log>> {
    match &args.brokers {
        Some(brokers) => {
            let extra = kafka_properties(args)?;
            let secured = extra.iter().any(|(k, _)| {
                k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.")
            });
            let config = KafkaConfig {
                compression: args.compression.parse()?,
                extra,
                ..KafkaConfig::default()
            };
            let log = KafkaLog::connect(brokers, config)
                .with_context(|| format!("connecting to Kafka at {brokers}"))?;
            // librdkafka connects lazily: fail fast on a wrong address.
            log.ping(Duration::from_secs(15)).await.with_context(|| {
                if secured {
                    format!(
                        "no Kafka broker answered at {brokers}, or it refused this client's TLS or SASL \
                         settings (--kafka-config / --kafka-option): librdkafka's log lines above say which"
                    )
                } else {
                    format!("no Kafka broker answered at {brokers}")
                }
            })?;
            Ok(Arc::new(log))
        }
        None => {
            let dir = args.data_dir.join("log");
            let log = EmbeddedLog::open(&dir)
                .with_context(|| format!("opening the embedded log in {}", dir.display()))?;
            // No broker deletes expired records here: the node does (events, intake,
            // dead letters).
            log.enforce_retention(RETENTION_SWEEP);
            Ok(Arc::new(log))
        }
    }
}

/// The librdkafka properties of `--kafka-config FILE` then `--kafka-option`s, in that
/// order (later ones win in librdkafka).
pub fn kafka_properties(args: &LogArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut props = Vec::new();
    if let Some(path) = &args.kafka_config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Kafka properties in {}", path.display()))?;
        props.extend(parse_properties(&text, &path.display().to_string())?);
    }
    for option in &args.kafka_options {
        props.push(parse_property(option, "given with --kafka-option")?);
    }
    Ok(props)
}

pub async fn create_topics(
    args: &LogArgs,
    collection: Option<&str>,
    partitions: u32,
) -> anyhow::Result<()> {
    let log = open_log(args).await?;
    let mut specs = topic::cluster_topics(args.topic_replication);
    if let Some(collection) = collection {
        topic::validate_collection_name(collection)?;
        specs.extend(topic::collection_topics(
            collection,
            partitions,
            args.topic_replication,
            Default::default(),
        ));
    }
    for spec in specs {
        log.ensure_topic(&spec)
            .await
            .with_context(|| format!("creating topic {}", spec.name))?;
        println!(
            "{} ({} partitions, {:?}): ok",
            spec.name, spec.partitions, spec.cleanup
        );
    }
    Ok(())
}
