//! `tern deploy`: the flags make a [`FunctionSpec`] (defaults from the
//! spec's own constants), sent as JSON beside the component in one
//! multipart upload.

use crate::client::{Api, print_json};
use crate::{Conn, parse_duration, parse_key_value};
use anyhow::Context;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tern_protocol::{
    DEFAULT_BACKOFF_MS, DEFAULT_CONCURRENCY, DEFAULT_IDLE_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DURATION_MS,
    DEFAULT_MAX_SCALE, DEFAULT_MEMORY_MIB, DEFAULT_MIN_SCALE, DEFAULT_TIMEOUT_MS, DeployReply, FunctionSpec,
};

/// A duration flag held in milliseconds, written like `500ms`, `2s`, `1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub u64);

impl std::str::FromStr for Millis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Millis(parse_duration(s)?.as_millis().max(1) as u64))
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(Duration::from_millis(self.0)))
    }
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The component (.wasm) to deploy
    pub file: PathBuf,
    /// Function name
    #[arg(long)]
    pub name: String,
    /// Route to serve, e.g. /hello, /users/:id, /static/* (repeatable)
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Config value visible to the function as an environment variable (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Memory limit in MiB
    #[arg(long, value_name = "MiB", default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u32,
    /// Time limit per request, like 500ms, 2s, 1m
    #[arg(long, default_value_t = Millis(DEFAULT_TIMEOUT_MS))]
    pub timeout: Millis,
    /// Replicas kept loaded even when idle, each on its own worker (0: scale to zero)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MIN_SCALE)]
    pub min_scale: u32,
    /// Most replicas the autoscaler may run (0: no limit but the number of workers)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SCALE)]
    pub max_scale: u32,
    /// Target in-flight requests per replica; more concurrency adds replicas
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
    /// Unload the function after this long without requests, like 30s, 5m
    #[arg(long, default_value_t = Millis(DEFAULT_IDLE_MS))]
    pub idle: Millis,
    /// Event subject that triggers the function; NATS wildcards allowed, e.g. orders.* or orders.> (repeatable)
    #[arg(long = "on-event", value_name = "SUBJECT")]
    pub on_event: Vec<String>,
    /// Cron schedule (UTC) that triggers the function: 5 fields, or 6 with seconds first, or @hourly etc.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Tries per event before it becomes a dead letter
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Delay before the first retry of a failed event, doubling for each next one, like 500ms, 2s
    #[arg(long, default_value_t = Millis(DEFAULT_BACKOFF_MS))]
    pub backoff: Millis,
    /// Let the function open this key-value bucket (repeatable); functions granted the same name share it
    #[arg(long = "kv", value_name = "BUCKET")]
    pub kv: Vec<String>,
    /// Let the function read this secret as the wasi:config key of its name (repeatable; set it with `tern secret set`)
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Let the function publish events on subjects this pattern matches, NATS wildcards allowed (repeatable)
    #[arg(long = "allow-publish", value_name = "SUBJECT")]
    pub allow_publish: Vec<String>,
    /// Let the function send HTTP requests to hosts this pattern matches: scheme://host[:port], like https://api.example.com, https://*.example.com, http://10.0.0.0/8:*, *://*:443, or http://NAME.tern.internal to call function NAME (repeatable)
    #[arg(long = "allow-outbound", value_name = "PATTERN")]
    pub allow_outbound: Vec<String>,
    /// Largest response body one outbound request may bring back, like 512KiB, 8MiB
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = crate::parse_size)]
    pub max_outbound_body: u64,
    /// Largest request body a client may send and response body the function may write, like 512KiB, 256MiB, 1GiB (at most 4GiB); bodies stream, so this costs no memory
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = crate::parse_size)]
    pub max_body: u64,
    /// Longest a request may take in all, a streamed response or upload included, like 30s, 15m, 2h; --timeout still bounds the wait for the response head and between chunks
    #[arg(long, default_value_t = Millis(DEFAULT_MAX_DURATION_MS))]
    pub max_duration: Millis,
    /// Let one instance serve up to N requests, one after another, instead of a fresh instance per request (0: fresh). Its memory (globals, caches) persists between them; an instance that traps or times out is dropped
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub instance_reuse: u32,
    /// Run only on workers with this label (repeatable; all must match)
    #[arg(long = "node-selector", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub node_selector: Vec<(String, String)>,
    /// Print the new version as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

