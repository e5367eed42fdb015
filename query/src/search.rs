//! Search: the router. It takes the collection's shard map at its current epoch, picks
//! for every shard that can hold the answer a replica (this node when it holds one, else
//! the alive replica with the fewest requests in flight, skipping nodes that just failed),
//! asks it — in this process on a bounded pool, or over HTTP on another node — retries
//! the next replica on failure, and merges the top k. Every answer names the epoch of the
//! map it was served from; the shards of one map tile the ring, so each vector is searched
//! exactly once.
//!
//! Only the shards overlapping the tenant's ring range are searched when a tenant is
//! given, and the range is passed to each shard as a filter applied inside the engine. A
//! request carrying a write token makes every involved shard wait (bounded) until it has
//! applied the token's offset in its partition, wherever it runs.
//!
//! [`shard_search`] and [`shard_get`] are the per-shard calls other nodes' routers make
//! (`POST /internal/...`, see [`crate::http`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_cluster::ShardMap;
use hektor_control::Routing;
use hektor_indexers::host::{HostedShard, ShardHost};
use hektor_indexers::SearchOptions;
use hektor_topics::events::EventSink;
use hektor_topics::record::{EventKind, RingRange};
use hektor_topics::ring;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::QueryError;

/// Largest k a search may ask for.
pub const MAX_K: usize = 1000;
/// Largest per-search effort a search may ask for.
pub const MAX_EFFORT: usize = 10_000;
/// Default bound on a consistency wait.
pub const DEFAULT_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest consistency wait a search may ask for (`consistency.timeout_ms`).
pub const MAX_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(300);

/// The checks every search door shares (the public search and the per-shard call): k,
/// effort, the consistency wait, and the query vector against the collection.
fn check_search(
    vector: &[f32],
    dimension: u32,
    k: usize,
    effort: Option<usize>,
    timeout_ms: Option<u64>,
) -> Result<(), QueryError> {
    if vector.len() != dimension as usize {
        return Err(QueryError::Invalid(format!(
            "query vector has {} dimensions, the collection has {dimension}",
            vector.len(),
        )));
    }
    if let Some(pos) = vector.iter().position(|x| !x.is_finite()) {
        return Err(QueryError::Invalid(format!(
            "vector[{pos}] is not a finite number"
        )));
    }
    if k == 0 || k > MAX_K {
        return Err(QueryError::Invalid(format!(
            "k must be between 1 and {MAX_K}, got {k}"
        )));
    }
    if let Some(e) = effort.filter(|e| *e == 0 || *e > MAX_EFFORT) {
        return Err(QueryError::Invalid(format!(
            "effort must be between 1 and {MAX_EFFORT}, got {e}"
        )));
    }
    let max_ms = MAX_CONSISTENCY_TIMEOUT.as_millis() as u64;
    if let Some(t) = timeout_ms.filter(|t| *t > max_ms) {
        return Err(QueryError::Invalid(format!(
            "consistency.timeout_ms must be at most {max_ms}, got {t}"
        )));
    }
    Ok(())
}

/// How fresh a search must be.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// A write token (`{partition: offset}`) whose writes the search must see.
    #[serde(default)]
    pub after: Option<BTreeMap<u32, u64>>,
    /// How long to wait for it, in milliseconds (default 10,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The body of `POST /collections/{c}/search`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub consistency: Option<Consistency>,
    /// Leave payloads out of the hits.
    #[serde(default)]
    pub without_payload: bool,
    /// This search's effort, overriding the shards' configured one: the beam width of
    /// the hot and warm graphs (`ef_search`), the candidates the cold tier rescores. More
    /// finds more true neighbours and costs more; engines without the knob ignore it.
    #[serde(default)]
    pub effort: Option<usize>,
    /// `false` lets warm-tier shards answer from their int8 codes without re-reading the
    /// full vectors: the same hits, approximate scores, less memory touched. Default true.
    #[serde(default)]
    pub rescore: Option<bool>,
}

fn default_k() -> usize {
    10
}

/// One hit of a search: score is higher-is-closer for every distance.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// The answer of a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// Shards searched.
    pub shards: usize,
    /// The shard-map epoch that served it.
    pub epoch: u64,
    pub took_us: u64,
}

/// The body of a per-shard search (`POST /internal/collections/{c}/shard-search`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSearch {
    pub incarnation: u64,
    pub range: RingRange,
    /// The vectors-topic partition the range lies in (the write token's key).
    #[serde(default)]
    pub partition: u32,
    pub vector: Vec<f32>,
    pub k: usize,
    /// A tenant's ring range, applied inside the engine.
    #[serde(default)]
    pub filter: Option<RingRange>,
    /// Wait until the shard has applied this offset of its partition.
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The search's own effort (see [`SearchRequest::effort`]).
    #[serde(default)]
    pub effort: Option<usize>,
    /// See [`SearchRequest::rescore`].
    #[serde(default)]
    pub rescore: Option<bool>,
}

