//! Component validation and the compiled-artifact cache.
//!
//! Components are addressed by the sha256 of their bytes. Compiled code is
//! cached in memory and on disk under `<digest>-<engine hash>.cwasm`, so a
//! component is compiled once per engine configuration and a restarted node
//! loads it without compiling.

use crate::RuntimeError;
use crate::host::Host;
use crate::kind::Kind;
use crate::kinds::KINDS;
use crate::lru::ByteLru;
use bytes::Bytes;
use parking_lot::Mutex;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use tern_protocol::World;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use tern_artifacts::digest_of;

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("the file is empty; expected a WebAssembly component")]
    Empty,
    #[error(
        "this is not a WebAssembly binary (it does not start with \\0asm); expected a component built for wasm32-wasip2"
    )]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target, or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("the component is not valid: {0}")]
    Invalid(String),
    #[error("the component exports neither {wanted}; it exports: {found}")]
    NoSupportedWorld { wanted: String, found: String },
    #[error("the component needs something Tern does not provide: {0}")]
    Imports(String),
    #[error("internal error while validating: {0}")]
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not fetch artifact {digest}: {reason}")]
    Fetch { digest: String, reason: String },
    #[error("artifact {digest} arrived corrupted (its sha256 is {actual})")]
    DigestMismatch { digest: String, actual: String },
    #[error("artifact {digest} does not compile: {reason}")]
    Compile { digest: String, reason: String },
    #[error("artifact {digest} cannot be served: {reason}")]
    Link { digest: String, reason: String },
}

/// Compiled code kept in memory, at most (by image size).
pub const MEMORY_CACHE_BYTES: usize = 1 << 30;
/// Compiled code kept on disk, at most; the oldest files go first.
pub const DISK_CACHE_BYTES: u64 = 8 << 30;

pub struct ArtifactCache {
    engine: Engine,
    dir: PathBuf,
    engine_hash: String,
    compiled: Mutex<ByteLru<Component>>,
}

/// Bytes of a compiled component's code and data (mapped from its file).
pub(crate) fn image_bytes(c: &Component) -> usize {
    let r = c.image_range();
    (r.end as usize).saturating_sub(r.start as usize)
}

