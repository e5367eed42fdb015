//! What each gRPC method does: the same work as the HTTP route it mirrors, through the
//! same library calls, so both doors answer alike.
//!
//! | method | HTTP route | the call behind it | needs |
//! |---|---|---|---|
//! | `Search` | `POST /collections/{c}/search` | [`Searcher::search`] | `read` on `c` |
//! | `SearchBatch` | `POST /collections/{c}/search/batch` | [`batch_search`] | `read` on `c` |
//! | `Write` | `POST /collections/{c}/vectors` (its write level: the call's `replication`, else the collection's) | [`Writer::write`], then [`Replication::wait`] | `write` on `c` |
//!
//! Every call passes, in order: the node's concurrency limit (one more is
//! `RESOURCE_EXHAUSTED`), a collection-name check (the name goes into the path the gate
//! reads, so a name that is not one is refused first), the gate of `hektor-access`
//! ([`Gate::check`] on the HTTP route's method and path with the call's metadata as
//! headers: `authorization: Bearer <key>`), the catalog (`NOT_FOUND`), then the same
//! checks the HTTP route runs (dimension, finite values, k, effort, batch size, ids,
//! payloads). A refusal costs its call only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_access::Gate;
use hektor_ingest::replication::{
    Replication, WriteLevel, DEFAULT_REPLICATION_TIMEOUT, MAX_REPLICATION_TIMEOUT,
};
use hektor_ingest::validate::{DeleteItem, UpsertItem, WriteBatch, MAX_BATCH_ITEMS};
use hektor_ingest::{IngestError, Writer};
use hektor_query::batch::{batch_search, BatchSearchRequest, Device, RanOn};
use hektor_query::router::{Consistency, ConsistencyLevel, SearchHit, SearchRequest, Searcher};
use hektor_query::QueryError;
use hektor_topics::events::EventSink;
use hektor_topics::record::EventKind;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::proto as pb;
use crate::GrpcError;

/// Hits per query when a request leaves `k` out (as the HTTP API).
const DEFAULT_K: u32 = 10;

/// What the gRPC methods need: the node's searcher, writer, event sink and gate.
pub struct Api {
    searcher: Arc<Searcher>,
    writer: Arc<Writer>,
    events: EventSink,
    gate: Gate,
    permits: Semaphore,
    /// What the node knows of the other regions (`None`: one region).
    replication: Option<Arc<dyn Replication>>,
}

impl Api {
    /// The methods over this node's parts; at most `max_concurrent` calls run at once.
    pub fn new(
        searcher: Arc<Searcher>,
        writer: Arc<Writer>,
        events: EventSink,
        gate: Gate,
        max_concurrent: usize,
    ) -> Api {
        Api {
            searcher,
            writer,
            events,
            gate,
            permits: Semaphore::new(max_concurrent.max(1)),
            replication: None,
        }
    }

    /// Writes wait for other regions through `replication` (their collection's
    /// `write_level`, or the call's `replication`), as the HTTP write route does.
    pub fn with_replication(mut self, replication: Option<Arc<dyn Replication>>) -> Api {
        self.replication = replication;
        self
    }

