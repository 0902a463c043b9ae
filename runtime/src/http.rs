//! The HTTP world: `wasi:http/incoming-handler` guests. One invoke request
//! on the bus (a frame: [`InvokeRequest`] header, body) is one call of the
//! guest's handler, in a fresh instance from the function's `ProxyPre` (or
//! a kept one, with `--instance-reuse`); its response (or the failure's
//! error response) is the reply frame.

use crate::failure::{Failed, Failure};
use crate::guest::{Streaming, broken, guest_finished};
use crate::host::Host;
use crate::instance::Settings;
use crate::instance::{Function, Instance, Invoked, World};
use crate::kind::{Context, Handler, Kind};
use crate::limits::Limits;
use crate::load::LoadCounters;
use crate::meter::{Ending, Meter, Metered, Served};
use crate::stream::{self, RequestBody};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tern_bus::{Bus, Message, respond};
use tern_invoke::Streams;
use tern_invoke::outlet::Outlet;
use tern_protocol::FunctionSpec;
use tern_protocol::STREAM_CHUNK_BYTES;
use tern_protocol::trace::{self, TraceParent};
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, LogStream, TriggerKind};
use tern_task::AbortOnDrop;
use wasmtime::Engine;
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

pub struct Http {
    pre: ProxyPre<Host>,
    /// Largest response body, so it fits one bus message.
    body_limit: usize,
}

/// A loaded version of an HTTP function.
pub type HttpFunction = Function<Http>;

impl Http {
    pub(crate) fn new(pre: ProxyPre<Host>, body_limit: usize) -> Self {
        Http { pre, body_limit }
    }
}

/// A request's body as it reaches the worker.
pub enum Upload {
    /// All of it came with the request.
    Whole(Bytes),
    /// The rest is on its way from the caller (see [`crate::stream`]).
    Streamed(RequestBody),
}

/// What an HTTP invocation answers with, after its head.
pub enum Answer {
    /// The whole body.
    Whole(Bytes),
    /// The start of a body the guest is still writing; see [`crate::stream`].
    Streaming(Box<Streaming>),
}

/// After the head, how long to look for the rest of the body before
/// deciding it streams: a guest that writes its whole body at once (most
/// do) is done well within it, and answers in one message. It is looked
/// for between yields, not with a timer (tokio's rounds up to 1-2 ms, all
/// of it added to a stream's first byte).
const STREAM_DECIDE: Duration = Duration::from_micros(300);
/// Longer while the guest is running (not waiting): on a loaded machine a
/// body written at once can take more than [`STREAM_DECIDE`] to come.
const STREAM_DECIDE_RUNNING: Duration = Duration::from_millis(5);

impl World for Http {
    type Input = (InvokeRequest, Upload);
    type Output = (InvokeResponse, Answer);
    type Made = Proxy;

    fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    fn hops((req, _): &Self::Input) -> u32 {
        req.hops
    }

