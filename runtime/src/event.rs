//! The event world: guests exporting `tern:function/event-handler` (the
//! contract in `sdk/wit/tern-function.wit`). An invoke message is an
//! [`EventBatch`] (a single event is a batch of one); each event gets its
//! own instance (fresh, or kept with `--instance-reuse`), run side by side,
//! and the reply carries one result per event, in order.

use crate::failure::{Failed, Failure};
use crate::host::Host;
use crate::instance::Settings;
use crate::instance::{Function, Instance, Invoked, World};
use crate::kind::{Context, Handler, Kind};
use crate::limits::Limits;
use crate::load::LoadCounters;
use crate::meter::{Ending, Metered, Served};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tern_bus::Message;
use tern_protocol::FunctionSpec;
use tern_protocol::trace::{self, TraceParent};
use tern_protocol::{
    EventBatch, EventBatchResult, EventDelivery, EventResult, Frame, LogRecord, LogStream, Receipt,
    TriggerKind, cap_error_text, subject,
};
use wasmtime::Engine;
use wasmtime::component::InstancePre;

/// Host bindings for `sdk/wit/tern-function.wit`, the contract.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "tern:function/event-function",
        exports: { default: async },
    });
}

pub use bindings::EventFunctionPre;

pub struct Event {
    pre: EventFunctionPre<Host>,
}

/// A loaded version of an event function.
pub type EventFunction = Function<Event>;

impl Event {
    pub(crate) fn new(pre: EventFunctionPre<Host>) -> Self {
        Event { pre }
    }
}

impl World for Event {
    type Input = (EventDelivery, Bytes);
    /// The handler's own answer: Ok acknowledges, Err asks for a retry.
    type Output = Result<(), String>;
    type Made = bindings::EventFunction;

    fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    fn trace((delivery, _): &Self::Input) -> Option<TraceParent> {
        let (_, v) = delivery.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(trace::HEADER))?;
        // This invocation is a span of the publisher's trace.
        TraceParent::parse(v).map(|t| t.child())
    }

    async fn call(
        &self,
        instance: Instance<Self::Made>,
        limits: Limits,
        (delivery, data): Self::Input,
    ) -> Result<Self::Output, Failed> {
        let Instance { mut store, made, back } = instance;
        let event = bindings::tern::function::types::Event {
            id: delivery.id,
            subject: delivery.subject,
            data: data.to_vec(),
            headers: delivery.headers,
            attempt: delivery.attempt,
        };
        limits.usage.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
        let pre = self.pre.clone();
        let usage = limits.usage.clone();
        let guest = Box::pin(async move {
            let f = match made {
                Some(f) => f,
                None => usage.instantiating(pre.instantiate_async(&mut store)).await?,
            };
            let answer = f.tern_function_event_handler().call_handle(&mut store, &event).await?;
            // Its own error (asking for a retry) is a normal return too.
            Instance::done(back, store, f);
            Ok(answer)
        });
        let call = Metered { guest, usage: limits.usage.clone(), running: None };
        match tokio::time::timeout_at(limits.grace(), call).await {
            Err(_) => Err(limits.timed_out()),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(limits.classify(e)),
        }
    }
}

impl EventFunction {
    /// Serves one invoke message: a batch of events, each counted in
    /// `load` as its own request, with its own receipt (`node`: this
    /// worker).
    pub(crate) async fn serve(&self, payload: Bytes, load: &LoadCounters, node: &str) -> (Bytes, Served) {
        let Frame { header: batch, body } = match Frame::<EventBatch>::decode(payload) {
            Ok(f) => f,
            Err(e) => {
                // No count to answer with: the caller treats a short
                // answer as a failure of every event it sent.
                tracing::warn!(function = %self.name, "malformed event batch: {e}");
                return (
                    Frame::new(EventBatchResult { results: vec![] }, Bytes::new()).encode(),
                    Served::default(),
                );
            }
        };
        let mut offset: usize = 0;
        let mut runs = Vec::with_capacity(batch.batch.len());
        for e in batch.batch {
            let end = offset.saturating_add(e.len).min(body.len());
            let data = body.slice(offset.min(end)..end);
            offset = end;
            runs.push(async move {
                let started = load.started();
                let cold = load.first_call();
                let outcome = self.deliver(e.delivery, data, cold, node).await;
                load.finished(started, outcome.0.error.is_some());
                outcome
            });
        }
        let mut served = Served::default();
        let mut results = Vec::with_capacity(runs.len());
        for (result, logs, receipt) in futures::future::join_all(runs).await {
            served.logs.extend(logs);
            served.receipts.push(receipt);
            results.push(result);
        }
        (Frame::new(EventBatchResult { results }, Bytes::new()).encode(), served)
    }

