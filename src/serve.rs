//! `hektor serve` (and `hektor node`, which reads the same settings from a file): one
//! process running the roles it is given — ingest and query routing (`router`), shard
//! hosting (`data`), the controller that writes shard maps (`controller`), the kinetic
//! planner (`planner`) — over the embedded log in the data directory, or over Kafka with
//! `--brokers`, where several such processes form a cluster: they find each other by their
//! heartbeats on the nodes topic and follow the shard maps on the plan topics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use std::sync::OnceLock;

use hektor_access::{ClusterSecret, Gate, KeyRing};
use hektor_control::{Control, ControlSettings, Routing, ShardFacts};
use hektor_indexers::host::{AssignedRange, Assignment, Assignments, HostConfig, ShardHost};
use hektor_indexers::EngineKind;
use hektor_ingest::http::{router as ingest_router, IngestState};
use hektor_ingest::replication::{Replicated, Replication};
use hektor_ingest::Writer;
use hektor_query::http::{instrument, router as query_router, QueryState};
use hektor_query::metrics::Metrics;
use hektor_query::router::Searcher;
use hektor_topics::catalog::Catalog;
use hektor_topics::events::EventSink;
use hektor_topics::hlc::{Hlc, HlcClock};
use hektor_topics::record::{NodeHeartbeat, PlanAction, RingRange};
use tokio::sync::watch;

