//! The read side of the HTTP API:
//!
//! - `POST /collections/{c}/search` [`SearchRequest`] → `{"hits": [{"id", "score",
//!   "payload"}], "shards", "epoch", "took_us"}`; score is higher-is-closer for every
//!   distance (cosine similarity, negated euclidean distance, dot product); `epoch` is the
//!   shard map that served it.
//! - `POST /collections/{c}/search/batch` [`BatchSearchRequest`] → `{"results": [{"hits":
//!   [...]}], "ran_on", "why", "queries", ...}`: exact top k per query, on the CPU or the
//!   GPU ([`crate::batch`]).
//! - `GET /collections/{c}/vectors/{id}[?tenant=t]` → the stored vector and payload, from
//!   whichever node holds it. A vector is its tenant and id together: `?tenant=t` reads
//!   tenant `t`'s `id`, without it the `id` written with no tenant.
//! - `GET /collections` and `GET /collections/{c}`: settings, the shard map (ranges,
//!   replicas, tiers, targets being built) and, for the shards this node holds, size, lag
//!   and engine; `vectors` sums this node's shards and `complete` says whether it holds
//!   them all.
//! - `GET /health` (503 when a shard held here has stopped following its partition),
//!   `GET /ready` (503 until every shard the maps give this node is open and caught up),
//!   `GET /metrics` (Prometheus text format).
//! - `GET /cluster`: per collection the map's shards with replicas, tier, local facts and
//!   the kinetic planner's hotness, qps, p99 and hot/cold per shard; the targets; the
//!   members with address, state and roles; the planner's decisions and the controller's
//!   recent map changes. The planner's part comes from [`QueryState::cluster`], a callback the
//!   binary wires, so this crate does not depend on the dataflow crate.
//! - `POST /internal/collections/{c}/shard-search` and `.../shard-get`: one shard's search
//!   or read for another node's router (404 when this node does not hold the shard);
//!   `.../search-batch`: a batch search forwarded to this `gpu` node ([`crate::batch`]);
//!   `.../region-search`: a bounded or strong search another region forwarded here;
//!   `.../token-floors`: a write token of this region turned into its clock floors, for
//!   another region's session read.
//! - `GET /internal/regions/probe` (another region's round-trip probe) and
//!   `GET /internal/regions/floors` (a stream of how far this node's shards merged another
//!   region's partitions: that region's `sync` and `quorum` acknowledgements); see
//!   [`crate::peers`].
//!
//! Errors are `{"error": "message"}` ([`ErrorBody`]) with 400, 404, 413, 422, 500, 503 or
//! 504. Every route is registered through `utoipa-axum`'s `OpenApiRouter` with its
//! `#[utoipa::path]` (method, path, body, answers and their statuses), so the node's
//! `GET /openapi.json` lists exactly these routes; the JSON shapes the handlers build
//! field by field are in [`crate::schema`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hektor_indexers::host::HostedCollection;
use hektor_topics::ring;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::batch::{batch_search, forwarded_batch_search, BatchSearchRequest, BatchSearchResponse};
use crate::metrics::{Metrics, NodeSource};
use crate::peers::{FloorLine, Probe};
use crate::router::{
    shard_get, shard_search, SearchRequest, SearchResponse, Searcher, ShardAnswer, ShardGet,
    ShardSearch, TokenFloors, TokenFloorsRequest, WireVector,
};
use crate::schema::{
    ClusterOverview, CollectionList, CollectionView, ErrorBody, Health, Ready, VectorView,
};
use crate::QueryError;
use hektor_cluster::ShardMap;

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
        let mut response = (status, Json(ErrorBody { error: self.1 })).into_response();
        // Unavailable for now (not ready yet, an archived shard being restored, no replica
        // answering): say when to ask again.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("2"),
            );
        }
        response
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> ApiError {
        ApiError(err.status(), err.to_string())
    }
}

/// The read routes with their OpenAPI description, ready to merge into the node's router
/// (one `routes!` per path: utoipa-axum routes every handler of a call on every path of it).
pub fn router(state: QueryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_collections))
        .routes(routes!(show_collection))
        .routes(routes!(search))
        .routes(routes!(search_batch))
        .routes(routes!(get_vector))
        .routes(routes!(internal_search))
        .routes(routes!(internal_search_batch))
        .routes(routes!(internal_get))
        .routes(routes!(internal_region_search))
        .routes(routes!(internal_token_floors))
        .routes(routes!(internal_region_probe))
        .routes(routes!(internal_region_floors))
        .routes(routes!(cluster))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
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

