//! The Tern scheduler: owns the registry, validates deploys, tracks worker
//! membership from heartbeats, scales and places function versions on
//! workers, fires cron ticks, keeps function logs and receipts, and pushes the
//! serving table (routes and triggers) to gateways.
//!
//! It answers control requests on `tern.v1.scheduler.*` (see
//! [`tern_protocol::subject::SchedulerOp`]). Where things live:
//! - [`control`]: the control subjects, reads and wakes;
//! - [`changes`]: deploy, rollback, delete (registry changes, in order);
//! - [`reconcile`]: carries placement out, from [`placement::plan`];
//! - [`nodes`]: worker membership; [`scaling`]: the autoscaler's inputs and
//!   outputs, decided by [`autoscale::decide`];
//! - [`triggers`]: event triggers' consumers and cron; [`artifacts`]:
//!   components served to workers; [`records`]: logs and receipts, kept in
//!   a [`tern_logbook::Logbook`];
//! - [`registry`]: sled in `tern up`, a key-value bucket shared by every
//!   scheduler in a cluster.

pub mod artifacts;
pub mod autoscale;
mod changes;
mod control;
pub mod leader;
pub mod nodes;
mod peers;
pub mod placement;
mod reconcile;
mod records;
pub mod registry;
pub mod scaling;
mod sealed;
mod secrets;
pub mod triggers;

pub use nodes::DEAD_AFTER;
pub use scaling::ScaleConfig;

use bytes::Bytes;
use futures::StreamExt;
use leader::Lease;
use nodes::Nodes;
use registry::Registry;
use registry::RegistryError;
use scaling::Scaling;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tern_artifacts::ArtifactStore;
use tern_bus::{Bus, BusError};
use tern_events::EventLog;
use tern_protocol::NodeAnnounce;
use tern_protocol::subject::{self, SchedulerOp};
use tern_runtime::Runtime;
use tern_task::guarded;

