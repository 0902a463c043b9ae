//! A call to another function, `http://NAME.tern.internal/...`: never the
//! network, but the invoke path a client's request takes (the bus, the
//! activator that wakes NAME from zero, its autoscaler). The request
//! carries its hop count; past [`MAX_HOPS`] it is answered 508 without
//! being sent, so a cycle (a → a, a → b → a) ends.

use super::Call;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tern_invoke::{CallError, headers};
use tern_protocol::outbound::internal_function;
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, MAX_HOPS};
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
    let limit = call.grant.max_internal_body;
    let body = super::count_request(body, call.grant.net.clone());
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(match e.downcast::<Error>() {
                Ok(e) => *e,
                Err(_) => Error::HttpRequestBodySize(Some(limit as u64)),
            });
        }
    };
    let headers = headers::forwarded(&parts.headers);
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let head = InvokeRequest {
        method: parts.method.as_str().to_string(),
        uri,
        headers,
        hops,
        stream: None,
        upload: None,
    };
    let payload = Frame::new(head, body).encode();

    let remaining_ms = call.remaining().as_millis() as u64;
    match call.grant.shared.invoker.call(function, remaining_ms, payload).await {
        Ok(reply) => match Frame::<InvokeResponse>::decode(reply.payload) {
            Ok(f) => response(f.header, f.body),
            Err(e) => Ok(plain(502, format!("function {function} sent a malformed reply: {e}\n"))),
        },
        // What a client of the gateway would be told.
        Err(e) => {
            let status = match &e {
                CallError::Cold(_) => 503,
                CallError::Timeout { .. } => 504,
                CallError::Unreachable { .. } => 502,
            };
            Ok(plain(status, format!("{e}\n")))
        }
    }
}

fn response(head: InvokeResponse, body: Bytes) -> Result<http::Response<WasiBody>, Error> {
    let builder = headers::response_head(head.status, &head.headers);
    let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
    builder.body(body).map_err(|_| Error::HttpProtocolError)
}

fn plain(status: u16, text: String) -> http::Response<WasiBody> {
    let body = Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync();
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("a fixed response head is valid")
}
