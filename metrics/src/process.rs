//! The process metrics every Prometheus client library exports, read from
//! /proc at each scrape: resident and virtual memory, CPU time, open and
//! allowed file descriptors, start time.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type FloatGauge = Gauge<f64, AtomicU64>;

pub(crate) struct ProcessMetrics {
    rss: Gauge,
    virt: Gauge,
    cpu: Counter<f64, AtomicU64>,
    fds: Gauge,
    max_fds: Gauge,
    start: FloatGauge,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

/// Resident set size in bytes, from /proc/self/statm.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

impl ProcessMetrics {
    pub(crate) fn register(r: &mut Registry) -> Self {
        let m = ProcessMetrics {
            rss: Gauge::default(),
            virt: Gauge::default(),
            cpu: Counter::default(),
            fds: Gauge::default(),
            max_fds: Gauge::default(),
            start: FloatGauge::default(),
        };
        r.register("process_resident_memory_bytes", "Resident memory size in bytes", m.rss.clone());
        r.register("process_virtual_memory_bytes", "Virtual memory size in bytes", m.virt.clone());
        r.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", m.cpu.clone());
        r.register("process_open_fds", "Number of open file descriptors", m.fds.clone());
        r.register("process_max_fds", "Maximum number of open file descriptors", m.max_fds.clone());
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            m.start.clone(),
        );
        m
    }

    pub(crate) fn refresh(&self) {
        self.rss.set(rss_bytes() as i64);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces), 1-based
            // from field 3 (state): utime 14, stime 15, starttime 22, vsize 23.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let at = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let ticks = ticks_per_second();
                // The kernel's count only grows: the counter follows it.
                let total = (at(14) + at(15)) as f64 / ticks;
                let seen = self.cpu.get();
                if total > seen {
                    self.cpu.inc_by(total - seen);
                }
                self.virt.set(at(23) as i64);
                if let Some(boot) = boot_time() {
                    self.start.set(boot + at(22) as f64 / ticks);
                }
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(d.count() as i64);
        }
        let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<i64>()
                .ok()
        });
        if let Some(n) = limit {
            self.max_fds.set(n);
        }
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
}
