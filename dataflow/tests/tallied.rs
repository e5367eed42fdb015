//! The optimised hotness path (events pre-aggregated into tallies per worker,
//! `hotness_tallied`, the busiest-tenant operator, the driver) against the straightforward
//! per-event `hotness` dataflow: on seeded random event streams the four output
//! collections are identical at every second, on one and on two workers.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use hektor_dataflow::driver::{run_batch, HotnessDriver, Setup};
use hektor_dataflow::hotness::{self, HotnessParams, Obs, Time};
use hektor_dataflow::tally::TallyBuffer;
use hektor_topics::record::{Event, EventKind};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

const SHARDS: u32 = 8;

/// Events over `seconds` seconds on shards 0..10 (8 and 9 are not in the setup): queries
/// without a tenant, with one of a few busy tenants, with a random tenant or with an
/// unpositioned ring; upserts and deletes in and outside their shard's range; latencies
/// from 0 to 100 ms; one event in 20 is up to 5 s late.
fn random_events(seed: u64, n: usize, seconds: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let busy: Vec<u64> = (0..4)
        .map(|_| rng.random::<u64>() & 0xFFFF_FFFF_0000_0000)
        .collect();
    let mut events: Vec<Event> = (0..n)
        .map(|i| {
            let second = i as u64 * seconds / n as u64;
            let r = rng.random::<u64>();
            let shard = (rng.random::<u64>() % 10) as u32;
            let kind = match r % 8 {
                0 => EventKind::Upsert,
                1 => EventKind::Delete,
                _ => EventKind::Query,
            };
            let range = hektor_topics::ring::partition_range(shard.min(SHARDS - 1), SHARDS);
            let ring = match (kind, (r >> 8) % 4) {
                (EventKind::Query, 0) => 0,
                (EventKind::Query, 1) => busy[(rng.random::<u64>() % 4) as usize],
                (EventKind::Query, 2) => rng.random::<u64>() & 0xFFFF_FFFF_0000_0000,
                (EventKind::Query, _) => rng.random::<u64>() | 1,
                (_, 0) => rng.random::<u64>(),
                _ => range.start + rng.random::<u64>() % (1 << 60),
            };
            let latency_us = if r % 50 == 3 {
                0
            } else {
                50 + (rng.random::<u64>() % 100_000) as u32
            };
            Event {
                collection: "c".into(),
                shard,
                ring,
                kind,
                latency_us,
                time_ms: second * 1000 + rng.random::<u64>() % 1000,
                node: String::new(),
            }
        })
        .collect();
    events.sort_by_key(|e| e.time_ms);
    for e in events.iter_mut() {
        if rng.random::<u64>().is_multiple_of(20) {
            e.time_ms = e.time_ms.saturating_sub(rng.random::<u64>() % 5_000);
        }
    }
    events
}

fn setup() -> Setup {
    let mut s = Setup::equal(SHARDS, &["a", "b", "c"]);
    for i in 0..SHARDS - 2 {
        s.sizes.insert(i, 500 * u64::from(i));
    }
    s.assignment.insert(9, "d".into()); // a node without a heartbeat
    s.capacities.insert("c".into(), 2.5);
    s
}

/// Every update of one output: `(record as text, time, diff)`.
type Updates = Arc<Mutex<Vec<(String, Time, isize)>>>;

#[derive(Default, Clone)]
struct Captured {
    shards: Updates,
    sub_ranges: Updates,
    tenants: Updates,
    nodes: Updates,
}