const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Versions kept per function when the operator names no number.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;
/// A cron tick fires within this long of its time.
const CRON_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("registry: {0}")]
    Api(#[from] tern_protocol::ApiError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("event triggers: {0}")]
    Triggers(#[from] tern_events::EventError),
    #[error("the secret key in {0}: {1}")]
    SecretKey(String, std::io::Error),
}

/// Where the scheduler keeps what is not the registry.
pub struct Stores {
    /// Triggers' durable consumers, and cron ticks.
    pub events: Arc<dyn EventLog>,
    /// Functions' log lines and receipts.
    pub logbook: Arc<dyn tern_logbook::Logbook>,
    /// Functions, versions, routes: sled in the data dir (`tern up`), or
    /// JetStream's `TERN_REGISTRY` shared by a cluster's schedulers.
    pub registry: Arc<dyn Registry>,
    /// Components by digest: a tree of the sled registry's database (`tern
    /// up`), or JetStream's `TERN_ARTIFACTS`.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// The lease schedulers sharing a registry compete for
    /// ([`Lease::sole`]: the only scheduler, which always leads).
    pub lease: Arc<Lease>,
}

/// How long one try at repairing the event triggers at start may take.
const REPAIR_WITHIN: Duration = Duration::from_secs(30);

pub struct Scheduler {
    registry: Arc<dyn Registry>,
    /// Whether this scheduler leads: only the leader places, scales and
    /// fires cron.
    lease: Arc<Lease>,
    /// The components versions name, by digest.
    artifacts: Arc<dyn ArtifactStore>,
    /// Sealed secrets, in the registry's database.
    secrets: Arc<secrets::SecretStore>,
    bus: Arc<dyn Bus>,
    /// Validates and precompiles components at deploy.
    runtime: Arc<Runtime>,
    nodes: Nodes,
    scaling: Scaling,
    /// Functions' log lines and receipts.
    logbook: Arc<dyn tern_logbook::Logbook>,
    /// Registry changes and placement run one at a time, so workers and
    /// gateways see them in the order they were recorded.
    changes: tokio::sync::Mutex<()>,
    /// Runs placement now rather than at the next tick.
    wake: tokio::sync::Notify,
    /// Where triggers' durable consumers live and cron ticks go.
    events: Arc<dyn EventLog>,
    /// Versions kept per function (the active one always is).
    keep_versions: usize,
    metrics: Arc<tern_metrics::Metrics>,
}

impl Scheduler {
    pub fn open(
        data_dir: &Path,
        bus: Arc<dyn Bus>,
        runtime: Arc<Runtime>,
        scale_config: ScaleConfig,
        Stores { events, logbook, registry, artifacts, lease }: Stores,
        keep_versions: usize,
        metrics: Arc<tern_metrics::Metrics>,
    ) -> Result<Arc<Self>, SchedulerError> {
        let secrets = Arc::new(secrets::SecretStore::open(registry.clone(), data_dir)?);
        Ok(Arc::new(Scheduler {
            registry,
            lease,
            artifacts,
            secrets,
            bus,
            runtime,
            nodes: Nodes::default(),
            scaling: Scaling::new(scale_config),
            logbook,
            changes: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            events,
            keep_versions,
            metrics,
        }))
    }

    /// The last thing a stop on purpose does: log lines and receipts kept
    /// so far are flushed. (The registry, the event log and key-value
    /// buckets flush before every answer already.)
    pub async fn flush(&self) {
        if let Err(e) = self.logbook.flush().await {
            tracing::warn!("could not flush the logbook: {e}");
        }
    }

    /// Subscribes to every control subject, starts the placement and cron
    /// loops, makes sure every active version's triggers exist, and asks
    /// workers to announce themselves.
    pub async fn start(self: &Arc<Self>) -> Result<(), SchedulerError> {
        // Every loop below runs each unit of its work (a request, a node's
        // state, a tick) through `guarded`: a panic costs that unit, not
        // the loop.
        // Any scheduler answers reads and takes changes; wakes place
        // functions, so only the leader takes them.
        for op in SchedulerOp::ALL.into_iter().filter(|op| *op != SchedulerOp::Wake) {
            let sub = self.bus.queue_subscribe(&subject::scheduler(op), "scheduler").await?;
            tokio::spawn(self.clone().answer(op, sub));
        }
        tokio::spawn(self.clone().answer_wakes_while_leading());
        tokio::spawn(self.lease.clone().run());
        self.follow_changes().await?;
        let requests = self.bus.queue_subscribe(&subject::artifact_get(), "scheduler").await?;
        let (store, bus) = (self.artifacts.clone(), self.bus.clone());
        tokio::spawn(requests.for_each_concurrent(None, move |msg| {
            let (store, bus) = (store.clone(), bus.clone());
            async move {
                guarded("artifacts", artifacts::serve(&*store, &*bus, msg)).await;
            }
        }));
        for (subject, announce) in [(subject::node_announce(), true), (subject::node_heartbeat(), false)] {
            let mut sub = self.bus.subscribe(&subject).await?;
            let me = self.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    match serde_json::from_slice::<NodeAnnounce>(&msg.payload) {
                        Ok(state) => {
                            guarded("observer", async { me.observe(state, announce) }).await;
                        }
                        Err(e) => tracing::warn!("ignoring malformed node state on {subject}: {e}"),
                    }
                }
            });
        }
        self.collect_records().await?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = me.upgrade() else { break };
                tokio::select! {
                    _ = s.wake.notified() => {}
                    _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                }
                if s.lease.leading() {
                    guarded("reconcile", s.reconcile()).await;
                }
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut cron = triggers::Cron::default();
            loop {
                tokio::time::sleep(CRON_EVERY).await;
                let Some(s) = me.upgrade() else { break };
                if s.lease.leading() {
                    guarded("cron", cron.fire_due(&*s.registry, &*s.events)).await;
                }
            }
        });
        // Consumers of versions deployed before an upgrade, or left by a
        // crash between a deploy's steps, repaired before the start is done
        // (as the first deploys come). Bounded: the repair holds the change
        // lock, and once a JetStream call in it never answered (after a kill
        // -9 and restart, in CI), holding every later change behind it. Past
        // the bound, the wanted consumers are still created beside the start
        // (creating one is idempotent and needs no lock); removing the
        // unwanted ones waits for the next start.
        if tokio::time::timeout(REPAIR_WITHIN, self.repair_triggers()).await.is_err() {
            tracing::warn!(
                "repairing the event triggers took over {REPAIR_WITHIN:?}; creating the wanted ones beside"
            );
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(200);
                while let Some(s) = me.upgrade() {
                    match tokio::time::timeout(REPAIR_WITHIN, s.create_wanted_triggers()).await {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) => tracing::warn!("cannot create the event triggers yet: {e}"),
                        Err(_) => tracing::warn!("creating the event triggers took over {REPAIR_WITHIN:?}"),
                    }
                    drop(s);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            });
        }
        self.bus.publish(&subject::node_discover(), Bytes::new()).await?;
        Ok(())
    }

    /// Creates the consumers the active versions want and removes the rest.
    async fn repair_triggers(&self) -> Result<(), SchedulerError> {
        let _order = self.changes.lock().await;
        let active = self.registry.active_versions().await?;
        let wanted: Vec<_> = active.iter().flat_map(|v| v.spec.triggers()).collect();
        triggers::create(&*self.events, &wanted).await?;
        triggers::remove_unwanted(&*self.events, &active).await?;
        Ok(())
    }

    /// Creates the consumers the active versions want (idempotent).
    async fn create_wanted_triggers(&self) -> Result<(), SchedulerError> {
        let active = self.registry.active_versions().await?;
        let wanted: Vec<_> = active.iter().flat_map(|v| v.spec.triggers()).collect();
        triggers::create(&*self.events, &wanted).await?;
        Ok(())
    }

    /// Takes in a worker's announce or heartbeat. A new or returning node, or
    /// an announce (a restarted worker), triggers placement at once.
    pub fn observe(&self, state: NodeAnnounce, announce: bool) {
        let load = state.load.clone();
        let heard = self.nodes.observe(state);
        self.scaling.record_load(heard.previous_load.as_ref(), &load);
        if heard.returning || announce {
            self.wake.notify_one();
        }
    }
}
