//! Event triggers' durable consumers and cron ticks: the scheduler's side
//! of events. Gateways consume the triggers; the scheduler makes sure each
//! exists before the deploy that asks for it is answered, removes those no
//! active version wants, and publishes each schedule's ticks into the
//! event log, so a tick is delivered (retried, dead-lettered) like any
//! event.

use crate::registry::Registry;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tern_events::{ConsumerConfig, EventError, EventLog};
use tern_protocol::cron::Schedule;
use tern_protocol::{Trigger, Version, subject};

/// A delivery not settled or marked in progress within this long is
/// delivered again (a gateway that died mid-delivery). Gateways mark slow
/// deliveries in progress well inside it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

pub fn consumer_config(t: &Trigger) -> ConsumerConfig {
    ConsumerConfig { name: t.consumer.clone(), filter: t.filter.clone(), ack_wait: ACK_WAIT }
}

/// Creates the consumers `wanted` names, before the version that wants
/// them is recorded: no event published once deploy answers is missed.
pub async fn create(events: &dyn EventLog, wanted: &[Trigger]) -> Result<(), EventError> {
    for t in wanted {
        events.create_consumer(&consumer_config(t)).await?;
    }
    Ok(())
}

/// Removes every consumer no active version has a trigger for.
pub async fn remove_unwanted(events: &dyn EventLog, active: &[Version]) -> Result<(), EventError> {
    let wanted: BTreeSet<String> =
        active.iter().flat_map(|v| v.spec.triggers()).map(|t| t.consumer).collect();
    for c in events.consumers().await? {
        if !wanted.contains(&c.name) {
            tracing::info!(consumer = %c.name, filter = %c.filter, "removing a trigger no version wants");
            events.delete_consumer(&c.name).await?;
        }
    }
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Fires due cron ticks, once each: the last tick fired per function is
/// kept in the registry, so a restarted scheduler neither repeats a tick
/// nor replays the ticks it was down for (it fires the latest missed one
/// once, then follows the schedule).
pub async fn fire_due(
    registry: Arc<Registry>,
    events: &dyn EventLog,
    parsed: &mut HashMap<String, Schedule>,
) {
    let versions = {
        let r = registry.clone();
        match tokio::task::spawn_blocking(move || r.active_versions()).await {
            Ok(Ok(v)) => v,
            _ => return,
        }
    };
    let now = now_secs();
    for v in versions {
        let (name, Some(expr)) = (v.spec.name.clone(), v.spec.schedule.clone()) else { continue };
        let schedule = match parsed.get(&expr) {
            Some(s) => s.clone(),
            None => match Schedule::parse(&expr) {
                Ok(s) => parsed.entry(expr.clone()).or_insert(s).clone(),
                Err(_) => continue, // validated at deploy
            },
        };
        let r = registry.clone();
        let n = name.clone();
        let last = match tokio::task::spawn_blocking(move || r.cron_fired(&n)).await {
            Ok(Ok(last)) => last,
            _ => continue,
        };
        let Some(last) = last else {
            // First sight of this schedule: start from now.
            let r = registry.clone();
            let _ = tokio::task::spawn_blocking(move || r.set_cron_fired(&name, now)).await;
            continue;
        };
        // The latest tick in (last, now], if any.
        let mut due = None;
        let mut t = last;
        while let Some(next) = schedule.next_after(t) {
            if next > now {
                break;
            }
            due = Some(next);
            t = next;
        }
        let Some(tick) = due else { continue };
        let data = serde_json::json!({ "schedule": expr, "tick": tick }).to_string();
        let headers = vec![("Tern-Schedule".to_string(), expr.clone())];
        // Published before the tick is recorded: a crash in between fires
        // it twice rather than never (events are at least once).
        match events.publish(&subject::cron(&name), headers, Bytes::from(data)).await {
            Ok(e) => tracing::info!(function = %name, tick, event = %e.id, "cron tick"),
            Err(e) => {
                tracing::warn!(function = %name, "cron tick {tick} not published, will retry: {e}");
                continue;
            }
        }
        let r = registry.clone();
        let _ = tokio::task::spawn_blocking(move || r.set_cron_fired(&name, tick)).await;
    }
}
