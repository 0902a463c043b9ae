//! The autoscaler: from observed concurrency to the number of replicas a
//! function should run, in the manner of Knative's KPA. Pure: no I/O, no
//! clock (time is passed in as milliseconds); the scheduler feeds it worker
//! heartbeats and acts on its answer through placement.
//!
//! - Concurrency is the mean number of in-flight requests over a window,
//!   summed over every replica: workers report in-flight requests integrated
//!   over time, and each heartbeat's increase is one [`Sample`].
//! - Stable mode: replicas = ceil(mean over the stable window / target).
//! - Panic mode, for bursts: entered when the mean over the short panic
//!   window reaches [`PANIC_THRESHOLD`] times the target per ready replica.
//!   Then replicas = ceil(mean over the panic window / target), and never
//!   fewer than at any point of the panic. It ends once a whole stable
//!   window passes without the panic condition.
//! - Scale to zero: with min-scale 0 and no request for the idle window,
//!   zero. Otherwise a function that had a request within its idle window
//!   keeps at least one replica, even when its mean concurrency rounds to 0.
//! - Bounds: min-scale and max-scale (0 = none) clamp the result.

use std::collections::VecDeque;

/// Panic when the panic-window concurrency per replica is this many times
/// the target.
pub const PANIC_THRESHOLD: f64 = 2.0;

/// One function's scaling settings, from its spec and the scheduler's flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min_scale: u32,
    /// 0: no limit.
    pub max_scale: u32,
    /// Target in-flight requests per replica.
    pub target: f64,
    pub idle_ms: u64,
    pub stable_window_ms: u64,
    pub panic_window_ms: u64,
}

/// In-flight requests integrated over one heartbeat interval of one
/// replica, ending at `at_ms`: `busy_ms / interval` is its mean concurrency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub busy_ms: f64,
}

/// What the scheduler has seen of one function.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Oldest first; older than the stable window may be dropped.
    pub samples: VecDeque<Sample>,
    /// When the scheduler started watching the function (deploy, wake, or
    /// its first heartbeat since the scheduler started).
    pub since_ms: u64,
    /// The last time a request was seen (in flight, completed, or waiting at
    /// an activator).
    pub last_active_ms: Option<u64>,
}

impl Observed {
    pub fn new(now_ms: u64) -> Self {
        Observed { samples: VecDeque::new(), since_ms: now_ms, last_active_ms: None }
    }

    pub fn record(&mut self, sample: Sample, stable_window_ms: u64) {
        self.samples.push_back(sample);
        while self.samples.front().is_some_and(|s| s.at_ms + stable_window_ms < sample.at_ms) {
            self.samples.pop_front();
        }
    }

    pub fn active(&mut self, now_ms: u64) {
        self.last_active_ms = Some(self.last_active_ms.map_or(now_ms, |t| t.max(now_ms)));
    }

    /// Mean total concurrency over the `window_ms` ending at `now_ms`. A
    /// function watched for less than the window is averaged over the time
    /// watched (at least one heartbeat), so a burst right after a wake is not
    /// diluted by time nobody observed.
    pub fn mean_concurrency(&self, now_ms: u64, window_ms: u64) -> f64 {
        let from = now_ms.saturating_sub(window_ms);
        let busy: f64 = self
            .samples
            .iter()
            .filter(|s| s.at_ms > from && s.at_ms <= now_ms)
            .fold(0.0, |sum, s| sum + s.busy_ms);
        let span = window_ms.min(now_ms.saturating_sub(self.since_ms)).max(1000);
        busy / span as f64
    }
}

/// Panic mode, carried from one decision to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PanicState {
    /// When the panic condition last held; None when not panicking.
    pub since_ms: Option<u64>,
    /// The most replicas decided during this panic.
    pub peak: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
    pub panicking: bool,
}

