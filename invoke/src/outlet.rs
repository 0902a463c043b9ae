//! The sending side of a body streamed over the bus (see [`crate::stream`]
//! for the protocol and the receiving side): chunks of at most
//! [`STREAM_CHUNK_BYTES`], each sent when the receiver has a credit for it.

use crate::mailbox::{Mailbox, Quiet};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_bus::Bus;
use tern_protocol::{
    STREAM_CHUNK_BYTES, STREAM_KEEPALIVE_MS, STREAM_SILENCE_MS, STREAM_WINDOW, StreamChunk, StreamCredit,
};

/// Why an [`Outlet`] stopped sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error("the receiver went away")]
    Cancelled,
    #[error("the receiver went silent (its node is gone?)")]
    Silent,
    #[error("the stream took longer than its limit")]
    TooLong,
    #[error("shutting down")]
    Closed,
}

pub fn silence() -> Duration {
    Duration::from_millis(STREAM_SILENCE_MS)
}

pub fn keepalive_every() -> Duration {
    Duration::from_millis(STREAM_KEEPALIVE_MS)
}

/// The sending side of one stream.
pub struct Outlet {
    bus: Arc<dyn Bus>,
    to: String,
    seq: u64,
    room: u32,
    credits: Mailbox,
    ends_by: Instant,
}

impl Outlet {
    /// Sends to `to`, taking credits from `credits`, until `ends_by`.
    pub fn new(bus: Arc<dyn Bus>, to: String, credits: Mailbox, ends_by: Instant) -> Self {
        credits.listen_from_now();
        Outlet { bus, to, seq: 0, room: STREAM_WINDOW, credits, ends_by }
    }

    /// Waits for the receiver's next credit message and applies it; for a
    /// sender's select loop, so a cancel or silence is noticed while the
    /// body it sends is quiet.
    pub async fn credit(&mut self) -> Result<(), Stopped> {
        let m = self.credits.recv_within(silence()).await.map_err(|q| match q {
            Quiet::Silent => Stopped::Silent,
            Quiet::Closed => Stopped::Closed,
        })?;
        match serde_json::from_slice::<StreamCredit>(&m.payload) {
            Ok(c) if c.cancel => Err(Stopped::Cancelled),
            Ok(c) => {
                self.room = self.room.saturating_add(c.grant);
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// Whether the receiver has taken every chunk sent so far.
    pub fn all_taken(&self) -> bool {
        self.room >= STREAM_WINDOW
    }

    /// Sends `data` as chunks, each when the receiver has room for it: a
    /// receiver that reads slowly makes this wait, not buffer.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), Stopped> {
        while !data.is_empty() {
            while self.room == 0 {
                let ends_by = self.ends_by.into();
                let timed = tokio::time::timeout_at(ends_by, self.credit()).await;
                match timed {
                    Ok(r) => r?,
                    Err(_) => {
                        self.fail(&Stopped::TooLong.to_string()).await;
                        return Err(Stopped::TooLong);
                    }
                }
            }
            let piece = data.split_to(data.len().min(STREAM_CHUNK_BYTES));
            self.seq += 1;
            let head = StreamChunk { seq: self.seq, end: false, error: None, trailers: Vec::new() };
            self.publish(tern_protocol::Frame::new(head, piece).encode()).await;
            self.room -= 1;
        }
        Ok(())
    }

    /// Ends the body, complete, with these trailers.
    pub async fn end(&mut self, trailers: Vec<(String, String)>) {
        self.seq += 1;
        let head = StreamChunk { seq: self.seq, end: true, error: None, trailers };
        self.publish(tern_protocol::Frame::new(head, Bytes::new()).encode()).await;
    }

    /// Ends the body in an error: the receiver never takes it as complete.
    pub async fn fail(&mut self, why: &str) {
        self.seq += 1;
        let head =
            StreamChunk { seq: self.seq, end: true, error: Some(why.to_string()), trailers: Vec::new() };
        self.publish(tern_protocol::Frame::new(head, Bytes::new()).encode()).await;
    }

    /// Says this side is alive, with nothing to send.
    pub async fn keepalive(&self) {
        self.publish(Bytes::new()).await;
    }

    async fn publish(&self, payload: Bytes) {
        if let Err(e) = self.bus.publish(&self.to, payload).await {
            tracing::debug!("could not send on stream {}: {e}", self.to);
        }
    }
}

/// Header fields as an invoke frame carries them (trailers, say).
pub fn fields(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect()
}
