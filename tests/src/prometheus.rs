//! A real Prometheus server (Debian's `prometheus`), started by a test
//! with a scrape config at a 1 s interval, queried through its HTTP API;
//! and `promtool check metrics` on what a role serves.

use crate::process::free_port;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes each of `targets` (`host:port`, with `/metrics` at it) every
    /// second, as its own job, and waits until Prometheus is ready.
    pub fn scrape(targets: &[(&str, &str)]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let mut f = std::fs::File::create(&config).unwrap();
        writeln!(f, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:").unwrap();
        for (job, target) in targets {
            writeln!(f, "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']").unwrap();
        }
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("run prometheus (Debian package prometheus; scripts/test installs it)");
        let p = Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{}/-/ready", p.url)).map(|r| r.status().as_u16()).ok()
            != Some(200)
        {
            assert!(Instant::now() < deadline, "prometheus never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Ready is not scraping: the first scrapes come up to 5 s later
        // (its scrape manager applies new targets every 5 s).
        while p.value("count(up)") != Some(targets.len() as f64) {
            assert!(Instant::now() < deadline, "prometheus never scraped every target: {}", p.targets());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The sum of the instant vector `expr` (None: no series).
    pub fn value(&self, expr: &str) -> Option<f64> {
        let r: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .ok()?
            .json()
            .ok()?;
        let series = r["data"]["result"].as_array()?;
        if series.is_empty() {
            return None;
        }
        Some(series.iter().filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok()).sum())
    }

    /// Waits (up to 20 s: a few scrapes) until `expr` is `want`; the last
    /// value seen otherwise.
    pub fn wait_for(&self, expr: &str, want: f64) -> Result<(), Option<f64>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.value(expr);
            if got == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(got);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each target's health and last scrape error, for a failure message.
    pub fn targets(&self) -> String {
        let r: Option<serde_json::Value> =
            reqwest::blocking::get(format!("{}/api/v1/targets", self.url)).ok().and_then(|r| r.json().ok());
        let Some(r) = r else { return "(targets unreadable)".into() };
        let active = r["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        active
            .iter()
            .map(|t| format!("{} {} {}", t["labels"]["job"], t["health"], t["lastError"]))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on what `url` serves; Err has its output.
pub fn promtool_check(url: &str) -> Result<(), String> {
    let text = reqwest::blocking::get(url).map_err(|e| e.to_string())?.text().map_err(|e| e.to_string())?;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run promtool: {e}"))?;
    child.stdin.take().unwrap().write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}