/// Search a collection: the `k` nearest vectors to `vector`, in one tenant's range when
/// `tenant` is given, after a write token when `consistency.after` is given.
#[utoipa::path(
    post,
    path = "/collections/{collection}/search",
    tag = "search",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "The hits, best first", body = SearchResponse),
        (status = 400, description = "The body is not a search request", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 422, description = "A value is out of range: dimension, k, effort, timeout", body = ErrorBody),
        (status = 500, description = "An engine failed on this search", body = ErrorBody),
        (status = 503, description = "A shard has no replica that answers, or is not open yet", body = ErrorBody),
        (status = 504, description = "The consistency wait ran out", body = ErrorBody),
    ),
)]
async fn search(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError(r.status().as_u16(), r.body_text()))?;
    if state
        .searcher
        .host()
        .catalog()
        .resolve(&collection)
        .await
        .is_none()
    {
        return Err(QueryError::UnknownCollection(collection).into());
    }
    let request = SearchRequest::from_json(&body)
        .map_err(|err| ApiError(400, format!("invalid JSON body: {err}")))?;
    let response = state.searcher.search(&collection, request).await?;
    Ok(search_response(&response))
}

/// A search's answer as `application/json`, the same bytes and headers `Json` writes,
/// rendered into one buffer sized for it up front (no regrowing per hit and payload); the
/// payloads are copied in as the stored JSON text.
fn search_response(response: &SearchResponse) -> Response {
    let payload_bytes: usize = response
        .hits
        .iter()
        .map(|h| h.payload.as_ref().map_or(0, |p| p.get().len() + 11))
        .sum();
    let hits_bytes: usize = response.hits.iter().map(|h| h.id.len() + 48).sum();
    let mut buf = Vec::with_capacity(96 + hits_bytes + payload_bytes);
    match serde_json::to_writer(&mut buf, response) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response(),
        // What `Json` answers when a value does not serialize.
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            err.to_string(),
        )
            .into_response(),
    }
}

/// Search a collection for a batch of queries at once, by EXACT search: every live vector
/// of every shard that can hold the answer is scored, and each query's top k merged across
/// the shards. The batch runs on the CPU or the GPU by the seed's routing rule (the GPU
/// from 100 queries or 1024 dimensions, when this node has one and its queue has room;
/// `device` forces the CPU or asks for the GPU); both compute the same exact top k, so
/// where it ran changes the latency, not the hits. The answer says where it ran and why.
/// When the rule wants the GPU and this node has none, a live `gpu` node holding every
/// shard of the query runs it (the answer names it). Every shard of the query must be
/// held by the node that runs it.
#[utoipa::path(
    post,
    path = "/collections/{collection}/search/batch",
    tag = "search",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = BatchSearchRequest,
    responses(
        (status = 200, description = "Per query, in the request's order, its exact hits, best first; where the batch ran and why", body = BatchSearchResponse),
        (status = 400, description = "The body is not a batch search request", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 422, description = "A value is out of range: an empty batch, more than 10,000 queries, a query's dimension or a non-finite value, k", body = ErrorBody),
        (status = 500, description = "An engine failed on this search", body = ErrorBody),
        (status = 503, description = "A shard of the query is not held by this node, or not open yet", body = ErrorBody),
    ),
)]
async fn search_batch(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError(r.status().as_u16(), r.body_text()))?;
    if state
        .searcher
        .host()
        .catalog()
        .resolve(&collection)
        .await
        .is_none()
    {
        return Err(QueryError::UnknownCollection(collection).into());
    }
    let request: BatchSearchRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError(400, format!("invalid JSON body: {err}")))?;
    let response = batch_search(&state.searcher, &collection, request).await?;
    Ok(Json(response).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GetParams {
    /// The vector's tenant; absent: the vector written without one.
    tenant: Option<String>,
}

/// Read one stored vector and its payload, from whichever node holds it.
#[utoipa::path(
    get,
    path = "/collections/{collection}/vectors/{id}",
    tag = "vectors",
    params(
        ("collection" = String, Path, description = "The collection's name"),
        ("id" = String, Path, description = "The vector's id"),
        GetParams,
    ),
    responses(
        (status = 200, description = "The vector", body = VectorView),
        (status = 404, description = "No such collection or vector", body = ErrorBody),
        (status = 500, description = "Reading the shard failed", body = ErrorBody),
        (status = 503, description = "The shard is not open yet, or no replica answers", body = ErrorBody),
    ),
)]
async fn get_vector(
    State(state): State<QueryState>,
    Path((collection, id)): Path<(String, String)>,
    Query(params): Query<GetParams>,
) -> Result<Response, ApiError> {
    let (stored, range, epoch) = state
        .searcher
        .get(&collection, &id, params.tenant.as_deref())
        .await?;
    let spec = state.searcher.host().catalog().get(&collection);
    Ok(Json(json!({
        "id": stored.id,
        "vector": stored.vector,
        "payload": stored.payload,
        // The winning write: its effective hlc (a decimal string) and accepting region.
        "written": {"hlc": stored.hlc, "origin": stored.origin, "concurrent": stored.concurrent},
        "shard": spec.map(|s| ring::partition_of(range.start, s.partitions)),
        "range": range,
        "epoch": epoch,
    }))
    .into_response())
}

