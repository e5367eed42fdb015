//! Parallel builds of the hot graph, on a real store: a build on several threads gives the
//! recall of a one-thread build, every item is in the graph exactly once (replacements
//! and deletions included), the lists stay well formed, one thread stays deterministic,
//! and searches running beside a parallel build never panic and return only items
//! visible at their snapshot.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const DIM: usize = 32;
const K: usize = 10;

/// `n` clustered unit vectors (seeded): 64 centres, wide noise, so that a graph search at
/// a modest `ef` misses some true neighbours and recall tells graphs apart.
fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..64)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c
                .iter()
                .map(|x| x + rng.random_range(-0.9f32..0.9))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn params(threads: usize) -> HnswParams {
    HnswParams {
        build_threads: threads,
        ..HnswParams::default()
    }
}

/// An empty store and a hot engine over it building on `threads` threads.
fn engine(dir: &std::path::Path, threads: usize) -> (Store, HnswEngine) {
    let store = Store::open(dir, 1 << 30, DIM).unwrap();
    let (engine, _) = HnswEngine::open(&store, Distance::Cosine, params(threads)).unwrap();
    (store, engine)
}

/// Store `vs[i]` as item `first + i` and delete `deleted`, then build them in one
/// commit, as a shard does (the fold beside, then the commit).
fn build(store: &Store, engine: &HnswEngine, first: u32, vs: &[Vec<f32>], deleted: &[u32]) {
    let upserts: Vec<(u32, &[f32])> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| (first + i as u32, v.as_slice()))
        .collect();
    build_items(store, engine, &upserts, deleted);
}

/// [`build`] of any items.
fn build_items(store: &Store, engine: &HnswEngine, upserts: &[(u32, &[f32])], deleted: &[u32]) {
    let mut changes = Changes::default();
    let mut wtxn = store.env.write_txn().unwrap();
    for &(item, v) in upserts {
        store
            .vectors
            .put(&mut wtxn, &item, &Store::encode_vector(v))
            .unwrap();
        if engine.graph.read().node_of(item).is_some() {
            changes.stale.insert(item);
        }
        changes.upserted.insert(item);
    }
    for &item in deleted {
        store.vectors.delete(&mut wtxn, &item).unwrap();
        changes.stale.insert(item);
    }
    wtxn.commit().unwrap();
    let rtxn = store.env.read_txn().unwrap();
    let epoch = engine.fold_outside(&rtxn, store, &changes).unwrap();
    drop(rtxn);
    let mut wtxn = store.env.write_txn().unwrap();
    engine
        .commit_fold(&mut wtxn, store, &changes, epoch)
        .unwrap();
    wtxn.commit().unwrap();
}

fn search(store: &Store, engine: &HnswEngine, q: &[f32], k: usize) -> Vec<(u32, f32)> {
    let txn = store.env.read_txn().unwrap();
    let query = PreparedQuery::new(Distance::Cosine, q);
    engine
        .search(&txn, store, &query, k, None, &RoaringBitmap::new())
        .unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Recall@10 over `queries` against brute force over `base` (item = row), a hit counted
/// when its score reaches the 10th true score (ties are hits).
fn recall(store: &Store, engine: &HnswEngine, base: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
    let mut hits = 0usize;
    for q in queries {
        let mut truth: Vec<f32> = base.iter().map(|v| dot(q, v)).collect();
        truth.sort_unstable_by(|a, b| b.total_cmp(a));
        let tenth = truth[K - 1] - 1e-5;
        let found = search(store, engine, q, K);
        hits += found
            .iter()
            .filter(|&&(item, _)| dot(q, &base[item as usize]) >= tenth)
            .count();
    }
    hits as f64 / (K * queries.len()) as f64
}

/// The graph is well formed and holds exactly `live` as its live items, each once.
/// Returns the live nodes no layer-0 list links to (besides the entry point).
fn check(engine: &HnswEngine, live: &HashSet<u32>) -> usize {
    let g = engine.graph.read();
    let n = g.len();
    let mut seen = HashSet::new();
    let mut linked = vec![false; n];
    for node in 0..n as u32 {
        let level = g.level[node as usize] as usize;
        for layer in 0..=level {
            let list: Vec<u32> = g.neighbours(node, layer).collect();
            assert!(
                list.len() <= g.max_links(layer),
                "node {node} layer {layer}"
            );
            let distinct: HashSet<u32> = list.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                list.len(),
                "node {node} layer {layer}: {list:?}"
            );
            for &x in &list {
                assert!((x as usize) < n && x != node, "node {node} links {x}");
                assert!(
                    g.level[x as usize] as usize >= layer,
                    "{x} is below layer {layer}"
                );
                if layer == 0 {
                    linked[x as usize] = true;
                }
            }
        }
        if g.deleted[node as usize] == LIVE {
            let item = g.item[node as usize];
            assert!(seen.insert(item), "item {item} has two live nodes");
            assert_eq!(g.node_of(item), Some(node), "item {item}'s newest node");
        }
    }
    assert_eq!(&seen, live, "the live items");
    assert_eq!(g.live, live.len() as u64);
    assert_eq!(g.level[g.entry as usize] as usize, g.max_level);
    (0..n)
        .filter(|&x| g.deleted[x] == LIVE && !linked[x] && x as u32 != g.entry)
        .count()
}

