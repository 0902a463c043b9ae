//! A body streamed over the bus, either way: a response from a worker to
//! its caller, or an upload from the gateway to the worker that took the
//! request. The sender ([`crate::outlet::Outlet`]) sends [`StreamChunk`](tern_protocol::StreamChunk)s of at most
//! [`STREAM_CHUNK_BYTES`](tern_protocol::STREAM_CHUNK_BYTES) to the receiver's mailbox, never more than the
//! receiver's credits allow ([`STREAM_WINDOW`](tern_protocol::STREAM_WINDOW) to start, one more for each
//! chunk it has passed on); the receiver ([`receive`]) grants a credit as
//! each chunk is taken from it. So a slow reader slows the writer, and at
//! most the window is in flight per stream, whatever the body's size.
//!
//! Each side sends an empty message every [`STREAM_KEEPALIVE_MS`](tern_protocol::STREAM_KEEPALIVE_MS) while it
//! has nothing else to say; one that hears nothing for
//! [`STREAM_SILENCE_MS`](tern_protocol::STREAM_SILENCE_MS) takes the other for dead and ends the stream. A
//! receiver that is dropped before the end tells the sender to stop.

use crate::mailbox::{Mailbox, Quiet};
use crate::outlet::{keepalive_every, silence};
use bytes::Bytes;
use http_body::Frame;
use std::sync::Arc;
use tern_bus::Bus;
use tern_protocol::{StreamChunk, StreamCredit};

/// The receiving side of one stream, as a stream of body frames: `first`
/// (what came with the message that opened it), then the chunks arriving
/// in `mailbox`; credits and keep-alives go to `credit`. Dropping it before
/// the end tells the sender to stop. `upload`, the same request's body on
/// its way out, goes on for as long as this is read.
pub fn receive(
    bus: Arc<dyn Bus>,
    mailbox: Mailbox,
    credit: String,
    first: Bytes,
    upload: Option<crate::upload::Running>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, String>> + Send + 'static {
    mailbox.listen_from_now();
    let alive = {
        let (bus, subject) = (bus.clone(), credit.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(keepalive_every());
            every.tick().await;
            loop {
                every.tick().await;
                let _ = bus.publish(&subject, Bytes::new()).await;
            }
        })
    };
    let state = Receiving {
        bus,
        mailbox,
        credit,
        first: Some(first),
        trailers: None,
        seq: 0,
        over: false,
        failed: false,
        alive,
        _upload: upload,
    };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take().filter(|b| !b.is_empty()) {
            return Some((Ok(Frame::data(first)), st));
        }
        if let Some(t) = st.trailers.take() {
            return Some((Ok(Frame::trailers(t)), st));
        }
        if st.over || st.failed {
            return None;
        }
        match next(&mut st).await {
            Ok(Some(frame)) => Some((Ok(frame), st)),
            Ok(None) => None,
            Err(e) => {
                st.failed = true;
                Some((Err(e), st))
            }
        }
    })
}

struct Receiving {
    bus: Arc<dyn Bus>,
    mailbox: Mailbox,
    /// Where the sender takes credits and the cancel.
    credit: String,
    first: Option<Bytes>,
    /// Trailers that came with the end, to yield after its bytes.
    trailers: Option<http::HeaderMap>,
    seq: u64,
    /// The sender has ended the body, complete or broken off, or is
    /// gone: nothing to cancel.
    over: bool,
    /// An error has been yielded: nothing more is.
    failed: bool,
    /// Tells the sender every second that this side is still there, while
    /// its reader is slow.
    alive: tokio::task::JoinHandle<()>,
    _upload: Option<crate::upload::Running>,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.alive.abort();
        if self.over {
            return;
        }
        // The reader went away before the end: stop the sender.
        let (bus, subject) = (self.bus.clone(), self.credit.clone());
        let cancel =
            serde_json::to_vec(&StreamCredit { cancel: true, ..Default::default() }).expect("serialise");
        tokio::spawn(async move {
            let _ = bus.publish(&subject, cancel.into()).await;
        });
    }
}

/// The next frame; `None` at the end of the body.
async fn next(st: &mut Receiving) -> Result<Option<Frame<Bytes>>, String> {
    loop {
        let msg = match st.mailbox.recv_within(silence()).await {
            Ok(m) => m,
            Err(Quiet::Closed) => return Err("shutting down".into()),
            Err(Quiet::Silent) => {
                st.over = true;
                return Err(format!("the sender sent nothing for {:?}", silence()));
            }
        };
        let chunk = tern_protocol::Frame::<StreamChunk>::decode(msg.payload)
            .map_err(|e| format!("a malformed stream chunk: {e}"))?;
        let head = chunk.header;
        if head.seq != st.seq + 1 {
            return Err(format!("stream chunk {} arrived after {} (one was lost)", head.seq, st.seq));
        }
        st.seq = head.seq;
        if let Some(e) = head.error {
            st.over = true;
            return Err(e);
        }
        if head.end {
            st.over = true;
            st.trailers = trailers(&head.trailers);
        } else {
            let grant =
                serde_json::to_vec(&StreamCredit { grant: 1, ..Default::default() }).expect("serialise");
            if let Err(e) = st.bus.publish(&st.credit, grant.into()).await {
                return Err(format!("could not ask the sender for more: {e}"));
            }
        }
        if !chunk.body.is_empty() {
            return Ok(Some(Frame::data(chunk.body)));
        }
        if head.end {
            return Ok(st.trailers.take().map(Frame::trailers));
        }
    }
}

/// Trailer fields as a header map; `None` for none (or none valid).
fn trailers(fields: &[(String, String)]) -> Option<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for (k, v) in fields {
        if let (Ok(k), Ok(v)) =
            (http::HeaderName::try_from(k.as_str()), http::HeaderValue::try_from(v.as_str()))
        {
            map.append(k, v);
        }
    }
    (!map.is_empty()).then_some(map)
}
