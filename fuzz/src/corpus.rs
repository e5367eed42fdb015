//! The seed inputs of every target, made by the real encoders (so they have the shape of
//! what the log and the HTTP clients really carry).
//!
//! This module owns only the seeds; `src/bin/make_corpus.rs` writes them to
//! `fuzz/corpus/<target>/`, and the tests below run each through its harness.

use hektor_cluster::Lease;
use hektor_control::plan::{LeaseRecord, ReadyRecord};
use hektor_topics::codec::{self, Encoding, Record};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{
    CatalogEntry, CollectionSpec, Distance, Event, EventKind, HeldShard, NodeHeartbeat,
    PlacementSpec, PlanAction, PlanChange, RingRange, Tier, VectorDelete, VectorRecord,
    VectorUpsert,
};
use serde_json::json;

use crate::http_bodies::four_shards;
use crate::plan_catalog::{join, Frame, NOW_MS};
use crate::record::docs_spec;

/// A seed: the target, a file name, the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn upsert(tenant: Option<&str>) -> VectorRecord {
    VectorRecord::Upsert(VectorUpsert {
        collection: "docs".into(),
        id: "doc-1".into(),
        tenant: tenant.map(Into::into),
        vector: vec![0.5, -1.25, 3.0, 1e-3],
        payload: Some(json!({"title": "hello", "n": [1, 2.5, null], "ok": true})),
        hlc: Hlc::new(1_700_000_000_000, 3),
        origin: "eu".into(),
    })
}

fn delete() -> VectorRecord {
    VectorRecord::Delete(VectorDelete {
        collection: "docs".into(),
        id: "doc-2".into(),
        tenant: Some("acme".into()),
        hlc: Hlc(0),
        origin: String::new(),
    })
}

fn half(at: u64) -> RingRange {
    RingRange {
        start: 0,
        end: Some(at),
    }
}

fn plan_changes() -> Vec<PlanChange> {
    let quarter = 1u64 << 62;
    let q0 = half(quarter);
    let q1 = RingRange {
        start: quarter,
        end: Some(2 * quarter),
    };
    let change = |epoch, action| PlanChange {
        collection: "docs".into(),
        epoch,
        action,
        reason: "hot: 12k qps".into(),
        time_ms: 77,
        place: None,
    };
    vec![
        change(
            4,
            PlanAction::Split {
                shard: q0,
                at: quarter / 2,
            },
        ),
        change(
            4,
            PlanAction::Merge {
                left: q0,
                right: q1,
            },
        ),
        change(
            4,
            PlanAction::Move {
                shard: q1,
                from: "n2".into(),
                to: "n1".into(),
            },
        ),
        PlanChange {
            place: Some("n2".into()),
            ..change(
                4,
                PlanAction::SetTier {
                    shard: q0,
                    tier: Tier::Cold,
                },
            )
        },
    ]
}

fn heartbeat(node: &str, shards: bool) -> NodeHeartbeat {
    NodeHeartbeat {
        node: node.into(),
        address: "10.0.0.1:7700".into(),
        region: "eu-west-1a".into(),
        roles: vec!["data".into(), "controller".into()],
        capacity: 1.5,
        memory_bytes: 1 << 34,
        time_ms: NOW_MS - 1_000,
        leaving: false,
        shards: if shards {
            vec![HeldShard {
                collection: "docs".into(),
                range: RingRange::FULL,
                vectors: 10,
                bytes: 100,
            }]
        } else {
            Vec::new()
        },
    }
}

fn specs() -> Vec<CollectionSpec> {
    vec![
        docs_spec(),
        CollectionSpec {
            name: "imgs".into(),
            dimension: 384,
            distance: Distance::Dot,
            partitions: 16,
            replication: 3,
            placement: PlacementSpec::ConsistentHash { vnodes: 64 },
            merge: Default::default(),
            write_level: Default::default(),
        },
        CollectionSpec {
            name: "logs".into(),
            dimension: 8,
            distance: Distance::Euclidean,
            partitions: 2,
            replication: 2,
            placement: PlacementSpec::Load,
            merge: Default::default(),
            write_level: Default::default(),
        },
    ]
}

fn enc<R: Record>(r: &R, e: Encoding) -> Vec<u8> {
    codec::encode(r, e).expect("a seed encodes")
}

