//! The warm tier's memory footprint (issue #7: resident memory under half the raw
//! vectors). The warm engine's LMDB database is all it keeps (no heap copy) and must be
//! smaller than half the raw `f32` vectors. Then, per search mode, the shard's file is
//! evicted from the page cache, the shard reopened and 1,000 searches run, and the
//! file's pages now in the page cache are counted (`mincore`): what those searches
//! brought into memory, read-ahead included. Searching without rescoring
//! (`SearchOptions::rescore = false`: the same hits, scores from the int8 codes) must stay
//! under half the raw vectors and find exactly the same hits; with rescoring each search
//! also reads its k hits' full vectors from the store, which is printed, not asserted.
//!
//! Runs on the full data set when present (required under `CI=true`), else on a subset.

mod common;

use hektor_indexers::{EngineKind, SearchOptions, Shard, ShardConfig};
use hektor_topics::record::Distance;

/// Drop `path`'s clean pages from the page cache (a closed LMDB file has no dirty ones).
fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a valid open descriptor; the advice only drops cached pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed");
}

/// Bytes of `path` in the page cache.
fn cached_bytes(path: &std::path::Path) -> u64 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only shared map of a whole open file, unmapped before returning;
    // `mincore` writes one byte per page into a vector of that many bytes.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap failed");
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(map, len, vec.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(rc, 0, "mincore failed");
        vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * page as u64
    }
}

/// `(RssFile, RssAnon)` of this process in bytes.
fn rss_file_anon() -> (u64, u64) {
    let field = |name: &str| common::status_kib(name).map_or(0, |kib| kib * 1024);
    (field("RssFile:"), field("RssAnon:"))
}

const MIB: f64 = (1 << 20) as f64;

#[test]
fn warm_index_is_under_half_the_raw_vectors_and_searches_touch_little() {
    let (ds, which) = common::recall_dataset();
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let config = ShardConfig::new(ds.dim, Distance::Cosine, EngineKind::Warm);
    let index_bytes = {
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        common::load_rows(&shard, &ds, 0..ds.len(), 0);
        shard.build_index().unwrap();
        shard.index_bytes().unwrap()
    };
    let raw = 4 * ds.dim as u64 * ds.len() as u64;
    let file = dir.path().join("data.mdb");
    let n_queries = ds.n_queries().min(1_000);
    let mut answers = Vec::new();
    for rescore in [true, false] {
        evict(&file);
        let before = cached_bytes(&file);
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        let options = SearchOptions {
            rescore,
            ..Default::default()
        };
        let (file0, anon0) = rss_file_anon();
        let started = std::time::Instant::now();
        let hits: Vec<Vec<u32>> = (0..n_queries)
            .map(|q| {
                let hits = shard.search_with(ds.query(q), 10, None, options).unwrap();
                let mut rows: Vec<u32> = hits.iter().map(|h| rows[&h.id]).collect();
                rows.sort_unstable();
                rows
            })
            .collect();
        let qps = n_queries as f64 / started.elapsed().as_secs_f64();
        let (file1, anon1) = rss_file_anon();
        let read = cached_bytes(&file).saturating_sub(before);
        // The same searches again, now from the page cache.
        let started = std::time::Instant::now();
        for q in 0..n_queries {
            shard.search_with(ds.query(q), 10, None, options).unwrap();
        }
        let warm_qps = n_queries as f64 / started.elapsed().as_secs_f64();
        let recall: f64 = hits
            .iter()
            .enumerate()
            .map(|(q, h)| ds.recall(q, h, 10))
            .sum::<f64>()
            / n_queries as f64;
        eprintln!(
            "warm ({which}: {} × {}), rescore {rescore}: {n_queries} searches from a cold \
             page cache, recall@10 {recall:.4}, {qps:.0} QPS ({warm_qps:.0} QPS once cached); brought {:.1} MiB of the \
             shard's file into memory (raw vectors {:.1} MiB, warm database {:.1} MiB = \
             raw/{:.2}); +{:.1} MiB anonymous, +{:.1} MiB file-backed RSS (fault-around \
             maps cached neighbours too)",
            ds.len(),
            ds.dim,
            read as f64 / MIB,
            raw as f64 / MIB,
            index_bytes as f64 / MIB,
            raw as f64 / index_bytes.max(1) as f64,
            anon1.saturating_sub(anon0) as f64 / MIB,
            file1.saturating_sub(file0) as f64 / MIB,
        );
        if !rescore {
            assert!(
                read * 2 < raw,
                "searches without rescoring brought {read} bytes into memory, not under half \
                 the {raw} raw bytes"
            );
        }
        answers.push(hits);
    }
    assert_eq!(
        answers[0], answers[1],
        "rescoring changes the scores, never which items are the hits"
    );
    assert!(
        index_bytes * 2 < raw,
        "warm index database is {index_bytes} bytes, not under half the {raw} raw bytes"
    );
}
