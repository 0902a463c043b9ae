//! The Tern gateway: an HTTP server that routes requests to functions over
//! the bus, runs event triggers, and serves the admin API under `/api/v1/`.
//!
//! A request, top to bottom: [`Gateway::handle`] (head limit; admin or data
//! plane) → [`serving::Serving::route`] (the route table) →
//! [`proxy::forward`] (request → invoke frame) → [`tern_invoke::Invoker::call`]
//! (request/reply on the function's invoke subject; no replica: wait in the
//! [`tern_invoke::Activator`] while the scheduler wakes one) → response.
//!
//! An event: [`triggers`] pulls each trigger's consumer → [`dispatch`]
//! sends a batch through the same [`tern_invoke::Invoker`] and settles each
//! delivery (ack, retry, dead letter).
//!
//! The serving table (routes and triggers) is pushed by the scheduler and
//! installed in one place, [`serving::Serving::apply`]. The admin API
//! ([`admin`]) works through narrow handles, never the gateway itself.

mod admin;
pub mod body;
pub mod dispatch;
pub mod history;
pub mod proxy;
pub mod router;
pub mod serving;
pub mod tls;
pub mod token;
pub mod triggers;
pub mod ui;

pub use body::Body;

use body::text;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tern_bus::{Bus, BusError};
use tern_events::EventLog;
use tern_metrics::Metrics;
use tern_protocol::route;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct GatewayConfig {
    pub body_limit: usize,
    /// Largest request head (request line and headers).
    pub header_limit: usize,
    pub admin_token: String,
    /// Requests held per function while it starts from zero.
    pub cold_start_buffer: usize,
    /// How long a held request waits for a replica before 503.
    pub cold_start_timeout: Duration,
    /// Bytes of requests held at once while functions start, in all.
    pub cold_start_bytes: usize,
    /// Open connections at most; past them a connection gets 503 and is
    /// closed.
    pub max_connections: usize,
    /// HTTPS, if given a certificate.
    pub tls: Option<Arc<tls::Tls>>,
    /// What `/metrics` serves (the process's one registry).
    pub metrics: Arc<Metrics>,
    /// A bearer token `/metrics` asks for; none: open, like most exporters.
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: configs end up in logs.
        f.debug_struct("GatewayConfig")
            .field("body_limit", &self.body_limit)
            .field("header_limit", &self.header_limit)
            .field("admin_token", &"<redacted>")
            .field("cold_start_buffer", &self.cold_start_buffer)
            .field("cold_start_timeout", &self.cold_start_timeout)
            .field("cold_start_bytes", &self.cold_start_bytes)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .field("metrics", &self.metrics.enabled())
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

pub struct Gateway {
    config: GatewayConfig,
    bus: Arc<dyn Bus>,
    scheduler: tern_invoke::SchedulerClient,
    serving: Arc<serving::Serving>,
    invoker: Arc<tern_invoke::Invoker>,
    /// Where streamed response bodies arrive; set by [`Gateway::start`].
    /// Set by `start`; the admin API's invoke shares them.
    streams: Arc<std::sync::OnceLock<Arc<tern_invoke::Streams>>>,
    /// Per-function rates and replicas over the last hour, for the dashboard.
    history: Arc<history::History>,
    admin: admin::Admin,
    /// Set once [`Gateway::serve`] is told to stop.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    pub fn new(
        bus: Arc<dyn Bus>,
        events: Arc<dyn EventLog>,
        kv: Arc<dyn tern_kv::KvStore>,
        artifacts: Arc<dyn tern_artifacts::ArtifactStore>,
        config: GatewayConfig,
    ) -> Arc<Self> {
        let scheduler = tern_invoke::SchedulerClient::new(bus.clone());
        let activator = Arc::new(tern_invoke::Activator::new(
            scheduler.clone(),
            config.cold_start_buffer,
            config.cold_start_timeout,
            config.metrics.clone(),
        ));
        let invoker = Arc::new(tern_invoke::Invoker::new(bus.clone(), activator, config.cold_start_bytes));
        let dispatch =
            Arc::new(dispatch::EventDispatch::new(invoker.clone(), events, config.metrics.clone()));
        let serving = Arc::new(serving::Serving::new(triggers::Triggers::new(dispatch.clone())));
        let streams = Arc::new(std::sync::OnceLock::new());
        let history = Arc::new(history::History::default());
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let admin = admin::Admin {
            stopping: stopping_rx,
            history: history.clone(),
            streams: streams.clone(),
            token: config.admin_token.clone(),
            scheduler: scheduler.clone(),
            serving: serving.clone(),
            invoker: invoker.clone(),
            dispatch,
            bus: bus.clone(),
            body_limit: config.body_limit,
            kv,
            artifacts,
        };
        Arc::new(Gateway { config, bus, scheduler, serving, invoker, streams, history, admin, stopping })
    }

    /// Starts following the scheduler's serving table, and sampling the
    /// dashboard's history.
    pub async fn start(&self) -> Result<(), BusError> {
        let streams = tern_invoke::Streams::open(self.bus.clone()).await?;
        let _ = self.streams.set(streams);
        tokio::spawn(sample_history(Arc::downgrade(&self.history), self.scheduler.clone()));
        self.serving.follow(&*self.bus, self.scheduler.clone()).await
    }

    /// Accepts connections until `stop` resolves, then shuts down
    /// gracefully: no new connection is taken and no new event pulled, each
    /// open connection finishes the request it is on (a streamed response
    /// to its end) and closes, and handed-over events are settled; all
    /// within `drain`. What is still open after it is cut, and an event
    /// still unsettled is redelivered by the log, so none is lost.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let open = Arc::new(AtomicUsize::new(0));
        let graceful = GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut stop => break,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if open.load(Ordering::Relaxed) >= self.config.max_connections {
                tokio::spawn(turn_away(stream));
                continue;
            }
            let connection = OpenConnection::count(&open);
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                match &me.config.tls {
                    None => me.clone().serve_connection(TokioIo::new(stream), peer, watcher).await,
                    Some(tls) => {
                        if let Some(stream) = accept_tls(tls, stream).await {
                            me.clone().serve_connection(TokioIo::new(stream), peer, watcher).await
                        }
                    }
                }
                drop(connection);
            });
        }
        drop(listener);
        self.stopping.send_replace(true);
        let open_now = open.load(Ordering::Relaxed);
        tracing::info!(
            connections = open_now,
            "shutting down: finishing what is in flight (up to {drain:?})"
        );
        let events = self.serving.stop_triggers();
        let finished = tokio::time::timeout(drain, futures::future::join(graceful.shutdown(), events)).await;
        match finished {
            Ok(_) => tracing::info!("every connection and event in flight finished"),
            Err(_) => tracing::warn!(
                connections = open.load(Ordering::Relaxed),
                "still in flight after {drain:?}; cut (unsettled events are redelivered)"
            ),
        }
        Ok(())
    }

    /// Serves HTTP/1.1 on one connection, plain or TLS, until it ends.
    async fn serve_connection<I>(self: Arc<Self>, io: TokioIo<I>, peer: SocketAddr, graceful: Watcher)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // A backstop only (hyper may read past it); `handle` enforces the
        // exact limit. hyper needs at least 8 KiB.
        let max_buf = (self.config.header_limit + 16 * 1024).max(8192);
        let me = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req).await) }
        });
        let result = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(max_buf)
            .serve_connection(io, service);
        let result = graceful.watch(result).await;
        if let Err(e) = result {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }

    /// `GET /metrics`: open, or behind `--metrics-token`.
    fn metrics(&self, req: &Request<Incoming>) -> Response<Body> {
        if let Some(want) = &self.config.metrics_token
            && !token::bearer_matches(req.headers(), want)
        {
            return text(
                StatusCode::UNAUTHORIZED,
                "/metrics needs the metrics token (Authorization: Bearer …)",
            );
        }
        let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
        tern_metrics::serve::response(&self.config.metrics, accept).map(|b| {
            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(b, |never| match never {}))
        })
    }

    /// One request: the admin API, or a function's route.
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        // hyper's read buffer bounds the head only roughly; this is the limit.
        let head_size = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
        if head_size > self.config.header_limit {
            return text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request headers are larger than the {} byte limit", self.config.header_limit),
            );
        }
        let mut hosts = req.headers().get_all(http::header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() || host.is_some_and(|h| !h.to_str().is_ok_and(tern_protocol::host::valid)) {
            return text(StatusCode::BAD_REQUEST, "the Host header is not a valid host[:port]");
        }
        // One spelling of the path decides everything below: admin or not,
        // which route, and what the function sees.
        let path = route::normal_path(req.uri().path());
        if route::is_admin_path(&path) {
            return self.admin.handle(&path, req).await;
        }
        if path == route::METRICS_PATH {
            return self.metrics(&req);
        }
        if route::is_ui_path(&path) {
            return ui::asset(&path);
        }
        let Some(entry) = self.serving.route(&path) else {
            return text(StatusCode::NOT_FOUND, format!("no function serves {path}"));
        };
        // The admin token is the operator's, never a function's; any other
        // credentials are the function's business.
        if token::bearer_matches(req.headers(), &self.config.admin_token) {
            req.headers_mut().remove(http::header::AUTHORIZATION);
        }
        let uri = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        // The dashboard's history is off with the metrics (`--no-metrics`).
        let observed = self.config.metrics.enabled();
        let started = std::time::Instant::now();
        if observed {
            self.history.begin(&entry.function);
        }
        let target = proxy::Target {
            function: &entry.function,
            timeout_ms: entry.timeout_ms,
            uri,
            body_limit: self.config.body_limit,
            max_body: entry.max_body,
            max_duration_ms: entry.max_duration_ms,
            trigger: tern_protocol::TriggerKind::Http,
        };
        let response = proxy::forward(&self.invoker, self.streams.get().map(|s| &**s), target, req).await;
        if observed {
            self.history.end(&entry.function, response.status().as_u16(), started.elapsed());
        }
        response
    }
}

