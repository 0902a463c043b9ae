//! A loaded function's serving loop: its invoke subscription, one task per
//! message, and the metrics, logs and receipts each leaves behind.

use super::Serving;
use crate::kind::{Context, Handler};
use crate::load::LoadCounters;
use crate::log_limit::LogLimit;
use futures::StreamExt;
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;

/// Takes invoke requests off the function's queue group; each runs in its own
/// task against whichever version is current when it arrives. When `stop`
/// closes (the function is unloaded) the subscription is drained: requests
/// the bus already routed here are still served, none is dropped.
pub(super) async fn serve(
    on: Arc<Serving>,
    mut sub: tern_bus::Subscription,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    current: Arc<RwLock<Arc<dyn Handler>>>,
    load: Arc<LoadCounters>,
) {
    let mut draining = false;
    // Per function on this worker, across its versions.
    let log_limit = Arc::new(LogLimit::default());
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stop, if !draining => {
                draining = true;
                sub.drain().await;
                continue;
            }
            msg = sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let function = current.read().clone();
        let on = on.clone();
        let load = load.clone();
        let log_limit = log_limit.clone();
        tokio::spawn(async move {
            let context = Context { bus: &on.bus, streams: on.streams.as_deref(), node: &on.node };
            let served = function.serve(context, &msg, &load).await;
            for r in &served.receipts {
                let took = Duration::from_micros(r.duration_us);
                let instantiate = Duration::from_micros(r.instantiate_us);
                on.metrics.invocation(
                    &r.function,
                    r.version,
                    r.trigger.as_str(),
                    r.status,
                    took,
                    instantiate,
                );
            }
            let logs = log_limit.admit(served.logs);
            // --no-metrics: no receipts either.
            let receipts = if on.metrics.enabled() { served.receipts } else { Vec::new() };
            on.journal.add(&*on.bus, function.name(), logs, receipts).await;
        });
    }
}
