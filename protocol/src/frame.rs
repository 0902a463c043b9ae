//! One message = a small JSON header plus an opaque byte body.
//!
//! Bodies (HTTP bodies, components) go on the wire as raw bytes, never as JSON
//! arrays: an 8 MiB body would otherwise grow to ~30 MiB of text.
//!
//! Layout: `u32 big-endian header length | header JSON | body`.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message too short for a frame ({0} bytes)")]
    Truncated(usize),
    #[error("frame header is not valid: {0}")]
    Header(#[from] serde_json::Error),
}

/// A decoded frame: the header, and the body as a cheap slice of the message.
#[derive(Debug)]
pub struct Frame<H> {
    pub header: H,
    pub body: Bytes,
}

impl<H: Serialize> Frame<H> {
    pub fn new(header: H, body: impl Into<Bytes>) -> Self {
        Frame { header, body: body.into() }
    }

    pub fn encode(&self) -> Bytes {
        // Serialising our own header types cannot fail: no maps with
        // non-string keys, no custom Serialize impls that error.
        let header = serde_json::to_vec(&self.header).expect("frame header serialises");
        let mut buf = BytesMut::with_capacity(4 + header.len() + self.body.len());
        buf.put_u32(header.len() as u32);
        buf.put_slice(&header);
        buf.put_slice(&self.body);
        buf.freeze()
    }
}

impl<H: DeserializeOwned> Frame<H> {
    pub fn decode(msg: Bytes) -> Result<Self, FrameError> {
        if msg.len() < 4 {
            return Err(FrameError::Truncated(msg.len()));
        }
        let len = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
        if msg.len() < 4 + len {
            return Err(FrameError::Truncated(msg.len()));
        }
        let header = serde_json::from_slice(&msg[4..4 + len])?;
        Ok(Frame { header, body: msg.slice(4 + len..) })
    }
}

/// A control reply (scheduler or worker) on the wire: a frame whose header
/// is the `Reply` and whose body is empty. Every role encodes and decodes
/// replies here, so there is one format.
pub fn encode_reply<T: Serialize>(reply: &crate::Reply<T>) -> Bytes {
    Frame::new(reply, Bytes::new()).encode()
}

/// Decodes what [`encode_reply`] made; a malformed reply is an internal
/// error that names who sent it.
pub fn decode_reply<T: DeserializeOwned>(msg: Bytes, from: &str) -> crate::Reply<T> {
    Frame::<crate::Reply<T>>::decode(msg)
        .map_err(|e| crate::ApiError::internal(format!("{from} sent a malformed reply: {e}")))?
        .header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_binary_body() {
        let body: Vec<u8> = (0..=255).collect();
        let f = Frame::new(vec!["a".to_string()], body.clone()).encode();
        let d: Frame<Vec<String>> = Frame::decode(f).unwrap();
        assert_eq!(d.header, vec!["a"]);
        assert_eq!(&d.body[..], &body[..]);
    }

    #[test]
    fn replies_round_trip_and_bad_ones_say_who_sent_them() {
        let ok: crate::Reply<u32> = Ok(7);
        assert_eq!(decode_reply::<u32>(encode_reply(&ok), "x"), Ok(7));
        let err = decode_reply::<u32>(Bytes::from_static(b"junk"), "worker w1").unwrap_err();
        assert!(err.message.contains("worker w1 sent a malformed reply"), "{err:?}");
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        assert!(Frame::<u32>::decode(Bytes::from_static(b"\0\0")).is_err());
        assert!(Frame::<u32>::decode(Bytes::from_static(b"\0\0\0\x09{}")).is_err());
        assert!(Frame::<u32>::decode(Bytes::from_static(b"\0\0\0\x02{]")).is_err());
    }
}
