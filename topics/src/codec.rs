//! Record encodings: how the records of [`crate::record`] are laid out as log values.
//!
//! This module owns the bytes of a record's value and the header that names their
//! encoding. It does not own the record types (that is [`crate::record`]), keys, or where a
//! record goes (that is [`crate::ring`] and [`crate::topic`]).
//!
//! # Two encodings, told apart by a header
//!
//! Every record hektor writes carries the Kafka header [`ENCODING_HEADER`]
//! (`hektor-encoding`) with one of these values:
//!
//! - `bin.v1` ([`Encoding::Binary`]): the compact form for the hot path.
//! - `json.v1` ([`Encoding::Json`]): `serde_json` of the record type, for people and for
//!   other clients.
//!
//! **A record without the header is read as JSON.** So any Kafka client can write records
//! to a collection's intake topic as plain JSON with no header at all, e.g.
//! `{"op":"upsert","collection":"docs","id":"a","vector":[0.1,0.2]}` (omitted fields take
//! their defaults). Any other header value is refused with
//! [`Error::UnknownEncoding`] rather than guessed at.
//!
//! # The binary form, version 1
//!
//! ```text
//! byte 0   format version, 1 (a higher one is Error::UnknownVersion: upgrade hektor;
//!          0 is Error::Malformed: no version 0 exists)
//! byte 1   record kind: 1 vector record, 2 event, 3 plan change, 4 node heartbeat,
//!          5 catalog entry
//! byte 2.. the body: postcard (https://postcard.jamesmunns.com/wire-format) of this
//!          module's private wire types
//! ```
//!
//! The wire types mirror the record types field by field, in declaration order, and are
//! the single source of the binary layout: reordering or renaming a field of a record type
//! never changes the bytes, and a change of the wire types needs a new version byte.
//! Enums are postcard's externally tagged form (a varint variant index), in the order
//! declared here; new variants are appended only. Two things differ from the record types:
//! - a vector is one length-prefixed byte string of little-endian `f32`s (4 bytes each), so
//!   decoding a 384-dimension vector is one bounds check and a copy, not 384 calls;
//! - a payload is carried as its JSON text (postcard cannot hold a free-form JSON value).
//!
//! # What decoding guarantees
//!
//! Decoding never panics, and a forged length prefix cannot make it allocate: postcard
//! checks every length against the bytes that remain before taking them. Bad input is an
//! error naming the record kind and the reason:
//! [`Error::UnknownVersion`] for a newer format version, [`Error::Malformed`] for a wrong
//! kind tag, truncated or trailing bytes, invalid UTF-8, a payload that is not JSON, or
//! invalid JSON.
//!
//! Both encodings hold the same invariants, checked on encode and on decode: vector
//! components and a node's capacity are finite numbers (JSON cannot write NaN or infinity,
//! and a JSON number beyond the range of `f32` would read as infinity). A `null` payload
//! reads back as no payload, in both encodings. Numbers in JSON (payloads, the capacity)
//! read back bit-exact: the crate enables `serde_json`'s `float_roundtrip` feature (without
//! it, parsing may be off by one unit in the last place).

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::record::{
    CatalogEntry, CatalogMeta, Event, NodeHeartbeat, PlanChange, VectorDelete, VectorRecord,
    VectorUpsert,
};
use crate::{Error, Result};
use hektor_log::LogRecord;

/// The Kafka header naming a record's encoding.
pub const ENCODING_HEADER: &str = "hektor-encoding";

/// The format version byte this build writes and reads.
pub const BINARY_VERSION: u8 = 1;

/// How a record's value is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `bin.v1`: version byte, kind tag, postcard body.
    #[default]
    Binary,
    /// `json.v1`: `serde_json` of the record type.
    Json,
}

impl Encoding {
    /// The value of [`ENCODING_HEADER`] for this encoding.
    pub const fn header_value(self) -> &'static str {
        match self {
            Encoding::Binary => "bin.v1",
            Encoding::Json => "json.v1",
        }
    }

    /// The encoding named by a record's [`ENCODING_HEADER`]; no header means JSON.
    pub fn from_header(value: Option<&[u8]>) -> Result<Encoding> {
        match value {
            None | Some(b"json.v1") => Ok(Encoding::Json),
            Some(b"bin.v1") => Ok(Encoding::Binary),
            Some(other) => Err(Error::UnknownEncoding(
                String::from_utf8_lossy(other).chars().take(64).collect(),
            )),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header_value())
    }
}

impl FromStr for Encoding {
    type Err = Error;

    /// `bin.v1`/`binary`/`bin` or `json.v1`/`json` (for command-line flags).
    fn from_str(s: &str) -> Result<Encoding> {
        match s {
            "bin.v1" | "binary" | "bin" => Ok(Encoding::Binary),
            "json.v1" | "json" => Ok(Encoding::Json),
            other => Err(Error::UnknownEncoding(other.chars().take(64).collect())),
        }
    }
}

