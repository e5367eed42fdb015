//! Regions on real parts: `scripts/regions.sh` (two single-broker KRaft clusters, `west`
//! and `east`, MirrorMaker 2 in each, Toxiproxy between them). The test starts the setup
//! itself (or uses one already running, which it then leaves running) and proves:
//!
//! 1. a `hektor.<unique>.vectors` topic with several partitions, filled in one region with
//!    keyed records with headers, appears in the other region under the default
//!    replication policy's name (`west.hektor.<unique>.vectors`) with every record's key,
//!    value, headers (order included), partition and CreateTime timestamp kept; both ways.
//!    Duplicates are allowed (MM2 is at least once) and counted;
//! 2. the cross-region bytes go through Toxiproxy: 300 ms of latency on the `west_to_east`
//!    proxy raises the west → east mirroring delay by at least 300 ms; with the proxy
//!    disabled (a partition) nothing written in west reaches east while east → west keeps
//!    mirroring, and after healing everything written meanwhile arrives.
//!
//! Under `CI=true` a setup that does not start fails the test; elsewhere the test says
//! that it did not run. `HEKTOR_REGIONS_KEEP=1` leaves a setup the test started running.
//! Two ignored tests measure (`cargo test --release --test regions_kafka -- --ignored
//! --nocapture`): the delay of single records and the records/s mirrored over a 70 ms
//! round trip (1.6 KB records), and what MM2 redelivers after a black-hole partition and
//! after its own SIGKILL (at least once: duplicates, and offsets that then differ).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hektor_log::kafka::{KafkaConfig, KafkaLog};
use hektor_log::{Cleanup, TopicSpec};
use hektor_log::{Log, LogRecord, StoredRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One test at a time: they share the setup and its proxies.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const PARTITIONS: u32 = 4;
/// The injected one-way latency of the proof that bytes go through the proxy.
const LATENCY_MS: u64 = 300;
/// What two samples of mirroring delays may differ by besides the injected latency.
const JITTER_MS: u64 = 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Run `scripts/regions.sh ARGS`, killed past `limit`; (success, stdout).
fn regions_sh(args: &[&str], limit: Duration) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("bash")
        .arg(root.join("scripts/regions.sh"))
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run bash scripts/regions.sh");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for regions.sh") {
            break Some(status);
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    match status {
        Some(s) => (s.success(), out),
        None => {
            eprintln!("scripts/regions.sh {args:?} ran past {limit:?}");
            (false, out)
        }
    }
}

/// The running setup: what `scripts/regions.sh env` exports.
struct Setup {
    env: HashMap<String, String>,
    regions: Vec<String>,
    started_here: bool,
    toxiproxy: String,
}

impl Setup {
    /// Start the setup (or find it running). `None` when it cannot start outside CI.
    fn start() -> Option<Setup> {
        let (was_up, _) = regions_sh(&["status"], Duration::from_secs(30));
        let began = Instant::now();
        let (ok, out) = regions_sh(&["start"], Duration::from_secs(420));
        if !ok {
            if common::is_ci() {
                panic!("CI=true but scripts/regions.sh start failed (see its messages above)");
            }
            eprintln!(
                "WARNING: multi-region test NOT RUN: `bash scripts/regions.sh start` failed (it needs Java 17+, Maven and Go; see above)"
            );
            return None;
        }
        eprintln!(
            "regions.sh start took {:.1} s (setup {} running before)",
            began.elapsed().as_secs_f64(),
            if was_up { "was" } else { "was not" }
        );
        let env: HashMap<String, String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
            .collect();
        let regions: Vec<String> = env
            .get("HEKTOR_REGIONS")
            .expect("HEKTOR_REGIONS in regions.sh env")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(regions.len() >= 2, "two regions at least: {regions:?}");
        let toxiproxy = env
            .get("HEKTOR_TOXIPROXY")
            .expect("HEKTOR_TOXIPROXY")
            .clone();
        Some(Setup {
            env,
            regions,
            started_here: !was_up,
            toxiproxy,
        })
    }

    fn brokers(&self, region: &str) -> String {
        let var = format!("HEKTOR_REGION_{}_BROKERS", region.to_uppercase());
        self.env
            .get(&var)
            .unwrap_or_else(|| panic!("{var} in regions.sh env"))
            .clone()
    }

    /// The proxy that carries what crosses from region `from` to region `to` (where
    /// MirrorMaker sits, `HEKTOR_MM2_SIDE`, decides which broker it fronts).
    fn proxy(&self, from: &str, to: &str) -> String {
        let var = format!(
            "HEKTOR_PROXY_{}_TO_{}",
            from.to_uppercase(),
            to.to_uppercase()
        );
        self.env
            .get(&var)
            .unwrap_or_else(|| panic!("{var} in regions.sh env"))
            .clone()
    }

    /// The proxy that carries region `from`'s nodes' HTTP calls to region `to`'s node
    /// (round-trip probes, write acknowledgements, forwarded reads) and their answers.
    fn http_proxy(&self, from: &str, to: &str) -> String {
        self.var(&format!(
            "HEKTOR_PROXY_{}_TO_{}_HTTP",
            from.to_uppercase(),
            to.to_uppercase()
        ))
    }

    /// Every proxy between `a` and `b`, both ways: Kafka's and the nodes' HTTP.
    fn proxies_between(&self, a: &str, b: &str) -> Vec<String> {
        vec![
            self.proxy(a, b),
            self.proxy(b, a),
            self.http_proxy(a, b),
            self.http_proxy(b, a),
        ]
    }

    /// Where region `region`'s node listens (other regions' peers point at it through
    /// their proxies), and its `--region-peers`.
    fn node_http(&self, region: &str) -> (u16, String) {
        let r = region.to_uppercase();
        let addr = self.var(&format!("HEKTOR_REGION_{r}_HTTP"));
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("HEKTOR_REGION_{r}_HTTP={addr} is no HOST:PORT"));
        (port, self.var(&format!("HEKTOR_REGION_{r}_PEERS")))
    }

    fn var(&self, var: &str) -> String {
        self.env
            .get(var)
            .unwrap_or_else(|| panic!("{var} in regions.sh env"))
            .clone()
    }

    /// Toxiproxy's API: method, path, JSON body; panics unless 2xx.
    fn toxiproxy(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let mut req = c.request(method.clone(), format!("{}{path}", self.toxiproxy));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("toxiproxy {method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        assert!(
            status.is_success(),
            "toxiproxy {method} {path}: {status} {text}"
        );
    }

    /// A toxic `name` of `kind` with `attributes` on both streams of `proxy` (`name-up`,
    /// `name-down`): the records cross in fetch answers (MirrorMaker at the target) or in
    /// produce requests (at the source), so a cut or a delay must hold either way.
    fn toxic_both_ways(&self, proxy: &str, name: &str, kind: &str, attributes: Value) {
        for (stream, suffix) in [("upstream", "up"), ("downstream", "down")] {
            self.toxiproxy(
                reqwest::Method::POST,
                &format!("/proxies/{proxy}/toxics"),
                Some(
                    json!({"name": format!("{name}-{suffix}"), "type": kind, "stream": stream,
                    "toxicity": 1.0, "attributes": attributes}),
                ),
            );
        }
    }

    /// Remove what [`Setup::toxic_both_ways`] added.
    fn remove_toxic_both_ways(&self, proxy: &str, name: &str) {
        for suffix in ["up", "down"] {
            self.toxiproxy(
                reqwest::Method::DELETE,
                &format!("/proxies/{proxy}/toxics/{name}-{suffix}"),
                None,
            );
        }
    }

    /// Every toxic removed, every proxy enabled.
    fn reset(&self) {
        self.toxiproxy(reqwest::Method::POST, "/reset", None);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Never leave a toxic or a disabled proxy behind, even when a check failed.
        let _ = reqwest::blocking::Client::new()
            .post(format!("{}/reset", self.toxiproxy))
            .timeout(Duration::from_secs(5))
            .send();
        let keep = std::env::var("HEKTOR_REGIONS_KEEP").is_ok_and(|v| v == "1");
        if self.started_here && !keep {
            let (ok, _) = regions_sh(&["stop"], Duration::from_secs(150));
            if !ok {
                eprintln!("scripts/regions.sh stop failed");
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn block<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(f)
}

fn connect(brokers: &str) -> KafkaLog {
    KafkaLog::connect(brokers, KafkaConfig::default()).expect("Kafka clients")
}

/// A test record: `seq` identifies it (a header and part of the key); headers include a
/// repeated name (order must be kept) and an empty value.
fn test_record(run: &str, seq: u32, value_len: usize) -> LogRecord {
    // A tenant-style binary key for odd records (0xFF never occurs in UTF-8).
    let key = if seq % 2 == 1 {
        let mut k = vec![0xFF];
        k.extend_from_slice(b"tenant-a");
        k.push(0xFF);
        k.extend_from_slice(format!("{run}/id-{seq}").as_bytes());
        k
    } else {
        format!("{run}/id-{seq}").into_bytes()
    };
    // Incompressible, like f32 vectors: random bytes (a `StdRng` seeded by the seq) after
    // the run and seq.
    let mut value = format!("{run}/{seq}:").into_bytes();
    let prefix = value.len();
    if value_len > prefix {
        value.resize(value_len, 0);
        StdRng::seed_from_u64(u64::from(seq)).fill(&mut value[prefix..]);
    }
    LogRecord::new(Some(key), value)
        .with_header("hektor-encoding", "json.v1")
        .with_header("run", run)
        .with_header("seq", seq.to_string())
        .with_header("dup", "first")
        .with_header("dup", "second")
        .with_header("empty", Vec::new())
}

fn seq_of(r: &LogRecord) -> Option<u32> {
    std::str::from_utf8(r.header("seq")?).ok()?.parse().ok()
}

fn run_of(r: &LogRecord) -> Option<&[u8]> {
    r.header("run")
}

/// Create `topic` in `log` and append `n` records of run `run`, record `i` to partition
/// `i % PARTITIONS`.
fn fill(rt: &tokio::runtime::Runtime, log: &KafkaLog, topic: &str, run: &str, n: u32) {
    block(
        rt,
        log.ensure_topic(&TopicSpec {
            name: topic.to_string(),
            partitions: PARTITIONS,
            cleanup: Cleanup::Compact,
            replication: 1,
        }),
    )
    .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    let mut by_partition: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
    for seq in 0..n {
        by_partition
            .entry(seq % PARTITIONS)
            .or_default()
            .push(test_record(run, seq, 200));
    }
    for (p, records) in by_partition {
        block(rt, log.append(topic, p, records))
            .unwrap_or_else(|e| panic!("append to {topic}/{p}: {e}"));
    }
}

/// Wait until `topic` exists in `log` with `PARTITIONS` partitions.
fn wait_topic(rt: &tokio::runtime::Runtime, log: &KafkaLog, topic: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match block(rt, log.partitions(topic)) {
            Ok(n) => {
                assert_eq!(n, PARTITIONS, "{topic}: partition count not kept");
                return;
            }
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{topic} did not appear within {within:?}: {e}"),
        }
    }
}

/// Every record of partition `p` of `topic` from `from` on, reading until `done` says
/// so or `deadline` passes.
fn read_partition(
    rt: &tokio::runtime::Runtime,
    log: &KafkaLog,
    topic: &str,
    p: u32,
    from: u64,
    deadline: Instant,
    done: &dyn Fn(&[StoredRecord]) -> bool,
) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut next = from;
    while !done(&out) && Instant::now() < deadline {
        let batch = block(
            rt,
            log.read(topic, p, next, 1000, Duration::from_millis(200)),
        )
        .unwrap_or_else(|e| panic!("read {topic}/{p} from {next}: {e}"));
        if let Some(last) = batch.last() {
            next = last.offset + 1;
        }
        out.extend(batch);
    }
    out
}

