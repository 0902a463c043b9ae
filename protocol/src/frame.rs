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
    fn truncated_frames_are_errors_not_panics() {
        assert!(Frame::<u32>::decode(Bytes::from_static(b"\0\0")).is_err());
        assert!(Frame::<u32>::decode(Bytes::from_static(b"\0\0\0\x09{}")).is_err());
        assert!(Frame::<u32>::decode(Bytes::from_static(b"\0\0\0\x02{]")).is_err());
    }
}
