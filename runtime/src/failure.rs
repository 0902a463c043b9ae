//! Why an invocation produced no usable result ([`Failure`]), typed where
//! it is raised: the client gets a status and a one-line reason, the
//! function's log the detail.

use std::time::Duration;
use wasmtime::{PoolConcurrencyLimitError, Trap};

/// A failure and, for the function's log, its detail (a backtrace).
pub struct Failed(pub Failure, pub Option<String>);

impl From<Failure> for Failed {
    fn from(f: Failure) -> Self {
        Failed(f, None)
    }
}

/// Why an invocation produced no usable result. The client sees the status
/// and a short message; the function's log gets the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout(Duration),
    MemoryLimit(u32),
    StackOverflow,
    Trap(String),
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with an error code instead of a response.
    ErrorResponse(String),
    ResponseTooLarge(usize),
    /// Every instance slot on this node is busy.
    Capacity,
    /// The node's memory budget had no room for another instance of this
    /// many MiB within the function's timeout.
    NodeMemory(u32),
    BadRequest(String),
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::Timeout(_) => 504,
            Failure::NoResponse | Failure::ErrorResponse(_) | Failure::ResponseTooLarge(_) => 502,
            Failure::Capacity | Failure::NodeMemory(_) => 503,
            Failure::BadRequest(_) => 400,
            Failure::MemoryLimit(_) | Failure::StackOverflow | Failure::Trap(_) => 500,
        }
    }

    /// What the client is told: the kind of failure, never guest internals.
    pub fn public_message(&self) -> String {
        match self {
            Failure::Timeout(d) => format!("function timed out after {}", humanize(*d)),
            Failure::MemoryLimit(mib) => format!("function exceeded its memory limit of {mib} MiB"),
            Failure::StackOverflow => "function overflowed its stack".into(),
            Failure::Trap(_) => "function failed (trap)".into(),
            Failure::NoResponse => "function returned without sending a response".into(),
            Failure::ErrorResponse(_) => "function failed to produce a response".into(),
            Failure::ResponseTooLarge(limit) => {
                format!("function response is larger than the {limit} byte limit")
            }
            Failure::Capacity => "worker is at capacity, try again".into(),
            Failure::NodeMemory(mib) => {
                format!("worker has no memory left for another instance of {mib} MiB, try again")
            }
            Failure::BadRequest(m) => format!("bad request: {m}"),
        }
    }

    /// What the function's log says.
    pub(crate) fn log_line(&self) -> String {
        match self {
            Failure::Trap(detail) => format!("invocation failed: trap: {detail}"),
            Failure::ErrorResponse(detail) => {
                format!("invocation failed: guest set an error response: {detail}")
            }
            other => format!("invocation failed: {}", other.public_message()),
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Lines of trap detail (backtrace) kept in the log: a stack overflow's
/// backtrace is thousands of identical frames.
const DETAIL_LINES: usize = 24;

pub(crate) fn classify_error(
    e: wasmtime::Error,
    memory_hit: bool,
    timeout: Duration,
    memory_mib: u32,
) -> Failed {
    let full = format!("{e:?}");
    let mut detail: String = full.lines().take(DETAIL_LINES).collect::<Vec<_>>().join("\n");
    if full.lines().count() > DETAIL_LINES {
        detail.push_str(&format!("\n    … (backtrace cut; cause: {})", e.root_cause()));
    }
    let failure = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Timeout(timeout),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        _ if memory_hit => Failure::MemoryLimit(memory_mib),
        // The pooling allocator's own error type: every slot is taken.
        _ if e.chain().any(|c| c.is::<PoolConcurrencyLimitError>()) => Failure::Capacity,
        Some(t) => Failure::Trap(t.to_string()),
        None => Failure::Trap(format!("{e:#}")),
    };
    Failed(failure, Some(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_statuses_and_never_leak_guest_detail() {
        let trap = Failure::Trap("secret internals at 0x1234".into());
        assert_eq!(trap.status(), 500);
        assert!(!trap.public_message().contains("secret"));
        assert!(trap.log_line().contains("secret"), "the function's own log gets the detail");
        assert_eq!(
            Failure::Timeout(Duration::from_millis(1500)).public_message(),
            "function timed out after 1500ms"
        );
        assert_eq!(Failure::Timeout(Duration::from_secs(2)).public_message(), "function timed out after 2s");
        assert_eq!(Failure::Capacity.status(), 503);
        assert_eq!(Failure::NoResponse.status(), 502);
    }

    #[test]
    fn a_full_instance_pool_reads_as_capacity_by_its_type() {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_core_instances(1);
        let mut config = wasmtime::Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, b"\0asm\x01\0\0\0").unwrap();
        let mut first = wasmtime::Store::new(&engine, ());
        wasmtime::Instance::new(&mut first, &module, &[]).unwrap();
        let mut second = wasmtime::Store::new(&engine, ());
        let e = wasmtime::Instance::new(&mut second, &module, &[]).unwrap_err();
        let Failed(f, _) = classify_error(e.context("instantiating"), false, Duration::from_secs(1), 64);
        assert_eq!(f, Failure::Capacity);
    }

    #[test]
    fn a_refused_grow_reads_as_the_memory_limit() {
        let Failed(f, detail) =
            classify_error(wasmtime::Error::msg("unreachable"), true, Duration::from_secs(1), 64);
        assert_eq!(f, Failure::MemoryLimit(64));
        assert!(detail.is_some());
        let Failed(f, _) = classify_error(Trap::Interrupt.into(), false, Duration::from_secs(1), 64);
        assert_eq!(f, Failure::Timeout(Duration::from_secs(1)));
    }
}
