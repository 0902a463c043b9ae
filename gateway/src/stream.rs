//! The gateway's ends of streamed bodies (see [`tern_invoke::stream`]).
//!
//! A response: the reply carried the head and the first chunk; the rest
//! arrives in the request's mailbox. hyper asks for the next frame only
//! when the client's connection has room, and each frame taken grants the
//! worker one more chunk, so a slow client slows the guest and nothing
//! piles up here. A body that breaks off (the guest trapped or timed out,
//! the worker went silent) ends in an error, so hyper cuts the response
//! rather than finishing it; a client that goes away drops the body, and
//! the worker is told to stop the guest.
//!
//! An upload: see [`crate::upload`].

use crate::body::{Body, BoxError};
use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use std::sync::Arc;
use tern_bus::Bus;
use tern_invoke::mailbox::{Mailbox, Mailboxes};
use tern_invoke::upload::Running;
use tern_protocol::{STREAM_WINDOW, subject};

/// The gateway's streams: one subscription for the chunks of all the
/// responses it receives, one for the credits of all the uploads it sends.
pub struct Streams {
    pub(crate) bus: Arc<dyn Bus>,
    chunks: Arc<Mailboxes>,
    credits: Arc<Mailboxes>,
}

impl Streams {
    pub async fn open(bus: Arc<dyn Bus>) -> Result<Self, tern_bus::BusError> {
        let chunks = Mailboxes::open(&*bus, subject::streams, subject::stream).await?;
        let credits = Mailboxes::open(&*bus, subject::credits, subject::credit).await?;
        Ok(Streams { bus, chunks, credits })
    }

    /// A mailbox for one response's chunks, should it stream.
    pub fn mailbox(&self) -> Mailbox {
        // The window (the worker never sends past it) and its end.
        self.chunks.mailbox(STREAM_WINDOW as usize + 2)
    }

    /// A mailbox for the credits of one upload.
    pub fn credit_mailbox(&self) -> Mailbox {
        self.credits.mailbox(STREAM_WINDOW as usize + 2)
    }

    /// The body of a response the worker streams: `first`, then the
    /// chunks in `mailbox`; credits go to `credit`. The request's `upload`,
    /// if it is still going, goes on as long as the response does.
    pub fn body(&self, mailbox: Mailbox, credit: String, first: Bytes, upload: Option<Running>) -> Body {
        let frames =
            tern_invoke::stream::receive(self.bus.clone(), mailbox, credit, first, upload).map_err(|e| {
                tracing::info!("a streamed response broke off: {e}");
                BoxError::from(e)
            });
        StreamBody::new(frames).boxed_unsync()
    }
}