impl ArtifactCache {
    pub(crate) fn open(engine: Engine, dir: PathBuf) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::Cache { path: dir.clone(), source })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());
        Ok(ArtifactCache { engine, dir, engine_hash, compiled: Mutex::new(ByteLru::new(MEMORY_CACHE_BYTES)) })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// A compiled component from memory or disk, without compiling. Blocking.
    pub fn get(&self, digest: &str) -> Option<Component> {
        if !tern_protocol::valid_digest(digest) {
            return None;
        }
        if let Some(c) = self.compiled.lock().get(digest) {
            return Some(c);
        }
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: files in the cache dir are only written by `put`, from
        // `Component::serialize` of this engine configuration (the engine
        // hash is in the name), and wasmtime checks the header it wrote.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(c) => {
                self.compiled.lock().insert(digest.to_string(), c.clone(), image_bytes(&c));
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unreadable cached artifact: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps a compiled component in memory and on disk. Blocking.
    fn put(&self, digest: &str, component: &Component) {
        self.compiled.lock().insert(digest.to_string(), component.clone(), image_bytes(component));
        let path = self.path(digest);
        let write = || -> Result<(), String> {
            let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
            // Write then rename, so a crash never leaves a half file that a
            // restart would try to load.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), "could not cache compiled artifact: {e}");
        }
        self.trim_disk(DISK_CACHE_BYTES);
    }

    /// Deletes the oldest cached files until the rest fit in `budget`
    /// bytes. A component already loaded keeps working (its file is
    /// mapped); one loaded later is compiled again.
    fn trim_disk(&self, budget: u64) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .filter(|(_, _, p)| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= budget {
                break;
            }
            tracing::info!(path = %path.display(), "trimming the compiled-artifact cache");
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// Compiles `bytes` (already known to be `digest`) unless cached, and
    /// caches the result. Blocking.
    pub(crate) fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, String> {
        if !tern_protocol::valid_digest(digest) {
            return Err(format!("{digest:?} is not a sha256 digest"));
        }
        if let Some(c) = self.get(digest) {
            return Ok(c);
        }
        let c = self.compile_uncached(digest, bytes)?;
        self.put(digest, &c);
        Ok(c)
    }

    fn compile_uncached(&self, digest: &str, bytes: &[u8]) -> Result<Component, String> {
        let started = std::time::Instant::now();
        let c = Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        tracing::info!(digest, ms = started.elapsed().as_millis() as u64, "compiled component");
        Ok(c)
    }

    /// Digests of every component compiled for this engine, in memory or on
    /// disk (the scheduler prefers placing functions where these are).
    pub fn digests(&self) -> Vec<String> {
        let mut out: Vec<String> = self.compiled.lock().keys().cloned().collect();
        let suffix = format!("-{}.cwasm", self.engine_hash);
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for entry in dir.flatten() {
                if let Some(d) = entry.file_name().to_str().and_then(|n| n.strip_suffix(&suffix)) {
                    out.push(d.to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Forgets the in-memory copy (the disk copy stays for a later load).
    pub fn evict(&self, digest: &str) {
        self.compiled.lock().remove(digest);
    }
}

/// The exports that decide a component's kind: the first of
/// [`crate::kinds::KINDS`] whose interface it exports.
pub(crate) fn kind_of(engine: &Engine, component: &Component) -> Result<&'static dyn Kind, ValidateError> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let has = |iface: &str| {
        names.iter().any(|n| n == iface || n.strip_prefix(iface).is_some_and(|rest| rest.starts_with('@')))
    };
    KINDS.iter().copied().find(|k| has(k.export())).ok_or_else(|| {
        let found = if names.is_empty() { "nothing".to_string() } else { names.join(", ") };
        let wanted: Vec<String> = KINDS.iter().map(|k| format!("{} ({})", k.export(), k.noun())).collect();
        ValidateError::NoSupportedWorld { wanted: wanted.join(" nor "), found }
    })
}

/// Checks the shape of the bytes before handing them to the compiler, so the
/// common mistakes get a message that says what to do.
fn check_header(bytes: &[u8]) -> Result<(), ValidateError> {
    if bytes.is_empty() {
        return Err(ValidateError::Empty);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ValidateError::NotWasm);
    }
    // Core modules are version 1 layer 0; components carry layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(ValidateError::CoreModule);
    }
    Ok(())
}

pub(crate) fn validate_blocking(
    engine: &Engine,
    linker: &Linker<Host>,
    cache: &ArtifactCache,
    bytes: &[u8],
) -> Result<World, ValidateError> {
    check_header(bytes)?;
    let digest = digest_of(bytes);
    let (component, cached) = match cache.get(&digest) {
        Some(c) => (c, true),
        None => (cache.compile_uncached(&digest, bytes).map_err(ValidateError::Invalid)?, false),
    };
    // Imports first: a component asking for what Tern lacks hears that,
    // whatever else is wrong with it.
    let pre = linker.instantiate_pre(&component).map_err(|e| ValidateError::Imports(format!("{e:#}")))?;
    let kind = kind_of(engine, &component)?;
    kind.check_exports(pre).map_err(ValidateError::Invalid)?;
    // Only components that passed every check take space in the cache.
    if !cached {
        cache.put(&digest, &component);
    }
    Ok(kind.world())
}

pub(crate) async fn validate_and_cache(
    runtime: &std::sync::Arc<crate::Runtime>,
    bytes: Bytes,
) -> Result<World, ValidateError> {
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || validate_blocking(&rt.engine, &rt.linker, &rt.cache, &bytes))
        .await
        .map_err(|e| ValidateError::Internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_mistake() {
        assert!(matches!(check_header(b""), Err(ValidateError::Empty)));
        assert!(matches!(check_header(b"hello world"), Err(ValidateError::NotWasm)));
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(ValidateError::CoreModule)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(digest_of(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
