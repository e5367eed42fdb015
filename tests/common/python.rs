//! A Python virtual environment for the tests that drive Python (the client's suite, the
//! OpenAPI validator): made once under the target directory, completed by pip when a
//! package is missing. Each function says why it could not, and the test decides
//! whether that fails the run (under `CI=true`) or is a loud note.

use std::path::Path;
use std::process::{Command, Output};

/// A process's exit and output, for a failure message.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `code` runs in `python`, from a directory holding no Python sources (from the
/// repository's root `import grpc` would find its `grpc/` directory).
pub fn imports(python: &Path, code: &str) -> bool {
    Command::new(python)
        .args(["-c", code])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Make (or remake) the environment at `venv` with `python3 -m venv`.
pub fn make_venv(venv: &Path) -> Result<(), String> {
    match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("python3 is not installed".into()),
    }
    // --copies: the environment keeps working if its links into the interpreter's
    // installation go; --system-site-packages: what the machine already has is used.
    let made = Command::new("python3")
        .args([
            "-m",
            "venv",
            "--clear",
            "--copies",
            "--system-site-packages",
        ])
        .arg(venv)
        .output()
        .map_err(|e| format!("running python3 -m venv: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv {} failed: {}",
            venv.display(),
            show(&made)
        ));
    }
    Ok(())
}

/// `pip install` `specs` into the environment of `python`.
pub fn pip_install(python: &Path, specs: &[&str]) -> Result<(), String> {
    let pip = Command::new(python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(specs)
        .output()
        .map_err(|e| format!("running pip: {e}"))?;
    if !pip.status.success() {
        return Err(format!(
            "pip install {} failed: {}",
            specs.join(" "),
            show(&pip)
        ));
    }
    Ok(())
}
