//! The HTTP world: `wasi:http/incoming-handler` guests. One invoke request
//! on the bus (a frame: [`InvokeRequest`] header, body) is one fresh
//! instance from the function's `ProxyPre`; its response (or the failure's
//! error response) is the reply frame.

use crate::host::Host;
use crate::instance::{AbortOnDrop, Failed, Failure, Function, Invoked, Limits, World};
use crate::load::LoadCounters;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, LogRecord};
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

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

impl World for Http {
    type Input = (InvokeRequest, Bytes);
    type Output = (InvokeResponse, Bytes);

    fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    async fn call(
        &self,
        mut store: Store<Host>,
        limits: Limits,
        (req, body): Self::Input,
    ) -> Result<Self::Output, Failed> {
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
        let mut task = AbortOnDrop(tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        }));

        let grace = limits.grace();
        let head = match tokio::time::timeout_at(grace, rx).await {
            Err(_) => return Err(limits.timed_out()),
            Ok(Ok(Ok(resp))) => resp,
            Ok(Ok(Err(code))) => return Err(Failure::ErrorResponse(format!("{code:?}")).into()),
            Ok(Err(_)) => {
                // The outparam was dropped unset: the guest returned or died.
                return match tokio::time::timeout_at(grace, &mut task.0).await {
                    Err(_) => Err(limits.timed_out()),
                    Ok(Ok(Ok(()))) => Err(Failure::NoResponse.into()),
                    Ok(Ok(Err(e))) => Err(limits.classify(e)),
                    Ok(Err(join)) => Err(Failure::Trap(format!("guest task ended: {join}")).into()),
                };
            }
        };

        let (parts, body) = head.into_parts();
        let collected = tokio::time::timeout_at(grace, Limited::new(body, self.body_limit).collect()).await;
        let body = match collected {
            Err(_) => return Err(limits.timed_out()),
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(Failure::ResponseTooLarge(self.body_limit).into());
            }
            Ok(Err(_)) => {
                // The body broke off: the guest trapped mid-stream.
                return match tokio::time::timeout_at(grace, &mut task.0).await {
                    Ok(Ok(Err(e))) => Err(limits.classify(e)),
                    Err(_) => Err(limits.timed_out()),
                    _ => Err(Failure::Trap("response body ended with an error".into()).into()),
                };
            }
        };
        // The body is complete; a trap after this point does not change
        // what the client gets, but it belongs in the debug log.
        if let Ok(Ok(Err(e))) = tokio::time::timeout_at(grace, &mut task.0).await {
            tracing::debug!("guest failed after its response was complete: {e:#}");
        }

        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Ok((InvokeResponse { status: parts.status.as_u16(), headers }, body))
    }
}

impl HttpFunction {
    /// Serves one invoke message: decode, run counted in `load`, encode the
    /// response or the failure's error response.
    pub(crate) async fn serve(&self, payload: Bytes, load: &LoadCounters) -> (Bytes, Vec<LogRecord>) {
        let frame = match Frame::<InvokeRequest>::decode(payload) {
            Ok(f) => f,
            Err(e) => {
                let failure = Failure::BadRequest(format!("malformed invoke request: {e}"));
                return (error_response(&failure), Vec::new());
            }
        };
        let started = load.started();
        let Invoked { result, logs } = self.invoke((frame.header, frame.body), "").await;
        load.finished(started, result.is_err());
        let reply = match result {
            Ok((head, body)) => Frame::new(head, body).encode(),
            Err(failure) => error_response(&failure),
        };
        (reply, logs)
    }
}

fn error_response(failure: &Failure) -> Bytes {
    let head = InvokeResponse {
        status: failure.status(),
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
    };
    Frame::new(head, format!("{}\n", failure.public_message())).encode()
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
