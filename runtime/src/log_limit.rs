//! A function's log rate on this worker: at most [`LOG_BYTES_PER_SECOND`]
//! (records counted by line plus overhead) each second; the rest is
//! dropped and counted, and the next second's first record says how much.
//! However many instances print at once, what leaves the worker for the
//! function's log is bounded.

use crate::capture::RECORD_OVERHEAD;
use parking_lot::Mutex;
use std::time::{Duration, Instant};
use tern_protocol::{LogRecord, LogStream, clock};

pub(crate) const LOG_BYTES_PER_SECOND: usize = 1024 * 1024;
const WINDOW: Duration = Duration::from_secs(1);

pub(crate) struct LogLimit {
    per_window: usize,
    state: Mutex<Window>,
}

struct Window {
    started: Instant,
    used: usize,
    dropped_records: u64,
    dropped_bytes: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(LOG_BYTES_PER_SECOND)
    }
}

impl LogLimit {
    pub(crate) fn new(per_window: usize) -> Self {
        let w = Window { started: Instant::now(), used: 0, dropped_records: 0, dropped_bytes: 0 };
        LogLimit { per_window, state: Mutex::new(w) }
    }

    /// The records of one invocation that fit this second's budget, after a
    /// line about what the last window dropped, if it dropped anything.
    pub(crate) fn admit(&self, logs: Vec<LogRecord>) -> Vec<LogRecord> {
        self.admit_at(logs, Instant::now())
    }

    fn admit_at(&self, logs: Vec<LogRecord>, now: Instant) -> Vec<LogRecord> {
        // Most invocations print nothing: no lock, no allocation for them.
        // (A drop count waits for the function's next line to be reported.)
        if logs.is_empty() {
            return logs;
        }
        let mut w = self.state.lock();
        let mut out = Vec::with_capacity(logs.len() + 1);
        if now.saturating_duration_since(w.started) >= WINDOW {
            if w.dropped_records > 0
                && let Some(first) = logs.first()
            {
                out.push(LogRecord {
                    invocation: String::new(),
                    function: first.function.clone(),
                    version: first.version,
                    ts_ms: clock::now_ms(),
                    stream: LogStream::Tern,
                    line: format!(
                        "log rate limit: {} lines ({} bytes) dropped; a function logs at most {} KiB/s per worker",
                        w.dropped_records,
                        w.dropped_bytes,
                        self.per_window / 1024
                    ),
                });
            }
            *w = Window { started: now, used: 0, dropped_records: 0, dropped_bytes: 0 };
        }
        for r in logs {
            let cost = r.line.len() + RECORD_OVERHEAD;
            if w.used + cost > self.per_window {
                w.dropped_records += 1;
                w.dropped_bytes += r.line.len() as u64;
                continue;
            }
            w.used += cost;
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, len: usize) -> Vec<LogRecord> {
        (0..n)
            .map(|_| LogRecord {
                invocation: String::new(),
                function: "f".into(),
                version: 1,
                ts_ms: 0,
                stream: LogStream::Stdout,
                line: "x".repeat(len),
            })
            .collect()
    }

    #[test]
    fn past_the_budget_lines_are_dropped_then_reported_once() {
        let limit = LogLimit::new(10 * (RECORD_OVERHEAD + 36));
        let t0 = Instant::now();
        assert_eq!(limit.admit_at(lines(6, 36), t0).len(), 6);
        assert_eq!(limit.admit_at(lines(6, 36), t0).len(), 4, "4 more fit, 2 are dropped");
        assert!(limit.admit_at(lines(3, 36), t0 + Duration::from_millis(500)).is_empty());
        let next = limit.admit_at(lines(2, 36), t0 + WINDOW);
        assert_eq!(next.len(), 3);
        assert_eq!(next[0].stream, LogStream::Tern);
        assert!(next[0].line.contains("5 lines (180 bytes) dropped"), "{}", next[0].line);
        let after = limit.admit_at(lines(1, 36), t0 + WINDOW * 2);
        assert_eq!(after.len(), 1, "nothing dropped last window: no line about it");
    }
}