use crate::backend::open_log;
use crate::LogArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Also serve the gRPC API (`hektor.v1.Hektor`: Search, SearchBatch, Write; plain
    /// TCP, same keys and limits as HTTP) on this address. Off when absent. Needs the
    /// router role.
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc_listen: Option<SocketAddr>,
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
    /// The other regions whose vectors topics MirrorMaker 2 copies into this region's
    /// log (`<region>.hektor.C.vectors`, comma-separated): every shard follows and merges
    /// them too, last writer (by hlc, then region) winning. Empty: one region.
    #[arg(long, value_delimiter = ',')]
    pub mirror_regions: Vec<String>,
    /// With --mirror-regions: a node of each other region, reached across the WAN
    /// (`REGION=URL`, comma-separated, e.g. `east=http://10.1.0.5:7070`). This node
    /// measures the round trip to each (`GET /cluster`, `hektor_region_rtt_seconds`),
    /// learns from them as soon as they merge a `sync` or `quorum` write (one crossing
    /// back, instead of a mirrored record), and forwards a bounded or strong search there
    /// when this region is not fresh enough within that round trip. Called with the
    /// cluster secret. Every region named must be in --mirror-regions.
    #[arg(long, value_delimiter = ',', value_name = "REGION=URL")]
    pub region_peers: Vec<String>,
    /// How often (ms) the nodes of --region-peers are probed for their round trip.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub region_probe_ms: u64,
    /// With --mirror-regions: how often (ms) this node closes the current time on each
    /// partition it holds (a tick record), so that other regions know how fresh their
    /// copy of this region is even while nobody writes. Bounded-staleness and strong
    /// reads wait on it.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub tick_ms: u64,
    /// The largest difference between two nodes' clocks that strong and bounded reads
    /// allow for (ms): a strong read waits until every region's copy is closed at least
    /// this far past the read's start.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub max_clock_offset_ms: u64,
    /// Fault tests only: this node's clock reads this many ms off the machine's wall
    /// clock (negative: behind), as a node with a wrong clock would.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, hide = true)]
    pub clock_skew_ms: i64,
    /// This node's id (stamped on every event).
    #[arg(long, default_value = "node-1")]
    pub node_id: String,
    /// Index engine of hot shards: hnsw (in memory), arroy, exact (brute force), or warm /
    /// cold to put every shard on that tier's engine. Warm shards use the int8 disk graph, cold ones
    /// binary-quantized arroy with rescoring, whatever this says.
    #[arg(long, default_value = "hnsw")]
    pub engine: String,
    /// Serve only collections whose names start with this prefix (nodes sharing a Kafka
    /// cluster can split collections between them this way).
    #[arg(long)]
    pub only_collections: Option<String>,
    /// Threads of the search pool (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub search_threads: usize,
    /// Threads a hot shard's index build of at least 2,048 vectors uses (0 = one per core,
    /// at most 16); the ones beyond the builder's own run at a lower priority, so they take
    /// the cores searches leave idle.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub build_threads: u64,
    /// Where hot shards' bulk builds take candidate neighbour lists from (exact nearest
    /// neighbours within each build round, computed as one batch): `auto` (the GPU when
    /// this node has one, else none), `off`, `cpu` (one core; as much CPU again as the
    /// build's own search) or `gpu` (falls back to the CPU when the GPU fails).
    #[arg(long, default_value = "auto", value_parser = ["auto", "off", "cpu", "gpu"])]
    pub build_candidates: String,
    /// How often the kinetic planner decides (milliseconds).
    #[arg(long, default_value_t = 5000)]
    pub planner_interval_ms: u64,
    /// Do not run the kinetic planner (`GET /cluster` then shows no hotness).
    #[arg(long)]
    pub no_planner: bool,
    /// Build every shard new to this node by replaying its partition from the log, even
    /// when another node could send it as a snapshot (its files: no rebuild).
    #[arg(long)]
    pub no_snapshot_moves: bool,
    /// The archive tier's object store: `file:///absolute/path` or `s3://bucket/prefix`.
    /// A shard set to tier `archive` (`hektor shard tier C SHARD archive`) is uploaded
    /// there as a snapshot and its local files removed; the first read that needs it
    /// restores it (then it is cold). Unset: tier `archive` is served as cold.
    #[arg(long, env = "HEKTOR_ARCHIVE_URL")]
    pub archive_url: Option<String>,
    /// The S3 endpoint of --archive-url (an S3-compatible server); default AWS's.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub archive_endpoint: Option<String>,
    /// The S3 access key of --archive-url.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub archive_access_key_id: Option<String>,
    /// The S3 secret key of --archive-url.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub archive_secret_access_key: Option<String>,
    /// The S3 region of --archive-url (default us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub archive_region: Option<String>,
    /// Allow a plain-http --archive-endpoint that is not on the loopback interface.
    #[arg(long)]
    pub archive_allow_http: bool,
    /// Hotness (qps over the last minute × p99 ms / 10) above which a shard is hot and a
    /// split is proposed.
    #[arg(long, default_value_t = 100.0)]
    pub split_hotness: f64,
    /// Shards with fewer vectors than this are never split.
    #[arg(long, default_value_t = 1_000_000)]
    pub split_min_vectors: u64,
    /// Seconds the kinetic planner leaves a range alone after acting on it.
    #[arg(long, default_value_t = 600)]
    pub planner_min_interval_s: u64,
    /// How far ahead (seconds) the kinetic planner's hotness forecasts look.
    #[arg(long, default_value_t = 600)]
    pub planner_lookahead_s: u64,
    /// The planner moves shards off a node whose load (busy time over capacity) passes
    /// this multiple of the mean node load (moves are carried out for collections placed
    /// by load).
    #[arg(long, default_value_t = 1.25)]
    pub balance_ratio: f64,
    /// ...when that node's load is at least this fraction of its capacity.
    #[arg(long, default_value_t = 0.05)]
    pub balance_min_load: f64,
    /// Do not move shards between the hot, warm and cold tiers by their query rate
    /// (`hektor shard tier` still does).
    #[arg(long)]
    pub no_tiering: bool,
    /// Memory per node for hot shards, in MiB, estimated as vectors × (5 × dimension +
    /// 144) bytes; the planner promotes only what fits and demotes the coldest hot shards
    /// of a node above it.
    #[arg(long, default_value_t = 8192)]
    pub hot_budget_mb: u64,
    /// A warm or cold shard at or above this many queries per second (over the last
    /// minute) for --tier-dwell-ms is promoted to hot.
    #[arg(long, default_value_t = 20.0)]
    pub tier_promote_qps: f64,
    /// A hot shard below this rate for --tier-demote-dwell-ms is demoted to warm; a cold
    /// shard at or above it for --tier-dwell-ms goes back to warm.
    #[arg(long, default_value_t = 5.0)]
    pub tier_demote_qps: f64,
    /// A warm shard below this rate for --tier-cold-dwell-ms is demoted to cold.
    #[arg(long, default_value_t = 0.1)]
    pub tier_cold_qps: f64,
    /// How long a shard's rate must stay at a promotion's threshold before it is
    /// promoted (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    pub tier_dwell_ms: u64,
    /// How long a hot shard's rate must stay below --tier-demote-qps before it is
    /// demoted to warm (milliseconds).
    #[arg(long, default_value_t = 3_600_000)]
    pub tier_demote_dwell_ms: u64,
    /// How long a warm shard's rate must stay below --tier-cold-qps before it is demoted
    /// to cold (milliseconds).
    #[arg(long, default_value_t = 86_400_000)]
    pub tier_cold_dwell_ms: u64,
    /// Archive a cold shard whose rate stays below --tier-archive-qps this long
    /// (milliseconds) to --archive-url's object store; a read restores it. Unset: the
    /// planner never archives (an operator still can, with `hektor shard tier`).
    #[arg(long)]
    pub tier_archive_dwell_ms: Option<u64>,
    /// A cold shard below this many queries per second (over the last minute) for
    /// --tier-archive-dwell-ms is archived; below --tier-cold-qps.
    #[arg(long, default_value_t = 0.01)]
    pub tier_archive_qps: f64,
    /// At most this many tier changes a minute (the planner decides at most 2 a round).
    #[arg(long, default_value_t = 4)]
    pub tier_moves_per_min: usize,
    /// Cores of a node of capacity 1.0, for the planner's load (default: this machine's).
    #[arg(long)]
    pub cores_per_capacity: Option<f64>,
    /// This node's capacity weight (1.0 = a standard node): its share of shards, and the
    /// planner's load view.
    #[arg(long, default_value_t = 1.0)]
    pub node_capacity: f64,
    /// The roles of this node, comma-separated: router (the client API: searches, writes,
    /// collection changes; without it a node answers them 421 and serves only its views
    /// and the internal routes), data (holds shards; a node without it holds none),
    /// controller (may be elected to write shard maps), planner (kinetic planner); tier
    /// roles hot, warm, cold (with data: this node holds only shards of those tiers, a
    /// cold node also archive ones; a data node without tier roles holds any tier; a
    /// shard whose tier its holders may not hold moves to nodes that may); gpu (takes the
    /// batch searches the routing rule sends to a GPU from nodes without one).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "router,data,controller,planner"
    )]
    pub roles: Vec<String>,
    /// The cluster's name, when several clusters share one Kafka (nodes see only the
    /// heartbeats of their own cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The address other nodes reach this one at (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Heartbeat interval (milliseconds).
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// A node silent for this long is dead and its shards are re-placed (milliseconds).
    #[arg(long, default_value_t = 10_000)]
    pub dead_after_ms: u64,
    /// How long a shard this node no longer holds keeps serving (milliseconds).
    #[arg(long, default_value_t = 5_000)]
    pub grace_ms: u64,
    /// Split a shard that holds more vectors than this, at the median ring position of
    /// its data (0 = never split by size).
    #[arg(long, default_value_t = 2_000_000)]
    pub split_vectors: u64,
    /// Shard builds in flight at once per collection.
    #[arg(long, default_value_t = 4)]
    pub max_moves: usize,
    /// On ctrl-c / SIGTERM, how long to wait for the shards to move to other nodes before
    /// stopping anyway (milliseconds).
    #[arg(long, default_value_t = 120_000)]
    pub drain_timeout_ms: u64,
    /// API keys, a JSON file: `{"keys": [{"key": "...", "scopes": ["read", "write",
    /// "admin"], "collections": ["*"]}]}`. Clients send `Authorization: Bearer <key>`.
    /// Without it every route is open to anyone who reaches the listener.
    #[arg(long, value_name = "FILE", env = "HEKTOR_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// A file holding the secret the nodes of this cluster present to each other on the
    /// internal routes (the same on every node, at least 16 characters). With --api-keys
    /// and without this, the node makes up one: it can then serve only alone.
    #[arg(long, value_name = "FILE", env = "HEKTOR_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Requests served at once; one more is answered 429 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// Open connections at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// How long one request may take from its headers to its answer (milliseconds);
    /// longer is a 503. Keep it above the longest consistency wait (300 s).
    #[arg(long, default_value_t = 330_000)]
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's headers (milliseconds).
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Nodes then call each
    /// other over HTTPS too, trusting --tls-ca.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The PEM CA certificate(s) this node trusts when it calls other nodes over HTTPS
    /// (default: the chain in --tls-cert, which then must hold the CA).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
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

