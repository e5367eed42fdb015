//! The web console at `/ui`: a page of plain HTML, CSS and JavaScript (`console/` in the
//! repo, compiled into the binary, no build step) that polls the node's own JSON views
//! (`GET /cluster`, `/collections`, `/collections/{c}`) every 2 s and draws the ring and
//! its shards, the nodes, the planner's decisions and the controller's map changes, and a
//! heat map of shard hotness over time kept in the browser.
//!
//! Owns: serving those three files (`/ui`, `/ui/`, `/ui/index.html`, `/ui/app.js`,
//! `/ui/style.css`) with their content types and a strict Content-Security-Policy. The
//! files hold no data, so the gate lets `/ui` through without a key
//! (`hektor_access::route::need`); the views they read keep their own keys, which the page
//! asks for when the node answers 401/403 and sends as `Authorization: Bearer`. The
//! routes are registered through `utoipa-axum`'s `OpenApiRouter`, so `GET /openapi.json`
//! lists them (tag `console`).
//! Does not own: the views themselves (`hektor-query`'s `http.rs`).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const STYLE_CSS: &str = include_str!("../console/style.css");

/// Scripts and styles from this origin only, no inline script, no framing: a string from
/// the API that slipped into markup could still not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The console's routes, to merge into the node's router.
pub fn router() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(index_slash))
        .routes(routes!(file))
}

/// A file of the console with its content type and headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: always ask again (they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The console's page.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "console",
    responses((status = 200, description = "The page", body = String, content_type = "text/html; charset=utf-8")),
)]
async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's page.
#[utoipa::path(
    get,
    path = "/ui/",
    tag = "console",
    responses((status = 200, description = "The page", body = String, content_type = "text/html; charset=utf-8")),
)]
async fn index_slash() -> Response {
    index().await
}

/// A file of the console: `index.html`, `app.js` or `style.css`.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "console",
    params(("file" = String, Path, description = "`index.html`, `app.js` or `style.css`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/html; charset=utf-8"),
            (String = "text/javascript; charset=utf-8"),
            (String = "text/css; charset=utf-8"),
        )),
        (status = 404, description = "The console has no such file", body = hektor_query::schema::ErrorBody),
    ),
)]
async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(hektor_query::schema::ErrorBody {
                error: "the console has index.html, app.js and style.css under /ui/".into(),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_and_style_from_ui() {
        assert!(INDEX_HTML.contains("src=\"/ui/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/ui/style.css\""));
        // No inline script: the CSP would refuse it.
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        // Data goes into the DOM as text, never as markup.
        assert!(!APP_JS.contains("innerHTML"));
        assert!(!APP_JS.contains("insertAdjacentHTML"));
        assert!(!APP_JS.contains("document.write"));
    }
}