/// A JSON body of an internal call, or a 400/413 with the reason.
fn internal_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError(r.status().as_u16(), r.body_text()))?;
    serde_json::from_slice(&body).map_err(|err| ApiError(400, format!("invalid JSON body: {err}")))
}

/// A per-shard search from another node's router, checked like a public search.
/// The spec of `collection` as this node's catalog has it (404 when it has none), for the
/// internal routes that check a body against it.
fn known_spec(
    state: &QueryState,
    collection: &str,
) -> Result<hektor_topics::record::CollectionSpec, ApiError> {
    Ok(state
        .searcher
        .host()
        .catalog()
        .get(collection)
        .ok_or_else(|| QueryError::UnknownCollection(collection.to_owned()))?)
}

#[utoipa::path(
    post,
    path = "/internal/collections/{collection}/shard-search",
    tag = "internal",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = ShardSearch,
    responses(
        (status = 200, description = "The shard's hits", body = ShardAnswer),
        (status = 400, description = "The body is not a per-shard search", body = ErrorBody),
        (status = 404, description = "No such collection, or the shard is not held here", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 422, description = "A value is out of range", body = ErrorBody),
        (status = 500, description = "The engine failed", body = ErrorBody),
        (status = 504, description = "The shard did not reach `after` in time", body = ErrorBody),
    ),
)]
async fn internal_search(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call: ShardSearch = internal_body(body)?;
    let spec = known_spec(&state, &collection)?;
    call.check(spec.dimension)?;
    let shard = held(&state, &collection, call.incarnation, call.range).await?;
    state.searcher.note_shard_search();
    let query = call.vector.clone();
    let hits = shard_search(
        state.searcher.pool(),
        state.searcher.events(),
        &shard,
        &call,
        query,
    )
    .await?;
    Ok(Json(ShardAnswer { hits }).into_response())
}

/// A bounded or strong search another region forwarded here because it was not fresh
/// enough within a round trip ([`crate::peers`]): run in this region only, never
/// forwarded again.
#[utoipa::path(
    post,
    path = "/internal/collections/{collection}/region-search",
    tag = "internal",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "The hits, best first", body = SearchResponse),
        (status = 400, description = "The body is not a search request", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 422, description = "A value is out of range", body = ErrorBody),
        (status = 503, description = "A shard has no replica that answers", body = ErrorBody),
        (status = 504, description = "The consistency wait ran out here too", body = ErrorBody),
    ),
)]
async fn internal_region_search(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: SearchRequest = internal_body(body)?;
    if state.searcher.host().catalog().get(&collection).is_none() {
        return Err(QueryError::UnknownCollection(collection).into());
    }
    let response = state.searcher.search_here(&collection, request).await?;
    Ok(search_response(&response))
}

/// A write token of this region, from another region's session read: per partition, the
/// clock floor a shard of it here had reached once it applied the token (waiting up to
/// the request's `timeout_ms`; partitions without a shard here are asked of a node of
/// this region that holds one). The asking region waits until it has merged this
/// region's partitions that far ([`Searcher::token_floors`]).
#[utoipa::path(
    post,
    path = "/internal/collections/{collection}/token-floors",
    tag = "internal",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = TokenFloorsRequest,
    responses(
        (status = 200, description = "Per partition of the token, this region's clock floor once it applied it", body = TokenFloors),
        (status = 400, description = "The body is not a token request", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 422, description = "The token names no partition, or one the collection does not have; or the wait is too long", body = ErrorBody),
        (status = 503, description = "No node of this region answers for a partition of the token", body = ErrorBody),
        (status = 504, description = "A shard did not apply the token in time", body = ErrorBody),
    ),
)]
async fn internal_token_floors(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: TokenFloorsRequest = internal_body(body)?;
    let spec = known_spec(&state, &collection)?;
    request.check(spec.partitions)?;
    let floors = state.searcher.token_floors(&collection, &request).await?;
    Ok(Json(floors).into_response())
}

