//! Streamed responses: send the head now and write the body as it comes
//! (server-sent events, progress output, large downloads). Tern passes
//! each write on to the client as it is made; a client that reads slowly
//! makes `write` wait, and one that goes away stops the function.
//!
//! ```ignore
//! fn handle(req: tern_sdk::Request, out: tern_sdk::stream::Responder) {
//!     let mut body = out.start(200, &[("content-type", "text/event-stream")]);
//!     for i in 0..5 {
//!         body.write_all(format!("data: {i}\n\n").as_bytes())?;
//!         tern_sdk::stream::sleep(std::time::Duration::from_millis(200));
//!     }
//!     body.finish();
//! }
//!
//! tern_sdk::streaming_function!(handle);
//! ```

use std::io::{self, Write};
use std::time::Duration;
use wasi::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::OutputStream;

/// The right to answer one request, with a streamed body.
pub struct Responder {
    out: ResponseOutparam,
}

impl Responder {
    #[doc(hidden)]
    pub fn new(out: ResponseOutparam) -> Self {
        Responder { out }
    }

    /// Sends the head; the returned writer is the body. Headers the host
    /// refuses are left out (and said on stderr).
    pub fn start(self, status: u16, headers: &[(&str, &str)]) -> BodyWriter {
        let entries: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        let fields = Fields::from_list(&entries).unwrap_or_else(|e| {
            eprintln!("response headers rejected by the host: {e:?}");
            Fields::new()
        });
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(status);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(self.out, Ok(response));
        let stream = body.write().expect("a new body has a stream");
        BodyWriter { stream: Some(stream), body: Some(body) }
    }
}

/// A response body being written. Each `write` (or `write_all`, `flush`)
/// goes to the client as it is made. Dropping it finishes the body.
pub struct BodyWriter {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl BodyWriter {
    /// Ends the body: the client's response is complete.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take()
            && let Err(e) = OutgoingBody::finish(body, None)
        {
            eprintln!("could not finish the response body: {e:?}");
        }
    }
}

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let stream = self.stream.as_mut().ok_or_else(|| io::Error::other("the body is finished"))?;
        // Written and flushed at once, so the client sees it now.
        let n = buf.len().min(4096);
        stream.blocking_write_and_flush(&buf[..n]).map_err(|e| io::Error::other(format!("{e:?}")))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        self.end();
    }
}

/// Waits `d` without spinning (a guest's clock; it does not count as work).
pub fn sleep(d: Duration) {
    wasi::clocks::monotonic_clock::subscribe_duration(d.as_nanos().min(u64::MAX as u128) as u64).block();
}
