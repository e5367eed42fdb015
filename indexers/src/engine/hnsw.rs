//! The hot-tier engine: an in-memory HNSW graph (hierarchical navigable small world,
//! Malkov & Yashunin) over the shard's vectors, updated incrementally.
//!
//! Owns: the graph (vectors in one contiguous 64-byte-aligned array, one row per graph
//! node; layer-0 neighbour lists in one flat array of fixed `2·M` slots per node; upper
//! layers per node), insertion with the paper's "select neighbours by heuristic", deletion
//! marks, filtered search, and the graph's file. LMDB (the [`Store`]) stays the durable
//! store of the vectors; the graph's structure is saved next to it ([`persist`]:
//! checkpoints, a journal of the builds since, checked against LMDB on open), so opening a
//! shard loads its graph and replays the few builds after the last checkpoint instead of
//! rebuilding; without a usable file it is rebuilt from the store.
//!
//! **Incremental.** [`IndexEngine::build`] folds the shard's pending changes into the
//! graph: an upsert inserts a new node (a replaced item's old node is marked deleted), a
//! delete marks the node deleted. Deleted nodes stay in the graph and are still traversed,
//! but never returned; compaction (rebuilding without them once they are a large share of
//! the graph) is a later concern.
//!
//! **Snapshots.** The graph is memory and the shard's searches read an LMDB snapshot, so
//! each node carries the build *epoch* that added it and the epoch that deleted it; the
//! committed epoch is stored in the shard's `index` database in the build's transaction.
//! A search admits only nodes visible at its snapshot's epoch, so it never returns an item
//! twice (graph plus pending tail) while a build commits, nor misses one.
//!
//! **Locking.** A `parking_lot::RwLock` guards the graph. Searches take it shared, and so
//! does each insertion, for the whole of it: the link lists are atomics (every access
//! `Relaxed`), so a builder rewrites a list while searches and other builders read it (a
//! reader may see a list half rewritten; every slot still names a node of the graph, so
//! a walk stays in bounds and at worst misses a link for that one search), and the
//! writers of one list are serialized by its stripe lock (node id modulo 4,096, one list
//! held at a time). The lock is taken exclusively only to append nodes (a build appends
//! a round's nodes unlinked, 256 per hold, then links them), to mark deletions, and for
//! the few insertions that raise the graph's top level (they move the entry point): a
//! search waits at most for one of those (and the insertions in flight before it, one
//! per builder thread), never for a build.
//!
//! **Parallel builds.** A build (fold, journal replay, rebuild) of at least
//! [`PARALLEL_MIN`] vectors links on [`HnswParams::build_threads`] threads (one per core
//! by default): this thread plus scoped helpers at a lower priority, taking nodes in turn
//! (threads of the build's own, not a shared pool: a build neither queues behind searches
//! nor holds a pool's threads, and its helpers end with each round).
//! Vectors are read from the store first, in rounds of at most 8,192 rows (the read
//! transaction stays on the builder's thread; a round bounds the memory). Each node's
//! neighbours are searched under the shared lock, its own lists set, then it is added to
//! each neighbour's list *as that list is now* (another builder may have changed it):
//! appended when there is room, else the list is chosen again by the heuristic — what
//! hnswlib does with per-node locks. Nodes being linked at the same time do not see each
//! other, and the order they link in varies, so a parallel build's graph varies from run
//! to run (its recall does not: `engine/hnsw/tests.rs`); with one thread, or under
//! [`PARALLEL_MIN`], nodes link in item order and a build of the same vectors gives the
//! same graph. Until its build commits, a node is invisible to searches (its epoch), so
//! a search never returns a node that is still being linked. The journal holds the
//! builds' changes, not their graphs: a replay builds an equivalent graph, not the same.
//!
//! **Speed.** Distances are one [`RawKernel`] call (AVX2+FMA when the CPU has it, picked at run
//! time) over padded rows; cosine stores unit vectors and uses the dot product. A search
//! allocates nothing: each thread keeps a scratch (generation-stamped visited array,
//! preallocated heaps keyed by packed `u64`s). For cosine and dot collections every node
//! also keeps its row as int8 codes (a quarter of the bytes; +25 % memory), and a search
//! walks layer 0 over those (the query as `i16` codes, an integer kernel: AVX-512 VNNI
//! or AVX2, picked at run time), then ranks the `ef` nodes it found by their exact `f32`
//! distances, so scores stay exact. Measured on 62k MiniLM vectors in one process,
//! interleaved: +27 % QPS at `ef` 28 and +44 % at 96, recall unchanged (0.9588 vs 0.9587).
//! Inserts (the graph's construction) stay on `f32`.
//!
//! **Filters.** A candidate bitmap (a tenant's ring range) restricts results during the
//! graph search (everything is traversed, only candidates are admitted); when the
//! candidates are few, they are scanned exactly instead.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use heed::{RoTxn, RwTxn};
use hektor_topics::record::Distance;
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

pub mod candidates;
mod persist;
pub use candidates::BuildCandidates;
pub(crate) use persist::{path as graph_path, FILE as GRAPH_FILE};
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use super::{codes, Changes, EngineKind, IndexEngine};
use crate::error::{Error, Result};
use crate::metric::{self, PreparedQuery, RawKernel};
use crate::store::Store;

/// Tuning of the HNSW engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers (layer 0 keeps up to `2·m`).
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Beam width while searching (at least `k` is used); also settable at run time with
    /// [`crate::Shard::set_search_effort`].
    pub ef_search: usize,
    /// Seed of the level draw (a node's level is a hash of the seed and its item id).
    pub seed: u64,
    /// Threads a big build inserts with (a fold, journal replay or rebuild of at least
    /// [`PARALLEL_MIN`] vectors; smaller ones use the builder's thread alone). 0: the
    /// process's default ([`set_default_build_threads`]; unset, one per core, at most
    /// [`MAX_AUTO_BUILD_THREADS`]). 1: one thread, nodes linked in item order, so a build
    /// of the same vectors gives the same graph.
    #[serde(default)]
    pub build_threads: usize,
    /// Where bulk builds take candidate neighbour lists from (the batch worker: the GPU
    /// when the node has one; see [`candidates`]). Default: the node's setting.
    #[serde(default)]
    pub candidates: BuildCandidates,
}

/// Default `ef_search`: recall@10 ≈ 0.975 on 62k × 384 MiniLM embeddings (0.965 at 32,
/// 0.987 at 64; see `docs/bench/hnsw.md`).
pub const DEFAULT_EF_SEARCH: usize = 40;

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: DEFAULT_EF_SEARCH,
            seed: 0x6865_6b74_6f72,
            build_threads: 0,
            candidates: BuildCandidates::Node,
        }
    }
}

