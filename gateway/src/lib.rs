//! The Tern gateway: an HTTP server that routes requests to functions over
//! the bus, and serves the admin API under `/api/v1/`.
//!
//! Request path: [`Gateway::handle`] → route lookup ([`router::Router`]) →
//! [`Gateway::invoke`] (request/reply on the function's invoke subject; if
//! no replica answers, wait in the [`activator::Activator`] while the
//! scheduler wakes one, then send again) → response. Routes are pushed by
//! the scheduler; no request waits for a lookup elsewhere.

pub mod activator;
mod admin;
pub mod router;
pub mod token;
mod triggers;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use router::Router;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tern_bus::{Bus, BusError, Message};
use tern_events::EventLog;
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, RouteTable};
use tokio::net::TcpListener;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often a gateway re-reads the route table besides taking pushes.
const ROUTES_REFRESH: Duration = Duration::from_secs(10);

/// Headers the gateway never forwards: they describe one hop, not the
/// message (RFC 9110 §7.6.1), or are recomputed from the body.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub body_limit: usize,
    /// Largest request head (request line and headers).
    pub header_limit: usize,
    pub admin_token: String,
    /// Requests held per function while it starts from zero.
    pub cold_start_buffer: usize,
    /// How long a held request waits for a replica before 503.
    pub cold_start_timeout: Duration,
}

pub struct Gateway {
    bus: Arc<dyn Bus>,
    routes: RwLock<Arc<Router>>,
    activator: Arc<activator::Activator>,
    config: GatewayConfig,
    /// Published events, triggers' consumers, dead letters.
    events: Arc<dyn EventLog>,
    triggers: triggers::Triggers,
    /// Trigger tasks hold this, not the gateway.
    me: Weak<Gateway>,
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    m.push('\n');
    full(status, "text/plain; charset=utf-8", m)
}

impl Gateway {
    pub fn new(bus: Arc<dyn Bus>, events: Arc<dyn EventLog>, config: GatewayConfig) -> Arc<Self> {
        let activator = Arc::new(activator::Activator::new(
            bus.clone(),
            config.cold_start_buffer,
            config.cold_start_timeout,
        ));
        Arc::new_cyclic(|me| Gateway {
            bus,
            routes: RwLock::new(Arc::new(Router::default())),
            activator,
            config,
            events,
            triggers: Default::default(),
            me: me.clone(),
        })
    }

