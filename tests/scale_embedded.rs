//! `hektor-bench scale` through the real executables, small: a set generated from the sample
//! shipped in the repo, one `hektor serve` child on the embedded log, and what users of
//! the bench rely on — every phase reported, recall over HTTP, restarts that come back
//! with the same answers and never answer an empty 200 meanwhile. No timing assertions.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// 20,000 vectors in a release build; fewer in a debug build, whose graph builds are
/// many times slower.
fn vectors() -> usize {
    if cfg!(debug_assertions) {
        4_000
    } else {
        20_000
    }
}

#[test]
fn scale_bench_reports_every_phase_with_recall_and_clean_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/debian-minilm-384-sample");
    let n = vectors().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hektor-bench"))
        .args(["scale", "--json", "--vectors", &n])
        .arg("--hektor")
        .arg(env!("CARGO_BIN_EXE_hektor"))
        .arg("--source")
        .arg(&sample)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg("--work-dir")
        .arg(tmp.path().join("work"))
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run hektor-bench scale");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bench scale did not finish within 600 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = reader.join().unwrap().unwrap();
    assert!(
        status.success(),
        "bench scale failed ({status}); stdout:\n{text}"
    );

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let phase = |p: &str| -> Vec<&Value> { lines.iter().filter(|l| l["phase"] == p).collect() };
    for p in ["load", "indexed", "search", "restart", "move"] {
        assert!(!phase(p).is_empty(), "no `{p}` line in:\n{text}");
    }
    let n: u64 = vectors() as u64;
    for p in ["load", "indexed", "restart"] {
        for l in phase(p) {
            assert_eq!(l["vectors"], n, "{l}");
            for key in ["seconds", "rss_mb", "disk_mb", "raw_mb"] {
                assert!(l[key].as_f64().is_some(), "`{key}` missing in {l}");
            }
        }
    }
    assert!(phase("load")[0]["vectors_per_s"].as_f64().unwrap() > 0.0);

    let http: Vec<&Value> = phase("search")
        .into_iter()
        .filter(|l| l["engine"] == "hektor-http")
        .collect();
    assert_eq!(http.len(), 1, "{text}");
    let recall = http[0]["recall_at_10"].as_f64().unwrap();
    assert!(recall >= 0.9, "recall@10 over HTTP {recall}: {}", http[0]);
    for key in ["qps", "p50_ms", "p99_ms"] {
        assert!(
            http[0][key].as_f64().is_some_and(|v| v > 0.0),
            "{}",
            http[0]
        );
    }
    assert!(
        phase("search")
            .iter()
            .any(|l| l["via"] == "in-process" && l["recall_at_10"].is_number()),
        "no in-process search line in:\n{text}"
    );

    let restarts = phase("restart");
    let hows: Vec<&str> = restarts.iter().filter_map(|l| l["how"].as_str()).collect();
    assert_eq!(hows, ["sigterm", "kill-9"], "{text}");
    for r in restarts {
        assert_eq!(r["matched"], true, "{r}");
        assert!(r["seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
        assert_eq!(r["empty_answers"], 0, "an empty 200 during a restart: {r}");
        // The graphs were saved (at SIGTERM, or the journal since) and loaded, not rebuilt.
        assert_eq!(r["graphs_rebuilt"], 0, "{r}");
        assert!(r["graphs_loaded"].as_u64().is_some_and(|g| g >= 1), "{r}");
        let after = r["recall_at_10"].as_f64().unwrap();
        assert!(after >= 0.9, "recall@10 after the restart {after}: {r}");
    }
    assert!(
        lines.iter().any(|l| l["goal"].is_string()),
        "no goal lines in:\n{text}"
    );
}
