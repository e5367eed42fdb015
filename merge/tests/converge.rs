//! Property tests of what multi-region users rely on: every region ends in the same state
//! whatever order the writes arrive in and however many copies MirrorMaker redelivers,
//! that state is the one the rule defines, and a mirrored partition gets exactly the
//! origin's stamps.

use std::collections::{BTreeMap, HashSet};

use hektor_merge::{Admit, Merged, Op, Policy, SourceFloor, Stamp, VersionVector, Write};
use hektor_topics::hlc::Hlc;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const ORIGINS: [&str; 3] = ["east", "west", "south"];
const FIELDS: [&str; 3] = ["p", "q", "r"];

fn arb_write() -> impl Strategy<Value = (u8, Write)> {
    (
        0u8..4,
        0usize..3,
        1u64..60,
        prop::option::of(prop::collection::vec(
            (0usize..3, prop::option::of(0i64..5)),
            0..3,
        )),
        prop::collection::vec((0usize..3, 0u64..60), 0..3),
        -5.0f32..5.0,
    )
        .prop_map(|(id, origin, hlc, payload, seen, x)| {
            let op = match payload {
                None => Op::Delete,
                Some(fields) => {
                    let map: serde_json::Map<String, Value> = fields
                        .into_iter()
                        .map(|(f, v)| (FIELDS[f].to_string(), v.map_or(Value::Null, |v| json!(v))))
                        .collect();
                    Op::Upsert {
                        vector: vec![x],
                        payload: Some(Value::Object(map)),
                    }
                }
            };
            let seen: VersionVector = seen
                .into_iter()
                .map(|(r, h)| (ORIGINS[r].to_string(), Hlc(h)))
                .collect();
            (
                id,
                Write {
                    stamp: Stamp::new(Hlc(hlc), ORIGINS[origin]),
                    seen,
                    op,
                },
            )
        })
}

/// Distinct writes: one id's writes never share a stamp (see `hektor_merge::stamp`).
fn distinct(writes: Vec<(u8, Write)>) -> Vec<(u8, Write)> {
    let mut seen = HashSet::new();
    writes
        .into_iter()
        .filter(|(id, w)| seen.insert((*id, w.stamp.clone())))
        .collect()
}

fn merge_all<'a>(
    writes: impl IntoIterator<Item = &'a (u8, Write)>,
    policy: Policy,
) -> BTreeMap<u8, Merged> {
    let mut states: BTreeMap<u8, Merged> = BTreeMap::new();
    for (id, w) in writes {
        states.entry(*id).or_default().apply(w, policy);
    }
    states
}

/// The state the rule defines, computed from the set of writes at once.
fn by_definition(
    writes: &[(u8, Write)],
    id: u8,
    policy: Policy,
) -> (Option<Vec<f32>>, Option<Value>) {
    let mine: Vec<&Write> = writes
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, w)| w)
        .collect();
    let deleted = mine
        .iter()
        .filter(|w| w.op == Op::Delete)
        .map(|w| w.stamp.clone())
        .max();
    let live: Vec<&&Write> = mine
        .iter()
        .filter(|w| w.op != Op::Delete && deleted.as_ref().is_none_or(|d| &w.stamp > d))
        .collect();
    let Some(newest) = live.iter().max_by_key(|w| w.stamp.clone()) else {
        return (None, None);
    };
    let Op::Upsert { vector, payload } = &newest.op else {
        unreachable!()
    };
    let payload = match policy {
        Policy::Lww => payload.clone(),
        Policy::Crdt => {
            let mut fields: BTreeMap<String, (Stamp, Value)> = BTreeMap::new();
            for w in &live {
                if let Op::Upsert {
                    payload: Some(Value::Object(map)),
                    ..
                } = &w.op
                {
                    for (k, v) in map {
                        if fields.get(k).is_none_or(|(s, _)| &w.stamp > s) {
                            fields.insert(k.clone(), (w.stamp.clone(), v.clone()));
                        }
                    }
                }
            }
            let map: serde_json::Map<String, Value> = fields
                .into_iter()
                .filter(|(_, (_, v))| !v.is_null())
                .map(|(k, (_, v))| (k, v))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
    };
    (Some(vector.clone()), payload)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_order_and_every_redelivery_gives_the_same_state(
        writes in prop::collection::vec(arb_write(), 1..40),
        seed in any::<u64>(),
        crdt in any::<bool>(),
    ) {
        let policy = if crdt { Policy::Crdt } else { Policy::Lww };
        let writes = distinct(writes);
        let mut rng = StdRng::seed_from_u64(seed);
        // Region one: the writes in one order.
        let mut one = writes.clone();
        one.shuffle(&mut rng);
        // Region two: another order, with MirrorMaker-style redeliveries mixed in.
        let mut two = writes.clone();
        for _ in 0..rng.random_range(0..=writes.len()) {
            let copy = two[rng.random_range(0..two.len())].clone();
            two.push(copy);
        }
        two.shuffle(&mut rng);
        let a = merge_all(&one, policy);
        let b = merge_all(&two, policy);
        prop_assert_eq!(&a, &b);
        for (id, state) in &a {
            let (vector, payload) = by_definition(&writes, *id, policy);
            prop_assert_eq!(state.upsert.as_ref().map(|u| u.vector.clone()), vector);
            prop_assert_eq!(state.payload(policy), payload);
        }
    }

    #[test]
    fn a_mirrored_partition_gets_the_origins_stamps(
        own in prop::collection::vec(0u64..2_000, 1..300),
        rewinds in prop::collection::vec((0usize..300, 1usize..60), 0..8),
    ) {
        // The origin's log: record i has digest i and its writer's clock `own[i]` (writers
        // with clocks behind one another, so the floor matters).
        let mut origin = SourceFloor::default();
        let stamps: Vec<Hlc> = own
            .iter()
            .enumerate()
            .map(|(i, &ms)| origin.admit(i as u128, Hlc::new(1_000_000 + ms, 0)).hlc())
            .collect();
        // The mirror: the same records, but MirrorMaker rewinds and re-sends some.
        let mut order = Vec::new();
        let mut next: usize = 0;
        let mut rewinds = rewinds;
        rewinds.sort();
        for i in 0..own.len() {
            order.push(i);
            next += 1;
            while let Some(&(at, back)) = rewinds.first() {
                if at > i { break; }
                rewinds.remove(0);
                order.extend(next.saturating_sub(back)..next);
            }
        }
        let mut mirror = SourceFloor::default();
        let mut first = HashSet::new();
        for i in order {
            let admit = mirror.admit(i as u128, Hlc::new(1_000_000 + own[i], 0));
            if first.insert(i) {
                prop_assert_eq!(admit, Admit::New(stamps[i]));
            } else {
                prop_assert_eq!(admit, Admit::Duplicate(stamps[i]));
            }
        }
        prop_assert_eq!(mirror.floor(), origin.floor());
    }
}
