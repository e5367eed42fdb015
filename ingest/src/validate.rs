//! The validation rules of a write batch. Every rule names the item that broke it, and the
//! whole batch is checked before any of it is written.
//!
//! | rule | limit | status |
//! |------|-------|--------|
//! | items per batch (upserts + deletes) | [`MAX_BATCH_ITEMS`] | 413 |
//! | id | 1 to [`MAX_ID_BYTES`] bytes of UTF-8, no control characters | 422 |
//! | tenant | 1 to [`MAX_TENANT_BYTES`] bytes when given | 422 |
//! | vector | exactly the collection's dimension, every value finite | 422 |
//! | payload | a JSON object of at most [`MAX_PAYLOAD_BYTES`] bytes serialized | 422 |
//! | the same vector (tenant and id) twice in one batch | not allowed | 422 |
//!
//! A vector is its tenant and id together (`hektor_topics::record::vector_key`): two
//! tenants may write the same id in one batch.

use std::collections::HashSet;

use hektor_topics::record::{CollectionSpec, Distance};
use serde::{Deserialize, Serialize};

use crate::IngestError;

pub const MAX_BATCH_ITEMS: usize = 10_000;
pub const MAX_ID_BYTES: usize = 256;
pub const MAX_TENANT_BYTES: usize = 256;
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted by the HTTP API.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One vector to insert or replace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItem {
    pub id: String,
    pub vector: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// One vector to delete: its id, or `{"id", "tenant"}` when it was written with a tenant
/// (the tenant is part of its ring position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DeleteItem {
    Id(String),
    Keyed {
        id: String,
        #[serde(default)]
        tenant: Option<String>,
    },
}

impl DeleteItem {
    pub fn id(&self) -> &str {
        match self {
            DeleteItem::Id(id) | DeleteItem::Keyed { id, .. } => id,
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        match self {
            DeleteItem::Id(_) => None,
            DeleteItem::Keyed { tenant, .. } => tenant.as_deref(),
        }
    }
}

/// The body of `POST /collections/{c}/vectors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteBatch {
    #[serde(default)]
    pub upserts: Vec<UpsertItem>,
    #[serde(default)]
    pub deletes: Vec<DeleteItem>,
}

impl WriteBatch {
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn invalid(kind: &str, index: usize, id: &str, reason: impl Into<String>) -> IngestError {
    let shown: String = id.chars().take(64).collect();
    IngestError::Invalid {
        item: format!("{kind}[{index}] (id {shown:?})"),
        reason: reason.into(),
    }
}

fn check_id(kind: &str, index: usize, id: &str) -> Result<(), IngestError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(invalid(
            kind,
            index,
            id,
            format!(
                "id must be 1 to {MAX_ID_BYTES} bytes, got {} bytes",
                id.len()
            ),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(
            kind,
            index,
            id,
            "id must not contain control characters",
        ));
    }
    Ok(())
}

fn check_tenant(
    kind: &str,
    index: usize,
    id: &str,
    tenant: Option<&str>,
) -> Result<(), IngestError> {
    if let Some(tenant) = tenant {
        if tenant.is_empty() || tenant.len() > MAX_TENANT_BYTES {
            return Err(invalid(
                kind,
                index,
                id,
                format!("tenant must be 1 to {MAX_TENANT_BYTES} bytes when given"),
            ));
        }
    }
    Ok(())
}

