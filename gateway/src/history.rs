//! What the dashboard charts: per function, every [`STEP`], the request
//! rate, error rate, latency (p50, p99), concurrency and replicas (ready,
//! wanted), for the last hour, in memory. Requests are counted here as
//! this gateway proxies them; replicas come from the scheduler's status.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

pub const STEP: Duration = Duration::from_secs(5);
/// An hour of steps.
const KEPT: usize = 720;
/// Functions tracked at most: the memory is bounded whatever is deployed.
const MAX_FUNCTIONS: usize = 2000;
/// Latency buckets' upper bounds in ms: 1.5x apart, 0.1 ms to 70 s.
const BUCKETS: usize = 34;

fn bound_ms(i: usize) -> f64 {
    0.1 * 1.5f64.powi(i as i32)
}

/// One step of one function.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub rps: f32,
    /// Answers with status 5xx, per second.
    pub errors: f32,
    pub p50_ms: f32,
    pub p99_ms: f32,
    /// Requests in flight through this gateway at the step's end.
    pub inflight: u32,
    pub ready: u32,
    pub wanted: u32,
}

struct Series {
    requests: u64,
    errors: u64,
    inflight: u32,
    buckets: [u64; BUCKETS],
    samples: VecDeque<Sample>,
}

impl Default for Series {
    fn default() -> Self {
        Series { requests: 0, errors: 0, inflight: 0, buckets: [0; BUCKETS], samples: VecDeque::new() }
    }
}

impl Series {
    fn percentile(&self, q: f64) -> f32 {
        if self.requests == 0 {
            return 0.0;
        }
        let rank = (self.requests as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bound_ms(i) as f32;
            }
        }
        bound_ms(BUCKETS - 1) as f32
    }
}

/// Last-minute figures of one function, for the functions page.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rps: f32,
    pub error_pct: f32,
    pub p50_ms: f32,
    pub p99_ms: f32,
    pub inflight: u32,
    pub ready: u32,
    pub wanted: u32,
}

#[derive(Default)]
pub struct History {
    functions: Mutex<HashMap<String, Series>>,
}

impl History {
    /// A request to `function` is on its way.
    pub fn begin(&self, function: &str) {
        let mut f = self.functions.lock();
        if let Some(s) = series(&mut f, function) {
            s.inflight += 1;
        }
    }

    /// It was answered `status` after `took`.
    pub fn end(&self, function: &str, status: u16, took: Duration) {
        let mut f = self.functions.lock();
        let Some(s) = series(&mut f, function) else { return };
        s.inflight = s.inflight.saturating_sub(1);
        s.requests += 1;
        if status >= 500 {
            s.errors += 1;
        }
        let ms = took.as_secs_f64() * 1000.0;
        let i = (0..BUCKETS).find(|&i| ms <= bound_ms(i)).unwrap_or(BUCKETS - 1);
        s.buckets[i] += 1;
    }

    /// Closes a step: `deployed` are the functions there are, with their
    /// replicas (ready, wanted); the rest are forgotten.
    pub fn sample(&self, now_ms: u64, deployed: &HashMap<String, (u32, u32)>) {
        let mut f = self.functions.lock();
        f.retain(|name, _| deployed.contains_key(name));
        for (name, &(ready, wanted)) in deployed {
            let Some(s) = series(&mut f, name) else { continue };
            let secs = STEP.as_secs_f32();
            let sample = Sample {
                t_ms: now_ms,
                rps: s.requests as f32 / secs,
                errors: s.errors as f32 / secs,
                p50_ms: s.percentile(0.5),
                p99_ms: s.percentile(0.99),
                inflight: s.inflight,
                ready,
                wanted,
            };
            s.requests = 0;
            s.errors = 0;
            s.buckets = [0; BUCKETS];
            s.samples.push_back(sample);
            if s.samples.len() > KEPT {
                s.samples.pop_front();
            }
        }
    }

    /// `function`'s samples, oldest first.
    pub fn series(&self, function: &str) -> Vec<Sample> {
        self.functions.lock().get(function).map(|s| s.samples.iter().copied().collect()).unwrap_or_default()
    }

    /// Every function's last minute (12 steps).
    pub fn summaries(&self) -> HashMap<String, Summary> {
        let f = self.functions.lock();
        f.iter()
            .map(|(name, s)| {
                let recent: Vec<&Sample> = s.samples.iter().rev().take(12).collect();
                let n = recent.len().max(1) as f32;
                let rps = recent.iter().map(|x| x.rps).sum::<f32>() / n;
                let errors = recent.iter().map(|x| x.errors).sum::<f32>() / n;
                let max = |g: fn(&Sample) -> f32| recent.iter().map(|x| g(x)).fold(0.0, f32::max);
                let last = recent.first();
                let summary = Summary {
                    rps,
                    error_pct: if rps > 0.0 { 100.0 * errors / rps } else { 0.0 },
                    p50_ms: max(|x| x.p50_ms),
                    p99_ms: max(|x| x.p99_ms),
                    inflight: s.inflight,
                    ready: last.map_or(0, |x| x.ready),
                    wanted: last.map_or(0, |x| x.wanted),
                };
                (name.clone(), summary)
            })
            .collect()
    }
}

fn series<'a>(f: &'a mut HashMap<String, Series>, function: &str) -> Option<&'a mut Series> {
    if !f.contains_key(function) && f.len() >= MAX_FUNCTIONS {
        return None;
    }
    Some(f.entry(function.to_string()).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_has_rates_and_percentiles_and_an_hour_is_kept() {
        let h = History::default();
        for i in 0..100 {
            h.begin("f");
            h.end("f", if i < 10 { 500 } else { 200 }, Duration::from_millis(if i < 98 { 2 } else { 300 }));
        }
        let deployed: HashMap<String, (u32, u32)> = [("f".to_string(), (1, 2))].into();
        h.sample(1000, &deployed);
        let s = h.series("f");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].rps, 20.0);
        assert_eq!(s[0].errors, 2.0);
        assert!(s[0].p50_ms >= 2.0 && s[0].p50_ms < 3.0, "{}", s[0].p50_ms);
        assert!(s[0].p99_ms >= 300.0 && s[0].p99_ms < 450.0, "{}", s[0].p99_ms);
        assert_eq!((s[0].ready, s[0].wanted), (1, 2));
        let sum = &h.summaries()["f"];
        assert_eq!(sum.error_pct, 10.0);
        for t in 0..800 {
            h.sample(t, &deployed);
        }
        assert_eq!(h.series("f").len(), KEPT);
        // A function no longer deployed is forgotten.
        h.sample(0, &HashMap::new());
        assert!(h.series("f").is_empty());
    }
}
