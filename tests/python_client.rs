//! The Python client (`clients/python`, package `hektor_client`) against the real binary:
//! `hektor serve` on the embedded log with API keys and a gRPC listener (`--grpc-listen`),
//! the package built and installed the way `pip install ./clients/python` does it, its
//! pytest suite run with `HEKTOR_URL`, `HEKTOR_GRPC` and `HEKTOR_API_KEY` pointing at the
//! node (and `HEKTOR_READ_ONLY_KEY`, a key with the read scope only), and the example that
//! loads the shipped sample. Every test of the suite must run: the gRPC ones too, and those
//! of a write level not reached in time, against a second node (`HEKTOR_CUT_OFF_URL` and
//! `HEKTOR_CUT_OFF_GRPC`, region `west` mirroring a region `east` that does not exist, so
//! its `quorum` and `sync` writes always time out).
//!
//! Python comes from a virtual environment under `target/tmp` (made once, with the
//! interpreter's own packages visible; pip adds httpx, and pytest, numpy, grpcio,
//! setuptools or wheel where missing). Without python3, or when pip cannot fetch what is
//! missing, the test says loudly that it did not run; under `CI=true` it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::python::{imports, show};
use common::*;
use serde_json::json;

const KEY: &str = "python-client-admin-key-5e1f0c9b2d";
const READ_KEY: &str = "python-client-read-only-key-0c44d1";
const SECRET: &str = "python-client-cluster-secret-77aa0e";

/// What the suite imports, checked in the environment's Python (`grpc` must be grpcio,
/// not a directory of that name such as this repository's `grpc/`).
const NEEDED: &str = "import httpx, pytest, numpy, wheel, setuptools, grpc; \
                      assert int(setuptools.__version__.split('.')[0]) >= 61; \
                      grpc.insecure_channel";

/// What pip installs when its check (Python code) fails.
const PACKAGES: &[(&str, &str)] = &[
    ("import httpx", "httpx>=0.27,<1"),
    ("import pytest", "pytest>=7"),
    ("import numpy", "numpy>=1.21"),
    ("import grpc; grpc.insecure_channel", "grpcio>=1.59"),
    ("import setuptools", "setuptools>=61"),
    ("import wheel", "wheel"),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The test cannot run here: a failure under CI=true, a loud note elsewhere.
fn not_run(why: &str) -> Option<PathBuf> {
    assert!(
        !is_ci(),
        "CI=true but the Python client test cannot run: {why}"
    );
    eprintln!("WARNING: Python client test NOT RUN: {why}");
    None
}

/// The virtual environment's python, made and completed when needed.
fn python_env() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-client-venv");
    let python = venv.join("bin").join("python");
    if imports(&python, NEEDED) {
        return Some(python);
    }
    // An environment that runs only lacks a package (one added to PACKAGES): pip adds it.
    if !imports(&python, "pass") {
        if let Err(why) = python::make_venv(&venv) {
            return not_run(&why);
        }
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(check, _)| !imports(&python, check))
        .map(|(_, spec)| *spec)
        .collect();
    if !missing.is_empty() {
        eprintln!("python client test: pip install {}", missing.join(" "));
        if let Err(why) = python::pip_install(&python, &missing) {
            return not_run(&why);
        }
    }
    if !imports(&python, NEEDED) {
        return not_run(&format!(
            "the environment at {} still lacks one of: {NEEDED}",
            venv.display()
        ));
    }
    Some(python)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Build the package from a copy of its sources (a build leaves `build/` and
/// `*.egg-info` behind) and install it into `site`, offline, as `pip install` would.
fn install_package(python: &Path, work: &Path) -> PathBuf {
    let source = repo().join("clients/python");
    let copy = work.join("src");
    for file in ["pyproject.toml", "README.md"] {
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(source.join(file), copy.join(file)).unwrap();
    }
    copy_dir(&source.join("hektor_client"), &copy.join("hektor_client"));
    let site = work.join("site");
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
        ])
        .arg(&site)
        .arg(&copy)
        .output()
        .expect("run pip install");
    assert!(
        out.status.success(),
        "pip install ./clients/python failed: {}",
        show(&out)
    );
    for file in [
        "__init__.py",
        "py.typed",
        "_client.py",
        "_grpc.py",
        "_proto.py",
    ] {
        assert!(
            site.join("hektor_client").join(file).exists(),
            "the installed package lacks hektor_client/{file}"
        );
    }
    site
}

