//! The one error type of the gRPC door: why a call was refused or failed, with the gRPC
//! status code each maps to. The message is the HTTP API's `error` text for the same
//! failure, so a client reads the same actionable sentence through either door.

use hektor_ingest::IngestError;
use hektor_query::QueryError;
use tonic::{Code, Status};

/// Why a gRPC call (or the gRPC listener) failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// A read failed as the HTTP read routes would fail.
    #[error(transparent)]
    Query(#[from] QueryError),

    /// A write failed as `POST /collections/{c}/vectors` would fail.
    #[error(transparent)]
    Ingest(#[from] IngestError),

    /// The request is not a valid request (a field the HTTP API would refuse with 400).
    #[error("{0}")]
    BadRequest(String),

    /// The gate refused the call: `status` is the HTTP status it gives (401 or 403).
    #[error("{message}")]
    Denied { status: u16, message: String },

    /// The node serves as many requests as it takes at once.
    #[error("this node is serving as many requests as it takes at once; retry shortly")]
    Overloaded,

    /// The listener failed.
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// A client could not reach a server (client side only).
    #[error("connecting to the gRPC server at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The gRPC code of an HTTP status, as the HTTP API answers the same failure.
pub fn code_of_http(status: u16) -> Code {
    match status {
        400 | 413 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

impl GrpcError {
    /// The gRPC status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            GrpcError::Query(e) => code_of_http(e.status()),
            GrpcError::Ingest(e) => code_of_http(e.status()),
            GrpcError::BadRequest(_) => Code::InvalidArgument,
            GrpcError::Denied { status, .. } => code_of_http(*status),
            GrpcError::Overloaded => Code::ResourceExhausted,
            GrpcError::Transport(_) => Code::Internal,
            GrpcError::Connect { .. } => Code::Unavailable,
        }
    }
}

impl From<GrpcError> for Status {
    fn from(err: GrpcError) -> Status {
        Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_http_failure_has_its_grpc_code() {
        let q = |e: QueryError| GrpcError::from(e).code();
        assert_eq!(q(QueryError::UnknownCollection("c".into())), Code::NotFound);
        assert_eq!(q(QueryError::Invalid("k".into())), Code::InvalidArgument);
        assert_eq!(q(QueryError::BadRequest("x".into())), Code::InvalidArgument);
        assert_eq!(q(QueryError::NotReady("c".into())), Code::Unavailable);
        assert_eq!(q(QueryError::Unavailable("s".into())), Code::Unavailable);
        assert_eq!(
            q(QueryError::ConsistencyTimeout {
                partition: 0,
                applied: 1,
                needed: 2,
                waited_ms: 3
            }),
            Code::DeadlineExceeded
        );
        assert_eq!(q(QueryError::Internal("e".into())), Code::Internal);
        let i = |e: IngestError| GrpcError::from(e).code();
        assert_eq!(i(IngestError::TooLarge("n".into())), Code::InvalidArgument);
        assert_eq!(
            i(IngestError::Invalid {
                item: "upserts[0]".into(),
                reason: "r".into()
            }),
            Code::InvalidArgument
        );
        let denied = |status| GrpcError::Denied {
            status,
            message: "m".into(),
        };
        assert_eq!(denied(401).code(), Code::Unauthenticated);
        assert_eq!(denied(403).code(), Code::PermissionDenied);
        let status = Status::from(GrpcError::Query(QueryError::UnknownCollection("c".into())));
        assert_eq!(status.message(), "collection `c` does not exist");
    }
}
