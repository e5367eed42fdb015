//! Behaviour of a shard that its users rely on, on real vectors (a slice of the data set,
//! or synthetic ones when it is absent) and real LMDB: visibility of writes before and
//! after an index build, deletes, last-writer-wins by hlc, idempotent replays, restart,
//! the tenant range filter, bad input, and concurrent use.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hektor_indexers::dataset::Dataset;
use hektor_indexers::metric;
use hektor_indexers::{EngineKind, Error, Hit, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{Distance, RingRange};
use hektor_topics::ring;

const ENGINES: [EngineKind; 3] = [EngineKind::Arroy, EngineKind::Exact, EngineKind::Hnsw];

fn data() -> &'static Dataset {
    static DS: std::sync::OnceLock<Dataset> = std::sync::OnceLock::new();
    DS.get_or_init(|| common::subset(3_000))
}

fn open(dir: &std::path::Path, engine: EngineKind) -> Shard {
    let mut config = ShardConfig::new(data().dim, Distance::Cosine, engine);
    config.arroy.n_trees = Some(10);
    Shard::open(dir, config).expect("open shard")
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

fn probe(vector: &[f32], id: &str, ring: u64, hlc: u64) -> ShardOp {
    ShardOp::Upsert {
        id: id.into(),
        tenant: None,
        ring,
        vector: vector.to_vec(),
        payload: Some(serde_json::json!({ "probe": id })),
        hlc: Hlc(hlc),
    }
}

#[test]
fn shard_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Shard>();
}

#[test]
fn upsert_is_found_before_and_after_build() {
    let ds = data();
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path(), engine);
        common::load_rows(&shard, ds, 0..2_000, 0);
        shard.build_index().unwrap();
        // A new vector equal to a query: it must be that query's top hit at once.
        let q = ds.query(0);
        let r = shard.apply(&[(5_000, probe(q, "probe", 7, 1))]).unwrap();
        assert_eq!((r.upserted, r.next_offset), (1, 5_001));
        assert_eq!(
            shard.pending(),
            if engine == EngineKind::Exact { 0 } else { 1 }
        );
        let before = shard.search(q, 10, None).unwrap();
        assert_eq!(
            before[0].id, "probe",
            "{engine}: pending write not searchable"
        );
        assert!((before[0].score - 1.0).abs() < 1e-5);
        assert_eq!(
            before[0].payload,
            Some(serde_json::json!({ "probe": "probe" }))
        );
        shard.build_index().unwrap();
        assert_eq!(shard.pending(), 0);
        let after = shard.search(q, 10, None).unwrap();
        assert_eq!(after[0].id, "probe", "{engine}: lost by the build");
        let stored = shard.get(None, "probe").unwrap().expect("stored");
        // Stamped after the 2,000 records before it in the log (the partition's floor).
        assert_eq!(
            (stored.vector.as_slice(), stored.ring, stored.hlc),
            (q, 7, Hlc(2_001))
        );
        assert_eq!(shard.len(), 2_001);
    }
}

#[test]
fn replaced_vector_is_searched_by_its_new_value_only() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), EngineKind::Arroy);
    common::load_rows(&shard, ds, 0..1_000, 0);
    shard.build_index().unwrap();
    let id = ds.ids[3].clone();
    let old = ds.base_vector(3).to_vec();
    let new = ds.query(1).to_vec();
    shard
        .apply(&[(1_000, probe(&new, &id, 1, 1_000_000))])
        .unwrap();
    for phase in ["before build", "after build"] {
        let by_new = shard.search(&new, 5, None).unwrap();
        assert_eq!(by_new[0].id, id, "{phase}");
        let by_old = shard.search(&old, 50, None).unwrap();
        let hit = by_old.iter().find(|h| h.id == id);
        assert!(
            hit.is_none_or(|h| (h.score - metric::cosine(&old, &new)).abs() < 1e-4),
            "{phase}: the old vector is still indexed: {hit:?}"
        );
        assert!(
            by_old.iter().filter(|h| h.id == id).count() <= 1,
            "{phase}: duplicate"
        );
        shard.build_index().unwrap();
    }
    assert_eq!(shard.len(), 1_000);
}

