//! The per-shard call (`POST /internal/.../shard-search`) is a door: what it accepts is
//! checked as strictly as a public search, before any shard is touched.

use hektor_query::router::{ShardSearch, MAX_CONSISTENCY_TIMEOUT, MAX_EFFORT, MAX_K};
use hektor_query::QueryError;
use hektor_topics::record::RingRange;

fn call() -> ShardSearch {
    serde_json::from_value(serde_json::json!({
        "incarnation": 1,
        "range": {"start": 0, "end": null},
        "vector": [1.0, 0.0, 0.0],
        "k": 10,
    }))
    .expect("a minimal per-shard call parses")
}

fn refused(c: &ShardSearch) -> String {
    match c.check(3) {
        Err(QueryError::Invalid(message)) => message,
        other => panic!("expected a 422-class refusal, got {other:?}"),
    }
}

#[test]
fn a_good_call_passes() {
    assert!(call().check(3).is_ok());
}

#[test]
fn k_effort_wait_vector_and_filter_are_bounded() {
    let mut c = call();
    c.k = 1_000_000_000_000_000;
    assert!(refused(&c).contains("k must be"));
    c.k = 0;
    assert!(refused(&c).contains("k must be"));
    c.k = MAX_K;
    assert!(c.check(3).is_ok());

    let mut c = call();
    c.effort = Some(MAX_EFFORT + 1);
    assert!(refused(&c).contains("effort"));

    let mut c = call();
    c.timeout_ms = Some(MAX_CONSISTENCY_TIMEOUT.as_millis() as u64 + 1);
    assert!(refused(&c).contains("timeout_ms"));

    let mut c = call();
    c.vector = vec![1.0];
    assert!(refused(&c).contains("dimensions"));
    c.vector = vec![1.0, f32::NAN, 0.0];
    assert!(refused(&c).contains("vector[1]"));

    let mut c = call();
    c.filter = Some(RingRange {
        start: 10,
        end: Some(10),
    });
    assert!(refused(&c).contains("filter"));
}

#[test]
fn refusals_are_client_errors() {
    let mut c = call();
    c.k = 0;
    assert_eq!(c.check(3).unwrap_err().status(), 422);
}