/// A record type that travels through the log: implemented for [`VectorRecord`],
/// [`Event`], [`PlanChange`], [`NodeHeartbeat`] and [`CatalogEntry`], and only for them.
pub trait Record: private::Body + Serialize + DeserializeOwned + Sized {
    /// A human name of the kind, used in errors ("malformed vector record: ...").
    const KIND: &'static str;
    /// The kind byte of the binary form.
    const TAG: u8;
}

/// The name of the record kind with this binary tag, if any.
pub fn kind_of_tag(tag: u8) -> Option<&'static str> {
    match tag {
        VectorRecord::TAG => Some(VectorRecord::KIND),
        Event::TAG => Some(Event::KIND),
        PlanChange::TAG => Some(PlanChange::KIND),
        NodeHeartbeat::TAG => Some(NodeHeartbeat::KIND),
        CatalogEntry::TAG => Some(CatalogEntry::KIND),
        _ => None,
    }
}

/// Encode a record's value.
pub fn encode<R: Record>(record: &R, encoding: Encoding) -> Result<Vec<u8>> {
    record.check().map_err(|reason| malformed::<R>(reason))?;
    match encoding {
        Encoding::Binary => {
            let mut out = Vec::with_capacity(2 + record.size_hint());
            out.push(BINARY_VERSION);
            out.push(R::TAG);
            record.write_body(out)
        }
        Encoding::Json => {
            serde_json::to_vec(record).map_err(|e| malformed::<R>(format!("cannot encode: {e}")))
        }
    }
}

/// Decode a record's value, given the value of its [`ENCODING_HEADER`] (`None` when the
/// record has none: then it is JSON).
pub fn decode<R: Record>(bytes: &[u8], encoding_header: Option<&[u8]>) -> Result<R> {
    let record = match Encoding::from_header(encoding_header)? {
        Encoding::Binary => decode_binary::<R>(bytes)?,
        Encoding::Json => serde_json::from_slice::<R>(bytes)
            .map_err(|e| malformed::<R>(format!("invalid JSON: {e}")))?,
    };
    record.check().map_err(|reason| malformed::<R>(reason))?;
    Ok(record)
}

/// A [`LogRecord`] ready to append: the key, the encoded value, and the encoding header.
pub fn to_log_record<R: Record>(
    key: Option<Vec<u8>>,
    record: &R,
    encoding: Encoding,
) -> Result<LogRecord> {
    Ok(LogRecord::new(key, encode(record, encoding)?)
        .with_header(ENCODING_HEADER, encoding.header_value()))
}

/// Decode the value of a record read from the log, by its encoding header.
pub fn from_log_record<R: Record>(record: &LogRecord) -> Result<R> {
    decode(&record.value, record.header(ENCODING_HEADER))
}

/// A catalog record: the entry with its [`CatalogMeta`] (origin, hlc, incarnation) beside
/// its fields, always in JSON (the binary form predates the meta and cannot hold it).
pub fn catalog_record(entry: &CatalogEntry, meta: &CatalogMeta) -> Result<LogRecord> {
    let mut value = serde_json::to_value(entry)
        .map_err(|e| malformed::<CatalogEntry>(format!("cannot encode: {e}")))?;
    let extra = serde_json::to_value(meta)
        .map_err(|e| malformed::<CatalogEntry>(format!("cannot encode: {e}")))?;
    if let (Some(fields), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        for (k, v) in extra {
            if fields.insert(k.clone(), v).is_some() {
                return Err(malformed::<CatalogEntry>(format!(
                    "the entry has a field `{k}` of its own"
                )));
            }
        }
    }
    let bytes = serde_json::to_vec(&value)
        .map_err(|e| malformed::<CatalogEntry>(format!("cannot encode: {e}")))?;
    Ok(
        LogRecord::new(Some(entry.name().as_bytes().to_vec()), bytes)
            .with_header(ENCODING_HEADER, Encoding::Json.header_value()),
    )
}

/// Decode a catalog record read from the log: the entry, and its meta (none for a binary
/// record or one written before the meta existed).
pub fn catalog_entry_of(record: &LogRecord) -> Result<(CatalogEntry, CatalogMeta)> {
    let header = record.header(ENCODING_HEADER);
    let entry = decode::<CatalogEntry>(&record.value, header)?;
    let meta = match Encoding::from_header(header)? {
        Encoding::Binary => CatalogMeta::default(),
        Encoding::Json => serde_json::from_slice::<CatalogMeta>(&record.value).map_err(|e| {
            malformed::<CatalogEntry>(format!("invalid origin, hlc or incarnation: {e}"))
        })?,
    };
    Ok((entry, meta))
}

fn malformed<R: Record>(reason: impl Into<String>) -> Error {
    Error::Malformed {
        kind: R::KIND,
        reason: reason.into(),
    }
}

