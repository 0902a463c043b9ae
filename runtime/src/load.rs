//! Per-function load a worker reports in its heartbeats: the autoscaler's
//! input.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tern_protocol::FunctionLoad;

/// Per-function counters reported in heartbeats (the autoscaler's input).
#[derive(Default)]
pub(crate) struct LoadCounters {
    concurrency: Mutex<Concurrency>,
    completed: AtomicU64,
    errors: AtomicU64,
    latency_us_total: AtomicU64,
    /// Whether this replica has served a request yet.
    called: std::sync::atomic::AtomicBool,
}

/// In-flight requests and their integral over time. The autoscaler needs
/// mean concurrency between heartbeats, which a sample of `in_flight` at
/// heartbeat time misses for short requests and the completed requests'
/// latency misses for long ones.
struct Concurrency {
    in_flight: u64,
    busy_us: u64,
    since: Option<Instant>,
    /// When the last invocation ended, or the function was loaded.
    last_end: Instant,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency { in_flight: 0, busy_us: 0, since: None, last_end: Instant::now() }
    }
}

impl Concurrency {
    fn accrue(&mut self, now: Instant) {
        if let Some(since) = self.since {
            self.busy_us += self.in_flight * now.saturating_duration_since(since).as_micros() as u64;
        }
        self.since = Some(now);
    }
}

impl LoadCounters {
    /// Counts a request in; returns when, for [`LoadCounters::finished`].
    pub(crate) fn started(&self) -> Instant {
        let now = Instant::now();
        let mut c = self.concurrency.lock();
        c.accrue(now);
        c.in_flight += 1;
        now
    }

    /// True for the first call on this replica since it was loaded (a
    /// cold start), false after.
    pub(crate) fn first_call(&self) -> bool {
        !self.called.load(Ordering::Relaxed) && !self.called.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn finished(&self, started: Instant, failed: bool) {
        let latency = started.elapsed();
        {
            let mut c = self.concurrency.lock();
            let now = Instant::now();
            c.accrue(now);
            c.in_flight -= 1;
            c.last_end = now;
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.latency_us_total.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests running now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.concurrency.lock().in_flight
    }

    pub(crate) fn snapshot(&self) -> FunctionLoad {
        let (in_flight, busy_us, idle_ms) = {
            let mut c = self.concurrency.lock();
            let now = Instant::now();
            c.accrue(now);
            let idle =
                if c.in_flight > 0 { 0 } else { now.saturating_duration_since(c.last_end).as_millis() };
            (c.in_flight, c.busy_us, idle as u64)
        };
        FunctionLoad {
            in_flight,
            busy_us,
            completed: self.completed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_us_total: self.latency_us_total.load(Ordering::Relaxed),
            idle_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn busy_time_integrates_in_flight_requests() {
        let load = LoadCounters::default();
        let a = load.started();
        let b = load.started();
        std::thread::sleep(Duration::from_millis(20));
        load.finished(a, true);
        let s = load.snapshot();
        assert_eq!((s.in_flight, s.completed, s.errors), (1, 1, 1));
        // Two requests for ~20 ms: ~40 ms of busy time.
        assert!(s.busy_us >= 40_000 && s.busy_us < 1_000_000, "{}", s.busy_us);
        assert_eq!(s.idle_ms, 0, "not idle while one runs");
        load.finished(b, false);
        std::thread::sleep(Duration::from_millis(20));
        assert!(load.snapshot().idle_ms >= 20);
    }
}
