//! Search: the router. It takes the collection's shard map at its current epoch, picks
//! for every shard that can hold the answer a replica (this node when it holds one, else
//! the alive replica with the fewest requests in flight, skipping nodes that just failed),
//! asks it — in this process on a bounded pool, or over HTTP on another node — retries
//! the next replica on failure, and merges the top k. Every answer names the epoch of the
//! map it was served from; the shards of one map tile the ring, so each vector is searched
//! exactly once.
//!
//! Only the shards overlapping the tenant's ring range are searched when a tenant is
//! given, and the range is passed to each shard as a filter applied inside the engine. A
//! request carrying a write token makes every involved shard wait (bounded) until it has
//! applied the token's offset in its partition, wherever it runs. A token of another
//! region (`consistency.region`) is first turned into that region's clock floors by its
//! node ([`Searcher::token_floors`] there, [`crate::peers::Peers::token_floors`] here),
//! and every involved shard waits until it has merged that region's partition that far.
//!
//! Hits cost their records only once they are answers: a shard held here and searched on
//! the request's thread answers with its hits' items and scores and the LMDB snapshot it
//! searched ([`Found`]); the router merges them with the other shards' hits and reads the
//! ids and payloads of the best k only, from that same snapshot, so an answer's id and
//! payload are the scored vector's whatever was written meanwhile. No snapshot stays open
//! across a wait (another replica, another node, a consistency wait): the records of the
//! hits found so far are read first. Payloads travel as the stored JSON text
//! ([`RawValue`]), from LMDB to the response buffer, never parsed into values.
//!
//! [`shard_search`] and [`shard_get`] are the per-shard calls other nodes' routers make
//! (`POST /internal/...`, see [`crate::http`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_cluster::ShardMap;
use hektor_control::Routing;
use hektor_indexers::host::{HostedShard, ShardHost};
use hektor_indexers::{EngineKind, Found, RawHit, SearchOptions};
use hektor_topics::events::EventSink;
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{CollectionSpec, EventKind, RingRange};
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::peers::Peers;
use crate::QueryError;

/// Largest k a search may ask for.
pub const MAX_K: usize = 1000;
/// Largest per-search effort a search may ask for.
pub const MAX_EFFORT: usize = 10_000;
/// Default bound on a consistency wait.
pub const DEFAULT_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest consistency wait a search may ask for (`consistency.timeout_ms`).
pub const MAX_CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(300);

/// The checks every search door shares (the public search and the per-shard call): k,
/// effort, the consistency wait, and the query vector against the collection.
fn check_search(
    vector: &[f32],
    dimension: u32,
    k: usize,
    effort: Option<usize>,
    timeout_ms: Option<u64>,
) -> Result<(), QueryError> {
    if vector.len() != dimension as usize {
        return Err(QueryError::Invalid(format!(
            "query vector has {} dimensions, the collection has {dimension}",
            vector.len(),
        )));
    }
    if let Some(pos) = vector.iter().position(|x| !x.is_finite()) {
        return Err(QueryError::Invalid(format!(
            "vector[{pos}] is not a finite number"
        )));
    }
    if k == 0 || k > MAX_K {
        return Err(QueryError::Invalid(format!(
            "k must be between 1 and {MAX_K}, got {k}"
        )));
    }
    if let Some(e) = effort.filter(|e| *e == 0 || *e > MAX_EFFORT) {
        return Err(QueryError::Invalid(format!(
            "effort must be between 1 and {MAX_EFFORT}, got {e}"
        )));
    }
    let max_ms = MAX_CONSISTENCY_TIMEOUT.as_millis() as u64;
    if let Some(t) = timeout_ms.filter(|t| *t > max_ms) {
        return Err(QueryError::Invalid(format!(
            "consistency.timeout_ms must be at most {max_ms}, got {t}"
        )));
    }
    Ok(())
}

/// How fresh a search must be (seed §3.3).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// `eventual` (the default without `after`): whatever this region has merged now.
    /// `session` (the default with `after`): at least the writes of the token.
    /// `bounded`: every write acknowledged in any region more than `max_staleness_ms`
    /// before the search began. `strong`: every write acknowledged in any region before
    /// the search began. Bounded and strong reads wait (up to `timeout_ms`) until this
    /// region's copies of every region's partitions are closed far enough (the clocks'
    /// allowed offset, `--max-clock-offset-ms`, included); past the wait: 504.
    #[serde(default)]
    pub level: Option<ConsistencyLevel>,
    /// With `bounded`: how old the newest missing write may be, in ms.
    #[serde(default)]
    pub max_staleness_ms: Option<u64>,
    /// A write token (`{partition: offset}`) whose writes the search must see. Its
    /// offsets are positions in the log of the region that accepted the write (the write
    /// answer's `region`): name that region in `region` to read it in another one.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, u64>>)]
    pub after: Option<BTreeMap<u32, u64>>,
    /// The region whose log the token in `after` is of (a write answer's `region`).
    /// Absent or this node's region: the token is waited for here. Another region: this
    /// node asks its peer there (`--region-peers`) how far that region's clock had gone
    /// when it applied the token, then waits until this region has merged that region's
    /// partitions that far (one round trip plus the mirror's lag); without a reachable
    /// peer the answer is 503/504, never a search without the writes (use `strong`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// How long to wait for it, in milliseconds (default 10,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The consistency levels of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    Eventual,
    Session,
    Bounded,
    Strong,
}

/// Largest `max_staleness_ms` a bounded search may ask for (a day).
pub const MAX_STALENESS_MS: u64 = 86_400_000;

impl Consistency {
    /// The level asked for, or implied (`session` with a token, else `eventual`), once
    /// the fields agree with it.
    pub fn level(&self) -> Result<ConsistencyLevel, QueryError> {
        let level = self.level.unwrap_or(if self.after.is_some() {
            ConsistencyLevel::Session
        } else {
            ConsistencyLevel::Eventual
        });
        if let Some(region) = &self.region {
            if level != ConsistencyLevel::Session {
                return Err(QueryError::Invalid(
                    "consistency.region names the region of a session token (`after`): it goes with level `session` only".into(),
                ));
            }
            check_region_name(region)?;
        }
        match (level, self.max_staleness_ms) {
            (ConsistencyLevel::Bounded, None) => Err(QueryError::Invalid(
                "consistency level `bounded` needs max_staleness_ms".into(),
            )),
            (ConsistencyLevel::Bounded, Some(ms)) if ms > MAX_STALENESS_MS => {
                Err(QueryError::Invalid(format!(
                    "consistency.max_staleness_ms must be at most {MAX_STALENESS_MS}, got {ms}"
                )))
            }
            (ConsistencyLevel::Bounded, Some(_)) => Ok(level),
            (_, Some(_)) => Err(QueryError::Invalid(
                "consistency.max_staleness_ms goes with level `bounded` only".into(),
            )),
            (ConsistencyLevel::Session, None) if self.after.is_none() => Err(QueryError::Invalid(
                "consistency level `session` needs a token in `after`".into(),
            )),
            (_, None) => Ok(level),
        }
    }

    /// The region of the token when it is not `here` (a session read of a write accepted
    /// in another region), else `None`.
    pub fn token_region(&self, here: &str) -> Option<&str> {
        self.region.as_deref().filter(|r| *r != here)
    }
}

/// Longest region name a request may carry.
pub const MAX_REGION_NAME: usize = 64;

/// A region name as requests may carry it: 1 to [`MAX_REGION_NAME`] bytes of ASCII
/// letters, digits, `-`, `_` and `.` (region names are topic-name prefixes, so nothing
/// else can name a region).
pub fn check_region_name(region: &str) -> Result<(), QueryError> {
    let ok = !region.is_empty()
        && region.len() <= MAX_REGION_NAME
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(QueryError::Invalid(format!(
            "consistency.region must be a region name (1 to {MAX_REGION_NAME} ASCII letters, digits, `-`, `_` or `.`), got {:?}",
            region.chars().take(80).collect::<String>()
        )))
    }
}

/// The body of `POST /collections/{c}/search`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub consistency: Option<Consistency>,
    /// Leave payloads out of the hits.
    #[serde(default)]
    pub without_payload: bool,
    /// This search's effort, overriding the shards' configured one: the beam width of
    /// the hot and warm graphs (`ef_search`), the candidates the cold tier rescores. More
    /// finds more true neighbours and costs more; engines without the knob ignore it.
    #[serde(default)]
    pub effort: Option<usize>,
    /// `false` lets warm-tier shards answer from their int8 codes without re-reading the
    /// full vectors: the same hits, approximate scores, less memory touched. Default true.
    #[serde(default)]
    pub rescore: Option<bool>,
}

fn default_k() -> usize {
    10
}

impl SearchRequest {
    /// How long the search may wait for its consistency level (`timeout_ms`, default
    /// 10 s).
    pub fn consistency_timeout(&self) -> Duration {
        self.consistency
            .as_ref()
            .and_then(|c| c.timeout_ms)
            .map_or(DEFAULT_CONSISTENCY_TIMEOUT, Duration::from_millis)
    }

    /// The request in a JSON body, exactly as `serde_json::from_slice` reads it (same
    /// values, same errors), in one pass for the usual body: an object of `vector` (a
    /// flat array of numbers), `k`, `effort`, `without_payload`, `rescore` and `tenant`
    /// (a string without escapes), each at most once, is read by `LeanReader`; any
    /// other body (`consistency`, an escape, an unknown or repeated field, a number the
    /// lean reader leaves alone, any error) is read by serde_json, whose answer is then
    /// the answer.
    pub fn from_json(body: &[u8]) -> Result<SearchRequest, serde_json::Error> {
        if let Some(request) = LeanReader::new(body).and_then(LeanReader::request) {
            return Ok(request);
        }
        serde_json::from_slice(body)
    }
}

