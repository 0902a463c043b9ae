//! One invocation of an HTTP function: a fresh store and instance from the
//! function's pre-instantiated component, limits enforced, output captured.

use crate::host::{Host, LOG_CAPTURE_BYTES};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tern_protocol::{InvokeRequest, InvokeResponse, LogRecord, LogStream};
use tokio::task::JoinHandle;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

/// A loaded version of an HTTP function, ready to serve many requests.
pub struct HttpFunction {
    pub name: String,
    pub version: u64,
    pre: ProxyPre<Host>,
    env: Vec<(String, String)>,
    memory_mib: u32,
    timeout: Duration,
    body_limit: usize,
}

/// What a function version runs with, from its spec; either world.
pub(crate) struct Settings {
    pub name: String,
    pub version: u64,
    /// Config values, the guest's whole environment.
    pub env: Vec<(String, String)>,
    pub memory_mib: u32,
    pub timeout: Duration,
}

/// Why an invocation produced no usable response. The client sees the status
/// and a short message; the function's log gets the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout(Duration),
    MemoryLimit(u32),
    StackOverflow,
    Trap(String),
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with an error code instead of a response.
    ErrorResponse(String),
    ResponseTooLarge(usize),
    /// Every instance slot on this node is busy.
    Capacity,
    BadRequest(String),
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::Timeout(_) => 504,
            Failure::NoResponse | Failure::ErrorResponse(_) | Failure::ResponseTooLarge(_) => 502,
            Failure::Capacity => 503,
            Failure::BadRequest(_) => 400,
            Failure::MemoryLimit(_) | Failure::StackOverflow | Failure::Trap(_) => 500,
        }
    }

    /// What the client is told: the kind of failure, never guest internals.
    pub fn public_message(&self) -> String {
        match self {
            Failure::Timeout(d) => format!("function timed out after {}", humanize(*d)),
            Failure::MemoryLimit(mib) => format!("function exceeded its memory limit of {mib} MiB"),
            Failure::StackOverflow => "function overflowed its stack".into(),
            Failure::Trap(_) => "function failed (trap)".into(),
            Failure::NoResponse => "function returned without sending a response".into(),
            Failure::ErrorResponse(_) => "function failed to produce a response".into(),
            Failure::ResponseTooLarge(limit) => {
                format!("function response is larger than the {limit} byte limit")
            }
            Failure::Capacity => "worker is at capacity, try again".into(),
            Failure::BadRequest(m) => format!("bad request: {m}"),
        }
    }

    /// What the function's log says.
    pub(crate) fn log_line(&self) -> String {
        match self {
            Failure::Trap(detail) => format!("invocation failed: trap: {detail}"),
            Failure::ErrorResponse(detail) => {
                format!("invocation failed: guest set an error response: {detail}")
            }
            other => format!("invocation failed: {}", other.public_message()),
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The result of one invocation: always a response (a failure becomes an
/// error response), plus the log records it produced.
pub struct Outcome {
    pub response: InvokeResponse,
    pub body: Bytes,
    pub failure: Option<Failure>,
    pub logs: Vec<LogRecord>,
}

impl HttpFunction {
    pub(crate) fn new(settings: Settings, pre: ProxyPre<Host>, body_limit: usize) -> Self {
        let Settings { name, version, env, memory_mib, timeout } = settings;
        HttpFunction { name, version, pre, env, memory_mib, timeout, body_limit }
    }

    pub async fn invoke(&self, req: InvokeRequest, body: Bytes) -> Outcome {
        let stdout = MemoryOutputPipe::new(LOG_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(LOG_CAPTURE_BYTES);
        let result = self.run(req, body, stdout.clone(), stderr.clone()).await;
        let log = LogSink { function: &self.name, version: self.version };
        let mut logs = log.output(&stdout, &stderr);
        match result {
            Ok((response, body)) => Outcome { response, body, failure: None, logs },
            Err((failure, detail)) => {
                let mut line = failure.log_line();
                if let Some(d) = detail {
                    line.push_str(&format!("\n{d}"));
                }
                logs.push(log.record(LogStream::Tern, line));
                Outcome {
                    response: InvokeResponse {
                        status: failure.status(),
                        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                    },
                    body: Bytes::from(format!("{}\n", failure.public_message())),
                    failure: Some(failure),
                    logs,
                }
            }
        }
    }

    /// Runs the guest. On failure also returns the detail for the log.
    async fn run(
        &self,
        req: InvokeRequest,
        body: Bytes,
        stdout: MemoryOutputPipe,
        stderr: MemoryOutputPipe,
    ) -> Result<(InvokeResponse, Bytes), (Failure, Option<String>)> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let http_req = to_hyper_request(req, body).map_err(|m| (Failure::BadRequest(m), None))?;

        let (mut store, memory_hit) =
            new_store(self.pre.engine(), &self.env, self.memory_mib, deadline, stdout, stderr);

        let (tx, rx) = tokio::sync::oneshot::channel();
        let setup = (|| -> wasmtime::Result<_> {
            let req = store.data_mut().http().new_incoming_request(Scheme::Http, http_req)?;
            let out = store.data_mut().http().new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = setup.map_err(|e| (Failure::BadRequest(format!("{e:#}")), None))?;

        let pre = self.pre.clone();
        // The guest runs in its own task: it may keep writing the body after
        // it has handed over the response head.
        let mut task = AbortOnDrop(tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        }));

        let classify = |e: wasmtime::Error| {
            classify_error(e, memory_hit.load(Ordering::Relaxed), self.timeout, self.memory_mib)
        };
        let fail_timeout = || (Failure::Timeout(self.timeout), None);

        // A guest blocked on the host (not spinning) is caught here.
        let grace = deadline + Duration::from_millis(50);
        let head = match tokio::time::timeout_at(grace.into(), rx).await {
            Err(_) => return Err(fail_timeout()),
            Ok(Ok(Ok(resp))) => resp,
            Ok(Ok(Err(code))) => return Err((Failure::ErrorResponse(format!("{code:?}")), None)),
            Ok(Err(_)) => {
                // The outparam was dropped unset: the guest returned or died.
                return match tokio::time::timeout_at(grace.into(), &mut task.0).await {
                    Err(_) => Err(fail_timeout()),
                    Ok(Ok(Ok(()))) => Err((Failure::NoResponse, None)),
                    Ok(Ok(Err(e))) => Err(classify(e)),
                    Ok(Err(join)) => Err((Failure::Trap(format!("guest task ended: {join}")), None)),
                };
            }
        };

        let (parts, body) = head.into_parts();
        let collected =
            tokio::time::timeout_at(grace.into(), Limited::new(body, self.body_limit).collect()).await;
        let body = match collected {
            Err(_) => return Err(fail_timeout()),
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err((Failure::ResponseTooLarge(self.body_limit), None));
            }
            Ok(Err(_)) => {
                // The body broke off: the guest trapped mid-stream.
                return match tokio::time::timeout_at(grace.into(), &mut task.0).await {
                    Ok(Ok(Err(e))) => Err(classify(e)),
                    Err(_) => Err(fail_timeout()),
                    _ => Err((Failure::Trap("response body ended with an error".into()), None)),
                };
            }
        };
        // The body is complete; a trap after this point does not change
        // what the client gets, but it belongs in the log.
        if let Ok(Ok(Err(e))) = tokio::time::timeout_at(grace.into(), &mut task.0).await {
            tracing::debug!(function = %self.name, "guest failed after its response was complete: {e:#}");
        }

        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Ok((InvokeResponse { status: parts.status.as_u16(), headers }, body))
    }
}

/// A fresh store for one invocation, with the function's memory limit and
/// deadline. Every epoch tick the guest yields to tokio (so a spinning guest
/// cannot starve other requests on this thread) and traps once its time is
/// up. Returns the flag that says whether the memory limit was hit.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    env: &[(String, String)],
    memory_mib: u32,
    deadline: Instant,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
) -> (Store<Host>, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let host = Host::new(env, (memory_mib as usize) << 20, stdout, stderr);
    let memory_hit = host.limits.hit.clone();
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline { Err(Trap::Interrupt.into()) } else { Ok(UpdateDeadline::Yield(1)) }
    });
    (store, memory_hit)
}

