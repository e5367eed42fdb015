//! The one error type of the gRPC door: why a call was refused or failed, with the gRPC
//! status code each maps to. The message is the HTTP API's `error` text for the same
//! failure, so a client reads the same actionable sentence through either door, and the
//! HTTP status of that failure travels beside it as the metadata [`HTTP_STATUS_KEY`]
//! (gRPC's codes are coarser: `INVALID_ARGUMENT` stands for 400, 413 and 422).

use hektor_ingest::IngestError;
use hektor_query::QueryError;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The metadata key of a refusal's HTTP status (`"422"`), as the HTTP API answers the same
/// failure.
pub const HTTP_STATUS_KEY: &str = "hektor-http-status";

/// Why a gRPC call (or the gRPC listener) failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// A read failed as the HTTP read routes would fail.
    #[error(transparent)]
    Query(#[from] QueryError),

    /// A write failed as `POST /collections/{c}/vectors` would fail.
    #[error(transparent)]
    Ingest(#[from] IngestError),

    /// A field holds a value the HTTP API would refuse (422: an unknown enum value).
    #[error("{0}")]
    BadRequest(String),

    /// A collection name that cannot be one (the HTTP API answers 404: no such collection).
    #[error("{0}")]
    BadName(String),

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
            GrpcError::BadRequest(_) | GrpcError::BadName(_) => Code::InvalidArgument,
            GrpcError::Denied { status, .. } => code_of_http(*status),
            GrpcError::Overloaded => Code::ResourceExhausted,
            GrpcError::Transport(_) => Code::Internal,
            GrpcError::Connect { .. } => Code::Unavailable,
        }
    }
}

impl GrpcError {
    /// The HTTP status the HTTP API answers the same failure with.
    pub fn http_status(&self) -> u16 {
        match self {
            GrpcError::Query(e) => e.status(),
            GrpcError::Ingest(e) => e.status(),
            GrpcError::BadRequest(_) => 422,
            GrpcError::BadName(_) => 404,
            GrpcError::Denied { status, .. } => *status,
            GrpcError::Overloaded => 429,
            GrpcError::Transport(_) => 500,
            GrpcError::Connect { .. } => 503,
        }
    }
}

/// A refusal with `code`, `message` and the HTTP status `http` as [`HTTP_STATUS_KEY`].
pub fn status_with_http(code: Code, message: impl Into<String>, http: u16) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(HTTP_STATUS_KEY, MetadataValue::from(http));
    Status::with_metadata(code, message, metadata)
}

impl From<GrpcError> for Status {
    fn from(err: GrpcError) -> Status {
        status_with_http(err.code(), err.to_string(), err.http_status())
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
        // The HTTP status travels beside the coarser gRPC code.
        let http = |err: GrpcError| {
            let status = Status::from(err);
            let value = status
                .metadata()
                .get(HTTP_STATUS_KEY)
                .expect("the http status");
            (status.code(), value.to_str().unwrap().to_owned())
        };
        assert_eq!(
            http(GrpcError::Query(QueryError::Invalid("k".into()))),
            (Code::InvalidArgument, "422".into())
        );
        assert_eq!(
            http(GrpcError::Ingest(IngestError::TooLarge("n".into()))),
            (Code::InvalidArgument, "413".into())
        );
        assert_eq!(
            http(GrpcError::BadName("invalid name".into())),
            (Code::InvalidArgument, "404".into())
        );
        assert_eq!(
            http(GrpcError::Overloaded),
            (Code::ResourceExhausted, "429".into())
        );
    }
}