#[test]
fn delete_removes_before_and_after_build() {
    let ds = data();
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path(), engine);
        common::load_rows(&shard, ds, 0..1_500, 0);
        shard.build_index().unwrap();
        // One indexed item and one pending item.
        let pending_vec = ds.query(2).to_vec();
        shard
            .apply(&[(1_500, probe(&pending_vec, "pending", 3, 1))])
            .unwrap();
        let indexed = ds.ids[10].clone();
        let indexed_vec = ds.base_vector(10).to_vec();
        assert_eq!(shard.search(&indexed_vec, 1, None).unwrap()[0].id, indexed);
        let r = shard
            .apply(&[
                (
                    1_501,
                    ShardOp::Delete {
                        id: indexed.clone(),
                        tenant: None,
                        hlc: Hlc(u64::MAX),
                    },
                ),
                (
                    1_502,
                    ShardOp::Delete {
                        id: "pending".into(),
                        tenant: None,
                        hlc: Hlc(2),
                    },
                ),
            ])
            .unwrap();
        assert_eq!(r.deleted, 2);
        for phase in ["before build", "after build"] {
            assert!(
                shard.get(None, &indexed).unwrap().is_none(),
                "{engine} {phase}"
            );
            let hits = shard.search(&indexed_vec, 10, None).unwrap();
            assert!(
                !ids(&hits).contains(&indexed.as_str()),
                "{engine} {phase}: {hits:?}"
            );
            let hits = shard.search(&pending_vec, 10, None).unwrap();
            assert!(!ids(&hits).contains(&"pending"), "{engine} {phase}");
            assert_eq!(
                hits.len(),
                10,
                "{engine} {phase}: deletes must not shrink results"
            );
            assert_eq!(shard.len(), 1_499);
            shard.build_index().unwrap();
        }
    }
}

#[test]
fn later_writes_in_the_log_win_whatever_the_writers_clock_says() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (ds.base_vector(0), ds.base_vector(1), ds.base_vector(2));
    {
        let shard = open(dir.path(), EngineKind::Arroy);
        // The second writer's clock is behind the first's: its write still wins, stamped
        // just after the first (the partition's floor + 1).
        let r = shard
            .apply(&[(0, probe(a, "x", 1, 10)), (1, probe(b, "x", 2, 5))])
            .unwrap();
        assert_eq!((r.upserted, r.stale, r.next_offset), (2, 0, 2));
        let got = shard.get(None, "x").unwrap().unwrap();
        assert_eq!((got.vector.as_slice(), got.hlc), (b, Hlc(11)));

        // A delete stamped before both still deletes: it came later in the log.
        let delete = |hlc| ShardOp::Delete {
            id: "x".into(),
            tenant: None,
            hlc: Hlc(hlc),
        };
        let r = shard.apply(&[(2, delete(7))]).unwrap();
        assert_eq!(r.deleted, 1);
        assert!(shard.get(None, "x").unwrap().is_none());
        assert!(shard
            .search(a, 5, None)
            .unwrap()
            .iter()
            .all(|h| h.id != "x"));
        assert_eq!(shard.stats().tombstones, 1);

        // A stamp ahead of the floor is kept as it is (stamps stay near real time), and
        // the re-insert clears the tombstone.
        let r = shard.apply(&[(3, probe(c, "x", 3, 100))]).unwrap();
        assert_eq!(r.upserted, 1);
        let got = shard.get(None, "x").unwrap().unwrap();
        assert_eq!((got.vector.as_slice(), got.hlc), (c, Hlc(100)));
        assert_eq!(shard.stats().tombstones, 0);

        // Records of the partition for other shards advance the floor too, so every shard
        // of a partition stamps alike; a record without a stamp follows the log.
        let r = shard
            .apply(&[
                (4, ShardOp::Pass { hlc: Hlc(200) }),
                (5, probe(a, "y", 1, 0)),
            ])
            .unwrap();
        assert_eq!((r.upserted, r.next_offset), (1, 6));
        assert_eq!(shard.get(None, "y").unwrap().unwrap().hlc, Hlc(201));

        // A replay of applied offsets changes nothing.
        let r = shard
            .apply(&[(0, probe(a, "x", 1, 10)), (1, probe(b, "x", 2, 5))])
            .unwrap();
        assert_eq!((r.replayed, r.upserted), (2, 0));
        assert_eq!(shard.get(None, "x").unwrap().unwrap().vector, c);
    }
    // The floor is durable with the offset: after a reopen the next record still orders
    // after everything applied.
    let shard = open(dir.path(), EngineKind::Arroy);
    shard.apply(&[(6, probe(b, "x", 2, 1))]).unwrap();
    let got = shard.get(None, "x").unwrap().unwrap();
    assert_eq!((got.vector.as_slice(), got.hlc), (b, Hlc(202)));
    shard.build_index().unwrap();
    assert_eq!(shard.search(b, 1, None).unwrap()[0].id, "x");
}

