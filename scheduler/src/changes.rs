//! Operations that change the registry: deploy, rollback, delete. Each
//! runs under the scheduler's `changes` lock, in one order: make sure the
//! version's trigger consumers exist, record the change (flushed), place
//! it, push the new serving table to gateways, then remove what no active
//! version wants. A failure before the record stores nothing.

use crate::registry::RegistryError;
use crate::{Scheduler, triggers};
use bytes::Bytes;
use tern_protocol::{
    ApiError, ChangeReply, DeployReply, DeployRequest, Reply, RollbackRequest, ServingTable, clock, subject,
};

impl Scheduler {
    /// Records the version, places it, and answers once it is served (or
    /// could not be).
    pub(crate) async fn deploy(&self, req: DeployRequest, component: Bytes) -> Reply<DeployReply> {
        let component = match (&req.artifact, component.is_empty()) {
            (Some(digest), true) => self.stored_component(digest).await?,
            (Some(_), false) => {
                return Err(ApiError::bad_request(
                    "a deploy carries its component or names a stored one, not both",
                ));
            }
            (None, _) => component,
        };
        let mut spec = req.spec;
        spec.normalise_routes();
        spec.validate().map_err(ApiError::bad_request)?;
        self.check_secrets_exist(&spec.secrets).await?;
        if component.len() > tern_protocol::MAX_COMPONENT_BYTES {
            return Err(ApiError::bad_request(format!(
                "component is {} bytes; the limit is {} bytes",
                component.len(),
                tern_protocol::MAX_COMPONENT_BYTES
            )));
        }
        let world = self
            .runtime
            .validate(component.clone())
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        tern_runtime::check_spec(world, &spec).map_err(ApiError::bad_request)?;
        let digest = tern_runtime::digest_of(&component);

        let _order = self.changes.lock().await;
        self.registry.ensure_room(component.len() as u64)?;
        // Stored before the version that names it, so a crash in between
        // leaves an unused artifact, never a version without its component.
        self.artifacts
            .put(&digest, component.clone())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        triggers::create(&*self.events, &spec.triggers()).await.map_err(|e| {
            ApiError::unavailable(format!("cannot create the function's event triggers: {e}"))
        })?;
        // A new version starts with one replica (or min-scale), so a bad
        // component fails here rather than on the first request; it scales
        // to zero after its idle window like any other.
        self.scaling.mark_active(&spec.name);
        let had_triggers = {
            let names = std::collections::BTreeSet::from([spec.name.clone()]);
            let previous = self.registry.active_of(&names).await?;
            previous.iter().any(|v| !v.spec.triggers().is_empty())
        };
        let size = component.len() as u64;
        let version = match self.registry.deploy(&spec, &digest, world, size, clock::now_ms()).await {
            Ok(version) => version,
            // A refused deploy is an answer, not a fault; logged so an
            // operator can see which scheduler refused what and why.
            Err(e @ (RegistryError::Conflict(_) | RegistryError::NoRoom(_) | RegistryError::NotFound(_))) => {
                tracing::info!(function = %spec.name, "deploy refused: {e}");
                return Err(e.into());
            }
            Err(e) => {
                tracing::warn!(function = %spec.name, "deploy failed: {e}");
                return Err(e.into());
            }
        };
        // Another scheduler deleting the last function that used this
        // component may have removed it between the put above and the
        // version's record; putting it again is a no-op when it is there.
        if let Err(e) = self.artifacts.put(&digest, component.clone()).await {
            tracing::warn!(function = %spec.name, %digest, "cannot make sure the component is stored: {e}");
        }
        let ready_replicas = self.place_version(&version).await?;
        let routes = self.push_serving_change(&spec.name).await?;
        // Only a version before this one could have left a consumer that no
        // version wants now (looking costs a walk over every function).
        if had_triggers {
            self.remove_unwanted_triggers().await;
        }
        let (name, keep) = (spec.name.clone(), self.keep_versions);
        match self.registry.prune_versions(&name, keep).await {
            Ok((gone, unused)) => {
                if !gone.is_empty() {
                    tracing::info!(function = %spec.name, ?gone, "forgot old versions");
                }
                self.remove_artifacts(&unused).await;
            }
            Err(e) => tracing::warn!(function = %spec.name, "cannot forget old versions: {e}"),
        }
        tracing::info!(function = %spec.name, version = version.number, %digest, ready_replicas, "deployed");
        Ok(DeployReply { version, ready_replicas, routes })
    }