    /// One event in a fresh instance; its result says why it failed, if it
    /// did (the handler's error, or a trap, timeout or limit).
    async fn deliver(
        &self,
        delivery: EventDelivery,
        data: Bytes,
        cold: bool,
        node: &str,
    ) -> (EventResult, Vec<LogRecord>, Receipt) {
        let (id, attempt) = (delivery.id.clone(), delivery.attempt);
        let trigger = delivery.trigger.unwrap_or(if subject::function_of_cron(&delivery.subject).is_some() {
            TriggerKind::Cron
        } else {
            TriggerKind::Event
        });
        let context = || format!("event {id} attempt {attempt}: ");
        let invocation = tern_protocol::id::invocation_id();
        let Invoked { result, mut logs, meter, .. } =
            self.invoke((delivery, data), invocation, context).await;
        let transient = matches!(result, Err(Failure::Capacity | Failure::NodeMemory(_)));
        let (error, status) = match result {
            Ok(Ok(())) => (None, 200),
            Ok(Err(message)) => {
                let message = cap_error_text(message);
                let line = format!("event {id} attempt {attempt} failed: {message}");
                logs.push(self.log(&meter.id).record(LogStream::Tern, line));
                (Some(message), 500)
            }
            Err(failure) => (Some(failure.public_message()), failure.status()),
        };
        let end = Ending { trigger, status, error: error.clone(), attempt: Some(attempt), cold };
        let receipt = meter.receipt(&self.name, self.version, node, end);
        (EventResult { error, transient }, logs, receipt)
    }
}

/// Event functions: components exporting `tern:function/event-handler`.
pub(crate) struct EventKind;

impl Kind for EventKind {
    fn world(&self) -> tern_protocol::World {
        tern_protocol::World::Event
    }

    fn export(&self) -> &'static str {
        "tern:function/event-handler"
    }

    fn noun(&self) -> &'static str {
        "an event function"
    }

    fn check_spec(&self, spec: &FunctionSpec) -> Result<(), String> {
        if !spec.routes.is_empty() {
            return Err(
                "this component is an event function (it exports tern:function/event-handler); it cannot \
                 serve HTTP routes"
                    .into(),
            );
        }
        Ok(())
    }

    fn check_exports(&self, pre: InstancePre<Host>) -> Result<(), String> {
        EventFunctionPre::new(pre).map(drop).map_err(|e| format!("{e:#}"))
    }

    fn load(
        &self,
        pre: InstancePre<Host>,
        settings: Settings,
        _body_limit: usize,
    ) -> Result<Arc<dyn Handler>, String> {
        let pre = EventFunctionPre::new(pre).map_err(|e| format!("{e:#}"))?;
        Ok(Arc::new(EventFunction::new(settings, Event::new(pre))))
    }
}

#[async_trait::async_trait]
impl Handler for EventFunction {
    fn name(&self) -> &str {
        &self.name
    }

    async fn serve(&self, on: Context<'_>, msg: &Message, load: &LoadCounters) -> Served {
        let (reply, served) = EventFunction::serve(self, msg.payload.clone(), load, on.node).await;
        crate::http::reply(&**on.bus, msg, reply).await;
        served
    }
}
