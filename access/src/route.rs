//! What each route of the HTTP API needs, from its method and path alone (so the gate
//! decides before the body is read and before routing).
//!
//! | route | needs |
//! |---|---|
//! | `GET /health` | nothing |
//! | `GET /ui`, `GET /ui/{file}` (the web console's static files: no data) | nothing |
//! | `GET /openapi.json` (the API's description: no data) | nothing |
//! | `/internal/...` | the cluster secret |
//! | `POST /collections/{c}/search`, `POST /collections/{c}/search/batch`, `GET /collections/{c}`, `GET /collections/{c}/vectors/{id}` | `read` on `c` |
//! | `POST /collections/{c}/vectors` | `write` on `c` |
//! | `PUT`/`DELETE /collections/{c}`, `POST /cluster/collections/{c}/plan` | `admin` on `c` |
//! | `GET /collections`, `GET /cluster`, `GET /metrics`, `GET /ready` | `read` on every collection |
//! | anything else | any valid key (then the 404 or 405) |

use axum::http::Method;

use crate::keys::Scope;

/// What a request must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (`GET /health`).
    Open,
    /// The cluster secret: another node of this cluster.
    Node,
    /// A key with `scope` on `collection`; `None` is every collection.
    Key {
        scope: Scope,
        collection: Option<String>,
    },
    /// Any valid key: a path no route serves, answered 404/405 after the check.
    AnyKey,
}

fn key(scope: Scope, collection: Option<&str>) -> Need {
    Need::Key {
        scope,
        collection: collection.map(str::to_owned),
    }
}

/// What `method path` needs. The path is taken as sent (not percent-decoded): a key for
/// `docs` does not open `/collections/%64ocs`, which fails closed with a 403.
pub fn need(method: &Method, path: &str) -> Need {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (get, post, put, delete) = (
        method == Method::GET || method == Method::HEAD,
        method == Method::POST,
        method == Method::PUT,
        method == Method::DELETE,
    );
    match segments.as_slice() {
        ["health"] if get => Need::Open,
        ["ui"] | ["ui", _] if get => Need::Open,
        ["openapi.json"] if get => Need::Open,
        ["internal", ..] => Need::Node,
        ["metrics"] | ["cluster"] | ["collections"] | ["ready"] if get => key(Scope::Read, None),
        ["collections", c] if get => key(Scope::Read, Some(c)),
        ["collections", c] if put || delete => key(Scope::Admin, Some(c)),
        ["collections", c, "search"] if post => key(Scope::Read, Some(c)),
        ["collections", c, "search", "batch"] if post => key(Scope::Read, Some(c)),
        ["collections", c, "vectors"] if post => key(Scope::Write, Some(c)),
        ["collections", c, "vectors", _] if get => key(Scope::Read, Some(c)),
        ["cluster", "collections", c, "plan"] if post => key(Scope::Admin, Some(c)),
        _ => Need::AnyKey,
    }
}

/// Whether a request is for the client API: searches, vector reads and writes, creating
/// and dropping collections, plan requests. Only nodes with the `router` role serve it;
/// the views (`/collections`, `/cluster`, `/metrics`, `/health`, `/ready`) and the
/// internal routes are on every node.
pub fn is_client_api(method: &Method, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["collections", _] => method == Method::PUT || method == Method::DELETE,
        ["collections", _, "search"] | ["collections", _, "vectors"] => true,
        ["collections", _, "search", "batch"] => true,
        ["collections", _, "vectors", _] => true,
        ["cluster", "collections", _, "plan"] => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_api_is_told_from_views_and_internal_routes() {
        for (method, path) in [
            (Method::POST, "/collections/d/search"),
            (Method::POST, "/collections/d/search/batch"),
            (Method::POST, "/collections/d/vectors"),
            (Method::GET, "/collections/d/vectors/a"),
            (Method::PUT, "/collections/d"),
            (Method::DELETE, "/collections/d?x=1"),
            (Method::POST, "/cluster/collections/d/plan"),
        ] {
            assert!(is_client_api(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/collections"),
            (Method::GET, "/collections/d"),
            (Method::GET, "/cluster"),
            (Method::GET, "/health"),
            (Method::GET, "/ready"),
            (Method::GET, "/metrics"),
            (Method::POST, "/internal/collections/d/shard-search"),
            (Method::POST, "/internal/collections/d/shard-get"),
        ] {
            assert!(!is_client_api(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn every_route_needs_what_the_table_says() {
        let cases = [
            (Method::GET, "/health", Need::Open),
            (Method::POST, "/health", Need::AnyKey),
            (Method::GET, "/openapi.json", Need::Open),
            (Method::POST, "/openapi.json", Need::AnyKey),
            (
                Method::POST,
                "/internal/collections/d/shard-search",
                Need::Node,
            ),
            (Method::GET, "/internal/anything", Need::Node),
            (Method::GET, "/metrics", key(Scope::Read, None)),
            (Method::GET, "/cluster", key(Scope::Read, None)),
            (Method::GET, "/collections", key(Scope::Read, None)),
            (Method::GET, "/collections/d", key(Scope::Read, Some("d"))),
            (Method::PUT, "/collections/d", key(Scope::Admin, Some("d"))),
            (
                Method::POST,
                "/collections/d/search/batch",
                key(Scope::Read, Some("d")),
            ),
            (
                Method::DELETE,
                "/collections/d",
                key(Scope::Admin, Some("d")),
            ),
            (
                Method::POST,
                "/collections/d/search",
                key(Scope::Read, Some("d")),
            ),
            (
                Method::POST,
                "/collections/d/search?x=1",
                key(Scope::Read, Some("d")),
            ),
            (
                Method::POST,
                "/collections/d/vectors",
                key(Scope::Write, Some("d")),
            ),
            (
                Method::GET,
                "/collections/d/vectors/a",
                key(Scope::Read, Some("d")),
            ),
            (
                Method::POST,
                "/cluster/collections/d/plan",
                key(Scope::Admin, Some("d")),
            ),
            (Method::DELETE, "/collections/d/vectors", Need::AnyKey),
            (Method::GET, "/nope", Need::AnyKey),
            (Method::GET, "/", Need::AnyKey),
        ];
        for (method, path, want) in cases {
            assert_eq!(need(&method, path), want, "{method} {path}");
        }
    }
}