/// The records of run `run` in every partition of `topic`, by partition, read until each
/// partition holds `per_partition` distinct seqs of the run (or `within` passes).
fn read_run(
    rt: &tokio::runtime::Runtime,
    log: &KafkaLog,
    topic: &str,
    run: &str,
    per_partition: &BTreeMap<u32, usize>,
    from: &BTreeMap<u32, u64>,
    within: Duration,
) -> BTreeMap<u32, Vec<StoredRecord>> {
    let deadline = Instant::now() + within;
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let want = per_partition.get(&p).copied().unwrap_or(0);
        let done = |rs: &[StoredRecord]| {
            let mut seqs: Vec<u32> = rs
                .iter()
                .filter(|r| run_of(&r.record) == Some(run.as_bytes()))
                .filter_map(|r| seq_of(&r.record))
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            seqs.len() >= want
        };
        let records = read_partition(
            rt,
            log,
            topic,
            p,
            from.get(&p).copied().unwrap_or(0),
            deadline,
            &done,
        );
        out.insert(
            p,
            records
                .into_iter()
                .filter(|r| run_of(&r.record) == Some(run.as_bytes()))
                .collect(),
        );
    }
    out
}

/// How many records of run `run` partition-wise after `from` are in `topic` now.
fn count_run(
    rt: &tokio::runtime::Runtime,
    log: &KafkaLog,
    topic: &str,
    run: &str,
    from: &BTreeMap<u32, u64>,
) -> usize {
    let mut count = 0;
    for p in 0..PARTITIONS {
        let end = block(rt, log.high_watermark(topic, p)).expect("high watermark");
        let start = from.get(&p).copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let records = read_partition(
            rt,
            log,
            topic,
            p,
            start,
            deadline,
            &|rs: &[StoredRecord]| end <= start || rs.last().is_some_and(|r| r.offset + 1 >= end),
        );
        count += records
            .iter()
            .filter(|r| run_of(&r.record) == Some(run.as_bytes()))
            .count();
    }
    count
}

/// What part 1 found for one direction.
struct Compared {
    distinct: usize,
    duplicates: usize,
    same_offsets: bool,
}

/// Check that the mirror of `origin` in `mirror` holds every record of run `run` with the
/// same key, value, headers, partition and timestamp.
fn compare(
    origin: &BTreeMap<u32, Vec<StoredRecord>>,
    mirror: &BTreeMap<u32, Vec<StoredRecord>>,
    what: &str,
) -> Compared {
    let mut distinct = 0;
    let mut duplicates = 0;
    let mut same_offsets = true;
    for (p, records) in origin {
        let mirrored = mirror.get(p).map(Vec::as_slice).unwrap_or(&[]);
        let mut by_seq: HashMap<u32, Vec<&StoredRecord>> = HashMap::new();
        for m in mirrored {
            let seq = seq_of(&m.record).unwrap_or_else(|| panic!("{what}: a record without seq"));
            by_seq.entry(seq).or_default().push(m);
        }
        for o in records {
            let seq = seq_of(&o.record).expect("seq");
            let copies = by_seq.get(&seq).unwrap_or_else(|| {
                panic!(
                    "{what}: record {seq} of partition {p} never arrived (or in another partition)"
                )
            });
            for m in copies {
                assert_eq!(m.record.key, o.record.key, "{what}: key of {seq}");
                assert_eq!(m.record.value, o.record.value, "{what}: value of {seq}");
                assert_eq!(
                    m.record.headers, o.record.headers,
                    "{what}: headers (and their order) of {seq}"
                );
                assert_eq!(
                    m.timestamp_ms, o.timestamp_ms,
                    "{what}: CreateTime timestamp of {seq}"
                );
            }
            if copies[0].offset != o.offset {
                same_offsets = false;
            }
            distinct += 1;
            duplicates += copies.len() - 1;
        }
        // Nothing of this run in a partition it was not written to.
        let extra = by_seq
            .keys()
            .filter(|s| !records.iter().any(|o| seq_of(&o.record) == Some(**s)))
            .count();
        assert_eq!(
            extra, 0,
            "{what}: records in partition {p} that were not written there"
        );
    }
    Compared {
        distinct,
        duplicates,
        same_offsets,
    }
}

/// Part 1 for one direction: fill a topic in `from`, find it mirrored in `to`, compare.
fn mirror_one_way(rt: &tokio::runtime::Runtime, setup: &Setup, from: &str, to: &str, n: u32) {
    let source = connect(&setup.brokers(from));
    let target = connect(&setup.brokers(to));
    let run = common::unique("rg");
    let topic = format!("hektor.{run}.vectors");
    let remote = format!("{from}.{topic}");
    let began = Instant::now();
    fill(rt, &source, &topic, &run, n);
    let mut per_partition = BTreeMap::new();
    for seq in 0..n {
        *per_partition.entry(seq % PARTITIONS).or_insert(0usize) += 1;
    }
    let zero: BTreeMap<u32, u64> = BTreeMap::new();
    let origin = read_run(
        rt,
        &source,
        &topic,
        &run,
        &per_partition,
        &zero,
        Duration::from_secs(20),
    );
    // New topics are found within refresh.topics.interval.seconds (5 s).
    wait_topic(rt, &target, &remote, Duration::from_secs(60));
    let mirrored = read_run(
        rt,
        &target,
        &remote,
        &run,
        &per_partition,
        &zero,
        Duration::from_secs(60),
    );
    let c = compare(&origin, &mirrored, &format!("{from} -> {to}"));
    assert_eq!(c.distinct, n as usize, "{from} -> {to}: records missing");
    eprintln!(
        "{from} -> {to}: {topic} mirrored as {remote} in {:.1} s: {} records, {} duplicates, keys/values/headers/partitions/timestamps kept, offsets {}",
        began.elapsed().as_secs_f64(),
        c.distinct,
        c.duplicates,
        if c.same_offsets { "equal" } else { "differ" }
    );
}

/// Mirroring delays (ms) of `n` single records written to `topic`/0 in `source` every
/// `gap`, seen in `remote`/0 in `target`: wall clock from just before the append to the
/// moment the read returns it.
#[allow(clippy::too_many_arguments)]
fn delays(
    rt: &tokio::runtime::Runtime,
    source: &KafkaLog,
    target: &KafkaLog,
    topic: &str,
    remote: &str,
    run: &str,
    n: u32,
    gap: Duration,
) -> Vec<u64> {
    let from = block(rt, target.high_watermark(remote, 0)).expect("high watermark");
    let reader = {
        let target = target.clone();
        let remote = remote.to_string();
        let run = run.to_string();
        rt.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut next = from;
            let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
            while seen.len() < n as usize && Instant::now() < deadline {
                let batch = target
                    .read(&remote, 0, next, 1000, Duration::from_millis(100))
                    .await
                    .expect("read the mirror");
                let at = now_ms();
                for r in &batch {
                    next = r.offset + 1;
                    if run_of(&r.record) != Some(run.as_bytes()) {
                        continue;
                    }
                    let sent: u64 = std::str::from_utf8(r.record.header("sent-ms").unwrap_or(b"0"))
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if let Some(seq) = seq_of(&r.record) {
                        seen.entry(seq).or_insert(at.saturating_sub(sent));
                    }
                }
            }
            seen.into_values().collect::<Vec<u64>>()
        })
    };
    for seq in 0..n {
        let record = test_record(run, seq, 200).with_header("sent-ms", now_ms().to_string());
        block(rt, source.append(topic, 0, vec![record])).expect("append a probe");
        std::thread::sleep(gap);
    }
    let mut out = block(rt, reader).expect("the reader");
    assert_eq!(
        out.len(),
        n as usize,
        "probes that never arrived in {remote}"
    );
    out.sort_unstable();
    out
}

/// The median of delays in ms (an HDR histogram, exact below 2,048 ms).
fn median(v: &[u64]) -> u64 {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("constant, valid HDR precision");
    for &d in v {
        h.record(d)
            .expect("an auto-resizing histogram takes any value");
    }
    h.value_at_quantile(0.5)
}

