//! The one error type of the topics crate (the log's own errors are `hektor_log::LogError`,
//! wrapped in [`Error::Log`]). Every message says what went wrong and, where
//! it can, what to do about it.
//!
//! [`Refusals`] is how a reader of the log reports records it refuses to apply (a forged
//! or malformed catalog entry or heartbeat): counted, and warned about at a bounded rate,
//! so a flood of bad records neither stops the reader nor floods its logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Errors from records, the ring, topic names and the catalog; what the log itself reports
/// is wrapped in [`Error::Log`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed {kind} record: {reason}")]
    Malformed { kind: &'static str, reason: String },

    #[error("unsupported encoding `{0}` (this build reads bin.v1 and json.v1; upgrade hektor to read newer records)")]
    UnknownEncoding(String),

    #[error("record version {found} of {kind} is newer than this build understands (max {supported}); upgrade hektor")]
    UnknownVersion {
        kind: &'static str,
        found: u8,
        supported: u8,
    },

    #[error("invalid name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("{partitions} partitions is out of range: a topic has 1 to {max} partitions")]
    InvalidPartitions { partitions: u32, max: u32 },

    #[error("collection `{0}` already exists with other settings (delete it first, or use another name)")]
    CollectionExists(String),

    #[error("invalid settings for collection `{collection}`: {reason}")]
    InvalidSpec { collection: String, reason: String },

    #[error("invalid heartbeat of node `{node}`: {reason} (check that node's --node-id, --advertise, --region, --roles and --node-capacity)")]
    InvalidHeartbeat { node: String, reason: String },

    /// Appending to or reading the log failed (the catalog and the event sink pass the
    /// log's errors on as they are).
    #[error(transparent)]
    Log(#[from] hektor_log::LogError),
}

/// Records a log reader refused (read, found invalid, not applied): counted, with a
/// warning at most once per `every` that says how many were refused since the last one.
#[derive(Debug)]
pub struct Refusals {
    what: &'static str,
    every: Duration,
    total: AtomicU64,
    /// When the last warning was written, and the total then.
    last_warning: Mutex<Option<(Instant, u64)>>,
}

impl Refusals {
    /// Refusals of records of kind `what` (such as "catalog entry"), warned about at most
    /// once per `every`.
    pub fn new(what: &'static str, every: Duration) -> Self {
        Refusals {
            what,
            every,
            total: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// Count one refused record (at `offset` of its topic) and warn unless warned lately.
    pub fn refuse(&self, offset: u64, reason: &dyn std::fmt::Display) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock();
        if last.is_some_and(|(at, _)| at.elapsed() < self.every) {
            return;
        }
        let unreported = total - last.map_or(0, |(_, then)| then) - 1;
        tracing::warn!(
            record = self.what,
            offset,
            %reason,
            refused_total = total,
            refused_without_warning = unreported,
            "refused a record read from the log; it is skipped and the reader goes on"
        );
        *last = Some((Instant::now(), total));
    }

    /// How many records were refused so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