/// A probe from another region's node measuring its round trip here: this node's region
/// and clock.
#[utoipa::path(
    get,
    path = "/internal/regions/probe",
    tag = "internal",
    responses((status = 200, description = "This node's region and wall clock", body = Probe)),
)]
async fn internal_region_probe(State(state): State<QueryState>) -> Json<Probe> {
    Json(Probe {
        region: state.searcher.host().config().region.clone(),
        time_ms: hektor_topics::hlc::wall_ms(),
    })
}

/// `GET /internal/regions/floors`'s query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct FloorsQuery {
    /// The asking region: the floors are of its copies merged here.
    origin: String,
}

/// How far this node's shards have merged `origin`'s copy of each partition, as a stream
/// that never ends: newline-delimited JSON [`FloorLine`]s, first every partition held
/// here, then each one whose floor moved, the moment a shard merges more (the smallest
/// floor over this node's shards of the partition); an empty line after a second with
/// no news. `origin`'s nodes wait on it for their `sync` and `quorum` writes
/// ([`crate::peers`]): the news crosses the WAN once.
#[utoipa::path(
    get,
    path = "/internal/regions/floors",
    tag = "internal",
    params(FloorsQuery),
    responses(
        (status = 200, description = "Newline-delimited floor lines, without end", body = FloorLine, content_type = "application/x-ndjson"),
        (status = 400, description = "`origin` is missing, or this node does not merge that region", body = ErrorBody),
    ),
)]
async fn internal_region_floors(
    State(state): State<QueryState>,
    query: Result<Query<FloorsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|r| ApiError(400, r.body_text()))?;
    let host = Arc::clone(state.searcher.host());
    if !host.config().mirrors.contains(&q.origin) {
        return Err(ApiError(
            400,
            format!(
                "this node does not merge region `{}` (its --mirror-regions: {:?})",
                q.origin,
                host.config().mirrors
            ),
        ));
    }
    let start = FloorsStream {
        host,
        origin: q.origin,
        sent: std::collections::HashMap::new(),
    };
    let stream = futures::stream::unfold(start, |mut stream| async move {
        let lines = stream.next_lines().await;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(lines)),
            stream,
        ))
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/x-ndjson"),
        )],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// One `GET /internal/regions/floors` stream: what it has said so far.
struct FloorsStream {
    host: Arc<hektor_indexers::host::ShardHost>,
    origin: String,
    sent: std::collections::HashMap<(String, u32), u64>,
}

impl FloorsStream {
    /// The next lines to send: the floors that moved since the last ones (waiting for a
    /// merge), or an empty line after [`crate::peers::STREAM_KEEPALIVE`] without one.
    async fn next_lines(&mut self) -> Vec<u8> {
        let quiet_until = tokio::time::Instant::now() + crate::peers::STREAM_KEEPALIVE;
        loop {
            // Subscribe before reading the floors: a merge in between wakes the wait.
            let mut changes = Vec::new();
            let mut floors: std::collections::HashMap<(String, u32), u64> =
                std::collections::HashMap::new();
            for collection in self.host.collections() {
                for s in collection.serving() {
                    changes.push(s.merges());
                    let floor = s.mirror_floor(&self.origin);
                    floors
                        .entry((collection.spec.name.clone(), s.partition))
                        .and_modify(|f| *f = (*f).min(floor))
                        .or_insert(floor);
                }
            }
            let mut out = Vec::new();
            for ((collection, partition), floor) in floors {
                let key = (collection, partition);
                if floor == 0 || self.sent.get(&key).is_some_and(|f| *f >= floor) {
                    continue;
                }
                let line = FloorLine {
                    collection: key.0.clone(),
                    partition,
                    floor,
                };
                if serde_json::to_writer(&mut out, &line).is_ok() {
                    out.push(b'\n');
                    self.sent.insert(key, floor);
                }
            }
            if !out.is_empty() {
                return out;
            }
            // Shards opened or closed since show up at the next look (at most a second).
            let wake = tokio::time::Instant::now() + Duration::from_secs(1);
            let any_change = async {
                if changes.is_empty() {
                    std::future::pending::<()>().await;
                }
                let _ = futures::future::select_all(
                    changes.iter_mut().map(|rx| Box::pin(rx.changed())),
                )
                .await;
            };
            let _ = tokio::time::timeout_at(wake.min(quiet_until), any_change).await;
            if tokio::time::Instant::now() >= quiet_until {
                return b"\n".to_vec();
            }
        }
    }
}

