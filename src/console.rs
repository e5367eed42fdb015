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
//! asks for when the node answers 401/403 and sends as `Authorization: Bearer`.
//! Does not own: the views themselves (`hektor-query`'s `http.rs`).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const STYLE_CSS: &str = include_str!("../console/style.css");

/// Scripts and styles from this origin only, no inline script, no framing: a string from
/// the API that slipped into markup could still not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The console's routes, to merge into the node's router.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
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

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "the console has index.html, app.js and style.css under /ui/"
            })),
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