/// The hot tier's engine by name: hnsw (hot), arroy, exact; warm and cold name the other
/// tiers' engines.
pub fn parse_engine(name: &str) -> anyhow::Result<EngineKind> {
    Ok(name.parse::<EngineKind>()?)
}

/// Everything a running node holds.
pub struct Node {
    pub writer: Arc<Writer>,
    pub host: Arc<ShardHost>,
    pub control: Arc<Control>,
    pub router: axum::Router,
    /// Who may call what (what `run` says about it at start).
    pub gate: Gate,
    /// The gRPC methods over this node's searcher and writer (served with --grpc-listen).
    pub grpc: Arc<hektor_grpc::Api>,
}

/// The gate of `--api-keys` and `--cluster-secret-file`.
fn gate_of(args: &ServeArgs) -> anyhow::Result<Gate> {
    let keys = args
        .api_keys
        .as_deref()
        .map(KeyRing::load)
        .transpose()
        .context("loading --api-keys")?;
    let secret = match &args.cluster_secret_file {
        Some(path) => Some(ClusterSecret::load(path).context("loading --cluster-secret-file")?),
        None if keys.is_some() => Some(ClusterSecret::generate()),
        None => None,
    };
    if let (Some(keys), Some(secret)) = (&keys, &secret) {
        if secret.is_in(keys) {
            anyhow::bail!(
                "the cluster secret is also an API key in --api-keys; give nodes a secret of their own"
            );
        }
    }
    Ok(Gate::new(keys, secret))
}

/// What a 429 says: the node is at --max-concurrent-requests.
async fn overloaded(err: tower::BoxError) -> axum::response::Response {
    use axum::response::IntoResponse;
    if err.is::<tower::load_shed::error::Overloaded>() {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "1")],
            axum::Json(serde_json::json!({
                "error": "this node is serving as many requests as it takes at once; retry shortly"
            })),
        )
            .into_response()
    } else {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": err.to_string() })),
        )
            .into_response()
    }
}

impl ServeArgs {
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The host's answers to the control plane (set once the host is open).
struct HostFacts(OnceLock<Arc<ShardHost>>);

impl ShardFacts for HostFacts {
    fn caught_up(&self, collection: &str, incarnation: u64, range: RingRange) -> bool {
        self.0
            .get()
            .is_some_and(|h| h.caught_up(collection, incarnation, range))
    }

    fn size(&self, collection: &str, incarnation: u64, range: RingRange) -> Option<(u64, u64)> {
        let host = self.0.get()?;
        let c = host
            .collection(collection)
            .filter(|c| c.incarnation == incarnation)?;
        let shard = c.shard(range)?;
        let median = shard.shard.ring_median().ok().flatten()?;
        Some((shard.shard.len(), median))
    }

