//! Sending the rest of a streamed response body to the caller as the
//! guest writes it: chunks of at most [`STREAM_CHUNK_BYTES`] on the
//! caller's stream subject, never more than the caller's credits allow
//! ([`STREAM_WINDOW`] to start, one more per chunk it passed on), so a slow
//! client pauses the guest instead of filling memory here.
//!
//! Time: each chunk (and each credit) moves the guest's deadline to
//! `--timeout` from now, so the timeout bounds the time the guest takes
//! between chunks, and a stream ends within [`MAX_STREAM_DURATION`] in all,
//! however slowly its client reads. A caller that cancels (its client went
//! away) stops the guest: the instance is dropped with the [`Streaming`]
//! it lives in.

use crate::http::{Streaming, broken};
use crate::instance::{Failed, Limits};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use tern_bus::Bus;
use tern_invoke::mailbox::Mailbox;
use tern_protocol::{
    Frame, STREAM_CHUNK_BYTES, STREAM_KEEPALIVE_MS, STREAM_SILENCE_MS, STREAM_WINDOW, StreamChunk,
    StreamCredit,
};

/// The longest a streamed response may take in all.
pub const MAX_STREAM_DURATION: Duration = Duration::from_secs(15 * 60);
/// How long the end of a body waits for its guest's outcome (see `send`).
const GUEST_END_WAIT: Duration = Duration::from_millis(100);

/// Sends the rest of `s` to `to`. Err carries the line for the function's
/// log when the stream did not end with the whole body.
pub(crate) async fn send(
    bus: &dyn Bus,
    to: &str,
    mut credits: Mailbox,
    mut s: Streaming,
) -> Result<(), String> {
    let ends_by = Instant::now() + MAX_STREAM_DURATION;
    let keepalive = Duration::from_millis(STREAM_KEEPALIVE_MS);
    let mut out = Sender { bus, to, seq: 0 };
    let mut room = STREAM_WINDOW;
    // The end or a failure met while gathering what the guest had written:
    // handled as the next frame, never lost.
    let mut carried = None;
    loop {
        let grace = s.limits.grace();
        let frame = if let Some(f) = carried.take() {
            f
        } else {
            tokio::select! {
                biased;
                m = credits.rx.recv() => {
                    match m.map(|m| serde_json::from_slice::<StreamCredit>(&m.payload)) {
                        Some(Ok(c)) if c.cancel => return Err("the client went away; the guest was stopped".into()),
                        Some(Ok(c)) => room += c.grant,
                        _ => {}
                    }
                    continue;
                }
                f = s.rest.frame() => f,
                _ = tokio::time::sleep(keepalive) => {
                    out.keepalive().await;
                    continue;
                }
                _ = tokio::time::sleep_until(grace) => {
                    // A guest blocked on the host past its time (a spinning
                    // one is trapped by the epoch and ends its body in error).
                    let failure = s.limits.timed_out().0;
                    out.fail(&failure.public_message()).await;
                    return Err(format!("streamed response cut: {}", failure.log_line()));
                }
            }
        };
        match frame {
            None => {
                // wasmtime ends a body the same way whether the guest
                // finished it or trapped mid-write (its store went): the
                // guest's own outcome tells them apart. One that finished
                // and goes on working past this wait is taken as complete.
                match tokio::time::timeout(GUEST_END_WAIT, &mut s.task.0).await {
                    Ok(Ok(Err(e))) => {
                        let failed = s.limits.classify(e);
                        return Err(cut(&mut out, failed).await);
                    }
                    _ => {
                        out.chunk(Bytes::new(), true).await;
                        return Ok(());
                    }
                }
            }
            Some(Err(_)) => {
                let grace = s.limits.grace();
                let failed = broken(&mut s.task, &s.limits, grace).await;
                return Err(cut(&mut out, failed).await);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                // What else the guest has written already goes with it
                // (copied together only when there is more).
                let mut pending = data;
                while pending.len() < STREAM_CHUNK_BYTES {
                    match s.rest.frame().now_or_never() {
                        Some(Some(Ok(f))) => {
                            if let Ok(d) = f.into_data() {
                                let mut joined = BytesMut::from(pending);
                                joined.extend_from_slice(&d);
                                pending = joined.freeze();
                            }
                        }
                        Some(end_or_error) => {
                            carried = Some(end_or_error);
                            break;
                        }
                        None => break,
                    }
                }
                while !pending.is_empty() {
                    // Never past the caller's credits: its mailbox holds
                    // the window and no more.
                    wait_for_room(&mut room, &mut credits, &s.limits, ends_by, &mut out).await?;
                    let piece = pending.split_to(pending.len().min(STREAM_CHUNK_BYTES));
                    out.chunk(piece, false).await;
                    room -= 1;
                }
                let next = (Instant::now() + s.limits.timeout()).min(ends_by);
                s.limits.deadline.extend_to(next);
            }
        }
    }
}

