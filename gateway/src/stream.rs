//! A response body streamed from a worker: the reply carried the head and
//! the first chunk; the rest arrives as [`StreamChunk`]s in the request's
//! mailbox. Each chunk handed to hyper (which asks for the next only when
//! the client's connection has room) grants the worker one more, so a slow
//! client slows the guest and nothing piles up here: at most
//! [`STREAM_WINDOW`] chunks are in flight per stream.
//!
//! Each side tells the other it is alive every second (the worker with
//! keep-alive chunks, the gateway with empty credits), so a dead worker
//! ends the client's response and a dead gateway stops the guest. A body
//! that breaks off (the guest trapped or timed out, the worker went
//! silent) ends in an error, so hyper cuts the response rather than
//! finishing it. A client that goes away drops the body, and the worker is
//! told to stop the guest.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::Bus;
use tern_invoke::mailbox::{Mailbox, Mailboxes};
use tern_protocol::{
    STREAM_KEEPALIVE_MS, STREAM_SILENCE_MS, STREAM_WINDOW, StreamChunk, StreamCredit, subject,
};

/// The gateway's streams: one subscription for the chunks of all of them.
pub struct Streams {
    bus: Arc<dyn Bus>,
    mailboxes: Arc<Mailboxes>,
}

impl Streams {
    pub async fn open(bus: Arc<dyn Bus>) -> Result<Self, tern_bus::BusError> {
        let mailboxes = Mailboxes::open(&*bus, subject::streams, subject::stream).await?;
        Ok(Streams { bus, mailboxes })
    }

    /// A mailbox for one response's chunks, should it stream.
    pub fn mailbox(&self) -> Mailbox {
        // The window (the worker never sends past it), and beside it the
        // end and a keep-alive a second for as long as a stream may last
        // while the client does not read.
        self.mailboxes.mailbox(STREAM_WINDOW as usize + 1024)
    }

    /// The body of a response the worker streams: `first`, then the
    /// chunks in `mailbox`; credits go to `credit`.
    pub fn body(&self, mailbox: Mailbox, credit: String, first: Bytes) -> Body {
        body(self.bus.clone(), mailbox, credit, first)
    }
}

struct Receiving {
    bus: Arc<dyn Bus>,
    mailbox: Mailbox,
    /// Where the worker takes credits and the cancel.
    credit: String,
    first: Option<Bytes>,
    seq: u64,
    /// The worker said the body is complete, or broke off: nothing to
    /// cancel.
    over: bool,
    /// Tells the worker every second that this gateway is still there,
    /// while its client reads slowly; aborted with the stream.
    alive: tokio::task::JoinHandle<()>,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.alive.abort();
        if self.over {
            return;
        }
        // The client went away (or the stream failed here): stop the guest.
        let (bus, subject) = (self.bus.clone(), self.credit.clone());
        let cancel = serde_json::to_vec(&StreamCredit { grant: 0, cancel: true }).expect("serialise");
        tokio::spawn(async move {
            let _ = bus.publish(&subject, cancel.into()).await;
        });
    }
}

fn body(bus: Arc<dyn Bus>, mailbox: Mailbox, credit: String, first: Bytes) -> Body {
    let alive = {
        let (bus, subject) = (bus.clone(), credit.clone());
        let here = Bytes::from(serde_json::to_vec(&StreamCredit::default()).expect("serialise"));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(STREAM_KEEPALIVE_MS));
            every.tick().await;
            loop {
                every.tick().await;
                let _ = bus.publish(&subject, here.clone()).await;
            }
        })
    };
    let state = Receiving { bus, mailbox, credit, first: Some(first), seq: 0, over: false, alive };
    let frames = futures::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take().filter(|b| !b.is_empty()) {
            return Some((Ok(Frame::data(first)), st));
        }
        if st.over {
            return None;
        }
        match next(&mut st).await {
            Ok(Some(data)) => Some((Ok(Frame::data(data)), st)),
            Ok(None) => None,
            Err(e) => {
                tracing::info!("a streamed response broke off: {e}");
                Some((Err(e), st))
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// The next chunk's bytes; `None` at the end of the body.
async fn next(st: &mut Receiving) -> Result<Option<Bytes>, BoxError> {
    let silence = Duration::from_millis(STREAM_SILENCE_MS);
    loop {
        let msg = match tokio::time::timeout(silence, st.mailbox.rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err("the gateway is shutting down".into()),
            Err(_) => return Err(format!("the worker sent nothing for {silence:?}").into()),
        };
        let chunk = tern_protocol::Frame::<StreamChunk>::decode(msg.payload)
            .map_err(|e| format!("a malformed stream chunk: {e}"))?;
        let head = chunk.header;
        if head.keepalive {
            continue;
        }
        if head.seq != st.seq + 1 {
            return Err(format!("stream chunk {} arrived after {} (one was lost)", head.seq, st.seq).into());
        }
        st.seq = head.seq;
        if let Some(e) = head.error {
            st.over = true;
            return Err(e.into());
        }
        if head.end {
            st.over = true;
        } else {
            let grant = serde_json::to_vec(&StreamCredit { grant: 1, cancel: false }).expect("serialise");
            if let Err(e) = st.bus.publish(&st.credit, grant.into()).await {
                return Err(format!("could not ask the worker for more: {e}").into());
            }
        }
        if !chunk.body.is_empty() {
            return Ok(Some(chunk.body));
        }
        if st.over {
            return Ok(None);
        }
    }
}
