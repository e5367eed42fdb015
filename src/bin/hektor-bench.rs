//! The `hektor-bench` executable: hektor's benchmarks and data-set generator
//! (`hektor-bench <log|search|placement|move|kinetic|faults|scale|dataset> ...`), all in
//! the `hektor-bench` library (`bench/`). It runs `hektor` nodes as children from the
//! `hektor` executable beside it (or `--hektor PATH`), which links none of this code.

fn main() -> anyhow::Result<()> {
    hektor_bench::main()
}