impl DeployArgs {
    /// The spec these flags ask for.
    pub fn spec(&self) -> FunctionSpec {
        FunctionSpec {
            routes: self.routes.clone(),
            env: self.env.iter().cloned().collect(),
            memory_mib: self.memory,
            timeout_ms: self.timeout.0,
            min_scale: self.min_scale,
            max_scale: self.max_scale,
            concurrency: self.concurrency,
            idle_ms: self.idle.0,
            node_selector: self.node_selector.iter().cloned().collect(),
            on_event: self.on_event.clone(),
            schedule: self.schedule.clone(),
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff.0,
            kv: self.kv.clone(),
            secrets: self.secrets.clone(),
            allow_publish: self.allow_publish.clone(),
            allow_outbound: self.allow_outbound.clone(),
            max_outbound_body: self.max_outbound_body,
            max_body: self.max_body,
            max_duration_ms: self.max_duration.0,
            instance_reuse: self.instance_reuse,
            ..FunctionSpec::new(&self.name)
        }
    }
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.conn)?;
    let spec = args.spec();
    // The gateway checks it too; checking here saves uploading for nothing.
    spec.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    eprintln!("Uploading {} ({}) to {} ...", args.file.display(), size(bytes.len()), api.url);
    let file_name =
        args.file.file_name().map_or("component.wasm".into(), |n| n.to_string_lossy().into_owned());
    let form = Form::new()
        .part("spec", Part::text(serde_json::to_string(&spec)?).mime_str("application/json")?)
        .part("component", Part::bytes(bytes).file_name(file_name).mime_str("application/wasm")?);
    let req = api.request(Method::POST, &format!("/functions/{}/versions", args.name)).multipart(form);
    eprintln!("Validating and compiling ...");
    let reply: DeployReply = api.json(req).await?;
    if args.json {
        print_json(&reply.version)?;
        return Ok(ExitCode::SUCCESS);
    }
    let v = &reply.version;
    let replicas = reply.ready_replicas;
    let plural = if replicas == 1 { "" } else { "s" };
    println!(
        "Deployed {} version {} (sha256 {}), {replicas} replica{plural} ready",
        v.spec.name,
        v.number,
        &v.digest[..12]
    );
    if replicas == 0 {
        eprintln!(
            "warning: no worker serves it yet (none running, none matching its node selector, or no room)"
        );
    }
    for subject in &v.spec.on_event {
        println!("  on events {subject}");
    }
    if let Some(cron) = &v.spec.schedule {
        println!("  on schedule {cron} (UTC)");
    }
    if v.spec.routes.is_empty() && v.spec.on_event.is_empty() && v.spec.schedule.is_none() {
        println!("  no routes; call it with: tern invoke {}", v.spec.name);
    }
    for r in &v.spec.routes {
        println!("  {}{}", api.url, r);
    }
    if !v.spec.kv.is_empty() {
        println!("  buckets: {}", v.spec.kv.join(", "));
    }
    if !v.spec.secrets.is_empty() {
        println!("  secrets: {}", v.spec.secrets.join(", "));
    }
    if !v.spec.allow_publish.is_empty() {
        println!("  publishes on: {}", v.spec.allow_publish.join(", "));
    }
    if !v.spec.allow_outbound.is_empty() {
        println!("  reaches: {}", v.spec.allow_outbound.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn size(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployArgs,
    }

    #[test]
    fn flag_defaults_are_the_spec_defaults() {
        let cli = Cli::parse_from(["tern", "f.wasm", "--name", "f", "--token", "t"]);
        assert_eq!(cli.deploy.spec(), FunctionSpec::new("f"));
    }

    #[test]
    fn flags_fill_the_spec() {
        let cli = Cli::parse_from([
            "tern",
            "f.wasm",
            "--name",
            "f",
            "--route",
            "/a",
            "--env",
            "K=V=W",
            "--timeout",
            "1m",
            "--idle",
            "2s",
            "--backoff",
            "250ms",
            "--node-selector",
            "zone=a",
            "--memory",
            "64",
        ]);
        let s = cli.deploy.spec();
        assert_eq!((s.timeout_ms, s.idle_ms, s.backoff_ms, s.memory_mib), (60_000, 2_000, 250, 64));
        assert_eq!(s.env["K"], "V=W");
        assert_eq!(s.node_selector["zone"], "a");
        assert_eq!(s.routes, vec!["/a"]);
    }
}
