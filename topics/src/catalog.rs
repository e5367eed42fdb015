//! The catalog: which collections exist and their settings, kept in the compacted
//! `hektor.catalog` topic so every node (and a restarted one) agrees.
//!
//! The catalog owns collection specs and the creation and removal of a collection's topics.
//! It does not open shards or serve queries: those follow the catalog through
//! [`Catalog::subscribe`].
//!
//! Every entry read from the topic passes [`validate_spec`], the same check the HTTP
//! door's [`Catalog::create`] makes: the log is not trusted (a collection name becomes a
//! topic name and a data-directory path). An entry that fails it, or cannot be decoded,
//! is skipped with a rate-limited warning and counted ([`Catalog::refused_entries`]); the
//! entries around it still apply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{watch, Mutex};

use crate::codec::{self, Encoding};
use crate::error::Refusals;
use crate::record::{CatalogEntry, CollectionSpec, PlacementSpec};
use crate::topic::{self, CATALOG_TOPIC};
use crate::{Error, Result};
use hektor_log::Log;

/// Partition counts a collection may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Largest vector dimension accepted.
pub const MAX_DIMENSION: u32 = 8192;
/// Most copies of each shard.
pub const MAX_REPLICATION: u32 = 16;
/// Most virtual nodes per unit of weight of the consistent-hash placement (the bound
/// `hektor_cluster::placement::MAX_VNODES` enforces when the controller builds it).
pub const MAX_VNODES: usize = 10_000;
/// At most one warning about refused catalog entries per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a collection could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// It exists with exactly these settings already (an idempotent retry).
    AlreadyExists,
}

/// The collections of this cluster, replayed from the catalog topic.
pub struct Catalog {
    log: Arc<dyn Log>,
    /// Each collection with its incarnation: the catalog offset of the entry that created
    /// it, so a collection dropped and created again under the same name is a new thing
    /// (its shards live in other directories).
    collections: RwLock<BTreeMap<String, (CollectionSpec, u64)>>,
    /// Next catalog-topic offset to read.
    cursor: Mutex<u64>,
    version: watch::Sender<u64>,
    /// Kafka replication factor for topics this catalog creates.
    replication: u16,
    /// When set, this node serves only collections whose names start with it.
    scope: Option<String>,
    /// Entries read from the topic and not applied (undecodable or invalid).
    refused: Refusals,
}

impl Catalog {
    /// Create the cluster topics if needed and replay the catalog.
    pub async fn open(log: Arc<dyn Log>, replication: u16) -> Result<Arc<Catalog>> {
        Catalog::open_scoped(log, replication, None).await
    }

    /// Like [`Catalog::open`], but the node sees (serves, indexes, accepts writes for)
    /// only collections whose names start with `scope`. Nodes sharing a Kafka cluster can
    /// split collections between them this way.
    pub async fn open_scoped(
        log: Arc<dyn Log>,
        replication: u16,
        scope: Option<String>,
    ) -> Result<Arc<Catalog>> {
        for spec in topic::cluster_topics(replication) {
            log.ensure_topic(&spec).await?;
        }
        let catalog = Arc::new(Catalog {
            log,
            collections: RwLock::new(BTreeMap::new()),
            cursor: Mutex::new(0),
            version: watch::channel(0).0,
            replication,
            scope,
            refused: Refusals::new("catalog entry", WARN_EVERY),
        });
        catalog.refresh().await?;
        Ok(catalog)
    }

