//! The one error type of the write path, with the HTTP status each maps to.

use hektor_topics::Error as LogError;

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
    Conflict(LogError),

    #[error("the log is not available: {0}")]
    Log(#[from] LogError),
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
            IngestError::Log(LogError::InvalidName { .. } | LogError::InvalidSpec { .. }) => 400,
            IngestError::Log(LogError::CollectionExists(_)) => 409,
            IngestError::Log(LogError::Timeout(_)) => 504,
            IngestError::Log(_) => 503,
        }
    }
}
