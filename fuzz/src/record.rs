//! The `record` target: bytes as a record value read from the log.
//!
//! This module owns the harness of the log record decoders in `hektor_topics::codec`
//! (vector records, events, plan changes, node heartbeats, catalog entries; both the
//! `bin.v1` and the `json.v1` form, and no header) and of the first consumers of a decoded
//! vector record: the intake's [`hektor_ingest::intake::prepare`] and the indexers'
//! [`hektor_indexers::host::to_op`] / [`hektor_indexers::host::to_range_op`].
//!
//! Input: byte 0 picks the encoding header (`& 3`: none, `json.v1`, `bin.v1`, an unknown
//! one); the rest is the value, tried as every record kind. What decodes must re-encode in
//! the same encoding and decode to an equal record, whose encoding is then stable; and it
//! must convert to the other encoding and back (minus the fields the binary form does not
//! carry, see the `codec` module doc).

use std::fmt::Debug;

use hektor_log::{LogRecord, StoredRecord};
use hektor_topics::catalog::validate_spec;
use hektor_topics::codec::{self, Encoding, Record, ENCODING_HEADER};
use hektor_topics::record::{
    CatalogEntry, CollectionSpec, Distance, Event, NodeHeartbeat, PlacementSpec, PlanChange,
    RingRange, VectorRecord,
};
use hektor_topics::ring;
use hektor_topics::topic::validate_collection_name;

/// The collection the decoded vector records are applied to.
pub fn docs_spec() -> CollectionSpec {
    CollectionSpec {
        name: "docs".into(),
        dimension: 4,
        distance: Distance::Cosine,
        partitions: 4,
        replication: 1,
        placement: PlacementSpec::default(),
        merge: Default::default(),
        write_level: Default::default(),
    }
}

/// The encoding header a selector byte stands for.
pub fn header_of(selector: u8) -> Option<&'static [u8]> {
    match selector & 3 {
        0 => None,
        1 => Some(b"json.v1"),
        2 => Some(b"bin.v1"),
        _ => Some(b"avro.v1"),
    }
}

/// One run of the target.
pub fn run(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let header = header_of(selector);
    if header == Some(b"avro.v1") {
        assert!(matches!(
            codec::decode::<VectorRecord>(value, header),
            Err(hektor_topics::Error::UnknownEncoding(_))
        ));
        return;
    }
    if let Some(r) = round_trip::<VectorRecord>(value, header, |_| {}) {
        consume_vector(&r, value, header);
    }
    round_trip::<Event>(value, header, |_| {});
    round_trip::<PlanChange>(value, header, |p| p.place = None);
    if let Some(hb) = round_trip::<NodeHeartbeat>(value, header, |h| {
        h.leaving = false;
        h.shards.clear();
    }) {
        let _ = hb.validate();
        let _ = hektor_control::membership::check_heartbeat(
            &hb,
            1_700_000_000_000,
            std::time::Duration::from_secs(10),
        );
        let _ = hektor_cluster::NodeSpec::from_heartbeat(&hb).validate();
    }
    if let Some(entry) = round_trip::<CatalogEntry>(value, header, |c| {
        if let CatalogEntry::Create(spec) = c {
            spec.placement = PlacementSpec::default();
        }
    }) {
        let _ = match &entry {
            CatalogEntry::Create(spec) => validate_spec(spec),
            CatalogEntry::Drop { name } => validate_collection_name(name),
        };
    }
}

/// Decode `value` as an `R`; if it decodes, check the round trips and return it.
/// `binary_view` clears what the binary form does not carry.
fn round_trip<R>(value: &[u8], header: Option<&[u8]>, binary_view: fn(&mut R)) -> Option<R>
where
    R: Record + PartialEq + Debug + Clone,
{
    let first: R = codec::decode(value, header).ok()?;
    let encoding = Encoding::from_header(header).expect("a header that decoded is known");

    // The same encoding: equal record, and a stable encoding from then on.
    let bytes = codec::encode(&first, encoding).expect("a decoded record encodes");
    let second: R = codec::decode(&bytes, Some(encoding.header_value().as_bytes()))
        .expect("a re-encoded record decodes");
    assert_eq!(first, second, "{encoding} round trip");
    assert_eq!(
        codec::encode(&second, encoding).expect("encodes again"),
        bytes,
        "{encoding} encoding is not stable"
    );

    // The other encoding.
    let other = match encoding {
        Encoding::Binary => Encoding::Json,
        Encoding::Json => Encoding::Binary,
    };
    let bytes = codec::encode(&first, other).expect("a decoded record encodes in both forms");
    match codec::decode::<R>(&bytes, Some(other.header_value().as_bytes())) {
        Ok(mut back) => {
            let mut expected = first.clone();
            binary_view(&mut expected);
            binary_view(&mut back);
            assert_eq!(expected, back, "{encoding} -> {other} round trip");
        }
        // A payload nested close to serde_json's depth limit in the binary form (where it
        // is JSON text of its own) is one level deeper inside a JSON record.
        Err(e) if other == Encoding::Json && e.to_string().contains("recursion limit") => {}
        Err(e) => panic!("{encoding} -> {other}: {e}"),
    }
    Some(first)
}

/// What the intake and the indexers do with a vector record read from the log.
fn consume_vector(record: &VectorRecord, value: &[u8], header: Option<&[u8]>) {
    let spec = docs_spec();
    let mut log_record = LogRecord::new(Some(record.key()), value.to_vec());
    if let Some(h) = header {
        log_record = log_record.with_header(ENCODING_HEADER, h);
    }
    let stored = StoredRecord {
        offset: 7,
        timestamp_ms: 1_700_000_000_000,
        record: log_record,
    };
    // The intake forwards it (re-encoded) to the vectors topic; the indexers must take it.
    if let Ok(forwarded) = hektor_ingest::intake::prepare(&spec, &stored, "eu") {
        let bytes = codec::encode(&forwarded, Encoding::Binary).expect("forwarded encodes");
        let again = StoredRecord {
            record: LogRecord::new(Some(forwarded.key()), bytes)
                .with_header(ENCODING_HEADER, Encoding::Binary.header_value()),
            ..stored.clone()
        };
        let position = ring::position(forwarded.tenant(), forwarded.id());
        let partition = ring::partition_of(position, spec.partitions);
        // The intake checks what the HTTP door checks; the indexers refuse no more than
        // that, except a zero vector under cosine (dead-lettered there, see the report in
        // docs/fuzzing.md).
        if let Err(why) = hektor_indexers::host::to_op(&spec, partition, &again) {
            assert!(
                why.contains("zero vector"),
                "the indexers refuse a record the intake forwarded ({why}): {forwarded:?}"
            );
        }
    }
    let position = ring::position(record.tenant(), record.id());
    let partition = ring::partition_of(position, spec.partitions);
    let _ = hektor_indexers::host::to_op(&spec, partition, &stored);
    let whole = ring::partition_range(partition, spec.partitions);
    let half = RingRange {
        start: whole.start,
        end: Some(whole.start + (whole.end.unwrap_or(u64::MAX) - whole.start) / 2),
    };
    for range in [whole, half] {
        let _ = hektor_indexers::host::to_range_op(&spec, partition, range, &stored);
    }
}
