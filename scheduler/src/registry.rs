//! The registry: functions, their immutable versions, the route index, cron
//! state and sealed secrets. One seam, [`Registry`], with two
//! implementations that pass one [`conformance`] suite:
//! - [`SledRegistry`]: `tern up`'s, in the data dir, every change one sled
//!   transaction;
//! - [`KvRegistry`]: a cluster's, in a revision-checked key-value bucket
//!   (JetStream's `TERN_REGISTRY`), every change guarded by the revisions
//!   it read, so any number of schedulers can write it and two never both
//!   win a route or a version number.
//!
//! The components themselves are the scheduler's [`ArtifactStore`]'s: a
//! version names its component by digest, and the writes here say which
//! digests no version names any more.
//!
//! [`ArtifactStore`]: tern_artifacts::ArtifactStore

pub mod conformance;
mod kv;
mod sled;

pub use self::kv::KvRegistry;
pub use self::sled::SledRegistry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use tern_protocol::route::RoutePattern;
use tern_protocol::{
    ApiError, FunctionDetail, FunctionSpec, FunctionSummary, RouteEntry, ServingTable, TriggerEntry, Version,
    World,
};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry storage failed: {0}")]
    Storage(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("registry record {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// The registry's disk is nearly full; nothing was written.
    #[error("{0}")]
    NoRoom(String),
}

impl From<::sled::Error> for RegistryError {
    fn from(e: ::sled::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

impl From<tern_kv::KvError> for RegistryError {
    fn from(e: tern_kv::KvError) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Conflict(m) => ApiError::conflict(m),
            RegistryError::NotFound(m) => ApiError::not_found(m),
            RegistryError::NoRoom(m) => ApiError::unavailable(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// What the scheduler keeps about functions. Every write is durable when
/// it returns, and a failed one leaves nothing half-visible: no version
/// without its function record, no route served by two functions.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Records a new version of `spec.name` and makes it active. Refuses
    /// (Conflict) a route that matches the same requests as another
    /// function's.
    async fn deploy(
        &self,
        spec: &FunctionSpec,
        digest: &str,
        world: World,
        size: u64,
        now_ms: u64,
    ) -> Result<Version>;

    /// The version a rollback would make active: `to`, or the one before
    /// the active one.
    async fn rollback_target(&self, name: &str, to: Option<u64>) -> Result<Version>;

    /// Makes that version active; returns it.
    async fn rollback(&self, name: &str, to: Option<u64>) -> Result<Version>;

    /// Removes a function, its versions and routes. Returns the digests of
    /// its components that no other version names.
    async fn delete(&self, name: &str) -> Result<Vec<String>>;

    /// Forgets `name`'s versions beyond the newest `keep` (the active one
    /// always stays). Returns the numbers forgotten and the digests no
    /// version names any more: the caller removes those artifacts after
    /// this, so a crash in between leaves an unused artifact, never a
    /// version without its component.
    async fn prune_versions(&self, name: &str, keep: usize) -> Result<(Vec<u64>, Vec<String>)>;

    async fn version(&self, name: &str, number: u64) -> Result<Version>;

    /// The active version of every function, by name.
    async fn active_versions(&self) -> Result<Vec<Arc<Version>>>;

    /// The active versions of those of `names` that exist.
    async fn active_of(&self, names: &BTreeSet<String>) -> Result<Vec<Arc<Version>>>;

    async fn list(&self) -> Result<Vec<FunctionSummary>>;

    async fn describe(&self, name: &str) -> Result<FunctionDetail>;

    /// The whole route table and every trigger, at the current generation.
    async fn serving_table(&self) -> Result<ServingTable>;

    /// What the last change this registry made to `name` did to the
    /// serving table: `name`'s routes and triggers now (none once deleted),
    /// at the generation that change made. A gateway on the generation
    /// before puts them in place of `name`'s old ones.
    async fn serving_change(&self, name: &str) -> Result<ServingTable>;

    /// Another scheduler may have changed `name`: what is kept in memory
    /// about it is read again.
    async fn refresh(&self, name: &str) -> Result<()>;

    /// The last cron tick fired for `name` (Unix seconds).
    async fn cron_fired(&self, name: &str) -> Result<Option<u64>>;

    /// Records `tick` as fired if the last one recorded is still `last`:
    /// false if another scheduler recorded one first. A tick is claimed
    /// before it is published, so no two schedulers fire it.
    async fn claim_cron(&self, name: &str, last: Option<u64>, tick: u64) -> Result<bool>;

    async fn forget_cron(&self, name: &str) -> Result<()>;

    /// A secret's sealed value.
    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>>;

    async fn set_secret(&self, name: &str, sealed: Vec<u8>) -> Result<()>;

    /// False if there was no such secret.
    async fn remove_secret(&self, name: &str) -> Result<bool>;

    async fn secret_names(&self) -> Result<Vec<String>>;

    /// Refuses a change of about `bytes` while the registry's disk is
    /// nearly full (sled does not come back well from a write that failed
    /// for room). A remote registry keeps its own limits.
    fn ensure_room(&self, _bytes: u64) -> Result<()> {
        Ok(())
    }
}

/// A function's record: its active and newest version numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FunctionRecord {
    name: String,
    active_version: u64,
    latest_version: u64,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("registry records serialise")
}

fn no_function(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("no function named {name:?}"))
}

fn no_version(name: &str, number: u64) -> RegistryError {
    RegistryError::NotFound(format!("function {name:?} has no version {number}"))
}

fn route_taken(route: &str, owner: &str) -> RegistryError {
    RegistryError::Conflict(format!(
        "route {route:?} matches the same requests as a route of function {owner:?}; delete it or choose another route"
    ))
}

fn detail(name: String, active: Version, versions: Vec<Version>) -> FunctionDetail {
    FunctionDetail {
        name,
        active_version: active.number,
        active,
        versions,
        replicas: 0,
        scale: Default::default(),
        triggers: Vec::new(),
        dead_letters: 0,
        outbound: Default::default(),
    }
}

fn summary(record: &FunctionRecord, active: &Version) -> FunctionSummary {
    FunctionSummary {
        name: record.name.clone(),
        active_version: record.active_version,
        latest_version: record.latest_version,
        routes: active.spec.routes.clone(),
        digest: active.digest.clone(),
        world: active.world,
    }
}

fn route_entry(active: &Version, pattern: &str) -> RouteEntry {
    RouteEntry {
        pattern: RoutePattern::parse(pattern).map_or_else(|_| pattern.to_string(), |p| p.normal()),
        function: active.spec.name.clone(),
        timeout_ms: active.spec.timeout_ms,
        max_body: active.spec.max_body,
        max_duration_ms: active.spec.max_duration_ms,
    }
}

fn trigger_entries(v: &Version) -> Vec<TriggerEntry> {
    v.spec
        .triggers()
        .into_iter()
        .map(|trigger| TriggerEntry {
            function: v.spec.name.clone(),
            trigger,
            max_attempts: v.spec.max_attempts,
            backoff_ms: v.spec.backoff_ms,
            timeout_ms: v.spec.timeout_ms,
        })
        .collect()
}

/// `name`'s routes and triggers as `active` (none: deleted) has them.
fn change_of(name: &str, generation: u64, active: Option<&Version>) -> ServingTable {
    let routes = active.iter().flat_map(|v| v.spec.routes.iter().map(|r| route_entry(v, r))).collect();
    let triggers = active.iter().flat_map(|v| trigger_entries(v)).collect();
    ServingTable { generation, routes, triggers, only: Some(name.to_string()) }
}

/// `to`, or the version before the active one.
fn rollback_number(name: &str, record: &FunctionRecord, to: Option<u64>) -> Result<u64> {
    match to {
        Some(v) => Ok(v),
        None if record.active_version > 1 => Ok(record.active_version - 1),
        None => Err(RegistryError::NotFound(format!(
            "function {name:?} has no version before {}",
            record.active_version
        ))),
    }
}

/// The route index's key: the set of paths a pattern matches (see
/// `RoutePattern::shape`), so `/hello/` and `/hello`, or `/u/:a` and
/// `/u/:b`, are one key with one owner. Stored patterns were validated.
fn shape(pattern: &str) -> String {
    RoutePattern::parse(pattern).map_or_else(|_| pattern.to_string(), |p| p.shape())
}

#[cfg(test)]
mod tests;
