//! Outbound HTTP (`wasi:http/outgoing-handler`): what a function may send,
//! to whom, and how much comes back. Denied unless granted: a request
//! whose `scheme://host:port` matches none of the function's
//! `--allow-outbound` patterns fails in the guest with
//! `http-request-denied`, and nothing is sent.
//!
//! A granted request, top to bottom ([`OutboundHooks::send_request`]):
//! grant → `NAME.tern.internal`: the invoke path ([`internal`]), else
//! resolve and refuse private addresses the grant does not name
//! ([`address`]) → the function's circuit breaker for that upstream
//! ([`breaker`]) → connect, TLS, one HTTP/1.1 exchange with a bounded
//! response body ([`send`]). Every step is counted per function
//! ([`FunctionNet`]) and reported in heartbeats, so `describe` shows it.

mod address;
pub mod breaker;
mod internal;
mod pool;
mod send;

pub use breaker::BreakerConfig;

use crate::limits::Deadline;
use breaker::{Admit, Breakers};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tern_invoke::Invoker;
use tern_protocol::OutboundStatus;
use tern_protocol::outbound::{OutboundPattern, is_internal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Outbound requests one instance may have open at once, by default.
pub const DEFAULT_MAX_CONCURRENT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("cannot read the outbound CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot build the TLS client configuration: {0}")]
    Tls(String),
}

/// A worker's outbound settings (flags of `tern up` and `tern worker`).
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Trusted beside the platform's root store (`--outbound-ca`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub breaker: BreakerConfig,
    /// Outbound requests one instance may have open at once.
    pub max_concurrent: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            extra_roots: Vec::new(),
            breaker: BreakerConfig::default(),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

impl OutboundConfig {
    /// Adds the certificates of a PEM file to the trusted roots.
    pub fn trust_pem_file(&mut self, path: &Path) -> Result<(), OutboundError> {
        let fail = |reason: String| OutboundError::Ca { path: path.display().to_string(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no certificate in it".into()));
        }
        self.extra_roots.extend(certs);
        Ok(())
    }
}

/// What every function on a worker shares: the TLS client and the invoke
/// path for calls between functions.
pub struct Outbound {
    tls: tokio_rustls::TlsConnector,
    invoker: Arc<Invoker>,
    /// The worker's stream mailboxes, once it has started: calls between
    /// functions stream their bodies through them.
    streams: std::sync::OnceLock<Arc<tern_invoke::Streams>>,
    config: OutboundConfig,
}

impl Outbound {
    pub fn new(config: OutboundConfig, invoker: Arc<Invoker>) -> Result<Arc<Self>, OutboundError> {
        let tls = send::tls_connector(&config.extra_roots)?;
        Ok(Arc::new(Outbound { tls, invoker, streams: Default::default(), config }))
    }

    /// Lets calls between functions stream their bodies.
    pub(crate) fn set_streams(&self, streams: Arc<tern_invoke::Streams>) {
        let _ = self.streams.set(streams);
    }

    /// A function's counters and breakers, kept across its versions.
    pub(crate) fn function_net(&self) -> Arc<FunctionNet> {
        Arc::new(FunctionNet { counters: Counters::default(), breakers: Breakers::new(self.config.breaker) })
    }
}

/// One function's outbound counters and breakers on this worker.
pub(crate) struct FunctionNet {
    counters: Counters,
    breakers: Breakers,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    denied: AtomicU64,
    short_circuited: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
}

impl FunctionNet {
    /// `None` until the function has tried an outbound request.
    pub(crate) fn status(&self) -> Option<OutboundStatus> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let status = OutboundStatus {
            calls: get(&c.calls),
            errors: get(&c.errors),
            denied: get(&c.denied),
            short_circuited: get(&c.short_circuited),
            bytes_out: get(&c.bytes_out),
            bytes_in: get(&c.bytes_in),
            breakers: self.breakers.status(Instant::now()),
        };
        (status != OutboundStatus::default()).then_some(status)
    }

    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        counter(&self.counters).fetch_add(n, Ordering::Relaxed);
    }
}

/// What one function version was granted, shared by its instances.
pub struct OutboundGrant {
    pub(crate) shared: Arc<Outbound>,
    pub(crate) net: Arc<FunctionNet>,
    pub(crate) patterns: Vec<OutboundPattern>,
    pub(crate) max_body: u64,
    /// Largest request body a call to another function may carry (one
    /// bus message).
    pub(crate) max_internal_body: usize,
    /// Kept-alive connections to its upstreams.
    pub(crate) pool: pool::Pool,
}

/// Lines an invocation's outbound requests add to its log, at most; past
/// that they are counted.
const MAX_NOTES: usize = 16;

/// Tern's lines about one invocation's outbound requests (denials, cut
/// bodies, open breakers), for the function's log.
#[derive(Clone, Default)]
pub(crate) struct Notes(Arc<Mutex<(Vec<String>, u64)>>);

impl Notes {
    pub(crate) fn push(&self, line: String) {
        let mut n = self.0.lock();
        if n.0.len() < MAX_NOTES {
            n.0.push(line);
        } else {
            n.1 += 1;
        }
    }

    pub(crate) fn take(&self) -> Vec<String> {
        let mut n = self.0.lock();
        let (mut lines, more) = (std::mem::take(&mut n.0), std::mem::take(&mut n.1));
        if more > 0 {
            lines.push(format!("… and {more} more outbound lines not kept"));
        }
        lines
    }
}

/// One instance's outbound hooks: its version's grant, how deep in a chain
/// of calls it is, when its time is up, and its open requests.
pub(crate) struct OutboundHooks {
    grant: Option<Arc<OutboundGrant>>,
    hops: u32,
    deadline: Deadline,
    /// Made at the first outbound request: most instances make none.
    open: Option<Arc<Semaphore>>,
    notes: Notes,
}