/// `record` seeds: byte 0 is the header (0 none, 1 `json.v1`, 2 `bin.v1`).
fn record_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: String, header: u8, bytes: Vec<u8>| {
        let mut v = vec![header];
        v.extend(bytes);
        out.push(("record", name, v));
    };
    for (name, r) in [
        ("upsert", upsert(None)),
        ("upsert-tenant", upsert(Some("acme"))),
        ("delete", delete()),
    ] {
        add(format!("vector-{name}.bin"), 2, enc(&r, Encoding::Binary));
        add(format!("vector-{name}.json"), 1, enc(&r, Encoding::Json));
    }
    add(
        "vector-noheader.json".into(),
        0,
        br#"{"op":"upsert","collection":"docs","id":"a","vector":[0.1,0.2,0.3,0.4]}"#.to_vec(),
    );
    let event = Event {
        collection: "docs".into(),
        shard: 3,
        ring: u64::MAX,
        kind: EventKind::Query,
        latency_us: 120,
        time_ms: 1,
        node: "n1".into(),
    };
    add("event.bin".into(), 2, enc(&event, Encoding::Binary));
    add("event.json".into(), 1, enc(&event, Encoding::Json));
    for (i, c) in plan_changes().iter().enumerate() {
        add(format!("plan-{i}.bin"), 2, enc(c, Encoding::Binary));
        add(format!("plan-{i}.json"), 1, enc(c, Encoding::Json));
    }
    add(
        "heartbeat.bin".into(),
        2,
        enc(&heartbeat("n1", false), Encoding::Binary),
    );
    add(
        "heartbeat.json".into(),
        1,
        enc(&heartbeat("n1", true), Encoding::Json),
    );
    for (i, s) in specs().into_iter().enumerate() {
        let entry = CatalogEntry::Create(s);
        add(format!("catalog-{i}.bin"), 2, enc(&entry, Encoding::Binary));
        add(format!("catalog-{i}.json"), 0, enc(&entry, Encoding::Json));
    }
    let drop = CatalogEntry::Drop { name: "old".into() };
    add("catalog-drop.bin".into(), 2, enc(&drop, Encoding::Binary));
}

