//! Test and benchmark data sets in the TEXMEX / ann-benchmarks layout (`base.fvecs`,
//! `base.ids`, `query.fvecs`, `groundtruth.ivecs`, `groundtruth.scores.fvecs`), and the
//! recall measure with the tie convention of ann-benchmarks.
//!
//! `.fvecs` rows are a little-endian `i32` dimension `d` followed by `d` `f32`; `.ivecs`
//! the same with `i32` values. Ground truth is by cosine similarity.
//!
//! When [`Dataset::load`] is given a `base_limit` smaller than the base, the ground-truth
//! files (which index the full base) are wrong for the subset, so the ground truth is
//! recomputed by brute force over the subset (top [`GROUND_TRUTH_DEPTH`] by cosine).
//!
//! This module does not index or search; shards and benches do.

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::TopK;
use crate::error::{Error, Result};
use crate::metric;

/// The data set the tests and benches use unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/work/shared/data/debian-minilm-384";

/// Ground-truth neighbours kept per query when computed by brute force.
pub const GROUND_TRUTH_DEPTH: usize = 100;

/// Slack under the k-th true score within which a returned item counts as a hit.
pub const TIE_EPSILON: f32 = 1e-5;

/// `$HEKTOR_DATA` when set, else [`DEFAULT_DATA_DIR`].
pub fn data_dir() -> PathBuf {
    std::env::var_os("HEKTOR_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// A loaded data set: base vectors, queries and (cosine) ground truth.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Base vectors, row-major, `len() × dim`.
    pub base: Vec<f32>,
    pub dim: usize,
    /// One id per base row.
    pub ids: Vec<String>,
    /// Query vectors, row-major.
    pub queries: Vec<f32>,
    /// Per query, base row numbers of its nearest neighbours, nearest first.
    pub groundtruth: Vec<Vec<u32>>,
    /// The matching cosine similarities.
    pub gt_scores: Vec<Vec<f32>>,
    /// Whether the ground truth was computed here (a cut base) rather than read.
    pub groundtruth_computed: bool,
}

impl Dataset {
    /// Load the data set in `dir`, keeping only the first `base_limit` base rows when
    /// given (then the ground truth is recomputed by brute force over those rows).
    pub fn load(dir: &Path, base_limit: Option<usize>) -> Result<Dataset> {
        let (full_rows, dim) = fvecs_shape(&dir.join("base.fvecs"))?;
        let keep = base_limit.map_or(full_rows, |l| l.min(full_rows));
        let (base, _) = read_fvecs(&dir.join("base.fvecs"), Some(keep))?;
        let (queries, qdim) = read_fvecs(&dir.join("query.fvecs"), None)?;
        if qdim != dim {
            return Err(Error::Dataset {
                path: dir.join("query.fvecs"),
                reason: format!("queries have {qdim} dimensions, the base has {dim}"),
            });
        }
        let ids_path = dir.join("base.ids");
        let ids: Vec<String> = match fs::read_to_string(&ids_path) {
            Ok(text) => text.lines().take(keep).map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (0..keep).map(|i| i.to_string()).collect()
            }
            Err(source) => {
                return Err(Error::Io {
                    path: ids_path,
                    source,
                })
            }
        };
        if ids.len() != keep {
            return Err(Error::Dataset {
                path: ids_path,
                reason: format!("{} ids for {keep} base vectors", ids.len()),
            });
        }
        let n_queries = queries.len() / dim.max(1);
        let mut ds = Dataset {
            base,
            dim,
            ids,
            queries,
            groundtruth: Vec::new(),
            gt_scores: Vec::new(),
            groundtruth_computed: false,
        };
        if keep == full_rows {
            let gt_path = dir.join("groundtruth.ivecs");
            let (gt, depth) = read_ivecs(&gt_path)?;
            let (scores, sdepth) = read_fvecs(&dir.join("groundtruth.scores.fvecs"), None)?;
            if depth == 0
                || sdepth != depth
                || gt.len() != n_queries * depth
                || scores.len() != gt.len()
            {
                return Err(Error::Dataset {
                    path: gt_path,
                    reason: format!(
                        "ground truth does not match {n_queries} queries (depth {depth}, scores depth {sdepth})"
                    ),
                });
            }
            if let Some(bad) = gt.iter().find(|&&r| r as usize >= keep) {
                return Err(Error::Dataset {
                    path: gt_path,
                    reason: format!("row {bad} is past the base's {keep} rows"),
                });
            }
            ds.groundtruth = gt.chunks(depth).map(<[u32]>::to_vec).collect();
            ds.gt_scores = scores.chunks(depth).map(<[f32]>::to_vec).collect();
        } else {
            let (gt, scores) = exact_ground_truth(&ds.base, &ds.queries, dim, GROUND_TRUTH_DEPTH);
            ds.groundtruth = gt;
            ds.gt_scores = scores;
            ds.groundtruth_computed = true;
        }
        Ok(ds)
    }

    /// Base rows.
    pub fn len(&self) -> usize {
        self.base.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_queries(&self) -> usize {
        self.queries.len() / self.dim.max(1)
    }

    pub fn base_vector(&self, row: usize) -> &[f32] {
        &self.base[row * self.dim..(row + 1) * self.dim]
    }

    pub fn query(&self, q: usize) -> &[f32] {
        &self.queries[q * self.dim..(q + 1) * self.dim]
    }

    /// Recall@k of `returned` (base rows, best first) for query `q`: see [`recall_at_k`].
    pub fn recall(&self, q: usize, returned: &[u32], k: usize) -> f64 {
        recall_at_k(self, q, returned, k)
    }
}

/// Recall@k for query `q`: the fraction of the first `k` returned base rows whose cosine
/// to the query is at least the k-th true score minus [`TIE_EPSILON`] (ties count as
/// hits; a row returned twice counts once). Rows out of range count as misses.
pub fn recall_at_k(ds: &Dataset, q: usize, returned: &[u32], k: usize) -> f64 {
    let Some(scores) = ds.gt_scores.get(q) else {
        return 0.0;
    };
    let k_eff = k.min(scores.len()).min(ds.len());
    if k_eff == 0 {
        return 1.0;
    }
    let threshold = scores[k_eff - 1] - TIE_EPSILON;
    let query = ds.query(q);
    let mut seen = std::collections::HashSet::new();
    let hits = returned
        .iter()
        .take(k)
        .filter(|&&row| (row as usize) < ds.len() && seen.insert(row))
        .filter(|&&row| metric::cosine(query, ds.base_vector(row as usize)) >= threshold)
        .count();
    hits as f64 / k_eff as f64
}

/// Exact top-`depth` neighbours by cosine of each query among `base` rows, with scores.
pub fn exact_ground_truth(
    base: &[f32],
    queries: &[f32],
    dim: usize,
    depth: usize,
) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let norms: Vec<f32> = base.chunks_exact(dim).map(metric::norm).collect();
    let mut gt = Vec::new();
    let mut gs = Vec::new();
    for q in queries.chunks_exact(dim) {
        let qn = metric::norm(q);
        let mut top = TopK::new(depth);
        for (row, v) in base.chunks_exact(dim).enumerate() {
            let d = qn * norms[row];
            let s = if d > 0.0 { metric::dot(q, v) / d } else { 0.0 };
            top.push(row as u32, s);
        }
        let (rows, scores): (Vec<u32>, Vec<f32>) = top.into_sorted().into_iter().unzip();
        gt.push(rows);
        gs.push(scores);
    }
    (gt, gs)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Rows and dimension of an `.fvecs` file, from its size and first header.
pub fn fvecs_shape(path: &Path) -> Result<(usize, usize)> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len() as usize;
    let mut head = [0u8; 4];
    f.read_exact(&mut head).map_err(io)?;
    let dim = i32::from_le_bytes(head);
    if dim <= 0 {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            reason: format!("dimension {dim} in the first row header"),
        });
    }
    let row = 4 + 4 * dim as usize;
    if !size.is_multiple_of(row) {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            reason: format!("size {size} is not a multiple of the row size {row}"),
        });
    }
    Ok((size / row, dim as usize))
}

