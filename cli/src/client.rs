//! Client commands: each is one or two admin API calls and a printout.

use crate::Conn;
use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use reqwest::{Method, RequestBuilder, Response};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};
use tern_protocol::{ChangeReply, ClusterStatus, FunctionDetail, FunctionSummary};

pub(crate) struct Api {
    pub(crate) url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Self> {
        let token = match &conn.token {
            Some(t) => t.clone(),
            None => {
                let path = tern_gateway::token::token_path(&crate::default_data_dir());
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --token or set TERN_TOKEN, or run where `tern up` wrote {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &conn.ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            http = http.add_root_certificate(cert);
        }
        let http = http.build()?;
        Ok(Api { url: conn.url.trim_end_matches('/').to_string(), token, http })
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}/api/v1{path}", self.url)).bearer_auth(&self.token)
    }

    /// Sends, and turns an error reply into an error with the server's message.
    pub(crate) async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {} (is `tern up` running?)", self.url))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        bail!("{message} (HTTP {status})")
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = self.send(req).await?;
        resp.json().await.context("the gateway sent a reply this tern cannot read (version mismatch?)")
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn list(conn: &Conn, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let functions: Vec<FunctionSummary> = api.json(api.request(Method::GET, "/functions")).await?;
    if json {
        print_json(&functions)?;
        return Ok(ExitCode::SUCCESS);
    }
    if functions.is_empty() {
        println!("no functions deployed");
        return Ok(ExitCode::SUCCESS);
    }
    let width = functions.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
    println!("{:width$}  {:>7}  {:6}  ROUTES", "NAME", "VERSION", "KIND");
    for f in functions {
        let kind = match f.world {
            tern_protocol::World::Http => "http",
            tern_protocol::World::Event => "event",
        };
        println!("{:width$}  {:>7}  {kind:6}  {}", f.name, f.active_version, f.routes.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(conn: &Conn, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let d: FunctionDetail = api.json(api.request(Method::GET, &format!("/functions/{name}"))).await?;
    if json {
        print_json(&d)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = &d.active.spec;
    println!("name:     {}", d.name);
    println!("version:  {} of {}", d.active_version, d.versions.len());
    println!("digest:   sha256:{}", d.active.digest);
    println!("routes:   {}", if s.routes.is_empty() { "-".into() } else { s.routes.join(" ") });
    if !s.on_event.is_empty() || s.schedule.is_some() {
        let mut on: Vec<String> = s.on_event.clone();
        on.extend(s.schedule.iter().map(|c| format!("schedule {c:?}")));
        println!("events:   {}", on.join(" "));
        println!(
            "retries:  {} attempts, backoff {} doubling",
            s.max_attempts,
            humantime::format_duration(Duration::from_millis(s.backoff_ms))
        );
        for t in &d.triggers {
            println!("  {}: {} waiting, {} unacked", t.filter, t.waiting, t.unacked);
        }
        println!("dead:     {} (tern dlq list {})", d.dead_letters, d.name);
    }
    if !s.kv.is_empty() {
        println!("buckets:  {}", s.kv.join(" "));
    }
    if !s.secrets.is_empty() {
        println!("secrets:  {}", s.secrets.join(" "));
    }
    if !s.allow_publish.is_empty() {
        println!("publish:  {}", s.allow_publish.join(" "));
    }
    if !s.allow_outbound.is_empty() {
        println!("outbound: {} (responses up to {} bytes)", s.allow_outbound.join(" "), s.max_outbound_body);
    }
    let o = &d.outbound;
    if o.calls + o.denied + o.short_circuited > 0 {
        println!(
            "  calls {}, errors {}, denied {}, failed fast {}, {} bytes out, {} bytes in",
            o.calls, o.errors, o.denied, o.short_circuited, o.bytes_out, o.bytes_in
        );
    }
    for b in &o.breakers {
        let retry = b.retry_in_ms.map_or(String::new(), |ms| format!(", probe in {ms} ms"));
        println!(
            "  breaker {} on {}: {:?}, {} failures in a row{retry}",
            b.upstream, b.node, b.state, b.failures
        );
    }
    println!("memory:   {} MiB", s.memory_mib);
    match s.instance_reuse {
        0 | 1 => println!("instances: fresh for every request"),
        n => println!("instances: each reused for up to {n} requests, one at a time"),
    }
    println!(
        "timeout:  {} to the response head and between chunks, {} in all",
        humantime::format_duration(Duration::from_millis(s.timeout_ms)),
        humantime::format_duration(Duration::from_millis(s.max_duration_ms))
    );
    println!("bodies:   up to {} bytes each way", s.max_body);
    if !s.env.is_empty() {
        println!("config:   {}", s.env.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    let max = if s.max_scale == 0 { "any".to_string() } else { s.max_scale.to_string() };
    println!(
        "scaling:  {}..{max} replicas, target {} in flight each, idle after {}",
        s.min_scale,
        s.concurrency,
        humantime::format_duration(Duration::from_millis(s.idle_ms))
    );
    println!(
        "replicas: {} ready, {} wanted, concurrency {:.2}{}",
        d.replicas,
        d.scale.desired,
        d.scale.stable_concurrency,
        if d.scale.panicking { " (panic mode)" } else { "" }
    );
    println!("cold:     {}", cold_starts(&d.scale));
    println!("versions:");
    for v in &d.versions {
        let marker = if v.number == d.active_version { "*" } else { " " };
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(v.created_at_ms));
        println!("  {marker} {:>3}  {at}  sha256:{}  {}", v.number, &v.digest[..12], v.spec.routes.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(conn: &Conn, name: &str) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let _: ChangeReply = api.json(api.request(Method::DELETE, &format!("/functions/{name}"))).await?;
    println!("Deleted {name}");
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(conn: &Conn, name: &str, to: Option<u64>) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let mut req = api.request(Method::POST, &format!("/functions/{name}/rollback"));
    if let Some(v) = to {
        req = req.query(&[("to", v.to_string())]);
    }
    let reply: ChangeReply = api.json(req).await?;
    let active =
        reply.active_version.ok_or_else(|| anyhow!("the gateway did not say which version is active"))?;
    println!("{name} is at version {active}");
    Ok(ExitCode::SUCCESS)
}

pub async fn invoke(
    conn: &Conn,
    name: &str,
    path: &str,
    data: Option<String>,
    method: Option<String>,
    subject: Option<String>,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let method = match method {
        Some(m) => Method::from_bytes(m.to_uppercase().as_bytes())
            .with_context(|| format!("{m:?} is not an HTTP method"))?,
        None if data.is_some() => Method::POST,
        None => Method::GET,
    };
    let mut req = api.request(method, &format!("/functions/{name}/invoke")).query(&[("path", path)]);
    if let Some(s) = subject {
        req = req.query(&[("subject", s)]);
    }
    if let Some(d) = data {
        let (body, len) = request_body(d).await?;
        if let Some(len) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        req = req.body(body);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach the gateway at {}", api.url))?;
    let status = resp.status();
    // The response as it comes: a streamed one is printed as it is written.
    let mut body = resp.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                out.write_all(&c)?;
                out.flush()?;
            }
            Err(e) => {
                eprintln!("the response broke off before its end: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("function answered HTTP {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// `--data`: the text itself, or a file (`@FILE`) or stdin (`-`) streamed
/// as it is read, so a large upload is never held here; with its length
/// when known.
async fn request_body(data: String) -> anyhow::Result<(reqwest::Body, Option<u64>)> {
    fn streamed<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: R) -> reqwest::Body {
        use tokio::io::AsyncReadExt;
        let chunks = futures::stream::unfold(Some(r), |r| async move {
            let mut r = r?;
            let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
            match r.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.freeze()), Some(r))),
                Err(e) => Some((Err(e), None)),
            }
        });
        reqwest::Body::wrap_stream(chunks)
    }
    if data == "-" {
        return Ok((streamed(tokio::io::stdin()), None));
    }
    if let Some(path) = data.strip_prefix('@') {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {path}"))?;
        let len = file.metadata().await.with_context(|| format!("cannot read {path}"))?.len();
        return Ok((streamed(file), Some(len)));
    }
    Ok((data.into(), None))
}

pub async fn publish(
    conn: &Conn,
    subject: &str,
    data: String,
    headers: Vec<(String, String)>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let data = if data == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("cannot read the data from stdin")?;
        buf
    } else {
        data.into_bytes()
    };
    let mut req = api.request(Method::POST, &format!("/events/{subject}")).body(data);
    for (k, v) in headers {
        req = req.header(format!("tern-header-{k}"), v);
    }
    let stored: serde_json::Value = api.json(req).await?;
    if json {
        print_json(&stored)?;
    } else {
        println!("Published {} on {subject}", stored["id"].as_str().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq_list(conn: &Conn, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let letters: Vec<serde_json::Value> =
        api.json(api.request(Method::GET, &format!("/functions/{name}/dead-letters"))).await?;
    if json {
        print_json(&letters)?;
        return Ok(ExitCode::SUCCESS);
    }
    if letters.is_empty() {
        println!("{name} has no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<32}  {:<24}  {:>8}  {:<20}  ERROR", "ID", "SUBJECT", "ATTEMPTS", "FAILED");
    for l in &letters {
        let failed = l["failed_ms"].as_u64().unwrap_or(0);
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(failed));
        let error = l["error"].as_str().unwrap_or("").lines().next().unwrap_or("");
        println!(
            "{:<32}  {:<24}  {:>8}  {:<20}  {error}",
            l["id"].as_str().unwrap_or("?"),
            l["subject"].as_str().unwrap_or("?"),
            l["attempts"],
            at.to_string()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq_replay(conn: &Conn, name: &str, id: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let mut req = api.request(Method::POST, &format!("/functions/{name}/dead-letters/replay"));
    if let Some(id) = &id {
        req = req.query(&[("id", id)]);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach the gateway at {}", api.url))?;
    let status = resp.status();
    let body = resp.text().await?;
    let results: Vec<serde_json::Value> = match serde_json::from_str(&body) {
        Ok(r) => r,
        // Not a list: an error before any replay (no such function or letter).
        Err(_) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            bail!("{} (HTTP {status})", v["error"]["message"].as_str().unwrap_or(body.trim()));
        }
    };
    if json {
        print_json(&results)?;
    } else if results.is_empty() {
        println!("{name} has no dead letters to replay");
    }
    let mut failed = 0;
    for r in &results {
        let id = r["id"].as_str().unwrap_or("?");
        match r["error"].as_str() {
            None if !json => println!("replayed {id}: handled, dead letter removed"),
            Some(e) => {
                failed += 1;
                if !json {
                    println!("replayed {id}: failed again, kept: {e}");
                }
            }
            None => {}
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn status(conn: &Conn, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(conn)?;
    let s: ClusterStatus = api.json(api.request(Method::GET, "/status")).await?;
    if json {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(l) = &s.leader
        && l.lease_ms > 0
    {
        let since = tern_protocol::clock::now_ms().saturating_sub(l.since_ms) / 1000;
        match &l.leader {
            Some(leader) => println!(
                "SCHEDULER LEADER\n  {leader} (for {since}s, lease {}s; answered by {}{})",
                l.lease_ms / 1000,
                l.me,
                if l.leading { ", the leader" } else { ", a follower" }
            ),
            None => println!("SCHEDULER LEADER\n  none yet (answered by {})", l.me),
        }
    }
    println!("NODES");
    if s.nodes.is_empty() {
        println!("  none");
    }
    for n in &s.nodes {
        let state = if n.alive { "alive" } else { "dead" };
        let in_flight: u64 = n.load.values().map(|l| l.in_flight).sum();
        let completed: u64 = n.load.values().map(|l| l.completed).sum();
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mib = |b: u64| b >> 20;
        let m = &n.memory;
        println!(
            "  {}  {state}  memory {}/{} MiB (loaded {}, held by instances {}, in use {}, rss {})  slots {}  in-flight {in_flight}  served {completed}  {}",
            n.node_id,
            n.used_memory_mib,
            n.capacity.memory_mib,
            mib(m.footprint_bytes),
            mib(m.held_bytes),
            mib(m.in_use_bytes),
            mib(m.rss_bytes),
            n.capacity.slots,
            labels.join(",")
        );
    }
    println!("FUNCTIONS");
    if s.scale.is_empty() {
        println!("  none");
    }
    for (f, scale) in &s.scale {
        let nodes = s.replicas.get(f).cloned().unwrap_or_default();
        let on = if nodes.is_empty() { String::new() } else { format!(" on {}", nodes.join(", ")) };
        println!(
            "  {f}  replicas {}/{}{on}  concurrency {:.2}{}  cold starts: {}",
            nodes.len(),
            scale.desired,
            scale.stable_concurrency,
            if scale.panicking { " (panic)" } else { "" },
            cold_starts(scale)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cold_starts(s: &tern_protocol::ScaleStatus) -> String {
    match &s.cold_start_ms {
        None => format!("{} (wakes {})", s.cold_starts, s.wakes),
        Some(l) => format!(
            "{} (wakes {}), ready in p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            s.cold_starts, s.wakes, l.p50, l.p95, l.max
        ),
    }
}
