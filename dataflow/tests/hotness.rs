//! The hotness dataflow: windows, the latency histogram, incrementality, and that several
//! workers and several processes compute the same snapshot as one worker.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::input::Input;
use hektor_dataflow::driver::{run_batch, HotnessSnapshot, Setup};
use hektor_dataflow::hotness::{self, HotnessParams, Obs, ObsKind};
use hektor_topics::record::{Event, EventKind};

fn event(shard: u32, ring: u64, kind: EventKind, latency_us: u32, second: u64) -> Event {
    Event {
        collection: "c".into(),
        shard,
        ring,
        kind,
        latency_us,
        time_ms: second * 1000 + 123,
        node: String::new(),
    }
}

/// A mixed workload over 8 equal shards and 200 seconds: skewed shards, tenant queries,
/// fan-out queries, upserts and deletes.
fn workload(n: usize) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut events: Vec<Event> = (0..n)
        .map(|i| {
            let second = (i as u64 * 200) / n as u64;
            let r = rng.random::<u64>();
            let ring = rng.random::<u64>();
            let shard_skew = (r % 100) as u32;
            let kind = match r % 7 {
                0 => EventKind::Upsert,
                1 => EventKind::Delete,
                _ => EventKind::Query,
            };
            let ring = match (kind, r % 3) {
                (EventKind::Query, 0) => 0,
                (EventKind::Query, _) => ring & 0xFFFF_FFFF_0000_0000,
                _ => ring,
            };
            let shard = if shard_skew < 60 {
                hektor_topics::ring::partition_of(ring, 8).min(1)
            } else {
                hektor_topics::ring::partition_of(ring, 8)
            };
            event(
                shard,
                ring,
                kind,
                100 + (rng.random::<u64>() % 20_000) as u32,
                second,
            )
        })
        .collect();
    events.sort_by_key(|e| e.time_ms);
    events
}

fn setup() -> Setup {
    let mut s = Setup::equal(8, &["a", "b", "c"]);
    for i in 0..8 {
        s.sizes.insert(i, 1_000 * (i as u64 + 1));
    }
    s
}

fn run(config: timely::Config, events: &[Event], checkpoints: Vec<u64>) -> Vec<HotnessSnapshot> {
    run_batch(
        config,
        HotnessParams::default(),
        setup(),
        Arc::new(events.to_vec()),
        checkpoints,
    )
    .expect("dataflow runs")
}

#[test]
fn counts_leave_the_one_minute_window_after_sixty_seconds() {
    let events = vec![
        event(2, 5 << 60, EventKind::Query, 1_000, 10),
        event(2, 5 << 60, EventKind::Query, 1_000, 10),
        event(2, 5 << 60, EventKind::Upsert, 1_000, 10),
        event(2, 5 << 60, EventKind::Query, 1_000, 40),
    ];
    let snaps = run(timely::Config::thread(), &events, vec![10, 69, 70, 99, 100]);
    let s = |i: usize| &snaps[i].shards[&2];
    assert_eq!(
        (s(0).queries_1m, s(0).writes_1m, s(0).size_vectors),
        (2, 1, 3_001)
    );
    // At 69 s the events of second 10 are still inside (10, 70]: 59 s old.
    assert_eq!(s(1).queries_1m, 3);
    // At 70 s they are 60 s old and have left the minute, not the hour nor the day.
    assert_eq!((s(2).queries_1m, s(2).writes_1m), (1, 0));
    assert_eq!(
        (s(2).queries_1h, s(2).queries_1d, s(2).writes_1h),
        (3, 3, 1)
    );
    assert_eq!(s(3).queries_1m, 1);
    assert_eq!(s(4).queries_1m, 0);
    // Size does not expire.
    assert_eq!(s(4).size_vectors, 3_001);
    // Sub-range load follows the same window.
    assert_eq!(s(0).sub_load.iter().sum::<u64>(), 3);
    assert_eq!(s(4).sub_load.iter().sum::<u64>(), 0);
}

