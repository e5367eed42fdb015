//! The merge state a `crdt` collection's shard keeps with each live record: the stamp of
//! every payload field and of the newest delete the id has seen ([`FieldStamps`]), and the
//! joins a write makes with it.
//!
//! Under [`MergePolicy::Crdt`] the vector is a last-writer-wins register (the record's own
//! stamp, as under `lww`), the payload an LWW map: each top-level field keeps the value of
//! the greatest stamp that set it, a field set to `null` is removed from the payload but
//! keeps its stamp (an older value cannot bring it back), and a delete removes every
//! field older than it, the vector too when the newest upsert is older. The field values
//! live in the record's payload (what searches return, rendered by
//! [`hektor_merge::render_fields`]); only their stamps live here, so a hit costs the same
//! under both policies. `hektor_merge::Merged` is the reference model: a shard applying
//! any order of the same writes ends with its `payload` (tested in `shard.rs`).
//!
//! [`MergePolicy::Crdt`]: hektor_topics::record::MergePolicy::Crdt

use std::collections::BTreeMap;

use hektor_topics::hlc::Hlc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A write's stamp: its effective hlc, then its origin region (compared in that order).
pub(crate) type Stamp = (Hlc, String);

/// The stamps of a `crdt` record's fields, and of the newest delete of its id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FieldStamps {
    /// The newest delete of the id (older than the live upsert), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Stamp>,
    /// Per field, the stamp of the write whose value it holds (a `null` value: removed).
    pub fields: BTreeMap<String, Stamp>,
}

/// Field → value of a stored payload with its stamps: the payload's fields, and `null`
/// for a stamped field the payload no longer shows (set to `null`).
pub(crate) fn values(payload: Option<&Value>, stamps: &FieldStamps) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = stamps
        .fields
        .keys()
        .map(|k| (k.clone(), Value::Null))
        .collect();
    // A payload rendered from the whole-payload field alone is that value itself.
    let whole = stamps.fields.len() == 1
        && stamps
            .fields
            .contains_key(hektor_merge::state::WHOLE_PAYLOAD_FIELD);
    match payload {
        Some(v) if whole => {
            out.insert(
                hektor_merge::state::WHOLE_PAYLOAD_FIELD.to_owned(),
                v.clone(),
            );
        }
        Some(v) => {
            for (k, v) in hektor_merge::payload_fields(v) {
                out.insert(k.to_owned(), v.clone());
            }
        }
        None => {}
    }
    out
}

impl FieldStamps {
    /// The state of a record written before its collection merged by field: every field
    /// of its payload stamped with the record's stamp.
    pub fn of_whole(payload: Option<&Value>, stamp: &Stamp) -> FieldStamps {
        FieldStamps {
            deleted: None,
            fields: payload
                .iter()
                .flat_map(|p| hektor_merge::payload_fields(p))
                .map(|(k, _)| (k.to_owned(), stamp.clone()))
                .collect(),
        }
    }

    /// Join an upsert's payload fields at `stamp` into `values`; whether anything changed.
    /// (The caller has checked the upsert is newer than [`FieldStamps::deleted`].)
    pub fn join_upsert(
        &mut self,
        values: &mut BTreeMap<String, Value>,
        stamp: &Stamp,
        payload: Option<&Value>,
    ) -> bool {
        let mut changed = false;
        for (k, v) in payload.iter().flat_map(|p| hektor_merge::payload_fields(p)) {
            if self.fields.get(k).is_none_or(|s| stamp > s) {
                self.fields.insert(k.to_owned(), stamp.clone());
                values.insert(k.to_owned(), v.clone());
                changed = true;
            }
        }
        changed
    }

    /// Join a delete at `stamp` (older than the live upsert): the fields older than it go,
    /// and it is remembered; whether anything changed.
    pub fn join_delete(&mut self, values: &mut BTreeMap<String, Value>, stamp: &Stamp) -> bool {
        if self.deleted.as_ref().is_some_and(|d| d >= stamp) {
            return false;
        }
        self.deleted = Some(stamp.clone());
        let gone: Vec<String> = self
            .fields
            .iter()
            .filter(|(_, s)| *s < stamp)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.fields.remove(&k);
            values.remove(&k);
        }
        true
    }
}

/// The payload a record shows for `values`.
pub(crate) fn render(values: &BTreeMap<String, Value>) -> Option<Value> {
    hektor_merge::render_fields(values.iter().map(|(k, v)| (k.as_str(), v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp(hlc: u64, origin: &str) -> Stamp {
        (Hlc(hlc), origin.to_owned())
    }

    #[test]
    fn fields_merge_by_stamp_and_null_removes_for_good() {
        let mut s = FieldStamps::default();
        let mut v = BTreeMap::new();
        assert!(s.join_upsert(&mut v, &stamp(10, "w"), Some(&json!({"a": 1, "b": 2}))));
        assert!(s.join_upsert(&mut v, &stamp(30, "e"), Some(&json!({"a": null}))));
        // Older than the null: a does not come back; c is new.
        assert!(s.join_upsert(&mut v, &stamp(20, "w"), Some(&json!({"a": 5, "c": 3}))));
        assert_eq!(render(&v), Some(json!({"b": 2, "c": 3})));
        // Stored and read back: the null keeps its stamp.
        let again = values(render(&v).as_ref(), &s);
        assert_eq!(again, v);
        // A delete at 25 removes b and c (older), not the null's stamp.
        let mut v2 = again;
        assert!(s.join_delete(&mut v2, &stamp(25, "e")));
        assert_eq!(render(&v2), None);
        assert_eq!(s.fields.keys().collect::<Vec<_>>(), vec!["a"]);
        assert!(!s.join_delete(&mut v2, &stamp(21, "w")), "older delete");
    }

    #[test]
    fn a_whole_payload_that_is_not_an_object_is_one_field() {
        let mut s = FieldStamps::default();
        let mut v = BTreeMap::new();
        s.join_upsert(&mut v, &stamp(1, "w"), Some(&json!("text")));
        assert_eq!(render(&v), Some(json!("text")));
        assert_eq!(values(Some(&json!("text")), &s), v);
        let stored = FieldStamps::of_whole(Some(&json!({"x": 1})), &stamp(3, "w"));
        assert_eq!(stored.fields.get("x"), Some(&stamp(3, "w")));
    }
}