/// A batch search another node forwarded here because this node has the `gpu` role: run
/// here (on this node's GPU when it has one, else its CPU, as the answer says), never
/// forwarded again. Every shard of the query must be held here.
#[utoipa::path(
    post,
    path = "/internal/collections/{collection}/search-batch",
    tag = "internal",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = BatchSearchRequest,
    responses(
        (status = 200, description = "Per query its exact hits; where the batch ran and why", body = BatchSearchResponse),
        (status = 400, description = "The body is not a batch search request", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 422, description = "A value is out of range", body = ErrorBody),
        (status = 500, description = "An engine failed on this search", body = ErrorBody),
        (status = 503, description = "A shard of the query is not held by this node, or not open yet", body = ErrorBody),
    ),
)]
async fn internal_search_batch(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: BatchSearchRequest = internal_body(body)?;
    if state
        .searcher
        .host()
        .catalog()
        .resolve(&collection)
        .await
        .is_none()
    {
        return Err(QueryError::UnknownCollection(collection).into());
    }
    let response = forwarded_batch_search(&state.searcher, &collection, request).await?;
    Ok(Json(response).into_response())
}

/// A per-shard read of one vector from another node's router.
#[utoipa::path(
    post,
    path = "/internal/collections/{collection}/shard-get",
    tag = "internal",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = ShardGet,
    responses(
        (status = 200, description = "The stored vector", body = WireVector),
        (status = 400, description = "The body is not a per-shard read", body = ErrorBody),
        (status = 404, description = "The shard is not held here, or holds no such vector", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 500, description = "Reading the shard failed", body = ErrorBody),
    ),
)]
async fn internal_get(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call: ShardGet = internal_body(body)?;
    let shard = held(&state, &collection, call.incarnation, call.range).await?;
    let stored = shard_get(&shard, call.tenant.as_deref(), &call.id)
        .await?
        .ok_or_else(|| QueryError::NotFound(call.id.clone()))?;
    Ok(Json(WireVector {
        id: stored.id,
        vector: stored.vector,
        payload: stored.payload,
        hlc: stored.hlc.0.to_string(),
        origin: stored.origin,
        concurrent: stored.concurrent,
    })
    .into_response())
}

/// The shard this node holds for a per-shard call, or 404 "not held".
async fn held(
    state: &QueryState,
    collection: &str,
    incarnation: u64,
    range: hektor_topics::record::RingRange,
) -> Result<Arc<hektor_indexers::host::HostedShard>, ApiError> {
    let host = state.searcher.host();
    if host.catalog().incarnation(collection) != Some(incarnation) {
        return Err(not_held(collection, range));
    }
    // A shard of the archive tier is restored here first (bounded wait, then 503).
    match host
        .resolve_or_restore(collection, range, std::time::Duration::from_secs(5))
        .await
    {
        Ok(found) => Ok(found),
        Err(hektor_indexers::host::Unheld::NotHeld) => Err(not_held(collection, range)),
        Err(other) => Err(ApiError(503, other.to_string())),
    }
}

fn not_held(collection: &str, range: hektor_topics::record::RingRange) -> ApiError {
    ApiError(
        404,
        format!(
            "shard [{:#x}, {:?}) of `{collection}` is not held by this node",
            range.start, range.end
        ),
    )
}