/// One open connection, counted while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TLS handshake, within 10 s. A client that speaks plain HTTP to the
/// HTTPS port gets a plain 400 that says so, not a broken handshake.
async fn accept_tls(
    tls: &tls::Tls,
    stream: tokio::net::TcpStream,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    // Every TLS connection opens with a handshake record (0x16).
    if first[0] != 0x16 {
        const BODY: &str = "this port speaks HTTPS; use an https:// URL\n";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        return None;
    }
    match tokio::time::timeout(Duration::from_secs(10), tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// A connection past `--max-connections`: a 503 that says why, then closed.
async fn turn_away(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = "the gateway has as many connections open as it takes; try again\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Binds `addr`; the error says which address could not be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Closes a step of the dashboard's history every [`history::STEP`], with
/// the functions there are and their replicas as the scheduler sees them.
async fn sample_history(history: std::sync::Weak<history::History>, scheduler: tern_invoke::SchedulerClient) {
    use tern_protocol::subject::SchedulerOp;
    use tern_protocol::{ClusterStatus, FunctionSummary};
    let mut tick = tokio::time::interval(history::STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(history) = history.upgrade() else { break };
        let empty = || bytes::Bytes::from_static(b"{}");
        let (list, status) = futures::join!(
            scheduler.request::<Vec<FunctionSummary>>(SchedulerOp::List, empty()),
            scheduler.request::<ClusterStatus>(SchedulerOp::Status, empty()),
        );
        let (Ok(list), Ok(status)) = (list, status) else { continue };
        let deployed = list
            .iter()
            .map(|f| {
                let ready = status.replicas.get(&f.name).map_or(0, |n| n.len() as u32);
                let wanted = status.scale.get(&f.name).map_or(0, |s| s.desired);
                (f.name.clone(), (ready, wanted))
            })
            .collect();
        history.sample(tern_protocol::clock::now_ms(), &deployed);
    }
}
