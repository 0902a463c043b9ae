//! An HTTP request to a function and back: the request becomes an invoke
//! frame ([`InvokeRequest`] header, body), goes through the [`Invoker`],
//! and the reply frame becomes the response. Either body may stream: an
//! upload that does not fit one message follows the request as the client
//! sends it ([`crate::upload`]), and a response the guest is still writing
//! follows the reply ([`crate::stream`]).

use crate::body::{self, Body, text};
use crate::stream::Streams;
use crate::upload::{self, Gathered};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::time::{Duration, Instant};
use tern_invoke::upload::Unanswered;
use tern_invoke::{CallError, Invoker, headers};
use tern_protocol::trace::{self, TraceParent};
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, TriggerKind};
use tern_task::AbortOnDrop;

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
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            upload::UploadError::TooLarge(target.max_body).to_string(),
        );
    }
    let whole_limit = target.body_limit.min(usize::try_from(target.max_body).unwrap_or(usize::MAX));
    let (first, rest) = match upload::gather(body, streams.is_some(), whole_limit).await {
        Ok(Gathered::Whole(b)) => (b, None),
        Ok(Gathered::Partial { first, rest }) => (first, Some(rest)),
        Err(e) => return text(e.status(), e.to_string()),
    };
    let mailbox = streams.map(Streams::mailbox);
    let credits = streams.zip(rest.as_ref()).map(|(s, _)| s.credit_mailbox());
    let head = InvokeRequest {
        method: parts.method.as_str().to_string(),
        uri: target.uri,
        headers: traced(&parts.headers),
        hops: 0,
        stream: mailbox.as_ref().map(|m| m.subject.clone()),
        upload: credits.as_ref().map(|m| m.subject.clone()),
        invocation,
        trigger: Some(target.trigger),
    };
    let sent = first.len() as u64;
    let payload = Frame::new(head, first).encode();
    let function = target.function;

    let reply = match (streams, credits, rest) {
        (Some(streams), Some(credits), Some(rest)) => {
            // The head may come while the upload goes on (a guest that
            // echoes), so the upload runs beside the call, and lives on
            // with a streamed response.
            let ends_by = Instant::now() + Duration::from_millis(target.max_duration_ms);
            let up = AbortOnDrop(tokio::spawn(upload::send(
                streams.bus.clone(),
                credits,
                rest,
                sent,
                target.max_body,
                ends_by,
            )));
            let then = Duration::from_millis(target.timeout_ms) + Duration::from_secs(5);
            let max_ms = target.max_duration_ms;
            match tern_invoke::upload::call_beside(invoker, function, max_ms, payload, up, then).await {
                Ok((reply, up)) => Ok((reply, Some(up))),
                Err(Unanswered::Upload(e)) => return text(upload::status(&e), e.to_string()),
                Err(Unanswered::Call(e)) => Err(e),
            }
        }
        _ => invoker.call(function, target.timeout_ms, payload).await.map(|r| (r, None)),
    };
    let (reply, upload) = match reply {
        Ok(r) => r,
        Err(e) => {
            let mut r = text(e.status(), e.to_string());
            if matches!(e, CallError::Cold(_)) {
                r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return r;
        }
    };
    let f = match Frame::<InvokeResponse>::decode(reply.payload) {
        Ok(f) => f,
        Err(e) => {
            return text(StatusCode::BAD_GATEWAY, format!("function {function} sent a malformed reply: {e}"));
        }
    };
    let body = match (streams, mailbox, f.header.stream.clone()) {
        (Some(streams), Some(mailbox), Some(credit)) => streams.body(mailbox, credit, f.body, upload),
        _ => body::whole(f.body),
    };
    headers::response_head(f.header.status, &f.header.headers).body(body).unwrap_or_else(|e| {
        text(StatusCode::BAD_GATEWAY, format!("function sent an invalid response head: {e}"))
    })
}
