//! `hektor-bench dataset generate` (also `hektor dataset generate`, which runs it): a
//! deterministic data set of any size shaped like a real one (by default the shared MiniLM
//! set, `hektor_indexers::dataset::data_dir()`, else the sample shipped in the repo), written in the TEXMEX layout that
//! `hektor_indexers::dataset::Dataset::load`, `hektor-bench search --data` and
//! `scripts/peers.py` read, with exact ground truth computed by hektor's own batch search.
//!
//! Owns the recipe, its random numbers and the files it writes; it indexes nothing and
//! serves nothing (`hektor-bench scale` uses it).
//!
//! **Recipe (v2).** Let `R` be the real base (rows unit-length; the real set's rows were
//! shuffled before its split, so its first rows are a random sample of it).
//! 1. *Anchors*: the first `min(|R|, N)` real rows.
//! 2. *Neighbours*: for each anchor `a`, its `--neighbours` (8) nearest real rows by cosine,
//!    leaving out `a` itself and near-copies of it (cosine > 0.9999; the real set repeats
//!    descriptions shared by `-dev`/`-doc` siblings), found exactly with
//!    [`BatchSearcher::cpu`] (the real base against itself). An anchor with fewer
//!    distinct neighbours takes near-copies to fill up. This is the slowest step (62k ×
//!    62k × 384 for the shared set: minutes on 2 busy cores), so `--neighbour-cache FILE`
//!    keeps the lists (`hektor-bench scale` keeps them beside its generated sets).
//! 3. *Vector i*: from its own random stream (rand's `StdRng` keyed by `seed` and `i`,
//!    [`crate::seeded`], so the set does not depend on threads or chunking): a uniform
//!    anchor `a`, a uniform one `b` of `a`'s neighbours, `t ~ U[0, --t-max)` (0.5), and
//!    `v = normalize(a + t·(b − a) + σ·g)` with `g` standard Gaussian per dimension
//!    (rand_distr's `StandardNormal`) and
//!    `σ = --noise · ‖b − a‖ / √d` (noise 0.25, so the noise vector's length is about a
//!    quarter of the distance to that neighbour), at least `0.01 / √d`.
//!
//!    Why: points between real neighbours stay on the real data's manifold (the
//!    directions embeddings actually vary in), and the noise, scaled to the local
//!    neighbour distance, keeps dense regions dense and sparse ones sparse instead of
//!    adding one global radius; isotropic noise in 384 dimensions also raises the
//!    intrinsic dimension (harder for a graph index), so it is kept small relative to the
//!    gap. The cost of synthesis is honesty about difficulty: `generate.json` records the
//!    mean true top-1/10/100 cosines of the generated set next to the source's, and
//!    `hektor-bench scale --peers` runs hnswlib on both.
//! 4. *Queries*: the real query set's first `--queries` (1000) vectors, as they are: real
//!    queries against a synthetic-but-realistic base.
//! 5. *Ground truth*: exact top-100 by cosine, with [`BatchSearcher::cpu`] over each chunk
//!    of the base as it is generated, merged across chunks (ties by the smaller row, as
//!    the batch searcher breaks them). The base is written as it is made: at most one
//!    chunk (50,000 rows) is in memory.
//!
//! Files: `base.fvecs`, `query.fvecs`, `groundtruth.ivecs`, `groundtruth.scores.fvecs`,
//! `README.md` and, last, `generate.json` (the recipe, parameters and statistics: a
//! directory without it is incomplete). No `base.ids`: the loader then numbers rows
//! `0..N`, which are the ids.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use hektor_indexers::batch::BatchSearcher;
use hektor_indexers::dataset::{self, read_fvecs};
use hektor_topics::record::Distance;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::seeded::{self, Purpose};

