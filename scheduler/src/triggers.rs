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
use tern_protocol::{Trigger, Version, clock, subject};

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
pub async fn remove_unwanted(events: &dyn EventLog, active: &[Arc<Version>]) -> Result<(), EventError> {
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

/// Fires cron ticks into the event log. Keeps each schedule parsed.
#[derive(Default)]
pub struct Cron {
    parsed: HashMap<String, Schedule>,
}

impl Cron {
    /// Fires due ticks, once each: the last tick fired per function is
    /// kept in the registry, so a restarted scheduler neither repeats a
    /// tick nor replays the ticks it was down for (it fires the latest
    /// missed one once, then follows the schedule). Run by the leader
    /// only; even so a tick is claimed in the registry (a revision-checked
    /// write) before it is published, so a scheduler that lost the lease
    /// without knowing yet cannot fire it a second time.
    pub async fn fire_due(&mut self, registry: &dyn Registry, events: &dyn EventLog) {
        let Ok(versions) = registry.active_versions().await else { return };
        let now = clock::now_secs();
        for v in versions {
            let (name, Some(expr)) = (v.spec.name.clone(), v.spec.schedule.clone()) else { continue };
            let schedule = match self.parsed.get(&expr) {
                Some(s) => s.clone(),
                None => match Schedule::parse(&expr) {
                    Ok(s) => self.parsed.entry(expr.clone()).or_insert(s).clone(),
                    Err(_) => continue, // validated at deploy
                },
            };
            let Ok(last) = registry.cron_fired(&name).await else { continue };
            let Some(last) = last else {
                // First sight of this schedule: start from now.
                let _ = registry.claim_cron(&name, None, now).await;
                continue;
            };
            let Some(tick) = latest_due(&schedule, last, now) else { continue };
            // Claimed before it is published: a crash in between loses
            // this tick (the next one fires), and no two schedulers fire it.
            match registry.claim_cron(&name, Some(last), tick).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(function = %name, "cron tick {tick} not claimed, will retry: {e}");
                    continue;
                }
            }
            let data = serde_json::json!({ "schedule": expr, "tick": tick }).to_string();
            let headers = vec![("Tern-Schedule".to_string(), expr.clone())];
            match events.publish(&subject::cron(&name), headers, Bytes::from(data)).await {
                Ok(e) => tracing::info!(function = %name, tick, event = %e.id, "cron tick"),
                Err(e) => {
                    // Given back, so the next round tries it again.
                    tracing::warn!(function = %name, "cron tick {tick} not published, will retry: {e}");
                    let _ = registry.claim_cron(&name, Some(tick), last).await;
                }
            }
        }
    }
}

/// The latest tick in `(last, now]`, if any.
fn latest_due(schedule: &Schedule, last: u64, now: u64) -> Option<u64> {
    let mut due = None;
    let mut t = last;
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        due = Some(next);
        t = next;
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_missed_tick_is_due() {
        let every_10s = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(latest_due(&every_10s, 1000, 1005), None);
        assert_eq!(latest_due(&every_10s, 1000, 1010), Some(1010));
        assert_eq!(latest_due(&every_10s, 1000, 1075), Some(1070), "a scheduler down for 75 s fires once");
    }
}
