//! The one error type of `hektor-control`.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the nodes or plan topics failed.
    #[error("control plane log access failed: {0}")]
    Log(#[from] hektor_topics::Error),

    /// A shard map could not be built or read.
    #[error("shard map: {0}")]
    Map(#[from] hektor_cluster::Error),

    /// A record of the plan or nodes topic is not valid JSON of its kind.
    #[error("unreadable control record: {0}")]
    Json(#[from] serde_json::Error),

    /// A record of the plan or nodes topic is well-formed JSON but not a valid record.
    #[error("invalid control record: {0}")]
    BadRecord(String),

    /// The node's own settings are unusable.
    #[error("invalid node settings: {0}")]
    Config(String),
}

/// The log's own errors are [`Error::Log`] too, wrapped as the topics crate wraps them.
impl From<hektor_log::LogError> for Error {
    fn from(err: hektor_log::LogError) -> Self {
        Error::Log(err.into())
    }
}