/// Version of the recipe, recorded in `generate.json` and part of `bench scale`'s cache
/// names; bump it when the output changes. v2: rand's streams instead of SplitMix64.
pub const RECIPE_VERSION: u32 = 2;
/// Version of the neighbour lists' cache; bump it when the lists change (v2 of the recipe
/// left them as v1 made them).
const NEIGHBOURS_VERSION: u32 = 1;
/// Ground-truth neighbours per query.
const DEPTH: usize = dataset::GROUND_TRUTH_DEPTH;
/// Base rows generated (and searched for the ground truth) at a time.
const CHUNK: usize = 50_000;
/// A neighbour at least this similar to its anchor is a near-copy.
const NEAR_COPY: f32 = 0.9999;
/// Extra real neighbours asked for, to skip near-copies.
const NEIGHBOUR_SLACK: usize = 24;

#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Generate N vectors shaped like a real set (points between real neighbours plus
    /// noise), with the real queries and exact ground truth.
    Generate(GenerateArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Base vectors to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub vectors: usize,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub recipe: Recipe,
    /// A file caching the source's neighbour lists (the slowest step), read when it
    /// matches the source and --neighbours, written otherwise.
    #[arg(long)]
    pub neighbour_cache: Option<PathBuf>,
}

/// The parameters of the recipe (also flags of `hektor-bench scale`).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    /// The real set to imitate (base.fvecs, query.fvecs); default $HEKTOR_DATA or
    /// ../shared/data/debian-minilm-384, else the sample shipped in the repo.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Queries to take from the real set (its first ones).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Real neighbours per anchor to interpolate towards.
    #[arg(long, default_value_t = 8)]
    pub neighbours: usize,
    /// Interpolation factors t are drawn from [0, t-max).
    #[arg(long, default_value_t = 0.5)]
    pub t_max: f32,
    /// Noise length as a fraction of the anchor–neighbour distance.
    #[arg(long, default_value_t = 0.25)]
    pub noise: f32,
}

/// What `generate.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generated {
    pub recipe_version: u32,
    pub vectors: usize,
    pub dim: usize,
    pub queries: usize,
    pub depth: usize,
    /// The real set, as an absolute path.
    pub source: PathBuf,
    pub source_vectors: usize,
    pub anchors: usize,
    pub seed: u64,
    pub neighbours: usize,
    pub t_max: f32,
    pub noise: f32,
    /// Mean cosine of a chosen neighbour (near-copies included) to its anchor.
    pub mean_neighbour_cosine: f64,
    /// Mean true cosine of each query's 1st, 10th and 100th neighbour here...
    pub gt_mean_top1: f64,
    pub gt_mean_top10: f64,
    pub gt_mean_top100: f64,
    /// ...and in the source (from its ground truth, same queries), when it has one.
    pub source_gt_mean_top1: Option<f64>,
    pub source_gt_mean_top10: Option<f64>,
    pub source_gt_mean_top100: Option<f64>,
    pub seconds: f64,
}

pub async fn run(command: DatasetCommand) -> anyhow::Result<()> {
    match command {
        DatasetCommand::Generate(args) => {
            let generated = tokio::task::spawn_blocking(move || {
                generate(
                    args.vectors,
                    &args.out,
                    &args.recipe,
                    args.neighbour_cache.as_deref(),
                )
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&generated)?);
            Ok(())
        }
    }
}

/// The real set used when none is named: `data_dir()` when it holds a base, else the
/// sample shipped in the repo.
pub fn default_source() -> anyhow::Result<PathBuf> {
    let shared = dataset::data_dir();
    if shared.join("base.fvecs").exists() {
        return Ok(shared);
    }
    let sample = "samples/debian-minilm-384-sample";
    [
        PathBuf::from(sample),
        crate::nodes::in_source_tree(sample),
    ]
    .into_iter()
    .find(|p| p.join("base.fvecs").exists())
    .context("no source set: pass --source DIR, or set HEKTOR_DATA (the sample shipped in the repo was not found either)")
}

/// The source the recipe names, made absolute.
pub fn source_of(recipe: &Recipe) -> anyhow::Result<PathBuf> {
    let source = match &recipe.source {
        Some(s) => s.clone(),
        None => default_source()?,
    };
    std::fs::canonicalize(&source).with_context(|| format!("finding {}", source.display()))
}

