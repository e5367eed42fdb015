//! The write side of the HTTP API:
//!
//! - `PUT /collections/{c}` `{"dimension", "distance", "partitions", "replication"}` creates
//!   a collection and its topics (201; 200 if it already exists with the same settings;
//!   409 if with other settings).
//! - `DELETE /collections/{c}` drops it and its topics (200; 404 if unknown).
//! - `POST /collections/{c}/vectors` takes a batch of upserts and deletes, as JSON
//!   ([`WriteBatch`]) or, with `content-type: application/x-hektor-bulk`, as a sequence of
//!   `u32` little-endian length + `bin.v1` vector record (see `hektor_topics::codec`).
//!   Answers `{"token": {partition: offset}, "region": "<this region>"}` once durable in
//!   the log (the token's offsets are positions in this region's log).
//!
//! Errors are `{"error": "message"}` ([`ErrorBody`]) with 400, 404, 409, 413, 422, 503 or
//! 504. Every route is registered through `utoipa-axum`'s `OpenApiRouter` with its
//! `#[utoipa::path]`, so the node's `GET /openapi.json` lists exactly these routes with
//! their bodies, answers and statuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hektor_topics::catalog::CreateOutcome;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::events::EventSink;
use hektor_topics::record::{CollectionSpec, Distance, EventKind, VectorRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::replication::{
    Replicated, Replication, WriteLevel, DEFAULT_REPLICATION_TIMEOUT, MAX_REPLICATION_TIMEOUT,
};
use crate::validate::{DeleteItem, UpsertItem, WriteBatch, MAX_BATCH_ITEMS, MAX_BODY_BYTES};
use crate::{IngestError, Writer};

/// Content type of the binary bulk form.
pub const BULK_CONTENT_TYPE: &str = "application/x-hektor-bulk";

/// What the write routes need.
#[derive(Clone)]
pub struct IngestState {
    pub writer: Arc<Writer>,
    pub events: EventSink,
    /// What the other regions have merged (for `quorum` and `sync` writes); `None`: one
    /// region.
    pub replication: Option<Arc<dyn Replication>>,
}

/// The query of `POST /collections/{c}/vectors`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteParams {
    /// How many regions must have applied the write before it is answered: `async`
    /// (durable in this region's log), `quorum` (a majority of all regions), `sync`
    /// (every region); default: the collection's `write_level` (itself `async` by
    /// default).
    #[serde(default)]
    pub replication: Option<WriteLevel>,
    /// How long a `quorum` or `sync` write waits for the other regions, in ms (default
    /// 10,000, at most 120,000); past it the answer is 504 with the regions that have it.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The write routes with their OpenAPI description, ready to merge into the node's
/// router (one `routes!` per path: utoipa-axum routes every handler of a call on every
/// path of it).
pub fn router(state: IngestState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_collection, drop_collection))
        .routes(routes!(write_vectors))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An error answered as `{"error": message}` ([`ErrorBody`]).
pub struct ApiError(pub u16, pub String);

/// Every error of the write routes: `{"error": "what went wrong, for people"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Why the request failed.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// The answer of `POST /collections/{c}/vectors`, once the batch is durable in the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteAnswer {
    /// The write token: partition → offset of the batch's last record there. Pass it as
    /// a search's `consistency.after` to read this write. The keys are partition numbers
    /// (JSON object keys are strings).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub token: std::collections::BTreeMap<u32, u64>,
    /// The region whose log the token's offsets are in (this node's). A search in
    /// another region reads this write with `consistency: {"level": "session", "after":
    /// token, "region": region}`.
    pub region: String,
    /// Upserts and deletes written.
    pub written: usize,
    /// For a `quorum` or `sync` write: the regions that have applied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated: Option<Replicated>,
}

/// The answer of a `quorum` or `sync` write whose regions did not all confirm in time
/// (504): the write is durable in this region and will still reach the others; it is
/// not reported as replicated.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReplicated {
    pub error: String,
    /// As in [`WriteAnswer`]: the write is durable here.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub token: std::collections::BTreeMap<u32, u64>,
    /// As in [`WriteAnswer`]: the region of the token.
    pub region: String,
    pub written: usize,
    /// Who has it and who did not confirm.
    pub replicated: Replicated,
}

/// The binary bulk body of `POST /collections/{c}/vectors` (for the document only): a
/// sequence of `u32` little-endian length + `bin.v1` vector record.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct BulkBody(Vec<u8>);

/// The answer of `DELETE /collections/{c}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dropped {
    /// The collection dropped.
    pub dropped: String,
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> ApiError {
        ApiError(err.status(), err.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let status = rejection.status().as_u16();
        let message = if status == 413 {
            format!("request body is larger than {MAX_BODY_BYTES} bytes; split the batch")
        } else {
            rejection.body_text()
        };
        ApiError(status, message)
    }
}

