//! The one error type of the write path, with the HTTP status each maps to.

use hektor_log::LogError;
use hektor_topics::Error as TopicsError;

/// Why a write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("collection `{0}` does not exist")]
    UnknownCollection(String),

    #[error("{0}")]
    BadRequest(String),

    /// An item broke a validation rule; `item` names it (index and id).
    #[error("{item}: {reason}")]
    Invalid { item: String, reason: String },

    #[error("{0}")]
    TooLarge(String),

    #[error(transparent)]
    Conflict(TopicsError),

    /// The log, or the catalog on it, failed; the log's own errors are wrapped as the
    /// topics crate wraps them (`TopicsError::Log`).
    #[error("the log is not available: {0}")]
    Log(#[from] TopicsError),
}

impl From<LogError> for IngestError {
    fn from(err: LogError) -> Self {
        IngestError::Log(TopicsError::Log(err))
    }
}

impl IngestError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            IngestError::UnknownCollection(_) => 404,
            IngestError::BadRequest(_) => 400,
            IngestError::Invalid { .. } => 422,
            IngestError::TooLarge(_) => 413,
            IngestError::Conflict(_) => 409,
            IngestError::Log(
                TopicsError::InvalidName { .. }
                | TopicsError::InvalidSpec { .. }
                | TopicsError::Log(LogError::InvalidName { .. }),
            ) => 400,
            IngestError::Log(TopicsError::CollectionExists(_)) => 409,
            IngestError::Log(TopicsError::Log(LogError::Timeout(_))) => 504,
            IngestError::Log(_) => 503,
        }
    }
}