    fn trace((req, _): &Self::Input) -> Option<TraceParent> {
        let (_, v) = req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(trace::HEADER))?;
        TraceParent::parse(v)
    }

    fn still_running((_, answer): &Self::Output) -> bool {
        matches!(answer, Answer::Streaming(_))
    }

    async fn call(
        &self,
        instance: Instance<Proxy>,
        limits: Limits,
        (req, body): Self::Input,
    ) -> Result<Self::Output, Failed> {
        let Instance { mut store, made, back } = instance;
        // Only a caller that takes chunks gets them.
        let may_stream = req.stream.is_some();
        let body = match body {
            Upload::Whole(b) => {
                limits.usage.bytes_in.fetch_add(b.len() as u64, Ordering::Relaxed);
                Full::new(b).map_err(|never| match never {}).boxed_unsync()
            }
            Upload::Streamed(b) => stream::counted(b, &limits),
        };
        let http_req = to_hyper_request(req, body).map_err(Failure::BadRequest)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let setup = (|| -> wasmtime::Result<_> {
            let req = store.data_mut().http().new_incoming_request(Scheme::Http, http_req)?;
            let out = store.data_mut().http().new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = setup.map_err(|e| Failure::BadRequest(format!("{e:#}")))?;

        let pre = self.pre.clone();
        // The guest runs in its own task: it may keep writing the body after
        // it has handed over the response head.
        let running = Arc::new(AtomicBool::new(false));
        let usage = limits.usage.clone();
        let guest = Box::pin(async move {
            let proxy = match made {
                Some(proxy) => proxy,
                None => usage.instantiating(pre.instantiate_async(&mut store)).await?,
            };
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await?;
            Instance::done(back, store, proxy);
            Ok(())
        });
        let metered = Metered { guest, usage: limits.usage.clone(), running: Some(running.clone()) };
        let mut task = AbortOnDrop(tokio::spawn(metered));

        // An upload moves the deadline on as the guest reads it.
        let head = match limits.within(rx).await {
            None => return Err(limits.timed_out()),
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(code))) => return Err(Failure::ErrorResponse(format!("{code:?}")).into()),
            Some(Err(_)) => {
                // The outparam was dropped unset: the guest returned or died.
                return match limits.within(&mut task.0).await {
                    None => Err(limits.timed_out()),
                    Some(Ok(Ok(()))) => Err(Failure::NoResponse.into()),
                    Some(Ok(Err(e))) => Err(limits.classify(e)),
                    Some(Err(join)) => Err(Failure::Trap(format!("guest task ended: {join}")).into()),
                };
            }
        };
        let grace = limits.grace();

        let (parts, mut body) = head.into_parts();
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let status = parts.status.as_u16();
        if may_stream {
            let mut first = BytesMut::new();
            let mut trailers = None;
            let started = std::time::Instant::now();
            let undecided = || {
                // A guest still at work (on another thread, under load) may
                // be about to finish its body; one waiting on something
                // else (a timer, a request) is streaming.
                let waited = started.elapsed();
                waited < STREAM_DECIDE || (running.load(Ordering::Relaxed) && waited < STREAM_DECIDE_RUNNING)
            };
            loop {
                let frame = match body.frame().now_or_never() {
                    None if undecided() => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    None => Err(()),
                    Some(f) => Ok(f),
                };
                match frame {
                    Ok(None) => {
                        guest_finished(&mut task, &limits).await?;
                        limits.usage.bytes_out.fetch_add(first.len() as u64, Ordering::Relaxed);
                        return Ok((
                            InvokeResponse { status, headers, stream: None },
                            Answer::Whole(first.freeze()),
                        ));
                    }
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            first.extend_from_slice(&data);
                            if first.len() < STREAM_CHUNK_BYTES {
                                continue;
                            }
                        }
                        // Only a stream's end carries trailers.
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    },
                    Ok(Some(Err(_))) => return Err(broken(&mut task, &limits, grace).await),
                    Err(_) => {}
                }
                let streaming = Streaming { first: first.freeze(), rest: body, task, limits, trailers };
                return Ok((
                    InvokeResponse { status, headers, stream: None },
                    Answer::Streaming(Box::new(streaming)),
                ));
            }
        }
        let limit = self.body_limit.min(usize::try_from(limits.max_body).unwrap_or(usize::MAX));
        let collected = limits.within(Limited::new(body, limit).collect()).await;
        let body = match collected {
            None => return Err(limits.timed_out()),
            Some(Ok(c)) => c.to_bytes(),
            Some(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(Failure::ResponseTooLarge(limit).into());
            }
            Some(Err(_)) => return Err(broken(&mut task, &limits, limits.grace()).await),
        };
        guest_finished(&mut task, &limits).await?;
        limits.usage.bytes_out.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok((InvokeResponse { status, headers, stream: None }, Answer::Whole(body)))
    }
}