/// `http_bodies` seeds: byte 0 is the body kind (see `http_bodies`).
fn http_seeds(out: &mut Vec<Seed>) {
    let mut add = |name: &str, kind: u8, body: Vec<u8>| {
        let mut v = vec![kind];
        v.extend(body);
        out.push(("http_bodies", name.to_owned(), v));
    };
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    add(
        "search.json",
        0,
        json(json!({"vector": [0.1, 0.2, 0.3, 0.4], "k": 5})),
    );
    add(
        "search-full.json",
        0,
        json(json!({"vector": [1, 0, 0, 0], "k": 10, "tenant": "acme",
            "consistency": {"after": {"0": 12, "3": 7}, "timeout_ms": 500},
            "without_payload": true, "effort": 64, "rescore": false})),
    );
    add(
        "shard-search.json",
        1,
        json(
            json!({"incarnation": 0, "range": {"start": 0, "end": 4611686018427387904u64},
            "partition": 0, "vector": [0.1, 0.2, 0.3, 0.4], "k": 5,
            "filter": {"start": 10, "end": null}, "after": 3, "timeout_ms": 100,
            "effort": 10, "rescore": true}),
        ),
    );
    add(
        "shard-get.json",
        2,
        json(
            json!({"incarnation": 0, "range": {"start": 0, "end": null}, "id": "doc-1", "tenant": "acme"}),
        ),
    );
    add(
        "write.json",
        3,
        json(json!({
            "upserts": [
                {"id": "a", "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"t": "x"}},
                {"id": "b", "vector": [1, 2, 3, 4], "tenant": "acme"}
            ],
            "deletes": ["c", {"id": "d", "tenant": "acme"}]
        })),
    );
    add(
        "bulk.bin",
        4,
        hektor_ingest::http::encode_bulk(&[upsert(None), upsert(Some("acme")), delete()])
            .expect("bulk encodes"),
    );
    for (i, s) in specs().iter().enumerate() {
        add(
            &format!("spec-{i}.json"),
            5,
            serde_json::to_vec(s).expect("json"),
        );
    }
    for (i, c) in plan_changes().iter().enumerate() {
        add(
            &format!("plan-action-{i}.json"),
            6,
            serde_json::to_vec(&c.action).expect("json"),
        );
    }
    add("token.json", 7, json(json!({"0": 12, "3": 7})));
}

/// `plan_catalog` seeds.
fn plan_catalog_seeds(out: &mut Vec<Seed>) {
    let lease = serde_json::to_vec(&LeaseRecord {
        term: 1,
        node: "n1".into(),
        time_ms: 5,
    })
    .expect("json");
    let map = serde_json::to_vec(&four_shards().with_incarnation(0).with_lease(Lease {
        term: 1,
        writer: "n1".into(),
    }))
    .expect("json");
    let ready = serde_json::to_vec(&ReadyRecord {
        node: "n2".into(),
        range: half(1 << 61),
        epoch: 3,
        time_ms: 9,
    })
    .expect("json");
    let hb1 = enc(&heartbeat("n1", false), Encoding::Binary);
    let hb2 = enc(&heartbeat("n2", true), Encoding::Json);
    let changes: Vec<Vec<u8>> = plan_changes()
        .iter()
        .map(|c| enc(c, Encoding::Json))
        .collect();
    let f = |topic: u8, header: u8, key: &'static str, value: &[u8]| -> Vec<u8> {
        let mut v = vec![topic, header];
        v.extend_from_slice(key.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(value);
        v
    };
    let as_frames = |records: &[Vec<u8>]| -> Vec<u8> {
        let frames: Vec<Frame<'_>> = records
            .iter()
            .map(|r| crate::plan_catalog::frames(r)[0])
            .collect();
        join(&frames)
    };
    let lease_rec = f(b'p', b'-', "lease/00000000000000000001/n1", &lease);
    let map_rec = f(b'p', b'-', "map/00000000000000000001/n1", &map);
    let ready_rec = f(
        b'p',
        b'-',
        "ready/n2/0000000000000000-2000000000000000",
        &ready,
    );
    let hb_recs = [f(b'n', b'b', "n1", &hb1), f(b'n', b'j', "n2", &hb2)];
    let mut all = vec![lease_rec.clone(), map_rec.clone(), ready_rec];
    for c in &changes {
        all.push(f(b'p', b'j', "docs", c));
    }
    all.extend(hb_recs.iter().cloned());
    out.push(("plan_catalog", "everything".into(), as_frames(&all)));
    out.push((
        "plan_catalog",
        "lease-map".into(),
        as_frames(&[lease_rec.clone(), map_rec.clone()]),
    ));
    for (i, c) in changes.iter().enumerate() {
        out.push((
            "plan_catalog",
            format!("decision-{i}"),
            as_frames(&[
                lease_rec.clone(),
                map_rec.clone(),
                f(b'p', b'j', "docs", c),
                hb_recs[0].clone(),
                hb_recs[1].clone(),
            ]),
        ));
    }
    // A map one epoch short of the counter's end: the next map is the last one.
    let late_map = serde_json::to_vec(
        &four_shards()
            .at_epoch(u64::MAX - 1)
            .with_incarnation(0)
            .with_lease(Lease {
                term: 1,
                writer: "n1".into(),
            }),
    )
    .expect("json");
    out.push((
        "plan_catalog",
        "late-epoch".into(),
        as_frames(&[
            lease_rec.clone(),
            f(b'p', b'-', "map/00000000000000000001/n1", &late_map),
            changes_tier(&changes),
            hb_recs[0].clone(),
        ]),
    ));
    out.push((
        "plan_catalog",
        "first-map".into(),
        as_frames(&[hb_recs[0].clone(), hb_recs[1].clone()]),
    ));
    for (i, s) in specs().into_iter().enumerate().skip(1) {
        let entry = enc(&CatalogEntry::Create(s), Encoding::Json);
        out.push((
            "plan_catalog",
            format!("catalog-{i}"),
            as_frames(&[f(b'c', b'j', "x", &entry), hb_recs[0].clone()]),
        ));
    }
    let drop = enc(
        &CatalogEntry::Drop {
            name: "docs".into(),
        },
        Encoding::Binary,
    );
    out.push((
        "plan_catalog",
        "catalog-drop".into(),
        as_frames(&[f(b'c', b'b', "docs", &drop), lease_rec]),
    ));
}

/// The tier-change decision among the seeds' decisions, as a plan-topic record.
fn changes_tier(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut v = b"pjdocs\n".to_vec();
    v.extend_from_slice(changes.last().expect("four decisions"));
    v
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    record_seeds(&mut out);
    http_seeds(&mut out);
    plan_catalog_seeds(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed runs through its harness (without AFL: the plain build of the library).
    #[test]
    fn every_seed_runs_clean() {
        for (target, name, bytes) in seeds() {
            assert!(
                crate::run(target, &bytes),
                "{target}/{name}: no such target"
            );
        }
    }

    /// The plan seeds get past every check into the controller step.
    #[test]
    fn the_plan_seeds_reach_the_controller() {
        let seed = |name: &str| {
            seeds()
                .into_iter()
                .find(|(t, n, _)| *t == "plan_catalog" && n == name)
                .map(|(_, _, bytes)| bytes)
                .expect("the seed exists")
        };
        let reached = crate::plan_catalog::run(&seed("everything"));
        assert_eq!(
            reached,
            crate::plan_catalog::Reached {
                collections: 1,
                nodes: 2,
                maps: 1,
                decisions: 4,
                next_maps: 1,
            }
        );
        let first = crate::plan_catalog::run(&seed("first-map"));
        assert_eq!((first.maps, first.next_maps), (0, 1));
    }

    /// Every file of the committed corpus runs clean (the regression replay of what
    /// AFL++ kept).
    #[test]
    fn the_committed_corpus_runs_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for target in crate::TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for entry in dir {
                let path = entry.expect("a corpus entry").path();
                let bytes = std::fs::read(&path).expect("a corpus file");
                assert!(crate::run(target, &bytes), "{}", path.display());
            }
        }
    }

    /// The frames of a plan_catalog input survive a join.
    #[test]
    fn frames_join_back() {
        for (target, _, bytes) in seeds() {
            if target == "plan_catalog" {
                let frames = crate::plan_catalog::frames(&bytes);
                assert_eq!(join(&frames), bytes);
            }
        }
    }
}