/// A build (fold, replay or rebuild) of fewer vectors than this inserts on the builder's
/// thread alone: spawning helpers costs more than it saves there, and small builds stay
/// deterministic.
pub const PARALLEL_MIN: u64 = 2_048;
/// The most threads `build_threads` = 0 picks, however many cores there are.
pub const MAX_AUTO_BUILD_THREADS: usize = 16;
/// The most threads `build_threads` may name.
const MAX_BUILD_THREADS: usize = 256;

/// The process's default for `build_threads` = 0 (0: one per core); see
/// [`set_default_build_threads`].
static DEFAULT_BUILD_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Set how many threads hot shards whose [`HnswParams::build_threads`] is 0 (the default)
/// build with, from now on; 0 goes back to one per core (at most
/// [`MAX_AUTO_BUILD_THREADS`]). A node sets it from `hektor serve --build-threads`.
pub fn set_default_build_threads(threads: usize) {
    DEFAULT_BUILD_THREADS.store(threads.min(MAX_BUILD_THREADS), Ordering::Relaxed);
}

impl HnswParams {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.m < 2 || self.m > 256 {
            return Err(Error::InvalidConfig(format!(
                "hnsw m must be 2 to 256, not {}",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(Error::InvalidConfig(
                "hnsw ef_construction and ef_search must be at least 1".into(),
            ));
        }
        if self.build_threads > MAX_BUILD_THREADS {
            return Err(Error::InvalidConfig(format!(
                "hnsw build_threads must be at most {MAX_BUILD_THREADS}, not {}",
                self.build_threads
            )));
        }
        Ok(())
    }

    /// The threads a build of `vectors` vectors inserts with (see
    /// [`HnswParams::build_threads`]).
    pub fn threads_for(&self, vectors: u64) -> usize {
        if vectors < PARALLEL_MIN {
            return 1;
        }
        let n = match self.build_threads {
            0 => match DEFAULT_BUILD_THREADS.load(Ordering::Relaxed) {
                0 => std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(MAX_AUTO_BUILD_THREADS),
                n => n,
            },
            n => n,
        };
        n.max(1)
    }
}

/// Key of the committed build epoch in the store's `index` database.
const EPOCH_KEY: &[u8] = b"hnsw.epoch";
/// Key of the graph's lineage (a random `u64` set at its first build; see [`persist`]).
const LINEAGE_KEY: &[u8] = b"hnsw.lineage";
/// Prefix of the journal's keys in the `index` database: then the build epoch, `u32`
/// big-endian; the value is that build's [`Changes`] ([`encode_changes`]).
const JOURNAL_PREFIX: &[u8] = b"hnsw.journal.";
/// No node / no item.
const NONE: u32 = u32::MAX;
/// Deletion epoch of a live node.
const LIVE: u32 = u32::MAX;
/// Highest level a node may get.
const MAX_LEVEL: usize = 15;
/// Floats per aligned block.
const BLOCK: usize = 16;

/// 64 bytes of floats, 64-byte aligned: rows are whole blocks, so every row is aligned.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
struct Block([f32; BLOCK]);

/// Pack a distance and a node into a `u64` whose integer order is distance order, equal
/// distances newest node first. That tie order matters: among exact duplicates (common in
/// real data), the heuristic keeps the first of equals, and preferring the newest keeps a
/// just-inserted copy linked instead of leaving it with no incoming edge.
#[inline(always)]
fn key(d: f32, node: u32) -> u64 {
    (u64::from(super::order_bits(d)) << 32) | u64::from(!node)
}

#[inline(always)]
fn key_dist(k: u64) -> f32 {
    super::from_order_bits((k >> 32) as u32)
}

#[inline(always)]
fn key_node(k: u64) -> u32 {
    !(k as u32)
}

/// Per-thread search state, reused by every search on that thread.
#[derive(Debug, Default)]
struct Scratch {
    visited: Vec<u32>,
    stamp: u32,
    /// Frontier, nearest first.
    frontier: BinaryHeap<Reverse<u64>>,
    /// Best admitted so far, farthest on top.
    best: BinaryHeap<u64>,
    /// The query, padded to whole blocks.
    query: Vec<Block>,
    /// Unvisited neighbours of the node being expanded.
    batch: Vec<u32>,
    /// The query as `i16` codes, for walks over int8 codes.
    probe: Vec<i16>,
}

impl Scratch {
    /// Start a new visit over `n` nodes.
    fn reset(&mut self, n: usize) {
        if self.visited.len() < n {
            self.visited.resize(n.next_power_of_two(), 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
        self.frontier.clear();
        self.best.clear();
    }

    #[inline(always)]
    fn visit(&mut self, node: u32) -> bool {
        // `reset` sized `visited` to at least the graph's node count.
        let slot = &mut self.visited[node as usize];
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

/// The graph itself (everything under the lock).
#[derive(Debug)]
struct Graph {
    /// Floats per row (the dimension rounded up to whole blocks).
    stride: usize,
    blocks_per_row: usize,
    m: usize,
    m0: usize,
    vectors: Vec<Block>,
    /// Per node `stride` int8 codes of its row (`row[i] ≈ code_scale[node] × codes[i]`,
    /// see [`codes`]), walked by searches when `code_walk` is set; empty otherwise.
    codes: Vec<i8>,
    code_scale: Vec<f32>,
    /// `Some((stride, kernel))` when searches walk layer 0 over the int8 codes.
    code_walk: Option<(usize, codes::Kernel)>,
    /// Per node `1 + m0` slots: the count, then the neighbours. Atomics, so that builders
    /// holding the lock shared can change lists while searches read them (module doc,
    /// "Locking"); every access is `Relaxed`.
    links0: Vec<AtomicU32>,
    /// Per node, `level × (1 + m)` slots for layers 1..=level, like `links0`.
    upper: Vec<Box<[AtomicU32]>>,
    level: Vec<u8>,
    item: Vec<u32>,
    added: Vec<u32>,
    deleted: Vec<u32>,
    /// Item id → its newest node (`NONE` when it has none).
    node_of_item: Vec<u32>,
    entry: u32,
    max_level: usize,
    live: u64,
}

/// How a distance is computed from a kernel: `kernel(q, v)`, negated for dot products
/// (so smaller is always closer).
#[derive(Clone, Copy)]
struct Dist {
    kernel: RawKernel,
    negate: bool,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist")
            .field("negate", &self.negate)
            .finish()
    }
}

impl Graph {
    fn new(dimension: usize, m: usize, codes: Option<codes::Kernel>) -> Graph {
        let blocks_per_row = dimension.div_ceil(BLOCK).max(1);
        Graph {
            stride: blocks_per_row * BLOCK,
            blocks_per_row,
            m,
            m0: 2 * m,
            vectors: Vec::new(),
            codes: Vec::new(),
            code_scale: Vec::new(),
            code_walk: codes.map(|k| (dimension.div_ceil(CODE_STEP).max(1) * CODE_STEP, k)),
            links0: Vec::new(),
            upper: Vec::new(),
            level: Vec::new(),
            item: Vec::new(),
            added: Vec::new(),
            deleted: Vec::new(),
            node_of_item: Vec::new(),
            entry: NONE,
            max_level: 0,
            live: 0,
        }
    }

    fn len(&self) -> usize {
        self.item.len()
    }

    #[inline(always)]
    fn row(&self, node: u32) -> *const f32 {
        let start = node as usize * self.blocks_per_row;
        self.vectors[start..start + self.blocks_per_row]
            .as_ptr()
            .cast::<f32>()
    }

    #[inline(always)]
    fn dist_ptr(&self, d: Dist, q: *const f32, node: u32) -> f32 {
        // SAFETY: `q` points at a padded query of `stride` floats (every caller builds it
        // from a `Scratch::query` or a row), and `row` at a row of `stride` floats.
        let x = unsafe { (d.kernel)(q, self.row(node), self.stride) };
        if d.negate {
            -x
        } else {
            x
        }
    }

    /// Node `node`'s int8 codes (only when the graph keeps codes).
    #[inline(always)]
    fn code_ptr(&self, node: u32, stride: usize) -> *const i8 {
        self.codes[node as usize * stride..(node as usize + 1) * stride].as_ptr()
    }

    /// Node `node`'s list on `layer`: its count slot, then all its `max_links` slots.
    #[inline(always)]
    fn slots(&self, node: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let base = node as usize * (1 + self.m0);
            &self.links0[base..base + 1 + self.m0]
        } else {
            let base = (layer - 1) * (1 + self.m);
            &self.upper[node as usize][base..base + 1 + self.m]
        }
    }

    /// Node `node`'s neighbours on `layer`. A list may be rewritten by a builder while it
    /// is read: the reader may then see a mix of the old and new lists, but every slot
    /// always holds the id of a node of the graph (lists only ever name nodes pushed
    /// before them), and a count never exceeds its list's slots, so a walk stays within
    /// the graph.
    #[inline(always)]
    fn neighbours(&self, node: u32, layer: usize) -> impl ExactSizeIterator<Item = u32> + '_ {
        let (slots, base) = if layer == 0 {
            (&self.links0[..], node as usize * (1 + self.m0))
        } else {
            (&self.upper[node as usize][..], (layer - 1) * (1 + self.m))
        };
        let count = slots[base].load(Ordering::Relaxed) as usize;
        slots[base + 1..base + 1 + count]
            .iter()
            .map(|x| x.load(Ordering::Relaxed))
    }

    /// Replace node `node`'s list on `layer` (at most `max_links` kept). Writers of one
    /// list are serialized by its stripe lock ([`HnswEngine::stripe`]) or the exclusive
    /// graph lock.
    fn set_neighbours(&self, node: u32, layer: usize, list: &[u32]) {
        let slots = self.slots(node, layer);
        let n = list.len().min(slots.len() - 1);
        for (slot, &x) in slots[1..=n].iter().zip(list) {
            slot.store(x, Ordering::Relaxed);
        }
        slots[0].store(n as u32, Ordering::Relaxed);
    }

    /// Append `x` to node `node`'s list on `layer`, which has room (same writers' rule as
    /// [`Graph::set_neighbours`]): the slot first, then the count.
    fn push_neighbour(&self, node: u32, layer: usize, x: u32) {
        let slots = self.slots(node, layer);
        let count = slots[0].load(Ordering::Relaxed) as usize;
        slots[1 + count].store(x, Ordering::Relaxed);
        slots[0].store(count as u32 + 1, Ordering::Relaxed);
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// Greedy descent from the entry point through layers `max_level..above`, returning
    /// the closest node found and its distance.
    fn descend(&self, d: Dist, q: *const f32, above: usize) -> (u32, f32) {
        let mut cur = self.entry;
        let mut best = self.dist_ptr(d, q, cur);
        let mut layer = self.max_level;
        while layer > above {
            loop {
                let mut changed = false;
                for n in self.neighbours(cur, layer) {
                    let dn = self.dist_ptr(d, q, n);
                    if dn < best {
                        best = dn;
                        cur = n;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            layer -= 1;
        }
        (cur, best)
    }

    /// Beam search on `layer` from `entries` (keys), leaving up to `ef` admitted nodes in
    /// `s.best`. Every node is traversed; only nodes passing `admit` enter the results.
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        d: Dist,
        q: *const f32,
        entries: &[u64],
        ef: usize,
        layer: usize,
        s: &mut Scratch,
        admit: impl Fn(u32) -> bool,
    ) {
        self.walk_layer(
            |n| self.dist_ptr(d, q, n),
            |n| prefetch(self.row(n)),
            entries,
            ef,
            layer,
            s,
            admit,
        );
    }

    /// The beam search of [`Graph::search_layer`] over any distance to the query
    /// (`dist`), with `fetch` prefetching a node's data before its distance is taken.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn walk_layer(
        &self,
        dist: impl Fn(u32) -> f32,
        fetch: impl Fn(u32),
        entries: &[u64],
        ef: usize,
        layer: usize,
        s: &mut Scratch,
        admit: impl Fn(u32) -> bool,
    ) {
        s.reset(self.len());
        let mut bound = f32::INFINITY;
        for &e in entries {
            let node = key_node(e);
            if !s.visit(node) {
                continue;
            }
            s.frontier.push(Reverse(e));
            if admit(node) {
                s.best.push(e);
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
            let cur = key_node(c);
            s.batch.clear();
            for n in self.neighbours(cur, layer) {
                if s.visit(n) {
                    fetch(n);
                    s.batch.push(n);
                }
            }
            for i in 0..s.batch.len() {
                let n = s.batch[i];
                let dn = dist(n);
                if dn < bound || s.best.len() < ef {
                    let k = key(dn, n);
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
    }

    /// The paper's neighbour selection heuristic: walking `cands` (keys, nearest first),
    /// keep a candidate only when it is closer to the base than to every kept one.
    fn select(&self, d: Dist, cands: &[u64], max: usize, out: &mut Vec<u32>) {
        out.clear();
        if cands.len() < max {
            out.extend(cands.iter().map(|&k| key_node(k)));
            return;
        }
        for &c in cands {
            if out.len() >= max {
                break;
            }
            let node = key_node(c);
            let dc = key_dist(c);
            let row = self.row(node);
            let keep = out.iter().all(|&kept| self.dist_ptr(d, row, kept) >= dc);
            if keep {
                out.push(node);
            }
        }
    }

    /// The level of `item`: `⌊−ln(u)/ln(m)⌋` for a `u` hashed from the seed and the item,
    /// so a rebuild gives every item the level it had.
    fn level_of(&self, seed: u64, item: u32) -> usize {
        let mut z = seed ^ u64::from(item).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // (0, 1]
        let level = (-u.ln() / (self.m as f64).ln()).floor();
        (level as usize).min(MAX_LEVEL)
    }

    fn mark_deleted(&mut self, node: u32, epoch: u32) {
        let slot = &mut self.deleted[node as usize];
        if *slot == LIVE {
            *slot = epoch;
            self.live -= 1;
        }
    }

    fn node_of(&self, item: u32) -> Option<u32> {
        self.node_of_item
            .get(item as usize)
            .copied()
            .filter(|&n| n != NONE)
    }

    /// Append an unlinked node (unreachable until linked) holding `row`.
    fn push_node(&mut self, item: u32, row: &[Block], level: usize, epoch: u32) -> u32 {
        let node = self.item.len() as u32;
        self.vectors.extend_from_slice(row);
        if let Some((stride, _)) = self.code_walk {
            let floats = row.iter().flat_map(|b| b.0.iter().copied()).take(stride);
            let scale = codes::i8_scale(floats.clone());
            let start = self.codes.len();
            self.codes.extend(floats.map(|x| codes::to_i8(x, scale)));
            self.codes.resize(start + stride, 0);
            self.code_scale.push(scale);
        }
        self.links0
            .extend(std::iter::repeat_with(|| AtomicU32::new(0)).take(1 + self.m0));
        self.upper.push(
            std::iter::repeat_with(|| AtomicU32::new(0))
                .take(level * (1 + self.m))
                .collect(),
        );
        self.level.push(level as u8);
        self.item.push(item);
        self.added.push(epoch);
        self.deleted.push(LIVE);
        if self.node_of_item.len() <= item as usize {
            self.node_of_item.resize(item as usize + 1, NONE);
        }
        self.node_of_item[item as usize] = node;
        node
    }
}

#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(64));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Code rows are padded to whole 32-lane kernel steps.
const CODE_STEP: usize = 32;

/// Locks serializing the writers of link lists (a list's lock is its node's id modulo
/// this): builders linking side by side take one at a time, for one list.
const STRIPES: usize = 4_096;
/// A build reads about this many bytes of rows from the store per round (then links them,
/// the store untouched): 256 to [`ROUND_MAX`] rows.
const ROUND_BYTES: usize = 16 << 20;
/// The most rows of one round.
const ROUND_MAX: usize = 8_192;
/// Nodes appended per exclusive hold of the graph's lock.
const PUSH_BATCH: usize = 256;

/// A round of a build: the vectors read from the store, waiting to be inserted.
#[derive(Debug, Default)]
struct Rows {
    items: Vec<u32>,
    /// `blocks_per_row` blocks per item, in `items`' order.
    blocks: Vec<Block>,
    /// Items whose vector is gone from the store (deleted after they were marked pending).
    gone: Vec<u32>,
}

/// One builder thread's buffers for linking a node.
#[derive(Debug, Default)]
struct Plan {
    entries: Vec<u64>,
    cands: Vec<u64>,
    /// Per layer (the index), the node's chosen neighbours.
    own: Vec<Vec<u32>>,
    around: Vec<u64>,
    pruned: Vec<u32>,
    /// Layer-0 candidates from the round's lists (nodes), besides the beam search's.
    extra: Vec<u32>,
}

/// The HNSW engine of one shard.
#[derive(Debug)]
pub struct HnswEngine {
    graph: RwLock<Graph>,
    dist: Dist,
    distance: Distance,
    dimension: usize,
    params: HnswParams,
    ef_search: AtomicUsize,
    /// The shard's directory, where the graph's file lives.
    dir: PathBuf,
    /// Items folded in (inserted or removed) since the graph's file was last written.
    unsaved: AtomicU64,
    /// The link lists' writer locks, by node id modulo [`STRIPES`].
    stripes: Box<[Mutex<()>]>,
}

/// How an engine came to hold its graph when it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Loaded from its file, then the builds after the file's replayed from the journal.
    Loaded { replayed_builds: u32 },
    /// Built from the store's vectors (no file, or an unusable one: the reason).
    Rebuilt { why: String },
}

impl HnswEngine {
    /// An engine holding every indexed vector of `store` (all stored vectors not pending):
    /// loaded from the graph's file when there is a usable one, else rebuilt in memory
    /// now; says which.
    pub(crate) fn open(
        store: &Store,
        distance: Distance,
        params: HnswParams,
    ) -> Result<(Self, Opened)> {
        params.validate()?;
        let dimension = store.dimension();
        let dist = match distance {
            Distance::Euclidean => Dist {
                kernel: metric::raw_l2_kernel(),
                negate: false,
            },
            Distance::Cosine | Distance::Dot => Dist {
                kernel: metric::raw_dot_kernel(),
                negate: true,
            },
        };
        // Searches walk int8 codes where the kernel exists and the distance is a dot
        // product over stored rows (cosine rows are unit vectors); see `codes`.
        let codes = codes::simd_kernel()
            .filter(|_| distance != Distance::Euclidean && dimension <= codes::MAX_DIMENSION);
        let engine = HnswEngine {
            graph: RwLock::new(Graph::new(dimension, params.m, codes)),
            dist,
            distance,
            dimension,
            params,
            ef_search: AtomicUsize::new(params.ef_search),
            dir: store.path().to_path_buf(),
            unsaved: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        };
        let txn = store.env.read_txn().map_err(|e| store.storage(e))?;
        let epoch = read_epoch(store, &txn)?;
        let why = match read_lineage(store, &txn)? {
            None => "no build has been committed yet".to_string(),
            Some(lineage) => match engine.load(store, &txn, epoch, lineage, codes) {
                Ok(replayed_builds) => {
                    // The rows are in memory now; the pages read to fill them are not
                    // needed for serving.
                    store.release_pages();
                    return Ok((engine, Opened::Loaded { replayed_builds }));
                }
                Err(why) => {
                    *engine.graph.write() = Graph::new(dimension, params.m, codes);
                    why
                }
            },
        };
        let mut pending = RoaringBitmap::new();
        for entry in store.pending.iter(&txn).map_err(|e| store.storage(e))? {
            pending.insert(entry.map_err(|e| store.storage(e))?.0);
        }
        let stored = store.vectors.len(&txn).map_err(|e| store.storage(e))?;
        let indexed = stored.saturating_sub(pending.len());
        engine.graph.write().reserve(indexed as usize);
        store.prefetch_file();
        let threads = params.threads_for(indexed);
        let round = engine.round_len();
        let mut rows = Rows::default();
        let mut buf = vec![0.0f32; dimension];
        store.for_each_vector_bytes(&txn, |item, bytes, norm| {
            if !pending.contains(item) {
                metric::decode_f32s(bytes, &mut buf);
                engine.add_row(&mut rows, item, &buf, norm);
                if rows.items.len() >= round {
                    engine.insert_rows(&mut rows, epoch, threads);
                }
            }
        })?;
        engine.insert_rows(&mut rows, epoch, threads);
        // Nothing on disk matches this graph: the next checkpoint should write it.
        engine
            .unsaved
            .store(engine.graph.read().live.max(1), Ordering::Relaxed);
        store.release_pages();
        Ok((engine, Opened::Rebuilt { why }))
    }

    /// Load the graph's file (see [`persist`]) and replay the journal's builds after it;
    /// the rows of live nodes come from the store. `Err`: why the file cannot be used.
    fn load(
        &self,
        store: &Store,
        txn: &RoTxn,
        epoch: u32,
        lineage: u64,
        codes: Option<codes::Kernel>,
    ) -> std::result::Result<u32, String> {
        let expect = persist::Expect {
            dimension: self.dimension,
            m: self.params.m,
            distance: self.distance,
            lineage,
            epoch,
        };
        let empty = Graph::new(self.dimension, self.params.m, codes);
        let loaded = persist::load(&self.dir, empty, &expect)?
            .ok_or_else(|| "the shard has no graph file".to_string())?;
        let saved_at = loaded.epoch;
        // The builds after the file, all of them, from the journal.
        let mut journal = Vec::new();
        for e in saved_at + 1..=epoch {
            let bytes = store
                .index
                .get(txn, &journal_key(e))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("the journal lacks build {e} (the file is at {saved_at})")
                })?;
            journal.push((e, decode_changes(bytes)?));
        }
        let mut g = loaded.graph;
        // Live rows from the store; a live node must find its item's vector there, unless
        // a later build (in the journal) removes or replaces it.
        let mut filled = RoaringBitmap::new();
        let mut buf = vec![0.0f32; self.dimension];
        store.prefetch_file();
        store
            .for_each_vector_bytes(txn, |item, bytes, norm| {
                if let Some(node) = g.node_of(item).filter(|&n| g.deleted[n as usize] == LIVE) {
                    metric::decode_f32s(bytes, &mut buf);
                    let row = self.pad(&buf, norm);
                    let start = node as usize * g.blocks_per_row;
                    g.vectors[start..start + g.blocks_per_row].copy_from_slice(&row);
                    filled.insert(node);
                }
            })
            .map_err(|e| e.to_string())?;
        // Items removed since: by a build in the journal, or after the last build (the
        // shard's `stale` set: deleted or replaced, not folded in yet).
        let mut touched: RoaringBitmap = journal
            .iter()
            .map(|(_, c)| &c.upserted | &c.stale)
            .fold(RoaringBitmap::new(), |a, b| a | b);
        for entry in store.stale.iter(txn).map_err(|e| e.to_string())? {
            touched.insert(entry.map_err(|e| e.to_string())?.0);
        }
        for node in 0..g.len() as u32 {
            if g.deleted[node as usize] == LIVE
                && !filled.contains(node)
                && !touched.contains(g.item[node as usize])
            {
                return Err(format!(
                    "item {} is in the graph but not in the store",
                    g.item[node as usize]
                ));
            }
        }
        g.recompute_codes();
        *self.graph.write() = g;
        let mut replayed = 0;
        for (e, changes) in &journal {
            self.fold(txn, store, changes, *e)
                .map_err(|e| e.to_string())?;
            replayed += 1;
            self.unsaved.fetch_add(
                changes.upserted.len() + changes.stale.len(),
                Ordering::Relaxed,
            );
        }
        Ok(replayed)
    }

    /// Fold `changes` into the graph as build `epoch`, reading vectors in `txn`: in rounds
    /// of [`HnswEngine::round_len`] rows, read here (a read transaction stays on its
    /// thread), then inserted by [`HnswEngine::insert_rows`] on
    /// [`HnswParams::threads_for`] threads.
    fn fold(&self, txn: &RoTxn, store: &Store, changes: &Changes, epoch: u32) -> Result<()> {
        {
            let mut g = self.graph.write();
            for item in changes.stale.iter() {
                if !changes.upserted.contains(item) {
                    if let Some(n) = g.node_of(item) {
                        g.mark_deleted(n, epoch);
                    }
                }
            }
            g.reserve(changes.upserted.len() as usize);
        }
        let threads = self.params.threads_for(changes.upserted.len());
        let round = self.round_len();
        let mut rows = Rows::default();
        let mut buf = vec![0.0f32; self.dimension];
        for item in changes.upserted.iter() {
            match store.vector_into(txn, item, &mut buf)? {
                Some(norm) => self.add_row(&mut rows, item, &buf, norm),
                // Deleted after it was marked pending: make sure the graph drops it.
                None => rows.gone.push(item),
            }
            if rows.items.len() >= round {
                self.insert_rows(&mut rows, epoch, threads);
            }
        }
        self.insert_rows(&mut rows, epoch, threads);
        Ok(())
    }

    /// Rows per round of a build.
    fn round_len(&self) -> usize {
        let row_bytes = self.dimension.div_ceil(BLOCK).max(1) * std::mem::size_of::<Block>();
        (ROUND_BYTES / row_bytes).clamp(PUSH_BATCH, ROUND_MAX)
    }

    /// Add `item`'s vector `v` (stored norm `norm`) to a round, as its row.
    fn add_row(&self, rows: &mut Rows, item: u32, v: &[f32], norm: f32) {
        rows.items.push(item);
        self.pad_into(v, norm, &mut rows.blocks);
    }

    /// Insert a round's rows as build `epoch`'s (each item replacing its node, if any) and
    /// drop its gone items, then empty it. The nodes are appended first, unlinked (so
    /// unreachable) and invisible to searches until `epoch` commits, a batch per exclusive
    /// hold of the lock; then `threads` threads link them: this one, and helpers at a
    /// lower priority ([`crate::background`]) so that a build takes at most one core from
    /// searches at their priority and the others only when they are idle.
    fn insert_rows(&self, rows: &mut Rows, epoch: u32, threads: usize) {
        let bpr = self.dimension.div_ceil(BLOCK).max(1);
        let mut nodes = None::<(u32, u32)>;
        for (b, items) in rows.items.chunks(PUSH_BATCH).enumerate() {
            let mut g = self.graph.write();
            for (i, &item) in items.iter().enumerate() {
                let r = b * PUSH_BATCH + i;
                if let Some(old) = g.node_of(item) {
                    g.mark_deleted(old, epoch);
                }
                let level = g.level_of(self.params.seed, item);
                let node = g.push_node(item, &rows.blocks[r * bpr..(r + 1) * bpr], level, epoch);
                g.live += 1;
                if g.entry == NONE {
                    // The first node: the entry point, with nothing to link to.
                    g.entry = node;
                    g.max_level = level;
                }
                nodes = Some((nodes.map_or(node, |(first, _)| first), node + 1));
            }
        }
        if !rows.gone.is_empty() {
            let mut g = self.graph.write();
            for &item in &rows.gone {
                if let Some(n) = g.node_of(item) {
                    g.mark_deleted(n, epoch);
                }
            }
        }
        let lists = nodes.and_then(|_| self.round_lists(rows));
        rows.items.clear();
        rows.blocks.clear();
        rows.gone.clear();
        let Some((first, end)) = nodes else {
            return;
        };
        let lists = lists.as_ref().map(|l| (l, first));
        // Builders take the nodes in order, one at a time.
        let next = AtomicU32::new(first);
        let work = || {
            let mut plan = Plan::default();
            loop {
                let node = next.fetch_add(1, Ordering::Relaxed);
                if node >= end {
                    break;
                }
                self.insert_node(node, &mut plan, lists);
            }
        };
        let helpers = threads.min((end - first) as usize).saturating_sub(1);
        if helpers == 0 {
            work();
            return;
        }
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                let started = std::thread::Builder::new()
                    .name("hnsw-build".into())
                    .spawn_scoped(scope, || {
                        crate::background::lower_priority();
                        work();
                    });
                if started.is_err() {
                    // Fewer helpers: the ones started (and this thread) do the work.
                    break;
                }
            }
            work();
        });
    }

    /// The round's candidate neighbour lists from the build worker ([`candidates`]), when
    /// the shard's setting asks for them and the round is big enough; `None` otherwise,
    /// and when the worker fails (the build goes on with the beam search alone).
    fn round_lists(&self, rows: &Rows) -> Option<candidates::RoundLists> {
        if rows.items.len() < candidates::MIN_ROUND
            || self.params.candidates.resolve() == BuildCandidates::Off
        {
            return None;
        }
        let stride = self.dimension.div_ceil(BLOCK).max(1) * BLOCK;
        let flat: Vec<f32> = rows.blocks.iter().flat_map(|b| b.0).collect();
        match candidates::round_lists(
            flat,
            stride,
            self.distance,
            candidates::per_row(self.params.m),
            self.params.candidates,
        ) {
            Ok(lists) => lists,
            Err(e) => {
                tracing::warn!(error = %e, "a build round goes on without candidate lists");
                None
            }
        }
    }

    /// Items folded in since the graph's file was last written.
    pub(crate) fn unsaved(&self) -> u64 {
        self.unsaved.load(Ordering::Relaxed)
    }

    /// Write the graph's file as of the build committed in `txn`, then (the caller's next
    /// write transaction) the journal up to it may go: see [`HnswEngine::prune_journal`].
    /// The caller holds the shard's write lock, so no build runs meanwhile.
    pub(crate) fn save(&self, txn: &RoTxn, store: &Store) -> Result<Option<(u32, u64)>> {
        let Some(lineage) = read_lineage(store, txn)? else {
            return Ok(None);
        };
        let epoch = read_epoch(store, txn)?;
        let before = self.unsaved.load(Ordering::Relaxed);
        let g = self.graph.read();
        let saved = persist::save(&g, &self.dir, self.dimension, self.distance, epoch, lineage)
            .map_err(|source| Error::Io {
                path: persist::path(&self.dir),
                source,
            })?;
        drop(g);
        self.unsaved.fetch_sub(before, Ordering::Relaxed);
        Ok(Some((saved.epoch, saved.bytes)))
    }

    /// Delete the journal's entries up to build `epoch` (a durable file covers them).
    pub(crate) fn prune_journal(wtxn: &mut RwTxn, store: &Store, epoch: u32) -> Result<()> {
        let mut keys = Vec::new();
        for entry in store
            .index
            .prefix_iter(wtxn, JOURNAL_PREFIX)
            .map_err(|e| store.storage(e))?
        {
            let (key, _) = entry.map_err(|e| store.storage(e))?;
            let e = key[JOURNAL_PREFIX.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| store.corrupt("a hnsw journal key is not prefix + 4 bytes"))?;
            if e <= epoch {
                keys.push(key.to_vec());
            }
        }
        for key in keys {
            store
                .index
                .delete(wtxn, &key)
                .map_err(|e| store.storage(e))?;
        }
        Ok(())
    }

    /// The row stored for a vector: padded to whole blocks, scaled to unit length for
    /// cosine (`norm` is its stored euclidean norm).
    fn pad(&self, v: &[f32], norm: f32) -> Vec<Block> {
        let mut row = Vec::new();
        self.pad_into(v, norm, &mut row);
        row
    }

    /// [`HnswEngine::pad`], appending the row to `out`.
    fn pad_into(&self, v: &[f32], norm: f32, out: &mut Vec<Block>) {
        let blocks = self.dimension.div_ceil(BLOCK).max(1);
        let start = out.len();
        out.resize(start + blocks, Block([0.0; BLOCK]));
        let row = &mut out[start..];
        let scale = if self.distance == Distance::Cosine && norm > 0.0 {
            1.0 / norm
        } else {
            1.0
        };
        for (i, x) in v.iter().enumerate() {
            row[i / BLOCK].0[i % BLOCK] = x * scale;
        }
    }

    /// The writer lock of node `node`'s lists.
    fn stripe(&self, node: u32) -> &Mutex<()> {
        &self.stripes[node as usize % STRIPES]
    }

    /// Link `node` (appended by [`HnswEngine::insert_rows`], not yet reachable) into the
    /// graph. The graph's lock is held shared for the whole insertion, so several builders
    /// link at once beside searches; only a node above the graph's top level (a few per
    /// graph) links under the exclusive lock, as it moves the entry point.
    /// `lists`: the round's candidate lists and the round's first node, if any.
    fn insert_node(
        &self,
        node: u32,
        plan: &mut Plan,
        lists: Option<(&candidates::RoundLists, u32)>,
    ) {
        plan.extra.clear();
        if let Some((lists, first)) = lists {
            plan.extra
                .extend(lists.of((node - first) as usize).map(|r| first + r));
        }
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let g = self.graph.read();
            if node == g.entry {
                return;
            }
            let level = g.level[node as usize] as usize;
            if level <= g.max_level {
                self.link(&g, node, s, plan);
                return;
            }
            drop(g);
            let mut g = self.graph.write();
            self.link(&g, node, s, plan);
            if level > g.max_level {
                g.entry = node;
                g.max_level = level;
            }
        });
    }

