//! The warm-tier engine: an HNSW graph on disk over int8-quantized vectors
//! ([`super::warm_graph::DiskGraph`]), stored in the shard's own LMDB environment in the
//! store's `index_warm` database, with the final answers rescored exactly.
//!
//! Owns: folding changes into the graph inside the caller's write transaction
//! ([`IndexEngine::build`], so a build commits atomically with the shard's bookkeeping),
//! and searching it from a read snapshot with the candidate filter applied during the
//! graph walk, then rescoring the best candidates with the store's full vectors (so the
//! scores are exact and the ranking among them too). A search may skip the rescoring
//! ([`crate::SearchOptions::rescore`]): the same hits, scored from their int8 codes, and
//! no page of the store's vectors read. Nothing is kept in memory between
//! calls but the `ef_search` knob: the graph and its int8 vectors are read in place through
//! LMDB's memory map, so resident memory is the pages the searches touch (evictable page
//! cache): about a quarter of the raw `f32` vectors plus the links.
//!
//! (Until issue #7 the warm graph was the `hannoy` crate's; its one LMDB lookup plus one
//! roaring-bitmap decode per visited node, and `f32` copies of the vectors, made it 2.6x
//! the raw vectors and 6x slower than hnswlib: see `docs/bench/tiers.md`.)
//!
//! **Incremental.** A build removes stale items (reconnecting their neighbours) and
//! inserts upserted ones, each linked by a beam search of `ef_construction`; the whole
//! graph is never rebuilt.
//!
//! **Distances.** Cosine and Euclidean (scores: the cosine similarity, minus the euclidean
//! distance, exact after rescoring). A `Dot` collection is refused with
//! [`Error::InvalidConfig`] when the engine is created (the graph is built for a metric).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use heed::{RoTxn, RwTxn};
use hektor_topics::record::Distance;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::warm_graph::DiskGraph;
pub use super::warm_graph::{WARM_M, WARM_M0};
use super::{Changes, EngineKind, IndexEngine};
use crate::error::{Error, Result};
use crate::metric::PreparedQuery;
use crate::store::Store;

/// Default `ef_search` of the warm engine: recall@10 0.954 on 62k x 384 MiniLM
/// embeddings at `ef_construction` 128 (0.947 at 40, 0.960 at 56; see
/// `docs/bench/tiers.md`).
pub const DEFAULT_WARM_EF_SEARCH: usize = 48;

/// Candidates of the graph walk rescored with the store's full vectors, per wanted hit:
/// `k x RESCORE_FACTOR` (at most `ef_search`) full vectors are read per search. Measured:
/// 3 instead of 1 buys the recall of 16 more `ef_search` (0.951 at 32 vs 0.954 at 48) for
/// three times the store pages touched, so the int8 ranking decides which `k` are read.
pub const RESCORE_FACTOR: usize = 1;

/// Tuning of the warm engine. `M` / `M0` are fixed at [`WARM_M`] / [`WARM_M0`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmParams {
    /// Beam width while linking new items.
    pub ef_construction: usize,
    /// Beam width while searching (at least `k` is used); also settable at run time with
    /// [`crate::Shard::set_search_effort`].
    pub ef_search: usize,
    /// Seed of the level draw (builds are reproducible for one seed).
    pub seed: u64,
}

impl Default for WarmParams {
    fn default() -> Self {
        WarmParams {
            ef_construction: 128,
            ef_search: DEFAULT_WARM_EF_SEARCH,
            seed: 0x6865_6b74_6f72,
        }
    }
}

impl WarmParams {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.ef_construction < WARM_M || self.ef_search == 0 {
            return Err(Error::InvalidConfig(format!(
                "warm ef_construction must be at least {WARM_M} and ef_search at least 1"
            )));
        }
        Ok(())
    }
}

/// The warm engine of one shard.
#[derive(Debug)]
pub struct WarmEngine {
    graph: DiskGraph,
    distance: Distance,
    params: WarmParams,
    path: PathBuf,
    ef_search: AtomicUsize,
}

impl WarmEngine {
    pub(crate) fn new(store: &Store, distance: Distance, params: WarmParams) -> Result<WarmEngine> {
        params.validate()?;
        if distance == Distance::Dot {
            return Err(Error::InvalidConfig(
                "the warm engine has no dot-product distance (its graph is built for a \
                 metric); use the hot (hnsw), arroy or exact engine for a dot-product \
                 collection"
                    .into(),
            ));
        }
        Ok(WarmEngine {
            graph: DiskGraph::new(store, distance, params.seed),
            distance,
            params,
            path: store.path().to_path_buf(),
            ef_search: AtomicUsize::new(params.ef_search),
        })
    }

    /// A score from a graph distance computed on int8 codes: the cosine similarity is
    /// `1 - d`, the euclidean score `-sqrt(d)` (the graph keeps squared distances).
    fn approximate_score(&self, d: f32) -> f32 {
        match self.distance {
            Distance::Euclidean => -d.max(0.0).sqrt(),
            Distance::Cosine | Distance::Dot => 1.0 - d,
        }
    }
}

impl IndexEngine for WarmEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Warm
    }

    fn needs_build(&self) -> bool {
        true
    }

    fn is_indexed(&self, txn: &RoTxn, item: u32) -> Result<bool> {
        self.graph
            .contains_item(txn, item)
            .map_err(|source| Error::Storage {
                path: self.path.clone(),
                source,
            })
    }

    fn build(&self, wtxn: &mut RwTxn, store: &Store, changes: &Changes) -> Result<()> {
        for item in changes.stale.iter() {
            self.graph.remove(wtxn, store, item)?;
        }
        let mut buf = vec![0.0f32; store.dimension()];
        for item in changes.upserted.iter() {
            // Replaced without being marked stale: drop the old vector first.
            self.graph.remove(wtxn, store, item)?;
            if store.vector_into(wtxn, item, &mut buf)?.is_some() {
                self.graph
                    .insert(wtxn, store, item, &buf, self.params.ef_construction)?;
            }
        }
        Ok(())
    }

    fn search(
        &self,
        txn: &RoTxn,
        store: &Store,
        query: &PreparedQuery,
        k: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let ef = query
            .effort_or(self.ef_search.load(Ordering::Relaxed))
            .max(k);
        let found = self
            .graph
            .search(txn, store, &query.raw, ef, candidates, exclude)?;
        if !query.options.rescore {
            // The walk's own int8 distances: the same hits, approximate scores.
            return Ok(found
                .into_iter()
                .take(k)
                .map(|(item, d)| (item, self.approximate_score(d)))
                .collect());
        }
        let best = found.iter().take((k * RESCORE_FACTOR).min(ef));
        super::rescore(txn, store, query, k, best.map(|&(item, _)| item))
    }

    fn indexed_len(&self, txn: &RoTxn, store: &Store) -> Result<u64> {
        Ok(self.graph.meta(txn, store)?.map_or(0, |m| m.count))
    }

    fn set_search_effort(&self, effort: usize) -> bool {
        self.ef_search.store(effort.max(1), Ordering::Relaxed);
        true
    }

    fn search_effort(&self) -> Option<usize> {
        Some(self.ef_search.load(Ordering::Relaxed))
    }
}
