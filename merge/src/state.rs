//! The merged state of one vector id, and how a write joins it.
//!
//! [`Merged`] keeps, in a canonical form (two regions that absorbed the same writes hold
//! equal values, field for field):
//! - `upsert`: the upsert with the greatest stamp, kept only while it is newer than every
//!   delete; its vector (an LWW register) and, under [`Policy::Lww`], its payload;
//! - `deleted`: the greatest delete stamp (the tombstone, kept after the vector is gone,
//!   so an older upsert arriving late cannot bring the id back);
//! - `fields` (under [`Policy::Crdt`]): per payload field the value of the greatest stamp
//!   that set it, kept only while newer than the tombstone; a field set to `null` is
//!   removed but keeps its stamp, so an older value cannot come back;
//! - `clock`: the join of every absorbed write's stamp and `seen` vector.
//!
//! Every part is a maximum or a join, so [`Merged::apply`] is commutative, associative and
//! idempotent. What it reports ([`Applied`]) depends on arrival order (that is what a
//! conflict counter needs); the state does not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stamp::{Stamp, VersionVector};

/// How concurrent writes of a collection merge (the collection's setting, defined with
/// the catalog's records).
pub use hektor_topics::record::MergePolicy as Policy;

/// What a write does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Upsert {
        vector: Vec<f32>,
        payload: Option<Value>,
    },
    Delete,
}

/// One write of one id, as a shard sees it after the source floor stamped it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub stamp: Stamp,
    /// What the writer's region had applied from each region when it accepted the write
    /// (its own region's entry is implied by the stamp).
    #[serde(default)]
    pub seen: VersionVector,
    pub op: Op,
}

/// How a write related to the state it joined (for counting; it never changes the result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The state already held this write or something made knowing it.
    Stale,
    /// Made knowing the state's newest write (or the first write of the id).
    After,
    /// Made without knowing the state's newest write: a conflict, resolved by the policy.
    Concurrent,
}

/// The merged state of one id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    pub upsert: Option<Upserted>,
    pub deleted: Option<Stamp>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, (Stamp, Value)>,
    #[serde(default)]
    pub clock: VersionVector,
}

/// The newest upsert of an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upserted {
    pub stamp: Stamp,
    pub vector: Vec<f32>,
    /// The payload of this upsert (used under [`Policy::Lww`]; empty under `crdt`).
    pub payload: Option<Value>,
}

/// The field name a payload that is not a JSON object is kept under, under `crdt` (the
/// write doors refuse such payloads for `crdt` collections; a direct producer may not).
pub const WHOLE_PAYLOAD_FIELD: &str = "";

/// The fields a payload sets under `crdt`: an object's top-level fields, or any other
/// value as the one field [`WHOLE_PAYLOAD_FIELD`].
pub fn payload_fields(payload: &Value) -> Vec<(&str, &Value)> {
    match payload {
        Value::Object(map) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        other => vec![(WHOLE_PAYLOAD_FIELD, other)],
    }
}