fn describe(hosted: Option<&HostedCollection>, map: Option<&ShardMap>) -> serde_json::Value {
    let local = |range| hosted.and_then(|h| h.shard(range));
    let shards: Vec<_> = map
        .map(|m| m.shards().to_vec())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let mut entry = json!({
                "range": s.range,
                "replicas": s.replicas,
                "tier": s.tier,
            });
            if let Some(h) = local(s.range) {
                let stats = h.shard.stats();
                entry["shard"] = json!(h.partition);
                entry["engine"] = json!(h.engine());
                entry["vectors"] = json!(stats.len);
                entry["pending"] = json!(stats.pending);
                entry["next_offset"] = json!(h.next_offset());
                entry["lag"] = json!(h.lag());
                entry["dead_lettered"] = json!(h.dead_lettered());
                // How the shard came to this node: local, log (replayed) or snapshot.
                entry["origin"] = json!(h.origin);
                // Per other region: how far its mirrored partition is merged.
                let mirrored = h.mirrored();
                if !mirrored.is_empty() {
                    entry["mirrored"] = json!(mirrored);
                    // Concurrent writes of different regions met since it opened here.
                    entry["conflicts"] = json!(h.conflicts());
                }
            }
            entry
        })
        .collect();
    let vectors: u64 = map
        .map(|m| {
            m.shards()
                .iter()
                .filter_map(|s| local(s.range).map(|h| h.shard.len()))
                .sum()
        })
        .unwrap_or(0);
    let complete = map.is_some_and(|m| m.shards().iter().all(|s| local(s.range).is_some()));
    json!({
        "settings": hosted.map(|h| &h.spec),
        "epoch": map.map(|m| m.epoch()),
        // Which creation of this name the map is for (the catalog offset that created it).
        "incarnation": map.map(|m| m.incarnation()),
        "vectors": vectors,
        // Whether `vectors` counts every shard (this node holds them all).
        "complete": complete,
        "shards": shards,
        "targets": map.map(|m| m.targets().to_vec()).unwrap_or_default(),
    })
}

/// Every collection of the catalog with its settings.
#[utoipa::path(
    get,
    path = "/collections",
    tag = "collections",
    responses((status = 200, description = "The collections", body = CollectionList)),
)]
async fn list_collections(State(state): State<QueryState>) -> Response {
    // The catalog is the source of truth (shards of a just-created collection may still
    // be opening).
    let specs = state.searcher.host().catalog().list();
    Json(json!({ "collections": specs })).into_response()
}

/// A collection's settings, shard map and, for the shards this node holds, size, lag and
/// engine.
#[utoipa::path(
    get,
    path = "/collections/{collection}",
    tag = "collections",
    params(("collection" = String, Path, description = "The collection's name")),
    responses(
        (status = 200, description = "The collection", body = CollectionView),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 503, description = "No shard map yet (the controller has not placed it)", body = ErrorBody),
    ),
)]
async fn show_collection(
    State(state): State<QueryState>,
    Path(collection): Path<String>,
) -> Result<Response, ApiError> {
    let map = state.searcher.map(&collection).await?;
    let hosted = state.searcher.host().resolve(&collection).await;
    let mut described = describe(hosted.as_deref(), Some(&map));
    if described["settings"].is_null() {
        described["settings"] = json!(state.searcher.host().catalog().get(&collection));
    }
    Ok(Json(described).into_response())
}

/// The archive of a shard in the archive tier as this node knows it: its object location,
/// bytes and applied offset, and the last failure to archive or restore it.
fn archive_of(
    state: &QueryState,
    collection: &str,
    range: hektor_topics::record::RingRange,
) -> serde_json::Value {
    let host = state.searcher.host();
    let archived = host.archived(collection, range);
    json!({
        "location": archived.as_ref().map(|a| a.location.clone()),
        "bytes": archived.as_ref().map(|a| a.bytes),
        "next_offset": archived.as_ref().map(|a| a.next_offset),
        "error": host.archive_error(collection, range),
    })
}

