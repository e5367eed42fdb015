//! The hot graph's file, through the `Shard` API on real LMDB: a checkpointed shard opens
//! by loading its graph (no rebuild) and answers exactly as before; builds after the
//! checkpoint are replayed from the journal; a torn, corrupted, foreign or out-of-date
//! file is never used (the graph is rebuilt and answers correctly); a tier switch removes
//! the file. The kill -9 side (a crash in the middle of a save) is in `tests/crash.rs`.

mod common;

use std::path::Path;

use hektor_indexers::dataset::Dataset;
use hektor_indexers::{EngineKind, Hit, Opened, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::Distance;

const DIM: usize = 32;
const K: usize = 10;

fn open(dir: &Path) -> Shard {
    Shard::open(
        dir,
        ShardConfig::new(DIM, Distance::Cosine, EngineKind::Hnsw),
    )
    .unwrap()
}

fn answers(shard: &Shard, ds: &Dataset) -> Vec<Vec<Hit>> {
    (0..ds.n_queries())
        .map(|q| shard.search(ds.query(q), K, None).unwrap())
        .collect()
}

fn ids(hits: &[Vec<Hit>]) -> Vec<Vec<(String, f32)>> {
    hits.iter()
        .map(|h| h.iter().map(|h| (h.id.clone(), h.score)).collect())
        .collect()
}

fn loaded(shard: &Shard) -> u32 {
    match shard.opened() {
        Some(Opened::Loaded { replayed_builds }) => *replayed_builds,
        other => panic!("expected the graph loaded from its file, got {other:?}"),
    }
}

fn rebuilt_because(shard: &Shard) -> String {
    match shard.opened() {
        Some(Opened::Rebuilt { why }) => why.clone(),
        other => panic!("expected a rebuild, got {other:?}"),
    }
}

/// A hot shard holding `ds`, indexed and checkpointed.
fn saved_shard(dir: &Path, ds: &Dataset) -> Shard {
    let shard = open(dir);
    common::load_rows(&shard, ds, 0..ds.len(), 0);
    shard.build_index().unwrap();
    assert!(shard.unsaved() >= ds.len() as u64);
    let report = shard.checkpoint(true, false).unwrap().expect("a save");
    assert!(report.bytes > 0);
    assert_eq!(shard.unsaved(), 0);
    assert!(
        shard.checkpoint(true, false).unwrap().is_none(),
        "nothing left to save"
    );
    shard
}

#[test]
fn a_checkpointed_graph_opens_without_a_rebuild_and_answers_the_same() {
    let ds = common::synthetic(3_000, 40, DIM);
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let shard = saved_shard(dir.path(), &ds);
        answers(&shard, &ds)
    };
    let shard = open(dir.path());
    assert_eq!(loaded(&shard), 0);
    assert_eq!(shard.len(), 3_000);
    assert_eq!(shard.pending(), 0);
    assert_eq!(ids(&answers(&shard, &ds)), ids(&before));
    // The file is the structure, not a copy of the vectors (the store holds those): per
    // node its layer-0 list (1 + 2m u32s = 132 bytes at m 16), item, epochs, level, item
    // table entry and a share of the upper layers, ~155 bytes; with rows it would be 128
    // bytes more per node.
    let file = std::fs::metadata(dir.path().join("hnsw.graph"))
        .unwrap()
        .len();
    assert!(
        file < 3_000 * 165,
        "the graph file ({file} bytes) should hold no copy of the live vectors"
    );
}

