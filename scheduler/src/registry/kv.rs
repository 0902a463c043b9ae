//! A cluster's registry: entries in a revision-checked key-value bucket
//! (JetStream's `TERN_REGISTRY`) that every scheduler reads and writes.
//!
//! There are no transactions across keys, so every change is ordered so
//! that a crash or a lost race at any step leaves nothing a reader takes
//! for real, and every step that decides something is one revision-checked
//! write:
//! - a version number is taken by creating its `ver/` key (a create fails
//!   if the key exists), so no number is handed out twice;
//! - a route is taken by creating or swapping its `route/` claim; a claim
//!   binds only while its owner's active version has the route or the
//!   claim is fresh (a change in flight), so one left by a crash lapses;
//! - the change is made by swapping the function's `fn/` record at the
//!   revision it was read at: of two schedulers changing one function, one
//!   wins and the other starts again from what the winner wrote.
//!
//! Keys:
//! - `fn/<name>` → [`Record`]: active and newest version, every kept
//!   version's digest, and whether a delete is under way
//! - `ver/<name>/<number, 20 digits>` → [`Version`] (written once)
//! - `route/<hex of the route's shape>` → [`Claim`]
//! - `gen` → the serving table's generation, bumped after every change
//! - `cron/<name>` → the last tick fired; `secret/<name>` → a sealed value
//!
//! Each scheduler keeps every function's record and active version in
//! memory (reconcile and placement read them every second), read again
//! whenever `gen` moved past what it has seen, and per function when
//! another scheduler says it changed one.

use super::{
    FunctionRecord, Registry, RegistryError, Result, change_of, decode, detail, encode, no_function,
    no_version, rollback_number, route_entry, shape, summary, trigger_entries,
};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use tern_kv::{Expect, KvBucket};

mod claims;
use tern_protocol::{FunctionDetail, FunctionSpec, FunctionSummary, ServingTable, Version, World};

/// Rounds of a change lost to other schedulers before it gives up.
const MAX_ATTEMPTS: usize = 32;
const GENERATION: &str = "gen";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    active_version: u64,
    latest_version: u64,
    /// Every kept version's digest, by number: which components are in use
    /// is read from the records alone.
    versions: BTreeMap<u64, String>,
    /// A delete is under way: the function is gone for readers, and the
    /// next writer finishes the delete before anything else.
    #[serde(default)]
    deleting: bool,
}

impl Record {
    fn as_function(&self) -> FunctionRecord {
        FunctionRecord {
            name: self.name.clone(),
            active_version: self.active_version,
            latest_version: self.latest_version,
        }
    }
}

/// What this scheduler knows about the functions.
#[derive(Default)]
struct Mirror {
    /// The generation everything below was read at (`None`: never read).
    synced: Option<u64>,
    functions: BTreeMap<String, Known>,
}

#[derive(Clone)]
struct Known {
    revision: u64,
    record: Record,
    active: Arc<Version>,
}

pub struct KvRegistry {
    bucket: Arc<dyn KvBucket>,
    mirror: Mutex<Mirror>,
    /// The generation this scheduler's last change to each function made,
    /// for the serving-table change it sends.
    changed_at: Mutex<BTreeMap<String, u64>>,
}

fn fn_key(name: &str) -> String {
    format!("fn/{name}")
}

fn ver_key(name: &str, number: u64) -> String {
    format!("ver/{name}/{number:020}")
}

fn too_busy(name: &str) -> RegistryError {
    RegistryError::Storage(format!(
        "function {name:?} is being changed by other schedulers too fast; try again"
    ))
}

impl KvRegistry {
    pub fn new(bucket: Arc<dyn KvBucket>) -> Self {
        KvRegistry { bucket, mirror: Mutex::new(Mirror::default()), changed_at: Mutex::new(BTreeMap::new()) }
    }

    /// `name`'s record as the bucket has it now.
    async fn read(&self, name: &str) -> Result<Option<(u64, Record)>> {
        let key = fn_key(name);
        match self.bucket.get(&key).await? {
            Some(e) => Ok(Some((e.revision, decode(key.as_bytes(), &e.value)?))),
            None => Ok(None),
        }
    }

    /// `name`'s record, unless it is absent or being deleted.
    async fn read_live(&self, name: &str) -> Result<(u64, Record)> {
        match self.read(name).await? {
            Some((rev, r)) if !r.deleting => Ok((rev, r)),
            _ => Err(no_function(name)),
        }
    }