impl HttpFunction {
    /// Serves one invoke message: decode, run counted in `load`, encode the
    /// response or the failure's error response. `node` is this worker,
    /// for the receipt.
    pub(crate) async fn serve(
        &self,
        bus: &Arc<dyn Bus>,
        msg: &Message,
        load: &LoadCounters,
        streams: Option<&Streams>,
        node: &str,
    ) -> Served {
        let frame = match Frame::<InvokeRequest>::decode(msg.payload.clone()) {
            Ok(f) => f,
            Err(e) => {
                let failure = Failure::BadRequest(format!("malformed invoke request: {e}"));
                reply(&**bus, msg, error_response(&failure)).await;
                return Served::default();
            }
        };
        let stream_to = frame.header.stream.clone();
        let trigger = frame.header.trigger.unwrap_or(TriggerKind::Http);
        // The gateway's id, unless the request came without a well-formed
        // one (a call between functions, or a bus peer's own).
        let id = match &frame.header.invocation {
            i if tern_protocol::id::is_invocation_id(i) => i.clone(),
            _ => tern_protocol::id::invocation_id(),
        };
        let body = match (frame.header.upload.clone(), streams) {
            (None, _) => Upload::Whole(frame.body),
            (Some(credit), Some(boxes)) => {
                Upload::Streamed(stream::receive(bus, boxes, credit, frame.body).await)
            }
            (Some(_), None) => {
                let failure =
                    Failure::BadRequest("this worker cannot take a streamed request body yet".into());
                reply(&**bus, msg, error_response(&failure)).await;
                return Served::default();
            }
        };
        let started = load.started();
        let cold = load.first_call();
        let Invoked { result, mut logs, tail, meter } =
            self.invoke((frame.header, body), id, String::new).await;
        let ending =
            |status: u16, error: Option<String>| Ending { trigger, status, error, attempt: None, cold };
        let end = match result {
            Ok((mut head, Answer::Streaming(streaming))) => {
                let (Some(boxes), Some(to), Some(tail)) = (streams, stream_to, tail) else {
                    // Only a request with a stream subject streams, and a
                    // worker without its mailboxes never starts.
                    load.finished(started, true);
                    let failure = Failure::NoResponse;
                    reply(&**bus, msg, error_response(&failure)).await;
                    return self.served(
                        logs,
                        &meter,
                        node,
                        ending(failure.status(), Some(failure.public_message())),
                    );
                };
                let credits = boxes.credit_mailbox();
                head.stream = Some(credits.subject.clone());
                let status = head.status;
                meter.usage.bytes_out.fetch_add(streaming.first.len() as u64, Ordering::Relaxed);
                reply(&**bus, msg, Frame::new(head, streaming.first.clone()).encode()).await;
                let out = Outlet::new(bus.clone(), to, credits, streaming.limits.ends_by);
                let outcome = stream::send(out, *streaming).await;
                load.finished(started, outcome.is_err());
                let log = self.log(&meter.id);
                logs = tail.collect(&log);
                match outcome {
                    Ok(()) => ending(status, None),
                    Err(line) => {
                        logs.push(log.record(LogStream::Tern, line.clone()));
                        // The head went out already: the client saw it, and
                        // a body that ended unfinished.
                        ending(status, Some(line))
                    }
                }
            }
            Ok((head, Answer::Whole(body))) => {
                load.finished(started, false);
                let status = head.status;
                reply(&**bus, msg, Frame::new(head, body).encode()).await;
                ending(status, None)
            }
            Err(failure) => {
                load.finished(started, true);
                reply(&**bus, msg, error_response(&failure)).await;
                ending(failure.status(), Some(failure.public_message()))
            }
        };
        self.served(logs, &meter, node, end)
    }

    fn served(&self, logs: Vec<tern_protocol::LogRecord>, meter: &Meter, node: &str, end: Ending) -> Served {
        Served { logs, receipts: vec![meter.receipt(&self.name, self.version, node, end)] }
    }
}

/// Answers `msg`; a reply that cannot be sent is logged (its caller times
/// out or gets no responders).
pub(crate) async fn reply(bus: &dyn Bus, msg: &Message, payload: Bytes) {
    if let Err(e) = respond(bus, msg, payload).await {
        tracing::warn!("could not send a reply on {}: {e}", msg.subject);
    }
}

