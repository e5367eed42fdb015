//! Open-loop load: the schedule runner of every bench that claims a request rate.
//!
//! A closed-loop client (send, wait for the answer, send the next) slows down with the
//! server it measures: during a stall it sends nothing, so the requests that should have
//! gone out meanwhile are never timed and p99 under load comes out too low ("coordinated
//! omission"). This module owns the other way. A [`Schedule`] is a fixed list of slots,
//! slot `i` intended at `start + i / rate`; a pool of async workers works them off in
//! order, each taking the next slot as soon as it is free, and never skips one: when every
//! worker is busy the slot waits, and that wait counts. A request's latency runs from its
//! *intended* send to its completion, and goes into an HDR histogram (microseconds, 3
//! significant digits).
//!
//! Every run is bounded: a request gives up after the schedule's timeout (from its actual
//! send), and at `start + duration + timeout` the run stops — what is in flight then is
//! cut, and slots not sent by then fail unsent (each of them has waited longer than the
//! timeout already). Failures are counted, not put in the histogram.
//!
//! It owns timing and counting only; what a request is (its body, where it goes) is the
//! caller's, and the request must not block its thread.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The highest latency a histogram tells apart (one hour, in µs); longer ones count as it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An empty latency histogram: 1 µs to one hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant, valid HDR bounds")
}

/// An empty histogram of nanoseconds: 1 ns to one hour, 3 significant digits (for
/// in-process calls, which can take less than a microsecond).
fn nanos_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US * 1000, 3).expect("constant, valid HDR bounds")
}

/// The request rate, how long, by how many workers.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Requests per second (positive, finite).
    pub rate: f64,
    /// Slots are intended within `[start, start + duration)`.
    pub duration: Duration,
    /// Workers: requests in flight at most.
    pub workers: usize,
    /// A request fails after this long from its actual send; also the grace after
    /// `duration` before the run stops.
    pub timeout: Duration,
    /// When slot 0 is intended.
    pub start: Instant,
}

impl Schedule {
    /// `rate` requests per second for `duration` by `workers`, starting now, with a
    /// 10-second request timeout.
    pub fn new(rate: f64, duration: Duration, workers: usize) -> Schedule {
        Schedule {
            rate,
            duration,
            workers,
            timeout: Duration::from_secs(10),
            start: Instant::now(),
        }
    }

    pub fn with_timeout(self, timeout: Duration) -> Schedule {
        Schedule { timeout, ..self }
    }

    pub fn starting_at(self, start: Instant) -> Schedule {
        Schedule { start, ..self }
    }

    /// How many slots: every `i` with `i / rate < duration`.
    pub fn slots(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64() - 1e-9)
            .ceil()
            .max(0.0) as u64
    }

    /// Seconds from the start to slot `index`'s intended send.
    fn offset_s(&self, index: u64) -> f64 {
        index as f64 / self.rate
    }

    /// When the run stops, whatever is still in flight or waiting.
    fn deadline(&self) -> Instant {
        self.start + self.duration + self.timeout
    }
}

/// One slot, as the request function gets it.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub index: u64,
    /// Its intended send, seconds after the schedule's start.
    pub intended_s: f64,
}

/// What became of one slot.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The slot: intended `index / rate` seconds after the start.
    pub index: u64,
    /// Completion (or failure), seconds after the start.
    pub done_s: f64,
    /// Completion − intended send.
    pub latency_us: u64,
    /// Whether it was sent at all (false: still waiting for a worker when the run stopped).
    pub sent: bool,
    pub ok: bool,
}

/// Latency percentiles of a histogram of µs, in milliseconds; zeros when it is empty.
/// Also what every closed-loop pass of the benches reports ([`Percentiles::of_durations`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles::in_units(h, 1e3)
    }

    /// Of a histogram whose values are `per_ms` units to the millisecond.
    fn in_units(h: &Histogram<u64>, per_ms: f64) -> Percentiles {
        let ms = |v: u64| v as f64 / per_ms;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// Of latencies in µs (for a time slice of a run's outcomes).
    pub fn of_latencies(us: impl IntoIterator<Item = u64>) -> Percentiles {
        let mut h = latency_histogram();
        for v in us {
            h.saturating_record(v);
        }
        Percentiles::of(&h)
    }

    /// Of durations measured closed loop (each call timed from its own send: one client,
    /// or in-process searches), at nanosecond resolution.
    pub fn of_durations(durations: impl IntoIterator<Item = Duration>) -> Percentiles {
        let mut h = nanos_histogram();
        for d in durations {
            h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        }
        Percentiles::in_units(&h, 1e6)
    }
}

