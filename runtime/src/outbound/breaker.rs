//! A circuit breaker per function and upstream: after `failures` failed
//! calls in a row the upstream is left alone for `cooldown` (calls fail at
//! once in the guest), then one probe call goes through; its success
//! closes the breaker, its failure opens it for another cool-down.
//!
//! A failure is a call with no usable answer: a transport error, a timeout
//! or a 5xx. Time is passed in, so the state machine is tested without
//! sleeping.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tern_protocol::{BreakerState, BreakerStatus};

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures: 5, cooldown: Duration::from_secs(10) }
    }
}

/// Upstreams tracked per function at most: a guest granted `*` picks its
/// hosts, and each would be host memory. Past this, new ones go untracked.
const MAX_TRACKED: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// A probe is out since then; another goes after a cool-down, in case
    /// this one never reports (its instance was dropped).
    Probing {
        since: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct Breaker {
    failures: u32,
    state: State,
}

/// What to do with a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Fail at once; a probe may go in this long.
    Reject(Duration),
}

/// One function's breakers, by upstream (`host:port`).
pub struct Breakers {
    config: BreakerConfig,
    map: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Breakers { config, map: Mutex::new(HashMap::new()) }
    }

    pub fn admit(&self, upstream: &str, now: Instant) -> Admit {
        let mut map = self.map.lock();
        let Some(b) = map.get_mut(upstream) else { return Admit::Go };
        match b.state {
            State::Closed => Admit::Go,
            State::Open { until } | State::Probing { since: until } if now < until => {
                Admit::Reject(until - now)
            }
            State::Open { .. } | State::Probing { .. } => {
                b.state = State::Probing { since: now + self.config.cooldown };
                Admit::Go
            }
        }
    }

    pub fn record(&self, upstream: &str, ok: bool, now: Instant) {
        let mut map = self.map.lock();
        if ok {
            // A healthy upstream needs no entry.
            map.remove(upstream);
            return;
        }
        if !map.contains_key(upstream) && map.len() >= MAX_TRACKED {
            return;
        }
        let b = map.entry(upstream.to_string()).or_insert(Breaker { failures: 0, state: State::Closed });
        b.failures = b.failures.saturating_add(1);
        let probe_failed = matches!(b.state, State::Probing { .. });
        if probe_failed || b.failures >= self.config.failures {
            b.state = State::Open { until: now + self.config.cooldown };
        }
    }

    /// Every breaker with failures counted or not closed.
    pub fn status(&self, now: Instant) -> Vec<BreakerStatus> {
        let map = self.map.lock();
        let mut out: Vec<BreakerStatus> = map
            .iter()
            .map(|(upstream, b)| {
                let (state, retry_in) = match b.state {
                    State::Closed => (BreakerState::Closed, None),
                    State::Open { until } => (BreakerState::Open, Some(until.saturating_duration_since(now))),
                    State::Probing { .. } => (BreakerState::HalfOpen, None),
                };
                BreakerStatus {
                    upstream: upstream.clone(),
                    state,
                    failures: b.failures,
                    retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                    node: String::new(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_probes_after_cooldown_and_closes_on_success() {
        let b = Breakers::new(BreakerConfig { failures: 3, cooldown: Duration::from_secs(10) });
        let t0 = Instant::now();
        let up = "api:443";
        for _ in 0..2 {
            assert_eq!(b.admit(up, t0), Admit::Go);
            b.record(up, false, t0);
        }
        assert_eq!(b.status(t0)[0].state, BreakerState::Closed);
        b.record(up, false, t0);
        assert_eq!(b.admit(up, t0 + Duration::from_secs(1)), Admit::Reject(Duration::from_secs(9)));
        assert_eq!(b.status(t0)[0].state, BreakerState::Open);
        // The cool-down is over: one probe, and no second while it is out.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(up, t1), Admit::Go);
        assert!(matches!(b.admit(up, t1), Admit::Reject(_)));
        assert_eq!(b.status(t1)[0].state, BreakerState::HalfOpen);
        // The probe fails: open again for a whole cool-down.
        b.record(up, false, t1);
        assert_eq!(b.admit(up, t1 + Duration::from_secs(5)), Admit::Reject(Duration::from_secs(5)));
        // The next probe succeeds: closed, and forgotten.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit(up, t2), Admit::Go);
        b.record(up, true, t2);
        assert_eq!(b.admit(up, t2), Admit::Go);
        assert!(b.status(t2).is_empty());
    }

    #[test]
    fn a_success_resets_the_count_and_a_lost_probe_is_retried() {
        let b = Breakers::new(BreakerConfig { failures: 2, cooldown: Duration::from_secs(1) });
        let t0 = Instant::now();
        b.record("u", false, t0);
        b.record("u", true, t0);
        b.record("u", false, t0);
        assert_eq!(b.admit("u", t0), Admit::Go, "one failure since the success");
        b.record("u", false, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit("u", t1), Admit::Go, "the probe");
        // Its instance is dropped and it never reports: another probe
        // goes after a further cool-down.
        assert!(matches!(b.admit("u", t1), Admit::Reject(_)));
        assert_eq!(b.admit("u", t1 + Duration::from_secs(1)), Admit::Go);
    }
}
