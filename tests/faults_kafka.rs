//! Faults on the real broker: `hektor bench faults --json --quick` (the real binary, which
//! starts three node processes per scenario, kills one with SIGKILL under steady writes
//! and read-your-writes searches, and checks the history) for a data node and for the
//! controller. What users rely on: no acknowledged write lost or duplicated, no search
//! that answers without the write its token covers, and with replication 2 no failed
//! search when a data node dies. Times (recovery) are reported, not asserted.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The whole bench may take this long (two quick scenarios take ~45 s).
const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn killed_nodes_lose_no_write_and_break_no_token() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_hektor"))
        .args(["bench", "faults", "--json", "--quick"])
        .args([
            "--scenario",
            "kill-data-node",
            "--scenario",
            "kill-controller",
        ])
        .env("HEKTOR_KAFKA_BROKERS", &brokers)
        .env("HEKTOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hektor bench faults");
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the bench") {
            break status;
        }
        if began.elapsed() > LIMIT {
            // SIGTERM: the bench stops its nodes before it exits.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            panic!("bench faults ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the bench's output");
    assert!(status.success(), "bench faults failed ({status}): {out}");
    let reports: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for r in &reports {
        eprintln!("{r}");
    }
    for scenario in ["kill-data-node", "kill-controller"] {
        let r = reports
            .iter()
            .find(|r| r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no report for {scenario}: {out}"));
        let n = |k: &str| {
            r[k].as_u64()
                .unwrap_or_else(|| panic!("{scenario}: no `{k}` in {r}"))
        };
        assert!(n("writes_acked") > 50, "{scenario}: too few writes: {r}");
        assert!(n("reads") > 50, "{scenario}: too few reads: {r}");
        assert_eq!(n("writes_lost"), 0, "{scenario}: lost writes: {r}");
        assert_eq!(n("writes_duplicated"), 0, "{scenario}: duplicates: {r}");
        assert_eq!(n("writes_phantom"), 0, "{scenario}: phantom ids: {r}");
        assert_eq!(
            n("token_violations"),
            0,
            "{scenario}: token violations: {r}"
        );
        assert!(
            n("victim_shards") > 0,
            "{scenario}: the victim held nothing: {r}"
        );
        assert!(
            r["recovery_s"].is_number(),
            "{scenario}: never recovered: {r}"
        );
        if scenario == "kill-data-node" {
            assert_eq!(
                n("reads_failed"),
                0,
                "{scenario}: failed reads (R = 2): {r}"
            );
        }
    }
}