#[test]
fn regions_mirror_both_ways_through_the_wan() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    setup.reset();
    let rt = runtime();
    let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());

    // 1. Both ways: everything kept but the offsets.
    mirror_one_way(&rt, &setup, &west, &east, 200);
    mirror_one_way(&rt, &setup, &east, &west, 200);

    // 2a. Latency on the west -> east proxy raises the west -> east delay.
    let wlog = connect(&setup.brokers(&west));
    let elog = connect(&setup.brokers(&east));
    let run = common::unique("lag");
    let topic = format!("hektor.{run}.vectors");
    let remote = format!("{west}.{topic}");
    fill(&rt, &wlog, &topic, &run, PARTITIONS);
    wait_topic(&rt, &elog, &remote, Duration::from_secs(60));
    let warmup = format!("{run}-warmup");
    delays(
        &rt,
        &wlog,
        &elog,
        &topic,
        &remote,
        &warmup,
        3,
        Duration::from_millis(100),
    );
    let base = delays(
        &rt,
        &wlog,
        &elog,
        &topic,
        &remote,
        &format!("{run}-base"),
        15,
        Duration::from_millis(150),
    );
    let proxy = setup.proxy(&west, &east);
    setup.toxic_both_ways(
        &proxy,
        "wan-latency",
        "latency",
        json!({"latency": LATENCY_MS, "jitter": 0}),
    );
    let slow = delays(
        &rt,
        &wlog,
        &elog,
        &topic,
        &remote,
        &format!("{run}-slow"),
        15,
        Duration::from_millis(150),
    );
    setup.remove_toxic_both_ways(&proxy, "wan-latency");
    eprintln!(
        "{west} -> {east} mirroring delay: median {} ms (min {}, max {}) without a toxic; median {} ms (min {}, max {}) with {LATENCY_MS} ms on {proxy}",
        median(&base),
        base[0],
        base[base.len() - 1],
        median(&slow),
        slow[0],
        slow[slow.len() - 1]
    );
    assert!(
        slow[0] >= LATENCY_MS,
        "a record crossed faster than the injected latency: {slow:?} (bytes around the proxy?)"
    );
    // With MirrorMaker at the source a record crosses once, in a produce request: the
    // delay rises by the injected latency exactly, so the medians of two samples differ
    // by it give or take a few ms of scheduling (measured: 13 -> 312 ms): the slack.
    assert!(
        median(&slow) + JITTER_MS >= median(&base) + LATENCY_MS,
        "the delay rose by less than {LATENCY_MS} ms: {base:?} -> {slow:?}"
    );

    // 2b. A partition: west -> east stops (east -> west goes on), then heals.
    let hwm = |log: &KafkaLog, t: &str| -> BTreeMap<u32, u64> {
        (0..PARTITIONS)
            .map(|p| {
                (
                    p,
                    block(&rt, log.high_watermark(t, p)).expect("high watermark"),
                )
            })
            .collect()
    };
    let back_run = common::unique("back");
    let back_topic = format!("hektor.{back_run}.vectors");
    let back_remote = format!("{east}.{back_topic}");
    fill(&rt, &elog, &back_topic, &back_run, PARTITIONS);
    wait_topic(&rt, &wlog, &back_remote, Duration::from_secs(60));
    let west_before = hwm(&wlog, &back_remote);
    let east_before = hwm(&elog, &remote);
    setup.toxiproxy(
        reqwest::Method::POST,
        &format!("/proxies/{proxy}"),
        Some(json!({"enabled": false})),
    );
    let cut_at = Instant::now();
    let part_run = format!("{run}-partition");
    let back_part_run = format!("{back_run}-partition");
    let n = 100u32;
    let mut per_partition = BTreeMap::new();
    for p in 0..PARTITIONS {
        let seqs: Vec<u32> = (0..n).filter(|s| s % PARTITIONS == p).collect();
        per_partition.insert(p, seqs.len());
        let records = seqs
            .iter()
            .map(|&s| test_record(&part_run, s, 200))
            .collect();
        block(&rt, wlog.append(&topic, p, records)).expect("append in west during the partition");
        let back = seqs
            .iter()
            .map(|&s| test_record(&back_part_run, s, 200))
            .collect();
        block(&rt, elog.append(&back_topic, p, back)).expect("append in east during the partition");
    }
    // East -> west keeps mirroring through its own proxy.
    let back_seen: usize = read_run(
        &rt,
        &wlog,
        &back_remote,
        &back_part_run,
        &per_partition,
        &west_before,
        Duration::from_secs(30),
    )
    .values()
    .map(Vec::len)
    .sum();
    assert!(
        back_seen >= n as usize,
        "{east} -> {west} stopped while only {west} -> {east} was cut: {back_seen} of {n}"
    );
    // Keep the cut at least 5 s, then check that nothing of west's crossed it.
    let hold = Duration::from_secs(5);
    if cut_at.elapsed() < hold {
        std::thread::sleep(hold - cut_at.elapsed());
    }
    let leaked = count_run(&rt, &elog, &remote, &part_run, &east_before);
    assert_eq!(
        leaked, 0,
        "records crossed {west} -> {east} while {proxy} was disabled"
    );
    let partitioned = cut_at.elapsed();
    setup.toxiproxy(
        reqwest::Method::POST,
        &format!("/proxies/{proxy}"),
        Some(json!({"enabled": true})),
    );
    let healed_at = Instant::now();
    let after = read_run(
        &rt,
        &elog,
        &remote,
        &part_run,
        &per_partition,
        &east_before,
        Duration::from_secs(90),
    );
    let origin = read_run(
        &rt,
        &wlog,
        &topic,
        &part_run,
        &per_partition,
        &BTreeMap::new(),
        Duration::from_secs(20),
    );
    let c = compare(&origin, &after, &format!("{west} -> {east} after healing"));
    assert_eq!(
        c.distinct, n as usize,
        "records written during the partition lost"
    );
    eprintln!(
        "partition of {proxy} for {:.1} s: nothing crossed; after healing all {} records arrived in {:.1} s ({} duplicates); {east} -> {west} kept mirroring meanwhile",
        partitioned.as_secs_f64(),
        c.distinct,
        healed_at.elapsed().as_secs_f64(),
        c.duplicates
    );
    setup.reset();
}

/// Records/s MM2 mirrors west -> east over a 70 ms round trip (35 ms each way on the
/// proxy) for 1.6 KB records, against the same without latency. Ignored: a measurement.
#[test]
#[ignore]
fn regions_mirror_throughput_over_70ms_rtt() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    setup.reset();
    let rt = runtime();
    let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());
    let wlog = connect(&setup.brokers(&west));
    let elog = connect(&setup.brokers(&east));
    let proxy = setup.proxy(&west, &east);
    let records: u32 = std::env::var("HEKTOR_REGIONS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    for rtt in [0u64, 70] {
        let run = common::unique("tput");
        let topic = format!("hektor.{run}.vectors");
        let remote = format!("{west}.{topic}");
        fill(&rt, &wlog, &topic, &run, PARTITIONS);
        wait_topic(&rt, &elog, &remote, Duration::from_secs(60));
        if rtt > 0 {
            for stream in ["upstream", "downstream"] {
                setup.toxiproxy(
                    reqwest::Method::POST,
                    &format!("/proxies/{proxy}/toxics"),
                    Some(
                        json!({"name": format!("rtt-{stream}"), "type": "latency", "stream": stream,
                                "toxicity": 1.0, "attributes": {"latency": rtt / 2, "jitter": 0}}),
                    ),
                );
            }
        }
        // The delay of single records first (one every 100 ms), then the bulk rate. The
        // warm-up waits out the restart of MM2's task that a new topic causes.
        delays(
            &rt,
            &wlog,
            &elog,
            &topic,
            &remote,
            &format!("{run}-warmup"),
            3,
            Duration::from_millis(100),
        );
        let d = delays(
            &rt,
            &wlog,
            &elog,
            &topic,
            &remote,
            &format!("{run}-probe"),
            20,
            Duration::from_millis(100),
        );
        eprintln!(
            "RTT {rtt} ms: mirroring delay of single records: median {} ms, max {} ms",
            median(&d),
            d[d.len() - 1]
        );
        let base: u64 = (0..PARTITIONS)
            .map(|p| block(&rt, elog.high_watermark(&remote, p)).expect("hwm"))
            .sum();
        let began = Instant::now();
        // Produce as fast as the local broker takes it, in batches of 500 per partition.
        let batch = 500u32;
        let mut produced = 0u32;
        let producers: Vec<_> = (0..PARTITIONS)
            .map(|p| {
                let wlog = wlog.clone();
                let topic = topic.clone();
                let run = run.clone();
                let per = records / PARTITIONS;
                rt.spawn(async move {
                    let mut seq = 0u32;
                    while seq < per {
                        let n = batch.min(per - seq);
                        let rs: Vec<LogRecord> = (seq..seq + n)
                            .map(|s| test_record(&run, s * PARTITIONS + p, 1600))
                            .collect();
                        wlog.append(&topic, p, rs).await.expect("append");
                        seq += n;
                    }
                    per
                })
            })
            .collect();
        for h in producers {
            produced += block(&rt, h).expect("producer");
        }
        let produce_s = began.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(180);
        let target = base + u64::from(produced);
        let mut have = base;
        while have < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            have = (0..PARTITIONS)
                .map(|p| block(&rt, elog.high_watermark(&remote, p)).expect("hwm"))
                .sum();
        }
        let total_s = began.elapsed().as_secs_f64();
        setup.reset();
        let mirrored = have - base;
        eprintln!(
            "RTT {rtt} ms: {produced} records of 1.6 KB produced in west in {produce_s:.1} s ({:.0}/s); {mirrored} in east after {total_s:.1} s: {:.0} records/s mirrored ({:.1} MB/s)",
            f64::from(produced) / produce_s,
            mirrored as f64 / total_s,
            mirrored as f64 * 1600.0 / total_s / 1e6
        );
        assert!(
            mirrored >= u64::from(produced),
            "only {mirrored} of {produced} records mirrored within 180 s at RTT {rtt} ms"
        );
    }
}

