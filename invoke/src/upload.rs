//! Sending the rest of a request body to whichever worker took the request:
//! the gateway's for a client's upload, a worker's for a guest's call to
//! another function. The invoke frame carried the first bytes and a credit
//! subject; the worker that takes the request answers there with its chunk
//! mailbox (`StreamCredit::to`), and from then on its credits pace the
//! body: while the guest does not read, this does not read either.

use crate::invoker::{CallError, Invoker};
use crate::mailbox::Mailbox;
use crate::outlet::{Outlet, Stopped, fields, keepalive_every};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body::Body;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_bus::{Bus, Message};
use tern_protocol::{STREAM_CHUNK_BYTES, StreamCredit};
use tern_task::AbortOnDrop;

/// Why an upload ended before its body did.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the request body is larger than the function's {0} byte limit (--max-body)")]
    TooLarge(u64),
    #[error("nothing came of the request body for {0:?}")]
    Idle(Duration),
    #[error("the request body broke off: {0}")]
    Broken(String),
    #[error("the request body took longer than the function's --max-duration")]
    TooLong,
    #[error("the worker running the function went away during the upload")]
    WorkerGone,
}

impl UploadError {
    /// What the caller is told when its upload ends before the function
    /// answered.
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge(_) => 413,
            UploadError::Idle(_) | UploadError::TooLong => 408,
            UploadError::Broken(_) => 400,
            UploadError::WorkerGone => 502,
        }
    }
}

/// An upload running beside its call; dropping it stops the upload.
pub type Running = AbortOnDrop<Result<(), UploadError>>;

/// Why a call whose body streams got no reply.
#[derive(Debug)]
pub enum Unanswered {
    Call(CallError),
    /// The upload failed before the reply came; it is the answer, whatever
    /// the guest makes of its broken body.
    Upload(UploadError),
}

/// Sends `payload` to `function` (waiting up to `wait_ms`, as
/// [`Invoker::call`]) while `upload` sends the rest of its body. Once the
/// body is sent, the reply is due within `then`. The upload comes back with
/// the reply: a response that streams keeps it going (see
/// [`crate::stream::receive`]).
pub async fn call_beside(
    invoker: &Invoker,
    function: &str,
    wait_ms: u64,
    payload: Bytes,
    mut upload: Running,
    then: Duration,
) -> Result<(Message, Running), Unanswered> {
    let call = invoker.call(function, wait_ms, payload);
    tokio::pin!(call);
    let reply = tokio::select! {
        biased;
        sent = &mut upload.0 => match sent {
            Ok(Err(e)) => return Err(Unanswered::Upload(e)),
            // Sent in full, or the worker wanted no more.
            _ => match tokio::time::timeout(then, call).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout { function: function.into() }),
            },
        },
        r = &mut call => r,
    };
    reply.map(|r| (r, upload)).map_err(Unanswered::Call)
}

/// Limits one upload runs within.
pub struct UploadLimits {
    pub max_body: u64,
    /// A body that sends nothing for this long is cut.
    pub idle: Duration,
    pub ends_by: Instant,
}

/// Streams `rest` of a body whose first `sent` bytes went with the
/// request, once a worker asks for it on `credits`. Ok also when the
/// worker wants no more (the guest answered without reading it all).
pub async fn send<B>(
    bus: Arc<dyn Bus>,
    mut credits: Mailbox,
    mut rest: B,
    mut sent: u64,
    limits: UploadLimits,
) -> Result<(), UploadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let ends_by = limits.ends_by;
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
        enum Next<F> {
            Credit(Result<(), Stopped>),
            Frame(F),
            Idle,
        }
        let idle_at = tokio::time::Instant::now() + limits.idle;
        let next = loop {
            let next = tokio::select! {
                r = out.credit() => Next::Credit(r),
                f = rest.frame() => Next::Frame(f),
                _ = tokio::time::sleep(keepalive_every()) => {
                    if tokio::time::Instant::now() >= idle_at { Next::Idle } else { out.keepalive().await; continue }
                }
            };
            break next;
        };
        let frame = match next {
            Next::Credit(Ok(())) => continue,
            Next::Credit(Err(s)) => return stopped(s),
            Next::Idle => {
                out.fail("the request body stopped coming").await;
                return Err(UploadError::Idle(limits.idle));
            }
            Next::Frame(None) => {
                out.end(Vec::new()).await;
                return Ok(());
            }
            Next::Frame(Some(Err(e))) => {
                out.fail("the request body broke off").await;
                return Err(UploadError::Broken(e.to_string()));
            }
            Next::Frame(Some(Ok(frame))) => frame,
        };
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => {
                // Trailers: the last frame.
                let trailers = frame.into_trailers().map(|t| fields(&t)).unwrap_or_default();
                out.end(trailers).await;
                return Ok(());
            }
        };
        // What else has arrived goes with it; the end met on the way (and
        // its trailers) is kept, not lost.
        let mut end: Option<Vec<(String, String)>> = None;
        if data.len() < STREAM_CHUNK_BYTES {
            let mut joined = BytesMut::from(data);
            while joined.len() < STREAM_CHUNK_BYTES {
                match rest.frame().now_or_never() {
                    Some(Some(Ok(f))) => match f.into_data() {
                        Ok(d) => joined.extend_from_slice(&d),
                        Err(f) => {
                            end = Some(f.into_trailers().map(|t| fields(&t)).unwrap_or_default());
                            break;
                        }
                    },
                    Some(None) => {
                        end = Some(Vec::new());
                        break;
                    }
                    Some(Some(Err(e))) => {
                        out.fail("the request body broke off").await;
                        return Err(UploadError::Broken(e.to_string()));
                    }
                    None => break,
                }
            }
            data = joined.freeze();
        }
        sent += data.len() as u64;
        if sent > limits.max_body {
            // Drained before the worker hears of it: the caller answers
            // 413 as this returns, before the guest could answer for its
            // broken body.
            drain(rest).await;
            out.fail("the request body is larger than the function's limit").await;
            return Err(UploadError::TooLarge(limits.max_body));
        }
        if let Err(s) = out.send(data).await {
            return stopped(s);
        }
        if let Some(trailers) = end {
            out.end(trailers).await;
            return Ok(());
        }
    }
}

/// At most this much of a refused body is read and dropped, within
/// [`DRAIN_TIME`], before it is answered.
pub const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what is left of a body that is refused (too large), up
/// to [`DRAIN_BYTES`] or [`DRAIN_TIME`]: a client still sending when the
/// refusal comes then reads it, where closing on unread bytes would reset
/// the connection and lose the answer. Past the bound it is closed anyway.
pub async fn drain<B>(body: B)
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    let mut read = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while read < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    })
    .await;
}
