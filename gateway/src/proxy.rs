//! An HTTP request to a function and back, through the one invoke client
//! ([`tern_invoke::client`], shared with calls between functions): what
//! is the gateway's own is the trace context, the invocation id, the early
//! refusal of a body declared too large, and the answer to a failure.

use crate::body::{BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT, Body, BoxError, text};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::{Duration, Instant};
use tern_invoke::gather::GatherLimits;
use tern_invoke::upload::UploadError;
use tern_invoke::{Invoker, Streams, client, headers};
use tern_protocol::TriggerKind;
use tern_protocol::trace::{self, TraceParent};

/// The response header that names the invocation (its receipt and log
/// lines carry the same id).
pub const INVOCATION_ID: &str = "tern-invocation-id";

/// Where and how to send one request.
pub struct Target<'a> {
    pub function: &'a str,
    pub timeout_ms: u64,
    /// Path and query the function sees.
    pub uri: String,
    /// Largest body that travels whole, in one message.
    pub body_limit: usize,
    /// The function's `--max-body` and `--max-duration`.
    pub max_body: u64,
    pub max_duration_ms: u64,
    /// A route's request, or `tern invoke`.
    pub trigger: TriggerKind,
}

/// Sends `req` to a replica of the target function and relays its answer.
/// With `streams`, bodies stream both ways; without, they travel whole.
/// Every answer, an error of the gateway's own included, names the
/// invocation in [`INVOCATION_ID`].
pub async fn forward(
    invoker: &Invoker,
    streams: Option<&Streams>,
    target: Target<'_>,
    req: Request<Incoming>,
) -> Response<Body> {
    let id = tern_protocol::id::invocation_id();
    let value = HeaderValue::from_str(&id).expect("hex is a valid header value");
    let mut response = send(invoker, streams, target, req, id).await;
    response.headers_mut().insert(INVOCATION_ID, value);
    response
}

/// The request's trace context for the function: the client's
/// `traceparent`, if valid, continued by a new span; else a new trace.
fn traced(headers: &http::HeaderMap) -> Vec<(String, String)> {
    let parent = headers.get(trace::HEADER).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let span = parent.map_or_else(TraceParent::start, |p| p.child());
    let mut out = headers::forwarded(headers);
    out.retain(|(k, _)| !k.eq_ignore_ascii_case(trace::HEADER));
    out.push((trace::HEADER.into(), span.header_value()));
    out
}

async fn send(
    invoker: &Invoker,
    streams: Option<&Streams>,
    target: Target<'_>,
    req: Request<Incoming>,
    invocation: String,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let declared =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > target.max_body) {
        // Refused before it is sent on; what the client is still sending
        // is read and dropped (within bounds) so it reads the answer.
        tern_invoke::upload::drain(body).await;
        return text(StatusCode::PAYLOAD_TOO_LARGE, UploadError::TooLarge(target.max_body).to_string());
    }
    let request = client::Request {
        function: target.function,
        method: parts.method.as_str(),
        uri: target.uri,
        headers: traced(&parts.headers),
        hops: 0,
        invocation,
        trigger: Some(target.trigger),
    };
    let limits = client::Limits {
        wait: Duration::from_millis(target.timeout_ms),
        gather: GatherLimits {
            whole_limit: target.body_limit.min(usize::try_from(target.max_body).unwrap_or(usize::MAX)),
            may_stream: true,
            idle: BODY_IDLE_TIMEOUT,
            total: BODY_TOTAL_TIMEOUT,
        },
        max_body: target.max_body,
        idle: BODY_IDLE_TIMEOUT,
        ends_by: Instant::now() + Duration::from_millis(target.max_duration_ms),
        then: Duration::from_millis(target.timeout_ms) + Duration::from_secs(5),
    };
    match client::call(invoker, streams, request, body, limits).await {
        Ok(response) => response.map(|b| {
            b.map_err(|e| {
                tracing::info!("a streamed response broke off: {e}");
                BoxError::from(e)
            })
            .boxed_unsync()
        }),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut r = text(status, e.to_string());
            if e.retry_after() {
                r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}