/// Write `rate` records/s to `topic` (all partitions) in `log` for `secs`; returns how
/// many were written. Run on its own thread.
fn steady_load(
    log: KafkaLog,
    topic: String,
    run: String,
    rate: u32,
    secs: u64,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let rt = runtime();
        let began = Instant::now();
        let mut seq = 0u32;
        while began.elapsed() < Duration::from_secs(secs) {
            // Batches of rate/10 every 100 ms, spread over the partitions.
            let until =
                ((began.elapsed().as_millis() as u64 + 100) * u64::from(rate) / 1000) as u32;
            for p in 0..PARTITIONS {
                let records: Vec<LogRecord> = (seq..until)
                    .filter(|s| s % PARTITIONS == p)
                    .map(|s| test_record(&run, s, 1600))
                    .collect();
                if !records.is_empty() {
                    block(&rt, log.append(&topic, p, records)).expect("append under load");
                }
            }
            seq = until.max(seq);
            std::thread::sleep(Duration::from_millis(100));
        }
        seq
    })
}

/// At least once, measured: under a steady load, (a) a black-hole partition (Toxiproxy's
/// `timeout` toxic: bytes dropped, connections kept) of the west -> east proxy, and (b)
/// the MM2 that mirrors west -> east (west's at the source, east's at the target) killed
/// with SIGKILL and started again. Counts what arrives twice and whether offsets still
/// match. Ignored: a measurement (about 2 minutes).
#[test]
#[ignore]
fn regions_mirror_redelivery_after_faults() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    setup.reset();
    let rt = runtime();
    let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());
    let wlog = connect(&setup.brokers(&west));
    let elog = connect(&setup.brokers(&east));
    let proxy = setup.proxy(&west, &east);
    let secs = std::env::var("HEKTOR_REGIONS_FAULT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64);
    for fault in ["black-hole", "kill-mm2"] {
        let run = common::unique("redeliver");
        let topic = format!("hektor.{run}.vectors");
        let remote = format!("{west}.{topic}");
        fill(&rt, &wlog, &topic, &run, PARTITIONS);
        wait_topic(&rt, &elog, &remote, Duration::from_secs(60));
        delays(
            &rt,
            &wlog,
            &elog,
            &topic,
            &remote,
            &format!("{run}-w"),
            3,
            Duration::from_millis(100),
        );
        let load_run = format!("{run}-load");
        let load = steady_load(
            wlog.clone(),
            topic.clone(),
            load_run.clone(),
            500,
            secs + 10,
        );
        std::thread::sleep(Duration::from_secs(5));
        match fault {
            "black-hole" => {
                setup.toxic_both_ways(&proxy, "black-hole", "timeout", json!({"timeout": 0}));
                std::thread::sleep(Duration::from_secs(secs));
                setup.remove_toxic_both_ways(&proxy, "black-hole");
            }
            _ => {
                let runs_flow = match setup.env.get("HEKTOR_MM2_SIDE").map(String::as_str) {
                    Some("target") => &east,
                    _ => &west,
                };
                let pid_file = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!(".regions/{runs_flow}/mm2/mm2.pid"));
                let pid = std::fs::read_to_string(&pid_file).expect("MM2 pid file");
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                std::thread::sleep(Duration::from_secs(2));
                let (ok, _) = regions_sh(&["start"], Duration::from_secs(300));
                assert!(ok, "regions.sh start after killing MM2");
            }
        }
        let healed = Instant::now();
        let written = load.join().expect("load");
        let mut per_partition = BTreeMap::new();
        for s in 0..written {
            *per_partition.entry(s % PARTITIONS).or_insert(0usize) += 1;
        }
        let zero = BTreeMap::new();
        let origin = read_run(
            &rt,
            &wlog,
            &topic,
            &load_run,
            &per_partition,
            &zero,
            Duration::from_secs(30),
        );
        let mirrored = read_run(
            &rt,
            &elog,
            &remote,
            &load_run,
            &per_partition,
            &zero,
            Duration::from_secs(120),
        );
        let c = compare(&origin, &mirrored, fault);
        eprintln!(
            "{fault} ({secs} s) under 500 records/s: {} of {written} arrived, {} duplicates, offsets {}, all in {:.1} s after the fault ended",
            c.distinct,
            c.duplicates,
            if c.same_offsets { "equal" } else { "differ" },
            healed.elapsed().as_secs_f64()
        );
        assert_eq!(c.distinct, written as usize, "{fault}: records lost");
    }
    setup.reset();
}

/// One region's hektor node: `hektor serve` on that region's broker, merging the other
/// regions' mirrored vectors topics, and calling the other regions' nodes through the
/// HTTP proxies between them (`--region-peers`, probed every 250 ms).
fn start_region_node(setup: &Setup, region: &str, dir: &Path, extra: &[&str]) -> common::Server {
    let others: Vec<&str> = setup
        .regions
        .iter()
        .map(String::as_str)
        .filter(|r| *r != region)
        .collect();
    // On the port the other regions' HTTP proxies lead to, calling them through theirs.
    let (port, peers) = setup.node_http(region);
    common::start_server_on(
        dir,
        Some(&setup.brokers(region)),
        port,
        &[
            &[
                "--region",
                region,
                "--mirror-regions",
                &others.join(","),
                "--region-peers",
                &peers,
                "--region-probe-ms",
                "250",
                "--node-id",
                &format!("{region}-1"),
            ],
            extra,
        ]
        .concat(),
    )
}