/// The one-pass reader of [`SearchRequest::from_json`]: every method answers `None`
/// for anything it does not read exactly as serde_json would.
struct LeanReader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> LeanReader<'a> {
    fn new(body: &'a [u8]) -> Option<LeanReader<'a>> {
        Some(LeanReader {
            text: std::str::from_utf8(body).ok()?,
            at: 0,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.text.as_bytes()[self.at..].starts_with(word.as_bytes());
        if found {
            self.at += word.len();
        }
        found
    }

    /// A string without escapes or control characters.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let from = self.at;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' | 0..=0x1F => return None,
                _ => self.at += 1,
            }
        }
        self.at += 1;
        self.text.get(from..self.at - 1)
    }

    /// A `usize` written as a plain integer (serde_json refuses any other number).
    fn unsigned(&mut self) -> Option<usize> {
        self.ws();
        let bytes = self.text.as_bytes();
        let from = self.at;
        while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &bytes[from..self.at];
        if digits.is_empty()
            || digits.len() > 19
            || (digits[0] == b'0' && digits.len() > 1)
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        usize::try_from(value).ok()
    }

    fn boolean(&mut self) -> Option<bool> {
        self.ws();
        if self.literal("true") {
            Some(true)
        } else if self.literal("false") {
            Some(false)
        } else {
            None
        }
    }

    /// `null` as `None`, else what `read` reads.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        self.ws();
        if self.literal("null") {
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A flat array of numbers (see [`parse_number`]).
    fn vector(&mut self) -> Option<Vec<f32>> {
        self.eat(b'[')?;
        self.ws();
        let mut out = Vec::with_capacity((self.text.len() - self.at) / 8 + 1);
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(out);
        }
        loop {
            self.ws();
            let (x, end) = parse_number(self.text, self.at)?;
            out.push(x);
            self.at = end;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    fn request(mut self) -> Option<SearchRequest> {
        let mut request = SearchRequest {
            vector: Vec::new(),
            k: default_k(),
            tenant: None,
            consistency: None,
            without_payload: false,
            effort: None,
            rescore: None,
        };
        let mut seen = [false; 6];
        let mut once = |field: usize| !std::mem::replace(&mut seen[field], true);
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            return None; // no vector: serde_json's "missing field" error
        }
        loop {
            let key = self.plain_string()?;
            self.eat(b':')?;
            match key {
                "vector" if once(0) => request.vector = self.vector()?,
                "k" if once(1) => request.k = self.unsigned()?,
                "effort" if once(2) => request.effort = self.nullable(Self::unsigned)?,
                "without_payload" if once(3) => request.without_payload = self.boolean()?,
                "rescore" if once(4) => request.rescore = self.nullable(Self::boolean)?,
                "tenant" if once(5) => {
                    request.tenant = self.nullable(|r| r.plain_string().map(str::to_owned))?
                }
                _ => return None,
            }
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.ws();
        (seen[0] && self.at == self.text.len()).then_some(request)
    }
}

/// A JSON array of numbers as `f32`s, each exactly as serde_json (with
/// `float_roundtrip`, as this workspace builds it) reads an `f32`: the decimal value
/// correctly rounded to the nearest `f32`, an integer token included. `None` when the
/// text is anything but `[`, numbers separated by commas, `]` with JSON whitespace, or
/// when a number is one serde_json reads by another path or refuses: more than 19
/// significant digits, an exponent of more than 4 digits, or a value beyond `f32`
/// (serde_json's "number out of range").
pub fn parse_vector(text: &str) -> Option<Vec<f32>> {
    let mut reader = LeanReader { text, at: 0 };
    let vector = reader.vector()?;
    reader.ws();
    (reader.at == text.len()).then_some(vector)
}

/// Powers of ten exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) at byte `i` of
/// `text` as the nearest `f32`, and where it ends; `None` when there is none or it is
/// one [`parse_vector`] leaves to serde_json (see there).
///
/// Most numbers take the fast path: significant digits `d` < 10^19 (exact in a `u64`)
/// and a power `p` of ten with |p| ≤ 22 (exact in an `f64`) give `d · 10^p` in `f64`
/// within 3 units in the last place (two roundings: `d` to `f64`, then the product or
/// quotient). Rounding that to `f32` rounds the decimal value itself unless an `f32`
/// midpoint (where rounding to `f32` turns) lies within that error, which shows in the
/// low 29 bits of the `f64` being within 8 of the midpoint pattern; those, and every
/// other number, are read by `str::parse::<f32>`, which rounds correctly.
fn parse_number(text: &str, start: usize) -> Option<(f32, usize)> {
    let bytes = text.as_bytes();
    let mut i = start;
    let negative = bytes.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let mut significand: u64 = 0;
    // Digits from the first non-zero one on.
    let mut significant = 0usize;
    let mut push = |c: u8| {
        if significand != 0 || c != b'0' {
            significand = significand
                .wrapping_mul(10)
                .wrapping_add(u64::from(c - b'0'));
            significant += 1;
        }
    };
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
                push(c);
                i += 1;
            }
        }
        _ => return None,
    }
    let mut power: i32 = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let from = i;
        while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
            push(c);
            i += 1;
        }
        if i == from {
            return None;
        }
        power = -((i - from) as i32);
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        let minus = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let from = i;
        let mut exponent: i32 = 0;
        while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
            exponent = exponent * 10 + i32::from(c - b'0');
            i += 1;
            if i - from > 4 {
                return None;
            }
        }
        if i == from {
            return None;
        }
        power += if minus { -exponent } else { exponent };
    }
    // Up to 19 significant digits, `significand` is exact.
    if significant > 19 {
        return None;
    }
    if power.unsigned_abs() <= 22 {
        let scale = POW10[power.unsigned_abs() as usize];
        let near = if power < 0 {
            significand as f64 / scale
        } else {
            significand as f64 * scale
        };
        let low = near.to_bits() & 0x1FFF_FFFF;
        if low.abs_diff(0x1000_0000) > 8 {
            let x = near as f32;
            if x.is_finite() {
                return Some((if negative { -x } else { x }, i));
            }
            return None;
        }
    }
    // A JSON number is ASCII, so the slice is on character boundaries.
    let x: f32 = text.get(start..i)?.parse().ok()?;
    x.is_finite().then_some((x, i))
}

/// One hit of a search: score is higher-is-closer for every distance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub id: String,
    pub score: f32,
    // The stored payload's JSON text, as written (a JSON value in the API's schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Box<RawValue>>,
}

/// The answer of a search.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// Shards searched.
    pub shards: usize,
    /// The shard-map epoch that served it.
    pub epoch: u64,
    pub took_us: u64,
    /// The region that answered, when it is not the one asked: a bounded or strong
    /// search this region could not answer within the round trip to a fresher one was
    /// forwarded there (`--region-peers`). Absent: answered here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The body of a per-shard search (`POST /internal/collections/{c}/shard-search`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShardSearch {
    pub incarnation: u64,
    pub range: RingRange,
    /// The vectors-topic partition the range lies in (the write token's key).
    #[serde(default)]
    pub partition: u32,
    pub vector: Vec<f32>,
    pub k: usize,
    /// A tenant's ring range, applied inside the engine.
    #[serde(default)]
    pub filter: Option<RingRange>,
    /// Wait until the shard has applied this offset of its partition.
    #[serde(default)]
    pub after: Option<u64>,
    /// Wait until every region's copy of the partition here is closed at least at this
    /// hybrid logical clock ([`HostedShard::wait_floors`]): bounded and strong searches.
    #[serde(default)]
    pub floor: Option<u64>,
    /// A session read of another region's write: wait until that region's copy of the
    /// partition merged here is closed at least at this hybrid logical clock (what that
    /// region's shard had reached once it applied the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<RegionFloor>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The search's own effort (see [`SearchRequest::effort`]).
    #[serde(default)]
    pub effort: Option<usize>,
    /// See [`SearchRequest::rescore`].
    #[serde(default)]
    pub rescore: Option<bool>,
}

impl ShardSearch {
    /// Check a per-shard call from another node as strictly as a public search: the
    /// internal route is a door too.
    pub fn check(&self, dimension: u32) -> Result<(), QueryError> {
        check_search(
            &self.vector,
            dimension,
            self.k,
            self.effort,
            self.timeout_ms,
        )?;
        if let Some(f) = self.filter {
            if f.end.is_some_and(|e| e <= f.start) {
                return Err(QueryError::Invalid("the filter range is empty".into()));
            }
        }
        if let Some(session) = &self.session {
            check_region_name(&session.region)?;
        }
        Ok(())
    }
}

/// A region's clock floor a session read waits for in one partition (see
/// [`ShardSearch::session`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionFloor {
    /// The region that accepted the session's writes.
    pub region: String,
    /// Its effective hybrid logical clock of the partition once it had applied the token.
    pub floor: u64,
}

/// The body of `POST /internal/collections/{c}/token-floors`: a write token of the
/// answering node's region, from another region's session read.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenFloorsRequest {
    /// Partition → offset in the answering region's log, as its write answered.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub token: BTreeMap<u32, u64>,
    /// How long the answering node may wait for its shards to apply the token, in ms
    /// (default 10,000, at most 300,000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Asked by another node of the answering node's region (for partitions it holds no
    /// shard of): answered from this node's shards only, never asked further.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
}

/// The answer of `POST /internal/collections/{c}/token-floors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenFloors {
    /// The answering node's region (the token's).
    pub region: String,
    /// Partition → the effective hybrid logical clock a shard of it there had reached
    /// once it applied the token's offset (at least the stamp of the token's record): a
    /// region that has merged the partition up to it has every write of the token.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub floors: BTreeMap<u32, u64>,
}

impl TokenFloorsRequest {
    /// Check a token from another region against the collection: every partition is one
    /// of its `partitions`, and the wait is bounded.
    pub fn check(&self, partitions: u32) -> Result<(), QueryError> {
        check_token(&self.token, partitions)?;
        let max_ms = MAX_CONSISTENCY_TIMEOUT.as_millis() as u64;
        if let Some(t) = self.timeout_ms.filter(|t| *t > max_ms) {
            return Err(QueryError::Invalid(format!(
                "timeout_ms must be at most {max_ms}, got {t}"
            )));
        }
        Ok(())
    }
}

/// A session token read in another region than its own names only partitions of the
/// collection (it is checked there and here): at least one, each below `partitions`.
pub fn check_token(token: &BTreeMap<u32, u64>, partitions: u32) -> Result<(), QueryError> {
    if token.is_empty() {
        return Err(QueryError::Invalid("the token names no partition".into()));
    }
    if let Some(p) = token.keys().find(|p| **p >= partitions) {
        return Err(QueryError::Invalid(format!(
            "the token names partition {p}, the collection has {partitions}"
        )));
    }
    Ok(())
}

/// One hit as it crosses between nodes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireHit {
    pub id: String,
    pub score: f32,
    // The stored payload's JSON text, as written (a JSON value in the API's schema).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Box<RawValue>>,
}