    fn held(&self) -> Vec<hektor_topics::record::HeldShard> {
        let Some(host) = self.0.get() else {
            return Vec::new();
        };
        host.collections()
            .iter()
            .flat_map(|c| {
                c.serving()
                    .filter(|s| s.caught_up())
                    .map(|s| hektor_topics::record::HeldShard {
                        collection: c.spec.name.clone(),
                        range: s.range,
                        vectors: s.shard.len(),
                        bytes: s.shard.bytes_on_disk(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The kinetic planner's view of the cluster: the accepted shard maps, the sizes the
/// holders report in their heartbeats, and the placeable data nodes.
struct ControlFeed(Arc<Control>);

impl hektor_dataflow::planner::ClusterFeed for ControlFeed {
    fn shards(&self, collection: &str) -> Option<hektor_dataflow::planner::FeedMap> {
        let map = self.0.plans().get(collection)?.map?;
        let mut sizes: std::collections::BTreeMap<RingRange, (u64, u64)> = Default::default();
        for hb in self.0.membership().alive() {
            for held in hb.shards.iter().filter(|h| h.collection == collection) {
                let v = sizes.entry(held.range).or_default();
                *v = (v.0.max(held.vectors), v.1.max(held.bytes));
            }
        }
        Some(hektor_dataflow::planner::FeedMap {
            epoch: map.epoch(),
            shards: map
                .shards()
                .iter()
                .map(|s| hektor_dataflow::planner::FeedShard {
                    range: s.range,
                    replicas: s.replicas.clone(),
                    vectors: sizes.get(&s.range).map(|v| v.0),
                    bytes: sizes.get(&s.range).map(|v| v.1).filter(|b| *b > 0),
                    tier: s.tier,
                })
                .collect(),
        })
    }

    fn leads(&self) -> bool {
        self.0.membership().controller().as_deref() == Some(self.0.me())
    }

    fn nodes(&self) -> std::collections::BTreeMap<String, f64> {
        self.0
            .membership()
            .placeable()
            .into_iter()
            .map(|n| (n.id, n.weight))
            .collect()
    }

    /// The same nodes with the tiers their tier roles let them hold (`NodeSpec::may_hold`).
    fn tiers(&self) -> std::collections::BTreeMap<String, Vec<hektor_topics::record::Tier>> {
        self.0
            .membership()
            .placeable()
            .into_iter()
            .map(|n| (n.id.clone(), n.tiers_held()))
            .collect()
    }
}

/// Keep the host's assignments in step with the shard maps: the ranges listing this node.
fn follow_assignments(control: &Control) -> watch::Receiver<Assignments> {
    let mut routing = control.routing();
    let (tx, rx) = watch::channel(assignments_of(&routing.borrow()));
    tokio::spawn(async move {
        while routing.changed().await.is_ok() {
            let next = assignments_of(&routing.borrow_and_update());
            tx.send_if_modified(|cur| {
                let changed = *cur != next;
                if changed {
                    *cur = next;
                }
                changed
            });
        }
    });
    rx
}

fn assignments_of(routing: &Routing) -> Assignments {
    routing
        .maps
        .iter()
        .map(|(name, map)| {
            let ranges = map
                .ranges_of(&routing.me)
                .into_iter()
                .map(|(range, tier)| AssignedRange {
                    range,
                    tier,
                    primary: map
                        .shards()
                        .iter()
                        .find(|s| s.range == range)
                        .is_some_and(|s| s.replicas.first() == Some(&routing.me)),
                })
                .collect();
            (
                name.clone(),
                Assignment {
                    incarnation: map.incarnation(),
                    epoch: map.epoch(),
                    ranges,
                },
            )
        })
        .collect()
}

/// `--build-candidates`: `auto` is the GPU when this process can use one, else off.
fn build_candidates(setting: &str) -> anyhow::Result<hektor_indexers::BuildCandidates> {
    use hektor_indexers::BuildCandidates;
    let mode = match setting {
        "auto" if hektor_indexers::batch::gpu_available() => BuildCandidates::Gpu,
        "auto" => BuildCandidates::Off,
        other => BuildCandidates::parse(other)?,
    };
    tracing::info!(setting, ?mode, "hot builds' candidate lists");
    Ok(mode)
}

/// Wire the roles together over one log.
pub async fn build_node(args: &ServeArgs) -> anyhow::Result<Node> {
    let engine = parse_engine(&args.engine)?;
    hektor_indexers::set_default_build_threads(args.build_threads as usize);
    hektor_indexers::set_build_candidates(build_candidates(&args.build_candidates)?);
    let planner_settings = planner_config(args)?;
    let gate = gate_of(args)?;
    let log = open_log(&args.log).await?;
    // One clock for the writes this node accepts, the mirrored writes it applies and the
    // catalog entries it makes (their order across regions).
    let clock = Arc::new(HlcClock::skewed(args.clock_skew_ms));
    let catalog = Catalog::open_in_region(
        Arc::clone(&log),
        args.log.topic_replication,
        args.only_collections.clone(),
        &args.region,
        Arc::clone(&clock),
    )
    .await
    .context("reading the catalog")?;
    // Other nodes may create collections on a shared Kafka cluster; follow them.
    catalog.follow(Duration::from_millis(500));
    let mut roles = args.roles.clone();
    roles.retain(|r| !r.is_empty());
    hektor_control::membership::check_roles(&roles).map_err(|e| anyhow::anyhow!("--roles: {e}"))?;
    let address = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    let mut settings = ControlSettings::new(NodeHeartbeat {
        node: args.node_id.clone(),
        address,
        region: args.region.clone(),
        roles,
        capacity: args.node_capacity,
        memory_bytes: 0,
        time_ms: 0,
        leaving: false,
        shards: Vec::new(),
    });
    settings.heartbeat_every = Duration::from_millis(args.heartbeat_ms.max(10));
    settings.dead_after = Duration::from_millis(args.dead_after_ms.max(args.heartbeat_ms * 2));
    settings.max_moves = args.max_moves.max(1);
    settings.cluster = args.cluster.clone();
    settings.split_vectors = (args.split_vectors > 0).then_some(args.split_vectors);
    let facts = Arc::new(HostFacts(OnceLock::new()));
    let control = Control::start(Arc::clone(&catalog), settings, facts.clone())
        .await
        .context("starting the control plane")?;
    // One client for calls between nodes (shard searches, snapshots): https with the
    // cluster's CA when the node serves TLS.
    let internal_client = match &args.tls_cert {
        Some(cert) => {
            let ca = args.tls_ca.as_deref().unwrap_or(cert);
            let mut client = reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(500))
                .pool_max_idle_per_host(64);
            for trusted in crate::tls::trusted(ca)? {
                client = client.add_root_certificate(trusted);
            }
            Some(client.build()?)
        }
        None => None,
    };
    // A shard new to this node is fetched from a holder as a snapshot (files, not a
    // replay and a rebuild), unless --no-snapshot-moves.
    let snapshots: Option<Arc<dyn hektor_indexers::snapshot::SnapshotSource>> =
        (!args.no_snapshot_moves).then(|| {
            Arc::new(hektor_transfer::HttpSnapshots::new(
                control.routing(),
                internal_client.clone().unwrap_or_default(),
                internal_client.is_some(),
                gate.node_authorization(),
            )) as Arc<dyn hektor_indexers::snapshot::SnapshotSource>
        });
    for region in &args.mirror_regions {
        hektor_merge::stamp::validate_region(region)
            .map_err(|e| anyhow::anyhow!("--mirror-regions: {e}"))?;
        anyhow::ensure!(
            region != &args.region,
            "--mirror-regions names this node's own region `{region}`"
        );
    }
    // Collections created, or dropped, in another region reach this one through that
    // region's mirrored catalog (`<region>.hektor.catalog`), adopted into this region's.
    if !args.mirror_regions.is_empty() {
        catalog.follow_regions(args.mirror_regions.clone(), Duration::from_millis(500));
    }
    let peers = hektor_query::peers::parse_peers(&args.region, &args.region_peers)
        .map_err(|e| anyhow::anyhow!("--region-peers: {e}"))?;
    for (region, _) in &peers {
        anyhow::ensure!(
            args.mirror_regions.contains(region),
            "--region-peers names region `{region}`, which is not in --mirror-regions ({:?}): this node would not merge what it writes",
            args.mirror_regions
        );
    }
    let peers = (!peers.is_empty()).then(|| {
        Arc::new(hektor_query::peers::Peers::new(
            &args.region,
            peers,
            internal_client.clone().unwrap_or_default(),
            gate.node_authorization(),
            Duration::from_millis(args.region_probe_ms),
        ))
    });
    let host = ShardHost::start(
        HostConfig {
            data_dir: args.log.data_dir.clone(),
            engine,
            grace: Duration::from_millis(args.grace_ms),
            snapshots,
            mirrors: args.mirror_regions.clone(),
            clock: Some(Arc::clone(&clock)),
            region: args.region.clone(),
        },
        Arc::clone(&catalog),
        follow_assignments(&control),
    )
    .await
    .context("opening shards")?;
    let _ = facts.0.set(Arc::clone(&host));
    if let Some(url) = &args.archive_url {
        let options = hektor_archive::ArchiveOptions {
            endpoint: args.archive_endpoint.clone(),
            access_key_id: args.archive_access_key_id.clone(),
            secret_access_key: args.archive_secret_access_key.clone(),
            region: args.archive_region.clone(),
            allow_http: args.archive_allow_http,
        };
        let archive = hektor_archive::Archive::open(url, &options)
            .with_context(|| format!("opening the archive tier at {url}"))?;
        // A shard restored by a read is cold from then on: ask the controller.
        let asker = Arc::clone(&control);
        let on_restored: hektor_indexers::host::OnRestored = Arc::new(
            move |collection: &str, range: RingRange| {
                let (asker, collection) = (Arc::clone(&asker), collection.to_owned());
                tokio::spawn(async move {
                    let action = PlanAction::SetTier {
                        shard: range,
                        tier: hektor_topics::record::Tier::Cold,
                    };
                    let reason = "tier: restored from the archive by a read";
                    if let Err(err) = asker.request(&collection, action, reason).await {
                        tracing::warn!(%err, %collection, ?range, "could not ask for a restored shard to be cold");
                    }
                });
            },
        );
        host.set_archive(hektor_indexers::host::ArchiveHook {
            store: Arc::new(archive),
            on_restored: Some(on_restored),
        });
        tracing::info!(%url, "archive tier on");
    }
    let events = EventSink::spawn(Arc::clone(&log), args.node_id.clone());
    let mut writer = Writer::new(Arc::clone(&catalog), clock, args.region.clone());
    if !args.mirror_regions.is_empty() {
        writer = writer.with_seen(Arc::new(MergedSoFar(Arc::clone(&host))));
    }
    let writer = Arc::new(writer);
    if !args.mirror_regions.is_empty() {
        tokio::spawn(close_time(
            Arc::clone(&host),
            Arc::clone(&writer),
            Duration::from_millis(args.tick_ms),
        ));
    }
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
    let searcher = Searcher::new(
        Arc::clone(&host),
        events.clone(),
        args.search_threads,
        control.routing(),
    )?
    .with_internal_auth(gate.node_authorization())
    .with_max_clock_offset(Duration::from_millis(args.max_clock_offset_ms))
    .with_peers(peers.clone());
    let searcher = Arc::new(match internal_client {
        Some(client) => searcher.with_tls_client(client),
        None => searcher,
    });
    let metrics = Arc::new(Metrics::new());
    metrics
        .registry
        .register(Box::new(CatalogMetrics::new(Arc::clone(&catalog))?))
        .context("registering the catalog's metrics")?;
    if let Some(peers) = &peers {
        for collector in peers.collectors() {
            metrics
                .registry
                .register(collector)
                .context("registering the region peers' metrics")?;
        }
        peers.spawn();
    }
    let planner = (!args.no_planner && args.has_role("planner")).then(|| {
        hektor_dataflow::planner::Planner::start(
            Arc::clone(&catalog),
            planner_settings,
            Some(Arc::new(ControlFeed(Arc::clone(&control)))),
        )
    });
    let changes = Arc::clone(&control);
    let cluster: Option<hektor_query::http::ClusterView> = Some(Arc::new(move || {
        let mut view = planner
            .as_ref()
            .map(|p| p.view())
            .unwrap_or_else(|| serde_json::json!({}));
        view["map_changes"] = serde_json::Value::Array(changes.decisions());
        view
    }));
    let dropped_events = events.clone();
    let replication = (!args.mirror_regions.is_empty()).then(|| {
        Arc::new(RegionReplication {
            host: Arc::clone(&host),
            others: args.mirror_regions.clone(),
            peers: peers.clone(),
        }) as Arc<dyn Replication>
    });
    let grpc = Arc::new(
        hektor_grpc::Api::new(
            Arc::clone(&searcher),
            Arc::clone(&writer),
            events.clone(),
            gate.clone(),
            args.max_concurrent_requests,
        )
        .with_replication(replication.clone()),
    );
    let router = ingest_router(IngestState {
        writer: Arc::clone(&writer),
        events,
        replication,
    })
    .merge(query_router(QueryState {
        searcher,
        metrics: Arc::clone(&metrics),
        events_dropped: Arc::new(move || dropped_events.dropped()),
        cluster,
    }));
    let router = router
        .merge(control_routes(Arc::clone(&control)))
        .merge(
            hektor_transfer::routes(
                Arc::clone(&host),
                args.node_id.clone(),
                args.log.data_dir.join("snapshots"),
            )
            .await
            .context("preparing the snapshot route")?,
        )
        .merge(crate::console::router());
    // Every route above is registered through utoipa-axum's OpenApiRouter: the document
    // at GET /openapi.json lists exactly them; unknown paths and methods get JSON 404/405.
    let router = crate::openapi::router(router).context("building the OpenAPI document")?;
    // From the outside in: metrics see every answer; the gate refuses before anything
    // else runs or a body is read; then at most --max-concurrent-requests run (one more
    // is a 429), each for at most --request-timeout-ms.
    let limits = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            args.max_concurrent_requests.max(1),
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(args.request_timeout_ms.max(1)),
        ));
    // A node without the router role serves the views and the internal routes only: its
    // cores are for its shards, and clients are sent to the routers.
    let router = if args.has_role("router") {
        router
    } else {
        let roles: Arc<str> = args.roles.join(",").into();
        router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let roles = Arc::clone(&roles);
                async move {
                    if hektor_access::route::is_client_api(request.method(), request.uri().path()) {
                        return not_a_router(&roles);
                    }
                    next.run(request).await
                }
            },
        ))
    };
    let router = router
        .layer(limits)
        .layer(tower_http::validate_request::ValidateRequestHeaderLayer::custom(gate.clone()));
    let router = instrument(router, metrics);
    Ok(Node {
        writer,
        host,
        control,
        router,
        gate,
        grpc,
    })
}

/// `POST /cluster/collections/{c}/plan`: ask the controller for a split, a merge, a tier
/// change, or (for a collection placed by load) a move (a [`PlanAction`] as JSON). The shard must be in the current map; the change happens
/// when the controller carries it out (watch `GET /cluster`).
fn control_routes(control: Arc<Control>) -> utoipa_axum::router::OpenApiRouter {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::Json;
    use hektor_query::schema::ErrorBody;
    use serde_json::json;

    /// The answer of an accepted plan request (202).
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[allow(dead_code)] // The handler writes the same fields with `json!`.
    struct PlanRequested {
        /// The change asked for.
        requested: PlanAction,
        /// The epoch of the map it was checked against.
        epoch: u64,
    }

    /// Ask the controller for a split, a merge, a tier change or a move of one shard of
    /// the current map; the change happens when the controller carries it out.
    #[utoipa::path(
        post,
        path = "/cluster/collections/{collection}/plan",
        tag = "cluster",
        params(("collection" = String, Path, description = "The collection's name")),
        request_body = PlanAction,
        responses(
            (status = 202, description = "Asked for; watch GET /cluster", body = PlanRequested),
            (status = 400, description = "The body is not a plan action", body = ErrorBody),
            (status = 404, description = "No shard map for the collection, or no such shard in it", body = ErrorBody),
            (status = 422, description = "The action does not fit the map or the collection's placement", body = ErrorBody),
            (status = 503, description = "The request could not be written to the plan topic", body = ErrorBody),
        ),
    )]
    async fn plan(
        State(control): State<Arc<Control>>,
        Path(collection): Path<String>,
        body: Result<Json<PlanAction>, axum::extract::rejection::JsonRejection>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let bad = |code: StatusCode, msg: String| (code, Json(json!({ "error": msg })));
        let Json(action) = match body {
            Ok(b) => b,
            Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid plan action: {e}")),
        };
        let Some(map) = control.plans().get(&collection).and_then(|s| s.map) else {
            return bad(
                StatusCode::NOT_FOUND,
                format!("collection `{collection}` has no shard map"),
            );
        };
        let has = |range: &RingRange| map.shards().iter().any(|s| s.range == *range);
        let missing = |range: &RingRange| {
            bad(
                StatusCode::NOT_FOUND,
                format!(
                    "collection `{collection}` has no shard [{:#x}, {:?}) at epoch {}",
                    range.start,
                    range.end,
                    map.epoch()
                ),
            )
        };
        let unfit = |msg: &str| bad(StatusCode::UNPROCESSABLE_ENTITY, msg.to_owned());
        match &action {
            PlanAction::Split { shard, at } => {
                if !has(shard) {
                    return missing(shard);
                }
                if !(shard.contains(*at) && *at > shard.start) {
                    return unfit("the split point must lie strictly inside the shard");
                }
            }
            PlanAction::SetTier { shard, .. } => {
                if !has(shard) {
                    return missing(shard);
                }
            }
            PlanAction::Merge { left, right } => {
                for r in [left, right] {
                    if !has(r) {
                        return missing(r);
                    }
                }
                let last = right.end.map_or(u64::MAX, |e| e.saturating_sub(1));
                let partitions = control
                    .catalog()
                    .get(&collection)
                    .map_or(1, |spec| spec.partitions.max(1));
                if left.end != Some(right.start)
                    || hektor_topics::ring::partition_of(left.start, partitions)
                        != hektor_topics::ring::partition_of(last, partitions)
                {
                    return unfit("only adjacent shards of one partition can merge");
                }
            }
            PlanAction::Move { shard, from, to } => {
                let placed_by_load = control.catalog().get(&collection).is_some_and(|spec| {
                    spec.placement == hektor_topics::record::PlacementSpec::Load
                });
                if !placed_by_load {
                    return unfit(
                        "moves are carried out only for collections created with \"placement\": {\"strategy\": \"load\"}; under the others placement decides where shards live",
                    );
                }
                let Some(s) = map.shards().iter().find(|s| s.range == *shard) else {
                    return missing(shard);
                };
                if !s.replicas.contains(from) || s.replicas.contains(to) {
                    return unfit("`from` must hold the shard and `to` must not");
                }
            }
        }
        match control
            .request(&collection, action.clone(), "asked for by an operator")
            .await
        {
            Ok(()) => (
                StatusCode::ACCEPTED,
                Json(json!({ "requested": action, "epoch": map.epoch() })),
            ),
            Err(e) => bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }

    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(plan))
        .with_state(control)
}

