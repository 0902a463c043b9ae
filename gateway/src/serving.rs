//! What this gateway serves now: the scheduler's [`ServingTable`] (HTTP
//! routes and event triggers). Installing a table swaps the router and
//! starts or stops trigger pull loops to match, in one place; the table
//! arrives by push, by the reply to a deploy, rollback or delete relayed
//! through this gateway, and by a periodic re-read.

use crate::router::Router;
use crate::triggers::Triggers;
use futures::StreamExt;
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::{Bus, BusError};
use tern_invoke::SchedulerClient;
use tern_protocol::{RouteEntry, ServingTable, subject};
use tern_task::guarded;

/// How often a gateway re-reads the table besides taking pushes.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

pub struct Serving {
    router: RwLock<Arc<Router>>,
    triggers: Triggers,
}

impl Serving {
    pub fn new(triggers: Triggers) -> Self {
        Serving { router: RwLock::new(Arc::new(Router::default())), triggers }
    }

    /// Installs `table` unless a newer one is already in place: routes,
    /// then the triggers it lists (the only place triggers start and stop).
    pub fn apply(&self, table: &ServingTable) {
        let mut current = self.router.write();
        if table.generation >= current.generation() {
            *current = Arc::new(Router::new(table));
            self.triggers.apply(&table.triggers);
        }
    }

    /// A pushed table: installed if it is the next one; otherwise missed
    /// pushes, or whoever pushed is not the scheduler (a generation far
    /// ahead would freeze routing), so the scheduler is asked instead.
    async fn take_push(&self, scheduler: &SchedulerClient, payload: &[u8]) {
        match serde_json::from_slice::<ServingTable>(payload) {
            Ok(t) if t.generation == self.generation() + 1 => self.apply(&t),
            Ok(t) => {
                tracing::info!(
                    pushed = t.generation,
                    have = self.generation(),
                    "re-reading the serving table"
                );
                match scheduler.serving_table().await {
                    Ok(t) => self.apply(&t),
                    Err(e) => tracing::warn!("cannot re-read the serving table: {}", e.message),
                }
            }
            Err(e) => tracing::warn!("ignoring a malformed serving table push: {e}"),
        }
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
                    Ok(t) => return me.apply(&t),
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