/// Ends the caller's stream in an error; the line for the function's log.
async fn cut(out: &mut Sender<'_>, Failed(failure, detail): Failed) -> String {
    out.fail(&failure.public_message()).await;
    let mut line = format!("streamed response cut: {}", failure.log_line());
    if let Some(d) = detail {
        line.push_str(&format!("\n{d}"));
    }
    line
}

/// Waits until the caller has room for a chunk, taking credits and a
/// cancel as they come. The guest is paused meanwhile (its writes wait),
/// not at fault: a slow client is waited for, up to the stream's whole
/// duration, and each credit moves the guest's deadline on.
async fn wait_for_room(
    room: &mut u32,
    credits: &mut Mailbox,
    limits: &Limits,
    ends_by: Instant,
    out: &mut Sender<'_>,
) -> Result<(), String> {
    while *room == 0 {
        tokio::select! {
            m = credits.rx.recv() => match m.map(|m| serde_json::from_slice::<StreamCredit>(&m.payload)) {
                Some(Ok(c)) if c.cancel => return Err("the client went away; the guest was stopped".into()),
                Some(Ok(c)) => {
                    *room += c.grant;
                    limits.deadline.extend_to((Instant::now() + limits.timeout()).min(ends_by));
                }
                Some(Err(_)) => {}
                None => return Err("the worker is shutting down".into()),
            },
            // The caller says it is alive every second while it waits for
            // its client; silence means it is gone.
            _ = tokio::time::sleep(Duration::from_millis(STREAM_SILENCE_MS)) => {
                return Err("the caller went silent (its gateway is gone?); the guest was stopped".into());
            }
            _ = tokio::time::sleep_until(ends_by.into()) => {
                out.fail("the stream took longer than its limit").await;
                return Err(format!(
                    "the client was still reading after {} min, the longest a stream may take; the guest was stopped",
                    MAX_STREAM_DURATION.as_secs() / 60
                ));
            }
        }
    }
    Ok(())
}

/// The caller's side of the stream: numbered chunks.
struct Sender<'a> {
    bus: &'a dyn Bus,
    to: &'a str,
    seq: u64,
}

impl Sender<'_> {
    async fn chunk(&mut self, data: Bytes, end: bool) {
        self.seq += 1;
        self.send(StreamChunk { seq: self.seq, end, error: None, keepalive: false }, data).await;
    }

    async fn fail(&mut self, why: &str) {
        self.seq += 1;
        let head = StreamChunk { seq: self.seq, end: true, error: Some(why.to_string()), keepalive: false };
        self.send(head, Bytes::new()).await;
    }

    async fn keepalive(&mut self) {
        self.send(StreamChunk { seq: self.seq, end: false, error: None, keepalive: true }, Bytes::new())
            .await;
    }

    async fn send(&self, head: StreamChunk, data: Bytes) {
        if let Err(e) = self.bus.publish(self.to, Frame::new(head, data).encode()).await {
            tracing::debug!("could not send a stream chunk to {}: {e}", self.to);
        }
    }
}
