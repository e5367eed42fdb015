//! The benches are their own executable: `hektor-bench` runs them, and `hektor bench ...`
//! (and `hektor dataset ...`) hand over to the `hektor-bench` beside `hektor` with the
//! same arguments; a bench that starts nodes and cannot find `hektor` says so.

use std::process::Command;

use serde_json::Value;

/// JSON lines of a successful run of `cmd`.
fn json_lines(cmd: &mut Command) -> Vec<Value> {
    let out = cmd
        .env("HEKTOR_LOG", "warn")
        .output()
        .expect("run the bench");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn hektor_bench_runs_directly_and_through_hektor_with_the_same_output_shape() {
    let args = ["placement", "--keys", "2000", "--json"];
    let direct = json_lines(Command::new(env!("CARGO_BIN_EXE_hektor-bench")).args(args));
    let forwarded = json_lines(
        Command::new(env!("CARGO_BIN_EXE_hektor"))
            .arg("bench")
            .args(args),
    );
    assert!(!direct.is_empty());
    assert_eq!(direct.len(), forwarded.len());
    // Same seed, same keys: the moved fractions agree (timings do not).
    let moved = |lines: &[Value]| -> Vec<Value> {
        lines.iter().map(|l| l["moved_fraction"].clone()).collect()
    };
    assert_eq!(moved(&direct), moved(&forwarded));
}

#[test]
fn a_missing_hektor_executable_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hektor-bench"))
        .args(["placement", "--keys", "100", "--json"])
        .arg("--hektor")
        .arg(tmp.path().join("no-such-hektor"))
        .env("HEKTOR_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-hektor"), "{err}");
}
