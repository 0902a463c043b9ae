//! A call to another function, `http://NAME.tern.internal/...`: never the
//! network, but the invoke path a client's request takes (the bus, the
//! activator that wakes NAME from zero, its autoscaler). The request
//! carries its hop count; past [`MAX_HOPS`] it is answered 508 without
//! being sent, so a cycle (a → a, a → b → a) ends.

use super::Call;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use http_body::Body as _;
use http_body_util::{BodyExt, Full, StreamBody};
use std::time::{Duration, Instant};
use tern_invoke::upload::{self, Unanswered, UploadLimits};
use tern_invoke::{CallError, headers};
use tern_protocol::outbound::internal_function;
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, MAX_HOPS, STREAM_CHUNK_BYTES};
use tern_task::AbortOnDrop;
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
    // A body that fits one chunk goes whole; a larger one streams, as a
    // client's upload through the gateway does (see `tern_invoke::upload`).
    let (first, rest) = gather(body, call.grant.max_internal_body, streams.is_some(), remaining).await?;
    let mailbox = streams.as_ref().map(|s| s.chunk_mailbox());
    let credits = streams.as_ref().zip(rest.as_ref()).map(|(s, _)| s.credit_mailbox());
    let head = InvokeRequest {
        method: parts.method.as_str().to_string(),
        uri: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        headers: headers::forwarded(&parts.headers),
        hops,
        stream: mailbox.as_ref().map(|m| m.subject.clone()),
        upload: credits.as_ref().map(|m| m.subject.clone()),
        invocation: String::new(),
        trigger: None,
    };
    let sent = first.len() as u64;
    let payload = Frame::new(head, first).encode();

    let remaining_ms = remaining.as_millis() as u64;
    let reply = match (credits, rest) {
        (Some(credits), Some(rest)) => {
            // The callee enforces its own --max-body; the caller's time
            // bounds the whole.
            let limits =
                UploadLimits { max_body: u64::MAX, idle: remaining, ends_by: Instant::now() + remaining };
            let up = AbortOnDrop(tokio::spawn(upload::send(shared.bus.clone(), credits, rest, sent, limits)));
            match upload::call_beside(&shared.invoker, function, remaining_ms, payload, up, remaining).await {
                Ok((reply, up)) => Ok((reply, Some(up))),
                Err(Unanswered::Upload(e)) => {
                    return Ok(plain(
                        502,
                        format!("could not send the request body to function {function}: {e}\n"),
                    ));
                }
                Err(Unanswered::Call(e)) => Err(e),
            }
        }
        _ => shared.invoker.call(function, remaining_ms, payload).await.map(|r| (r, None)),
    };
    let (reply, upload) = match reply {
        Ok(r) => r,
        // What a client of the gateway would be told.
        Err(e) => {
            let status = match &e {
                CallError::Cold(_) => 503,
                CallError::Timeout { .. } => 504,
                CallError::Unreachable { .. } => 502,
            };
            return Ok(plain(status, format!("{e}\n")));
        }
    };
    let f = match Frame::<InvokeResponse>::decode(reply.payload) {
        Ok(f) => f,
        Err(e) => return Ok(plain(502, format!("function {function} sent a malformed reply: {e}\n"))),
    };
    let builder = headers::response_head(f.header.status, &f.header.headers);
    let body = match (streams, mailbox, f.header.stream.clone()) {
        (Some(_), Some(mailbox), Some(credit)) => {
            let frames = tern_invoke::stream::receive(shared.bus.clone(), mailbox, credit, f.body, upload)
                .map_err(|e| Error::InternalError(Some(format!("the response broke off: {e}"))));
            StreamBody::new(frames).boxed_unsync()
        }
        _ => Full::new(f.body).map_err(|never| match never {}).boxed_unsync(),
    };
    builder.body(body).map_err(|_| Error::HttpProtocolError)
}

/// All of a body that fits one chunk (or any body, when the worker cannot
/// stream yet, up to `whole_limit`); else its first chunk and the rest.
async fn gather(
    mut body: WasiBody,
    whole_limit: usize,
    may_stream: bool,
    within: Duration,
) -> Result<(Bytes, Option<WasiBody>), Error> {
    let enough = if may_stream { STREAM_CHUNK_BYTES } else { whole_limit + 1 };
    let mut first = BytesMut::new();
    let gathered = tokio::time::timeout(within, async {
        while first.len() < enough {
            match body.frame().await {
                None => return Ok(true),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        first.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(body.is_end_stream())
    })
    .await;
    let ended = match gathered {
        Err(_) => return Err(Error::ConnectionReadTimeout),
        Ok(r) => r?,
    };
    if first.len() > whole_limit && (ended || !may_stream) {
        return Err(Error::HttpRequestBodySize(Some(whole_limit as u64)));
    }
    Ok((first.freeze(), (!ended).then_some(body)))
}

fn plain(status: u16, text: String) -> http::Response<WasiBody> {
    let body = Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync();
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("a fixed response head is valid")
}