/// Check a whole batch against a collection's settings.
pub fn validate_batch(spec: &CollectionSpec, batch: &WriteBatch) -> Result<(), IngestError> {
    if batch.len() > MAX_BATCH_ITEMS {
        return Err(IngestError::TooLarge(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} upserts and deletes, got {}; split it",
            batch.len()
        )));
    }
    let mut seen = HashSet::with_capacity(batch.len());
    for (index, item) in batch.upserts.iter().enumerate() {
        check_id("upserts", index, &item.id)?;
        check_tenant("upserts", index, &item.id, item.tenant.as_deref())?;
        if item.vector.len() != spec.dimension as usize {
            return Err(invalid(
                "upserts",
                index,
                &item.id,
                format!(
                    "vector has {} dimensions, collection `{}` has {}",
                    item.vector.len(),
                    spec.name,
                    spec.dimension
                ),
            ));
        }
        if let Some(pos) = item.vector.iter().position(|x| !x.is_finite()) {
            return Err(invalid(
                "upserts",
                index,
                &item.id,
                format!("vector[{pos}] is not a finite number"),
            ));
        }
        if spec.distance == Distance::Cosine
            && item.vector.iter().map(|x| x * x).sum::<f32>().sqrt() == 0.0
        {
            // The shards would dead-letter it: refuse it here, where the client hears.
            return Err(invalid(
                "upserts",
                index,
                &item.id,
                "a zero vector has no direction under cosine distance",
            ));
        }
        if let Some(payload) = &item.payload {
            if !payload.is_object() {
                return Err(invalid(
                    "upserts",
                    index,
                    &item.id,
                    "payload must be a JSON object",
                ));
            }
            let size = serde_json::to_vec(payload)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_PAYLOAD_BYTES {
                return Err(invalid(
                    "upserts",
                    index,
                    &item.id,
                    format!("payload is {size} bytes, the limit is {MAX_PAYLOAD_BYTES}"),
                ));
            }
        }
        if !seen.insert((item.tenant.as_deref(), item.id.as_str())) {
            return Err(invalid(
                "upserts",
                index,
                &item.id,
                "the same id of the same tenant appears twice in this batch",
            ));
        }
    }
    for (index, item) in batch.deletes.iter().enumerate() {
        check_id("deletes", index, item.id())?;
        check_tenant("deletes", index, item.id(), item.tenant())?;
        if !seen.insert((item.tenant(), item.id())) {
            return Err(invalid(
                "deletes",
                index,
                item.id(),
                "the same id of the same tenant appears twice in this batch",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hektor_topics::record::Distance;

    fn spec() -> CollectionSpec {
        CollectionSpec {
            name: "c".into(),
            dimension: 3,
            distance: Distance::Cosine,
            partitions: 4,
            replication: 1,
            placement: Default::default(),
            merge: Default::default(),
            write_level: Default::default(),
        }
    }

    fn upsert(id: &str, vector: Vec<f32>) -> UpsertItem {
        UpsertItem {
            id: id.into(),
            vector,
            tenant: None,
            payload: None,
        }
    }

    fn status_of(batch: WriteBatch) -> Option<(u16, String)> {
        validate_batch(&spec(), &batch)
            .err()
            .map(|e| (e.status(), e.to_string()))
    }

    #[test]
    fn a_good_batch_passes() {
        let batch = WriteBatch {
            upserts: vec![upsert("a", vec![1.0, 0.0, 0.0])],
            deletes: vec![DeleteItem::Id("b".into())],
        };
        assert!(status_of(batch).is_none());
    }

    #[test]
    fn each_rule_names_the_item_and_its_status() {
        let cases: Vec<(WriteBatch, u16, &str)> = vec![
            (
                WriteBatch {
                    upserts: vec![upsert("ok", vec![1.0; 3]), upsert("short", vec![1.0])],
                    ..Default::default()
                },
                422,
                "upserts[1] (id \"short\"): vector has 1 dimensions",
            ),
            (
                WriteBatch {
                    upserts: vec![upsert("nan", vec![0.0, f32::NAN, 0.0])],
                    ..Default::default()
                },
                422,
                "vector[1] is not a finite number",
            ),
            (
                WriteBatch {
                    upserts: vec![upsert("zero", vec![0.0; 3])],
                    ..Default::default()
                },
                422,
                "upserts[0] (id \"zero\"): a zero vector has no direction under cosine distance",
            ),
            (
                WriteBatch {
                    upserts: vec![upsert("", vec![1.0; 3])],
                    ..Default::default()
                },
                422,
                "id must be 1 to 256 bytes",
            ),
            (
                WriteBatch {
                    upserts: vec![upsert(&"x".repeat(300), vec![1.0; 3])],
                    ..Default::default()
                },
                422,
                "id must be 1 to 256 bytes",
            ),
            (
                WriteBatch {
                    upserts: vec![UpsertItem {
                        payload: Some(serde_json::json!({"t": "x".repeat(70_000)})),
                        ..upsert("big", vec![1.0; 3])
                    }],
                    ..Default::default()
                },
                422,
                "payload is",
            ),
            (
                WriteBatch {
                    upserts: vec![UpsertItem {
                        payload: Some(serde_json::json!([1, 2])),
                        ..upsert("arr", vec![1.0; 3])
                    }],
                    ..Default::default()
                },
                422,
                "payload must be a JSON object",
            ),
            (
                WriteBatch {
                    upserts: vec![upsert("dup", vec![1.0; 3])],
                    deletes: vec![DeleteItem::Id("dup".into())],
                },
                422,
                "twice",
            ),
            (
                WriteBatch {
                    upserts: (0..MAX_BATCH_ITEMS + 1)
                        .map(|i| upsert(&i.to_string(), vec![1.0; 3]))
                        .collect(),
                    ..Default::default()
                },
                413,
                "at most 10000",
            ),
        ];
        for (batch, status, needle) in cases {
            let (got, message) = status_of(batch).expect("batch should be refused");
            assert_eq!(got, status, "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }

    #[test]
    fn the_same_id_of_two_tenants_is_two_vectors() {
        let of = |tenant: Option<&str>| UpsertItem {
            tenant: tenant.map(str::to_owned),
            ..upsert("x", vec![1.0; 3])
        };
        let batch = WriteBatch {
            upserts: vec![of(Some("a")), of(Some("b")), of(None)],
            deletes: vec![DeleteItem::Keyed {
                id: "x".into(),
                tenant: Some("c".into()),
            }],
        };
        assert!(validate_batch(&spec(), &batch).is_ok());
        let twice = WriteBatch {
            upserts: vec![of(Some("a"))],
            deletes: vec![DeleteItem::Keyed {
                id: "x".into(),
                tenant: Some("a".into()),
            }],
        };
        let err = validate_batch(&spec(), &twice).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