impl From<RawHit> for WireHit {
    fn from(hit: RawHit) -> WireHit {
        WireHit {
            id: hit.id,
            score: hit.score,
            payload: hit.payload,
        }
    }
}

/// One shard's answer to a query: hits with their records (another node's, or the
/// pool's), or the items and scores of a shard held here searched on the request's
/// thread, whose records are read once the merge has picked them ([`Found`]).
enum Answer<'s> {
    Hits(Vec<WireHit>),
    Found(Found<'s>),
}

/// An answer slot per shard of a query, in shard order.
type Answered<'s> = Vec<Option<Result<Answer<'s>, QueryError>>>;

/// Read the records of the local answers' hits now (each shard's own top k), so that no
/// snapshot stays open across what comes next: a wait on another replica or node, or a
/// consistency wait, during which LMDB could not reuse the pages written meanwhile.
fn settle(answered: &mut Answered<'_>) {
    for slot in answered.iter_mut() {
        if matches!(slot, Some(Ok(Answer::Found(_)))) {
            if let Some(Ok(Answer::Found(found))) = slot.take() {
                *slot = Some(
                    found
                        .into_raw_hits()
                        .map(|hits| Answer::Hits(hits.into_iter().map(WireHit::from).collect()))
                        .map_err(engine_error),
                );
            }
        }
    }
}

/// The best `k` hits of the shards' answers: the first failed shard's error if any, else
/// their hits best first, equal scores in shard order (a stable sort of the answers one
/// after another). The records of local answers' hits are read here, for the best `k`
/// only; `payload: false` leaves the payloads unread.
fn merge(answered: Answered<'_>, k: usize, payload: bool) -> Result<Vec<SearchHit>, QueryError> {
    let mut answers = Vec::with_capacity(answered.len());
    for answer in answered {
        answers.push(answer.unwrap_or_else(|| {
            Err(QueryError::Internal(
                "a shard of the query was not searched".into(),
            ))
        })?);
    }
    // (score, answer, hit of the answer)
    let mut best: Vec<(f32, usize, usize)> = Vec::with_capacity(k * answers.len());
    for (a, answer) in answers.iter().enumerate() {
        match answer {
            Answer::Hits(hits) => {
                best.extend(hits.iter().enumerate().map(|(i, h)| (h.score, a, i)))
            }
            Answer::Found(found) => best.extend((0..found.len()).map(|i| (found.score(i), a, i))),
        }
    }
    best.sort_by(|x, y| y.0.total_cmp(&x.0));
    best.truncate(k);
    best.into_iter()
        .map(|(score, a, i)| match &mut answers[a] {
            Answer::Hits(hits) => {
                let hit = &mut hits[i];
                Ok(SearchHit {
                    id: std::mem::take(&mut hit.id),
                    score,
                    payload: if payload { hit.payload.take() } else { None },
                })
            }
            Answer::Found(found) => {
                let hit = found.raw_hit(i, payload).map_err(engine_error)?;
                Ok(SearchHit {
                    id: hit.id,
                    score,
                    payload: hit.payload,
                })
            }
        })
        .collect()
}

/// An engine's error as the query's: a bad query is the caller's, anything else ours.
fn engine_error(e: hektor_indexers::Error) -> QueryError {
    match e {
        hektor_indexers::Error::InvalidQuery(m) => QueryError::Invalid(m),
        other => QueryError::Internal(other.to_string()),
    }
}

/// The answer of a per-shard search.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShardAnswer {
    pub hits: Vec<WireHit>,
}

/// The body of a per-shard read of one vector.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShardGet {
    pub incarnation: u64,
    pub range: RingRange,
    pub id: String,
    /// The vector's tenant: with the id, its identity (absent: no tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// How long a router waits for a collection's first shard map, and a node for a shard
/// it was just assigned to open.
const MAP_WAIT: Duration = Duration::from_secs(10);
/// How long a node that failed a call is skipped.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// Requests in flight to a node and when it last failed.
#[derive(Default)]
struct NodeHealth {
    inflight: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

/// The searcher of one node: the router over the cluster's shards, this node's shards
/// and bounded pool, and the event sink.
pub struct Searcher {
    host: Arc<ShardHost>,
    pool: Arc<rayon::ThreadPool>,
    events: EventSink,
    routing: watch::Receiver<Arc<Routing>>,
    client: reqwest::Client,
    health: Mutex<HashMap<String, Arc<NodeHealth>>>,
    served: AtomicUsize,
    /// Searches this router is running now (see [`Searcher::search`]: with others
    /// running, every core is busy and a query's local shards are searched inline).
    active: AtomicUsize,
    /// The `Authorization` value of calls to other nodes (the cluster secret), if any.
    internal_auth: Option<String>,
    /// `http` or `https`: how other nodes are called.
    scheme: &'static str,
    /// The largest offset between two nodes' clocks that strong and bounded searches
    /// allow for ([`Searcher::with_max_clock_offset`]).
    max_clock_offset: Duration,
    /// The other regions' nodes, where bounded and strong searches may be forwarded
    /// ([`Searcher::with_peers`]).
    peers: Option<Arc<Peers>>,
}

/// Default of [`Searcher::with_max_clock_offset`].
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = Duration::from_millis(250);

impl Searcher {
    /// `threads`: size of the search pool (0 = one per core).
    pub fn new(
        host: Arc<ShardHost>,
        events: EventSink,
        threads: usize,
        routing: watch::Receiver<Arc<Routing>>,
    ) -> Result<Searcher, QueryError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hektor-search-{i}"))
            // Searches catch their own panics; this is the last line, so that nothing
            // that escapes a job aborts the process (rayon's default).
            .panic_handler(|_| tracing::error!("a job on the search pool panicked"))
            .build()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        Ok(Searcher {
            host,
            pool: Arc::new(pool),
            events,
            routing,
            client,
            health: Mutex::new(HashMap::new()),
            served: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            internal_auth: None,
            scheme: "http",
            max_clock_offset: DEFAULT_MAX_CLOCK_OFFSET,
            peers: None,
        })
    }

    /// The other regions' nodes (`--region-peers`), if any.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// Forward a bounded or strong search this region cannot answer within the round
    /// trip to the nearest live peer there too, and take the first answer (see
    /// [`crate::peers`]).
    pub fn with_peers(mut self, peers: Option<Arc<Peers>>) -> Searcher {
        self.peers = peers;
        self
    }

    /// Strong and bounded searches allow any two nodes' clocks to differ by up to
    /// `offset`: they wait until every region's copy is closed that far past their bound.
    pub fn with_max_clock_offset(mut self, offset: Duration) -> Searcher {
        self.max_clock_offset = offset;
        self
    }

    /// Call other nodes over HTTPS with this client (one that trusts the cluster's CA).
    pub fn with_tls_client(mut self, client: reqwest::Client) -> Searcher {
        self.client = client;
        self.scheme = "https";
        self
    }

    /// Send this `Authorization` value (`Bearer <cluster secret>`) on every call to
    /// another node's internal routes.
    pub fn with_internal_auth(mut self, authorization: Option<String>) -> Searcher {
        self.internal_auth = authorization;
        self
    }

    /// A request to another node's internal route, with the cluster secret.
    pub(crate) fn internal_post(&self, url: String) -> reqwest::RequestBuilder {
        let request = self.client.post(url);
        match &self.internal_auth {
            Some(auth) => request.header(reqwest::header::AUTHORIZATION, auth),
            None => request,
        }
    }