fn tenant_put(vector: &[f32], tenant: Option<&str>, id: &str, hlc: u64) -> ShardOp {
    ShardOp::Upsert {
        id: id.into(),
        tenant: tenant.map(str::to_owned),
        ring: ring::position(tenant, id),
        vector: vector.to_vec(),
        payload: Some(serde_json::json!({ "tenant": tenant })),
        hlc: Hlc(hlc),
    }
}

/// Tenants share shards: one id written by two tenants (and with no tenant) is three
/// vectors, each read, searched and deleted on its own, across an index build and a
/// reopen.
#[test]
fn the_same_id_of_two_tenants_is_two_vectors() {
    let ds = data();
    let (a, b, none) = (ds.base_vector(0), ds.base_vector(1), ds.base_vector(2));
    let check = |shard: &Shard, a_live: bool, phase: &str| {
        let of = |tenant| shard.get(tenant, "x").unwrap().map(|v| v.vector);
        assert_eq!(of(Some("a")).is_some(), a_live, "{phase}");
        if a_live {
            assert_eq!(of(Some("a")).unwrap(), a, "{phase}");
        }
        assert_eq!(of(Some("b")).unwrap(), b, "{phase}");
        assert_eq!(of(None).unwrap(), none, "{phase}");
        let got = shard.get(Some("b"), "x").unwrap().unwrap();
        assert_eq!(got.tenant.as_deref(), Some("b"), "{phase}");
        assert_eq!(
            got.payload,
            Some(serde_json::json!({"tenant": "b"})),
            "{phase}"
        );
        assert_eq!(shard.len(), 2 + a_live as u64, "{phase}");
        // Each tenant's search finds its own `x`, and only while it lives.
        for (tenant, vector, live) in [("a", a, a_live), ("b", b, true)] {
            let hits = shard
                .search(vector, 3, Some(ring::tenant_range(tenant)))
                .unwrap();
            if live {
                assert_eq!(ids(&hits), ["x"], "{phase}: tenant {tenant}");
                assert!(hits[0].score > 0.999, "{phase}: tenant {tenant}");
            } else {
                assert!(hits.is_empty(), "{phase}: tenant {tenant}: {hits:?}");
            }
        }
        // Unfiltered, the three (or two) are distinct hits.
        let hits = shard.search(a, 10, None).unwrap();
        assert_eq!(hits.len(), 2 + a_live as usize, "{phase}");
    };
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        {
            let shard = open(dir.path(), engine);
            let r = shard
                .apply(&[
                    (0, tenant_put(a, Some("a"), "x", 1)),
                    (1, tenant_put(b, Some("b"), "x", 1)),
                    (2, tenant_put(none, None, "x", 1)),
                ])
                .unwrap();
            assert_eq!((r.upserted, r.stale), (3, 0), "{engine}");
            check(&shard, true, &format!("{engine} written"));
            shard.build_index().unwrap();
            check(&shard, true, &format!("{engine} built"));

            // Deleting tenant a's `x` leaves tenant b's and the untenanted one.
            let r = shard
                .apply(&[(
                    3,
                    ShardOp::Delete {
                        id: "x".into(),
                        tenant: Some("a".into()),
                        hlc: Hlc(1),
                    },
                )])
                .unwrap();
            assert_eq!(r.deleted, 1, "{engine}");
            check(&shard, false, &format!("{engine} deleted"));
            shard.build_index().unwrap();
            check(&shard, false, &format!("{engine} deleted, built"));
            assert_eq!(shard.stats().tombstones, 1);

            // A's tombstone holds for a, not for b: b's rewrite applies.
            let r = shard
                .apply(&[(4, tenant_put(b, Some("b"), "x", 2))])
                .unwrap();
            assert_eq!((r.upserted, r.stale), (1, 0), "{engine}");
            assert_eq!(shard.stats().tombstones, 1);
        }
        let shard = open(dir.path(), engine);
        check(&shard, false, &format!("{engine} reopened"));
    }
}