    /// Find `node`'s neighbours on each of its layers (below the graph's top) by beam
    /// searches of `ef_construction` and the selection heuristic, set its lists, then add
    /// it to each chosen neighbour's list as that list is now (another builder may have
    /// changed it since the search): appended when there is room, else the list is chosen
    /// again by the heuristic among its nodes and this one. `g` is the graph under its
    /// lock, shared or exclusive.
    fn link(&self, g: &Graph, node: u32, s: &mut Scratch, plan: &mut Plan) {
        let d = self.dist;
        let q = g.row(node);
        let top = (g.level[node as usize] as usize).min(g.max_level);
        let (ep, ep_d) = g.descend(d, q, top);
        plan.entries.clear();
        plan.entries.push(key(ep_d, ep));
        if plan.own.len() <= top {
            plan.own.resize_with(top + 1, Vec::new);
        }
        let ef = self.params.ef_construction;
        for layer in (0..=top).rev() {
            let not_deleted = |n: u32| n != node && g.deleted[n as usize] == LIVE;
            g.search_layer(d, q, &plan.entries, ef, layer, s, not_deleted);
            if s.best.is_empty() {
                // Everything near is deleted: link to deleted nodes rather than none.
                g.search_layer(d, q, &plan.entries, ef, layer, s, |n| n != node);
            }
            plan.cands.clear();
            plan.cands.extend(s.best.drain());
            if layer == 0 && !plan.extra.is_empty() {
                // The round's exact nearest that come before this node: candidates too
                // (what an unbounded beam would find among them). Later ones are left to
                // link to this one themselves: linking ahead to them gave early nodes only
                // short links, and the graph lost recall and speed (measured).
                for &x in &plan.extra {
                    if x < node && g.deleted[x as usize] == LIVE {
                        plan.cands.push(key(g.dist_ptr(d, q, x), x));
                    }
                }
                plan.cands.sort_unstable();
                plan.cands.dedup();
            } else {
                plan.cands.sort_unstable();
            }
            g.select(d, &plan.cands, self.params.m, &mut plan.own[layer]);
            if !plan.cands.is_empty() {
                std::mem::swap(&mut plan.entries, &mut plan.cands);
            }
        }
        {
            // Under the node's own lock, so that a builder adding a link to it once it is
            // reachable sees these lists.
            let _own = self.stripe(node).lock();
            for (layer, list) in plan.own[..=top].iter().enumerate() {
                g.set_neighbours(node, layer, list);
            }
        }
        // Layer 0 first: a search reaching the node on a layer finds it linked below.
        for layer in 0..=top {
            let max = g.max_links(layer);
            for &n in &plan.own[layer] {
                let _list = self.stripe(n).lock();
                // A node of this round may list this one already: it took this one from
                // its candidate lists when it linked first.
                if !plan.extra.is_empty() && g.neighbours(n, layer).any(|x| x == node) {
                    continue;
                }
                if g.neighbours(n, layer).len() < max {
                    g.push_neighbour(n, layer, node);
                    continue;
                }
                let base = g.row(n);
                plan.around.clear();
                plan.around.extend(
                    g.neighbours(n, layer)
                        .map(|x| key(g.dist_ptr(d, base, x), x)),
                );
                plan.around.push(key(g.dist_ptr(d, base, node), node));
                plan.around.sort_unstable();
                g.select(d, &plan.around, max, &mut plan.pruned);
                g.set_neighbours(n, layer, &plan.pruned);
            }
        }
    }

