//! Reading the start of a request body before the call is sent: all of a
//! body small enough for one message, else its first chunk (the rest then
//! streams beside the call, [`crate::upload`]). The same for a client's
//! request through the gateway and a call between functions.

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body::Body;
use http_body_util::BodyExt;
use std::time::Duration;
use tern_protocol::STREAM_CHUNK_BYTES;

/// What a body may do before the call goes.
#[derive(Debug, Clone, Copy)]
pub struct GatherLimits {
    /// The largest body sent whole (what one message holds, or less).
    pub whole_limit: usize,
    /// Whether the rest may stream; if not, all of it is read.
    pub may_stream: bool,
    /// A body that sends nothing for this long is given up on.
    pub idle: Duration,
    /// One that takes longer than this in all, too.
    pub total: Duration,
}

/// A request body as it stands when the call is sent.
pub enum Gathered<B> {
    /// All of it.
    Whole(Bytes),
    /// What had arrived, and the rest still coming.
    Partial { first: Bytes, rest: B },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatherError {
    #[error("request body is larger than the {0} byte limit")]
    TooLarge(usize),
    #[error("request body was not sent in time (nothing for {idle:?}, or more than {total:?} in all)")]
    TimedOut { idle: Duration, total: Duration },
    #[error("could not read request body: {0}")]
    Broken(String),
}

/// Reads all of a body that fits one chunk (or, without `may_stream`, one
/// message); of a larger one, its first chunk and then what else is
/// already here. Only then is the function called: a client that trickles
/// its body holds no instance until it has sent a chunk. A body whose
/// start is past `whole_limit` is refused. A body of one frame (most are)
/// is handed on as it is, not copied.
pub async fn gather<B>(mut body: B, limits: GatherLimits) -> Result<Gathered<B>, GatherError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let enough = if limits.may_stream { STREAM_CHUNK_BYTES } else { limits.whole_limit.saturating_add(1) };
    let deadline = tokio::time::Instant::now() + limits.total;
    let mut first = Start::default();
    let mut ended = body.is_end_stream();
    while first.len() < enough && !ended {
        let wait = limits.idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(GatherError::TimedOut { idle: limits.idle, total: limits.total }),
            Ok(None) => ended = true,
            Ok(Some(Err(e))) => return Err(GatherError::Broken(e.to_string())),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    first.push(d);
                }
                ended = body.is_end_stream();
            }
        }
    }
    // What else has arrived goes with it.
    while limits.may_stream && !ended && first.len() < STREAM_CHUNK_BYTES * 2 {
        match body.frame().now_or_never() {
            Some(None) => ended = true,
            Some(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    first.push(d);
                }
            }
            Some(Some(Err(e))) => return Err(GatherError::Broken(e.to_string())),
            None => break,
        }
    }
    if first.len() > limits.whole_limit {
        return Err(GatherError::TooLarge(limits.whole_limit));
    }
    let first = first.freeze();
    if ended || body.is_end_stream() {
        return Ok(Gathered::Whole(first));
    }
    Ok(Gathered::Partial { first, rest: body })
}

/// The bytes read so far: one frame as it came, or several copied into one.
#[derive(Default)]
struct Start {
    one: Option<Bytes>,
    more: BytesMut,
}

impl Start {
    fn len(&self) -> usize {
        self.one.as_ref().map_or(0, Bytes::len) + self.more.len()
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match self.one.take() {
            None if self.more.is_empty() => self.one = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    self.more.extend_from_slice(&earlier);
                }
                self.more.extend_from_slice(&data);
            }
        }
    }

    fn freeze(self) -> Bytes {
        match self.one {
            Some(one) => one,
            None => self.more.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::{Full, StreamBody};

    const LIMITS: GatherLimits = GatherLimits {
        whole_limit: 1 << 20,
        may_stream: true,
        idle: Duration::from_secs(5),
        total: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_small_body_is_whole_and_not_copied() {
        let data = Bytes::from_static(b"hello");
        match gather(Full::new(data.clone()), LIMITS).await.unwrap() {
            Gathered::Whole(b) => assert_eq!(b.as_ptr(), data.as_ptr()),
            Gathered::Partial { .. } => panic!("partial"),
        }
    }

    #[tokio::test]
    async fn a_large_body_streams_after_its_first_chunk_and_a_too_large_one_is_refused() {
        let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
            (0..8).map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; STREAM_CHUNK_BYTES])))).collect();
        let body = StreamBody::new(futures::stream::iter(frames).chain(futures::stream::pending()));
        match gather(body, LIMITS).await.unwrap() {
            Gathered::Partial { first, .. } => assert!(first.len() >= STREAM_CHUNK_BYTES),
            Gathered::Whole(_) => panic!("whole"),
        }
        let big = Full::new(Bytes::from(vec![b'x'; 100]));
        let limits = GatherLimits { whole_limit: 10, may_stream: false, ..LIMITS };
        assert_eq!(gather(big, limits).await.err(), Some(GatherError::TooLarge(10)));
    }

    #[tokio::test]
    async fn a_body_that_goes_quiet_times_out() {
        let quiet = StreamBody::new(futures::stream::pending::<Result<http_body::Frame<Bytes>, String>>());
        let limits = GatherLimits { idle: Duration::from_millis(50), ..LIMITS };
        assert!(matches!(gather(quiet, limits).await, Err(GatherError::TimedOut { .. })));
    }
}