impl ShardSearch {
    /// Check a per-shard call from another node as strictly as a public search: the
    /// internal route is a door too.
    pub fn check(&self, dimension: u32) -> Result<(), QueryError> {
        check_search(
            &self.vector,
            dimension,
            self.k,
            self.effort,
            self.timeout_ms,
        )?;
        if let Some(f) = self.filter {
            if f.end.is_some_and(|e| e <= f.start) {
                return Err(QueryError::Invalid("the filter range is empty".into()));
            }
        }
        Ok(())
    }
}

/// One hit as it crosses between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireHit {
    pub id: String,
    pub score: f32,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

/// The answer of a per-shard search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardAnswer {
    pub hits: Vec<WireHit>,
}

/// The body of a per-shard read of one vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardGet {
    pub incarnation: u64,
    pub range: RingRange,
    pub id: String,
    /// The vector's tenant: with the id, its identity (absent: no tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// How long a router waits for a collection's first shard map, and a node for a shard
/// it was just assigned to open.
const MAP_WAIT: Duration = Duration::from_secs(10);
/// How long a node that failed a call is skipped.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// Requests in flight to a node and when it last failed.
#[derive(Default)]
struct NodeHealth {
    inflight: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

/// The searcher of one node: the router over the cluster's shards, this node's shards
/// and bounded pool, and the event sink.
pub struct Searcher {
    host: Arc<ShardHost>,
    pool: Arc<rayon::ThreadPool>,
    events: EventSink,
    routing: watch::Receiver<Arc<Routing>>,
    client: reqwest::Client,
    health: Mutex<HashMap<String, Arc<NodeHealth>>>,
    served: AtomicUsize,
    /// The `Authorization` value of calls to other nodes (the cluster secret), if any.
    internal_auth: Option<String>,
    /// `http` or `https`: how other nodes are called.
    scheme: &'static str,
}

impl Searcher {
    /// `threads`: size of the search pool (0 = one per core).
    pub fn new(
        host: Arc<ShardHost>,
        events: EventSink,
        threads: usize,
        routing: watch::Receiver<Arc<Routing>>,
    ) -> Result<Searcher, QueryError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hektor-search-{i}"))
            // Searches catch their own panics; this is the last line, so that nothing
            // that escapes a job aborts the process (rayon's default).
            .panic_handler(|_| tracing::error!("a job on the search pool panicked"))
            .build()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        Ok(Searcher {
            host,
            pool: Arc::new(pool),
            events,
            routing,
            client,
            health: Mutex::new(HashMap::new()),
            served: AtomicUsize::new(0),
            internal_auth: None,
            scheme: "http",
        })
    }

    /// Call other nodes over HTTPS with this client (one that trusts the cluster's CA).
    pub fn with_tls_client(mut self, client: reqwest::Client) -> Searcher {
        self.client = client;
        self.scheme = "https";
        self
    }

    /// Send this `Authorization` value (`Bearer <cluster secret>`) on every call to
    /// another node's internal routes.
    pub fn with_internal_auth(mut self, authorization: Option<String>) -> Searcher {
        self.internal_auth = authorization;
        self
    }

    /// A request to another node's internal route, with the cluster secret.
    fn internal_post(&self, url: String) -> reqwest::RequestBuilder {
        let request = self.client.post(url);
        match &self.internal_auth {
            Some(auth) => request.header(reqwest::header::AUTHORIZATION, auth),
            None => request,
        }
    }

    pub fn host(&self) -> &Arc<ShardHost> {
        &self.host
    }

    /// Count one shard search served by this node.
    pub fn note_shard_search(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Shard searches this node has served since it started.
    pub fn shard_searches(&self) -> u64 {
        self.served.load(Ordering::Relaxed) as u64
    }

    /// The cluster as this node sees it.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.borrow().clone()
    }