/// `dir`'s `generate.json` when it is complete and made by this recipe for `vectors`.
pub fn existing(dir: &Path, vectors: usize, recipe: &Recipe) -> Option<Generated> {
    let text = std::fs::read_to_string(dir.join("generate.json")).ok()?;
    let g: Generated = serde_json::from_str(&text).ok()?;
    let source = source_of(recipe).ok()?;
    (g.recipe_version == RECIPE_VERSION
        && g.vectors == vectors
        && g.source == source
        && g.seed == recipe.seed
        && g.neighbours == recipe.neighbours
        && g.t_max == recipe.t_max
        && g.noise == recipe.noise
        && g.queries
            == recipe
                .queries
                .min(dataset::fvecs_shape(&source.join("query.fvecs")).ok()?.0))
    .then_some(g)
}

fn normalize(v: &mut [f32]) {
    let n = hektor_indexers::metric::norm(v);
    if n > 0.0 {
        for x in v {
            *x /= n;
        }
    }
}

/// Per anchor (the first `anchors` real rows), its chosen real neighbours.
fn neighbours_of(
    real: &[f32],
    dim: usize,
    anchors: usize,
    wanted: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let rows = real.len() / dim;
    let searcher = BatchSearcher::cpu(real.to_vec(), dim, Distance::Cosine)?;
    let k = (wanted + 1 + NEIGHBOUR_SLACK).min(rows);
    let started = Instant::now();
    let mut out = Vec::with_capacity(anchors);
    let step = 4096;
    for start in (0..anchors).step_by(step) {
        let end = (start + step).min(anchors);
        let found = searcher.search(&real[start * dim..end * dim], k)?;
        for (offset, hits) in found.into_iter().enumerate() {
            let a = (start + offset) as u32;
            let mut chosen: Vec<u32> = Vec::with_capacity(wanted);
            let mut copies: Vec<u32> = Vec::new();
            for (row, score) in hits {
                if row == a {
                    continue;
                }
                if score > NEAR_COPY {
                    copies.push(row);
                } else if chosen.len() < wanted {
                    chosen.push(row);
                }
            }
            for row in copies {
                if chosen.len() >= wanted {
                    break;
                }
                chosen.push(row);
            }
            if chosen.is_empty() {
                chosen.push(a);
            }
            out.push(chosen);
        }
        eprintln!(
            "datagen: real neighbours of {end}/{anchors} anchors ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(out)
}

/// The neighbour lists of a source, cached in a file: they depend only on the source and
/// `--neighbours`, and cost the most of a generation (the real base against itself).
#[derive(Serialize, Deserialize)]
struct NeighbourCache {
    /// [`NEIGHBOURS_VERSION`] (named so since the lists were the recipe's v1).
    recipe_version: u32,
    source: PathBuf,
    source_rows: usize,
    neighbours: usize,
    lists: Vec<Vec<u32>>,
}

/// Neighbour lists of the first `anchors` rows: from `cache` when it holds them for this
/// source, else computed (and written to `cache`).
fn neighbours_cached(
    real: &[f32],
    dim: usize,
    anchors: usize,
    recipe: &Recipe,
    source: &Path,
    cache: Option<&Path>,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let rows = real.len() / dim;
    if let Some(path) = cache {
        let hit = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<NeighbourCache>(&b).ok())
            .filter(|c| {
                c.recipe_version == NEIGHBOURS_VERSION
                    && c.source == source
                    && c.source_rows == rows
                    && c.neighbours == recipe.neighbours
                    && c.lists.len() >= anchors
            });
        if let Some(mut c) = hit {
            eprintln!("datagen: real neighbours from {}", path.display());
            c.lists.truncate(anchors);
            return Ok(c.lists);
        }
    }
    let lists = neighbours_of(real, dim, anchors, recipe.neighbours)?;
    if let Some(path) = cache {
        let c = NeighbourCache {
            recipe_version: NEIGHBOURS_VERSION,
            source: source.to_path_buf(),
            source_rows: rows,
            neighbours: recipe.neighbours,
            lists,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&c)?)?;
        std::fs::rename(&tmp, path)?;
        return Ok(c.lists);
    }
    Ok(lists)
}

