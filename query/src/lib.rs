//! hektor's read path.
//!
//! - [`router`]: a search fans out to the shards that can hold the answer (only the
//!   tenant's ring range when a tenant is given), searches this node's shards on the
//!   request's own thread when that is cheap (hot engine, at most two local shards or other
//!   searches already running; no pool hop) and on a bounded pool otherwise, merges the
//!   top k, and waits first, if asked, until the shards have applied a write token
//!   (read-your-writes).
//! - [`http`]: the read side of the HTTP API (search, get a vector, list and show
//!   collections, health, Prometheus metrics).
//! - [`batch`]: batch search (`POST /collections/{c}/search/batch`), exact, on the CPU or
//!   the GPU by the seed's routing rule.
//! - [`metrics`]: the Prometheus registry.
//! - [`peers`]: the links to other regions' nodes: round trips, write acknowledgements
//!   that cross once, bounded and strong reads forwarded to a fresher region.
//! - [`schema`]: the shapes of the read routes' JSON answers and of the error body, for
//!   the OpenAPI document (`GET /openapi.json`).
//!
//! Writes are not here: they are `hektor-ingest` (read/write separation, seed §2.4).

pub mod batch;
pub mod error;
pub mod http;
pub mod metrics;
pub mod peers;
pub mod router;
pub mod schema;

pub use error::QueryError;
