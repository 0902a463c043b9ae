//! The registry's reads (versions, records, the active versions kept in
//! memory, the serving table) and its cron state.

use super::{GENERATION, Sled, version_key};
use crate::registry::{
    FunctionRecord, Result, change_of, decode, detail, no_function, no_version, route_entry, shape, summary,
    trigger_entries,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tern_protocol::{FunctionDetail, FunctionSummary, ServingTable, Version};

impl Sled {
    pub(super) fn version(&self, name: &str, number: u64) -> Result<Version> {
        let key = version_key(name, number);
        match self.versions.get(key.as_bytes())? {
            Some(b) => decode(key.as_bytes(), &b),
            None => Err(no_version(name, number)),
        }
    }

    pub(super) fn record(&self, name: &str) -> Result<FunctionRecord> {
        match self.functions.get(name.as_bytes())? {
            Some(b) => decode(name.as_bytes(), &b),
            None => Err(no_function(name)),
        }
    }

    /// The active version of every function, by name.
    pub(super) fn active_versions(&self) -> Result<Vec<Arc<Version>>> {
        self.with_active(|all| all.values().cloned().collect())
    }

    /// The active versions of `names` (those that exist), without looking
    /// at the others.
    pub(super) fn active_of(&self, names: &BTreeSet<String>) -> Result<Vec<Arc<Version>>> {
        self.with_active(|all| names.iter().filter_map(|n| all.get(n).cloned()).collect())
    }

    /// Runs `f` on the active versions, read from the database the first
    /// time.
    pub(super) fn with_active<T>(&self, f: impl FnOnce(&BTreeMap<String, Arc<Version>>) -> T) -> Result<T> {
        let mut active = self.active.lock();
        if active.is_none() {
            let mut all = BTreeMap::new();
            for item in self.functions.iter() {
                let (k, v) = item?;
                let record: FunctionRecord = decode(&k, &v)?;
                all.insert(record.name.clone(), Arc::new(self.version(&record.name, record.active_version)?));
            }
            *active = Some(all);
        }
        Ok(f(active.as_ref().expect("filled above")))
    }

    pub(super) fn list(&self) -> Result<Vec<FunctionSummary>> {
        let mut out = Vec::new();
        for item in self.functions.iter() {
            let (k, v) = item?;
            let r: FunctionRecord = decode(&k, &v)?;
            out.push(summary(&r, &self.version(&r.name, r.active_version)?));
        }
        Ok(out)
    }

    pub(super) fn describe(&self, name: &str) -> Result<FunctionDetail> {
        let r = self.record(name)?;
        let mut versions = Vec::new();
        for item in self.versions.scan_prefix(format!("{name}/").as_bytes()) {
            let (k, v) = item?;
            versions.push(decode::<Version>(&k, &v)?);
        }
        Ok(detail(r.name, self.version(name, r.active_version)?, versions))
    }

    pub(super) fn cron_fired(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .meta
            .get(format!("cron/{name}"))?
            .map(|b| u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8]))))
    }

    pub(super) fn claim_cron(&self, name: &str, last: Option<u64>, tick: u64) -> Result<bool> {
        let last = last.map(|t| t.to_be_bytes());
        let swapped = self.meta.compare_and_swap(
            format!("cron/{name}"),
            last.as_ref().map(|b| &b[..]),
            Some(&tick.to_be_bytes()[..]),
        )?;
        self.db.flush()?;
        Ok(swapped.is_ok())
    }

    pub(super) fn forget_cron(&self, name: &str) -> Result<()> {
        self.meta.remove(format!("cron/{name}"))?;
        Ok(())
    }

    /// The route table, built from the route index and the active versions.
    ///
    /// Read under the active versions' lock, which every write that moves
    /// the generation holds until it has updated them: a table read between
    /// a deploy's commit and that update was labelled with the deploy's
    /// generation but lacked its routes, and a gateway that installed it
    /// then took the deploy's own change for one it had (a 404 after 201).
    pub(super) fn serving_table(&self) -> Result<ServingTable> {
        self.with_active(|all| self.serving_table_of(all))?
    }

    pub(super) fn serving_table_of(&self, all: &BTreeMap<String, Arc<Version>>) -> Result<ServingTable> {
        let generation = self.generation()?;
        let mut routes = Vec::new();
        for item in self.routes.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let function = String::from_utf8_lossy(&v).into_owned();
            let Some(active) = all.get(&function) else {
                tracing::warn!(function, route = key, "route index names a function with no active version");
                continue;
            };
            // The index holds shapes; the table carries the pattern as
            // deployed (in normal form).
            let Some(pattern) = active.spec.routes.iter().find(|r| shape(r) == key) else {
                tracing::warn!(function, route = key, "route index names a route the active version lacks");
                continue;
            };
            routes.push(route_entry(active, pattern));
        }
        let triggers = all.values().flat_map(|v| trigger_entries(v)).collect();
        Ok(ServingTable { generation, routes, triggers, only: None })
    }

    pub(super) fn serving_change(&self, name: &str) -> Result<ServingTable> {
        self.with_active(|all| Ok(change_of(name, self.generation()?, all.get(name).map(|v| &**v))))?
    }

    pub(super) fn generation(&self) -> Result<u64> {
        Ok(match self.meta.get(GENERATION)? {
            Some(b) => u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }
}
