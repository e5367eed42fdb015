//! End-to-end tests of `hektor serve` on the embedded log, through the HTTP API of the
//! real binary: recall on real embeddings, read-your-writes, crash safety (kill -9 during
//! a bulk load), and every validation rule's status.

mod common;
mod scenarios;

use common::*;
use serde_json::{json, Value};

#[test]
fn recall_at_10_on_real_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("recall");
    let server = start_server(dir.path(), None, &["--only-collections", &name]);
    scenarios::recall_at_10(&server, &name);
}

#[test]
fn read_your_writes() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("ryw");
    let server = start_server(dir.path(), None, &["--only-collections", &name]);
    scenarios::read_your_writes(&server, &name);
}

#[test]
fn bad_input_gets_the_documented_status() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("bad");
    let server = start_server(dir.path(), None, &["--only-collections", &name]);
    scenarios::bad_input(&server, &name);
}

#[test]
fn kill_9_during_bulk_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::crash_during_load(dir.path(), None, &unique("crash"));
}

#[test]
fn tenant_search_stays_in_the_tenant_and_deletes_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("tenant");
    let server = start_server(dir.path(), None, &["--only-collections", &name]);
    scenarios::tenant_and_delete(&server, &name);
}

#[test]
fn ready_and_health_tell_the_truth_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("ready");
    let server = start_server(dir.path(), None, &["--only-collections", &name]);
    let url = &server.url;
    let (status, body) = get(&format!("{url}/health"));
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
    create_collection(url, &name, 3, 4);
    // Every shard the map gives this node opens and catches up; until then /ready is a
    // 503 that names what it waits for.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let (status, body) = get(&format!("{url}/ready"));
        if status == 200 && body["shards"] == 4 {
            break body;
        }
        // Before the first map the node holds nothing (ready, 0 shards); after it, a 503
        // names the shards still opening or catching up.
        if status != 200 {
            assert_eq!(status, 503, "{body}");
            assert!(
                body["waiting"].as_array().is_some_and(|w| !w.is_empty()),
                "a 503 says what it waits for: {body}"
            );
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(body["ready"], true);
    assert_eq!(body["shards"], 4, "{body}");
    assert_eq!(body["failing"], serde_json::json!([]));
}

#[test]
fn the_same_id_of_two_tenants_is_two_vectors() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::same_id_two_tenants(dir.path(), None, &unique("twotenants"));
}

/// A `crdt` collection merges an id's payload per field (a later write's fields join the
/// earlier ones', `null` removes one for good, a delete clears them); an `lww` one keeps
/// the newest write whole. Its vectors topic keeps every write (no compaction), so a
/// shard rebuilt from the log has the same fields.
#[test]
fn crdt_payloads_merge_per_field_and_lww_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    let url = server.url.clone();
    for (name, merge) in [("crdt", "crdt"), ("lww", "lww")] {
        let (status, body) = put(
            &format!("{url}/collections/{name}"),
            &json!({"dimension": 2, "partitions": 1, "merge": merge}),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body.get("merge").and_then(|m| m.as_str()).unwrap_or("lww"),
            merge,
            "{body}"
        );
    }
    let up = |vector: [f32; 2], payload: Value| json!({"upserts": [{"id": "x", "vector": vector, "payload": payload}]});
    for name in ["crdt", "lww"] {
        write(
            &url,
            name,
            up([1.0, 0.0], json!({"title": "a", "lang": "en"})),
        );
        write(
            &url,
            name,
            up([0.0, 1.0], json!({"lang": "de", "tags": ["t"]})),
        );
    }
    let got = wait_payload(
        &url,
        "crdt",
        json!({"title": "a", "lang": "de", "tags": ["t"]}),
    );
    assert_eq!(
        got["vector"],
        json!([0.0, 1.0]),
        "the newest vector wins: {got}"
    );
    wait_payload(&url, "lww", json!({"lang": "de", "tags": ["t"]}));
    // null removes a field; a later write without it does not bring it back.
    write(&url, "crdt", up([0.0, 1.0], json!({"title": null})));
    write(&url, "crdt", up([0.0, 1.0], json!({"n": 1})));
    wait_payload(&url, "crdt", json!({"lang": "de", "tags": ["t"], "n": 1}));
    // Payloads of a crdt collection are objects, as everywhere.
    let (status, body) = post(
        &format!("{url}/collections/crdt/vectors"),
        &json!({"upserts": [{"id": "y", "vector": [1.0, 0.0], "payload": [1, 2]}]}),
    );
    assert_eq!(status, 422, "{body}");
    // Restarted and rebuilt from the log alone: the same merged fields.
    drop(server);
    std::fs::remove_dir_all(dir.path().join("shards")).unwrap();
    let server = start_server(dir.path(), None, &[]);
    let url = server.url.clone();
    wait_payload(&url, "crdt", json!({"lang": "de", "tags": ["t"], "n": 1}));
    // A delete clears every field: an upsert after it starts afresh.
    write(&url, "crdt", json!({"deletes": [{"id": "x"}]}));
    write(&url, "crdt", up([1.0, 1.0], json!({"fresh": true})));
    wait_payload(&url, "crdt", json!({"fresh": true}));
}

fn write(url: &str, name: &str, body: Value) {
    let (status, body) = post(&format!("{url}/collections/{name}/vectors"), &body);
    assert_eq!(status, 200, "{body}");
}

/// `x` of collection `name` once its payload is `want` (bounded wait: writes apply
/// asynchronously).
fn wait_payload(url: &str, name: &str, want: Value) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, got) = get(&format!("{url}/collections/{name}/vectors/x"));
        if status == 200 && got["payload"] == want {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: {status} {got}, want {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A collection's `write_level` is the default of its writes (`sync` here: answered with
/// the regions that have the write, this one alone on one region); a write's own
/// `?replication=` overrides it; a bad level is refused.
#[test]
fn a_collections_write_level_is_the_default_its_writes_can_override() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    let url = server.url.clone();
    let (status, body) = put(
        &format!("{url}/collections/s"),
        &json!({"dimension": 2, "partitions": 1, "write_level": "sync"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["write_level"], "sync", "{body}");
    let one = json!({"upserts": [{"id": "x", "vector": [1.0, 0.0]}]});
    let (status, body) = post(&format!("{url}/collections/s/vectors"), &one);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["replicated"]["regions"]
            .as_array()
            .is_some_and(|r| r.len() == 1),
        "a sync write says which regions have it: {body}"
    );
    let (status, body) = post(
        &format!("{url}/collections/s/vectors?replication=async"),
        &one,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.get("replicated").is_none(), "async: {body}");
    let (status, body) = put(
        &format!("{url}/collections/t"),
        &json!({"dimension": 2, "write_level": "eventually"}),
    );
    assert_eq!(status, 400, "{body}");
}