/// Turns one invocation's output into the function's log records.
pub(crate) struct LogSink<'a> {
    pub function: &'a str,
    pub version: u64,
}

impl LogSink<'_> {
    pub fn output(&self, stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> Vec<LogRecord> {
        let mut logs = Vec::new();
        for (stream, bytes) in
            [(LogStream::Stdout, stdout.contents()), (LogStream::Stderr, stderr.contents())]
        {
            for line in String::from_utf8_lossy(&bytes).lines() {
                logs.push(self.record(stream, line.to_string()));
            }
        }
        logs
    }

    pub fn record(&self, stream: LogStream, line: String) -> LogRecord {
        LogRecord {
            function: self.function.to_string(),
            version: self.version,
            ts_ms: now_ms(),
            stream,
            line,
        }
    }
}

/// Lines of trap detail (backtrace) kept in the log: a stack overflow's
/// backtrace is thousands of identical frames.
const DETAIL_LINES: usize = 24;

pub(crate) fn classify_error(
    e: wasmtime::Error,
    memory_hit: bool,
    timeout: Duration,
    memory_mib: u32,
) -> (Failure, Option<String>) {
    let full = format!("{e:?}");
    let mut detail: String = full.lines().take(DETAIL_LINES).collect::<Vec<_>>().join("\n");
    if full.lines().count() > DETAIL_LINES {
        detail.push_str(&format!("\n    … (backtrace cut; cause: {})", e.root_cause()));
    }
    let detail = Some(detail);
    let failure = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Timeout(timeout),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        _ if memory_hit => Failure::MemoryLimit(memory_mib),
        _ if format!("{e:#}").contains("maximum concurrent") => Failure::Capacity,
        Some(t) => Failure::Trap(t.to_string()),
        None => Failure::Trap(format!("{e:#}")),
    };
    (failure, detail)
}

fn to_hyper_request(req: InvokeRequest, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, String> {
    let host = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str())
        .unwrap_or("localhost");
    let uri = format!("http://{host}{}", req.uri);
    let mut builder = hyper::Request::builder().method(req.method.as_str()).uri(uri);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
