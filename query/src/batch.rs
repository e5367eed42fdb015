//! Batch search (seed §2.3): `POST /collections/{c}/search/batch` answers many queries
//! at once by EXACT search — every live vector of every shard that can hold the answer is
//! scored (a blocked matrix product, [`BatchSearcher`]) and the top k merged across the
//! shards — on the CPU or, in a build with feature `gpu` and a CUDA device, on the GPU.
//! Both backends compute the same exact top k, so where a batch ran changes its latency,
//! never its hits (up to float rounding of equal scores).
//!
//! - [`choose_device`]: the routing rule, a pure function: GPU from 100 queries or 1024
//!   dimensions (the thresholds of [`RoutePolicy`]), CPU for smaller batches, CPU when no
//!   GPU is available or its queue is full; `device: "cpu"` forces the CPU, `"gpu"` asks
//!   for the GPU and falls back with the reason stated. The answer says where the batch
//!   ran and why.
//! - Per shard held here, the matrix of its live vectors is built once from an LMDB
//!   snapshot ([`hektor_indexers::shard::ExactView`]) and cached, keyed by the snapshot's
//!   version (the last write transaction it sees): any write, build or checkpoint of the
//!   shard makes the next batch rebuild it. A tenant's batch builds the matrix of the
//!   tenant's ring range only.
//! - The hits' ids and payloads are read from the very snapshot that was searched.
//!
//! - **GPU nodes** ([`gpu_nodes`]): when the rule sends a batch to the GPU and this node
//!   has none, the batch is forwarded to a live node with the `gpu` role that holds every
//!   shard of the query (`POST /internal/collections/{c}/search-batch`, never forwarded
//!   again), and its answer says so (`node`, `forwarded_by`, `why`); with no such node,
//!   or none answering, it runs on this node's CPU and `why` says why.
//!
//! Every shard of the query must be held by the node that runs it: a shard only on other
//! nodes is a 503 saying so (the batch path has no per-shard call to other nodes yet). The
//! search runs on a blocking thread, never on an async worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use hektor_control::Routing;
use hektor_indexers::batch::{route, Backend, BatchSearcher, RoutePolicy};
use hektor_indexers::host::HostedShard;
use hektor_topics::record::{Distance, RingRange};
use hektor_topics::ring;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::router::{SearchHit, Searcher, MAX_K};
use crate::QueryError;

/// Most queries one batch may hold.
pub const MAX_BATCH_QUERIES: usize = 10_000;
/// GPU batches running or waiting for the device at once; a batch finding this many goes
/// to the CPU ("the GPU queue is full").
pub const GPU_QUEUE: usize = 4;
/// Most floats the cache of shard matrices holds (1 GiB); past it, older entries go.
const CACHE_BUDGET_FLOATS: usize = 256 << 20;
/// How long a batch waits for a shard this node is assigned but has not opened yet.
const SHARD_WAIT: Duration = Duration::from_secs(10);
/// The role of nodes that take GPU batches (`hektor serve --roles ...,gpu`).
pub const GPU_ROLE: &str = "gpu";
/// How long a forwarded batch may take on the `gpu` node before this node gives up on it
/// and runs it on its own CPU.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a batch should run, as the request asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The routing rule decides (the default).
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The GPU whatever the batch's size; the CPU, with the reason, when none is usable.
    Gpu,
}

/// Where a batch ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RanOn {
    Cpu,
    Gpu,
}

/// Whether this node's GPU can take a batch now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuState {
    /// A device is there and its queue has room.
    Ready,
    /// [`GPU_QUEUE`] batches are already running or waiting on it.
    QueueFull,
    /// No GPU: the reason (no `gpu` feature in this build, no CUDA device, ...).
    Unavailable(String),
}

/// The routing rule's answer: where to run and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub ran_on: RanOn,
    pub why: String,
}

