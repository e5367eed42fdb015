//! The catalog: which collections exist and their settings, kept in the compacted
//! `hektor.catalog` topic so every node (and a restarted one) agrees; and, with several
//! regions, the same collections in every region (issue #17).
//!
//! The catalog owns collection specs, the creation and removal of a collection's topics,
//! the order of catalog entries, and the adoption of entries first made in other regions.
//! It does not open shards or serve queries: those follow the catalog through
//! [`Catalog::subscribe`].
//!
//! Every entry read from a catalog topic, this region's or another region's mirrored copy,
//! passes [`validate_spec`], the same check the HTTP door's [`Catalog::create`] makes: the
//! log is not trusted (a collection name becomes a topic name and a data-directory path).
//! An entry that fails it, or cannot be decoded, is skipped with a rate-limited warning
//! and counted ([`Catalog::refused_entries`], [`Catalog::regions_view`]); the entries
//! around it still apply.
//!
//! # The rule
//!
//! Every entry this build writes carries a [`CatalogStamp`]: the hybrid-clock time of the
//! node that made it and that node's region (its origin). Per collection name the catalog
//! keeps the live collection or the drop that removed it, with the greatest stamp seen, and
//! [`next_state`] applies an entry only when its stamp is greater: a drop newer than the
//! create it names removes it, a create newer than a drop creates the name again (a new
//! incarnation), a copy of an entry already applied (same stamp) or an older one changes
//! nothing. A create of a live name with the same settings and a newer stamp keeps the
//! incarnation (its shards) and takes the newer stamp. Entries written by older builds
//! (no stamp) apply in log order as they always did, stamped by their log time.
//!
//! With `--mirror-regions`, [`Catalog::follow_regions`] reads each other region's catalog
//! as MirrorMaker 2 copied it (`<region>.hektor.catalog`) and [`adopt`] decides: an entry
//! whose origin is this region is ignored (it went out from here: nothing loops); one
//! whose stamp is newer than what this region knows of the name is *adopted*, appended
//! with its stamp to this region's own catalog (so the region's nodes create topics and
//! shards exactly as for a local create); anything else is ignored. Redelivered copies and
//! several nodes adopting at once append copies that [`next_state`] ignores.
//!
//! A create from another region whose settings differ from this region's live collection
//! of that name (two regions created it concurrently) is never adopted: a live collection
//! is only replaced through a drop, so no region loses the vectors it holds. Each region
//! keeps its own and shows the conflict ([`Catalog::conflicts`]) until someone drops the
//! name (the drop, newer than both creates, removes it everywhere) and creates it once.
//!
//! Compaction keeps only the last record of each name. So that this last record alone
//! gives the same incarnation and stamp as the whole history, a node that finds it would
//! not appends a restatement of the name's state (same stamp, so a no-op for
//! [`next_state`], with the incarnation written out).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::{watch, Mutex};

use crate::codec;
use crate::error::Refusals;
use crate::hlc::{Hlc, HlcClock};
use crate::record::{
    CatalogEntry, CatalogMeta, CatalogStamp, CollectionSpec, PlacementSpec, MAX_REGION_LEN,
};
use crate::topic::{self, CATALOG_TOPIC};
use crate::{Error, Result};
use hektor_log::{Log, StoredRecord};

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
/// The region of a catalog opened without one ([`Catalog::open`]; `serve --region`'s
/// default).
pub const DEFAULT_REGION: &str = "local";

/// Why a collection could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// It exists with exactly these settings already (an idempotent retry).
    AlreadyExists,
}

/// What a catalog knows of one collection name.
#[derive(Debug, Clone, PartialEq)]
pub enum NameState {
    /// The collection exists: its settings, its incarnation (the catalog offset of the
    /// entry that created it here) and the greatest stamp of the creates that kept it.
    Live {
        spec: CollectionSpec,
        incarnation: u64,
        stamp: CatalogStamp,
    },
    /// The name was dropped by the entry with this stamp (a tombstone: an older create
    /// arriving later does not bring it back).
    Dropped { stamp: CatalogStamp },
}

impl NameState {
    pub fn stamp(&self) -> &CatalogStamp {
        match self {
            NameState::Live { stamp, .. } | NameState::Dropped { stamp } => stamp,
        }
    }

    /// The record that states exactly this: what compaction may leave of the name.
    fn restatement(&self, name: &str) -> (CatalogEntry, CatalogMeta) {
        match self {
            NameState::Live {
                spec,
                incarnation,
                stamp,
            } => (
                CatalogEntry::Create(spec.clone()),
                CatalogMeta::stamped(stamp, Some(*incarnation)),
            ),
            NameState::Dropped { stamp } => (
                CatalogEntry::Drop { name: name.into() },
                CatalogMeta::stamped(stamp, None),
            ),
        }
    }
}

/// One catalog record, decoded and checked, with where it lies in its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRead {
    pub entry: CatalogEntry,
    pub meta: CatalogMeta,
    pub offset: u64,
    /// When the log took it (ms); the stamp of an entry written before stamps existed.
    pub timestamp_ms: i64,
}

impl CatalogRead {
    /// Decode and check a record of a catalog topic (the log door).
    pub fn of(stored: &StoredRecord) -> Result<CatalogRead> {
        let (entry, meta) = codec::catalog_entry_of(&stored.record)?;
        validate_entry(&entry)?;
        validate_meta(&entry, &meta)?;
        Ok(CatalogRead {
            entry,
            meta,
            offset: stored.offset,
            timestamp_ms: stored.timestamp_ms,
        })
    }

    /// The entry's stamp; an entry without one (written before stamps existed) is stamped
    /// by its log time and the region whose log holds it (`log_region`).
    pub fn stamp(&self, log_region: &str) -> CatalogStamp {
        self.meta.stamp().unwrap_or_else(|| CatalogStamp {
            hlc: Hlc::new(self.timestamp_ms.max(0) as u64, 0),
            origin: log_region.into(),
        })
    }
}