/// The shard maps with hotness: per collection the map's shards (range, replicas, tier,
/// local facts when this node holds them, the planner's hotness of that shard), the
/// targets being built, the nodes, and the recent decisions and map changes.
#[utoipa::path(
    get,
    path = "/cluster",
    tag = "cluster",
    responses((status = 200, description = "The cluster", body = ClusterOverview)),
)]
async fn cluster(State(state): State<QueryState>) -> Response {
    let planner = state.cluster.as_ref().map(|view| view());
    let routing = state.searcher.routing();
    let mut specs = state.searcher.host().catalog().list();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let collections: Vec<_> = specs
        .iter()
        .map(|spec| {
            let name = spec.name.as_str();
            let map = routing.maps.get(name);
            let hosted = state.searcher.host().collection(name);
            let planned = planner
                .as_ref()
                .and_then(|p| p.get("collections"))
                .and_then(|c| c.get(name));
            let shards: Vec<_> = map
                .map(|m| m.shards().to_vec())
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let partition = ring::partition_of(s.range.start, spec.partitions);
                    // The planner counts the map's shards; match its entry by range.
                    let range = json!(s.range);
                    let seen = planned
                        .and_then(|c| c.get("shards"))
                        .and_then(|sh| sh.as_object())
                        .and_then(|sh| sh.values().find(|m| m.get("range") == Some(&range)));
                    let field = |k: &str| seen.and_then(|m| m.get(k)).cloned();
                    let local = hosted.as_ref().and_then(|h| h.shard(s.range).cloned());
                    json!({
                        "shard": partition,
                        "range": s.range,
                        "replicas": s.replicas,
                        "tier": s.tier,
                        "vectors": local.as_ref().map(|h| h.shard.len()),
                        "lag": local.as_ref().map(|h| h.lag()),
                        "hotness": field("hotness").unwrap_or(json!(0.0)),
                        "qps_1m": field("qps_1m").unwrap_or(json!(0.0)),
                        "p99_ms": field("p99_ms").unwrap_or(json!(0.0)),
                        "writes_1m": field("writes_1m").unwrap_or(json!(0)),
                        "hot": field("hot").unwrap_or(json!(false)),
                        "cold": field("cold").unwrap_or(json!(false)),
                        "node": s.replicas.first(),
                        // Archive tier: where its snapshot lies, as this node knows it.
                        "archive": (s.tier == hektor_topics::record::Tier::Archive)
                            .then(|| archive_of(&state, name, s.range)),
                    })
                })
                .collect();
            json!({
                "name": name,
                "partitions": spec.partitions,
                "replication": spec.replication,
                "epoch": map.map(|m| m.epoch()),
                "targets": map.map(|m| m.targets().to_vec()).unwrap_or_default(),
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
    let members: serde_json::Map<String, serde_json::Value> = routing
        .nodes
        .iter()
        .map(|(id, n)| {
            (
                id.clone(),
                json!({
                    "address": n.address,
                    "alive": n.alive,
                    "leaving": n.leaving,
                    "roles": n.roles,
                }),
            )
        })
        .collect();
    // Storage cost by tier: every live node's copies (from heartbeats) and the archived
    // snapshots this node knows.
    let held: Vec<_> = routing
        .nodes
        .values()
        .filter(|n| n.alive)
        .flat_map(|n| n.shards.iter().cloned())
        .collect();
    let host = state.searcher.host();
    let cost = hektor_cluster::cost::cost_report(
        &routing.maps,
        &held,
        |collection, range| host.archived(collection, range).map(|a| a.bytes),
        hektor_cluster::cost::TierPrices::default(),
    );
    Json(json!({
        "node": routing.me,
        "cost": cost,
        "planner": planner.as_ref().and_then(|p| p.get("planner")).cloned(),
        "collections": collections,
        "regions": regions(&state),
        "members": members,
        "nodes": part("nodes"),
        "decisions": part("decisions"),
        "map_changes": part("map_changes"),
    }))
    .into_response()
}

/// The other regions this node's shards merge, from their mirror progress: per region the
/// shards following it, the mirrored records not merged yet, and the wall-clock time of
/// the newest write merged and of the least advanced shard's newest (over shards that
/// merged anything; 0 when none has), so `now - oldest_merged_ms` is how far behind that
/// shard may be while that region keeps writing.
///
/// With ticks (closed timestamps, written every `--tick-ms` by nodes of a region with
/// mirrors), `oldest_merged_ms` advances with time even while nobody writes, so
/// `staleness_ms` (now − `oldest_merged_ms`) bounds how old the newest write of that
/// region this node may miss is (clock offset aside). `has_ours_until_ms` is the other
/// way: the least any of these shards has heard that region has merged of this region's
/// partition (from the `seen` vectors on its records), what `quorum` and `sync` writes
/// wait on.
fn regions(state: &QueryState) -> Vec<serde_json::Value> {
    let mut by_region: std::collections::BTreeMap<String, (u64, u64, u64, u64, u64)> =
        std::collections::BTreeMap::new();
    for hosted in state.searcher.host().collections() {
        for s in hosted.serving() {
            for (region, p) in s.mirrored() {
                let at = hektor_topics::hlc::Hlc(p.floor).physical_ms();
                let ours = s.merged_by(&region).physical_ms();
                let e = by_region
                    .entry(region)
                    .or_insert((0, 0, 0, u64::MAX, u64::MAX));
                e.0 += 1;
                e.1 += p.high_watermark.saturating_sub(p.next_offset);
                e.2 = e.2.max(at);
                if p.floor > 0 {
                    e.3 = e.3.min(at);
                }
                e.4 = e.4.min(ours);
            }
        }
    }
    let now = hektor_topics::hlc::wall_ms();
    let peers = state.searcher.peers();
    let mut peer_views: std::collections::BTreeMap<String, serde_json::Value> = peers
        .map(|p| p.view())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Some((v["region"].as_str()?.to_owned(), v)))
        .collect();
    for region in peer_views.keys() {
        by_region
            .entry(region.clone())
            .or_insert((0, 0, 0, u64::MAX, u64::MAX));
    }
    // How this node follows each region's catalog, with the names it created with other
    // settings than this region's (each region keeps its own until one drops the name).
    let catalog = state.searcher.host().catalog();
    let conflicts = catalog.conflicts();
    let mut catalog_views: std::collections::BTreeMap<String, serde_json::Value> = catalog
        .regions_view()
        .into_iter()
        .map(|view| {
            let names: Vec<&str> = conflicts
                .iter()
                .filter(|c| c.region == view.region)
                .map(|c| c.collection.as_str())
                .collect();
            let mut value = json!(view);
            value["conflicts"] = json!(names);
            (view.region, value)
        })
        .collect();
    for region in catalog_views.keys() {
        by_region
            .entry(region.clone())
            .or_insert((0, 0, 0, u64::MAX, u64::MAX));
    }
    by_region
        .into_iter()
        .map(|(region, (shards, behind, newest, oldest, ours))| {
            let oldest = if oldest == u64::MAX { 0 } else { oldest };
            let peer = peer_views.remove(&region);
            let catalog = catalog_views.remove(&region);
            json!({
                "region": region,
                "shards": shards,
                "behind": behind,
                "newest_merged_ms": newest,
                "oldest_merged_ms": oldest,
                "staleness_ms": if oldest == 0 { None } else { Some(now.saturating_sub(oldest)) },
                "has_ours_until_ms": if ours == u64::MAX { 0 } else { ours },
                // The measured round trip to that region's node (`--region-peers`).
                "rtt_ms": peer.as_ref().and_then(|p| p["rtt_ms"].as_f64()),
                "peer": peer,
                "catalog": catalog,
            })
        })
        .collect()
}

/// The shards this node holds whose consumer is failing, as JSON.
fn failing_shards(state: &QueryState) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for hosted in state.searcher.host().collections() {
        for s in hosted.serving() {
            if let Some(why) = s.failure() {
                out.push(
                    json!({"collection": hosted.spec.name, "partition": s.partition,
                    "range": s.range, "error": why}),
                );
            }
        }
    }
    out
}

