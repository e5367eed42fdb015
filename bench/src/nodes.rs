//! What the multi-node benches (`bench move`, `bench kinetic`) share: the `hektor`
//! executable they run ([`hektor_exe`]: `--hektor PATH` / `HEKTOR_BIN`, else the one beside
//! `hektor-bench`), and node processes — `hektor serve` on a free 127.0.0.1 port, in its own data directory,
//! in a cluster of its own name, with the short heartbeat and grace settings a bench
//! wants, waited for until it answers, killed when dropped — one search through a router
//! ([`search`], the request of an open-loop schedule, timed by `crate::open_loop`).
//!
//! Bulk loads through the API ([`post_bulk`]), shared by the benches that load a node.
//!
//! What the nodes do and what is measured is the benches' business.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;

/// The `hektor` executable given with `--hektor` (or `HEKTOR_BIN`), if any.
static HEKTOR_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Run node children from `path` instead of the `hektor` beside this executable (once,
/// at start-up; later calls are ignored).
pub fn set_hektor_exe(path: PathBuf) {
    let _ = HEKTOR_EXE.set(path);
}

/// The `hektor` executable that node children run: the one set with [`set_hektor_exe`],
/// else `hektor` in the directory of this executable (`cargo build` puts both in
/// `target/<profile>/`). An error that says what to do when it is not there.
pub fn hektor_exe() -> anyhow::Result<PathBuf> {
    if let Some(path) = HEKTOR_EXE.get() {
        anyhow::ensure!(
            path.is_file(),
            "the hektor executable {} (--hektor or HEKTOR_BIN) does not exist",
            path.display()
        );
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("finding this executable")?;
    let beside = me.with_file_name(format!("hektor{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        beside.is_file(),
        "the benches start `hektor serve` children, and no hektor executable is beside {}: \
         build it (`cargo build --release` builds hektor and hektor-bench together) or \
         name one with --hektor PATH (or HEKTOR_BIN)",
        me.display()
    );
    Ok(beside)
}

/// A file of the source tree this crate was built from (scripts, samples, `target/`):
/// `path` relative to the workspace root.
pub fn in_source_tree(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join(path)
}

/// A running node process, killed when dropped.
pub struct NodeProc {
    child: Child,
    pub url: String,
}

impl NodeProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A name unique to this run, for the collection and the cluster of a bench.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Start node `id` with `roles` on Kafka `brokers`, in cluster and collection scope
/// `name`, its data under `dir/id`; `extra` flags are added to the common ones.
pub fn start_node(
    id: &str,
    roles: &str,
    brokers: &str,
    name: &str,
    dir: &Path,
    extra: &[String],
) -> anyhow::Result<NodeProc> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(hektor_exe()?)
        .args(["serve", "--node-id", id, "--roles", roles])
        .args(["--brokers", brokers])
        .args(["--cluster", name, "--only-collections", name])
        .args(["--heartbeat-ms", "250", "--dead-after-ms", "3000"])
        .args(["--grace-ms", "2000"])
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join(id))
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a node")?;
    Ok(NodeProc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// Wait (up to a minute) until the node at `url` answers `GET /health`.
pub async fn wait_healthy(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        if http.get(format!("{url}/health")).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("node {url} did not come up")
}

/// POST one search `body` to `url`: whether it succeeded (any error or non-2xx status is
/// a failure). Untimed: an open-loop runner times it from its intended send.
pub async fn search(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> bool {
    match http.post(url).json(body).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// Post bulk `bodies` (`application/x-hektor-bulk`) to `vectors_url` (a collection's
/// `/vectors`) with `concurrency` requests in flight; retries 429/503 answers (at most 20
/// times each, backing off). Returns the retries.
pub async fn post_bulk(
    http: &reqwest::Client,
    vectors_url: &str,
    bodies: Vec<bytes::Bytes>,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (bodies, next, retries) =
            (Arc::clone(&bodies), Arc::clone(&next), Arc::clone(&retries));
        let (http, url) = (http.clone(), vectors_url.to_owned());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(());
                };
                let mut attempt = 0;
                loop {
                    let response = http
                        .post(&url)
                        .header("content-type", hektor_ingest::http::BULK_CONTENT_TYPE)
                        .body(body.clone())
                        .send()
                        .await
                        .with_context(|| format!("posting batch {i}"))?;
                    let status = response.status();
                    if status.is_success() {
                        break;
                    }
                    let text = response.text().await.unwrap_or_default();
                    attempt += 1;
                    if (status == 429 || status == 503) && attempt < 20 {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        continue;
                    }
                    anyhow::bail!("batch {i}: {status}: {text}");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("an upload task panicked")??;
    }
    Ok(retries.load(Ordering::Relaxed))
}