/// The kinetic planner's settings from the command line; the tiering flags are checked
/// here (before the node opens anything).
fn planner_config(args: &ServeArgs) -> anyhow::Result<hektor_dataflow::planner::PlannerConfig> {
    let mut config = hektor_dataflow::planner::PlannerConfig {
        node: args.node_id.clone(),
        capacity: args.node_capacity,
        interval: Duration::from_millis(args.planner_interval_ms.max(50)),
        ..Default::default()
    };
    config.decide.split_hotness = args.split_hotness;
    config.decide.min_split_vectors = args.split_min_vectors;
    config.decide.min_interval_s = args.planner_min_interval_s;
    config.decide.lookahead_s = args.planner_lookahead_s;
    config.decide.balance_ratio = args.balance_ratio;
    config.decide.balance_min_load = args.balance_min_load;
    // Moves and splits ship files (snapshots) unless turned off: no rebuild to pay for.
    config.decide.indexes_ship = !args.no_snapshot_moves;
    if let Some(cores) = args.cores_per_capacity.filter(|c| *c > 0.0) {
        config.cores_per_capacity = cores;
    }
    config.params.hot_hotness = args.split_hotness;
    config.tiering = hektor_dataflow::tiering::TieringConfig {
        enabled: !args.no_tiering,
        promote_qps: args.tier_promote_qps,
        demote_qps: args.tier_demote_qps,
        cold_qps: args.tier_cold_qps,
        promote_dwell_ms: args.tier_dwell_ms,
        demote_dwell_ms: args.tier_demote_dwell_ms,
        cold_dwell_ms: args.tier_cold_dwell_ms,
        archive_qps: args.tier_archive_qps,
        archive_dwell_ms: args.tier_archive_dwell_ms,
        hot_budget_bytes: args
            .hot_budget_mb
            .checked_mul(1 << 20)
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--hot-budget-mb must be at least 1 and fit in 64 bits of bytes, not {}",
                    args.hot_budget_mb
                )
            })?,
        moves_per_min: args.tier_moves_per_min,
        moves_per_round: args.tier_moves_per_min.min(2),
        ..Default::default()
    };
    anyhow::ensure!(
        args.tier_archive_dwell_ms.is_none() || args.archive_url.is_some(),
        "--tier-archive-dwell-ms archives shards to an object store: give it one with --archive-url"
    );
    config.tiering.validate().context(
        "checking --tier-promote-qps, --tier-demote-qps, --tier-cold-qps, --tier-archive-qps and --tier-moves-per-min",
    )?;
    Ok(config)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.grpc_listen.is_none() || args.has_role("router"),
        "--grpc-listen serves the client API, which needs the router role (roles: {})",
        args.roles.join(",")
    );
    std::fs::create_dir_all(&args.log.data_dir)
        .with_context(|| format!("creating {}", args.log.data_dir.display()))?;
    let node = build_node(&args).await?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let backend = match &args.log.brokers {
        Some(b) => format!("Kafka at {b}"),
        None => format!("the embedded log in {}", args.log.data_dir.display()),
    };
    println!(
        "hektor listening on {}://{} ({backend})",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    match (node.gate.has_keys(), args.cluster_secret_file.is_some()) {
        (false, _) => eprintln!(
            "hektor: no --api-keys: every route, writes and drops included, is open to anyone who reaches {}",
            args.listen
        ),
        (true, false) => eprintln!(
            "hektor: API keys on; no --cluster-secret-file, so this node made up its own secret and other nodes cannot call it"
        ),
        (true, true) => {}
    }
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
    let grpc = match args.grpc_listen {
        Some(addr) => Some(start_grpc(&args, &node, addr).await?),
        None => None,
    };
    let control = Arc::clone(&node.control);
    let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    let limits = crate::http_server::ConnectionLimits {
        max_connections: args.max_connections,
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        shutdown_grace: Duration::from_secs(10),
        tls,
    };
    let host = Arc::clone(&node.host);
    crate::http_server::serve(listener, node.router, limits, async move {
        shutdown_signal().await;
        drain(&control, drain_timeout).await;
    })
    .await?;
    if let Some((stop, task)) = grpc {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    // The next start loads the hot graphs instead of rebuilding them.
    host.checkpoint_all().await;
    Ok(())
}

/// Bind `--grpc-listen` and serve the gRPC API there until the returned sender fires
/// (after the HTTP listener stops, so a draining node keeps both doors open).
async fn start_grpc(
    args: &ServeArgs,
    node: &Node,
    addr: SocketAddr,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --grpc-listen {addr}"))?;
    println!("hektor gRPC listening on {}", listener.local_addr()?);
    let config = hektor_grpc::GrpcConfig {
        max_concurrent_requests: args.max_concurrent_requests,
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = Arc::clone(&node.grpc);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(err) = hektor_grpc::serve(listener, api, config, shutdown).await {
            eprintln!("hektor: the gRPC listener stopped: {err}");
        }
    });
    Ok((stop, task))
}