    /// `http` or `https`: how other nodes are called.
    pub(crate) fn scheme(&self) -> &'static str {
        self.scheme
    }

    pub fn host(&self) -> &Arc<ShardHost> {
        &self.host
    }

    /// Count one shard search served by this node.
    pub fn note_shard_search(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Shard searches this node has served since it started.
    pub fn shard_searches(&self) -> u64 {
        self.served.load(Ordering::Relaxed) as u64
    }

    /// The cluster as this node sees it.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.borrow().clone()
    }

    /// The collection's current shard map (for its current incarnation), waiting
    /// (bounded) for the first one of a new collection.
    pub async fn map(&self, collection: &str) -> Result<Arc<ShardMap>, QueryError> {
        self.host.catalog().resolve(collection).await;
        let incarnation = self
            .host
            .catalog()
            .incarnation(collection)
            .ok_or_else(|| QueryError::UnknownCollection(collection.into()))?;
        let pick = |r: &Arc<Routing>| {
            r.maps
                .get(collection)
                .filter(|m| m.incarnation() == incarnation)
                .cloned()
        };
        if let Some(map) = pick(&self.routing.borrow()) {
            return Ok(map);
        }
        let mut rx = self.routing.clone();
        let waited = tokio::time::timeout(MAP_WAIT, async {
            loop {
                if let Some(map) = pick(&rx.borrow_and_update()) {
                    return Some(map);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        waited.ok().flatten().ok_or_else(|| {
            QueryError::Unavailable(format!(
                "collection `{collection}` has no shard map yet: no data node is alive, or the \
                 controller has not placed it; retry shortly"
            ))
        })
    }

    fn health_of(&self, node: &str) -> Arc<NodeHealth> {
        let mut health = self.health.lock();
        if let Some(h) = health.get(node) {
            return Arc::clone(h);
        }
        Arc::clone(health.entry(node.to_owned()).or_default())
    }

    /// The replicas of shard `range` of `collection` in the order to try them: this node
    /// first, then alive nodes not marked down by their requests in flight, then the
    /// rest. This node's own copy goes behind the alive others while its consumer is
    /// failing (a full disk, say): it would only wait out the consistency timeout.
    fn replica_order(
        &self,
        routing: &Routing,
        collection: &str,
        range: RingRange,
        replicas: &[String],
    ) -> Vec<String> {
        let now = Instant::now();
        let local_failing = self
            .host
            .collection(collection)
            .is_some_and(|c| c.shard(range).is_some_and(|s| s.failure().is_some()));
        let mut scored: Vec<(u8, usize, String)> = replicas
            .iter()
            .map(|n| {
                let h = self.health_of(n);
                let down = h.down_until.lock().is_some_and(|t| t > now);
                let alive = n == &routing.me || routing.nodes.get(n).is_some_and(|i| i.alive);
                let class = if n == &routing.me && !local_failing {
                    0
                } else if n == &routing.me {
                    2
                } else if alive && !down {
                    1
                } else {
                    3
                };
                (class, h.inflight.load(Ordering::Relaxed), n.clone())
            })
            .collect();
        scored.sort();
        scored.into_iter().map(|(_, _, n)| n).collect()
    }

    /// What a bounded or strong search waits for. With other regions mirrored here: a
    /// floor, the hybrid clock every region's copy of a partition must be closed at
    /// (the search's start, less the staleness allowed, plus the clocks' allowed
    /// offset). In one region: the end of each partition's log as the search begins
    /// (every acknowledged write lies before it; `bounded` is served as `strong` there).
    async fn freshness(
        &self,
        spec: &CollectionSpec,
        request: &SearchRequest,
        level: ConsistencyLevel,
        shards: &[hektor_cluster::Shard],
    ) -> Result<(Option<u64>, BTreeMap<u32, u64>), QueryError> {
        let staleness = match level {
            ConsistencyLevel::Eventual | ConsistencyLevel::Session => {
                return Ok((None, BTreeMap::new()))
            }
            ConsistencyLevel::Strong => 0,
            ConsistencyLevel::Bounded => request
                .consistency
                .as_ref()
                .and_then(|c| c.max_staleness_ms)
                .unwrap_or(0),
        };
        let config = self.host.config();
        if !config.mirrors.is_empty() {
            let now = config
                .clock
                .as_ref()
                .map(|c| c.now().physical_ms())
                .unwrap_or_else(hektor_topics::hlc::wall_ms);
            let at = (now + self.max_clock_offset.as_millis() as u64).saturating_sub(staleness);
            return Ok((Some(Hlc::new(at, 0).0), BTreeMap::new()));
        }
        let topic = topic_name(&spec.name, TopicKind::Vectors);
        let mut partitions: Vec<u32> = shards
            .iter()
            .map(|s| ring::partition_of(s.range.start, spec.partitions))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let log = self.host.catalog().log();
        let mut ends = BTreeMap::new();
        for partition in partitions {
            let end = log.high_watermark(&topic, partition).await.map_err(|e| {
                QueryError::Unavailable(format!(
                    "reading the end of partition {partition} for a {level:?} search failed: {e}"
                ))
            })?;
            if let Some(last) = end.checked_sub(1) {
                ends.insert(partition, last);
            }
        }
        Ok((None, ends))
    }

    /// Validate, wait for consistency, fan out, merge.
    ///
    /// A shard held here is searched on the calling thread ("inline", no pool hop) when
    /// that is cheap — the hot (in-memory) engine, no tenant filter, a bounded k and
    /// effort, a short unindexed tail, its token already applied — and when a hop gains
    /// little: the query has at most `INLINE_ALL_UP_TO` (2) such shards, or other searches
    /// are running (the cores have work). Otherwise its search goes to the pool, as do
    /// calls to other replicas; a query with more local shards and no other search
    /// running sends all but its last one to the pool and searches that one meanwhile.
    /// Replica order, retries, errors and events are the same either way.
    ///
    /// A bounded or strong search on a node with `--region-peers` that is not answered
    /// here within the round trip to the nearest live peer region is sent there too, and
    /// the first answer wins ([`crate::peers`]); an answer from there names its region.
    pub async fn search(
        &self,
        collection: &str,
        request: SearchRequest,
    ) -> Result<SearchResponse, QueryError> {
        let level = request.consistency.as_ref().and_then(|c| c.level().ok());
        let peers = self
            .peers
            .as_ref()
            .filter(|_| {
                matches!(
                    level,
                    Some(ConsistencyLevel::Bounded | ConsistencyLevel::Strong)
                )
            })
            .filter(|_| !self.host.config().mirrors.is_empty());
        let Some((peers, (region, rtt))) = peers.and_then(|p| Some((p, p.nearest_alive()?))) else {
            return self.search_here(collection, request).await;
        };
        let began = Instant::now();
        let timeout = request.consistency_timeout();
        let mut forwarded = request.clone();
        let here = self.search_here(collection, request);
        tokio::pin!(here);
        // Answered here within a round trip: no one else is asked.
        if let Ok(answer) = tokio::time::timeout(rtt, &mut here).await {
            return answer;
        }
        let left = timeout.saturating_sub(began.elapsed());
        if let Some(c) = forwarded.consistency.as_mut() {
            c.timeout_ms = Some(left.as_millis() as u64);
        }
        let there = peers.search(&region, collection, &forwarded, left);
        tokio::pin!(there);
        tokio::select! {
            answer = &mut here => match answer {
                Ok(answer) => {
                    peers.count_unused_forward(&region);
                    Ok(answer)
                }
                // This region failed (a 504 past the wait, …): the other may still answer.
                Err(err) => there.await.map_err(|_| err),
            },
            answer = &mut there => match answer {
                Ok(answer) => Ok(answer),
                Err(_) => here.await,
            },
        }
    }

    /// [`Searcher::search`] in this region only: what a search forwarded from another
    /// region runs (it never forwards again).
    pub async fn search_here(
        &self,
        collection: &str,
        request: SearchRequest,
    ) -> Result<SearchResponse, QueryError> {
        let _active = Active::enter(&self.active);
        let started = Instant::now();
        let spec = self
            .host
            .catalog()
            .get(collection)
            .ok_or_else(|| QueryError::UnknownCollection(collection.into()))?;
        check_search(
            &request.vector,
            spec.dimension,
            request.k,
            request.effort,
            request.consistency.as_ref().and_then(|c| c.timeout_ms),
        )
        .map_err(|e| match e {
            QueryError::Invalid(m) => {
                QueryError::Invalid(format!("collection `{}`: {m}", spec.name))
            }
            other => other,
        })?;
        let map = self.map(collection).await?;
        let routing = self.routing();
        let filter: Option<RingRange> = request.tenant.as_deref().map(ring::tenant_range);
        let shards = match filter {
            Some(range) => map.overlapping(range),
            None => map.shards(),
        };
        let timeout = request.consistency_timeout();
        let token = request.consistency.as_ref().and_then(|c| c.after.as_ref());
        let level = match &request.consistency {
            Some(c) => c.level().map_err(|e| match e {
                QueryError::Invalid(m) => {
                    QueryError::Invalid(format!("collection `{}`: {m}", spec.name))
                }
                other => other,
            })?,
            None => ConsistencyLevel::Eventual,
        };
        let (floor, log_end) = self.freshness(&spec, &request, level, shards).await?;
        // A session token of another region: that region's clock floors, per partition.
        let began = Instant::now();
        let here = self.host.config().region.clone();
        let session_region = request
            .consistency
            .as_ref()
            .filter(|_| level == ConsistencyLevel::Session)
            .and_then(|c| c.token_region(&here))
            .map(str::to_owned);
        let (token, session, timeout) = match (&session_region, token) {
            (Some(region), Some(token)) => {
                let floors = self.session_floors(&spec, region, token, timeout).await?;
                let left = timeout.saturating_sub(began.elapsed());
                (None, Some((region.clone(), floors)), left)
            }
            _ => (token, None, timeout),
        };
        let epoch = map.epoch();
        // Per shard: the call, the replicas in the order to try them, and this node's
        // copy when it is first in that order and cheap to search inline.
        let hosted = self.host.collection(collection);
        let plan: Vec<(ShardSearch, Vec<String>, Option<Arc<HostedShard>>)> = shards
            .iter()
            .map(|s| {
                let partition = ring::partition_of(s.range.start, spec.partitions);
                let call = ShardSearch {
                    incarnation: map.incarnation(),
                    range: s.range,
                    partition,
                    vector: Vec::new(), // filled per remote call; local calls share `query`
                    k: request.k,
                    filter,
                    after: token
                        .and_then(|t| t.get(&partition).copied())
                        .max(log_end.get(&partition).copied()),
                    floor,
                    session: session.as_ref().and_then(|(region, floors)| {
                        Some(RegionFloor {
                            region: region.clone(),
                            floor: *floors.get(&partition)?,
                        })
                    }),
                    timeout_ms: Some(timeout.as_millis() as u64),
                    effort: request.effort,
                    rescore: request.rescore,
                };
                let order = self.replica_order(&routing, collection, s.range, &s.replicas);
                let inline = order
                    .first()
                    .filter(|n| **n == routing.me)
                    .and(hosted.as_ref())
                    .and_then(|h| h.shard(s.range))
                    .filter(|h| inline_is_cheap(h, &call))
                    .cloned();
                (call, order, inline)
            })
            .collect();
        let query = Arc::new(request.vector);
        // Searched here: every inline-able shard when they are few or the cores are busy
        // with other searches, else only the last one (the others' calls run meanwhile).
        let mut local = (0..plan.len()).filter(|&i| plan[i].2.is_some());
        let inline_all =
            local.clone().count() <= INLINE_ALL_UP_TO || self.active.load(Ordering::Relaxed) > 1;
        let inline: Vec<usize> = if inline_all {
            local.collect()
        } else {
            local.next_back().into_iter().collect()
        };
        let mut answered: Answered<'_> = (0..plan.len()).map(|_| None).collect();
        let calls: Vec<_> = (0..plan.len())
            .filter(|i| !inline.contains(i))
            .map(|i| {
                let (call, order, _) = &plan[i];
                let query = Arc::clone(&query);
                let routing = &routing;
                async move {
                    let answer = self
                        .search_replicas(routing, collection, call, order, None, &query, epoch)
                        .await;
                    (i, answer)
                }
            })
            .collect();
        // The other calls start (to the pool, to other nodes) before this thread searches.
        let mut running = (!calls.is_empty()).then(|| futures::future::join_all(calls));
        let mut ready = running.as_mut().and_then(futures::FutureExt::now_or_never);
        for i in inline {
            let (call, order, hosted) = &plan[i];
            let Some(hosted) = hosted else { continue };
            let answer = match self.search_inline(hosted, call, query.as_slice()) {
                Ok(found) => Ok(Answer::Found(found)),
                Err(first) => {
                    settle(&mut answered);
                    self.search_replicas(
                        &routing,
                        collection,
                        call,
                        order,
                        Some(Err(first)),
                        &query,
                        epoch,
                    )
                    .await
                    .map(Answer::Hits)
                }
            };
            answered[i] = Some(answer);
        }
        if let (None, Some(running)) = (&ready, running) {
            settle(&mut answered);
            ready = Some(running.await);
        }
        for (i, answer) in ready.into_iter().flatten() {
            answered[i] = Some(answer.map(Answer::Hits));
        }
        let hits = merge(answered, request.k, !request.without_payload)?;
        let took = started.elapsed();
        Ok(SearchResponse {
            hits,
            shards: shards.len(),
            epoch,
            took_us: took.as_micros() as u64,
            region: None,
        })
    }

    /// A session token of `region` as that region's clock floors per partition: checked
    /// against the collection, then asked of this node's peer in `region` (which waits,
    /// within `timeout`, until it has applied the token). A region this one does not
    /// merge, no peer there, or no answer in time is an error saying so, never a search
    /// without the token's writes.
    async fn session_floors(
        &self,
        spec: &CollectionSpec,
        region: &str,
        token: &BTreeMap<u32, u64>,
        timeout: Duration,
    ) -> Result<BTreeMap<u32, u64>, QueryError> {
        let invalid = |m: String| QueryError::Invalid(format!("collection `{}`: {m}", spec.name));
        check_token(token, spec.partitions).map_err(|e| invalid(e.to_string()))?;
        if !self.host.config().mirrors.iter().any(|m| m == region) {
            return Err(invalid(format!(
                "consistency.region `{region}` is not a region merged here (this is region `{}`, merging {:?}): a session token can only be read in its own region or one that merges it",
                self.host.config().region,
                self.host.config().mirrors
            )));
        }
        let Some(peers) = self.peers.as_ref() else {
            return Err(QueryError::Unavailable(format!(
                "a session token of region `{region}` cannot be checked from here: this node has no peer in `{region}` (--region-peers) to ask how far the token goes; read with consistency level `strong`, or in region `{region}`"
            )));
        };
        let floors = peers
            .token_floors(region, &spec.name, token, timeout)
            .await?;
        // The peer answers every partition it was asked; anything else is not an answer.
        if floors.len() != token.len() || !token.keys().all(|p| floors.contains_key(p)) {
            return Err(QueryError::Unavailable(format!(
                "region `{region}` answered floors for other partitions than the token's; the session cannot be checked from here: read with consistency level `strong`"
            )));
        }
        Ok(floors)
    }

    /// Ask the replicas of one shard in `order` until one answers; `first` is the answer
    /// of the first replica (this node, searched inline) when it was already asked. A
    /// consistency timeout is the answer, not a replica's failure.
    #[allow(clippy::too_many_arguments)]
    async fn search_replicas(
        &self,
        routing: &Routing,
        collection: &str,
        call: &ShardSearch,
        order: &[String],
        first: Option<Result<Vec<WireHit>, QueryError>>,
        query: &Arc<Vec<f32>>,
        epoch: u64,
    ) -> Result<Vec<WireHit>, QueryError> {
        let mut last_err = None;
        let mut rest = order.iter();
        if let Some(first) = first {
            let node = rest.next().map_or("", String::as_str);
            match first {
                Ok(hits) => return Ok(hits),
                Err(
                    e @ (QueryError::ConsistencyTimeout { .. }
                    | QueryError::RegionsBehind { .. }
                    | QueryError::SessionTimeout(_)),
                ) => return Err(e),
                Err(e) => last_err = Some(format!("{node}: {e}")),
            }
        }
        for node in rest {
            let result = if *node == routing.me {
                self.local_search(collection, call, query.as_slice()).await
            } else {
                self.remote_search(routing, node, collection, call, query)
                    .await
            };
            match result {
                Ok(hits) => return Ok(hits),
                Err(
                    e @ (QueryError::ConsistencyTimeout { .. }
                    | QueryError::RegionsBehind { .. }
                    | QueryError::SessionTimeout(_)),
                ) => return Err(e),
                Err(e) => last_err = Some(format!("{node}: {e}")),
            }
        }
        Err(QueryError::Unavailable(format!(
            "no replica of shard [{:#x}, {}) answered at epoch {}: {}",
            call.range.start,
            call.range.end.map_or("2^64".into(), |e| format!("{e:#x}")),
            epoch,
            last_err.unwrap_or_else(|| "it has no replicas".into())
        )))
    }

    /// Search a shard held here on this thread (see [`Searcher::search`]); its records
    /// are read after the merge.
    fn search_inline<'s>(
        &self,
        hosted: &'s HostedShard,
        call: &ShardSearch,
        query: &[f32],
    ) -> Result<Found<'s>, QueryError> {
        self.note_shard_search();
        let started = Instant::now();
        let options = search_options(call);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hosted
                .shard
                .search_found(query, call.k, call.filter, options)
        }));
        finish_shard_search(&self.events, hosted, call, started, outcome)
    }

    /// Search a shard this node holds.
    async fn local_search(
        &self,
        collection: &str,
        call: &ShardSearch,
        query: &[f32],
    ) -> Result<Vec<WireHit>, QueryError> {
        // A shard of the archive tier is restored here first (bounded wait).
        let shard = self
            .host
            .resolve_or_restore(collection, call.range, MAP_WAIT)
            .await
            .map_err(|unheld| unheld_error(collection, unheld))?;
        self.note_shard_search();
        shard_search(&self.pool, &self.events, &shard, call, query.to_vec()).await
    }

    async fn remote_search(
        &self,
        routing: &Routing,
        node: &str,
        collection: &str,
        call: &ShardSearch,
        query: &Arc<Vec<f32>>,
    ) -> Result<Vec<WireHit>, QueryError> {
        let address = routing
            .nodes
            .get(node)
            .map(|n| n.address.clone())
            .ok_or_else(|| QueryError::Unavailable(format!("node {node} has no known address")))?;
        let url = format!(
            "{}://{address}/internal/collections/{collection}/shard-search",
            self.scheme
        );
        let body = ShardSearch {
            vector: query.as_ref().clone(),
            ..call.clone()
        };
        let health = self.health_of(node);
        health.inflight.fetch_add(1, Ordering::Relaxed);
        let wait = call
            .timeout_ms
            .map_or(DEFAULT_CONSISTENCY_TIMEOUT, Duration::from_millis);
        let sent = self
            .internal_post(url)
            .timeout(wait + Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        health.inflight.fetch_sub(1, Ordering::Relaxed);
        let response = match sent {
            Ok(r) => r,
            Err(err) => {
                *health.down_until.lock() = Some(Instant::now() + DOWN_FOR);
                return Err(QueryError::Unavailable(format!("unreachable: {err}")));
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            let answer: ShardAnswer = response
                .json()
                .await
                .map_err(|e| QueryError::Unavailable(format!("unreadable answer: {e}")))?;
            return Ok(answer.hits);
        }
        let text = response.text().await.unwrap_or_default();
        if status == 504 && call.floor.is_some() && !text.contains("the token needs") {
            let behind = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .and_then(|e| {
                    let at = e.find("bound for ")? + "bound for ".len();
                    let end = e[at..].find("; retry").map_or(e.len(), |n| at + n);
                    Some(format!("{} (on node {node})", &e[at..end]))
                })
                .unwrap_or_else(|| format!("some region (node {node} says: {text})"));
            return Err(QueryError::RegionsBehind {
                partition: call.partition,
                behind,
                waited_ms: wait.as_millis() as u64,
            });
        }
        if status == 504 && call.session.is_some() && call.after.is_none() {
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(QueryError::SessionTimeout(format!(
                "{why} (on node {node})"
            )));
        }
        if status == 504 {
            return Err(QueryError::ConsistencyTimeout {
                partition: call.partition,
                applied: 0,
                needed: call.after.unwrap_or(0),
                waited_ms: wait.as_millis() as u64,
            });
        }
        Err(QueryError::Unavailable(format!("HTTP {status}: {text}")))
    }

    /// Read one vector by tenant and id from the shard holding it.
    pub async fn get(
        &self,
        collection: &str,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<(WireVector, RingRange, u64), QueryError> {
        let map = self.map(collection).await?;
        let routing = self.routing();
        let position = ring::position(tenant, id);
        let shard = map.shard_for(position);
        let call = ShardGet {
            incarnation: map.incarnation(),
            range: shard.range,
            id: id.to_owned(),
            tenant: tenant.map(str::to_owned),
        };
        let mut last_err = String::from("it has no replicas");
        for node in self.replica_order(&routing, collection, shard.range, &shard.replicas) {
            let result = if node == routing.me {
                match self
                    .host
                    .resolve_or_restore(collection, shard.range, MAP_WAIT)
                    .await
                {
                    Ok(hosted) => shard_get(&hosted, tenant, id).await.map(|v| {
                        v.map(|v| WireVector {
                            id: v.id,
                            vector: v.vector,
                            payload: v.payload,
                            hlc: v.hlc.0.to_string(),
                            origin: v.origin,
                            concurrent: v.concurrent,
                        })
                    }),
                    Err(unheld) => Err(unheld_error(collection, unheld)),
                }
            } else {
                self.remote_get(&routing, &node, collection, &call).await
            };
            match result {
                Ok(Some(v)) => return Ok((v, shard.range, map.epoch())),
                Ok(None) => return Err(QueryError::NotFound(id.into())),
                Err(e) => last_err = format!("{node}: {e}"),
            }
        }
        Err(QueryError::Unavailable(format!(
            "no replica of the shard holding `{id}` answered: {last_err}"
        )))
    }

    async fn remote_get(
        &self,
        routing: &Routing,
        node: &str,
        collection: &str,
        call: &ShardGet,
    ) -> Result<Option<WireVector>, QueryError> {
        let address = routing
            .nodes
            .get(node)
            .map(|n| n.address.clone())
            .ok_or_else(|| QueryError::Unavailable(format!("node {node} has no known address")))?;
        let url = format!(
            "{}://{address}/internal/collections/{collection}/shard-get",
            self.scheme
        );
        let response = self
            .internal_post(url)
            .timeout(Duration::from_secs(10))
            .json(call)
            .send()
            .await
            .map_err(|e| {
                *self.health_of(node).down_until.lock() = Some(Instant::now() + DOWN_FOR);
                QueryError::Unavailable(format!("unreachable: {e}"))
            })?;
        match response.status().as_u16() {
            200 => {
                let v: WireVector = response
                    .json()
                    .await
                    .map_err(|e| QueryError::Unavailable(format!("unreadable answer: {e}")))?;
                Ok(Some(v))
            }
            404 => {
                let text = response.text().await.unwrap_or_default();
                if text.contains("not held") {
                    Err(QueryError::Unavailable(text))
                } else {
                    Ok(None)
                }
            }
            s => Err(QueryError::Unavailable(format!(
                "HTTP {s}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    }
}

/// A read's error for a shard this node could not give: not held (the collection is not
/// ready here), or archived and being restored, or its restore failed (503 either way,
/// with the reason; the answer carries `Retry-After`).
fn unheld_error(collection: &str, unheld: hektor_indexers::host::Unheld) -> QueryError {
    use hektor_indexers::host::Unheld;
    match unheld {
        Unheld::NotHeld => {
            QueryError::NotReady(format!("{collection} (shard not held by this node)"))
        }
        Unheld::Restoring { why, .. } => QueryError::Unavailable(format!("{why}; retry shortly")),
        Unheld::Failed { why, retry_after } => QueryError::Unavailable(format!(
            "restoring the archived shard failed: {why} (tried again on a read after {} s)",
            retry_after.as_secs().max(1)
        )),
    }
}

/// A stored vector as it crosses between nodes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireVector {
    pub id: String,
    pub vector: Vec<f32>,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// The winning write's effective hybrid logical clock, as a decimal string (it does
    /// not fit a JSON number exactly); absent from nodes that predate it.
    #[serde(default)]
    pub hlc: String,
    /// The region that accepted the winning write (empty: unknown).
    #[serde(default)]
    pub origin: String,
    /// The winning write met a concurrent write of another region.
    #[serde(default)]
    pub concurrent: bool,
}

/// Search one shard held here: wait for the token, search on the pool, record the event.
pub async fn shard_search(
    pool: &Arc<rayon::ThreadPool>,
    events: &EventSink,
    hosted: &Arc<HostedShard>,
    call: &ShardSearch,
    query: Vec<f32>,
) -> Result<Vec<WireHit>, QueryError> {
    let started = Instant::now();
    if let Some(needed) = call.after {
        let timeout = call
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
        if !hosted.wait_applied(needed, timeout).await {
            return Err(QueryError::ConsistencyTimeout {
                partition: hosted.partition,
                applied: hosted.next_offset().saturating_sub(1),
                needed,
                waited_ms: timeout.as_millis() as u64,
            });
        }
    }
    if let Some(floor) = call.floor {
        let timeout = call
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
        if let Err(short) = hosted.wait_floors(Hlc(floor), timeout).await {
            let bound = Hlc(floor).physical_ms();
            let behind = short
                .iter()
                .map(|(region, at)| {
                    format!(
                        "region `{region}` ({} ms short)",
                        bound.saturating_sub(at.physical_ms())
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(QueryError::RegionsBehind {
                partition: hosted.partition,
                behind,
                waited_ms: timeout.as_millis() as u64,
            });
        }
    }
    if let Some(session) = &call.session {
        let timeout = call
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CONSISTENCY_TIMEOUT);
        wait_region_floor(hosted, session, timeout).await?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shard = Arc::clone(&hosted.shard);
    let (k, filter) = (call.k, call.filter);
    let options = search_options(call);
    pool.spawn(move || {
        // A panic in an engine costs this search (a 500), never the pool or the process.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shard
                .search_found(&query, k, filter, options)
                .and_then(Found::into_raw_hits)
        }));
        let _ = tx.send(outcome);
    });
    let outcome = rx
        .await
        .map_err(|_| QueryError::Internal("the search pool dropped a query".into()))?;
    let hits = finish_shard_search(events, hosted, call, started, outcome)?;
    Ok(hits.into_iter().map(WireHit::from).collect())
}

/// How one partition of a token is answered: by a shard held here, or by another node
/// of this region holding one.
enum TokenSource {
    Here(Arc<HostedShard>),
    Node(String),
}

impl Searcher {
    /// What a session read in another region needs to know of a write token of this one
    /// (`POST /internal/collections/{c}/token-floors`): per partition of the token, the
    /// clock floor of a shard of it once it has applied the token's offset (waiting,
    /// within the request's timeout). A partition with a shard here is answered by the
    /// most advanced one; any other is asked of a node of this region that holds one
    /// (once: a forwarded request is answered from this node's shards only). Every shard
    /// of a partition stamps its records alike, and stamps grow along the partition, so
    /// the floor is at least the stamp of the token's record: a region that merged the
    /// partition that far has the token's writes.
    pub async fn token_floors(
        &self,
        collection: &str,
        request: &TokenFloorsRequest,
    ) -> Result<TokenFloors, QueryError> {
        let began = Instant::now();
        let timeout = request
            .timeout_ms
            .map_or(DEFAULT_CONSISTENCY_TIMEOUT, Duration::from_millis);
        let region = self.host.config().region.clone();
        let hosted = self.host.collection(collection);
        let local = |partition: u32| {
            hosted.as_ref().and_then(|h| {
                h.serving()
                    .filter(|s| s.partition == partition)
                    .max_by_key(|s| s.next_offset())
                    .cloned()
            })
        };
        let mut sources = Vec::with_capacity(request.token.len());
        let mut map = None;
        for (&partition, &offset) in &request.token {
            if let Some(shard) = local(partition) {
                sources.push((partition, offset, TokenSource::Here(shard)));
                continue;
            }
            let none_here = || {
                QueryError::Unavailable(format!(
                    "no node of region `{region}` answers for partition {partition} of collection `{collection}` (this node holds no shard of it{})",
                    if request.forwarded { "; asked by another node of this region" } else { "" }
                ))
            };
            if request.forwarded {
                return Err(none_here());
            }
            if map.is_none() {
                map = Some(self.map(collection).await?);
            }
            let routing = self.routing();
            let spec_partitions = self
                .host
                .catalog()
                .get(collection)
                .map_or(0, |s| s.partitions);
            let node = map
                .as_ref()
                .into_iter()
                .flat_map(|m| m.shards())
                .filter(|s| ring::partition_of(s.range.start, spec_partitions) == partition)
                .flat_map(|s| self.replica_order(&routing, collection, s.range, &s.replicas))
                .find(|n| *n != routing.me && routing.nodes.get(n).is_some_and(|i| i.alive))
                .ok_or_else(none_here)?;
            sources.push((partition, offset, TokenSource::Node(node)));
        }
        // Partitions asked of one other node go in one request.
        let mut asks: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
        let mut waits = Vec::new();
        for (partition, offset, source) in sources {
            match source {
                TokenSource::Node(node) => {
                    asks.entry(node).or_default().insert(partition, offset);
                }
                TokenSource::Here(shard) => waits.push(async move {
                    if !shard.wait_applied(offset, timeout).await {
                        return Err(QueryError::ConsistencyTimeout {
                            partition,
                            applied: shard.next_offset().saturating_sub(1),
                            needed: offset,
                            waited_ms: timeout.as_millis() as u64,
                        });
                    }
                    let floor = shard.shard.hlc_floor().map_err(|e| {
                        QueryError::Internal(format!(
                            "reading partition {partition}'s clock floor: {e}"
                        ))
                    })?;
                    Ok(BTreeMap::from([(partition, floor.0)]))
                }),
            }
        }
        let left = timeout.saturating_sub(began.elapsed());
        let remote = asks
            .into_iter()
            .map(|(node, token)| self.remote_token_floors(collection, node, token, left));
        let (here, there) = futures::future::join(
            futures::future::try_join_all(waits),
            futures::future::try_join_all(remote),
        )
        .await;
        let floors: BTreeMap<u32, u64> = here?.into_iter().chain(there?).flatten().collect();
        Ok(TokenFloors { region, floors })
    }

    /// [`Searcher::token_floors`] for `token`'s partitions, asked of `node` of this region.
    async fn remote_token_floors(
        &self,
        collection: &str,
        node: String,
        token: BTreeMap<u32, u64>,
        wait: Duration,
    ) -> Result<BTreeMap<u32, u64>, QueryError> {
        let address = self
            .routing()
            .nodes
            .get(&node)
            .map(|n| n.address.clone())
            .ok_or_else(|| QueryError::Unavailable(format!("node {node} has no known address")))?;
        let url = format!(
            "{}://{address}/internal/collections/{collection}/token-floors",
            self.scheme
        );
        let asked: BTreeSet<u32> = token.keys().copied().collect();
        let body = TokenFloorsRequest {
            token,
            timeout_ms: Some(wait.as_millis() as u64),
            forwarded: true,
        };
        let response = self
            .internal_post(url)
            .timeout(wait + Duration::from_secs(5))
            .json(&body)
            .send()
            .await
            .map_err(|e| QueryError::Unavailable(format!("node {node} did not answer: {e}")))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status != 200 {
            let why = format!("node {node} answered {status}: {}", text.trim());
            return Err(if status == 504 {
                QueryError::SessionTimeout(why)
            } else {
                QueryError::Unavailable(why)
            });
        }
        let answer: TokenFloors = serde_json::from_str(&text)
            .map_err(|e| QueryError::Unavailable(format!("node {node}'s answer: {e}")))?;
        if answer.floors.keys().copied().collect::<BTreeSet<u32>>() != asked {
            return Err(QueryError::Unavailable(format!(
                "node {node} answered other partitions than asked"
            )));
        }
        Ok(answer.floors)
    }
}

/// `region`'s floor of this shard's partition as merged here (committed), or `None` when
/// this shard does not merge that region.
fn merged_floor(hosted: &HostedShard, region: &str) -> Option<Hlc> {
    hosted
        .floors()
        .into_iter()
        .skip(1) // this region's own
        .find(|(r, _)| r == region)
        .map(|(_, floor)| floor)
}

/// Wait (bounded) until this shard has merged `session.region`'s copy of its partition
/// up to `session.floor`: then every write of that region's token is applied here.
async fn wait_region_floor(
    hosted: &HostedShard,
    session: &RegionFloor,
    timeout: Duration,
) -> Result<(), QueryError> {
    let region = session.region.as_str();
    let needed = Hlc(session.floor);
    // Subscribe before the first look: a merge in between wakes the wait.
    let mut merges = hosted.merges();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(floor) = merged_floor(hosted, region) else {
            return Err(QueryError::Invalid(format!(
                "a session token of region `{region}` cannot be checked here: this region does not merge `{region}` (--mirror-regions); read it in `{region}`"
            )));
        };
        if floor >= needed {
            return Ok(());
        }
        // A merge wakes the wait; a look every 250 ms covers anything else (a reopened
        // shard's first merge).
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(250));
        let woke = tokio::time::timeout_at(wake, merges.changed()).await;
        if tokio::time::Instant::now() >= deadline || matches!(woke, Ok(Err(_))) {
            let floor = merged_floor(hosted, region).unwrap_or_default();
            if floor >= needed {
                return Ok(());
            }
            return Err(QueryError::SessionTimeout(session_behind_message(
                region,
                hosted.partition,
                floor,
                needed,
                timeout,
            )));
        }
    }
}

/// The 504 of a session read this region has not merged far enough.
fn session_behind_message(
    region: &str,
    partition: u32,
    floor: Hlc,
    needed: Hlc,
    waited: Duration,
) -> String {
    format!(
        "consistency wait timed out after {} ms: this region has merged region `{region}`'s partition {partition} up to its clock {} ms, the session token needs {} ms ({} ms short): the token's writes have not reached this region yet; retry, raise timeout_ms, or read in region `{region}`",
        waited.as_millis(),
        floor.physical_ms(),
        needed.physical_ms(),
        needed.physical_ms().saturating_sub(floor.physical_ms()),
    )
}

/// What a shard search's own effort and rescoring are.
fn search_options(call: &ShardSearch) -> SearchOptions {
    SearchOptions {
        effort: call.effort.map(|e| e.min(MAX_EFFORT)),
        rescore: call.rescore.unwrap_or(true),
    }
}

/// The outcome of one shard's search (a panic caught) as its hits or error; a served
/// search is recorded as an event, timed from `started`.
fn finish_shard_search<T>(
    events: &EventSink,
    hosted: &HostedShard,
    call: &ShardSearch,
    started: Instant,
    outcome: std::thread::Result<hektor_indexers::Result<T>>,
) -> Result<T, QueryError> {
    let hits = match outcome {
        Ok(result) => result.map_err(engine_error)?,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            tracing::error!(collection = %hosted.collection, partition = hosted.partition, panic = %what, "a shard search panicked");
            return Err(QueryError::Internal(format!(
                "the search of shard {} of `{}` failed: {what}",
                hosted.partition, hosted.collection
            )));
        }
    };
    let latency_us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
    events.record(
        &hosted.collection,
        hosted.partition,
        call.filter
            .map_or(hosted.range.start, |r| r.start.max(hosted.range.start)),
        EventKind::Query,
        latency_us,
    );
    Ok(hits)
}

/// A query searches up to this many of its shards inline, one after another, even with
/// idle cores: a hop to the pool and back costs about as much CPU as a hot shard's
/// search (wake-ups, context switches, the pool's spinning before it sleeps; measured
/// in `docs/benchmarks.md`, "Where a query's CPU goes"), and saves at most one shard's
/// time in latency. With more shards and no other search running, they go to the pool.
const INLINE_ALL_UP_TO: usize = 2;

/// Largest k and effort a shard is searched inline with; beyond, the search may take
/// long enough to hold up the requests sharing the calling thread.
const INLINE_MAX_EFFORT: usize = 512;
/// Longest unindexed tail (searched by exact scan) of a shard searched inline.
const INLINE_MAX_PENDING: u64 = 4096;

/// Whether a search of `hosted` is cheap enough to run on a request's own thread: the
/// hot engine (memory only, no disk read to wait for), no tenant filter (whose item set
/// is read from the store), k and effort bounded, a short tail, the token applied (and
/// another region's session floor merged).
fn inline_is_cheap(hosted: &HostedShard, call: &ShardSearch) -> bool {
    let shard = &hosted.shard;
    call.floor.is_none()
        && call.filter.is_none()
        && call.k <= INLINE_MAX_EFFORT
        && call.effort.unwrap_or(0) <= INLINE_MAX_EFFORT
        && call
            .after
            .is_none_or(|needed| hosted.next_offset() > needed)
        && call.session.as_ref().is_none_or(|session| {
            merged_floor(hosted, &session.region).is_some_and(|f| f >= Hlc(session.floor))
        })
        && hosted.failure().is_none()
        && shard.pending() <= INLINE_MAX_PENDING
        && shard.engine() == EngineKind::Hnsw
        && shard.search_effort().is_none_or(|e| e <= INLINE_MAX_EFFORT)
}

/// Counts a running search for as long as it lives.
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn enter(count: &'a AtomicUsize) -> Active<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Active(count)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Read one vector, (`tenant`, `id`), from a shard held here.
pub async fn shard_get(
    hosted: &Arc<HostedShard>,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<hektor_indexers::StoredVector>, QueryError> {
    let shard = Arc::clone(&hosted.shard);
    let (tenant, id) = (tenant.map(str::to_owned), id.to_owned());
    tokio::task::spawn_blocking(move || shard.get(tenant.as_deref(), &id))
        .await
        .map_err(|e| QueryError::Internal(e.to_string()))?
        .map_err(|e| QueryError::Internal(e.to_string()))
}

impl Searcher {
    /// The pool and event sink, for the internal per-shard routes.
    pub fn pool(&self) -> &Arc<rayon::ThreadPool> {
        &self.pool
    }

    pub fn events(&self) -> &EventSink {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// What serde_json reads from `text` as a `Vec<f32>`, bit for bit.
    fn serde_bits(text: &str) -> Result<Vec<u32>, String> {
        serde_json::from_str::<Vec<f32>>(text)
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .map_err(|e| e.to_string())
    }

    /// Whenever the lean reader answers, serde_json answers the same, bit for bit.
    fn agrees(text: &str) -> bool {
        match parse_vector(text) {
            Some(v) => {
                let lean: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
                assert_eq!(Ok(lean), serde_bits(text), "on {text}");
                true
            }
            None => false,
        }
    }

    fn random_decimal(rng: &mut StdRng) -> String {
        let mut t = String::new();
        if rng.random_range(0..2u64) == 0 {
            t.push('-');
        }
        let n = 1 + rng.random_range(0..19u64) as usize;
        let point = rng.random_range(0..=n as u64) as usize;
        for d in 0..n {
            if d == point && d > 0 {
                t.push('.');
            }
            let digit = if d == 0 {
                1 + rng.random_range(0..9u64)
            } else {
                rng.random_range(0..10u64)
            };
            t.push(char::from(b'0' + digit as u8));
        }
        if rng.random_range(0..2u64) == 0 {
            t.push(['e', 'E'][rng.random_range(0..2u64) as usize]);
            match rng.random_range(0..3u64) {
                0 => t.push('-'),
                1 => t.push('+'),
                _ => {}
            }
            t.push_str(&rng.random_range(0..60u64).to_string());
        }
        t
    }

    #[test]
    fn the_lean_reader_reads_floats_as_serde_json_does() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut read = 0usize;
        for _ in 0..200_000 {
            let bits: u32 = rng.random();
            let x = f32::from_bits(bits);
            if !x.is_finite() {
                continue;
            }
            // Every form a client writes: shortest f32, its exponent form, serde_json's
            // (ryu), the f64 of the f32 (17 digits), and a midpoint between neighbours.
            let next = f32::from_bits(bits.wrapping_add(1));
            let mid = (f64::from(x) + f64::from(next)) / 2.0;
            let forms = [
                format!("{x}"),
                format!("{x:e}"),
                serde_json::to_string(&x).unwrap_or_default(),
                format!("{}", f64::from(x)),
                format!("{mid:e}"),
                format!("{mid:.18e}"),
                format!("{mid:.15e}"),
                random_decimal(&mut rng),
            ];
            for form in forms {
                read += usize::from(agrees(&format!("[{form}]")));
            }
        }
        assert!(read > 800_000, "the lean reader took only {read} numbers");
        // Integers, zeros and signs take serde_json's integer path.
        for t in [
            "0",
            "-0",
            "7",
            "-7",
            "16777217",
            "-16777217",
            "9999999999999999999",
            "-9223372036854775808",
            "0.0",
            "-0.0",
            "1e0",
            "0e-5",
            "-0E+3",
            "1.5E-45",
            "7e-46",
            "3.4028235e38",
            "3.40282356e38",
            // Exactly halfway between two f32s (ties to even), and just beside.
            "8388608.5",
            "8388609.5",
            "-8388610.5",
            "16777219",
            "33554434",
            "8388608.500000001",
            "8388608.499999999",
        ] {
            assert!(agrees(&format!("[{t}]")), "{t} left to serde_json");
        }
    }

    #[test]
    fn the_lean_reader_leaves_everything_else_to_serde_json() {
        for t in [
            "",
            "[",
            "]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[1e+]",
            "[--1]",
            "[-]",
            "[NaN]",
            "[Infinity]",
            "[\"1\"]",
            "[null]",
            "[[1]]",
            "{}",
            "1",
            "[1]x",
            "[1e39]",
            "[-3.5e38]",
            "[1e99999]",
            "[12345678901234567890]",
            "[0.12345678901234567890]",
            "[1\u{a0}]",
            "[1,2,]",
        ] {
            assert_eq!(parse_vector(t), None, "{t:?}");
        }
        assert_eq!(parse_vector(" [ ] "), Some(vec![]));
        assert_eq!(
            parse_vector("[ 1 ,\n\t-2.5e1\r, 0.25 ]"),
            Some(vec![1.0, -25.0, 0.25])
        );
    }

    /// What a search body costs to read, both ways (a timing, not a check):
    /// `cargo test --release -p hektor-query --lib body_read_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn body_read_cost() {
        let mut rng = StdRng::seed_from_u64(11);
        // Unit-length-ish 384-d vectors, as the data set's are, written as a Rust client
        // writes `f32`s (shortest form) and as a Python client writes them (as `f64`s).
        #[derive(Serialize)]
        struct Body<'a, T> {
            vector: &'a [T],
            k: usize,
            effort: usize,
        }
        let vectors: Vec<Vec<f32>> = (0..2000)
            .map(|_| {
                (0..384)
                    .map(|_| ((rng.random_range(0..2_000_001u64) as f32 / 1e6) - 1.0) * 0.1)
                    .collect()
            })
            .collect();
        let body = |v: &Vec<f32>, wide: bool| {
            let wide_v: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            if wide {
                serde_json::to_vec(&Body {
                    vector: &wide_v,
                    k: 10,
                    effort: 24,
                })
            } else {
                serde_json::to_vec(&Body {
                    vector: v,
                    k: 10,
                    effort: 24,
                })
            }
            .expect("a body")
        };
        for wide in [false, true] {
            let bodies: Vec<Vec<u8>> = vectors.iter().map(|v| body(v, wide)).collect();
            println!("f32s written as {}:", if wide { "f64s" } else { "f32s" });
            body_read_rounds(&bodies);
        }
    }

    fn body_read_rounds(bodies: &[Vec<u8>]) {
        let lean = |b: &[u8]| LeanReader::new(b).and_then(LeanReader::request).is_some();
        assert!(
            bodies.iter().all(|b| lean(b)),
            "a body leaves the lean path"
        );
        for round in 0..3 {
            let t = Instant::now();
            for b in bodies {
                std::hint::black_box(serde_json::from_slice::<SearchRequest>(b).expect("body"));
            }
            let serde_us = t.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64;
            let t = Instant::now();
            for b in bodies {
                std::hint::black_box(SearchRequest::from_json(b).expect("body"));
            }
            let lean_us = t.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64;
            println!("round {round}: serde_json {serde_us:.2} µs, lean {lean_us:.2} µs per body");
        }
    }

    /// The request read through the lean path is the request serde_json reads, and a body
    /// serde_json refuses is refused with serde_json's own error.
    #[test]
    fn search_requests_read_as_serde_json_reads_them() {
        let bodies = [
            r#"{"vector": [0.1, -0.2, 3e-3], "k": 5}"#,
            r#"{"vector": [1, 2, 3], "k": 5, "tenant": "t", "effort": 40, "rescore": false,
                "without_payload": true, "consistency": {"after": {"3": 41}, "timeout_ms": 5}}"#,
            r#"{"k": 3, "vector": []}"#,
            r#"{"vector": [1.0, 2.0]}"#,
            r#"{"vector": [1e39]}"#,
            r#"{"vector": [1, "2"]}"#,
            r#"{"vector": [1, 2], "vector": [3]}"#,
            r#"{"vector": [1, 2], "unknown": 1}"#,
            r#"{"k": 3}"#,
            r#"{"vector": [1, 2], "k": -1}"#,
            r#"{"vector": [1, 2], "consistency": {"after": {"x": 1}}}"#,
            r#"{"vector": [1, 2]"#,
            r#"{"vector": [1, 2]} trailing"#,
            r#"[1, 2]"#,
            "",
            r#"{"vector": null}"#,
            r#"{"vector": [12345678901234567890123, 0.5]}"#,
            r#" {"vector":[0.5,-1e-3],"k":7,"effort":null,"rescore":null,"tenant":null} "#,
            r#"{"tenant": "", "vector": [2], "without_payload": false, "rescore": true}"#,
            r#"{"tenant": "a"b", "vector": [2]}"#,
            r#"{"tenant": "é☃", "vector": [2]}"#,
            r#"{"vector": [2]}"#,
            r#"{"vector": [2], "k": 1.0}"#,
            r#"{"vector": [2], "k": 01}"#,
            r#"{"vector": [2], "k": 1e2}"#,
            r#"{"vector": [2], "k": 18446744073709551615}"#,
            r#"{"vector": [2], "k": 99999999999999999999}"#,
            r#"{"vector": [2], "k": 3, "k": 4}"#,
            r#"{"vector": [2], "k": null}"#,
            r#"{"vector": [2], "without_payload": null}"#,
            r#"{"vector": [2], "effort": -1}"#,
            r#"{"vector": [2],}"#,
            r#"{"vector": [2] "k": 3}"#,
            r#"{"vector": [2], "rescore": truex}"#,
            r#"{"vector": [ 1 , 2 ] , "k" : 3 }"#,
            "{\"vector\":\t[1,\r\n2]}",
            r#"{}"#,
            r#"{"vector": [2]}{}"#,
            "\u{feff}{\"vector\": [2]}",
        ];
        for body in bodies {
            let lean = SearchRequest::from_json(body.as_bytes()).map_err(|e| e.to_string());
            let full =
                serde_json::from_slice::<SearchRequest>(body.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(format!("{lean:?}"), format!("{full:?}"), "{body}");
        }
    }

    /// Payloads travel as their JSON text: a shard's answer reads and writes back byte for
    /// byte (a null payload reads as none, as before), and a search's answer holds the
    /// payload's text where the parsed payload's JSON was.
    #[test]
    fn hits_carry_payloads_as_their_json_text() {
        let text = r#"{"hits":[{"id":"a","score":0.5,"payload":{"n":[1,2.5e-7],"t":"\u00fc\"x"}},{"id":"b","score":0.25,"payload":null}]}"#;
        let answer: ShardAnswer = serde_json::from_str(text).unwrap();
        let payload = answer.hits[0].payload.as_ref().unwrap().get();
        assert_eq!(payload, r#"{"n":[1,2.5e-7],"t":"\u00fc\"x"}"#);
        assert!(answer.hits[1].payload.is_none());
        assert_eq!(serde_json::to_string(&answer).unwrap(), text);

        let value = serde_json::json!({"t": "ü\"x", "n": [1, 2.5e-7]});
        let stored = serde_json::to_string(&value).unwrap();
        let response = SearchResponse {
            hits: vec![
                SearchHit {
                    id: "a".into(),
                    score: 0.5,
                    payload: Some(RawValue::from_string(stored).unwrap()),
                },
                SearchHit {
                    id: "b".into(),
                    score: 0.25,
                    payload: None,
                },
            ],
            shards: 2,
            epoch: 3,
            took_us: 4,
            region: None,
        };
        let rendered = serde_json::to_string(&response).unwrap();
        assert_eq!(
            rendered,
            format!(
                r#"{{"hits":[{{"id":"a","score":0.5,"payload":{value}}},{{"id":"b","score":0.25}}],"shards":2,"epoch":3,"took_us":4}}"#
            )
        );
        let expected = serde_json::json!({
            "hits": [{"id": "a", "score": 0.5, "payload": value}, {"id": "b", "score": 0.25}],
            "shards": 2, "epoch": 3, "took_us": 4,
        });
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&rendered).unwrap(),
            expected
        );
    }

    fn consistency(value: serde_json::Value) -> Consistency {
        serde_json::from_value(value).expect("a consistency parses")
    }

    #[test]
    fn a_session_token_may_name_its_region_and_nothing_else_may() {
        let c = consistency(serde_json::json!({"after": {"0": 3}, "region": "west"}));
        assert_eq!(c.level().unwrap(), ConsistencyLevel::Session);
        assert_eq!(c.token_region("east"), Some("west"));
        assert_eq!(c.token_region("west"), None, "its own region: today's rule");
        let c = consistency(serde_json::json!({"after": {"0": 3}}));
        assert_eq!(c.token_region("east"), None);
        for (value, why) in [
            (
                serde_json::json!({"level": "strong", "region": "west"}),
                "session` only",
            ),
            (
                serde_json::json!({"level": "bounded", "max_staleness_ms": 5, "region": "west"}),
                "session` only",
            ),
            (
                serde_json::json!({"level": "eventual", "region": "west"}),
                "session` only",
            ),
            (
                serde_json::json!({"after": {"0": 1}, "region": ""}),
                "region name",
            ),
            (
                serde_json::json!({"after": {"0": 1}, "region": "a/b"}),
                "region name",
            ),
            (
                serde_json::json!({"after": {"0": 1}, "region": "x".repeat(MAX_REGION_NAME + 1)}),
                "region name",
            ),
            (
                serde_json::json!({"level": "session", "region": "west"}),
                "needs a token",
            ),
        ] {
            match consistency(value.clone()).level() {
                Err(QueryError::Invalid(m)) => assert!(m.contains(why), "{value}: {m}"),
                other => panic!("{value}: {other:?}"),
            }
        }
        assert!(check_region_name("us-east_1.b").is_ok());
        // Unknown fields stay refused; the field round-trips and is left out when absent.
        assert!(serde_json::from_value::<Consistency>(serde_json::json!({"regoin": "w"})).is_err());
        let plain =
            serde_json::to_value(consistency(serde_json::json!({"after": {"1": 2}}))).unwrap();
        assert!(plain.get("region").is_none(), "{plain}");
        let request = SearchRequest::from_json(
            br#"{"vector": [1, 2], "consistency": {"after": {"1": 2}, "region": "west"}}"#,
        )
        .unwrap();
        assert_eq!(request.consistency.unwrap().region.as_deref(), Some("west"));
    }

    #[test]
    fn tokens_from_other_regions_name_partitions_of_the_collection() {
        let request = |v: serde_json::Value| -> TokenFloorsRequest {
            serde_json::from_value(v).expect("parses")
        };
        assert!(request(serde_json::json!({"token": {"0": 5, "3": 1}}))
            .check(4)
            .is_ok());
        for (value, why) in [
            (serde_json::json!({"token": {}}), "no partition"),
            (
                serde_json::json!({"token": {"4": 1}}),
                "partition 4, the collection has 4",
            ),
            (
                serde_json::json!({"token": {"0": 1}, "timeout_ms": 300_001}),
                "timeout_ms must be at most",
            ),
        ] {
            match request(value.clone()).check(4) {
                Err(QueryError::Invalid(m)) => assert!(m.contains(why), "{value}: {m}"),
                other => panic!("{value}: {other:?}"),
            }
        }
        assert!(serde_json::from_value::<TokenFloorsRequest>(
            serde_json::json!({"token": {"0": 1}, "collection": "x"})
        )
        .is_err());
        assert!(serde_json::from_value::<TokenFloorsRequest>(
            serde_json::json!({"token": {"p": 1}})
        )
        .is_err());
    }

    #[test]
    fn per_shard_calls_carry_a_session_floor_only_when_there_is_one() {
        let call: ShardSearch = serde_json::from_value(serde_json::json!({
            "incarnation": 1, "range": {"start": 0, "end": null}, "vector": [1.0], "k": 1,
        }))
        .unwrap();
        assert!(call.session.is_none());
        assert!(serde_json::to_value(&call)
            .unwrap()
            .get("session")
            .is_none());
        let mut with = call.clone();
        with.session = Some(RegionFloor {
            region: "west".into(),
            floor: 42,
        });
        let back: ShardSearch =
            serde_json::from_value(serde_json::to_value(&with).unwrap()).unwrap();
        assert_eq!(back.session, with.session);
        assert!(back.check(1).is_ok());
        with.session = Some(RegionFloor {
            region: "no such region".into(),
            floor: 42,
        });
        assert!(matches!(with.check(1), Err(QueryError::Invalid(_))));
    }

    #[test]
    fn a_session_short_of_its_floor_says_by_how_much_and_what_to_do() {
        let m = session_behind_message(
            "west",
            3,
            Hlc::new(1_000, 2),
            Hlc::new(1_250, 0),
            Duration::from_millis(2000),
        );
        assert!(m.contains("2000 ms") && m.contains("partition 3"), "{m}");
        assert!(
            m.contains("250 ms short") && m.contains("region `west`"),
            "{m}"
        );
    }
}
