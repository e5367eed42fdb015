//! The cold-tier engine: Annoy-style random-projection trees (the `arroy` crate) over
//! binary-quantized vectors (one bit per dimension), stored in the shard's own LMDB
//! environment in the store's `index_cold` database (arroy index 0), with the top
//! candidates rescored against the full-precision vectors of the store.
//!
//! Owns: writing items and trees inside the caller's write transaction
//! ([`IndexEngine::build`], incremental like the arroy engine: upserts and deletes, then
//! arroy updates its trees), the candidate search in quantized space, and the exact
//! rescoring. The index holds 1 bit per dimension per vector plus the trees, so it is many
//! times smaller than the raw `f32` vectors; the price is that every query reads
//! `search effort` full vectors from the store to rescore (random reads, cheap while the
//! store's pages are cached, disk reads when they are not: the cold trade).
//!
//! **Knob.** [`IndexEngine::set_search_effort`] sets how many quantized candidates are
//! rescored (at least `k`); the trees inspect `effort × n_trees × search_k_factor` nodes.
//!
//! **Distances.** Cosine uses arroy's `BinaryQuantizedCosine`, Euclidean its
//! `BinaryQuantizedEuclidean`; the returned scores are the exact ones (cosine similarity,
//! minus the euclidean distance) from the rescoring. arroy has no binary-quantized dot
//! product, so a `Dot` collection is refused with [`Error::InvalidConfig`].

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use arroy::distances::{BinaryQuantizedCosine, BinaryQuantizedEuclidean};
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

/// arroy index number inside the `index_cold` database (one index per shard).
const INDEX: u16 = 0;

/// Tuning of the cold engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdParams {
    /// Trees to build; `None` lets arroy decide.
    pub n_trees: Option<usize>,
    /// Largest leaf (items kept unsplit); `None` = arroy's default, the dimension.
    pub split_after: Option<usize>,
    /// Quantized candidates rescored with the full vectors (at least `k` is used); also
    /// settable at run time with [`crate::Shard::set_search_effort`].
    pub rescore: usize,
    /// Tree nodes inspected per query = `rescore × n_trees × search_k_factor`.
    pub search_k_factor: usize,
    /// Seed of the tree-building RNG.
    pub seed: u64,
}

/// Default number of rescored candidates: recall@10 0.92 on 62k × 384 MiniLM embeddings
/// at 10 trees × search_k_factor 10 (100: 0.85, 300: 0.95; see `docs/bench/tiers.md`).
pub const DEFAULT_COLD_RESCORE: usize = 200;

impl Default for ColdParams {
    fn default() -> Self {
        ColdParams {
            n_trees: Some(10),
            split_after: Some(64),
            rescore: DEFAULT_COLD_RESCORE,
            search_k_factor: 10,
            seed: 0x6865_6b74_6f72,
        }
    }
}

impl ColdParams {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.n_trees == Some(0) || self.rescore == 0 || self.search_k_factor == 0 {
            return Err(Error::InvalidConfig(
                "cold n_trees, rescore and search_k_factor must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The cold engine of one shard.
#[derive(Debug)]
pub struct ColdEngine {
    db: Database<'static, heed::types::Bytes, heed::types::Bytes>,
    distance: Distance,
    dimension: usize,
    params: ColdParams,
    rescore: AtomicUsize,
    path: PathBuf,
}

/// Run `$body` with `$D` bound to the arroy distance of the engine (never `Dot`:
/// [`ColdEngine::new`] refuses it).
macro_rules! with_distance {
    ($self:expr, $D:ident => $body:expr) => {
        match $self.distance {
            Distance::Euclidean => {
                type $D = BinaryQuantizedEuclidean;
                $body
            }
            Distance::Cosine | Distance::Dot => {
                type $D = BinaryQuantizedCosine;
                $body
            }
        }
    };
}

impl ColdEngine {
    pub(crate) fn new(store: &Store, distance: Distance, params: ColdParams) -> Result<ColdEngine> {
        params.validate()?;
        if distance == Distance::Dot {
            return Err(Error::InvalidConfig(
                "the cold engine (binary-quantized arroy) has no dot-product distance; use the \
                 hot (hnsw), arroy or exact engine for a dot-product collection"
                    .into(),
            ));
        }
        Ok(ColdEngine {
            db: store.index_cold,
            distance,
            dimension: store.dimension(),
            params,
            rescore: AtomicUsize::new(params.rescore),
            path: store.path().to_path_buf(),
        })
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

    /// Quantized candidates for `query`, unscored.
    fn candidates_typed<D: arroy::Distance>(
        &self,
        txn: &RoTxn,
        query: &PreparedQuery,
        count: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<u32>> {
        let reader = match Reader::<D>::open(txn, INDEX, self.typed::<D>()) {
            Ok(reader) => reader,
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
        let mut nns = reader.nns(count);
        let search_k = count
            .saturating_mul(reader.n_trees().max(1))
            .saturating_mul(self.params.search_k_factor.max(1));
        if let Some(search_k) = NonZeroUsize::new(search_k) {
            nns.search_k(search_k);
        }
        nns.oversampling(NonZeroUsize::MIN);
        if let Some(f) = &filter {
            nns.candidates(f);
        }
        let found = nns.by_vector(txn, &query.raw).map_err(|e| self.err(e))?;
        Ok(found.into_iter().map(|(item, _)| item).collect())
    }
}

impl IndexEngine for ColdEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Cold
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
        store: &Store,
        query: &PreparedQuery,
        k: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let count = query.effort_or(self.rescore.load(Ordering::Relaxed)).max(k);
        let found = with_distance!(self, D => {
            self.candidates_typed::<D>(txn, query, count, candidates, exclude)?
        });
        super::rescore(txn, store, query, k, found)
    }

    fn indexed_len(&self, txn: &RoTxn, _store: &Store) -> Result<u64> {
        with_distance!(self, D => {
            match Reader::<D>::open(txn, INDEX, self.typed::<D>()) {
                Ok(reader) => Ok(reader.n_items()),
                Err(arroy::Error::MissingMetadata(_)) => Ok(0),
                Err(e) => Err(self.err(e)),
            }
        })
    }

    fn set_search_effort(&self, effort: usize) -> bool {
        self.rescore.store(effort.max(1), Ordering::Relaxed);
        true
    }

    fn search_effort(&self) -> Option<usize> {
        Some(self.rescore.load(Ordering::Relaxed))
    }
}