fn decode_binary<R: Record>(bytes: &[u8]) -> Result<R> {
    match bytes {
        [] => Err(malformed::<R>("empty value: no version byte")),
        [0, ..] => Err(malformed::<R>("version byte 0: not a hektor binary record")),
        [version, ..] if *version != BINARY_VERSION => Err(Error::UnknownVersion {
            kind: R::KIND,
            found: *version,
            supported: BINARY_VERSION,
        }),
        [_] => Err(malformed::<R>("truncated: no kind byte after the version")),
        [_, tag, ..] if *tag != R::TAG => Err(malformed::<R>(match kind_of_tag(*tag) {
            Some(other) => format!(
                "expected kind byte {} ({}), found {tag} ({other})",
                R::TAG,
                R::KIND
            ),
            None => format!("unknown kind byte {tag}"),
        })),
        [_, _, body @ ..] => R::read_body(body),
    }
}

/// Append the postcard body `w` of a record of kind `R`.
fn put<R: Record>(w: &impl Serialize, out: Vec<u8>) -> Result<Vec<u8>> {
    postcard::to_extend(w, out).map_err(|e| malformed::<R>(format!("cannot encode: {e}")))
}

/// Decode a whole body as `T`, refusing leftovers.
fn take_all<'a, R: Record, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(malformed::<R>(format!(
            "{} trailing bytes after the record",
            rest.len()
        ))),
        Err(e) => Err(malformed::<R>(postcard_reason(e))),
    }
}

fn postcard_reason(e: postcard::Error) -> String {
    use postcard::Error as P;
    match e {
        P::DeserializeUnexpectedEnd => "truncated: the value ends inside the record".into(),
        P::DeserializeBadVarint => "a length or integer is corrupt (bad varint)".into(),
        P::DeserializeBadUtf8 => "a string is not valid UTF-8".into(),
        P::DeserializeBadBool | P::DeserializeBadOption => {
            "a presence marker is neither 0 nor 1".into()
        }
        P::DeserializeBadEnum | P::SerdeDeCustom => "an unknown variant or an invalid value".into(),
        other => format!("undecodable ({other})"),
    }
}

/// The payload as JSON text; a `null` payload is no payload.
fn payload_text(payload: &Option<serde_json::Value>) -> Result<Option<String>, String> {
    match payload {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::to_string(v)
            .map(Some)
            .map_err(|e| format!("payload cannot be written as JSON: {e}")),
    }
}

fn payload_from_text<R: Record>(text: Option<&str>) -> Result<Option<serde_json::Value>> {
    match text {
        None => Ok(None),
        Some(t) => match serde_json::from_str(t) {
            Ok(serde_json::Value::Null) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(malformed::<R>(format!("payload is not valid JSON: {e}"))),
        },
    }
}

