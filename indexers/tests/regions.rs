//! Two regions' shards of one range, each applying its own log and the other's log as
//! MirrorMaker 2 delivers it (in other batches, with redelivered copies at new offsets,
//! across a restart), end with the same vectors, payloads, tombstones and stamps, and
//! that state is the one the merge rule defines: per id, the greatest (effective hlc,
//! origin) wins. Under the `crdt` policy the vector is such a register and the payload
//! merges per field: both regions end with what `hektor_merge::Merged` (the reference
//! model) computes from the same writes.

use std::collections::{BTreeMap, HashSet};

use hektor_indexers::{EngineKind, Provenance, Shard, ShardConfig, ShardOp, Source};
use hektor_merge::SourceFloor;
use hektor_merge::{Merged, Op, Policy, Stamp, Write};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{Distance, MergePolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const IDS: usize = 40;

/// One record of a region's log.
#[derive(Clone)]
struct Entry {
    op: ShardOp,
    provenance: Provenance,
}

/// A region's log: upserts and deletes of shared ids, stamped by writers whose clocks are
/// a few ms apart (so the partition floor matters), accepted in `region`.
/// With `fields`, each upsert sets a few of the fields `a`, `b`, `c` (now and then to
/// `null`), so concurrent writes of an id touch different fields.
fn region_log(region: &str, skew_ms: u64, seed: u64, n: usize, fields: bool) -> Vec<Entry> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|k| {
            let id = format!("id-{}", rng.random_range(0..IDS));
            let hlc = Hlc::new(
                1_000_000 + skew_ms + 2 * k as u64 + rng.random_range(0..6),
                0,
            );
            let op = if rng.random_bool(0.1) {
                ShardOp::Delete {
                    id: id.clone(),
                    tenant: None,
                    hlc,
                }
            } else {
                ShardOp::Upsert {
                    id: id.clone(),
                    tenant: None,
                    ring: hektor_topics::ring::position(None, &id),
                    vector: vec![k as f32 + 1.0, skew_ms as f32, 1.0, 0.5],
                    payload: Some(if fields {
                        let mut map = serde_json::Map::new();
                        for f in ["a", "b", "c"] {
                            if rng.random_bool(0.4) {
                                let v = if rng.random_bool(0.15) {
                                    serde_json::Value::Null
                                } else {
                                    json!(format!("{region}{k}"))
                                };
                                map.insert(f.to_owned(), v);
                            }
                        }
                        serde_json::Value::Object(map)
                    } else {
                        json!({"region": region, "k": k})
                    }),
                    hlc,
                }
            };
            let bytes = format!("{region}/{k}/{op:?}");
            Entry {
                op,
                provenance: Provenance {
                    origin: region.to_owned(),
                    digest: hektor_merge::digest(bytes.as_bytes()),
                    seen: None,
                },
            }
        })
        .collect()
}

/// What MirrorMaker delivers: the log in order, but now and then it rewinds and sends
/// again what it had sent (new offsets in the target topic, the same bytes).
fn mirrored(log: &[Entry], seed: u64) -> (Vec<Entry>, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut copies = 0;
    for i in 0..log.len() {
        out.push(log[i].clone());
        if rng.random_bool(0.03) {
            let back = rng.random_range(1..=40.min(i + 1));
            out.extend_from_slice(&log[i + 1 - back..=i]);
            copies += back;
        }
    }
    (out, copies)
}

fn open(dir: &std::path::Path, merge: MergePolicy) -> Shard {
    let config = ShardConfig {
        merge,
        ..ShardConfig::new(4, Distance::Euclidean, EngineKind::Exact)
    };
    Shard::open(dir, config).unwrap()
}

/// Apply `local` (this region's log) and `mirror` (another region's, as delivered) in
/// interleaved batches of random sizes, reopening the shard half-way. Returns the
/// redelivered copies the shard recognised.
fn follow(
    dir: &std::path::Path,
    local: &[Entry],
    mirror_region: &str,
    mirror: &[Entry],
    seed: u64,
    merge: MergePolicy,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut shard = open(dir, merge);
    let (mut l, mut m) = (0usize, 0usize);
    let mut duplicates = 0;
    let mut reopened = false;
    while l < local.len() || m < mirror.len() {
        let take_local = m >= mirror.len() || (l < local.len() && rng.random_bool(0.5));
        let (log, at, source) = if take_local {
            (local, &mut l, Source::Local)
        } else {
            (
                mirror,
                &mut m,
                Source::Mirror {
                    region: mirror_region,
                },
            )
        };
        let n = rng.random_range(1..=25).min(log.len() - *at);
        let ops: Vec<(u64, ShardOp)> = (*at..*at + n)
            .map(|i| (i as u64, log[i].op.clone()))
            .collect();
        let prov: Vec<Provenance> = (*at..*at + n).map(|i| log[i].provenance.clone()).collect();
        let report = shard.apply_from(source, &ops, &prov).unwrap();
        duplicates += report.duplicates;
        *at += n;
        if !reopened && m > mirror.len() / 2 {
            drop(shard);
            shard = open(dir, merge);
            reopened = true;
        }
    }
    assert_eq!(shard.next_offset(), local.len() as u64);
    assert_eq!(
        shard.source_next_offset(mirror_region).unwrap(),
        mirror.len() as u64
    );
    duplicates
}

