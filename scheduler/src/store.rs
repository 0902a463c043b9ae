//! The registry as the async code sees it: every call runs on tokio's
//! blocking pool (sled blocks on I/O and on its flush), and its errors
//! come back as the [`ApiError`] a client is shown.

use crate::registry::{Registry, RegistryError};
use std::path::Path;
use std::sync::Arc;
use tern_protocol::ApiError;

#[derive(Clone)]
pub struct RegistryHandle {
    registry: Arc<Registry>,
    /// Where the registry lives: its disk is checked before a change.
    path: Arc<std::path::PathBuf>,
}

impl RegistryHandle {
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Ok(RegistryHandle { registry: Arc::new(Registry::open(path)?), path: Arc::new(path.to_path_buf()) })
    }

    /// The registry itself, for what is opened beside it at start (the
    /// secret store's tree). Async code goes through [`RegistryHandle::run`].
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Refuses a change of about `bytes` while the registry's disk is
    /// nearly full (see `tern_events::disk`): sled does not come back well
    /// from a write that failed for room, so none is started.
    pub fn ensure_room(&self, bytes: u64) -> Result<(), ApiError> {
        tern_events::disk::ensure_room(&self.path, bytes).map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// Runs `f` against the registry off the async threads. The one way
    /// async code touches sled.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|e| ApiError::internal(format!("registry task failed: {e}")))?
            .map_err(api_error)
    }
}

fn api_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Conflict(m) => ApiError::conflict(m),
        RegistryError::NotFound(m) => ApiError::not_found(m),
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::ErrorKind;

    #[tokio::test]
    async fn registry_errors_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let r = RegistryHandle::open(&dir.path().join("registry")).unwrap();
        let e = r.run(|r| r.describe("missing")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("missing"), "{e:?}");
        assert!(r.run(|r| r.list()).await.unwrap().is_empty());
    }
}
