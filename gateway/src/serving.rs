//! What this gateway serves now: the scheduler's [`ServingTable`] (HTTP
//! routes and event triggers). Installing a table swaps the router and
//! starts or stops trigger pull loops to match, in one place. A deploy,
//! rollback or delete arrives as that one function's change (pushed, and in
//! the reply to one relayed through this gateway); the whole table is read
//! at start, now and then, and whenever a change was missed.

use crate::router::{Routed, Router};
use crate::triggers::Triggers;
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::{Bus, BusError};
use tern_invoke::SchedulerClient;
use tern_protocol::{RouteEntry, ServingTable, TriggerEntry, subject};
use tern_task::guarded;

/// How often a gateway re-reads the table besides taking pushes.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

pub struct Serving {
    router: RwLock<Arc<Router>>,
    /// What the router was built from, by function: where a change goes.
    table: Mutex<Table>,
    triggers: Triggers,
}

#[derive(Default)]
struct Table {
    generation: u64,
    routes: BTreeMap<String, Vec<Arc<Routed>>>,
    triggers: BTreeMap<String, Vec<TriggerEntry>>,
}

/// What installing a table did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Changed,
    /// It was older than what is in place, or this very change.
    Current,
    /// A change after one this gateway missed.
    Missed,
}

impl Table {
    fn apply(&mut self, table: &ServingTable) -> Outcome {
        match &table.only {
            None if table.generation >= self.generation => {
                let mut whole = Table { generation: table.generation, ..Table::default() };
                for (function, (routes, triggers)) in by_function(table) {
                    whole.put(function, routes, triggers);
                }
                *self = whole;
            }
            Some(function) if table.generation == self.generation + 1 => {
                // A change names one function; anything else in it is not
                // that function's to change.
                let (routes, triggers) = by_function(table).remove(function.as_str()).unwrap_or_default();
                self.put(function, routes, triggers);
                self.generation = table.generation;
            }
            _ if table.generation <= self.generation => return Outcome::Current,
            _ => return Outcome::Missed,
        }
        Outcome::Changed
    }

    fn put(&mut self, function: &str, routes: Vec<Arc<Routed>>, triggers: Vec<TriggerEntry>) {
        if routes.is_empty() {
            self.routes.remove(function);
        } else {
            self.routes.insert(function.to_string(), routes);
        }
        if triggers.is_empty() {
            self.triggers.remove(function);
        } else {
            self.triggers.insert(function.to_string(), triggers);
        }
    }
}

/// `table`'s routes and triggers, by function.
fn by_function(table: &ServingTable) -> BTreeMap<&str, (Vec<Arc<Routed>>, Vec<TriggerEntry>)> {
    let mut all: BTreeMap<&str, (Vec<Arc<Routed>>, Vec<TriggerEntry>)> = BTreeMap::new();
    for e in &table.routes {
        all.entry(e.function.as_str()).or_default().0.extend(Routed::parse(e));
    }
    for t in &table.triggers {
        all.entry(t.function.as_str()).or_default().1.push(t.clone());
    }
    all
}

impl Serving {
    pub fn new(triggers: Triggers) -> Self {
        Serving { router: RwLock::new(Arc::new(Router::default())), table: Mutex::default(), triggers }
    }

    /// Installs `table`: a whole one unless a newer one is in place; a
    /// change (`only`) on the generation just before it. Routes, then the
    /// triggers (the only place triggers start and stop). `false`: a change
    /// that comes after one this gateway missed, which it cannot apply.
    pub fn apply(&self, table: &ServingTable) -> bool {
        let mut t = self.table.lock();
        match t.apply(table) {
            Outcome::Current => return true,
            Outcome::Missed => return false,
            Outcome::Changed => {}
        }
        *self.router.write() = Arc::new(Router::new(t.generation, t.routes.values().flatten()));
        let triggers: Vec<TriggerEntry> = t.triggers.values().flatten().cloned().collect();
        self.triggers.apply(&triggers);
        true
    }

    /// Installs `table`, or the whole table from the scheduler when it is a
    /// change this gateway cannot apply.
    pub async fn take(&self, scheduler: &SchedulerClient, table: &ServingTable) {
        if !self.apply(table) {
            self.reread(scheduler, table.generation).await;
        }
    }

    async fn reread(&self, scheduler: &SchedulerClient, pushed: u64) {
        tracing::info!(pushed, have = self.generation(), "re-reading the serving table");
        match scheduler.serving_table().await {
            Ok(t) => {
                self.apply(&t);
            }
            Err(e) => tracing::warn!("cannot re-read the serving table: {}", e.message),
        }
    }

