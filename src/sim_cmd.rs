//! `hektor sim kinetic`: prints the seed's kinetic-sharding table (p99 latency, nodes,
//! rebalances per day per strategy) from the simulator in `hektor_dataflow::sim`, which
//! runs the decision engine itself. Only argument parsing and printing live here; the
//! model is documented in `docs/bench/kinetic.md`.

use hektor_dataflow::sim::{simulate, SimConfig, Strategy};

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Simulate a day of the seed's scenario under five sharding strategies.
    Kinetic(KineticArgs),
}

#[derive(Debug, clap::Args)]
pub struct KineticArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Measured queries/s per thread of the shard engine at --reference-vectors
    /// (default: arroy at recall 0.95 on a 62k-vector shard, 83-120 measured).
    #[arg(long, default_value_t = 100.0)]
    service_qps: f64,
    /// Shard size at which --service-qps was measured.
    #[arg(long, default_value_t = 62_000.0)]
    reference_vectors: f64,
    /// Search threads per node.
    #[arg(long, default_value_t = 16)]
    threads_per_node: u32,
    /// Peak queries per second.
    #[arg(long, default_value_t = 100_000.0)]
    peak_qps: f64,
    /// Vectors in the collection.
    #[arg(long, default_value_t = 1_000_000_000)]
    vectors: u64,
    /// Seed of the simulator's random draws: the workload's hot spots and the hash
    /// strategies' placements.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(command: SimCommand) -> anyhow::Result<()> {
    let SimCommand::Kinetic(args) = command;
    anyhow::ensure!(
        args.service_qps > 0.0 && args.reference_vectors > 1.0 && args.threads_per_node > 0,
        "--service-qps, --reference-vectors and --threads-per-node must be positive"
    );
    anyhow::ensure!(
        args.peak_qps > 0.0 && args.vectors > 0,
        "--peak-qps and --vectors must be positive"
    );
    let config = SimConfig {
        service_qps_per_thread: args.service_qps,
        reference_vectors: args.reference_vectors,
        threads_per_node: args.threads_per_node,
        peak_qps: args.peak_qps,
        vectors: args.vectors,
        seed: args.seed,
        ..SimConfig::default()
    };
    if !args.json {
        println!(
            "{:<20} {:>12} {:>8} {:>16} {:>10}",
            "strategy", "p99 latency", "nodes", "rebalances/day", "mean util"
        );
    }
    for strategy in Strategy::ALL {
        let r = simulate(&config, strategy);
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "strategy": strategy.name(),
                    "p99_ms": (r.p99_ms * 10.0).round() / 10.0,
                    "nodes": r.nodes,
                    "rebalances_per_day": r.rebalances_per_day,
                })
            );
        } else {
            println!(
                "{:<20} {:>9.1} ms {:>8} {:>16} {:>10.2}",
                strategy.name(),
                r.p99_ms,
                r.nodes,
                r.rebalances_per_day,
                r.mean_utilisation
            );
        }
    }
    Ok(())
}