/// The routing rule (seed §2.3). `auto`: [`route`] with `policy` (GPU from
/// `gpu_min_batch` queries, or two or more queries of at least `gpu_min_dim`
/// dimensions), the CPU when the GPU is not [`GpuState::Ready`]; `cpu`: the CPU;
/// `gpu`: the GPU when it is ready, else the CPU. `why` names the rule that decided.
pub fn choose_device(
    queries: usize,
    dim: usize,
    device: Device,
    gpu: &GpuState,
    policy: &RoutePolicy,
) -> Decision {
    let cpu = |why: String| Decision {
        ran_on: RanOn::Cpu,
        why,
    };
    let gpu_down = match gpu {
        GpuState::Ready => None,
        GpuState::QueueFull => Some(format!(
            "the GPU queue is full ({GPU_QUEUE} batches running or waiting)"
        )),
        GpuState::Unavailable(reason) => Some(format!("no GPU is available: {reason}")),
    };
    match device {
        Device::Cpu => cpu("device \"cpu\" was asked for".into()),
        Device::Gpu => match gpu_down {
            None => Decision {
                ran_on: RanOn::Gpu,
                why: "device \"gpu\" was asked for".into(),
            },
            Some(down) => cpu(format!(
                "device \"gpu\" was asked for, but {down}; ran on the CPU"
            )),
        },
        Device::Auto => {
            let size = format!("{queries} queries of {dim} dimensions");
            let thresholds = format!(
                "the GPU takes batches of at least {} queries or {} dimensions",
                policy.gpu_min_batch, policy.gpu_min_dim
            );
            match route(queries, dim, true, policy) {
                Backend::Cpu => cpu(format!("{size} stay on the CPU ({thresholds})")),
                Backend::Gpu => match gpu_down {
                    None => Decision {
                        ran_on: RanOn::Gpu,
                        why: format!("{size} go to the GPU ({thresholds})"),
                    },
                    Some(down) => cpu(format!(
                        "{size} would go to the GPU ({thresholds}), but {down}; ran on the CPU"
                    )),
                },
            }
        }
    }
}

/// The body of `POST /collections/{c}/search/batch`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSearchRequest {
    /// The queries, each of the collection's dimension (1 to 10,000 of them).
    pub vectors: Vec<Vec<f32>>,
    /// Hits per query (1 to 1000; default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Search only this tenant's vectors.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Leave payloads out of the hits.
    #[serde(default)]
    pub without_payload: bool,
    /// `auto` (default), `cpu` or `gpu`: see the route's description.
    #[serde(default)]
    pub device: Device,
}

fn default_k() -> usize {
    10
}

/// One query's answer: its hits, best first, as `/search` answers them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub hits: Vec<SearchHit>,
}

/// The answer of a batch search.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchSearchResponse {
    /// One per query, in the order of the request's `vectors`.
    pub results: Vec<BatchResult>,
    /// Where the batch ran: the device of [`BatchSearchResponse::node`].
    pub ran_on: RanOn,
    /// Why it ran there (the routing rule that decided, why the GPU was not used, and
    /// whether and why it was forwarded to a `gpu` node).
    pub why: String,
    /// The node that searched: the one the batch was sent to, or the `gpu` node it
    /// forwarded the batch to.
    pub node: String,
    /// The node the batch was sent to, when it forwarded it to `node` (else null).
    pub forwarded_by: Option<String>,
    /// Queries answered.
    pub queries: usize,
    /// Shards searched.
    pub shards: usize,
    /// The shard-map epoch that served it.
    pub epoch: u64,
    pub took_us: u64,
}

impl BatchSearchRequest {
    /// The door's checks: a batch of 1 to [`MAX_BATCH_QUERIES`] finite queries of the
    /// collection's dimension, k within 1 to [`MAX_K`].
    pub fn check(&self, collection: &str, dimension: u32) -> Result<(), QueryError> {
        let invalid = |m: String| {
            Err(QueryError::Invalid(format!(
                "collection `{collection}`: {m}"
            )))
        };
        if self.vectors.is_empty() {
            return invalid("the batch is empty: `vectors` needs at least one query".into());
        }
        if self.vectors.len() > MAX_BATCH_QUERIES {
            return invalid(format!(
                "the batch holds {} queries, at most {MAX_BATCH_QUERIES} are allowed; split it",
                self.vectors.len()
            ));
        }
        if self.k == 0 || self.k > MAX_K {
            return invalid(format!("k must be between 1 and {MAX_K}, got {}", self.k));
        }
        for (i, v) in self.vectors.iter().enumerate() {
            if v.len() != dimension as usize {
                return invalid(format!(
                    "vectors[{i}] has {} dimensions, the collection has {dimension}",
                    v.len()
                ));
            }
            if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
                return invalid(format!("vectors[{i}][{pos}] is not a finite number"));
            }
        }
        Ok(())
    }
}

