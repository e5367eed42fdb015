//! The index-engine interface of a shard, and the engines behind it.
//!
//! A shard ([`crate::shard::Shard`]) owns the durable vectors, the log offset and the
//! pending tail; an engine owns only "the built index": a structure over the vectors that
//! were folded in by the last [`IndexEngine::build`]. Engines live in the shard's LMDB
//! environment (the [`Store`]'s `index` database), so an index build commits atomically
//! with the shard's bookkeeping, and searches read one MVCC snapshot.
//!
//! Engines today:
//! - [`arroy::ArroyEngine`]: Annoy-style random-projection trees (the arroy crate).
//! - [`exact::ExactEngine`]: brute force over the stored vectors; nothing to build.
//! - [`hnsw::HnswEngine`]: an in-memory HNSW graph (the hot tier), rebuilt from the store
//!   on open and updated incrementally by each build; it keeps no state in LMDB but its
//!   build epoch.
//! - [`warm::WarmEngine`]: an HNSW graph on disk over int8 vectors (the warm tier, hektor's
//!   own layout in `warm_graph.rs`), in the store's `index_warm` database, rescored with
//!   the stored full vectors; nothing in memory but the page cache.
//! - [`cold::ColdEngine`]: arroy trees over binary-quantized vectors (the cold tier), in
//!   the store's `index_cold` database, rescored with the stored full vectors.
//!
//! Tiers: `hot` = [`EngineKind::Hnsw`], `warm` = [`EngineKind::Warm`], `cold` =
//! [`EngineKind::Cold`]; a shard moves between them with [`crate::Shard::set_engine`].
//! This module does not decide last-writer-wins or offsets.

pub mod arroy;
pub(crate) mod codes;
pub mod cold;
pub mod exact;
pub mod hnsw;
pub mod warm;
mod warm_graph;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use heed::{RoTxn, RwTxn};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::metric::PreparedQuery;
use crate::store::Store;

/// Which index engine a shard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// Random-projection trees stored in LMDB (approximate).
    Arroy,
    /// Brute force over every stored vector (exact; fine for small shards).
    Exact,
    /// An in-memory HNSW graph, updated incrementally (approximate; the hot tier). Also
    /// read as `hot`.
    #[serde(alias = "hot")]
    Hnsw,
    /// An HNSW graph on disk in LMDB over int8 vectors (approximate; the warm tier). Also
    /// read as `hannoy`, its engine before issue #7.
    #[serde(alias = "hannoy")]
    Warm,
    /// Trees over binary-quantized vectors on disk, rescored with the full vectors
    /// (approximate; the cold tier).
    Cold,
}

impl EngineKind {
    /// Every engine, in tier order after the reference engines.
    pub const ALL: [EngineKind; 5] = [
        EngineKind::Exact,
        EngineKind::Arroy,
        EngineKind::Hnsw,
        EngineKind::Warm,
        EngineKind::Cold,
    ];
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Arroy => "arroy",
            EngineKind::Exact => "exact",
            EngineKind::Hnsw => "hnsw",
            EngineKind::Warm => "warm",
            EngineKind::Cold => "cold",
        })
    }
}

impl std::str::FromStr for EngineKind {
    type Err = crate::error::Error;

    /// The engine's name as [`std::fmt::Display`] writes it, or a tier name (`hot`,
    /// `warm`, `cold`), or `hannoy` for the warm engine; case-insensitive.
    fn from_str(name: &str) -> Result<EngineKind> {
        match name.trim().to_ascii_lowercase().as_str() {
            "arroy" => Ok(EngineKind::Arroy),
            "exact" => Ok(EngineKind::Exact),
            "hnsw" | "hot" => Ok(EngineKind::Hnsw),
            "warm" | "hannoy" => Ok(EngineKind::Warm),
            "cold" => Ok(EngineKind::Cold),
            other => Err(crate::error::Error::InvalidConfig(format!(
                "unknown engine `{other}`: use hot (hnsw), warm, cold, arroy or exact"
            ))),
        }
    }
}

