//! The catalog: which collections exist and their settings, kept in the compacted
//! `hektor.catalog` topic so every node (and a restarted one) agrees.
//!
//! The catalog owns collection specs and the creation and removal of a collection's topics.
//! It does not open shards or serve queries: those follow the catalog through
//! [`Catalog::subscribe`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{watch, Mutex};

use crate::codec::{self, Encoding};
use crate::log::Log;
use crate::record::{CatalogEntry, CollectionSpec};
use crate::topic::{self, CATALOG_TOPIC};
use crate::{Error, Result};

/// Partition counts a collection may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Largest vector dimension accepted.
pub const MAX_DIMENSION: u32 = 8192;

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
                match codec::from_log_record::<CatalogEntry>(&stored.record) {
                    Ok(CatalogEntry::Create(spec)) => {
                        collections.insert(spec.name.clone(), (spec, stored.offset));
                    }
                    Ok(CatalogEntry::Drop { name }) => {
                        collections.remove(&name);
                    }
                    Err(err) => {
                        tracing::warn!(offset = stored.offset, %err, "skipping unreadable catalog entry");
                    }
                }
                changed = true;
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
        for topic in topic::collection_topics(&spec.name, spec.partitions, self.replication) {
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

/// Check a collection's settings before anything is created.
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
    if spec.replication == 0 || spec.replication > 16 {
        return Err(invalid(format!(
            "replication must be between 1 and 16, got {}",
            spec.replication
        )));
    }
    Ok(())
}
