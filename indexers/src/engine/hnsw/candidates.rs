//! Candidate neighbour lists for a bulk HNSW build, computed by the batch worker (seed
//! §2.3: index builds give their batch distance work to the GPU when a node has one).
//!
//! Owns: the setting ([`BuildCandidates`], per shard, and the process's default set by
//! `hektor serve --build-candidates`), the process's build worker (one reused
//! [`BatchSearcher`] per backend: on the GPU its context, cuBLAS handle and kernel are made
//! once and each round only uploads its rows), and the counters of what it did.
//!
//! **What the lists are.** A build links a round of up to 8,192 new nodes; each node finds
//! its neighbours by a beam search of the graph, but nodes of the same round that are not
//! linked yet are unreachable, so a node never finds the others of its round that way
//! (in a bulk build from empty, that is most of its true neighbours). The worker computes,
//! for every row of the round, its exact top [`per_row`] rows *within the round* (one
//! batch top-k: the round is both the base and the queries); linking adds those that come
//! before the node in the round (what an unbounded beam would find among them) to the
//! layer-0 candidates the beam search found, before the selection heuristic. Distances
//! are computed again by the graph's own kernel, so the worker only decides *which* nodes
//! are candidates: the CPU and GPU backends give the same lists (up to ties between equal
//! scores), and the graph's keys stay exact.
//!
//! **Cost.** One round is `n² · d` multiply-adds: nothing on a GPU, about as much CPU as
//! the round's beam searches on one core. So the CPU backend is off unless asked for
//! (`cpu`: for tests and for checking the GPU's lists); `auto` at the node uses the GPU
//! when one is there and nothing otherwise. A GPU that fails mid-build is not retried by
//! that build: the round is computed on the CPU (the same lists), counted in
//! [`CandidateStats::gpu_failures`], and later rounds try the GPU again.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use hektor_topics::record::Distance;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::batch::BatchSearcher;
use crate::error::{Error, Result};

/// Where a shard's bulk builds take their candidate neighbour lists from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildCandidates {
    /// The node's setting ([`set_build_candidates`]; off unless set).
    #[default]
    Node,
    /// None: the beam search alone (hnswlib's build).
    Off,
    /// Computed on the CPU, on the builder's thread.
    Cpu,
    /// Computed on the GPU (feature `gpu` and a device), else as `cpu`.
    Gpu,
}

impl BuildCandidates {
    /// Parse `off`, `cpu`, `gpu` or `node`.
    pub fn parse(s: &str) -> Result<BuildCandidates> {
        match s {
            "node" => Ok(BuildCandidates::Node),
            "off" => Ok(BuildCandidates::Off),
            "cpu" => Ok(BuildCandidates::Cpu),
            "gpu" => Ok(BuildCandidates::Gpu),
            other => Err(Error::InvalidConfig(format!(
                "build candidates must be off, cpu, gpu or node, not `{other}`"
            ))),
        }
    }

    /// The setting a build follows: `Node` resolved to the process's default.
    pub fn resolve(self) -> BuildCandidates {
        match self {
            BuildCandidates::Node => match NODE_DEFAULT.load(Ordering::Relaxed) {
                1 => BuildCandidates::Cpu,
                2 => BuildCandidates::Gpu,
                _ => BuildCandidates::Off,
            },
            other => other,
        }
    }
}

/// The process's default for shards whose setting is [`BuildCandidates::Node`]: 0 off,
/// 1 cpu, 2 gpu.
static NODE_DEFAULT: AtomicU8 = AtomicU8::new(0);

/// Set where shards following the node's setting take their build candidates from, from
/// now on (`Node` is taken as `Off`). A node sets it from `hektor serve
/// --build-candidates`.
pub fn set_build_candidates(mode: BuildCandidates) {
    let v = match mode {
        BuildCandidates::Cpu => 1,
        BuildCandidates::Gpu => 2,
        BuildCandidates::Off | BuildCandidates::Node => 0,
    };
    NODE_DEFAULT.store(v, Ordering::Relaxed);
}

/// Rounds smaller than this take no lists: the beam search finds a few hundred nodes'
/// neighbours cheaply, and the seed's rule keeps batches under 100 queries off the GPU.
pub const MIN_ROUND: usize = 256;

/// Candidates kept per row for a graph of `m` links per node: `2·m` (layer 0's list
/// length), at most 31, so that with the row itself a query asks for at most 32, the
/// largest top k the GPU selects on the device.
pub fn per_row(m: usize) -> usize {
    (2 * m).clamp(1, 31)
}

