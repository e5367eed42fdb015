//! The warm tier's on-disk HNSW graph over int8 (scalar-quantized) vectors, kept in the
//! store's `index_warm` LMDB database and read in place through LMDB's memory map.
//!
//! Owns: the byte layout of that database, the graph walk (search, with the candidate
//! filter applied during the walk), and the incremental updates (insert one item, remove
//! one item and repair its neighbours' links) inside the caller's write transaction. It
//! does not decide scores: [`super::warm::WarmEngine`] rescores what the walk finds
//! against the store's full vectors.
//!
//! **Layout** (keys are bytes, item ids big-endian so keys sort by item):
//!
//! | key                     | value |
//! |-------------------------|-------|
//! | `M`                     | meta: format, entry point, top level, item count |
//! | `N` ++ item             | node: level `u8`, layer-0 link count `u8`, scale `f32`, squared norm `f32`, the int8 codes (one byte per dimension), then the layer-0 links (`u32` little-endian) |
//! | `U` ++ level ++ item    | links of `item` on upper layer `level` (`u32` little-endian) |
//!
//! One node entry holds a vector *and* its layer-0 links, so the walk does one B-tree
//! lookup per visited node and nothing else: a node's links are read from the entry
//! fetched when its distance was computed; nothing is decoded or allocated per hop. And
//! searches of the same LMDB snapshot share where each entry lies in the map (`Pins`, an
//! array of 12 bytes per item), so after the first search of a snapshot a hop is an array
//! read, not a B-tree lookup (3.7x the QPS at ef 48 on 62k vectors). The
//! codes are `round(x / scale)` with `scale = max |x| / 127` (cosine vectors are scaled to
//! unit length first), 384 B for a 384-d vector instead of 1,536 B of `f32`.
//!
//! **Distances** (lower is closer): cosine `1 − q·x̂`, euclidean `|q|² + |x|² − 2 q·x̂`,
//! where `x̂ = scale × codes` and `|x|²` is the exact squared norm; the query stays `f32`.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn};
use hektor_topics::record::Distance;
use roaring::RoaringBitmap;

use super::codes;
use crate::error::Result;
use crate::store::{Store, META_NEXT_ITEM};
use parking_lot::RwLock;

/// Links per node on the upper layers, and links chosen for a new node on every layer.
pub const WARM_M: usize = 16;
/// Most links per node on layer 0.
pub const WARM_M0: usize = 32;
/// Highest layer a node can get.
const MAX_LEVEL: usize = 16;
/// Format byte of the meta entry (a database without it is not this format).
const FORMAT: u8 = 1;
const META_KEY: &[u8] = b"M";
const NODE: u8 = b'N';
const UPPER: u8 = b'U';
/// Bytes of a node entry before its codes.
const HEADER: usize = 10;

type Db = Database<'static, Bytes, Bytes>;

/// Graph-wide state, in the `M` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The node the walk starts from (on the top layer); `None` when the graph is empty.
    pub entry: Option<u32>,
    pub max_level: u8,
    pub count: u64,
}

