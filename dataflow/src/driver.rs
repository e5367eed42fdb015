//! The driver of the hotness dataflow: runs [`crate::hotness::hotness`] on timely workers
//! (one thread, several threads, or several processes), feeds it events, advances time,
//! and reads its outputs into a plain [`HotnessSnapshot`] for the decision engine.
//!
//! This module owns workers, inputs, probes and the snapshot; it does not own what is
//! computed (that is [`crate::hotness`]) nor what is decided ([`crate::decide`]).
//!
//! - [`run_batch`]: feed a fixed list of events and take snapshots at given times (tests,
//!   the simulator, benchmarks). Works under any `timely::Config`, cluster mode included:
//!   every process runs it with the same events; worker `i` feeds events `i, i + peers, …`
//!   and the snapshot is gathered at global worker 0.
//! - [`HotnessDriver`]: a long-running dataflow fed through channels, for a live process.
//!   [`HotnessDriver::reshard`] swaps in a new shard map while it runs: shards the map keeps
//!   keep their ids and windows, new shards (the halves of a split, a merged shard) get new
//!   ids whose windows fill from then on, with their size baseline from the new setup, and
//!   retired ids leave the snapshots (their windows drain unseen).
//!
//! Time: events are stamped with their `time_ms / 1000` second; an event older than the
//! inputs' current time (late) is counted at the current time.
//!
//! Each worker folds the events it is handed into a [`TallyBuffer`] (one weight per
//! second, shard and counted thing) and sends the buffer into the dataflow when a second
//! is closed (or once `SEND_AT_KEYS` keys are pending), so differential sees one update
//! per distinct key instead of one per event; the dataflow is
//! [`hotness::hotness_tallied`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use differential_dataflow::input::InputSession;
use hektor_topics::record::{Event, RingRange};
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::hotness::{self, HotnessParams, NodeStats, Obs, ShardStats, Time, SUB_RANGES};
use crate::tally::{Tally, TallyBuffer, TallyRecord};

/// A live worker sends its pending tallies into the dataflow when an advance closes a
/// second, or earlier once this many distinct keys are pending (bounds memory and lets
/// differential sort while events still arrive).
const SEND_AT_KEYS: usize = 1 << 16;
use crate::{DataflowError, Result};

/// The input handles of one worker's hotness dataflow.
pub struct Inputs {
    /// Pre-aggregated events and size baselines (see [`crate::tally`]).
    pub tallies: InputSession<Time, TallyRecord, isize>,
    pub assignment: InputSession<Time, (u32, String), isize>,
    pub capacities: InputSession<Time, (String, u64), isize>,
}

impl Inputs {
    fn time(&self) -> Time {
        *self.tallies.time()
    }

    fn advance_to(&mut self, time: Time) {
        if time > self.time() {
            self.tallies.advance_to(time);
            self.assignment.advance_to(time);
            self.capacities.advance_to(time);
        }
    }

    fn flush(&mut self) {
        self.tallies.flush();
        self.assignment.flush();
        self.capacities.flush();
    }
}

/// What the driver knows about the cluster: shard ranges (to place events in sub-ranges),
/// initial sizes, the shard → node assignment, and node capacities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Setup {
    pub ranges: BTreeMap<u32, RingRange>,
    /// Vectors per shard at the start (upserts and deletes adjust it).
    pub sizes: BTreeMap<u32, u64>,
    pub assignment: BTreeMap<u32, String>,
    /// Node capacity weights (1.0 = a standard node), from heartbeats.
    pub capacities: BTreeMap<String, f64>,
}

impl Setup {
    /// `partitions` equal shards of the ring, shard `i` on node `nodes[i % nodes.len()]`,
    /// every node of capacity 1.0.
    pub fn equal(partitions: u32, nodes: &[&str]) -> Setup {
        let mut setup = Setup::default();
        for i in 0..partitions {
            setup
                .ranges
                .insert(i, hektor_topics::ring::partition_range(i, partitions));
            if !nodes.is_empty() {
                setup
                    .assignment
                    .insert(i, nodes[i as usize % nodes.len()].to_string());
            }
        }
        for n in nodes {
            setup.capacities.insert(n.to_string(), 1.0);
        }
        setup
    }