fn error_response(failure: &Failure) -> Bytes {
    let head = InvokeResponse {
        status: failure.status(),
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        stream: None,
    };
    Frame::new(head, format!("{}\n", failure.public_message())).encode()
}

/// The request the guest gets. Its URI is built from parts, each parsed on
/// its own: a Host header can never change the path (the gateway refuses a
/// bad one; this is the second line).
fn to_hyper_request(req: InvokeRequest, body: RequestBody) -> Result<hyper::Request<RequestBody>, String> {
    let host = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str())
        .unwrap_or("localhost");
    if !tern_protocol::host::valid(host) {
        return Err(format!("the Host header {host:?} is not a valid host[:port]"));
    }
    let authority = http::uri::Authority::try_from(host).map_err(|e| format!("Host {host:?}: {e}"))?;
    let path = http::uri::PathAndQuery::try_from(req.uri.as_str())
        .map_err(|e| format!("path {:?}: {e}", req.uri))?;
    if !path.path().starts_with('/') {
        return Err(format!("path {:?} does not start with '/'", req.uri));
    }
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| e.to_string())?;
    let mut builder = hyper::Request::builder().method(req.method.as_str()).uri(uri);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.body(body).map_err(|e| e.to_string())
}

/// HTTP functions: components exporting `wasi:http/incoming-handler`.
pub(crate) struct HttpKind;

impl Kind for HttpKind {
    fn world(&self) -> tern_protocol::World {
        tern_protocol::World::Http
    }

    fn export(&self) -> &'static str {
        "wasi:http/incoming-handler"
    }

    fn noun(&self) -> &'static str {
        "an HTTP function"
    }

    fn check_spec(&self, spec: &FunctionSpec) -> Result<(), String> {
        if !spec.on_event.is_empty() || spec.schedule.is_some() {
            return Err(
                "this component is an HTTP function (it exports wasi:http/incoming-handler); event and \
                 cron triggers need an event function (tern:function/event-handler, see sdk/wit)"
                    .into(),
            );
        }
        Ok(())
    }

    fn check_exports(&self, pre: InstancePre<Host>) -> Result<(), String> {
        ProxyPre::new(pre).map(drop).map_err(|e| format!("{e:#}"))
    }

    fn load(
        &self,
        pre: InstancePre<Host>,
        settings: Settings,
        body_limit: usize,
    ) -> Result<Arc<dyn Handler>, String> {
        let pre = ProxyPre::new(pre).map_err(|e| format!("{e:#}"))?;
        Ok(Arc::new(HttpFunction::new(settings, Http::new(pre, body_limit))))
    }
}

#[async_trait::async_trait]
impl Handler for HttpFunction {
    fn name(&self) -> &str {
        &self.name
    }

    async fn serve(&self, on: Context<'_>, msg: &Message, load: &LoadCounters) -> Served {
        HttpFunction::serve(self, on.bus, msg, load, on.streams, on.node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, uri: &str) -> InvokeRequest {
        InvokeRequest {
            method: "GET".into(),
            uri: uri.into(),
            headers: vec![("host".into(), host.into())],
            hops: 0,
            stream: None,
            upload: None,
            invocation: String::new(),
            trigger: None,
        }
    }

    fn empty() -> RequestBody {
        Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
    }

    #[test]
    fn the_host_never_changes_the_path() {
        let r = to_hyper_request(req("example.com:8080", "/api/greet/ada?x=1"), empty()).unwrap();
        assert_eq!(r.uri().path(), "/api/greet/ada");
        assert_eq!(r.uri().authority().unwrap().as_str(), "example.com:8080");
        assert!(to_hyper_request(req("x/api/info/INJECTED?", "/api/greet/ada"), empty()).is_err());
        assert!(to_hyper_request(req("user@x", "/"), empty()).is_err());
        assert!(to_hyper_request(req("x", "no-slash"), empty()).is_err());
    }
}
