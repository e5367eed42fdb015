//! The OpenAPI 3 document of a node's HTTP API, served at `GET /openapi.json` (open like
//! `/health`), and the answers of the node's router to what no route serves.
//!
//! Owns:
//! - assembling the node's router from the crates' `OpenApiRouter`s. Every route of the
//!   API is registered through one, with its `#[utoipa::path]` (utoipa-axum's `routes!`
//!   routes the handler and documents it in the same call), so the document lists exactly
//!   the routes served; `tests/openapi_embedded.rs` checks both directions against the
//!   real binary and that no source registers a route past them;
//! - what the document adds from the layers around the handlers, computed by the same
//!   code that decides them: who may call what (`hektor_access::route::need`: the
//!   security scheme, the scope and the 401/403 of each route; `/internal/...` needs the
//!   cluster secret), the router role (`hektor_access::route::is_client_api`: 421 on a
//!   node without it), load shedding (429 with `Retry-After`), the request timeout (503,
//!   empty body), and the text 400 of a path or query parameter that does not decode;
//! - the fallbacks: 404 `{"error": "no such route: ..."}` for a path no route serves and
//!   405 `{"error": "method ... is not allowed on ..."}` for a known path with another
//!   method.
//!
//! Does not own: the routes, their bodies and their own answers (each crate's `http.rs`,
//! `hektor_transfer`, [`crate::console`], the plan route in [`crate::serve`]), the gate
//! (`hektor-access`).

use std::sync::Arc;

use axum::extract::Extension;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hektor_access::route::{is_client_api, need, Need};
use hektor_query::schema::ErrorBody;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::Response as Answer;
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, RefOr};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The security scheme of client API keys (`--api-keys`).
const API_KEY: &str = "apiKey";
/// The security scheme of the cluster secret (`--cluster-secret-file`).
const CLUSTER_SECRET: &str = "clusterSecret";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hektor",
        description = "Distributed vector search as a stream pipeline over a log. Errors are \
            `{\"error\": \"...\"}` (`ErrorBody`). Without `--api-keys` every route is open; \
            with it, routes need `Authorization: Bearer <key>` with the scope each names; \
            `/internal/...` routes are for the nodes of a cluster and need the cluster \
            secret. This document is generated from the handlers that serve the routes."
    ),
    tags(
        (name = "collections", description = "Create, drop, list and describe collections"),
        (name = "vectors", description = "Write and read vectors"),
        (name = "search", description = "Nearest-neighbour search"),
        (name = "cluster", description = "The shard maps, members and plan requests"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "internal", description = "Calls between the nodes of a cluster; they need the cluster secret"),
        (name = "console", description = "The web console's static files (no data)"),
        (name = "meta", description = "This document"),
    ),
    // WriteLevel is named by the writes' query parameters, which do not register schemas.
    components(schemas(ErrorBody, hektor_ingest::replication::WriteLevel)),
)]
struct Document;

/// The document as served, made once at start.
#[derive(Clone)]
struct Served(Arc<str>);

/// This document: the routes of this node's HTTP API with their bodies, answers, statuses
/// and the keys they need.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
async fn openapi_json(Extension(Served(json)): Extension<Served>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

/// The answer to a path no route serves.
async fn no_such_route(method: Method, uri: Uri) -> Response {
    let error = format!(
        "no such route: {method} {}; the routes are listed at GET {PATH}",
        uri.path()
    );
    (StatusCode::NOT_FOUND, Json(ErrorBody { error })).into_response()
}

/// The answer to a known path with a method it does not take.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let error = format!(
        "method {method} is not allowed on {}; the routes are listed at GET {PATH}",
        uri.path()
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(ErrorBody { error })).into_response()
}

