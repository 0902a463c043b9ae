//! Recent log records per function, for `tern logs`: a ring each, bounded
//! by records and by bytes, filled from the workers' log subjects. Kept in
//! memory only.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use tern_protocol::LogRecord;

/// Records kept per function, at most.
pub const LOG_RING: usize = 2000;
/// Bytes of log lines kept per function, at most (each record counted as
/// its line plus [`RECORD_OVERHEAD`]).
pub const LOG_RING_BYTES: usize = 512 * 1024;
const RECORD_OVERHEAD: usize = 64;

pub struct LogRing {
    records: usize,
    bytes: usize,
    rings: Mutex<HashMap<String, Ring>>,
}

#[derive(Default)]
struct Ring {
    records: VecDeque<LogRecord>,
    bytes: usize,
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing::with_capacity(LOG_RING, LOG_RING_BYTES)
    }
}

fn cost(r: &LogRecord) -> usize {
    r.line.len() + RECORD_OVERHEAD
}

impl LogRing {
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        LogRing { records, bytes, rings: Mutex::new(HashMap::new()) }
    }

    pub fn keep(&self, records: Vec<LogRecord>) {
        let mut rings = self.rings.lock();
        for r in records {
            let ring = rings.entry(r.function.clone()).or_default();
            ring.bytes += cost(&r);
            ring.records.push_back(r);
            while ring.records.len() > self.records || (ring.bytes > self.bytes && ring.records.len() > 1) {
                let old = ring.records.pop_front().expect("not empty");
                ring.bytes -= cost(&old);
            }
        }
    }

    /// The newest `tail` records of `function`, oldest first.
    pub fn recent(&self, function: &str, tail: usize) -> Vec<LogRecord> {
        let rings = self.rings.lock();
        rings
            .get(function)
            .map(|r| r.records.iter().skip(r.records.len().saturating_sub(tail)).cloned().collect())
            .unwrap_or_default()
    }

    pub fn forget(&self, function: &str) {
        self.rings.lock().remove(function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::LogStream;

    fn record(function: &str, line: usize) -> LogRecord {
        LogRecord {
            function: function.into(),
            version: 1,
            ts_ms: 0,
            stream: LogStream::Stdout,
            line: line.to_string(),
        }
    }

    #[test]
    fn each_function_keeps_its_newest_records() {
        let ring = LogRing::with_capacity(3, 1 << 20);
        ring.keep((0..5).map(|i| record("a", i)).chain([record("b", 9)]).collect());
        let lines = |f, tail| ring.recent(f, tail).into_iter().map(|r| r.line).collect::<Vec<_>>();
        assert_eq!(lines("a", 10), vec!["2", "3", "4"]);
        assert_eq!(lines("a", 1), vec!["4"]);
        assert_eq!(lines("b", 10), vec!["9"]);
        ring.forget("a");
        assert!(lines("a", 10).is_empty());
        assert!(lines("nobody", 10).is_empty());
    }

    #[test]
    fn long_lines_are_bounded_by_bytes() {
        let ring = LogRing::with_capacity(1000, 10 * (RECORD_OVERHEAD + 100));
        let long = |i: usize| LogRecord { line: format!("{i:0100}"), ..record("a", i) };
        ring.keep((0..50).map(long).collect());
        let kept = ring.recent("a", 1000);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[9].line, format!("{:0100}", 49), "the newest are kept");
    }
}
