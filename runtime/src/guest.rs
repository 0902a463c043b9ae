//! A guest still running after its response head: the body it is still
//! writing, and how the end of that body is told apart from a trap (wasmtime
//! ends a body the same way in both cases; the guest's outcome decides).

use crate::failure::{Failed, Failure};
use crate::limits::Limits;
use bytes::Bytes;
use std::time::Duration;
use tern_task::AbortOnDrop;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A response body on its way out of a running guest.
pub struct Streaming {
    /// What was ready with the head.
    pub first: Bytes,
    pub rest: HyperOutgoingBody,
    /// The guest; dropping this stops it and frees its instance.
    pub(crate) task: AbortOnDrop<wasmtime::Result<()>>,
    pub(crate) limits: Limits,
    /// Trailers that came with the head: the body is over, and they end it.
    pub(crate) trailers: Option<http::HeaderMap>,
}

/// How long the end of a body waits for its guest's outcome.
pub(crate) const GUEST_END_WAIT: Duration = Duration::from_millis(100);

/// Whether a body that ended was finished by its guest: wasmtime ends a
/// body the same way when the guest trapped mid-write (its store went), so
/// the guest's own outcome tells them apart. One that finished and goes on
/// working past [`GUEST_END_WAIT`] is taken as done.
pub(crate) async fn guest_finished(
    task: &mut AbortOnDrop<wasmtime::Result<()>>,
    limits: &Limits,
) -> Result<(), Failed> {
    match tokio::time::timeout(GUEST_END_WAIT, &mut task.0).await {
        Ok(Ok(Err(e))) => Err(limits.classify(e)),
        _ => Ok(()),
    }
}

/// Why a response body broke off: the guest trapped, or ran out of time.
pub(crate) async fn broken(
    task: &mut AbortOnDrop<wasmtime::Result<()>>,
    limits: &Limits,
    grace: tokio::time::Instant,
) -> Failed {
    match tokio::time::timeout_at(grace, &mut task.0).await {
        Ok(Ok(Err(e))) => limits.classify(e),
        Err(_) => limits.timed_out(),
        _ => Failure::Trap("response body ended with an error".into()).into(),
    }
}
