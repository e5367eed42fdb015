//! Search: fan out to the shards that can hold the answer, search them in parallel on a
//! bounded pool, merge the top k.
//!
//! Only the shards whose partition overlaps the tenant's ring range are searched when a
//! tenant is given, and the range is passed to each shard as a filter applied inside the
//! engine. Before searching, a request carrying a write token waits (bounded) until every
//! involved shard has applied the token's offset in its partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_indexers::host::{HostedShard, ShardHost};
use hektor_topics::events::EventSink;
use hektor_topics::record::{EventKind, RingRange};
use hektor_topics::ring;
use serde::{Deserialize, Serialize};

use crate::QueryError;

/// Largest k a search may ask for.
pub const MAX_K: usize = 1000;
/// Default bound on a consistency wait.
pub const DEFAULT_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub took_us: u64,
}

/// The searcher of one node: its shards, a bounded pool, and the event sink.
pub struct Searcher {
    host: Arc<ShardHost>,
    pool: rayon::ThreadPool,
    events: EventSink,
}

impl Searcher {
    /// `threads`: size of the search pool (0 = one per core).
    pub fn new(
        host: Arc<ShardHost>,
        events: EventSink,
        threads: usize,
    ) -> Result<Searcher, QueryError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hektor-search-{i}"))
            .build()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        Ok(Searcher { host, pool, events })
    }

    pub fn host(&self) -> &Arc<ShardHost> {
        &self.host
    }

    /// Validate, wait for consistency, fan out, merge.
    pub async fn search(
        &self,
        collection: &str,
        request: SearchRequest,
    ) -> Result<SearchResponse, QueryError> {
        let started = Instant::now();
        let hosted = self
            .host
            .resolve(collection)
            .await
            .ok_or_else(|| QueryError::UnknownCollection(collection.into()))?;
        let spec = &hosted.spec;
        if request.vector.len() != spec.dimension as usize {
            return Err(QueryError::Invalid(format!(
                "query vector has {} dimensions, collection `{}` has {}",
                request.vector.len(),
                spec.name,
                spec.dimension
            )));
        }
        if let Some(pos) = request.vector.iter().position(|x| !x.is_finite()) {
            return Err(QueryError::Invalid(format!(
                "vector[{pos}] is not a finite number"
            )));
        }
        if request.k == 0 || request.k > MAX_K {
            return Err(QueryError::Invalid(format!(
                "k must be between 1 and {MAX_K}, got {}",
                request.k
            )));
        }
        let range: Option<RingRange> = request.tenant.as_deref().map(ring::tenant_range);
        let shards: Vec<Arc<HostedShard>> = match range {
            Some(range) => ring::partitions_overlapping(range, spec.partitions)
                .filter_map(|p| hosted.shards.get(p as usize).cloned())
                .collect(),
            None => hosted.shards.clone(),
        };
        if let Some(consistency) = &request.consistency {
            wait_for_token(&shards, consistency).await?;
        }
        let k = request.k;
        let query = request.vector;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work = shards.clone();
        self.pool.spawn(move || {
            use rayon::prelude::*;
            let results: Vec<Result<Vec<hektor_indexers::Hit>, String>> = work
                .par_iter()
                .map(|s| s.shard.search(&query, k, range).map_err(|e| e.to_string()))
                .collect();
            let _ = tx.send(results);
        });
        let results = rx
            .await
            .map_err(|_| QueryError::Internal("the search pool dropped a query".into()))?;
        let mut all = Vec::with_capacity(k * shards.len());
        for result in results {
            all.extend(result.map_err(QueryError::Internal)?);
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all.truncate(k);
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
        let latency_us = took.as_micros().min(u32::MAX as u128) as u32;
        let position = range.map(|r| r.start).unwrap_or(0);
        for shard in &shards {
            self.events.record(
                collection,
                shard.partition,
                position,
                EventKind::Query,
                latency_us,
            );
        }
        Ok(SearchResponse {
            hits,
            shards: shards.len(),
            took_us: took.as_micros() as u64,
        })
    }
}

/// Wait until every involved shard has applied the token's offset in its partition.
async fn wait_for_token(
    shards: &[Arc<HostedShard>],
    consistency: &Consistency,
) -> Result<(), QueryError> {
    let Some(token) = &consistency.after else {
        return Ok(());
    };
    let timeout = consistency
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
    let deadline = Instant::now() + timeout;
    for shard in shards {
        if let Some(&needed) = token.get(&shard.partition) {
            let left = deadline.saturating_duration_since(Instant::now());
            if !shard.wait_applied(needed, left).await {
                return Err(QueryError::ConsistencyTimeout {
                    partition: shard.partition,
                    applied: shard.next_offset().saturating_sub(1),
                    needed,
                    waited_ms: timeout.as_millis() as u64,
                });
            }
        }
    }
    Ok(())
}
