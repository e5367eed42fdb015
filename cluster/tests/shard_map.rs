//! The shard map's invariants, asserted: applying splits, merges, moves and tier changes
//! keeps the ring tiled and the epoch growing; invalid actions are errors, not panics;
//! lookups agree with the ranges; JSON round-trips and is validated on the way in; size
//! splits cut at the data median. Owns no production code.

use hektor_cluster::placement::Strategy;
use hektor_cluster::{Error, NodeSpec, Shard, ShardMap, ShardSize};
use hektor_topics::record::{PlanAction, PlanChange, RingRange, Tier};
use hektor_topics::ring;
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

fn shard(start: u64, end: Option<u64>, replicas: &[&str]) -> Shard {
    Shard {
        range: RingRange { start, end },
        replicas: replicas.iter().map(|r| r.to_string()).collect(),
        tier: Tier::Hot,
    }
}

fn two_halves() -> ShardMap {
    ShardMap::new(
        "docs",
        0,
        vec![
            shard(1 << 63, None, &["b", "c"]),
            shard(0, Some(1 << 63), &["a", "b"]),
        ],
    )
    .unwrap()
}

/// Ring tiled exactly: sorted, first at 0, each end the next start, last to 2^64.
fn assert_tiled(m: &ShardMap) {
    let s = m.shards();
    assert_eq!(s[0].range.start, 0);
    for w in s.windows(2) {
        assert_eq!(w[0].range.end, Some(w[1].range.start));
        assert!(w[1].range.start > w[0].range.start);
    }
    assert_eq!(s[s.len() - 1].range.end, None);
}

#[test]
fn invalid_maps_are_refused() {
    let bad = [
        vec![],
        vec![shard(1, None, &["a"])],
        vec![shard(0, Some(10), &["a"])],
        vec![shard(0, Some(10), &["a"]), shard(11, None, &["a"])],
        vec![shard(0, Some(10), &["a"]), shard(5, None, &["a"])],
        vec![shard(0, Some(0), &["a"]), shard(0, None, &["a"])],
        vec![shard(0, None, &["a"]), shard(5, None, &["a"])],
        vec![shard(0, None, &[])],
        vec![shard(0, None, &["a", "a"])],
        vec![shard(0, None, &[""])],
    ];
    for shards in bad {
        let r = ShardMap::new("docs", 0, shards.clone());
        assert!(
            matches!(
                r,
                Err(Error::InvalidShardMap(_)) | Err(Error::InvalidNodeId(_))
            ),
            "{shards:?}"
        );
    }
    assert!(ShardMap::new("", 0, vec![shard(0, None, &["a"])]).is_err());
}

#[test]
fn actions_produce_the_next_epoch_and_bad_actions_are_errors() {
    let m = two_halves();
    let left = m.shards()[0].range;
    let right = m.shards()[1].range;
    // Split outside, at the start, at the end, of an unknown shard.
    for at in [0, 1 << 63, (1 << 63) + 5] {
        assert!(matches!(
            m.apply(&PlanAction::Split { shard: left, at }),
            Err(Error::SplitOutside { .. })
        ));
    }
    let unknown = RingRange {
        start: 0,
        end: Some(5),
    };
    assert!(matches!(
        m.apply(&PlanAction::Split {
            shard: unknown,
            at: 2
        }),
        Err(Error::UnknownShard { .. })
    ));
    // Merge of shards with different replicas, in the wrong order.
    assert!(matches!(
        m.apply(&PlanAction::Merge { left, right }),
        Err(Error::MergeMismatch { .. })
    ));
    assert!(matches!(
        m.apply(&PlanAction::Merge {
            left: right,
            right: left
        }),
        Err(Error::NotAdjacent { .. })
    ));
    // Moves.
    let mv = |from: &str, to: &str| PlanAction::Move {
        shard: left,
        from: from.into(),
        to: to.into(),
    };
    assert!(matches!(
        m.apply(&mv("c", "d")),
        Err(Error::ReplicaNotFound { .. })
    ));
    assert!(matches!(
        m.apply(&mv("a", "b")),
        Err(Error::DuplicateReplica { .. })
    ));
    assert!(matches!(
        m.apply(&mv("a", "")),
        Err(Error::InvalidNodeId(_))
    ));
    let m1 = m.apply(&mv("a", "c")).unwrap();
    assert_eq!(m1.epoch(), 1);
    assert_eq!(m1.shards()[0].replicas, vec!["c", "b"]);
    assert_eq!(m.epoch(), 0, "apply leaves the old map alone");
    // Now both shards are on {b, c}: they merge, into the full ring.
    let m2 = m1.apply(&PlanAction::Merge { left, right }).unwrap();
    assert_eq!(m2.epoch(), 2);
    assert_eq!(m2.shards().len(), 1);
    assert_eq!(m2.shards()[0].range, RingRange::FULL);
    // Tier.
    let m3 = m2
        .apply(&PlanAction::SetTier {
            shard: RingRange::FULL,
            tier: Tier::Cold,
        })
        .unwrap();
    assert_eq!(m3.shards()[0].tier, Tier::Cold);
    // Different tiers do not merge.
    let m4 = m3
        .apply(&PlanAction::Split {
            shard: RingRange::FULL,
            at: 77,
        })
        .unwrap();
    let (l, r) = (m4.shards()[0].range, m4.shards()[1].range);
    let m5 = m4
        .apply(&PlanAction::SetTier {
            shard: r,
            tier: Tier::Hot,
        })
        .unwrap();
    assert!(matches!(
        m5.apply(&PlanAction::Merge { left: l, right: r }),
        Err(Error::MergeMismatch { .. })
    ));
}

