//! What the autoscaler is fed and what it decided, per function: samples
//! of mean concurrency from the workers' heartbeats, the last activity,
//! wakes and cold starts. The decisions themselves are the pure
//! [`autoscale::decide`]; this module keeps its inputs and outputs.

use crate::autoscale::{self, Decision, Observed, PanicState, Policy, Sample};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_protocol::{FunctionLoad, LatencySummary, ScaleStatus, Version};

/// Cold-start latencies kept per function for `tern describe`.
const COLD_START_RING: usize = 1000;

/// The autoscaler's windows, the same for every function (as Knative's
/// cluster-wide defaults).
#[derive(Debug, Clone, Copy)]
pub struct ScaleConfig {
    pub stable_window: Duration,
    pub panic_window: Duration,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig { stable_window: Duration::from_secs(60), panic_window: Duration::from_secs(6) }
    }
}

/// One function's autoscaler state.
struct Function {
    /// What the metrics were last told: ready, wanted, panicking.
    shown: Option<(u32, u32, bool)>,
    seen: Observed,
    panic: PanicState,
    last: Option<Decision>,
    wakes: u64,
    cold_starts: u64,
    cold_start_ms: VecDeque<f64>,
}

impl Function {
    fn new(now_ms: u64) -> Self {
        Function {
            shown: None,
            seen: Observed::new(now_ms),
            panic: PanicState::default(),
            last: None,
            wakes: 0,
            cold_starts: 0,
            cold_start_ms: VecDeque::new(),
        }
    }

    fn status(&self, now_ms: u64) -> ScaleStatus {
        let d = self.last;
        ScaleStatus {
            desired: d.map_or(0, |d| d.desired),
            stable_concurrency: d.map_or(0.0, |d| d.stable_concurrency),
            panic_concurrency: d.map_or(0.0, |d| d.panic_concurrency),
            panicking: d.is_some_and(|d| d.panicking),
            idle_for_ms: self.seen.last_active_ms.map(|t| now_ms.saturating_sub(t)),
            wakes: self.wakes,
            cold_starts: self.cold_starts,
            cold_start_ms: summarise(&self.cold_start_ms),
        }
    }
}

pub struct Scaling {
    config: ScaleConfig,
    /// Time zero of the autoscaler's clock.
    epoch: Instant,
    functions: Mutex<HashMap<String, Function>>,
}

impl Scaling {
    pub fn new(config: ScaleConfig) -> Self {
        Scaling { config, epoch: Instant::now(), functions: Mutex::new(HashMap::new()) }
    }

    fn clock_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn with<T>(&self, function: &str, f: impl FnOnce(&mut Function, u64) -> T) -> T {
        let now = self.clock_ms();
        let mut functions = self.functions.lock();
        f(functions.entry(function.to_string()).or_insert_with(|| Function::new(now)), now)
    }

    /// Notes that `function` has (or will at once have) requests.
    pub fn mark_active(&self, function: &str) {
        self.with(function, |f, now| f.seen.active(now));
    }

    /// Turns the change between a node's last two heartbeats into samples.
    /// Without a `previous` state the new one is only a baseline.
    pub fn record_load(
        &self,
        previous: Option<&BTreeMap<String, FunctionLoad>>,
        load: &BTreeMap<String, FunctionLoad>,
    ) {
        let now = self.clock_ms();
        let window = self.config.stable_window.as_millis() as u64;
        let mut functions = self.functions.lock();
        for (function, load) in load {
            let entry = functions.entry(function.clone()).or_insert_with(|| Function::new(now));
            let Some(previous) = previous else {
                if load.in_flight > 0 {
                    entry.seen.active(now);
                }
                continue;
            };
            // Counters start at zero when a function is (re)loaded.
            let prev =
                previous.get(function).filter(|p| p.busy_us <= load.busy_us && p.completed <= load.completed);
            let (busy_us, completed) = match prev {
                Some(p) => (load.busy_us - p.busy_us, load.completed - p.completed),
                None => (load.busy_us, load.completed),
            };
            entry.seen.record(Sample { at_ms: now, busy_ms: busy_us as f64 / 1000.0 }, window);
            if completed > 0 || load.in_flight > 0 {
                entry.seen.active(now);
            }
        }
    }

