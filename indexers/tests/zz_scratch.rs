use std::time::Instant;
use hektor_indexers::dataset::*;
#[test]
fn scratch() {
    let ds = Dataset::load(&data_dir(), None).unwrap();
    let t = Instant::now();
    let q = &ds.queries[..ds.dim * 50];
    let _ = exact_ground_truth(&ds.base, q, ds.dim, 10);
    eprintln!("in-memory brute force: {:.2} ms/query", t.elapsed().as_secs_f64() * 1000.0 / 50.0);
}
