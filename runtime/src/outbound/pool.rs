//! Kept-alive connections to upstreams, per function version: a request
//! whose response body was read to the end leaves its connection here for
//! the next request to the same `scheme://host:port`, so a function that
//! calls an API does not pay a TCP (and TLS) handshake per call.
//!
//! The pool belongs to one version's grant: connections were made to
//! addresses that grant allowed, and a new version (maybe with a narrower
//! grant) starts with none. A connection's task is aborted when its entry
//! is dropped, so nothing outlives the pool or a request given up on.

use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use wasmtime_wasi_http::WasiBody;

/// Idle connections kept per upstream, at most: enough for a function
/// calling one API from 128 instances at once without a new handshake.
const MAX_IDLE_PER_UPSTREAM: usize = 128;
/// Idle connections kept over all upstreams, at most (each is a socket).
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstreams with idle connections, at most (a guest picks its hosts).
const MAX_UPSTREAMS: usize = 256;

/// One HTTP/1.1 connection: the handle to send on, and the task driving it.
pub(crate) struct Conn {
    pub sender: SendRequest<WasiBody>,
    task: JoinHandle<()>,
}

impl Conn {
    pub(crate) fn new(sender: SendRequest<WasiBody>, task: JoinHandle<()>) -> Self {
        Conn { sender, task }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection in use, and the upstream (`scheme://host:port`) it goes
/// back under once its response is read to the end.
pub(crate) struct Keep {
    pub conn: Conn,
    pub key: String,
}

#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    by_upstream: HashMap<String, Vec<(Conn, Instant)>>,
    count: usize,
}

impl Pool {
    /// A live idle connection to `upstream` (`scheme://host:port`), if any.
    pub(crate) fn take(&self, upstream: &str) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let Idle { by_upstream, count } = &mut *idle;
        let list = by_upstream.get_mut(upstream)?;
        let now = Instant::now();
        while let Some((conn, since)) = list.pop() {
            *count -= 1;
            if now.duration_since(since) < IDLE_TIMEOUT && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        by_upstream.remove(upstream);
        None
    }

    /// Keeps `conn` for the next request, if it can take one.
    pub(crate) fn put(&self, upstream: &str, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        let Idle { by_upstream, count } = &mut *idle;
        if *count >= MAX_IDLE || (!by_upstream.contains_key(upstream) && by_upstream.len() >= MAX_UPSTREAMS) {
            return;
        }
        let list = by_upstream.entry(upstream.to_string()).or_default();
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push((conn, Instant::now()));
            *count += 1;
        }
    }
}