/// The node's router from every route of the API (each crate's `OpenApiRouter`, merged),
/// with `GET /openapi.json` and the fallbacks. The document is completed (see the module
/// doc) and rendered once here.
pub fn router(routes: OpenApiRouter) -> anyhow::Result<axum::Router> {
    let (router, document) = assemble(routes);
    let json = document.to_json()?;
    Ok(router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_such_route)
        .layer(Extension(Served(json.into()))))
}

/// The routes with `GET /openapi.json`, and the completed document.
fn assemble(routes: OpenApiRouter) -> (axum::Router, OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(Document::openapi())
        .merge(routes)
        .routes(routes!(openapi_json))
        .split_for_parts();
    complete(&mut document);
    (router, document)
}

fn error_body() -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::Ref(Ref::from_schema_name("ErrorBody"))
}

fn text() -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::T(ObjectBuilder::new().schema_type(Type::String).into())
}

/// Add `status` to an operation's answers, or, when the handler already answers it, add
/// the layer's reason to its description (and `content` to its content types).
fn add_answer<'o>(
    operation: &'o mut Operation,
    status: &str,
    description: &str,
    content: Option<(&str, RefOr<utoipa::openapi::schema::Schema>)>,
) -> &'o mut Answer {
    let entry = operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(Answer::new("")));
    let RefOr::T(answer) = entry else {
        unreachable!("the handlers' answers are inline")
    };
    answer.description = if answer.description.is_empty() {
        let mut chars = description.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    } else {
        format!("{}; or {description}", answer.description)
    };
    if let Some((media, schema)) = content {
        answer
            .content
            .entry(media.to_owned())
            .or_insert_with(|| Content::new(Some(schema)));
    }
    answer
}

/// The operations of a path with their methods.
fn operations(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
    .collect()
}

/// A concrete path of a templated one (`{collection}` → `collection`), as the gate sees it.
fn sample_path(template: &str) -> String {
    template.replace(['{', '}'], "")
}