/// A finished run.
pub struct OpenLoopReport {
    /// The workers it ran with.
    pub workers: usize,
    /// Slots in the schedule; `sent + unsent == slots == ok + failed`.
    pub slots: u64,
    pub sent: u64,
    pub ok: u64,
    /// Errors, timeouts and unsent slots.
    pub failed: u64,
    pub unsent: u64,
    /// Latencies of the successful requests, µs from their intended send.
    pub latency: Histogram<u64>,
    /// From the start to the last completion.
    pub wall_s: f64,
    /// Every slot's outcome, by index.
    pub outcomes: Vec<Outcome>,
}

impl OpenLoopReport {
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }

    /// Successful requests per second of the run's wall time.
    pub fn achieved_rate(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.ok as f64 / self.wall_s
        } else {
            0.0
        }
    }
}

/// Run `schedule`, calling `request` once per slot (true: it succeeded). Returns when
/// every slot has an outcome: by `start + duration + timeout` at the latest.
pub async fn run<F, Fut>(schedule: Schedule, request: F) -> anyhow::Result<OpenLoopReport>
where
    F: Fn(Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    anyhow::ensure!(
        schedule.rate.is_finite() && schedule.rate > 0.0,
        "an open-loop schedule needs a positive, finite rate (got {})",
        schedule.rate
    );
    let workers = schedule.workers.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let mut pool = JoinSet::new();
    for _ in 0..workers {
        pool.spawn(work(schedule, Arc::clone(&next), Arc::clone(&request)));
    }
    let slots = schedule.slots();
    let mut latency = latency_histogram();
    let mut outcomes = Vec::with_capacity(usize::try_from(slots).unwrap_or(0));
    while let Some(done) = pool.join_next().await {
        let (h, o) = done?;
        latency.add(&h)?;
        outcomes.extend(o);
    }
    outcomes.sort_unstable_by_key(|o| o.index);
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    let (sent, ok) = (count(|o| o.sent), count(|o| o.ok));
    Ok(OpenLoopReport {
        workers,
        slots,
        sent,
        ok,
        failed: slots - ok,
        unsent: slots - sent,
        latency,
        wall_s: outcomes.iter().map(|o| o.done_s).fold(0.0, f64::max),
        outcomes,
    })
}

