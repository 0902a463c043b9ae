//! A request body that does not fit one message streams to the worker that
//! took the request, as the client sends it (see [`tern_invoke::stream`]):
//! the invoke frame carries what had arrived, and a credit subject; the
//! worker answers there with the mailbox for the rest, and its credits
//! pace the client: while the guest does not read, this does not read
//! either, and the client's TCP window closes.
//!
//! The function is called once the body's first chunk is here (see
//! [`gather`]). Limits hold as bytes flow: past the function's `--max-body` the upload
//! is cut (413 if the function has not answered yet); a client that sends
//! nothing for [`BODY_IDLE_TIMEOUT`] is cut (408); nothing takes longer
//! than the function's `--max-duration`.

use crate::body::{BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT, BodyError};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use tern_bus::Bus;
use tern_invoke::mailbox::Mailbox;
pub use tern_invoke::upload::UploadError;
use tern_invoke::upload::UploadLimits;
use tern_protocol::STREAM_CHUNK_BYTES;

/// A request body as it stands when the request is sent on.
pub enum Gathered {
    /// All of it.
    Whole(Bytes),
    /// What had arrived, and the rest still coming.
    Partial { first: Bytes, rest: Incoming },
}

/// Reads a body small enough for one message whole; of a larger one (or
/// one of unknown size), its first chunk, then what else is already here.
/// Only then is the function called: a client that trickles its body
/// holds no instance until it has sent [`STREAM_CHUNK_BYTES`], within the
/// same idle and total limits as a whole body. `may_stream` false (no
/// streams on this path) reads all of it. A body past `whole_limit` (the
/// function's `--max-body`, or what one message holds) that ends here is
/// refused.
pub async fn gather(body: Incoming, may_stream: bool, whole_limit: usize) -> Result<Gathered, BodyError> {
    use hyper::body::Body as _;
    let what = "request body";
    let exact = body.size_hint().exact();
    if !may_stream || exact.is_some_and(|n| n <= STREAM_CHUNK_BYTES as u64) {
        return crate::body::read(body, whole_limit, what).await.map(Gathered::Whole);
    }
    let (idle, total) = (BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT);
    let deadline = tokio::time::Instant::now() + total;
    let mut rest = body;
    let mut first = BytesMut::new();
    let mut ended = false;
    while first.len() < STREAM_CHUNK_BYTES && !ended {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, rest.frame()).await {
            Err(_) => return Err(BodyError::TimedOut { what, idle, total }),
            Ok(None) => ended = true,
            Ok(Some(Err(e))) => return Err(BodyError::Broken { what, reason: e.to_string() }),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    first.extend_from_slice(&d);
                }
            }
        }
    }
    // What else has arrived goes with it.
    while !ended && first.len() < STREAM_CHUNK_BYTES * 2 {
        match rest.frame().now_or_never() {
            Some(None) => ended = true,
            Some(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    first.extend_from_slice(&d);
                }
            }
            Some(Some(Err(e))) => return Err(BodyError::Broken { what, reason: e.to_string() }),
            None => break,
        }
    }
    if first.len() > whole_limit {
        return Err(BodyError::TooLarge { what, limit: whole_limit });
    }
    if ended || rest.is_end_stream() {
        return Ok(Gathered::Whole(first.freeze()));
    }
    Ok(Gathered::Partial { first: first.freeze(), rest })
}

/// What the client is told when its upload ends early, before the
/// function answered.
pub fn status(e: &UploadError) -> StatusCode {
    match e {
        UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        UploadError::Idle(_) | UploadError::TooLong => StatusCode::REQUEST_TIMEOUT,
        UploadError::Broken(_) => StatusCode::BAD_REQUEST,
        UploadError::WorkerGone => StatusCode::BAD_GATEWAY,
    }
}

/// Streams the rest of a client's body (see [`tern_invoke::upload`]); a
/// client that sends nothing for [`BODY_IDLE_TIMEOUT`] is cut.
pub async fn send(
    bus: Arc<dyn Bus>,
    credits: Mailbox,
    rest: Incoming,
    sent: u64,
    max_body: u64,
    ends_by: Instant,
) -> Result<(), UploadError> {
    let limits = UploadLimits { max_body, idle: BODY_IDLE_TIMEOUT, ends_by };
    tern_invoke::upload::send(bus, credits, rest, sent, limits).await
}
