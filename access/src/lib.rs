//! hektor's door: who may call what.
//!
//! - [`keys`]: the API-key file (`--api-keys FILE`): keys with scopes (`read`, `write`,
//!   `admin`) and the collections they open; and the cluster secret nodes present to
//!   each other on the internal routes.
//! - [`route`]: what each route of the HTTP API needs (no credentials, the cluster
//!   secret, or a key with a scope on a collection), from the method and the path alone.
//! - [`gate`]: the check every request passes before its body is read, as a tower-http
//!   `ValidateRequest`: 401 for a missing or unknown key, 403 for a key without the scope
//!   or the collection, each with a JSON message.
//!
//! This crate decides; it does not serve routes or hold data.

pub mod error;
pub mod gate;
pub mod keys;
pub mod route;

pub use error::AccessError;
pub use gate::Gate;
pub use keys::{ClusterSecret, KeyRing, Scope};
pub use route::{need, Need};
