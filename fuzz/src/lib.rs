//! hektor's fuzz harnesses, for cargo-afl and AFL++ (see `docs/fuzzing.md`).
//!
//! This crate owns the harness functions, one module per target, which the binaries in
//! `src/bin/` hand to `afl::fuzz!`, and the seed corpus they start from. It is kept out of
//! the root workspace (its own `[workspace]`, its own `target/`), and built with
//! `cargo afl build --release` by `scripts/fuzz.sh`. The library itself needs no AFL:
//! `cargo test --lib` here runs every seed and every committed corpus file through its
//! harness (the binaries link only under `cargo afl`).
//!
//! - [`record`]: log record values (every record kind, both encodings).
//! - [`http_bodies`]: the JSON and bulk bodies of the HTTP API.
//! - [`plan_catalog`]: the catalog, plan and nodes topics, replayed by the real readers.
//! - [`memlog`]: the in-memory log those readers run over.
//! - [`corpus`]: the seeds.

pub mod corpus;
pub mod http_bodies;
pub mod memlog;
pub mod plan_catalog;
pub mod record;

/// Run one input through the harness of `target` (for replaying files without AFL).
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "record" => record::run(data),
        "http_bodies" => http_bodies::run(data),
        "plan_catalog" => {
            plan_catalog::run(data);
        }
        _ => return false,
    }
    true
}

/// The fuzz targets.
pub const TARGETS: [&str; 3] = ["record", "http_bodies", "plan_catalog"];
