//! The read side of the HTTP API:
//!
//! - `POST /collections/{c}/search` [`SearchRequest`] → `{"hits": [{"id", "score",
//!   "payload"}], "shards", "took_us"}`; score is higher-is-closer for every distance
//!   (cosine similarity, negated euclidean distance, dot product).
//! - `GET /collections/{c}/vectors/{id}[?tenant=t]` → the stored vector and payload.
//! - `GET /collections` and `GET /collections/{c}` (settings, size and lag per shard).
//! - `GET /health`, `GET /metrics` (Prometheus text format).
//! - `GET /cluster`: per collection and shard the range, vectors and lag (from the host)
//!   merged with the kinetic planner's hotness, qps, p99 and hot/cold; the node's load vs
//!   capacity; and the planner's recent decisions (not applied). The planner's part comes
//!   from [`QueryState::cluster`], a callback the binary wires, so this crate does not
//!   depend on the dataflow crate.
//!
//! Errors are `{"error": "message"}` with 400, 404, 422, 503 or 504.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hektor_indexers::host::HostedCollection;
use hektor_topics::ring;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::Metrics;
use crate::search::{SearchRequest, Searcher};
use crate::QueryError;

/// What the read routes need.
#[derive(Clone)]
pub struct QueryState {
    pub searcher: Arc<Searcher>,
    pub metrics: Arc<Metrics>,
    pub events_dropped: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The kinetic planner's view (`{"planner", "collections": {name: {"shards":
    /// {"<shard>": {...}}}}, "nodes", "decisions"}`); `None` when the planner is off.
    pub cluster: Option<ClusterView>,
}

/// A callback returning the kinetic planner's view as JSON.
pub type ClusterView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

struct ApiError(u16, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> ApiError {
        ApiError(err.status(), err.to_string())
    }
}

/// The read routes, ready to merge into the node's router.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/collections", get(list_collections))
        .route("/collections/{collection}", get(show_collection))
        .route("/collections/{collection}/search", post(search))
        .route("/collections/{collection}/vectors/{id}", get(get_vector))
        .route("/cluster", get(cluster))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Count requests and time them by route; wrap the node's whole router with it.
pub fn instrument(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let metrics = Arc::clone(&metrics);
        async move {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| format!("{} {}", req.method(), p.as_str()))
                .unwrap_or_else(|| "unmatched".into());
            let started = Instant::now();
            let response = next.run(req).await;
            metrics
                .latency
                .with_label_values(&[route.as_str()])
                .observe(started.elapsed().as_secs_f64());
            metrics
                .requests
                .with_label_values(&[route.as_str(), response.status().as_str()])
                .inc();
            response
        }
    }))
}

async fn search(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError(r.status().as_u16(), r.body_text()))?;
    if state.searcher.host().resolve(&collection).await.is_none() {
        return Err(QueryError::UnknownCollection(collection).into());
    }
    let request: SearchRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError(400, format!("invalid JSON body: {err}")))?;
    let response = state.searcher.search(&collection, request).await?;
    Ok(Json(response).into_response())
}

#[derive(Debug, Deserialize)]
struct GetParams {
    tenant: Option<String>,
}

async fn get_vector(
    State(state): State<QueryState>,
    Path((collection, id)): Path<(String, String)>,
    Query(params): Query<GetParams>,
) -> Result<Response, ApiError> {
    let hosted = state
        .searcher
        .host()
        .resolve(&collection)
        .await
        .ok_or_else(|| QueryError::UnknownCollection(collection.clone()))?;
    let position = ring::position(params.tenant.as_deref(), &id);
    let partition = ring::partition_of(position, hosted.spec.partitions);
    let shard = hosted
        .shards
        .get(partition as usize)
        .ok_or_else(|| QueryError::NotReady(collection.clone()))?;
    let stored = shard
        .shard
        .get(&id)
        .map_err(|e| QueryError::Internal(e.to_string()))?
        .ok_or_else(|| QueryError::NotFound(id.clone()))?;
    Ok(Json(json!({
        "id": stored.id,
        "vector": stored.vector,
        "payload": stored.payload,
        "shard": partition,
    }))
    .into_response())
}