/// The body of `PUT /collections/{c}`: the new collection's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateCollection)]
struct CreateBody {
    /// Length of every vector.
    dimension: u32,
    /// Default `cosine`.
    #[serde(default = "default_distance")]
    distance: Distance,
    /// Vectors-topic partitions (equal ranges of the ring); default 8.
    #[serde(default = "default_partitions")]
    partitions: u32,
    /// Copies of each shard on distinct nodes; default 1.
    #[serde(default = "default_replication")]
    replication: u32,
    /// Default `{"strategy": "balanced"}`.
    #[serde(default)]
    placement: hektor_topics::record::PlacementSpec,
    /// How writes of one id merge: `lww` (default: the newest write wins whole) or `crdt`
    /// (the vector is last-writer-wins, the payload merges per field; payloads must be
    /// JSON objects).
    #[serde(default)]
    merge: hektor_topics::record::MergePolicy,
    /// How many regions a write waits for unless it asks otherwise (`?replication=`):
    /// `async` (default), `quorum` or `sync`.
    #[serde(default)]
    write_level: WriteLevel,
}

fn default_distance() -> Distance {
    Distance::Cosine
}
fn default_partitions() -> u32 {
    8
}
fn default_replication() -> u32 {
    1
}

/// Parse a JSON body, answering 400 with serde's message (line and column) when it is bad.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError(400, format!("invalid JSON body: {err}")))
}

/// Create a collection and its topics.
#[utoipa::path(
    put,
    path = "/collections/{collection}",
    tag = "collections",
    params(("collection" = String, Path, description = "The collection's name")),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = CollectionSpec),
        (status = 200, description = "It already exists with these settings", body = CollectionSpec),
        (status = 400, description = "The body is not valid settings, or the name or a setting is refused", body = ErrorBody),
        (status = 409, description = "It already exists with other settings", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 MiB", body = ErrorBody),
        (status = 503, description = "The log is not available", body = ErrorBody),
        (status = 504, description = "The log did not answer in time", body = ErrorBody),
    ),
)]
async fn create_collection(
    State(state): State<IngestState>,
    Path(collection): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CreateBody = parse_json(&body?)?;
    let spec = CollectionSpec {
        name: collection,
        dimension: body.dimension,
        distance: body.distance,
        partitions: body.partitions,
        replication: body.replication,
        placement: body.placement,
        merge: body.merge,
        write_level: body.write_level,
    };
    let outcome = state
        .writer
        .catalog()
        .create(spec.clone())
        .await
        .map_err(IngestError::from)?;
    let status = match outcome {
        CreateOutcome::Created => StatusCode::CREATED,
        CreateOutcome::AlreadyExists => StatusCode::OK,
    };
    Ok((status, Json(spec)).into_response())
}

/// Drop a collection and its topics.
#[utoipa::path(
    delete,
    path = "/collections/{collection}",
    tag = "collections",
    params(("collection" = String, Path, description = "The collection's name")),
    responses(
        (status = 200, description = "Dropped", body = Dropped),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 503, description = "The log is not available", body = ErrorBody),
        (status = 504, description = "The log did not answer in time", body = ErrorBody),
    ),
)]
async fn drop_collection(
    State(state): State<IngestState>,
    Path(collection): Path<String>,
) -> Result<Response, ApiError> {
    let existed = state
        .writer
        .catalog()
        .drop_collection(&collection)
        .await
        .map_err(IngestError::from)?;
    if !existed {
        return Err(IngestError::UnknownCollection(collection).into());
    }
    Ok(Json(Dropped {
        dropped: collection,
    })
    .into_response())
}