/// Generate rows `range` into `out` (row-major).
fn make_rows(
    real: &[f32],
    dim: usize,
    neighbours: &[Vec<u32>],
    recipe: &Recipe,
    range: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let floor = 0.01 / (dim as f32).sqrt();
    let mut diff = vec![0.0f32; dim];
    for (i, v) in range.zip(out.chunks_exact_mut(dim)) {
        let mut rng = seeded::stream(recipe.seed, Purpose::Vector, i as u64);
        let a = rng.random_range(0..neighbours.len());
        let nb = &neighbours[a];
        let b = nb[rng.random_range(0..nb.len())] as usize;
        let t = (rng.random::<f64>() * f64::from(recipe.t_max)) as f32;
        let ra = &real[a * dim..(a + 1) * dim];
        let rb = &real[b * dim..(b + 1) * dim];
        for ((d, x), y) in diff.iter_mut().zip(ra).zip(rb) {
            *d = y - x;
        }
        let gap = hektor_indexers::metric::norm(&diff);
        let sigma = (recipe.noise * gap / (dim as f32).sqrt()).max(floor);
        for (((x, a), d), g) in v
            .iter_mut()
            .zip(ra)
            .zip(&diff)
            .zip((&mut rng).sample_iter::<f32, _>(StandardNormal))
        {
            *x = a + t * d + sigma * g;
        }
        normalize(v);
    }
}

/// Merge `add` (sorted best first, rows already global) into `top` (same order), keeping
/// `depth`: by score descending, then row ascending.
fn merge_top(top: &mut Vec<(u32, f32)>, add: Vec<(u32, f32)>, depth: usize) {
    let mut merged = Vec::with_capacity((top.len() + add.len()).min(depth));
    let (mut i, mut j) = (0, 0);
    while merged.len() < depth && (i < top.len() || j < add.len()) {
        let take_top = match (top.get(i), add.get(j)) {
            (Some(x), Some(y)) => x.1 > y.1 || (x.1 == y.1 && x.0 < y.0),
            (Some(_), None) => true,
            _ => false,
        };
        if take_top {
            merged.push(top[i]);
            i += 1;
        } else {
            merged.push(add[j]);
            j += 1;
        }
    }
    *top = merged;
}