#[test]
fn plan_changes_must_be_for_this_collection_and_the_next_epoch() {
    let m = two_halves();
    let change = |collection: &str, epoch| PlanChange {
        collection: collection.into(),
        epoch,
        action: PlanAction::SetTier {
            shard: m.shards()[0].range,
            tier: Tier::Warm,
        },
        reason: "test".into(),
        time_ms: 0,
        place: None,
    };
    assert!(matches!(
        m.apply_change(&change("other", 1)),
        Err(Error::WrongCollection { .. })
    ));
    assert!(matches!(
        m.apply_change(&change("docs", 0)),
        Err(Error::EpochMismatch { current: 0, got: 0 })
    ));
    assert!(matches!(
        m.apply_change(&change("docs", 2)),
        Err(Error::EpochMismatch { .. })
    ));
    assert_eq!(m.apply_change(&change("docs", 1)).unwrap().epoch(), 1);
    let at_max = ShardMap::new("docs", u64::MAX, m.shards().to_vec()).unwrap();
    assert!(matches!(
        at_max.apply(&PlanAction::SetTier {
            shard: m.shards()[0].range,
            tier: Tier::Warm
        }),
        Err(Error::EpochOverflow(_))
    ));
}

#[test]
fn json_round_trips_and_is_validated() {
    let m = two_halves();
    let json = serde_json::to_string(&m).unwrap();
    let back: ShardMap = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let overlapping = r#"{"collection":"docs","epoch":1,"shards":[
        {"range":{"start":0,"end":10},"replicas":["a"]},
        {"range":{"start":5,"end":null},"replicas":["a"]}]}"#;
    let err = serde_json::from_str::<ShardMap>(overlapping).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
}

#[test]
fn uniform_maps_follow_the_partitions_and_the_placement() {
    let nodes = ["a", "b", "c", "d"].map(|id| NodeSpec::new(id).with_zone(format!("z-{id}")));
    let placement = Strategy::ConsistentHash { vnodes: 50 }
        .build(nodes)
        .unwrap();
    let m = ShardMap::uniform("docs", 16, &*placement, 3).unwrap();
    assert_tiled(&m);
    for (i, s) in m.shards().iter().enumerate() {
        assert_eq!(s.range, ring::partition_range(i as u32, 16));
        assert_eq!(s.replicas, placement.replicas(s.range.start, 3).unwrap());
    }
    assert!(ShardMap::uniform("docs", 0, &*placement, 1).is_err());
    assert!(ShardMap::uniform("docs", 4, &*placement, 5).is_err());
}

#[test]
fn lookups_and_tenant_ranges() {
    let m = two_halves()
        .apply(&PlanAction::Split {
            shard: RingRange {
                start: 0,
                end: Some(1 << 63),
            },
            at: 1000,
        })
        .unwrap();
    assert_eq!(m.shard_for(0).range.end, Some(1000));
    assert_eq!(m.shard_for(999).range.end, Some(1000));
    assert_eq!(m.shard_for(1000).range.start, 1000);
    assert_eq!(m.shard_for(u64::MAX).range.end, None);
    assert_eq!(
        m.overlapping(RingRange {
            start: 0,
            end: Some(1000)
        })
        .len(),
        1
    );
    assert_eq!(
        m.overlapping(RingRange {
            start: 0,
            end: Some(1001)
        })
        .len(),
        2
    );
    assert_eq!(m.overlapping(RingRange::FULL).len(), 3);
    assert_eq!(
        m.overlapping(RingRange {
            start: 5,
            end: Some(5)
        })
        .len(),
        1
    );
    let t = ring::tenant_range("acme");
    for s in m.overlapping(t) {
        assert!(s.range.contains(t.start) || t.contains(s.range.start));
    }
}