/// Remove everything engine `kind` keeps in LMDB (its index database, or its keys in the
/// shared `index` database), inside `wtxn`.
pub(crate) fn clear_engine_data(kind: EngineKind, wtxn: &mut RwTxn, store: &Store) -> Result<()> {
    let db = match kind {
        EngineKind::Exact => return Ok(()),
        // arroy and hnsw (its build epoch) share `index` and are never active together.
        EngineKind::Arroy => &store.index,
        EngineKind::Hnsw => {
            // Its file goes first: a crash before the commit leaves LMDB naming a graph
            // whose file is gone, which rebuilds; never a file without its journal.
            hnsw::remove_file(store)?;
            &store.index
        }
        EngineKind::Warm => &store.index_warm,
        EngineKind::Cold => &store.index_cold,
    };
    db.clear(wtxn).map_err(|e| store.storage(e))
}

/// Bytes of the LMDB pages engine `kind` uses (0 for the exact engine and for hnsw, whose
/// graph is memory).
pub(crate) fn engine_data_bytes(kind: EngineKind, txn: &RoTxn, store: &Store) -> Result<u64> {
    match kind {
        EngineKind::Exact | EngineKind::Hnsw => Ok(0),
        EngineKind::Arroy => store.db_bytes(txn, &store.index),
        EngineKind::Warm => store.db_bytes(txn, &store.index_warm),
        EngineKind::Cold => store.db_bytes(txn, &store.index_cold),
    }
}

/// The changes since the last build, handed to [`IndexEngine::build`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Items whose current vector (in the store) must be in the index after the build:
    /// new items and replaced ones.
    pub upserted: RoaringBitmap,
    /// Items whose indexed vector must go: deleted items, and replaced ones (which are
    /// also in `upserted`).
    pub stale: RoaringBitmap,
}

/// One index engine over a shard's vectors. Implementations must be cheap to call from
/// many threads at once (`search`) while one thread builds.
pub trait IndexEngine: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> EngineKind;

    /// Whether writes wait for [`IndexEngine::build`] to enter the index. `false` for an
    /// engine that reads the store's live vectors directly: then nothing is ever pending.
    fn needs_build(&self) -> bool;

    /// Whether `item` has a vector (possibly an outdated one) in the built index.
    fn is_indexed(&self, txn: &RoTxn, item: u32) -> Result<bool>;

    /// Fold `changes` into the index inside the caller's write transaction; the vectors
    /// to index are read from `store` in the same transaction.
    fn build(&self, wtxn: &mut RwTxn, store: &Store, changes: &Changes) -> Result<()>;

    /// The `k` best indexed items for `query`, best first, as `(item, score)` with
    /// higher scores closer. Only items in `candidates` (when given) and not in
    /// `exclude` may be returned; the filter is applied during the search, not after.
    fn search(
        &self,
        txn: &RoTxn,
        store: &Store,
        query: &PreparedQuery,
        k: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>>;

    /// Number of items in the built index.
    fn indexed_len(&self, txn: &RoTxn, store: &Store) -> Result<u64>;

    /// Set the per-search effort for later searches (HNSW's `ef_search`: the beam width;
    /// more is slower and finds more true neighbours). Returns `false` when the engine has
    /// no such knob (then nothing changes).
    fn set_search_effort(&self, _effort: usize) -> bool {
        false
    }

    /// The current per-search effort, when the engine has one.
    fn search_effort(&self) -> Option<usize> {
        None
    }

    /// Whether builds can fold outside the shard's write transaction
    /// ([`IndexEngine::fold_outside`] then [`IndexEngine::commit_fold`]), so that applies
    /// go on while an index is built. Engines whose index lives in LMDB cannot.
    fn folds_outside(&self) -> bool {
        false
    }

    /// Fold `changes` into the index from the read snapshot `txn`, as the next build,
    /// invisible to searches until [`IndexEngine::commit_fold`] commits; returns that
    /// build's epoch. Only for engines that [`IndexEngine::folds_outside`].
    fn fold_outside(&self, _txn: &RoTxn, store: &Store, _changes: &Changes) -> Result<u32> {
        Err(store.corrupt("this engine builds inside the write transaction only"))
    }

    /// Record build `epoch` (folded by [`IndexEngine::fold_outside`]) in `wtxn`.
    fn commit_fold(
        &self,
        _wtxn: &mut RwTxn,
        store: &Store,
        _changes: &Changes,
        _epoch: u32,
    ) -> Result<()> {
        Err(store.corrupt("this engine builds inside the write transaction only"))
    }

    /// Items folded into an in-memory index since it was last saved to disk (0 for the
    /// engines whose index lives in LMDB: they have nothing to save).
    fn unsaved(&self) -> u64 {
        0
    }

    /// Save the in-memory index as of the build committed in `txn`, durably; returns the
    /// build epoch saved and the bytes written (`None`: nothing to save). The caller holds
    /// the shard's write lock, then calls [`IndexEngine::after_save`] in a write
    /// transaction.
    fn save(&self, _txn: &RoTxn, _store: &Store) -> Result<Option<(u32, u64)>> {
        Ok(None)
    }

    /// Drop what only served to rebuild the index up to build `epoch` (saved durably).
    fn after_save(&self, _wtxn: &mut RwTxn, _store: &Store, _epoch: u32) -> Result<()> {
        Ok(())
    }
}