    /// The observation of an event under this shard map.
    pub fn observe(&self, event: &Event) -> Obs {
        match self.ranges.get(&event.shard) {
            Some(range) => Obs::from_event(event, *range),
            None => {
                let mut obs = Obs::from_event(event, RingRange::FULL);
                obs.sub = None;
                obs
            }
        }
    }
}

/// The busiest tenant of a shard over the last minute.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantLoad {
    /// First ring position of the tenant's range.
    pub start: u64,
    pub queries_1m: u64,
}

/// What the dataflow knows about one shard at one time, in plain units.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardMetrics {
    pub shard: u32,
    pub range: RingRange,
    pub node: Option<String>,
    pub queries_1m: u64,
    pub queries_1h: u64,
    pub queries_1d: u64,
    pub writes_1m: u64,
    pub writes_1h: u64,
    pub writes_1d: u64,
    pub avg_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub size_vectors: u64,
    /// Bytes on disk of one copy, when the holders report it (the live planner).
    pub size_bytes: Option<u64>,
    /// Writes per second over the last minute.
    pub update_rate: f64,
    /// The seed's hotness: qps over the last minute × p99 ms / 10.
    pub hotness: f64,
    pub hot: bool,
    pub cold: bool,
    /// Ops (queries with a position + writes) per sub-range over the last minute.
    pub sub_load: Vec<u64>,
    pub top_tenant: Option<TenantLoad>,
}

impl ShardMetrics {
    pub fn qps_1m(&self) -> f64 {
        self.queries_1m as f64 / hotness::WINDOWS[0] as f64
    }

    fn from_stats(shard: u32, range: RingRange, st: &ShardStats) -> ShardMetrics {
        ShardMetrics {
            shard,
            range,
            node: None,
            queries_1m: st.queries[0],
            queries_1h: st.queries[1],
            queries_1d: st.queries[2],
            writes_1m: st.writes[0],
            writes_1h: st.writes[1],
            writes_1d: st.writes[2],
            avg_latency_ms: st.avg_latency_ms(),
            p99_latency_ms: st.p99_us as f64 / 1000.0,
            size_vectors: st.size.max(0) as u64,
            size_bytes: None,
            update_rate: st.writes[0] as f64 / hotness::WINDOWS[0] as f64,
            hotness: st.hotness(),
            hot: st.hot,
            cold: st.cold,
            sub_load: vec![0; SUB_RANGES as usize],
            top_tenant: None,
        }
    }
}

/// Load of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub node: String,
    pub capacity: f64,
    /// Ops per second over the last minute on its shards.
    pub ops_per_s: f64,
    /// Fraction of capacity in use.
    pub load: f64,
}

/// The dataflow's outputs at one time, as plain data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HotnessSnapshot {
    /// The second the snapshot is current for (events up to and including it).
    pub time_s: Time,
    pub shards: BTreeMap<u32, ShardMetrics>,
    pub nodes: BTreeMap<String, NodeLoad>,
}

/// The accumulated outputs, at global worker 0.
#[derive(Default)]
struct Sink {
    shards: BTreeMap<(u32, ShardStats), isize>,
    subs: BTreeMap<((u32, u8), isize), isize>,
    tenants: BTreeMap<(u32, (isize, u32)), isize>,
    nodes: BTreeMap<(String, NodeStats), isize>,
}

fn accumulate<D: Ord>(map: &mut BTreeMap<D, isize>, data: D, diff: isize) {
    let entry = map.entry(data);
    match entry {
        std::collections::btree_map::Entry::Occupied(mut o) => {
            *o.get_mut() += diff;
            if *o.get() == 0 {
                o.remove();
            }
        }
        std::collections::btree_map::Entry::Vacant(v) => {
            if diff != 0 {
                v.insert(diff);
            }
        }
    }
}