    fn score(&self, dist: f32) -> f32 {
        match self.distance {
            Distance::Cosine => (-dist).clamp(-1.0, 1.0),
            Distance::Dot => -dist,
            Distance::Euclidean => -dist.max(0.0).sqrt(),
        }
    }
}

impl Graph {
    /// Recompute every node's int8 codes from its row (after a load filled the rows).
    fn recompute_codes(&mut self) {
        let Some((stride, _)) = self.code_walk else {
            return;
        };
        let n = self.len();
        self.codes = vec![0; n * stride];
        self.code_scale = vec![0.0; n];
        for node in 0..n {
            let row = &self.vectors[node * self.blocks_per_row..(node + 1) * self.blocks_per_row];
            let floats = row.iter().flat_map(|b| b.0.iter().copied()).take(stride);
            let scale = codes::i8_scale(floats.clone());
            for (slot, x) in self.codes[node * stride..(node + 1) * stride]
                .iter_mut()
                .zip(floats)
            {
                *slot = codes::to_i8(x, scale);
            }
            self.code_scale[node] = scale;
        }
    }

    fn reserve(&mut self, nodes: usize) {
        self.vectors.reserve(nodes * self.blocks_per_row);
        if let Some((stride, _)) = self.code_walk {
            self.codes.reserve(nodes * stride);
            self.code_scale.reserve(nodes);
        }
        self.links0.reserve(nodes * (1 + self.m0));
        self.upper.reserve(nodes);
        self.level.reserve(nodes);
        self.item.reserve(nodes);
        self.added.reserve(nodes);
        self.deleted.reserve(nodes);
    }
}

fn read_lineage(store: &Store, txn: &RoTxn) -> Result<Option<u64>> {
    match store
        .index
        .get(txn, LINEAGE_KEY)
        .map_err(|e| store.storage(e))?
    {
        None => Ok(None),
        Some(bytes) => {
            let arr: [u8; 8] = bytes
                .try_into()
                .map_err(|_| store.corrupt("hnsw lineage is not 8 bytes"))?;
            Ok(Some(u64::from_be_bytes(arr)))
        }
    }
}

fn journal_key(epoch: u32) -> Vec<u8> {
    let mut key = JOURNAL_PREFIX.to_vec();
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

/// A build's changes as journal bytes: the length of the first bitmap (`u32`
/// little-endian), then `upserted` and `stale` in roaring's portable format.
fn encode_changes(changes: &Changes) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + changes.upserted.serialized_size() + changes.stale.serialized_size(),
    );
    out.extend_from_slice(&(changes.upserted.serialized_size() as u32).to_le_bytes());
    changes
        .upserted
        .serialize_into(&mut out)
        .expect("writing to a Vec");
    changes
        .stale
        .serialize_into(&mut out)
        .expect("writing to a Vec");
    out
}

