//! Property tests of the record encodings (`hektor_topics::codec`): every record round
//! trips in both encodings, and the decoder — fed arbitrary bytes and mutated valid
//! records — never panics (this is the decoder's fuzzing). Also: JSON written by another
//! Kafka client, with no header, is read with the documented defaults.
//!
//! This file does not test the log or the ring.

use hektor_topics::codec::{
    decode, encode, from_log_record, to_log_record, Encoding, Record, ENCODING_HEADER,
};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{
    CatalogEntry, CollectionSpec, Distance, Event, EventKind, NodeHeartbeat, PlanAction,
    PlanChange, RingRange, Tier, VectorDelete, VectorRecord, VectorUpsert,
};
use hektor_topics::Error;
use proptest::prelude::*;
use serde_json::Value;

// ---- strategies -----------------------------------------------------------------------

/// Any Unicode string, short.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn finite_f32() -> impl Strategy<Value = f32> {
    use prop::num::f32;
    f32::POSITIVE | f32::NEGATIVE | f32::NORMAL | f32::SUBNORMAL | f32::ZERO
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64;
    f64::POSITIVE | f64::NEGATIVE | f64::NORMAL | f64::SUBNORMAL | f64::ZERO
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

/// A small JSON object: the payload of an upsert.
fn payload() -> impl Strategy<Value = Value> {
    let value = json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(text(), value, 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn vector_record() -> impl Strategy<Value = VectorRecord> {
    let upsert = (
        text(),
        text(),
        prop::option::of(text()),
        prop::collection::vec(finite_f32(), 0..512),
        prop::option::of(payload()),
        any::<u64>(),
        text(),
    )
        .prop_map(|(collection, id, tenant, vector, payload, hlc, origin)| {
            VectorRecord::Upsert(VectorUpsert {
                collection,
                id,
                tenant,
                vector,
                payload,
                hlc: Hlc(hlc),
                origin,
            })
        });
    let delete = (
        text(),
        text(),
        prop::option::of(text()),
        any::<u64>(),
        text(),
    )
        .prop_map(|(collection, id, tenant, hlc, origin)| {
            VectorRecord::Delete(VectorDelete {
                collection,
                id,
                tenant,
                hlc: Hlc(hlc),
                origin,
            })
        });
    prop_oneof![3 => upsert, 1 => delete]
}

fn event() -> impl Strategy<Value = Event> {
    (
        text(),
        any::<u32>(),
        any::<u64>(),
        prop_oneof![
            Just(EventKind::Query),
            Just(EventKind::Upsert),
            Just(EventKind::Delete)
        ],
        any::<u32>(),
        any::<u64>(),
        text(),
    )
        .prop_map(
            |(collection, shard, ring, kind, latency_us, time_ms, node)| Event {
                collection,
                shard,
                ring,
                kind,
                latency_us,
                time_ms,
                node,
            },
        )
}

fn ring_range() -> impl Strategy<Value = RingRange> {
    (any::<u64>(), prop::option::of(any::<u64>())).prop_map(|(start, end)| RingRange { start, end })
}

fn plan_change() -> impl Strategy<Value = PlanChange> {
    let action = prop_oneof![
        (ring_range(), any::<u64>()).prop_map(|(shard, at)| PlanAction::Split { shard, at }),
        (ring_range(), ring_range()).prop_map(|(left, right)| PlanAction::Merge { left, right }),
        (ring_range(), text(), text()).prop_map(|(shard, from, to)| PlanAction::Move {
            shard,
            from,
            to
        }),
        (
            ring_range(),
            prop_oneof![Just(Tier::Hot), Just(Tier::Warm), Just(Tier::Cold)]
        )
            .prop_map(|(shard, tier)| PlanAction::SetTier { shard, tier }),
    ];
    (text(), any::<u64>(), action, text(), any::<u64>()).prop_map(
        |(collection, epoch, action, reason, time_ms)| PlanChange {
            collection,
            epoch,
            action,
            reason,
            time_ms,
            place: None,
        },
    )
}

fn heartbeat() -> impl Strategy<Value = NodeHeartbeat> {
    (
        text(),
        text(),
        text(),
        prop::collection::vec(text(), 0..5),
        finite_f64(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(node, address, region, roles, capacity, memory_bytes, time_ms)| NodeHeartbeat {
                node,
                address,
                region,
                roles,
                capacity,
                memory_bytes,
                time_ms,
                leaving: false,
                shards: Vec::new(),
            },
        )
}

fn catalog_entry() -> impl Strategy<Value = CatalogEntry> {
    let create = (
        text(),
        any::<u32>(),
        prop_oneof![
            Just(Distance::Cosine),
            Just(Distance::Euclidean),
            Just(Distance::Dot)
        ],
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(name, dimension, distance, partitions, replication)| {
            CatalogEntry::Create(CollectionSpec {
                name,
                dimension,
                distance,
                partitions,
                replication,
                placement: Default::default(),
                merge: Default::default(),
                write_level: Default::default(),
            })
        });
    prop_oneof![create, text().prop_map(|name| CatalogEntry::Drop { name })]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Binary), Just(Encoding::Json)]
}

/// A change to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of the byte at `at` (an index modulo the length).
    Flip { at: usize, bit: u8 },
    /// Set the byte at `at` to `value`.
    Set { at: usize, value: u8 },
    /// Keep only the first `len` bytes (modulo the length + 1).
    Truncate { len: usize },
    /// Append bytes.
    Append(Vec<u8>),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
    ];
    prop::collection::vec(one, 1..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip { at, bit } if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            Mutation::Set { at, value } if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] = *value;
            }
            Mutation::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
            Mutation::Append(extra) => bytes.extend_from_slice(extra),
            _ => {}
        }
    }
    bytes
}