/// Every layer-0 list of the graph, node by node.
fn lists(engine: &HnswEngine) -> Vec<Vec<u32>> {
    let g = engine.graph.read();
    (0..g.len() as u32)
        .map(|node| g.neighbours(node, 0).collect())
        .collect()
}

#[test]
fn a_parallel_build_has_the_recall_of_one_thread_and_every_item_once() {
    let base = vectors(6_000, 1);
    let queries = vectors(500, 2);
    let all: HashSet<u32> = (0..base.len() as u32).collect();
    let mut recalls = Vec::new();
    for threads in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let (store, engine) = engine(dir.path(), threads);
        assert_eq!(engine.params.threads_for(base.len() as u64), threads);
        build(&store, &engine, 0, &base, &[]);
        let orphans = check(&engine, &all);
        assert!(
            orphans <= base.len() / 200,
            "{threads} threads: {orphans} unlinked nodes"
        );
        engine.set_search_effort(24);
        let r = recall(&store, &engine, &base, &queries);
        eprintln!("{threads} threads: recall@{K} {r:.4} at ef 24, {orphans} unlinked nodes");
        recalls.push(r);
    }
    assert!(
        recalls[0] > 0.8,
        "the data should not be trivial: {recalls:?}"
    );
    assert!(
        (recalls[1] - recalls[0]).abs() <= 0.01,
        "recall 1 thread {:.4}, 4 threads {:.4}",
        recalls[0],
        recalls[1]
    );
}

#[test]
fn one_thread_builds_the_same_graph_every_time_and_a_rebuild_matches_it() {
    let base = vectors(3_000, 3);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let built: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let (store, engine) = engine(dir.path(), 1);
            build(&store, &engine, 0, &base, &[]);
            lists(&engine)
        })
        .collect();
    assert_eq!(built[0], built[1]);
    // Reopened without a graph file: rebuilt from the store, in item order, the same.
    let store = Store::open(dirs[0].path(), 1 << 30, DIM).unwrap();
    let (rebuilt, opened) = HnswEngine::open(&store, Distance::Cosine, params(1)).unwrap();
    assert!(matches!(opened, Opened::Rebuilt { .. }), "{opened:?}");
    assert_eq!(lists(&rebuilt), built[0]);
}

#[test]
fn parallel_replacements_and_deletes_keep_one_live_node_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = engine(dir.path(), 3);
    let base = vectors(5_000, 4);
    build(&store, &engine, 0, &base, &[]);
    // Replace items 0..2500 with new vectors, add 2500 new items, delete 4000..4500.
    let fresh = vectors(5_000, 5);
    let deleted: Vec<u32> = (4_000..4_500).collect();
    build(&store, &engine, 0, &fresh[..2_500], &deleted);
    build(&store, &engine, 5_000, &fresh[2_500..], &[]);
    let live: HashSet<u32> = (0..7_500u32)
        .filter(|i| !(4_000..4_500).contains(i))
        .collect();
    let orphans = check(&engine, &live);
    assert!(orphans <= live.len() / 200, "{orphans} unlinked nodes");
    assert_eq!(
        engine.graph.read().len(),
        10_000,
        "5,000 + 2,500 + 2,500 nodes"
    );
    // Replaced items are found by their new vectors, deleted ones never.
    engine.set_search_effort(64);
    for i in (0..2_500).step_by(50) {
        let hits = search(&store, &engine, &fresh[i], 1);
        assert_eq!(hits[0].0, i as u32);
        assert!(hits[0].1 > 0.999);
    }
    for &item in deleted.iter().step_by(25) {
        let hits = search(&store, &engine, &base[item as usize], K);
        assert!(hits.iter().all(|h| h.0 != item), "deleted {item} found");
    }
}