impl Captured {
    fn all(&self) -> [(&'static str, &Updates); 4] {
        [
            ("shards", &self.shards),
            ("sub_ranges", &self.sub_ranges),
            ("tenants", &self.tenants),
            ("nodes", &self.nodes),
        ]
    }
}

/// The accumulated collection after every second at which `updates` change, up to `last`.
fn history(
    updates: &[(String, Time, isize)],
    last: Time,
) -> BTreeMap<Time, BTreeMap<String, isize>> {
    let mut sorted: Vec<_> = updates.iter().filter(|u| u.1 <= last).cloned().collect();
    sorted.sort_by_key(|u| u.1);
    let mut current: BTreeMap<String, isize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (record, time, diff) in sorted {
        let n = current.entry(record.clone()).or_insert(0);
        *n += diff;
        if *n == 0 {
            current.remove(&record);
        }
        out.insert(time, current.clone());
    }
    out
}

/// Run the reference and the optimised dataflow side by side on `workers` threads over
/// the same events; return what each produced. Worker `i` handles events `i, i + peers…`;
/// the optimised side drains its tally buffer at random points, not only per second.
fn run_both(
    workers: usize,
    events: Vec<Event>,
    checkpoints: Vec<Time>,
    seed: u64,
) -> (Captured, Captured) {
    let reference = Captured::default();
    let optimised = Captured::default();
    let (r, o) = (reference.clone(), optimised.clone());
    let events = Arc::new(events);
    let setup = setup();
    let params = HotnessParams::default();
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let probe = ProbeHandle::new();
        let (mut ref_in, mut opt_in) = worker.dataflow::<Time, _, _>(|scope| {
            let (obs_in, obs) = scope.new_collection::<Obs, isize>();
            let (sizes_in, sizes) = scope.new_collection::<u32, isize>();
            let (assign_in, assignment) = scope.new_collection::<(u32, String), isize>();
            let (cap_in, capacities) = scope.new_collection::<(String, u64), isize>();
            let out = hotness::hotness(params, obs, sizes, assignment, capacities);
            let (opt_in, c) = hotness::new_inputs(scope);
            let opt = hotness::hotness_tallied(params, c.tallies, c.assignment, c.capacities);
            macro_rules! capture {
                ($stream:expr, $into:expr) => {{
                    let into = Arc::clone($into);
                    $stream
                        .inner
                        .inspect(move |(d, t, diff)| {
                            into.lock()
                                .expect("capture")
                                .push((format!("{d:?}"), *t, *diff))
                        })
                        .probe_with(&probe);
                }};
            }
            capture!(out.shards, &r.shards);
            capture!(out.sub_ranges, &r.sub_ranges);
            capture!(out.tenants, &r.tenants);
            capture!(out.nodes, &r.nodes);
            capture!(opt.shards, &o.shards);
            capture!(opt.sub_ranges, &o.sub_ranges);
            capture!(opt.tenants, &o.tenants);
            capture!(opt.nodes, &o.nodes);
            ((obs_in, sizes_in, assign_in, cap_in), opt_in)
        });
        if index == 0 {
            for (shard, size) in &setup.sizes {
                ref_in.1.update(*shard, *size as isize);
                opt_in.tallies.update(
                    (*shard, hektor_dataflow::tally::Tally::Size),
                    *size as isize,
                );
            }
            for (shard, node) in &setup.assignment {
                ref_in.2.insert((*shard, node.clone()));
                opt_in.assignment.insert((*shard, node.clone()));
            }
            for (node, capacity) in &setup.capacities {
                let milli = (capacity * 1000.0).round() as u64;
                ref_in.3.insert((node.clone(), milli));
                opt_in.capacities.insert((node.clone(), milli));
            }
        }
        let mut rng = StdRng::seed_from_u64(seed ^ index as u64);
        let mut pending = TallyBuffer::default();
        let mut next = 0;
        for &checkpoint in &checkpoints {
            while next < events.len() && events[next].time_ms / 1000 <= checkpoint {
                if next % peers == index {
                    let now = *ref_in.0.time();
                    let at = (events[next].time_ms / 1000).max(now);
                    let obs = setup.observe(&events[next]);
                    ref_in.0.update_at(obs, at, 1);
                    pending.add(at, &obs);
                    if rng.random::<u64>().is_multiple_of(500) {
                        pending.drain_into(&mut opt_in.tallies);
                    }
                }
                next += 1;
            }
            pending.drain_into(&mut opt_in.tallies);
            let to = checkpoint + 1;
            ref_in.0.advance_to(to);
            ref_in.1.advance_to(to);
            ref_in.2.advance_to(to);
            ref_in.3.advance_to(to);
            opt_in.tallies.advance_to(to);
            opt_in.assignment.advance_to(to);
            opt_in.capacities.advance_to(to);
            ref_in.0.flush();
            ref_in.1.flush();
            ref_in.2.flush();
            ref_in.3.flush();
            opt_in.tallies.flush();
            opt_in.assignment.flush();
            opt_in.capacities.flush();
            worker.step_while(|| probe.less_than(&to));
        }
    })
    .expect("timely runs")
    .join()
    .into_iter()
    .for_each(|r| r.expect("worker"));
    (reference, optimised)
}