    /// Read catalog entries appended since the last refresh (by any node).
    pub async fn refresh(&self) -> Result<()> {
        let mut cursor = self.cursor.lock().await;
        let high = self.log.high_watermark(CATALOG_TOPIC, 0).await?;
        let mut changed = false;
        while *cursor < high {
            let batch = self
                .log
                .read(CATALOG_TOPIC, 0, *cursor, 1024, Duration::from_millis(100))
                .await?;
            let Some(last) = batch.last() else { break };
            *cursor = last.offset + 1;
            let mut collections = self.collections.write();
            for stored in &batch {
                let checked = codec::from_log_record::<CatalogEntry>(&stored.record)
                    .and_then(|entry| validate_entry(&entry).map(|()| entry));
                match checked {
                    Ok(CatalogEntry::Create(spec)) => {
                        collections.insert(spec.name.clone(), (spec, stored.offset));
                        changed = true;
                    }
                    Ok(CatalogEntry::Drop { name }) => {
                        changed |= collections.remove(&name).is_some();
                    }
                    Err(err) => self.refused.refuse(stored.offset, &err),
                }
            }
        }
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// Keep refreshing in the background (for nodes sharing a Kafka cluster).
    pub fn follow(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let catalog = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(err) = catalog.refresh().await {
                    tracing::warn!(%err, "catalog refresh failed");
                }
            }
        })
    }

    /// A receiver that changes whenever a collection is created or dropped.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether this node serves the collection (see [`Catalog::open_scoped`]).
    pub fn in_scope(&self, name: &str) -> bool {
        self.scope
            .as_deref()
            .is_none_or(|prefix| name.starts_with(prefix))
    }

    pub fn get(&self, name: &str) -> Option<CollectionSpec> {
        if !self.in_scope(name) {
            return None;
        }
        self.collections
            .read()
            .get(name)
            .map(|(spec, _)| spec.clone())
    }

    /// The incarnation of a collection: the catalog offset of the entry that created it.
    pub fn incarnation(&self, name: &str) -> Option<u64> {
        if !self.in_scope(name) {
            return None;
        }
        self.collections.read().get(name).map(|(_, inc)| *inc)
    }

    /// Every collection in scope with its incarnation, by name.
    pub fn list_incarnations(&self) -> Vec<(CollectionSpec, u64)> {
        self.collections
            .read()
            .values()
            .filter(|(spec, _)| self.in_scope(&spec.name))
            .cloned()
            .collect()
    }

    pub fn list(&self) -> Vec<CollectionSpec> {
        self.list_incarnations()
            .into_iter()
            .map(|(spec, _)| spec)
            .collect()
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// Like [`Catalog::get`], but when the collection is unknown, read the catalog topic
    /// once more first: another node may have created it a moment ago (the background
    /// follow polls every 500 ms).
    pub async fn resolve(&self, name: &str) -> Option<CollectionSpec> {
        if let Some(spec) = self.get(name) {
            return Some(spec);
        }
        if let Err(err) = self.refresh().await {
            tracing::warn!(%err, "catalog refresh failed");
        }
        self.get(name)
    }

    /// How many catalog entries were read and refused (undecodable or invalid) so far.
    pub fn refused_entries(&self) -> u64 {
        self.refused.total()
    }

    /// The Kafka replication factor of topics this catalog creates.
    pub fn replication(&self) -> u16 {
        self.replication
    }

    /// Create a collection and its topics. Creating one that exists with the same settings
    /// is [`CreateOutcome::AlreadyExists`]; with other settings it is [`Error::CollectionExists`].
    pub async fn create(&self, spec: CollectionSpec) -> Result<CreateOutcome> {
        validate_spec(&spec)?;
        if !self.in_scope(&spec.name) {
            return Err(Error::InvalidSpec {
                collection: spec.name.clone(),
                reason: format!(
                    "this node serves only collections whose names start with `{}`",
                    self.scope.as_deref().unwrap_or_default()
                ),
            });
        }
        self.refresh().await?;
        if let Some(existing) = self.get(&spec.name) {
            return if existing == spec {
                Ok(CreateOutcome::AlreadyExists)
            } else {
                Err(Error::CollectionExists(spec.name))
            };
        }
        for topic in
            topic::collection_topics(&spec.name, spec.partitions, self.replication, spec.merge)
        {
            self.log.ensure_topic(&topic).await?;
        }
        self.append(CatalogEntry::Create(spec.clone()), &spec.name)
            .await?;
        Ok(CreateOutcome::Created)
    }

    /// Drop a collection and delete its topics. Returns false if it did not exist.
    pub async fn drop_collection(&self, name: &str) -> Result<bool> {
        self.refresh().await?;
        if self.get(name).is_none() {
            return Ok(false);
        }
        self.append(CatalogEntry::Drop { name: name.into() }, name)
            .await?;
        for kind in topic::TopicKind::ALL {
            self.log
                .delete_topic(&topic::topic_name(name, kind))
                .await?;
        }
        Ok(true)
    }

    async fn append(&self, entry: CatalogEntry, key: &str) -> Result<()> {
        let record = codec::to_log_record(Some(key.as_bytes().to_vec()), &entry, Encoding::Json)?;
        self.log.append(CATALOG_TOPIC, 0, vec![record]).await?;
        self.refresh().await
    }
}

/// Check an entry read from the catalog topic: a create as [`validate_spec`], a drop's name.
fn validate_entry(entry: &CatalogEntry) -> Result<()> {
    match entry {
        CatalogEntry::Create(spec) => validate_spec(spec),
        CatalogEntry::Drop { name } => topic::validate_collection_name(name),
    }
}

