//! `hektor-bench regions` (issue #17): hektor in two (or more) regions on real parts over
//! an injected WAN, measured under load. It owns the run and its measurements, nothing of
//! the setup: `scripts/regions.sh` starts the regions (a single-broker KRaft cluster each,
//! one MirrorMaker 2 per region, Toxiproxy on every cross-region path), and this bench
//! starts one `hektor serve` per region with `--mirror-regions`, listening where the
//! script says the region's node listens (`HEKTOR_REGION_<R>_HTTP`) and with
//! `--region-peers` (`HEKTOR_REGION_<R>_PEERS`: every other region's node through proxy
//! `<R>_to_<other>_http`), so the nodes' HTTP calls to each other cross the same WAN as
//! MirrorMaker's records. It injects the round trip (`--rtt-ms`, half each way, on every
//! proxy, Kafka and HTTP), then:
//!
//! 1. **control** (`mode: one-region`): the same load on nodes *without* `--mirror-regions`
//!    or `--region-peers` (one-region deployments side by side on free ports, MM2 still
//!    copying their bytes): what a write costs without the multi-region machinery, and
//!    how fast a region's own shard applies it (`local_lag`);
//! 2. **curve**: lag against write rate, async writes in every region at each `--rates`;
//! 3. per **mode** (`async`, `quorum`, `sync`): a steady open-loop write load in every
//!    region plus searches for `--duration-s`, then every proxy (Kafka and HTTP) cut
//!    (`--partition-s`) with the load going on, then the heal; the load stops at the
//!    heal. After it: how long until every region has merged everything (`converged_s`),
//!    which acknowledged writes are missing (`lost`) and which ids differ between regions
//!    (`divergent_ids`).
//!
//! One JSON object per line with `--json`. The setup is stopped at the end (also on error
//! or ctrl-c) unless it was running before or `--keep` is given.
//!
//! **How lag is measured.** Lag is from a write's acknowledgement (the client got the 200)
//! until a shard of the other region has merged it. The bench polls every node's `GET
//! /collections/{c}` every `--poll-ms` (per shard: `next_offset` of its own partition,
//! `mirrored.<region>.next_offset` of each mirror) and keeps when each position was first
//! seen. Besides, it runs Kafka readers of its own in every region, on each region's
//! vectors topic and on each mirrored copy, which note when each record arrived: they map
//! the write's offset (from its token) to the offset of its first copy in the mirrored
//! topic (by key and value: MirrorMaker redelivers at new offsets), and split the lag into
//! stages: `origin_seen` (ack → the record read back in its own region), `wan` (→ its copy
//! read in the other region: MirrorMaker and the WAN), `apply` (→ the other region's
//! shard shows it merged, within one poll). `local_lag` is the same from the ack to the
//! writing region's own shard. Stages count from the acknowledgement, so with `quorum` and
//! `sync` (answered after the other region merged the write) `origin_seen` is negative:
//! how long before its answer the record was read back in its own region.
//!
//! **Ids.** Each region writes its own ids (`<region>-<k>`, `k < --ids-per-region`, in
//! turn, each write's payload `{"r": region, "s": seq}`), and a share
//! (`--shared-fraction`) of writes go to ids every region writes (`s-<k>`): those are the
//! conflicts. So the final check reads a bounded set: every id written, in every region.
//! `lost` = an own id whose newest acknowledged write (by `s`) is missing or older in a
//! region, or an acknowledged shared id missing in a region; `divergent_ids` = ids whose
//! vector, payload or winning write (hlc, origin) differ between regions (how
//! `tests/regions_kafka.rs` compares regions: `GET /collections/{c}/vectors/{id}`).
//!
//! **Convergence.** After the heal, `converged_s` is the time until every region's merged
//! floor of every other region's partitions (`mirrored.<region>.floor`, the effective hlc
//! of its newest merged record) has passed the time the load stopped: every record the
//! other region wrote before then is merged. Floors move with the other region's ticks
//! (`--tick-ms`), so this resolves to about one tick. `copied_s` is MirrorMaker's part of
//! it: until the bench's readers saw, in every other region, a copy of the last record
//! each region wrote to each partition before the stop. The contents are compared then;
//! ids still differing are read again until they agree (or `--converge-timeout-s`).
//!
//! With `quorum` and `sync` a write is answered once the other region has merged it (its
//! node says so over HTTP, through the `_http` proxy: one WAN crossing back), so its lag
//! from the answer is 0 by construction; its write latency is the number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hektor_log::kafka::{KafkaConfig, KafkaLog};
use hektor_log::Log;
use hektor_topics::topic::{topic_name, TopicKind};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::open_loop::{self, OpenLoopReport, Percentiles, Schedule};
use crate::toxiproxy::{Cut, Toxiproxy};

/// Arguments of `hektor-bench regions`.
#[derive(Debug, clap::Args)]
pub struct RegionsBenchArgs {
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// A short run (about 3 minutes with the setup up): 10 s per mode, a 10 s partition,
    /// a two-point curve (100 and 1000 writes/s per region, 8 s each), modes async and sync.
    #[arg(long)]
    pub quick: bool,
    /// Writes (upserts) per second per region in the control and the mode runs (default
    /// 1000; 500 with --quick).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Upserts per write request (the request rate is --rate / --batch).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Seconds of steady load per mode, and of the control (default 30; 10 with --quick).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Seconds every cross-region proxy (Kafka and HTTP) is cut in each mode run, under
    /// load (default 30; 10 with --quick; 0: no partition).
    #[arg(long)]
    pub partition_s: Option<f64>,
    /// Rates (writes/s per region) of the lag-vs-rate curve, comma-separated (default
    /// 100,500,1000,2000; 100,1000 with --quick; `none`: no curve).
    #[arg(long)]
    pub rates: Option<String>,
    /// Seconds per point of the curve (default 15; 8 with --quick).
    #[arg(long)]
    pub curve_s: Option<f64>,
    /// Write levels to run, comma-separated: async, quorum, sync (default all three;
    /// async,sync with --quick; `none`: only the control and the curve).
    #[arg(long, value_delimiter = ',')]
    pub modes: Option<Vec<String>>,
    /// Skip the one-region control.
    #[arg(long)]
    pub no_control: bool,
    /// The round trip injected between every two regions (ms), half each way on every
    /// proxy, Kafka and HTTP (0: none).
    #[arg(long, default_value_t = 70)]
    pub rtt_ms: u64,
    /// Vector dimension (384: 1.5 KB records).
    #[arg(long, default_value_t = 384)]
    pub dimension: usize,
    /// Partitions of the collection.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Index engine of the nodes (exact: no index builds competing for the CPU).
    #[arg(long, default_value = "exact")]
    pub engine: String,
    /// Searches per second per region (eventual consistency) beside the writes of the
    /// control and the mode runs (0: none).
    #[arg(long, default_value_t = 20.0)]
    pub search_rate: f64,
    /// Ids each region writes in turn.
    #[arg(long, default_value_t = 4000)]
    pub ids_per_region: u64,
    /// Ids every region writes (the conflicts).
    #[arg(long, default_value_t = 200)]
    pub shared_ids: u64,
    /// The share of writes that go to the shared ids.
    #[arg(long, default_value_t = 0.05)]
    pub shared_fraction: f64,
    /// The nodes' --tick-ms (closed timestamps: what sync and quorum writes learn from
    /// while a region writes nothing, and what convergence is read from).
    #[arg(long, default_value_t = 200)]
    pub tick_ms: u64,
    /// How often every node's applied positions are polled (ms).
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// The longest wait for convergence after a heal (s).
    #[arg(long, default_value_t = 120)]
    pub converge_timeout_s: u64,
    /// `timeout_ms` of quorum and sync writes.
    #[arg(long, default_value_t = 5000)]
    pub replication_timeout_ms: u64,
    /// How the proxies are cut: refuse (disabled: connections refused), blackhole (bytes
    /// dropped, connections kept) or reset.
    #[arg(long, default_value = "refuse")]
    pub cut: String,
    /// Leave the setup running at the end, even when this bench started it.
    #[arg(long)]
    pub keep: bool,
    /// The script that runs the regions.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/regions.sh"))]
    pub regions_script: PathBuf,
    /// One more flag for every node, e.g. `--node-flag=--max-clock-offset-ms=100`
    /// (repeatable).
    #[arg(long = "node-flag", value_name = "FLAG", allow_hyphen_values = true)]
    pub node_flags: Vec<String>,
}

/// The run's settings, defaults resolved.
#[derive(Debug, Clone)]
struct Plan {
    json: bool,
    rate: f64,
    batch: usize,
    duration: Duration,
    partition: Duration,
    rates: Vec<f64>,
    curve: Duration,
    modes: Vec<Mode>,
    control: bool,
    rtt_ms: u64,
    dimension: usize,
    partitions: u32,
    engine: String,
    search_rate: f64,
    ids_per_region: u64,
    shared_ids: u64,
    shared_fraction: f64,
    tick_ms: u64,
    poll: Duration,
    converge_timeout: Duration,
    replication_timeout_ms: u64,
    cut: Cut,
    node_flags: Vec<String>,
}