#[test]
fn python_client_suite_and_example_against_a_real_node() {
    let Some(python) = python_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let site = install_package(&python, &dir.path().join("pkg"));

    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"keys": [
            {"name": "python", "key": KEY, "scopes": ["read", "write", "admin"]},
            {"name": "python-read", "key": READ_KEY, "scopes": ["read"]},
        ]})
        .to_string(),
    )
    .unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let server = start_server(
        &dir.path().join("data"),
        None,
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
            "--grpc-listen",
            &grpc,
        ],
    );

    // A node whose other region never confirms a write (there is no region `east`): the
    // suite's checks of a write level not reached in time (504, ReplicationTimeout).
    let cut_off_grpc = format!("127.0.0.1:{}", free_port());
    let cut_off = start_server(
        &dir.path().join("data-cut-off"),
        None,
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
            "--grpc-listen",
            &cut_off_grpc,
            "--region",
            "west",
            "--mirror-regions",
            "east",
        ],
    );

    // Run from a directory holding no sources, so `hektor_client` is the installed one.
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let python_cmd = || {
        let mut cmd = Command::new(&python);
        cmd.current_dir(&run_dir)
            .env("PYTHONPATH", &site)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HEKTOR_URL", &server.url)
            .env("HEKTOR_GRPC", &grpc)
            .env("HEKTOR_API_KEY", KEY)
            .env("HEKTOR_READ_ONLY_KEY", READ_KEY)
            .env("HEKTOR_CUT_OFF_URL", &cut_off.url)
            .env("HEKTOR_CUT_OFF_GRPC", &cut_off_grpc);
        cmd
    };
    let origin = python_cmd()
        .args(["-c", "import hektor_client; print(hektor_client.__file__)"])
        .output()
        .expect("run python");
    let origin = String::from_utf8_lossy(&origin.stdout);
    assert!(
        Path::new(origin.trim()).starts_with(&site),
        "hektor_client came from {origin:?}, not the installed {}",
        site.display()
    );

    let tests = repo().join("clients/python/tests");
    let out = python_cmd()
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"])
        .arg(&tests)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{}", show(&out));
    assert!(out.status.success(), "pytest failed: {}", show(&out));
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "every test of the suite must run here: {summary}"
    );
    // The gRPC tests and those of write levels ran and passed (-rA lists every test with
    // its outcome).
    for test in [
        "test_grpc.py::test_grpc_and_http_give_identical_hits",
        "test_grpc.py::test_writes_over_grpc_are_searchable",
        "test_grpc.py::test_grpc_errors_are_the_http_errors",
        "test_grpc.py::test_async_client_over_grpc",
        "test_grpc.py::test_write_levels_over_grpc_are_the_http_ones",
        "test_grpc.py::test_a_write_level_not_reached_over_grpc_is_the_http_one",
        "test_server.py::test_a_write_level_not_reached_is_a_replication_timeout",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("PASSED") && l.contains(test)),
            "{test} did not pass here: {}",
            show(&out)
        );
    }

    let example = python_cmd()
        .arg(repo().join("clients/python/examples/sample_search.py"))
        .args([
            "--collection",
            "sample-example",
            "--drop",
            "--min-recall",
            "0.9",
        ])
        .output()
        .expect("run the example");
    println!("{}", show(&example));
    assert!(
        example.status.success(),
        "sample_search.py failed: {}",
        show(&example)
    );
    let printed = String::from_utf8_lossy(&example.stdout);
    assert!(
        printed.contains("upserted 3000 vectors") && printed.contains("recall@10 over 100 queries"),
        "{printed}"
    );
}