#[test]
fn reapplying_offsets_is_a_noop() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), EngineKind::Arroy);
    let batch: Vec<(u64, ShardOp)> = (0..100)
        .map(|r| (r as u64, common::upsert(ds, r, common::ring_of(r), Hlc(1))))
        .collect();
    let first = shard.apply(&batch).unwrap();
    assert_eq!((first.upserted, first.next_offset), (100, 100));
    let again = shard.apply(&batch).unwrap();
    assert_eq!(
        (again.upserted, again.replayed, again.next_offset),
        (0, 100, 100)
    );
    assert_eq!((shard.len(), shard.pending()), (100, 100));
    // Overlap: 50 replays, 50 new.
    let overlap: Vec<(u64, ShardOp)> = (50..150)
        .map(|r| (r as u64, common::upsert(ds, r, common::ring_of(r), Hlc(1))))
        .collect();
    let r = shard.apply(&overlap).unwrap();
    assert_eq!((r.replayed, r.upserted, r.next_offset), (50, 50, 150));
    assert_eq!(shard.len(), 150);
    // Offsets may have gaps (compacted log): the next offset follows the last one.
    let r = shard
        .apply(&[(1_000, probe(ds.query(0), "gap", 1, 1))])
        .unwrap();
    assert_eq!(r.next_offset, 1_001);
    assert!(shard.apply(&[]).unwrap().upserted == 0);
    assert_eq!(shard.next_offset(), 1_001);
}

#[test]
fn restart_keeps_offset_contents_and_results() {
    let ds = data();
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let (offset, len, pending, results) = {
            let shard = open(dir.path(), engine);
            common::load_rows(&shard, ds, 0..1_500, 0);
            shard.build_index().unwrap();
            common::load_rows(&shard, ds, 1_500..2_000, 0); // a pending tail
            shard
                .apply(&[(
                    2_000,
                    ShardOp::Delete {
                        id: ds.ids[5].clone(),
                        tenant: None,
                        hlc: Hlc(u64::MAX),
                    },
                )])
                .unwrap();
            let results: Vec<Vec<Hit>> = (0..20)
                .map(|q| shard.search(ds.query(q), 10, None).unwrap())
                .collect();
            (shard.next_offset(), shard.len(), shard.pending(), results)
        };
        assert_eq!(offset, 2_001);
        let shard = open(dir.path(), engine);
        assert_eq!(shard.next_offset(), offset, "{engine}");
        assert_eq!((shard.len(), shard.pending()), (len, pending), "{engine}");
        for (q, expected) in results.iter().enumerate() {
            assert_eq!(
                &shard.search(ds.query(q), 10, None).unwrap(),
                expected,
                "{engine} query {q}"
            );
        }
        assert!(shard.get(None, &ds.ids[5]).unwrap().is_none());
    }
}

