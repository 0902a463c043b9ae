//! An HTTP request to a function and back: the request becomes an invoke
//! frame ([`InvokeRequest`] header, body), goes through the [`Invoker`],
//! and the reply frame becomes the response.

use crate::body::{self, Body, text};
use crate::stream::Streams;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};

use hyper::body::Incoming;
use tern_invoke::{CallError, Invoker, headers};
use tern_protocol::{Frame, InvokeRequest, InvokeResponse};

/// Where and how to send one request.
pub struct Target<'a> {
    pub function: &'a str,
    pub timeout_ms: u64,
    /// Path and query the function sees.
    pub uri: String,
    pub body_limit: usize,
}

/// Sends `req` to a replica of the target function and relays its answer.
/// With `streams`, a response body the guest is still writing when its
/// head is ready streams to the client; without, it comes whole.
pub async fn forward(
    invoker: &Invoker,
    streams: Option<&Streams>,
    target: Target<'_>,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body::read(body, target.body_limit, "request body").await {
        Ok(b) => b,
        Err(e) => return text(e.status(), e.to_string()),
    };
    let headers = headers::forwarded(&parts.headers);
    let mailbox = streams.map(Streams::mailbox);
    let head = InvokeRequest {
        method: parts.method.as_str().to_string(),
        uri: target.uri,
        headers,
        hops: 0,
        stream: mailbox.as_ref().map(|m| m.subject.clone()),
    };
    let payload = Frame::new(head, body).encode();
    let function = target.function;
    match invoker.call(function, target.timeout_ms, payload).await {
        Ok(reply) => match Frame::<InvokeResponse>::decode(reply.payload) {
            Ok(f) => match (streams, mailbox, f.header.stream.clone()) {
                (Some(streams), Some(mailbox), Some(credit)) => {
                    let body = streams.body(mailbox, credit, f.body);
                    headers::response_head(f.header.status, &f.header.headers).body(body).unwrap_or_else(
                        |e| {
                            text(
                                StatusCode::BAD_GATEWAY,
                                format!("function sent an invalid response head: {e}"),
                            )
                        },
                    )
                }
                _ => to_response(f.header, f.body),
            },
            Err(e) => {
                text(StatusCode::BAD_GATEWAY, format!("function {function} sent a malformed reply: {e}"))
            }
        },
        Err(e) => {
            let mut r = text(e.status(), e.to_string());
            if matches!(e, CallError::Cold(_)) {
                r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    }
}

fn to_response(head: InvokeResponse, body: Bytes) -> Response<Body> {
    headers::response_head(head.status, &head.headers).body(body::whole(body)).unwrap_or_else(|e| {
        text(StatusCode::BAD_GATEWAY, format!("function sent an invalid response head: {e}"))
    })
}
