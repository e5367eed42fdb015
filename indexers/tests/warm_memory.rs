//! The warm tier's memory footprint (issue #7: resident memory under half the raw
//! vectors): the warm engine's LMDB database, which is all the engine keeps (no heap
//! copy), must be smaller than half the raw `f32` vectors. Printed with `--nocapture`:
//! the anonymous memory 1,000 searches add in a freshly opened shard (the engine's heap),
//! the distinct items they rescore from the store (each one `f32` vector read), and the
//! file-backed growth, which the kernel's fault-around (it maps up to 16 cached
//! neighbours of every faulting page) inflates to about the whole file.
//!
//! Runs on the full data set when present (required under `CI=true`), else on a subset.

mod common;

use hektor_indexers::{EngineKind, Shard, ShardConfig};
use hektor_topics::record::Distance;

/// `(RssFile, RssAnon)` of this process in bytes.
fn rss_file_anon() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("RssFile:"), field("RssAnon:"))
}

const MIB: f64 = (1 << 20) as f64;

#[test]
fn warm_index_is_under_half_the_raw_vectors_and_searches_touch_little() {
    let (ds, which) = common::recall_dataset();
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let config = ShardConfig::new(ds.dim, Distance::Cosine, EngineKind::Warm);
    {
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        common::load_rows(&shard, &ds, 0..ds.len(), 0);
        shard.build_index().unwrap();
    }
    let raw = 4 * ds.dim as u64 * ds.len() as u64;
    // A fresh open: the map starts with no page of this process's resident set.
    let shard = Shard::open(dir.path(), config).unwrap();
    let index_bytes = shard.index_bytes().unwrap();
    let (file0, anon0) = rss_file_anon();
    let m = common::measure(&shard, &ds, &rows, 10, 1_000);
    let (file1, anon1) = rss_file_anon();
    let mut rescored = std::collections::HashSet::new();
    for q in 0..m.queries {
        for hit in shard.search(ds.query(q), 10, None).unwrap() {
            rescored.insert(hit.id);
        }
    }
    eprintln!(
        "warm ({which}: {} × {}): index database {:.1} MiB = raw/{:.2}; after {} searches \
         (recall@10 {:.4}, {:.0} QPS): +{:.1} MiB anonymous, {} distinct items rescored \
         ({:.1} MiB of f32 vectors), +{:.1} MiB file-backed (fault-around); raw {:.1} MiB",
        ds.len(),
        ds.dim,
        index_bytes as f64 / MIB,
        raw as f64 / index_bytes.max(1) as f64,
        m.queries,
        m.recall,
        m.qps,
        anon1.saturating_sub(anon0) as f64 / MIB,
        rescored.len(),
        (rescored.len() * 4 * ds.dim) as f64 / MIB,
        file1.saturating_sub(file0) as f64 / MIB,
        raw as f64 / MIB,
    );
    assert!(
        index_bytes * 2 < raw,
        "warm index database is {index_bytes} bytes, not under half the {raw} raw bytes"
    );
}