fn assert_same_collections(workers: usize, seed: u64) {
    let events = random_events(seed, 12_000, 200);
    let checkpoints = vec![5, 20, 59, 60, 61, 90, 130, 199, 260, 3_650, 3_700, 90_000];
    let last = *checkpoints.last().expect("checkpoints");
    let (reference, optimised) = run_both(workers, events, checkpoints, seed);
    for ((name, r), (_, o)) in reference.all().into_iter().zip(optimised.all()) {
        let r = history(&r.lock().expect("capture"), last);
        let o = history(&o.lock().expect("capture"), last);
        // Each side's accumulated collection at every second either one changes.
        let times: Vec<Time> = r.keys().chain(o.keys()).copied().collect();
        let at = |h: &BTreeMap<Time, BTreeMap<String, isize>>, t: Time| {
            h.range(..=t)
                .next_back()
                .map(|(_, c)| c.clone())
                .unwrap_or_default()
        };
        for t in times {
            assert_eq!(
                at(&r, t),
                at(&o, t),
                "{name} differ at second {t} (workers {workers}, seed {seed})"
            );
        }
        assert!(!r.is_empty(), "{name}: the reference produced nothing");
    }
    // The stream exercises what it should: a tenant seen more than once is on top, and
    // the day window empties the windows by the last checkpoint.
    let tenants = history(&reference.tenants.lock().expect("capture"), last);
    assert!(tenants
        .values()
        .flat_map(|c| c.keys())
        .any(|k| !k.contains(", (1, ")));
    assert!(tenants.values().next_back().is_some_and(BTreeMap::is_empty));
}

#[test]
fn tallied_path_equals_the_per_event_reference_on_one_worker() {
    for seed in [1, 2, 3] {
        assert_same_collections(1, seed);
    }
}

#[test]
fn tallied_path_equals_the_per_event_reference_on_two_workers() {
    for seed in [4, 5] {
        assert_same_collections(2, seed);
    }
}

#[test]
fn the_live_driver_matches_the_batch_run() {
    let events = random_events(9, 20_000, 150);
    let checkpoints: Vec<Time> = vec![10, 60, 61, 100, 149, 220];
    let batch = run_batch(
        timely::Config::thread(),
        HotnessParams::default(),
        setup(),
        Arc::new(events.clone()),
        checkpoints.clone(),
    )
    .expect("batch run");
    let mut driver =
        HotnessDriver::spawn(2, HotnessParams::default(), setup()).expect("driver starts");
    let mut live = Vec::new();
    let mut rest = events.as_slice();
    for &checkpoint in &checkpoints {
        let upto = rest
            .iter()
            .position(|e| e.time_ms / 1000 > checkpoint)
            .unwrap_or(rest.len());
        for chunk in rest[..upto].chunks(777) {
            driver.feed(chunk.to_vec()).expect("feed");
        }
        rest = &rest[upto..];
        live.push(driver.advance_to(checkpoint).expect("advance"));
    }
    driver.shutdown().expect("shutdown");
    assert!(batch[2].shards.values().any(|s| s.top_tenant.is_some()));
    assert_eq!(batch, live);
}
