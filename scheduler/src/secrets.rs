//! Secrets: set, list and delete; the values of a version's secrets, put
//! in the assign sent to the one worker that will run it; and rotation,
//! pushed to the workers running each function granted the secret before
//! `set` answers, so the next request sees the new value.
//!
//! Values are sealed at rest ([`crate::sealed`]) in the registry, and
//! never written to a log or an error. Every scheduler sharing a registry
//! must have the same secret key (`secret-key` in its data dir).

use crate::Scheduler;
use crate::SchedulerError;
use crate::registry::Registry;
use crate::sealed::Sealer;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tern_protocol::{
    ApiError, MAX_SECRET_BYTES, Reply, SecretDeleteRequest, SecretInfo, SecretSetRequest, SecretValue,
    SecretsUpdate, Version, subject, validate_secret_name,
};

/// How long a worker has to take new secret values.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sealed secrets by name, in the registry.
pub(crate) struct SecretStore {
    registry: Arc<dyn Registry>,
    sealer: Sealer,
}

impl SecretStore {
    /// Secrets in `registry`, sealed with the key in `data_dir`.
    pub(crate) fn open(registry: Arc<dyn Registry>, data_dir: &Path) -> Result<Self, SchedulerError> {
        let sealer = Sealer::open_or_create(data_dir)
            .map_err(|e| SchedulerError::SecretKey(data_dir.display().to_string(), e))?;
        Ok(SecretStore { registry, sealer })
    }

    async fn put(&self, name: &str, value: &str) -> Result<(), ApiError> {
        Ok(self.registry.set_secret(name, self.sealer.seal(name, value)).await?)
    }

    async fn remove(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.registry.remove_secret(name).await?)
    }

    async fn names(&self) -> Result<Vec<String>, ApiError> {
        Ok(self.registry.secret_names().await?)
    }

    async fn exists(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.registry.secret(name).await?.is_some())
    }

    /// The values of `names` that are set (a name deleted with `--force`
    /// since a version was deployed is left out).
    async fn values(&self, names: &[String]) -> Result<BTreeMap<String, SecretValue>, ApiError> {
        let mut out = BTreeMap::new();
        for name in names {
            if let Some(sealed) = self.registry.secret(name).await? {
                let value = self.sealer.open(name, &sealed).map_err(|e| {
                    ApiError::internal(format!(
                        "{e} (every scheduler sharing a registry needs the same secret-key file in its data dir)"
                    ))
                })?;
                out.insert(name.clone(), SecretValue(value));
            }
        }
        Ok(out)
    }
}

impl Scheduler {
    pub(crate) async fn set_secret(&self, req: SecretSetRequest) -> Reply<SecretInfo> {
        validate_secret_name(&req.name).map_err(ApiError::bad_request)?;
        if req.value.0.len() > MAX_SECRET_BYTES {
            return Err(ApiError::bad_request(format!(
                "secret {:?} is {} bytes; the most is {MAX_SECRET_BYTES}",
                req.name,
                req.value.0.len()
            )));
        }
        self.registry.ensure_room(req.value.0.len() as u64)?;
        // In the order of placement: an assign made after this has the new
        // value, one made before is updated below.
        let _order = self.changes.lock().await;
        let name = req.name.clone();
        self.secrets.put(&req.name, &req.value.0).await?;
        let granted = self.granted(&name).await?;
        self.push(&granted).await;
        tracing::info!(secret = %name, functions = granted.len(), "secret set");
        Ok(SecretInfo { name, functions: granted.iter().map(|v| v.spec.name.clone()).collect() })
    }

    pub(crate) async fn list_secrets(&self) -> Reply<Vec<SecretInfo>> {
        let names = self.secrets.names().await?;
        let active = self.registry.active_versions().await?;
        Ok(names
            .into_iter()
            .map(|name| {
                let functions = active
                    .iter()
                    .filter(|v| v.spec.secrets.contains(&name))
                    .map(|v| v.spec.name.clone())
                    .collect();
                SecretInfo { name, functions }
            })
            .collect())
    }

    pub(crate) async fn delete_secret(&self, req: SecretDeleteRequest) -> Reply<SecretInfo> {
        let _order = self.changes.lock().await;
        let name = req.name.clone();
        let granted = self.granted(&name).await?;
        let functions: Vec<String> = granted.iter().map(|v| v.spec.name.clone()).collect();
        if !functions.is_empty() && !req.force {
            return Err(ApiError::conflict(format!(
                "secret {name:?} is granted to {}; deploy them without --secret {name}, or delete with --force (they then read no value)",
                functions.join(", ")
            )));
        }
        if !self.secrets.remove(&name).await? {
            return Err(ApiError::not_found(format!("no secret {name:?}")));
        }
        self.push(&granted).await;
        tracing::info!(secret = %name, "secret deleted");
        Ok(SecretInfo { name, functions })
    }

    /// 400 unless every name is set: a deploy must not grant a secret that
    /// is not there.
    pub(crate) async fn check_secrets_exist(&self, names: &[String]) -> Result<(), ApiError> {
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            if !self.secrets.exists(name).await? {
                return Err(ApiError::bad_request(format!(
                    "secret {name:?} is not set; set it first with `tern secret set {name}`"
                )));
            }
        }
        Ok(())
    }

    /// The current values of a version's secrets, for its assign.
    pub(crate) async fn secret_values(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, SecretValue>, ApiError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.secrets.values(names).await
    }

    /// Active versions granted `name`.
    async fn granted(&self, name: &str) -> Result<Vec<Arc<Version>>, ApiError> {
        let active = self.registry.active_versions().await?;
        Ok(active.into_iter().filter(|v| v.spec.secrets.iter().any(|s| s == name)).collect())
    }

    /// Sends each function's current values to the workers running it. A
    /// worker that does not answer is logged: it reloads the function (and
    /// its values) when it comes back, as any returning node does.
    async fn push(&self, versions: &[Arc<Version>]) {
        for v in versions {
            let values = match self.secret_values(&v.spec.secrets).await {
                Ok(values) => values,
                Err(e) => {
                    tracing::warn!(function = %v.spec.name, "cannot read its secrets: {}", e.message);
                    continue;
                }
            };
            let update = SecretsUpdate { function: v.spec.name.clone(), values };
            let body = bytes::Bytes::from(serde_json::to_vec(&update).expect("serialise"));
            for node in self.nodes.serving(&v.spec.name) {
                let subject = subject::worker_secrets(&node);
                if let Err(e) = self.bus.request(&subject, body.clone(), PUSH_TIMEOUT).await {
                    tracing::warn!(node, function = %v.spec.name, "worker did not take new secret values: {e}");
                }
            }
        }
    }
}