    /// The collection's current shard map (for its current incarnation), waiting
    /// (bounded) for the first one of a new collection.
    pub async fn map(&self, collection: &str) -> Result<Arc<ShardMap>, QueryError> {
        self.host.catalog().resolve(collection).await;
        let incarnation = self
            .host
            .catalog()
            .incarnation(collection)
            .ok_or_else(|| QueryError::UnknownCollection(collection.into()))?;
        let pick = |r: &Arc<Routing>| {
            r.maps
                .get(collection)
                .filter(|m| m.incarnation() == incarnation)
                .cloned()
        };
        if let Some(map) = pick(&self.routing.borrow()) {
            return Ok(map);
        }
        let mut rx = self.routing.clone();
        let waited = tokio::time::timeout(MAP_WAIT, async {
            loop {
                if let Some(map) = pick(&rx.borrow_and_update()) {
                    return Some(map);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        waited.ok().flatten().ok_or_else(|| {
            QueryError::Unavailable(format!(
                "collection `{collection}` has no shard map yet: no data node is alive, or the \
                 controller has not placed it; retry shortly"
            ))
        })
    }

    fn health_of(&self, node: &str) -> Arc<NodeHealth> {
        Arc::clone(self.health.lock().entry(node.to_owned()).or_default())
    }

    /// The replicas of shard `range` of `collection` in the order to try them: this node
    /// first, then alive nodes not marked down by their requests in flight, then the
    /// rest. This node's own copy goes behind the alive others while its consumer is
    /// failing (a full disk, say): it would only wait out the consistency timeout.
    fn replica_order(
        &self,
        routing: &Routing,
        collection: &str,
        range: RingRange,
        replicas: &[String],
    ) -> Vec<String> {
        let now = Instant::now();
        let local_failing = self
            .host
            .collection(collection)
            .is_some_and(|c| c.shard(range).is_some_and(|s| s.failure().is_some()));
        let mut scored: Vec<(u8, usize, String)> = replicas
            .iter()
            .map(|n| {
                let h = self.health_of(n);
                let down = h.down_until.lock().is_some_and(|t| t > now);
                let alive = n == &routing.me || routing.nodes.get(n).is_some_and(|i| i.alive);
                let class = if n == &routing.me && !local_failing {
                    0
                } else if n == &routing.me {
                    2
                } else if alive && !down {
                    1
                } else {
                    3
                };
                (class, h.inflight.load(Ordering::Relaxed), n.clone())
            })
            .collect();
        scored.sort();
        scored.into_iter().map(|(_, _, n)| n).collect()
    }

    /// Validate, wait for consistency, fan out, merge.
    pub async fn search(
        &self,
        collection: &str,
        request: SearchRequest,
    ) -> Result<SearchResponse, QueryError> {
        let started = Instant::now();
        let spec = self
            .host
            .catalog()
            .get(collection)
            .ok_or_else(|| QueryError::UnknownCollection(collection.into()))?;
        check_search(
            &request.vector,
            spec.dimension,
            request.k,
            request.effort,
            request.consistency.as_ref().and_then(|c| c.timeout_ms),
        )
        .map_err(|e| match e {
            QueryError::Invalid(m) => {
                QueryError::Invalid(format!("collection `{}`: {m}", spec.name))
            }
            other => other,
        })?;
        let map = self.map(collection).await?;
        let routing = self.routing();
        let filter: Option<RingRange> = request.tenant.as_deref().map(ring::tenant_range);
        let shards = match filter {
            Some(range) => map.overlapping(range),
            None => map.shards(),
        };
        let timeout = request
            .consistency
            .as_ref()
            .and_then(|c| c.timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
        let token = request.consistency.as_ref().and_then(|c| c.after.as_ref());
        let query = Arc::new(request.vector);
        let map_ref = &map;
        let calls = shards.iter().map(|s| {
            let map = map_ref;
            let partition = ring::partition_of(s.range.start, spec.partitions);
            let call = ShardSearch {
                incarnation: map.incarnation(),
                range: s.range,
                partition,
                vector: Vec::new(), // filled per remote call; local calls share `query`
                k: request.k,
                filter,
                after: token.and_then(|t| t.get(&partition).copied()),
                timeout_ms: Some(timeout.as_millis() as u64),
                effort: request.effort,
                rescore: request.rescore,
            };
            let order = self.replica_order(&routing, collection, s.range, &s.replicas);
            let query = Arc::clone(&query);
            let routing = &routing;
            let epoch = map.epoch();
            async move {
                let mut last_err = None;
                for node in order {
                    let result = if node == routing.me {
                        self.local_search(collection, &call, query.as_slice()).await
                    } else {
                        self.remote_search(routing, &node, collection, &call, &query)
                            .await
                    };
                    match result {
                        Ok(hits) => return Ok(hits),
                        // A consistency timeout is the answer, not a replica's failure.
                        Err(e @ QueryError::ConsistencyTimeout { .. }) => return Err(e),
                        Err(e) => last_err = Some(format!("{node}: {e}")),
                    }
                }
                Err(QueryError::Unavailable(format!(
                    "no replica of shard [{:#x}, {}) answered at epoch {}: {}",
                    call.range.start,
                    call.range.end.map_or("2^64".into(), |e| format!("{e:#x}")),
                    epoch,
                    last_err.unwrap_or_else(|| "it has no replicas".into())
                )))
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut all: Vec<WireHit> = Vec::with_capacity(request.k * shards.len());
        for result in results {
            all.extend(result?);
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all.truncate(request.k);
        let hits = all
            .into_iter()
            .map(|h| SearchHit {
                id: h.id,
                score: h.score,
                payload: if request.without_payload {
                    None
                } else {
                    h.payload
                },
            })
            .collect();
        let took = started.elapsed();
        Ok(SearchResponse {
            hits,
            shards: shards.len(),
            epoch: map.epoch(),
            took_us: took.as_micros() as u64,
        })
    }

    /// Search a shard this node holds.
    async fn local_search(
        &self,
        collection: &str,
        call: &ShardSearch,
        query: &[f32],
    ) -> Result<Vec<WireHit>, QueryError> {
        let shard = self
            .host
            .resolve_shard(collection, call.range, MAP_WAIT)
            .await
            .ok_or_else(|| {
                QueryError::NotReady(format!("{collection} (shard not held by this node)"))
            })?;
        self.note_shard_search();
        shard_search(&self.pool, &self.events, &shard, call, query.to_vec()).await
    }

    async fn remote_search(
        &self,
        routing: &Routing,
        node: &str,
        collection: &str,
        call: &ShardSearch,
        query: &Arc<Vec<f32>>,
    ) -> Result<Vec<WireHit>, QueryError> {
        let address = routing
            .nodes
            .get(node)
            .map(|n| n.address.clone())
            .ok_or_else(|| QueryError::Unavailable(format!("node {node} has no known address")))?;
        let url = format!(
            "{}://{address}/internal/collections/{collection}/shard-search",
            self.scheme
        );
        let body = ShardSearch {
            vector: query.as_ref().clone(),
            ..call.clone()
        };
        let health = self.health_of(node);
        health.inflight.fetch_add(1, Ordering::Relaxed);
        let wait = call
            .timeout_ms
            .map_or(DEFAULT_CONSISTENCY_TIMEOUT, Duration::from_millis);
        let sent = self
            .internal_post(url)
            .timeout(wait + Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        health.inflight.fetch_sub(1, Ordering::Relaxed);
        let response = match sent {
            Ok(r) => r,
            Err(err) => {
                *health.down_until.lock() = Some(Instant::now() + DOWN_FOR);
                return Err(QueryError::Unavailable(format!("unreachable: {err}")));
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            let answer: ShardAnswer = response
                .json()
                .await
                .map_err(|e| QueryError::Unavailable(format!("unreadable answer: {e}")))?;
            return Ok(answer.hits);
        }
        let text = response.text().await.unwrap_or_default();
        if status == 504 {
            return Err(QueryError::ConsistencyTimeout {
                partition: call.partition,
                applied: 0,
                needed: call.after.unwrap_or(0),
                waited_ms: wait.as_millis() as u64,
            });
        }
        Err(QueryError::Unavailable(format!("HTTP {status}: {text}")))
    }

    /// Read one vector by tenant and id from the shard holding it.
    pub async fn get(
        &self,
        collection: &str,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<(WireVector, RingRange, u64), QueryError> {
        let map = self.map(collection).await?;
        let routing = self.routing();
        let position = ring::position(tenant, id);
        let shard = map.shard_for(position);
        let call = ShardGet {
            incarnation: map.incarnation(),
            range: shard.range,
            id: id.to_owned(),
            tenant: tenant.map(str::to_owned),
        };
        let mut last_err = String::from("it has no replicas");
        for node in self.replica_order(&routing, collection, shard.range, &shard.replicas) {
            let result = if node == routing.me {
                match self
                    .host
                    .resolve_shard(collection, shard.range, MAP_WAIT)
                    .await
                {
                    Some(hosted) => shard_get(&hosted, tenant, id).await.map(|v| {
                        v.map(|v| WireVector {
                            id: v.id,
                            vector: v.vector,
                            payload: v.payload,
                        })
                    }),
                    None => Err(QueryError::NotReady(collection.into())),
                }
            } else {
                self.remote_get(&routing, &node, collection, &call).await
            };
            match result {
                Ok(Some(v)) => return Ok((v, shard.range, map.epoch())),
                Ok(None) => return Err(QueryError::NotFound(id.into())),
                Err(e) => last_err = format!("{node}: {e}"),
            }
        }
        Err(QueryError::Unavailable(format!(
            "no replica of the shard holding `{id}` answered: {last_err}"
        )))
    }

    async fn remote_get(
        &self,
        routing: &Routing,
        node: &str,
        collection: &str,
        call: &ShardGet,
    ) -> Result<Option<WireVector>, QueryError> {
        let address = routing
            .nodes
            .get(node)
            .map(|n| n.address.clone())
            .ok_or_else(|| QueryError::Unavailable(format!("node {node} has no known address")))?;
        let url = format!(
            "{}://{address}/internal/collections/{collection}/shard-get",
            self.scheme
        );
        let response = self
            .internal_post(url)
            .timeout(Duration::from_secs(10))
            .json(call)
            .send()
            .await
            .map_err(|e| {
                *self.health_of(node).down_until.lock() = Some(Instant::now() + DOWN_FOR);
                QueryError::Unavailable(format!("unreachable: {e}"))
            })?;
        match response.status().as_u16() {
            200 => {
                let v: WireVector = response
                    .json()
                    .await
                    .map_err(|e| QueryError::Unavailable(format!("unreadable answer: {e}")))?;
                Ok(Some(v))
            }
            404 => {
                let text = response.text().await.unwrap_or_default();
                if text.contains("not held") {
                    Err(QueryError::Unavailable(text))
                } else {
                    Ok(None)
                }
            }
            s => Err(QueryError::Unavailable(format!(
                "HTTP {s}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    }
}

/// A stored vector as it crosses between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireVector {
    pub id: String,
    pub vector: Vec<f32>,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

/// Search one shard held here: wait for the token, search on the pool, record the event.
pub async fn shard_search(
    pool: &Arc<rayon::ThreadPool>,
    events: &EventSink,
    hosted: &Arc<HostedShard>,
    call: &ShardSearch,
    query: Vec<f32>,
) -> Result<Vec<WireHit>, QueryError> {
    let started = Instant::now();
    if let Some(needed) = call.after {
        let timeout = call
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
        if !hosted.wait_applied(needed, timeout).await {
            return Err(QueryError::ConsistencyTimeout {
                partition: hosted.partition,
                applied: hosted.next_offset().saturating_sub(1),
                needed,
                waited_ms: timeout.as_millis() as u64,
            });
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shard = Arc::clone(&hosted.shard);
    let (k, filter) = (call.k, call.filter);
    let options = SearchOptions {
        effort: call.effort.map(|e| e.min(MAX_EFFORT)),
        rescore: call.rescore.unwrap_or(true),
    };
    pool.spawn(move || {
        // A panic in an engine costs this search (a 500), never the pool or the process.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shard.search_with(&query, k, filter, options)
        }));
        let _ = tx.send(outcome);
    });
    let hits = match rx
        .await
        .map_err(|_| QueryError::Internal("the search pool dropped a query".into()))?
    {
        Ok(result) => result.map_err(|e| match e {
            hektor_indexers::Error::InvalidQuery(m) => QueryError::Invalid(m),
            other => QueryError::Internal(other.to_string()),
        })?,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            tracing::error!(collection = %hosted.collection, partition = hosted.partition, panic = %what, "a shard search panicked");
            return Err(QueryError::Internal(format!(
                "the search of shard {} of `{}` failed: {what}",
                hosted.partition, hosted.collection
            )));
        }
    };
    let latency_us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
    events.record(
        &hosted.collection,
        hosted.partition,
        filter.map_or(hosted.range.start, |r| r.start.max(hosted.range.start)),
        EventKind::Query,
        latency_us,
    );
    Ok(hits
        .into_iter()
        .map(|h| WireHit {
            id: h.id,
            score: h.score,
            payload: h.payload,
        })
        .collect())
}

/// Read one vector, (`tenant`, `id`), from a shard held here.
pub async fn shard_get(
    hosted: &Arc<HostedShard>,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<hektor_indexers::StoredVector>, QueryError> {
    let shard = Arc::clone(&hosted.shard);
    let (tenant, id) = (tenant.map(str::to_owned), id.to_owned());
    tokio::task::spawn_blocking(move || shard.get(tenant.as_deref(), &id))
        .await
        .map_err(|e| QueryError::Internal(e.to_string()))?
        .map_err(|e| QueryError::Internal(e.to_string()))
}

impl Searcher {
    /// The pool and event sink, for the internal per-shard routes.
    pub fn pool(&self) -> &Arc<rayon::ThreadPool> {
        &self.pool
    }

    pub fn events(&self) -> &EventSink {
        &self.events
    }
}
