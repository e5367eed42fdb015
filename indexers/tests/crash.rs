//! Crash safety: a child process (this test binary, re-executed) applies batches to a
//! shard and builds its index now and then; the parent kills it with SIGKILL at random
//! moments, reopens the shard, and checks that `next_offset` sits exactly on a batch
//! boundary at or after the last batch the child reported committed, and that every
//! op below it was applied exactly once (last writer by offset wins, nothing missing,
//! nothing duplicated). Then it resumes from `next_offset` and checks the final state.
//! Run once with the arroy engine (its index lives in LMDB) and once with the hot engine,
//! whose child also saves its graph's file after every build, so kills land in the middle
//! of saves: the reopened graph must agree with LMDB (every live vector is found by
//! itself, none deleted is found).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hektor_indexers::{EngineKind, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::Distance;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 32;
const IDS: u64 = 700;
const BATCH: u64 = 40;
const TOTAL: u64 = 6_000;
const CHILD_ENV: &str = "HEKTOR_CRASH_CHILD_DIR";
const ENGINE_ENV: &str = "HEKTOR_CRASH_ENGINE";

fn vector(offset: u64) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((offset as f32) * 0.37 + i as f32 * 0.11).sin() + 0.01)
        .collect()
}

/// The op at `offset`: upsert or (every 11th) delete of id `v{offset % IDS}`, hlc = offset.
fn op(offset: u64) -> ShardOp {
    let id = format!("v{}", offset % IDS);
    if offset % 11 == 5 {
        ShardOp::Delete {
            id,
            tenant: None,
            hlc: Hlc(offset),
        }
    } else {
        ShardOp::Upsert {
            id,
            tenant: None,
            ring: offset.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            vector: vector(offset),
            payload: Some(serde_json::json!({ "offset": offset })),
            hlc: Hlc(offset),
        }
    }
}

fn open(dir: &Path, engine: EngineKind) -> Shard {
    let mut config = ShardConfig::new(DIM, Distance::Cosine, engine);
    config.arroy.n_trees = Some(4);
    let shard = Shard::open(dir, config).expect("open shard");
    assert_eq!(shard.engine(), engine);
    shard
}

fn apply_from(shard: &Shard, end: u64, mut on_commit: impl FnMut(u64)) {
    let mut batches = 0u64;
    while shard.next_offset() < end {
        let start = shard.next_offset();
        let ops: Vec<(u64, ShardOp)> = (start..(start + BATCH).min(end))
            .map(|o| (o, op(o)))
            .collect();
        let report = shard.apply(&ops).expect("apply");
        on_commit(report.next_offset);
        batches += 1;
        if batches.is_multiple_of(7) {
            shard.build_index().expect("build");
            // Only the hot engine has a file to save.
            shard.checkpoint(true, false).expect("checkpoint");
        }
    }
}

/// The child: only does something when re-executed by the parent.
#[test]
#[ignore = "run by crash_kill_9_never_loses_or_duplicates_a_write"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let engine = std::env::var(ENGINE_ENV)
        .expect("the engine")
        .parse()
        .unwrap();
    let shard = open(Path::new(&dir), engine);
    apply_from(&shard, TOTAL, |next| println!("committed {next}"));
    println!("finished");
}

/// Expected state after applying offsets `0..next`: for each id, the last op by offset.
fn check(shard: &Shard, next: u64) {
    let mut live = 0;
    for id in 0..IDS {
        let last = (0..next).rev().find(|o| o % IDS == id);
        let got = shard.get(None, &format!("v{id}")).unwrap();
        match last.map(op) {
            Some(ShardOp::Upsert { vector, hlc, .. }) => {
                let got = got.unwrap_or_else(|| panic!("v{id} missing at next_offset {next}"));
                // Stamps here equal offsets; the first is stamped 1 (after the empty
                // floor), so each effective stamp is its offset + 1.
                assert_eq!((got.hlc, got.vector), (Hlc(hlc.0 + 1), vector), "v{id}");
                live += 1;
            }
            _ => assert!(
                got.is_none(),
                "v{id} should be absent at next_offset {next}"
            ),
        }
    }
    assert_eq!(shard.len(), live, "no duplicates, nothing missing");
    // Every live vector is findable (pending or indexed): the newest one always; with the
    // hot engine, every one (its graph came from a file that must agree with LMDB).
    // The vectors lie on a curve with near-duplicates far apart in id: a wide beam, so
    // that a miss means a graph that disagrees with the store, not an approximate search.
    shard.set_search_effort(IDS as usize);
    let newest: Vec<u64> = if shard.engine() == EngineKind::Hnsw {
        // Each id's last op, where it is an upsert.
        (0..IDS)
            .filter_map(|id| (0..next).rev().find(|o| o % IDS == id))
            .filter(|o| o % 11 != 5)
            .collect()
    } else {
        (0..next).rev().find(|o| o % 11 != 5).into_iter().collect()
    };
    for o in newest {
        let hits = shard.search(&vector(o), 1, None).unwrap();
        assert_eq!(
            hits[0].id,
            format!("v{}", o % IDS),
            "at next_offset {next}, op {o}: {hits:?} {:?}",
            shard.opened()
        );
    }
}

#[test]
fn crash_kill_9_never_loses_or_duplicates_a_write() {
    kill_9_rounds(EngineKind::Arroy);
}

#[test]
fn crash_kill_9_during_hot_graph_saves_never_leaves_a_graph_that_disagrees() {
    kill_9_rounds(EngineKind::Hnsw);
}

fn kill_9_rounds(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
    for round in 0..4 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ENGINE_ENV, engine.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("re-exec the test binary");
        let stdout = child.stdout.take().unwrap();
        // Let it commit a random number of batches (and maybe be mid-build), then kill.
        let wait_batches = rng.random_range(3..28u64);
        let mut last_committed = 0;
        let mut seen = 0;
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("committed ") {
                last_committed = n.parse().unwrap();
                seen += 1;
                if seen >= wait_batches {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child too slow"
            );
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..7u64)));
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();

        let shard = open(dir.path(), engine);
        let next = shard.next_offset();
        assert!(
            next >= last_committed,
            "round {round}: lost committed batches: {next} < {last_committed}"
        );
        assert_eq!(
            next % BATCH,
            0,
            "round {round}: a batch was half applied (next_offset {next})"
        );
        check(&shard, next);
        eprintln!(
            "round {round}: killed after {seen} reported batches; next_offset {next}, len {}, index {:?}",
            shard.len(),
            shard.opened()
        );
        if next >= TOTAL {
            break;
        }
    }
    let shard = open(dir.path(), engine);
    apply_from(&shard, TOTAL, |_| {});
    shard.build_index().unwrap();
    assert_eq!(shard.next_offset(), TOTAL);
    check(&shard, TOTAL);
}