/// A scored item ordered by score, then by smaller item id (deterministic ties).
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f32,
    item: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.item.cmp(&self.item))
    }
}

/// A distance as a `u32` whose unsigned order is the distance's order (negative distances
/// included): the high half of the graph walks' heap keys, so a heap entry is one `u64`.
#[inline(always)]
pub(crate) fn order_bits(d: f32) -> u32 {
    let b = d.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The distance back from [`order_bits`].
#[inline(always)]
pub(crate) fn from_order_bits(ord: u32) -> f32 {
    f32::from_bits(if ord & 0x8000_0000 != 0 {
        ord & 0x7FFF_FFFF
    } else {
        !ord
    })
}

/// The `k` best of `items` scored exactly against the store's full vectors (how the
/// approximate warm and cold engines turn their candidates into answers).
pub(crate) fn rescore(
    txn: &RoTxn,
    store: &Store,
    query: &PreparedQuery,
    k: usize,
    items: impl IntoIterator<Item = u32>,
) -> Result<Vec<(u32, f32)>> {
    let mut top = TopK::new(k);
    for item in items {
        if let Some((v, norm)) = store.vector_bytes(txn, item)? {
            top.push(item, query.score_bytes(v, norm));
        }
    }
    Ok(top.into_sorted())
}

/// Keeps the `k` highest-scoring items seen.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The score an item must beat to enter (−∞ while not full).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |r| r.0.score)
        }
    }

    #[inline]
    pub fn push(&mut self, item: u32, score: f32) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        let s = Scored { score, item };
        if self.heap.len() < self.k {
            self.heap.push(Reverse(s));
        } else if let Some(mut min) = self.heap.peek_mut() {
            if s > min.0 {
                *min = Reverse(s);
            }
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(u32, f32)> {
        let mut v: Vec<Scored> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.into_iter().map(|s| (s.item, s.score)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_in_order_with_deterministic_ties() {
        let mut t = TopK::new(3);
        for (item, score) in [
            (5, 0.1),
            (1, 0.9),
            (7, 0.5),
            (2, 0.9),
            (9, 0.3),
            (4, f32::NAN),
        ] {
            t.push(item, score);
        }
        assert_eq!(t.into_sorted(), vec![(1, 0.9), (2, 0.9), (7, 0.5)]);
        let mut empty = TopK::new(0);
        empty.push(1, 1.0);
        assert!(empty.into_sorted().is_empty());
    }

    #[test]
    fn engine_names_round_trip_and_tier_aliases_parse() {
        for kind in EngineKind::ALL {
            let name = kind.to_string();
            assert_eq!(name.parse::<EngineKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<EngineKind>(&json).unwrap(), kind);
        }
        for (alias, kind) in [
            ("hot", EngineKind::Hnsw),
            ("hannoy", EngineKind::Warm),
            ("warm", EngineKind::Warm),
            ("cold", EngineKind::Cold),
        ] {
            assert_eq!(alias.parse::<EngineKind>().unwrap(), kind);
            let json = format!("\"{alias}\"");
            assert_eq!(serde_json::from_str::<EngineKind>(&json).unwrap(), kind);
        }
        assert!("lukewarm".parse::<EngineKind>().is_err());
    }
}
