//! A guest's stdout and stderr: captured up to a cap, never an error.
//!
//! A pipe that fails a write past its capacity (wasmtime's
//! `MemoryOutputPipe`) makes Rust's `println!` panic, so a chatty function
//! would trap instead of answering. This one accepts every write, keeps
//! the first `cap` bytes and counts the rest, which the function's log
//! then reports in one line.

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The write size offered to the guest at a time; any amount is accepted.
const PERMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct CappedOutput {
    state: Arc<Mutex<State>>,
}

struct State {
    kept: BytesMut,
    cap: usize,
    dropped: u64,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput { state: Arc::new(Mutex::new(State { kept: BytesMut::new(), cap, dropped: 0 })) }
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub fn contents(&self) -> (Bytes, u64) {
        let s = self.state.lock();
        (s.kept.clone().freeze(), s.dropped)
    }

    fn keep(&self, bytes: &[u8]) {
        let mut s = self.state.lock();
        let room = s.cap.saturating_sub(s.kept.len());
        let take = room.min(bytes.len());
        s.kept.extend_from_slice(&bytes[..take]);
        s.dropped += (bytes.len() - take) as u64;
    }
}

/// A guest's stdout or stderr as its instance sees it: the capture of the
/// request running now. A reused instance ([`crate::reuse`]) is switched
/// to the next request's capture between requests, so a stream handle the
/// guest kept from an earlier request writes to the current one.
#[derive(Clone)]
pub struct Redirect {
    to: Arc<Mutex<CappedOutput>>,
}

impl Redirect {
    pub fn new(to: CappedOutput) -> Self {
        Redirect { to: Arc::new(Mutex::new(to)) }
    }

    pub fn switch(&self, to: CappedOutput) {
        *self.to.lock() = to;
    }

    fn keep(&self, bytes: &[u8]) {
        self.to.lock().keep(bytes);
    }
}

impl OutputStream for Redirect {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Redirect {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Redirect {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Redirect {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Redirect {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_cap_are_counted_not_refused() {
        let out = CappedOutput::new(4);
        let mut handle = Redirect::new(out.clone()).p2_stream();
        assert!(handle.write(Bytes::from_static(b"abc")).is_ok());
        assert!(handle.write(Bytes::from_static(b"defgh")).is_ok());
        assert_eq!(handle.check_write().unwrap(), PERMIT, "always ready for more");
        let (kept, dropped) = out.contents();
        assert_eq!((&kept[..], dropped), (&b"abcd"[..], 4));
    }

    #[test]
    fn a_kept_handle_writes_to_the_current_capture() {
        let (first, second) = (CappedOutput::new(64), CappedOutput::new(64));
        let out = Redirect::new(first.clone());
        let mut handle = out.p2_stream();
        handle.write(Bytes::from_static(b"one")).unwrap();
        out.switch(second.clone());
        handle.write(Bytes::from_static(b"two")).unwrap();
        assert_eq!(&first.contents().0[..], b"one");
        assert_eq!(&second.contents().0[..], b"two");
    }
}
