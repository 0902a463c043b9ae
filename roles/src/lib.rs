//! Starting Tern's roles, alone (cluster mode) or together in one process
//! (`tern up`). The CLI adds flags, logging and signals on top; the
//! in-process test harness uses [`up`] as it is. Each role is the same code
//! in both modes; only the bus and the event log differ.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tern_artifacts::{ArtifactStore, JetStreamArtifacts, SledArtifacts};
use tern_bus::{Bus, NatsBus};
use tern_events::{EventLog, JetStreamLog, SledLog};
use tern_gateway::{Gateway, GatewayConfig};
use tern_kv::{JetStreamKv, KvStore, SledKv};
use tern_logbook::{JetStreamLogbook, Logbook, Retention, SledLogbook};
use tern_metrics::Metrics;

mod counted;
pub use counted::CountedLog;
use tern_protocol::{Capacity, DEFAULT_BODY_LIMIT};
use tern_runtime::outbound::OutboundConfig;
use tern_runtime::{Runtime, RuntimeConfig, Worker, WorkerConfig};
pub use tern_scheduler::Stores;
use tern_scheduler::leader::Lease;
use tern_scheduler::registry::{KvRegistry, Registry, SledRegistry};
use tern_scheduler::{ScaleConfig, Scheduler};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A role could not start; `what` says what was being done, in words a
/// user can act on.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StartError {
    what: String,
    #[source]
    source: BoxError,
}

fn fail<E: Into<BoxError>>(what: impl Into<String>) -> impl FnOnce(E) -> StartError {
    let what = what.into();
    move |e| StartError { what, source: e.into() }
}

/// The largest request head the gateway takes.
pub const HEADER_LIMIT: usize = 64 * 1024;

/// How the gateway holds requests for functions at zero, and how many
/// connections it keeps open.
#[derive(Debug, Clone)]
pub struct ActivatorConfig {
    pub buffer: usize,
    pub timeout: Duration,
    /// Bytes of held requests, across all functions.
    pub bytes: usize,
    pub max_connections: usize,
    /// HTTPS: a certificate chain and its key, PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for ActivatorConfig {
    fn default() -> Self {
        ActivatorConfig {
            buffer: 1000,
            timeout: Duration::from_secs(30),
            bytes: DEFAULT_COLD_START_BYTES,
            max_connections: default_max_connections(),
            tls: None,
        }
    }
}

/// Bytes of requests held while functions start, in all, by default.
pub const DEFAULT_COLD_START_BYTES: usize = 256 << 20;

/// Connections a gateway keeps open by default: three quarters of this
/// process's file-descriptor limit (the rest is for the bus, the stores and
/// the functions' work), between 64 and 100,000.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        l.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    (soft.unwrap_or(1024) / 4 * 3).clamp(64, 100_000)
}