/// Upsert and delete vectors: a batch as JSON, or with `content-type:
/// application/x-hektor-bulk` as `u32` little-endian length + `bin.v1` record frames.
/// Answers once the batch is durable in the log.
#[utoipa::path(
    post,
    path = "/collections/{collection}/vectors",
    tag = "vectors",
    params(("collection" = String, Path, description = "The collection's name"), WriteParams),
    request_body(
        description = "A batch of upserts and deletes",
        content(
            (WriteBatch = "application/json"),
            (BulkBody = "application/x-hektor-bulk"),
        ),
    ),
    responses(
        (status = 200, description = "Durable in the log (and, for `quorum` and `sync`, applied in enough regions)", body = WriteAnswer),
        (status = 400, description = "The body is not a batch", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 409, description = "The collection changed under the write", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 MiB or the batch holds too many items", body = ErrorBody),
        (status = 422, description = "An item breaks a rule (dimension, values, id, tenant, payload)", body = ErrorBody),
        (status = 503, description = "The log is not available", body = ErrorBody),
        (status = 504, description = "The log did not answer in time (an error body), or a `quorum` or `sync` write was not confirmed by enough regions in time (durable here; says which regions have it)", body = NotReplicated),
    ),
)]
async fn write_vectors(
    State(state): State<IngestState>,
    Path(collection): Path<String>,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Query(params) = params.map_err(|e| ApiError(400, e.body_text()))?;
    let max_ms = MAX_REPLICATION_TIMEOUT.as_millis() as u64;
    if let Some(t) = params.timeout_ms.filter(|t| *t == 0 || *t > max_ms) {
        return Err(ApiError(
            400,
            format!("timeout_ms must be between 1 and {max_ms}, got {t}"),
        ));
    }
    let body = body?;
    // Unknown collection is a 404 before any body error.
    // Created on another node a moment ago? Read the catalog once more before a 404.
    state.writer.catalog().resolve(&collection).await;
    let level = params
        .replication
        .unwrap_or(state.writer.spec(&collection)?.write_level);
    let bulk = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(BULK_CONTENT_TYPE.as_bytes()));
    let batch = if bulk {
        parse_bulk(&body)?
    } else {
        parse_json::<WriteBatch>(&body)?
    };
    let (token, written) = state.writer.write(&collection, batch).await?;
    let latency_us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
    for w in &written {
        let kind = if w.delete {
            EventKind::Delete
        } else {
            EventKind::Upsert
        };
        state
            .events
            .record(&collection, w.partition, w.ring, kind, latency_us);
    }
    let others = state
        .replication
        .as_ref()
        .map(|r| r.others())
        .unwrap_or_default();
    let need = level.others_needed(others.len());
    let replicated = match (&state.replication, level) {
        (_, WriteLevel::Async) => None,
        (None, _) => Some(Replicated {
            regions: vec![state.writer.region().to_owned()],
            missing: Vec::new(),
        }),
        (Some(replication), _) => {
            let timeout = params
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_REPLICATION_TIMEOUT);
            match replication
                .wait(&collection, &token.offsets, need, timeout)
                .await
            {
                Ok(replicated) => Some(replicated),
                Err((replicated, why)) => {
                    let body = NotReplicated {
                        error: format!(
                            "the write is durable in region `{}` but {} of the {} other regions needed for `{}` did not confirm it within {} ms: {why}; it will still reach them",
                            state.writer.region(),
                            need,
                            others.len(),
                            serde_json::to_value(level).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                            timeout.as_millis(),
                        ),
                        token: token.offsets,
                        region: state.writer.region().to_owned(),
                        written: written.len(),
                        replicated,
                    };
                    return Ok((StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response());
                }
            }
        }
    };
    Ok(Json(WriteAnswer {
        token: token.offsets,
        region: state.writer.region().to_owned(),
        written: written.len(),
        replicated,
    })
    .into_response())
}

/// Decode the binary bulk form into a batch (validated later like a JSON one).
pub fn parse_bulk(body: &[u8]) -> Result<WriteBatch, ApiError> {
    let mut batch = WriteBatch::default();
    let mut rest = body;
    let mut index = 0usize;
    while !rest.is_empty() {
        if batch.len() > MAX_BATCH_ITEMS {
            return Err(IngestError::TooLarge(format!(
                "a batch holds at most {MAX_BATCH_ITEMS} upserts and deletes; split it"
            ))
            .into());
        }
        let Some((len_bytes, tail)) = rest.split_first_chunk::<4>() else {
            return Err(ApiError(
                400,
                format!("bulk record {index}: truncated length prefix"),
            ));
        };
        let len = u32::from_le_bytes(*len_bytes) as usize;
        if tail.len() < len {
            return Err(ApiError(
                400,
                format!(
                    "bulk record {index}: length {len} runs past the end of the body ({} bytes left)",
                    tail.len()
                ),
            ));
        }
        let (frame, tail) = tail.split_at(len);
        let record: VectorRecord =
            codec::decode(frame, Some(Encoding::Binary.header_value().as_bytes()))
                .map_err(|err| ApiError(400, format!("bulk record {index}: {err}")))?;
        match record {
            VectorRecord::Upsert(u) => batch.upserts.push(UpsertItem {
                id: u.id,
                vector: u.vector,
                tenant: u.tenant,
                payload: u.payload,
            }),
            VectorRecord::Delete(d) => batch.deletes.push(DeleteItem::Keyed {
                id: d.id,
                tenant: d.tenant,
            }),
            VectorRecord::Tick(_) => {
                return Err(ApiError(
                    400,
                    format!("bulk record {index}: a tick is not a write; send upserts and deletes"),
                ))
            }
        }
        rest = tail;
        index += 1;
    }
    Ok(batch)
}

/// Encode records in the binary bulk form (for clients such as `hektor produce`).
pub fn encode_bulk(records: &[VectorRecord]) -> Result<Vec<u8>, hektor_topics::Error> {
    let mut out = Vec::new();
    for record in records {
        let frame = codec::encode(record, Encoding::Binary)?;
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    Ok(out)
}