fn write_rows<T: Copy>(
    path: &Path,
    rows: impl Iterator<Item = Vec<T>>,
    bytes_of: impl Fn(T) -> [u8; 4],
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for row in rows {
        w.write_all(&(row.len() as i32).to_le_bytes())?;
        for x in row {
            w.write_all(&bytes_of(x))?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Mean of column `rank` (0-based) of `rows`, over rows long enough.
fn mean_at(rows: &[Vec<f32>], rank: usize) -> f64 {
    let vals: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.get(rank))
        .map(|&x| f64::from(x))
        .collect();
    vals.iter().sum::<f64>() / vals.len().max(1) as f64
}

/// Generate `vectors` base vectors into `out` by `recipe` (see the module doc), taking
/// the real neighbour lists from `neighbour_cache` when it holds them (and writing them
/// there when it does not).
pub fn generate(
    vectors: usize,
    out: &Path,
    recipe: &Recipe,
    neighbour_cache: Option<&Path>,
) -> anyhow::Result<Generated> {
    anyhow::ensure!(vectors > 0, "--vectors must be at least 1");
    anyhow::ensure!(recipe.neighbours > 0, "--neighbours must be at least 1");
    anyhow::ensure!(
        recipe.t_max >= 0.0 && recipe.noise >= 0.0,
        "--t-max and --noise must not be negative"
    );
    let started = Instant::now();
    let source = source_of(recipe)?;
    let (real, dim) = read_fvecs(&source.join("base.fvecs"), None)
        .with_context(|| format!("reading {}/base.fvecs", source.display()))?;
    let real_rows = real.len() / dim.max(1);
    anyhow::ensure!(real_rows >= 2, "the source has {real_rows} base vectors");
    let (queries, qdim) = read_fvecs(&source.join("query.fvecs"), Some(recipe.queries))
        .with_context(|| format!("reading {}/query.fvecs", source.display()))?;
    anyhow::ensure!(
        qdim == dim,
        "queries have {qdim} dimensions, the base {dim}"
    );
    let n_queries = queries.len() / dim;
    anyhow::ensure!(n_queries > 0, "no queries");
    eprintln!(
        "datagen: {vectors} vectors like {} ({real_rows} × {dim}), {n_queries} queries, seed {}",
        source.display(),
        recipe.seed
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // A directory being rewritten is incomplete until generate.json is written again.
    let _ = std::fs::remove_file(out.join("generate.json"));

    let anchors = real_rows.min(vectors);
    let neighbours = neighbours_cached(&real, dim, anchors, recipe, &source, neighbour_cache)?;
    let (mut cos_sum, mut cos_n) = (0.0f64, 0usize);
    for (a, list) in neighbours.iter().enumerate() {
        for &b in list {
            let b = b as usize;
            let (ra, rb) = (&real[a * dim..(a + 1) * dim], &real[b * dim..(b + 1) * dim]);
            cos_sum += f64::from(hektor_indexers::metric::cosine(ra, rb));
            cos_n += 1;
        }
    }
    let mean_neighbour_cosine = cos_sum / cos_n.max(1) as f64;

    let depth = DEPTH.min(vectors);
    let base_path = out.join("base.fvecs");
    let file = std::fs::File::create(&base_path)
        .with_context(|| format!("creating {}", base_path.display()))?;
    let mut base_out = BufWriter::with_capacity(1 << 22, file);
    let mut tops: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n_queries];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut bytes = Vec::new();
    for start in (0..vectors).step_by(CHUNK) {
        let end = (start + CHUNK).min(vectors);
        let mut chunk = vec![0.0f32; (end - start) * dim];
        // Generate in parallel: each row has its own RNG stream.
        let per = (end - start).div_ceil(threads);
        std::thread::scope(|s| {
            for (t, part) in chunk.chunks_mut(per * dim).enumerate() {
                let from = start + t * per;
                let to = from + part.len() / dim;
                let (real, neighbours) = (&real[..], &neighbours[..]);
                s.spawn(move || make_rows(real, dim, neighbours, recipe, from..to, part));
            }
        });
        bytes.clear();
        for row in chunk.chunks_exact(dim) {
            bytes.extend_from_slice(&(dim as i32).to_le_bytes());
            hektor_indexers::metric::encode_f32s(row, &mut bytes);
        }
        base_out.write_all(&bytes)?;
        let searcher = BatchSearcher::cpu(chunk, dim, Distance::Cosine)?;
        let found = searcher.search(&queries, depth)?;
        for (top, hits) in tops.iter_mut().zip(found) {
            let global = hits
                .into_iter()
                .map(|(row, s)| (row + start as u32, s))
                .collect();
            merge_top(top, global, depth);
        }
        eprintln!(
            "datagen: {end}/{vectors} vectors written and searched ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    base_out.flush()?;
    drop(base_out);

    write_rows(
        &out.join("query.fvecs"),
        queries.chunks_exact(dim).map(<[f32]>::to_vec),
        f32::to_le_bytes,
    )?;
    write_rows(
        &out.join("groundtruth.ivecs"),
        tops.iter()
            .map(|t| t.iter().map(|&(r, _)| r as i32).collect::<Vec<i32>>()),
        i32::to_le_bytes,
    )?;
    let scores: Vec<Vec<f32>> = tops
        .iter()
        .map(|t| t.iter().map(|&(_, s)| s).collect())
        .collect();
    write_rows(
        &out.join("groundtruth.scores.fvecs"),
        scores.iter().cloned(),
        f32::to_le_bytes,
    )?;
    let _ = std::fs::remove_file(out.join("base.ids"));

    let source_scores = read_fvecs(&source.join("groundtruth.scores.fvecs"), Some(n_queries))
        .ok()
        .map(|(flat, d)| {
            flat.chunks_exact(d.max(1))
                .map(<[f32]>::to_vec)
                .collect::<Vec<_>>()
        });
    let src_mean = |rank: usize| source_scores.as_ref().map(|s| mean_at(s, rank));
    let generated = Generated {
        recipe_version: RECIPE_VERSION,
        vectors,
        dim,
        queries: n_queries,
        depth,
        source: source.clone(),
        source_vectors: real_rows,
        anchors,
        seed: recipe.seed,
        neighbours: recipe.neighbours,
        t_max: recipe.t_max,
        noise: recipe.noise,
        mean_neighbour_cosine,
        gt_mean_top1: mean_at(&scores, 0),
        gt_mean_top10: mean_at(&scores, 9),
        gt_mean_top100: mean_at(&scores, 99),
        source_gt_mean_top1: src_mean(0),
        source_gt_mean_top10: src_mean(9),
        source_gt_mean_top100: src_mean(99),
        seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("README.md"), readme(&generated))?;
    // Last: its presence says the directory is complete.
    std::fs::write(
        out.join("generate.json"),
        serde_json::to_string_pretty(&generated)?,
    )?;
    eprintln!(
        "datagen: done in {:.1}s: mean true cosine top-1/10/100 {:.3}/{:.3}/{:.3} (source {})",
        generated.seconds,
        generated.gt_mean_top1,
        generated.gt_mean_top10,
        generated.gt_mean_top100,
        match (
            generated.source_gt_mean_top1,
            generated.source_gt_mean_top10,
            generated.source_gt_mean_top100
        ) {
            (Some(a), Some(b), Some(c)) => format!("{a:.3}/{b:.3}/{c:.3}"),
            _ => "without ground truth".into(),
        }
    );
    Ok(generated)
}

fn readme(g: &Generated) -> String {
    format!(
        "# Generated by `hektor-bench dataset generate` (recipe v{v})\n\n\
         {n} base vectors of {d} dimensions shaped like `{src}` ({sv} vectors): for vector i, \
         an RNG stream seeded with {seed} and i picks a real anchor a (of the first {anchors}), \
         one of a's {nb} nearest real neighbours b (near-copies left out), t ~ U[0, {t}) and \
         writes normalize(a + t·(b − a) + σ·g), g standard Gaussian, σ = {noise}·‖b − a‖/√d. \
         Queries: the source's first {q}. Ground truth: exact top-{depth} by cosine (hektor's \
         CPU batch search). See bench/src/datagen.rs and generate.json.\n",
        v = g.recipe_version,
        n = g.vectors,
        d = g.dim,
        src = g.source.display(),
        sv = g.source_vectors,
        seed = g.seed,
        anchors = g.anchors,
        nb = g.neighbours,
        t = g.t_max,
        noise = g.noise,
        q = g.queries,
        depth = g.depth,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_best_with_ties_by_row() {
        let mut top = vec![(3, 0.9), (1, 0.5)];
        merge_top(&mut top, vec![(7, 0.9), (2, 0.8), (0, 0.5)], 4);
        assert_eq!(top, vec![(3, 0.9), (7, 0.9), (2, 0.8), (0, 0.5)]);
    }

    /// Row i is the same whichever range it is made in (each row has its own stream),
    /// the same on every run, and a unit vector; another seed makes other rows.
    #[test]
    fn rows_are_per_item_and_deterministic() {
        let dim = 6;
        let real: Vec<f32> = (0..4 * dim).map(|x| ((x * 7 % 11) as f32) - 5.0).collect();
        let neighbours = vec![vec![1, 2], vec![0, 3], vec![3], vec![0]];
        let recipe = |seed| Recipe {
            source: None,
            queries: 1,
            seed,
            neighbours: 2,
            t_max: 0.5,
            noise: 0.25,
        };
        let rows = |seed, range: std::ops::Range<usize>| {
            let mut out = vec![0.0f32; range.len() * dim];
            make_rows(&real, dim, &neighbours, &recipe(seed), range, &mut out);
            out
        };
        let all = rows(42, 0..10);
        assert_eq!(all, rows(42, 0..10));
        assert_eq!(&all[3 * dim..7 * dim], &rows(42, 3..7)[..]);
        assert_ne!(all, rows(43, 0..10));
        for v in all.chunks_exact(dim) {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{v:?}");
        }
    }
}