impl Plan {
    fn of(args: &RegionsBenchArgs) -> anyhow::Result<Plan> {
        let q = args.quick;
        let secs = |v: Option<f64>, full: f64, quick: f64| {
            Duration::from_secs_f64(v.unwrap_or(if q { quick } else { full }).max(0.0))
        };
        let modes = match &args.modes {
            Some(m) => m
                .iter()
                .filter(|m| !m.trim().is_empty() && m.trim() != "none")
                .map(|m| Mode::parse(m.trim()))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None if q => vec![Mode::Async, Mode::Sync],
            None => vec![Mode::Async, Mode::Quorum, Mode::Sync],
        };
        let rates: Vec<f64> = match args.rates.as_deref().map(str::trim) {
            Some("" | "none") => Vec::new(),
            Some(r) => r
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f64>()
                        .with_context(|| format!("--rates: `{x}` is not a number"))
                })
                .collect::<anyhow::Result<Vec<f64>>>()?,
            None if q => vec![100.0, 1000.0],
            None => vec![100.0, 500.0, 1000.0, 2000.0],
        };
        let rate = args.rate.unwrap_or(if q { 500.0 } else { 1000.0 });
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0 && rates.iter().all(|r| r.is_finite() && *r > 0.0),
            "--rate and --rates must be positive numbers"
        );
        anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
        anyhow::ensure!(
            args.batch as u64 <= args.ids_per_region,
            "--batch must not exceed --ids-per-region (a batch names each id once)"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&args.shared_fraction),
            "--shared-fraction must be between 0 and 1"
        );
        anyhow::ensure!(
            args.ids_per_region >= 1 && args.shared_ids >= 1,
            "--ids-per-region and --shared-ids must be at least 1"
        );
        anyhow::ensure!(args.dimension >= 1, "--dimension must be at least 1");
        anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
        anyhow::ensure!(args.poll_ms >= 1, "--poll-ms must be at least 1");
        anyhow::ensure!(
            (1..=120_000).contains(&args.replication_timeout_ms),
            "--replication-timeout-ms must be between 1 and 120000"
        );
        let cut = match args.cut.as_str() {
            "refuse" => Cut::Refuse,
            "blackhole" => Cut::Blackhole,
            "reset" => Cut::Reset,
            other => anyhow::bail!("unknown --cut `{other}`: use refuse, blackhole or reset"),
        };
        Ok(Plan {
            json: args.json,
            rate,
            batch: args.batch,
            duration: secs(args.duration_s, 30.0, 10.0),
            partition: secs(args.partition_s, 30.0, 10.0),
            rates,
            curve: secs(args.curve_s, 15.0, 8.0),
            modes,
            control: !args.no_control,
            rtt_ms: args.rtt_ms,
            dimension: args.dimension,
            partitions: args.partitions,
            engine: args.engine.clone(),
            search_rate: args.search_rate.max(0.0),
            ids_per_region: args.ids_per_region,
            shared_ids: args.shared_ids,
            shared_fraction: args.shared_fraction,
            tick_ms: args.tick_ms,
            poll: Duration::from_millis(args.poll_ms),
            converge_timeout: Duration::from_secs(args.converge_timeout_s),
            replication_timeout_ms: args.replication_timeout_ms,
            cut,
            node_flags: args.node_flags.clone(),
        })
    }
}

/// A write level (`?replication=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Async,
    Quorum,
    Sync,
}

