//! End-to-end tests of `hektor serve` on the embedded log, through the HTTP API of the
//! real binary: recall on real embeddings, read-your-writes, crash safety (kill -9 during
//! a bulk load), and every validation rule's status.

mod common;
mod scenarios;

use common::*;

#[test]
fn recall_at_10_on_real_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    scenarios::recall_at_10(&server, "recall");
}

#[test]
fn read_your_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    scenarios::read_your_writes(&server, "ryw");
}

#[test]
fn bad_input_gets_the_documented_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    scenarios::bad_input(&server, "bad");
}

#[test]
fn kill_9_during_bulk_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::crash_during_load(dir.path(), None, "crash");
}

#[test]
fn tenant_search_stays_in_the_tenant_and_deletes_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None, &[]);
    scenarios::tenant_and_delete(&server, "tenant");
}
