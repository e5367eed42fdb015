//! Builds beside applies, through the `Shard` API on real LMDB: while the hot graph folds
//! a large tail, applies commit (they do not wait for the build), and whatever they change
//! meanwhile is never answered from the outdated copy the build folded: a replaced vector
//! is found by its new value only, a deleted one not at all, before and after the next
//! build; the shard then reopens to the same state.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hektor_indexers::{EngineKind, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::Distance;

const DIM: usize = 32;
const N: usize = 12_000;

fn open(dir: &std::path::Path) -> Shard {
    Shard::open(
        dir,
        ShardConfig::new(DIM, Distance::Cosine, EngineKind::Hnsw),
    )
    .unwrap()
}

#[test]
fn applies_commit_while_the_hot_graph_builds_and_none_is_answered_stale() {
    let ds = common::synthetic(N + 1_000, 10, DIM);
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(open(dir.path()));
    assert!(shard.builds_beside_applies());
    common::load_rows(&shard, &ds, 0..N, 0);
    assert_eq!(shard.pending(), N as u64);

    let building = Arc::new(AtomicBool::new(true));
    let during = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (shard, building, during, ds) = (
            Arc::clone(&shard),
            Arc::clone(&building),
            Arc::clone(&during),
            ds.clone(),
        );
        std::thread::spawn(move || {
            // Rows 0..500 are deleted and rows 500..1000 take rows N + r's vectors, one
            // small batch at a time, while the build folds their old values.
            let mut offset = N as u64;
            for r in (0..1_000usize).step_by(20) {
                let ops: Vec<(u64, ShardOp)> = (r..r + 20)
                    .map(|r| {
                        offset += 1;
                        let op = if r < 500 {
                            ShardOp::Delete {
                                id: ds.ids[r].clone(),
                                tenant: None,
                                hlc: Hlc(1_000_000 + offset),
                            }
                        } else {
                            let mut op = common::upsert(
                                &ds,
                                N + r,
                                common::ring_of(r),
                                Hlc(1_000_000 + offset),
                            );
                            if let ShardOp::Upsert { id, .. } = &mut op {
                                *id = ds.ids[r].clone();
                            }
                            op
                        };
                        (offset - 1, op)
                    })
                    .collect();
                shard.apply(&ops).unwrap();
                if building.load(Ordering::Acquire) {
                    during.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let report = shard.build_index().unwrap();
    building.store(false, Ordering::Release);
    writer.join().unwrap();
    assert_eq!(report.indexed, N as u64);
    assert!(
        during.load(Ordering::Relaxed) > 0,
        "no apply committed while the build ran: applies waited for it"
    );

    let check = |shard: &Shard, when: &str| {
        assert_eq!(shard.len(), (N - 500) as u64, "{when}");
        for r in (0..500).step_by(5) {
            let hits = shard.search(ds.base_vector(r), 10, None).unwrap();
            assert!(
                hits.iter().all(|h| h.id != ds.ids[r]),
                "{when}: deleted {} answered",
                ds.ids[r]
            );
        }
        for r in (500..1_000).step_by(5) {
            // Its old vector must not find it with the old score...
            let hits = shard.search(ds.base_vector(r), 10, None).unwrap();
            assert!(
                hits.iter().all(|h| h.id != ds.ids[r] || h.score < 0.999),
                "{when}: {} answered with its replaced vector",
                ds.ids[r]
            );
            // ...and its new one must.
            let hits = shard.search(ds.base_vector(N + r), 1, None).unwrap();
            assert_eq!(hits[0].id, ds.ids[r], "{when}");
            assert!(hits[0].score > 0.999, "{when}");
        }
        for r in (1_000..N).step_by(97) {
            let hits = shard.search(ds.base_vector(r), 1, None).unwrap();
            assert_eq!(hits[0].id, ds.ids[r], "{when}: row {r}");
        }
    };
    // Written while the build folded: still pending (the outdated copies are stale).
    assert!(shard.pending() > 0);
    check(&shard, "after the build");
    shard.build_index().unwrap();
    assert_eq!(shard.pending(), 0);
    check(&shard, "after the next build");
    assert_eq!(
        Arc::strong_count(&shard),
        1,
        "the writer let go of the shard"
    );
    drop(shard);
    let shard = open(dir.path());
    check(&shard, "after a reopen");
}
