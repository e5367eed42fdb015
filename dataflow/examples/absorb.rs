//! How many events per second the hotness dataflow absorbs, and how stale a snapshot is:
//! `cargo run --release -p hektor-dataflow --example absorb -- [workers] [events] [seconds]`.
//!
//! Feeds `events` synthetic events (64 shards, 80% queries) spread over `seconds` simulated
//! seconds through a [`HotnessDriver`], closing each second with `advance_to` (which returns
//! once the snapshot is current), and prints events/s, the slowest `advance_to`, and the
//! decision lag: per simulated second, the wall time from handing its first event to the
//! driver to the return of the snapshot that counts it (the median and the worst second).
//! Feeding is back to back, so the lag is measured while the dataflow absorbs at full
//! rate. Run more than 60 simulated seconds to include the one-minute window's
//! retractions (steady state).
use hdrhistogram::Histogram;
use hektor_dataflow::driver::{HotnessDriver, Setup};
use hektor_dataflow::hotness::HotnessParams;
use hektor_topics::record::{Event, EventKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let total: usize = args.next().map_or(Ok(4_000_000), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(40), |a| a.parse())?;
    let shards = 64u32;
    let nodes: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let setup = Setup::equal(shards, &node_refs);
    let mut driver = HotnessDriver::spawn(workers, HotnessParams::default(), setup)?;
    let per_second = total / seconds as usize;
    let mut rng = StdRng::seed_from_u64(1);
    let mut next = || rng.random::<u64>();
    // Pre-build the batches so generation is not measured.
    let mut batches: Vec<Vec<Vec<Event>>> = Vec::new();
    for s in 0..seconds {
        let mut second = Vec::new();
        for _ in 0..(per_second / 10_000).max(1) {
            let batch: Vec<Event> = (0..10_000)
                .map(|_| {
                    let r = next();
                    let ring = next();
                    let kind = match r % 10 {
                        0 => EventKind::Upsert,
                        1 => EventKind::Delete,
                        _ => EventKind::Query,
                    };
                    Event {
                        collection: "c".into(),
                        shard: hektor_topics::ring::partition_of(ring, shards),
                        ring: if kind == EventKind::Query {
                            ring & !0xFFFF_FFFF
                        } else {
                            ring
                        },
                        kind,
                        latency_us: 200 + (r >> 40) as u32 % 20_000,
                        time_ms: 1_700_000_000_000 + s * 1000 + (r % 1000),
                        node: String::new(),
                    }
                })
                .collect();
            second.push(batch);
        }
        batches.push(second);
    }
    let fed: usize = batches.iter().flatten().map(Vec::len).sum();
    let start = std::time::Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    // Per simulated second, µs: 1 µs to one hour, 3 significant digits.
    let mut lags = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut last = None;
    for (s, second) in batches.into_iter().enumerate() {
        let first_fed = std::time::Instant::now();
        for batch in second {
            driver.feed(batch)?;
        }
        let t = std::time::Instant::now();
        last = Some(driver.advance_to(1_700_000_000 + s as u64)?);
        slowest = slowest.max(t.elapsed());
        lags.saturating_record(
            first_fed
                .elapsed()
                .as_micros()
                .try_into()
                .unwrap_or(u64::MAX),
        );
    }
    let elapsed = start.elapsed();
    let lag_p50 = std::time::Duration::from_micros(lags.value_at_quantile(0.5));
    let lag_max = std::time::Duration::from_micros(lags.max());
    let snap = last.ok_or("no snapshot")?;
    let queries: u64 = snap
        .shards
        .values()
        .map(|m| m.queries_1m + m.writes_1m)
        .sum();
    println!(
        "{{\"workers\": {workers}, \"events\": {fed}, \"seconds\": {:.2}, \"events_per_s\": {:.0}, \"slowest_advance_ms\": {:.1}, \"lag_p50_ms\": {:.1}, \"lag_max_ms\": {:.1}, \"ops_in_last_minute\": {queries}}}",
        elapsed.as_secs_f64(),
        fed as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        lag_p50.as_secs_f64() * 1000.0,
        lag_max.as_secs_f64() * 1000.0
    );
    driver.shutdown()?;
    Ok(())
}