#[test]
fn builds_after_the_checkpoint_are_replayed_from_the_journal() {
    let ds = common::synthetic(4_000, 40, DIM);
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = open(dir.path());
        common::load_rows(&shard, &ds, 0..2_000, 0);
        shard.build_index().unwrap();
        shard.checkpoint(true, false).unwrap().expect("a save");
        // Two builds after the save: new rows, then deletes and replacements.
        common::load_rows(&shard, &ds, 2_000..3_000, 0);
        shard.build_index().unwrap();
        let mut ops = Vec::new();
        for r in 0..100usize {
            ops.push((
                3_000 + r as u64,
                ShardOp::Delete {
                    id: ds.ids[r].clone(),
                    tenant: None,
                    hlc: Hlc(10_000 + r as u64),
                },
            ));
        }
        for r in 100..200usize {
            // Row r's id now holds row r + 3000's vector.
            let mut op = common::upsert(&ds, r + 3_000, common::ring_of(r), Hlc(10_000));
            if let ShardOp::Upsert { id, .. } = &mut op {
                *id = ds.ids[r].clone();
            }
            ops.push((3_100 + r as u64, op));
        }
        shard.apply(&ops).unwrap();
        shard.build_index().unwrap();
        assert!(shard.unsaved() > 0);
        // No checkpoint: the process "crashes" here.
    }
    let shard = open(dir.path());
    assert_eq!(loaded(&shard), 2, "two builds replayed");
    assert_eq!(shard.len(), 2_900);
    for r in 0..100 {
        assert!(shard.get(None, &ds.ids[r]).unwrap().is_none());
        let hits = shard.search(ds.base_vector(r), K, None).unwrap();
        assert!(
            hits.iter().all(|h| h.id != ds.ids[r]),
            "deleted {} found",
            ds.ids[r]
        );
    }
    for r in 100..200 {
        let hits = shard.search(ds.base_vector(r + 3_000), 1, None).unwrap();
        assert_eq!(hits[0].id, ds.ids[r], "replaced vector of {}", ds.ids[r]);
        assert!(hits[0].score > 0.999);
    }
    for r in (200..3_000).step_by(7) {
        let hits = shard.search(ds.base_vector(r), 1, None).unwrap();
        assert_eq!(hits[0].id, ds.ids[r], "row {r} not found by its own vector");
    }
    // The replayed graph is as good as a fresh build.
    let replayed = ids(&answers(&shard, &ds));
    drop(shard);
    std::fs::remove_file(dir.path().join("hnsw.graph")).unwrap();
    let fresh = open(dir.path());
    assert!(rebuilt_because(&fresh).contains("no graph file"));
    let rebuilt = ids(&answers(&fresh, &ds));
    let overlap: usize = replayed
        .iter()
        .zip(&rebuilt)
        .map(|(a, b)| a.iter().filter(|x| b.iter().any(|y| y.0 == x.0)).count())
        .sum();
    assert!(
        overlap as f64 >= 0.95 * (K * ds.n_queries()) as f64,
        "replayed and rebuilt graphs disagree: {overlap} of {} hits shared",
        K * ds.n_queries()
    );
}

#[test]
fn a_torn_corrupted_or_foreign_file_is_never_used() {
    let ds = common::synthetic(1_500, 30, DIM);
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let want = {
        let shard = saved_shard(dir.path(), &ds);
        drop(saved_shard(other.path(), &ds));
        ids(&answers(&shard, &ds))
    };
    let file = dir.path().join("hnsw.graph");
    let good = std::fs::read(&file).unwrap();
    let reopen_rebuilt = |bytes: &[u8]| -> String {
        std::fs::write(&file, bytes).unwrap();
        let shard = open(dir.path());
        let why = rebuilt_because(&shard);
        // Rebuilt graphs give every item the level it had: same answers.
        assert_eq!(ids(&answers(&shard, &ds)), want, "after: {why}");
        why
    };
    // A flipped byte in the middle.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    assert!(reopen_rebuilt(&flipped).contains("checksum"));
    // Torn: the first half only.
    assert!(reopen_rebuilt(&good[..good.len() / 2]).contains("checksum"));
    // Not a graph file at all.
    assert!(reopen_rebuilt(b"hello").contains("not a hektor graph file"));
    // Another shard's graph (same shape, same vectors, another lineage).
    let foreign = std::fs::read(other.path().join("hnsw.graph")).unwrap();
    assert!(reopen_rebuilt(&foreign).contains("lineage"));
    // A leftover temporary file from a crashed save is ignored.
    std::fs::write(&file, &good).unwrap();
    std::fs::write(dir.path().join("hnsw.graph.tmp"), &good[..100]).unwrap();
    let shard = open(dir.path());
    assert_eq!(loaded(&shard), 0);
    assert_eq!(ids(&answers(&shard, &ds)), want);
}

