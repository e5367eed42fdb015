//! The errors of shard transfer.

use std::path::PathBuf;

/// Why the snapshot route could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the snapshot scratch directory {path}: {source} (check that the data directory is writable)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