    /// The door: the concurrency limit, the collection's name and the gate's check of
    /// `POST /collections/{collection}/{route}` with the call's metadata.
    fn admit(
        &self,
        metadata: tonic::metadata::MetadataMap,
        collection: &str,
        route: &str,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, GrpcError> {
        let permit = self
            .permits
            .try_acquire()
            .map_err(|_| GrpcError::Overloaded)?;
        hektor_topics::topic::validate_collection_name(collection)
            .map_err(|e| GrpcError::BadName(e.to_string()))?;
        let path = format!("/collections/{collection}/{route}");
        self.gate
            .check(&http::Method::POST, &path, &metadata.into_headers())
            .map_err(|denied| GrpcError::Denied {
                status: denied.status.as_u16(),
                message: denied.message,
            })?;
        Ok(permit)
    }

    /// The collection named by a read, or `NOT_FOUND` as the REST routes answer 404.
    async fn known(&self, collection: String) -> Result<String, Status> {
        match self.searcher.host().catalog().resolve(&collection).await {
            Some(_) => Ok(collection),
            None => Err(GrpcError::from(QueryError::UnknownCollection(collection)).into()),
        }
    }

    /// `Search`: one query, as `POST /collections/{c}/search`.
    pub async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let (metadata, _, mut message) = request.into_parts();
        let _permit = self.admit(metadata, &message.collection, "search")?;
        let collection = self.known(std::mem::take(&mut message.collection)).await?;
        let request = search_request(message)?;
        let response = self
            .searcher
            .search(&collection, request)
            .await
            .map_err(GrpcError::from)?;
        Ok(Response::new(pb::SearchResponse {
            hits: response.hits.into_iter().map(hit).collect(),
            shards: response.shards as u32,
            epoch: response.epoch,
            took_us: response.took_us,
        }))
    }

    /// `SearchBatch`: exact top k per query, as `POST /collections/{c}/search/batch`.
    pub async fn search_batch(
        &self,
        request: Request<pb::BatchSearchRequest>,
    ) -> Result<Response<pb::BatchSearchResponse>, Status> {
        let (metadata, _, mut message) = request.into_parts();
        let _permit = self.admit(metadata, &message.collection, "search/batch")?;
        let collection = self.known(std::mem::take(&mut message.collection)).await?;
        let device = match message.device.as_str() {
            "" | "auto" => Device::Auto,
            "cpu" => Device::Cpu,
            "gpu" => Device::Gpu,
            other => {
                return Err(GrpcError::BadRequest(format!(
                    "device must be \"auto\", \"cpu\" or \"gpu\", got {other:?}"
                ))
                .into())
            }
        };
        let request = BatchSearchRequest {
            vectors: message.vectors.into_iter().map(|v| v.values).collect(),
            k: message.k.unwrap_or(DEFAULT_K) as usize,
            tenant: message.tenant,
            without_payload: message.without_payload,
            device,
        };
        let response = batch_search(&self.searcher, &collection, request)
            .await
            .map_err(GrpcError::from)?;
        Ok(Response::new(pb::BatchSearchResponse {
            results: response
                .results
                .into_iter()
                .map(|r| pb::BatchResult {
                    hits: r.hits.into_iter().map(hit).collect(),
                })
                .collect(),
            ran_on: match response.ran_on {
                RanOn::Cpu => "cpu",
                RanOn::Gpu => "gpu",
            }
            .to_owned(),
            why: response.why,
            queries: response.queries as u32,
            shards: response.shards as u32,
            epoch: response.epoch,
            took_us: response.took_us,
        }))
    }

    /// `Write`: upserts and deletes, as `POST /collections/{c}/vectors` at the `async`
    /// write level: answered once durable in this region's log.
    pub async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let started = Instant::now();
        let (metadata, _, mut message) = request.into_parts();
        let _permit = self.admit(metadata, &message.collection, "vectors")?;
        let collection = std::mem::take(&mut message.collection);
        // Created on another node a moment ago? Read the catalog once more before a 404.
        self.writer.catalog().resolve(&collection).await;
        let spec = self.writer.spec(&collection).map_err(GrpcError::from)?;
        let (level, timeout) = write_level(&message, spec.write_level)?;
        let batch = write_batch(message)?;
        let (token, written) = self
            .writer
            .write(&collection, batch)
            .await
            .map_err(GrpcError::from)?;
        let latency_us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        for w in &written {
            let kind = if w.delete {
                EventKind::Delete
            } else {
                EventKind::Upsert
            };
            self.events
                .record(&collection, w.partition, w.ring, kind, latency_us);
        }
        let region = self.writer.region().to_owned();
        let regions = match (&self.replication, level) {
            (_, WriteLevel::Async) => Vec::new(),
            (None, _) => vec![pb::RegionApplied {
                region,
                applied: true,
            }],
            (Some(replication), _) => {
                let others = replication.others();
                let need = level.others_needed(others.len());
                match replication
                    .wait(&collection, &token.offsets, need, timeout)
                    .await
                {
                    Ok(replicated) => applied_by(&replicated.regions, &replicated.missing),
                    Err((replicated, why)) => {
                        let level = serde_json::to_value(level)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let message = format!(
                            "the write is durable in region `{region}` but {need} of the {} other regions needed for `{level}` did not confirm it within {} ms: {why}; it will still reach them (regions that have it: {:?}; missing: {:?}; write token: {:?})",
                            others.len(),
                            timeout.as_millis(),
                            replicated.regions,
                            replicated.missing,
                            token.offsets,
                        );
                        return Err(crate::error::status_with_http(
                            tonic::Code::DeadlineExceeded,
                            message,
                            504,
                        ));
                    }
                }
            }
        };
        Ok(Response::new(pb::WriteResponse {
            token: token.offsets,
            written: written.len() as u32,
            regions,
            region: self.writer.region().to_owned(),
        }))
    }
}

