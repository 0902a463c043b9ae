//! The roles: `tern up` (all of them in one process), and `tern scheduler`,
//! `tern worker`, `tern gateway` for clusters. Each role is the same code in
//! both modes; only the bus differs (in-process, or NATS).

use anyhow::{Context, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::{Bus, InProcessBus, NatsBus, NatsOptions};
use tern_events::{EventLog, JetStreamLog, SledLog};
use tern_gateway::{Gateway, GatewayConfig};
use tern_protocol::{Capacity, DEFAULT_BODY_LIMIT};
use tern_runtime::{Runtime, RuntimeConfig, Worker, WorkerConfig};
use tern_scheduler::{ScaleConfig, Scheduler};

/// How to reach NATS; credentials and TLS are passed to the client as is.
#[derive(Args, Clone, Default)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated; without it `tern up` uses its in-process bus
    #[arg(long = "nats", env = "TERN_NATS_URL", value_name = "URL")]
    pub url: Option<String>,
    /// NATS credentials file (.creds)
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to trust for NATS TLS
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS mutual TLS
    #[arg(long, value_name = "FILE", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS mutual TLS
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a NATS connection without TLS
    #[arg(long)]
    pub nats_require_tls: bool,
}

/// The autoscaler's windows (the scheduler's; the same for every function).
#[derive(Args, Clone)]
pub struct ScaleArgs {
    /// Window the autoscaler averages concurrency over in stable mode
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    stable_window: Duration,
    /// Short window for bursts: panic mode starts when concurrency over it reaches twice the target
    #[arg(long, default_value = "6s", value_parser = crate::parse_duration)]
    panic_window: Duration,
}

impl ScaleArgs {
    fn config(&self) -> anyhow::Result<ScaleConfig> {
        if self.panic_window > self.stable_window {
            bail!("--panic-window must not be longer than --stable-window");
        }
        Ok(ScaleConfig { stable_window: self.stable_window, panic_window: self.panic_window })
    }
}

/// How the gateway holds requests for functions that are at zero.
#[derive(Args, Clone)]
pub struct ActivatorArgs {
    /// Requests held per function while it starts from zero; past this, 503
    #[arg(long, default_value_t = 1000, value_name = "N")]
    cold_start_buffer: usize,
    /// How long a held request waits for its function to start before 503
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    cold_start_timeout: Duration,
}

#[derive(Args)]
pub struct UpArgs {
    /// Address to serve functions and the admin API on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the registry, compiled artifacts and admin token live
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    scale: ScaleArgs,
    #[command(flatten)]
    activator: ActivatorArgs,
}

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where the registry lives
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    scale: ScaleArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where compiled artifacts are cached and the node id is kept
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Memory the scheduler may fill with replicas, in MiB (default: 80% of this machine's)
    #[arg(long, value_name = "MiB")]
    memory_budget: Option<u64>,
    /// Instances that may run at once on this node
    #[arg(long, default_value_t = 1000)]
    slots: u32,
    /// A label for node selectors, like zone=a (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::parse_key_value)]
    labels: Vec<(String, String)>,
}

#[derive(Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Address to serve functions and the admin API on
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the admin token is kept
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    activator: ActivatorArgs,
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn,sled=warn,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = given.unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    Ok(dir)
}

async fn connect(nats: &NatsArgs, role: &str) -> anyhow::Result<Arc<NatsBus>> {
    let Some(url) = &nats.url else { bail!("--nats URL is required for `tern {role}`") };
    let opts = NatsOptions {
        url: url.clone(),
        name: Some(format!("tern-{role}")),
        credentials: nats.nats_creds.clone(),
        tls_ca: nats.nats_tls_ca.clone(),
        tls_cert: nats.nats_tls_cert.clone().zip(nats.nats_tls_key.clone()),
        require_tls: nats.nats_require_tls,
    };
    eprintln!("connecting to NATS at {url} ...");
    let bus = NatsBus::connect(&opts).await?;
    Ok(Arc::new(bus))
}

/// Bodies must fit in one bus message with their header.
fn body_limit(bus: &dyn Bus) -> usize {
    let fits = bus.max_payload().saturating_sub(64 * 1024);
    if fits < DEFAULT_BODY_LIMIT {
        tracing::warn!(
            "the bus carries at most {} bytes; request and response bodies are limited to {fits} bytes \
             (set `max_payload: 16MB` in nats-server.conf for 8 MiB bodies)",
            bus.max_payload()
        );
    }
    DEFAULT_BODY_LIMIT.min(fits)
}

/// The durable event log: JetStream over the cluster's NATS, else sled in
/// the data dir.
async fn open_events(nats: Option<&NatsBus>, data_dir: &Path) -> anyhow::Result<Arc<dyn EventLog>> {
    Ok(match nats {
        Some(bus) => Arc::new(
            JetStreamLog::open(bus.client().clone())
                .await
                .context("cannot open the event streams (is JetStream enabled: `nats-server -js`?)")?,
        ),
        None => {
            let dir = data_dir.join("events");
            Arc::new(SledLog::open(&dir).with_context(|| {
                format!("cannot open the event log in {} (is another tern using it?)", dir.display())
            })?)
        }
    })
}

