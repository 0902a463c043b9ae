//! The Tern worker runtime: one wasmtime engine per process, components
//! compiled once and cached by digest, a fresh instance per request made from
//! a pre-instantiated component, and per-function limits.
//!
//! The data path, top to bottom: [`worker`] takes an invoke message off the
//! function's queue subscription → the loaded version's world decodes it
//! ([`http`]: one request; [`event`]: a batch of events) → [`instance`]
//! builds a fresh `Store` with the function's limits and captured output →
//! the world instantiates its pre-instantiated component and calls the
//! guest → the reply frame goes back on the bus, the logs to the function's
//! log subject.

pub mod artifact;
mod capture;
pub mod event;
mod failure;
mod fetch;
mod guest;
mod host;
pub mod http;
pub mod instance;
mod journal;
mod kind;
mod kinds;
mod limits;
mod load;
mod log_limit;
mod lru;
pub mod memory;
mod meter;
pub mod outbound;
mod output;
mod reuse;
pub mod state;
pub mod stream;
pub mod worker;

pub use artifact::{ArtifactCache, ValidateError, digest_of};
pub use event::EventFunction;
pub use failure::Failure;
pub use http::HttpFunction;
pub use instance::{Function, Invoked};
pub use kinds::check_spec;
pub use worker::{Worker, WorkerConfig};

use host::Host;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the resolution of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not configure the wasmtime engine: {0}")]
    Engine(String),
    #[error("could not link host interfaces: {0}")]
    Link(String),
    #[error("artifact cache at {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// Tunables of the engine; defaults suit one node of a small cluster.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances alive at once across all functions (pool slots).
    pub max_instances: u32,
    /// Bytes of each linear memory slot kept resident (reset by copying
    /// instead of madvise) when an instance ends. See BENCHMARKS.md: this is
    /// what makes a hello request cheap. 8 MiB holds what a Python or
    /// JavaScript interpreter dirties, even after a reused instance's 1,000
    /// requests (about 2.2 MiB); a slot over it is decommitted whole (see
    /// vendor/README.md), so only pages an instance wrote ever stay.
    pub memory_keep_resident: usize,
    pub table_keep_resident: usize,
    /// Where compiled artifacts are cached across restarts.
    pub cache_dir: PathBuf,
}

impl RuntimeConfig {
    pub fn new(cache_dir: PathBuf) -> Self {
        RuntimeConfig {
            max_instances: 1000,
            memory_keep_resident: 8 << 20,
            table_keep_resident: 64 << 10,
            cache_dir,
        }
    }
}

/// The engine, the linker with every host interface, and the artifact cache:
/// everything shared by all functions on this node.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Host>,
    cache: ArtifactCache,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, RuntimeError> {
        let engine = build_engine(&config)?;
        let mut linker = Linker::<Host>::new(&engine);
        // The whole of wasi:cli, not just the proxy world: components built
        // with Rust std import wasi:cli/environment, exit, stdio, and a
        // proxy-only linker would reject them.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| RuntimeError::Link(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Link(e.to_string()))?;
        state::add_to_linker(&mut linker, Host::state).map_err(|e| RuntimeError::Link(e.to_string()))?;
        let cache = ArtifactCache::open(engine.clone(), config.cache_dir.clone())?;
        spawn_epoch_ticker(&engine);
        Ok(Arc::new(Runtime { engine, linker, cache }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// Checks that `bytes` is a component Tern can run and compiles it into
    /// the cache, so the worker that loads it later does not compile again.
    pub async fn validate(
        self: &Arc<Self>,
        bytes: bytes::Bytes,
    ) -> Result<tern_protocol::World, ValidateError> {
        artifact::validate_and_cache(self, bytes).await
    }
}

fn build_engine(rc: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(rc.max_instances)
        // A Rust wasip2 component is a handful of core instances (main
        // module, shims, fixups), one memory and a few tables.
        .total_core_instances(rc.max_instances * 8)
        .total_memories(rc.max_instances)
        .total_tables(rc.max_instances * 4)
        .total_stacks(rc.max_instances)
        // What one instance may take of the pool, whatever the component
        // asks: room for Rust, Python and JavaScript components (a few to
        // a few dozen core modules), not for a component built to exhaust
        // the pool. Their memory is bounded together by `--memory` (see
        // `host::MemoryLimit`).
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(32)
        .max_memory_size((tern_protocol::MAX_MEMORY_MIB as usize) << 20)
        .linear_memory_keep_resident(rc.memory_keep_resident)
        .table_keep_resident(rc.table_keep_resident)
        // With PAGEMAP_SCAN (Linux >= 6.7) only the pages an instance
        // dirtied are reset, instead of memset over the whole kept-resident
        // region; elsewhere wasmtime falls back to the memset.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// One thread per engine advances the epoch; a store whose deadline passes
/// traps at its next epoch check, so a spinning guest stops on time.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("tern-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch thread");
}