// ---- properties -----------------------------------------------------------------------

fn header(encoding: Encoding) -> Option<&'static [u8]> {
    Some(encoding.header_value().as_bytes())
}

/// encode → decode is the identity, directly and through a `LogRecord`.
fn assert_round_trip<R: Record + PartialEq + std::fmt::Debug>(
    record: &R,
    encoding: Encoding,
) -> Result<(), TestCaseError> {
    let bytes = encode(record, encoding).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: R =
        decode(&bytes, header(encoding)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, record);
    let log =
        to_log_record(None, record, encoding).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(log.header(ENCODING_HEADER), header(encoding));
    prop_assert_eq!(&log.value, &bytes);
    let back: R = from_log_record(&log).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, record);
    Ok(())
}

/// Decoding mutated bytes returns (never panics); what decodes re-encodes, and in the
/// binary form reads back the same.
fn assert_decodes_or_errs<R: Record + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    encoding: Encoding,
) -> Result<(), TestCaseError> {
    if let Ok(record) = decode::<R>(bytes, header(encoding)) {
        let again = encode(&record, encoding).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if encoding == Encoding::Binary {
            let back: R =
                decode(&again, header(encoding)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, record);
        }
    }
    Ok(())
}

fn decode_all_kinds(bytes: &[u8], header: Option<&[u8]>) {
    let _ = decode::<VectorRecord>(bytes, header);
    let _ = decode::<Event>(bytes, header);
    let _ = decode::<PlanChange>(bytes, header);
    let _ = decode::<NodeHeartbeat>(bytes, header);
    let _ = decode::<CatalogEntry>(bytes, header);
}

