//! One delivery to an event function: a fresh store and instance from the
//! function's pre-instantiated component, `tern:function/event-handler.handle`
//! called with the event, limits as for HTTP functions, output captured.

use crate::host::{Host, LOG_CAPTURE_BYTES};
use crate::invoke::{Failure, LogSink, Settings, classify_error, new_store};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tern_protocol::{EventDelivery, EventResult, LogRecord, LogStream};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// Host bindings for `sdk/wit/tern-function.wit`, the contract.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "tern:function/event-function",
        exports: { default: async },
    });
}

pub use bindings::EventFunctionPre;

/// A loaded version of an event function.
pub struct EventFunction {
    pub name: String,
    pub version: u64,
    pre: EventFunctionPre<Host>,
    env: Vec<(String, String)>,
    memory_mib: u32,
    timeout: Duration,
}

pub struct EventOutcome {
    pub result: EventResult,
    pub failure: Option<Failure>,
    pub logs: Vec<LogRecord>,
}

impl EventFunction {
    pub(crate) fn new(settings: Settings, pre: EventFunctionPre<Host>) -> Self {
        let Settings { name, version, env, memory_mib, timeout } = settings;
        EventFunction { name, version, pre, env, memory_mib, timeout }
    }

    pub async fn deliver(&self, delivery: EventDelivery, data: Bytes) -> EventOutcome {
        let stdout = MemoryOutputPipe::new(LOG_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(LOG_CAPTURE_BYTES);
        let (event_id, attempt) = (delivery.id.clone(), delivery.attempt);
        let result = self.run(delivery, data, stdout.clone(), stderr.clone()).await;
        let log = LogSink { function: &self.name, version: self.version };
        let mut logs = log.output(&stdout, &stderr);
        let (error, failure) = match result {
            Ok(Ok(())) => (None, None),
            Ok(Err(message)) => {
                logs.push(log.record(
                    LogStream::Tern,
                    format!("event {event_id} attempt {attempt} failed: {message}"),
                ));
                (Some(message), None)
            }
            Err((failure, detail)) => {
                let mut line = format!("event {event_id} attempt {attempt}: {}", failure.log_line());
                if let Some(d) = detail {
                    line.push_str(&format!("\n{d}"));
                }
                logs.push(log.record(LogStream::Tern, line));
                (Some(failure.public_message()), Some(failure))
            }
        };
        EventOutcome { result: EventResult { error }, failure, logs }
    }

    async fn run(
        &self,
        delivery: EventDelivery,
        data: Bytes,
        stdout: MemoryOutputPipe,
        stderr: MemoryOutputPipe,
    ) -> Result<Result<(), String>, (Failure, Option<String>)> {
        let deadline = Instant::now() + self.timeout;
        let (mut store, memory_hit) =
            new_store(self.pre.engine(), &self.env, self.memory_mib, deadline, stdout, stderr);
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
        // A guest blocked on the host (not spinning) is caught here.
        let grace = deadline + Duration::from_millis(50);
        match tokio::time::timeout_at(grace.into(), call).await {
            Err(_) => Err((Failure::Timeout(self.timeout), None)),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                Err(classify_error(e, memory_hit.load(Ordering::Relaxed), self.timeout, self.memory_mib))
            }
        }
    }
}
