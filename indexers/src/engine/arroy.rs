//! The arroy engine: Annoy-style random-projection trees (the `arroy` crate) stored in the
//! shard's own LMDB environment, in the store's `index` database (arroy index 0).
//!
//! arroy keeps its own copy of each indexed vector next to its trees, so an arroy shard
//! stores vectors twice (once in the store, once in the index). Its database is only
//! written inside [`IndexEngine::build`]: between builds it holds no "updated" marks, so
//! `arroy::Reader::open` never refuses with `NeedBuild`; the shard scans the pending tail
//! itself.
//!
//! Distances map to arroy's `Cosine`, `Euclidean` and `DotProduct`; arroy's distances are
//! turned back into scores (cosine similarity = 1 − 2·d, −euclidean distance, dot).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use arroy::distances::{Cosine, DotProduct, Euclidean};
use arroy::{Reader, Writer};
use arroy_rand::SeedableRng;
use heed::{Database, RoTxn, RwTxn};
use hektor_topics::record::Distance;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::{Changes, EngineKind, IndexEngine};
use crate::error::{Error, Result};
use crate::metric::PreparedQuery;
use crate::store::Store;

/// arroy index number inside the `index` database (one index per shard).
const INDEX: u16 = 0;

/// Tuning of the arroy engine. The defaults reach recall@10 ≥ 0.95 on 62k × 384
/// sentence embeddings (see the crate's recall test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArroyParams {
    /// Trees to build; `None` lets arroy decide (about as many tree nodes as items).
    pub n_trees: Option<usize>,
    /// Nodes inspected per query = `k × n_trees × search_k_factor`.
    pub search_k_factor: usize,
    /// Largest leaf (items kept unsplit); `None` = arroy's default, the dimension.
    pub split_after: Option<usize>,
    /// Seed of the tree-building RNG (builds are reproducible for one seed).
    pub seed: u64,
}

impl Default for ArroyParams {
    fn default() -> Self {
        ArroyParams {
            n_trees: Some(DEFAULT_N_TREES),
            search_k_factor: DEFAULT_SEARCH_K_FACTOR,
            split_after: DEFAULT_SPLIT_AFTER,
            seed: 0x6865_6b74_6f72,
        }
    }
}

/// Default number of trees. Measured on 61,956 × 384 MiniLM embeddings (cosine, k = 10,
/// leaves of 32): 20 trees × factor 60 / 90 / 120 gave recall@10 0.940 / 0.955 / 0.965;
/// 30 trees × factor 40 gave 0.943; 100 trees with arroy's default leaves (= dimension)
/// × factor 20 gave 0.926. Small leaves buy more recall per inspected node.
pub const DEFAULT_N_TREES: usize = 20;
/// Default search-k factor: `k × 20 × 100` = 20,000 nodes for k = 10.
pub const DEFAULT_SEARCH_K_FACTOR: usize = 100;

/// Default leaf size: arroy's default (the dimension) loses recall per inspected node.
pub const DEFAULT_SPLIT_AFTER: Option<usize> = Some(32);

/// The arroy engine of one shard.
#[derive(Debug)]
pub struct ArroyEngine {
    db: Database<'static, heed::types::Bytes, heed::types::Bytes>,
    distance: Distance,
    dimension: usize,
    params: ArroyParams,
    path: PathBuf,
}

/// Run `$body` with `$D` bound to the arroy distance type of `$distance`.
macro_rules! with_distance {
    ($distance:expr, $D:ident => $body:expr) => {
        match $distance {
            Distance::Cosine => {
                type $D = Cosine;
                $body
            }
            Distance::Euclidean => {
                type $D = Euclidean;
                $body
            }
            Distance::Dot => {
                type $D = DotProduct;
                $body
            }
        }
    };
}

impl ArroyEngine {
    pub(crate) fn new(store: &Store, distance: Distance, params: ArroyParams) -> ArroyEngine {
        ArroyEngine {
            db: store.index,
            distance,
            dimension: store.dimension(),
            params,
            path: store.path().to_path_buf(),
        }
    }

    fn err(&self, source: arroy::Error) -> Error {
        Error::Arroy {
            path: self.path.clone(),
            source,
        }
    }

    fn typed<D: arroy::Distance>(&self) -> arroy::Database<'static, D> {
        self.db.remap_types()
    }

    fn score(&self, distance: f32) -> f32 {
        match self.distance {
            Distance::Cosine => 1.0 - 2.0 * distance,
            Distance::Euclidean => -distance,
            Distance::Dot => distance,
        }
    }

    fn build_typed<D: arroy::Distance>(
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
        if let Some(n) = self.params.n_trees {
            builder.n_trees(n.max(1));
        }
        if let Some(n) = self.params.split_after {
            builder.split_after(n.max(2));
        }
        builder.build(wtxn).map_err(|e| self.err(e))
    }

    fn search_typed<D: arroy::Distance>(
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
            Err(arroy::Error::MissingMetadata(_)) => return Ok(Vec::new()),
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
        let search_k = k
            .saturating_mul(reader.n_trees().max(1))
            .saturating_mul(self.params.search_k_factor.max(1));
        if let Some(search_k) = NonZeroUsize::new(search_k) {
            nns.search_k(search_k);
        }
        if let Some(f) = &filter {
            nns.candidates(f);
        }
        let found = nns.by_vector(txn, &query.raw).map_err(|e| self.err(e))?;
        Ok(found
            .into_iter()
            .map(|(item, d)| (item, self.score(d)))
            .collect())
    }
}

impl IndexEngine for ArroyEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Arroy
    }

    fn needs_build(&self) -> bool {
        true
    }

    fn is_indexed(&self, txn: &RoTxn, item: u32) -> Result<bool> {
        with_distance!(self.distance, D => {
            Writer::<D>::new(self.typed::<D>(), INDEX, self.dimension)
                .contains_item(txn, item)
                .map_err(|e| self.err(e))
        })
    }

    fn build(&self, wtxn: &mut RwTxn, store: &Store, changes: &Changes) -> Result<()> {
        with_distance!(self.distance, D => self.build_typed::<D>(wtxn, store, changes))
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
        with_distance!(self.distance, D => self.search_typed::<D>(txn, query, k, candidates, exclude))
    }

    fn indexed_len(&self, txn: &RoTxn, _store: &Store) -> Result<u64> {
        with_distance!(self.distance, D => {
            match Reader::<D>::open(txn, INDEX, self.typed::<D>()) {
                Ok(reader) => Ok(reader.n_items()),
                Err(arroy::Error::MissingMetadata(_)) => Ok(0),
                Err(e) => Err(self.err(e)),
            }
        })
    }
}