/// An id's live vector and winning stamp, or `None` when deleted.
type Winner = Option<(Vec<f32>, Hlc, String)>;

/// The state the rule defines: every region's log stamped by its own floor, then per id
/// the greatest (hlc, origin).
fn by_definition(logs: &[&[Entry]]) -> BTreeMap<String, Winner> {
    type Stamped = ((Hlc, String), Option<Vec<f32>>);
    let mut best: BTreeMap<String, Stamped> = BTreeMap::new();
    for log in logs {
        let mut floor = SourceFloor::default();
        for e in log.iter() {
            let (id, own, vector) = match &e.op {
                ShardOp::Upsert {
                    id, hlc, vector, ..
                } => (id, *hlc, Some(vector.clone())),
                ShardOp::Delete { id, hlc, .. } => (id, *hlc, None),
                _ => unreachable!(),
            };
            let stamp = (
                floor.admit(e.provenance.digest, own).hlc(),
                e.provenance.origin.clone(),
            );
            if best.get(id).is_none_or(|(s, _)| &stamp > s) {
                best.insert(id.clone(), (stamp, vector));
            }
        }
    }
    best.into_iter()
        .map(|(id, ((hlc, origin), v))| (id, v.map(|v| (v, hlc, origin))))
        .collect()
}

#[test]
fn two_regions_merge_to_the_same_state_whatever_the_order_and_redeliveries() {
    let east = region_log("east", 0, 1, 400, false);
    let west = region_log("west", 3, 2, 400, false);
    let (west_in_east, west_copies) = mirrored(&west, 3);
    let (east_in_west, east_copies) = mirrored(&east, 4);
    assert!(
        west_copies > 0 && east_copies > 0,
        "the test must redeliver"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (e_dir, w_dir) = (tmp.path().join("east"), tmp.path().join("west"));
    let lww = MergePolicy::Lww;
    assert_eq!(
        follow(&e_dir, &east, "west", &west_in_east, 5, lww),
        west_copies
    );
    assert_eq!(
        follow(&w_dir, &west, "east", &east_in_west, 6, lww),
        east_copies
    );

    let (e, w) = (open(&e_dir, lww), open(&w_dir, lww));
    let expected = by_definition(&[&east, &west]);
    let mut live = HashSet::new();
    for (id, want) in &expected {
        let (a, b) = (e.get(None, id).unwrap(), w.get(None, id).unwrap());
        assert_eq!(a, b, "regions disagree on {id}");
        let got = a.map(|v| (v.vector, v.hlc, v.origin));
        assert_eq!(&got, want, "{id} is not the greatest stamp's write");
        if let Some((_, _, origin)) = got {
            live.insert(origin);
        }
    }
    assert_eq!(e.len(), w.len());
    assert_eq!(
        live.len(),
        2,
        "both regions' writes win somewhere: the test has real conflicts"
    );
}

/// A write made knowing another region's write of the same id (its `seen` covers that
/// write's stamp) is not a conflict; one made without is, in both regions, and the id
/// says so whichever write won.
#[test]
fn concurrent_writes_are_counted_and_causally_later_ones_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = open(tmp.path(), MergePolicy::Lww);
    let upsert = |id: &str, ms: u64| ShardOp::Upsert {
        id: id.into(),
        tenant: None,
        ring: hektor_topics::ring::position(None, id),
        vector: vec![1.0, 2.0, 3.0, ms as f32],
        payload: None,
        hlc: Hlc::new(ms, 0),
    };
    let from = |origin: &str, seen: &[(&str, u64)]| Provenance {
        origin: origin.into(),
        digest: hektor_merge::digest(format!("{origin}{seen:?}").as_bytes()),
        seen: Some(
            seen.iter()
                .map(|(r, ms)| (r.to_string(), Hlc::new(*ms, 0)))
                .collect(),
        ),
    };
    // East writes a and b at 1000 ms.
    let r = shard
        .apply_from(
            Source::Local,
            &[(0, upsert("a", 1000)), (1, upsert("b", 1000))],
            &[from("east", &[]), from("east", &[])],
        )
        .unwrap();
    assert_eq!(r.conflicts, 0);
    // West wrote a having seen east only up to 900 ms: concurrent (and it wins, 2000 ms);
    // west wrote b after merging east's write (seen past its stamp): causally later.
    let r = shard
        .apply_from(
            Source::Mirror { region: "west" },
            &[(0, upsert("a", 2000)), (1, upsert("b", 2000))],
            &[
                from("west", &[("east", 900)]),
                from("west", &[("east", 1001)]),
            ],
        )
        .unwrap();
    assert_eq!(r.conflicts, 1);
    let (a, b) = (
        shard.get(None, "a").unwrap().unwrap(),
        shard.get(None, "b").unwrap().unwrap(),
    );
    assert_eq!((a.origin.as_str(), a.concurrent), ("west", true));
    assert_eq!((b.origin.as_str(), b.concurrent), ("west", false));
    // A concurrent write that loses marks the winner too: east writes c at 3000 ms, west
    // wrote c at 2500 ms without having seen it.
    shard
        .apply_from(
            Source::Local,
            &[(2, upsert("c", 3000))],
            &[from("east", &[])],
        )
        .unwrap();
    let r = shard
        .apply_from(
            Source::Mirror { region: "west" },
            &[(2, upsert("c", 2500))],
            &[from("west", &[("east", 2000)])],
        )
        .unwrap();
    assert_eq!((r.conflicts, r.stale), (1, 1));
    let c = shard.get(None, "c").unwrap().unwrap();
    assert_eq!((c.origin.as_str(), c.concurrent), ("east", true));
}