impl OutboundHooks {
    pub(crate) fn new(
        grant: Option<Arc<OutboundGrant>>,
        hops: u32,
        deadline: Deadline,
        notes: Notes,
    ) -> Self {
        OutboundHooks { grant, hops, deadline, open: None, notes }
    }
}

/// Where a request goes, from its URI.
pub(crate) struct Upstream {
    pub scheme: String,
    /// Lowercase; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl Upstream {
    fn of(uri: &http::Uri) -> Option<Upstream> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Upstream { scheme, host, port })
    }

    /// `host:port`, the breaker's key and what logs name.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

type Sent = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        let notes = self.notes.clone();
        let Some(grant) = self.grant.clone() else {
            let what =
                Upstream::of(request.uri()).map_or_else(|| request.uri().to_string(), |u| u.authority());
            notes.push(format!(
                "outbound request to {what} denied: the function has no --allow-outbound grant"
            ));
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let Some(upstream) = Upstream::of(request.uri()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let granted: Vec<OutboundPattern> = grant
            .patterns
            .iter()
            .filter(|p| p.matches(&upstream.scheme, &upstream.host, upstream.port))
            .cloned()
            .collect();
        if granted.is_empty() {
            grant.net.count(|c| &c.denied, 1);
            notes.push(format!(
                "outbound request to {}://{} denied: not in the function's --allow-outbound",
                upstream.scheme,
                upstream.authority()
            ));
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let max_open = grant.shared.config.max_concurrent;
        let open = self.open.get_or_insert_with(|| Arc::new(Semaphore::new(max_open)));
        let Ok(permit) = open.clone().try_acquire_owned() else {
            notes.push(format!(
                "outbound request to {} refused: {} requests already open in this instance (the limit)",
                upstream.authority(),
                max_open
            ));
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        let call = Call {
            grant,
            upstream,
            granted,
            hops: self.hops,
            deadline: self.deadline.clone(),
            notes,
            permit,
        };
        Box::new(call.run(request, options))
    }
}

/// One granted request on its way.
pub(crate) struct Call {
    grant: Arc<OutboundGrant>,
    upstream: Upstream,
    /// The patterns that granted it (they decide which private addresses
    /// it may reach).
    granted: Vec<OutboundPattern>,
    hops: u32,
    deadline: Deadline,
    notes: Notes,
    /// Held until the response body is done with.
    permit: OwnedSemaphorePermit,
}

impl Call {
    async fn run(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, Error> {
        let authority = self.upstream.authority();
        let net = self.grant.net.clone();
        let result = if is_internal(&self.upstream.host) {
            // No network: the breaker guards the called function as it
            // would a host.
            self.admit(&authority)?;
            net.count(|c| &c.calls, 1);
            internal::call(&self, request).await.map(|resp| (resp, None))
        } else {
            let addrs = send::resolve(&self).await?;
            self.admit(&authority)?;
            net.count(|c| &c.calls, 1);
            send::call(&self, addrs, request, options).await.map(|(resp, keep)| (resp, Some(keep)))
        };
        self.settle(&authority, result.as_ref().map(|(resp, _)| resp.status()));
        let (resp, keep) = result?;
        // Connections are driven by tasks of their own (`pool`): no I/O
        // future for wasmtime to drive.
        Ok((self.count_body(resp, keep), Box::new(async { Ok(()) })))
    }

    fn admit(&self, authority: &str) -> Result<(), Error> {
        match self.grant.net.breakers.admit(authority, Instant::now()) {
            Admit::Go => Ok(()),
            Admit::Reject(retry_in) => {
                self.grant.net.count(|c| &c.short_circuited, 1);
                self.notes.push(format!(
                    "outbound request to {authority} failed fast: its circuit breaker is open after repeated failures; a probe goes in {} ms",
                    retry_in.as_millis()
                ));
                Err(Error::DestinationUnavailable)
            }
        }
    }

    /// Counts the outcome and tells the breaker.
    fn settle(&self, authority: &str, result: Result<http::StatusCode, &Error>) {
        // 508 is a cycle cut short, not a sign the upstream is unwell.
        let ok = matches!(result, Ok(status) if status.as_u16() < 500 || status.as_u16() == 508);
        if !ok {
            self.grant.net.count(|c| &c.errors, 1);
        }
        if let Err(e) = result {
            self.notes.push(format!("outbound request to {authority} failed: {e}"));
        }
        self.grant.net.breakers.record(authority, ok, Instant::now());
    }

    /// The response body the guest reads: counted, cut at the limit, and
    /// giving its connection (`keep`) back to the pool once read to the end.
    fn count_body(
        self,
        resp: http::Response<WasiBody>,
        keep: Option<pool::Keep>,
    ) -> http::Response<WasiBody> {
        let authority = self.upstream.authority();
        let Call { grant, notes, permit, .. } = self;
        resp.map(|body| send::CountedBody::wrap(body, grant, authority, notes, permit, keep))
    }

    pub(crate) fn remaining(&self) -> std::time::Duration {
        self.deadline.get().saturating_duration_since(Instant::now())
    }
}

/// Counts the bytes of a request body as the guest writes them.
pub(crate) fn count_request(body: WasiBody, net: Arc<FunctionNet>) -> WasiBody {
    use http_body_util::BodyExt;
    body.map_frame(move |f| {
        if let Some(d) = f.data_ref() {
            net.count(|c| &c.bytes_out, d.len() as u64);
        }
        f
    })
    .boxed_unsync()
}