    /// A pushed table: a change is taken as [`Serving::take`] does; a whole
    /// table only if it is the next one, else missed pushes, or whoever
    /// pushed is not the scheduler (a generation far ahead would freeze
    /// routing), so the scheduler is asked instead.
    async fn take_push(&self, scheduler: &SchedulerClient, payload: &[u8]) {
        match serde_json::from_slice::<ServingTable>(payload) {
            Ok(t) if t.only.is_some() || t.generation == self.generation() + 1 => {
                self.take(scheduler, &t).await
            }
            Ok(t) => self.reread(scheduler, t.generation).await,
            Err(e) => tracing::warn!("ignoring a malformed serving table push: {e}"),
        }
    }

    /// Stops every trigger for good (shutdown); the future ends once the
    /// events already handed to functions are settled.
    pub fn stop_triggers(&self) -> impl std::future::Future<Output = ()> + use<> {
        self.triggers.stop()
    }

    /// The event triggers this gateway runs.
    pub fn triggers(&self) -> Vec<tern_protocol::TriggerEntry> {
        self.triggers.entries()
    }

    /// The generation of the table in place.
    pub fn generation(&self) -> u64 {
        self.router.read().generation()
    }

    /// The route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<RouteEntry> {
        let router = self.router.read().clone();
        router.lookup(path).cloned()
    }

    /// Follows the scheduler's pushes, and fetches the current table
    /// (retrying until the scheduler answers; waits up to 2 s for it so a
    /// co-located scheduler's routes are served from the first request).
    pub async fn follow(self: &Arc<Self>, bus: &dyn Bus, scheduler: SchedulerClient) -> Result<(), BusError> {
        let mut pushes = bus.subscribe(&subject::serving_changed()).await?;
        let (me, s) = (self.clone(), scheduler.clone());
        tokio::spawn(async move {
            while let Some(msg) = pushes.next().await {
                guarded("serving-table", me.take_push(&s, &msg.payload)).await;
            }
        });
        let (me, s) = (self.clone(), scheduler.clone());
        let initial = tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                match s.serving_table().await {
                    Ok(t) => {
                        me.apply(&t);
                        return;
                    }
                    Err(e) => tracing::info!("waiting for the scheduler's serving table: {}", e.message),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), initial).await;
        // Pushes can be lost (a NATS reconnect, a gateway started mid-change):
        // re-read the table now and then. Off the request path, and the
        // generation check makes a stale answer harmless.
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(me) = me.upgrade() else { break };
                if let Ok(t) = scheduler.serving_table().await {
                    me.apply(&t);
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pattern: &str, function: &str) -> RouteEntry {
        RouteEntry {
            pattern: pattern.into(),
            function: function.into(),
            timeout_ms: 1000,
            max_body: 1024,
            max_duration_ms: 1000,
        }
    }

    fn table(generation: u64, only: Option<&str>, routes: &[(&str, &str)]) -> ServingTable {
        ServingTable {
            generation,
            routes: routes.iter().map(|(p, f)| route(p, f)).collect(),
            triggers: Vec::new(),
            only: only.map(str::to_string),
        }
    }

    fn routes(t: &Table) -> Vec<(String, String)> {
        t.routes.values().flatten().map(|r| (r.entry.pattern.clone(), r.entry.function.clone())).collect()
    }

    #[test]
    fn a_change_replaces_one_functions_routes_on_the_generation_before_it() {
        let mut t = Table::default();
        assert_eq!(t.apply(&table(5, None, &[("/a", "a"), ("/b", "b")])), Outcome::Changed);
        assert_eq!(t.apply(&table(6, Some("a"), &[("/a2", "a"), ("/x", "b")])), Outcome::Changed);
        assert_eq!(
            routes(&t),
            [("/a2".into(), "a".into()), ("/b".into(), "b".into())],
            "only a's routes changed; a route of b's in a's change is not taken"
        );
        assert_eq!(t.apply(&table(6, Some("a"), &[])), Outcome::Current, "the same change twice");
        assert_eq!(t.apply(&table(8, Some("b"), &[])), Outcome::Missed, "7 never came");
        assert_eq!(t.apply(&table(7, Some("b"), &[])), Outcome::Changed, "deleted");
        assert_eq!(routes(&t), [("/a2".into(), "a".into())]);
        assert_eq!(t.apply(&table(3, None, &[])), Outcome::Current, "an older whole table is not taken");
        assert_eq!(t.apply(&table(9, None, &[("/c", "c")])), Outcome::Changed);
        assert_eq!(routes(&t), [("/c".into(), "c".into())]);
    }
}