/// What the build worker has done since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CandidateStats {
    /// Rows whose lists were computed on the CPU.
    pub cpu_rows: u64,
    /// Rows whose lists were computed on the GPU.
    pub gpu_rows: u64,
    /// Rounds whose GPU work failed and were computed on the CPU instead.
    pub gpu_failures: u64,
    /// Seconds spent computing lists (on either device, the waits for the worker
    /// included), so that a bench can tell the lists' cost from the linking's.
    pub seconds: f64,
}

static CPU_ROWS: AtomicU64 = AtomicU64::new(0);
static GPU_ROWS: AtomicU64 = AtomicU64::new(0);
static GPU_FAILURES: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);

/// The build worker's counters (for `/metrics`).
pub fn candidate_stats() -> CandidateStats {
    CandidateStats {
        cpu_rows: CPU_ROWS.load(Ordering::Relaxed),
        gpu_rows: GPU_ROWS.load(Ordering::Relaxed),
        gpu_failures: GPU_FAILURES.load(Ordering::Relaxed),
        seconds: NANOS.load(Ordering::Relaxed) as f64 / 1e9,
    }
}

/// The process's GPU build worker, made by the first round that asks for it and reused
/// (its base replaced per round); `Err` once making it failed, with the reason, so later
/// builds do not try again.
#[cfg(feature = "gpu")]
static GPU_WORKER: Mutex<Option<std::result::Result<BatchSearcher, String>>> = Mutex::new(None);

/// Serializes CPU rounds of different shards' builds, so that at most one core does this
/// work at a time.
static CPU_WORKER: Mutex<()> = Mutex::new(());

/// A round's lists: row `r`'s candidates are `rows[r·per..(r+1)·per]`, nearest first,
/// [`NO_ROW`] where the round has fewer rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundLists {
    pub per: usize,
    pub rows: Vec<u32>,
    /// `"cpu"` or `"gpu"`.
    pub backend: &'static str,
}

/// No candidate in this slot.
pub const NO_ROW: u32 = u32::MAX;

impl RoundLists {
    /// Row `r`'s candidates (round rows), nearest first.
    pub fn of(&self, r: usize) -> impl Iterator<Item = u32> + '_ {
        self.rows[r * self.per..(r + 1) * self.per]
            .iter()
            .copied()
            .take_while(|&x| x != NO_ROW)
    }
}

/// For each of the `n = rows.len() / dim` rows, its `per` nearest other rows of `rows`
/// by `distance`, computed where `mode` (resolved) says: `Off` gives `None`, `Gpu` tries
/// the GPU worker first. A base the batch searcher refuses (a non-finite value) gives an
/// error, and the build goes on without lists.
pub fn round_lists(
    rows: Vec<f32>,
    dim: usize,
    distance: Distance,
    per: usize,
    mode: BuildCandidates,
) -> Result<Option<RoundLists>> {
    let n = rows.len().checked_div(dim).unwrap_or(0);
    if n < 2 || per == 0 {
        return Ok(None);
    }
    let k = (per + 1).min(n);
    let started = std::time::Instant::now();
    let found = match mode.resolve() {
        BuildCandidates::Off | BuildCandidates::Node => return Ok(None),
        BuildCandidates::Cpu => (cpu_round(rows, dim, distance, k)?, "cpu"),
        BuildCandidates::Gpu => match gpu_round(&rows, dim, distance, k) {
            Ok(found) => (found, "gpu"),
            Err(why) => {
                GPU_FAILURES.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%why, "a build round's candidate lists ran on the CPU instead of the GPU");
                (cpu_round(rows, dim, distance, k)?, "cpu")
            }
        },
    };
    let (found, backend) = found;
    NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let counter = if backend == "gpu" {
        &GPU_ROWS
    } else {
        &CPU_ROWS
    };
    counter.fetch_add(n as u64, Ordering::Relaxed);
    let mut lists = vec![NO_ROW; n * per];
    for (r, hits) in found.iter().enumerate() {
        let slots = &mut lists[r * per..(r + 1) * per];
        let others = hits
            .iter()
            .map(|&(row, _)| row)
            .filter(|&row| row as usize != r);
        for (slot, row) in slots.iter_mut().zip(others) {
            *slot = row;
        }
    }
    Ok(Some(RoundLists {
        per,
        rows: lists,
        backend,
    }))
}

/// The exact top `k` of every row against all rows, on one CPU thread (the builder's).
fn cpu_round(
    rows: Vec<f32>,
    dim: usize,
    distance: Distance,
    k: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let _one_at_a_time = CPU_WORKER.lock();
    let queries = rows.clone();
    let searcher = BatchSearcher::cpu(rows, dim, distance)?.with_threads(1);
    searcher.search(&queries, k)
}

