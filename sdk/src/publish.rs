//! Publishing events from a function (`tern deploy … --allow-publish
//! SUBJECT-PATTERN`): durable when the call returns, delivered at least once
//! to every function triggered by the subject.
//!
//! ```ignore
//! let id = tern_sdk::publish::publish("orders.created", br#"{"id":7}"#)?;
//! ```

use crate::state::tern::events::publisher;
use std::fmt;

/// Why an event was not published (nothing was stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The function was not granted the subject.
    Denied(String),
    /// Not a subject events can be published on, or too large.
    Invalid(String),
    /// No function is triggered by the subject.
    Unrouted(String),
    /// The event log could not store it; trying again later may work.
    Unavailable(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Denied(m)
            | PublishError::Invalid(m)
            | PublishError::Unrouted(m)
            | PublishError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PublishError {}

/// Publishes `data` on `subject`; returns the event's id once it is durable.
pub fn publish(subject: &str, data: impl AsRef<[u8]>) -> Result<String, PublishError> {
    publish_with_headers(subject, data, &[])
}

/// The same, with headers the triggered functions read on the event.
pub fn publish_with_headers(
    subject: &str,
    data: impl AsRef<[u8]>,
    headers: &[(String, String)],
) -> Result<String, PublishError> {
    publisher::publish(subject, data.as_ref(), headers).map_err(|e| match e {
        publisher::Error::Denied(m) => PublishError::Denied(m),
        publisher::Error::Invalid(m) => PublishError::Invalid(m),
        publisher::Error::Unrouted(m) => PublishError::Unrouted(m),
        publisher::Error::Unavailable(m) => PublishError::Unavailable(m),
    })
}
