//! `hektor serve`: one process running every role — ingest (write API), indexer (shard
//! host following the vectors topic) and query (read API) — over the embedded log in the
//! data directory, or over Kafka with `--brokers` — plus the kinetic planner, which publishes
//! (but does not apply) shard-map decisions and feeds `GET /cluster`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hektor_indexers::host::{HostConfig, ShardHost};
use hektor_indexers::EngineKind;
use hektor_ingest::http::{router as ingest_router, IngestState};
use hektor_ingest::Writer;
use hektor_query::http::{instrument, router as query_router, QueryState};
use hektor_query::metrics::Metrics;
use hektor_query::search::Searcher;
use hektor_topics::catalog::Catalog;
use hektor_topics::events::EventSink;
use hektor_topics::hlc::HlcClock;

use crate::backend::open_log;
use crate::LogArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Also create a `demo` collection from the sample shipped in the repo and print a
    /// search to paste.
    #[arg(long)]
    pub demo: bool,
    /// Directory of the demo sample (fvecs + ids + txt).
    #[arg(long)]
    pub sample: Option<std::path::PathBuf>,
    /// This node's region (stamped on every write).
    #[arg(long, default_value = "local")]
    pub region: String,
    /// This node's id (stamped on every event).
    #[arg(long, default_value = "node-1")]
    pub node_id: String,
    /// Index engine of the shards: arroy or exact.
    #[arg(long, default_value = "arroy")]
    pub engine: String,
    /// Serve only collections whose names start with this prefix (nodes sharing a Kafka
    /// cluster can split collections between them this way).
    #[arg(long)]
    pub only_collections: Option<String>,
    /// Threads of the search pool (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub search_threads: usize,
    /// How often the kinetic planner decides (milliseconds).
    #[arg(long, default_value_t = 5000)]
    pub planner_interval_ms: u64,
    /// Do not run the kinetic planner (`GET /cluster` then shows no hotness).
    #[arg(long)]
    pub no_planner: bool,
    /// Hotness (qps over the last minute × p99 ms / 10) above which a shard is hot and a
    /// split is proposed.
    #[arg(long, default_value_t = 100.0)]
    pub split_hotness: f64,
    /// Shards with fewer vectors than this are never split.
    #[arg(long, default_value_t = 1_000_000)]
    pub split_min_vectors: u64,
    /// This node's capacity weight (1.0 = a standard node), for the planner's load view.
    #[arg(long, default_value_t = 1.0)]
    pub node_capacity: f64,
}

impl ServeArgs {
    /// Serve arguments from command-line flags (as after `hektor serve`), with every other
    /// setting at its command-line default: for code that starts a node in-process.
    pub fn from_flags<I, T>(flags: I) -> anyhow::Result<ServeArgs>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("serve"))
            .chain(flags.into_iter().map(Into::into));
        Ok(<Flags as clap::Parser>::try_parse_from(argv)?.serve)
    }
}

pub fn parse_engine(name: &str) -> anyhow::Result<EngineKind> {
    match name {
        "arroy" => Ok(EngineKind::Arroy),
        "exact" => Ok(EngineKind::Exact),
        "hnsw" => Ok(EngineKind::Hnsw),
        other => anyhow::bail!("unknown engine `{other}`: use arroy, exact or hnsw"),
    }
}

/// Everything a running node holds.
pub struct Node {
    pub writer: Arc<Writer>,
    pub host: Arc<ShardHost>,
    pub router: axum::Router,
}

/// Wire the roles together over one log.
pub async fn build_node(args: &ServeArgs) -> anyhow::Result<Node> {
    let engine = parse_engine(&args.engine)?;
    let log = open_log(&args.log).await?;
    let catalog = Catalog::open_scoped(
        Arc::clone(&log),
        args.log.topic_replication,
        args.only_collections.clone(),
    )
    .await
    .context("reading the catalog")?;
    // Other nodes may create collections on a shared Kafka cluster; follow them.
    catalog.follow(Duration::from_millis(500));
    let host = ShardHost::start(
        HostConfig {
            data_dir: args.log.data_dir.clone(),
            engine,
        },
        Arc::clone(&catalog),
    )
    .await
    .context("opening shards")?;
    let events = EventSink::spawn(Arc::clone(&log), args.node_id.clone());
    let writer = Arc::new(Writer::new(
        Arc::clone(&catalog),
        Arc::new(HlcClock::new()),
        args.region.clone(),
    ));
    // Move what any Kafka client writes to the intake topics to their ring partitions.
    hektor_ingest::intake::Intake::start(
        Arc::clone(&writer),
        hektor_ingest::intake::IntakeConfig {
            replication: args.log.topic_replication,
            ..Default::default()
        },
    )
    .await
    .context("starting the intake re-partitioner")?;
    let searcher = Arc::new(Searcher::new(
        Arc::clone(&host),
        events.clone(),
        args.search_threads,
    )?);
    let metrics = Arc::new(Metrics::new());
    let cluster: Option<hektor_query::http::ClusterView> = if args.no_planner {
        None
    } else {
        let planner =
            hektor_dataflow::planner::Planner::start(Arc::clone(&catalog), planner_config(args));
        Some(Arc::new(move || planner.view()))
    };
    let dropped_events = events.clone();
    let router = ingest_router(IngestState {
        writer: Arc::clone(&writer),
        events,
    })
    .merge(query_router(QueryState {
        searcher,
        metrics: Arc::clone(&metrics),
        events_dropped: Arc::new(move || dropped_events.dropped()),
        cluster,
    }));
    let router = instrument(router, metrics);
    Ok(Node {
        writer,
        host,
        router,
    })
}

/// The kinetic planner's settings from the command line (decisions only, not applied).
fn planner_config(args: &ServeArgs) -> hektor_dataflow::planner::PlannerConfig {
    let mut config = hektor_dataflow::planner::PlannerConfig {
        node: args.node_id.clone(),
        capacity: args.node_capacity,
        interval: Duration::from_millis(args.planner_interval_ms.max(50)),
        ..Default::default()
    };
    config.decide.split_hotness = args.split_hotness;
    config.decide.min_split_vectors = args.split_min_vectors;
    config.params.hot_hotness = args.split_hotness;
    config
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.log.data_dir)
        .with_context(|| format!("creating {}", args.log.data_dir.display()))?;
    let node = build_node(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let backend = match &args.log.brokers {
        Some(b) => format!("Kafka at {b}"),
        None => format!("the embedded log in {}", args.log.data_dir.display()),
    };
    println!(
        "hektor listening on http://{} ({backend})",
        listener.local_addr()?
    );
    if args.demo {
        let writer = Arc::clone(&node.writer);
        let host = Arc::clone(&node.host);
        let args = args.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::demo::load(&args, writer, host).await {
                eprintln!("demo: {err:#}");
            }
        });
    }
    axum::serve(listener, node.router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_nodes_get_the_command_line_defaults() {
        let args = ServeArgs::from_flags(["--engine", "exact", "--no-planner"]).unwrap();
        assert_eq!(args.engine, "exact");
        assert!(args.no_planner);
        assert_eq!(args.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(args.log.compression, "lz4");
        assert!(ServeArgs::from_flags(["--no-such-flag"]).is_err());
    }
}
