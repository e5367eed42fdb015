//! The gate: every HTTP request passes [`Gate::check`] before routing reads its body.
//!
//! - Without keys (no `--api-keys`) the public routes are open; with them, a missing or
//!   unknown key is a 401 on every route but the open ones (`GET /health`, the console's
//!   `/ui` files, `GET /openapi.json`: [`crate::route`]), and a key without the scope or
//!   the collection a 403. Keys come as `Authorization: Bearer <key>`.
//! - `/internal/...` needs the cluster secret whenever one is set (always when keys are
//!   set); a client key is refused there with a 403, whatever its scopes.
//!
//! Wired into axum as tower-http's `ValidateRequestHeaderLayer::custom(gate)`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tower_http::validate_request::ValidateRequest;

use crate::keys::{ClusterSecret, KeyRing};
use crate::route::{need, Need};

/// Who may pass. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    keys: Option<Arc<KeyRing>>,
    secret: Option<Arc<ClusterSecret>>,
}

/// A refused request: the status (401 or 403) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    pub message: String,
}

impl Denied {
    fn unauthorized(message: impl Into<String>) -> Denied {
        Denied {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Denied {
        Denied {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// The JSON answer (`{"error": ...}`), with `WWW-Authenticate` on a 401.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hektor\""),
            );
        }
        response
    }
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Gate {
    /// A gate with no keys and no secret: everything open (today's behaviour).
    pub fn open() -> Gate {
        Gate::default()
    }

    /// A gate with these keys (public routes) and this secret (internal routes).
    pub fn new(keys: Option<KeyRing>, secret: Option<ClusterSecret>) -> Gate {
        Gate {
            keys: keys.map(Arc::new),
            secret: secret.map(Arc::new),
        }
    }

    /// Whether public routes need a key.
    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// The `Authorization` value this node sends to other nodes' internal routes.
    pub fn node_authorization(&self) -> Option<String> {
        self.secret.as_ref().map(|s| s.authorization())
    }

    /// Whether internal routes need the cluster secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Pass or refuse `method path` with these headers.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Denied> {
        let presented = bearer(headers);
        match need(method, path) {
            Need::Open => Ok(()),
            Need::Node => {
                let Some(secret) = &self.secret else {
                    return Ok(());
                };
                match presented {
                    Some(token) if secret.matches(token) => Ok(()),
                    Some(token) if self.keys.as_ref().is_some_and(|k| k.find(token).is_some()) => {
                        Err(Denied::forbidden(
                            "internal routes are for the nodes of the cluster; an API key does not open them",
                        ))
                    }
                    Some(_) => Err(Denied::unauthorized(
                        "internal routes need this cluster's secret (--cluster-secret-file); the one sent is not it",
                    )),
                    None => Err(Denied::unauthorized(
                        "internal routes need this cluster's secret: send Authorization: Bearer <secret>",
                    )),
                }
            }
            Need::Key { .. } | Need::AnyKey if self.keys.is_none() => Ok(()),
            need => {
                let keys = self.keys.as_ref().expect("checked above");
                let token = presented.ok_or_else(|| {
                    Denied::unauthorized(
                        "this node needs an API key: send Authorization: Bearer <key>",
                    )
                })?;
                let grant = keys
                    .find(token)
                    .ok_or_else(|| Denied::unauthorized("unknown API key"))?;
                match need {
                    Need::Key { scope, collection } => {
                        if !grant.has_scope(scope) {
                            return Err(Denied::forbidden(format!(
                                "API key `{}` lacks the `{scope}` scope this route needs",
                                grant.name
                            )));
                        }
                        if !grant.covers(collection.as_deref()) {
                            return Err(Denied::forbidden(match collection {
                                Some(c) => format!(
                                    "API key `{}` does not open collection `{c}`",
                                    grant.name
                                ),
                                None => format!(
                                    "API key `{}` opens only some collections; this view spans them all",
                                    grant.name
                                ),
                            }));
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl<B> ValidateRequest<B> for Gate {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<Body>> {
        self.check(request.method(), request.uri().path(), request.headers())
            .map_err(Denied::into_response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-key-0123456789";
    const READER: &str = "reader-key-0123456789";
    const SECRET: &str = "cluster-secret-0123456789";

    fn gate() -> Gate {
        let keys = KeyRing::parse(
            &format!(
                r#"{{"keys": [
                    {{"name": "admin", "key": "{ADMIN}", "scopes": ["read", "write", "admin"]}},
                    {{"name": "reader", "key": "{READER}", "scopes": ["read"], "collections": ["docs"]}}
                ]}}"#
            ),
            "test",
        )
        .unwrap();
        Gate::new(Some(keys), Some(ClusterSecret::new(SECRET).unwrap()))
    }

    fn with(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    fn status(g: &Gate, method: Method, path: &str, token: Option<&str>) -> u16 {
        match g.check(&method, path, &with(token)) {
            Ok(()) => 200,
            Err(d) => d.status.as_u16(),
        }
    }

    #[test]
    fn keys_scopes_and_collections_decide() {
        let g = gate();
        assert_eq!(status(&g, Method::GET, "/health", None), 200);
        assert_eq!(
            status(&g, Method::POST, "/collections/docs/search", None),
            401
        );
        assert_eq!(
            status(
                &g,
                Method::POST,
                "/collections/docs/search",
                Some("nope-0123456789abcdef")
            ),
            401
        );
        assert_eq!(
            status(&g, Method::POST, "/collections/docs/search", Some(READER)),
            200
        );
        assert_eq!(
            status(&g, Method::POST, "/collections/other/search", Some(READER)),
            403
        );
        assert_eq!(
            status(&g, Method::POST, "/collections/docs/vectors", Some(READER)),
            403
        );
        assert_eq!(
            status(&g, Method::PUT, "/collections/docs", Some(READER)),
            403
        );
        assert_eq!(status(&g, Method::GET, "/cluster", Some(READER)), 403);
        assert_eq!(status(&g, Method::GET, "/metrics", None), 401);
        assert_eq!(
            status(&g, Method::PUT, "/collections/docs", Some(ADMIN)),
            200
        );
        assert_eq!(status(&g, Method::GET, "/cluster", Some(ADMIN)), 200);
        assert_eq!(status(&g, Method::GET, "/no/such/route", None), 401);
        assert_eq!(status(&g, Method::GET, "/no/such/route", Some(READER)), 200);
    }

    #[test]
    fn internal_routes_need_the_cluster_secret_and_no_key_opens_them() {
        let g = gate();
        let path = "/internal/collections/docs/shard-search";
        assert_eq!(status(&g, Method::POST, path, None), 401);
        assert_eq!(
            status(&g, Method::POST, path, Some("wrong-secret-0123456789")),
            401
        );
        assert_eq!(status(&g, Method::POST, path, Some(ADMIN)), 403);
        assert_eq!(status(&g, Method::POST, path, Some(SECRET)), 200);
        // The secret is not a client key.
        assert_eq!(
            status(&g, Method::POST, "/collections/docs/search", Some(SECRET)),
            401
        );
    }

    #[test]
    fn an_open_gate_passes_everything_and_a_secret_alone_guards_internal_routes() {
        let open = Gate::open();
        assert_eq!(status(&open, Method::POST, "/internal/x", None), 200);
        assert_eq!(
            status(&open, Method::DELETE, "/collections/docs", None),
            200
        );
        let secret_only = Gate::new(None, Some(ClusterSecret::new(SECRET).unwrap()));
        assert_eq!(status(&secret_only, Method::POST, "/internal/x", None), 401);
        assert_eq!(
            status(&secret_only, Method::POST, "/collections/docs/search", None),
            200
        );
    }

    #[test]
    fn refusals_are_json_and_a_401_names_the_scheme() {
        let denied = gate()
            .check(&Method::GET, "/metrics", &HeaderMap::new())
            .unwrap_err();
        let response = denied.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
