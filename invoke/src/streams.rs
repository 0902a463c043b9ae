//! A role's two subscriptions for streamed bodies, whichever role it is (a
//! gateway, or a worker calling another function or answering one): the
//! chunks of the bodies it receives, and the credits of those it sends.

use crate::mailbox::{Mailbox, Mailboxes};
use std::sync::Arc;
use tern_bus::{Bus, BusError};
use tern_protocol::{STREAM_WINDOW, subject};

/// Messages a stream's mailbox holds at most: the window (a sender never
/// sends past it), the end, and a keep-alive or a cancel beside them.
const MAILBOX: usize = STREAM_WINDOW as usize + 4;

pub struct Streams {
    pub bus: Arc<dyn Bus>,
    chunks: Arc<Mailboxes>,
    credits: Arc<Mailboxes>,
}

impl Streams {
    pub async fn open(bus: Arc<dyn Bus>) -> Result<Arc<Self>, BusError> {
        let chunks = Mailboxes::open(&*bus, subject::streams, subject::stream).await?;
        let credits = Mailboxes::open(&*bus, subject::credits, subject::credit).await?;
        Ok(Arc::new(Streams { bus, chunks, credits }))
    }

    /// A mailbox for the chunks of one body this role receives.
    pub fn chunk_mailbox(&self) -> Mailbox {
        self.chunks.mailbox(MAILBOX)
    }

    /// A mailbox for the credits of one body this role sends.
    pub fn credit_mailbox(&self) -> Mailbox {
        self.credits.mailbox(MAILBOX)
    }
}
