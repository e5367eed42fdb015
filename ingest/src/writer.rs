//! The writer: validated batches become vector records at their ring partitions.
//!
//! A batch is validated whole, then split by partition (`ring::partition_of` of each
//! record's ring position) and appended to the vectors topic, one append per partition,
//! all in flight at once. The answer comes only after every append is durable, with a
//! [`Token`] naming the last offset written in each partition.
//!
//! Across partitions a batch is not atomic: if the log fails part-way, the partitions
//! already appended stay written and the caller gets an error (a retry is harmless:
//! upserts and deletes are idempotent by id).

use std::collections::BTreeMap;
use std::sync::Arc;

use hektor_log::LogRecord;
use hektor_merge::{stamp::SEEN_HEADER, VersionVector};
use hektor_topics::catalog::Catalog;
use hektor_topics::codec::{self, Encoding};
use hektor_topics::hlc::HlcClock;
use hektor_topics::record::{CollectionSpec, VectorDelete, VectorRecord, VectorTick, VectorUpsert};
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind};

use crate::validate::{validate_batch, WriteBatch};
use crate::{IngestError, Token};

/// Appends validated writes to the log.
pub struct Writer {
    catalog: Arc<Catalog>,
    clock: Arc<HlcClock>,
    region: String,
    seen: Option<Arc<dyn SeenSource>>,
}

/// What this node's region has applied of the other regions, per partition: the `seen`
/// version vector a write carries ([`hektor_merge::SEEN_HEADER`]) so that shards can tell
/// a write made knowing another region's write from a concurrent one.
pub trait SeenSource: Send + Sync {
    /// For `collection`'s `partition`, each other region's clock floor as merged here, or
    /// `None` when this node cannot tell (it holds no shard of that partition).
    fn seen(&self, collection: &str, partition: u32) -> Option<VersionVector>;
}

/// What one accepted write did, for metrics and hotness events.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub partition: u32,
    pub ring: u64,
    pub delete: bool,
}

impl Writer {
    pub fn new(catalog: Arc<Catalog>, clock: Arc<HlcClock>, region: impl Into<String>) -> Writer {
        Writer {
            catalog,
            clock,
            region: region.into(),
            seen: None,
        }
    }

    /// Stamp every write with what this node's region has applied of the other regions.
    pub fn with_seen(mut self, seen: Arc<dyn SeenSource>) -> Writer {
        self.seen = Some(seen);
        self
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The clock that stamps this node's writes (the intake observes forwarded stamps on it).
    pub fn clock(&self) -> &Arc<HlcClock> {
        &self.clock
    }

    /// The region stamped as the origin of this node's writes.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The settings of a collection, or [`IngestError::UnknownCollection`].
    pub fn spec(&self, collection: &str) -> Result<CollectionSpec, IngestError> {
        self.catalog
            .get(collection)
            .ok_or_else(|| IngestError::UnknownCollection(collection.into()))
    }

    /// Validate and append a batch; returns the token once it is durable.
    pub async fn write(
        &self,
        collection: &str,
        batch: WriteBatch,
    ) -> Result<(Token, Vec<Written>), IngestError> {
        let spec = self.spec(collection)?;
        validate_batch(&spec, &batch)?;
        let records = self.to_records(&spec, batch);
        self.append_records(&spec, &records).await
    }

    /// Turn a validated batch into (partition, ring position, record) triples.
    fn to_records(&self, spec: &CollectionSpec, batch: WriteBatch) -> Vec<VectorRecord> {
        let mut out = Vec::with_capacity(batch.len());
        for item in batch.upserts {
            out.push(VectorRecord::Upsert(VectorUpsert {
                collection: spec.name.clone(),
                id: item.id,
                tenant: item.tenant,
                vector: item.vector,
                payload: item.payload,
                hlc: self.clock.now(),
                origin: self.region.clone(),
            }));
        }
        for item in batch.deletes {
            out.push(VectorRecord::Delete(VectorDelete {
                collection: spec.name.clone(),
                tenant: item.tenant().map(str::to_owned),
                id: item.id().to_owned(),
                hlc: self.clock.now(),
                origin: self.region.clone(),
            }));
        }
        out
    }

    /// Close the current time on `partitions` of `spec`'s collection: append one
    /// [`VectorTick`] to each, stamped now by this node's clock, with what this region has
    /// merged of the others (see [`VectorTick`] for what other regions read from it).
    pub async fn tick(
        &self,
        spec: &CollectionSpec,
        partitions: &[u32],
    ) -> Result<Token, IngestError> {
        let ticks: Vec<VectorRecord> = partitions
            .iter()
            .filter(|p| **p < spec.partitions)
            .map(|&partition| {
                VectorRecord::Tick(VectorTick {
                    collection: spec.name.clone(),
                    partition,
                    hlc: self.clock.now(),
                    origin: self.region.clone(),
                })
            })
            .collect();
        Ok(self.append_records(spec, &ticks).await?.0)
    }

    /// Append already-validated records of one collection at their ring partitions: the one
    /// placement rule of the write path, shared by the HTTP writes and the intake.
    pub async fn append_records(
        &self,
        spec: &CollectionSpec,
        records: &[VectorRecord],
    ) -> Result<(Token, Vec<Written>), IngestError> {
        let topic = topic_name(&spec.name, TopicKind::Vectors);
        let mut by_partition: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
        let mut written = Vec::with_capacity(records.len());
        for record in records {
            let partition = record.partition(spec.partitions);
            // Keyed by (tenant, id): compaction keeps the latest record of each vector,
            // never one tenant's record in place of another's with the same id.
            let log_record = codec::to_log_record(Some(record.key()), record, Encoding::Binary)?;
            by_partition.entry(partition).or_default().push(log_record);
            if !matches!(record, VectorRecord::Tick(_)) {
                written.push(Written {
                    partition,
                    ring: ring::position(record.tenant(), record.id()),
                    delete: matches!(record, VectorRecord::Delete(_)),
                });
            }
        }
        if let Some(source) = &self.seen {
            for (partition, batch) in by_partition.iter_mut() {
                if let Some(seen) = source.seen(&spec.name, *partition) {
                    let header = seen.to_header();
                    for record in batch.iter_mut() {
                        record
                            .headers
                            .push((SEEN_HEADER.to_owned(), header.clone().into_bytes()));
                    }
                }
            }
        }
        let log = self.catalog.log();
        let appends = by_partition.into_iter().map(|(partition, batch)| {
            let topic = topic.as_str();
            async move {
                let offsets = log.append(topic, partition, batch).await?;
                Ok::<_, IngestError>((partition, offsets.last().copied()))
            }
        });
        let mut token = Token::default();
        for result in futures::future::join_all(appends).await {
            let (partition, last) = result?;
            if let Some(offset) = last {
                token.observe(partition, offset);
            }
        }
        Ok((token, written))
    }
}