fn describe(hosted: &HostedCollection) -> serde_json::Value {
    let shards: Vec<_> = hosted
        .shards
        .iter()
        .map(|s| {
            let stats = s.shard.stats();
            json!({
                "shard": s.partition,
                "range": ring::partition_range(s.partition, hosted.spec.partitions),
                "vectors": stats.len,
                "pending": stats.pending,
                "next_offset": s.next_offset(),
                "lag": s.lag(),
                "dead_lettered": s.dead_lettered(),
            })
        })
        .collect();
    let vectors: u64 = hosted.shards.iter().map(|s| s.shard.len()).sum();
    json!({ "settings": hosted.spec, "vectors": vectors, "shards": shards })
}

async fn list_collections(State(state): State<QueryState>) -> Response {
    // The catalog is the source of truth (shards of a just-created collection may still
    // be opening).
    let specs = state.searcher.host().catalog().list();
    Json(json!({ "collections": specs })).into_response()
}

async fn show_collection(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
) -> Result<Response, ApiError> {
    let hosted = state
        .searcher
        .host()
        .resolve(&collection)
        .await
        .ok_or(QueryError::UnknownCollection(collection))?;
    Ok(Json(describe(&hosted)).into_response())
}

/// The shard map with hotness: host facts per shard, planner facts merged in by shard.
async fn cluster(State(state): State<QueryState>) -> Response {
    let planner = state.cluster.as_ref().map(|view| view());
    let mut hosted = state.searcher.host().collections();
    hosted.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let collections: Vec<_> = hosted
        .iter()
        .map(|h| {
            let name = h.spec.name.as_str();
            let planned = planner
                .as_ref()
                .and_then(|p| p.get("collections"))
                .and_then(|c| c.get(name));
            let shards: Vec<_> = h
                .shards
                .iter()
                .map(|s| {
                    let seen = planned
                        .and_then(|c| c.get("shards"))
                        .and_then(|sh| sh.get(s.partition.to_string()));
                    let field = |k: &str| seen.and_then(|m| m.get(k)).cloned();
                    json!({
                        "shard": s.partition,
                        "range": ring::partition_range(s.partition, h.spec.partitions),
                        "vectors": s.shard.len(),
                        "lag": s.lag(),
                        "hotness": field("hotness").unwrap_or(json!(0.0)),
                        "qps_1m": field("qps_1m").unwrap_or(json!(0.0)),
                        "p99_ms": field("p99_ms").unwrap_or(json!(0.0)),
                        "writes_1m": field("writes_1m").unwrap_or(json!(0)),
                        "hot": field("hot").unwrap_or(json!(false)),
                        "cold": field("cold").unwrap_or(json!(false)),
                        // Shards the planner has no events for yet are still on this node.
                        "node": field("node").filter(|n| !n.is_null()).unwrap_or_else(|| {
                            planner
                                .as_ref()
                                .map(|p| p["planner"]["node"].clone())
                                .unwrap_or(serde_json::Value::Null)
                        }),
                    })
                })
                .collect();
            json!({
                "name": name,
                "partitions": h.spec.partitions,
                "epoch": planned.and_then(|c| c.get("epoch")).cloned().unwrap_or(json!(0)),
                "snapshot_time_s": planned.and_then(|c| c.get("time_s")).cloned(),
                "shards": shards,
            })
        })
        .collect();
    let part = |k: &str| {
        planner
            .as_ref()
            .and_then(|p| p.get(k))
            .cloned()
            .unwrap_or(json!([]))
    };
    Json(json!({
        "planner": planner.as_ref().and_then(|p| p.get("planner")).cloned(),
        "collections": collections,
        "nodes": part("nodes"),
        "decisions": part("decisions"),
    }))
    .into_response()
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn metrics(State(state): State<QueryState>) -> Response {
    let m = &state.metrics;
    for hosted in state.searcher.host().collections() {
        for s in &hosted.shards {
            let labels = [hosted.spec.name.as_str(), &s.partition.to_string()];
            m.shard_vectors
                .with_label_values(&labels)
                .set(s.shard.len() as i64);
            m.shard_pending
                .with_label_values(&labels)
                .set(s.shard.pending() as i64);
            m.shard_lag.with_label_values(&labels).set(s.lag() as i64);
            m.shard_dead_lettered
                .with_label_values(&labels)
                .set(s.dead_lettered() as i64);
        }
    }
    m.events_dropped
        .with_label_values(&["self"])
        .set((state.events_dropped)() as i64);
    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
}