/// Wait (bounded) until the node at `url` holds every shard of `collection` open.
fn wait_open(url: &str, collection: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, view) = common::get(&format!("{url}/collections/{collection}"));
        let open = status == 200
            && view["complete"] == json!(true)
            && view["shards"]
                .as_array()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["vectors"].is_u64()));
        if open {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: the shards of {collection} never opened: {view}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every id as one region answers it: (vector, payload, winning hlc, winning origin), or
/// `None` when it is not there.
type Contents = BTreeMap<String, Option<(Value, Value, Value, Value)>>;

fn contents(url: &str, collection: &str, ids: &[String]) -> Contents {
    ids.iter()
        .map(|id| {
            let (status, body) =
                common::get(&format!("{url}/collections/{collection}/vectors/{id}"));
            let v = match status {
                200 => Some((
                    body["vector"].clone(),
                    body["payload"].clone(),
                    body["written"]["hlc"].clone(),
                    body["written"]["origin"].clone(),
                )),
                404 => None,
                s => panic!("GET {id}: {s} {body}"),
            };
            (id.clone(), v)
        })
        .collect()
}

/// Conflicting writes to the same ids in both regions, some while the regions are cut
/// off from each other, end in identical shard contents in both regions: every id has the
/// same vector, payload and winning write (or is deleted) in both, and both regions'
/// writes win for some ids. Writes keep working in both regions during the cut.
#[test]
fn hektor_regions_merge_conflicting_writes_and_converge_after_a_partition() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());
    let tmp = tempfile::tempdir().expect("tempdir");
    let wnode = start_region_node(&setup, &west, &tmp.path().join("west"), &[]);
    let enode = start_region_node(&setup, &east, &tmp.path().join("east"), &[]);
    let collection = common::unique("merge");
    const DIM: usize = 8;
    // Created in west only: east adopts it from west's mirrored catalog.
    common::create_collection(&wnode.url, &collection, DIM, 2);
    // Writes carry what their region has merged only once its node holds the shards
    // (before, it cannot tell, and their conflicts go uncounted): wait for them to open.
    for node in [&wnode, &enode] {
        wait_open(&node.url, &collection);
    }
    let ids: Vec<String> = (0..120).map(|i| format!("doc-{i}")).collect();
    let write = |url: &str, region: &str, round: u32, rng: &mut StdRng| {
        let mut upserts: Vec<Value> = Vec::new();
        let mut deletes: Vec<Value> = Vec::new();
        for id in &ids {
            let dice: f64 = rng.random();
            if dice < 0.7 {
                let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(0.1f32..1.0)).collect();
                upserts.push(
                    json!({"id": id, "vector": v, "payload": {"region": region, "round": round}}),
                );
            } else if dice < 0.75 {
                deletes.push(json!(id));
            }
        }
        let (status, body) = common::post(
            &format!("{url}/collections/{collection}/vectors"),
            &json!({"upserts": upserts, "deletes": deletes}),
        );
        assert_eq!(status, 200, "write in {region}: {body}");
    };
    // Rounds of conflicting writes from both regions at once.
    let mut wrng = StdRng::seed_from_u64(7);
    let mut erng = StdRng::seed_from_u64(8);
    for round in 0..4 {
        std::thread::scope(|s| {
            s.spawn(|| write(&wnode.url, &west, round, &mut wrng));
            s.spawn(|| write(&enode.url, &east, round, &mut erng));
        });
    }
    // Cut both directions (Kafka and the nodes' HTTP); writes keep being accepted in both
    // regions.
    for proxy in setup.proxies_between(&west, &east) {
        setup.toxiproxy(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(json!({"enabled": false})),
        );
    }
    for round in 4..8 {
        write(&wnode.url, &west, round, &mut wrng);
        write(&enode.url, &east, round, &mut erng);
        std::thread::sleep(Duration::from_secs(2));
    }
    setup.reset();
    let healed = Instant::now();
    let deadline = healed + Duration::from_secs(120);
    let (w, e) = loop {
        let (w, e) = (
            contents(&wnode.url, &collection, &ids),
            contents(&enode.url, &collection, &ids),
        );
        if w == e || Instant::now() > deadline {
            break (w, e);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let differing: Vec<&String> = ids.iter().filter(|id| w[*id] != e[*id]).collect();
    assert!(
        differing.is_empty(),
        "{} of {} ids differ between {west} and {east} {:?} after the heal, e.g. {:?}: {:?} vs {:?}",
        differing.len(),
        ids.len(),
        deadline.saturating_duration_since(healed),
        differing[0],
        w[differing[0]],
        e[differing[0]]
    );
    eprintln!(
        "regions converged {:.1} s after the heal",
        healed.elapsed().as_secs_f64()
    );
    let winners: std::collections::HashSet<String> = w
        .values()
        .flatten()
        .map(|(_, _, _, origin)| origin.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        winners.contains(&west) && winners.contains(&east),
        "both regions' writes should win some ids (real conflicts): {winners:?}"
    );
    // The winner's payload names the winning region: the vector and payload travel together.
    for (id, v) in &w {
        if let Some((_, payload, _, origin)) = v {
            assert_eq!(
                &payload["region"], origin,
                "{id}: payload and origin disagree"
            );
        }
    }

    // Each shard shows how far it has merged the other region: all of it, soon.
    for (node, other) in [(&wnode, &east), (&enode, &west)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, view) = common::get(&format!("{}/collections/{collection}", node.url));
            assert_eq!(status, 200, "{view}");
            let shards = view["shards"].as_array().cloned().unwrap_or_default();
            let incomplete = shards.iter().find(|shard| {
                let m = &shard["mirrored"][other.as_str()];
                let (next, hw) = (m["next_offset"].as_u64(), m["high_watermark"].as_u64());
                !(next.is_some_and(|n| n > 0) && next == hw && m["duplicates"].is_u64())
            });
            match incomplete {
                None if !shards.is_empty() => break,
                _ if Instant::now() > deadline => panic!(
                    "{}: a shard shows no complete merge of {other}: {view}",
                    node.url
                ),
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    // GET /cluster names the other region, with nothing left to merge (soon: ticks keep
    // arriving, so a sample may catch one in flight).
    for (node, other) in [(&wnode, &east), (&enode, &west)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let entry = loop {
            let (_, cluster) = common::get(&format!("{}/cluster", node.url));
            let entry = cluster["regions"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["region"] == json!(other)))
                .cloned()
                .unwrap_or_else(|| {
                    panic!("{}: /cluster has no region {other}: {cluster}", node.url)
                });
            if entry["behind"] == json!(0) || Instant::now() > deadline {
                break entry;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(entry["shards"].as_u64() > Some(0), "{entry}");
        assert_eq!(entry["behind"], json!(0), "{entry}");
        assert!(
            entry["oldest_merged_ms"].as_u64() > Some(1_600_000_000_000),
            "{entry}"
        );
    }

    // The conflicts were seen as such: counted per shard in both regions, and flagged on
    // ids whose winning write met a write of the other region it had not seen.
    for node in [&wnode, &enode] {
        let (_, view) = common::get(&format!("{}/collections/{collection}", node.url));
        let conflicts: u64 = view["shards"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["conflicts"].as_u64()).sum())
            .unwrap_or(0);
        assert!(conflicts > 0, "{}: no conflict counted: {view}", node.url);
        let flagged = ids
            .iter()
            .filter(|id| {
                let (_, body) = common::get(&format!(
                    "{}/collections/{collection}/vectors/{id}",
                    node.url
                ));
                body["written"]["concurrent"] == json!(true)
            })
            .count();
        assert!(
            flagged > 0,
            "{}: no id says its write met a concurrent one",
            node.url
        );
    }

    // Clock skew: east's node restarts with its wall clock a minute behind. A write it
    // accepts after it has merged west's write of the same id must still win everywhere
    // (its clock observed west's stamp), not be dropped as older.
    drop(enode);
    let enode = start_region_node(
        &setup,
        &east,
        &tmp.path().join("east"),
        &["--clock-skew-ms", "-60000"],
    );
    let id = "skewed".to_string();
    let url_of = |node: &common::Server| format!("{}/collections/{collection}/vectors", node.url);
    let origin_of = |node: &common::Server| {
        contents(&node.url, &collection, std::slice::from_ref(&id))[&id]
            .as_ref()
            .and_then(|(_, _, _, o)| o.as_str().map(str::to_string))
    };
    let wait_origin = |node: &common::Server, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while origin_of(node).as_deref() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "{} never showed {want}'s write of {id}: {:?}",
                node.url,
                origin_of(node)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let one = |region: &str| json!({"upserts": [{"id": id, "vector": vec![0.5f32; DIM], "payload": {"region": region}}]});
    let (status, body) = common::post(&url_of(&wnode), &one(&west));
    assert_eq!(status, 200, "{body}");
    wait_origin(&enode, &west);
    let (status, body) = common::post(&url_of(&enode), &one(&east));
    assert_eq!(status, 200, "{body}");
    wait_origin(&enode, &east);
    wait_origin(&wnode, &east);
    // East wrote it knowing west's write: causally later, not a conflict, in both regions.
    for node in [&wnode, &enode] {
        let (_, body) = common::get(&format!(
            "{}/collections/{collection}/vectors/{id}",
            node.url
        ));
        assert_eq!(
            body["written"]["concurrent"],
            json!(false),
            "{}: {body}",
            node.url
        );
    }
}

/// The sum of the samples of metric `name` at `url`'s `/metrics` whose labels include
/// every `key="value"` of `labels`.
fn metric(url: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::blocking::get(format!("{url}/metrics"))
        .and_then(|r| r.text())
        .expect("GET /metrics");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Poll `check` every 250 ms until it holds; panics with `what` past `within`. Returns how
/// long it took.
fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !check() {
        assert!(began.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    began.elapsed()
}

/// The catalog across regions (issue #17), on the real setup: a collection created in
/// west only appears in east within a bounded time (its shards open, east's node counts
/// the adoption) and writes made in both regions converge; dropped in east, it goes in
/// west too. Created in both regions with different settings while they are cut off
/// from each other, each region keeps its own and shows the conflict after the heal; a
/// drop in one region then removes it in both, and one create reaches both again.
#[test]
fn hektor_regions_catalog_follows_creates_and_drops_across_regions() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());
    let tmp = tempfile::tempdir().expect("tempdir");
    let wnode = start_region_node(&setup, &west, &tmp.path().join("west"), &[]);
    let enode = start_region_node(&setup, &east, &tmp.path().join("east"), &[]);
    const DIM: usize = 8;
    let bound = Duration::from_secs(60);

    // 1. Created in west only.
    let collection = common::unique("catalog");
    let adopted_before = metric(
        &enode.url,
        "hektor_catalog_adopted_total",
        &[("region", &west)],
    );
    common::create_collection(&wnode.url, &collection, DIM, 2);
    let took = wait_for(
        bound,
        &format!("{collection} created in {west} appears in {east}"),
        || common::get(&format!("{}/collections/{collection}", enode.url)).0 == 200,
    );
    eprintln!(
        "{collection} created in {west} appeared in {east} after {:.1} s",
        took.as_secs_f64()
    );
    for node in [&wnode, &enode] {
        wait_open(&node.url, &collection);
    }
    let (_, view) = common::get(&format!("{}/collections/{collection}", enode.url));
    assert_eq!(
        view["settings"]["dimension"].as_u64(),
        Some(DIM as u64),
        "{view}"
    );
    assert!(
        metric(
            &enode.url,
            "hektor_catalog_adopted_total",
            &[("region", &west)]
        ) > adopted_before,
        "{east}'s node should count the adoption"
    );

    // 2. Writes in both regions (own ids and shared ones, written in both) converge.
    let ids: Vec<String> = (0..30)
        .flat_map(|i| [format!("w-{i}"), format!("e-{i}"), format!("s-{i}")])
        .collect();
    let mut rng = StdRng::seed_from_u64(17);
    for (node, region, prefixes) in [(&wnode, &west, ["w-", "s-"]), (&enode, &east, ["e-", "s-"])] {
        let upserts: Vec<Value> = ids
            .iter()
            .filter(|id| prefixes.iter().any(|p| id.starts_with(p)))
            .map(|id| {
                let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(0.1f32..1.0)).collect();
                json!({"id": id, "vector": v, "payload": {"region": region}})
            })
            .collect();
        let (status, body) = common::post(
            &format!("{}/collections/{collection}/vectors", node.url),
            &json!({ "upserts": upserts }),
        );
        assert_eq!(status, 200, "write in {region}: {body}");
    }
    let mut last = (Contents::new(), Contents::new());
    let took = wait_for(
        Duration::from_secs(120),
        "the writes of both regions converge",
        || {
            last = (
                contents(&wnode.url, &collection, &ids),
                contents(&enode.url, &collection, &ids),
            );
            last.0 == last.1 && last.0.values().all(Option::is_some)
        },
    );
    eprintln!(
        "both regions' writes converged after {:.1} s",
        took.as_secs_f64()
    );
    let winners: BTreeSet<String> = last
        .0
        .values()
        .flatten()
        .map(|(_, _, _, origin)| origin.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        winners.contains(&west) && winners.contains(&east),
        "{winners:?}"
    );

    // 3. Dropped in east: it goes in west.
    let adopted_before = metric(
        &wnode.url,
        "hektor_catalog_adopted_total",
        &[("region", &east)],
    );
    let dropping = Instant::now();
    let (status, body) = common::call(
        reqwest::Method::DELETE,
        &format!("{}/collections/{collection}", enode.url),
        None,
    );
    assert_eq!(status, 200, "drop in {east}: {body}");
    let took = wait_for(
        bound,
        &format!("{collection} dropped in {east} goes in {west}"),
        || common::get(&format!("{}/collections/{collection}", wnode.url)).0 == 404,
    );
    eprintln!(
        "dropped in {east} (answered in {:.1} s), gone in {west} {:.1} s after the request",
        (dropping.elapsed() - took).as_secs_f64(),
        dropping.elapsed().as_secs_f64()
    );
    assert!(
        metric(
            &wnode.url,
            "hektor_catalog_adopted_total",
            &[("region", &east)]
        ) > adopted_before,
        "{west}'s node should have adopted {east}'s drop"
    );
    assert_eq!(
        common::get(&format!("{}/collections/{collection}", enode.url)).0,
        404
    );

    // 4. Created in both regions with other settings while they are cut off: each keeps
    // its own and shows the conflict once the regions hear from each other again.
    let twice = common::unique("twice");
    for proxy in setup.proxies_between(&west, &east) {
        setup.toxiproxy(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(json!({"enabled": false})),
        );
    }
    common::create_collection(&wnode.url, &twice, DIM, 2);
    common::create_collection(&enode.url, &twice, DIM * 2, 2);
    setup.reset();
    for (node, other) in [(&wnode, &east), (&enode, &west)] {
        wait_for(
            Duration::from_secs(90),
            &format!("{}: the conflict with {other} over {twice} shows", node.url),
            || {
                metric(
                    &node.url,
                    "hektor_catalog_conflicts",
                    &[("collection", &twice), ("region", other)],
                ) == 1.0
            },
        );
    }
    // GET /cluster names it under the other region's catalog too.
    for (node, other) in [(&wnode, &east), (&enode, &west)] {
        let (status, view) = common::get(&format!("{}/cluster", node.url));
        assert_eq!(status, 200, "{view}");
        let region = view["regions"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["region"] == json!(other)))
            .unwrap_or_else(|| panic!("{}: no region {other} in {view}", node.url));
        let named = region["catalog"]["conflicts"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == &json!(twice)));
        assert!(
            named,
            "{}: {twice} not among {other}'s conflicts: {region}",
            node.url
        );
        assert!(
            region["catalog"]["adopted"].as_u64().unwrap_or(0) > 0,
            "{}: {region}",
            node.url
        );
    }
    let dimension_in = |node: &common::Server| {
        let (status, view) = common::get(&format!("{}/collections/{twice}", node.url));
        assert_eq!(status, 200, "{view}");
        view["settings"]["dimension"].as_u64()
    };
    assert_eq!(
        dimension_in(&wnode),
        Some(DIM as u64),
        "{west} keeps its own"
    );
    assert_eq!(
        dimension_in(&enode),
        Some(2 * DIM as u64),
        "{east} keeps its own"
    );
    // A drop in west is newer than both creates: it removes the name in both regions.
    let (status, body) = common::call(
        reqwest::Method::DELETE,
        &format!("{}/collections/{twice}", wnode.url),
        None,
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        bound,
        &format!("{twice} dropped in {west} goes in {east}"),
        || common::get(&format!("{}/collections/{twice}", enode.url)).0 == 404,
    );
    for (node, other) in [(&wnode, &east), (&enode, &west)] {
        assert_eq!(
            metric(
                &node.url,
                "hektor_catalog_conflicts",
                &[("collection", &twice), ("region", other)],
            ),
            0.0,
            "{}: the conflict is over",
            node.url
        );
    }
    // Created once, in east: it reaches west, with east's settings.
    common::create_collection(&enode.url, &twice, DIM * 2, 2);
    wait_for(
        bound,
        &format!("{twice} created again in {east} appears in {west}"),
        || common::get(&format!("{}/collections/{twice}", wnode.url)).0 == 200,
    );
    assert_eq!(dimension_in(&wnode), Some(2 * DIM as u64));
}

