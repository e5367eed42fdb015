//! The `plan_catalog` fuzz target: AFL++ persistent mode over [`hektor_fuzz::plan_catalog::run`] (see that
//! module for what it feeds the bytes to, and docs/fuzzing.md for how to run it).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        hektor_fuzz::plan_catalog::run(data);
    });
}