impl Sink {
    fn snapshot(&self, time_s: Time, setup: &Setup, retired: &BTreeSet<u32>) -> HotnessSnapshot {
        let mut snap = HotnessSnapshot {
            time_s,
            ..HotnessSnapshot::default()
        };
        for ((shard, st), n) in &self.shards {
            if *n <= 0 || retired.contains(shard) {
                continue;
            }
            let range = setup.ranges.get(shard).copied().unwrap_or(RingRange::FULL);
            let mut m = ShardMetrics::from_stats(*shard, range, st);
            m.node = setup.assignment.get(shard).cloned();
            snap.shards.insert(*shard, m);
        }
        for (((shard, sub), count), n) in &self.subs {
            if *n <= 0 {
                continue;
            }
            if let Some(m) = snap.shards.get_mut(shard) {
                if let Some(slot) = m.sub_load.get_mut(*sub as usize) {
                    *slot = (*count).max(0) as u64;
                }
            }
        }
        for ((shard, (count, hi)), n) in &self.tenants {
            if *n <= 0 {
                continue;
            }
            if let Some(m) = snap.shards.get_mut(shard) {
                m.top_tenant = Some(TenantLoad {
                    start: (*hi as u64) << 32,
                    queries_1m: (*count).max(0) as u64,
                });
            }
        }
        for ((node, st), n) in &self.nodes {
            if *n <= 0 {
                continue;
            }
            let capacity = st.capacity_milli as f64 / 1000.0;
            snap.nodes.insert(
                node.clone(),
                NodeLoad {
                    node: node.clone(),
                    capacity,
                    ops_per_s: st.ops_1m as f64 / hotness::WINDOWS[0] as f64,
                    load: st.load_milli as f64 / 1000.0,
                },
            );
        }
        snap
    }
}

/// One worker's dataflow: its inputs, a probe on the gathered outputs, and (meaningful at
/// global worker 0 only) the accumulated outputs.
struct Built {
    inputs: Inputs,
    /// Events folded in but not yet sent into `inputs`.
    pending: TallyBuffer,
    probe: ProbeHandle<Time>,
    sink: Rc<RefCell<Sink>>,
}

fn build(worker: &mut Worker, params: HotnessParams) -> Built {
    let sink = Rc::new(RefCell::new(Sink::default()));
    let probe = ProbeHandle::new();
    let inputs = worker.dataflow::<Time, _, _>(|scope| {
        let (inputs, c) = hotness::new_inputs(scope);
        let out = hotness::hotness_tallied(params, c.tallies, c.assignment, c.capacities);
        // Gather every output at worker 0; the outputs are small (changes per shard).
        let s = Rc::clone(&sink);
        out.shards
            .inner
            .exchange(|_| 0)
            .inspect(move |(d, _t, r)| accumulate(&mut s.borrow_mut().shards, d.clone(), *r))
            .probe_with(&probe);
        let s = Rc::clone(&sink);
        out.sub_ranges
            .inner
            .exchange(|_| 0)
            .inspect(move |(d, _t, r)| accumulate(&mut s.borrow_mut().subs, *d, *r))
            .probe_with(&probe);
        let s = Rc::clone(&sink);
        out.tenants
            .inner
            .exchange(|_| 0)
            .inspect(move |(d, _t, r)| accumulate(&mut s.borrow_mut().tenants, *d, *r))
            .probe_with(&probe);
        let s = Rc::clone(&sink);
        out.nodes
            .inner
            .exchange(|_| 0)
            .inspect(move |(d, _t, r)| accumulate(&mut s.borrow_mut().nodes, d.clone(), *r))
            .probe_with(&probe);
        inputs
    });
    Built {
        inputs,
        pending: TallyBuffer::default(),
        probe,
        sink,
    }
}

fn load_setup(inputs: &mut Inputs, setup: &Setup) {
    for (shard, size) in &setup.sizes {
        inputs.tallies.update(
            (*shard, Tally::Size),
            (*size).min(isize::MAX as u64) as isize,
        );
    }
    for (shard, node) in &setup.assignment {
        inputs.assignment.insert((*shard, node.clone()));
    }
    for (node, capacity) in &setup.capacities {
        let milli = (capacity.max(0.0) * 1000.0).round() as u64;
        inputs.capacities.insert((node.clone(), milli));
    }
}

