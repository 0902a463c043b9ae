//! Reading request bodies under a limit, and the small responses the
//! gateway writes itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use std::convert::Infallible;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{what} is larger than the {limit} byte limit")]
    TooLarge { what: &'static str, limit: usize },
    #[error("could not read {what}: {reason}")]
    Broken { what: &'static str, reason: String },
}

impl BodyError {
    /// 413 for a body past its limit, 400 for one that broke off.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Broken { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads all of `body`, or fails as soon as it passes `limit` bytes.
/// `what` names it in the error ("request body", "event data").
pub async fn read<B>(body: B, limit: usize, what: &'static str) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { what, limit })
        }
        Err(e) => Err(BodyError::Broken { what, reason: e.to_string() }),
    }
}

pub fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
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

    #[tokio::test]
    async fn a_body_past_its_limit_is_413_and_names_itself() {
        let ok = read(Full::new(Bytes::from_static(b"abc")), 3, "event data").await.unwrap();
        assert_eq!(&ok[..], b"abc");
        let e = read(Full::new(Bytes::from_static(b"abcd")), 3, "event data").await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.to_string(), "event data is larger than the 3 byte limit");
    }
}
