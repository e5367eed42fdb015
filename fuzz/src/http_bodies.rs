//! The `http_bodies` target: bytes as the body of an HTTP request.
//!
//! This module owns the harness of the JSON (and binary bulk) bodies the HTTP API parses,
//! each parsed into the exact type its route parses and then checked as the route checks
//! it:
//!
//! | byte 0 `& 7` | body | parsed as, then |
//! |---|---|---|
//! | 0 | `POST /collections/{c}/search` | `SearchRequest`; its checks (the ones `Searcher::search` makes, reached through `ShardSearch::check`, which runs the same private `check_search`), the tenant's ring range over a shard map |
//! | 1 | `POST /internal/collections/{c}/shard-search` | `ShardSearch`, [`ShardSearch::check`], the filter over a shard map, a JSON round trip |
//! | 2 | `POST /internal/collections/{c}/shard-get` | `ShardGet`, its ring position over a shard map |
//! | 3 | `POST /collections/{c}/vectors` (JSON) | `WriteBatch`, then the real [`hektor_ingest::Writer::write`] (validation, records, appends to an in-memory log), then the indexers' decode of what it appended |
//! | 4 | the same, binary bulk form | [`hektor_ingest::http::parse_bulk`], then as 3 |
//! | 5 | `PUT /collections/{c}` | `CollectionSpec` (the route's own body type is private, see docs/fuzzing.md), [`validate_spec`], a catalog-entry round trip |
//! | 6 | `POST /cluster/collections/{c}/plan` (in `src/serve.rs`) | `PlanAction`, [`ShardMap::apply`] on a map of four shards |
//! | 7 | a write token (`consistency.after`) | `Token`, merged |
//!
//! The rest of the input (after byte 0) is the body.

use std::sync::{Arc, OnceLock};

use hektor_cluster::{Shard, ShardMap};
use hektor_ingest::validate::WriteBatch;
use hektor_ingest::{Token, Writer};
use hektor_query::router::{SearchRequest, ShardGet, ShardSearch};
use hektor_topics::catalog::{validate_spec, Catalog};
use hektor_topics::codec::{self, Encoding};
use hektor_topics::hlc::HlcClock;
use hektor_topics::record::{CatalogEntry, CollectionSpec, PlanAction, RingRange, Tier};
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind, CATALOG_TOPIC};

use crate::memlog::MemLog;
use crate::record::docs_spec;

/// What every run shares: a runtime, a log with the collection `docs` in its catalog, the
/// writer over it, and a shard map of `docs`.
struct World {
    runtime: tokio::runtime::Runtime,
    log: Arc<MemLog>,
    writer: Writer,
    map: ShardMap,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let log = Arc::new(MemLog::new(64));
        let spec = docs_spec();
        log.push(
            CATALOG_TOPIC,
            0,
            codec::to_log_record(
                Some(spec.name.clone().into_bytes()),
                &CatalogEntry::Create(spec.clone()),
                Encoding::Json,
            )
            .expect("the spec encodes"),
        );
        let catalog = runtime
            .block_on(Catalog::open(log.clone(), 1))
            .expect("the catalog opens");
        assert!(catalog.get(&spec.name).is_some());
        let writer = Writer::new(catalog, Arc::new(HlcClock::new()), "eu");
        World {
            runtime,
            log,
            writer,
            map: four_shards(),
        }
    })
}

/// `docs` as four shards of the ring, on two nodes.
pub fn four_shards() -> ShardMap {
    let quarter = 1u64 << 62;
    let shards = (0..4u64)
        .map(|i| Shard {
            range: RingRange {
                start: i * quarter,
                end: (i < 3).then(|| (i + 1) * quarter),
            },
            replicas: vec![if i % 2 == 0 { "n1" } else { "n2" }.into()],
            tier: Tier::Hot,
        })
        .collect();
    ShardMap::new("docs", 3, shards).expect("a valid map")
}

