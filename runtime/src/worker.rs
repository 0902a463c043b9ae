//! The worker node on the bus: loads the function versions the scheduler
//! assigns to it, serves their invoke subjects, and publishes their logs.

use crate::artifact::{LoadError, digest_of};
use crate::invoke::HttpFunction;
use crate::{Runtime, host::Host};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tern_bus::{Bus, BusError, Message, respond};
use tern_protocol::{
    ApiError, ArtifactRequest, Assign, Frame, InvokeRequest, InvokeResponse, NodeAnnounce, Reply,
    Unassign, World, subject,
};
use tokio::task::JoinHandle;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Worker {
    node_id: String,
    bus: Arc<dyn Bus>,
    runtime: Arc<Runtime>,
    body_limit: usize,
    functions: Mutex<HashMap<String, Loaded>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A function this node serves. `current` is swapped on a new version, so
/// the invoke subscription and requests in flight are undisturbed.
struct Loaded {
    version: u64,
    current: Arc<RwLock<Arc<HttpFunction>>>,
    serving: JoinHandle<()>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // Ends the subscription; requests already running finish on their
        // own Arc of the function.
        self.serving.abort();
    }
}

impl Worker {
    pub fn new(node_id: impl Into<String>, bus: Arc<dyn Bus>, runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Worker {
            node_id: node_id.into(),
            bus,
            runtime,
            body_limit: tern_protocol::DEFAULT_BODY_LIMIT,
            functions: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Subscribes to this node's control subjects and announces the node.
    pub async fn start(self: &Arc<Self>) -> Result<(), BusError> {
        let mut assign = self
            .bus
            .subscribe(&subject::worker_assign(&self.node_id))
            .await?;
        let mut unassign = self
            .bus
            .subscribe(&subject::worker_unassign(&self.node_id))
            .await?;
        let mut discover = self.bus.subscribe(&subject::node_discover()).await?;

        let me = self.clone();
        // Control messages are handled one at a time, so two versions of a
        // function are never loaded concurrently out of order.
        let control = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(msg) = assign.next() => {
                        let reply: Reply<()> = match serde_json::from_slice::<Assign>(&msg.payload) {
                            Ok(a) => me.assign(a).await,
                            Err(e) => Err(ApiError::bad_request(format!("malformed assign: {e}"))),
                        };
                        me.reply(&msg, &reply).await;
                    }
                    Some(msg) = unassign.next() => {
                        let reply: Reply<()> = match serde_json::from_slice::<Unassign>(&msg.payload) {
                            Ok(u) => { me.unassign(&u.function); Ok(()) }
                            Err(e) => Err(ApiError::bad_request(format!("malformed unassign: {e}"))),
                        };
                        me.reply(&msg, &reply).await;
                    }
                    Some(_) = discover.next() => me.announce().await,
                    else => break,
                }
            }
        });
        self.tasks.lock().unwrap().push(control);
        self.announce().await;
        Ok(())
    }

    async fn announce(&self) {
        let body = serde_json::to_vec(&NodeAnnounce {
            node_id: self.node_id.clone(),
        })
        .expect("serialise");
        if let Err(e) = self
            .bus
            .publish(&subject::node_announce(), body.into())
            .await
        {
            tracing::warn!("could not announce node: {e}");
        }
    }

    async fn reply<T: serde::Serialize>(&self, msg: &Message, reply: &Reply<T>) {
        let body = serde_json::to_vec(reply).expect("serialise reply");
        if let Err(e) = respond(&*self.bus, msg, body.into()).await {
            tracing::warn!("could not answer {}: {e}", msg.subject);
        }
    }

    /// Functions loaded on this node, with their versions.
    pub fn loaded(&self) -> Vec<(String, u64)> {
        let f = self.functions.lock().unwrap();
        let mut v: Vec<_> = f.iter().map(|(k, l)| (k.clone(), l.version)).collect();
        v.sort();
        v
    }

    async fn assign(self: &Arc<Self>, a: Assign) -> Reply<()> {
        if a.world != World::Http {
            return Err(ApiError::bad_request(
                "event functions are not served by this worker version",
            ));
        }
        if self
            .functions
            .lock()
            .unwrap()
            .get(&a.function)
            .is_some_and(|l| l.version == a.version)
        {
            return Ok(());
        }
        let component = self
            .component(&a.digest)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let pre = self
            .proxy_pre(&a.digest, &component)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let env: Vec<(String, String)> = a.env.clone().into_iter().collect();
        let function = Arc::new(HttpFunction::new(
            a.function.clone(),
            a.version,
            pre,
            env,
            a.memory_mib,
            Duration::from_millis(a.timeout_ms),
            self.body_limit,
        ));

        {
            let mut functions = self.functions.lock().unwrap();
            if let Some(loaded) = functions.get_mut(&a.function) {
                *loaded.current.write().unwrap() = function;
                loaded.version = a.version;
                tracing::info!(function = %a.function, version = a.version, "switched version");
                return Ok(());
            }
        }
        let sub = self
            .bus
            .queue_subscribe(
                &subject::invoke(&a.function),
                &subject::invoke_queue_group(&a.function),
            )
            .await
            .map_err(|e| ApiError::unavailable(format!("could not subscribe: {e}")))?;
        let current = Arc::new(RwLock::new(function));
        let serving = tokio::spawn(serve(self.bus.clone(), sub, current.clone()));
        self.functions.lock().unwrap().insert(
            a.function.clone(),
            Loaded {
                version: a.version,
                current,
                serving,
            },
        );
        tracing::info!(function = %a.function, version = a.version, "loaded");
        Ok(())
    }

    fn unassign(&self, function: &str) {
        if self.functions.lock().unwrap().remove(function).is_some() {
            tracing::info!(function, "unloaded");
        }
    }

    fn proxy_pre(&self, digest: &str, component: &Component) -> Result<ProxyPre<Host>, LoadError> {
        let link = |reason: String| LoadError::Link {
            digest: digest.to_string(),
            reason,
        };
        let pre = self
            .runtime
            .linker
            .instantiate_pre(component)
            .map_err(|e| link(format!("{e:#}")))?;
        ProxyPre::new(pre).map_err(|e| link(format!("{e:#}")))
    }

    /// The compiled component: from the cache, or fetched by digest from the
    /// scheduler, checked, compiled and cached.
    async fn component(&self, digest: &str) -> Result<Component, LoadError> {
        let rt = self.runtime.clone();
        let d = digest.to_string();
        if let Some(c) = tokio::task::spawn_blocking(move || rt.cache.get(&d))
            .await
            .ok()
            .flatten()
        {
            return Ok(c);
        }
        let fetch = |reason: String| LoadError::Fetch {
            digest: digest.to_string(),
            reason,
        };
        let req = serde_json::to_vec(&ArtifactRequest {
            digest: digest.to_string(),
        })
        .expect("serialise");
        let msg = self
            .bus
            .request(&subject::artifact_get(), req.into(), FETCH_TIMEOUT)
            .await
            .map_err(|e| fetch(e.to_string()))?;
        let frame = Frame::<Reply<()>>::decode(msg.payload).map_err(|e| fetch(e.to_string()))?;
        frame.header.map_err(|e| fetch(e.message))?;
        let actual = digest_of(&frame.body);
        if actual != digest {
            return Err(LoadError::DigestMismatch {
                digest: digest.to_string(),
                actual,
            });
        }
        let rt = self.runtime.clone();
        let d = digest.to_string();
        tokio::task::spawn_blocking(move || rt.cache.compile(&d, &frame.body))
            .await
            .map_err(|e| LoadError::Compile {
                digest: digest.to_string(),
                reason: e.to_string(),
            })?
            .map_err(|reason| LoadError::Compile {
                digest: digest.to_string(),
                reason,
            })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Takes invoke requests off the function's queue group; each runs in its own
/// task against whichever version is current when it arrives.
async fn serve(
    bus: Arc<dyn Bus>,
    mut sub: tern_bus::Subscription,
    current: Arc<RwLock<Arc<HttpFunction>>>,
) {
    while let Some(msg) = sub.next().await {
        let function = current.read().unwrap().clone();
        let bus = bus.clone();
        tokio::spawn(async move {
            let reply = match Frame::<InvokeRequest>::decode(msg.payload.clone()) {
                Ok(frame) => {
                    let outcome = function.invoke(frame.header, frame.body).await;
                    if !outcome.logs.is_empty() {
                        let logs = serde_json::to_vec(&outcome.logs).expect("serialise logs");
                        let _ = bus
                            .publish(&subject::logs(&function.name), logs.into())
                            .await;
                    }
                    Frame::new(outcome.response, outcome.body).encode()
                }
                Err(e) => {
                    let head = InvokeResponse {
                        status: 400,
                        headers: vec![],
                    };
                    Frame::new(
                        head,
                        Bytes::from(format!("malformed invoke request: {e}\n")),
                    )
                    .encode()
                }
            };
            if let Err(e) = respond(&*bus, &msg, reply).await {
                tracing::warn!(function = %function.name, "could not send reply: {e}");
            }
        });
    }
}
