//! What the platform holds while a test runs: resident memory sampled over
//! a stretch of work, and requests in flight.

use crate::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A process's resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

/// Samples processes' resident memory every 50 ms until dropped; `grew`
/// tells how far above its start each one went.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<u64>>>,
    start: Vec<u64>,
}

impl RssWatch {
    pub fn start(pids: &[u32]) -> RssWatch {
        let start: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (pids, done, mut peak) = (pids.to_vec(), stop.clone(), start.clone());
        let thread = std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (i, p) in pids.iter().enumerate() {
                    peak[i] = peak[i].max(rss_kib(*p));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        RssWatch { stop, thread: Some(thread), start }
    }

    /// KiB each process grew by at its peak since `start`.
    pub fn grew(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.thread.take().unwrap().join().unwrap();
        peak.iter().zip(&self.start).map(|(p, s)| p.saturating_sub(*s)).collect()
    }
}

/// Requests of `function` in flight on the live nodes.
pub fn in_flight(c: &Client, function: &str) -> u64 {
    let s = c.status();
    let nodes = s["nodes"].as_array().unwrap().iter().filter(|n| n["alive"] == true);
    nodes.map(|n| n["load"][function]["in_flight"].as_u64().unwrap_or(0)).sum()
}
