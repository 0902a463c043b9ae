//! The per-request store data: WASI contexts, the resource table, limits and
//! the hooks that decide what a function may reach ([`crate::outbound`]).

use crate::limits::Deadline;
use crate::memory::Held;
use crate::outbound::OutboundHooks;
use crate::output::{CappedOutput, Redirect};
use crate::state::{Grants, State, StateView};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tern_protocol::trace::TraceParent;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Per-invocation cap on captured stdout and stderr (each). A guest that
/// writes more goes on; the rest is counted and dropped.
pub(crate) const LOG_CAPTURE_BYTES: usize = 64 * 1024;

pub struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    state: State,
    pub(crate) limits: MemoryLimit,
    stdout: Redirect,
    stderr: Redirect,
    /// When the running invocation's time is up (the epoch check reads it).
    pub(crate) deadline: Deadline,
}

/// What belongs to one invocation rather than to its instance: a reused
/// instance ([`crate::reuse`]) gets a new one for each request it serves.
pub(crate) struct Call {
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
    pub hooks: OutboundHooks,
    pub config: Arc<BTreeMap<String, String>>,
    pub trace: Option<TraceParent>,
    pub deadline: Deadline,
}

impl Host {
    pub(crate) fn new(
        env: &[(String, String)],
        grants: Arc<Grants>,
        memory_bytes: usize,
        held: Held,
        call: Call,
    ) -> Self {
        let (stdout, stderr) = (Redirect::new(call.stdout), Redirect::new(call.stderr));
        // No preopened dirs, no sockets, no inherited env or args: a
        // function gets only what its spec grants.
        let wasi = WasiCtx::builder().envs(env).stdout(stdout.clone()).stderr(stderr.clone()).build();
        Host {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: call.hooks,
            state: State::new(grants, call.config, call.trace),
            limits: MemoryLimit::new(memory_bytes, Some(held)),
            stdout,
            stderr,
            deadline: call.deadline,
        }
    }

    /// Readies a kept instance for its next invocation: that one's output,
    /// hooks, config, trace, deadline, and a fresh count of its peak memory.
    pub(crate) fn begin(&mut self, call: Call) {
        self.stdout.switch(call.stdout);
        self.stderr.switch(call.stderr);
        self.hooks = call.hooks;
        self.state.begin(call.config, call.trace);
        self.deadline = call.deadline;
        self.limits.begin();
    }
}

impl Host {
    pub(crate) fn state(&mut self) -> StateView<'_> {
        StateView { state: &mut self.state, table: &mut self.table }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// The function's memory limit, for all of one store together: every
/// linear memory and every table of every core instance in the component
/// counts against the one `--memory` budget (a component of several core
/// modules, each with its own memory, gets no more than one with one).
/// Remembers whether a grow was refused, so the trap that follows is
/// reported as "memory limit" rather than a bare abort.
pub(crate) struct MemoryLimit {
    max: usize,
    used: usize,
    pub(crate) hit: Arc<AtomicBool>,
    /// The most `used` has been: the invocation's peak memory.
    pub(crate) peak: Arc<AtomicU64>,
    /// The instance's share of the node's memory, given back with the store.
    node: Option<Held>,
}

impl MemoryLimit {
    pub(crate) fn new(max: usize, node: Option<Held>) -> Self {
        MemoryLimit { max, used: 0, hit: Arc::new(AtomicBool::new(false)), peak: Arc::default(), node }
    }

    /// A new invocation in the same instance: its own flag and peak, the
    /// peak starting from what the instance already has.
    fn begin(&mut self) {
        self.hit = Arc::new(AtomicBool::new(false));
        self.peak = Arc::new(AtomicU64::new(self.used as u64));
    }

    /// Takes `extra` bytes from the budget, if they fit.
    fn take(&mut self, extra: usize) -> bool {
        match self.used.checked_add(extra) {
            Some(total) if total <= self.max => {
                self.used = total;
                self.peak.fetch_max(total as u64, Ordering::Relaxed);
                if let Some(node) = &mut self.node {
                    node.grew(extra as u64);
                }
                true
            }
            _ => {
                self.hit.store(true, Ordering::Relaxed);
                false
            }
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.take(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold pointers: their bytes come out of the same budget.
        Ok(self.take(desired.saturating_sub(current).saturating_mul(std::mem::size_of::<usize>())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn every_memory_and_table_shares_one_budget() {
        let mut l = MemoryLimit::new(100, None);
        assert!(l.memory_growing(0, 40, None).unwrap(), "first memory");
        assert!(l.memory_growing(0, 40, None).unwrap(), "second memory");
        assert!(!l.memory_growing(0, 40, None).unwrap(), "a third would pass the budget together");
        assert!(l.hit.load(Ordering::Relaxed));
        assert!(l.table_growing(0, 2, None).unwrap(), "16 bytes of table fit in the 20 left");
        assert!(!l.table_growing(2, 3, None).unwrap());
        assert!(l.memory_growing(40, 44, None).unwrap(), "growing one memory takes only the difference");
    }
}
