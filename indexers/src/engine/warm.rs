//! The warm-tier engine: an HNSW graph on disk (the `hannoy` crate), stored in the shard's
//! own LMDB environment, in the store's `index_warm` database (hannoy index 0).
//!
//! Owns: writing items into hannoy and (re)linking the graph inside the caller's write
//! transaction ([`IndexEngine::build`], so a build commits atomically with the shard's
//! bookkeeping), and searching it from a read snapshot with the candidate filter applied
//! during the graph walk. Nothing is kept in memory between calls but the `ef_search`
//! knob: the graph and hannoy's copy of the vectors are read through LMDB's memory map, so
//! resident memory is whatever pages the searches touch (evictable page cache), not a
//! heap copy of the vectors like the hot [`super::hnsw::HnswEngine`].
//!
//! **Incremental.** A build adds the upserted items and deletes the stale ones, then lets
//! hannoy link just the changed items (`build` after `add_item`/`del_item`); the whole
//! graph is never rebuilt.
//!
//! **Distances.** Cosine maps to hannoy's `Cosine` (distance `(1 − cos)/2`, turned back
//! into the cosine similarity) and Euclidean to its `Euclidean` (squared distance, turned
//! into minus the distance). hannoy has no dot-product distance, so a `Dot` collection is
//! refused with [`Error::InvalidConfig`] when the engine is created.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ::hannoy::distances::{Cosine, Euclidean};
use ::hannoy::{Reader, Writer};
use arroy_rand::SeedableRng;
use heed::{Database, RoTxn, RwTxn};
use hektor_topics::record::Distance;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::{Changes, EngineKind, IndexEngine};
use crate::error::{Error, Result};
use crate::metric::PreparedQuery;
use crate::store::Store;

/// hannoy index number inside the `index_warm` database (one index per shard).
const INDEX: u16 = 0;
/// Links per node on the upper layers (a compile-time parameter of hannoy's build).
pub const WARM_M: usize = 16;
/// Links per node on layer 0.
pub const WARM_M0: usize = 32;

/// Default `ef_search` of the warm engine. Measured on 62k × 384 MiniLM embeddings at
/// `ef_construction` 128: recall@10 0.971 at 48; at `ef_construction` 64: 0.931 / 0.951 /
/// 0.960 at 32 / 48 / 64 (see `docs/bench/tiers.md`).
pub const DEFAULT_WARM_EF_SEARCH: usize = 40;

/// Tuning of the warm engine. `M` / `M0` are fixed at [`WARM_M`] / [`WARM_M0`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmParams {
    /// Beam width while linking new items.
    pub ef_construction: usize,
    /// Beam width while searching (at least `k` is used); also settable at run time with
    /// [`crate::Shard::set_search_effort`].
    pub ef_search: usize,
    /// Seed of hannoy's level draw (builds are reproducible for one seed).
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
    db: Database<'static, heed::types::Bytes, heed::types::Bytes>,
    distance: Distance,
    dimension: usize,
    params: WarmParams,
    ef_search: AtomicUsize,
    path: PathBuf,
}

/// Run `$body` with `$D` bound to the hannoy distance type of `$distance` (never `Dot`:
/// [`WarmEngine::new`] refuses it).
macro_rules! with_distance {
    ($self:expr, $D:ident => $body:expr) => {
        match $self.distance {
            Distance::Euclidean => {
                type $D = Euclidean;
                $body
            }
            Distance::Cosine | Distance::Dot => {
                type $D = Cosine;
                $body
            }
        }
    };
}

impl WarmEngine {
    pub(crate) fn new(store: &Store, distance: Distance, params: WarmParams) -> Result<WarmEngine> {
        params.validate()?;
        if distance == Distance::Dot {
            return Err(Error::InvalidConfig(
                "the warm engine (hannoy) has no dot-product distance; use the hot (hnsw), \
                 arroy or exact engine for a dot-product collection"
                    .into(),
            ));
        }
        Ok(WarmEngine {
            db: store.index_warm,
            distance,
            dimension: store.dimension(),
            params,
            ef_search: AtomicUsize::new(params.ef_search),
            path: store.path().to_path_buf(),
        })
    }

