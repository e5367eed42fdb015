//! The `hektor` binary: every role of hektor behind one command line.
//!
//! - `hektor serve`: one process, all roles (ingest, indexer, query), on the embedded log
//!   in a data directory, or on Kafka with `--brokers`.
//! - `hektor topics create`: create the cluster's and a collection's topics on a broker.
//! - `hektor produce`: load fvecs or JSONL files into a collection.
//! - `hektor replay`: rebuild shards from the log from offset 0.
//! - `hektor bench ...`, `hektor dataset generate`: run the `hektor-bench` executable
//!   beside this one (the benchmarks and the data-set generator, `bench/`, which this
//!   binary does not link).
//!
//! This file only parses arguments and dispatches; each command lives in its own module.

mod backend;
mod bench_cmd;
mod client;
mod cluster_cmd;
mod console;
mod demo;
mod http_server;
mod node;
mod openapi;
mod produce;
mod replay;
mod serve;
mod shard_cmd;
mod sim_cmd;
mod tls;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Distributed vector search as a stream pipeline over a log.
#[derive(Debug, Parser)]
#[command(name = "hektor", version, about)]
struct Cli {
    /// How log lines are written to stderr: `text` (colour on a terminal only, never
    /// under NO_COLOR) or `json` (one object per line, for log collectors).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "HEKTOR_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

/// Where the log lives: the embedded log in the data directory, or a Kafka cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Directory for the embedded log and the shards.
    #[arg(long, default_value = "./hektor-data", env = "HEKTOR_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Kafka bootstrap servers (HOST:PORT,...). Without it, the embedded log is used.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Kafka compression codec: none, lz4, zstd, snappy, gzip.
    #[arg(long, default_value = "lz4")]
    pub compression: String,
    /// Replication factor for topics hektor creates on Kafka.
    #[arg(long, default_value_t = 1)]
    pub topic_replication: u16,
    /// A librdkafka property for every Kafka client, KEY=VALUE (repeatable; overrides
    /// --kafka-config), e.g. `security.protocol=SASL_SSL`. Values are never logged; put
    /// passwords in --kafka-config rather than on the command line.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
    /// A file of librdkafka properties (`KEY=VALUE` lines, `#` comments), as Kafka's
    /// client.properties: TLS (`ssl.ca.location`, ...) and SASL/SCRAM
    /// (`sasl.mechanisms`, `sasl.username`, `sasl.password`) settings of a secured cluster.
    #[arg(long, value_name = "FILE", env = "HEKTOR_KAFKA_CONFIG")]
    pub kafka_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process.
    Serve(Box<serve::ServeArgs>),
    /// Run one cluster node from a TOML config file (keys are `serve` flags).
    Node(node::NodeArgs),
    /// Ask the controller to split a shard or change its tier.
    Shard(shard_cmd::ShardArgs),
    /// Manage topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Load vectors from an fvecs or JSONL file into a collection.
    Produce(produce::ProduceArgs),
    /// Rebuild shards from the log, from offset 0 (run it while `serve` is stopped).
    Replay(replay::ReplayArgs),
    /// Benchmarks: runs `hektor-bench ARGS...` (the executable beside this one).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Show a node's shards with hotness, its load and the planner's decisions.
    Cluster(cluster_cmd::ClusterArgs),
    /// Data sets: runs `hektor-bench dataset ARGS...` (generate one of any size shaped
    /// like a real one).
    #[command(disable_help_flag = true)]
    Dataset {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Simulators (print JSON lines with --json).
    Sim {
        #[command(subcommand)]
        command: sim_cmd::SimCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create the cluster topics and, with --collection, that collection's topics.
    /// Idempotent.
    Create {
        #[command(flatten)]
        log: LogArgs,
        #[arg(long)]
        collection: Option<String>,
        #[arg(long, default_value_t = 8)]
        partitions: u32,
    },
}

fn main() -> anyhow::Result<()> {
    // Before any thread allocates (see the function's doc).
    hektor_indexers::limit_heap_arenas();
    let cli = Cli::parse();
    // The benches are another executable: hand over before logging or a runtime starts.
    match cli.command {
        Command::Bench { args } => return bench_cmd::exec(args),
        Command::Dataset { mut args } => {
            args.insert(0, "dataset".into());
            return bench_cmd::exec(args);
        }
        _ => {}
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEKTOR_LOG")
        .unwrap_or_else(|_| "info,heed=warn,rdkafka=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().with_current_span(false).init();
    } else {
        // Colour only where a person reads the log: not in files, pipes or journald,
        // and never under NO_COLOR (https://no-color.org).
        logs.with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hektor-io")
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Node(args) => node::run(args).await,
            Command::Shard(args) => shard_cmd::run(args).await,
            Command::Topics {
                command:
                    TopicsCommand::Create {
                        log,
                        collection,
                        partitions,
                    },
            } => backend::create_topics(&log, collection.as_deref(), partitions).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Cluster(args) => cluster_cmd::run(args).await,
            Command::Sim { command } => {
                tokio::task::spawn_blocking(move || sim_cmd::run(command)).await?
            }
            Command::Bench { .. } | Command::Dataset { .. } => unreachable!("handed over above"),
        }
    })
}