async fn start_scheduler(
    bus: Arc<dyn Bus>,
    events: Arc<dyn EventLog>,
    data_dir: &Path,
    scale: &ScaleArgs,
) -> anyhow::Result<Arc<Scheduler>> {
    let scale = scale.config()?;
    let runtime =
        Runtime::new(RuntimeConfig::new(data_dir.join("cache"))).context("cannot start the wasm runtime")?;
    let scheduler = Scheduler::open(data_dir, bus, runtime, scale, events).with_context(|| {
        format!("cannot open the registry in {} (is another tern using it?)", data_dir.display())
    })?;
    scheduler.start().await.context("cannot start the scheduler")?;
    Ok(scheduler)
}

fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let mut raw = [0u8; 3];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
    let id = format!(
        "{}-{:02x}{:02x}{:02x}",
        if host.is_empty() { "worker" } else { &host },
        raw[0],
        raw[1],
        raw[2]
    );
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn default_memory_budget() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    });
    total_kib.map_or(4096, |k| k / 1024 * 8 / 10)
}

async fn start_worker(
    bus: Arc<dyn Bus>,
    data_dir: &Path,
    config: WorkerConfig,
) -> anyhow::Result<Arc<Worker>> {
    let mut rc = RuntimeConfig::new(data_dir.join("cache"));
    rc.max_instances = config.capacity.slots;
    let runtime = Runtime::new(rc).context("cannot start the wasm runtime")?;
    let worker = Worker::new(config, bus, runtime);
    worker.start().await.context("cannot start the worker")?;
    Ok(worker)
}

async fn start_gateway(
    bus: Arc<dyn Bus>,
    events: Arc<dyn EventLog>,
    data_dir: &Path,
    listen: SocketAddr,
    activator: &ActivatorArgs,
) -> anyhow::Result<()> {
    let token = tern_gateway::token::load_or_create(data_dir)
        .with_context(|| format!("cannot read or create the admin token in {}", data_dir.display()))?;
    let config = GatewayConfig {
        body_limit: body_limit(&*bus),
        header_limit: 64 * 1024,
        admin_token: token,
        cold_start_buffer: activator.cold_start_buffer,
        cold_start_timeout: activator.cold_start_timeout,
    };
    let gateway = Gateway::new(bus, events, config);
    gateway.start().await.context("cannot start the gateway")?;
    let listener = tern_gateway::bind(listen).await?;
    let addr = listener.local_addr()?;
    // One line on stdout that scripts (and the tests) can read.
    println!("tern is up: http://{addr}");
    eprintln!("  admin token: {}", tern_gateway::token::token_path(data_dir).display());
    tokio::select! {
        r = gateway.serve(listener) => r.context("the gateway stopped")?,
        _ = shutdown_signal() => eprintln!("shutting down"),
    }
    Ok(())
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let data_dir = data_dir(args.data_dir)?;
    let nats = match &args.nats.url {
        Some(_) => Some(connect(&args.nats, "up").await?),
        None => None,
    };
    let events = open_events(nats.as_deref(), &data_dir).await?;
    let bus: Arc<dyn Bus> = match nats {
        Some(n) => n,
        None => Arc::new(InProcessBus::new()),
    };
    let scheduler = start_scheduler(bus.clone(), events.clone(), &data_dir, &args.scale).await?;
    let config = WorkerConfig {
        node_id: match &args.nats.url {
            Some(_) => node_id(&data_dir)?,
            None => "local".into(),
        },
        capacity: Capacity { memory_mib: default_memory_budget(), slots: 1000 },
        labels: BTreeMap::new(),
    };
    let worker = start_worker(bus.clone(), &data_dir, config).await?;
    // Load every deployed function before taking requests, so a restart
    // serves what it served before from the first request.
    scheduler.observe(worker.state(), true);
    scheduler.reconcile().await;
    eprintln!("  data dir:    {}\n  functions:   {}", data_dir.display(), worker.loaded().len());
    start_gateway(bus, events, &data_dir, args.listen, &args.activator).await?;
    // Dropping the scheduler flushes and closes the registry.
    drop(scheduler);
    Ok(ExitCode::SUCCESS)
}

pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let data_dir = data_dir(args.data_dir)?;
    let bus = connect(&args.nats, "scheduler").await?;
    let events = open_events(Some(&bus), &data_dir).await?;
    let scheduler = start_scheduler(bus, events, &data_dir, &args.scale).await?;
    eprintln!("scheduler running (registry in {})", data_dir.display());
    shutdown_signal().await;
    drop(scheduler);
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let data_dir = data_dir(args.data_dir)?;
    let bus = connect(&args.nats, "worker").await?;
    let config = WorkerConfig {
        node_id: node_id(&data_dir)?,
        capacity: Capacity {
            memory_mib: args.memory_budget.unwrap_or_else(default_memory_budget),
            slots: args.slots,
        },
        labels: args.labels.into_iter().collect(),
    };
    let worker = start_worker(bus, &data_dir, config).await?;
    eprintln!("worker {} running", worker.node_id());
    shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let data_dir = data_dir(args.data_dir)?;
    let bus = connect(&args.nats, "gateway").await?;
    let events = open_events(Some(&bus), &data_dir).await?;
    start_gateway(bus, events, &data_dir, args.listen, &args.activator).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