#[test]
fn tenant_range_returns_only_its_vectors_and_their_true_nearest() {
    let ds = data();
    let half = 1u64 << 63;
    // Rows 0..2000: even rows in tenant A = [0, 2^63), odd rows in B = [2^63, ∞);
    // rows 2000..2030 in a tiny tenant T = [2^40, 2^40 + 1000) inside A.
    let ring = |r: usize| -> u64 {
        if r >= 2_000 {
            (1u64 << 40) + r as u64 - 2_000
        } else if r.is_multiple_of(2) {
            (r as u64) << 20
        } else {
            half + ((r as u64) << 20)
        }
    };
    let a = RingRange {
        start: 0,
        end: Some(half),
    };
    let b = RingRange {
        start: half,
        end: None,
    };
    let t = RingRange {
        start: 1 << 40,
        end: Some((1 << 40) + 1_000),
    };
    let in_range = |range: &RingRange, rows: std::ops::Range<usize>| -> Vec<usize> {
        rows.filter(|&r| range.contains(ring(r))).collect()
    };
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path(), engine);
        let ops = |rows: std::ops::Range<usize>| -> Vec<(u64, ShardOp)> {
            rows.map(|r| (r as u64, common::upsert(ds, r, ring(r), Hlc(1))))
                .collect()
        };
        shard.apply(&ops(0..1_500)).unwrap();
        shard.build_index().unwrap();
        shard.apply(&ops(1_500..2_030)).unwrap(); // a pending tail across all tenants
        for phase in ["with a pending tail", "after build"] {
            for (name, range) in [("A", a), ("B", b), ("T", t)] {
                let members = in_range(&range, 0..2_030);
                for q in 0..10 {
                    let query = ds.query(q);
                    let hits = shard.search(query, 10, Some(range)).unwrap();
                    assert_eq!(hits.len(), 10.min(members.len()), "{engine} {phase} {name}");
                    for h in &hits {
                        let row = ds.ids.iter().position(|id| *id == h.id).unwrap();
                        assert!(
                            range.contains(ring(row)),
                            "{engine} {phase} {name}: {} outside",
                            h.id
                        );
                    }
                    // The true nearest member must be found (exact engine: all of them).
                    let best = members
                        .iter()
                        .map(|&r| metric::cosine(query, ds.base_vector(r)))
                        .fold(f32::MIN, f32::max);
                    assert!(
                        hits[0].score >= best - 1e-5,
                        "{engine} {phase} {name} q{q}: {} < {best}",
                        hits[0].score
                    );
                    if name == "T" {
                        // A small tenant is searched exhaustively inside arroy too.
                        let mut truth: Vec<f32> = members
                            .iter()
                            .map(|&r| metric::cosine(query, ds.base_vector(r)))
                            .collect();
                        truth.sort_by(|x, y| y.total_cmp(x));
                        for (h, s) in hits.iter().zip(&truth) {
                            assert!((h.score - s).abs() < 1e-5, "{engine} {phase} T q{q}");
                        }
                    }
                }
            }
            // A range with no vectors.
            let empty = RingRange {
                start: 5,
                end: Some(6),
            };
            assert!(shard
                .search(ds.query(0), 10, Some(empty))
                .unwrap()
                .is_empty());
            shard.build_index().unwrap();
        }
    }
}

#[test]
fn reopening_with_another_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), EngineKind::Arroy));
    let wrong_dim = ShardConfig::new(data().dim + 1, Distance::Cosine, EngineKind::Arroy);
    assert!(matches!(
        Shard::open(dir.path(), wrong_dim),
        Err(Error::ConfigMismatch {
            field: "dimension",
            ..
        })
    ));
    let wrong_distance = ShardConfig::new(data().dim, Distance::Dot, EngineKind::Arroy);
    assert!(matches!(
        Shard::open(dir.path(), wrong_distance),
        Err(Error::ConfigMismatch {
            field: "distance",
            ..
        })
    ));
    let shard = open(dir.path(), EngineKind::Arroy);
    assert!(matches!(
        shard.search(&[1.0], 1, None),
        Err(Error::DimensionMismatch { .. })
    ));
}

