//! The exact engine: brute force over the shard's stored vectors, no index. Every live
//! vector is searchable as soon as its write commits, so nothing is ever pending and a
//! build does nothing. Cost per query is one pass over the shard's vectors (memory
//! bandwidth bound); fine for small shards and as the recall reference for the others.

use heed::{RoTxn, RwTxn};
use roaring::RoaringBitmap;

use super::{Changes, EngineKind, IndexEngine, TopK};
use crate::error::Result;
use crate::metric::PreparedQuery;
use crate::store::Store;

/// Brute-force search over the `vectors` database.
#[derive(Debug, Default)]
pub struct ExactEngine;

/// Below this fraction of the shard, a candidate filter is visited item by item (random
/// reads) instead of filtering a full sequential scan.
const SPARSE_CANDIDATES: u64 = 8;

impl IndexEngine for ExactEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Exact
    }

    fn needs_build(&self) -> bool {
        false
    }

    fn is_indexed(&self, _txn: &RoTxn, _item: u32) -> Result<bool> {
        Ok(false)
    }

    fn build(&self, _wtxn: &mut RwTxn, _store: &Store, _changes: &Changes) -> Result<()> {
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
        let mut top = TopK::new(k);
        if k == 0 {
            return Ok(Vec::new());
        }
        let total = store.vectors.len(txn).map_err(|e| store.storage(e))?;
        match candidates {
            Some(c) if c.len() * SPARSE_CANDIDATES < total => {
                let mut buf = vec![0.0f32; store.dimension()];
                for item in c.iter() {
                    if exclude.contains(item) {
                        continue;
                    }
                    if let Some(norm) = store.vector_into(txn, item, &mut buf)? {
                        top.push(item, query.score(&buf, norm));
                    }
                }
            }
            _ => {
                let check_exclude = !exclude.is_empty();
                store.for_each_vector_bytes(txn, |item, v, norm| {
                    if candidates.is_some_and(|c| !c.contains(item))
                        || (check_exclude && exclude.contains(item))
                    {
                        return;
                    }
                    top.push(item, query.score_bytes(v, norm));
                })?;
            }
        }
        Ok(top.into_sorted())
    }

    fn indexed_len(&self, txn: &RoTxn, store: &Store) -> Result<u64> {
        store.vectors.len(txn).map_err(|e| store.storage(e))
    }
}
