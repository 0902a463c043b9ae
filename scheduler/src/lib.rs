//! The Tern scheduler: owns the registry, validates deploys, places function
//! versions on workers, keeps recent function logs, and pushes route changes
//! to gateways.
//!
//! It answers control requests on `tern.v1.scheduler.*` (see
//! [`tern_protocol::subject::SchedulerOp`]).

pub mod registry;

use bytes::Bytes;
use futures::StreamExt;
use registry::{Registry, RegistryError};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_bus::{Bus, BusError, Message, respond};
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{
    ApiError, ArtifactRequest, Assign, ChangeReply, DeployReply, DeployRequest, ErrorKind, Frame,
    LogRecord, LogsRequest, NameRequest, NodeAnnounce, Reply, RollbackRequest, RouteTable,
    Unassign, World,
};
use tern_runtime::Runtime;

/// Records kept per function for `tern logs`.
const LOG_RING: usize = 2000;
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

pub struct Scheduler {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    /// Validates and precompiles components at deploy.
    runtime: Arc<Runtime>,
    nodes: Mutex<BTreeSet<String>>,
    logs: Mutex<HashMap<String, VecDeque<LogRecord>>>,
    /// Registry changes and their placement run one at a time, so workers
    /// and gateways see them in the order they were recorded.
    changes: tokio::sync::Mutex<()>,
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Conflict(m) => ApiError::conflict(m),
        RegistryError::NotFound(m) => ApiError::not_found(m),
        other => ApiError::internal(other.to_string()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Scheduler {
    pub fn open(
        data_dir: &Path,
        bus: Arc<dyn Bus>,
        runtime: Arc<Runtime>,
    ) -> Result<Arc<Self>, SchedulerError> {
        let registry = Registry::open(&data_dir.join("registry"))?;
        Ok(Arc::new(Scheduler {
            registry: Arc::new(registry),
            bus,
            runtime,
            nodes: Mutex::new(BTreeSet::new()),
            logs: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        }))
    }

    /// Subscribes to every control subject and asks workers to announce.
    pub async fn start(self: &Arc<Self>) -> Result<(), SchedulerError> {
        for op in SchedulerOp::ALL {
            let sub = self
                .bus
                .queue_subscribe(&subject::scheduler(op), "scheduler")
                .await?;
            let me = self.clone();
            tokio::spawn(sub.for_each_concurrent(None, move |msg| {
                let me = me.clone();
                async move { me.handle(op, msg).await }
            }));
        }
        let artifacts = self
            .bus
            .queue_subscribe(&subject::artifact_get(), "scheduler")
            .await?;
        let me = self.clone();
        tokio::spawn(artifacts.for_each_concurrent(None, move |msg| {
            let me = me.clone();
            async move { me.serve_artifact(msg).await }
        }));
        let mut announces = self.bus.subscribe(&subject::node_announce()).await?;
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = announces.next().await {
                match serde_json::from_slice::<NodeAnnounce>(&msg.payload) {
                    Ok(a) => {
                        let me = me.clone();
                        tokio::spawn(async move { me.node_joined(&a.node_id).await });
                    }
                    Err(e) => tracing::warn!("ignoring malformed node announce: {e}"),
                }
            }
        });
        let mut logs = self.bus.subscribe(&subject::logs_all()).await?;
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = logs.next().await {
                if let Ok(records) = serde_json::from_slice::<Vec<LogRecord>>(&msg.payload) {
                    me.keep_logs(records);
                }
            }
        });
        self.bus
            .publish(&subject::node_discover(), Bytes::new())
            .await?;
        Ok(())
    }

    /// Places every active function on a node that (re)joined.
    pub async fn node_joined(&self, node: &str) {
        let _order = self.changes.lock().await;
        let new = self.nodes.lock().unwrap().insert(node.to_string());
        let registry = self.registry.clone();
        let active = match tokio::task::spawn_blocking(move || registry.active_versions()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return tracing::error!("cannot read registry to place functions: {e}"),
            Err(e) => return tracing::error!("registry task failed: {e}"),
        };
        if new {
            tracing::info!(node, functions = active.len(), "node joined");
        }
        for v in active.iter().filter(|v| v.world == World::Http) {
            if let Err(e) = self.assign(node, &Assign::for_version(v)).await {
                tracing::error!(node, function = %v.spec.name, "could not place: {e}");
            }
        }
    }

    async fn assign(&self, node: &str, a: &Assign) -> Result<(), ApiError> {
        let body = serde_json::to_vec(a).expect("serialise");
        let msg = self
            .bus
            .request(&subject::worker_assign(node), body.into(), ASSIGN_TIMEOUT)
            .await
            .map_err(|e| ApiError::unavailable(format!("worker {node}: {e}")))?;
        serde_json::from_slice::<Reply<()>>(&msg.payload)
            .map_err(|e| ApiError::internal(format!("worker {node} sent a malformed reply: {e}")))?
    }

    /// Sends a version to every node; the first failure is returned, after
    /// every node was tried.
    async fn place(&self, a: &Assign) -> Result<(), ApiError> {
        let nodes: Vec<String> = self.nodes.lock().unwrap().iter().cloned().collect();
        let results = futures::future::join_all(nodes.iter().map(|n| self.assign(n, a))).await;
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    async fn unplace(&self, function: &str) {
        let nodes: Vec<String> = self.nodes.lock().unwrap().iter().cloned().collect();
        let body = Bytes::from(
            serde_json::to_vec(&Unassign {
                function: function.to_string(),
            })
            .expect("serialise"),
        );
        for n in nodes {
            if let Err(e) = self
                .bus
                .request(&subject::worker_unassign(&n), body.clone(), ASSIGN_TIMEOUT)
                .await
            {
                tracing::warn!(node = %n, function, "could not unload: {e}");
            }
        }
    }

    async fn push_routes(&self) -> Result<RouteTable, ApiError> {
        let table = self.blocking(|r| r.route_table()).await?;
        let body = serde_json::to_vec(&table).expect("serialise");
        if let Err(e) = self
            .bus
            .publish(&subject::routes_changed(), body.into())
            .await
        {
            tracing::warn!("could not push routes: {e}");
        }
        Ok(table)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|e| ApiError::internal(format!("registry task failed: {e}")))?
            .map_err(registry_error)
    }

    async fn handle(&self, op: SchedulerOp, msg: Message) {
        let reply = match op {
            SchedulerOp::Deploy => match Frame::<DeployRequest>::decode(msg.payload.clone()) {
                Ok(f) => encode(self.deploy(f.header, f.body).await),
                Err(e) => encode::<()>(Err(ApiError::bad_request(format!(
                    "malformed deploy request: {e}"
                )))),
            },
            SchedulerOp::List => encode(self.blocking(|r| r.list()).await),
            SchedulerOp::Describe => match parse::<NameRequest>(&msg) {
                Ok(req) => encode(self.blocking(move |r| r.describe(&req.name)).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Delete => match parse::<NameRequest>(&msg) {
                Ok(req) => encode(self.delete(req.name).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Rollback => match parse::<RollbackRequest>(&msg) {
                Ok(req) => encode(self.rollback(req).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Logs => match parse::<LogsRequest>(&msg) {
                Ok(req) => encode(self.recent_logs(&req)),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Routes => encode(self.blocking(|r| r.route_table()).await),
        };
        if let Err(e) = respond(&*self.bus, &msg, reply).await {
            tracing::warn!("could not answer {}: {e}", msg.subject);
        }
    }

    async fn deploy(&self, req: DeployRequest, component: Bytes) -> Reply<DeployReply> {
        let spec = req.spec;
        spec.validate().map_err(ApiError::bad_request)?;
        if component.len() > tern_protocol::MAX_COMPONENT_BYTES {
            return Err(ApiError::bad_request(format!(
                "component is {} bytes; the limit is {} bytes",
                component.len(),
                tern_protocol::MAX_COMPONENT_BYTES
            )));
        }
        let world = self
            .runtime
            .validate(component.clone())
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if world == World::Event && !spec.routes.is_empty() {
            return Err(ApiError::bad_request(
                "this component is an event function (it exports tern:function/event-handler); it cannot serve HTTP routes",
            ));
        }
        let digest = tern_runtime::digest_of(&component);

        let _order = self.changes.lock().await;
        let version = {
            let (spec, digest) = (spec.clone(), digest.clone());
            self.blocking(move |r| r.deploy(&spec, &digest, world, &component, now_ms()))
                .await?
        };
        if world == World::Http {
            self.place(&Assign::for_version(&version))
                .await
                .map_err(|e| {
                    ApiError::new(
                        e.kind,
                        format!(
                            "version {} is recorded but not yet running: {}",
                            version.number, e.message
                        ),
                    )
                })?;
        }
        let routes = self.push_routes().await?;
        tracing::info!(function = %spec.name, version = version.number, %digest, "deployed");
        Ok(DeployReply { version, routes })
    }

    async fn rollback(&self, req: RollbackRequest) -> Reply<ChangeReply> {
        let _order = self.changes.lock().await;
        let version = self
            .blocking(move |r| r.rollback(&req.name, req.to))
            .await?;
        if version.world == World::Http {
            self.place(&Assign::for_version(&version)).await?;
        }
        let routes = self.push_routes().await?;
        Ok(ChangeReply {
            active_version: Some(version.number),
            routes,
        })
    }

    async fn delete(&self, name: String) -> Reply<ChangeReply> {
        let _order = self.changes.lock().await;
        let n = name.clone();
        self.blocking(move |r| r.delete(&n)).await?;
        // Routes go first so no new request is sent to the unloading replicas.
        let routes = self.push_routes().await?;
        self.unplace(&name).await;
        self.logs.lock().unwrap().remove(&name);
        Ok(ChangeReply {
            active_version: None,
            routes,
        })
    }

    async fn serve_artifact(&self, msg: Message) {
        let reply = match serde_json::from_slice::<ArtifactRequest>(&msg.payload) {
            Ok(req) => {
                let digest = req.digest.clone();
                match self.blocking(move |r| r.artifact(&req.digest)).await {
                    Ok(Some(bytes)) => {
                        Frame::new(Reply::Ok(()), Bytes::from(bytes.to_vec())).encode()
                    }
                    Ok(None) => Frame::new(
                        Reply::<()>::Err(ApiError::not_found(format!("no artifact {digest}"))),
                        Bytes::new(),
                    )
                    .encode(),
                    Err(e) => Frame::new(Reply::<()>::Err(e), Bytes::new()).encode(),
                }
            }
            Err(e) => Frame::new(
                Reply::<()>::Err(ApiError::bad_request(e.to_string())),
                Bytes::new(),
            )
            .encode(),
        };
        let _ = respond(&*self.bus, &msg, reply).await;
    }

    fn keep_logs(&self, records: Vec<LogRecord>) {
        let mut logs = self.logs.lock().unwrap();
        for r in records {
            let ring = logs.entry(r.function.clone()).or_default();
            if ring.len() == LOG_RING {
                ring.pop_front();
            }
            ring.push_back(r);
        }
    }

    fn recent_logs(&self, req: &LogsRequest) -> Reply<Vec<LogRecord>> {
        let logs = self.logs.lock().unwrap();
        let ring = logs.get(&req.name);
        Ok(ring
            .map(|r| {
                r.iter()
                    .skip(r.len().saturating_sub(req.tail))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn parse<T: serde::de::DeserializeOwned>(msg: &Message) -> Result<T, ApiError> {
    serde_json::from_slice(&msg.payload)
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("malformed request: {e}")))
}

/// Control replies are frames whose header is the `Reply` and body empty.
fn encode<T: serde::Serialize>(reply: Reply<T>) -> Bytes {
    Frame::new(reply, Bytes::new()).encode()
}