fn decode_changes(bytes: &[u8]) -> std::result::Result<Changes, String> {
    let bad = |what: &str| format!("a journal entry does not decode: {what}");
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("too short"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return Err(bad("its first bitmap runs past its end"));
    }
    let (a, b) = rest.split_at(len);
    Ok(Changes {
        upserted: RoaringBitmap::deserialize_from(a).map_err(|e| bad(&e.to_string()))?,
        stale: RoaringBitmap::deserialize_from(b).map_err(|e| bad(&e.to_string()))?,
    })
}

fn read_epoch(store: &Store, txn: &RoTxn) -> Result<u32> {
    match store
        .index
        .get(txn, EPOCH_KEY)
        .map_err(|e| store.storage(e))?
    {
        None => Ok(0),
        Some(bytes) => {
            let arr: [u8; 4] = bytes
                .try_into()
                .map_err(|_| store.corrupt("hnsw epoch is not 4 bytes"))?;
            Ok(u32::from_be_bytes(arr))
        }
    }
}

impl IndexEngine for HnswEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Hnsw
    }

    fn needs_build(&self) -> bool {
        true
    }

    fn is_indexed(&self, _txn: &RoTxn, item: u32) -> Result<bool> {
        let g = self.graph.read();
        Ok(g.node_of(item)
            .is_some_and(|n| g.deleted[n as usize] == LIVE))
    }

    fn build(&self, wtxn: &mut RwTxn, store: &Store, changes: &Changes) -> Result<()> {
        let epoch = self.fold_outside(wtxn, store, changes)?;
        self.commit_fold(wtxn, store, changes, epoch)
    }

    fn folds_outside(&self) -> bool {
        true
    }

    fn fold_outside(&self, txn: &RoTxn, store: &Store, changes: &Changes) -> Result<u32> {
        let epoch = read_epoch(store, txn)?
            .checked_add(1)
            .filter(|&e| e != LIVE)
            .ok_or_else(|| store.corrupt("hnsw build epochs exhausted; rebuild the shard"))?;
        self.fold(txn, store, changes, epoch)?;
        Ok(epoch)
    }

    fn commit_fold(
        &self,
        wtxn: &mut RwTxn,
        store: &Store,
        changes: &Changes,
        epoch: u32,
    ) -> Result<()> {
        if read_epoch(store, wtxn)?.checked_add(1) != Some(epoch) {
            return Err(store.corrupt(format!(
                "hnsw build {epoch} does not follow the committed build"
            )));
        }
        let st = |e| store.storage(e);
        store
            .index
            .put(wtxn, EPOCH_KEY, &epoch.to_be_bytes())
            .map_err(st)?;
        if read_lineage(store, wtxn)?.is_none() {
            use std::hash::{BuildHasher, Hasher};
            let lineage = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            store
                .index
                .put(wtxn, LINEAGE_KEY, &lineage.to_be_bytes())
                .map_err(st)?;
        }
        store
            .index
            .put(wtxn, &journal_key(epoch), &encode_changes(changes))
            .map_err(st)?;
        self.unsaved.fetch_add(
            changes.upserted.len() + changes.stale.len(),
            Ordering::Relaxed,
        );
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
        let snap = read_epoch(store, txn)?;
        let v = match self.distance {
            Distance::Cosine => &query.unit,
            _ => &query.raw,
        };
        if v.len() != self.dimension {
            return Err(Error::DimensionMismatch {
                expected: self.dimension,
                got: v.len(),
            });
        }
        let g = self.graph.read();
        if g.entry == NONE {
            return Ok(Vec::new());
        }
        let ef = query
            .effort_or(self.ef_search.load(Ordering::Relaxed))
            .max(k);
        let d = self.dist;
        let check_exclude = !exclude.is_empty();
        // Nodes are appended in epoch order and `live` counts the undeleted ones, so when
        // the newest node is in the snapshot and none is deleted, every node is visible
        // (the common case: two random reads per admitted node saved).
        let all_visible = g.added.last().is_none_or(|&a| a <= snap) && g.live == g.len() as u64;
        let visible = |n: u32| {
            let i = n as usize;
            all_visible || (g.added[i] <= snap && g.deleted[i] > snap)
        };
        let found: Vec<(u32, f32)> = SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.query.clear();
            s.query.resize(g.blocks_per_row, Block([0.0; BLOCK]));
            for (i, x) in v.iter().enumerate() {
                s.query[i / BLOCK].0[i % BLOCK] = *x;
            }
            let q = s.query.as_ptr().cast::<f32>();
            let mut out = Vec::with_capacity(k);
            // A small candidate set is cheaper to scan than to find in the graph.
            if let Some(c) = candidates {
                let n = g.len() as u64;
                if c.len().saturating_mul(c.len()) <= 32 * ef as u64 * n {
                    let mut top = super::TopK::new(k);
                    for item in c.iter() {
                        if check_exclude && exclude.contains(item) {
                            continue;
                        }
                        if let Some(node) = g.node_of(item).filter(|&n| visible(n)) {
                            top.push(node, -g.dist_ptr(d, q, node));
                        }
                    }
                    for (node, neg) in top.into_sorted() {
                        out.push((g.item[node as usize], self.score(-neg)));
                    }
                    return out;
                }
            }
            let (ep, ep_d) = g.descend(d, q, 0);
            let admit = |n: u32| {
                if !visible(n) {
                    return false;
                }
                let item = g.item[n as usize];
                !(candidates.is_some_and(|c| !c.contains(item))
                    || (check_exclude && exclude.contains(item)))
            };
            let mut best: Vec<u64> = match g.code_walk {
                Some((stride, kernel)) => {
                    // Walk layer 0 over the int8 codes (a quarter of the bytes per hop),
                    // then rank the `ef` found by their exact f32 distances.
                    let qs = codes::quantize_i16(v, &mut s.probe);
                    s.probe.resize(stride, 0);
                    let probe = s.probe.as_ptr();
                    let approx = |n: u32| {
                        // SAFETY: the probe and every node's codes are `stride` long.
                        let dot = unsafe { kernel(probe, g.code_ptr(n, stride), stride) };
                        -(qs * g.code_scale[n as usize] * dot as f32)
                    };
                    let fetch = |n: u32| prefetch(g.code_ptr(n, stride).cast::<f32>());
                    g.walk_layer(approx, fetch, &[key(approx(ep), ep)], ef, 0, s, admit);
                    s.best
                        .drain()
                        .map(|kk| {
                            let n = key_node(kk);
                            key(g.dist_ptr(d, q, n), n)
                        })
                        .collect()
                }
                None => {
                    g.search_layer(d, q, &[key(ep_d, ep)], ef, 0, s, admit);
                    s.best.drain().collect()
                }
            };
            best.sort_unstable();
            for kk in best.into_iter().take(k) {
                out.push((g.item[key_node(kk) as usize], self.score(key_dist(kk))));
            }
            out
        });
        Ok(found)
    }

    fn indexed_len(&self, _txn: &RoTxn, _store: &Store) -> Result<u64> {
        Ok(self.graph.read().live)
    }

    fn set_search_effort(&self, effort: usize) -> bool {
        self.ef_search.store(effort.max(1), Ordering::Relaxed);
        true
    }

    fn search_effort(&self) -> Option<usize> {
        Some(self.ef_search.load(Ordering::Relaxed))
    }

    fn unsaved(&self) -> u64 {
        HnswEngine::unsaved(self)
    }

    fn save(&self, txn: &RoTxn, store: &Store) -> Result<Option<(u32, u64)>> {
        HnswEngine::save(self, txn, store)
    }

    fn after_save(&self, wtxn: &mut RwTxn, store: &Store, epoch: u32) -> Result<()> {
        HnswEngine::prune_journal(wtxn, store, epoch)
    }
}

/// Remove the graph's file of the shard in `store` (its engine is being cleared).
pub(crate) fn remove_file(store: &Store) -> Result<()> {
    persist::remove(store.path()).map_err(|source| Error::Io {
        path: persist::path(store.path()),
        source,
    })
}
