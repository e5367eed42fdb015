//! The one error type of `hektor-merge`: what a stored merge state or a write can get
//! wrong, said so that an operator can find the record.

use thiserror::Error;

/// Why a merge state or a write was refused.
#[derive(Debug, Error, PartialEq)]
pub enum MergeError {
    /// A region name that cannot be an origin (longer than the limit, or with control
    /// characters), shown escaped.
    #[error("region name {name:?} is not valid: at most {max} bytes without control characters")]
    InvalidRegion { name: String, max: usize },
    /// A version vector with more regions than any cluster has.
    #[error("a version vector names {count} regions; at most {max} are allowed")]
    TooManyRegions { count: usize, max: usize },
    /// A `hektor-seen` header that does not parse.
    #[error("the hektor-seen header is not valid: {reason}")]
    InvalidSeenHeader { reason: String },
    /// A stored source floor whose recent-digest list disagrees with its floor.
    #[error("a stored source floor is inconsistent: {reason}")]
    InconsistentFloor { reason: String },
}