#[test]
fn searches_beside_a_parallel_build_see_only_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = engine(dir.path(), 4);
    let base = vectors(4_000, 6);
    build(&store, &engine, 0, &base, &[]);
    let more = vectors(12_000, 7);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let searchers: Vec<_> = (0..2)
            .map(|t| {
                let (store, engine, base, done) = (&store, &engine, &base, &done);
                scope.spawn(move || {
                    let mut n = 0usize;
                    while !done.load(Ordering::Acquire) || n == 0 {
                        // One snapshot per search: until the second build commits, the
                        // first build's items only, while the second (new items and
                        // replacements) is being linked.
                        let row = (t * 7 + n * 13) % base.len();
                        let txn = store.env.read_txn().unwrap();
                        let snap = read_epoch(store, &txn).unwrap();
                        let query = PreparedQuery::new(Distance::Cosine, &base[row]);
                        let hits = engine
                            .search(&txn, store, &query, 20, None, &RoaringBitmap::new())
                            .unwrap();
                        assert_eq!(hits.len(), 20);
                        let distinct: HashSet<u32> = hits.iter().map(|h| h.0).collect();
                        assert_eq!(distinct.len(), 20, "duplicates: {hits:?}");
                        let visible = if snap == 1 { 4_000 } else { 15_000 };
                        assert!(
                            hits.iter().all(|h| h.0 < visible),
                            "not visible at build {snap}: {hits:?}"
                        );
                        if row >= 1_000 {
                            // Never replaced: its own vector is its best hit.
                            assert_eq!(hits[0].0, row as u32, "{hits:?}");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // Replace items 0..1000 and add 11,000 new ones in one parallel build.
        let upserts: Vec<(u32, &[f32])> = (0..1_000u32)
            .chain(4_000..15_000)
            .zip(&more)
            .map(|(item, v)| (item, v.as_slice()))
            .collect();
        build_items(&store, &engine, &upserts, &[]);
        done.store(true, Ordering::Release);
        for s in searchers {
            assert!(s.join().unwrap() > 0);
        }
    });
}

/// A hot engine whose builds take candidate lists from `candidates`, with a narrow beam
/// (`ef_construction` 12), so that what the beam misses shows in recall.
fn engine_with(
    dir: &std::path::Path,
    threads: usize,
    candidates: BuildCandidates,
) -> (Store, HnswEngine) {
    let store = Store::open(dir, 1 << 30, DIM).unwrap();
    let params = HnswParams {
        ef_construction: 12,
        candidates,
        ..params(threads)
    };
    let (engine, _) = HnswEngine::open(&store, Distance::Cosine, params).unwrap();
    (store, engine)
}

#[test]
fn candidate_lists_from_the_batch_worker_raise_a_narrow_builds_recall() {
    let base = vectors(6_000, 5);
    let queries = vectors(400, 6);
    let all: HashSet<u32> = (0..base.len() as u32).collect();
    let mut recalls = Vec::new();
    for candidates in [BuildCandidates::Off, BuildCandidates::Cpu] {
        let dir = tempfile::tempdir().unwrap();
        let (store, engine) = engine_with(dir.path(), 1, candidates);
        let before = candidates::candidate_stats().cpu_rows;
        build(&store, &engine, 0, &base, &[]);
        let computed = candidates::candidate_stats().cpu_rows - before;
        if candidates == BuildCandidates::Cpu {
            assert!(computed >= base.len() as u64, "{computed} rows had lists");
        }
        let orphans = check(&engine, &all);
        engine.set_search_effort(24);
        let r = recall(&store, &engine, &base, &queries);
        eprintln!("candidates {candidates:?}: recall@{K} {r:.4} at ef 24, {orphans} unlinked");
        recalls.push(r);
    }
    assert!(
        recalls[1] >= recalls[0] + 0.02,
        "lists should lift a narrow beam's recall: off {:.4}, cpu {:.4}",
        recalls[0],
        recalls[1]
    );
}

#[test]
fn builds_with_candidate_lists_stay_well_formed_and_one_thread_stays_deterministic() {
    let base = vectors(5_000, 7);
    let all: HashSet<u32> = (0..base.len() as u32).collect();
    let mut one_thread = Vec::new();
    for threads in [1, 1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let (store, engine) = engine_with(dir.path(), threads, BuildCandidates::Cpu);
        build(&store, &engine, 0, &base[..2_500], &[]);
        // A second round over a graph that has nodes: replacements and deletes too.
        let replaced: Vec<(u32, &[f32])> = (0..300u32)
            .map(|i| (i, base[2_500 + i as usize].as_slice()))
            .chain((2_500..5_000u32).map(|i| (i, base[i as usize].as_slice())))
            .collect();
        build_items(&store, &engine, &replaced, &[400, 401, 402]);
        let mut live = all.clone();
        for gone in [400, 401, 402] {
            live.remove(&gone);
        }
        let orphans = check(&engine, &live);
        assert!(
            orphans <= base.len() / 200,
            "{threads} threads: {orphans} unlinked"
        );
        if threads == 1 {
            one_thread.push(lists(&engine));
        }
    }
    assert_eq!(one_thread[0], one_thread[1]);
}
