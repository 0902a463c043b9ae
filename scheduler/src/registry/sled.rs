//! `tern up`'s registry: sled, in the data dir. Every change is one sled
//! transaction across the trees it touches, flushed before it returns, so
//! an acknowledged deploy survives a crash and a failed one leaves nothing
//! half-written. sled blocks, so [`SledRegistry`] runs each call on tokio's
//! blocking pool.
//!
//! Trees:
//! - `functions`: name → [`FunctionRecord`]
//! - `versions`: `name/<version, 20 digits>` → [`Version`]
//! - `routes`: pattern → function name (the active versions' routes)
//! - `meta`: `routes_generation` → u64, bumped with every route change;
//!   `cron/<name>` → the last tick fired
//! - `secrets`: name → sealed value

use super::{
    FunctionRecord, RegistryError, Result, decode, encode, no_function, no_version, rollback_number,
    route_taken, shape,
};
use parking_lot::Mutex;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tern_protocol::{FunctionSpec, Version, World};

/// Errors raised inside a transaction abort it.
type TxResult<T> = std::result::Result<T, ConflictableTransactionError<RegistryError>>;

fn abort<T>(e: RegistryError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn unwrap_tx<T>(r: std::result::Result<T, TransactionError<RegistryError>>) -> Result<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    })
}

fn version_key(name: &str, version: u64) -> String {
    format!("{name}/{version:020}")
}

const GENERATION: &[u8] = b"routes_generation";

struct Sled {
    /// The active version of every function, decoded once: placement,
    /// the serving table and triggers read them on every change, and
    /// decoding thousands of specs each time made a deploy cost O(functions).
    /// Kept by the writes below.
    active: Mutex<Option<BTreeMap<String, Arc<Version>>>>,
    db: sled::Db,
    functions: sled::Tree,
    versions: sled::Tree,
    routes: sled::Tree,
    meta: sled::Tree,
    secrets: sled::Tree,
}