/// Add what the layers around the handlers answer (see the module doc).
fn complete(document: &mut OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key of the node's --api-keys file, as `Authorization: Bearer <key>`. \
                     A route names the scope it needs (`read`, `write` or `admin`); a key may \
                     also be limited to some collections. Needed only when the node has \
                     --api-keys.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        CLUSTER_SECRET,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The cluster secret (--cluster-secret-file, the same on every node), as \
                     `Authorization: Bearer <secret>`; for the /internal routes nodes call \
                     on each other. No API key opens them.",
                ))
                .build(),
        ),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        let sample = sample_path(path);
        for (method, operation) in operations(item) {
            let needs = match need(&method, &sample) {
                Need::Open => None,
                Need::Node => {
                    operation.security = Some(vec![SecurityRequirement::new(
                        CLUSTER_SECRET,
                        Vec::<String>::new(),
                    )]);
                    add_answer(
                        operation,
                        "401",
                        "the cluster secret is missing or wrong (when the node has one)",
                        Some(("application/json", error_body())),
                    );
                    add_answer(
                        operation,
                        "403",
                        "an API key was sent: no API key opens the internal routes",
                        Some(("application/json", error_body())),
                    );
                    Some("Needs the cluster secret when the node has one.".to_owned())
                }
                Need::Key { scope, collection } => {
                    operation.security =
                        Some(vec![SecurityRequirement::new(API_KEY, [scope.to_string()])]);
                    let on = if collection.is_some() {
                        "on the collection"
                    } else {
                        "on every collection"
                    };
                    let unauthorized = add_answer(
                        operation,
                        "401",
                        "the API key is missing or unknown (when the node has --api-keys)",
                        Some(("application/json", error_body())),
                    );
                    unauthorized.headers.insert(
                        "WWW-Authenticate".into(),
                        Header::new(ObjectBuilder::new().schema_type(Type::String)),
                    );
                    add_answer(
                        operation,
                        "403",
                        &format!("the API key lacks the `{scope}` scope {on}"),
                        Some(("application/json", error_body())),
                    );
                    Some(format!(
                        "Needs an API key with the `{scope}` scope {on} when the node has --api-keys."
                    ))
                }
                Need::AnyKey => {
                    // A documented route the gate does not know (a unit test refuses it).
                    operation.security = Some(vec![SecurityRequirement::new(
                        API_KEY,
                        Vec::<String>::new(),
                    )]);
                    add_answer(
                        operation,
                        "401",
                        "the API key is missing or unknown (when the node has --api-keys)",
                        Some(("application/json", error_body())),
                    );
                    Some("Needs any valid API key when the node has --api-keys.".to_owned())
                }
            };
            if let Some(needs) = needs {
                operation.description = Some(match operation.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                    _ => needs,
                });
            }
            if is_client_api(&method, &sample) {
                add_answer(
                    operation,
                    "421",
                    "this node has no router role: send client requests to a router",
                    Some(("application/json", error_body())),
                );
            }
            let takes_parameters = path.contains('{')
                || operation.parameters.as_ref().is_some_and(|p| {
                    p.iter()
                        .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
                });
            if takes_parameters {
                add_answer(
                    operation,
                    "400",
                    "a path or query parameter does not decode (text)",
                    Some(("text/plain", text())),
                );
            }
            let shed = add_answer(
                operation,
                "429",
                "the node is serving --max-concurrent-requests already; retry after `Retry-After` seconds",
                Some(("application/json", error_body())),
            );
            shed.headers.insert(
                "Retry-After".into(),
                Header::new(ObjectBuilder::new().schema_type(Type::Integer)),
            );
            add_answer(
                operation,
                "503",
                "the request ran past --request-timeout-ms (empty body)",
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console_and_meta() -> OpenApi {
        assemble(crate::console::router()).1
    }

    #[test]
    fn the_document_is_open_and_the_console_is_open() {
        assert_eq!(need(&Method::GET, PATH), Need::Open);
        let doc = console_and_meta();
        let item = &doc.paths.paths[PATH];
        let get = item.get.as_ref().expect("GET /openapi.json");
        assert!(get.security.is_none());
        assert!(get.responses.responses.contains_key("429"));
        assert!(doc.paths.paths.contains_key("/ui/{file}"));
    }

    #[test]
    fn keyed_routes_name_their_scheme_scope_and_refusals() {
        let mut doc = OpenApi::default();
        let mut op = Operation::new();
        op.responses
            .responses
            .insert("200".into(), RefOr::T(Answer::new("ok")));
        let mut item = PathItem::default();
        item.post = Some(op.clone());
        item.delete = Some(op);
        doc.paths
            .paths
            .insert("/collections/{collection}/search".into(), item.clone());
        doc.paths
            .paths
            .insert("/internal/collections/{collection}/shard-get".into(), item);
        complete(&mut doc);
        let search = doc.paths.paths["/collections/{collection}/search"]
            .post
            .as_ref()
            .unwrap();
        let json = serde_json::to_value(search).unwrap();
        assert_eq!(
            json["security"],
            serde_json::json!([{ "apiKey": ["read"] }])
        );
        for status in ["400", "401", "403", "421", "429", "503"] {
            assert!(json["responses"].get(status).is_some(), "{status}: {json}");
        }
        // Not a route the gate knows: any key, no scope.
        let unknown = doc.paths.paths["/collections/{collection}/search"]
            .delete
            .as_ref()
            .unwrap();
        assert_eq!(
            serde_json::to_value(unknown).unwrap()["security"],
            serde_json::json!([{ "apiKey": [] }])
        );
        let internal = doc.paths.paths["/internal/collections/{collection}/shard-get"]
            .post
            .as_ref()
            .unwrap();
        let json = serde_json::to_value(internal).unwrap();
        assert_eq!(
            json["security"],
            serde_json::json!([{ "clusterSecret": [] }])
        );
        assert!(json["responses"].get("421").is_none(), "{json}");
    }
}