/// The exact top `k` of every row against all rows, on the GPU worker.
#[cfg(feature = "gpu")]
fn gpu_round(
    rows: &[f32],
    dim: usize,
    distance: Distance,
    k: usize,
) -> std::result::Result<Vec<Vec<(u32, f32)>>, String> {
    let mut worker = GPU_WORKER.lock();
    let fresh = match worker.as_mut() {
        Some(Ok(searcher)) if searcher.dim() == dim && searcher.distance() == distance => {
            searcher
                .replace_base(rows.to_vec())
                .map_err(|e| e.to_string())?;
            false
        }
        Some(Err(why)) => return Err(why.clone()),
        _ => true,
    };
    if fresh {
        let made = BatchSearcher::gpu(rows, dim, distance)
            .map(|s| s.with_threads(1))
            .map_err(|e| e.to_string());
        // A searcher of another dimension or distance is replaced; a device that could
        // not be opened is remembered.
        *worker = Some(made);
    }
    match worker.as_ref() {
        Some(Ok(searcher)) => searcher.search(rows, k).map_err(|e| e.to_string()),
        Some(Err(why)) => Err(why.clone()),
        None => Err("no GPU worker".into()),
    }
}

#[cfg(not(feature = "gpu"))]
fn gpu_round(
    _rows: &[f32],
    _dim: usize,
    _distance: Distance,
    _k: usize,
) -> std::result::Result<Vec<Vec<(u32, f32)>>, String> {
    Err("this build has no `gpu` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n * dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    fn brute(rows: &[f32], dim: usize, r: usize, per: usize) -> Vec<u32> {
        let q = &rows[r * dim..(r + 1) * dim];
        let mut all: Vec<(f32, u32)> = rows
            .chunks_exact(dim)
            .enumerate()
            .filter(|&(i, _)| i != r)
            .map(|(i, b)| (crate::metric::l2_squared(q, b), i as u32))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(per).map(|(_, i)| i).collect()
    }

    #[test]
    fn lists_are_each_rows_exact_nearest_others() {
        let (n, dim, per) = (300, 12, 8);
        let data = rows(n, dim, 7);
        let lists = round_lists(
            data.clone(),
            dim,
            Distance::Euclidean,
            per,
            BuildCandidates::Cpu,
        )
        .unwrap()
        .unwrap();
        assert_eq!(lists.backend, "cpu");
        for r in 0..n {
            let got: Vec<u32> = lists.of(r).collect();
            assert!(!got.contains(&(r as u32)), "row {r} lists itself");
            assert_eq!(got, brute(&data, dim, r, per), "row {r}");
        }
    }

    #[test]
    fn off_gives_none_and_small_rounds_fill_what_they_have() {
        let data = rows(4, 3, 1);
        assert!(
            round_lists(data.clone(), 3, Distance::Dot, 8, BuildCandidates::Off)
                .unwrap()
                .is_none()
        );
        let lists = round_lists(data, 3, Distance::Dot, 8, BuildCandidates::Cpu)
            .unwrap()
            .unwrap();
        for r in 0..4 {
            assert_eq!(lists.of(r).count(), 3, "row {r}: every other row, no more");
        }
    }

    #[test]
    fn gpu_without_a_device_computes_the_same_lists_on_the_cpu() {
        let (n, dim, per) = (200, 16, 6);
        let data = rows(n, dim, 3);
        let before = candidate_stats();
        let cpu = round_lists(
            data.clone(),
            dim,
            Distance::Cosine,
            per,
            BuildCandidates::Cpu,
        )
        .unwrap()
        .unwrap();
        let gpu = round_lists(data, dim, Distance::Cosine, per, BuildCandidates::Gpu)
            .unwrap()
            .unwrap();
        assert_eq!(cpu.rows, gpu.rows);
        let after = candidate_stats();
        if crate::batch::gpu_available() {
            assert_eq!(gpu.backend, "gpu");
        } else {
            assert_eq!(gpu.backend, "cpu");
            assert!(after.gpu_failures > before.gpu_failures);
        }
    }

    #[test]
    fn settings_parse_and_resolve() {
        assert_eq!(BuildCandidates::parse("gpu").unwrap(), BuildCandidates::Gpu);
        assert!(BuildCandidates::parse("fast").is_err());
        assert_eq!(BuildCandidates::Cpu.resolve(), BuildCandidates::Cpu);
        assert_eq!(per_row(16), 31);
        assert_eq!(per_row(4), 8);
    }
}