/// The state of a name after one more record of this region's catalog, `current` being
/// its state before (`None`: never seen). Pure; the whole merge rule of the catalog.
///
/// - A stamped entry applies only when its stamp is greater than `current`'s: copies and
///   older entries change nothing, whatever order they arrive in.
/// - A create of a live name with the same settings keeps its incarnation.
/// - Otherwise a create starts a new incarnation: the one the record names (a
///   restatement), else the record's offset.
/// - An entry without a stamp (written by an older build) applies in log order, as it
///   always did, stamped by its log time.
pub fn next_state(current: Option<&NameState>, read: &CatalogRead, log_region: &str) -> NameState {
    let stamp = read.stamp(log_region);
    let stamped = read.meta.stamp().is_some();
    if let Some(current) = current {
        if stamped && stamp <= *current.stamp() {
            return current.clone();
        }
    }
    match &read.entry {
        CatalogEntry::Create(spec) => {
            let incarnation = match current {
                Some(NameState::Live {
                    spec: live,
                    incarnation,
                    ..
                }) if stamped && live == spec => *incarnation,
                _ if stamped => read.meta.incarnation.unwrap_or(read.offset),
                _ => read.offset,
            };
            NameState::Live {
                spec: spec.clone(),
                incarnation,
                stamp,
            }
        }
        CatalogEntry::Drop { .. } => NameState::Dropped { stamp },
    }
}

/// What a node does with an entry of another region's catalog.
#[derive(Debug, Clone, PartialEq)]
pub enum Adoption {
    /// Its origin is this region: it went out from here.
    Loop,
    /// This region knows the name at this stamp or a newer one.
    Stale,
    /// Append it to this region's catalog; a create of a live name with the same settings
    /// keeps this incarnation.
    Adopt { incarnation: Option<u64> },
    /// A create whose settings differ from this region's live collection of the name:
    /// not adopted (a live collection is replaced only through a drop).
    Conflict { here: CollectionSpec },
}

/// Decide what region `here` does with `entry`, stamped `stamp`, read from another
/// region's catalog, given what `here` knows of the name (`current`). Pure.
pub fn adopt(
    here: &str,
    current: Option<&NameState>,
    entry: &CatalogEntry,
    stamp: &CatalogStamp,
) -> Adoption {
    if stamp.origin == here {
        return Adoption::Loop;
    }
    match (current, entry) {
        (
            Some(NameState::Live {
                spec: live,
                incarnation,
                stamp: known,
            }),
            CatalogEntry::Create(spec),
        ) => {
            if live != spec {
                Adoption::Conflict { here: live.clone() }
            } else if stamp > known {
                Adoption::Adopt {
                    incarnation: Some(*incarnation),
                }
            } else {
                Adoption::Stale
            }
        }
        (Some(known), _) if stamp <= known.stamp() => Adoption::Stale,
        _ => Adoption::Adopt { incarnation: None },
    }
}

/// A name two regions created with different settings, as this region sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogConflict {
    pub collection: String,
    /// The other region, whose catalog's latest entry for the name is `there`.
    pub region: String,
    pub here: CollectionSpec,
    pub there: CollectionSpec,
    /// The stamp of that entry (hlc, origin).
    pub there_hlc: u64,
    pub there_origin: String,
}

/// How far this node has read another region's catalog, and what it did with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RegionCatalogView {
    pub region: String,
    /// Next offset of `<region>.hektor.catalog` to read.
    pub next_offset: u64,
    /// Entries read (copies included).
    pub read: u64,
    /// Entries this node appended to its region's catalog.
    pub adopted: u64,
    /// Entries refused (undecodable or invalid).
    pub refused: u64,
    /// The last error reading it (most often: MirrorMaker has not created it yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the catalog remembers of a name: its state and what its last record alone says.
#[derive(Debug, Clone)]
struct Known {
    state: NameState,
    last_alone: NameState,
}

/// Another region's catalog as this node follows it.
#[derive(Debug, Default)]
struct Followed {
    view: RegionCatalogView,
    /// Per name, that region's latest create when it differs from ours (a conflict).
    latest_creates: BTreeMap<String, (CollectionSpec, CatalogStamp)>,
}

