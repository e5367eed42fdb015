//! A read snapshot of a shard for exact batch search ([`Shard::exact_view`]): the live
//! vectors as a row-major matrix (optionally only a tenant's ring range) with the item of
//! each row, a version that changes with every commit (to key caches of that matrix),
//! and the records of a search's hits read from that same snapshot, so their ids and
//! payloads are those of the vectors that were scored.
//!
//! The live vectors are exactly the store's `vectors` table: an upsert overwrites its
//! item's vector, a delete removes it; the engines' `pending` and `stale` sets only say
//! what their indexes have folded, which an exact search does not need.

use heed::RoTxn;
use hektor_topics::record::RingRange;

use super::{RawHit, Shard};
use crate::error::Result;
use crate::metric;

/// See the module documentation.
pub struct ExactView<'s> {
    shard: &'s Shard,
    txn: RoTxn<'s, heed::WithoutTls>,
}

impl std::fmt::Debug for ExactView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactView")
            .field("shard", &self.shard.path())
            .field("version", &self.version())
            .finish()
    }
}

/// The live vectors of a snapshot: `items[r]` is row `r` of `vectors` (row-major,
/// `items.len() × dimension`).
#[derive(Debug, Clone, Default)]
pub struct ExactMatrix {
    pub items: Vec<u32>,
    pub vectors: Vec<f32>,
}

impl Shard {
    /// A read snapshot for exact batch search (see [`ExactView`]). Hold it briefly: an
    /// open snapshot keeps LMDB from reusing the pages written after it.
    pub fn exact_view(&self) -> Result<ExactView<'_>> {
        Ok(ExactView {
            shard: self,
            txn: self.read_txn()?,
        })
    }
}

impl<'s> ExactView<'s> {
    /// The id of the last write transaction this snapshot sees: equal versions of one
    /// shard hold the same vectors.
    pub fn version(&self) -> u64 {
        self.txn.id() as u64
    }

    /// The live vectors, every one or (with `range`) those whose ring position lies in
    /// it, in item order.
    pub fn matrix(&self, range: Option<RingRange>) -> Result<ExactMatrix> {
        let s = &self.shard.store;
        let candidates = match range {
            Some(r) => self.shard.range_items(&self.txn, r)?,
            None => None,
        };
        let dim = self.shard.config.dimension;
        let rows = match &candidates {
            Some(c) => c.len() as usize,
            None => s.vectors.len(&self.txn).map_err(|e| s.storage(e))? as usize,
        };
        let mut out = ExactMatrix {
            items: Vec::with_capacity(rows),
            vectors: Vec::with_capacity(rows * dim),
        };
        let mut row = vec![0.0f32; dim];
        s.for_each_vector_bytes(&self.txn, |item, bytes, _norm| {
            if candidates.as_ref().is_some_and(|c| !c.contains(item)) {
                return;
            }
            metric::decode_f32s(bytes, &mut row);
            out.items.push(item);
            out.vectors.extend_from_slice(&row);
        })?;
        Ok(out)
    }

    /// The record of `item` (a hit of a search over this snapshot) with its `score`:
    /// its id and, with `payload`, its payload as the stored JSON text, read from this
    /// snapshot.
    pub fn raw_hit(&self, item: u32, score: f32, payload: bool) -> Result<RawHit> {
        super::read_raw_hit(&self.shard.store, &self.txn, item, score, payload)
    }
}