/// The answer of a node without the router role to a client request: 421 Misdirected
/// Request, saying where to go.
fn not_a_router(roles: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::MISDIRECTED_REQUEST,
        axum::Json(serde_json::json!({
            "error": format!(
                "this node serves no client API (its roles: {roles}); send searches, \
                 writes and collection changes to a node with the router role"
            )
        })),
    )
        .into_response()
}

/// ctrl-c or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Leave the cluster gracefully: announce draining, and keep serving until the shard
/// maps list this node nowhere (its shards have been rebuilt elsewhere), or the timeout.
/// Alone (no other data node alive), there is nowhere to drain to: stop at once.
async fn drain(control: &Arc<Control>, timeout: Duration) {
    let others = control
        .membership()
        .placeable()
        .iter()
        .any(|n| n.id != control.me());
    if !others || control.holds_nothing() {
        return;
    }
    eprintln!("hektor: draining: moving this node's shards to other nodes before stopping");
    control.leave();
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if control.holds_nothing() {
            // Routers on the previous epoch may still ask: serve a moment longer.
            tokio::time::sleep(Duration::from_millis(500)).await;
            eprintln!("hektor: drained");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("hektor: drain timed out; stopping anyway");
}

/// What this node's shards have merged of the other regions, per partition: the `seen`
/// vector a write accepted here carries (`None` where this node holds no shard of the
/// partition: it cannot tell, and the write's conflicts are not counted).
struct MergedSoFar(Arc<ShardHost>);

impl hektor_ingest::writer::SeenSource for MergedSoFar {
    fn seen(&self, collection: &str, partition: u32) -> Option<hektor_merge::VersionVector> {
        self.0.merged(collection, partition)
    }
}

/// Every `every`, append a tick (closed timestamp) to each partition of each collection
/// this node holds a shard of: other regions' floors of those partitions then advance with
/// time, which is what their strong and bounded-staleness reads wait on, and the ticks'
/// `seen` vectors tell them what this region has merged of theirs (their write levels).
async fn close_time(host: Arc<ShardHost>, writer: Arc<Writer>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        interval.tick().await;
        for collection in host.collections() {
            let Some(spec) = host.catalog().get(&collection.spec.name) else {
                continue;
            };
            let mut partitions: Vec<u32> = collection
                .shards
                .iter()
                .filter(|s| !s.retired())
                .map(|s| s.partition)
                .collect();
            partitions.sort_unstable();
            partitions.dedup();
            if partitions.is_empty() {
                continue;
            }
            match writer.tick(&spec, &partitions).await {
                Ok(_) if failing => {
                    tracing::info!("closing time on the partitions works again");
                    failing = false;
                }
                Ok(_) => {}
                Err(err) if !failing => {
                    tracing::warn!(%err, collection = %spec.name, "could not close time on the partitions (strong and bounded reads in other regions wait meanwhile); retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// The catalog's counts at each scrape: `hektor_catalog_adopted_total{region}` (entries of
/// that region's catalog this node adopted), `hektor_catalog_refused_total{region}`
/// (entries refused, of this region's catalog or another's), and
/// `hektor_catalog_conflicts{collection, region}`, 1 for each name that region created
/// with other settings than this region's live collection (each keeps its own).
struct CatalogMetrics {
    catalog: Arc<Catalog>,
    adopted: prometheus::IntCounterVec,
    refused: prometheus::IntCounterVec,
    conflicts: prometheus::IntGaugeVec,
    /// One scrape at a time (each resets and refills the vectors).
    scrape: parking_lot::Mutex<()>,
}

impl CatalogMetrics {
    fn new(catalog: Arc<Catalog>) -> anyhow::Result<CatalogMetrics> {
        use prometheus::Opts;
        Ok(CatalogMetrics {
            catalog,
            adopted: prometheus::IntCounterVec::new(
                Opts::new(
                    "catalog_adopted_total",
                    "catalog entries of another region this node adopted into its region's catalog",
                ),
                &["region"],
            )?,
            refused: prometheus::IntCounterVec::new(
                Opts::new(
                    "catalog_refused_total",
                    "catalog entries read and refused (undecodable or invalid), by the region whose catalog held them",
                ),
                &["region"],
            )?,
            conflicts: prometheus::IntGaugeVec::new(
                Opts::new(
                    "catalog_conflicts",
                    "1 per collection another region created with other settings than this region's (each region keeps its own until it is dropped)",
                ),
                &["collection", "region"],
            )?,
            scrape: parking_lot::Mutex::new(()),
        })
    }
}

impl prometheus::core::Collector for CatalogMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.adopted.desc();
        descs.extend(self.refused.desc());
        descs.extend(self.conflicts.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _one = self.scrape.lock();
        self.adopted.reset();
        self.refused.reset();
        self.conflicts.reset();
        self.refused
            .with_label_values(&[self.catalog.region()])
            .inc_by(self.catalog.refused_entries());
        for view in self.catalog.regions_view() {
            self.adopted
                .with_label_values(&[view.region.as_str()])
                .inc_by(view.adopted);
            self.refused
                .with_label_values(&[view.region.as_str()])
                .inc_by(view.refused);
        }
        for conflict in self.catalog.conflicts() {
            self.conflicts
                .with_label_values(&[conflict.collection.as_str(), conflict.region.as_str()])
                .set(1);
        }
        let mut families = self.adopted.collect();
        families.extend(self.refused.collect());
        families.extend(self.conflicts.collect());
        families
    }
}

/// What the other regions have merged of this region's writes: as this node's shards
/// learn it from the `seen` vectors on the records those regions write (their writes and
/// their ticks), and, with `--region-peers`, as those regions' nodes stream it (their
/// floors of this region's partitions, sent the moment they merge: one WAN crossing back
/// instead of a mirrored record's). Either confirms a region.
struct RegionReplication {
    host: Arc<ShardHost>,
    others: Vec<String>,
    peers: Option<Arc<hektor_query::peers::Peers>>,
}

impl Replication for RegionReplication {
    fn others(&self) -> Vec<String> {
        self.others.clone()
    }

    fn wait<'a>(
        &'a self,
        collection: &'a str,
        token: &'a std::collections::BTreeMap<u32, u64>,
        need: usize,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Replicated, (Replicated, String)>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let me = self.host.config().region.clone();
            let only_here = Replicated {
                regions: vec![me.clone()],
                missing: self.others.clone(),
            };
            // Per partition written: the shard here, and the floor its write reached here
            // (the effective clock of the newest record applied once the write was: every
            // region applies the partition in the same order, so a region whose floor of
            // it is at least this has the write).
            let mut written = Vec::with_capacity(token.len());
            for (&partition, &offset) in token {
                let Some(hosted) = self
                    .host
                    .collection(collection)
                    .and_then(|c| c.shards.iter().find(|s| s.partition == partition).cloned())
                else {
                    return Err((
                        only_here,
                        format!("this node holds no shard of partition {partition}, so it cannot tell which regions have merged it"),
                    ));
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !hosted.wait_applied(offset, left).await {
                    return Err((
                        only_here,
                        format!("this node's shard of partition {partition} has not applied the write yet"),
                    ));
                }
                let shard = Arc::clone(&hosted.shard);
                let floor = tokio::task::spawn_blocking(move || shard.hlc_floor())
                    .await
                    .map_err(|e| {
                        (
                            only_here.clone(),
                            format!("reading the partition's floor panicked: {e}"),
                        )
                    })?
                    .map_err(|e| {
                        (
                            only_here.clone(),
                            format!("reading the partition's floor failed: {e}"),
                        )
                    })?;
                written.push((hosted, floor));
            }
            let mut changes: Vec<_> = written.iter().map(|(h, _)| h.merges()).collect();
            // With peers: their floors streams (one crossing after they merge).
            let mut streamed = self.peers.as_ref().map(|p| p.floors_changed());
            let by_peer = |region: &str, partition: u32, floor: Hlc| {
                self.peers
                    .as_ref()
                    .is_some_and(|p| p.floor(region, collection, partition) >= floor.0)
            };
            loop {
                let (have, missing): (Vec<String>, Vec<String>) =
                    self.others.iter().cloned().partition(|region| {
                        written.iter().all(|(h, floor)| {
                            h.merged_by(region) >= *floor || by_peer(region, h.partition, *floor)
                        })
                    });
                let replicated = Replicated {
                    regions: std::iter::once(me.clone())
                        .chain(have.iter().cloned())
                        .collect(),
                    missing,
                };
                if have.len() >= need {
                    if let Some(peers) = &self.peers {
                        for region in &have {
                            let via_seen = written
                                .iter()
                                .all(|(h, floor)| h.merged_by(region) >= *floor);
                            peers.count_ack(region, !via_seen);
                        }
                    }
                    return Ok(replicated);
                }
                let any_change = futures::future::select_all(
                    changes.iter_mut().map(|rx| Box::pin(rx.changed())),
                );
                let woke = tokio::time::timeout_at(deadline, async {
                    match streamed.as_mut() {
                        Some(streamed) => tokio::select! {
                            changed = any_change => changed.0.is_ok(),
                            changed = streamed.changed() => changed.is_ok(),
                        },
                        None => any_change.await.0.is_ok(),
                    }
                })
                .await;
                if !matches!(woke, Ok(true)) {
                    let why = format!("{} confirmed, {need} needed", have.len());
                    return Err((replicated, why));
                }
            }
        })
    }
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
