//! Carrying placement out: gather the observed state (live nodes, ready
//! replicas) and the desired one (active versions, the autoscaler's
//! counts), ask the pure [`placement::plan`] for commands, send them to the
//! workers, and record their answers.

use crate::Scheduler;
use crate::placement::{self, Command, Want};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tern_protocol::{
    ApiError, Assign, COMPILED_BYTES_PER_COMPONENT_BYTE, Generation, Unassign, Version, decode_reply, subject,
};

/// Loading a function may mean fetching and compiling it.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);

impl Scheduler {
    /// Runs placement once, after any registry change in progress.
    /// Returns the failures, by function.
    pub async fn reconcile(&self) -> BTreeMap<String, ApiError> {
        let _order = self.changes.lock().await;
        self.reconcile_locked(None).await
    }

    /// [`Scheduler::reconcile`] for callers that hold `changes` already.
    /// `waking`: a function a request waits for (or just deployed), which
    /// may unload idle functions to find room. Placing it looks only at it
    /// and the functions loaded now (what shares the nodes with it), so a
    /// cold start costs the same with 10 functions deployed or 10,000; the
    /// scheduler's tick places the rest.
    pub(crate) async fn reconcile_locked(&self, waking: Option<&str>) -> BTreeMap<String, ApiError> {
        // Two schedulers placing at once would each undo the other's.
        if !self.lease.leading() {
            return BTreeMap::new();
        }
        if let Some(f) = waking
            && let Some(failures) = self.place_quickly(f).await
        {
            return failures;
        }
        let versions = match waking {
            Some(f) => {
                let mut names = self.nodes.loaded_anywhere();
                names.insert(f.to_string());
                self.registry.active_of(&names).await
            }
            None => self.registry.active_versions().await,
        };
        let versions: Vec<Arc<Version>> = match versions {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cannot read the registry for placement: {e}");
                return BTreeMap::new();
            }
        };
        if waking.is_none() {
            self.scaling.forget_all_but(&versions);
        }
        let ready: BTreeMap<String, u32> =
            versions.iter().map(|v| (v.spec.name.clone(), self.nodes.ready_any(&v.spec.name))).collect();
        let desired = match waking {
            // Only the woken function is asked of the autoscaler; the
            // loaded ones stay as they are until the tick.
            Some(f) => {
                let woken: Vec<Arc<Version>> =
                    versions.iter().filter(|v| v.spec.name == f).cloned().collect();
                let mut desired = self.scaling.desired(&woken, &ready, &self.metrics);
                for v in versions.iter().filter(|v| v.spec.name != f) {
                    desired.insert(v.spec.name.clone(), ready[&v.spec.name]);
                }
                desired
            }
            None => self.scaling.desired(&versions, &ready, &self.metrics),
        };
        let code = self.nodes.code_sizes();
        let wants: Vec<Want> = versions
            .iter()
            .map(|v| Want {
                function: v.spec.name.clone(),
                version: v.number,
                digest: v.digest.clone(),
                memory_mib: v.spec.memory_mib,
                replicas: desired[&v.spec.name],
                selector: v.spec.node_selector.clone(),
                code_bytes: code
                    .get(&v.digest)
                    .copied()
                    .unwrap_or(v.size * COMPILED_BYTES_PER_COMPONENT_BYTE),
                kept: v.spec.min_scale > 0,
                waking: waking == Some(v.spec.name.as_str()),
            })
            .collect();
        let commands = placement::plan(&self.nodes.views(), &wants);
        let by_name: BTreeMap<&str, &Version> =
            versions.iter().map(|v| (v.spec.name.as_str(), &**v)).collect();
        let results = futures::future::join_all(commands.iter().map(|c| self.carry_out(c, &by_name))).await;
        let mut failures = BTreeMap::new();
        for (command, result) in commands.iter().zip(results) {
            if let Err(e) = result {
                let (Command::Assign { node, function }
                | Command::Unassign { node, function }
                | Command::Evict { node, function, .. }) = command;
                tracing::warn!(node, function, "placement command failed: {}", e.message);
                failures.insert(function.clone(), e);
            }
        }
        failures
    }

    /// The common case of a deploy or a wake, without the whole plan: a
    /// function loaded nowhere that wants one replica goes to a node with
    /// room for it by the node's last report (plus what was placed there
    /// since). So it costs the same with 10 functions loaded or 10,000.
    /// `None`: not that case (a replica to switch or move, more than one
    /// wanted, no room without unloading idle functions): the full plan's.
    async fn place_quickly(&self, f: &str) -> Option<BTreeMap<String, ApiError>> {
        if self.nodes.ready_any(f) > 0 {
            return None;
        }
        let names = std::collections::BTreeSet::from([f.to_string()]);
        let version = self.registry.active_of(&names).await.ok()?.pop()?;
        let ready = BTreeMap::from([(f.to_string(), 0)]);
        let desired = self.scaling.desired(std::slice::from_ref(&version), &ready, &self.metrics);
        if desired.get(f) != Some(&1) {
            return None;
        }
        let code_bytes =
            self.nodes.code_size(&version.digest).unwrap_or(version.size * COMPILED_BYTES_PER_COMPONENT_BYTE);
        let memory_bytes = (version.spec.memory_mib as u64) << 20;
        let node =
            self.nodes.with_room(&version.spec.node_selector, &version.digest, code_bytes, memory_bytes)?;
        let command = Command::Assign { node, function: f.to_string() };
        let mut failures = BTreeMap::new();
        if let Err(e) = self.carry_out(&command, &BTreeMap::from([(f, &*version)])).await {
            tracing::warn!(function = f, "placement command failed: {}", e.message);
            failures.insert(f.to_string(), e);
        }
        Some(failures)
    }

    /// Places a newly active version; an error only if it could be placed
    /// nowhere although a worker tried.
    pub(crate) async fn place_version(&self, version: &Version) -> Result<u32, ApiError> {
        let failures = self.reconcile_locked(Some(&version.spec.name)).await;
        let ready = self.nodes.ready(&version.spec.name, version.number);
        match failures.get(&version.spec.name) {
            Some(e) if ready == 0 => Err(ApiError::new(
                e.kind,
                format!("version {} is recorded but no worker could load it: {}", version.number, e.message),
            )),
            _ => Ok(ready),
        }
    }

    async fn carry_out(
        &self,
        command: &Command,
        versions: &BTreeMap<&str, &Version>,
    ) -> Result<(), ApiError> {
        match command {
            Command::Assign { node, function } => {
                let v = versions[function.as_str()];
                let mut assign = Assign::for_version(v);
                assign.secret_values = self.secret_values(&v.spec.secrets).await?;
                let body = serde_json::to_vec(&assign).expect("serialise");
                let generation = self.ask(node, &subject::worker_assign(node), body.into()).await?;
                self.nodes.placed(node, function, v.number, &v.digest, generation);
                tracing::info!(node, function, version = v.number, "placed");
            }
            Command::Unassign { node, function } => {
                self.unload(node, function).await?;
                tracing::info!(node, function, "unloaded");
            }
            Command::Evict { node, function, for_function } => {
                self.unload(node, function).await?;
                self.metrics.evicted(node);
                tracing::info!(node, function, for_function, "unloaded an idle function to make room");
            }
        }
        Ok(())
    }

    async fn unload(&self, node: &str, function: &str) -> Result<(), ApiError> {
        let body = serde_json::to_vec(&Unassign { function: function.to_string() }).expect("serialise");
        let generation = self.ask(node, &subject::worker_unassign(node), body.into()).await?;
        self.nodes.unplaced(node, function, generation);
        Ok(())
    }

    /// Sends a command to a worker; its reply is the node's generation
    /// after the change.
    async fn ask(&self, node: &str, subject: &str, body: Bytes) -> Result<Generation, ApiError> {
        let msg = self
            .bus
            .request(subject, body, ASSIGN_TIMEOUT)
            .await
            .map_err(|e| ApiError::unavailable(format!("worker did not answer on {subject}: {e}")))?;
        decode_reply(msg.payload, &format!("worker {node}"))
    }
}