    /// Replicas each of `versions`' functions should have now, also set in
    /// `metrics` where they changed.
    pub fn desired(
        &self,
        versions: &[Arc<Version>],
        ready: &BTreeMap<String, u32>,
        metrics: &tern_metrics::Metrics,
    ) -> BTreeMap<String, u32> {
        let now = self.clock_ms();
        let mut functions = self.functions.lock();
        let mut out = BTreeMap::new();
        for v in versions {
            let spec = &v.spec;
            let policy = Policy {
                min_scale: spec.min_scale,
                max_scale: spec.max_scale,
                target: spec.concurrency as f64,
                idle_ms: spec.idle_ms,
                stable_window_ms: self.config.stable_window.as_millis() as u64,
                panic_window_ms: self.config.panic_window.as_millis() as u64,
            };
            let s = functions.entry(spec.name.clone()).or_insert_with(|| Function::new(now));
            let ready = ready.get(&spec.name).copied().unwrap_or(0);
            let d = autoscale::decide(&policy, &s.seen, ready, now, &mut s.panic);
            if s.last.is_none_or(|l| l.desired != d.desired) {
                tracing::info!(
                    function = %spec.name,
                    from = ready,
                    to = d.desired,
                    concurrency = format!("{:.2}", d.stable_concurrency),
                    panicking = d.panicking,
                    "scale"
                );
            }
            s.last = Some(d);
            // Telling the metrics costs label lookups: only what changed,
            // as thousands of functions are reconciled at each deploy.
            let shown = (ready, d.desired, d.panicking);
            if s.shown != Some(shown) {
                s.shown = Some(shown);
                metrics.scale(&spec.name, ready, d.desired, d.desired, d.panicking);
            }
            out.insert(spec.name.clone(), d.desired);
        }
        out
    }

    /// Forgets functions no longer deployed.
    pub fn forget_all_but(&self, versions: &[Arc<Version>]) {
        let names: std::collections::HashSet<&str> = versions.iter().map(|v| v.spec.name.as_str()).collect();
        self.functions.lock().retain(|f, _| names.contains(f.as_str()));
    }

    /// A gateway asked to wake `function`.
    pub fn woke(&self, function: &str) {
        self.with(function, |f, now| {
            f.seen.active(now);
            f.wakes += 1;
        });
    }

    /// A wake loaded `function` from zero in `ms`.
    pub fn cold_started(&self, function: &str, ms: f64) {
        self.with(function, |f, _| {
            f.cold_starts += 1;
            if f.cold_start_ms.len() == COLD_START_RING {
                f.cold_start_ms.pop_front();
            }
            f.cold_start_ms.push_back(ms);
        });
    }

    pub fn status(&self, function: &str) -> ScaleStatus {
        let now = self.clock_ms();
        self.functions.lock().get(function).map(|s| s.status(now)).unwrap_or_default()
    }
}

fn summarise(samples: &VecDeque<f64>) -> Option<LatencySummary> {
    let last = *samples.back()?;
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some(LatencySummary { samples: sorted.len() as u64, p50: at(0.5), p95: at(0.95), max: at(1.0), last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(busy_us: u64, completed: u64, in_flight: u64) -> BTreeMap<String, FunctionLoad> {
        BTreeMap::from([(
            "f".to_string(),
            FunctionLoad { busy_us, completed, in_flight, ..Default::default() },
        )])
    }

    #[test]
    fn samples_are_the_change_between_heartbeats() {
        let s = Scaling::new(ScaleConfig::default());
        s.record_load(None, &load(5_000_000, 10, 0));
        assert_eq!(s.status("f").idle_for_ms, None, "a first state is only a baseline");
        s.record_load(Some(&load(5_000_000, 10, 0)), &load(6_000_000, 12, 1));
        let seen = &s.functions.lock()["f"].seen;
        let busy: f64 = seen.samples.iter().map(|x| x.busy_ms).sum();
        assert_eq!(busy, 1000.0, "1 s of busy time between the two");
        assert!(seen.last_active_ms.is_some(), "requests completed: active");
    }

    #[test]
    fn a_reloaded_function_counts_from_zero() {
        let s = Scaling::new(ScaleConfig::default());
        // Counters went down: the function was unloaded and loaded again.
        s.record_load(Some(&load(9_000_000, 50, 0)), &load(200_000, 1, 0));
        let busy: f64 = s.functions.lock()["f"].seen.samples.iter().map(|x| x.busy_ms).sum();
        assert_eq!(busy, 200.0);
    }

    #[test]
    fn cold_starts_are_summarised_and_bounded() {
        let s = Scaling::new(ScaleConfig::default());
        assert!(s.status("f").cold_start_ms.is_none());
        for ms in 1..=(COLD_START_RING + 10) {
            s.cold_started("f", ms as f64);
        }
        s.woke("f");
        let st = s.status("f");
        assert_eq!((st.cold_starts, st.wakes), (COLD_START_RING as u64 + 10, 1));
        let l = st.cold_start_ms.unwrap();
        assert_eq!(l.samples, COLD_START_RING as u64);
        assert_eq!((l.max, l.last), (1010.0, 1010.0));
        assert_eq!(l.p50, 511.0, "the ring holds 11..=1010");
    }
}