#[test]
fn bad_ops_are_rejected_and_do_not_wedge_the_shard() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), EngineKind::Arroy);
    let mut nan = ds.base_vector(0).to_vec();
    nan[3] = f32::NAN;
    let r = shard
        .apply(&[
            (0, probe(&[1.0, 2.0], "short", 1, 1)),
            (1, probe(&nan, "nan", 1, 1)),
            (2, probe(&vec![0.0; ds.dim], "zero", 1, 1)),
            (3, probe(ds.base_vector(0), "", 1, 1)),
            (4, probe(ds.base_vector(0), "good", 1, 1)),
        ])
        .unwrap();
    let offsets: Vec<u64> = r.rejected.iter().map(|x| x.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert_eq!((r.upserted, r.next_offset, shard.len()), (1, 5, 1));
}

#[test]
fn euclidean_and_dot_scores_follow_the_convention() {
    let ds = data();
    for distance in [Distance::Euclidean, Distance::Dot] {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let config = ShardConfig::new(ds.dim, distance, engine);
            let shard = Shard::open(dir.path(), config).unwrap();
            // Scale rows so dot and euclidean disagree with cosine.
            let ops: Vec<(u64, ShardOp)> = (0..500)
                .map(|r| {
                    let v: Vec<f32> = ds
                        .base_vector(r)
                        .iter()
                        .map(|x| x * (1.0 + (r % 7) as f32))
                        .collect();
                    (r as u64, probe(&v, &format!("r{r}"), 1, 1))
                })
                .collect();
            shard.apply(&ops).unwrap();
            shard.build_index().unwrap();
            let q = ds.query(0);
            let hits = shard.search(q, 5, None).unwrap();
            let mut expected: Vec<f32> = ops
                .iter()
                .map(|(_, op)| match op {
                    ShardOp::Upsert { vector, .. } => match distance {
                        Distance::Euclidean => -metric::l2_squared(q, vector).sqrt(),
                        _ => metric::dot(q, vector),
                    },
                    ShardOp::Delete { .. } | ShardOp::Skip | ShardOp::Pass { .. } => {
                        unreachable!("only upserts here")
                    }
                })
                .collect();
            expected.sort_by(|x, y| y.total_cmp(x));
            assert!(
                (hits[0].score - expected[0]).abs() < 1e-3,
                "{distance:?} {engine}: {} vs {}",
                hits[0].score,
                expected[0]
            );
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}

#[test]
fn searches_run_while_one_thread_applies_and_another_builds() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(open(dir.path(), EngineKind::Arroy));
    common::load_rows(&shard, ds, 0..1_000, 0);
    shard.build_index().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let searchers: Vec<_> = (0..2)
        .map(|t| {
            let (shard, done) = (shard.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::Acquire) || n == 0 {
                    let hits = shard.search(data().query(t + n % 50), 10, None).unwrap();
                    assert_eq!(hits.len(), 10);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let builder = {
        let (shard, done) = (shard.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                shard.build_index().unwrap();
            }
        })
    };
    for chunk in (1_000..3_000).collect::<Vec<_>>().chunks(100) {
        common::load_rows(&shard, ds, chunk[0]..chunk[chunk.len() - 1] + 1, 0);
    }
    done.store(true, Ordering::Release);
    builder.join().unwrap();
    for s in searchers {
        assert!(s.join().unwrap() > 0);
    }
    shard.build_index().unwrap();
    assert_eq!(
        (shard.len(), shard.pending(), shard.next_offset()),
        (3_000, 0, 3_000)
    );
    let v = ds.base_vector(2_999);
    assert_eq!(shard.search(v, 1, None).unwrap()[0].id, ds.ids[2_999]);
}

/// A search's records are read from the snapshot it searched ([`Shard::search_found`]): a
/// hit replaced or deleted after the search, before its record is read (a router reads
/// only the records of the hits its merge keeps), still answers with the id and payload
/// of the vector that was scored; the next search sees the writes. Payloads come as the
/// stored JSON text, byte for byte what serde_json writes of the parsed payload.
#[test]
fn found_hits_read_their_records_from_the_searched_snapshot() {
    let ds = data();
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path(), engine);
        common::load_rows(&shard, ds, 0..500, 0);
        shard.build_index().unwrap();
        let q = ds.query(0);
        shard.apply(&[(5_000, probe(q, "probe", 7, 1))]).unwrap();
        let eager = shard.search(q, 10, None).unwrap();
        let found = shard
            .search_found(q, 10, None, hektor_indexers::SearchOptions::default())
            .unwrap();
        assert_eq!(found.len(), eager.len(), "{engine}");
        assert_eq!(eager[0].id, "probe", "{engine}");
        let gone = eager[1].id.clone();
        let mut replaced = probe(q, "probe", 7, 2);
        if let ShardOp::Upsert { payload, .. } = &mut replaced {
            *payload = Some(serde_json::json!({ "probe": "replaced" }));
        }
        let delete = ShardOp::Delete {
            id: gone.clone(),
            tenant: None,
            hlc: Hlc(3),
        };
        let r = shard.apply(&[(5_001, replaced), (5_002, delete)]).unwrap();
        assert_eq!((r.upserted, r.deleted), (1, 1), "{engine}");
        for (i, hit) in eager.iter().enumerate() {
            let raw = found.raw_hit(i, true).unwrap();
            assert_eq!((raw.id.as_str(), raw.score), (hit.id.as_str(), hit.score));
            assert_eq!(found.score(i), hit.score);
            let text = raw.payload.as_ref().map(|p| p.get().to_owned());
            let expected = hit
                .payload
                .as_ref()
                .map(|p| serde_json::to_string(p).unwrap());
            assert_eq!(text, expected, "{engine}: hit {i}");
            assert!(found.raw_hit(i, false).unwrap().payload.is_none());
        }
        drop(found);
        let now = shard.search(q, 10, None).unwrap();
        assert_eq!(
            now[0].payload,
            Some(serde_json::json!({ "probe": "replaced" })),
            "{engine}"
        );
        assert!(!ids(&now).contains(&gone.as_str()), "{engine}");
    }
}