    fn err(&self, source: ::hannoy::Error) -> Error {
        Error::Hannoy {
            path: self.path.clone(),
            source,
        }
    }

    fn typed<D: ::hannoy::Distance>(&self) -> ::hannoy::Database<'static, D> {
        self.db.remap_types()
    }

    fn score(&self, distance: f32) -> f32 {
        match self.distance {
            Distance::Euclidean => -distance.max(0.0).sqrt(),
            Distance::Cosine | Distance::Dot => 1.0 - 2.0 * distance,
        }
    }

    fn build_typed<D: ::hannoy::Distance>(
        &self,
        wtxn: &mut RwTxn,
        store: &Store,
        changes: &Changes,
    ) -> Result<()> {
        let writer = Writer::<D>::new(self.typed::<D>(), INDEX, self.dimension);
        for item in changes.stale.iter() {
            if !changes.upserted.contains(item) {
                writer.del_item(wtxn, item).map_err(|e| self.err(e))?;
            }
        }
        let mut buf = vec![0.0f32; self.dimension];
        for item in changes.upserted.iter() {
            match store.vector_into(wtxn, item, &mut buf)? {
                Some(_) => writer.add_item(wtxn, item, &buf).map_err(|e| self.err(e))?,
                None => {
                    // Deleted after it was marked pending: make sure the index drops it.
                    writer.del_item(wtxn, item).map_err(|e| self.err(e))?;
                }
            }
        }
        let mut rng = arroy_rand::rngs::StdRng::seed_from_u64(self.params.seed);
        let mut builder = writer.builder(&mut rng);
        builder.ef_construction(self.params.ef_construction);
        let built = builder.build::<WARM_M, WARM_M0>(wtxn);
        built.map_err(|e| self.err(e))
    }

    fn search_typed<D: ::hannoy::Distance>(
        &self,
        txn: &RoTxn,
        query: &PreparedQuery,
        k: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let reader = match Reader::<D>::open(txn, INDEX, self.typed::<D>()) {
            Ok(reader) => reader,
            // Never built: nothing indexed yet.
            Err(::hannoy::Error::MissingMetadata(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let filter: Option<RoaringBitmap> = match candidates {
            Some(c) if exclude.is_empty() => Some(c.clone()),
            Some(c) => Some(c - exclude),
            None if exclude.is_empty() => None,
            None => Some(reader.item_ids() - exclude),
        };
        if filter.as_ref().is_some_and(|f| f.is_empty()) {
            return Ok(Vec::new());
        }
        let mut nns = reader.nns(k);
        nns.ef_search(self.ef_search.load(Ordering::Relaxed).max(k));
        if let Some(f) = &filter {
            nns.candidates(f);
        }
        let found = nns.by_vector(txn, &query.raw).map_err(|e| self.err(e))?;
        Ok(found
            .into_nns()
            .into_iter()
            .map(|(item, d)| (item, self.score(d)))
            .collect())
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
        with_distance!(self, D => {
            Writer::<D>::new(self.typed::<D>(), INDEX, self.dimension)
                .contains_item(txn, item)
                .map_err(|e| self.err(e))
        })
    }

    fn build(&self, wtxn: &mut RwTxn, store: &Store, changes: &Changes) -> Result<()> {
        with_distance!(self, D => self.build_typed::<D>(wtxn, store, changes))
    }

    fn search(
        &self,
        txn: &RoTxn,
        _store: &Store,
        query: &PreparedQuery,
        k: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        with_distance!(self, D => self.search_typed::<D>(txn, query, k, candidates, exclude))
    }

    fn indexed_len(&self, txn: &RoTxn, _store: &Store) -> Result<u64> {
        with_distance!(self, D => {
            match Reader::<D>::open(txn, INDEX, self.typed::<D>()) {
                Ok(reader) => Ok(reader.n_items()),
                Err(::hannoy::Error::MissingMetadata(_)) => Ok(0),
                Err(e) => Err(self.err(e)),
            }
        })
    }

    fn set_search_effort(&self, effort: usize) -> bool {
        self.ef_search.store(effort.max(1), Ordering::Relaxed);
        true
    }

    fn search_effort(&self) -> Option<usize> {
        Some(self.ef_search.load(Ordering::Relaxed))
    }
}