/// A hit on the wire: the stored payload's JSON text moved, not copied or re-rendered.
fn hit(h: SearchHit) -> pb::Hit {
    pb::Hit {
        id: h.id,
        score: h.score,
        payload_json: h.payload.map(|p| String::from(Box::<str>::from(p))),
    }
}

/// The library's search request from the wire's (the range checks are the searcher's).
fn search_request(message: pb::SearchRequest) -> Result<SearchRequest, GrpcError> {
    let consistency = message.consistency.map(consistency).transpose()?;
    Ok(SearchRequest {
        vector: message.vector,
        k: message.k.unwrap_or(DEFAULT_K) as usize,
        tenant: message.tenant,
        consistency,
        without_payload: message.without_payload,
        effort: message.effort.map(|e| e as usize),
        rescore: message.rescore,
    })
}

/// The consistency of a search from the wire's: an empty `level` is the implied one, an
/// empty `after` no token.
fn consistency(c: pb::Consistency) -> Result<Consistency, GrpcError> {
    let level = match c.level.as_str() {
        "" => None,
        "eventual" => Some(ConsistencyLevel::Eventual),
        "session" => Some(ConsistencyLevel::Session),
        "bounded" => Some(ConsistencyLevel::Bounded),
        "strong" => Some(ConsistencyLevel::Strong),
        other => {
            return Err(GrpcError::BadRequest(format!(
                "consistency.level must be \"eventual\", \"session\", \"bounded\" or \"strong\", got {other:?}"
            )))
        }
    };
    Ok(Consistency {
        level,
        max_staleness_ms: c.max_staleness_ms,
        after: (!c.after.is_empty()).then_some(c.after),
        region: c.region,
        timeout_ms: c.timeout_ms,
    })
}

/// The library's write batch from the wire's; payloads parsed from their JSON text (the
/// rules — dimension, finite values, ids, tenants, payload objects and sizes — are the
/// writer's, checked for the whole batch before anything is written).
/// The regions of a replicated write, those that have it first.
fn applied_by(have: &[String], missing: &[String]) -> Vec<pb::RegionApplied> {
    let region = |applied| {
        move |r: &String| pb::RegionApplied {
            region: r.clone(),
            applied,
        }
    };
    have.iter()
        .map(region(true))
        .chain(missing.iter().map(region(false)))
        .collect()
}

