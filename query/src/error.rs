//! The one error type of the read path, with the HTTP status each maps to.

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("collection `{0}` does not exist")]
    UnknownCollection(String),

    #[error("{0}")]
    BadRequest(String),

    #[error("{0}")]
    Invalid(String),

    #[error("vector `{0}` not found")]
    NotFound(String),

    #[error("collection `{0}` is not ready on this node yet; retry shortly")]
    NotReady(String),

    #[error("consistency wait timed out after {waited_ms} ms: partition {partition} has applied up to offset {applied}, the token needs {needed}; retry, or raise timeout_ms")]
    ConsistencyTimeout {
        partition: u32,
        applied: u64,
        needed: u64,
        waited_ms: u64,
    },

    #[error("consistency wait timed out after {waited_ms} ms: this region's copy of partition {partition} is not closed up to the search's bound for {behind}; retry, or raise timeout_ms (or max_staleness_ms)")]
    RegionsBehind {
        partition: u32,
        /// Per region short of the bound: how far behind it, e.g. "region `east` (340 ms short)".
        behind: String,
        waited_ms: u64,
    },

    /// A session read of another region's write ran out of time: that region did not
    /// answer how far its token goes in time, or this region has not merged that far.
    #[error("{0}")]
    SessionTimeout(String),

    #[error("{0}")]
    Unavailable(String),

    #[error("search failed: {0}")]
    Internal(String),
}

impl QueryError {
    pub fn status(&self) -> u16 {
        match self {
            QueryError::UnknownCollection(_) | QueryError::NotFound(_) => 404,
            QueryError::BadRequest(_) => 400,
            QueryError::Invalid(_) => 422,
            QueryError::NotReady(_) | QueryError::Unavailable(_) => 503,
            QueryError::ConsistencyTimeout { .. }
            | QueryError::RegionsBehind { .. }
            | QueryError::SessionTimeout(_) => 504,
            QueryError::Internal(_) => 500,
        }
    }
}
