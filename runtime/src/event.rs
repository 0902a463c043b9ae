//! The event world: guests exporting `tern:function/event-handler` (the
//! contract in `sdk/wit/tern-function.wit`). An invoke message is an
//! [`EventBatch`] (a single event is a batch of one); each event gets its
//! own fresh instance, run side by side, and the reply carries one result
//! per event, in order.

use crate::host::Host;
use crate::instance::{Failed, Failure, Function, Invoked, Limits, World};
use crate::load::LoadCounters;
use bytes::Bytes;
use tern_protocol::{
    EventBatch, EventBatchResult, EventDelivery, EventResult, Frame, LogRecord, LogStream, cap_error_text,
};
use wasmtime::{Engine, Store};

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

    fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    async fn call(
        &self,
        mut store: Store<Host>,
        limits: Limits,
        (delivery, data): Self::Input,
    ) -> Result<Self::Output, Failed> {
        let event = bindings::tern::function::types::Event {
            id: delivery.id,
            subject: delivery.subject,
            data: data.to_vec(),
            headers: delivery.headers,
            attempt: delivery.attempt,
        };
        let pre = self.pre.clone();
        let call = async move {
            let f = pre.instantiate_async(&mut store).await?;
            f.tern_function_event_handler().call_handle(&mut store, &event).await
        };
        match tokio::time::timeout_at(limits.grace(), call).await {
            Err(_) => Err(limits.timed_out()),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(limits.classify(e)),
        }
    }
}

impl EventFunction {
    /// Serves one invoke message: a batch of events, each counted in
    /// `load` as its own request.
    pub(crate) async fn serve(&self, payload: Bytes, load: &LoadCounters) -> (Bytes, Vec<LogRecord>) {
        let Frame { header: batch, body } = match Frame::<EventBatch>::decode(payload) {
            Ok(f) => f,
            Err(e) => {
                // No count to answer with: the caller treats a short
                // answer as a failure of every event it sent.
                tracing::warn!(function = %self.name, "malformed event batch: {e}");
                return (Frame::new(EventBatchResult { results: vec![] }, Bytes::new()).encode(), Vec::new());
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
                let outcome = self.deliver(e.delivery, data).await;
                load.finished(started, outcome.0.error.is_some());
                outcome
            });
        }
        let mut logs = Vec::new();
        let mut results = Vec::with_capacity(runs.len());
        for (result, event_logs) in futures::future::join_all(runs).await {
            logs.extend(event_logs);
            results.push(result);
        }
        (Frame::new(EventBatchResult { results }, Bytes::new()).encode(), logs)
    }

    /// One event in a fresh instance; its result says why it failed, if it
    /// did (the handler's error, or a trap, timeout or limit).
    async fn deliver(&self, delivery: EventDelivery, data: Bytes) -> (EventResult, Vec<LogRecord>) {
        let (id, attempt) = (delivery.id.clone(), delivery.attempt);
        let context = || format!("event {id} attempt {attempt}: ");
        let Invoked { result, mut logs, .. } = self.invoke((delivery, data), context).await;
        let transient = matches!(result, Err(Failure::Capacity));
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(message)) => {
                let message = cap_error_text(message);
                let line = format!("event {id} attempt {attempt} failed: {message}");
                logs.push(self.log().record(LogStream::Tern, line));
                Some(message)
            }
            Err(failure) => Some(failure.public_message()),
        };
        (EventResult { error, transient }, logs)
    }
}
