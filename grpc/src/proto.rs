//! The messages of `proto/hektor.proto` (package `hektor.v1`), written by hand with
//! `#[derive(prost::Message)]` so that no `protoc` is needed to build hektor. Vectors are
//! `repeated float` (packed: 4 little-endian bytes per value on the wire); payloads travel
//! as JSON text, as they are stored.
//!
//! The unit test at the bottom reads `proto/hektor.proto` and checks every message there
//! against these structs: the same field names (from `Debug`) and the same field numbers
//! (from the encoded bytes of a message with every field set). Change both together.

use std::collections::BTreeMap;

/// The gRPC service's full name.
pub const SERVICE: &str = "hektor.v1.Hektor";
/// The method paths (`/<service>/<method>`).
pub const SEARCH_PATH: &str = "/hektor.v1.Hektor/Search";
pub const SEARCH_BATCH_PATH: &str = "/hektor.v1.Hektor/SearchBatch";
pub const WRITE_PATH: &str = "/hektor.v1.Hektor/Write";

/// How fresh a search must be (the HTTP API's `consistency`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Consistency {
    #[prost(string, tag = "1")]
    pub level: String,
    #[prost(uint64, optional, tag = "2")]
    pub max_staleness_ms: Option<u64>,
    #[prost(btree_map = "uint32, uint64", tag = "3")]
    pub after: BTreeMap<u32, u64>,
    #[prost(uint64, optional, tag = "4")]
    pub timeout_ms: Option<u64>,
    #[prost(string, optional, tag = "5")]
    pub region: Option<String>,
}

/// One search.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(float, repeated, tag = "2")]
    pub vector: Vec<f32>,
    #[prost(uint32, optional, tag = "3")]
    pub k: Option<u32>,
    #[prost(string, optional, tag = "4")]
    pub tenant: Option<String>,
    #[prost(bool, tag = "5")]
    pub without_payload: bool,
    #[prost(uint32, optional, tag = "6")]
    pub effort: Option<u32>,
    #[prost(bool, optional, tag = "7")]
    pub rescore: Option<bool>,
    #[prost(message, optional, tag = "8")]
    pub consistency: Option<Consistency>,
}

/// One hit: score is higher-is-closer; the payload as its stored JSON text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hit {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(float, tag = "2")]
    pub score: f32,
    #[prost(string, optional, tag = "3")]
    pub payload_json: Option<String>,
}

/// The answer of a search.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchResponse {
    #[prost(message, repeated, tag = "1")]
    pub hits: Vec<Hit>,
    #[prost(uint32, tag = "2")]
    pub shards: u32,
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    #[prost(uint64, tag = "4")]
    pub took_us: u64,
}

/// One query of a batch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Vector {
    #[prost(float, repeated, tag = "1")]
    pub values: Vec<f32>,
}

/// A batch of queries answered by exact search.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchSearchRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(message, repeated, tag = "2")]
    pub vectors: Vec<Vector>,
    #[prost(uint32, optional, tag = "3")]
    pub k: Option<u32>,
    #[prost(string, optional, tag = "4")]
    pub tenant: Option<String>,
    #[prost(bool, tag = "5")]
    pub without_payload: bool,
    #[prost(string, tag = "6")]
    pub device: String,
}

/// One query's hits in a batch answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchResult {
    #[prost(message, repeated, tag = "1")]
    pub hits: Vec<Hit>,
}

/// The answer of a batch search.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchSearchResponse {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<BatchResult>,
    #[prost(string, tag = "2")]
    pub ran_on: String,
    #[prost(string, tag = "3")]
    pub why: String,
    #[prost(uint32, tag = "4")]
    pub queries: u32,
    #[prost(uint32, tag = "5")]
    pub shards: u32,
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
    #[prost(uint64, tag = "7")]
    pub took_us: u64,
}

/// One vector to insert or replace.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Upsert {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(float, repeated, tag = "2")]
    pub vector: Vec<f32>,
    #[prost(string, optional, tag = "3")]
    pub tenant: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub payload_json: Option<String>,
}

/// One vector to delete.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delete {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, optional, tag = "2")]
    pub tenant: Option<String>,
}

/// A batch of upserts and deletes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(message, repeated, tag = "2")]
    pub upserts: Vec<Upsert>,
    #[prost(message, repeated, tag = "3")]
    pub deletes: Vec<Delete>,
    #[prost(string, tag = "4")]
    pub replication: String,
    #[prost(uint64, optional, tag = "5")]
    pub timeout_ms: Option<u64>,
}

/// A region, and whether it had applied a write when the write was answered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegionApplied {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(bool, tag = "2")]
    pub applied: bool,
}

