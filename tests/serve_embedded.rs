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
