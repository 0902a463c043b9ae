//! Traffic from tests: background load, bursts, polling.

use std::time::{Duration, Instant};

/// Background GET traffic on one path, recording when each request
/// started and how it ended.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Instant, bool)>>>,
}

impl Load {
    pub fn start(url: &str, path: &str, threads: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (stop, target) = (stop.clone(), format!("{url}{path}"));
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(20))
                        .build()
                        .unwrap();
                    let mut out = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = Instant::now();
                        let ok = client.get(&target).send().map(|r| r.status().is_success()).unwrap_or(false);
                        out.push((started, ok));
                        if !ok {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    out
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops and returns every (start time, succeeded), oldest first.
    pub fn finish(self) -> Vec<(Instant, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all: Vec<(Instant, bool)> =
            self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_by_key(|(t, _)| *t);
        all
    }
}

/// Polls until `f` holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// `n` GETs of `url` at once (released together); each one's status and
/// body, and how long it took.
pub fn burst(url: &str, n: usize) -> Vec<(u16, String, Duration)> {
    burst_with(reqwest::Method::GET, url, n)
}

/// [`burst`] with another method (no body).
pub fn burst_with(method: reqwest::Method, url: &str, n: usize) -> Vec<(u16, String, Duration)> {
    let gate = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (gate, url, method) = (gate.clone(), url.to_string(), method.clone());
            std::thread::spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                gate.wait();
                let started = Instant::now();
                match client.request(method, &url).send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().unwrap_or_default(), started.elapsed())
                    }
                    Err(e) => (0, e.to_string(), started.elapsed()),
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}
