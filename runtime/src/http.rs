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

    fn hops((req, _): &Self::Input) -> u32 {
        req.hops
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
        let Invoked { result, logs } = self.invoke((frame.header, frame.body), String::new).await;
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

/// The request the guest gets. Its URI is built from parts, each parsed on
/// its own: a Host header can never change the path (the gateway refuses a
/// bad one; this is the second line).
fn to_hyper_request(req: InvokeRequest, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, String> {
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
    builder.body(Full::new(body)).map_err(|e| e.to_string())
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
        }
    }

    #[test]
    fn the_host_never_changes_the_path() {
        let r = to_hyper_request(req("example.com:8080", "/api/greet/ada?x=1"), Bytes::new()).unwrap();
        assert_eq!(r.uri().path(), "/api/greet/ada");
        assert_eq!(r.uri().authority().unwrap().as_str(), "example.com:8080");
        assert!(to_hyper_request(req("x/api/info/INJECTED?", "/api/greet/ada"), Bytes::new()).is_err());
        assert!(to_hyper_request(req("user@x", "/"), Bytes::new()).is_err());
        assert!(to_hyper_request(req("x", "no-slash"), Bytes::new()).is_err());
    }
}
