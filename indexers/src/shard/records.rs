//! The hot shard's records in memory: each indexed item's id and payload (the stored JSON
//! text, checked once), so that a search of a shard serving from its in-memory graph
//! answers without reading LMDB (issue #16).
//!
//! Why: a search's hits were read from the `records` database, a B-tree descent per hit
//! through pages the shard lets go of every second ([`crate::store::Store::release_pages`])
//! and then faults back in, with the kernel's fault-around mapping 16 neighbouring pages
//! (mostly vectors the graph already holds) per fault. Under load that cost ~9 % of a
//! query's CPU and kept the whole file resident, so both the CPU and the resident set
//! went to data serving did not need.
//!
//! **Consistency.** A hit must carry the record of the vector that was scored, read from
//! the snapshot it was found in ([`super::Found`]). An entry is therefore used only when
//! all of these hold, else the hit's record is read from LMDB as before:
//! - the hit came from the hot graph, not from the pending tail (a pending item's graph
//!   node, if any, is an older version; the search excludes it as stale);
//! - the entry was published by a commit the search's snapshot sees (its `txn` tag is at
//!   most the snapshot's LMDB transaction id): a record published later may be a newer
//!   version of an item whose older node the snapshot still shows;
//! - nothing rewrote the record since: every write of a record (an upsert, a delete, a
//!   crdt field merge, a conflict mark, a range drop) forgets the item's entry inside its
//!   write transaction, before the commit, so a snapshot that sees the new record never
//!   finds the old entry.
//!
//! Entries are published by the commits that make graph nodes visible (a build, an engine
//! switch to hot) and filled once when a hot shard opens; the cache is emptied whenever the
//! engine changes. Only the hot engine uses it.

use std::sync::Arc;

use heed::RoTxn;
use parking_lot::RwLock;
use serde_json::value::RawValue;

use crate::error::Result;
use crate::store::Store;

/// One item's id and payload, as of the commit `txn`.
#[derive(Debug)]
struct Entry {
    txn: usize,
    id: Box<str>,
    payload: Option<Box<RawValue>>,
}

/// Item → its record's id and payload ([`Entry`]), for the hot engine's hits.
#[derive(Debug, Default)]
pub(crate) struct RecordCache {
    entries: RwLock<Vec<Option<Arc<Entry>>>>,
}

/// Records read for publication, to be made visible after their commit
/// ([`RecordCache::publish`]).
#[derive(Debug, Default)]
pub(crate) struct Staged(Vec<(u32, Entry)>);

impl Staged {
    /// Read `item`'s record from `txn` (the write transaction about to commit) for
    /// publication; an item without a record (deleted) is forgotten at publication.
    pub(crate) fn read(&mut self, store: &Store, txn: &RoTxn, item: u32) -> Result<()> {
        let Some(bytes) = store.record_bytes(txn, item)? else {
            return Ok(());
        };
        let entry = decode(store, item, bytes)?;
        self.0.push((item, entry));
        Ok(())
    }
}

fn decode(store: &Store, item: u32, bytes: &[u8]) -> Result<Entry> {
    let (id, payload) = super::id_and_payload(store, item, bytes, true)?;
    Ok(Entry {
        txn: 0,
        id: id.into(),
        payload,
    })
}

impl RecordCache {
    /// Forget everything (the engine changes).
    pub(crate) fn clear(&self) {
        let mut entries = self.entries.write();
        entries.clear();
        entries.shrink_to_fit();
    }

    /// Forget `item`'s entry: its record is being rewritten in a transaction not yet
    /// committed (call before that commit).
    pub(crate) fn forget(&self, item: u32) {
        let mut entries = self.entries.write();
        if let Some(slot) = entries.get_mut(item as usize) {
            *slot = None;
        }
    }

    /// Fill the cache with every record of the snapshot `txn` (a hot shard opening, or
    /// switching to hot under the write lock), replacing what it held.
    pub(crate) fn fill(&self, store: &Store, txn: &RoTxn) -> Result<()> {
        let tag = txn.id();
        let mut fresh: Vec<Option<Arc<Entry>>> = Vec::new();
        for entry in store.records.iter(txn).map_err(|e| store.storage(e))? {
            let (item, bytes) = entry.map_err(|e| store.storage(e))?;
            let mut entry = decode(store, item, bytes)?;
            entry.txn = tag;
            let at = item as usize;
            if fresh.len() <= at {
                fresh.resize(at + 1, None);
            }
            fresh[at] = Some(Arc::new(entry));
        }
        *self.entries.write() = fresh;
        Ok(())
    }

    /// Make `staged` visible to snapshots that see commit `txn` (the id of the write
    /// transaction they were read in, now committed). `gone`: items to forget (deleted).
    pub(crate) fn publish(&self, txn: usize, staged: Staged, gone: impl Iterator<Item = u32>) {
        let mut entries = self.entries.write();
        for item in gone {
            if let Some(slot) = entries.get_mut(item as usize) {
                *slot = None;
            }
        }
        for (item, mut entry) in staged.0 {
            entry.txn = txn;
            let at = item as usize;
            if entries.len() <= at {
                entries.resize(at + 1, None);
            }
            entries[at] = Some(Arc::new(entry));
        }
    }

    /// `item`'s id and (with `payload`) payload for a search over the snapshot with LMDB
    /// transaction id `snapshot`, when the cache may answer for it (module doc).
    pub(crate) fn get(
        &self,
        item: u32,
        snapshot: usize,
        payload: bool,
    ) -> Option<(String, Option<Box<RawValue>>)> {
        let entry = {
            let entries = self.entries.read();
            entries.get(item as usize)?.as_ref()?.clone()
        };
        if entry.txn > snapshot {
            return None;
        }
        let payload = if payload { entry.payload.clone() } else { None };
        Some((entry.id.to_string(), payload))
    }

    /// Heap bytes the entries take (ids and payloads, plus the slots), for footprints.
    pub(crate) fn bytes(&self) -> u64 {
        let entries = self.entries.read();
        let slots = entries.capacity() * std::mem::size_of::<Option<Arc<Entry>>>();
        let held: usize = entries
            .iter()
            .flatten()
            .map(|e| {
                std::mem::size_of::<Entry>()
                    + 16
                    + e.id.len()
                    + e.payload.as_ref().map_or(0, |p| p.get().len())
            })
            .sum();
        (slots + held) as u64
    }
}