/// The live payload of merged fields (`null` ones are removed): an object of them, or the
/// value of [`WHOLE_PAYLOAD_FIELD`] when it is the only field; `None` when nothing is live.
/// Shards render a `crdt` record's payload with it, so every region renders alike.
pub fn render_fields<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> Option<Value> {
    let fields: Vec<(&str, &Value)> = fields.collect();
    if let [(WHOLE_PAYLOAD_FIELD, v)] = fields[..] {
        return Some(v.clone()).filter(|v| !v.is_null());
    }
    let map: serde_json::Map<String, Value> = fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

impl Merged {
    /// The newest write's stamp (upsert or delete), if any.
    pub fn newest(&self) -> Option<&Stamp> {
        let up = self.upsert.as_ref().map(|u| &u.stamp);
        match (up, self.deleted.as_ref()) {
            (Some(u), Some(d)) => Some(u.max(d)),
            (u, d) => u.or(d),
        }
    }

    /// Whether the id is live (its newest upsert is newer than its newest delete).
    pub fn is_live(&self) -> bool {
        self.upsert.is_some()
    }

    /// The live payload: the winning upsert's under `lww`, the live fields under `crdt`.
    pub fn payload(&self, policy: Policy) -> Option<Value> {
        let up = self.upsert.as_ref()?;
        match policy {
            Policy::Lww => up.payload.clone(),
            Policy::Crdt => render_fields(self.fields.iter().map(|(k, (_, v))| (k.as_str(), v))),
        }
    }

    /// Join `write` into the state. Returns how it related to what was there.
    pub fn apply(&mut self, write: &Write, policy: Policy) -> Applied {
        let relation = self.relation(write);
        self.clock.observe(&write.stamp.origin, write.stamp.hlc);
        self.clock.join(&write.seen);
        let stamp = &write.stamp;
        match &write.op {
            Op::Delete => {
                if self.deleted.as_ref().is_none_or(|d| stamp > d) {
                    self.deleted = Some(stamp.clone());
                    if self.upsert.as_ref().is_some_and(|u| &u.stamp < stamp) {
                        self.upsert = None;
                    }
                    self.fields.retain(|_, (s, _)| &*s > stamp);
                }
            }
            Op::Upsert { vector, payload } => {
                if self.deleted.as_ref().is_some_and(|d| stamp < d) {
                    return relation;
                }
                if self.upsert.as_ref().is_none_or(|u| stamp > &u.stamp) {
                    self.upsert = Some(Upserted {
                        stamp: stamp.clone(),
                        vector: vector.clone(),
                        payload: match policy {
                            Policy::Lww => payload.clone(),
                            Policy::Crdt => None,
                        },
                    });
                }
                if policy == Policy::Crdt {
                    for (k, v) in payload.iter().flat_map(payload_fields) {
                        self.set_field(k, stamp, v);
                    }
                }
            }
        }
        relation
    }

    fn set_field(&mut self, key: &str, stamp: &Stamp, value: &Value) {
        match self.fields.get_mut(key) {
            Some((s, v)) if stamp > s => {
                *s = stamp.clone();
                *v = value.clone();
            }
            Some(_) => {}
            None => {
                self.fields
                    .insert(key.to_owned(), (stamp.clone(), value.clone()));
            }
        }
    }

    fn relation(&self, write: &Write) -> Applied {
        if self.clock.includes(&write.stamp) {
            return Applied::Stale;
        }
        match self.newest() {
            None => Applied::After,
            // One origin's writes of an id are ordered by its partition's clock.
            Some(newest) if newest.origin == write.stamp.origin => Applied::After,
            Some(newest) if write.seen.includes(newest) => Applied::After,
            Some(_) => Applied::Concurrent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hektor_topics::hlc::Hlc;
    use serde_json::json;

    fn up(hlc: u64, origin: &str, x: f32, payload: Value) -> Write {
        Write {
            stamp: Stamp::new(Hlc(hlc), origin),
            seen: VersionVector::new(),
            op: Op::Upsert {
                vector: vec![x],
                payload: Some(payload),
            },
        }
    }

    fn del(hlc: u64, origin: &str) -> Write {
        Write {
            stamp: Stamp::new(Hlc(hlc), origin),
            seen: VersionVector::new(),
            op: Op::Delete,
        }
    }

    /// The example in ARCHITECTURE.md: west and east write the same id while partitioned.
    #[test]
    fn the_worked_example_converges_both_ways() {
        let w1 = up(100, "west", 1.0, json!({"title": "a", "lang": "en"}));
        let mut e1 = up(105, "east", 2.0, json!({"title": "b"}));
        e1.seen.observe("west", Hlc(90)); // east had not seen w1
        let mut w2 = up(110, "west", 3.0, json!({"lang": "de"}));
        w2.seen.observe("east", Hlc(50)); // nor had west seen e1
        for policy in [Policy::Lww, Policy::Crdt] {
            let mut west = Merged::default();
            assert_eq!(west.apply(&w1, policy), Applied::After);
            assert_eq!(west.apply(&w2, policy), Applied::After);
            assert_eq!(west.apply(&e1, policy), Applied::Concurrent);
            let mut east = Merged::default();
            assert_eq!(east.apply(&e1, policy), Applied::After);
            assert_eq!(east.apply(&w1, policy), Applied::Concurrent);
            assert_eq!(east.apply(&w2, policy), Applied::Concurrent);
            assert_eq!(west, east);
            assert_eq!(west.upsert.as_ref().unwrap().vector, vec![3.0]);
            let payload = west.payload(policy).unwrap();
            match policy {
                Policy::Lww => assert_eq!(payload, json!({"lang": "de"})),
                Policy::Crdt => assert_eq!(payload, json!({"title": "b", "lang": "de"})),
            }
            // Redelivered copies change nothing and are recognised as old news.
            assert_eq!(west.apply(&w1, policy), Applied::Stale);
            assert_eq!(west, east);
        }
    }

    #[test]
    fn a_causally_later_write_is_not_a_conflict() {
        let w1 = up(100, "west", 1.0, json!({}));
        let mut e1 = up(105, "east", 2.0, json!({}));
        e1.seen.observe("west", Hlc(100));
        let mut s = Merged::default();
        s.apply(&w1, Policy::Lww);
        assert_eq!(s.apply(&e1, Policy::Lww), Applied::After);
    }

    #[test]
    fn a_delete_hides_older_upserts_and_fields_and_a_newer_upsert_revives() {
        for policy in [Policy::Lww, Policy::Crdt] {
            let mut s = Merged::default();
            s.apply(&del(200, "east"), policy);
            s.apply(&up(150, "west", 1.0, json!({"a": 1})), policy);
            assert!(
                !s.is_live(),
                "an older upsert must not resurrect a deleted id"
            );
            assert_eq!(s.payload(policy), None);
            s.apply(&up(250, "west", 2.0, json!({"b": 2})), policy);
            assert!(s.is_live());
            assert_eq!(s.payload(policy), Some(json!({"b": 2})));
        }
    }

    #[test]
    fn a_null_field_removes_it_under_crdt_and_an_older_value_stays_out() {
        let mut s = Merged::default();
        s.apply(&up(10, "a", 1.0, json!({"x": 1, "y": 2})), Policy::Crdt);
        s.apply(&up(30, "b", 1.0, json!({"x": null})), Policy::Crdt);
        s.apply(&up(20, "a", 1.0, json!({"x": 5})), Policy::Crdt);
        assert_eq!(s.payload(Policy::Crdt), Some(json!({"y": 2})));
    }
}
