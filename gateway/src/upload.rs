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
use tern_invoke::stream::{Outlet, Stopped, keepalive_every};
use tern_protocol::{STREAM_CHUNK_BYTES, StreamCredit};

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

/// Why an upload ended before the client's body did.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the request body is larger than the function's {0} byte limit (--max-body)")]
    TooLarge(u64),
    #[error("the client sent nothing for {0:?} in the middle of the request body")]
    Idle(std::time::Duration),
    #[error("the request body broke off: {0}")]
    Broken(String),
    #[error("the request body took longer than the function's --max-duration")]
    TooLong,
    #[error("the worker running the function went away during the upload")]
    WorkerGone,
}

impl UploadError {
    pub fn status(&self) -> StatusCode {
        match self {
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Idle(_) | UploadError::TooLong => StatusCode::REQUEST_TIMEOUT,
            UploadError::Broken(_) => StatusCode::BAD_REQUEST,
            UploadError::WorkerGone => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Streams `rest` of a body whose first `sent` bytes went with the
/// request, once a worker asks for it on `credits`. Ok also when the
/// worker wants no more (the guest answered without reading it all).
pub async fn send(
    bus: Arc<dyn Bus>,
    mut credits: Mailbox,
    mut rest: Incoming,
    mut sent: u64,
    max_body: u64,
    ends_by: Instant,
) -> Result<(), UploadError> {
    // The worker that takes the request says where the rest goes. Until
    // then nobody is waiting: no keep-alives, no silence.
    let to = loop {
        let msg = match tokio::time::timeout_at(ends_by.into(), credits.rx.recv()).await {
            Err(_) => return Err(UploadError::TooLong),
            Ok(None) => return Err(UploadError::WorkerGone),
            Ok(Some(m)) => m,
        };
        match serde_json::from_slice::<StreamCredit>(&msg.payload) {
            Ok(c) if c.cancel => return Ok(()),
            Ok(StreamCredit { to: Some(to), .. }) => break to,
            _ => continue,
        }
    };
    let mut out = Outlet::new(bus, to, credits, ends_by);
    let stopped = |s: Stopped| match s {
        Stopped::Cancelled => Ok(()),
        Stopped::TooLong => Err(UploadError::TooLong),
        Stopped::Silent | Stopped::Closed => Err(UploadError::WorkerGone),
    };
    loop {
        enum Next {
            Credit(Result<(), Stopped>),
            Frame(Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>),
            Idle,
        }
        let idle = tokio::time::Instant::now() + BODY_IDLE_TIMEOUT;
        let next = loop {
            let next = tokio::select! {
                r = out.credit() => Next::Credit(r),
                f = rest.frame() => Next::Frame(f),
                _ = tokio::time::sleep(keepalive_every()) => {
                    if tokio::time::Instant::now() >= idle { Next::Idle } else { out.keepalive().await; continue }
                }
            };
            break next;
        };
        match next {
            Next::Credit(Ok(())) => continue,
            Next::Credit(Err(s)) => return stopped(s),
            Next::Idle => {
                out.fail("the client stopped sending its request body").await;
                return Err(UploadError::Idle(BODY_IDLE_TIMEOUT));
            }
            Next::Frame(None) => {
                out.end(Vec::new()).await;
                return Ok(());
            }
            Next::Frame(Some(Err(e))) => {
                out.fail("the client's request body broke off").await;
                return Err(UploadError::Broken(e.to_string()));
            }
            Next::Frame(Some(Ok(frame))) => {
                let Ok(mut data) = frame.into_data() else { continue };
                // What else has arrived goes with it; the end met on the
                // way is kept, not lost.
                let mut ended = false;
                if data.len() < STREAM_CHUNK_BYTES {
                    let mut joined = BytesMut::from(data);
                    while joined.len() < STREAM_CHUNK_BYTES {
                        match rest.frame().now_or_never() {
                            Some(Some(Ok(f))) => {
                                if let Ok(d) = f.into_data() {
                                    joined.extend_from_slice(&d);
                                }
                            }
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            Some(Some(Err(e))) => {
                                out.fail("the client's request body broke off").await;
                                return Err(UploadError::Broken(e.to_string()));
                            }
                            None => break,
                        }
                    }
                    data = joined.freeze();
                }
                sent += data.len() as u64;
                if sent > max_body {
                    out.fail("the request body is larger than the function's limit").await;
                    return Err(UploadError::TooLarge(max_body));
                }
                if let Err(s) = out.send(data).await {
                    return stopped(s);
                }
                if ended {
                    out.end(Vec::new()).await;
                    return Ok(());
                }
            }
        }
    }
}
