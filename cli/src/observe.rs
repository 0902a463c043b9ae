//! `tern logs` and `tern invocations`: what functions wrote, and a receipt
//! per invocation.

use crate::Conn;
use crate::client::{Api, print_json};
use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_protocol::{LogRecord, Receipt};

/// Which lines `tern logs` shows.
pub struct LogFilter {
    pub tail: usize,
    pub since: Option<Duration>,
    pub grep: Option<String>,
    pub invocation: Option<String>,
}

fn at(ms: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
}

pub async fn logs(
    conn: &Conn,
    name: &str,
    follow: bool,
    filter: LogFilter,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let mut query = vec![("tail", filter.tail.to_string()), ("follow", follow.to_string())];
    if let Some(since) = filter.since {
        let from = SystemTime::now().checked_sub(since).unwrap_or(UNIX_EPOCH);
        let ms = from.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        query.push(("since_ms", ms.to_string()));
    }
    query.extend(filter.grep.map(|g| ("grep", g)));
    query.extend(filter.invocation.map(|i| ("invocation", i)));
    let req = api.request(Method::GET, &format!("/functions/{name}/logs")).query(&query);
    let resp = api.send(req).await?;
    let mut stream = resp.bytes_stream();
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("the log stream broke off")?);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if json {
                out.write_all(&line)?;
            } else if let Ok(r) = serde_json::from_slice::<LogRecord>(&line) {
                let stream = serde_json::to_value(r.stream)?.as_str().unwrap_or("").to_string();
                let id = if r.invocation.is_empty() { String::new() } else { format!(" {}", r.invocation) };
                writeln!(out, "{} v{}{id} {stream}: {}", at(r.ts_ms), r.version, r.line)?;
            }
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn invocations(
    conn: &Conn,
    name: &str,
    failed: bool,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let query = [("limit", limit.to_string()), ("failed", failed.to_string())];
    let req = api.request(Method::GET, &format!("/functions/{name}/invocations")).query(&query);
    let receipts: Vec<Receipt> = api.json(req).await?;
    if json {
        print_json(&receipts)?;
        return Ok(ExitCode::SUCCESS);
    }
    if receipts.is_empty() {
        println!("no invocations of {name} kept{}", if failed { " that failed" } else { "" });
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<24}  {:>4}  {:<6}  {:>3}  {:>10}  {:>10}  {:>8}  {:>9}  {:>9}  NODE",
        "ID", "START", "VER", "TRIG", "ST", "DURATION", "GUEST", "MEMORY", "IN", "OUT"
    );
    for r in &receipts {
        let cold = if r.cold { " cold" } else { "" };
        let attempt = r.attempt.map(|a| format!(" attempt {a}")).unwrap_or_default();
        println!(
            "{:<16}  {:<24}  {:>4}  {:<6}  {:>3}  {:>8.2}ms  {:>8.2}ms  {:>6}Ki  {:>9}  {:>9}  {}{cold}{attempt}",
            r.id,
            at(r.start_ms).to_string(),
            r.version,
            r.trigger.as_str(),
            r.status,
            r.duration_us as f64 / 1000.0,
            r.guest_us as f64 / 1000.0,
            r.peak_memory_bytes / 1024,
            r.bytes_in,
            r.bytes_out,
            r.node,
        );
        if let Some(e) = &r.error {
            println!("  └ {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
