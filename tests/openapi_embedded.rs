//! The OpenAPI document a node serves at `GET /openapi.json` against the routes the real
//! binary has (`hektor serve` on the embedded log, with API keys and a cluster secret):
//!
//! - it is OpenAPI 3 (`openapi` is `3.x`) and valid, by `openapi-spec-validator`;
//! - every (method, path) it lists is served: a request to it (placeholders filled, good
//!   and bad bodies, with the credential the document says it needs and without any)
//!   never gets the router's unknown-route 404 or a 405, and gets a status the document
//!   lists for it, with a content type it lists; every JSON answer validates against the
//!   documented schema with no undocumented field (Python `jsonschema`);
//!   routes that need a key or the secret say so (`security`), and a request without one
//!   is a documented 401;
//! - made-up paths and wrong methods get the fallbacks (`{"error": "no such route ..."}`,
//!   405);
//! - no route exists that the document lacks: every route of the workspace is registered
//!   through utoipa-axum's `OpenApiRouter` (`routes!` routes and documents a handler in
//!   one call), checked by reading the sources for any other way to add one.
//!
//! Python comes from a virtual environment under `target/tmp` (made once, with the
//! interpreter's own packages visible; pip adds `openapi-spec-validator` where missing).
//! Without python3, or when pip cannot fetch it, the validation part says loudly that it
//! did not run; under `CI=true` it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::python::{imports, show};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "openapi-admin-key-3d9e0a7c41b2";
const SECRET: &str = "openapi-cluster-secret-8b1f2e6d";

/// What the checks import, in the environment's Python.
const NEEDED: &str = "import openapi_spec_validator, jsonschema, referencing";
/// What pip installs when it is missing (it brings jsonschema and referencing).
const PACKAGE: &str = "openapi-spec-validator>=0.7,<0.10";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One answer of the node.
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