/// Dimension of the collection a [`Wan`] creates.
const WAN_DIM: usize = 8;

/// Two regions with 35 ms each way on every path between them (Kafka's and the nodes'
/// HTTP), a node in each (ticks every 100 ms) and one collection created in both, open.
struct Wan {
    west: String,
    east: String,
    wnode: common::Server,
    enode: common::Server,
    collection: String,
    _tmp: tempfile::TempDir,
}

impl Wan {
    fn start(setup: &Setup, tag: &str) -> Wan {
        let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());
        for proxy in setup.proxies_between(&west, &east) {
            setup.toxic_both_ways(
                &proxy,
                "wan",
                "latency",
                json!({"latency": 35, "jitter": 0}),
            );
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let fast = ["--tick-ms", "100"];
        let wnode = start_region_node(setup, &west, &tmp.path().join("west"), &fast);
        let enode = start_region_node(setup, &east, &tmp.path().join("east"), &fast);
        let collection = common::unique(tag);
        common::create_collection(&wnode.url, &collection, WAN_DIM, 2);
        common::create_collection(&enode.url, &collection, WAN_DIM, 2);
        for node in [&wnode, &enode] {
            wait_open(&node.url, &collection);
        }
        Wan {
            west,
            east,
            wnode,
            enode,
            collection,
            _tmp: tmp,
        }
    }
}

/// Vector `i` of a [`Wan`]'s collection: along axis `i mod WAN_DIM`, the rest small.
fn wan_vector(i: usize) -> Vec<f32> {
    (0..WAN_DIM)
        .map(|d| {
            if d == i % WAN_DIM {
                1.0
            } else {
                0.01 * (i / WAN_DIM + 1) as f32
            }
        })
        .collect()
}

