//! [`SledRegistry`]: the sled core behind the async [`Registry`] seam,
//! each call on tokio's blocking pool.

use super::Sled;
use crate::registry::{Registry, RegistryError, Result};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tern_protocol::{FunctionDetail, FunctionSpec, FunctionSummary, ServingTable, Version, World};

/// [`Sled`] behind the async seam.
#[derive(Clone)]
pub struct SledRegistry {
    sled: Arc<Sled>,
    /// Where the registry lives: its disk is checked before a change.
    path: PathBuf,
}

impl SledRegistry {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(SledRegistry { sled: Arc::new(Sled::open(path)?), path: path.to_path_buf() })
    }

    /// Another tree in the registry's database (its writes are made
    /// durable by the registry's flushes, and the other way round): `tern
    /// up` keeps its artifacts there.
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree> {
        self.sled.open_tree(name)
    }

    /// Runs `f` off the async threads: the one way async code touches sled.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Sled) -> Result<T> + Send + 'static) -> Result<T> {
        let sled = self.sled.clone();
        tokio::task::spawn_blocking(move || f(&sled))
            .await
            .map_err(|e| RegistryError::Storage(format!("registry task failed: {e}")))?
    }
}

#[async_trait]
impl Registry for SledRegistry {
    async fn deploy(
        &self,
        spec: &FunctionSpec,
        digest: &str,
        world: World,
        size: u64,
        now_ms: u64,
    ) -> Result<Version> {
        let (spec, digest) = (spec.clone(), digest.to_string());
        self.run(move |r| r.deploy(&spec, &digest, world, size, now_ms)).await
    }

    async fn rollback_target(&self, name: &str, to: Option<u64>) -> Result<Version> {
        let name = name.to_string();
        self.run(move |r| r.rollback_target(&name, to)).await
    }

    async fn rollback(&self, name: &str, to: Option<u64>) -> Result<Version> {
        let name = name.to_string();
        self.run(move |r| r.rollback(&name, to)).await
    }

    async fn delete(&self, name: &str) -> Result<Vec<String>> {
        let name = name.to_string();
        self.run(move |r| r.delete(&name)).await
    }

    async fn prune_versions(&self, name: &str, keep: usize) -> Result<(Vec<u64>, Vec<String>)> {
        let name = name.to_string();
        self.run(move |r| r.prune_versions(&name, keep)).await
    }

    async fn version(&self, name: &str, number: u64) -> Result<Version> {
        let name = name.to_string();
        self.run(move |r| r.version(&name, number)).await
    }

    async fn active_versions(&self) -> Result<Vec<Arc<Version>>> {
        self.run(|r| r.active_versions()).await
    }

    async fn active_of(&self, names: &BTreeSet<String>) -> Result<Vec<Arc<Version>>> {
        let names = names.clone();
        self.run(move |r| r.active_of(&names)).await
    }

    async fn list(&self) -> Result<Vec<FunctionSummary>> {
        self.run(|r| r.list()).await
    }

    async fn describe(&self, name: &str) -> Result<FunctionDetail> {
        let name = name.to_string();
        self.run(move |r| r.describe(&name)).await
    }

    async fn serving_table(&self) -> Result<ServingTable> {
        self.run(|r| r.serving_table()).await
    }

    async fn serving_change(&self, name: &str) -> Result<ServingTable> {
        let name = name.to_string();
        self.run(move |r| r.serving_change(&name)).await
    }

    /// Only this process writes this registry.
    async fn refresh(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    async fn cron_fired(&self, name: &str) -> Result<Option<u64>> {
        let name = name.to_string();
        self.run(move |r| r.cron_fired(&name)).await
    }

    async fn claim_cron(&self, name: &str, last: Option<u64>, tick: u64) -> Result<bool> {
        let name = name.to_string();
        self.run(move |r| r.claim_cron(&name, last, tick)).await
    }

    async fn forget_cron(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(move |r| r.forget_cron(&name)).await
    }

    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_string();
        self.run(move |r| Ok(r.secrets.get(name.as_bytes())?.map(|v| v.to_vec()))).await
    }

    async fn set_secret(&self, name: &str, sealed: Vec<u8>) -> Result<()> {
        let name = name.to_string();
        self.run(move |r| {
            r.secrets.insert(name.as_bytes(), sealed)?;
            r.db.flush()?;
            Ok(())
        })
        .await
    }

    async fn remove_secret(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |r| {
            let existed = r.secrets.remove(name.as_bytes())?.is_some();
            r.db.flush()?;
            Ok(existed)
        })
        .await
    }

    async fn secret_names(&self) -> Result<Vec<String>> {
        self.run(|r| r.secrets.iter().keys().map(|k| Ok(String::from_utf8_lossy(&k?).into_owned())).collect())
            .await
    }

    /// sled does not come back well from a write that failed for room
    /// (see `tern_events::disk`), so none is started.
    fn ensure_room(&self, bytes: u64) -> Result<()> {
        tern_events::disk::ensure_room(&self.path, bytes).map_err(|e| RegistryError::NoRoom(e.to_string()))
    }
}