fn send(method: &Method, url: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
    let mut request = client().request(method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().unwrap_or_default();
    let body = if content_type.starts_with("application/json") {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    } else {
        Value::String(format!("<{} bytes of {content_type}>", bytes.len()))
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// Whether an answer is the router's own: no route for the path, or not for the method.
fn is_fallback(answer: &Answer) -> bool {
    answer.status == 405
        || (answer.status == 404
            && answer.body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no such route")))
}

/// The credential the document says an operation needs.
fn credential(operation: &Value) -> Option<&'static str> {
    let security = operation.get("security")?.as_array()?;
    let scheme = security.first()?.as_object()?.keys().next()?.clone();
    match scheme.as_str() {
        "apiKey" => Some(ADMIN),
        "clusterSecret" => Some(SECRET),
        other => panic!("unknown security scheme {other} in {operation}"),
    }
}

/// The validation cannot run here: a failure under CI=true, a loud note elsewhere.
fn not_run(why: &str) -> Option<PathBuf> {
    assert!(
        !is_ci(),
        "CI=true but the OpenAPI validation cannot run: {why}"
    );
    eprintln!("WARNING: OpenAPI validation NOT RUN: {why}");
    None
}

/// The virtual environment's python with the validator, made when needed.
fn python_env() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi-venv");
    let python = venv.join("bin").join("python");
    if imports(&python, NEEDED) {
        return Some(python);
    }
    if let Err(why) = python::make_venv(&venv) {
        return not_run(&why);
    }
    if !imports(&python, NEEDED) {
        eprintln!("openapi test: pip install {PACKAGE}");
        if let Err(why) = python::pip_install(&python, &[PACKAGE]) {
            return not_run(&why);
        }
    }
    if !imports(&python, NEEDED) {
        return not_run(&format!(
            "the environment at {} still lacks one of: {NEEDED}",
            venv.display()
        ));
    }
    Some(python)
}

/// The Rust sources of the workspace outside tests (`#[cfg(test)]` modules cut off).
fn workspace_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(repo())
        .expect("read the repository")
        .flatten()
    {
        let src = entry.path().join("src");
        if entry.path().join("Cargo.toml").exists() && src.is_dir() {
            walk(&src, &mut files);
        }
    }
    walk(&repo().join("src"), &mut files);
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a source");
            let code = match text.find("#[cfg(test)]\nmod ") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            (path, code)
        })
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_the_node_serves() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("openapi");
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [{"name": "admin", "key": ADMIN, "scopes": ["read", "write", "admin"]}]})
            .to_string(),
    )
    .unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let data = dir.path().join("data");
    let server = start_server(
        &data,
        None,
        &[
            "--only-collections",
            &name,
            "--api-keys",
            keys.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let url = &server.url;

    // (a) The document, without a key, is OpenAPI 3.
    let served = send(&Method::GET, &format!("{url}/openapi.json"), None, None);
    assert_eq!(served.status, 200, "{}", served.body);
    let doc = served.body;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi: {version:?}");
    let paths = doc["paths"].as_object().expect("paths");

    // A collection with one vector, so the routes answer their success paths too.
    let admin = Some(ADMIN);
    let created = send(
        &Method::PUT,
        &format!("{url}/collections/{name}"),
        admin,
        Some(&json!({"dimension": 3, "partitions": 2})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let written = send(
        &Method::POST,
        &format!("{url}/collections/{name}/vectors"),
        admin,
        Some(&json!({"upserts": [{"id": "a", "vector": [1.0, 0.0, 0.5], "payload": {"n": 1}}]})),
    );
    assert_eq!(written.status, 200, "{}", written.body);
    let token = written.body["token"].clone();
    let found = send(
        &Method::POST,
        &format!("{url}/collections/{name}/search"),
        admin,
        Some(&json!({"vector": [1.0, 0.0, 0.5], "k": 1, "consistency": {"after": token}})),
    );
    assert_eq!(found.status, 200, "{}", found.body);
    let vector = send(
        &Method::GET,
        &format!("{url}/collections/{name}/vectors/a"),
        admin,
        None,
    );
    assert_eq!(vector.status, 200, "{}", vector.body);
    let range = vector.body["range"].clone();
    let shown = send(
        &Method::GET,
        &format!("{url}/collections/{name}"),
        admin,
        None,
    );
    assert_eq!(shown.status, 200, "{}", shown.body);
    let incarnation = shown.body["incarnation"].as_u64().expect("incarnation");
    let start = range["start"].as_u64().expect("range start");

    // (b) Every operation, with a good request and a bad one (unknown collection, a body
    // of the wrong shape), with the credential it names, then without any.
    let fill = |template: &str, collection: &str, file: &str| {
        template
            .replace("{collection}", collection)
            .replace("{id}", "a")
            .replace("{file}", file)
    };
    let good_body = |method: &str, path: &str| -> Option<Value> {
        Some(match (method, path) {
            ("put", "/collections/{collection}") => json!({"dimension": 3, "partitions": 2}),
            ("post", "/collections/{collection}/vectors") => {
                json!({"upserts": [{"id": "b", "vector": [0.0, 1.0, 0.0]}], "deletes": ["zz"]})
            }
            ("post", "/collections/{collection}/search")
            | ("post", "/internal/collections/{collection}/region-search") => {
                json!({"vector": [1.0, 0.0, 0.5], "k": 2, "tenant": null})
            }
            ("post", "/collections/{collection}/search/batch")
            | ("post", "/internal/collections/{collection}/search-batch") => {
                json!({"vectors": [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], "k": 2, "device": "auto"})
            }
            ("post", "/internal/collections/{collection}/shard-search") => {
                json!({"incarnation": incarnation, "range": range, "vector": [1.0, 0.0, 0.5], "k": 1})
            }
            ("post", "/internal/collections/{collection}/token-floors") => {
                json!({"token": {"0": 0}, "timeout_ms": 1000})
            }
            ("post", "/internal/collections/{collection}/shard-get") => {
                json!({"incarnation": incarnation, "range": range, "id": "a"})
            }
            ("post", "/cluster/collections/{collection}/plan") => {
                json!({"action": "set_tier", "shard": range, "tier": "hot"})
            }
            (_, _) if method == "get" || method == "delete" => return None,
            _ => panic!("no request body known for {method} {path}: add one to this test"),
        })
    };
    let query = |path: &str| {
        if path.ends_with("/snapshot") {
            format!("?incarnation={incarnation}&start={start}")
        } else if path.ends_with("/regions/floors") {
            // One region here: no region's floors to stream (a 400 that says why).
            "?origin=east".to_owned()
        } else {
            String::new()
        }
    };
    let mut answers = Vec::new();
    let mut check = |method: &str, template: &str, operation: &Value, answer: Answer| {
        let what = format!("{} {template}", method.to_uppercase());
        assert!(
            !is_fallback(&answer),
            "{what} got the router's unknown-route answer: {} {}",
            answer.status,
            answer.body
        );
        let documented = &operation["responses"][answer.status.to_string()];
        assert!(
            documented.is_object(),
            "{what} answered {} {}, a status the document does not list",
            answer.status,
            answer.body
        );
        if let Some(content) = documented["content"].as_object() {
            let media = answer.content_type.split(';').next().unwrap_or_default();
            assert!(
                content
                    .keys()
                    .any(|k| k.split(';').next().unwrap_or_default() == media),
                "{what} {} answered {:?}; documented: {:?}",
                answer.status,
                answer.content_type,
                content.keys().collect::<Vec<_>>()
            );
        }
        if answer.content_type.starts_with("application/json") {
            answers.push(json!({"method": method, "path": template,
                                "status": answer.status, "body": answer.body}));
        }
    };
    let mut operations: Vec<(String, String, Value)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .iter()
                .map(|(method, op)| (method.clone(), path.clone(), op.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // The drop last: the other routes need the collection.
    operations.sort_by_key(|(method, _, _)| method == "delete");
    for (method, template, operation) in &operations {
        let verb = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let token = credential(operation);
        let tag = operation["tags"][0].as_str().unwrap_or_default();
        if template.starts_with("/internal/") {
            assert_eq!(tag, "internal", "{method} {template} is internal");
            assert_eq!(token, Some(SECRET), "{method} {template} needs the secret");
        }
        // Every route but the open ones names its scope: the gate knows it.
        if let Some(security) = operation.get("security") {
            let scopes = &security[0]["apiKey"];
            assert!(
                scopes.is_null() || scopes.as_array().is_some_and(|s| s.len() == 1),
                "{method} {template}: a route the gate does not know ({security})"
            );
        }
        // Without a credential: a documented 401 where one is needed.
        let bare = send(
            &verb,
            &format!(
                "{url}{}{}",
                fill(template, &name, "app.js"),
                query(template)
            ),
            None,
            good_body(method, template).as_ref(),
        );
        if token.is_some() {
            assert_eq!(bare.status, 401, "{method} {template} without a key");
        } else {
            assert_ne!(bare.status, 401, "{method} {template} is open");
        }
        check(method, template, operation, bare);
        // Bad: a collection that does not exist, a body of the wrong shape.
        let bad_body = good_body(method, template).map(|_| json!({"bogus": true}));
        let bad = send(
            &verb,
            &format!("{url}{}", fill(template, "no-such-collection", "nope.txt")),
            token,
            bad_body.as_ref(),
        );
        if template.contains('{') || bad_body.is_some() {
            assert!(bad.status >= 400, "{method} {template} bad: {}", bad.status);
        }
        check(method, template, operation, bad);
        // Good.
        let good = send(
            &verb,
            &format!(
                "{url}{}{}",
                fill(template, &name, "app.js"),
                query(template)
            ),
            token,
            good_body(method, template).as_ref(),
        );
        if template == "/internal/regions/floors" {
            // A node of one region merges no other region: the stream is refused, as
            // documented (tests/regions_kafka.rs reads it between two regions).
            assert_eq!(good.status, 400, "{method} {template}: {}", good.body);
            check(method, template, operation, good);
            continue;
        }
        assert!(
            good.status < 300,
            "{method} {template}: {} {}",
            good.status,
            good.body
        );
        check(method, template, operation, good);
    }

    // The fallbacks: a made-up path and a known path with another method.
    for (verb, path) in [
        (Method::GET, "/no-such-route"),
        (Method::POST, "/collections/x/y/z"),
        (Method::GET, "/ui/a/b"),
    ] {
        let answer = send(&verb, &format!("{url}{path}"), admin, None);
        assert_eq!(answer.status, 404, "{verb} {path}: {}", answer.body);
        assert!(is_fallback(&answer), "{verb} {path}: {}", answer.body);
    }
    for (verb, path) in [
        (Method::DELETE, "/health"),
        (Method::POST, "/collections"),
        (Method::PUT, "/openapi.json"),
    ] {
        let answer = send(&verb, &format!("{url}{path}"), admin, None);
        assert_eq!(answer.status, 405, "{verb} {path}: {}", answer.body);
        assert!(
            answer.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("not allowed")),
            "{verb} {path}: {}",
            answer.body
        );
    }

    // (c) No route past the document: nothing in the workspace registers one except
    // through OpenApiRouter::routes (utoipa-axum's `routes!`), and only the node's
    // router (src/openapi.rs) sets the fallbacks.
    let mut past = Vec::new();
    for (path, code) in workspace_sources() {
        let relative = path
            .strip_prefix(repo())
            .unwrap_or(&path)
            .display()
            .to_string();
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            let mut found: Vec<&str> = [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".fallback_service(",
                "routing::get",
                "routing::post",
                "routing::put",
                "routing::delete",
                "routing::any",
                "routing::on(",
            ]
            .into_iter()
            .filter(|p| line.contains(p))
            .collect();
            if line.contains(".fallback(") && relative != "src/openapi.rs" {
                found.push(".fallback(");
            }
            // A plain axum Router (OpenApiRouter::new() is fine).
            let plain = line
                .match_indices("Router::new(")
                .any(|(at, _)| !line[..at].ends_with("OpenApi"))
                || line.contains("Router::<");
            if plain {
                found.push("Router::new(");
            }
            if !found.is_empty() {
                past.push(format!("{relative}:{}: {found:?}: {line}", n + 1));
            }
        }
    }
    assert!(
        past.is_empty(),
        "routes registered past utoipa-axum's OpenApiRouter (the document would lack them):\n{}",
        past.join("\n")
    );

    // The validator: the document is OpenAPI 3, and every JSON answer matches its schema.
    let Some(python) = python_env() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let doc_file = work.path().join("openapi.json");
    let answers_file = work.path().join("answers.json");
    std::fs::write(&doc_file, doc.to_string()).unwrap();
    std::fs::write(&answers_file, Value::Array(answers).to_string()).unwrap();
    let out = Command::new(&python)
        .arg(repo().join("tests/openapi_check.py"))
        .arg(&doc_file)
        .arg(&answers_file)
        .output()
        .expect("run tests/openapi_check.py");
    assert!(out.status.success(), "{}", show(&out));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