/// Whether this node's GPU can take a batch now (see [`GpuState`]).
pub fn gpu_state() -> GpuState {
    #[cfg(not(feature = "gpu"))]
    {
        GpuState::Unavailable(
            "this node was built without the `gpu` feature (no CUDA backend)".into(),
        )
    }
    #[cfg(feature = "gpu")]
    {
        static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let probe = PROBE.get_or_init(|| {
            hektor_indexers::batch::gpu::probe()
                .map(|_| ())
                .map_err(|e| format!("no CUDA device: {e}"))
        });
        match probe {
            Err(reason) => GpuState::Unavailable(reason.clone()),
            Ok(()) if GPU_IN_FLIGHT.load(Ordering::Acquire) >= GPU_QUEUE => GpuState::QueueFull,
            Ok(()) => GpuState::Ready,
        }
    }
}

/// GPU batches running or waiting now.
static GPU_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A place in the GPU queue, given back on drop.
struct GpuSlot;

impl GpuSlot {
    fn take() -> Option<GpuSlot> {
        GPU_IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < GPU_QUEUE).then_some(n + 1)
            })
            .ok()
            .map(|_| GpuSlot)
    }
}

impl Drop for GpuSlot {
    fn drop(&mut self) {
        GPU_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A shard's (or a tenant's part of a shard's) live vectors ready for batch search.
struct Matrix {
    /// The shard snapshot's version it was built from.
    version: u64,
    /// The item of each row.
    items: Vec<u32>,
    /// `None` for no rows.
    cpu: Option<BatchSearcher>,
    #[cfg(feature = "gpu")]
    vectors: Vec<f32>,
    /// Built on first use by a GPU batch (`Err`: why it could not be).
    #[cfg(feature = "gpu")]
    gpu: std::sync::OnceLock<Result<BatchSearcher, String>>,
    floats: usize,
}

/// The cached matrices, by shard directory and tenant range.
type CacheKey = (PathBuf, Option<RingRange>);

static CACHE: LazyLock<Mutex<HashMap<CacheKey, Arc<Matrix>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The matrix of `view`'s vectors (in `range`), from the cache when its version matches.
fn matrix(
    shard: &HostedShard,
    view: &hektor_indexers::shard::ExactView<'_>,
    range: Option<RingRange>,
    distance: Distance,
    dim: usize,
) -> Result<Arc<Matrix>, QueryError> {
    let key = (shard.shard.path().to_path_buf(), range);
    let version = view.version();
    if let Some(m) = CACHE.lock().get(&key).filter(|m| m.version == version) {
        return Ok(Arc::clone(m));
    }
    let built = view.matrix(range).map_err(engine_error)?;
    let floats = built.vectors.len();
    let cpu = if built.items.is_empty() {
        None
    } else {
        #[cfg(feature = "gpu")]
        let base = built.vectors.clone();
        #[cfg(not(feature = "gpu"))]
        let base = built.vectors;
        Some(BatchSearcher::cpu(base, dim, distance).map_err(engine_error)?)
    };
    let m = Arc::new(Matrix {
        version,
        items: built.items,
        cpu,
        #[cfg(feature = "gpu")]
        vectors: built.vectors,
        #[cfg(feature = "gpu")]
        gpu: std::sync::OnceLock::new(),
        floats,
    });
    let mut cache = CACHE.lock();
    cache.remove(&key);
    let mut held: usize = cache.values().map(|m| m.floats).sum();
    while held + floats > CACHE_BUDGET_FLOATS && !cache.is_empty() {
        let Some(victim) = cache.keys().next().cloned() else {
            break;
        };
        if let Some(gone) = cache.remove(&victim) {
            held -= gone.floats;
        }
    }
    if floats <= CACHE_BUDGET_FLOATS {
        cache.insert(key, Arc::clone(&m));
    }
    Ok(m)
}

/// An engine's error as the query's: a bad query is the caller's, anything else ours.
fn engine_error(e: hektor_indexers::Error) -> QueryError {
    match e {
        hektor_indexers::Error::InvalidQuery(m) => QueryError::Invalid(m),
        other => QueryError::Internal(other.to_string()),
    }
}

/// Whether the routing rule wants the GPU for this batch: `gpu` asked for, or `auto` and
/// the batch's size ([`route`]).
pub fn wants_gpu(queries: usize, dim: usize, device: Device, policy: &RoutePolicy) -> bool {
    match device {
        Device::Cpu => false,
        Device::Gpu => true,
        Device::Auto => route(queries, dim, true, policy) == Backend::Gpu,
    }
}

/// The nodes a batch may be forwarded to, in the order to try them: alive, not draining,
/// with the `gpu` role, not `routing.me`, holding a replica of every shard in `shards`
/// (the batch runs where every shard is local); by id. `(id, address)`.
pub fn gpu_nodes(routing: &Routing, shards: &[hektor_cluster::Shard]) -> Vec<(String, String)> {
    routing
        .nodes
        .iter()
        .filter(|(id, n)| {
            n.alive
                && !n.leaving
                && **id != routing.me
                && n.roles.iter().any(|r| r == GPU_ROLE)
                && shards.iter().all(|s| s.replicas.contains(id))
        })
        .map(|(id, n)| (id.clone(), n.address.clone()))
        .collect()
}

/// Validate, route, search every shard of the query held here (or forward the batch to a
/// `gpu` node, see the module doc), merge per query.
pub async fn batch_search(
    searcher: &Searcher,
    collection: &str,
    request: BatchSearchRequest,
) -> Result<BatchSearchResponse, QueryError> {
    run(searcher, collection, request, true).await
}

/// A batch another node forwarded here (to this node's GPU): run here, never forwarded.
pub async fn forwarded_batch_search(
    searcher: &Searcher,
    collection: &str,
    request: BatchSearchRequest,
) -> Result<BatchSearchResponse, QueryError> {
    run(searcher, collection, request, false).await
}

/// Send the batch to the `gpu` node `id` at `address`; its answer, or why not.
async fn forward(
    searcher: &Searcher,
    address: &str,
    collection: &str,
    request: &BatchSearchRequest,
) -> Result<BatchSearchResponse, String> {
    let url = format!(
        "{}://{address}/internal/collections/{collection}/search-batch",
        searcher.scheme()
    );
    let response = searcher
        .internal_post(url)
        .timeout(FORWARD_TIMEOUT)
        .json(request)
        .send()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(format!("answered {status}: {error}"));
    }
    response
        .json()
        .await
        .map_err(|e| format!("unreadable answer: {e}"))
}

async fn run(
    searcher: &Searcher,
    collection: &str,
    request: BatchSearchRequest,
    may_forward: bool,
) -> Result<BatchSearchResponse, QueryError> {
    let started = Instant::now();
    let spec = searcher
        .host()
        .catalog()
        .get(collection)
        .ok_or_else(|| QueryError::UnknownCollection(collection.into()))?;
    request.check(&spec.name, spec.dimension)?;
    let map = searcher.map(collection).await?;
    let routing = searcher.routing();
    let filter: Option<RingRange> = request.tenant.as_deref().map(ring::tenant_range);
    let shards = match filter {
        Some(range) => map.overlapping(range),
        None => map.shards(),
    };
    // The rule wants the GPU and this node has none: a `gpu` node takes it.
    let local_gpu = gpu_state();
    let mut not_forwarded = None;
    if let GpuState::Unavailable(reason) = &local_gpu {
        let policy = RoutePolicy::default();
        let (queries, dim) = (request.vectors.len(), spec.dimension as usize);
        if may_forward && wants_gpu(queries, dim, request.device, &policy) {
            let mut failed = Vec::new();
            for (id, address) in gpu_nodes(&routing, shards) {
                match forward(searcher, &address, collection, &request).await {
                    Ok(mut answer) => {
                        answer.why = format!(
                            "{} has no GPU ({reason}); forwarded to the `gpu` node {id}, \
                             where: {}",
                            routing.me, answer.why
                        );
                        answer.forwarded_by = Some(routing.me.clone());
                        answer.took_us = started.elapsed().as_micros() as u64;
                        return Ok(answer);
                    }
                    Err(err) => {
                        tracing::warn!(node = %id, %collection, %err, "a gpu node did not take a batch");
                        failed.push(format!("{id} {err}"));
                    }
                }
            }
            not_forwarded = Some(if failed.is_empty() {
                "no live `gpu` node holds every shard of the query".to_owned()
            } else {
                format!("the `gpu` nodes did not take it: {}", failed.join("; "))
            });
        }
    }
    let mut held = Vec::with_capacity(shards.len());
    for s in shards {
        let hosted = if s.replicas.contains(&routing.me) {
            searcher
                .host()
                .resolve_shard(collection, s.range, SHARD_WAIT)
                .await
        } else {
            None
        };
        let Some(hosted) = hosted else {
            return Err(QueryError::Unavailable(format!(
                "batch search needs every shard of the query on the node it is sent to; shard \
                 [{:#x}, {}) of `{collection}` is held by {} and not by this node ({})",
                s.range.start,
                s.range.end.map_or("2^64".into(), |e| format!("{e:#x}")),
                if s.replicas.is_empty() {
                    "no node".to_owned()
                } else {
                    s.replicas.join(", ")
                },
                routing.me,
            )));
        };
        held.push(hosted);
    }
    let dim = spec.dimension as usize;
    let queries = request.vectors.len();
    let mut decision = choose_device(
        queries,
        dim,
        request.device,
        &local_gpu,
        &RoutePolicy::default(),
    );
    if let Some(why) = not_forwarded {
        decision.why = format!("{}; {why}", decision.why);
    }
    let (k, payload, distance) = (request.k, !request.without_payload, spec.distance);
    let flat: Vec<f32> = request.vectors.into_iter().flatten().collect();
    let shard_count = held.len();
    let searched = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            search_held(&held, filter, &flat, k, payload, distance, dim, decision)
        }))
    })
    .await
    .map_err(|e| QueryError::Internal(format!("the batch search task failed: {e}")))?
    .map_err(|_| QueryError::Internal("the batch search panicked".into()))?;
    let (results, decision) = searched?;
    Ok(BatchSearchResponse {
        queries: results.len(),
        results,
        ran_on: decision.ran_on,
        why: decision.why,
        node: routing.me.clone(),
        forwarded_by: None,
        shards: shard_count,
        epoch: map.epoch(),
        took_us: started.elapsed().as_micros() as u64,
    })
}