#[test]
fn p99_from_the_histogram_is_within_a_bucket_of_the_exact_p99() {
    let mut rng = StdRng::seed_from_u64(3);
    let latencies: Vec<u32> = (0..5_000)
        .map(|_| {
            // Long-tailed: mostly 1-5 ms, a tail up to 200 ms.
            let r = rng.random::<u64>();
            if r.is_multiple_of(50) {
                5_000 + (rng.random::<u64>() % 195_000) as u32
            } else {
                1_000 + (rng.random::<u64>() % 4_000) as u32
            }
        })
        .collect();
    let events: Vec<Event> = latencies
        .iter()
        .map(|l| event(0, 0, EventKind::Query, *l, 5))
        .collect();
    let snaps = run(timely::Config::thread(), &events, vec![5]);
    let got = snaps[0].shards[&0].p99_latency_ms * 1000.0;
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    let rank = (0.99 * sorted.len() as f64).ceil() as usize;
    let exact = sorted[rank - 1] as f64;
    // Buckets are 1/8 of an octave: the reported upper bound is at most 12.5% (+1 µs of
    // rounding) above the exact value and never below it.
    assert!(got >= exact, "p99 {got} below exact {exact}");
    assert!(
        got <= exact * 1.125 + 1.0,
        "p99 {got} too far above {exact}"
    );
    // The average is exact.
    let avg = latencies.iter().map(|l| *l as f64).sum::<f64>() / latencies.len() as f64;
    assert!((snaps[0].shards[&0].avg_latency_ms * 1000.0 - avg).abs() < 1e-6 * avg);
}

#[test]
fn latency_buckets_bound_their_values() {
    for l in [1u32, 2, 7, 8, 9, 100, 1_000, 12_345, 1 << 20, u32::MAX] {
        let b = hotness::latency_bucket(l);
        assert!(hotness::bucket_lower(b) <= l as f64, "{l} bucket {b}");
        assert!((l as f64) < hotness::bucket_upper(b), "{l} bucket {b}");
    }
}

#[test]
fn an_event_changes_only_the_touched_shards_output() {
    // The dataflow function on hand-fed inputs, without the driver.
    let changes = timely::execute_directly(move |worker| {
        let changes: Rc<RefCell<BTreeMap<u64, Vec<u32>>>> = Rc::default();
        let seen = Rc::clone(&changes);
        let (mut obs_in, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (obs_in, obs) = scope.new_collection::<Obs, isize>();
            let (_s, sizes) = scope.new_collection::<u32, isize>();
            let (_a, assignment) = scope.new_collection::<(u32, String), isize>();
            let (_c, capacities) = scope.new_collection::<(String, u64), isize>();
            let out =
                hotness::hotness(HotnessParams::default(), obs, sizes, assignment, capacities);
            let seen = Rc::clone(&seen);
            let (probe, _) = out
                .shards
                .inspect(move |((shard, _), t, _)| {
                    seen.borrow_mut().entry(*t).or_default().push(*shard)
                })
                .probe();
            (obs_in, probe)
        });
        let q = |shard| Obs {
            shard,
            kind: ObsKind::Query,
            sub: None,
            tenant: None,
            latency_us: 2_000,
        };
        for shard in 0..4 {
            obs_in.insert(q(shard));
        }
        obs_in.advance_to(2);
        obs_in.insert(q(3));
        obs_in.advance_to(3);
        obs_in.flush();
        worker.step_while(|| probe.less_than(obs_in.time()));
        let changes = changes.borrow().clone();
        changes
    });
    let mut at0 = changes[&0].clone();
    at0.sort_unstable();
    at0.dedup();
    assert_eq!(at0, vec![0, 1, 2, 3]);
    // At time 2 only shard 3's statistics were retracted and re-inserted.
    assert_eq!(changes[&2], vec![3, 3]);
}

#[test]
fn two_workers_compute_what_one_worker_computes() {
    let events = workload(20_000);
    let checkpoints = vec![30, 61, 120, 199, 260];
    let one = run(timely::Config::thread(), &events, checkpoints.clone());
    let two = run(timely::Config::process(2), &events, checkpoints);
    assert_eq!(one.len(), 5);
    assert!(one[2].shards.len() == 8 && one[2].nodes.len() == 3);
    assert!(one[2].shards.values().any(|s| s.top_tenant.is_some()));
    assert_eq!(one, two);
}

const CHILD_ENV: &str = "HEKTOR_DATAFLOW_TEST_PROCESS";
const ADDR_ENV: &str = "HEKTOR_DATAFLOW_TEST_ADDRS";

