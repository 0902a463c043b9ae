//! NATS subject syntax (in `tern_protocol::nats_subject`), with the bus's
//! error type.

use crate::BusError;
pub use tern_protocol::nats_subject::SubjectPattern;

pub fn validate_subject(subject: &str, allow_wildcards: bool) -> Result<(), BusError> {
    tern_protocol::nats_subject::check(subject, allow_wildcards)
        .map_err(|reason| BusError::InvalidSubject { subject: subject.to_string(), reason })
}