/// Search `held` shards exactly for the `flat` queries and merge the top `k` per query;
/// blocking. Returns the results and where the batch really ran (a GPU that fails to
/// take a shard's base sends the batch back to the CPU, saying why).
#[allow(clippy::too_many_arguments)]
fn search_held(
    held: &[Arc<HostedShard>],
    filter: Option<RingRange>,
    flat: &[f32],
    k: usize,
    payload: bool,
    distance: Distance,
    dim: usize,
    mut decision: Decision,
) -> Result<(Vec<BatchResult>, Decision), QueryError> {
    let queries = flat.len() / dim;
    // The GPU slot is taken for the whole batch; none left: the CPU.
    let _slot = match decision.ran_on {
        RanOn::Gpu => match GpuSlot::take() {
            Some(slot) => Some(slot),
            None => {
                decision = Decision {
                    ran_on: RanOn::Cpu,
                    why: format!(
                        "{}; but the GPU queue filled up meanwhile ({GPU_QUEUE} batches), ran on the CPU",
                        decision.why
                    ),
                };
                None
            }
        },
        RanOn::Cpu => None,
    };
    let views = held
        .iter()
        .map(|h| h.shard.exact_view().map_err(engine_error))
        .collect::<Result<Vec<_>, _>>()?;
    // Per shard, per query: (item, score), best first.
    let mut answers: Vec<Vec<Vec<(u32, f32)>>> = Vec::with_capacity(held.len());
    for (hosted, view) in held.iter().zip(&views) {
        let m = matrix(hosted, view, filter, distance, dim)?;
        let Some(cpu) = &m.cpu else {
            answers.push(vec![Vec::new(); queries]);
            continue;
        };
        let searcher = pick(&m, cpu, &mut decision, dim, distance);
        let rows = searcher.search(flat, k).map_err(engine_error)?;
        answers.push(
            rows.into_iter()
                .map(|hits| {
                    hits.into_iter()
                        .map(|(row, score)| (m.items[row as usize], score))
                        .collect()
                })
                .collect(),
        );
    }
    let mut results = Vec::with_capacity(queries);
    let mut best: Vec<(f32, usize, usize)> = Vec::new();
    for q in 0..queries {
        best.clear();
        for (s, answer) in answers.iter().enumerate() {
            best.extend(answer[q].iter().enumerate().map(|(i, h)| (h.1, s, i)));
        }
        // Stable: equal scores keep shard order, then each shard's own order.
        best.sort_by(|x, y| y.0.total_cmp(&x.0));
        best.truncate(k);
        let hits = best
            .iter()
            .map(|&(score, s, i)| {
                let hit = views[s]
                    .raw_hit(answers[s][q][i].0, score, payload)
                    .map_err(engine_error)?;
                Ok(SearchHit {
                    id: hit.id,
                    score,
                    payload: hit.payload,
                })
            })
            .collect::<Result<Vec<_>, QueryError>>()?;
        results.push(BatchResult { hits });
    }
    Ok((results, decision))
}