impl Meta {
    fn encode(&self) -> [u8; 15] {
        let mut out = [0u8; 15];
        out[0] = FORMAT;
        out[1] = u8::from(self.entry.is_some());
        out[2..6].copy_from_slice(&self.entry.unwrap_or(0).to_le_bytes());
        out[6] = self.max_level;
        out[7..15].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Meta> {
        if bytes.len() != 15 || bytes[0] != FORMAT {
            return None;
        }
        Some(Meta {
            entry: (bytes[1] == 1).then(|| u32_at(bytes, 2)),
            max_level: bytes[6],
            count: u64::from_le_bytes(bytes[7..15].try_into().ok()?),
        })
    }
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

fn node_key(item: u32) -> [u8; 5] {
    let i = item.to_be_bytes();
    [NODE, i[0], i[1], i[2], i[3]]
}

fn upper_key(level: usize, item: u32) -> [u8; 6] {
    let i = item.to_be_bytes();
    [UPPER, level as u8, i[0], i[1], i[2], i[3]]
}

/// A node entry, viewed in place (borrowed from the transaction's map).
#[derive(Debug, Clone, Copy)]
struct NodeRef<'t> {
    bytes: &'t [u8],
    dim: usize,
}

impl<'t> NodeRef<'t> {
    fn level(&self) -> usize {
        self.bytes[0] as usize
    }
    fn scale(&self) -> f32 {
        f32_at(self.bytes, 2)
    }
    fn sqnorm(&self) -> f32 {
        f32_at(self.bytes, 6)
    }
    fn codes(&self) -> &'t [u8] {
        &self.bytes[HEADER..HEADER + self.dim]
    }
    /// Layer-0 links as little-endian `u32` bytes.
    fn links0(&self) -> &'t [u8] {
        let n = self.bytes[1] as usize;
        &self.bytes[HEADER + self.dim..HEADER + self.dim + 4 * n]
    }
}

/// Link bytes as item ids.
fn links_iter(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// A vector prepared for distances against node codes: `f32` components (unit length for
/// cosine) and the squared norm (euclidean).
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    /// The components as `i16` codes: `vec[i] ≈ scale × codes[i]`.
    codes: Vec<i16>,
    scale: f32,
    sqnorm: f32,
}

impl Probe {
    fn new(vec: &[f32], sqnorm: f32) -> Probe {
        let mut probe = Vec::with_capacity(vec.len());
        let scale = codes::quantize_i16(vec, &mut probe);
        Probe {
            codes: probe,
            scale,
            sqnorm,
        }
    }
}

/// Pack a distance and a slot into a `u64` ordered by distance (then slot).
#[inline(always)]
fn key(d: f32, slot: u32) -> u64 {
    (u64::from(super::order_bits(d)) << 32) | u64::from(slot)
}

#[inline(always)]
fn key_dist(k: u64) -> f32 {
    super::from_order_bits((k >> 32) as u32)
}

#[inline(always)]
fn key_slot(k: u64) -> u32 {
    k as u32
}

/// Per-thread walk state, reused by every walk on that thread.
#[derive(Debug, Default)]
struct Scratch {
    visited: Vec<u32>,
    stamp: u32,
    frontier: BinaryHeap<Reverse<u64>>,
    best: BinaryHeap<u64>,
}

impl Scratch {
    fn reset(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
        self.frontier.clear();
        self.best.clear();
    }