impl Mode {
    fn parse(s: &str) -> anyhow::Result<Mode> {
        match s {
            "async" => Ok(Mode::Async),
            "quorum" => Ok(Mode::Quorum),
            "sync" => Ok(Mode::Sync),
            other => anyhow::bail!("unknown mode `{other}`: use async, quorum or sync"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Quorum => "quorum",
            Mode::Sync => "sync",
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The 1-minute load average (context for numbers measured on a shared machine).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// --- the setup (scripts/regions.sh) ------------------------------------------------------

/// Run `bash script ARGS`, killed past `limit`: (success, stdout). Its stderr (progress)
/// goes to ours.
async fn regions_sh(
    script: &Path,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<(bool, String)> {
    let child = tokio::process::Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, child)
        .await
        .with_context(|| {
            format!(
                "`{} {}` ran past {limit:?}",
                script.display(),
                args.join(" ")
            )
        })?
        .with_context(|| format!("running {}", script.display()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// The running regions, as `scripts/regions.sh env` exports them. Dropping it removes
/// every toxic and enables every proxy, and stops the setup if this bench started it
/// (unless `--keep`).
struct Setup {
    script: PathBuf,
    env: HashMap<String, String>,
    regions: Vec<String>,
    started_here: bool,
    keep: bool,
}

impl Setup {
    async fn start(script: &Path, keep: bool) -> anyhow::Result<Setup> {
        anyhow::ensure!(
            script.is_file(),
            "{} is missing (--regions-script)",
            script.display()
        );
        let (was_up, _) = regions_sh(script, &["status"], Duration::from_secs(30)).await?;
        let mut setup = Setup {
            script: script.to_path_buf(),
            env: HashMap::new(),
            regions: Vec::new(),
            started_here: !was_up,
            keep,
        };
        if was_up {
            // A toxic or a cut left by an earlier run would stall start's checks.
            regions_sh(script, &["reset"], Duration::from_secs(30)).await?;
        }
        let (ok, out) = regions_sh(script, &["start"], Duration::from_secs(600)).await?;
        anyhow::ensure!(
            ok,
            "`bash {} start` failed (it needs Java 17+, Maven and Go; see its messages above)",
            script.display()
        );
        setup.env = out
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
            .collect();
        setup.regions = setup
            .env
            .get("HEKTOR_REGIONS")
            .context("regions.sh env printed no HEKTOR_REGIONS")?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        anyhow::ensure!(
            setup.regions.len() >= 2,
            "two regions at least (HEKTOR_REGIONS), got {:?}",
            setup.regions
        );
        Ok(setup)
    }

    fn var(&self, name: &str) -> anyhow::Result<String> {
        self.env
            .get(name)
            .cloned()
            .with_context(|| format!("regions.sh env printed no {name}"))
    }

    fn brokers(&self, region: &str) -> anyhow::Result<String> {
        self.var(&format!("HEKTOR_REGION_{}_BROKERS", region.to_uppercase()))
    }

    /// The proxy that carries what region `to` reads of region `from`.
    fn proxy(&self, from: &str, to: &str) -> anyhow::Result<String> {
        self.var(&format!(
            "HEKTOR_PROXY_{}_TO_{}",
            from.to_uppercase(),
            to.to_uppercase()
        ))
    }

    /// The proxy that carries region `from`'s nodes' HTTP calls to region `to`'s node.
    fn http_proxy(&self, from: &str, to: &str) -> anyhow::Result<String> {
        self.var(&format!(
            "HEKTOR_PROXY_{}_TO_{}_HTTP",
            from.to_uppercase(),
            to.to_uppercase()
        ))
    }

    /// Where `region`'s node listens (`127.0.0.1:PORT`): the other regions' `_http`
    /// proxies forward to it.
    fn http_listen(&self, region: &str) -> anyhow::Result<String> {
        self.var(&format!("HEKTOR_REGION_{}_HTTP", region.to_uppercase()))
    }

    /// `region`'s node's `--region-peers`: every other region's node through a proxy.
    fn peers(&self, region: &str) -> anyhow::Result<String> {
        self.var(&format!("HEKTOR_REGION_{}_PEERS", region.to_uppercase()))
    }

    /// Every cross-region proxy: Kafka's and the nodes' HTTP, so both see one WAN.
    fn proxies(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for a in &self.regions {
            for b in &self.regions {
                if a != b {
                    out.push(self.proxy(a, b)?);
                    out.push(self.http_proxy(a, b)?);
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Blocking, at the very end: no toxic or cut left behind, whatever happened.
        let run = |arg: &str| {
            Command::new("bash")
                .arg(&self.script)
                .arg(arg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status()
        };
        let _ = run("reset");
        if self.started_here && !self.keep {
            if !run("stop").is_ok_and(|s| s.success()) {
                eprintln!(
                    "hektor-bench regions: `{} stop` failed; stop the setup by hand",
                    self.script.display()
                );
            }
        } else if self.started_here {
            eprintln!(
                "hektor-bench regions: the setup stays up (--keep); stop it with `bash {} stop`",
                self.script.display()
            );
        }
    }
}

/// Latency toxics of `ms` on both streams of every proxy in `proxies` (every cross-region
/// one, Kafka and HTTP: a round trip of 2 × ms), through Toxiproxy's API.
async fn inject_latency(api: &str, proxies: &[String], ms: u64) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for proxy in proxies {
        for stream in ["upstream", "downstream"] {
            let name = format!("bench-rtt-{stream}");
            // Replace one left by an earlier run.
            let _ = http
                .delete(format!("{api}/proxies/{proxy}/toxics/{name}"))
                .send()
                .await;
            if ms == 0 {
                continue;
            }
            let r = http
                .post(format!("{api}/proxies/{proxy}/toxics"))
                .json(&json!({"name": name, "type": "latency", "stream": stream,
                    "toxicity": 1.0, "attributes": {"latency": ms, "jitter": 0}}))
                .send()
                .await
                .with_context(|| format!("adding latency to proxy {proxy}"))?;
            anyhow::ensure!(
                r.status().is_success(),
                "Toxiproxy refused a latency toxic on {proxy}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

// --- nodes -----------------------------------------------------------------------------

/// One region's `hektor serve`, killed when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a deployment's nodes are started with.
struct NodeSpec<'a> {
    region: &'a str,
    /// Regions to merge (`--mirror-regions`); empty: a one-region node.
    mirror: Vec<String>,
    /// Where the node listens (`127.0.0.1:PORT`): the region's fixed address that the
    /// other regions' proxies forward to; `None`: a free port (the control's nodes, so
    /// they never take a region's address).
    listen: Option<String>,
    /// `--region-peers` (`NAME=URL,...`); `None`: none.
    peers: Option<String>,
    brokers: String,
    cluster: &'a str,
    collection: &'a str,
    dir: &'a Path,
}

fn start_node(plan: &Plan, spec: &NodeSpec<'_>) -> anyhow::Result<Node> {
    let listen = match &spec.listen {
        Some(addr) => {
            // Free now, or a node of an earlier run still holds it: say so, rather than
            // a node that exits at start.
            std::net::TcpListener::bind(addr.as_str()).with_context(|| {
                format!(
                    "{addr} (where region {}'s node listens, HEKTOR_REGION_{}_HTTP) is in use: \
                     a hektor node left from an earlier run?",
                    spec.region,
                    spec.region.to_uppercase()
                )
            })?;
            addr.clone()
        }
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            format!("127.0.0.1:{port}")
        }
    };
    let id = format!("{}-1", spec.region);
    let mut cmd = Command::new(crate::nodes::hektor_exe()?);
    cmd.args(["serve", "--node-id", &id, "--region", spec.region])
        .args(["--brokers", &spec.brokers])
        // A cluster and collections of its own: nothing else on these brokers is opened.
        .args([
            "--cluster",
            spec.cluster,
            "--only-collections",
            spec.collection,
        ])
        .args(["--engine", &plan.engine])
        .arg("--listen")
        .arg(&listen)
        .arg("--data-dir")
        .arg(spec.dir.join(&id));
    if !spec.mirror.is_empty() {
        cmd.args(["--mirror-regions", &spec.mirror.join(",")])
            .args(["--tick-ms", &plan.tick_ms.to_string()]);
    }
    if let Some(peers) = &spec.peers {
        cmd.args(["--region-peers", peers]);
    }
    let child = cmd
        .args(&plan.node_flags)
        .env("HEKTOR_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting hektor serve")?;
    Ok(Node {
        child,
        url: format!("http://{listen}"),
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let r = http.get(url).send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Wait (bounded) until the node at `url` holds every shard of `collection` open.
async fn wait_open(http: &reqwest::Client, url: &str, collection: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let view = get_json(http, &format!("{url}/collections/{collection}"))
            .await
            .ok();
        let open = view.as_ref().is_some_and(|(status, v)| {
            *status == 200
                && v["complete"] == json!(true)
                && v["shards"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["vectors"].is_u64()))
        });
        if open {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url}: the shards of {collection} did not open within 120 s: {:?}",
            view.map(|v| v.1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// --- what the bench sees: positions polled, records read ---------------------------------

/// One position over time, changes only: (first seen, value), values not decreasing.
type Track = Vec<(Instant, u64)>;

/// When `track` first showed a value above `offset` (the record at `offset` applied).
fn first_past(track: &Track, offset: u64) -> Option<Instant> {
    let i = track.partition_point(|(_, next)| *next <= offset);
    track.get(i).map(|(at, _)| *at)
}

fn note(track: &mut Track, at: Instant, value: u64) {
    if track.last().is_none_or(|(_, last)| value > *last) {
        track.push((at, value));
    }
}

/// A node's applied positions, as polled.
#[derive(Default)]
struct Timeline {
    /// Partition → next offset of the node's own partition applied.
    own: HashMap<u32, Track>,
    /// (source region, partition) → next offset of its mirrored partition merged.
    mirror: HashMap<(usize, u32), Track>,
    /// The latest sums over the node's shards.
    conflicts: u64,
    duplicates: u64,
    /// Each poll: when it answered, how long it took (ms). A position is stamped with
    /// the answer's time, so a poll's duration bounds how late a stamp can be.
    polls: Vec<(Instant, f64)>,
}

/// When the bench's own readers saw each record.
#[derive(Default)]
struct Seen {
    /// (region, partition, offset) of a region's vectors topic → (key+value digest, when).
    origin: HashMap<(usize, u32, u64), (u64, Instant)>,
    /// (source region, target region, partition, digest) → (offset of the first copy in
    /// the target's mirrored topic, when).
    mirror: HashMap<(usize, usize, u32, u64), (u64, Instant)>,
}

fn digest(key: Option<&[u8]>, value: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// Poll `url`'s view of `collection` every `every` until `stop`, into `timeline`.
async fn poll_node(
    http: reqwest::Client,
    url: String,
    collection: String,
    regions: Arc<Vec<String>>,
    timeline: Arc<Mutex<Timeline>>,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let target = format!("{url}/collections/{collection}");
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        let Ok((200, view)) = get_json(&http, &target).await else {
            continue;
        };
        let at = Instant::now();
        let mut t = timeline.lock();
        t.polls
            .push((at, at.duration_since(sent).as_secs_f64() * 1e3));
        let (mut conflicts, mut duplicates) = (0, 0);
        for shard in view["shards"].as_array().into_iter().flatten() {
            let Some(p) = shard["shard"].as_u64().map(|p| p as u32) else {
                continue;
            };
            if let Some(next) = shard["next_offset"].as_u64() {
                note(t.own.entry(p).or_default(), at, next);
            }
            conflicts += shard["conflicts"].as_u64().unwrap_or(0);
            if let Some(mirrored) = shard["mirrored"].as_object() {
                for (region, m) in mirrored {
                    let Some(r) = regions.iter().position(|x| x == region) else {
                        continue;
                    };
                    if let Some(next) = m["next_offset"].as_u64() {
                        note(t.mirror.entry((r, p)).or_default(), at, next);
                    }
                    duplicates += m["duplicates"].as_u64().unwrap_or(0);
                }
            }
        }
        t.conflicts = conflicts;
        t.duplicates = duplicates;
    }
}

/// Read `topic`/`partition` of `log` from the start until `stop`, calling `seen` with each
/// record's offset and digest and when the read returned it.
async fn follow(
    log: KafkaLog,
    topic: String,
    partition: u32,
    stop: Arc<AtomicBool>,
    seen: impl Fn(u64, u64, Instant) + Send + 'static,
) {
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match log
            .read(&topic, partition, next, 10_000, Duration::from_millis(100))
            .await
        {
            Ok(batch) => {
                let at = Instant::now();
                for r in batch {
                    next = r.offset + 1;
                    seen(
                        r.offset,
                        digest(r.record.key.as_deref(), &r.record.value),
                        at,
                    );
                }
            }
            // Most often: MirrorMaker has not created the mirrored topic yet.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// --- the load ----------------------------------------------------------------------------

/// A write the client got a 200 for.
struct Ack {
    acked: Instant,
    /// Partition → offset of the write's last record there (its token).
    token: Vec<(u32, u64)>,
}

/// What one region's writes of one run left behind.
#[derive(Default)]
struct Written {
    acks: Vec<Ack>,
    /// Own id → the newest acknowledged seq written to it.
    own: HashMap<u64, u64>,
    /// Shared ids acknowledged.
    shared: HashSet<u64>,
    /// Shared ids sent (acknowledged or not).
    shared_sent: HashSet<u64>,
    /// Own ids sent: the highest seq sent (ids are `seq % ids_per_region`).
    max_seq_sent: Option<u64>,
    /// Requests that failed with an answer (its status) or without (`transport`);
    /// those cut at the schedule's timeout are the report's failures beyond these.
    errors: BTreeMap<String, u64>,
}

/// One region's writer: ids, bodies and what came back.
struct Writer {
    region: String,
    url: String,
    http: reqwest::Client,
    batch: usize,
    seq_base: u64,
    ids_per_region: u64,
    shared_ids: u64,
    /// Shared when a write's hash mod 1e6 is below this.
    shared_below: u64,
    vectors: Arc<Vec<String>>,
    written: Mutex<Written>,
}

/// A well-mixed 64-bit hash (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The id write `seq` of region `region` goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own(u64),
    Shared(u64),
}

fn target_of(region_hash: u64, seq: u64, ids: u64, shared_ids: u64, shared_below: u64) -> Target {
    let h = mix(region_hash ^ mix(seq));
    if h % 1_000_000 < shared_below {
        Target::Shared((h >> 20) % shared_ids)
    } else {
        Target::Own(seq % ids)
    }
}

fn region_hash(region: &str) -> u64 {
    digest(None, region.as_bytes())
}

impl Writer {
    /// The body of request `index` and the targets of its writes with their seqs.
    fn body(&self, index: u64) -> (String, Vec<(Target, u64)>) {
        let rh = region_hash(&self.region);
        let mut body = String::with_capacity(self.batch * (self.vectors[0].len() + 64) + 16);
        body.push_str("{\"upserts\":[");
        let mut targets = Vec::with_capacity(self.batch);
        for j in 0..self.batch as u64 {
            let seq = self.seq_base + index * self.batch as u64 + j;
            let mut target = target_of(
                rh,
                seq,
                self.ids_per_region,
                self.shared_ids,
                self.shared_below,
            );
            // A batch may not name an id twice (422): a shared id drawn again goes to
            // the write's own id instead.
            if targets.iter().any(|(t, _)| *t == target) {
                target = Target::Own(seq % self.ids_per_region);
            }
            let id = match target {
                Target::Own(k) => format!("{}-{k}", self.region),
                Target::Shared(k) => format!("s-{k}"),
            };
            let vector = &self.vectors[(mix(seq) % self.vectors.len() as u64) as usize];
            if j > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "{{\"id\":\"{id}\",\"vector\":{vector},\"payload\":{{\"r\":\"{}\",\"s\":{seq}}}}}",
                self.region
            ));
            targets.push((target, seq));
        }
        body.push_str("]}");
        (body, targets)
    }

    async fn write(&self, index: u64) -> bool {
        let (body, targets) = self.body(index);
        {
            let mut w = self.written.lock();
            for (t, seq) in &targets {
                match t {
                    Target::Shared(k) => {
                        w.shared_sent.insert(*k);
                    }
                    Target::Own(_) => w.max_seq_sent = w.max_seq_sent.max(Some(*seq)),
                }
            }
        }
        let sent = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let failed = |what: String| {
            *self.written.lock().errors.entry(what).or_default() += 1;
            false
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(_) => return failed("transport".into()),
        };
        if !resp.status().is_success() {
            return failed(resp.status().as_u16().to_string());
        }
        let Ok(answer) = resp.json::<Value>().await else {
            return failed("unreadable answer".into());
        };
        let acked = Instant::now();
        let token: Vec<(u32, u64)> = answer["token"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(p, o)| Some((p.parse().ok()?, o.as_u64()?)))
            .collect();
        let mut w = self.written.lock();
        for (t, seq) in targets {
            match t {
                Target::Own(k) => {
                    let newest = w.own.entry(k).or_insert(seq);
                    *newest = (*newest).max(seq);
                }
                Target::Shared(k) => {
                    w.shared.insert(k);
                }
            }
        }
        w.acks.push(Ack { acked, token });
        true
    }
}

/// `n` random vectors of `dim` as JSON arrays (reused: payloads tell writes apart).
fn vector_pool(n: usize, dim: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            serde_json::to_string(&v).expect("floats serialize")
        })
        .collect()
}

// --- a deployment: nodes per region, a collection, the bench's eyes ------------------------

struct Deployment {
    regions: Arc<Vec<String>>,
    nodes: Vec<Node>,
    collection: String,
    /// Mirror or not (the control).
    mirrored: bool,
    http: reqwest::Client,
    timelines: Vec<Arc<Mutex<Timeline>>>,
    /// Each region's brokers (topic clean-up).
    brokers: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    /// The next write seq of each region.
    next_seq: Vec<u64>,
    vectors: Arc<Vec<String>>,
    /// Per region: every own id's newest acknowledged seq, and shared ids acknowledged and
    /// sent, over the deployment's life.
    acked_own: Vec<HashMap<u64, u64>>,
    acked_shared: Vec<HashSet<u64>>,
    sent_shared: HashSet<u64>,
    max_own_seq_sent: Vec<Option<u64>>,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(plan: &Plan, setup: &Setup, mirrored: bool) -> anyhow::Result<Deployment> {
        let regions = Arc::new(setup.regions.clone());
        let prefix = if mirrored { "rg" } else { "rgsolo" };
        let collection = crate::nodes::unique_name(prefix);
        let dir = tempfile::tempdir()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build()?;
        let mut nodes = Vec::new();
        for region in regions.iter() {
            // Regions merging each other listen where the other regions' `_http` proxies
            // forward and call each other through their own; the control's nodes (shut
            // down before these start) take free ports and no peers.
            let (mirror, listen, peers) = if mirrored {
                (
                    regions.iter().filter(|r| *r != region).cloned().collect(),
                    Some(setup.http_listen(region)?),
                    Some(setup.peers(region)?),
                )
            } else {
                (Vec::new(), None, None)
            };
            nodes.push(start_node(
                plan,
                &NodeSpec {
                    region,
                    mirror,
                    listen,
                    peers,
                    brokers: setup.brokers(region)?,
                    cluster: &collection,
                    collection: &collection,
                    dir: dir.path(),
                },
            )?);
        }
        for node in &nodes {
            crate::nodes::wait_healthy(&http, &node.url).await?;
            let r = http
                .put(format!("{}/collections/{collection}", node.url))
                .json(&json!({"dimension": plan.dimension, "distance": "cosine",
                    "partitions": plan.partitions}))
                .send()
                .await?;
            let status = r.status();
            anyhow::ensure!(
                status.is_success(),
                "creating {collection} on {}: {status} {}",
                node.url,
                r.text().await.unwrap_or_default()
            );
        }
        for node in &nodes {
            wait_open(&http, &node.url, &collection).await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut tasks = JoinSet::new();
        let mut timelines = Vec::new();
        let mut brokers = Vec::new();
        let topic = topic_name(&collection, TopicKind::Vectors);
        for (b, node) in nodes.iter().enumerate() {
            let timeline = Arc::new(Mutex::new(Timeline::default()));
            timelines.push(Arc::clone(&timeline));
            tasks.spawn(poll_node(
                http.clone(),
                node.url.clone(),
                collection.clone(),
                Arc::clone(&regions),
                timeline,
                Arc::clone(&stop),
                plan.poll,
            ));
            let log = KafkaLog::connect(&setup.brokers(&regions[b])?, KafkaConfig::default())
                .with_context(|| format!("Kafka clients for region {}", regions[b]))?;
            brokers.push(setup.brokers(&regions[b])?);
            for p in 0..plan.partitions {
                let s = Arc::clone(&seen);
                tasks.spawn(follow(
                    log.clone(),
                    topic.clone(),
                    p,
                    Arc::clone(&stop),
                    move |offset, d, at| {
                        s.lock().origin.entry((b, p, offset)).or_insert((d, at));
                    },
                ));
                if !mirrored {
                    continue;
                }
                for (a, source) in regions.iter().enumerate() {
                    if a == b {
                        continue;
                    }
                    let s = Arc::clone(&seen);
                    tasks.spawn(follow(
                        log.clone(),
                        format!("{source}.{topic}"),
                        p,
                        Arc::clone(&stop),
                        move |offset, d, at| {
                            s.lock().mirror.entry((a, b, p, d)).or_insert((offset, at));
                        },
                    ));
                }
            }
        }
        let n = regions.len();
        Ok(Deployment {
            regions,
            nodes,
            collection,
            mirrored,
            http,
            timelines,
            brokers,
            seen,
            stop,
            tasks,
            next_seq: vec![0; n],
            vectors: Arc::new(vector_pool(64, plan.dimension, 17)),
            acked_own: vec![HashMap::new(); n],
            acked_shared: vec![HashSet::new(); n],
            sent_shared: HashSet::new(),
            max_own_seq_sent: vec![None; n],
            _dir: dir,
        })
    }

    /// Stop the nodes, the readers and the pollers, and delete the collection's topics
    /// and their mirrored copies in every region (MirrorMaker would copy every topic left
    /// behind on every later run, and its cost grows with them).
    async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Readers and pollers notice within a read's wait; bounded all the same.
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        // Dropped from each region's catalog first: other nodes on these brokers would
        // otherwise try to host a collection without topics.
        for node in &self.nodes {
            let url = format!("{}/collections/{}", node.url, self.collection);
            match tokio::time::timeout(Duration::from_secs(10), self.http.delete(&url).send()).await
            {
                Ok(Ok(r)) if r.status().is_success() || r.status().as_u16() == 404 => {}
                Ok(Ok(r)) => eprintln!("hektor-bench regions: DELETE {url}: {}", r.status()),
                Ok(Err(e)) => eprintln!("hektor-bench regions: DELETE {url}: {e}"),
                Err(_) => eprintln!("hektor-bench regions: DELETE {url} took over 10 s"),
            }
        }
        self.nodes.clear();
        let own: Vec<String> = TopicKind::ALL
            .iter()
            .map(|k| topic_name(&self.collection, *k))
            .collect();
        // Clients of their own: the readers' ones would log every topic vanishing.
        let mut logs = Vec::new();
        for brokers in &self.brokers {
            match KafkaLog::connect(brokers, KafkaConfig::default()) {
                Ok(log) => logs.push(log),
                Err(e) => {
                    eprintln!(
                        "hektor-bench regions: cannot delete {}'s topics: {e}",
                        self.collection
                    );
                    return;
                }
            }
        }
        // The originals first, so MirrorMaker does not copy them again.
        for mirrored in [false, true] {
            for (r, log) in logs.iter().enumerate() {
                for topic in &own {
                    let names: Vec<String> = if mirrored {
                        self.regions
                            .iter()
                            .enumerate()
                            .filter(|(o, _)| *o != r)
                            .map(|(_, o)| format!("{o}.{topic}"))
                            .collect()
                    } else {
                        vec![topic.clone()]
                    };
                    for name in names {
                        match tokio::time::timeout(Duration::from_secs(30), log.delete_topic(&name))
                            .await
                        {
                            Ok(Ok(())) | Ok(Err(hektor_log::LogError::UnknownTopic(_))) => {}
                            Ok(Err(e)) => eprintln!(
                                "hektor-bench regions: deleting {name} in {}: {e}",
                                self.regions[r]
                            ),
                            Err(_) => eprintln!(
                                "hektor-bench regions: deleting {name} in {} took over 30 s",
                                self.regions[r]
                            ),
                        }
                    }
                }
            }
        }
    }

    fn writer(&self, plan: &Plan, region: usize, mode: Mode) -> Writer {
        let query = match mode {
            Mode::Async => String::new(),
            m => format!(
                "?replication={}&timeout_ms={}",
                m.name(),
                plan.replication_timeout_ms
            ),
        };
        Writer {
            region: self.regions[region].clone(),
            url: format!(
                "{}/collections/{}/vectors{query}",
                self.nodes[region].url, self.collection
            ),
            http: self.http.clone(),
            batch: plan.batch,
            seq_base: self.next_seq[region],
            ids_per_region: plan.ids_per_region,
            shared_ids: plan.shared_ids,
            shared_below: (plan.shared_fraction * 1_000_000.0) as u64,
            vectors: Arc::clone(&self.vectors),
            written: Mutex::new(Written::default()),
        }
    }

    /// Writes at `rate` per region (and searches at `search_rate` per region) for
    /// `duration`, open loop, in every region at once. `during` runs beside the load
    /// (a partition); its result is returned.
    async fn load<F, T>(
        &mut self,
        plan: &Plan,
        mode: Mode,
        rate: f64,
        duration: Duration,
        search_rate: f64,
        during: F,
    ) -> anyhow::Result<(Run, T)>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let n = self.regions.len();
        let start = Instant::now() + Duration::from_millis(200);
        let request_rate = rate / plan.batch as f64;
        // Enough workers for every request in flight: sync and quorum writes wait for a
        // round trip and more, and for their timeout while cut off.
        let wait_s = match mode {
            Mode::Async => 0.5,
            _ => plan.replication_timeout_ms as f64 / 1000.0 + 1.0,
        };
        let workers = ((request_rate * wait_s).ceil() as usize).clamp(32, 2048);
        let timeout = Duration::from_millis(match mode {
            Mode::Async => 10_000,
            _ => plan.replication_timeout_ms + 10_000,
        });
        let mut writers = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for r in 0..n {
            let writer = Arc::new(self.writer(plan, r, mode));
            let schedule = Schedule::new(request_rate, duration, workers)
                .with_timeout(timeout)
                .starting_at(start);
            self.next_seq[r] += schedule.slots() * plan.batch as u64;
            let w = Arc::clone(&writer);
            handles.push(tokio::spawn(open_loop::run(schedule, move |slot| {
                let w = Arc::clone(&w);
                async move { w.write(slot.index).await }
            })));
            writers.push(writer);
        }
        let mut searches = Vec::new();
        if search_rate > 0.0 {
            for r in 0..n {
                let url: Arc<str> = Arc::from(format!(
                    "{}/collections/{}/search",
                    self.nodes[r].url, self.collection
                ));
                let http = self.http.clone();
                let vectors = Arc::clone(&self.vectors);
                let schedule = Schedule::new(search_rate, duration, 16)
                    .with_timeout(Duration::from_secs(10))
                    .starting_at(start);
                searches.push(tokio::spawn(open_loop::run(schedule, move |slot| {
                    let (http, url) = (http.clone(), Arc::clone(&url));
                    let body = format!(
                        "{{\"vector\":{},\"k\":10,\"without_payload\":true}}",
                        vectors[slot.index as usize % vectors.len()]
                    );
                    async move {
                        match http
                            .post(&*url)
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(r) => r.status().is_success(),
                            Err(_) => false,
                        }
                    }
                })));
            }
        }
        let beside = during.await;
        let mut reports = Vec::with_capacity(n);
        for h in handles {
            reports.push(h.await??);
        }
        let mut search_reports = Vec::new();
        for h in searches {
            search_reports.push(h.await??);
        }
        let beside = beside?;
        let mut written = Vec::with_capacity(n);
        let mut errors = BTreeMap::new();
        for (r, w) in writers.into_iter().enumerate() {
            let w = Arc::try_unwrap(w)
                .map_err(|_| anyhow::anyhow!("a writer outlived its load"))?
                .written
                .into_inner();
            for (k, seq) in &w.own {
                let newest = self.acked_own[r].entry(*k).or_insert(*seq);
                *newest = (*newest).max(*seq);
            }
            self.acked_shared[r].extend(w.shared.iter().copied());
            self.sent_shared.extend(w.shared_sent.iter().copied());
            self.max_own_seq_sent[r] = self.max_own_seq_sent[r].max(w.max_seq_sent);
            for (k, n) in w.errors {
                *errors.entry(k).or_default() += n;
            }
            written.push(w.acks);
        }
        Ok((
            Run {
                began: start,
                reports,
                searches: search_reports,
                acks: written,
                errors,
            },
            beside,
        ))
    }

    /// Lags of `acks` (per region) as far as they are seen now.
    fn lags(&self, acks: &[Vec<Ack>]) -> Lags {
        let seen = self.seen.lock();
        let timelines: Vec<_> = self.timelines.iter().map(|t| t.lock()).collect();
        let ms = |later: Instant, earlier: Instant| -> f64 {
            if later >= earlier {
                later.duration_since(earlier).as_secs_f64() * 1e3
            } else {
                -(earlier.duration_since(later).as_secs_f64() * 1e3)
            }
        };
        let mut out = Lags::default();
        for (a, acks) in acks.iter().enumerate() {
            for ack in acks {
                // The writing region's own shard.
                let local = ack
                    .token
                    .iter()
                    .map(|(p, o)| timelines[a].own.get(p).and_then(|t| first_past(t, *o)))
                    .collect::<Option<Vec<Instant>>>();
                match local.and_then(|v| v.into_iter().max()) {
                    Some(at) => out.local.push(ms(at, ack.acked).max(0.0)),
                    None => out.local_missing += 1,
                }
                if !self.mirrored {
                    continue;
                }
                for (b, target) in timelines.iter().enumerate() {
                    if b == a {
                        continue;
                    }
                    // Per partition of the write: (merged in b, read in a, read in b).
                    let mut worst: Option<(Instant, Instant, Instant)> = None;
                    let mut missing = false;
                    for (p, o) in &ack.token {
                        let Some(&(d, read_a)) = seen.origin.get(&(a, *p, *o)) else {
                            missing = true;
                            break;
                        };
                        let Some(&(m, read_b)) = seen.mirror.get(&(a, b, *p, d)) else {
                            missing = true;
                            break;
                        };
                        let Some(merged) =
                            target.mirror.get(&(a, *p)).and_then(|t| first_past(t, m))
                        else {
                            missing = true;
                            break;
                        };
                        if worst.is_none_or(|(w, _, _)| merged > w) {
                            worst = Some((merged, read_a, read_b));
                        }
                    }
                    match worst {
                        Some((merged, read_a, read_b)) if !missing => {
                            out.mirror.push(ms(merged, ack.acked).max(0.0));
                            out.origin_seen.push(ms(read_a, ack.acked));
                            out.wan.push(ms(read_b, read_a));
                            out.apply.push(ms(merged, read_b));
                        }
                        _ => out.unmerged += 1,
                    }
                }
            }
        }
        out
    }

    /// Wait (at most `limit`) until every write of `acks` is merged everywhere.
    async fn drain(&self, acks: &[Vec<Ack>], limit: Duration) -> Lags {
        let deadline = Instant::now() + limit;
        loop {
            let lags = self.lags(acks);
            if (lags.unmerged == 0 && lags.local_missing == 0) || Instant::now() >= deadline {
                return lags;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// When the bench's readers had seen, in every other region, a copy of the last
    /// record each region wrote to each partition before `before`; `None` while one is
    /// missing.
    fn copied_at(&self, before: Instant) -> Option<Instant> {
        let seen = self.seen.lock();
        let mut last: HashMap<(usize, u32), (u64, u64)> = HashMap::new();
        for (&(a, p, offset), &(d, at)) in &seen.origin {
            if at <= before {
                let entry = last.entry((a, p)).or_insert((offset, d));
                if offset > entry.0 {
                    *entry = (offset, d);
                }
            }
        }
        let mut latest: Option<Instant> = None;
        for (&(a, p), &(_, d)) in &last {
            for b in (0..self.regions.len()).filter(|b| *b != a) {
                let &(_, at) = seen.mirror.get(&(a, b, p, d))?;
                latest = latest.max(Some(at));
            }
        }
        latest
    }

    fn conflicts(&self) -> u64 {
        self.timelines.iter().map(|t| t.lock().conflicts).sum()
    }

    fn duplicates(&self) -> u64 {
        self.timelines.iter().map(|t| t.lock().duplicates).sum()
    }

    /// Wait until every region's merged floor of every other region's partitions has
    /// passed `stamp` (an hlc); the time it took, or `None` past `limit`.
    async fn wait_floors(&self, stamp: u64, limit: Duration) -> Option<Duration> {
        let began = Instant::now();
        let deadline = began + limit;
        loop {
            let mut all = true;
            for node in &self.nodes {
                let view = get_json(
                    &self.http,
                    &format!("{}/collections/{}", node.url, self.collection),
                )
                .await;
                let Ok((200, view)) = view else {
                    all = false;
                    break;
                };
                let shards = view["shards"].as_array().cloned().unwrap_or_default();
                let behind = shards.is_empty()
                    || shards.iter().any(|s| {
                        let m = s["mirrored"].as_object();
                        m.is_none_or(|m| {
                            m.len() + 1 < self.regions.len()
                                || m.values()
                                    .any(|m| m["floor"].as_u64().is_none_or(|f| f < stamp))
                        })
                    });
                if behind {
                    all = false;
                    break;
                }
            }
            if all {
                return Some(began.elapsed());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every id written so far, as the bench names them.
    fn ids(&self, plan: &Plan) -> Vec<String> {
        let mut ids = Vec::new();
        for (r, region) in self.regions.iter().enumerate() {
            let n = self.max_own_seq_sent[r].map_or(0, |s| (s + 1).min(plan.ids_per_region));
            ids.extend((0..n).map(|k| format!("{region}-{k}")));
        }
        let mut shared: Vec<u64> = self.sent_shared.iter().copied().collect();
        shared.sort_unstable();
        ids.extend(shared.into_iter().map(|k| format!("s-{k}")));
        ids
    }

    /// `ids` as region `r` answers them: id → (vector digest, payload, hlc, origin), or
    /// `None` where it is not there (404). Errors other than 404 fail the check.
    async fn contents(
        &self,
        r: usize,
        ids: &[String],
    ) -> anyhow::Result<HashMap<String, Option<Stored>>> {
        const READERS: usize = 16;
        let base = format!(
            "{}/collections/{}/vectors",
            self.nodes[r].url, self.collection
        );
        let mut set = JoinSet::new();
        for chunk in ids.chunks(ids.len().div_ceil(READERS).max(1)) {
            let chunk = chunk.to_vec();
            let (http, base) = (self.http.clone(), base.clone());
            set.spawn(async move {
                let mut out = Vec::with_capacity(chunk.len());
                for id in chunk {
                    let (status, body) = get_json(&http, &format!("{base}/{id}")).await?;
                    let stored = match status {
                        200 => {
                            let mut h = std::collections::hash_map::DefaultHasher::new();
                            for x in body["vector"].as_array().into_iter().flatten() {
                                x.as_f64().map(f64::to_bits).hash(&mut h);
                            }
                            Some(Stored {
                                vector: h.finish(),
                                payload: body["payload"].clone(),
                                hlc: body["written"]["hlc"].to_string(),
                                origin: body["written"]["origin"].to_string(),
                            })
                        }
                        404 => None,
                        s => anyhow::bail!("GET {base}/{id}: {s} {body}"),
                    };
                    out.push((id, stored));
                }
                Ok::<_, anyhow::Error>(out)
            });
        }
        let mut all = HashMap::with_capacity(ids.len());
        while let Some(part) = set.join_next().await {
            all.extend(part??);
        }
        Ok(all)
    }

    /// Compare every region's contents of `ids`: (lost, divergent ids). `lost` counts
    /// only the acknowledged writes among `ids`.
    async fn check(&self, ids: &[String]) -> anyhow::Result<(u64, Vec<String>)> {
        let mut views = Vec::with_capacity(self.regions.len());
        for r in 0..self.regions.len() {
            views.push(self.contents(r, ids).await?);
        }
        let divergent: Vec<String> = ids
            .iter()
            .filter(|id| views.iter().any(|v| v.get(*id) != views[0].get(*id)))
            .cloned()
            .collect();
        let mut lost = 0u64;
        for (a, region) in self.regions.iter().enumerate() {
            for (k, newest) in &self.acked_own[a] {
                let id = format!("{region}-{k}");
                if !views[0].contains_key(&id) {
                    continue;
                }
                for view in &views {
                    let have = view
                        .get(&id)
                        .and_then(|s| s.as_ref())
                        .and_then(|s| s.payload["s"].as_u64());
                    if have.is_none_or(|s| s < *newest) {
                        lost += 1;
                    }
                }
            }
            for k in &self.acked_shared[a] {
                let id = format!("s-{k}");
                if !views[0].contains_key(&id) {
                    continue;
                }
                lost += views
                    .iter()
                    .filter(|v| v.get(&id).is_none_or(|s| s.is_none()))
                    .count() as u64;
            }
        }
        Ok((lost, divergent))
    }
}

/// One id as a region answers it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    vector: u64,
    payload: Value,
    hlc: String,
    origin: String,
}

/// What one load left: the open-loop reports of the writes (per region) and searches,
/// and the acknowledged writes (per region).
struct Run {
    /// When the load began (polls since then belong to it).
    began: Instant,
    reports: Vec<OpenLoopReport>,
    searches: Vec<OpenLoopReport>,
    acks: Vec<Vec<Ack>>,
    /// Failed write requests by what came back (see [`Written::errors`]).
    errors: BTreeMap<String, u64>,
}

impl Run {
    fn writes(&self, batch: usize) -> (u64, u64) {
        let ok: u64 = self.reports.iter().map(|r| r.ok).sum();
        let failed: u64 = self.reports.iter().map(|r| r.failed).sum();
        (ok * batch as u64, failed * batch as u64)
    }

    fn write_latency(&self) -> anyhow::Result<Percentiles> {
        let mut h = open_loop::latency_histogram();
        for r in &self.reports {
            h.add(&r.latency)?;
        }
        Ok(Percentiles::of(&h))
    }

    fn search_latency(&self) -> anyhow::Result<(u64, u64, Percentiles)> {
        let mut h = open_loop::latency_histogram();
        for r in &self.searches {
            h.add(&r.latency)?;
        }
        Ok((
            self.searches.iter().map(|r| r.ok).sum(),
            self.searches.iter().map(|r| r.failed).sum(),
            Percentiles::of(&h),
        ))
    }
}

/// Lags of a run's writes, in ms.
#[derive(Default)]
struct Lags {
    mirror: Vec<f64>,
    local: Vec<f64>,
    origin_seen: Vec<f64>,
    wan: Vec<f64>,
    apply: Vec<f64>,
    /// (write, other region) pairs not merged (or not seen by the bench's readers).
    unmerged: u64,
    local_missing: u64,
}

/// The `q` quantile of `v` (nearest rank), `None` when empty.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    Some((s[i] * 100.0).round() / 100.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Lags {
    fn fields(&self, line: &mut serde_json::Map<String, Value>, mirrored: bool) {
        let q = |v: &[f64], p: f64| json!(quantile(v, p));
        line.insert("local_lag_p50_ms".into(), q(&self.local, 0.5));
        line.insert("local_lag_p99_ms".into(), q(&self.local, 0.99));
        if !mirrored {
            for k in [
                "mirror_lag_p50_ms",
                "mirror_lag_p99_ms",
                "mirror_lag_max_ms",
            ] {
                line.insert(k.into(), Value::Null);
            }
            return;
        }
        line.insert("mirror_lag_p50_ms".into(), q(&self.mirror, 0.5));
        line.insert("mirror_lag_p99_ms".into(), q(&self.mirror, 0.99));
        line.insert("mirror_lag_max_ms".into(), q(&self.mirror, 1.0));
        line.insert("unmerged".into(), json!(self.unmerged));
        let stage = |v: &[f64]| json!({"p50": quantile(v, 0.5), "p99": quantile(v, 0.99)});
        line.insert(
            "stages_ms".into(),
            json!({
                "origin_seen": stage(&self.origin_seen),
                "wan": stage(&self.wan),
                "apply": stage(&self.apply),
            }),
        );
    }
}

/// Print a result line: JSON, or `key=value` pairs.
fn emit(plan: &Plan, line: &Value) {
    if plan.json {
        println!("{line}");
        return;
    }
    let Some(map) = line.as_object() else {
        println!("{line}");
        return;
    };
    let text: Vec<String> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    println!("{}", text.join(" "));
}

/// The fields every line of a load shares.
fn load_line(
    plan: &Plan,
    dep: &Deployment,
    run: &Run,
    lags: &Lags,
    mode: &str,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let (writes, failed) = run.writes(plan.batch);
    let w = run.write_latency()?;
    let (searches, search_failed, s) = run.search_latency()?;
    let mut line = serde_json::Map::new();
    line.insert("bench".into(), json!("regions"));
    line.insert("mode".into(), json!(mode));
    line.insert("regions".into(), json!(dep.regions.len()));
    line.insert("rtt_ms".into(), json!(plan.rtt_ms));
    line.insert("rate_per_region".into(), json!(rate));
    line.insert("batch".into(), json!(plan.batch));
    line.insert("duration_s".into(), json!(round2(duration.as_secs_f64())));
    line.insert("writes".into(), json!(writes));
    line.insert(
        "writes_per_s".into(),
        json!(round2(writes as f64 / duration.as_secs_f64().max(1e-9))),
    );
    line.insert("write_failed".into(), json!(failed));
    if !run.errors.is_empty() {
        line.insert("write_errors".into(), json!(run.errors));
    }
    line.insert("write_p50_ms".into(), json!(round2(w.p50_ms)));
    line.insert("write_p99_ms".into(), json!(round2(w.p99_ms)));
    lags.fields(&mut line, dep.mirrored);
    let polls: Vec<f64> = dep
        .timelines
        .iter()
        .flat_map(|t| {
            t.lock()
                .polls
                .iter()
                .filter(|(at, _)| *at >= run.began)
                .map(|(_, ms)| *ms)
                .collect::<Vec<f64>>()
        })
        .collect();
    line.insert("poll_p50_ms".into(), json!(quantile(&polls, 0.5)));
    line.insert("poll_p99_ms".into(), json!(quantile(&polls, 0.99)));
    if !run.searches.is_empty() {
        line.insert("searches".into(), json!(searches));
        line.insert("search_failed".into(), json!(search_failed));
        line.insert("search_p50_ms".into(), json!(round2(s.p50_ms)));
        line.insert("search_p99_ms".into(), json!(round2(s.p99_ms)));
    }
    line.insert("load_avg_1m".into(), json!(load_average()));
    Ok(line)
}

// --- the run -----------------------------------------------------------------------------

/// `hektor-bench regions`.
pub async fn run(args: RegionsBenchArgs) -> anyhow::Result<()> {
    let plan = Plan::of(&args)?;
    crate::nodes::hektor_exe()?;
    let began = Instant::now();
    let setup = Setup::start(&args.regions_script, args.keep).await?;
    let result = tokio::select! {
        r = bench(&plan, &setup, began) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(setup);
    result
}

async fn bench(plan: &Plan, setup: &Setup, began: Instant) -> anyhow::Result<()> {
    let api = setup.var("HEKTOR_TOXIPROXY")?;
    let proxies = setup.proxies()?;
    let toxiproxy = Toxiproxy::connect(&api).await?;
    inject_latency(&api, &proxies, plan.rtt_ms / 2).await?;
    let peers: serde_json::Map<String, Value> = setup
        .regions
        .iter()
        .map(|r| Ok((r.clone(), json!(setup.peers(r)?))))
        .collect::<anyhow::Result<_>>()?;
    emit(
        plan,
        &json!({"bench": "regions", "phase": "setup", "regions": setup.regions,
            "rtt_ms": plan.rtt_ms, "proxies": proxies, "region_peers": peers,
            "setup_s": round2(began.elapsed().as_secs_f64()),
            "started_here": setup.started_here}),
    );
    let mut summary = serde_json::Map::new();

    // 1. The control: one-region nodes, the same load.
    if plan.control {
        let mut dep = Deployment::start(plan, setup, false).await?;
        warm_up(&mut dep, plan).await?;
        let (run, ()) = dep
            .load(
                plan,
                Mode::Async,
                plan.rate,
                plan.duration,
                plan.search_rate,
                async { Ok(()) },
            )
            .await?;
        let lags = dep.drain(&run.acks, Duration::from_secs(30)).await;
        let line = load_line(
            plan,
            &dep,
            &run,
            &lags,
            "one-region",
            plan.rate,
            plan.duration,
        )?;
        summary.insert(
            "one_region_write_p99_ms".into(),
            line["write_p99_ms"].clone(),
        );
        emit(plan, &Value::Object(line));
        dep.shutdown().await;
    }

    // 2. Regions merging each other.
    let mut dep = Deployment::start(plan, setup, true).await?;
    warm_up(&mut dep, plan).await?;

    // The curve: lag against write rate.
    for &rate in &plan.rates {
        let (run, ()) = dep
            .load(plan, Mode::Async, rate, plan.curve, 0.0, async { Ok(()) })
            .await?;
        let lags = dep.drain(&run.acks, Duration::from_secs(30)).await;
        let mut line = load_line(plan, &dep, &run, &lags, "async", rate, plan.curve)?;
        line.insert("phase".into(), json!("curve"));
        emit(plan, &Value::Object(line));
    }

    // The modes: steady load, then a partition under load, heal, convergence.
    for &mode in &plan.modes {
        let conflicts_before = dep.conflicts();
        let (run, ()) = dep
            .load(
                plan,
                mode,
                plan.rate,
                plan.duration,
                plan.search_rate,
                async { Ok(()) },
            )
            .await?;
        let lags = dep.drain(&run.acks, Duration::from_secs(30)).await;
        let mut line = load_line(
            plan,
            &dep,
            &run,
            &lags,
            mode.name(),
            plan.rate,
            plan.duration,
        )?;
        line.insert("phase".into(), json!("mode"));
        let conflicts_steady = dep.conflicts().saturating_sub(conflicts_before);
        line.insert("conflicts".into(), json!(conflicts_steady));
        let partition = partition(&mut dep, plan, &toxiproxy, &proxies, mode).await?;
        for (k, v) in partition {
            line.insert(k, v);
        }
        // Writes to the shared ids on both sides of the cut are concurrent: counted when
        // the heal merges them.
        line.insert(
            "partition_conflicts".into(),
            json!(dep
                .conflicts()
                .saturating_sub(conflicts_before + conflicts_steady)),
        );
        line.insert("duplicates".into(), json!(dep.duplicates()));
        line.insert("load_avg_1m".into(), json!(load_average()));
        summary.insert(
            format!("{}_write_p99_ms", mode.name()),
            line["write_p99_ms"].clone(),
        );
        for k in [
            "mirror_lag_p50_ms",
            "mirror_lag_p99_ms",
            "converged_s",
            "lost",
            "divergent_ids",
        ] {
            summary.insert(format!("{}_{k}", mode.name()), line[k].clone());
        }
        emit(plan, &Value::Object(line));
    }
    dep.shutdown().await;

    // The issue's goals, as measured here.
    let num = |k: &str| summary.get(k).and_then(Value::as_f64);
    let rtt = plan.rtt_ms as f64;
    let goals = json!({
        "bench": "regions", "phase": "goals", "rtt_ms": plan.rtt_ms,
        "rate_per_region": plan.rate,
        "mirror_lag_p50_le_50ms": num("async_mirror_lag_p50_ms").map(|v| v <= 50.0),
        "mirror_lag_p99_le_100ms": num("async_mirror_lag_p99_ms").map(|v| v <= 100.0),
        "async_write_p99_vs_one_region": match (num("async_write_p99_ms"), num("one_region_write_p99_ms")) {
            (Some(a), Some(o)) if o > 0.0 => Some(round2(a / o)),
            _ => None,
        },
        "sync_write_p99_le_rtt_plus_30ms": num("sync_write_p99_ms").map(|v| v <= rtt + 30.0),
        "converged_le_10s": plan.modes.iter().map(|m| num(&format!("{}_converged_s", m.name()))).collect::<Option<Vec<f64>>>().map(|v| v.iter().all(|s| *s <= 10.0)),
        "lost": plan.modes.iter().filter_map(|m| num(&format!("{}_lost", m.name()))).sum::<f64>(),
        "divergent_ids": plan.modes.iter().filter_map(|m| num(&format!("{}_divergent_ids", m.name()))).sum::<f64>(),
        "total_s": round2(began.elapsed().as_secs_f64()),
    });
    emit(plan, &goals);
    Ok(())
}

/// One write in every region, and wait (bounded) until every region has it: MirrorMaker
/// has found the new topics (within its refresh interval) and the shards follow them.
async fn warm_up(dep: &mut Deployment, plan: &Plan) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rate = plan.batch as f64 * 2.0;
        let (run, ()) = dep
            .load(
                plan,
                Mode::Async,
                rate,
                Duration::from_millis(500),
                0.0,
                async { Ok(()) },
            )
            .await?;
        let lags = dep.drain(&run.acks, Duration::from_secs(20)).await;
        let (ok, _) = run.writes(plan.batch);
        if ok > 0 && lags.unmerged == 0 && lags.local_missing == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "warm-up: writes were not merged in every region within 120 s ({} not merged, {} not applied locally, {ok} acknowledged)",
            lags.unmerged,
            lags.local_missing
        );
    }
}

/// Cut every proxy (Kafka and HTTP) for `plan.partition` under load in `mode`, heal, wait
/// for convergence and compare the regions: the line's partition fields.
async fn partition(
    dep: &mut Deployment,
    plan: &Plan,
    toxiproxy: &Toxiproxy,
    proxies: &[String],
    mode: Mode,
) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let mut healed_at = None;
    let cut_for = plan.partition;
    if !cut_for.is_zero() {
        for p in proxies {
            toxiproxy.cut(p, plan.cut).await?;
        }
        let cut = async {
            tokio::time::sleep(cut_for + Duration::from_millis(200)).await;
            let mut result = Ok(());
            for p in proxies {
                if let Err(e) = toxiproxy.heal(p, plan.cut).await {
                    result = Err(e);
                }
            }
            result.map(|()| Instant::now())
        };
        let (run, healed) = dep
            .load(plan, mode, plan.rate, cut_for, plan.search_rate, cut)
            .await?;
        let (ok, failed) = run.writes(plan.batch);
        out.push(("partition_s".into(), json!(round2(cut_for.as_secs_f64()))));
        out.push(("partition_writes".into(), json!(ok)));
        out.push(("partition_write_failed".into(), json!(failed)));
        if !run.errors.is_empty() {
            out.push(("partition_write_errors".into(), json!(run.errors)));
        }
        healed_at = Some(healed);
        // Every acknowledged write is in; the load has stopped.
        let stopped = Instant::now();
        let stamp = (now_ms() + 1) << 16;
        let since_heal = healed.elapsed();
        let floors = dep.wait_floors(stamp, plan.converge_timeout).await;
        out.push((
            "converged_s".into(),
            json!(floors.map(|d| round2((d + since_heal).as_secs_f64()))),
        ));
        // Of that, MirrorMaker's part: until the bench's readers saw a copy of every
        // record written before the stop in every other region.
        let copied = dep
            .copied_at(stopped)
            .map(|at| round2(at.saturating_duration_since(healed).as_secs_f64()));
        out.push(("copied_s".into(), json!(copied)));
        // Lag of the writes made during the cut, merged after the heal.
        let lags = dep.lags(&run.acks);
        out.push(("partition_unmerged".into(), json!(lags.unmerged)));
    } else {
        out.push(("partition_s".into(), json!(0)));
        out.push(("converged_s".into(), Value::Null));
    }
    let ids = dep.ids(plan);
    let (mut lost, mut divergent) = dep.check(&ids).await?;
    if !divergent.is_empty() {
        // The floors passed, yet ids differ: read those again until they agree (bounded),
        // then everything once more; convergence is then when they agreed.
        let deadline = Instant::now() + plan.converge_timeout;
        while !divergent.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            divergent = dep.check(&divergent).await?.1;
        }
        if let Some(healed) = healed_at {
            if divergent.is_empty() {
                out.retain(|(k, _)| k != "converged_s");
                out.push((
                    "converged_s".into(),
                    json!(round2(healed.elapsed().as_secs_f64())),
                ));
                out.push(("converged_by".into(), json!("contents")));
            }
        }
        (lost, divergent) = dep.check(&ids).await?;
    }
    out.push(("ids_checked".into(), json!(ids.len())));
    out.push(("lost".into(), json!(lost)));
    out.push(("divergent_ids".into(), json!(divergent.len())));
    if let Some(id) = divergent.first() {
        out.push(("divergent_example".into(), json!(id)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_past_finds_the_first_position_beyond_an_offset() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut track = Track::new();
        for (ms, v) in [(0, 5), (10, 5), (20, 9), (30, 8), (40, 12)] {
            note(&mut track, at(ms), v);
        }
        // Only increases are kept.
        assert_eq!(track.len(), 3);
        assert_eq!(first_past(&track, 4), Some(at(0)));
        assert_eq!(first_past(&track, 5), Some(at(20)));
        assert_eq!(first_past(&track, 8), Some(at(20)));
        assert_eq!(first_past(&track, 11), Some(at(40)));
        assert_eq!(first_past(&track, 12), None);
    }

    #[test]
    fn writes_go_to_own_ids_in_turn_and_a_share_to_shared_ids() {
        let rh = region_hash("west");
        let n = 100_000u64;
        let targets: Vec<Target> = (0..n)
            .map(|s| target_of(rh, s, 4000, 200, 50_000))
            .collect();
        let shared = targets
            .iter()
            .filter(|t| matches!(t, Target::Shared(_)))
            .count();
        // 5 % of the writes, give or take.
        assert!((4_000..6_000).contains(&shared), "{shared}");
        for (s, t) in targets.iter().enumerate() {
            match t {
                Target::Own(k) => assert_eq!(*k, s as u64 % 4000),
                Target::Shared(k) => assert!(*k < 200),
            }
        }
        // Another region picks other writes for the shared ids.
        let east: Vec<Target> = (0..n)
            .map(|s| target_of(region_hash("east"), s, 4000, 200, 50_000))
            .collect();
        assert_ne!(targets, east);
        // None at all with a zero share.
        assert!((0..n).all(|s| matches!(target_of(rh, s, 4000, 200, 0), Target::Own(_))));
    }

    #[test]
    fn a_batch_never_names_an_id_twice() {
        let writer = Writer {
            region: "west".into(),
            url: String::new(),
            http: reqwest::Client::new(),
            batch: 50,
            seq_base: 0,
            ids_per_region: 4000,
            // Half the writes on two shared ids: most batches draw one twice.
            shared_ids: 2,
            shared_below: 500_000,
            vectors: Arc::new(vector_pool(2, 4, 1)),
            written: Mutex::new(Written::default()),
        };
        for index in 0..200 {
            let (body, targets) = writer.body(index);
            let parsed: Value = serde_json::from_str(&body).unwrap();
            let ids: Vec<&str> = parsed["upserts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap())
                .collect();
            let distinct: HashSet<&str> = ids.iter().copied().collect();
            assert_eq!(distinct.len(), ids.len(), "{ids:?}");
            assert_eq!(targets.len(), 50);
            assert!(targets.iter().any(|(t, _)| matches!(t, Target::Shared(_))));
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn quick_and_full_plans_resolve_their_defaults() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: RegionsBenchArgs,
        }
        let full = Plan::of(&Cli::parse_from(["x"]).args).unwrap();
        assert_eq!(full.modes, vec![Mode::Async, Mode::Quorum, Mode::Sync]);
        assert_eq!(full.rates, vec![100.0, 500.0, 1000.0, 2000.0]);
        assert_eq!(full.partition, Duration::from_secs(30));
        let quick = Plan::of(&Cli::parse_from(["x", "--quick", "--rates", "50,60"]).args).unwrap();
        assert_eq!(quick.modes, vec![Mode::Async, Mode::Sync]);
        assert_eq!(quick.rates, vec![50.0, 60.0]);
        assert_eq!(quick.duration, Duration::from_secs(10));
        assert!(Plan::of(&Cli::parse_from(["x", "--modes", "eventual"]).args).is_err());
        assert!(Plan::of(&Cli::parse_from(["x", "--cut", "netem"]).args).is_err());
        assert!(Plan::of(&Cli::parse_from(["x", "--rates", "none"]).args)
            .unwrap()
            .rates
            .is_empty());
        assert!(Plan::of(&Cli::parse_from(["x", "--rates", "10,x"]).args).is_err());
    }
}
