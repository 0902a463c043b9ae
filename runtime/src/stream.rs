//! The worker's ends of streamed bodies (see [`tern_invoke::stream`]): the
//! rest of a response body sent to the caller as the guest writes it
//! ([`send`]), and the rest of a request body received as the caller
//! sends it ([`receive`]).
//!
//! Time: each chunk either way moves the guest's deadline to `--timeout`
//! from now ([`Limits::progressed`]), so the timeout bounds the wait for
//! the head and between chunks, and `--max-duration` bounds the whole.
//! Size: `--max-body` is counted as bytes flow, each way. A caller that
//! cancels (its client went away) stops the guest: the instance is dropped
//! with the [`Streaming`] it lives in.

use crate::failure::{Failed, Failure};
use crate::guest::{Streaming, broken, guest_finished};
use crate::limits::Limits;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::sync::Arc;
use tern_bus::Bus;
use tern_invoke::Streams;
use tern_invoke::outlet::{Outlet, Stopped, fields, keepalive_every};
use tern_protocol::{STREAM_CHUNK_BYTES, StreamCredit};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

/// A request body as the guest reads it.
pub type RequestBody = UnsyncBoxBody<Bytes, ErrorCode>;

/// The request body that begins with `first` and goes on in chunks from
/// the caller, who takes credits at `credit`. Tells the caller where to
/// send them.
pub(crate) async fn receive(
    bus: &Arc<dyn Bus>,
    boxes: &Streams,
    credit: String,
    first: Bytes,
) -> RequestBody {
    let mailbox = boxes.chunk_mailbox();
    let open = StreamCredit { to: Some(mailbox.subject.clone()), ..Default::default() };
    let open = serde_json::to_vec(&open).expect("serialise");
    if let Err(e) = bus.publish(&credit, open.into()).await {
        tracing::debug!("could not ask for the rest of a request body: {e}");
    }
    let frames = tern_invoke::stream::receive(bus.clone(), mailbox, credit, first, None)
        .map(|f| f.map_err(|e| ErrorCode::InternalError(Some(format!("the request body broke off: {e}")))));
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// An upload counted against the limits as the guest reads it: each chunk
/// is progress (the guest has its timeout again), and past `--max-body`
/// it breaks off.
pub(crate) fn counted(body: RequestBody, limits: &Limits) -> RequestBody {
    let limits = limits.clone();
    let mut seen = 0u64;
    let frames = http_body_util::BodyStream::new(body).map(move |f| {
        let f = f?;
        if let Some(d) = f.data_ref() {
            seen += d.len() as u64;
            limits.usage.bytes_in.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if seen > limits.max_body {
                return Err(ErrorCode::HttpRequestBodySize(Some(seen)));
            }
            limits.progressed();
        }
        Ok(f)
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// Sends the rest of `s` to `out`. Err carries the line for the
/// function's log when the stream did not end with the whole body.
///
/// Writes are gathered into chunks the way Nagle's algorithm gathers
/// segments: a full chunk goes at once; a partial one goes when nothing
/// sent is still on its way (so a lone event is never held back), and
/// otherwise waits to fill. A guest writing 4 KiB at a time thus sends
/// 64 KiB chunks while the window is busy, not 4 KiB ones.
pub(crate) async fn send(mut out: Outlet, mut s: Streaming) -> Result<(), String> {
    if let Some(trailers) = s.trailers.take() {
        out.end(fields(&trailers)).await;
        return Ok(());
    }
    let mut sent = s.first.len() as u64;
    let mut pending = BytesMut::new();
    loop {
        enum Next<F> {
            Credit(Result<(), Stopped>),
            Frame(F),
            Idle,
            Late,
        }
        let next = tokio::select! {
            biased;
            r = out.credit() => Next::Credit(r),
            f = s.rest.frame() => Next::Frame(f),
            _ = tokio::time::sleep(keepalive_every()) => Next::Idle,
            // A guest blocked on the host past its time (a spinning one
            // is trapped by the epoch and ends its body in error).
            _ = tokio::time::sleep_until(s.limits.grace()) => Next::Late,
        };
        match next {
            Next::Credit(Ok(())) => {}
            Next::Credit(Err(stopped)) => return Err(stopped_line(stopped)),
            Next::Idle => out.keepalive().await,
            Next::Late if s.limits.grace() > tokio::time::Instant::now() => {}
            Next::Late => return Err(cut(&mut out, s.limits.timed_out()).await),
            Next::Frame(None) => {
                if let Err(failed) = guest_finished(&mut s.task, &s.limits).await {
                    return Err(cut(&mut out, failed).await);
                }
                out.send(pending.split().freeze()).await.map_err(stopped_line)?;
                out.end(Vec::new()).await;
                return Ok(());
            }
            Next::Frame(Some(Err(_))) => {
                let grace = s.limits.grace();
                let failed = broken(&mut s.task, &s.limits, grace).await;
                return Err(cut(&mut out, failed).await);
            }
            Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len() as u64;
                    s.limits
                        .usage
                        .bytes_out
                        .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if sent > s.limits.max_body {
                        let failed = Failure::ResponseTooLarge(s.limits.max_body as usize).into();
                        return Err(cut(&mut out, failed).await);
                    }
                    pending.extend_from_slice(&data);
                }
                Err(frame) => {
                    // Trailers: the last frame.
                    let trailers = frame.into_trailers().map(|t| fields(&t)).unwrap_or_default();
                    out.send(pending.split().freeze()).await.map_err(stopped_line)?;
                    out.end(trailers).await;
                    return Ok(());
                }
            },
        }
        while pending.len() >= STREAM_CHUNK_BYTES {
            out.send(pending.split_to(STREAM_CHUNK_BYTES).freeze()).await.map_err(stopped_line)?;
            s.limits.progressed();
        }
        if !pending.is_empty() && out.all_taken() {
            out.send(pending.split().freeze()).await.map_err(stopped_line)?;
            s.limits.progressed();
        }
    }
}

fn stopped_line(stopped: Stopped) -> String {
    match stopped {
        Stopped::Cancelled => "the client went away; the guest was stopped".into(),
        Stopped::Silent => "the caller went silent (its gateway is gone?); the guest was stopped".into(),
        Stopped::TooLong => {
            "the stream took longer than the function's --max-duration; the guest was stopped".into()
        }
        Stopped::Closed => "the worker is shutting down".into(),
    }
}

/// Ends the caller's stream in an error; the line for the function's log.
async fn cut(out: &mut Outlet, Failed(failure, detail): Failed) -> String {
    out.fail(&failure.public_message()).await;
    let mut line = format!("streamed response cut: {}", failure.log_line());
    if let Some(d) = detail {
        line.push_str(&format!("\n{d}"));
    }
    line
}
