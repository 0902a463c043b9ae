//! Running beside other schedulers on one registry: which control requests
//! this one answers (every one but wakes; wakes while it leads), and
//! keeping its view of the registry current when another one changes it.

use crate::Scheduler;
use futures::StreamExt;
use std::sync::Arc;
use tern_bus::{BusError, Subscription, respond};
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{ApiError, ServingTable, encode_reply};
use tern_task::guarded;

impl Scheduler {
    /// Answers the requests on one control subject, each in its own task.
    pub(crate) async fn answer(self: Arc<Self>, op: SchedulerOp, sub: Subscription) {
        // Every request runs through `guarded`: a panic costs that
        // request (answered with a 500), not the subscription.
        sub.for_each_concurrent(None, move |msg| {
            let me = self.clone();
            async move {
                let reply_to = msg.clone();
                if guarded("scheduler-op", me.handle(op, msg)).await.is_none() {
                    let failed = ApiError::internal("the scheduler failed on this request; see its log");
                    let _ = respond(&*me.bus, &reply_to, encode_reply::<()>(&Err(failed))).await;
                }
            }
        })
        .await
    }

    /// Subscribes to wakes while this scheduler leads, and lets go of them
    /// when it stops: a wake places a function, which is the leader's job.
    /// Between leaders a gateway's wake finds no one and it asks again.
    pub(crate) async fn answer_wakes_while_leading(self: Arc<Self>) {
        let mut leading = self.lease.watch();
        let me = Arc::downgrade(&self);
        drop(self);
        loop {
            let now = *leading.borrow_and_update();
            let Some(s) = me.upgrade() else { return };
            let task = if now {
                match s.bus.queue_subscribe(&subject::scheduler(SchedulerOp::Wake), "scheduler").await {
                    Ok(sub) => Some(tokio::spawn(s.clone().answer(SchedulerOp::Wake, sub))),
                    Err(e) => {
                        tracing::error!("cannot take wakes: {e}");
                        None
                    }
                }
            } else {
                None
            };
            // A new leader places what the old one left.
            if now {
                s.wake.notify_one();
            }
            drop(s);
            let changed = leading.changed().await;
            if let Some(t) = task {
                t.abort();
            }
            if changed.is_err() {
                return;
            }
        }
    }

    /// Reads again what another scheduler changed (every change's serving
    /// table goes to every gateway, and to every scheduler), and has the
    /// leader place it.
    pub(crate) async fn follow_changes(self: &Arc<Self>) -> Result<(), BusError> {
        let mut sub = self.bus.subscribe(&subject::serving_changed()).await?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(s) = me.upgrade() else { return };
                let Ok(change) = serde_json::from_slice::<ServingTable>(&msg.payload) else { continue };
                let Some(name) = change.only else { continue };
                if tern_protocol::validate_function_name(&name).is_err() {
                    continue;
                }
                if let Err(e) = s.registry.refresh(&name).await {
                    tracing::warn!(function = %name, "cannot read a change another scheduler made: {e}");
                }
                if s.lease.leading() {
                    s.wake.notify_one();
                }
            }
        });
        Ok(())
    }
}
