//! `hektor replay`: rebuild a collection's shards (one, or all) from the log, from
//! offset 0, with a progress bar. Run it while `hektor serve` is stopped: it removes the
//! shard's local state and re-applies every record of its partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hektor_indexers::host::{shard_dir, to_op};
use hektor_indexers::{EngineKind, Shard, ShardConfig, ShardOp};
use hektor_topics::catalog::Catalog;
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
    /// Only this shard (partition); all when left out.
    #[arg(long)]
    pub shard: Option<u32>,
    /// Index engine: arroy or exact.
    #[arg(long, default_value = "arroy")]
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
    let shards: Vec<u32> = match args.shard {
        Some(s) if s < spec.partitions => vec![s],
        Some(s) => anyhow::bail!(
            "shard {s} does not exist: `{}` has {} shards",
            spec.name,
            spec.partitions
        ),
        None => (0..spec.partitions).collect(),
    };
    let mut total = 0u64;
    for &p in &shards {
        total += log.high_watermark(&topic, p).await?;
    }
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    for p in shards {
        let dir = shard_dir(&args.log.data_dir, &spec.name, incarnation, p);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let config = ShardConfig::new(spec.dimension as usize, spec.distance, engine);
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
                .map(|r| (r.offset, to_op(&spec, p, r).unwrap_or(ShardOp::Skip)))
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
