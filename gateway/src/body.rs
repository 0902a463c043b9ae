//! Reading request bodies under a limit, and the small responses the
//! gateway writes itself.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use std::time::Duration;

/// What the gateway answers with. A streamed body may break off (its
/// worker died, its guest trapped): the error makes hyper end the response
/// unfinished, so the client never takes a cut body for a whole one.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body of these bytes, whole.
pub fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A body that sends nothing for this long is given up on.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A body that takes longer than this in all is given up on.
pub const BODY_TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{what} is larger than the {limit} byte limit")]
    TooLarge { what: &'static str, limit: usize },
    #[error("{what} was not sent in time (nothing for {idle:?}, or more than {total:?} in all)")]
    TimedOut { what: &'static str, idle: Duration, total: Duration },
    #[error("could not read {what}: {reason}")]
    Broken { what: &'static str, reason: String },
}

impl BodyError {
    /// 413 for a body past its limit, 400 for one that broke off.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads all of `body`, or fails as soon as it passes `limit` bytes, goes
/// quiet for [`BODY_IDLE_TIMEOUT`], or takes longer than
/// [`BODY_TOTAL_TIMEOUT`]. `what` names it in the error ("request body").
pub async fn read<B>(body: B, limit: usize, what: &'static str) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_within(body, limit, what, BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT).await
}

async fn read_within<B>(
    body: B,
    limit: usize,
    what: &'static str,
    idle: Duration,
    total: Duration,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let deadline = tokio::time::Instant::now() + total;
    let mut body = std::pin::pin!(Limited::new(body, limit));
    // A body of one chunk (most are) is handed on as it is, not copied.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut { what, idle, total }),
            Ok(None) if rest.is_empty() => return Ok(first.unwrap_or_default()),
            Ok(None) => return Ok(rest.freeze()),
            Ok(Some(Err(e))) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(BodyError::TooLarge { what, limit });
            }
            Ok(Some(Err(e))) => return Err(BodyError::Broken { what, reason: e.to_string() }),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            match first.take() {
                None if rest.is_empty() => first = Some(data),
                earlier => {
                    if let Some(earlier) = earlier {
                        rest.extend_from_slice(&earlier);
                    }
                    rest.extend_from_slice(&data);
                }
            }
        }
    }
}

pub fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(whole(body));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A one-line plain-text answer.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    m.push('\n');
    full(status, "text/plain; charset=utf-8", m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[tokio::test]
    async fn a_body_past_its_limit_is_413_and_names_itself() {
        let ok = read(Full::new(Bytes::from_static(b"abc")), 3, "event data").await.unwrap();
        assert_eq!(&ok[..], b"abc");
        let chunks = ["ab", "c", "de"].map(|c| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(c))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        assert_eq!(&read(body, 10, "request body").await.unwrap()[..], b"abcde", "chunks in order");
        let e = read(Full::new(Bytes::from_static(b"abcd")), 3, "event data").await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.to_string(), "event data is larger than the 3 byte limit");
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_a_408() {
        use futures::StreamExt;
        // Two bytes, then silence.
        let frames =
            futures::stream::iter([Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"ab")))])
                .chain(futures::stream::pending());
        let body = http_body_util::StreamBody::new(frames);
        let idle = Duration::from_millis(100);
        let e = read_within(body, 100, "request body", idle, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT);
    }
}