    /// Follows route pushes, and fetches the current table from the
    /// scheduler (retrying until it answers).
    pub async fn start(self: &Arc<Self>) -> Result<(), BusError> {
        let mut pushes = self.bus.subscribe(&subject::routes_changed()).await?;
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = pushes.next().await {
                match serde_json::from_slice::<RouteTable>(&msg.payload) {
                    Ok(t) => me.apply_routes(&t),
                    Err(e) => tracing::warn!("ignoring malformed route push: {e}"),
                }
            }
        });
        let me = self.clone();
        let initial = tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                match admin::control::<RouteTable>(&*me.bus, SchedulerOp::Routes, Bytes::from_static(b"{}"))
                    .await
                {
                    Ok(t) => return me.apply_routes(&t),
                    Err(e) => {
                        tracing::info!("waiting for the scheduler's route table: {}", e.message)
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        // Wait briefly so a co-located scheduler's routes are served from
        // the first request; a remote one may take longer and that is fine.
        let _ = tokio::time::timeout(Duration::from_secs(2), initial).await;
        // Pushes can be lost (a NATS reconnect, a gateway started mid-change):
        // re-read the table now and then. Off the request path, and the
        // generation check makes a stale answer harmless.
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ROUTES_REFRESH).await;
                let Some(me) = me.upgrade() else { break };
                let empty = Bytes::from_static(b"{}");
                if let Ok(t) = admin::control::<RouteTable>(&*me.bus, SchedulerOp::Routes, empty).await {
                    me.apply_routes(&t);
                }
            }
        });
        Ok(())
    }

    /// Installs a route table unless a newer one is already in place, and
    /// runs its triggers.
    pub fn apply_routes(&self, table: &RouteTable) {
        let mut current = self.routes.write().unwrap();
        if table.generation >= current.generation() {
            *current = Arc::new(Router::new(table));
            self.triggers.apply(&self.me, &self.events, &table.triggers);
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // A backstop only (hyper may read past it); `handle` enforces
            // the exact limit. hyper needs at least 8 KiB.
            let max_buf = (self.config.header_limit + 16 * 1024).max(8192);
            let me = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.handle(req, peer).await) }
                });
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .max_buf_size(max_buf)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        // hyper's read buffer bounds the head only roughly; this is the limit.
        let head_size = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
        if head_size > self.config.header_limit {
            return text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request headers are larger than the {} byte limit", self.config.header_limit),
            );
        }
        let path = req.uri().path();
        if path == "/api/v1" || path.starts_with("/api/v1/") {
            return admin::handle(&self, req).await;
        }
        let route = self.routes.read().unwrap().clone();
        let Some(entry) = route.lookup(path) else {
            return text(StatusCode::NOT_FOUND, format!("no function serves {path}"));
        };
        let (function, timeout_ms) = (entry.function.clone(), entry.timeout_ms);
        let uri = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        self.invoke(&function, timeout_ms, uri, req).await
    }

    /// Sends one invocation to a replica of `function` and waits for its
    /// reply. If no replica listens, the call waits in the activator while
    /// the function starts, then is sent again. Every trigger (HTTP routes,
    /// the admin invoke) goes through here.
    pub async fn call(&self, function: &str, timeout_ms: u64, payload: Bytes) -> Result<Message, CallError> {
        // The worker enforces the function's timeout and answers with 504;
        // this margin only covers a worker that died mid-request.
        let wait = Duration::from_millis(timeout_ms) + Duration::from_secs(5);
        let subject = subject::invoke(function);
        let mut deadline = None;
        let mut pause = Duration::from_millis(2);
        loop {
            let sent_at = tokio::time::Instant::now();
            match self.bus.request(&subject, payload.clone(), wait).await {
                Err(BusError::NoResponders(_)) => {
                    // One deadline across retries: a function that is
                    // unloaded again between wake and send does not reset it.
                    let deadline = match deadline {
                        Some(d) => {
                            // Woken, yet nobody listens: the scheduler's view
                            // is a heartbeat behind. Do not spin on it.
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(200));
                            d
                        }
                        None => *deadline.insert(tokio::time::Instant::now() + self.activator.timeout),
                    };
                    self.activator.wait(function, sent_at, deadline).await.map_err(CallError::Cold)?;
                }
                other => return other.map_err(CallError::Bus),
            }
        }
    }

    /// Sends one request to a replica of `function` and relays its answer.
    pub(crate) async fn invoke(
        &self,
        function: &str,
        timeout_ms: u64,
        uri: String,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.config.body_limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than the {} byte limit", self.config.body_limit),
                );
            }
            Err(e) => {
                return text(StatusCode::BAD_REQUEST, format!("could not read request body: {e}"));
            }
        };
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| !HOP_BY_HOP.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let head = InvokeRequest { method: parts.method.as_str().to_string(), uri, headers };
        let payload = Frame::new(head, body).encode();
        let reply = match self.call(function, timeout_ms, payload).await {
            Ok(m) => m,
            Err(CallError::Cold(e)) => {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            Err(CallError::Bus(BusError::Timeout { .. })) => {
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("function {function} did not answer in time"),
                );
            }
            Err(CallError::Bus(e)) => {
                return text(StatusCode::BAD_GATEWAY, format!("could not reach function {function}: {e}"));
            }
        };
        match Frame::<InvokeResponse>::decode(reply.payload) {
            Ok(f) => to_response(f.header, f.body),
            Err(e) => {
                text(StatusCode::BAD_GATEWAY, format!("function {function} sent a malformed reply: {e}"))
            }
        }
    }
}

/// Why [`Gateway::call`] got no answer from a function.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No replica became ready: the activator's buffer was full, the
    /// function could not start, or it did not start in time.
    #[error(transparent)]
    Cold(activator::ActivateError),
    #[error(transparent)]
    Bus(BusError),
}

fn to_response(head: InvokeResponse, body: Bytes) -> Response<Body> {
    let mut builder = Response::builder().status(head.status);
    for (k, v) in &head.headers {
        if !HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()) {
            builder = builder.header(k, v);
        }
    }
    builder.body(Full::new(body).boxed_unsync()).unwrap_or_else(|e| {
        text(StatusCode::BAD_GATEWAY, format!("function sent an invalid response head: {e}"))
    })
}

/// Binds `addr`; the error says which address could not be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