/// Consistency levels of reads and replication levels of writes across two regions over
/// a 35 ms (each way) WAN, then with the regions cut off from each other:
/// - a `strong` search in one region sees a write acknowledged in the other just before
///   (every time, not by luck of timing);
/// - a `sync` write is answered only once the other region has applied it: a plain read
///   there right after the answer finds it; `quorum` (a majority of two is both) too;
/// - cut off: a `sync` write answers 504 naming the region that has it and the one that
///   did not confirm, and still reaches it after the heal; a `strong` search answers 504
///   naming the region it is behind; a `bounded` search with a generous bound and an
///   `eventual` one answer 200;
/// - bad levels are 400/422s, not waits.
#[test]
fn hektor_regions_consistency_and_write_levels() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    let Wan {
        west,
        east,
        wnode,
        enode,
        collection,
        _tmp,
    } = Wan::start(&setup, "levels");
    let vector_of = |i: usize| wan_vector(i);
    let write = |node: &common::Server, id: &str, v: &[f32], query: &str| {
        common::post(
            &format!("{}/collections/{collection}/vectors{query}", node.url),
            &json!({"upserts": [{"id": id, "vector": v}]}),
        )
    };
    let search = |node: &common::Server, v: &[f32], consistency: Value| {
        common::post(
            &format!("{}/collections/{collection}/search", node.url),
            &json!({"vector": v, "k": 1, "without_payload": true, "consistency": consistency}),
        )
    };
    let get = |node: &common::Server, id: &str| {
        common::get(&format!(
            "{}/collections/{collection}/vectors/{id}",
            node.url
        ))
        .0
    };
    // Both regions serve, and each has heard the other's ticks (its floors advance).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, _) = search(
            &enode,
            &vector_of(0),
            json!({"level": "strong", "timeout_ms": 2000}),
        );
        let (b, _) = search(
            &wnode,
            &vector_of(0),
            json!({"level": "strong", "timeout_ms": 2000}),
        );
        if a == 200 && b == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "strong searches never answered: {a} {b}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Strong reads in east see west's acknowledged writes, every time.
    let mut waits = Vec::new();
    for i in 0..6 {
        let id = format!("strong-{i}");
        let v = vector_of(i);
        let (status, body) = write(&wnode, &id, &v, "");
        assert_eq!(status, 200, "{body}");
        let began = Instant::now();
        let (status, body) = search(&enode, &v, json!({"level": "strong"}));
        waits.push(began.elapsed().as_millis() as u64);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["hits"][0]["id"],
            json!(id),
            "strong read in {east} missed {id}: {body}"
        );
    }
    eprintln!("strong reads in {east} after a write in {west}: waited {waits:?} ms");

    // Sync and quorum writes: answered once the other region has the write.
    for (i, level) in [(10, "sync"), (11, "quorum"), (12, "sync")] {
        let id = format!("{level}-{i}");
        let began = Instant::now();
        let (status, body) = write(&wnode, &id, &vector_of(i), &format!("?replication={level}"));
        let took = began.elapsed().as_millis();
        assert_eq!(status, 200, "{level} write: {body}");
        assert_eq!(body["replicated"]["regions"], json!([west, east]), "{body}");
        assert_eq!(
            get(&enode, &id),
            200,
            "{east} lacks {id} right after its {level} write was answered"
        );
        eprintln!("{level} write answered in {took} ms");
    }
    // Each node measures its round trip to the other region's node through the proxies
    // (35 ms each way: at least 70 ms), and shows it in GET /cluster.
    for (node, other) in [(&wnode, &east), (&enode, &west)] {
        let (_, cluster) = common::get(&format!("{}/cluster", node.url));
        let region = cluster["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["region"] == json!(other)))
            .cloned()
            .unwrap_or(Value::Null);
        let rtt = region["rtt_ms"].as_f64();
        assert!(
            rtt.is_some_and(|ms| (70.0..1000.0).contains(&ms)),
            "{}: the round trip to {other} should be measured through the 35 ms proxies: {region}",
            node.url
        );
        assert_eq!(region["peer"]["alive"], json!(true), "{region}");
        eprintln!("round trip to {other}: {rtt:?} ms (moving mean of the probes)");
    }
    let acks = |node: &common::Server, region: &str, via: &str| -> f64 {
        let metrics = reqwest::blocking::get(format!("{}/metrics", node.url))
            .and_then(|r| r.text())
            .expect("GET /metrics");
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("hektor_region_acks_total{")
                    && l.contains(&format!("region=\"{region}\""))
                    && l.contains(&format!("via=\"{via}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        acks(&wnode, &east, "peer") >= 1.0,
        "the sync writes above should have been confirmed by {east}'s node over HTTP"
    );

    // One way cut: east's records (its writes, its ticks and the `seen` vectors on them)
    // no longer reach west; west's still reach east, and the nodes still talk over HTTP.
    setup.toxiproxy(
        reqwest::Method::POST,
        &format!("/proxies/{}", setup.proxy(&east, &west)),
        Some(json!({"enabled": false})),
    );
    std::thread::sleep(Duration::from_secs(1));
    // A sync write in west is confirmed by east's node itself, one crossing back: west
    // could not learn it from east's records any more.
    let before = acks(&wnode, &east, "peer");
    let (status, body) = write(
        &wnode,
        "one-way",
        &vector_of(30),
        "?replication=sync&timeout_ms=5000",
    );
    assert_eq!(
        status, 200,
        "sync write with only west->east mirrored: {body}"
    );
    assert_eq!(body["replicated"]["regions"], json!([west, east]), "{body}");
    assert_eq!(
        acks(&wnode, &east, "peer"),
        before + 1.0,
        "confirmed by {east}'s node"
    );
    // A strong read in west cannot be answered there (east's copy in west stopped), so it
    // goes to east, where both regions' copies are fresh, and says so.
    let (status, body) = search(
        &wnode,
        &vector_of(30),
        json!({"level": "strong", "timeout_ms": 5000}),
    );
    assert_eq!(
        status, 200,
        "strong read in {west} with {east}'s copy cut: {body}"
    );
    assert_eq!(body["region"], json!(east), "answered by {east}: {body}");
    assert_eq!(body["hits"][0]["id"], json!("one-way"), "{body}");
    // Eventual reads are never forwarded.
    let (status, body) = search(&wnode, &vector_of(30), json!({"level": "eventual"}));
    assert_eq!(status, 200, "{body}");
    assert!(body.get("region").is_none(), "{body}");
    setup.toxiproxy(
        reqwest::Method::POST,
        &format!("/proxies/{}", setup.proxy(&east, &west)),
        Some(json!({"enabled": true})),
    );
    // The floors stream east keeps open to west: a bad or foreign question is a 400, a
    // good one a line per partition merged, then the stream stays open.
    for query in [
        format!("origin={east}"),
        String::new(),
        format!("origin={west}&floor=1"),
    ] {
        let (status, body) = common::get(&format!("{}/internal/regions/floors?{query}", enode.url));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
    let stream = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
        .get(format!(
            "{}/internal/regions/floors?origin={west}",
            enode.url
        ))
        .send()
        .expect("GET /internal/regions/floors");
    assert_eq!(stream.status(), 200);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream));
    let mut partitions = BTreeSet::new();
    while partitions.len() < 2 {
        let line = lines
            .next()
            .expect("a floor line")
            .expect("a readable line");
        if line.is_empty() {
            continue;
        }
        let floor: Value = serde_json::from_str(&line).expect("a JSON floor line");
        if floor["collection"] == json!(collection) {
            assert!(floor["floor"].as_u64().is_some_and(|f| f > 0), "{line}");
            partitions.insert(floor["partition"].as_u64().expect("partition"));
        }
    }
    drop(lines);

    let (status, body) = write(&wnode, "x", &vector_of(1), "?replication=all");
    assert_eq!(status, 400, "{body}");
    let (status, body) = search(&enode, &vector_of(1), json!({"level": "bounded"}));
    assert_eq!(status, 422, "bounded without a bound: {body}");
    let (status, body) = search(&enode, &vector_of(1), json!({"level": "session"}));
    assert_eq!(status, 422, "session without a token: {body}");

    // Cut the regions off from each other (Kafka and HTTP).
    for proxy in setup.proxies_between(&west, &east) {
        setup.toxiproxy(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(json!({"enabled": false})),
        );
    }
    let (status, body) = write(
        &wnode,
        "cut",
        &vector_of(20),
        "?replication=sync&timeout_ms=2000",
    );
    assert_eq!(status, 504, "sync write while cut off: {body}");
    assert_eq!(body["replicated"]["regions"], json!([west]), "{body}");
    assert_eq!(body["replicated"]["missing"], json!([east]), "{body}");
    assert!(
        body["token"].as_object().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    // Past the ticks already in flight, east's copy of west falls behind a strong read.
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = search(
        &enode,
        &vector_of(0),
        json!({"level": "strong", "timeout_ms": 1500}),
    );
    assert_eq!(status, 504, "strong read while cut off: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("region `{west}`"))),
        "{body}"
    );
    let (status, body) = search(
        &enode,
        &vector_of(0),
        json!({"level": "bounded", "max_staleness_ms": 600000}),
    );
    assert_eq!(
        status, 200,
        "bounded read within its bound while cut off: {body}"
    );
    let (status, body) = search(&enode, &vector_of(0), json!({"level": "eventual"}));
    assert_eq!(status, 200, "eventual read while cut off: {body}");
    let (_, cluster) = common::get(&format!("{}/cluster", enode.url));
    let behind = cluster["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["region"] == json!(west)))
        .and_then(|r| r["staleness_ms"].as_u64());
    assert!(
        behind.is_some_and(|ms| ms >= 1500),
        "{east}'s /cluster should show {west} stale: {cluster}"
    );
    let metrics = reqwest::blocking::get(format!("{}/metrics", enode.url))
        .and_then(|r| r.text())
        .expect("GET /metrics");
    let stale: Vec<f64> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("hektor_shard_region_staleness_seconds{")
                && l.contains(&format!("region=\"{west}\""))
                && l.contains(&collection)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        !stale.is_empty() && stale.iter().all(|s| *s >= 1.5),
        "{east}'s /metrics should show every shard's copy of {west} stale: {stale:?}"
    );

    // Healed: the write that was not confirmed reaches east; strong reads answer again.
    setup.reset();
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(&enode, "cut") != 200 {
        assert!(
            Instant::now() < deadline,
            "the unconfirmed sync write never reached {east}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (status, body) = search(
        &enode,
        &vector_of(20),
        json!({"level": "strong", "timeout_ms": 60000}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["id"], json!("cut"), "{body}");
}

/// Session tokens mean the same in every region (issue #17): a write in west answers its
/// token with `region: west`; a session read in east naming that region sees the write,
/// every time (east asks west's node for its clock floors of the token, then waits until
/// it merged west's partitions that far). With west's records cut off from east, the
/// read times out with an error saying so instead of answering without the write; with
/// west's node unreachable too, it says the session cannot be checked from here and that
/// `strong` works. Doors: a region name that is not one, a region not merged here, a
/// region without `session`, a token naming a partition the collection lacks: 422.
#[test]
fn hektor_regions_session_tokens_cross_regions() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    let Wan {
        west,
        east,
        wnode,
        enode,
        collection,
        _tmp,
    } = Wan::start(&setup, "session");
    let vector_of = |i: usize| wan_vector(i);
    let write = |node: &common::Server, id: &str, v: &[f32]| {
        common::post(
            &format!("{}/collections/{collection}/vectors", node.url),
            &json!({"upserts": [{"id": id, "vector": v}]}),
        )
    };
    let search = |node: &common::Server, v: &[f32], consistency: Value| {
        common::post(
            &format!("{}/collections/{collection}/search", node.url),
            &json!({"vector": v, "k": 1, "without_payload": true, "consistency": consistency}),
        )
    };
    // Both regions serve and merge each other (strong reads answer in both).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, _) = search(
            &enode,
            &vector_of(0),
            json!({"level": "strong", "timeout_ms": 2000}),
        );
        let (b, _) = search(
            &wnode,
            &vector_of(0),
            json!({"level": "strong", "timeout_ms": 2000}),
        );
        if a == 200 && b == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "strong searches never answered: {a} {b}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Session reads in east with west's tokens see west's writes, every time.
    let mut waits = Vec::new();
    for i in 0..8 {
        let id = format!("session-{i}");
        let v = vector_of(i);
        let (status, body) = write(&wnode, &id, &v);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["region"],
            json!(west),
            "a write names its region: {body}"
        );
        let token = body["token"].clone();
        let began = Instant::now();
        let (status, body) = search(
            &enode,
            &v,
            json!({"level": "session", "after": token, "region": west}),
        );
        waits.push(began.elapsed().as_millis() as u64);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["hits"][0]["id"],
            json!(id),
            "session read in {east} with {west}'s token missed {id}: {body}"
        );
    }
    eprintln!("session reads in {east} with {west}'s tokens: waited {waits:?} ms");
    // `session` is implied by `after`; the token's own region named is today's rule.
    let (status, body) = write(&enode, "east-own", &vector_of(20));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["region"], json!(east), "{body}");
    let (status, body) = search(
        &enode,
        &vector_of(20),
        json!({"after": body["token"], "region": east}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["id"], json!("east-own"), "{body}");

    // Doors.
    let (_, body) = write(&wnode, "doors", &vector_of(21));
    let token = body["token"].clone();
    for (consistency, why) in [
        (
            json!({"level": "session", "after": token, "region": "no such/region"}),
            "consistency.region must be a region name",
        ),
        (
            json!({"level": "session", "after": token, "region": "north"}),
            "not a region merged here",
        ),
        (
            json!({"level": "strong", "region": west}),
            "goes with level `session` only",
        ),
        (
            json!({"level": "session", "after": {"7": 1}, "region": west}),
            "the collection has 2",
        ),
    ] {
        let (status, body) = search(&enode, &vector_of(21), consistency.clone());
        assert_eq!(status, 422, "{consistency}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{consistency}: {error}");
    }
    // The internal route checks its input too (the cluster secret, if any, is the
    // test server's default: none).
    let (status, body) = common::post(
        &format!(
            "{}/internal/collections/{collection}/token-floors",
            wnode.url
        ),
        &json!({"token": {"9": 1}}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = common::post(
        &format!(
            "{}/internal/collections/no-such-{collection}/token-floors",
            wnode.url
        ),
        &json!({"token": {"0": 1}}),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = common::post(
        &format!(
            "{}/internal/collections/{collection}/token-floors",
            wnode.url
        ),
        &json!({"token": {"0": 1}, "extra": true}),
    );
    assert_eq!(status, 400, "{body}");

    // West's records cut off from east (west -> east mirroring): the node still asks
    // west's node, but east cannot merge the write, so the read times out and says so.
    setup.toxiproxy(
        reqwest::Method::POST,
        &format!("/proxies/{}", setup.proxy(&west, &east)),
        Some(json!({"enabled": false})),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (status, body) = write(&wnode, "cut", &vector_of(40));
    assert_eq!(status, 200, "{body}");
    let cut_token = body["token"].clone();
    let (status, body) = search(
        &enode,
        &vector_of(40),
        json!({"level": "session", "after": cut_token, "region": west, "timeout_ms": 2000}),
    );
    assert_eq!(
        status, 504,
        "a session read of a write east cannot have must time out: {body}"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("have not reached this region") && error.contains(&west),
        "{error}"
    );
    assert!(body.get("hits").is_none(), "{body}");
    eprintln!("cut: {error}");
    // West's node unreachable too: the session cannot be checked from here.
    setup.toxiproxy(
        reqwest::Method::POST,
        &format!("/proxies/{}", setup.http_proxy(&east, &west)),
        Some(json!({"enabled": false})),
    );
    let (status, body) = search(
        &enode,
        &vector_of(40),
        json!({"level": "session", "after": cut_token, "region": west, "timeout_ms": 2000}),
    );
    assert!(status == 503 || status == 504, "{status}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot be checked from here") && error.contains("strong"),
        "{error}"
    );
    eprintln!("peer unreachable: {status} {error}");
    // Healed: the same token is read in east.
    for proxy in [setup.proxy(&west, &east), setup.http_proxy(&east, &west)] {
        setup.toxiproxy(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(json!({"enabled": true})),
        );
    }
    let began = Instant::now();
    let (status, body) = search(
        &enode,
        &vector_of(40),
        json!({"level": "session", "after": cut_token, "region": west, "timeout_ms": 60000}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["id"], json!("cut"), "{body}");
    eprintln!(
        "after the heal, the session read waited {} ms",
        began.elapsed().as_millis()
    );
}

/// Per partition, the next offset a node's shard has applied: of its own partition
/// (`local`) and of `region`'s mirrored one.
fn applied_offsets(
    http: &reqwest::blocking::Client,
    url: &str,
    collection: &str,
    region: &str,
) -> (BTreeMap<u64, u64>, BTreeMap<u64, u64>) {
    let view: Value = http
        .get(format!("{url}/collections/{collection}"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    let (mut local, mut mirror) = (BTreeMap::new(), BTreeMap::new());
    for s in view["shards"].as_array().into_iter().flatten() {
        if let Some(p) = s["shard"].as_u64() {
            if let Some(n) = s["next_offset"].as_u64() {
                local.insert(p, n);
            }
            if let Some(n) = s["mirrored"][region]["next_offset"].as_u64() {
                mirror.insert(p, n);
            }
        }
    }
    (local, mirror)
}

/// One poll of both nodes: when, west's own applied offsets, east's merged ones of west.
type Sample = (Instant, BTreeMap<u64, u64>, BTreeMap<u64, u64>);

/// hektor's merge lag between regions over an injected 70 ms round trip: writes in west
/// on an open-loop schedule (one upsert per request), and for each the time from its
/// acknowledgement until east's shard has merged it (`mirror_lag`), against the time until
/// west's own shard has applied it (`local_lag`, the control). Positions are read from
/// `GET /collections/{c}` every 5 ms (`mirrored.west.next_offset`: the mirror's offsets
/// equal the origin's while MM2 redelivers nothing, which the run checks). One JSON line
/// per rate. Ignored: a measurement (`cargo test --release --test regions_kafka --
/// --ignored hektor_regions_merge_lag --nocapture`).
#[test]
#[ignore]
fn hektor_regions_merge_lag_over_70ms_rtt() {
    let _one = serial();
    let Some(setup) = Setup::start() else {
        return;
    };
    let (west, east) = (setup.regions[0].clone(), setup.regions[1].clone());
    let tmp = tempfile::tempdir().expect("tempdir");
    let wnode = start_region_node(&setup, &west, &tmp.path().join("west"), &[]);
    let enode = start_region_node(&setup, &east, &tmp.path().join("east"), &[]);
    let collection = common::unique("lag");
    const DIM: usize = 384;
    common::create_collection(&wnode.url, &collection, DIM, 2);
    common::create_collection(&enode.url, &collection, DIM, 2);
    let rtt_ms = 70u64;
    let proxy = setup.proxy(&west, &east);
    for stream in ["upstream", "downstream"] {
        setup.toxiproxy(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}/toxics"),
            Some(
                json!({"name": format!("rtt-{stream}"), "type": "latency", "stream": stream,
                        "toxicity": 1.0, "attributes": {"latency": rtt_ms / 2, "jitter": 0}}),
            ),
        );
    }
    let url = format!("{}/collections/{collection}/vectors", wnode.url);
    // A client per writer thread and one for the polls (a client per call costs a thread).
    let poller_http = common::client();
    let write = |writer: &reqwest::blocking::Client, i: u64| -> (Instant, Value) {
        let mut rng = StdRng::seed_from_u64(i);
        let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(0.1f32..1.0)).collect();
        let resp = writer
            .post(&url)
            .json(&json!({"upserts": [{"id": format!("w-{i}"), "vector": v}]}))
            .send()
            .expect("write sent");
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().expect("a JSON answer");
        (Instant::now(), body["token"].clone())
    };
    // Warm-up: MM2 finds the new topic (up to its refresh interval) and east merges it.
    let (_, token) = write(&common::client(), 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, mirror) = applied_offsets(&poller_http, &enode.url, &collection, &west);
        let done = token.as_object().into_iter().flatten().all(|(p, o)| {
            let p: u64 = p.parse().unwrap_or(u64::MAX);
            mirror.get(&p).copied().unwrap_or(0) > o.as_u64().unwrap_or(u64::MAX)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "east never merged west's first write"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut next_id = 1u64;
    for rate in [20u64, 100, 400] {
        let seconds = 15u64;
        let n = rate * seconds;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (acks, timeline) = std::thread::scope(|s| {
            let poller = s.spawn(|| {
                let mut timeline = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (local, _) = applied_offsets(&poller_http, &wnode.url, &collection, &west);
                    let (_, mirror) = applied_offsets(&poller_http, &enode.url, &collection, &west);
                    timeline.push((Instant::now(), local, mirror));
                    std::thread::sleep(Duration::from_millis(5));
                }
                timeline
            });
            // Open loop: write i is due at start + i/rate; WRITERS threads take every
            // WRITERS-th write, each on its own connection, timed from when it was due.
            const WRITERS: u64 = 8;
            let start = Instant::now() + Duration::from_millis(100);
            let first_id = next_id;
            let workers: Vec<_> = (0..WRITERS)
                .map(|k| {
                    let write = &write;
                    s.spawn(move || {
                        let writer = common::client();
                        let mut acks = Vec::new();
                        for i in (k..n).step_by(WRITERS as usize) {
                            let intended = start + Duration::from_micros(i * 1_000_000 / rate);
                            if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            let (acked, token) = write(&writer, first_id + i);
                            let (p, o) = token
                                .as_object()
                                .and_then(|t| t.iter().next())
                                .map(|(p, o)| {
                                    (p.parse::<u64>().unwrap_or(0), o.as_u64().unwrap_or(0))
                                })
                                .expect("a write's token names its partition");
                            acks.push((intended, acked, p, o));
                        }
                        acks
                    })
                })
                .collect();
            let acks: Vec<_> = workers
                .into_iter()
                .flat_map(|w| w.join().expect("writer"))
                .collect();
            next_id += n;
            // Let the last writes cross, then stop polling.
            std::thread::sleep(Duration::from_secs(3));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (acks, poller.join().expect("poller"))
        });
        let histogram = || hdrhistogram::Histogram::<u64>::new(3).expect("valid precision");
        let (mut write_h, mut mirror_h, mut local_h) = (histogram(), histogram(), histogram());
        let mut unmerged = 0;
        for (intended, acked, p, o) in &acks {
            write_h
                .record(acked.duration_since(*intended).as_micros() as u64)
                .expect("an auto-resizing histogram takes any value");
            let first = |pick: &dyn Fn(&Sample) -> Option<u64>| {
                timeline
                    .iter()
                    .find(|entry| pick(entry).is_some_and(|next| next > *o))
                    .map(|(at, _, _)| at.saturating_duration_since(*acked).as_micros() as u64)
            };
            match first(&|(_, _, m)| m.get(p).copied()) {
                Some(us) => mirror_h
                    .record(us)
                    .expect("an auto-resizing histogram takes any value"),
                None => unmerged += 1,
            }
            if let Some(us) = first(&|(_, l, _)| l.get(p).copied()) {
                local_h
                    .record(us)
                    .expect("an auto-resizing histogram takes any value");
            }
        }
        let (_, view) = common::get(&format!("{}/collections/{collection}", enode.url));
        let duplicates: u64 = view["shards"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|s| s["mirrored"][west.as_str()]["duplicates"].as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{}",
            json!({
                "mode": "async", "rtt_ms": rtt_ms, "rate": rate, "writes": acks.len(),
                "write_p50_ms": ms(&write_h, 0.5), "write_p99_ms": ms(&write_h, 0.99),
                "mirror_lag_p50_ms": ms(&mirror_h, 0.5), "mirror_lag_p99_ms": ms(&mirror_h, 0.99),
                "local_lag_p50_ms": ms(&local_h, 0.5), "local_lag_p99_ms": ms(&local_h, 0.99),
                "unmerged": unmerged, "duplicates": duplicates, "poll_ms": 5,
            })
        );
        assert_eq!(
            duplicates, 0,
            "MM2 redelivered: mirror offsets no longer match the origin's"
        );
    }
}
