//! End-to-end tests of `hektor serve` on the embedded log, through the HTTP API of the
//! real binary: recall on real embeddings, read-your-writes, crash safety (kill -9 during
//! a bulk load), and every validation rule's status.

mod common;
mod scenarios;

use common::*;

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