#[test]
fn size_splits_cut_oversized_shards_at_their_median() {
    let m = two_halves();
    let (l, r) = (m.shards()[0].range, m.shards()[1].range);
    let sizes = [
        ShardSize {
            range: l,
            size: 2_000,
            median: 12_345,
        },
        ShardSize {
            range: r,
            size: 500,
            median: (1 << 63) + 7,
        },
        // Stale: not a shard of this map.
        ShardSize {
            range: RingRange {
                start: 0,
                end: Some(99),
            },
            size: 9_000,
            median: 50,
        },
        // Oversized but all data at the start: cannot be split by position.
        ShardSize {
            range: r,
            size: 9_000,
            median: 1 << 63,
        },
    ];
    let actions = m.split_by_size(&sizes, 1_000);
    assert_eq!(
        actions,
        vec![PlanAction::Split {
            shard: l,
            at: 12_345
        }]
    );
    let next = m.apply(&actions[0]).unwrap();
    assert_eq!(next.shard_for(12_344).range.end, Some(12_345));
    assert_eq!(next.shard_for(12_345).range.start, 12_345);
    assert!(m.split_by_size(&sizes, 10_000).is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Split(usize, u64),
    Merge(usize),
    Move(usize, u8),
    Tier(usize, u8),
    /// An action on a range that is not a shard.
    Bogus(u64, u64),
}

fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (any::<usize>(), any::<u64>()).prop_map(|(i, at)| Op::Split(i, at)),
            2 => any::<usize>().prop_map(Op::Merge),
            2 => (any::<usize>(), 0u8..5).prop_map(|(i, n)| Op::Move(i, n)),
            1 => (any::<usize>(), 0u8..3).prop_map(|(i, t)| Op::Tier(i, t)),
            1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Op::Bogus(a, b)),
        ],
        1..60,
    )
}

proptest! {
    /// Any sequence of actions, valid or not: every success is tiled, validated, one epoch
    /// up and round-trips through JSON; every failure leaves the map as it was; lookups
    /// agree with the ranges.
    #[test]
    fn applying_actions_keeps_the_ring_tiled(script in ops(), probes in prop::collection::vec(any::<u64>(), 10)) {
        let mut m = ShardMap::new("c", 0, vec![shard(0, None, &["n0", "n1"])]).unwrap();
        for op in &script {
            let s = m.shards();
            let pick = |i: usize| s[i % s.len()].range;
            let action = match *op {
                Op::Split(i, at) => {
                    let shard = pick(i);
                    // Half the time a point inside the shard, else anywhere.
                    let width = shard.end.map_or(u64::MAX - shard.start, |e| e - shard.start);
                    let at = if at % 2 == 0 && width > 1 { shard.start + 1 + at % (width - 1) } else { at };
                    PlanAction::Split { shard, at }
                }
                Op::Merge(i) => PlanAction::Merge { left: pick(i), right: pick(i + 1) },
                Op::Move(i, n) => {
                    let shard = pick(i);
                    let from = s[i % s.len()].replicas[0].clone();
                    PlanAction::Move { shard, from, to: format!("n{n}") }
                }
                Op::Tier(i, t) => PlanAction::SetTier {
                    shard: pick(i),
                    tier: [Tier::Hot, Tier::Warm, Tier::Cold][t as usize],
                },
                Op::Bogus(a, b) => PlanAction::Split { shard: RingRange { start: a, end: Some(b) }, at: a / 2 + b / 2 },
            };
            match m.apply(&action) {
                Ok(next) => {
                    prop_assert_eq!(next.epoch(), m.epoch() + 1);
                    assert_tiled(&next);
                    prop_assert!(next.validate().is_ok());
                    let json = serde_json::to_string(&next).unwrap();
                    prop_assert_eq!(&serde_json::from_str::<ShardMap>(&json).unwrap(), &next);
                    m = next;
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        for &p in &probes {
            let s = m.shard_for(p);
            prop_assert!(s.range.contains(p));
            prop_assert_eq!(m.overlapping(RingRange { start: p, end: Some(p.saturating_add(1)) }).len(), 1);
        }
    }
}