/// 512 cases per property, or `PROPTEST_CASES` (e.g. 100000 for a longer fuzzing run).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn vector_records_round_trip(r in vector_record(), enc in encoding()) {
        assert_round_trip(&r, enc)?;
    }

    #[test]
    fn events_round_trip(r in event(), enc in encoding()) {
        assert_round_trip(&r, enc)?;
    }

    #[test]
    fn plan_changes_round_trip(r in plan_change(), enc in encoding()) {
        assert_round_trip(&r, enc)?;
    }

    #[test]
    fn heartbeats_round_trip(r in heartbeat(), enc in encoding()) {
        assert_round_trip(&r, enc)?;
    }

    #[test]
    fn catalog_entries_round_trip(r in catalog_entry(), enc in encoding()) {
        assert_round_trip(&r, enc)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        tag in 0u8..8,
    ) {
        // Also as a binary record of each kind, so the body decoder sees garbage too.
        let mut framed = vec![1, tag];
        framed.extend_from_slice(&bytes);
        for h in [Some(&b"bin.v1"[..]), Some(b"json.v1"), None, Some(b"bogus")] {
            decode_all_kinds(&bytes, h);
            decode_all_kinds(&framed, h);
        }
    }

    #[test]
    fn mutated_vector_records_never_panic(
        r in vector_record(),
        enc in encoding(),
        m in mutations(),
    ) {
        let bytes = mutate(encode(&r, enc).unwrap(), &m);
        assert_decodes_or_errs::<VectorRecord>(&bytes, enc)?;
    }

    #[test]
    fn mutated_other_records_never_panic(
        e in event(),
        p in plan_change(),
        n in heartbeat(),
        c in catalog_entry(),
        enc in encoding(),
        m in mutations(),
    ) {
        assert_decodes_or_errs::<Event>(&mutate(encode(&e, enc).unwrap(), &m), enc)?;
        assert_decodes_or_errs::<PlanChange>(&mutate(encode(&p, enc).unwrap(), &m), enc)?;
        assert_decodes_or_errs::<NodeHeartbeat>(&mutate(encode(&n, enc).unwrap(), &m), enc)?;
        assert_decodes_or_errs::<CatalogEntry>(&mutate(encode(&c, enc).unwrap(), &m), enc)?;
    }

    /// JSON as another Kafka client would write it: no header, only the required fields.
    #[test]
    fn json_from_another_client_reads_with_defaults(
        collection in text(),
        id in text(),
        vector in prop::collection::vec(finite_f32(), 0..64),
    ) {
        let numbers: Vec<String> = vector.iter().map(|v| v.to_string()).collect();
        let json = format!(
            r#"{{"op":"upsert","collection":{},"id":{},"vector":[{}]}}"#,
            serde_json::to_string(&collection).unwrap(),
            serde_json::to_string(&id).unwrap(),
            numbers.join(","),
        );
        let read: VectorRecord = decode(json.as_bytes(), None)
            .map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        prop_assert_eq!(
            read,
            VectorRecord::Upsert(VectorUpsert {
                collection,
                id,
                tenant: None,
                vector,
                payload: None,
                hlc: Hlc::default(),
                origin: String::new(),
            })
        );
    }
}

#[test]
fn a_hand_written_upsert_without_header_is_an_upsert_with_defaults() {
    let json = br#"{"op":"upsert","collection":"c","id":"a","vector":[0.1,0.2]}"#;
    let record: VectorRecord = decode(json, None).unwrap();
    assert_eq!(
        record,
        VectorRecord::Upsert(VectorUpsert {
            collection: "c".into(),
            id: "a".into(),
            tenant: None,
            vector: vec![0.1, 0.2],
            payload: None,
            hlc: Hlc(0),
            origin: String::new(),
        })
    );
    // The same bytes with the JSON header read the same; with the binary header they are
    // refused as a newer binary version ('{' is byte 123).
    assert_eq!(
        decode::<VectorRecord>(json, Some(b"json.v1")).unwrap(),
        record
    );
    assert!(matches!(
        decode::<VectorRecord>(json, Some(b"bin.v1")),
        Err(Error::UnknownVersion { found: b'{', .. })
    ));
    // A tenant and payload from another client are kept.
    let json = br#"{"op":"upsert","collection":"c","id":"a","tenant":"t","vector":[],"payload":{"k":[1,"x"]}}"#;
    match decode::<VectorRecord>(json, None).unwrap() {
        VectorRecord::Upsert(u) => {
            assert_eq!(u.tenant.as_deref(), Some("t"));
            assert_eq!(u.payload, Some(serde_json::json!({"k": [1, "x"]})));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_from_another_client_with_errors_is_malformed_not_a_panic() {
    for bad in [
        &br#"{"op":"upsert","collection":"c","id":"a"}"#[..], // no vector
        br#"{"op":"rename","collection":"c","id":"a"}"#,      // unknown op
        br#"{"op":"upsert","collection":"c","id":"a","vector":[NaN]}"#,
        br#"{"op":"upsert","collection":"c","id":"a","vector":["1"]}"#,
        br#"{"collection":"c","id":"a","vector":[1]}"#, // no op
        b"",
        b"\xff\xfe",
    ] {
        match decode::<VectorRecord>(bad, None) {
            Err(Error::Malformed { kind, .. }) => assert_eq!(kind, "vector record"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}
