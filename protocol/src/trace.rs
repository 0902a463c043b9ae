//! W3C trace context (`traceparent`): the gateway accepts a valid one from
//! the client or starts a trace, and each invocation is a new span of it.
//! <https://www.w3.org/TR/trace-context/#traceparent-header>

use crate::id::quick_u64;

pub const HEADER: &str = "traceparent";

/// A `traceparent`: version 00, trace id, parent (span) id and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// A valid header value, or None (an invalid one is ignored, as the
    /// spec asks, and a new trace starts).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four fields; a later version may add some.
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent { trace_id: trace.into(), span_id: span.into(), flags: flags.into() })
    }

    /// A new trace, sampled.
    pub fn start() -> Self {
        TraceParent {
            trace_id: format!("{:016x}{:016x}", quick_u64(), quick_u64()),
            span_id: new_span(),
            flags: "01".into(),
        }
    }

    /// The next span in the same trace (this invocation, called by `self`).
    pub fn child(&self) -> Self {
        TraceParent { span_id: new_span(), ..self.clone() }
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

fn new_span() -> String {
    // Never all zeros (invalid): the id is distinct per call, and one
    // zero in 2^64 becomes 1.
    format!("{:016x}", quick_u64().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_parent_is_kept_and_a_child_shares_its_trace() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(v).unwrap();
        assert_eq!(p.header_value(), v);
        let c = p.child();
        assert_eq!(c.trace_id, p.trace_id);
        assert_ne!(c.span_id, p.span_id);
        assert!(TraceParent::parse(&c.header_value()).is_some());
    }

    #[test]
    fn invalid_parents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        let started = TraceParent::start();
        assert!(TraceParent::parse(&started.header_value()).is_some());
    }
}