/// One run of the target.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let dimension = docs_spec().dimension;
    match selector & 7 {
        0 => {
            let Ok(request) = serde_json::from_slice::<SearchRequest>(body) else {
                return;
            };
            // `Searcher::search` runs `check_search` on these fields; `ShardSearch::check`
            // runs the same function on the same fields.
            let as_shard_call = ShardSearch {
                incarnation: 0,
                range: RingRange::FULL,
                partition: 0,
                vector: request.vector.clone(),
                k: request.k,
                filter: None,
                after: None,
                timeout_ms: request.consistency.as_ref().and_then(|c| c.timeout_ms),
                effort: request.effort,
                rescore: request.rescore,
                floor: None,
                session: None,
            };
            if as_shard_call.check(dimension).is_ok() {
                if let Some(tenant) = request.tenant.as_deref() {
                    let range = ring::tenant_range(tenant);
                    assert!(!w.map.overlapping(range).is_empty());
                }
            }
        }
        1 => {
            let Ok(call) = serde_json::from_slice::<ShardSearch>(body) else {
                return;
            };
            if call.check(dimension).is_ok() {
                if let Some(filter) = call.filter {
                    assert!(!w.map.overlapping(filter).is_empty());
                }
            }
            // What a router sends is what a node reads.
            let sent = serde_json::to_vec(&call).expect("a call serializes");
            let read: ShardSearch = serde_json::from_slice(&sent).expect("a sent call parses");
            assert_eq!(
                serde_json::to_value(&read).expect("to value"),
                serde_json::to_value(&call).expect("to value")
            );
        }
        2 => {
            let Ok(call) = serde_json::from_slice::<ShardGet>(body) else {
                return;
            };
            let position = ring::position(call.tenant.as_deref(), &call.id);
            assert!(w.map.shard_for(position).range.contains(position));
        }
        3 => {
            if let Ok(batch) = serde_json::from_slice::<WriteBatch>(body) {
                write(w, batch);
            }
        }
        4 => {
            if let Ok(batch) = hektor_ingest::http::parse_bulk(body) {
                write(w, batch);
            }
        }
        5 => {
            let Ok(spec) = serde_json::from_slice::<CollectionSpec>(body) else {
                return;
            };
            if validate_spec(&spec).is_ok() {
                let entry = CatalogEntry::Create(spec);
                let bytes = codec::encode(&entry, Encoding::Json).expect("a valid spec encodes");
                let back: CatalogEntry =
                    codec::decode(&bytes, Some(b"json.v1")).expect("and decodes");
                assert_eq!(back, entry);
            }
        }
        6 => {
            let Ok(action) = serde_json::from_slice::<PlanAction>(body) else {
                return;
            };
            if let Ok(next) = w.map.apply(&action) {
                assert!(next.validate().is_ok());
                assert_eq!(next.epoch(), w.map.epoch() + 1);
            }
        }
        _ => {
            let Ok(token) = serde_json::from_slice::<Token>(body) else {
                return;
            };
            let mut merged = Token::default();
            merged.merge(&token);
            merged.merge(&token);
            assert_eq!(merged, token);
        }
    }
}

/// What `POST /collections/docs/vectors` does with a parsed batch, then what the
/// indexers do with the records it appended.
fn write(w: &World, batch: WriteBatch) {
    let spec = docs_spec();
    let items = batch.len();
    let result = w.runtime.block_on(w.writer.write(&spec.name, batch));
    let topic = topic_name(&spec.name, TopicKind::Vectors);
    if let Ok((token, written)) = result {
        assert_eq!(written.len(), items);
        for partition in 0..spec.partitions {
            let records = w.log.records(&topic, partition);
            if let Some(&offset) = token.offsets.get(&partition) {
                assert_eq!(records.last().map(|r| r.offset), Some(offset));
            }
            for stored in &records {
                if let Err(why) = hektor_indexers::host::to_op(&spec, partition, stored) {
                    // See docs/fuzzing.md: the write door lets a zero vector through
                    // under cosine; the indexers dead-letter it.
                    assert!(why.contains("zero vector"), "{why}");
                }
            }
        }
    }
    w.log.clear(&topic);
}