pub fn decide(policy: &Policy, seen: &Observed, ready: u32, now_ms: u64, panic: &mut PanicState) -> Decision {
    let target = policy.target.max(0.01);
    let stable = seen.mean_concurrency(now_ms, policy.stable_window_ms);
    let burst = seen.mean_concurrency(now_ms, policy.panic_window_ms);
    let want_stable = (stable / target).ceil() as u32;
    let want_panic = (burst / target).ceil() as u32;

    if burst / ready.max(1) as f64 >= PANIC_THRESHOLD * target {
        if panic.since_ms.is_none() {
            panic.peak = 0;
        }
        panic.since_ms = Some(now_ms);
    } else if panic.since_ms.is_some_and(|t| now_ms >= t + policy.stable_window_ms) {
        *panic = PanicState::default();
    }
    let panicking = panic.since_ms.is_some();

    let mut desired = if panicking {
        // Never scale down in a panic: the burst may come back.
        panic.peak = panic.peak.max(want_panic).max(ready);
        panic.peak
    } else {
        want_stable
    };
    // A scheduler that just started (or a function just woken) has not seen
    // a panic window of load yet: do not shrink what is running on no data.
    if now_ms.saturating_sub(seen.since_ms) < policy.panic_window_ms {
        desired = desired.max(ready);
    }
    let idle = match seen.last_active_ms {
        Some(t) => now_ms.saturating_sub(t) >= policy.idle_ms,
        // Never seen a request since the scheduler started watching: idle
        // once a whole idle window has passed.
        None => now_ms.saturating_sub(seen.since_ms) >= policy.idle_ms,
    };
    if idle {
        desired = 0;
        *panic = PanicState::default();
    } else {
        desired = desired.max(1);
    }
    desired = desired.max(policy.min_scale);
    if policy.max_scale > 0 {
        desired = desired.min(policy.max_scale);
    }
    Decision {
        desired,
        stable_concurrency: stable,
        panic_concurrency: burst,
        panicking: panic.since_ms.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn policy() -> Policy {
        Policy {
            min_scale: 0,
            max_scale: 0,
            target: 10.0,
            idle_ms: 60 * S,
            stable_window_ms: 60 * S,
            panic_window_ms: 6 * S,
        }
    }

    /// `conc` in-flight requests, sustained from `from` to `to` (seconds),
    /// reported by one replica each second.
    fn load(seen: &mut Observed, from: u64, to: u64, conc: f64) {
        for t in from + 1..=to {
            seen.record(Sample { at_ms: t * S, busy_ms: conc * 1000.0 }, 60 * S);
            if conc > 0.0 {
                seen.active(t * S);
            }
        }
    }

    fn watched_since(t: u64) -> Observed {
        Observed::new(t * S)
    }

    #[test]
    fn steady_load_needs_concurrency_over_target_replicas() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 120, 35.0);
        let d = decide(&policy(), &seen, 4, 120 * S, &mut PanicState::default());
        assert_eq!(d.desired, 4, "{d:?}");
        assert!(!d.panicking);
        assert!((d.stable_concurrency - 35.0).abs() < 0.01);
    }

    #[test]
    fn low_traffic_keeps_one_replica_until_idle() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 10, 0.01);
        let mut p = PanicState::default();
        assert_eq!(decide(&policy(), &seen, 1, 30 * S, &mut p).desired, 1);
        assert_eq!(decide(&policy(), &seen, 1, 69 * S, &mut p).desired, 1, "idle only 59 s");
        assert_eq!(decide(&policy(), &seen, 1, 70 * S, &mut p).desired, 0, "idle 60 s: scale to zero");
    }

    #[test]
    fn idle_window_is_per_function() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 1, 1.0);
        let short = Policy { idle_ms: 2 * S, ..policy() };
        let mut p = PanicState::default();
        assert_eq!(decide(&short, &seen, 1, 2 * S, &mut p).desired, 1);
        assert_eq!(decide(&short, &seen, 1, 3 * S, &mut p).desired, 0);
    }

    #[test]
    fn min_scale_never_goes_to_zero() {
        let seen = watched_since(0);
        let p = Policy { min_scale: 2, ..policy() };
        assert_eq!(decide(&p, &seen, 2, 3600 * S, &mut PanicState::default()).desired, 2);
    }

    #[test]
    fn max_scale_caps_even_in_panic() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 60, 1000.0);
        let p = Policy { max_scale: 3, ..policy() };
        let d = decide(&p, &seen, 1, 60 * S, &mut PanicState::default());
        assert!(d.panicking);
        assert_eq!(d.desired, 3);
    }

    #[test]
    fn a_burst_panics_and_scales_on_the_short_window() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 100, 5.0); // calm: one replica
        load(&mut seen, 100, 106, 80.0); // burst: 16x the target on 1 replica
        let mut p = PanicState::default();
        let d = decide(&policy(), &seen, 1, 106 * S, &mut p);
        assert!(d.panicking, "{d:?}");
        assert_eq!(d.desired, 8, "ceil(80 / 10) from the panic window: {d:?}");
        // The stable window alone would have asked for far fewer.
        assert!((d.stable_concurrency / 10.0).ceil() < 4.0);
    }

    #[test]
    fn under_twice_the_target_is_not_a_panic() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 100, 19.0);
        let d = decide(&policy(), &seen, 1, 100 * S, &mut PanicState::default());
        assert!(!d.panicking, "19 on 1 replica is under 2 x 10: {d:?}");
        assert_eq!(d.desired, 2);
    }

    #[test]
    fn panic_never_scales_down_and_ends_after_a_stable_window() {
        let mut seen = watched_since(0);
        load(&mut seen, 0, 6, 80.0);
        let mut p = PanicState::default();
        assert_eq!(decide(&policy(), &seen, 1, 6 * S, &mut p).desired, 8);
        // The burst stops; eight replicas are ready.
        load(&mut seen, 6, 30, 1.0);
        let d = decide(&policy(), &seen, 8, 30 * S, &mut p);
        assert!(d.panicking);
        assert_eq!(d.desired, 8, "no scale-down within the panic");
        load(&mut seen, 30, 67, 1.0);
        let d = decide(&policy(), &seen, 8, 67 * S, &mut p);
        assert!(!d.panicking, "a stable window after the last panic condition: {d:?}");
        assert!(d.desired < 8, "{d:?}");
    }

    #[test]
    fn scales_in_as_the_stable_window_forgets_a_burst() {
        let mut seen = watched_since(0);
        let p = Policy { stable_window_ms: 10 * S, panic_window_ms: 2 * S, ..policy() };
        // Sustained 30 over 3 replicas: no panic, 3 replicas.
        load(&mut seen, 0, 20, 30.0);
        let mut st = PanicState::default();
        assert_eq!(decide(&p, &seen, 3, 20 * S, &mut st).desired, 3);
        load(&mut seen, 20, 25, 1.0);
        let mid = decide(&p, &seen, 3, 25 * S, &mut st).desired;
        assert!((2..=3).contains(&mid), "half a window later: {mid}");
        load(&mut seen, 25, 31, 1.0);
        assert_eq!(decide(&p, &seen, 3, 31 * S, &mut st).desired, 1);
    }

    #[test]
    fn fresh_watch_does_not_scale_in_before_a_panic_window() {
        // A restarted scheduler sees 3 replicas and no samples yet.
        let seen = watched_since(100);
        let d = decide(&policy(), &seen, 3, 101 * S, &mut PanicState::default());
        assert_eq!(d.desired, 3);
        let d = decide(&policy(), &seen, 3, 107 * S, &mut PanicState::default());
        assert_eq!(d.desired, 1, "after a panic window without load");
    }

    #[test]
    fn a_woken_function_is_averaged_over_the_time_watched() {
        // Woken at 100 s, 3 s of 40 in flight: the 60 s window must not
        // dilute it to 2.
        let mut seen = watched_since(100);
        seen.active(100 * S);
        load(&mut seen, 100, 103, 40.0);
        let d = decide(&policy(), &seen, 1, 103 * S, &mut PanicState::default());
        assert!((d.stable_concurrency - 40.0).abs() < 0.01, "{d:?}");
        assert!(d.desired >= 4);
    }

    #[test]
    fn never_active_function_goes_idle_after_a_window_of_watching() {
        let seen = watched_since(0);
        let p = Policy { idle_ms: 5 * S, ..policy() };
        assert_eq!(decide(&p, &seen, 1, 4 * S, &mut PanicState::default()).desired, 1);
        assert_eq!(decide(&p, &seen, 1, 5 * S, &mut PanicState::default()).desired, 0);
    }
}