/// The collections of this cluster, replayed from the catalog topic.
pub struct Catalog {
    log: Arc<dyn Log>,
    /// Each name ever read, live or dropped. A live collection's incarnation is the
    /// catalog offset of the entry that created it, so a collection dropped and created
    /// again under the same name is a new thing (its shards live in other directories).
    names: RwLock<BTreeMap<String, Known>>,
    /// Next catalog-topic offset to read.
    cursor: Mutex<u64>,
    version: watch::Sender<u64>,
    /// Kafka replication factor for topics this catalog creates.
    replication: u16,
    /// When set, this node serves only collections whose names start with it.
    scope: Option<String>,
    /// This node's region: the origin of the entries it makes.
    region: String,
    /// Stamps the entries this node makes; observes every stamp applied.
    clock: Arc<HlcClock>,
    /// Entries read from the topic and not applied (undecodable or invalid).
    refused: Refusals,
    /// Entries of other regions' catalogs refused.
    refused_mirrored: Refusals,
    /// Other regions' catalogs this node follows, by region.
    followed: parking_lot::Mutex<BTreeMap<String, Followed>>,
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
        Catalog::open_in_region(
            log,
            replication,
            scope,
            DEFAULT_REGION,
            Arc::new(HlcClock::new()),
        )
        .await
    }

    /// Like [`Catalog::open_scoped`], for a node of `region` whose entries `clock` stamps
    /// (the node's clock, the one that stamps its writes).
    pub async fn open_in_region(
        log: Arc<dyn Log>,
        replication: u16,
        scope: Option<String>,
        region: &str,
        clock: Arc<HlcClock>,
    ) -> Result<Arc<Catalog>> {
        validate_region(region)?;
        for spec in topic::cluster_topics(replication) {
            log.ensure_topic(&spec).await?;
        }
        let catalog = Arc::new(Catalog {
            log,
            names: RwLock::new(BTreeMap::new()),
            cursor: Mutex::new(0),
            version: watch::channel(0).0,
            replication,
            scope,
            region: region.into(),
            clock,
            refused: Refusals::new("catalog entry", WARN_EVERY),
            refused_mirrored: Refusals::new("mirrored catalog entry", WARN_EVERY),
            followed: parking_lot::Mutex::new(BTreeMap::new()),
        });
        catalog.refresh().await?;
        Ok(catalog)
    }

    /// Read catalog entries appended since the last refresh (by any node).
    pub async fn refresh(&self) -> Result<()> {
        let mut restate = Vec::new();
        {
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
                let mut names = self.names.write();
                for stored in &batch {
                    let read = match CatalogRead::of(stored) {
                        Ok(read) => read,
                        Err(err) => {
                            self.refused.refuse(stored.offset, &err);
                            continue;
                        }
                    };
                    if let Some(stamp) = read.meta.stamp() {
                        self.clock.observe(stamp.hlc);
                    }
                    let name = read.entry.name().to_owned();
                    let current = names.get(&name).map(|k| &k.state);
                    let state = next_state(current, &read, &self.region);
                    let last_alone = next_state(None, &read, &self.region);
                    changed |= current.is_none_or(|c| !same_collection(c, &state));
                    names.insert(name, Known { state, last_alone });
                }
            }
            if changed {
                self.version.send_modify(|v| *v += 1);
            }
            // Where the last record of a name alone says something else than its whole
            // history (a copy appended after the entry that created it, an older entry
            // after a newer one), compaction would change the name's incarnation or bring
            // a dropped name back: restate it. Every name is checked (a restatement that
            // could not be appended is tried again at the next refresh).
            let names = self.names.read();
            for (name, known) in names.iter() {
                if known.state != known.last_alone && self.in_scope(name) {
                    restate.push(known.state.restatement(name));
                }
            }
        }
        if !restate.is_empty() {
            let records = restate
                .iter()
                .map(|(entry, meta)| codec::catalog_record(entry, meta))
                .collect::<Result<Vec<_>>>()?;
            tracing::debug!(
                count = records.len(),
                "restating catalog entries so compaction keeps them"
            );
            // No-ops for the state: the next refresh reads them. Failing to append them
            // fails nothing else.
            if let Err(err) = self.log.append(CATALOG_TOPIC, 0, records).await {
                tracing::warn!(%err, "could not restate catalog entries; trying again at the next refresh");
            }
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

    /// Follow each other region's catalog as MirrorMaker 2 copied it into this region's
    /// log (`<region>.hektor.catalog`) every `every`, adopting what [`adopt`] says to.
    /// Each starts from its beginning (decisions depend on this region's catalog only,
    /// so reading an entry again does nothing twice). A topic not there yet is retried.
    pub fn follow_regions(
        self: &Arc<Self>,
        regions: Vec<String>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let catalog = Arc::clone(self);
        {
            let mut followed = catalog.followed.lock();
            for region in &regions {
                followed.entry(region.clone()).or_default().view.region = region.clone();
            }
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                for region in &regions {
                    let result = catalog.adopt_from(region).await;
                    let mut followed = catalog.followed.lock();
                    let f = followed.entry(region.clone()).or_default();
                    match result {
                        Ok(()) => f.view.error = None,
                        Err(err) => {
                            if f.view.error.is_none() {
                                tracing::info!(%err, %region, "cannot read that region's catalog yet; retrying");
                            }
                            f.view.error = Some(err.to_string());
                        }
                    }
                }
            }
        })
    }

    /// Read what is new in region `region`'s mirrored catalog and adopt what is to be.
    pub async fn adopt_from(&self, region: &str) -> Result<()> {
        let topic = mirrored_catalog_topic(region);
        self.followed
            .lock()
            .entry(region.into())
            .or_default()
            .view
            .region = region.into();
        let high = self.log.high_watermark(&topic, 0).await?;
        loop {
            let next = self
                .followed
                .lock()
                .entry(region.into())
                .or_default()
                .view
                .next_offset;
            if next >= high {
                return Ok(());
            }
            let batch = self
                .log
                .read(&topic, 0, next, 256, Duration::from_millis(100))
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            self.refresh().await?;
            for stored in &batch {
                self.take_mirrored(region, stored).await?;
                let mut followed = self.followed.lock();
                let f = followed.entry(region.into()).or_default();
                f.view.next_offset = stored.offset + 1;
                f.view.read += 1;
            }
        }
    }

    /// Skip record `offset` of region `region`'s catalog for `err`: warned (rate limited)
    /// and counted for that region; the records after it still apply.
    fn refuse_mirrored(&self, region: &str, offset: u64, err: &Error) {
        self.refused_mirrored.refuse(offset, err);
        self.followed
            .lock()
            .entry(region.into())
            .or_default()
            .view
            .refused += 1;
    }

    /// One record of region `region`'s catalog: check it, decide, adopt.
    async fn take_mirrored(&self, region: &str, stored: &StoredRecord) -> Result<()> {
        let read = match CatalogRead::of(stored) {
            Ok(read) => read,
            Err(err) => {
                self.refuse_mirrored(region, stored.offset, &err);
                return Ok(());
            }
        };
        let name = read.entry.name().to_owned();
        if !self.in_scope(&name) {
            return Ok(());
        }
        let stamp = read.stamp(region);
        let current = self.names.read().get(&name).map(|k| k.state.clone());
        let decision = adopt(&self.region, current.as_ref(), &read.entry, &stamp);
        {
            let mut followed = self.followed.lock();
            let f = followed.entry(region.into()).or_default();
            match (&decision, &read.entry) {
                (Adoption::Conflict { here }, CatalogEntry::Create(there)) => {
                    let new = f
                        .latest_creates
                        .insert(name.clone(), (there.clone(), stamp.clone()))
                        .is_none_or(|(spec, _)| spec != *there);
                    if new {
                        tracing::warn!(
                            collection = %name,
                            %region,
                            here = ?here,
                            there = ?there,
                            "a collection of this name exists here with other settings than that region's; each region keeps its own (drop it and create it once to resolve)"
                        );
                    }
                }
                _ => {
                    f.latest_creates.remove(&name);
                }
            }
        }
        let Adoption::Adopt { incarnation } = decision else {
            return Ok(());
        };
        self.clock.observe(stamp.hlc);
        let was_live = matches!(current, Some(NameState::Live { .. }));
        if let CatalogEntry::Create(spec) = &read.entry {
            for topic in
                topic::collection_topics(&spec.name, spec.partitions, self.replication, spec.merge)
            {
                match self.log.ensure_topic(&topic).await {
                    Ok(()) => {}
                    // A topic this region has under that name with other settings (left
                    // by something else): no retry will change it, so the entry is
                    // refused, counted, and the entries after it still apply.
                    Err(
                        err @ (hektor_log::LogError::TopicMismatch { .. }
                        | hektor_log::LogError::InvalidPartitions { .. }
                        | hektor_log::LogError::InvalidName { .. }),
                    ) => {
                        self.refuse_mirrored(region, stored.offset, &Error::Log(err));
                        return Ok(());
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        let meta = CatalogMeta::stamped(&stamp, incarnation);
        self.append(&read.entry, &meta).await?;
        self.followed
            .lock()
            .entry(region.into())
            .or_default()
            .view
            .adopted += 1;
        tracing::info!(collection = %name, %region, origin = %stamp.origin, hlc = stamp.hlc.0, op = op_of(&read.entry), "adopted a catalog entry of another region");
        let dropped_here = matches!(
            self.names.read().get(&name).map(|k| &k.state),
            Some(NameState::Dropped { stamp: s }) if *s == stamp
        );
        if was_live && dropped_here {
            self.delete_topics(&name).await?;
        }
        Ok(())
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

    /// This node's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn live(&self, name: &str) -> Option<(CollectionSpec, u64)> {
        if !self.in_scope(name) {
            return None;
        }
        match self.names.read().get(name).map(|k| &k.state) {
            Some(NameState::Live {
                spec, incarnation, ..
            }) => Some((spec.clone(), *incarnation)),
            _ => None,
        }
    }

    pub fn get(&self, name: &str) -> Option<CollectionSpec> {
        self.live(name).map(|(spec, _)| spec)
    }

    /// The incarnation of a collection: the catalog offset of the entry that created it.
    pub fn incarnation(&self, name: &str) -> Option<u64> {
        self.live(name).map(|(_, inc)| inc)
    }

    /// What this catalog knows of a name (live or dropped, with the stamp), in scope or
    /// not.
    pub fn state(&self, name: &str) -> Option<NameState> {
        self.names.read().get(name).map(|k| k.state.clone())
    }

    /// Every collection in scope with its incarnation, by name.
    pub fn list_incarnations(&self) -> Vec<(CollectionSpec, u64)> {
        self.names
            .read()
            .values()
            .filter_map(|k| match &k.state {
                NameState::Live {
                    spec, incarnation, ..
                } if self.in_scope(&spec.name) => Some((spec.clone(), *incarnation)),
                _ => None,
            })
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

    /// How many entries of this region's catalog were read and refused (undecodable or
    /// invalid) so far.
    pub fn refused_entries(&self) -> u64 {
        self.refused.total()
    }

    /// Each other region's catalog this node follows: how far read, adopted, refused.
    pub fn regions_view(&self) -> Vec<RegionCatalogView> {
        self.followed
            .lock()
            .values()
            .map(|f| f.view.clone())
            .collect()
    }

    /// The names that another region created with other settings than this region's
    /// live collection (by that region's latest entry for the name), by name and region.
    pub fn conflicts(&self) -> Vec<CatalogConflict> {
        let names = self.names.read();
        let followed = self.followed.lock();
        let mut out = Vec::new();
        for (region, f) in followed.iter() {
            for (name, (there, stamp)) in &f.latest_creates {
                if let Some(NameState::Live { spec: here, .. }) = names.get(name).map(|k| &k.state)
                {
                    if here != there {
                        out.push(CatalogConflict {
                            collection: name.clone(),
                            region: region.clone(),
                            here: here.clone(),
                            there: there.clone(),
                            there_hlc: stamp.hlc.0,
                            there_origin: stamp.origin.clone(),
                        });
                    }
                }
            }
        }
        out
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
        let meta = CatalogMeta::stamped(&self.stamp(), None);
        self.append(&CatalogEntry::Create(spec), &meta).await?;
        Ok(CreateOutcome::Created)
    }

    /// Drop a collection and delete its topics. Returns false if it did not exist.
    pub async fn drop_collection(&self, name: &str) -> Result<bool> {
        self.refresh().await?;
        if self.get(name).is_none() {
            return Ok(false);
        }
        let meta = CatalogMeta::stamped(&self.stamp(), None);
        self.append(&CatalogEntry::Drop { name: name.into() }, &meta)
            .await?;
        self.delete_topics(name).await?;
        Ok(true)
    }

    /// A new stamp for an entry this node makes.
    fn stamp(&self) -> CatalogStamp {
        CatalogStamp {
            hlc: self.clock.now(),
            origin: self.region.clone(),
        }
    }

    async fn delete_topics(&self, name: &str) -> Result<()> {
        for kind in topic::TopicKind::ALL {
            self.log
                .delete_topic(&topic::topic_name(name, kind))
                .await?;
        }
        Ok(())
    }

    async fn append(&self, entry: &CatalogEntry, meta: &CatalogMeta) -> Result<()> {
        let record = codec::catalog_record(entry, meta)?;
        self.log.append(CATALOG_TOPIC, 0, vec![record]).await?;
        self.refresh().await
    }
}

/// Whether two states show the same collections (a stamp alone changing is no news for
/// the catalog's subscribers).
fn same_collection(a: &NameState, b: &NameState) -> bool {
    match (a, b) {
        (
            NameState::Live {
                spec: s1,
                incarnation: i1,
                ..
            },
            NameState::Live {
                spec: s2,
                incarnation: i2,
                ..
            },
        ) => s1 == s2 && i1 == i2,
        (NameState::Dropped { .. }, NameState::Dropped { .. }) => true,
        _ => false,
    }
}

fn op_of(entry: &CatalogEntry) -> &'static str {
    match entry {
        CatalogEntry::Create(_) => "create",
        CatalogEntry::Drop { .. } => "drop",
    }
}

/// The topic where MirrorMaker 2 (default replication policy) copies region `region`'s
/// catalog: `<region>.hektor.catalog`.
pub fn mirrored_catalog_topic(region: &str) -> String {
    format!("{region}.{CATALOG_TOPIC}")
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

/// Check a record's meta: a stamp is whole (time and origin, or neither) and its origin a
/// region name.
fn validate_meta(entry: &CatalogEntry, meta: &CatalogMeta) -> Result<()> {
    let invalid = |reason: String| Error::InvalidSpec {
        collection: entry.name().chars().take(80).collect(),
        reason,
    };
    if meta.hlc.is_some() != meta.origin.is_some() {
        return Err(invalid(
            "a catalog entry's stamp needs both its hlc and its origin".into(),
        ));
    }
    if let Some(origin) = &meta.origin {
        validate_region(origin).map_err(|e| invalid(format!("origin: {e}")))?;
    }
    Ok(())
}

/// A region name as an entry's origin: 1 to [`MAX_REGION_LEN`] bytes, no control
/// characters (the rule of `hektor_merge::stamp::validate_region`, and not empty).
fn validate_region(region: &str) -> Result<()> {
    if region.is_empty() || region.len() > MAX_REGION_LEN || region.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            name: region.chars().take(80).collect(),
            reason: format!(
                "a region name has 1 to {MAX_REGION_LEN} bytes and no control characters"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;
    use crate::record::Distance;
    use hektor_log::embedded::EmbeddedLog;
    use hektor_log::{LogRecord, TopicSpec};
    use std::collections::BTreeSet;

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

    // ---- the rule across regions (issue #17) ------------------------------------------

    fn stamp(hlc: u64, origin: &str) -> CatalogStamp {
        CatalogStamp {
            hlc: Hlc(hlc),
            origin: origin.into(),
        }
    }

    fn read(entry: CatalogEntry, stamp: Option<CatalogStamp>, offset: u64) -> CatalogRead {
        CatalogRead {
            entry,
            meta: stamp
                .map(|s| CatalogMeta::stamped(&s, None))
                .unwrap_or_default(),
            offset,
            timestamp_ms: 1_000,
        }
    }

    fn create(name: &str, dim: u32, s: CatalogStamp, offset: u64) -> CatalogRead {
        read(CatalogEntry::Create(spec(name, dim)), Some(s), offset)
    }

    fn drop_of(name: &str, s: CatalogStamp, offset: u64) -> CatalogRead {
        read(CatalogEntry::Drop { name: name.into() }, Some(s), offset)
    }

    fn replay(reads: &[CatalogRead]) -> Option<NameState> {
        reads
            .iter()
            .fold(None, |state, r| Some(next_state(state.as_ref(), r, "west")))
    }

    fn live_of(state: &Option<NameState>) -> Option<(u32, u64)> {
        match state {
            Some(NameState::Live {
                spec, incarnation, ..
            }) => Some((spec.dimension, *incarnation)),
            _ => None,
        }
    }

    #[test]
    fn a_drop_removes_the_create_it_is_newer_than_and_an_older_drop_does_not() {
        let c = create("a", 4, stamp(100, "west"), 0);
        let newer = drop_of("a", stamp(200, "east"), 1);
        assert!(matches!(
            replay(&[c.clone(), newer.clone()]),
            Some(NameState::Dropped { .. })
        ));
        // Arriving first, the drop still wins: the create is older than the tombstone.
        assert!(matches!(
            replay(&[newer, c.clone()]),
            Some(NameState::Dropped { .. })
        ));
        let older = drop_of("a", stamp(50, "east"), 1);
        assert_eq!(live_of(&replay(&[c.clone(), older])), Some((4, 0)));
        // Same hlc: the region name decides, identically everywhere.
        let tie = drop_of("a", stamp(100, "east"), 1);
        assert_eq!(
            live_of(&replay(&[c.clone(), tie])),
            Some((4, 0)),
            "east < west"
        );
        let tie = drop_of("a", stamp(100, "zone"), 1);
        assert!(matches!(replay(&[c, tie]), Some(NameState::Dropped { .. })));
    }

    #[test]
    fn a_create_newer_than_a_drop_creates_the_name_again_as_a_new_incarnation() {
        let reads = [
            create("a", 4, stamp(100, "west"), 0),
            drop_of("a", stamp(200, "west"), 1),
            create("a", 8, stamp(300, "east"), 2),
        ];
        assert_eq!(live_of(&replay(&reads)), Some((8, 2)));
        // A copy of the first create, redelivered at a later offset, changes nothing.
        let mut again = reads.to_vec();
        again.push(create("a", 4, stamp(100, "west"), 3));
        again.push(drop_of("a", stamp(200, "west"), 4));
        assert_eq!(live_of(&replay(&again)), Some((8, 2)));
    }

    #[test]
    fn copies_and_newer_creates_with_the_same_settings_keep_the_incarnation() {
        let reads = [
            create("a", 4, stamp(100, "west"), 7),
            create("a", 4, stamp(100, "west"), 8),
            create("a", 4, stamp(150, "east"), 9),
            create("a", 4, stamp(120, "north"), 10),
        ];
        let state = replay(&reads).expect("state");
        assert_eq!(
            state,
            NameState::Live {
                spec: spec("a", 4),
                incarnation: 7,
                stamp: stamp(150, "east"),
            }
        );
        // Whatever order the entries (and their copies) come in, the same stamp and
        // settings win; the incarnation is the offset of the first create applied.
        let mut entries = [
            create("a", 4, stamp(100, "west"), 0),
            drop_of("a", stamp(200, "east"), 0),
            create("a", 8, stamp(300, "west"), 0),
            drop_of("a", stamp(250, "north"), 0),
            create("a", 8, stamp(300, "west"), 0),
        ];
        let mut seen = BTreeSet::new();
        for round in 0..120 {
            // Every rotation and reversal of the list.
            entries.rotate_left(1);
            if round % 5 == 0 {
                entries.reverse();
            }
            let reads: Vec<CatalogRead> = entries
                .iter()
                .enumerate()
                .map(|(i, r)| CatalogRead {
                    offset: i as u64,
                    ..r.clone()
                })
                .collect();
            let end = replay(&reads).expect("state");
            assert_eq!(end.stamp(), &stamp(300, "west"));
            assert!(matches!(&end, NameState::Live { spec, .. } if spec.dimension == 8));
            seen.insert(format!("{:?}", end.stamp()));
        }
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn entries_without_a_stamp_apply_in_log_order_as_they_always_did() {
        let legacy = |entry, offset| read(entry, None, offset);
        let reads = [
            legacy(CatalogEntry::Create(spec("a", 4)), 0),
            legacy(CatalogEntry::Create(spec("a", 4)), 1),
        ];
        // As before stamps: the later create names the incarnation (an older build's
        // shards live there).
        assert_eq!(live_of(&replay(&reads)), Some((4, 1)));
        let reads = [
            create("a", 4, stamp(u64::MAX / 2, "west"), 0),
            legacy(CatalogEntry::Drop { name: "a".into() }, 1),
        ];
        assert!(
            matches!(replay(&reads), Some(NameState::Dropped { .. })),
            "an older build's drop applies in log order"
        );
        // Their stamp is their log time and the log's region.
        assert_eq!(
            legacy(CatalogEntry::Drop { name: "a".into() }, 1).stamp("east"),
            stamp(Hlc::new(1_000, 0).0, "east")
        );
    }

    #[test]
    fn adopt_ignores_loops_and_what_is_known_and_never_replaces_other_settings() {
        let live = NameState::Live {
            spec: spec("a", 4),
            incarnation: 3,
            stamp: stamp(100, "west"),
        };
        let c4 = CatalogEntry::Create(spec("a", 4));
        let c8 = CatalogEntry::Create(spec("a", 8));
        let d = CatalogEntry::Drop { name: "a".into() };
        // An entry that went out from here never comes back, even newer.
        assert_eq!(
            adopt("west", None, &c4, &stamp(900, "west")),
            Adoption::Loop
        );
        assert_eq!(
            adopt("west", None, &c4, &stamp(90, "east")),
            Adoption::Adopt { incarnation: None }
        );
        assert_eq!(
            adopt("west", Some(&live), &c4, &stamp(90, "east")),
            Adoption::Stale
        );
        assert_eq!(
            adopt("west", Some(&live), &c4, &stamp(100, "west")),
            Adoption::Loop
        );
        assert_eq!(
            adopt("west", Some(&live), &c4, &stamp(110, "east")),
            Adoption::Adopt {
                incarnation: Some(3)
            }
        );
        for s in [stamp(90, "east"), stamp(110, "east")] {
            assert_eq!(
                adopt("west", Some(&live), &c8, &s),
                Adoption::Conflict { here: spec("a", 4) }
            );
        }
        assert_eq!(
            adopt("west", Some(&live), &d, &stamp(110, "east")),
            Adoption::Adopt { incarnation: None }
        );
        assert_eq!(
            adopt("west", Some(&live), &d, &stamp(99, "east")),
            Adoption::Stale
        );
        let dropped = NameState::Dropped {
            stamp: stamp(200, "east"),
        };
        assert_eq!(
            adopt("west", Some(&dropped), &c8, &stamp(150, "north")),
            Adoption::Stale
        );
        assert_eq!(
            adopt("west", Some(&dropped), &c8, &stamp(250, "north")),
            Adoption::Adopt { incarnation: None }
        );
    }

    /// Two regions' logs and MirrorMaker between them, by hand: `mirror` copies what is
    /// new in one region's catalog into the other's `<region>.hektor.catalog`.
    struct Regions {
        _dirs: Vec<tempfile::TempDir>,
        logs: BTreeMap<String, Arc<dyn Log>>,
        /// Per (from, to), next offset of from's catalog to copy.
        copied: BTreeMap<(String, String), u64>,
    }

    impl Regions {
        async fn new(names: &[&str]) -> Regions {
            let mut dirs = Vec::new();
            let mut logs = BTreeMap::new();
            for name in names {
                let dir = tempfile::tempdir().expect("tempdir");
                let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path()).expect("log"));
                for t in topic::cluster_topics(1) {
                    log.ensure_topic(&t).await.expect("cluster topics");
                }
                for other in names.iter().filter(|o| *o != name) {
                    log.ensure_topic(&TopicSpec {
                        name: mirrored_catalog_topic(other),
                        partitions: 1,
                        cleanup: hektor_log::Cleanup::Compact,
                        replication: 1,
                    })
                    .await
                    .expect("mirror topic");
                }
                dirs.push(dir);
                logs.insert(name.to_string(), log);
            }
            Regions {
                _dirs: dirs,
                logs,
                copied: BTreeMap::new(),
            }
        }

        fn log(&self, region: &str) -> Arc<dyn Log> {
            Arc::clone(&self.logs[region])
        }

        async fn node(&self, region: &str) -> Arc<Catalog> {
            Catalog::open_in_region(self.log(region), 1, None, region, Arc::new(HlcClock::new()))
                .await
                .expect("open")
        }

        /// Copy what is new in `from`'s catalog to `to`, `times` times over (MM2's
        /// redelivered copies land at new offsets).
        async fn mirror(&mut self, from: &str, to: &str, times: usize) {
            let next = self.copied.entry((from.into(), to.into())).or_insert(0);
            let source = &self.logs[from];
            let high = source.high_watermark(CATALOG_TOPIC, 0).await.expect("hw");
            let records: Vec<LogRecord> = source
                .read(CATALOG_TOPIC, 0, *next, 10_000, Duration::from_millis(10))
                .await
                .expect("read")
                .into_iter()
                .map(|s| s.record)
                .collect();
            *next = high;
            for _ in 0..times {
                if !records.is_empty() {
                    self.logs[to]
                        .append(&mirrored_catalog_topic(from), 0, records.clone())
                        .await
                        .expect("append the copies");
                }
            }
        }
    }

    async fn catalog_len(log: &Arc<dyn Log>) -> u64 {
        log.high_watermark(CATALOG_TOPIC, 0).await.expect("hw")
    }

    #[tokio::test]
    async fn a_create_is_adopted_once_whatever_the_copies_and_never_comes_back() {
        let mut r = Regions::new(&["west", "east"]).await;
        let (west, east) = (r.node("west").await, r.node("east").await);
        west.create(spec("docs", 4)).await.expect("create");
        r.mirror("west", "east", 3).await;
        east.adopt_from("west").await.expect("adopt");
        assert_eq!(east.get("docs"), Some(spec("docs", 4)));
        let incarnation = east.incarnation("docs").expect("incarnation");
        assert!(r
            .log("east")
            .partitions("hektor.docs.vectors")
            .await
            .is_ok_and(|p| p == 2));
        assert!(
            matches!(east.state("docs"), Some(NameState::Live { stamp, .. }) if stamp.origin == "west")
        );
        assert_eq!(east.regions_view()[0].adopted, 1, "copies adopt nothing");
        // More copies later, a second node of east reading it all again: nothing changes.
        r.mirror("west", "east", 1).await;
        let len = catalog_len(&r.log("east")).await;
        east.adopt_from("west").await.expect("adopt");
        let east2 = r.node("east").await;
        east2.adopt_from("west").await.expect("adopt");
        assert_eq!(catalog_len(&r.log("east")).await, len);
        assert_eq!(east2.incarnation("docs"), Some(incarnation));
        // East's catalog, mirrored back to west, holds west's entry: west ignores it.
        r.mirror("east", "west", 2).await;
        let len = catalog_len(&r.log("west")).await;
        west.adopt_from("east").await.expect("adopt");
        assert_eq!(catalog_len(&r.log("west")).await, len, "nothing loops");
        assert_eq!(west.regions_view()[0].adopted, 0);
    }

    #[tokio::test]
    async fn nodes_adopting_at_once_make_one_incarnation_that_compaction_keeps() {
        let mut r = Regions::new(&["west", "east"]).await;
        let west = r.node("west").await;
        west.create(spec("docs", 4)).await.expect("create");
        r.mirror("west", "east", 2).await;
        let (a, b) = (r.node("east").await, r.node("east").await);
        let (ra, rb) = tokio::join!(a.adopt_from("west"), b.adopt_from("west"));
        ra.expect("a");
        rb.expect("b");
        a.refresh().await.expect("refresh");
        b.refresh().await.expect("refresh");
        let incarnation = a.incarnation("docs").expect("live");
        assert_eq!(b.incarnation("docs"), Some(incarnation));
        // Compaction: only the last record of each key is left. The region's catalog read
        // from that alone has the same collections, incarnations and stamps.
        let east = r.log("east");
        let all = east
            .read(CATALOG_TOPIC, 0, 0, 10_000, Duration::from_millis(10))
            .await
            .expect("read");
        let mut last: BTreeMap<Vec<u8>, StoredRecord> = BTreeMap::new();
        for s in all {
            last.insert(s.record.key.clone().unwrap_or_default(), s);
        }
        let mut kept: Vec<StoredRecord> = last.into_values().collect();
        kept.sort_by_key(|s| s.offset);
        // The compacted log keeps offsets; pad it so each record keeps its own.
        let dir = tempfile::tempdir().expect("tempdir");
        let compacted: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path()).expect("log"));
        for t in topic::cluster_topics(1) {
            compacted.ensure_topic(&t).await.expect("topics");
        }
        for s in &kept {
            while catalog_len(&compacted).await < s.offset {
                let filler = codec::catalog_record(
                    &CatalogEntry::Drop {
                        name: "filler".into(),
                    },
                    &CatalogMeta::stamped(&stamp(1, "west"), None),
                )
                .expect("filler");
                compacted
                    .append(CATALOG_TOPIC, 0, vec![filler])
                    .await
                    .expect("pad");
            }
            compacted
                .append(CATALOG_TOPIC, 0, vec![s.record.clone()])
                .await
                .expect("copy");
        }
        let after = Catalog::open_in_region(compacted, 1, None, "east", Arc::new(HlcClock::new()))
            .await
            .expect("open");
        assert_eq!(after.incarnation("docs"), Some(incarnation));
        assert_eq!(after.state("docs"), a.state("docs"));
    }

    #[tokio::test]
    async fn a_drop_goes_to_every_region_and_a_later_create_comes_back() {
        let mut r = Regions::new(&["west", "east"]).await;
        let (west, east) = (r.node("west").await, r.node("east").await);
        west.create(spec("docs", 4)).await.expect("create");
        r.mirror("west", "east", 1).await;
        east.adopt_from("west").await.expect("adopt");
        let first = east.incarnation("docs").expect("adopted");
        assert!(east.drop_collection("docs").await.expect("drop"));
        r.mirror("east", "west", 2).await;
        west.adopt_from("east").await.expect("adopt the drop");
        assert_eq!(west.get("docs"), None);
        assert!(
            r.log("west")
                .partitions("hektor.docs.vectors")
                .await
                .is_err(),
            "the adopted drop deleted west's topics"
        );
        // West's own log now holds east's drop; mirrored to east it is a loop (origin
        // east) and changes nothing.
        r.mirror("west", "east", 1).await;
        east.adopt_from("west").await.expect("adopt");
        assert_eq!(east.get("docs"), None);
        // Created again in west: a newer create than the drop comes back to east, as a
        // new incarnation.
        west.create(spec("docs", 8)).await.expect("create again");
        r.mirror("west", "east", 1).await;
        east.adopt_from("west").await.expect("adopt");
        assert_eq!(east.get("docs"), Some(spec("docs", 8)));
        assert_ne!(east.incarnation("docs"), Some(first));
    }

    #[tokio::test]
    async fn creates_with_other_settings_keep_each_regions_own_until_a_drop() {
        let mut r = Regions::new(&["west", "east"]).await;
        let (west, east) = (r.node("west").await, r.node("east").await);
        // Concurrent (neither region has read the other's yet).
        west.create(spec("docs", 4)).await.expect("create");
        east.create(spec("docs", 8)).await.expect("create");
        r.mirror("west", "east", 2).await;
        r.mirror("east", "west", 2).await;
        west.adopt_from("east").await.expect("adopt");
        east.adopt_from("west").await.expect("adopt");
        assert_eq!(
            west.get("docs"),
            Some(spec("docs", 4)),
            "west keeps its own"
        );
        assert_eq!(
            east.get("docs"),
            Some(spec("docs", 8)),
            "east keeps its own"
        );
        for (catalog, here, there, region) in [(&west, 4, 8, "east"), (&east, 8, 4, "west")] {
            let conflicts = catalog.conflicts();
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].collection, "docs");
            assert_eq!(conflicts[0].region, region);
            assert_eq!(conflicts[0].here.dimension, here);
            assert_eq!(conflicts[0].there.dimension, there);
        }
        // Resolved by a drop (in either region: it is newer than both creates) and one
        // create.
        assert!(west.drop_collection("docs").await.expect("drop"));
        r.mirror("west", "east", 1).await;
        east.adopt_from("west").await.expect("adopt");
        assert_eq!(east.get("docs"), None);
        assert!(east.conflicts().is_empty());
        east.create(spec("docs", 8)).await.expect("create once");
        r.mirror("east", "west", 1).await;
        west.adopt_from("east").await.expect("adopt");
        assert_eq!(west.get("docs"), Some(spec("docs", 8)));
        assert!(west.conflicts().is_empty(), "{:?}", west.conflicts());
    }

    #[tokio::test]
    async fn a_create_whose_topics_cannot_be_made_here_is_refused_and_the_rest_still_apply() {
        let mut r = Regions::new(&["west", "east"]).await;
        let (west, east) = (r.node("west").await, r.node("east").await);
        // East has a topic of that name with another partition count (left by anything).
        let mut stray = topic::collection_topics("docs", 2, 1, Default::default())
            .into_iter()
            .next()
            .expect("a topic");
        stray.partitions = 3;
        east.log().ensure_topic(&stray).await.expect("stray topic");
        west.create(spec("docs", 4)).await.expect("create");
        west.create(spec("notes", 4)).await.expect("create");
        r.mirror("west", "east", 1).await;
        east.adopt_from("west")
            .await
            .expect("a refusal is not an error");
        assert_eq!(east.get("docs"), None, "not adopted over the stray topic");
        assert_eq!(
            east.get("notes"),
            Some(spec("notes", 4)),
            "the next entry applies"
        );
        let view = east.regions_view();
        let west_view = view.iter().find(|v| v.region == "west").expect("west");
        assert_eq!(west_view.refused, 1, "{view:?}");
        assert_eq!(west_view.adopted, 1, "{view:?}");
    }

    #[tokio::test]
    async fn old_format_entries_are_adopted_and_bad_ones_refused_without_stopping() {
        let r = Regions::new(&["west", "east"]).await;
        let east = r.node("east").await;
        let mirrored = mirrored_catalog_topic("west");
        let raw = |value: &[u8]| LogRecord::new(Some(b"k".to_vec()), value.to_vec());
        let good_meta = |origin: &str| CatalogMeta {
            origin: Some(origin.into()),
            hlc: Some(Hlc(5 << 16)),
            incarnation: None,
        };
        let mut records = vec![
            // Written by an older build: JSON without a stamp, and the binary form.
            codec::to_log_record(
                Some(b"old".to_vec()),
                &CatalogEntry::Create(spec("old", 4)),
                Encoding::Json,
            )
            .expect("json"),
            codec::to_log_record(
                Some(b"older".to_vec()),
                &CatalogEntry::Create(spec("older", 4)),
                Encoding::Binary,
            )
            .expect("binary"),
            raw(b"{not json"),
            raw(br#"{"op":"create","name":"h","dimension":4,"distance":"cosine","partitions":1,"hlc":"soon","origin":"west"}"#),
            raw(br#"{"op":"create","name":"h","dimension":4,"distance":"cosine","partitions":1,"hlc":7}"#),
        ];
        for (entry, meta) in [
            (CatalogEntry::Create(spec("../evil", 4)), good_meta("west")),
            (CatalogEntry::Create(spec("zero", 0)), good_meta("west")),
            (CatalogEntry::Create(spec("ctl", 4)), good_meta("we\u{7}st")),
            (
                CatalogEntry::Create(spec("long", 4)),
                good_meta(&"w".repeat(65)),
            ),
            (CatalogEntry::Create(spec("new", 4)), good_meta("west")),
        ] {
            records.push(codec::catalog_record(&entry, &meta).expect("encode"));
        }
        r.log("east")
            .append(&mirrored, 0, records)
            .await
            .expect("append");
        east.adopt_from("west")
            .await
            .expect("bad entries do not stop it");
        assert_eq!(names(&east), ["new", "old", "older"]);
        let view = &east.regions_view()[0];
        assert_eq!(
            (view.read, view.adopted, view.refused),
            (10, 3, 7),
            "{view:?}"
        );
        // An old entry is stamped by its log time and the region it came from, and keeps
        // that origin here (so it never goes back to west).
        assert!(
            matches!(east.state("old"), Some(NameState::Live { stamp, .. }) if stamp.origin == "west" && stamp.hlc.0 > 0)
        );
        assert_eq!(
            east.refused_entries(),
            0,
            "east's own log holds only good entries"
        );
    }

    #[test]
    fn catalog_records_carry_their_meta_and_old_ones_decode_without() {
        let entry = CatalogEntry::Create(spec("docs", 4));
        let meta = CatalogMeta {
            origin: Some("west".into()),
            hlc: Some(Hlc(u64::MAX - 1)),
            incarnation: Some(42),
        };
        let record = codec::catalog_record(&entry, &meta).expect("encode");
        assert_eq!(record.key.as_deref(), Some(b"docs".as_slice()));
        assert_eq!(
            codec::catalog_entry_of(&record).expect("decode"),
            (entry.clone(), meta)
        );
        // An older build reads the entry and ignores the rest.
        assert_eq!(
            codec::from_log_record::<CatalogEntry>(&record).expect("old reader"),
            entry
        );
        for enc in [Encoding::Json, Encoding::Binary] {
            let old = codec::to_log_record(Some(b"docs".to_vec()), &entry, enc).expect("old");
            assert_eq!(
                codec::catalog_entry_of(&old).expect("decode old"),
                (entry.clone(), CatalogMeta::default())
            );
        }
        let drop = CatalogEntry::Drop { name: "x".into() };
        let record = codec::catalog_record(&drop, &CatalogMeta::default()).expect("encode");
        let value: serde_json::Value = serde_json::from_slice(&record.value).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"op": "drop", "name": "x"}),
            "no meta: no fields"
        );
    }
}
