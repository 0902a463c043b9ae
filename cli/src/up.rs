//! The roles: `tern up` (all of them in one process), and `tern scheduler`,
//! `tern worker`, `tern gateway` for clusters. Each role is the same code in
//! both modes; only the bus differs (in-process, or NATS).

use anyhow::{Context, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::{Bus, InProcessBus, NatsBus, NatsOptions};
use tern_metrics::Metrics;
use tern_protocol::Capacity;
use tern_roles::{ActivatorConfig, GatewayRole, UpConfig};
use tern_runtime::WorkerConfig;
use tern_scheduler::ScaleConfig;
use tern_scheduler::leader::Lease;

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
    /// Servers that keep each JetStream stream (events, dead letters, key-value buckets): 1, or 3 on a three-node NATS cluster
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub js_replicas: usize,
}

/// Functions' key-value buckets.
#[derive(Args, Clone)]
pub struct KvArgs {
    /// Quota of each key-value bucket (keys and values), in bytes; applies to buckets made from now on
    #[arg(long, default_value_t = tern_kv::DEFAULT_BUCKET_MAX_BYTES, value_name = "BYTES")]
    kv_max_bytes: u64,
}

/// Functions' outbound HTTP (the worker's side: trust, breakers, limits).
#[derive(Args, Clone)]
pub struct OutboundArgs {
    /// Also trust the CA certificates in this PEM file for functions' HTTPS requests, beside the platform's root store (repeatable)
    #[arg(long = "outbound-ca", value_name = "FILE")]
    outbound_ca: Vec<PathBuf>,
    /// Failed calls in a row (transport errors, timeouts, 5xx) that open a function's circuit breaker for one upstream
    #[arg(long, default_value_t = tern_runtime::outbound::BreakerConfig::default().failures, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    breaker_failures: u32,
    /// How long an open breaker fails calls at once before it lets one probe through
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    breaker_cooldown: Duration,
    /// Outbound requests one instance may have open at once; past them a request fails with connection-limit-reached
    #[arg(long, default_value_t = tern_runtime::outbound::DEFAULT_MAX_CONCURRENT as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_outbound_concurrency: u64,
}

impl OutboundArgs {
    fn config(&self) -> anyhow::Result<tern_runtime::outbound::OutboundConfig> {
        let mut config = tern_runtime::outbound::OutboundConfig {
            extra_roots: Vec::new(),
            breaker: tern_runtime::outbound::BreakerConfig {
                failures: self.breaker_failures,
                cooldown: self.breaker_cooldown,
            },
            max_concurrent: self.max_outbound_concurrency as usize,
        };
        for path in &self.outbound_ca {
            config.trust_pem_file(path)?;
        }
        Ok(config)
    }
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

/// What the registry keeps.
#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Versions kept per function; older ones (never the active one) and
    /// the components only they used are deleted after each deploy
    #[arg(long, default_value_t = tern_scheduler::DEFAULT_KEEP_VERSIONS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    keep_versions: u64,
    /// How long and how much of functions' logs and receipts is kept:
    /// AGE[/SIZE], the oldest dropped first
    #[arg(long, default_value = "24h/1GiB", value_name = "AGE[/SIZE]", value_parser = parse_retention)]
    log_retention: tern_logbook::Retention,
}

fn parse_retention(s: &str) -> Result<tern_logbook::Retention, String> {
    let (age, size) = s.split_once('/').unwrap_or((s, ""));
    let mut r = tern_logbook::Retention::default();
    if !age.is_empty() {
        r.max_age = crate::parse_duration(age)?;
    }
    if !size.is_empty() {
        r.max_bytes = crate::parse_size(size)?;
    }
    if r.max_age.is_zero() || r.max_bytes < 1 << 20 {
        return Err("keep logs for more than 0s and at least 1MiB".into());
    }
    Ok(r)
}