    /// Mark `item` visited; `false` when it already was in this walk.
    #[inline(always)]
    fn visit(&mut self, item: u32) -> bool {
        let i = item as usize;
        if i >= self.visited.len() {
            self.visited
                .resize((i + 1).next_power_of_two().max(1024), 0);
        }
        let slot = &mut self.visited[i];
        if *slot == self.stamp {
            false
        } else {
            *slot = self.stamp;
            true
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Candidate sets at most this large are scanned exhaustively instead of walked.
const LINEAR_BELOW: u64 = 1_000;

/// The warm graph of one shard: a view of the `index_warm` database.
#[derive(Debug)]
pub(crate) struct DiskGraph {
    db: Db,
    distance: Distance,
    dim: usize,
    seed: u64,
    /// Where the node entries of the newest snapshot searched lie in the map.
    pins: RwLock<Option<Arc<Pins>>>,
}

/// The node entries of one committed LMDB snapshot, located once and then reused by every
/// search reading that same snapshot: a hop costs an array read instead of a B-tree
/// lookup. Measured in one process, alternating passes on one 62k-vector shard: 6,747
/// instead of 1,844 QPS at ef 48 (the B-tree lookups were ~55 % of a warm search).
///
/// Sound because LMDB never writes a page that a committed snapshot reaches while a
/// reader of that snapshot is open (it reuses only pages freed before the oldest live
/// reader's snapshot), a snapshot is named by its transaction id (a read transaction
/// takes the id of the last committed write), and a shard's map is never resized or
/// moved while it is open. So an entry located by any reader of snapshot `txn_id` stays
/// valid and unchanged for as long as the current search holds a reader of the same id;
/// searches use the pins only then. Write transactions never fill them: their pages are
/// not committed yet.
#[derive(Debug)]
struct Pins {
    txn_id: usize,
    ptrs: Vec<AtomicPtr<u8>>,
    lens: Vec<AtomicU32>,
}

impl Pins {
    fn new(txn_id: usize, items: usize) -> Pins {
        Pins {
            txn_id,
            ptrs: (0..items)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            lens: (0..items).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The entry of `item` if a reader of this snapshot located it.
    ///
    /// # Safety
    /// The caller holds a read transaction of snapshot `self.txn_id` for `'t`.
    #[inline(always)]
    unsafe fn get<'t>(&self, item: u32) -> Option<&'t [u8]> {
        let i = item as usize;
        let ptr = self.ptrs.get(i)?.load(Ordering::Acquire);
        if ptr.is_null() {
            return None;
        }
        let len = self.lens[i].load(Ordering::Relaxed) as usize;
        // SAFETY: `ptr`/`len` were taken from an entry of this snapshot, which stays
        // mapped and unchanged while the caller's reader of it is open (see `Pins`).
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    fn put(&self, item: u32, bytes: &[u8]) {
        let i = item as usize;
        if i < self.ptrs.len() && bytes.len() <= u32::MAX as usize {
            self.lens[i].store(bytes.len() as u32, Ordering::Relaxed);
            self.ptrs[i].store(bytes.as_ptr().cast_mut(), Ordering::Release);
        }
    }
}

/// One graph change planned under a shared borrow and applied after it: the new link
/// list of `item` on `layer`.
type LinkChange = (u32, usize, Vec<u32>);

impl DiskGraph {
    pub(crate) fn new(store: &Store, distance: Distance, seed: u64) -> DiskGraph {
        DiskGraph {
            db: store.index_warm,
            distance,
            dim: store.dimension(),
            seed,
            pins: RwLock::new(None),
        }
    }

    /// The pins of `txn`'s snapshot: shared with every search of the same snapshot, fresh
    /// for a newer one; a search of an older snapshot than the newest gets empty pins of
    /// its own (nothing is reused then).
    fn pins_for(&self, txn: &RoTxn, store: &Store) -> Result<Arc<Pins>> {
        let id = txn.id();
        if let Some(p) = self.pins.read().as_ref().filter(|p| p.txn_id == id) {
            return Ok(Arc::clone(p));
        }
        let items = store.meta_u64(txn, META_NEXT_ITEM)?.min(u32::MAX as u64) as usize;
        let mut pins = self.pins.write();
        match pins.as_ref() {
            Some(p) if p.txn_id == id => Ok(Arc::clone(p)),
            Some(p) if p.txn_id > id => Ok(Arc::new(Pins::new(id, 0))),
            _ => {
                let fresh = Arc::new(Pins::new(id, items));
                *pins = Some(Arc::clone(&fresh));
                Ok(fresh)
            }
        }
    }

    /// [`DiskGraph::node`] through `pins` when given (searches only; see [`Pins`]).
    #[inline(always)]
    fn node_via<'t>(
        &self,
        txn: &'t RoTxn,
        store: &Store,
        item: u32,
        pins: Option<&Pins>,
    ) -> Result<Option<NodeRef<'t>>> {
        let Some(pins) = pins else {
            return self.node(txn, store, item);
        };
        // SAFETY: `pins` are only handed to searches holding `txn`, a reader of the
        // snapshot the pins belong to (`pins_for`).
        if let Some(bytes) = unsafe { pins.get(item) } {
            return Ok(Some(NodeRef {
                bytes,
                dim: self.dim,
            }));
        }
        let node = self.node(txn, store, item)?;
        if let Some(n) = node {
            pins.put(item, n.bytes);
        }
        Ok(node)
    }

    fn st(store: &Store) -> impl Fn(heed::Error) -> crate::error::Error + '_ {
        move |e| store.storage(e)
    }

    /// The meta entry; `None` for an empty database. A database holding something else
    /// (an index of an older hektor: hannoy's layout) is an error the user can act on.
    pub(crate) fn meta(&self, txn: &RoTxn, store: &Store) -> Result<Option<Meta>> {
        match self.db.get(txn, META_KEY).map_err(Self::st(store))? {
            Some(bytes) => Meta::decode(bytes).map(Some).ok_or_else(|| {
                store.corrupt("the warm index has an unknown format; rebuild it (switch the shard to another engine and back to warm)")
            }),
            None => {
                if self.db.len(txn).map_err(Self::st(store))? > 0 {
                    Err(store.corrupt(
                        "the warm index was written by an older hektor (hannoy layout); \
                         rebuild it (switch the shard to another engine and back to warm)",
                    ))
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn node<'t>(&self, txn: &'t RoTxn, store: &Store, item: u32) -> Result<Option<NodeRef<'t>>> {
        let bytes = self.db.get(txn, &node_key(item)).map_err(Self::st(store))?;
        match bytes {
            None => Ok(None),
            Some(b)
                if b.len() >= HEADER + self.dim
                    && (b.len() - HEADER - self.dim).is_multiple_of(4) =>
            {
                Ok(Some(NodeRef {
                    bytes: b,
                    dim: self.dim,
                }))
            }
            Some(b) => Err(store.corrupt(format!(
                "warm node {item} has {} bytes for dimension {}",
                b.len(),
                self.dim
            ))),
        }
    }

    /// Links of `item` on `layer` as `u32` bytes (empty when it has none there).
    fn links<'t>(
        &self,
        txn: &'t RoTxn,
        store: &Store,
        node: Option<NodeRef<'t>>,
        item: u32,
        layer: usize,
    ) -> Result<&'t [u8]> {
        if layer == 0 {
            return Ok(match node {
                Some(n) => n.links0(),
                None => self.node(txn, store, item)?.map_or(&[], |n| n.links0()),
            });
        }
        Ok(self
            .db
            .get(txn, &upper_key(layer, item))
            .map_err(Self::st(store))?
            .unwrap_or(&[]))
    }

    /// Whether `item` has a node.
    pub(crate) fn contains_item(&self, txn: &RoTxn, item: u32) -> heed::Result<bool> {
        Ok(self.db.get(txn, &node_key(item))?.is_some())
    }

    /// Prepare a vector for distances (unit length for cosine).
    pub(crate) fn probe(&self, v: &[f32]) -> Probe {
        let sqnorm: f32 = v.iter().map(|x| x * x).sum();
        match self.distance {
            Distance::Cosine if sqnorm > 0.0 => {
                let n = sqnorm.sqrt();
                let unit: Vec<f32> = v.iter().map(|x| x / n).collect();
                Probe::new(&unit, 1.0)
            }
            _ => Probe::new(v, sqnorm),
        }
    }

    /// The probe of a stored node (its dequantized vector).
    fn probe_of(&self, n: NodeRef) -> Probe {
        // Exact: the int8 codes widened, with the node's scale.
        Probe {
            codes: n.codes().iter().map(|&c| i16::from(c as i8)).collect(),
            scale: n.scale(),
            sqnorm: n.sqnorm(),
        }
    }

    #[inline(always)]
    fn dist(&self, p: &Probe, n: NodeRef) -> f32 {
        let dot = p.scale * n.scale() * codes::dot(&p.codes, n.codes()) as f32;
        match self.distance {
            Distance::Euclidean => p.sqnorm + n.sqnorm() - 2.0 * dot,
            Distance::Cosine | Distance::Dot => 1.0 - dot,
        }
    }

    /// Encode a node entry for `probe` (quantized) with `links0`.
    fn encode_node(&self, level: usize, p: &Probe, links0: &[u32]) -> Vec<u8> {
        let vec: Vec<f32> = p.codes.iter().map(|&c| p.scale * f32::from(c)).collect();
        let scale = codes::i8_scale(vec.iter().copied());
        let mut out = Vec::with_capacity(HEADER + self.dim + 4 * links0.len());
        out.push(level as u8);
        out.push(links0.len() as u8);
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend_from_slice(&p.sqnorm.to_le_bytes());
        out.extend(vec.iter().map(|&x| codes::to_i8(x, scale) as u8));
        for l in links0 {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out
    }

    fn max_links(layer: usize) -> usize {
        if layer == 0 {
            WARM_M0
        } else {
            WARM_M
        }
    }

    /// The level of `item`: `⌊−ln(u)/ln(M)⌋` for a `u` hashed from the seed and the item.
    fn level_of(&self, item: u32) -> usize {
        let mut z = self.seed ^ u64::from(item).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() / (WARM_M as f64).ln()).floor() as usize).min(MAX_LEVEL)
    }

    /// Greedy descent from the entry point to layer `above + 1`'s nearest node.
    fn descend<'t>(
        &self,
        txn: &'t RoTxn,
        store: &Store,
        p: &Probe,
        meta: &Meta,
        above: usize,
        pins: Option<&Pins>,
    ) -> Result<Option<(f32, u32, NodeRef<'t>)>> {
        let Some(entry) = meta.entry else {
            return Ok(None);
        };
        let Some(node) = self.node_via(txn, store, entry, pins)? else {
            return Err(store.corrupt(format!("warm entry point {entry} has no node")));
        };
        let mut cur = (self.dist(p, node), entry, node);
        let mut layer = meta.max_level as usize;
        while layer > above {
            loop {
                let mut changed = false;
                for n in links_iter(self.links(txn, store, Some(cur.2), cur.1, layer)?) {
                    if let Some(nn) = self.node_via(txn, store, n, pins)? {
                        let d = self.dist(p, nn);
                        if d < cur.0 {
                            cur = (d, n, nn);
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
            layer -= 1;
        }
        Ok(Some(cur))
    }

    /// Beam search on `layer` from `entries`: up to `ef` nodes passing `admit`, nearest
    /// first. Every node is traversed; only admitted ones enter the result.
    #[allow(clippy::too_many_arguments)]
    fn beam<'t>(
        &self,
        txn: &'t RoTxn,
        store: &Store,
        p: &Probe,
        entries: &[(f32, u32, NodeRef<'t>)],
        ef: usize,
        layer: usize,
        admit: &dyn Fn(u32) -> bool,
        pins: Option<&Pins>,
    ) -> Result<Vec<(f32, u32, NodeRef<'t>)>> {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.reset();
            let mut slots: Vec<(u32, NodeRef<'t>)> = Vec::with_capacity(4 * ef + 64);
            let mut bound = f32::INFINITY;
            for &(d, item, node) in entries {
                if !s.visit(item) {
                    continue;
                }
                let k = key(d, slots.len() as u32);
                slots.push((item, node));
                s.frontier.push(Reverse(k));
                if admit(item) {
                    s.best.push(k);
                    if s.best.len() > ef {
                        s.best.pop();
                    }
                }
            }
            if s.best.len() >= ef {
                bound = s.best.peek().map_or(f32::INFINITY, |&k| key_dist(k));
            }
            while let Some(Reverse(c)) = s.frontier.pop() {
                if key_dist(c) > bound {
                    break;
                }
                let (cur, cur_node) = slots[key_slot(c) as usize];
                for n in links_iter(self.links(txn, store, Some(cur_node), cur, layer)?) {
                    if !s.visit(n) {
                        continue;
                    }
                    // A link to a removed node (not repaired) is skipped.
                    let Some(node) = self.node_via(txn, store, n, pins)? else {
                        continue;
                    };
                    let d = self.dist(p, node);
                    if d < bound || s.best.len() < ef {
                        let k = key(d, slots.len() as u32);
                        slots.push((n, node));
                        s.frontier.push(Reverse(k));
                        if admit(n) {
                            s.best.push(k);
                            if s.best.len() > ef {
                                s.best.pop();
                            }
                            if s.best.len() >= ef {
                                bound = s.best.peek().map_or(f32::INFINITY, |&k| key_dist(k));
                            }
                        }
                    }
                }
            }
            let mut out: Vec<u64> = s.best.drain().collect();
            out.sort_unstable();
            Ok(out
                .into_iter()
                .map(|k| {
                    let (item, node) = slots[key_slot(k) as usize];
                    (key_dist(k), item, node)
                })
                .collect())
        })
    }

    /// Up to `ef` nearest indexed items to `query` (`(item, distance)`, nearest first)
    /// among `candidates` (all when `None`) and not in `exclude`; the filter applies
    /// during the walk. Small candidate sets are scanned instead.
    pub(crate) fn search(
        &self,
        txn: &RoTxn,
        store: &Store,
        query: &[f32],
        ef: usize,
        candidates: Option<&RoaringBitmap>,
        exclude: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let Some(meta) = self.meta(txn, store)? else {
            return Ok(Vec::new());
        };
        let p = self.probe(query);
        if let Some(c) = candidates {
            if c.len() <= LINEAR_BELOW {
                let mut top: BinaryHeap<u64> = BinaryHeap::with_capacity(ef + 1);
                for item in c.iter().filter(|i| !exclude.contains(*i)) {
                    if let Some(node) = self.node(txn, store, item)? {
                        top.push(key(self.dist(&p, node), item));
                        if top.len() > ef {
                            top.pop();
                        }
                    }
                }
                let mut v = top.into_vec();
                v.sort_unstable();
                return Ok(v.into_iter().map(|k| (key_slot(k), key_dist(k))).collect());
            }
        }
        let pins = self.pins_for(txn, store)?;
        let pins = Some(&*pins);
        let Some(start) = self.descend(txn, store, &p, &meta, 0, pins)? else {
            return Ok(Vec::new());
        };
        let admit =
            |item: u32| candidates.is_none_or(|c| c.contains(item)) && !exclude.contains(item);
        let found = self.beam(txn, store, &p, &[start], ef, 0, &admit, pins)?;
        Ok(found.into_iter().map(|(d, item, _)| (item, d)).collect())
    }

    /// The paper's neighbour selection heuristic over `cands` (nearest first): keep a
    /// candidate only when it is closer to the base than to every kept one.
    fn select(&self, cands: &[(f32, u32, NodeRef)], max: usize) -> Vec<u32> {
        if cands.len() <= max {
            return cands.iter().map(|c| c.1).collect();
        }
        let mut kept: Vec<(u32, Probe)> = Vec::with_capacity(max);
        for &(d, item, node) in cands {
            if kept.len() >= max {
                break;
            }
            if kept.iter().all(|(_, k)| self.dist(k, node) >= d) {
                kept.push((item, self.probe_of(node)));
            }
        }
        kept.into_iter().map(|(i, _)| i).collect()
    }

    /// The links `base` keeps on `layer` out of `around` (existing nodes only).
    fn prune(
        &self,
        txn: &RoTxn,
        store: &Store,
        base: NodeRef,
        around: &[u32],
        layer: usize,
        extra: Option<(u32, NodeRef)>,
    ) -> Result<Vec<u32>> {
        let bp = self.probe_of(base);
        let mut scored = Vec::with_capacity(around.len() + 1);
        for &x in around {
            if let Some(n) = self.node(txn, store, x)? {
                scored.push((self.dist(&bp, n), x, n));
            }
        }
        if let Some((x, n)) = extra {
            scored.push((self.dist(&bp, n), x, n));
        }
        scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored.dedup_by_key(|s| s.1);
        Ok(self.select(&scored, Self::max_links(layer)))
    }

    /// Write the new link list of `item` on `layer`.
    fn set_links(
        &self,
        wtxn: &mut RwTxn,
        store: &Store,
        item: u32,
        layer: usize,
        links: &[u32],
    ) -> Result<()> {
        if layer == 0 {
            let Some(node) = self.node(wtxn, store, item)? else {
                return Ok(());
            };
            let mut bytes = node.bytes[..HEADER + self.dim].to_vec();
            bytes[1] = links.len() as u8;
            for l in links {
                bytes.extend_from_slice(&l.to_le_bytes());
            }
            self.db
                .put(wtxn, &node_key(item), &bytes)
                .map_err(Self::st(store))
        } else {
            let mut bytes = Vec::with_capacity(4 * links.len());
            for l in links {
                bytes.extend_from_slice(&l.to_le_bytes());
            }
            self.db
                .put(wtxn, &upper_key(layer, item), &bytes)
                .map_err(Self::st(store))
        }
    }

    fn put_meta(&self, wtxn: &mut RwTxn, store: &Store, meta: &Meta) -> Result<()> {
        self.db
            .put(wtxn, META_KEY, &meta.encode())
            .map_err(Self::st(store))
    }

    /// Insert `item` with vector `v` (it must not be in the graph) and link it, with a
    /// beam of `ef_construction` per layer.
    pub(crate) fn insert(
        &self,
        wtxn: &mut RwTxn,
        store: &Store,
        item: u32,
        v: &[f32],
        ef_construction: usize,
    ) -> Result<()> {
        let mut meta = self.meta(wtxn, store)?.unwrap_or_default();
        let p = self.probe(v);
        let level = self.level_of(item);
        let encoded = self.encode_node(level, &p, &[]);
        let (own, theirs) = self.plan_insert(
            wtxn,
            store,
            &meta,
            item,
            &p,
            level,
            &encoded,
            ef_construction,
        )?;
        let own0 = own
            .iter()
            .find(|(l, _)| *l == 0)
            .map_or(&[][..], |(_, v)| v);
        let node = self.encode_node(level, &p, own0);
        self.db
            .put(wtxn, &node_key(item), &node)
            .map_err(Self::st(store))?;
        for layer in 1..=level {
            let list = own
                .iter()
                .find(|(l, _)| *l == layer)
                .map_or(&[][..], |(_, v)| v);
            self.set_links(wtxn, store, item, layer, list)?;
        }
        for (n, layer, list) in theirs {
            self.set_links(wtxn, store, n, layer, &list)?;
        }
        if meta.entry.is_none() || level > meta.max_level as usize {
            meta.entry = Some(item);
            meta.max_level = level as u8;
        }
        meta.count += 1;
        self.put_meta(wtxn, store, &meta)
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn plan_insert(
        &self,
        txn: &RoTxn,
        store: &Store,
        meta: &Meta,
        item: u32,
        p: &Probe,
        level: usize,
        encoded: &[u8],
        ef_construction: usize,
    ) -> Result<(Vec<(usize, Vec<u32>)>, Vec<LinkChange>)> {
        let mut own = Vec::new();
        let mut theirs = Vec::new();
        let Some(start) = self.descend(txn, store, p, meta, level, None)? else {
            return Ok((own, theirs));
        };
        let me = NodeRef {
            bytes: encoded,
            dim: self.dim,
        };
        let mut entries = vec![start];
        let not_me = |n: u32| n != item;
        for layer in (0..=level.min(meta.max_level as usize)).rev() {
            let cands = self.beam(
                txn,
                store,
                p,
                &entries,
                ef_construction,
                layer,
                &not_me,
                None,
            )?;
            let selected = self.select(&cands, WARM_M);
            for &n in &selected {
                let Some(nn) = self.node(txn, store, n)? else {
                    continue;
                };
                let existing: Vec<u32> = links_iter(self.links(txn, store, Some(nn), n, layer)?)
                    .filter(|&x| x != item)
                    .collect();
                let list = if existing.len() < Self::max_links(layer) {
                    let mut l = existing;
                    l.push(item);
                    l
                } else {
                    self.prune(txn, store, nn, &existing, layer, Some((item, me)))?
                };
                theirs.push((n, layer, list));
            }
            own.push((layer, selected));
            if !cands.is_empty() {
                entries = cands;
            }
        }
        Ok((own, theirs))
    }

    /// Remove `item` from the graph, reconnecting the neighbours it linked to; returns
    /// whether it was there.
    pub(crate) fn remove(&self, wtxn: &mut RwTxn, store: &Store, item: u32) -> Result<bool> {
        let Some(mut meta) = self.meta(wtxn, store)? else {
            return Ok(false);
        };
        let (level, changes) = {
            let txn: &RoTxn = wtxn;
            let Some(node) = self.node(txn, store, item)? else {
                return Ok(false);
            };
            let level = node.level();
            let mut changes: Vec<LinkChange> = Vec::new();
            for layer in 0..=level {
                let mine: Vec<u32> = links_iter(self.links(txn, store, Some(node), item, layer)?)
                    .filter(|&x| x != item)
                    .collect();
                for &n in &mine {
                    let Some(nn) = self.node(txn, store, n)? else {
                        continue;
                    };
                    let theirs: Vec<u32> =
                        links_iter(self.links(txn, store, Some(nn), n, layer)?).collect();
                    if !theirs.contains(&item) {
                        continue;
                    }
                    let mut around: Vec<u32> = theirs
                        .into_iter()
                        .chain(mine.iter().copied())
                        .filter(|&x| x != item && x != n)
                        .collect();
                    around.sort_unstable();
                    around.dedup();
                    let list = self.prune(txn, store, nn, &around, layer, None)?;
                    changes.push((n, layer, list));
                }
            }
            (level, changes)
        };
        let st = Self::st(store);
        self.db.delete(wtxn, &node_key(item)).map_err(&st)?;
        for layer in 1..=level {
            self.db.delete(wtxn, &upper_key(layer, item)).map_err(&st)?;
        }
        for (n, layer, list) in changes {
            self.set_links(wtxn, store, n, layer, &list)?;
        }
        meta.count = meta.count.saturating_sub(1);
        if meta.entry == Some(item) {
            // The new entry: a node on the highest upper layer left, else any node.
            let top = self
                .db
                .rev_prefix_iter(wtxn, &[UPPER])
                .map_err(&st)?
                .next()
                .transpose()
                .map_err(&st)?
                .map(|(k, _)| (k[1], u32::from_be_bytes([k[2], k[3], k[4], k[5]])));
            let any = match top {
                Some(t) => Some(t),
                None => self
                    .db
                    .prefix_iter(wtxn, &[NODE])
                    .map_err(&st)?
                    .next()
                    .transpose()
                    .map_err(&st)?
                    .map(|(k, _)| (0, u32::from_be_bytes([k[1], k[2], k[3], k[4]]))),
            };
            meta.entry = any.map(|t| t.1);
            meta.max_level = any.map_or(0, |t| t.0);
        }
        self.put_meta(wtxn, store, &meta)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_keys_order_by_distance_and_round_trip() {
        let ds = [-1.5f32, -0.0, 0.0, 0.25, 3.0];
        let keys: Vec<u64> = ds
            .iter()
            .enumerate()
            .map(|(i, &d)| key(d, i as u32))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(key_dist(k), ds[i]);
            assert_eq!(key_slot(k), i as u32);
        }
    }

    #[test]
    fn meta_round_trips_and_rejects_other_bytes() {
        let m = Meta {
            entry: Some(7),
            max_level: 3,
            count: 42,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(
            Meta::decode(&Meta::default().encode()),
            Some(Meta::default())
        );
        assert_eq!(Meta::decode(b"hannoy"), None);
    }
}
