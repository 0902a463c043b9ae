//! Following what event functions handled, and publishing through the
//! admin API.

use crate::build::tern_bin;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One line `delivery id=… subject=… attempt=… data=…` that the
/// plain-event guest prints per delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub id: String,
    pub subject: String,
    pub attempt: u32,
    pub data: String,
    /// When the worker captured the line.
    pub ts_ms: u64,
}

impl Delivered {
    fn parse(line: &str, ts_ms: u64) -> Option<Delivered> {
        let rest = line.strip_prefix("delivery id=")?;
        let (id, rest) = rest.split_once(" subject=")?;
        let (subject, rest) = rest.split_once(" attempt=")?;
        let (attempt, data) = rest.split_once(" data=")?;
        Some(Delivered {
            id: id.into(),
            subject: subject.into(),
            attempt: attempt.parse().ok()?,
            data: data.into(),
            ts_ms,
        })
    }
}

/// Follows a function's log live (`tern logs NAME --follow --json`) and
/// keeps every delivery line: how tests see what a function handled, in
/// any number (the stored log keeps only the latest lines).
pub struct Deliveries {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Delivered>>>,
}

impl Deliveries {
    pub fn follow(url: &str, token: &str, function: &str) -> Deliveries {
        let mut child = Command::new(tern_bin())
            // The backlog too: lines printed before the live subscription
            // started are not missed. A line in both is kept once.
            .args(["logs", function, "--follow", "--json", "--tail", "2000"])
            .env("TERN_URL", url)
            .env("TERN_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tern logs --follow");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let keep = seen.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let text = record["line"].as_str().unwrap_or_default();
                if let Some(d) = Delivered::parse(text, record["ts_ms"].as_u64().unwrap_or(0)) {
                    let mut seen = keep.lock().unwrap();
                    // A real redelivery has its own time (and attempt).
                    if !seen.iter().rev().take(4000).any(|s| s == &d) {
                        seen.push(d);
                    }
                }
            }
        });
        // Give the request a moment to land; the backlog covers the rest.
        std::thread::sleep(Duration::from_millis(300));
        Deliveries { child, seen }
    }

    pub fn all(&self) -> Vec<Delivered> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was seen, or `within` passes;
    /// returns what was seen either way.
    pub fn wait(&self, within: Duration, done: impl Fn(&[Delivered]) -> bool) -> Vec<Delivered> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.all();
            if done(&seen) || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes through the admin API (`POST /api/v1/events/SUBJECT`) and
/// returns the stored event's id, or the status and body of a refusal.
pub fn publish(url: &str, token: &str, subject: &str, data: &str) -> Result<String, (u16, String)> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
    });
    let resp = client
        .post(format!("{url}/api/v1/events/{subject}"))
        .bearer_auth(token)
        .body(data.to_string())
        .send()
        .map_err(|e| (0, e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    if status != 202 {
        return Err((status, body));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| (status, e.to_string()))?;
    Ok(v["id"].as_str().unwrap_or_default().to_string())
}