impl RegistryArgs {
    fn keep(&self) -> tern_roles::KeepConfig {
        tern_roles::KeepConfig { versions: self.keep_versions as usize }
    }
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
    /// Bytes of requests held at once while functions start, across all of them; past this, 503
    #[arg(long, default_value_t = tern_roles::DEFAULT_COLD_START_BYTES, value_name = "BYTES")]
    cold_start_bytes: usize,
    /// Connections kept open at most; past them a connection gets 503 and is closed
    /// [default: three quarters of the open-file limit]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM); read again on SIGHUP or when it changes
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ActivatorArgs {
    fn config(&self) -> ActivatorConfig {
        ActivatorConfig {
            buffer: self.cold_start_buffer,
            timeout: self.cold_start_timeout,
            bytes: self.cold_start_bytes,
            max_connections: self.max_connections.unwrap_or_else(tern_roles::default_max_connections),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
        }
    }
}

/// Prometheus metrics and invocation receipts.
#[derive(Args, Clone)]
pub struct MetricsArgs {
    /// Record no metrics and no invocation receipts (what `bench/http.sh` compares against)
    #[arg(long)]
    no_metrics: bool,
    /// Also serve Prometheus metrics at http://ADDR/metrics (a gateway and `tern up` serve them on their own address)
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Scrapers of the gateway's /metrics must send this bearer token [default: none needed]
    #[arg(long, env = "TERN_METRICS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

impl MetricsArgs {
    /// The process's one registry, and its own listener if asked for.
    async fn start(&self) -> anyhow::Result<Arc<Metrics>> {
        let metrics = Arc::new(if self.no_metrics { Metrics::disabled() } else { Metrics::new() });
        if let Some(addr) = self.metrics_listen {
            let bound = tern_roles::serve_metrics(addr, metrics.clone()).await?;
            eprintln!("  metrics:     http://{bound}/metrics");
        }
        Ok(metrics)
    }
}

/// What SIGTERM and Ctrl-C do.
#[derive(Args, Clone)]
pub struct ShutdownArgs {
    /// On SIGTERM or Ctrl-C, how long requests, streamed bodies and events in flight may take to finish (no new ones are taken meanwhile) before the process exits anyway
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
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
    registry: RegistryArgs,
    #[command(flatten)]
    activator: ActivatorArgs,
    #[command(flatten)]
    kv: KvArgs,
    #[command(flatten)]
    outbound: OutboundArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Memory for loaded functions and their running instances, in MiB (default: 80% of this machine's)
    #[arg(long, value_name = "MiB")]
    memory_budget: Option<u64>,
    #[command(flatten)]
    shutdown: ShutdownArgs,
}

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where the secret key, compiled components and node id live (the
    /// registry is in NATS: JetStream's TERN_REGISTRY)
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long the leading scheduler's lease lasts: another scheduler
    /// leads within about this long after the leader dies
    #[arg(long, default_value = "5s", value_parser = parse_lease)]
    lease: Duration,
    #[command(flatten)]
    scale: ScaleArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where compiled artifacts are cached and the node id is kept
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Memory for loaded functions and their running instances, in MiB (default: 80% of this machine's)
    #[arg(long, value_name = "MiB")]
    memory_budget: Option<u64>,
    /// Instances that may run at once on this node
    #[arg(long, default_value_t = 1000)]
    slots: u32,
    /// A label for node selectors, like zone=a (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::parse_key_value)]
    labels: Vec<(String, String)>,
    #[command(flatten)]
    kv: KvArgs,
    #[command(flatten)]
    outbound: OutboundArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
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
    #[command(flatten)]
    kv: KvArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
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

/// The data dir holds the admin token and the registry: made 0700 (the
/// parents as the umask says). An existing one is used as it is, with a
/// warning if others may read it.
fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = given.unwrap_or_else(crate::default_data_dir);
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create data dir {}", dir.display()))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    } else if std::fs::metadata(&dir).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        eprintln!(
            "warning: data dir {} is open to other users; `chmod 700` it (it holds the admin token's directory)",
            dir.display()
        );
    }
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
        inbox_prefix: Some(format!("_TERN.{role}")),
    };
    eprintln!("connecting to NATS at {} ...", tern_bus::nats::redact(url));
    let bus = NatsBus::connect(&opts).await?;
    Ok(Arc::new(bus))
}

/// Serves until `stop`, then lets what is in flight finish
/// (up to `drain`). The address line on stdout is what scripts (and the
/// tests) read.
async fn serve(role: GatewayRole, stop: impl Future<Output = ()>, drain: Duration) -> anyhow::Result<()> {
    println!("tern is up: {}://{}", role.scheme, role.addr);
    eprintln!("  admin token: {}", role.token_path.display());
    role.gateway.serve(role.listener, stop, drain).await.context("the gateway stopped")
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let outbound = args.outbound.config()?;
    let data_dir = data_dir(args.data_dir)?;
    let nats = match &args.nats.url {
        Some(_) => Some(connect(&args.nats, "up").await?),
        None => None,
    };
    let metrics = args.metrics.start().await?;
    let events =
        tern_roles::open_events(nats.as_deref(), &data_dir, args.nats.js_replicas, metrics.clone()).await?;
    let kv = tern_roles::open_kv(nats.as_deref(), &data_dir, args.nats.js_replicas, args.kv.kv_max_bytes)?;
    let logbook = tern_roles::open_logbook(
        nats.as_deref(),
        &data_dir,
        args.nats.js_replicas,
        args.registry.log_retention,
    )
    .await?;
    let (registry, artifacts) =
        tern_roles::open_up_registry(nats.as_deref(), &data_dir, args.nats.js_replicas).await?;
    let node_id = match &nats {
        Some(_) => tern_roles::node_id(&data_dir)?,
        None => "local".into(),
    };
    let bus: Arc<dyn Bus> = match nats {
        Some(n) => n,
        None => Arc::new(InProcessBus::new()),
    };
    let config = UpConfig {
        data_dir: data_dir.clone(),
        listen: args.listen,
        node_id,
        scale: args.scale.config()?,
        activator: args.activator.config(),
        keep: args.registry.keep(),
        outbound,
        metrics,
        metrics_token: args.metrics.metrics_token.clone(),
        memory_budget_mib: args.memory_budget,
    };
    let stores = tern_roles::Stores { events, logbook, registry, artifacts, lease: Lease::sole() };
    let platform = tern_roles::up(bus, stores, kv, config).await?;
    eprintln!("  data dir:    {}\n  functions:   {}", data_dir.display(), platform.worker.loaded().len());
    let drain = args.shutdown.shutdown_timeout;
    let signalled = std::sync::OnceLock::new();
    let stop = async {
        shutdown_signal().await;
        let _ = signalled.set(std::time::Instant::now());
    };
    serve(platform.gateway, stop, drain).await?;
    // Requests and events are done (or cut): the worker's last receipts go
    // out, then the scheduler keeps them; all within the one drain budget.
    let spent = signalled.get().map_or(Duration::ZERO, |t| t.elapsed());
    platform.worker.shutdown(drain.saturating_sub(spent)).await;
    settle_records().await;
    platform.scheduler.flush().await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let data_dir = data_dir(args.data_dir)?;
    let bus = connect(&args.nats, "scheduler").await?;
    let metrics = args.metrics.start().await?;
    let events =
        tern_roles::open_events(Some(&bus), &data_dir, args.nats.js_replicas, metrics.clone()).await?;
    let logbook =
        tern_roles::open_logbook(Some(&bus), &data_dir, args.nats.js_replicas, args.registry.log_retention)
            .await?;
    let artifacts = tern_roles::open_artifacts(&bus, args.nats.js_replicas).await?;
    let (registry, lease) =
        tern_roles::open_shared_registry(&bus, &data_dir, args.nats.js_replicas, args.lease).await?;
    let me = lease.status().me;
    let stores = tern_roles::Stores { events, logbook, registry, artifacts, lease };
    let scheduler =
        tern_roles::scheduler(bus, stores, &data_dir, args.scale.config()?, args.registry.keep(), metrics)
            .await?;
    eprintln!(
        "scheduler {me} running (registry in JetStream's TERN_REGISTRY, lease {})",
        humantime::format_duration(args.lease)
    );
    shutdown_signal().await;
    eprintln!("shutting down");
    scheduler.flush().await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let outbound = args.outbound.config()?;
    let data_dir = data_dir(args.data_dir)?;
    let bus = connect(&args.nats, "worker").await?;
    let config = WorkerConfig {
        node_id: tern_roles::node_id(&data_dir)?,
        capacity: Capacity {
            memory_mib: args.memory_budget.unwrap_or_else(tern_roles::default_memory_budget),
            slots: args.slots,
        },
        labels: args.labels.into_iter().collect(),
        outbound,
    };
    let kv = tern_roles::open_kv(Some(&bus), &data_dir, args.nats.js_replicas, args.kv.kv_max_bytes)?;
    let metrics = args.metrics.start().await?;
    let events =
        tern_roles::open_events(Some(&bus), &data_dir, args.nats.js_replicas, metrics.clone()).await?;
    let artifacts = tern_roles::open_artifacts(&bus, args.nats.js_replicas).await?;
    let shared = tern_roles::Shared { events, kv, artifacts };
    let worker = tern_roles::worker(bus, &data_dir, config, shared, metrics).await?;
    eprintln!("worker {} running", worker.node_id());
    shutdown_signal().await;
    eprintln!("shutting down: finishing what is in flight (up to {:?})", args.shutdown.shutdown_timeout);
    worker.shutdown(args.shutdown.shutdown_timeout).await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let data_dir = data_dir(args.data_dir)?;
    let bus = connect(&args.nats, "gateway").await?;
    let metrics = args.metrics.start().await?;
    let events =
        tern_roles::open_events(Some(&bus), &data_dir, args.nats.js_replicas, metrics.clone()).await?;
    let kv = tern_roles::open_kv(Some(&bus), &data_dir, args.nats.js_replicas, args.kv.kv_max_bytes)?;
    let observe = tern_roles::Observe { metrics, token: args.metrics.metrics_token.clone() };
    let activator = args.activator.config();
    let artifacts = tern_roles::open_artifacts(&bus, args.nats.js_replicas).await?;
    let shared = tern_roles::Shared { events, kv, artifacts };
    let role = tern_roles::gateway(bus, shared, &data_dir, args.listen, activator, observe).await?;
    serve(role, shutdown_signal(), args.shutdown.shutdown_timeout).await?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Receipts a worker published just before a stop are on their way to the
/// scheduler's logbook (a bus hop, then a write on the blocking pool): one
/// journal interval and a little more lets them land before the flush.
async fn settle_records() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A lease from 1 s to 5 min: shorter and a busy machine's pause could
/// cost the leader its lease; longer and a failover takes that long.
fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(300) {
        return Err(format!("a lease of {s} is out of range (1s to 5m)"));
    }
    Ok(d)
}