impl Sled {
    fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new().path(path).open()?;
        let registry = Sled {
            active: Mutex::new(None),
            functions: db.open_tree("functions")?,
            versions: db.open_tree("versions")?,
            routes: db.open_tree("routes")?,
            meta: db.open_tree("meta")?,
            secrets: db.open_tree("secrets")?,
            db,
        };
        registry.reindex_routes()?;
        Ok(registry)
    }

    /// Another tree in the registry's database (its writes are made durable
    /// by the registry's flushes, and the other way round).
    fn open_tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes the route index match the active versions, keyed by shape.
    /// Registries written before routes were indexed by shape kept raw
    /// patterns, and may hold two spellings of one route (`/a`, `/a/`) for
    /// two functions: the first function by name keeps it, the other is
    /// logged and loses it.
    fn reindex_routes(&self) -> Result<()> {
        let mut wanted = std::collections::BTreeMap::new();
        for v in self.active_versions()? {
            for r in &v.spec.routes {
                if let Some(owner) = wanted.insert(shape(r), v.spec.name.clone())
                    && owner != v.spec.name
                {
                    tracing::warn!(route = %r, kept = %owner, dropped = %v.spec.name, "two functions claim one route");
                    wanted.insert(shape(r), owner);
                }
            }
        }
        let current: std::collections::BTreeMap<String, String> = self
            .routes
            .iter()
            .map(|item| {
                item.map(|(k, v)| {
                    (String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned())
                })
            })
            .collect::<Result<_, _>>()?;
        if current == wanted {
            return Ok(());
        }
        self.routes.clear()?;
        for (shape, function) in &wanted {
            self.routes.insert(shape.as_bytes(), function.as_bytes())?;
        }
        let generation = match self.meta.get(GENERATION)? {
            Some(b) => u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        self.meta.insert(GENERATION, &(generation + 1).to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Records a new version and makes it active. `component` is stored
    /// once per digest.
    fn deploy(
        &self,
        spec: &FunctionSpec,
        digest: &str,
        world: World,
        size: u64,
        now_ms: u64,
    ) -> Result<Version> {
        let trees = (&self.functions, &self.versions, &self.routes, &self.meta);
        let mut active = self.active.lock();
        let version = unwrap_tx(trees.transaction(|(functions, versions, routes, meta)| {
            let previous = match functions.get(spec.name.as_bytes())? {
                Some(b) => Some(decode::<FunctionRecord>(spec.name.as_bytes(), &b).or_else(abort)?),
                None => None,
            };
            let number = previous.as_ref().map_or(1, |p| p.latest_version + 1);
            let version = Version {
                number,
                digest: digest.to_string(),
                size,
                world,
                spec: spec.clone(),
                created_at_ms: now_ms,
            };
            let active = match &previous {
                Some(p) => Some(tx_version(versions, &spec.name, p.active_version)?),
                None => None,
            };
            swap_routes(routes, meta, &spec.name, active.as_ref().map(|v| &v.spec.routes[..]), &spec.routes)?;
            versions.insert(version_key(&spec.name, number).as_bytes(), encode(&version))?;
            let record =
                FunctionRecord { name: spec.name.clone(), active_version: number, latest_version: number };
            functions.insert(spec.name.as_bytes(), encode(&record))?;
            Ok(version)
        }))?;
        now_active(&mut active, &spec.name, Some(&version));
        drop(active);
        self.db.flush()?;
        Ok(version)
    }

    /// The version a rollback would make active.
    fn rollback_target(&self, name: &str, to: Option<u64>) -> Result<Version> {
        let record = self.record(name)?;
        self.version(name, rollback_number(name, &record, to)?)
    }

    /// Points `name` at an earlier version (by default the one before the
    /// active one). Returns the version now active.
    fn rollback(&self, name: &str, to: Option<u64>) -> Result<Version> {
        let trees = (&self.functions, &self.versions, &self.routes, &self.meta);
        let mut active = self.active.lock();
        let version = unwrap_tx(trees.transaction(|(functions, versions, routes, meta)| {
            let mut record = tx_function(functions, name)?;
            let active = tx_version(versions, name, record.active_version)?;
            let target = rollback_number(name, &record, to).or_else(abort)?;
            let target = tx_version(versions, name, target)?;
            swap_routes(routes, meta, name, Some(&active.spec.routes), &target.spec.routes)?;
            record.active_version = target.number;
            functions.insert(name.as_bytes(), encode(&record))?;
            Ok(target)
        }))?;
        now_active(&mut active, name, Some(&version));
        drop(active);
        self.db.flush()?;
        Ok(version)
    }

    /// Removes a function, all its versions and its routes. Returns the
    /// digests of its components that no other version uses.
    fn delete(&self, name: &str) -> Result<Vec<String>> {
        let prefix = format!("{name}/");
        let mut keys = Vec::new();
        let mut digests = Vec::new();
        for item in self.versions.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            digests.push(decode::<Version>(&k, &v)?.digest);
            keys.push(k);
        }
        let trees = (&self.functions, &self.versions, &self.routes, &self.meta);
        let mut active = self.active.lock();
        unwrap_tx(trees.transaction(|(functions, versions, routes, meta)| {
            let record = tx_function(functions, name)?;
            let active = tx_version(versions, name, record.active_version)?;
            swap_routes(routes, meta, name, Some(&active.spec.routes), &[])?;
            for k in &keys {
                versions.remove(k)?;
            }
            functions.remove(name.as_bytes())?;
            Ok(())
        }))?;
        now_active(&mut active, name, None);
        drop(active);
        self.db.flush()?;
        self.unused(digests)
    }

    /// Forgets `name`'s versions beyond the newest `keep` (the active one
    /// always stays). Returns the version numbers forgotten, and the
    /// digests no version uses any more: the caller removes those
    /// artifacts after this, so a crash in between leaves an unused
    /// artifact, never a version without its component.
    fn prune_versions(&self, name: &str, keep: usize) -> Result<(Vec<u64>, Vec<String>)> {
        let active = self.record(name)?.active_version;
        let mut versions = Vec::new();
        for item in self.versions.scan_prefix(format!("{name}/").as_bytes()) {
            let (k, v) = item?;
            versions.push(decode::<Version>(&k, &v)?);
        }
        versions.sort_by_key(|v| std::cmp::Reverse(v.number));
        let old: Vec<Version> =
            versions.into_iter().skip(keep.max(1)).filter(|v| v.number != active).collect();
        if old.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        for v in &old {
            self.versions.remove(version_key(name, v.number).as_bytes())?;
        }
        self.db.flush()?;
        let unused = self.unused(old.iter().map(|v| v.digest.clone()).collect())?;
        Ok((old.iter().map(|v| v.number).collect(), unused))
    }

    /// Those of `digests` no version names.
    fn unused(&self, mut digests: Vec<String>) -> Result<Vec<String>> {
        digests.sort();
        digests.dedup();
        let mut unused = Vec::new();
        for d in digests {
            if !self.digest_in_use(&d)? {
                unused.push(d);
            }
        }
        Ok(unused)
    }

    fn digest_in_use(&self, digest: &str) -> Result<bool> {
        for item in self.versions.iter() {
            let (k, v) = item?;
            if decode::<Version>(&k, &v)?.digest == digest {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn tx_function(functions: &TransactionalTree, name: &str) -> TxResult<FunctionRecord> {
    match functions.get(name.as_bytes())? {
        Some(b) => decode(name.as_bytes(), &b).or_else(abort),
        None => abort(no_function(name)),
    }
}

fn tx_version(versions: &TransactionalTree, name: &str, number: u64) -> TxResult<Version> {
    let key = version_key(name, number);
    match versions.get(key.as_bytes())? {
        Some(b) => decode(key.as_bytes(), &b).or_else(abort),
        None => abort(no_version(name, number)),
    }
}

/// Moves `name` from its `old` routes to `new` ones, refusing any route
/// that matches the same requests as another function's, and bumps the
/// route generation.
fn swap_routes(
    routes: &TransactionalTree,
    meta: &TransactionalTree,
    name: &str,
    old: Option<&[String]>,
    new: &[String],
) -> TxResult<()> {
    for r in new {
        if let Some(owner) = routes.get(shape(r).as_bytes())?
            && owner.as_ref() != name.as_bytes()
        {
            return abort(route_taken(r, &String::from_utf8_lossy(&owner)));
        }
    }
    for r in old.unwrap_or(&[]) {
        routes.remove(shape(r).as_bytes())?;
    }
    for r in new {
        routes.insert(shape(r).as_bytes(), name.as_bytes())?;
    }
    let generation = match meta.get(GENERATION)? {
        Some(b) => u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])),
        None => 0,
    };
    meta.insert(GENERATION, &(generation + 1).to_be_bytes())?;
    Ok(())
}

mod reads;
mod seam;
pub use seam::SledRegistry;

/// A committed write changed `name`'s active version (`None`: deleted);
/// called with the lock the write held since before its transaction.
fn now_active(active: &mut Option<BTreeMap<String, Arc<Version>>>, name: &str, version: Option<&Version>) {
    if let Some(active) = active.as_mut() {
        match version {
            Some(v) => active.insert(name.to_string(), Arc::new(v.clone())),
            None => active.remove(name),
        };
    }
}