/// The durable event log: JetStream over the cluster's NATS, else sled in
/// the data dir.
/// `js_replicas`: servers per JetStream stream (cluster mode only).
/// What it publishes is counted in `metrics`.
pub async fn open_events(
    nats: Option<&NatsBus>,
    data_dir: &Path,
    js_replicas: usize,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn EventLog>, StartError> {
    let inner: Arc<dyn EventLog> = match nats {
        Some(bus) => Arc::new(
            JetStreamLog::open(bus.client().clone(), js_replicas)
                .await
                .map_err(fail("cannot open the event streams (is JetStream enabled: `nats-server -js`? with --js-replicas above 1, is NATS a cluster that large?)"))?,
        ),
        None => {
            let dir = data_dir.join("events");
            let what = format!("cannot open the event log in {} (is another tern using it?)", dir.display());
            Arc::new(SledLog::open(&dir).map_err(fail(what))?)
        }
    };
    Ok(Arc::new(CountedLog { inner, metrics }))
}

/// The gateway's metrics: the process's registry, and the token a
/// scrape of its `/metrics` needs, if any.
pub struct Observe {
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
}

/// Serves `/metrics` on `listen` (`--metrics-listen`) for as long as the
/// process runs.
pub async fn serve_metrics(listen: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, StartError> {
    let what = format!("cannot listen for metrics on {listen}");
    let listener = TcpListener::bind(listen).await.map_err(fail(what.clone()))?;
    let addr = listener.local_addr().map_err(fail(what))?;
    tokio::spawn(tern_metrics::serve::serve(listener, metrics));
    Ok(addr)
}

/// Functions' key-value buckets: JetStream key-value over the cluster's
/// NATS, else sled in the data dir. `max_bytes`: each bucket's quota.
pub fn open_kv(
    nats: Option<&NatsBus>,
    data_dir: &Path,
    js_replicas: usize,
    max_bytes: u64,
) -> Result<Arc<dyn KvStore>, StartError> {
    Ok(match nats {
        Some(bus) => Arc::new(JetStreamKv::new(bus.client().clone(), js_replicas, max_bytes)),
        None => {
            let dir = data_dir.join("kv");
            let what =
                format!("cannot open the key-value store in {} (is another tern using it?)", dir.display());
            Arc::new(SledKv::open(&dir, max_bytes).map_err(fail(what))?)
        }
    })
}

/// Functions' logs and receipts, kept within `retention`: the JetStream
/// stream `TERN_LOGS` over the cluster's NATS, else sled in the data dir.
pub async fn open_logbook(
    nats: Option<&NatsBus>,
    data_dir: &Path,
    js_replicas: usize,
    retention: Retention,
) -> Result<Arc<dyn Logbook>, StartError> {
    Ok(match nats {
        Some(bus) => {
            Arc::new(JetStreamLogbook::open(bus.client().clone(), js_replicas, retention).await.map_err(
                fail("cannot open the TERN_LOGS stream (is JetStream enabled: `nats-server -js`?)"),
            )?)
        }
        None => {
            let dir = data_dir.join("logbook");
            let what =
                format!("cannot open the function logs in {} (is another tern using it?)", dir.display());
            Arc::new(SledLogbook::open(&dir, retention).map_err(fail(what))?)
        }
    })
}

/// What the scheduler keeps.
#[derive(Debug, Clone, Copy)]
pub struct KeepConfig {
    /// Versions kept per function.
    pub versions: usize,
}

pub async fn scheduler(
    bus: Arc<dyn Bus>,
    stores: Stores,
    data_dir: &Path,
    scale: ScaleConfig,
    keep: KeepConfig,
    metrics: Arc<Metrics>,
) -> Result<Arc<Scheduler>, StartError> {
    let runtime = Runtime::new(RuntimeConfig::new(data_dir.join("cache")))
        .map_err(fail("cannot start the wasm runtime"))?;
    let scheduler = Scheduler::open(data_dir, bus, runtime, scale, stores, keep.versions, metrics)
        .map_err(fail("cannot start the scheduler"))?;
    scheduler.start().await.map_err(fail("cannot start the scheduler"))?;
    Ok(scheduler)
}

/// The state a worker and a gateway share with the rest of the cluster.
#[derive(Clone)]
pub struct Shared {
    pub events: Arc<dyn EventLog>,
    pub kv: Arc<dyn KvStore>,
    /// Components by digest, as the scheduler keeps them.
    pub artifacts: Arc<dyn ArtifactStore>,
}

/// `tern up`'s registry, whose scheduler leads alone: sled in
/// `data_dir/registry`; and the components by digest: a tree of the same
/// database (made durable by the same flushes), or `TERN_ARTIFACTS` when
/// the roles meet over NATS.
pub async fn open_up_registry(
    nats: Option<&NatsBus>,
    data_dir: &Path,
    js_replicas: usize,
) -> Result<(Arc<dyn Registry>, Arc<dyn ArtifactStore>), StartError> {
    let what = format!("cannot open the registry in {} (is another tern using it?)", data_dir.display());
    let sled = SledRegistry::open(&data_dir.join("registry")).map_err(fail(&what))?;
    let artifacts: Arc<dyn ArtifactStore> = match nats {
        Some(bus) => open_artifacts(bus, js_replicas).await?,
        None => Arc::new(SledArtifacts::new(sled.open_tree("artifacts").map_err(fail(&what))?)),
    };
    Ok((Arc::new(sled), artifacts))
}

/// Components by digest: the JetStream object store `TERN_ARTIFACTS` over
/// the cluster's NATS.
pub async fn open_artifacts(bus: &NatsBus, js_replicas: usize) -> Result<Arc<dyn ArtifactStore>, StartError> {
    let store = JetStreamArtifacts::open(bus.client().clone(), js_replicas).await.map_err(fail(
        "cannot open the TERN_ARTIFACTS object store (is JetStream enabled: `nats-server -js`?)",
    ))?;
    Ok(Arc::new(store))
}

/// A cluster's registry and the lease its schedulers compete for: the
/// JetStream key-value bucket `TERN_REGISTRY` (replicated as
/// `--js-replicas` says), shared by every `tern scheduler`.
pub async fn open_shared_registry(
    bus: &NatsBus,
    data_dir: &Path,
    js_replicas: usize,
    lease: Duration,
) -> Result<(Arc<dyn Registry>, Arc<Lease>), StartError> {
    let kv = JetStreamKv::new(bus.client().clone(), js_replicas, 0);
    let bucket = kv.system_bucket("TERN_REGISTRY").await.map_err(fail(
        "cannot open the TERN_REGISTRY key-value bucket (is JetStream enabled: `nats-server -js`?)",
    ))?;
    // The lease names the scheduler by its node id, so a restarted one
    // takes its own lease back at once instead of waiting it out. That is
    // safe only while no two processes share a data dir: the lock says so.
    let me = node_id(data_dir)?;
    let lock = lock_data_dir(data_dir)?;
    let registry: Arc<dyn Registry> = Arc::new(KvRegistry::new(bucket.clone()));
    // Held for the life of the process.
    std::mem::forget(lock);
    Ok((registry, Lease::shared(bucket, lease, me)))
}

/// An exclusive lock on `data_dir/scheduler.lock`, or an error naming the
/// data dir if another process holds it.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StartError> {
    let path = data_dir.join("scheduler.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail(format!("cannot open {}", path.display())))?;
    file.try_lock().map_err(fail(format!(
        "another scheduler uses the data dir {}; give each scheduler its own",
        data_dir.display()
    )))?;
    Ok(file)
}

pub async fn worker(
    bus: Arc<dyn Bus>,
    data_dir: &Path,
    config: WorkerConfig,
    shared: Shared,
    metrics: Arc<Metrics>,
) -> Result<Arc<Worker>, StartError> {
    let mut rc = RuntimeConfig::new(data_dir.join("cache"));
    rc.max_instances = config.capacity.slots;
    let runtime = Runtime::new(rc).map_err(fail("cannot start the wasm runtime"))?;
    let Shared { events, kv, artifacts } = shared;
    let worker = Worker::new(config, bus, runtime, kv, events, artifacts, metrics)
        .map_err(fail("cannot set up functions' outbound HTTP"))?;
    worker.start().await.map_err(fail("cannot start the worker"))?;
    Ok(worker)
}

/// A started gateway and the listener it will serve on.
pub struct GatewayRole {
    pub gateway: Arc<Gateway>,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub token_path: PathBuf,
}

pub async fn gateway(
    bus: Arc<dyn Bus>,
    shared: Shared,
    data_dir: &Path,
    listen: SocketAddr,
    activator: ActivatorConfig,
    observe: Observe,
) -> Result<GatewayRole, StartError> {
    let what = format!("cannot read or create the admin token in {}", data_dir.display());
    let token = tern_gateway::token::load_or_create(data_dir).map_err(fail(what))?;
    let tls = match &activator.tls {
        Some((cert, key)) => {
            let tls = tern_gateway::tls::Tls::load(cert, key).map_err(fail("cannot serve HTTPS"))?;
            tls.watch();
            Some(tls)
        }
        None => None,
    };
    let config = GatewayConfig {
        body_limit: body_limit(&*bus),
        header_limit: HEADER_LIMIT,
        admin_token: token,
        cold_start_buffer: activator.buffer,
        cold_start_timeout: activator.timeout,
        cold_start_bytes: activator.bytes,
        max_connections: activator.max_connections,
        tls,
        metrics: observe.metrics,
        metrics_token: observe.token,
    };
    let Shared { events, kv, artifacts } = shared;
    let gateway = Gateway::new(bus, events, kv, artifacts, config);
    gateway.start().await.map_err(fail("cannot start the gateway"))?;
    let listener = tern_gateway::bind(listen).await.map_err(fail("cannot start the gateway"))?;
    let addr = listener.local_addr().map_err(fail("cannot start the gateway"))?;
    let scheme = if activator.tls.is_some() { "https" } else { "http" };
    Ok(GatewayRole { gateway, scheme, listener, addr, token_path: tern_gateway::token::token_path(data_dir) })
}

/// Bodies must fit in one bus message with their header.
fn body_limit(bus: &dyn Bus) -> usize {
    let limit = tern_protocol::body_limit(bus.max_payload());
    if limit < DEFAULT_BODY_LIMIT {
        tracing::warn!(
            "the bus carries at most {} bytes; request and response bodies are limited to {limit} bytes \
             (set `max_payload: 16MB` in nats-server.conf for 8 MiB bodies)",
            bus.max_payload()
        );
    }
    limit
}

/// Every role in one process, started and serving nothing yet.
pub struct Platform {
    pub scheduler: Arc<Scheduler>,
    pub worker: Arc<Worker>,
    pub gateway: GatewayRole,
}

/// What [`up`] needs beyond the bus and the log.
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `local` embedded; a stable id kept in the data dir over NATS.
    pub node_id: String,
    pub scale: ScaleConfig,
    pub activator: ActivatorConfig,
    pub keep: KeepConfig,
    pub outbound: OutboundConfig,
    /// One registry for every role; [`Metrics::disabled`] for none.
    pub metrics: Arc<Metrics>,
    pub metrics_token: Option<String>,
    /// The worker's memory budget in MiB (`None`: 80% of this machine's).
    pub memory_budget_mib: Option<u64>,
}

/// Starts scheduler, worker and gateway on one bus, and loads every
/// deployed function before returning, so a restart serves what it served
/// before from the first request.
pub async fn up(
    bus: Arc<dyn Bus>,
    stores: Stores,
    kv: Arc<dyn KvStore>,
    config: UpConfig,
) -> Result<Platform, StartError> {
    let metrics = config.metrics.clone();
    let shared = Shared { events: stores.events.clone(), kv, artifacts: stores.artifacts.clone() };
    let scheduler =
        scheduler(bus.clone(), stores, &config.data_dir, config.scale, config.keep, metrics.clone()).await?;
    let worker_config = WorkerConfig {
        node_id: config.node_id,
        capacity: Capacity {
            memory_mib: config.memory_budget_mib.unwrap_or_else(default_memory_budget),
            slots: 1000,
        },
        labels: Default::default(),
        outbound: config.outbound,
    };
    let worker =
        worker(bus.clone(), &config.data_dir, worker_config, shared.clone(), metrics.clone()).await?;
    scheduler.observe(worker.state(), true);
    scheduler.reconcile().await;
    let gateway = gateway(
        bus,
        shared,
        &config.data_dir,
        config.listen,
        config.activator.clone(),
        Observe { metrics, token: config.metrics_token },
    )
    .await?;
    Ok(Platform { scheduler, worker, gateway })
}

/// This worker's id, kept in the data dir across restarts: the host name
/// and a random suffix.
pub fn node_id(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let suffix = tern_protocol::id::random_hex::<3>();
    let id = format!("{}-{suffix}", if host.is_empty() { "worker" } else { &host });
    std::fs::write(&path, &id).map_err(fail(format!("cannot write {}", path.display())))?;
    Ok(id)
}

/// 80% of this machine's memory, in MiB (4 GiB if it cannot be read).
pub fn default_memory_budget() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    });
    total_kib.map_or(4096, |k| k / 1024 * 8 / 10)
}