/// The answer of a write, once durable: the write token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteResponse {
    #[prost(btree_map = "uint32, uint64", tag = "1")]
    pub token: BTreeMap<u32, u64>,
    #[prost(uint32, tag = "2")]
    pub written: u32,
    #[prost(message, repeated, tag = "3")]
    pub regions: Vec<RegionApplied>,
    #[prost(string, tag = "4")]
    pub region: String,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message;

    use super::*;

    /// `message Name { ... type field = N; ... }` of the .proto: name → (field, number).
    fn proto_messages() -> BTreeMap<String, BTreeSet<(String, u32)>> {
        let text = include_str!("../proto/hektor.proto");
        let mut out = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if let Some(rest) = line.strip_prefix("message ") {
                let name = rest.trim_end_matches('{').trim().to_owned();
                out.insert(name.clone(), BTreeSet::new());
                current = Some(name);
            } else if line == "}" {
                current = None;
            } else if let (Some(msg), Some((left, number))) = (&current, line.split_once('=')) {
                let field = left.split_whitespace().last().unwrap_or("").to_owned();
                let number: u32 = number.trim().trim_end_matches(';').trim().parse().unwrap();
                out.get_mut(msg).unwrap().insert((field, number));
            }
        }
        out
    }

    /// The field numbers present in an encoded message (top level only).
    fn tags_of(mut bytes: &[u8]) -> BTreeSet<u32> {
        let mut tags = BTreeSet::new();
        while !bytes.is_empty() {
            let key = prost::encoding::decode_varint(&mut bytes).unwrap();
            tags.insert((key >> 3) as u32);
            match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut bytes).unwrap();
                }
                1 => bytes = &bytes[8..],
                5 => bytes = &bytes[4..],
                2 => {
                    let len = prost::encoding::decode_varint(&mut bytes).unwrap() as usize;
                    bytes = &bytes[len..];
                }
                other => panic!("wire type {other}"),
            }
        }
        tags
    }

    /// The top-level field names a struct's derived `Debug` shows (`Name { a: .., b: .. }`;
    /// the test's values hold no commas or brackets inside strings).
    fn names_of(debug: &str) -> BTreeSet<String> {
        let inner = &debug[debug.find('{').unwrap() + 1..debug.rfind('}').unwrap()];
        let (mut depth, mut start, mut parts) = (0i32, 0usize, Vec::new());
        for (i, c) in inner.char_indices() {
            match c {
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        parts
            .iter()
            .filter_map(|p| p.split_once(':'))
            .map(|(name, _)| name.trim().to_owned())
            .collect()
    }

    fn check<M: Message + std::fmt::Debug>(
        messages: &BTreeMap<String, BTreeSet<(String, u32)>>,
        name: &str,
        full: M,
    ) {
        let want = messages
            .get(name)
            .unwrap_or_else(|| panic!("message {name} is not in hektor.proto"));
        let want_names: BTreeSet<String> = want.iter().map(|(n, _)| n.clone()).collect();
        let want_tags: BTreeSet<u32> = want.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            names_of(&format!("{full:?}")),
            want_names,
            "{name}: field names"
        );
        assert_eq!(
            tags_of(&full.encode_to_vec()),
            want_tags,
            "{name}: field numbers"
        );
    }

    #[test]
    fn the_proto_file_matches_the_structs() {
        let m = proto_messages();
        let hit = || Hit {
            id: "a".into(),
            score: 1.0,
            payload_json: Some("{}".into()),
        };
        let consistency = Consistency {
            level: "session".into(),
            max_staleness_ms: Some(1),
            after: BTreeMap::from([(0, 1)]),
            timeout_ms: Some(1),
            region: Some("west".into()),
        };
        check(&m, "Consistency", consistency.clone());
        check(
            &m,
            "SearchRequest",
            SearchRequest {
                collection: "c".into(),
                vector: vec![1.0],
                k: Some(1),
                tenant: Some("t".into()),
                without_payload: true,
                effort: Some(1),
                rescore: Some(true),
                consistency: Some(consistency),
            },
        );
        check(&m, "Hit", hit());
        check(
            &m,
            "SearchResponse",
            SearchResponse {
                hits: vec![hit()],
                shards: 1,
                epoch: 1,
                took_us: 1,
            },
        );
        check(&m, "Vector", Vector { values: vec![1.0] });
        check(
            &m,
            "BatchSearchRequest",
            BatchSearchRequest {
                collection: "c".into(),
                vectors: vec![Vector { values: vec![1.0] }],
                k: Some(1),
                tenant: Some("t".into()),
                without_payload: true,
                device: "cpu".into(),
            },
        );
        check(&m, "BatchResult", BatchResult { hits: vec![hit()] });
        check(
            &m,
            "BatchSearchResponse",
            BatchSearchResponse {
                results: vec![BatchResult { hits: vec![hit()] }],
                ran_on: "cpu".into(),
                why: "w".into(),
                queries: 1,
                shards: 1,
                epoch: 1,
                took_us: 1,
            },
        );
        check(
            &m,
            "Upsert",
            Upsert {
                id: "a".into(),
                vector: vec![1.0],
                tenant: Some("t".into()),
                payload_json: Some("{}".into()),
            },
        );
        check(
            &m,
            "Delete",
            Delete {
                id: "a".into(),
                tenant: Some("t".into()),
            },
        );
        check(
            &m,
            "WriteRequest",
            WriteRequest {
                collection: "c".into(),
                upserts: vec![Upsert::default()],
                deletes: vec![Delete::default()],
                replication: "sync".into(),
                timeout_ms: Some(5),
            },
        );
        let applied = RegionApplied {
            region: "west".into(),
            applied: true,
        };
        check(&m, "RegionApplied", applied.clone());
        check(
            &m,
            "WriteResponse",
            WriteResponse {
                token: BTreeMap::from([(0, 1)]),
                written: 1,
                regions: vec![applied],
                region: "west".into(),
            },
        );
        assert_eq!(m.len(), 13, "every message of hektor.proto is checked");
    }

    #[test]
    fn vectors_are_packed_floats() {
        let request = SearchRequest {
            vector: vec![1.0; 384],
            ..Default::default()
        };
        // One key, one length, 4 bytes per float.
        assert_eq!(request.encode_to_vec().len(), 1 + 2 + 384 * 4);
    }
}
