//! The one error type of the archive tier, with messages that say what to do.

use std::path::PathBuf;

/// Why archiving or restoring a shard failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("bad archive URL `{url}`: {why} (use file:///absolute/path or s3://bucket/prefix)")]
    BadUrl { url: String, why: String },

    #[error("the object store refused to be set up for `{url}`: {source}")]
    Setup {
        url: String,
        #[source]
        source: object_store::Error,
    },

    #[error("object store {op} of `{path}` failed: {source} (is the store reachable and are the credentials right?)")]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the archive manifest `{path}` is unreadable: {why}; the archive is corrupt: archive the shard again from a holder, or delete the folder so the shard is rebuilt from the log")]
    BadManifest { path: String, why: String },

    #[error("the archive at `{path}` is of {found}, not of {wanted}")]
    WrongShard {
        path: String,
        found: String,
        wanted: String,
    },

    #[error("archived object `{path}` is {got} bytes, its manifest says {want}: the object is truncated or was replaced; archive the shard again, or delete the folder so the shard is rebuilt from the log")]
    Truncated { path: String, got: u64, want: u64 },

    #[error("archived object `{path}` has sha256 {got}, its manifest says {want}: the object is corrupt; archive the shard again, or delete the folder so the shard is rebuilt from the log")]
    Corrupt {
        path: String,
        got: String,
        want: String,
    },

    #[error("uploaded object `{path}` reads back as {got} bytes, not {want}: the upload was not kept whole")]
    UploadIncomplete { path: String, got: u64, want: u64 },

    #[error("a blocking task of the archive failed: {0}")]
    Task(String),
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