/// Check a collection's settings: before anything is created (the HTTP door) and before
/// an entry read from the catalog topic is applied (the log door).
pub fn validate_spec(spec: &CollectionSpec) -> Result<()> {
    topic::validate_collection_name(&spec.name)?;
    let invalid = |reason: String| Error::InvalidSpec {
        collection: spec.name.clone(),
        reason,
    };
    if spec.dimension == 0 || spec.dimension > MAX_DIMENSION {
        return Err(invalid(format!(
            "dimension must be between 1 and {MAX_DIMENSION}, got {}",
            spec.dimension
        )));
    }
    if spec.partitions == 0 || spec.partitions > MAX_PARTITIONS {
        return Err(invalid(format!(
            "partitions must be between 1 and {MAX_PARTITIONS}, got {}",
            spec.partitions
        )));
    }
    if spec.replication == 0 || spec.replication > MAX_REPLICATION {
        return Err(invalid(format!(
            "replication must be between 1 and {MAX_REPLICATION}, got {}",
            spec.replication
        )));
    }
    if let PlacementSpec::ConsistentHash { vnodes } = spec.placement {
        if vnodes == 0 || vnodes > MAX_VNODES {
            return Err(invalid(format!(
                "consistent_hash placement takes 1 to {MAX_VNODES} vnodes, got {vnodes}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Distance;
    use hektor_log::embedded::EmbeddedLog;
    use hektor_log::LogRecord;

    fn spec(name: &str, dimension: u32) -> CollectionSpec {
        CollectionSpec {
            name: name.into(),
            dimension,
            distance: Distance::Cosine,
            partitions: 2,
            replication: 1,
            placement: PlacementSpec::default(),
            merge: Default::default(),
            write_level: Default::default(),
        }
    }

    /// Append an entry to the catalog topic as a forger would: past `Catalog::create`.
    async fn forge(log: &Arc<dyn Log>, entry: CatalogEntry) {
        let key = match &entry {
            CatalogEntry::Create(spec) => spec.name.clone(),
            CatalogEntry::Drop { name } => name.clone(),
        };
        let record =
            codec::to_log_record(Some(key.into_bytes()), &entry, Encoding::Json).expect("encode");
        log.append(CATALOG_TOPIC, 0, vec![record])
            .await
            .expect("append");
    }

    fn names(catalog: &Catalog) -> Vec<String> {
        catalog.list().into_iter().map(|s| s.name).collect()
    }

    #[tokio::test]
    async fn catalog_replay_skips_forged_entries_and_applies_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path()).expect("open log"));
        for t in topic::cluster_topics(1) {
            log.ensure_topic(&t).await.expect("cluster topics");
        }
        forge(&log, CatalogEntry::Create(spec("a", 4))).await;
        forge(&log, CatalogEntry::Create(spec("../evil", 4))).await;
        forge(&log, CatalogEntry::Create(spec("zero", 0))).await;
        forge(&log, CatalogEntry::Create(spec("b", 4))).await;

        let catalog = Catalog::open(Arc::clone(&log), 1)
            .await
            .expect("a bad entry does not stop the replay");
        assert_eq!(names(&catalog), ["a", "b"]);
        assert_eq!(catalog.refused_entries(), 2);

        // The same holds for entries that arrive while the catalog follows the topic.
        let mut absurd = vec![
            spec("huge", 1_000_000_000),
            spec("p0", 4),
            spec("p1m", 4),
            spec("r0", 4),
            spec("vn", 4),
            spec("/etc", 4),
            spec("", 4),
        ];
        absurd[1].partitions = 0;
        absurd[2].partitions = 1_000_000;
        absurd[3].replication = 0;
        absurd[4].placement = PlacementSpec::ConsistentHash { vnodes: usize::MAX };
        for s in absurd {
            forge(&log, CatalogEntry::Create(s)).await;
        }
        forge(
            &log,
            CatalogEntry::Drop {
                name: "../a".into(),
            },
        )
        .await;
        log.append(
            CATALOG_TOPIC,
            0,
            vec![LogRecord::new(
                Some(b"junk".to_vec()),
                b"{not json".to_vec(),
            )],
        )
        .await
        .expect("append junk");
        forge(&log, CatalogEntry::Create(spec("c", 8))).await;
        catalog
            .refresh()
            .await
            .expect("refresh goes on past bad entries");
        assert_eq!(names(&catalog), ["a", "b", "c"]);
        assert_eq!(catalog.refused_entries(), 2 + 7 + 1 + 1);

        // A legitimate drop still applies.
        forge(&log, CatalogEntry::Drop { name: "a".into() }).await;
        catalog.refresh().await.expect("refresh");
        assert_eq!(names(&catalog), ["b", "c"]);
    }

    #[test]
    fn validate_spec_is_the_door_for_http_and_log_alike() {
        assert!(validate_spec(&spec("docs", 384)).is_ok());
        let mut bad = vec![spec("../x", 4), spec("x", 0), spec("x", MAX_DIMENSION + 1)];
        let mut s = spec("x", 4);
        s.partitions = MAX_PARTITIONS + 1;
        bad.push(s.clone());
        s.partitions = 2;
        s.replication = MAX_REPLICATION + 1;
        bad.push(s.clone());
        s.replication = 1;
        s.placement = PlacementSpec::ConsistentHash { vnodes: 0 };
        bad.push(s);
        for s in bad {
            assert!(validate_spec(&s).is_err(), "{s:?} accepted");
        }
    }

    #[tokio::test]
    async fn catalog_create_refuses_what_the_log_door_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path()).expect("open log"));
        let catalog = Catalog::open(Arc::clone(&log), 1).await.expect("open");
        let err = catalog.create(spec("../evil", 4)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        let err = catalog.create(spec("ok", 0)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
        assert!(names(&catalog).is_empty());
    }
}
