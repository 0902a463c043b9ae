//! The per-request store data: WASI contexts, the resource table, limits and
//! the hooks that decide what a function may reach.

use crate::output::CappedOutput;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Per-invocation cap on captured stdout and stderr (each). A guest that
/// writes more goes on; the rest is counted and dropped.
pub(crate) const LOG_CAPTURE_BYTES: usize = 64 * 1024;

pub struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: DenyOutbound,
    pub(crate) limits: MemoryLimit,
}

impl Host {
    pub(crate) fn new(
        env: &[(String, String)],
        memory_bytes: usize,
        stdout: CappedOutput,
        stderr: CappedOutput,
    ) -> Self {
        // No preopened dirs, no sockets, no inherited env or args: a
        // function gets only what its spec grants.
        let wasi = WasiCtx::builder().envs(env).stdout(stdout).stderr(stderr).build();
        Host {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: DenyOutbound,
            limits: MemoryLimit { max: memory_bytes, hit: Arc::new(AtomicBool::new(false)) },
        }
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

/// Outbound HTTP is a grant (an allow-list per function, not built yet);
/// until a function has one, every outgoing request is denied.
struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The function's memory limit, remembering whether a grow was refused so a
/// resulting trap can be reported as "memory limit" rather than a bare abort.
pub(crate) struct MemoryLimit {
    max: usize,
    pub(crate) hit: Arc<AtomicBool>,
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold pointers; cap them at the same byte budget.
        Ok(desired.saturating_mul(std::mem::size_of::<usize>()) <= self.max)
    }
}
