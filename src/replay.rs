//! `hektor replay`: rebuild the shards of a collection this node holds (those in one
//! partition, or all) from the log, from offset 0, with a progress bar. Run it while the
//! node is stopped: it removes each shard's local state and re-applies every record of its
//! partition that falls in the shard's ring range. A data directory without shards of the
//! collection gets one shard per partition (what a single node holds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::host::{collection_dir, shard_dir, to_range_op};
use hektor_indexers::{EngineKind, Shard, ShardConfig, ShardOp};
use hektor_topics::catalog::Catalog;
use hektor_topics::record::RingRange;
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::open_log;
use crate::LogArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub log: LogArgs,
    #[arg(long)]
    pub collection: String,
    /// Only the shards in this partition; all when left out.
    #[arg(long)]
    pub shard: Option<u32>,
    /// Index engine of the rebuilt shards: hnsw (hot), warm, cold, arroy or exact.
    #[arg(long, default_value = "hnsw")]
    pub engine: String,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let engine: EngineKind = crate::serve::parse_engine(&args.engine)?;
    let log = open_log(&args.log).await?;
    let catalog = Catalog::open(log.clone(), args.log.topic_replication).await?;
    let spec = catalog
        .get(&args.collection)
        .with_context(|| format!("collection `{}` does not exist", args.collection))?;
    let incarnation = catalog
        .incarnation(&spec.name)
        .context("the collection vanished from the catalog")?;
    let topic = topic_name(&spec.name, TopicKind::Vectors);
    if let Some(s) = args.shard {
        if s >= spec.partitions {
            anyhow::bail!(
                "partition {s} does not exist: `{}` has {} partitions",
                spec.name,
                spec.partitions
            );
        }
    }
    let mut ranges = held_ranges(&collection_dir(&args.log.data_dir, &spec.name, incarnation));
    if ranges.is_empty() {
        ranges = (0..spec.partitions)
            .map(|p| ring::partition_range(p, spec.partitions))
            .collect();
    }
    let shards: Vec<(u32, RingRange)> = ranges
        .into_iter()
        .map(|r| (ring::partition_of(r.start, spec.partitions), r))
        .filter(|(p, _)| args.shard.is_none_or(|s| s == *p))
        .collect();
    let mut total = 0u64;
    for (p, _) in &shards {
        total += log.high_watermark(&topic, *p).await?;
    }
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    for (p, range) in shards {
        let dir = shard_dir(&args.log.data_dir, &spec.name, incarnation, range);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let config = ShardConfig::of_collection(&spec, engine);
        // LMDB work runs on blocking threads, never on the async runtime.
        let shard =
            Arc::new(tokio::task::spawn_blocking(move || Shard::open(&dir, config)).await??);
        let high = log.high_watermark(&topic, p).await?;
        let mut from = 0;
        while from < high {
            let batch = log
                .read(&topic, p, from, 8192, Duration::from_millis(500))
                .await?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            let ops: Vec<(u64, ShardOp)> = batch
                .iter()
                .map(|r| {
                    let op = to_range_op(&spec, p, range, r).unwrap_or(ShardOp::Skip);
                    (r.offset, op)
                })
                .collect();
            let s = Arc::clone(&shard);
            tokio::task::spawn_blocking(move || s.apply(&ops)).await??;
            bar.inc(batch.len() as u64);
        }
        let s = Arc::clone(&shard);
        tokio::task::spawn_blocking(move || s.build_index()).await??;
    }
    bar.finish_and_clear();
    println!(
        "replayed {total} records of `{}` in {:.1}s",
        spec.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The ranges of the shard directories (`<start>-<end>` in hex) under `dir`.
fn held_ranges(dir: &std::path::Path) -> Vec<RingRange> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<RingRange> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (start, end) = name.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = match end {
                "end" => None,
                e => Some(u64::from_str_radix(e, 16).ok()?),
            };
            Some(RingRange { start, end })
        })
        .collect();
    out.sort();
    out
}
