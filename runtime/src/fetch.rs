//! Getting a function's compiled component onto this node: from the
//! artifact cache, or else read from the cluster's artifact store, or
//! fetched by digest from the scheduler in chunks (each fits one bus
//! message); checked against its digest, compiled and cached.

use crate::Runtime;
use crate::artifact::{LoadError, digest_of};
use bytes::Bytes;
use std::time::Duration;
use tern_artifacts::ArtifactStore;
use tern_bus::Bus;
use tern_protocol::{ArtifactChunk, ArtifactRequest, Frame, Reply, subject};
use wasmtime::component::Component;

const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Artifacts travel in chunks this size, well under NATS's default 1 MiB
/// payload limit.
const CHUNK: u64 = 512 * 1024;

/// The compiled component for `digest`.
pub(crate) async fn component(
    runtime: &std::sync::Arc<Runtime>,
    bus: &dyn Bus,
    store: &dyn ArtifactStore,
    digest: &str,
) -> Result<Component, LoadError> {
    let rt = runtime.clone();
    let d = digest.to_string();
    if let Some(c) = tokio::task::spawn_blocking(move || rt.cache.get(&d)).await.ok().flatten() {
        return Ok(c);
    }
    let stored = store.get(digest).await.unwrap_or_else(|e| {
        // The scheduler can read it too: a store that fails here is not the end.
        tracing::warn!(digest, "cannot read the artifact store, asking the scheduler: {e}");
        None
    });
    let bytes = match stored {
        Some(b) => b,
        // Moved, not copied: components run to tens of megabytes.
        None => Bytes::from(fetch(bus, digest).await?),
    };
    let actual = digest_of(&bytes);
    if actual != digest {
        return Err(LoadError::DigestMismatch { digest: digest.to_string(), actual });
    }
    let rt = runtime.clone();
    let d = digest.to_string();
    let compile = |reason: String| LoadError::Compile { digest: digest.to_string(), reason };
    tokio::task::spawn_blocking(move || rt.cache.compile(&d, &bytes))
        .await
        .map_err(|e| compile(e.to_string()))?
        .map_err(compile)
}

async fn fetch(bus: &dyn Bus, digest: &str) -> Result<Vec<u8>, LoadError> {
    let fail = |reason: String| LoadError::Fetch { digest: digest.to_string(), reason };
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        let req = ArtifactRequest { digest: digest.to_string(), offset: bytes.len() as u64, max_len: CHUNK };
        let req = Bytes::from(serde_json::to_vec(&req).expect("serialise"));
        let msg = bus
            .request(&subject::artifact_get(), req, FETCH_TIMEOUT)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let frame = Frame::<Reply<ArtifactChunk>>::decode(msg.payload).map_err(|e| fail(e.to_string()))?;
        let chunk = frame.header.map_err(|e| fail(e.message))?;
        if chunk.total > tern_protocol::MAX_COMPONENT_BYTES as u64 {
            return Err(fail(format!("{} bytes is over the component size limit", chunk.total)));
        }
        if bytes.is_empty() {
            bytes.reserve_exact(chunk.total as usize);
        }
        bytes.extend_from_slice(&frame.body);
        if bytes.len() as u64 >= chunk.total {
            return Ok(bytes);
        }
        if frame.body.is_empty() {
            return Err(fail(format!("artifact ended at {} of {} bytes", bytes.len(), chunk.total)));
        }
    }
}
