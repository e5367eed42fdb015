//! hektor's benchmarks and data-set generator, the library of the `hektor-bench`
//! executable (`src/bin/hektor-bench.rs` of the root package): kept out of the `hektor`
//! server binary, which links none of it. Each bench runs hektor's own code and prints
//! one JSON object per line with `--json`; the multi-node ones start `hektor serve`
//! children from the `hektor` executable beside `hektor-bench` (or `--hektor PATH`,
//! `HEKTOR_BIN`: [`nodes::hektor_exe`]).
//!
//! - `log`: append and read throughput of the log (embedded or Kafka) for 384-dimension
//!   vector records ([`log`]).
//! - `search` ([`search`]), `placement` ([`placement`]), `move` ([`shard_move`]),
//!   `kinetic` ([`kinetic`]), `faults` ([`faults`]), `scale` ([`scale`]), `tiers`
//!   ([`tiers`]), `regions` ([`regions`]): see their modules.
//! - `dataset generate` ([`datagen`]): a data set of any size shaped like a real one.
//!
//! What they share: open-loop load ([`open_loop`]), node processes ([`nodes`]), seeded
//! random streams ([`seeded`]), a Toxiproxy of their own ([`toxiproxy`]).

mod batch;
pub mod datagen;
pub mod faults;
pub mod kinetic;
pub mod log;
pub mod nodes;
pub mod open_loop;
pub mod placement;
pub mod regions;
pub mod scale;
pub mod search;
pub mod seeded;
pub mod shard_move;
pub mod tiers;
pub mod toxiproxy;

use std::sync::Arc;

use anyhow::Context;
use hektor_log::embedded::EmbeddedLog;
use hektor_log::kafka::{KafkaConfig, KafkaLog};
use hektor_log::Log;

use crate::log::bench_log;

/// hektor's benchmarks (JSON lines with --json) and data-set generator.
#[derive(Debug, clap::Parser)]
#[command(name = "hektor-bench", version)]
pub struct Cli {
    /// The `hektor` executable that node children run (default: the one beside
    /// `hektor-bench`).
    #[arg(long, global = true, value_name = "PATH", env = "HEKTOR_BIN")]
    pub hektor: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Log append and read throughput.
    Log(LogBenchArgs),
    /// Search recall, QPS and latency in-process and through HTTP, with peers (peers.py).
    Search(crate::search::SearchBenchArgs),
    /// Placement strategies: keys moved by join/leave/reweight, load spread, lookup cost.
    Placement(crate::placement::PlacementBenchArgs),
    /// Moving a shard between node processes on Kafka: duration, query p99 before/during.
    Move(crate::shard_move::MoveBenchArgs),
    /// Skewed tenants on node processes: the kinetic planner's splits against a static
    /// map (node CPU spread, p99, time to relief).
    Kinetic(crate::kinetic::KineticBenchArgs),
    /// Faults on node processes under load (kill a data node, kill the controller), with
    /// a history checker: writes lost or duplicated, failed reads, token violations.
    Faults(crate::faults::FaultsArgs),
    /// One node at scale on a real `hektor serve` process: load, index, search, restart
    /// (SIGTERM and kill -9), on a generated set shaped like the real one.
    Scale(crate::scale::ScaleBenchArgs),
    /// Tiers by hotness on a real `hektor serve`: a skewed workload all-hot and tiered in
    /// one run; cost, the hot shards' p99 and recall per tier; then the skew moves to two
    /// demoted shards: the planner's promotions, their time to hot, p99 and recall (issue
    /// #18).
    Tiers(crate::tiers::TiersBenchArgs),
    /// Two regions on real parts (`scripts/regions.sh`) over an injected WAN: write
    /// latency per level, mirror lag against rate, a partition and its heal (issue #17).
    Regions(crate::regions::RegionsBenchArgs),
    /// Data sets: generate one of any size shaped like a real one.
    Dataset {
        #[command(subcommand)]
        command: datagen::DatasetCommand,
    },
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
        BenchCommand::Search(args) => crate::search::run(args).await,
        BenchCommand::Placement(args) => crate::placement::run(args).await,
        BenchCommand::Move(args) => crate::shard_move::run(args).await,
        BenchCommand::Kinetic(args) => crate::kinetic::run(args).await,
        BenchCommand::Faults(args) => crate::faults::run(args).await,
        BenchCommand::Scale(args) => crate::scale::run(args).await,
        BenchCommand::Regions(args) => crate::regions::run(args).await,
        BenchCommand::Tiers(args) => crate::tiers::run(args).await,
        BenchCommand::Dataset { command } => datagen::run(command).await,
    }
}

/// The `hektor-bench` executable: parse the command line, log to stderr (`HEKTOR_LOG`,
/// default warnings of the libraries), run the command on a multi-threaded runtime.
pub fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEKTOR_LOG")
        .unwrap_or_else(|_| "info,heed=warn,rdkafka=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    if let Some(path) = cli.hektor {
        // Checked now rather than when the first node starts, after minutes of loading.
        anyhow::ensure!(
            path.is_file(),
            "the hektor executable {} (--hektor or HEKTOR_BIN) does not exist",
            path.display()
        );
        nodes::set_hektor_exe(path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hektor-bench")
        .build()?;
    runtime.block_on(run(cli.command))
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
