//! Recent log records per function, for `tern logs`: a bounded ring each,
//! filled from the workers' log subjects. Kept in memory only.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tern_protocol::LogRecord;

/// Records kept per function.
pub const LOG_RING: usize = 2000;

pub struct LogRing {
    capacity: usize,
    rings: Mutex<HashMap<String, VecDeque<LogRecord>>>,
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing::with_capacity(LOG_RING)
    }
}

impl LogRing {
    pub fn with_capacity(capacity: usize) -> Self {
        LogRing { capacity, rings: Mutex::new(HashMap::new()) }
    }

    pub fn keep(&self, records: Vec<LogRecord>) {
        let mut rings = self.rings.lock().unwrap();
        for r in records {
            let ring = rings.entry(r.function.clone()).or_default();
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(r);
        }
    }

    /// The newest `tail` records of `function`, oldest first.
    pub fn recent(&self, function: &str, tail: usize) -> Vec<LogRecord> {
        let rings = self.rings.lock().unwrap();
        rings
            .get(function)
            .map(|r| r.iter().skip(r.len().saturating_sub(tail)).cloned().collect())
            .unwrap_or_default()
    }

    pub fn forget(&self, function: &str) {
        self.rings.lock().unwrap().remove(function);
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
        let ring = LogRing::with_capacity(3);
        ring.keep((0..5).map(|i| record("a", i)).chain([record("b", 9)]).collect());
        let lines = |f, tail| ring.recent(f, tail).into_iter().map(|r| r.line).collect::<Vec<_>>();
        assert_eq!(lines("a", 10), vec!["2", "3", "4"]);
        assert_eq!(lines("a", 1), vec!["4"]);
        assert_eq!(lines("b", 10), vec!["9"]);
        ring.forget("a");
        assert!(lines("a", 10).is_empty());
        assert!(lines("nobody", 10).is_empty());
    }
}