    pub(crate) async fn rollback(&self, req: RollbackRequest) -> Reply<ChangeReply> {
        let _order = self.changes.lock().await;
        self.registry.ensure_room(0)?;
        self.scaling.mark_active(&req.name);
        let target = self.registry.rollback_target(&req.name, req.to).await?;
        triggers::create(&*self.events, &target.spec.triggers())
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot create the version's event triggers: {e}")))?;
        let version = self.registry.rollback(&req.name, req.to).await?;
        self.place_version(&version).await?;
        let routes = self.push_serving_change(&version.spec.name).await?;
        self.remove_unwanted_triggers().await;
        Ok(ChangeReply { active_version: Some(version.number), routes })
    }

    pub(crate) async fn delete(&self, name: String) -> Reply<ChangeReply> {
        let _order = self.changes.lock().await;
        self.registry.ensure_room(0)?;
        let unused = self.registry.delete(&name).await?;
        // Routes go first so no new request is sent to unloading replicas.
        let routes = self.push_serving_change(&name).await?;
        self.reconcile_locked(None).await;
        self.remove_artifacts(&unused).await;
        self.remove_unwanted_triggers().await;
        let _ = self.registry.forget_cron(&name).await;
        self.metrics.forget(&name);
        if let Err(e) = self.logbook.forget(&name).await {
            tracing::warn!(function = %name, "cannot delete its logs: {e}");
        }
        // A new function of the same name starts with none of these.
        match self.events.delete_dead_letters(&name).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(function = %name, dead_letters = n, "deleted with the function"),
            Err(e) => tracing::warn!(function = %name, "cannot delete its dead letters: {e}"),
        }
        Ok(ChangeReply { active_version: None, routes })
    }

    /// A component a gateway put in the artifact store, checked against
    /// the digest it is named by (the store is a NATS peer's input).
    async fn stored_component(&self, digest: &str) -> Result<Bytes, ApiError> {
        let bytes =
            self.artifacts.get(digest).await.map_err(|e| ApiError::bad_request(e.to_string()))?.ok_or_else(
                || ApiError::bad_request(format!("no component {digest} in the artifact store")),
            )?;
        if tern_runtime::digest_of(&bytes) != digest {
            return Err(ApiError::bad_request(format!(
                "the stored component {digest} does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// Removes artifacts no version uses any more; one that cannot be
    /// removed is left (unused), and said.
    async fn remove_artifacts(&self, digests: &[String]) {
        for d in digests {
            if let Err(e) = self.artifacts.remove(d).await {
                tracing::warn!(digest = %d, "cannot remove an unused artifact: {e}");
            }
        }
    }

    /// Sends what the change to `name` did to the serving table to every
    /// gateway, and returns it (for the reply, so the gateway that relayed
    /// the change serves it before it answers).
    async fn push_serving_change(&self, name: &str) -> Result<ServingTable, ApiError> {
        let table = self.registry.serving_change(name).await?;
        let body = serde_json::to_vec(&table).expect("serialise");
        if let Err(e) = self.bus.publish(&subject::serving_changed(), body.into()).await {
            tracing::warn!("could not push the serving table: {e}");
        }
        Ok(table)
    }

    /// After a change: drop the consumers no active version wants. A
    /// failure leaves an idle consumer behind, never a missing one, so it
    /// is logged, not returned.
    pub(crate) async fn remove_unwanted_triggers(&self) {
        let active = match self.registry.active_versions().await {
            Ok(a) => a,
            Err(e) => return tracing::warn!("cannot list versions to tidy triggers: {e}"),
        };
        if let Err(e) = triggers::remove_unwanted(&*self.events, &active).await {
            tracing::warn!("cannot remove unused triggers: {e}");
        }
    }
}
