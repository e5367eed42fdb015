//! `hektor bench ...` and `hektor dataset ...`: the benchmarks and the data-set generator
//! are the `hektor-bench` executable (`bench/`), which this binary does not link. These
//! commands only run the `hektor-bench` beside this executable with the same arguments
//! (`hektor bench X ...` = `hektor-bench X ...`, `hektor dataset ...` =
//! `hektor-bench dataset ...`), replacing this process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// Replace this process with `hektor-bench ARGS...`; returns only on failure.
pub fn exec(args: Vec<OsString>) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let bench = me.with_file_name(format!("hektor-bench{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bench.is_file(),
        "the benchmarks and `dataset generate` are in the hektor-bench executable, and there is \
         none beside {}: build it with `cargo build --release --bin hektor-bench` (a plain \
         `cargo build --release` builds both) and run `hektor-bench ...`",
        me.display()
    );
    let err = std::process::Command::new(&bench).args(args).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", bench.display())))
}