/// The write's level (its `replication`, else the collection's `default`) and how long
/// it may wait for other regions, checked as the HTTP route checks `?replication=` and
/// `?timeout_ms=` (400 either way).
fn write_level(
    message: &pb::WriteRequest,
    default: WriteLevel,
) -> Result<(WriteLevel, Duration), GrpcError> {
    let bad = |m: String| GrpcError::Query(QueryError::BadRequest(m));
    let level = match message.replication.as_str() {
        "" => default,
        "async" => WriteLevel::Async,
        "quorum" => WriteLevel::Quorum,
        "sync" => WriteLevel::Sync,
        other => {
            return Err(bad(format!(
                "replication must be \"async\", \"quorum\" or \"sync\", got {other:?}"
            )))
        }
    };
    let max_ms = MAX_REPLICATION_TIMEOUT.as_millis() as u64;
    let timeout = match message.timeout_ms {
        None => DEFAULT_REPLICATION_TIMEOUT,
        Some(t) if t == 0 || t > max_ms => {
            return Err(bad(format!(
                "timeout_ms must be between 1 and {max_ms}, got {t}"
            )))
        }
        Some(t) => Duration::from_millis(t),
    };
    Ok((level, timeout))
}

fn write_batch(message: pb::WriteRequest) -> Result<WriteBatch, GrpcError> {
    let items = message.upserts.len() + message.deletes.len();
    if items > MAX_BATCH_ITEMS {
        return Err(IngestError::TooLarge(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} upserts and deletes, got {items}; split it"
        ))
        .into());
    }
    let mut batch = WriteBatch {
        upserts: Vec::with_capacity(message.upserts.len()),
        deletes: Vec::with_capacity(message.deletes.len()),
    };
    for (index, u) in message.upserts.into_iter().enumerate() {
        let payload = match u.payload_json {
            None => None,
            Some(text) => Some(serde_json::from_str(&text).map_err(|err| {
                let shown: String = u.id.chars().take(64).collect();
                IngestError::Invalid {
                    item: format!("upserts[{index}] (id {shown:?})"),
                    reason: format!("payload_json is not JSON: {err}"),
                }
            })?),
        };
        batch.upserts.push(UpsertItem {
            id: u.id,
            vector: u.vector,
            tenant: u.tenant,
            payload,
        });
    }
    for d in message.deletes {
        batch.deletes.push(DeleteItem::Keyed {
            id: d.id,
            tenant: d.tenant,
        });
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_request_reads_like_the_json_one() {
        let r = search_request(pb::SearchRequest {
            collection: "c".into(),
            vector: vec![1.0, 2.0],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.k, 10);
        assert!(r.consistency.is_none() && r.effort.is_none() && !r.without_payload);
        let r = search_request(pb::SearchRequest {
            k: Some(0),
            effort: Some(32),
            consistency: Some(pb::Consistency {
                after: [(1, 7)].into(),
                timeout_ms: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.k, 0, "an explicit 0 reaches the searcher's check");
        assert_eq!(r.effort, Some(32));
        let c = r.consistency.unwrap();
        assert_eq!(c.level().unwrap(), ConsistencyLevel::Session);
        assert_eq!(c.after.unwrap()[&1], 7);
        let bad = search_request(pb::SearchRequest {
            consistency: Some(pb::Consistency {
                level: "linearizable".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_write_batch_parses_payloads_and_names_the_bad_one() {
        let upsert = |id: &str, payload: Option<&str>| pb::Upsert {
            id: id.into(),
            vector: vec![0.5],
            tenant: None,
            payload_json: payload.map(str::to_owned),
        };
        let batch = write_batch(pb::WriteRequest {
            collection: "c".into(),
            upserts: vec![upsert("a", Some(r#"{"x": 1}"#)), upsert("b", None)],
            deletes: vec![pb::Delete {
                id: "z".into(),
                tenant: Some("t".into()),
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.upserts[0].payload, Some(serde_json::json!({"x": 1})));
        assert_eq!(batch.deletes[0].tenant(), Some("t"));
        let err = write_batch(pb::WriteRequest {
            upserts: vec![upsert("a", None), upsert("b", Some("{nope"))],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.to_string().starts_with("upserts[1] (id \"b\")"),
            "{err}"
        );
        let too_many = write_batch(pb::WriteRequest {
            deletes: vec![pb::Delete::default(); MAX_BATCH_ITEMS + 1],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    }
}