/// Liveness: 200 `{"status": "ok"}`, or 503 `{"status": "failing", "shards": [...]}` when
/// a shard this node holds has stopped following its partition (its consumer fails and
/// retries; the error says why).
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Every shard held here follows its partition", body = Health),
        (status = 503, description = "Some shards have stopped following their partition", body = Health),
    ),
)]
async fn health(State(state): State<QueryState>) -> Response {
    let failing = failing_shards(&state);
    if failing.is_empty() {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failing", "shards": failing })),
        )
            .into_response()
    }
}

/// Readiness: 200 when every shard the current maps give this node is open, has read its
/// partition to the end once (index built) and is not failing; else 503 with the shards
/// still opening or catching up and the failing ones.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: every shard is open and caught up", body = Ready),
        (status = 503, description = "Not ready: what it waits for", body = Ready),
    ),
)]
async fn ready(State(state): State<QueryState>) -> Response {
    let routing = state.searcher.routing();
    let host = state.searcher.host();
    let mut waiting = Vec::new();
    let mut held = 0usize;
    for (name, map) in &routing.maps {
        let hosted = host.collection(name);
        for (range, _) in map.ranges_of(&routing.me) {
            // Targets being built are not served yet: only serving shards count.
            if !map.shards().iter().any(|s| s.range == range) {
                continue;
            }
            held += 1;
            let shard = hosted.as_ref().and_then(|h| h.shard(range).cloned());
            match shard {
                Some(s) if s.caught_up() => {}
                Some(s) => waiting.push(json!({"collection": name, "range": range,
                    "state": "catching up", "lag": s.lag()})),
                None => {
                    waiting.push(json!({"collection": name, "range": range, "state": "opening"}))
                }
            }
        }
    }
    let failing = failing_shards(&state);
    let ready = waiting.is_empty() && failing.is_empty();
    let body = json!({"ready": ready, "shards": held, "waiting": waiting, "failing": failing});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics of this node, in the text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4")),
)]
async fn metrics(State(state): State<QueryState>) -> Response {
    let m = &state.metrics;
    m.observe(|| {
        let searcher = Arc::clone(&state.searcher);
        NodeSource {
            host: Arc::clone(state.searcher.host()),
            shard_searches: Arc::new(move || searcher.shard_searches()),
            events_dropped: Arc::clone(&state.events_dropped),
        }
    });
    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
}