    async fn generation(&self) -> Result<u64> {
        match self.bucket.get(GENERATION).await? {
            Some(e) => Ok(std::str::from_utf8(&e.value).ok().and_then(|s| s.parse().ok()).unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Makes the mirror current: read whole again if `gen` moved past
    /// what it was read at.
    async fn sync(&self) -> Result<()> {
        let generation = self.generation().await?;
        if self.mirror.lock().synced == Some(generation) {
            return Ok(());
        }
        let mut functions = BTreeMap::new();
        for key in self.bucket.keys("fn/", None, usize::MAX).await? {
            let name = &key["fn/".len()..];
            if let Some(known) = self.known(name).await? {
                functions.insert(name.to_string(), known);
            }
        }
        let mut mirror = self.mirror.lock();
        // Another sync may have finished meanwhile at a later generation.
        if mirror.synced.is_none_or(|s| s <= generation) {
            *mirror = Mirror { synced: Some(generation), functions };
        }
        Ok(())
    }

    /// What the mirror should hold for `name` now.
    async fn known(&self, name: &str) -> Result<Option<Known>> {
        let Some((revision, record)) = self.read(name).await? else { return Ok(None) };
        if record.deleting {
            return Ok(None);
        }
        let active = Arc::new(self.version(name, record.active_version).await?);
        Ok(Some(Known { revision, record, active }))
    }

    /// Puts what a change to `name` left (`None`: deleted) in the mirror.
    /// `generation` is the one the change made: the mirror stays in sync
    /// if it was the next one.
    fn note(&self, name: &str, now: Option<Known>, generation: u64) {
        let mut mirror = self.mirror.lock();
        let newer = match (&now, mirror.functions.get(name)) {
            (Some(n), Some(old)) => n.revision > old.revision,
            _ => true,
        };
        if newer {
            match now {
                Some(k) => mirror.functions.insert(name.to_string(), k),
                None => mirror.functions.remove(name),
            };
        }
        if mirror.synced.is_some_and(|s| s + 1 == generation) {
            mirror.synced = Some(generation);
        }
    }

    /// Records a change this scheduler made: the generation goes up, the
    /// mirror takes it.
    async fn changed(&self, name: &str, now: Option<Known>) -> Result<()> {
        let generation = self.bucket.increment(GENERATION, 1).await?;
        self.changed_at.lock().insert(name.to_string(), generation);
        self.note(name, now, generation);
        Ok(())
    }

    /// Removes what is left of a function whose record says a delete is
    /// under way, the record last. Returns its components' digests.
    async fn finish_delete(&self, name: &str, revision: u64, record: &Record) -> Result<Vec<String>> {
        let routes = match self.version(name, record.active_version).await {
            Ok(v) => v.spec.routes,
            Err(_) => Vec::new(),
        };
        // Versions the record never named (a deploy that lost its race
        // and crashed before tidying) go too.
        let mut keys: BTreeSet<String> = record.versions.keys().map(|n| ver_key(name, *n)).collect();
        keys.extend(self.bucket.keys(&format!("ver/{name}/"), None, usize::MAX).await?);
        self.bucket.delete_many(&keys.into_iter().collect::<Vec<_>>()).await?;
        self.release(name, &routes).await;
        self.bucket.delete_if(&fn_key(name), revision).await?;
        Ok(record.versions.values().cloned().collect())
    }

    /// Those of `digests` no live function's kept versions name, read from
    /// the bucket now (not the mirror: another scheduler may have just
    /// deployed one of them).
    async fn unused(&self, mut digests: Vec<String>) -> Result<Vec<String>> {
        digests.sort();
        digests.dedup();
        if digests.is_empty() {
            return Ok(digests);
        }
        let mut used = HashSet::new();
        for key in self.bucket.keys("fn/", None, usize::MAX).await? {
            if let Some((_, r)) = self.read(&key["fn/".len()..]).await?
                && !r.deleting
            {
                used.extend(r.versions.into_values());
            }
        }
        digests.retain(|d| !used.contains(d));
        Ok(digests)
    }

    /// Makes version `target` (which must exist) `name`'s active one, with
    /// its routes; `number` is taken by a deploy before this.
    async fn activate(&self, name: &str, current: Option<(u64, Record)>, target: &Version) -> Result<bool> {
        let old_routes = match &current {
            Some((_, r)) => {
                self.version(name, r.active_version).await.map(|v| v.spec.routes).unwrap_or_default()
            }
            None => Vec::new(),
        };
        self.claim(name, &target.spec.routes).await?;
        let mut record = match &current {
            Some((_, r)) => r.clone(),
            None => Record {
                name: name.to_string(),
                active_version: 0,
                latest_version: 0,
                versions: BTreeMap::new(),
                deleting: false,
            },
        };
        record.active_version = target.number;
        record.latest_version = record.latest_version.max(target.number);
        record.versions.insert(target.number, target.digest.clone());
        let expect = current.as_ref().map_or(Expect::Absent, |(rev, _)| Expect::Revision(*rev));
        let Some(revision) = self.bucket.swap(&fn_key(name), expect, encode(&record).into(), None).await?
        else {
            return Ok(false);
        };
        let wanted: HashSet<String> = target.spec.routes.iter().map(|r| shape(r)).collect();
        let dropped: Vec<String> = old_routes.into_iter().filter(|r| !wanted.contains(&shape(r))).collect();
        self.release(name, &dropped).await;
        let known = Known { revision, record, active: Arc::new(target.clone()) };
        self.changed(name, Some(known)).await?;
        Ok(true)
    }

    /// Records `version` under the first free number from its own: a
    /// number is taken by creating its key, so two deploys never share one.
    /// Returns it as recorded, and the key's revision.
    async fn take_number(&self, mut version: Version) -> Result<(Version, u64)> {
        loop {
            let key = ver_key(&version.spec.name, version.number);
            if let Some(rev) = self.bucket.swap(&key, Expect::Absent, encode(&version).into(), None).await? {
                return Ok((version, rev));
            }
            version.number += 1;
        }
    }

    fn active_map(&self) -> BTreeMap<String, Arc<Version>> {
        self.mirror.lock().functions.iter().map(|(n, k)| (n.clone(), k.active.clone())).collect()
    }
}

#[async_trait]
impl Registry for KvRegistry {
    async fn deploy(
        &self,
        spec: &FunctionSpec,
        digest: &str,
        world: World,
        size: u64,
        now_ms: u64,
    ) -> Result<Version> {
        let name = spec.name.as_str();
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read(name).await?;
            if let Some((rev, r)) = &current
                && r.deleting
            {
                self.finish_delete(name, *rev, r).await?;
                continue;
            }
            // The number: the first free one after the newest recorded.
            // One taken by a change that lost its race or crashed is skipped.
            let first = current.as_ref().map_or(0, |(_, r)| r.latest_version) + 1;
            let version = Version {
                number: first,
                digest: digest.to_string(),
                size,
                world,
                spec: spec.clone(),
                created_at_ms: now_ms,
            };
            let (version, taken) = self.take_number(version).await?;
            let key = ver_key(name, version.number);
            match self.activate(name, current, &version).await {
                Ok(true) => return Ok(version),
                Ok(false) => {
                    // Another change to this function won: this number was
                    // never recorded; start again from what it wrote.
                    self.bucket.delete_if(&key, taken).await?;
                }
                Err(e) => {
                    // A conflict is found before anything is recorded. Any
                    // other error may come from the record's swap after it
                    // landed (its answer lost while a NATS node died): the
                    // version key then stays, or the record could name a
                    // version that is gone. An unused one is harmless.
                    if matches!(e, RegistryError::Conflict(_)) {
                        self.bucket.delete_if(&key, taken).await?;
                    }
                    return Err(e);
                }
            }
        }
        Err(too_busy(name))
    }

    async fn rollback_target(&self, name: &str, to: Option<u64>) -> Result<Version> {
        let (_, record) = self.read_live(name).await?;
        self.version(name, rollback_number(name, &record.as_function(), to)?).await
    }

    async fn rollback(&self, name: &str, to: Option<u64>) -> Result<Version> {
        for _ in 0..MAX_ATTEMPTS {
            let (rev, record) = self.read_live(name).await?;
            let target = self.version(name, rollback_number(name, &record.as_function(), to)?).await?;
            if self.activate(name, Some((rev, record)), &target).await? {
                return Ok(target);
            }
        }
        Err(too_busy(name))
    }

    async fn delete(&self, name: &str) -> Result<Vec<String>> {
        for _ in 0..MAX_ATTEMPTS {
            let (mut rev, mut record) = self.read(name).await?.ok_or_else(|| no_function(name))?;
            if !record.deleting {
                record.deleting = true;
                let expect = Expect::Revision(rev);
                match self.bucket.swap(&fn_key(name), expect, encode(&record).into(), None).await? {
                    Some(r) => rev = r,
                    None => continue,
                }
            }
            let digests = self.finish_delete(name, rev, &record).await?;
            self.changed(name, None).await?;
            return self.unused(digests).await;
        }
        Err(too_busy(name))
    }

    async fn prune_versions(&self, name: &str, keep: usize) -> Result<(Vec<u64>, Vec<String>)> {
        for _ in 0..MAX_ATTEMPTS {
            let (rev, mut record) = self.read_live(name).await?;
            let old: Vec<(u64, String)> = record
                .versions
                .iter()
                .rev()
                .skip(keep.max(1))
                .filter(|(n, _)| **n != record.active_version)
                .map(|(n, d)| (*n, d.clone()))
                .collect();
            if old.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            for (n, _) in &old {
                record.versions.remove(n);
            }
            let Some(_) =
                self.bucket.swap(&fn_key(name), Expect::Revision(rev), encode(&record).into(), None).await?
            else {
                continue;
            };
            let keys: Vec<String> = old.iter().map(|(n, _)| ver_key(name, *n)).collect();
            self.bucket.delete_many(&keys).await?;
            let unused = self.unused(old.iter().map(|(_, d)| d.clone()).collect()).await?;
            return Ok((old.into_iter().map(|(n, _)| n).collect(), unused));
        }
        Err(too_busy(name))
    }

    async fn version(&self, name: &str, number: u64) -> Result<Version> {
        let key = ver_key(name, number);
        match self.bucket.get(&key).await? {
            Some(e) => decode(key.as_bytes(), &e.value),
            None => Err(no_version(name, number)),
        }
    }

    async fn active_versions(&self) -> Result<Vec<Arc<Version>>> {
        self.sync().await?;
        Ok(self.mirror.lock().functions.values().map(|k| k.active.clone()).collect())
    }

    async fn active_of(&self, names: &BTreeSet<String>) -> Result<Vec<Arc<Version>>> {
        self.sync().await?;
        let mirror = self.mirror.lock();
        Ok(names.iter().filter_map(|n| mirror.functions.get(n).map(|k| k.active.clone())).collect())
    }

    async fn list(&self) -> Result<Vec<FunctionSummary>> {
        self.sync().await?;
        let mirror = self.mirror.lock();
        Ok(mirror.functions.values().map(|k| summary(&k.record.as_function(), &k.active)).collect())
    }

    async fn describe(&self, name: &str) -> Result<FunctionDetail> {
        let (_, record) = self.read_live(name).await?;
        let mut versions = Vec::new();
        for n in record.versions.keys() {
            match self.version(name, *n).await {
                Ok(v) => versions.push(v),
                // Pruned by another scheduler since the record was read.
                Err(RegistryError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let active = self.version(name, record.active_version).await?;
        Ok(detail(record.name, active, versions))
    }

    async fn serving_table(&self) -> Result<ServingTable> {
        self.sync().await?;
        let (generation, all) = {
            let mirror = self.mirror.lock();
            (
                mirror.synced.unwrap_or(0),
                mirror.functions.values().map(|k| k.active.clone()).collect::<Vec<_>>(),
            )
        };
        // Two functions claim one route only if claims went wrong; the
        // first by name keeps it, as in sled's index.
        let mut owners = HashSet::new();
        let mut routes = Vec::new();
        for v in &all {
            for r in &v.spec.routes {
                if owners.insert(shape(r)) {
                    routes.push(route_entry(v, r));
                } else {
                    tracing::warn!(route = %r, dropped = %v.spec.name, "two functions claim one route");
                }
            }
        }
        routes.sort_by(|a, b| a.pattern.cmp(&b.pattern));
        let triggers = all.iter().flat_map(|v| trigger_entries(v)).collect();
        Ok(ServingTable { generation, routes, triggers, only: None })
    }

    async fn serving_change(&self, name: &str) -> Result<ServingTable> {
        let known = self.changed_at.lock().get(name).copied();
        let generation = match known {
            Some(g) => g,
            None => self.generation().await?,
        };
        let active = self.active_map().remove(name);
        Ok(change_of(name, generation, active.as_deref()))
    }

    async fn refresh(&self, name: &str) -> Result<()> {
        let generation = self.generation().await?;
        let known = self.known(name).await?;
        self.note(name, known, generation);
        Ok(())
    }

    async fn cron_fired(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .bucket
            .get(&format!("cron/{name}"))
            .await?
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse().ok()))
    }

    async fn claim_cron(&self, name: &str, last: Option<u64>, tick: u64) -> Result<bool> {
        let key = format!("cron/{name}");
        let entry = self.bucket.get(&key).await?;
        let now = entry.as_ref().and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u64>().ok());
        if now != last {
            return Ok(false);
        }
        let expect = entry.map_or(Expect::Absent, |e| Expect::Revision(e.revision));
        Ok(self.bucket.swap(&key, expect, Bytes::from(tick.to_string()), None).await?.is_some())
    }

    async fn forget_cron(&self, name: &str) -> Result<()> {
        Ok(self.bucket.delete(&format!("cron/{name}")).await?)
    }

    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.bucket.get(&format!("secret/{name}")).await?.map(|e| e.value.to_vec()))
    }

    async fn set_secret(&self, name: &str, sealed: Vec<u8>) -> Result<()> {
        self.bucket.set(&format!("secret/{name}"), sealed.into(), None).await?;
        Ok(())
    }

    async fn remove_secret(&self, name: &str) -> Result<bool> {
        let key = format!("secret/{name}");
        let existed = self.bucket.get(&key).await?.is_some();
        self.bucket.delete(&key).await?;
        Ok(existed)
    }

    async fn secret_names(&self) -> Result<Vec<String>> {
        let keys = self.bucket.keys("secret/", None, usize::MAX).await?;
        Ok(keys.into_iter().map(|k| k["secret/".len()..].to_string()).collect())
    }
}