/// One worker: take the next slot, wait for its intended time if it is still ahead, send,
/// record; until the slots run out.
async fn work<F, Fut>(
    schedule: Schedule,
    next: Arc<AtomicU64>,
    request: Arc<F>,
) -> (Histogram<u64>, Vec<Outcome>)
where
    F: Fn(Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let (slots, deadline) = (schedule.slots(), schedule.deadline());
    let since_start = |t: Instant| t.saturating_duration_since(schedule.start).as_secs_f64();
    let mut latency = latency_histogram();
    let mut outcomes = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= slots {
            break;
        }
        let intended_s = schedule.offset_s(index);
        let intended = schedule.start + Duration::from_secs_f64(intended_s);
        tokio::time::sleep_until(intended).await;
        let sent = Instant::now() < deadline;
        let ok = sent && {
            let give_up = (Instant::now() + schedule.timeout).min(deadline);
            let call = request(Slot { index, intended_s });
            matches!(tokio::time::timeout_at(give_up, call).await, Ok(true))
        };
        let done = Instant::now();
        let latency_us =
            u64::try_from(done.saturating_duration_since(intended).as_micros()).unwrap_or(u64::MAX);
        if ok {
            latency.saturating_record(latency_us);
        }
        outcomes.push(Outcome {
            index,
            done_s: since_start(done),
            latency_us,
            sent,
            ok,
        });
    }
    (latency, outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// One worker, requests of 20 ms every 5 ms: the backlog grows by 15 ms a slot, and
    /// the latencies must show it. A timer started at the actual send would see ~20 ms
    /// everywhere (p99 well under 100 ms).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queueing_behind_a_slow_server_counts_in_latency() {
        let schedule = Schedule::new(200.0, Duration::from_millis(250), 1)
            .with_timeout(Duration::from_secs(30));
        let report = run(schedule, |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        })
        .await
        .unwrap();
        assert_eq!((report.slots, report.sent, report.ok), (50, 50, 50));
        let p = report.percentiles();
        // Slot 49 waits ~49 × 15 ms = 735 ms for the worker, then 20 ms of service.
        assert!(p.p99_ms > 500.0, "p99 {} ms hides the backlog", p.p99_ms);
        assert!(p.p50_ms > 250.0, "p50 {} ms hides the backlog", p.p50_ms);
        let first = report.outcomes[0].latency_us;
        let last = report.outcomes[49].latency_us;
        assert!(
            last > 10 * first,
            "latency did not grow: {first} µs → {last} µs"
        );
        // Served one at a time: ~50 per second, not the 200 asked for.
        assert!(report.achieved_rate() < 100.0, "{}", report.achieved_rate());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schedule_of_n_slots_issues_exactly_n_requests() {
        for (rate, ms, n) in [(1000.0, 100, 100), (30.0, 100, 3), (7.0, 1000, 7)] {
            let seen = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
            let calls = Arc::clone(&seen);
            let schedule = Schedule::new(rate, Duration::from_millis(ms), 4);
            assert_eq!(schedule.slots(), n as u64);
            let report = run(schedule, move |slot| {
                calls[slot.index as usize].fetch_add(1, Ordering::Relaxed);
                async { true }
            })
            .await
            .unwrap();
            assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            assert_eq!(
                (report.slots, report.sent, report.ok),
                (n as u64, n as u64, n as u64)
            );
            assert_eq!((report.failed, report.unsent), (0, 0));
            assert_eq!(report.latency.len(), n as u64);
            let indexes: Vec<u64> = report.outcomes.iter().map(|o| o.index).collect();
            assert_eq!(indexes, (0..n as u64).collect::<Vec<_>>());
            // Slot i is not sent before its time.
            assert!(report
                .outcomes
                .iter()
                .all(|o| o.done_s + 1e-3 >= o.index as f64 / rate));
        }
    }

    /// Requests that never answer: each fails at its timeout, and the run stops by
    /// `start + duration + timeout`, the slots left unsent counted as failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hanging_requests_fail_and_the_run_stops() {
        let began = std::time::Instant::now();
        let schedule = Schedule::new(50.0, Duration::from_millis(200), 2)
            .with_timeout(Duration::from_millis(100));
        let report = run(schedule, |_| std::future::pending::<bool>())
            .await
            .unwrap();
        let took = began.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert!(took >= Duration::from_millis(290), "took {took:?}");
        assert_eq!((report.slots, report.ok, report.failed), (10, 0, 10));
        assert_eq!(report.sent + report.unsent, 10);
        // Two workers, 100 ms each, 300 ms in all: about 6 sent, the rest never.
        assert!(report.unsent >= 2, "unsent {}", report.unsent);
        assert_eq!(report.latency.len(), 0);
        assert_eq!(report.percentiles().p99_ms, 0.0);
    }

    #[test]
    fn percentiles_keep_three_significant_digits() {
        let p = Percentiles::of_latencies((1..=1000).map(|ms| ms * 1000));
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() / 500.0 < 1e-3, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() / 990.0 < 1e-3, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() / 1000.0 < 1e-3, "{p:?}");
        assert_eq!(Percentiles::of_latencies([]).p99_ms, 0.0);
    }

    #[test]
    fn durations_keep_three_significant_digits_below_a_microsecond_too() {
        let p = Percentiles::of_durations((1..=100).map(Duration::from_millis));
        assert_eq!(p.count, 100);
        for (got, want) in [(p.p50_ms, 50.0), (p.p99_ms, 99.0), (p.max_ms, 100.0)] {
            assert!((got - want).abs() / want < 1e-3, "{p:?}");
        }
        let p = Percentiles::of_durations([Duration::from_nanos(250)]);
        assert!((p.p99_ms - 0.000_25).abs() / 0.000_25 < 1e-3, "{p:?}");
        let p = Percentiles::of_durations([]);
        assert_eq!((p.count, p.p99_ms), (0, 0.0));
    }
}