/// The footprint users rely on: a shard's vectors take little more than their raw bytes
/// (they were one per 4 KiB page, 2.7x, before fresh items were appended), and replacing
/// vectors keeps them right.
#[test]
fn stored_vectors_take_little_more_than_their_bytes() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), EngineKind::Hnsw);
    for chunk in 0..10 {
        common::load_rows(&shard, ds, chunk * 200..(chunk + 1) * 200, 0);
    }
    let raw = 2_000 * ds.dim as u64 * 4;
    let footprint = shard.footprint().unwrap();
    let vectors = footprint.store.databases["vectors"];
    assert_eq!(vectors.entries, 2_000);
    let ratio = vectors.bytes as f64 / raw as f64;
    assert!(ratio < 1.45, "vectors take {ratio:.2}x their raw bytes");
    // Replacing vectors (a plain put on existing items) keeps lookups right.
    common::load_rows(&shard, ds, 0..100, 2_000);
    assert_eq!(shard.len(), 2_000);
    let hits = shard.search(ds.base_vector(50), 1, None).unwrap();
    assert!(hits[0].score > 0.999, "{hits:?}");
}

/// The hot shard answers its graph's hits from the records it holds in memory (issue
/// #16), and they are always the records of the vectors scored: a snapshot taken before a
/// rewrite keeps the old record until it is dropped, a build publishes the new one, a
/// crdt merge that changes only the payload shows at once, and a reopened shard answers
/// the same.
#[test]
fn hot_hits_take_their_records_from_memory_and_never_a_stale_one() {
    let ds = data();
    let dir = tempfile::tempdir().unwrap();
    let config = ShardConfig {
        merge: hektor_topics::record::MergePolicy::Crdt,
        ..ShardConfig::new(ds.dim, Distance::Cosine, EngineKind::Hnsw)
    };
    let shard = Shard::open(dir.path(), config.clone()).unwrap();
    common::load_rows(&shard, ds, 0..500, 0);
    let q = ds.query(0);
    let with = |payload: serde_json::Value, hlc: u64| ShardOp::Upsert {
        id: "probe".into(),
        tenant: None,
        ring: 7,
        vector: q.to_vec(),
        payload: Some(payload),
        hlc: Hlc(hlc),
    };
    shard
        .apply(&[(5_000, with(serde_json::json!({ "a": 1 }), 100))])
        .unwrap();
    shard.build_index().unwrap();
    assert!(shard.record_cache_bytes() > 500 * 4, "the records are held");
    let payload_of = |found: &hektor_indexers::Found<'_>| {
        let hit = found.raw_hit(0, true).unwrap();
        assert_eq!(hit.id, "probe");
        serde_json::from_str::<serde_json::Value>(hit.payload.unwrap().get()).unwrap()
    };
    let search = || {
        shard
            .search_found(q, 10, None, hektor_indexers::SearchOptions::default())
            .unwrap()
    };
    let before = search();
    assert_eq!(payload_of(&before), serde_json::json!({ "a": 1 }));
    // Every hit the cache answers agrees with LMDB's record of the same snapshot.
    let eager = shard.search(q, 10, None).unwrap();
    for (i, hit) in eager.iter().enumerate() {
        assert_eq!(before.raw_hit(i, true).unwrap().id, hit.id);
    }

    // A newer write (pending, so the tail answers it), then its build.
    shard
        .apply(&[(5_001, with(serde_json::json!({ "a": 2 }), 200))])
        .unwrap();
    assert_eq!(payload_of(&search()), serde_json::json!({ "a": 2 }));
    assert_eq!(
        payload_of(&before),
        serde_json::json!({ "a": 1 }),
        "old snapshot"
    );
    shard.build_index().unwrap();
    assert_eq!(
        payload_of(&before),
        serde_json::json!({ "a": 1 }),
        "old snapshot"
    );
    assert_eq!(payload_of(&search()), serde_json::json!({ "a": 2 }));

    // An older write with a new field: crdt merges the field in, the vector stays (no
    // build is pending), and the next search shows the merged payload.
    let mirrored = hektor_indexers::Provenance {
        origin: "east".into(),
        digest: 1,
        seen: None,
    };
    let r = shard
        .apply_from(
            hektor_indexers::Source::Mirror { region: "east" },
            &[(0, with(serde_json::json!({ "b": 3 }), 150))],
            &[mirrored],
        )
        .unwrap();
    assert_eq!(r.upserted, 1, "the field was merged in");
    assert_eq!(
        shard.stats().pending,
        0,
        "a field merge leaves the vector as it was"
    );
    assert_eq!(payload_of(&search()), serde_json::json!({ "a": 2, "b": 3 }));
    drop(before);

    // Reopened: the records are read back into memory and answer the same.
    drop(shard);
    let shard = Shard::open(dir.path(), config).unwrap();
    assert!(shard.record_cache_bytes() > 500 * 4);
    let found = shard
        .search_found(q, 10, None, hektor_indexers::SearchOptions::default())
        .unwrap();
    assert_eq!(payload_of(&found), serde_json::json!({ "a": 2, "b": 3 }));

    // Under another engine nothing is held.
    drop(found);
    shard.set_engine(EngineKind::Exact).unwrap();
    assert_eq!(shard.record_cache_bytes(), 0);
}