/// Worker 0's side of a reshard: the assignment and capacities follow the new setup, and
/// shards new to it get their size baseline.
fn reshard_inputs(inputs: &mut Inputs, old: &Setup, next: &Setup) {
    for (shard, node) in &old.assignment {
        if next.assignment.get(shard) != Some(node) {
            inputs.assignment.remove((*shard, node.clone()));
        }
    }
    for (shard, node) in &next.assignment {
        if old.assignment.get(shard) != Some(node) {
            inputs.assignment.insert((*shard, node.clone()));
        }
    }
    let milli = |c: f64| (c.max(0.0) * 1000.0).round() as u64;
    for (node, capacity) in &old.capacities {
        if next.capacities.get(node).map(|c| milli(*c)) != Some(milli(*capacity)) {
            inputs.capacities.remove((node.clone(), milli(*capacity)));
        }
    }
    for (node, capacity) in &next.capacities {
        if old.capacities.get(node).map(|c| milli(*c)) != Some(milli(*capacity)) {
            inputs.capacities.insert((node.clone(), milli(*capacity)));
        }
    }
    for (shard, size) in &next.sizes {
        if !old.ranges.contains_key(shard) {
            inputs.tallies.update(
                (*shard, Tally::Size),
                (*size).min(isize::MAX as u64) as isize,
            );
        }
    }
}

fn feed_event(built: &mut Built, setup: &Setup, event: &Event) {
    let at = (event.time_ms / 1000).max(built.inputs.time());
    built.pending.add(at, &setup.observe(event));
}

/// Send the pending tallies into the dataflow.
fn send_pending(built: &mut Built) {
    built.pending.drain_into(&mut built.inputs.tallies);
}

/// Advance every input past `time_s` and step until the outputs are current for it.
fn settle(worker: &mut Worker, built: &mut Built, time_s: Time) {
    send_pending(built);
    built.inputs.advance_to(time_s + 1);
    built.inputs.flush();
    let target = time_s + 1;
    // Park (briefly) rather than spin while waiting on other workers: on a machine with
    // as many cores as workers a spinning worker takes cycles from the one it waits for.
    while built.probe.less_than(&target) {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
}

/// Run the hotness dataflow over `events` under `config` and return the snapshots at
/// each of `checkpoints` (seconds, ascending; a snapshot at `c` covers events up to and
/// including second `c`).
///
/// Every process of a cluster calls it with the same arguments; the snapshots come back
/// in the process that hosts global worker 0, the others get an empty list.
pub fn run_batch(
    config: timely::Config,
    params: HotnessParams,
    setup: Setup,
    events: Arc<Vec<Event>>,
    checkpoints: Vec<Time>,
) -> Result<Vec<HotnessSnapshot>> {
    if checkpoints.windows(2).any(|w| w[0] > w[1]) {
        return Err(DataflowError::Input(
            "checkpoints must be in ascending order".into(),
        ));
    }
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut built = build(worker, params);
        if index == 0 {
            load_setup(&mut built.inputs, &setup);
        }
        let mut snapshots = Vec::new();
        let mut next = 0usize;
        for &checkpoint in &checkpoints {
            while next < events.len() && events[next].time_ms / 1000 <= checkpoint {
                if next % peers == index {
                    feed_event(&mut built, &setup, &events[next]);
                }
                next += 1;
            }
            settle(worker, &mut built, checkpoint);
            if index == 0 {
                snapshots.push(
                    built
                        .sink
                        .borrow()
                        .snapshot(checkpoint, &setup, &BTreeSet::new()),
                );
            }
        }
        snapshots
    })
    .map_err(DataflowError::Timely)?;
    let mut out = Vec::new();
    for result in guards.join() {
        let snapshots = result.map_err(DataflowError::Timely)?;
        if !snapshots.is_empty() {
            out = snapshots;
        }
    }
    Ok(out)
}

enum Command {
    Events(Vec<Event>),
    Advance(Time),
    Reshard(Box<Setup>),
    Stop,
}