/// Per id, the state `hektor_merge::Merged` reaches from every region's writes, each
/// stamped by its own region's floor.
fn merged_by_definition(logs: &[&[Entry]]) -> BTreeMap<String, Merged> {
    let mut out: BTreeMap<String, Merged> = BTreeMap::new();
    for log in logs {
        let mut floor = SourceFloor::default();
        for e in log.iter() {
            let (id, own, op) = match &e.op {
                ShardOp::Upsert {
                    id,
                    hlc,
                    vector,
                    payload,
                    ..
                } => (
                    id,
                    *hlc,
                    Op::Upsert {
                        vector: vector.clone(),
                        payload: payload.clone(),
                    },
                ),
                ShardOp::Delete { id, hlc, .. } => (id, *hlc, Op::Delete),
                _ => unreachable!(),
            };
            let hlc = floor.admit(e.provenance.digest, own).hlc();
            let write = Write {
                stamp: Stamp::new(hlc, e.provenance.origin.clone()),
                seen: Default::default(),
                op,
            };
            out.entry(id.clone())
                .or_default()
                .apply(&write, Policy::Crdt);
        }
    }
    out
}

/// Under `crdt`, concurrent writes of one id from two regions touch different payload
/// fields, set some to `null` and delete now and then; whatever the interleaving and
/// MirrorMaker's redeliveries, both regions end with the same vectors and payloads, and
/// they are the reference model's: the newest upsert's vector, per field the newest
/// value, nothing older than the newest delete.
#[test]
fn under_crdt_payloads_merge_per_field_to_the_reference_models_state() {
    let east = region_log("east", 0, 11, 500, true);
    let west = region_log("west", 3, 12, 500, true);
    let (west_in_east, _) = mirrored(&west, 13);
    let (east_in_west, _) = mirrored(&east, 14);
    let tmp = tempfile::tempdir().unwrap();
    let (e_dir, w_dir) = (tmp.path().join("east"), tmp.path().join("west"));
    let crdt = MergePolicy::Crdt;
    follow(&e_dir, &east, "west", &west_in_east, 15, crdt);
    follow(&w_dir, &west, "east", &east_in_west, 16, crdt);

    let (e, w) = (open(&e_dir, crdt), open(&w_dir, crdt));
    let expected = merged_by_definition(&[&east, &west]);
    let (mut merged_fields, mut live) = (0, 0);
    for (id, want) in &expected {
        let (a, b) = (e.get(None, id).unwrap(), w.get(None, id).unwrap());
        assert_eq!(a, b, "regions disagree on {id}");
        let got = a.map(|v| (v.vector, v.payload));
        let model = want
            .upsert
            .as_ref()
            .map(|u| (u.vector.clone(), want.payload(Policy::Crdt)));
        assert_eq!(got, model, "{id}: the shard is not the model's state");
        if let Some((_, Some(payload))) = &got {
            live += 1;
            // A payload holding fields of both regions: a merge, not a whole-write win.
            let values: Vec<&str> = payload
                .as_object()
                .unwrap()
                .values()
                .filter_map(|v| v.as_str())
                .collect();
            merged_fields += usize::from(
                values.iter().any(|v| v.starts_with("east"))
                    && values.iter().any(|v| v.starts_with("west")),
            );
        }
    }
    assert!(live > 10, "too few live ids to mean anything: {live}");
    assert!(
        merged_fields > 0,
        "no payload merged fields of both regions: the test has no real field conflicts"
    );
}
