//! hektor's binary protocol (issue #16): a gRPC service, `hektor.v1.Hektor`, served by
//! `hektor serve --grpc-listen HOST:PORT` beside the HTTP API, with the HTTP API's
//! semantics, limits, errors and keys.
//!
//! - [`proto`]: the messages (`proto/hektor.proto`, hand-written prost structs: vectors
//!   as packed `repeated float`, payloads as JSON text); no protoc is needed to build.
//! - [`service`]: what `Search`, `SearchBatch` and `Write` do, through the same library
//!   calls as `POST /collections/{c}/search`, `.../search/batch` and `.../vectors`, behind
//!   the same gate (`hektor-access`, `authorization: Bearer <key>` metadata).
//! - [`server`]: the tower service routing the method paths, and the listener (plain
//!   TCP, HTTP/2; no TLS: `--tls-cert` covers the HTTP listener only).
//! - [`client`]: a small client for the bench, the tests and Rust callers.
//! - [`error`]: [`GrpcError`], each failure with its gRPC status code.

pub mod client;
pub mod error;
pub mod proto;
pub mod server;
pub mod service;

pub use client::Client;
pub use error::GrpcError;
pub use server::{serve, GrpcConfig, HektorService};
pub use service::Api;
/// The status of a failed call, and its code (tonic's), for callers without tonic.
pub use tonic::{Code, Status};