/// A hotness dataflow running on its own worker threads, fed through channels.
pub struct HotnessDriver {
    senders: Vec<mpsc::Sender<Command>>,
    snapshots: mpsc::Receiver<HotnessSnapshot>,
    guards: Option<timely::communication::WorkerGuards<()>>,
    next_worker: usize,
}

impl HotnessDriver {
    /// Start `workers` worker threads in this process.
    pub fn spawn(workers: usize, params: HotnessParams, setup: Setup) -> Result<HotnessDriver> {
        let workers = workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (snap_tx, snap_rx) = mpsc::channel();
        let snap_tx = Mutex::new(snap_tx);
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let rx = receivers
                .lock()
                .ok()
                .and_then(|mut r| r.get_mut(index).and_then(Option::take));
            let Some(rx) = rx else { return };
            let snap_tx = snap_tx.lock().ok().map(|tx| tx.clone());
            let mut built = build(worker, params);
            let mut setup = setup.clone();
            let mut retired: BTreeSet<u32> = BTreeSet::new();
            if index == 0 {
                load_setup(&mut built.inputs, &setup);
            }
            loop {
                let command = match rx.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::TryRecvError::Empty) => {
                        // Commands arrive on a plain channel that does not wake a parked
                        // worker, so park briefly: 20 ms keeps an idle collection's worker
                        // at ~50 wake-ups/s while commands wait at most that long.
                        worker.step_or_park(Some(Duration::from_millis(20)));
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => Command::Stop,
                };
                match command {
                    Command::Events(events) => {
                        for e in &events {
                            feed_event(&mut built, &setup, e);
                        }
                        if built.pending.len() >= SEND_AT_KEYS {
                            send_pending(&mut built);
                        }
                        worker.step();
                    }
                    Command::Advance(t) => {
                        settle(worker, &mut built, t);
                        if index == 0 {
                            if let Some(tx) = &snap_tx {
                                let _ = tx.send(built.sink.borrow().snapshot(t, &setup, &retired));
                            }
                        }
                    }
                    Command::Reshard(next) => {
                        // What was folded in so far counts under the old ids.
                        send_pending(&mut built);
                        if index == 0 {
                            reshard_inputs(&mut built.inputs, &setup, &next);
                        }
                        retired.extend(
                            setup
                                .ranges
                                .keys()
                                .filter(|id| !next.ranges.contains_key(id)),
                        );
                        retired.retain(|id| !next.ranges.contains_key(id));
                        setup = *next;
                    }
                    Command::Stop => break,
                }
            }
        })
        .map_err(DataflowError::Timely)?;
        Ok(HotnessDriver {
            senders,
            snapshots: snap_rx,
            guards: Some(guards),
            next_worker: 0,
        })
    }

    /// Hand a batch of events to the next worker (round robin).
    pub fn feed(&mut self, events: Vec<Event>) -> Result<()> {
        let n = self.senders.len();
        let tx = &self.senders[self.next_worker % n];
        self.next_worker = (self.next_worker + 1) % n;
        tx.send(Command::Events(events))
            .map_err(|_| DataflowError::Stopped)
    }

    /// Replace the shard map: events fed from now on are placed by `setup` (see the module
    /// doc). Ids present in both keep their windows; sizes seed only new ids.
    pub fn reshard(&mut self, setup: Setup) -> Result<()> {
        for tx in &self.senders {
            tx.send(Command::Reshard(Box::new(setup.clone())))
                .map_err(|_| DataflowError::Stopped)?;
        }
        Ok(())
    }

    /// Close second `time_s`: every event fed so far counts, and the returned snapshot is
    /// current for it.
    pub fn advance_to(&mut self, time_s: Time) -> Result<HotnessSnapshot> {
        for tx in &self.senders {
            tx.send(Command::Advance(time_s))
                .map_err(|_| DataflowError::Stopped)?;
        }
        self.snapshots.recv().map_err(|_| DataflowError::Stopped)
    }

    /// Stop the workers and wait for them.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        for tx in &self.senders {
            let _ = tx.send(Command::Stop);
        }
        if let Some(guards) = self.guards.take() {
            for r in guards.join() {
                r.map_err(DataflowError::Timely)?;
            }
        }
        Ok(())
    }
}

impl Drop for HotnessDriver {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
