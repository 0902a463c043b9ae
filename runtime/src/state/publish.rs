//! `tern:events/publisher`: a function publishes an event into the node's
//! event log, on a subject its `--allow-publish` patterns cover.

use super::StateView;
use super::bindings::tern::events::publisher::{Error, Host};
use bytes::Bytes;
use tern_events::EventError;

/// Headers one event may carry, and their bytes together.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;

impl Host for StateView<'_> {
    async fn publish(
        &mut self,
        subject: String,
        data: Vec<u8>,
        mut headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<String, Error>> {
        let grants = &self.state.grants;
        if let Err(e) = tern_protocol::nats_subject::check_event_subject(&subject) {
            return Ok(Err(Error::Invalid(e)));
        }
        if !grants.publish.iter().any(|p| p.matches(&subject)) {
            return Ok(Err(Error::Denied(format!(
                "this function may not publish on {subject:?} (deploy with --allow-publish {subject})"
            ))));
        }
        let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
            return Ok(Err(Error::Invalid(format!(
                "an event carries at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes together"
            ))));
        }
        if data.len() > grants.max_event_bytes {
            return Ok(Err(Error::Invalid(format!(
                "the event's data is {} bytes; the most is {}",
                data.len(),
                grants.max_event_bytes
            ))));
        }
        // The event carries the invocation's trace on, unless the guest
        // set its own.
        if let Some(trace) = &self.state.trace
            && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(tern_protocol::trace::HEADER))
        {
            headers.push((tern_protocol::trace::HEADER.into(), trace.child().header_value()));
        }
        Ok(match grants.events.publish(&subject, headers, Bytes::from(data)).await {
            Ok(stored) => Ok(stored.id),
            Err(EventError::Unrouted(s)) => {
                Err(Error::Unrouted(format!("no function is triggered by {s:?}; the event was not stored")))
            }
            Err(EventError::Subject { reason, .. }) => Err(Error::Invalid(reason)),
            Err(e) => Err(Error::Unavailable(format!("the event was not stored: {e}"))),
        })
    }
}