#[test]
fn a_file_older_than_the_journal_is_not_used() {
    let ds = common::synthetic(3_000, 30, DIM);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hnsw.graph");
    let old = {
        let shard = open(dir.path());
        common::load_rows(&shard, &ds, 0..1_000, 0);
        shard.build_index().unwrap();
        shard.checkpoint(true, false).unwrap().unwrap();
        let old = std::fs::read(&file).unwrap();
        common::load_rows(&shard, &ds, 1_000..2_000, 0);
        shard.build_index().unwrap();
        common::load_rows(&shard, &ds, 2_000..3_000, 0);
        shard.build_index().unwrap();
        // This save prunes the journal up to build 3.
        assert_eq!(shard.checkpoint(true, false).unwrap().unwrap().epoch, 3);
        old
    };
    std::fs::write(&file, old).unwrap();
    let shard = open(dir.path());
    assert!(
        rebuilt_because(&shard).contains("journal lacks build 2"),
        "{:?}",
        shard.opened()
    );
    assert_eq!(shard.len(), 3_000);
    for r in (0..3_000).step_by(11) {
        assert_eq!(
            shard.search(ds.base_vector(r), 1, None).unwrap()[0].id,
            ds.ids[r]
        );
    }
}

#[test]
fn a_tier_switch_removes_the_file_and_the_way_back_rebuilds() {
    let ds = common::synthetic(1_000, 20, DIM);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hnsw.graph");
    let shard = saved_shard(dir.path(), &ds);
    assert!(file.exists());
    shard.set_engine(EngineKind::Warm).unwrap();
    assert!(!file.exists(), "the warm tier keeps no hot graph file");
    shard.set_engine(EngineKind::Hnsw).unwrap();
    shard.checkpoint(true, false).unwrap().expect("a save");
    drop(shard);
    let shard = open(dir.path());
    assert_eq!(loaded(&shard), 0);
    for r in (0..1_000).step_by(13) {
        assert_eq!(
            shard.search(ds.base_vector(r), 1, None).unwrap()[0].id,
            ds.ids[r]
        );
    }
}

#[test]
fn checkpoints_come_when_due() {
    let ds = common::synthetic(600, 10, DIM);
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path());
    common::load_rows(&shard, &ds, 0..300, 0);
    shard.build_index().unwrap();
    // 300 unsaved items: below the threshold, not due while busy...
    assert!(shard.checkpoint(false, false).unwrap().is_none());
    // ...but a graph built at open has no file yet: the first idle moment saves it.
    assert!(shard.checkpoint(false, true).unwrap().is_some());
    common::load_rows(&shard, &ds, 300..600, 0);
    shard.build_index().unwrap();
    // Now the last save is recent: neither busy nor idle is due, forced is.
    assert!(shard.checkpoint(false, false).unwrap().is_none());
    assert!(shard.checkpoint(false, true).unwrap().is_none());
    assert!(shard.checkpoint(true, false).unwrap().is_some());
    // Other engines have nothing to save.
    let warm = tempfile::tempdir().unwrap();
    let shard = Shard::open(
        warm.path(),
        ShardConfig::new(DIM, Distance::Cosine, EngineKind::Warm),
    )
    .unwrap();
    common::load_rows(&shard, &ds, 0..600, 0);
    shard.build_index().unwrap();
    assert_eq!(shard.unsaved(), 0);
    assert!(shard.checkpoint(true, false).unwrap().is_none());
}
