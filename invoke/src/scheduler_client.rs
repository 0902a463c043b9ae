//! The gateway's side of the scheduler's control subjects: one request,
//! one decoded reply.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::{Bus, BusError};
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{ApiError, Reply, ServingTable, decode_reply};

/// Deploys compile the component; give them time.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone)]
pub struct SchedulerClient {
    bus: Arc<dyn Bus>,
}

impl SchedulerClient {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        SchedulerClient { bus }
    }

    /// Sends `op` and decodes the reply; a scheduler that is not running
    /// or does not answer is `unavailable`.
    pub async fn request<T: DeserializeOwned>(&self, op: SchedulerOp, payload: Bytes) -> Reply<T> {
        self.request_within(op, payload, CONTROL_TIMEOUT).await.map_err(|e| match e {
            BusError::NoResponders(_) => ApiError::unavailable("the scheduler is not running"),
            other => ApiError::unavailable(format!("the scheduler did not answer: {other}")),
        })?
    }

    /// Like [`SchedulerClient::request`], keeping a transport failure apart
    /// from the scheduler's own answer (the activator retries the first and
    /// not the second).
    pub async fn request_within<T: DeserializeOwned>(
        &self,
        op: SchedulerOp,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Reply<T>, BusError> {
        let msg = self.bus.request(&subject::scheduler(op), payload, timeout).await?;
        Ok(decode_reply(msg.payload, "the scheduler"))
    }

    /// A request whose body is `body` as JSON.
    pub async fn call<T: DeserializeOwned>(&self, op: SchedulerOp, body: &impl serde::Serialize) -> Reply<T> {
        self.request(op, Bytes::from(serde_json::to_vec(body).expect("serialise"))).await
    }

    /// The current serving table (routes and triggers).
    pub async fn serving_table(&self) -> Reply<ServingTable> {
        self.request(SchedulerOp::Routes, Bytes::from_static(b"{}")).await
    }
}
