//! A call to another function, `http://NAME.tern.internal/...`: never the
//! network, but the invoke path a client's request takes (the bus, the
//! activator that wakes NAME from zero, its autoscaler). The request
//! carries its hop count; past [`MAX_HOPS`] it is answered 508 without
//! being sent, so a cycle (a → a, a → b → a) ends. The call itself is the
//! one invoke client's ([`tern_invoke::client`]), as for a client's
//! request through the gateway.

use super::Call;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Instant;
use tern_invoke::client::{self, Failure};
use tern_invoke::gather::{GatherError, GatherLimits};
use tern_invoke::headers;
use tern_protocol::MAX_HOPS;
use tern_protocol::outbound::internal_function;
use wasmtime_wasi_http::{Error, WasiBody};

pub(super) async fn call(
    call: &Call,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error> {
    let Some(function) = internal_function(&call.upstream.host) else {
        call.notes.push(format!(
            "outbound request to {} failed: {} is not a function's name",
            call.upstream.authority(),
            call.upstream.host
        ));
        return Err(Error::DestinationNotFound);
    };
    let hops = call.hops + 1;
    if hops > MAX_HOPS {
        call.notes.push(format!(
            "call to function {function} answered 508: calls between functions went {MAX_HOPS} deep (a cycle?)"
        ));
        return Ok(plain(
            508,
            format!(
                "loop detected: calls between functions went {MAX_HOPS} deep; the last was to {function}\n"
            ),
        ));
    }

    let (parts, body) = request.into_parts();
    let body = super::count_request(body, call.grant.net.clone());
    let shared = &call.grant.shared;
    let streams = shared.streams.get().cloned();
    let remaining = call.remaining();
    let request = client::Request {
        function,
        method: parts.method.as_str(),
        uri: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        headers: headers::forwarded(&parts.headers),
        hops,
        invocation: String::new(),
        trigger: None,
    };
    // The callee enforces its own --max-body; the caller's time bounds
    // the whole.
    let limits = client::Limits {
        wait: remaining,
        gather: GatherLimits {
            whole_limit: call.grant.max_internal_body,
            may_stream: true,
            idle: remaining,
            total: remaining,
        },
        max_body: u64::MAX,
        idle: remaining,
        ends_by: Instant::now() + remaining,
        then: remaining,
    };
    match client::call(&shared.invoker, streams.as_deref(), request, body, limits).await {
        Ok(response) => Ok(response.map(|b| b.map_err(|e| Error::InternalError(Some(e))).boxed_unsync())),
        // The guest's own body failed it: an error of its request.
        Err(Failure::Body(GatherError::TooLarge(limit))) => {
            Err(Error::HttpRequestBodySize(Some(limit as u64)))
        }
        Err(Failure::Body(GatherError::TimedOut { .. })) => Err(Error::ConnectionReadTimeout),
        Err(Failure::Body(GatherError::Broken(e))) => Err(Error::InternalError(Some(e))),
        // What a client of the gateway would be told.
        Err(e) => Ok(plain(e.status(), format!("call to function {function}: {e}\n"))),
    }
}

fn plain(status: u16, text: String) -> http::Response<WasiBody> {
    let body = Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync();
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("a fixed response head is valid")
}