fn f32s_to_le(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn f32s_from_le<R: Record>(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(malformed::<R>(format!(
            "the vector is {} bytes, not a whole number of 4-byte floats",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn check_vector(vector: &[f32]) -> Result<(), String> {
    match vector.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(format!(
            "vector component {i} is {}, not a finite number",
            vector[i]
        )),
    }
}

mod private {
    /// The binary body of a record type; private so only this module's types are records.
    pub trait Body: Sized {
        /// The record's invariants that both encodings hold (see the module doc).
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
        /// About how many bytes the body takes (to size the output once).
        fn size_hint(&self) -> usize {
            64
        }
        /// Append the postcard body to `out`.
        fn write_body(&self, out: Vec<u8>) -> crate::Result<Vec<u8>>;
        /// Decode a whole body (after the version and kind bytes).
        fn read_body(body: &[u8]) -> crate::Result<Self>;
    }
}

/// The binary layout, version 1. Append-only: never reorder fields or variants.
mod wire {
    use serde::de::{Deserializer, Visitor};
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};

    /// A length-prefixed byte string, borrowed on both sides.
    #[derive(Debug, Clone, Copy)]
    pub struct Bytes<'a>(pub &'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_borrowed_bytes<E: serde::de::Error>(
                    self,
                    v: &'de [u8],
                ) -> Result<Self::Value, E> {
                    Ok(Bytes(v))
                }
                fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                    Err(E::custom("expected borrowed bytes"))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    #[derive(Serialize, Deserialize)]
    pub enum Vector<'a> {
        #[serde(borrow)]
        Upsert(Upsert<'a>),
        #[serde(borrow)]
        Delete(Delete<'a>),
        #[serde(borrow)]
        Tick(Tick<'a>),
    }

    #[derive(Serialize, Deserialize)]
    pub struct Tick<'a> {
        pub collection: &'a str,
        pub partition: u32,
        pub hlc: u64,
        pub origin: &'a str,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Upsert<'a> {
        pub collection: &'a str,
        pub id: &'a str,
        #[serde(borrow)]
        pub tenant: Option<&'a str>,
        #[serde(borrow)]
        pub vector: Bytes<'a>,
        #[serde(borrow)]
        pub payload: Option<&'a str>,
        pub hlc: u64,
        pub origin: &'a str,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Delete<'a> {
        pub collection: &'a str,
        pub id: &'a str,
        #[serde(borrow)]
        pub tenant: Option<&'a str>,
        pub hlc: u64,
        pub origin: &'a str,
    }

    #[derive(Serialize, Deserialize)]
    pub enum EventKind {
        Query,
        Upsert,
        Delete,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Event<'a> {
        pub collection: &'a str,
        pub shard: u32,
        pub ring: u64,
        pub kind: EventKind,
        pub latency_us: u32,
        pub time_ms: u64,
        pub node: &'a str,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Range {
        pub start: u64,
        pub end: Option<u64>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Tier {
        Hot,
        Warm,
        Cold,
        Archive,
    }

    #[derive(Serialize, Deserialize)]
    pub enum PlanAction<'a> {
        Split {
            shard: Range,
            at: u64,
        },
        Merge {
            left: Range,
            right: Range,
        },
        Move {
            shard: Range,
            from: &'a str,
            to: &'a str,
        },
        SetTier {
            shard: Range,
            tier: Tier,
        },
    }

    #[derive(Serialize, Deserialize)]
    pub struct PlanChange<'a> {
        pub collection: &'a str,
        pub epoch: u64,
        #[serde(borrow)]
        pub action: PlanAction<'a>,
        pub reason: &'a str,
        pub time_ms: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct NodeHeartbeat<'a> {
        pub node: &'a str,
        pub address: &'a str,
        pub region: &'a str,
        #[serde(borrow)]
        pub roles: Vec<&'a str>,
        pub capacity: f64,
        pub memory_bytes: u64,
        pub time_ms: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Distance {
        Cosine,
        Euclidean,
        Dot,
    }

    #[derive(Serialize, Deserialize)]
    pub struct CollectionSpec<'a> {
        pub name: &'a str,
        pub dimension: u32,
        pub distance: Distance,
        pub partitions: u32,
        pub replication: u32,
    }

    #[derive(Serialize, Deserialize)]
    pub enum CatalogEntry<'a> {
        #[serde(borrow)]
        Create(CollectionSpec<'a>),
        Drop {
            name: &'a str,
        },
    }
}

// ---- vector records -------------------------------------------------------------------

impl Record for VectorRecord {
    const KIND: &'static str = "vector record";
    const TAG: u8 = 1;
}

impl private::Body for VectorRecord {
    fn check(&self) -> Result<(), String> {
        match self {
            VectorRecord::Upsert(u) => check_vector(&u.vector),
            VectorRecord::Delete(_) | VectorRecord::Tick(_) => Ok(()),
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            VectorRecord::Upsert(u) => 64 + u.vector.len() * 4,
            VectorRecord::Delete(_) | VectorRecord::Tick(_) => 64,
        }
    }

    fn write_body(&self, out: Vec<u8>) -> Result<Vec<u8>> {
        match self {
            VectorRecord::Upsert(u) => {
                let vector = f32s_to_le(&u.vector);
                let payload = payload_text(&u.payload).map_err(malformed::<Self>)?;
                let w = wire::Vector::Upsert(wire::Upsert {
                    collection: &u.collection,
                    id: &u.id,
                    tenant: u.tenant.as_deref(),
                    vector: wire::Bytes(&vector),
                    payload: payload.as_deref(),
                    hlc: u.hlc.0,
                    origin: &u.origin,
                });
                put::<Self>(&w, out)
            }
            VectorRecord::Delete(d) => {
                let w = wire::Vector::Delete(wire::Delete {
                    collection: &d.collection,
                    id: &d.id,
                    tenant: d.tenant.as_deref(),
                    hlc: d.hlc.0,
                    origin: &d.origin,
                });
                put::<Self>(&w, out)
            }
            VectorRecord::Tick(t) => {
                let w = wire::Vector::Tick(wire::Tick {
                    collection: &t.collection,
                    partition: t.partition,
                    hlc: t.hlc.0,
                    origin: &t.origin,
                });
                put::<Self>(&w, out)
            }
        }
    }

    fn read_body(body: &[u8]) -> Result<Self> {
        Ok(match take_all::<Self, wire::Vector>(body)? {
            wire::Vector::Upsert(u) => VectorRecord::Upsert(VectorUpsert {
                collection: u.collection.to_owned(),
                id: u.id.to_owned(),
                tenant: u.tenant.map(str::to_owned),
                vector: f32s_from_le::<Self>(u.vector.0)?,
                payload: payload_from_text::<Self>(u.payload)?,
                hlc: crate::hlc::Hlc(u.hlc),
                origin: u.origin.to_owned(),
            }),
            wire::Vector::Delete(d) => VectorRecord::Delete(VectorDelete {
                collection: d.collection.to_owned(),
                id: d.id.to_owned(),
                tenant: d.tenant.map(str::to_owned),
                hlc: crate::hlc::Hlc(d.hlc),
                origin: d.origin.to_owned(),
            }),
            wire::Vector::Tick(t) => VectorRecord::Tick(crate::record::VectorTick {
                collection: t.collection.to_owned(),
                partition: t.partition,
                hlc: crate::hlc::Hlc(t.hlc),
                origin: t.origin.to_owned(),
            }),
        })
    }
}

// ---- events ---------------------------------------------------------------------------

impl Record for Event {
    const KIND: &'static str = "event";
    const TAG: u8 = 2;
}

impl private::Body for Event {
    fn write_body(&self, out: Vec<u8>) -> Result<Vec<u8>> {
        use crate::record::EventKind as K;
        let w = wire::Event {
            collection: &self.collection,
            shard: self.shard,
            ring: self.ring,
            kind: match self.kind {
                K::Query => wire::EventKind::Query,
                K::Upsert => wire::EventKind::Upsert,
                K::Delete => wire::EventKind::Delete,
            },
            latency_us: self.latency_us,
            time_ms: self.time_ms,
            node: &self.node,
        };
        put::<Self>(&w, out)
    }

    fn read_body(body: &[u8]) -> Result<Self> {
        use crate::record::EventKind as K;
        let w = take_all::<Self, wire::Event>(body)?;
        Ok(Event {
            collection: w.collection.to_owned(),
            shard: w.shard,
            ring: w.ring,
            kind: match w.kind {
                wire::EventKind::Query => K::Query,
                wire::EventKind::Upsert => K::Upsert,
                wire::EventKind::Delete => K::Delete,
            },
            latency_us: w.latency_us,
            time_ms: w.time_ms,
            node: w.node.to_owned(),
        })
    }
}

// ---- plan changes ---------------------------------------------------------------------

fn range_to_wire(r: &crate::record::RingRange) -> wire::Range {
    wire::Range {
        start: r.start,
        end: r.end,
    }
}

fn range_from_wire(r: wire::Range) -> crate::record::RingRange {
    crate::record::RingRange {
        start: r.start,
        end: r.end,
    }
}

impl Record for PlanChange {
    const KIND: &'static str = "plan change";
    const TAG: u8 = 3;
}

impl private::Body for PlanChange {
    fn write_body(&self, out: Vec<u8>) -> Result<Vec<u8>> {
        use crate::record::{PlanAction as A, Tier as T};
        let action = match &self.action {
            A::Split { shard, at } => wire::PlanAction::Split {
                shard: range_to_wire(shard),
                at: *at,
            },
            A::Merge { left, right } => wire::PlanAction::Merge {
                left: range_to_wire(left),
                right: range_to_wire(right),
            },
            A::Move { shard, from, to } => wire::PlanAction::Move {
                shard: range_to_wire(shard),
                from,
                to,
            },
            A::SetTier { shard, tier } => wire::PlanAction::SetTier {
                shard: range_to_wire(shard),
                tier: match tier {
                    T::Hot => wire::Tier::Hot,
                    T::Warm => wire::Tier::Warm,
                    T::Cold => wire::Tier::Cold,
                    T::Archive => wire::Tier::Archive,
                },
            },
        };
        let w = wire::PlanChange {
            collection: &self.collection,
            epoch: self.epoch,
            action,
            reason: &self.reason,
            time_ms: self.time_ms,
        };
        put::<Self>(&w, out)
    }

    fn read_body(body: &[u8]) -> Result<Self> {
        use crate::record::{PlanAction as A, Tier as T};
        let w = take_all::<Self, wire::PlanChange>(body)?;
        let action = match w.action {
            wire::PlanAction::Split { shard, at } => A::Split {
                shard: range_from_wire(shard),
                at,
            },
            wire::PlanAction::Merge { left, right } => A::Merge {
                left: range_from_wire(left),
                right: range_from_wire(right),
            },
            wire::PlanAction::Move { shard, from, to } => A::Move {
                shard: range_from_wire(shard),
                from: from.to_owned(),
                to: to.to_owned(),
            },
            wire::PlanAction::SetTier { shard, tier } => A::SetTier {
                shard: range_from_wire(shard),
                tier: match tier {
                    wire::Tier::Hot => T::Hot,
                    wire::Tier::Warm => T::Warm,
                    wire::Tier::Cold => T::Cold,
                    wire::Tier::Archive => T::Archive,
                },
            },
        };
        Ok(PlanChange {
            collection: w.collection.to_owned(),
            epoch: w.epoch,
            action,
            reason: w.reason.to_owned(),
            time_ms: w.time_ms,
            place: None,
        })
    }
}

// ---- node heartbeats ------------------------------------------------------------------

impl Record for NodeHeartbeat {
    const KIND: &'static str = "node heartbeat";
    const TAG: u8 = 4;
}

impl private::Body for NodeHeartbeat {
    fn check(&self) -> Result<(), String> {
        if self.capacity.is_finite() {
            Ok(())
        } else {
            Err(format!(
                "capacity is {}, not a finite number",
                self.capacity
            ))
        }
    }

    fn write_body(&self, out: Vec<u8>) -> Result<Vec<u8>> {
        let w = wire::NodeHeartbeat {
            node: &self.node,
            address: &self.address,
            region: &self.region,
            roles: self.roles.iter().map(String::as_str).collect(),
            capacity: self.capacity,
            memory_bytes: self.memory_bytes,
            time_ms: self.time_ms,
        };
        put::<Self>(&w, out)
    }

    fn read_body(body: &[u8]) -> Result<Self> {
        let w = take_all::<Self, wire::NodeHeartbeat>(body)?;
        Ok(NodeHeartbeat {
            node: w.node.to_owned(),
            address: w.address.to_owned(),
            region: w.region.to_owned(),
            roles: w.roles.into_iter().map(str::to_owned).collect(),
            capacity: w.capacity,
            memory_bytes: w.memory_bytes,
            time_ms: w.time_ms,
            leaving: false,
            shards: Vec::new(),
        })
    }
}

// ---- catalog entries ------------------------------------------------------------------

impl Record for CatalogEntry {
    const KIND: &'static str = "catalog entry";
    const TAG: u8 = 5;
}

impl private::Body for CatalogEntry {
    fn write_body(&self, out: Vec<u8>) -> Result<Vec<u8>> {
        use crate::record::Distance as D;
        let w = match self {
            CatalogEntry::Create(spec) => wire::CatalogEntry::Create(wire::CollectionSpec {
                name: &spec.name,
                dimension: spec.dimension,
                distance: match spec.distance {
                    D::Cosine => wire::Distance::Cosine,
                    D::Euclidean => wire::Distance::Euclidean,
                    D::Dot => wire::Distance::Dot,
                },
                partitions: spec.partitions,
                replication: spec.replication,
            }),
            CatalogEntry::Drop { name } => wire::CatalogEntry::Drop { name },
        };
        put::<Self>(&w, out)
    }

    fn read_body(body: &[u8]) -> Result<Self> {
        use crate::record::{CollectionSpec, Distance as D};
        Ok(match take_all::<Self, wire::CatalogEntry>(body)? {
            wire::CatalogEntry::Create(s) => CatalogEntry::Create(CollectionSpec {
                name: s.name.to_owned(),
                dimension: s.dimension,
                distance: match s.distance {
                    wire::Distance::Cosine => D::Cosine,
                    wire::Distance::Euclidean => D::Euclidean,
                    wire::Distance::Dot => D::Dot,
                },
                partitions: s.partitions,
                replication: s.replication,
                // The binary form predates placement and merge policies; the catalog is
                // written as JSON.
                placement: Default::default(),
                merge: Default::default(),
                write_level: Default::default(),
            }),
            wire::CatalogEntry::Drop { name } => CatalogEntry::Drop {
                name: name.to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::record::{CollectionSpec, Distance, EventKind, PlanAction, RingRange, Tier};
    use std::time::Instant;

    fn upsert(dim: usize) -> VectorRecord {
        VectorRecord::Upsert(VectorUpsert {
            collection: "docs".into(),
            id: "doc-1".into(),
            tenant: Some("acme".into()),
            vector: (0..dim).map(|i| i as f32 * 0.001 - 0.1).collect(),
            payload: Some(serde_json::json!({"title": "hello", "n": [1, 2.5, null]})),
            hlc: Hlc::new(1_700_000_000_000, 3),
            origin: "eu".into(),
        })
    }

    /// One or more records of each type, covering every variant.
    type Samples = (
        Vec<VectorRecord>,
        Vec<Event>,
        Vec<PlanChange>,
        Vec<NodeHeartbeat>,
        Vec<CatalogEntry>,
    );

    fn samples() -> Samples {
        let shard = RingRange {
            start: 5,
            end: Some(1 << 40),
        };
        let plan = |action| PlanChange {
            collection: "docs".into(),
            epoch: 9,
            action,
            reason: "hot: 12k qps".into(),
            time_ms: 77,
            place: None,
        };
        (
            vec![
                upsert(384),
                VectorRecord::Delete(VectorDelete {
                    collection: "docs".into(),
                    id: "doc-2".into(),
                    tenant: None,
                    hlc: Hlc(1),
                    origin: String::new(),
                }),
                VectorRecord::Tick(crate::record::VectorTick {
                    collection: "docs".into(),
                    partition: 3,
                    hlc: Hlc(1 << 40),
                    origin: "west".into(),
                }),
            ],
            vec![Event {
                collection: "docs".into(),
                shard: 3,
                ring: u64::MAX,
                kind: EventKind::Delete,
                latency_us: 120,
                time_ms: 1,
                node: "n1".into(),
            }],
            vec![
                plan(PlanAction::Split { shard, at: 1 << 20 }),
                plan(PlanAction::Merge {
                    left: shard,
                    right: RingRange::FULL,
                }),
                plan(PlanAction::Move {
                    shard,
                    from: "n1".into(),
                    to: "n2".into(),
                }),
                plan(PlanAction::SetTier {
                    shard,
                    tier: Tier::Cold,
                }),
            ],
            vec![NodeHeartbeat {
                node: "n1".into(),
                address: "127.0.0.1:7700".into(),
                region: "eu".into(),
                roles: vec!["index".into(), "query".into()],
                capacity: 1.5,
                memory_bytes: 1 << 34,
                time_ms: 2,
                leaving: false,
                shards: Vec::new(),
            }],
            vec![
                CatalogEntry::Create(CollectionSpec {
                    name: "docs".into(),
                    dimension: 384,
                    distance: Distance::Dot,
                    partitions: 16,
                    replication: 3,
                    placement: Default::default(),
                    merge: Default::default(),
                    write_level: Default::default(),
                }),
                CatalogEntry::Drop { name: "old".into() },
            ],
        )
    }

    fn round_trip<R: Record + PartialEq + fmt::Debug>(records: &[R]) {
        for r in records {
            for enc in [Encoding::Binary, Encoding::Json] {
                let log = to_log_record(Some(b"k".to_vec()), r, enc).unwrap();
                assert_eq!(
                    log.header(ENCODING_HEADER),
                    Some(enc.header_value().as_bytes())
                );
                assert_eq!(&from_log_record::<R>(&log).unwrap(), r, "{enc}");
            }
        }
    }

    #[test]
    fn every_record_type_round_trips_in_both_encodings() {
        let (v, e, p, n, c) = samples();
        round_trip(&v);
        round_trip(&e);
        round_trip(&p);
        round_trip(&n);
        round_trip(&c);
    }

    #[test]
    fn the_binary_form_starts_with_version_and_kind() {
        let bytes = encode(&upsert(3), Encoding::Binary).unwrap();
        assert_eq!(&bytes[..2], &[BINARY_VERSION, VectorRecord::TAG]);
        let (_, e, ..) = samples();
        let bytes = encode(&e[0], Encoding::Binary).unwrap();
        assert_eq!(&bytes[..2], &[1, 2]);
        // A 384-dim upsert is the raw floats plus a few dozen bytes.
        let bytes = encode(&upsert(384), Encoding::Binary).unwrap();
        assert!(bytes.len() < 384 * 4 + 128, "{} bytes", bytes.len());
    }

    /// Pins the binary layout: if this changes, records already in logs stop decoding.
    #[test]
    fn the_binary_layout_of_a_delete_is_stable() {
        let d = VectorRecord::Delete(VectorDelete {
            collection: "c".into(),
            id: "ab".into(),
            tenant: Some("t".into()),
            hlc: Hlc(300),
            origin: "o".into(),
        });
        let expected = [
            1, 1, // version, kind
            1, // variant Delete
            1, b'c', 2, b'a', b'b', // collection, id
            1, 1, b't', // Some(tenant)
            0xac, 0x02, // hlc 300 as a varint
            1, b'o', // origin
        ];
        assert_eq!(encode(&d, Encoding::Binary).unwrap(), expected);
    }

    #[test]
    fn no_header_means_json_and_unknown_headers_are_refused() {
        let json = br#"{"op":"delete","collection":"c","id":"x"}"#;
        let d: VectorRecord = decode(json, None).unwrap();
        assert_eq!(d.id(), "x");
        assert_eq!(d.hlc(), Hlc(0));
        match decode::<VectorRecord>(json, Some(b"avro.v1")) {
            Err(Error::UnknownEncoding(h)) => assert_eq!(h, "avro.v1"),
            other => panic!("{other:?}"),
        }
        assert_eq!("bin".parse::<Encoding>().unwrap(), Encoding::Binary);
        assert_eq!("json.v1".parse::<Encoding>().unwrap(), Encoding::Json);
        assert!("xml".parse::<Encoding>().is_err());
    }

    #[test]
    fn bad_binary_is_a_typed_error() {
        let good = encode(&upsert(4), Encoding::Binary).unwrap();
        let bin = Some(&b"bin.v1"[..]);
        let reason = |bytes: &[u8]| match decode::<VectorRecord>(bytes, bin) {
            Err(Error::Malformed { kind, reason }) => {
                assert_eq!(kind, "vector record");
                reason
            }
            other => panic!("expected Malformed, got {other:?}"),
        };

        let mut newer = good.clone();
        newer[0] = 2;
        assert!(matches!(
            decode::<VectorRecord>(&newer, bin),
            Err(Error::UnknownVersion {
                found: 2,
                supported: 1,
                ..
            })
        ));
        assert!(reason(&[]).contains("empty"));
        assert!(reason(&good[..1]).contains("truncated"));
        assert!(reason(&good[..good.len() - 1]).contains("truncated"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(reason(&trailing).contains("1 trailing bytes"));
        let mut other_kind = good.clone();
        other_kind[1] = Event::TAG;
        assert!(reason(&other_kind).contains("found 2 (event)"));
        // Wrong tag the other way round.
        assert!(matches!(
            decode::<Event>(&good, bin),
            Err(Error::Malformed { kind: "event", .. })
        ));
    }

    #[test]
    fn invalid_utf8_and_bad_payload_text_are_malformed() {
        let d = VectorRecord::Delete(VectorDelete {
            collection: "c".into(),
            id: "ab".into(),
            tenant: None,
            hlc: Hlc(0),
            origin: String::new(),
        });
        let mut bytes = encode(&d, Encoding::Binary).unwrap();
        // id "ab" at offset 6..8
        bytes[6] = 0xff;
        match decode::<VectorRecord>(&bytes, Some(b"bin.v1")) {
            Err(Error::Malformed { reason, .. }) => assert!(reason.contains("UTF-8"), "{reason}"),
            other => panic!("{other:?}"),
        }

        let mut u = match upsert(2) {
            VectorRecord::Upsert(u) => u,
            _ => unreachable!(),
        };
        u.payload = Some(serde_json::json!("{x}"));
        let bytes = encode(&VectorRecord::Upsert(u), Encoding::Binary).unwrap();
        // The payload text `"{x}"` is quoted JSON; strip its quotes to make it invalid JSON.
        let text = br#""{x}""#;
        let at = bytes.windows(text.len()).position(|w| w == text).unwrap();
        let mut forged = bytes[..at - 1].to_vec();
        forged.push(3);
        forged.extend_from_slice(b"{x}");
        forged.extend_from_slice(&bytes[at + text.len()..]);
        match decode::<VectorRecord>(&forged, Some(b"bin.v1")) {
            Err(Error::Malformed { reason, .. }) => {
                assert!(reason.contains("payload is not valid JSON"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_forged_huge_length_is_refused_without_allocating_it() {
        let bin = Some(&b"bin.v1"[..]);
        // An upsert whose collection claims 2^62 bytes.
        let mut forged = vec![1, VectorRecord::TAG, 0];
        forged.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        forged.extend_from_slice(b"docs");
        // A heartbeat claiming u32::MAX roles.
        let mut roles = vec![1, NodeHeartbeat::TAG, 1, b'n', 0, 0];
        roles.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        roles.extend_from_slice(&[1, b'x']);
        // An upsert whose vector claims u64::MAX bytes.
        let mut vector = vec![1, VectorRecord::TAG, 0, 1, b'c', 1, b'i', 0];
        vector.extend_from_slice(&[0xff; 9]);
        vector.push(0x01);
        // Allocating what these claim would abort the test process.
        assert!(matches!(
            decode::<VectorRecord>(&forged, bin),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            decode::<NodeHeartbeat>(&roles, bin),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            decode::<VectorRecord>(&vector, bin),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn non_finite_numbers_are_refused_in_both_encodings() {
        let mut u = match upsert(3) {
            VectorRecord::Upsert(u) => u,
            _ => unreachable!(),
        };
        u.vector[1] = f32::NAN;
        let bad = VectorRecord::Upsert(u.clone());
        for enc in [Encoding::Binary, Encoding::Json] {
            match encode(&bad, enc) {
                Err(Error::Malformed { reason, .. }) => {
                    assert!(reason.contains("component 1"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        // Forged binary with an infinity is refused on decode.
        u.vector[1] = 0.5;
        let mut bytes = encode(&VectorRecord::Upsert(u), Encoding::Binary).unwrap();
        let half = 0.5f32.to_le_bytes();
        let at = bytes.windows(4).position(|w| w == half).unwrap();
        bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        match decode::<VectorRecord>(&bytes, Some(b"bin.v1")) {
            Err(Error::Malformed { reason, .. }) => assert!(reason.contains("finite"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // JSON beyond f32's range would read as infinity: refused.
        let json = br#"{"op":"upsert","collection":"c","id":"a","vector":[1e39]}"#;
        match decode::<VectorRecord>(json, None) {
            Err(Error::Malformed { reason, .. }) => assert!(reason.contains("finite"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let (_, _, _, mut n, _) = samples();
        n[0].capacity = f64::INFINITY;
        assert!(encode(&n[0], Encoding::Json).is_err());
    }

    #[test]
    fn a_null_payload_reads_as_none_in_both_encodings() {
        let mut u = match upsert(2) {
            VectorRecord::Upsert(u) => u,
            _ => unreachable!(),
        };
        u.payload = Some(serde_json::Value::Null);
        for enc in [Encoding::Binary, Encoding::Json] {
            let bytes = encode(&VectorRecord::Upsert(u.clone()), enc).unwrap();
            match decode::<VectorRecord>(&bytes, Some(enc.header_value().as_bytes())).unwrap() {
                VectorRecord::Upsert(back) => assert_eq!(back.payload, None, "{enc}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Throughput of the hot path: 384-dim upserts (with a small payload) in the binary
    /// form. A measurement, not a check: run it with
    /// `cargo test --release -p hektor-topics --lib binary_upserts -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run by hand"]
    fn binary_upserts_encode_and_decode_throughput() {
        let record = upsert(384);
        let header = Some(&b"bin.v1"[..]);
        let n = 50_000u32;

        let started = Instant::now();
        let mut total = 0usize;
        for _ in 0..n {
            total += encode(&record, Encoding::Binary).unwrap().len();
        }
        let encode_rate = n as f64 / started.elapsed().as_secs_f64();

        let bytes = encode(&record, Encoding::Binary).unwrap();
        assert_eq!(total, bytes.len() * n as usize);
        let started = Instant::now();
        for _ in 0..n {
            let back: VectorRecord = decode(&bytes, header).unwrap();
            assert_eq!(back.id().len(), 5);
        }
        let decode_rate = n as f64 / started.elapsed().as_secs_f64();
        let both = 1.0 / (1.0 / encode_rate + 1.0 / decode_rate);
        println!(
            "384-dim upsert ({} bytes), binary: encode {encode_rate:.0}/s, decode \
             {decode_rate:.0}/s, encode+decode {both:.0} records/s",
            bytes.len()
        );
    }
}