/// Read up to `limit` rows of an `.fvecs` file: `(row-major values, dimension)`.
pub fn read_fvecs(path: &Path, limit: Option<usize>) -> Result<(Vec<f32>, usize)> {
    let bytes = read_file(path)?;
    let (rows, dim) = parse_vecs(path, &bytes, limit)?;
    let mut out = vec![0.0f32; rows.len() * dim];
    for (dst, src) in out.chunks_exact_mut(dim.max(1)).zip(rows) {
        metric::decode_f32s(src, dst);
    }
    Ok((out, dim))
}

/// Read an `.ivecs` file: `(row-major values, dimension)`. Negative values are refused.
pub fn read_ivecs(path: &Path) -> Result<(Vec<u32>, usize)> {
    let bytes = read_file(path)?;
    let (rows, dim) = parse_vecs(path, &bytes, None)?;
    let mut out = Vec::with_capacity(rows.len() * dim);
    for row in rows {
        for c in row.chunks_exact(4) {
            let v = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            out.push(u32::try_from(v).map_err(|_| Error::Dataset {
                path: path.to_path_buf(),
                reason: format!("negative value {v}"),
            })?);
        }
    }
    Ok((out, dim))
}

/// Split a `.fvecs`/`.ivecs` byte buffer into row payloads, checking every header.
fn parse_vecs<'a>(
    path: &Path,
    bytes: &'a [u8],
    limit: Option<usize>,
) -> Result<(Vec<&'a [u8]>, usize)> {
    let bad = |reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let mut rows = Vec::new();
    let mut dim = None;
    let mut pos = 0;
    while pos < bytes.len() && limit.is_none_or(|l| rows.len() < l) {
        let head = bytes
            .get(pos..pos + 4)
            .ok_or_else(|| bad(format!("truncated header at byte {pos}")))?;
        let d = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if d <= 0 || dim.is_some_and(|x| x != d as usize) {
            return Err(bad(format!("row {} has dimension {d}", rows.len())));
        }
        dim = Some(d as usize);
        let end = pos + 4 + 4 * d as usize;
        let row = bytes
            .get(pos + 4..end)
            .ok_or_else(|| bad(format!("row {} is truncated", rows.len())))?;
        rows.push(row);
        pos = end;
    }
    Ok((rows, dim.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_fvecs(path: &Path, rows: &[Vec<f32>]) {
        let mut bytes = Vec::new();
        for r in rows {
            bytes.extend_from_slice(&(r.len() as i32).to_le_bytes());
            metric::encode_f32s(r, &mut bytes);
        }
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn cut_base_gets_brute_force_ground_truth_and_ties_count_as_hits() {
        let dir = tempfile::tempdir().unwrap();
        // Rows 0 and 1 are identical (a tie); row 2 is far from the query.
        let base = vec![
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![-1.0, 0.0],
        ];
        write_fvecs(&dir.path().join("base.fvecs"), &base);
        write_fvecs(&dir.path().join("query.fvecs"), &[vec![1.0, 0.1]]);
        let ds = Dataset::load(dir.path(), Some(3)).unwrap();
        assert_eq!(ds.len(), 3);
        assert!(ds.groundtruth_computed);
        assert_eq!(ds.groundtruth[0][2], 2);
        assert_eq!(ds.ids, vec!["0", "1", "2"]);
        // Top-1 truth is row 0 or 1 (tied): either counts.
        assert_eq!(ds.recall(0, &[1], 1), 1.0);
        assert_eq!(ds.recall(0, &[0], 1), 1.0);
        assert_eq!(ds.recall(0, &[2], 1), 0.0);
        // A row returned twice counts once.
        assert_eq!(ds.recall(0, &[0, 0], 2), 0.5);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.fvecs");
        fs::write(&p, [3u8, 0, 0, 0, 1, 2]).unwrap();
        assert!(matches!(read_fvecs(&p, None), Err(Error::Dataset { .. })));
        fs::write(&p, (-1i32).to_le_bytes()).unwrap();
        assert!(read_fvecs(&p, None).is_err());
        assert!(Dataset::load(&dir.path().join("missing"), None).is_err());
    }
}
