//! The one error type of the indexers crate. Every message says what went wrong and, where
//! it can, what to do about it. Bad input inside an applied batch (a vector of the wrong
//! dimension, say) is not an error: [`crate::shard::Shard::apply`] reports it per op, so a
//! poison record cannot wedge a shard.

use std::path::PathBuf;

/// Errors from shards, index engines and data set files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the shard store at {path} failed: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: heed::Error,
    },

    #[error("the arroy index of the shard at {path} failed: {source}")]
    Arroy {
        path: PathBuf,
        #[source]
        source: arroy::Error,
    },

    #[error("the shard at {path} was created with {field} = {stored}, but it was opened with {wanted} (open it with the stored settings, or use a new directory)")]
    ConfigMismatch {
        path: PathBuf,
        field: &'static str,
        stored: String,
        wanted: String,
    },

    #[error("the shard at {path} was written by an older hektor (store format 1) that keyed vectors by id alone, and it holds vectors with a tenant, which cannot be re-keyed (format 1 did not store the tenant): rebuild it from the log by removing the directory (a shard host does that by itself)")]
    OldFormat { path: PathBuf },

    #[error("the shard at {path} has store format {found}, newer than this build reads ({supported}): open it with a newer hektor, or rebuild it from the log")]
    NewerFormat {
        path: PathBuf,
        found: u64,
        supported: u64,
    },

    #[error("invalid shard configuration: {0}")]
    InvalidConfig(String),

    #[error("query has {got} dimensions but the shard holds {expected}-dimensional vectors")]
    DimensionMismatch { expected: usize, got: usize },

    #[error("invalid query vector: {0}")]
    InvalidQuery(String),

    #[error("the shard at {path} is corrupt: {reason} (restore it from a replica or rebuild it from the log)")]
    Corrupt { path: PathBuf, reason: String },

    #[error("the shard at {path} has used all 2^32 item ids; rebuild it from the log into a new directory")]
    ItemIdsExhausted { path: PathBuf },

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("a background task of the shard host failed: {0}")]
    Background(String),

    #[error("bad data set file {path}: {reason}")]
    Dataset { path: PathBuf, reason: String },

    #[error("shard snapshot: {0}")]
    Snapshot(String),
    #[error("GPU batch search: {0}")]
    Gpu(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
