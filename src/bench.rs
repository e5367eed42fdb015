//! `hektor bench ...`: benchmarks that run hektor's own code and print one JSON object per
//! line with `--json`.
//!
//! - `bench log`: append and read throughput of the log (embedded or Kafka) for
//!   384-dimension vector records.
//! - `bench search`, `bench placement`, `bench move`, `bench kinetic`, `bench scale`: see
//!   their modules.

use std::sync::Arc;

use anyhow::Context;
use hektor_topics::log::bench::bench_log;
use hektor_topics::log::embedded::EmbeddedLog;
use hektor_topics::log::kafka::{KafkaConfig, KafkaLog};
use hektor_topics::log::Log;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Log append and read throughput.
    Log(LogBenchArgs),
    /// Search recall, QPS and latency in-process and through HTTP, with peers (peers.py).
    Search(crate::bench_search::SearchBenchArgs),
    /// Placement strategies: keys moved by join/leave/reweight, load spread, lookup cost.
    Placement(crate::bench_placement::PlacementBenchArgs),
    /// Moving a shard between node processes on Kafka: duration, query p99 before/during.
    Move(crate::bench_move::MoveBenchArgs),
    /// Skewed tenants on node processes: the kinetic planner's splits against a static
    /// map (node CPU spread, p99, time to relief).
    Kinetic(crate::bench_kinetic::KineticBenchArgs),
    /// Faults on node processes under load (kill a data node, kill the controller), with
    /// a history checker: writes lost or duplicated, failed reads, token violations.
    Faults(crate::bench_faults::FaultsArgs),
    /// One node at scale on a real `hektor serve` process: load, index, search, restart
    /// (SIGTERM and kill -9), on a generated set shaped like the real one.
    Scale(crate::bench_scale::ScaleBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct LogBenchArgs {
    /// embedded or kafka.
    #[arg(long, default_value = "embedded")]
    pub backend: String,
    /// Kafka bootstrap servers (default: $HEKTOR_KAFKA_BROKERS).
    #[arg(long, env = "HEKTOR_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Records to append and read back.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// Vector dimension of each record.
    #[arg(long, default_value_t = 384)]
    pub dimension: usize,
    /// Records per append.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Kafka compression codec.
    #[arg(long, default_value = "lz4")]
    pub compression: String,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) => log(args).await,
        BenchCommand::Search(args) => crate::bench_search::run(args).await,
        BenchCommand::Placement(args) => crate::bench_placement::run(args).await,
        BenchCommand::Move(args) => crate::bench_move::run(args).await,
        BenchCommand::Kinetic(args) => crate::bench_kinetic::run(args).await,
        BenchCommand::Faults(args) => crate::bench_faults::run(args).await,
        BenchCommand::Scale(args) => crate::bench_scale::run(args).await,
    }
}

async fn log(args: LogBenchArgs) -> anyhow::Result<()> {
    let _tmp;
    let log: Arc<dyn Log> = match args.backend.as_str() {
        "embedded" => {
            _tmp = tempfile::tempdir()?;
            Arc::new(EmbeddedLog::open(_tmp.path())?)
        }
        "kafka" => {
            let brokers = args
                .brokers
                .as_deref()
                .context("--backend kafka needs --brokers HOST:PORT or HEKTOR_KAFKA_BROKERS")?;
            let config = KafkaConfig {
                compression: args.compression.parse()?,
                ..KafkaConfig::default()
            };
            Arc::new(KafkaLog::connect(brokers, config)?)
        }
        other => anyhow::bail!("unknown backend `{other}`: use embedded or kafka"),
    };
    let report = bench_log(log, args.records, args.dimension, args.batch).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} records: append {:.0} records/s ({:.1} MB/s), read {:.0} records/s ({:.1} MB/s)",
            report.backend,
            report.records,
            report.append_records_per_s,
            report.append_mb_per_s,
            report.read_records_per_s,
            report.read_mb_per_s
        );
    }
    Ok(())
}