/// The searcher of `m` the batch runs on: the GPU one when the decision is the GPU and
/// it can be built (else the CPU one, and the decision says why).
#[cfg_attr(not(feature = "gpu"), allow(unused_variables))]
fn pick<'m>(
    m: &'m Matrix,
    cpu: &'m BatchSearcher,
    decision: &mut Decision,
    dim: usize,
    distance: Distance,
) -> &'m BatchSearcher {
    #[cfg(feature = "gpu")]
    if decision.ran_on == RanOn::Gpu {
        let built = m.gpu.get_or_init(|| {
            BatchSearcher::gpu(&m.vectors, dim, distance).map_err(|e| e.to_string())
        });
        match built {
            Ok(gpu) => return gpu,
            Err(e) => {
                *decision = Decision {
                    ran_on: RanOn::Cpu,
                    why: format!(
                        "{}; but the GPU could not take the shard: {e}; ran on the CPU",
                        decision.why
                    ),
                };
            }
        }
    }
    let _ = decision;
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(queries: usize, dim: usize, device: Device, gpu: &GpuState) -> Decision {
        choose_device(queries, dim, device, gpu, &RoutePolicy::default())
    }

    #[test]
    fn big_batches_and_wide_vectors_go_to_a_ready_gpu() {
        let ready = GpuState::Ready;
        assert_eq!(rule(100, 16, Device::Auto, &ready).ran_on, RanOn::Gpu);
        assert_eq!(rule(10_000, 16, Device::Auto, &ready).ran_on, RanOn::Gpu);
        assert_eq!(rule(2, 1024, Device::Auto, &ready).ran_on, RanOn::Gpu);
        let why = rule(150, 16, Device::Auto, &ready).why;
        assert!(why.contains("150 queries") && why.contains("GPU"), "{why}");
    }

    #[test]
    fn small_batches_stay_on_the_cpu() {
        let ready = GpuState::Ready;
        for (n, d) in [(1, 16), (99, 16), (3, 1023), (1, 4096)] {
            let d = rule(n, d, Device::Auto, &ready);
            assert_eq!(d.ran_on, RanOn::Cpu);
            assert!(d.why.contains("stay on the CPU"), "{}", d.why);
        }
    }

    #[test]
    fn no_gpu_or_a_full_queue_falls_back_with_the_reason() {
        let none = GpuState::Unavailable("built without the `gpu` feature".into());
        let d = rule(150, 16, Device::Auto, &none);
        assert_eq!(d.ran_on, RanOn::Cpu);
        assert!(d.why.contains("no GPU is available") && d.why.contains("`gpu` feature"));
        let d = rule(150, 16, Device::Auto, &GpuState::QueueFull);
        assert_eq!(d.ran_on, RanOn::Cpu);
        assert!(d.why.contains("queue is full"), "{}", d.why);
        // A small batch stays on the CPU for its size, whatever the GPU.
        let d = rule(3, 16, Device::Auto, &none);
        assert!(d.why.contains("stay on the CPU"), "{}", d.why);
    }

    #[test]
    fn the_request_can_force_a_device() {
        let d = rule(1000, 2048, Device::Cpu, &GpuState::Ready);
        assert_eq!(d.ran_on, RanOn::Cpu);
        assert!(d.why.contains("\"cpu\""));
        let d = rule(1, 4, Device::Gpu, &GpuState::Ready);
        assert_eq!(d.ran_on, RanOn::Gpu);
        let d = rule(1, 4, Device::Gpu, &GpuState::QueueFull);
        assert_eq!(d.ran_on, RanOn::Cpu);
        assert!(d.why.contains("\"gpu\"") && d.why.contains("queue is full"));
    }

    #[test]
    fn batches_go_to_live_gpu_nodes_that_hold_every_shard() {
        use hektor_control::NodeInfo;
        use hektor_topics::record::Tier;
        let node = |alive: bool, leaving: bool, roles: &[&str]| NodeInfo {
            address: "127.0.0.1:1".into(),
            alive,
            leaving,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            shards: Vec::new(),
        };
        let routing = Routing {
            me: "a".into(),
            maps: Default::default(),
            nodes: [
                ("a", node(true, false, &["router", "data", "gpu"])),
                ("g1", node(true, false, &["data", "gpu"])),
                ("g2", node(true, false, &["data", "gpu"])),
                ("g3", node(false, false, &["data", "gpu"])),
                ("g4", node(true, true, &["data", "gpu"])),
                ("d", node(true, false, &["data"])),
            ]
            .into_iter()
            .map(|(id, n)| (id.to_owned(), n))
            .collect(),
        };
        let shard = |replicas: &[&str]| hektor_cluster::Shard {
            range: ring::partition_range(0, 1),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            tier: Tier::Hot,
        };
        let all = [
            shard(&["a", "g1", "g2", "g3", "g4", "d"]),
            shard(&["g2", "g1", "g3", "g4", "d"]),
        ];
        let ids = |shards: &[hektor_cluster::Shard]| -> Vec<String> {
            gpu_nodes(&routing, shards)
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        // Not itself, not dead or draining ones, not nodes without the role.
        assert_eq!(ids(&all), ["g1", "g2"]);
        // Only nodes holding every shard of the query.
        assert_eq!(ids(&[all[0].clone(), shard(&["g2"])]), ["g2"]);
        assert!(ids(&[shard(&["d"])]).is_empty());
        let policy = RoutePolicy::default();
        assert!(wants_gpu(100, 16, Device::Auto, &policy));
        assert!(!wants_gpu(5, 16, Device::Auto, &policy));
        assert!(wants_gpu(1, 16, Device::Gpu, &policy));
        assert!(!wants_gpu(1000, 2048, Device::Cpu, &policy));
    }

    #[test]
    fn the_door_checks_every_query() {
        let request = |vectors: Vec<Vec<f32>>, k: usize| BatchSearchRequest {
            vectors,
            k,
            tenant: None,
            without_payload: false,
            device: Device::Auto,
        };
        let msg = |r: BatchSearchRequest| r.check("c", 2).unwrap_err().to_string();
        assert!(msg(request(vec![], 1)).contains("empty"));
        assert!(msg(request(vec![vec![0.0, 1.0], vec![1.0]], 1)).contains("vectors[1] has 1"));
        assert!(msg(request(vec![vec![0.0, f32::NAN]], 1)).contains("vectors[0][1]"));
        assert!(msg(request(vec![vec![0.0, 1.0]], 0)).contains("k must be"));
        assert!(msg(request(vec![vec![0.0, 1.0]; MAX_BATCH_QUERIES + 1], 1)).contains("at most"));
        assert!(request(vec![vec![0.0, 1.0]; 3], 10).check("c", 2).is_ok());
        assert_eq!(
            BatchSearchRequest::check(&request(vec![vec![0.0]], 1), "c", 2)
                .unwrap_err()
                .status(),
            422
        );
    }

    #[test]
    fn the_body_reads_devices_and_rejects_unknown_fields() {
        let r: BatchSearchRequest =
            serde_json::from_str(r#"{"vectors": [[1, 2]], "device": "gpu"}"#).unwrap();
        assert_eq!((r.device, r.k), (Device::Gpu, 10));
        assert!(serde_json::from_str::<BatchSearchRequest>(r#"{"vectors": [], "x": 1}"#).is_err());
        assert!(
            serde_json::from_str::<BatchSearchRequest>(r#"{"vectors": [], "device": "tpu"}"#)
                .is_err()
        );
    }
}