fn cluster(process: usize, addresses: Vec<String>) -> timely::Config {
    timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: 1,
            process,
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

#[test]
fn two_processes_compute_what_one_process_computes() {
    let events = workload(10_000);
    let checkpoints = vec![45, 130, 199];
    if let Ok(process) = std::env::var(CHILD_ENV) {
        // We are the second process, started by the test below.
        let process: usize = process.parse().expect("process index");
        let addresses: Vec<String> = std::env::var(ADDR_ENV)
            .expect("addresses")
            .split(',')
            .map(String::from)
            .collect();
        let snaps = run(cluster(process, addresses), &events, checkpoints);
        assert!(snaps.is_empty(), "only process 0 gathers the snapshot");
        return;
    }
    let addresses = vec![
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "two_processes_compute_what_one_process_computes",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env(ADDR_ENV, addresses.join(","))
        .spawn()
        .expect("start the second process");
    let two = run(cluster(0, addresses), &events, checkpoints.clone());
    let status = child.wait().expect("second process exits");
    assert!(status.success(), "second process failed: {status}");
    let one = run(timely::Config::thread(), &events, checkpoints);
    assert_eq!(one.len(), 3);
    assert_eq!(one, two);
}

/// A live driver follows a new shard map: a kept shard keeps its windows, a retired one
/// leaves the snapshots, new ones start from their size baseline and count from then on,
/// and node loads follow the new assignment.
#[test]
fn a_reshard_keeps_kept_shards_and_starts_new_ones() {
    use hektor_dataflow::driver::HotnessDriver;
    use hektor_topics::record::RingRange;
    let half = 1u64 << 63;
    let mut setup = Setup::equal(2, &["a", "b"]);
    setup.sizes.insert(1, 1_000);
    let mut driver =
        HotnessDriver::spawn(2, HotnessParams::default(), setup.clone()).expect("driver starts");
    let q = |shard, ring, s| event(shard, ring, EventKind::Query, 2_000, s);
    driver
        .feed((0..10).map(|i| q(0, 5, 100 + i % 3)).collect())
        .unwrap();
    driver
        .feed((0..4).map(|i| q(1, half + 7, 100 + i % 3)).collect())
        .unwrap();
    let before = driver.advance_to(102).unwrap();
    assert_eq!(before.shards[&0].queries_1m, 10);
    assert_eq!(before.shards[&1].queries_1m, 4);
    assert_eq!(before.shards[&1].size_vectors, 1_000);

    // Split shard 1 into ids 2 and 3; the right half moves to node c.
    let mut next = Setup::default();
    next.ranges.insert(0, setup.ranges[&0]);
    next.ranges.insert(
        2,
        RingRange {
            start: half,
            end: Some(half + (1 << 62)),
        },
    );
    next.ranges.insert(
        3,
        RingRange {
            start: half + (1 << 62),
            end: None,
        },
    );
    next.sizes.extend([(0, 0), (2, 600), (3, 400)]);
    next.assignment.extend([
        (0, "a".to_string()),
        (2, "b".to_string()),
        (3, "c".to_string()),
    ]);
    next.capacities
        .extend(["a", "b", "c"].map(|n| (n.to_string(), 1.0)));
    driver.reshard(next).unwrap();
    driver
        .feed(vec![q(0, 5, 103), q(3, half + (1 << 62) + 9, 103)])
        .unwrap();
    let after = driver.advance_to(103).unwrap();
    assert_eq!(
        after.shards.keys().copied().collect::<Vec<_>>(),
        vec![0, 2, 3]
    );
    assert_eq!(
        after.shards[&0].queries_1m, 11,
        "a kept shard keeps its window"
    );
    assert_eq!(after.shards[&2].size_vectors, 600);
    assert_eq!(after.shards[&3].queries_1m, 1);
    assert_eq!(after.shards[&3].size_vectors, 400);
    assert_eq!(after.shards[&3].node.as_deref(), Some("c"));
    // Node c carries shard 3's ops; node b no longer carries the retired shard 1's four.
    assert!(after.nodes["c"].ops_per_s > 0.0);
    assert!(
        after.nodes.get("b").is_none_or(|n| n.ops_per_s == 0.0),
        "{:?}",
        after.nodes
    );
    driver.shutdown().unwrap();
}
