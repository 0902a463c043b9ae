//! The one client side of an HTTP invoke, for a client's request through
//! the gateway and for a call between functions alike: the request head
//! and the start of its body go as one invoke frame through the
//! [`Invoker`] (which waits in the activator for a function at zero); a
//! body too large for one message streams beside the call
//! ([`crate::upload`]); the reply frame becomes the response, and a
//! response the guest is still writing streams after it
//! ([`crate::stream`]).

use crate::gather::{GatherError, GatherLimits, Gathered, gather};
use crate::headers;
use crate::invoker::{CallError, Invoker};
use crate::streams::Streams;
use crate::upload::{self, Unanswered, UploadError, UploadLimits};
use bytes::Bytes;
use futures::TryStreamExt;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use std::time::{Duration, Instant};
use tern_protocol::{Frame, InvokeRequest, InvokeResponse, TriggerKind};
use tern_task::AbortOnDrop;

/// A response body from a function: whole, or streamed, in which case it
/// may break off (the guest trapped or timed out, its worker went silent)
/// and ends in that error, never as if complete.
pub type ReplyBody = UnsyncBoxBody<Bytes, String>;

/// The request as the function should see it.
pub struct Request<'a> {
    pub function: &'a str,
    pub method: &'a str,
    /// Path and query.
    pub uri: String,
    /// End-to-end headers (see [`headers::forwarded`]).
    pub headers: Vec<(String, String)>,
    /// Calls between functions it has come through.
    pub hops: u32,
    /// The invocation's id (empty: the worker makes one).
    pub invocation: String,
    pub trigger: Option<TriggerKind>,
}

/// What the call may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a call whose body went whole may wait for its answer, a
    /// wake from zero included (one whose body streams waits until
    /// `ends_by`).
    pub wait: Duration,
    /// Reading the start of the body, before the call goes.
    pub gather: GatherLimits,
    /// The rest of the body: cut past `max_body`, or after `idle` with
    /// nothing, or at `ends_by`; the answer is due within `then` of the
    /// body's end.
    pub max_body: u64,
    pub idle: Duration,
    pub ends_by: Instant,
    pub then: Duration,
}

/// Why a call has no response from the function.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Body(#[from] GatherError),
    /// The upload failed before the answer came; it is the answer,
    /// whatever the guest makes of its broken body.
    #[error(transparent)]
    Upload(UploadError),
    #[error(transparent)]
    Call(CallError),
    #[error("function {0} sent a malformed reply: {1}")]
    Malformed(String, String),
}

impl Failure {
    /// What the caller is told: one mapping for every caller.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Body(GatherError::TooLarge(_)) => 413,
            Failure::Body(GatherError::TimedOut { .. }) => 408,
            Failure::Body(GatherError::Broken(_)) => 400,
            Failure::Upload(e) => e.status(),
            Failure::Call(e) => e.status().as_u16(),
            Failure::Malformed(..) => 502,
        }
    }

    /// Whether trying again soon may work (a function that could not
    /// start in time): the answer says `Retry-After: 1`.
    pub fn retry_after(&self) -> bool {
        matches!(self, Failure::Call(CallError::Cold(_)))
    }
}

/// Sends `req` with `body` to a replica of its function and returns the
/// function's response. Without `streams`, both bodies travel whole.
pub async fn call<B>(
    invoker: &Invoker,
    streams: Option<&Streams>,
    req: Request<'_>,
    body: B,
    limits: Limits,
) -> Result<http::Response<ReplyBody>, Failure>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let gather_limits = GatherLimits { may_stream: streams.is_some(), ..limits.gather };
    let (first, rest) = match gather(body, gather_limits).await? {
        Gathered::Whole(b) => (b, None),
        Gathered::Partial { first, rest } => (first, Some(rest)),
    };
    let mailbox = streams.map(Streams::chunk_mailbox);
    let credits = streams.zip(rest.as_ref()).map(|(s, _)| s.credit_mailbox());
    let head = InvokeRequest {
        method: req.method.to_string(),
        uri: req.uri,
        headers: req.headers,
        hops: req.hops,
        stream: mailbox.as_ref().map(|m| m.subject.clone()),
        upload: credits.as_ref().map(|m| m.subject.clone()),
        invocation: req.invocation,
        trigger: req.trigger,
    };
    let sent = first.len() as u64;
    let payload = Frame::new(head, first).encode();
    let function = req.function;

    let (reply, upload) = match (streams, credits, rest) {
        (Some(streams), Some(credits), Some(rest)) => {
            // The head may come while the upload goes on (a guest that
            // echoes), so the upload runs beside the call, and lives on
            // with a streamed response.
            let up_limits =
                UploadLimits { max_body: limits.max_body, idle: limits.idle, ends_by: limits.ends_by };
            let up =
                AbortOnDrop(tokio::spawn(upload::send(streams.bus.clone(), credits, rest, sent, up_limits)));
            // The guest may read its body for as long as the whole call
            // may take, so the answer is waited for until then, not `wait`.
            let wait_ms = limits.ends_by.saturating_duration_since(Instant::now()).as_millis() as u64;
            match upload::call_beside(invoker, function, wait_ms, payload, up, limits.then).await {
                Ok((reply, up)) => (reply, Some(up)),
                Err(Unanswered::Upload(e)) => return Err(Failure::Upload(e)),
                Err(Unanswered::Call(e)) => return Err(Failure::Call(e)),
            }
        }
        _ => {
            let wait_ms = limits.wait.as_millis() as u64;
            (invoker.call(function, wait_ms, payload).await.map_err(Failure::Call)?, None)
        }
    };
    let f = Frame::<InvokeResponse>::decode(reply.payload)
        .map_err(|e| Failure::Malformed(function.to_string(), e.to_string()))?;
    let body = match (streams, mailbox, f.header.stream.clone()) {
        (Some(streams), Some(mailbox), Some(credit)) => {
            let frames = crate::stream::receive(streams.bus.clone(), mailbox, credit, f.body, upload)
                .map_err(|e| format!("the response broke off: {e}"));
            StreamBody::new(frames).boxed_unsync()
        }
        _ => Full::new(f.body).map_err(|never| match never {}).boxed_unsync(),
    };
    headers::response_head(f.header.status, &f.header.headers)
        .body(body)
        .map_err(|e| Failure::Malformed(function.to_string(), format!("an invalid response head: {e}")))
}
