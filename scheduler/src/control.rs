//! The scheduler's control subjects (`tern.v1.scheduler.*`): decode each
//! request, run the operation, answer with one encoded reply. Reads and
//! wakes are here; registry changes are in [`crate::changes`].

use crate::Scheduler;
use std::time::Instant;
use tern_bus::{Message, respond};
use tern_protocol::subject::SchedulerOp;
use tern_protocol::{
    ApiError, ClusterStatus, DeployRequest, Frame, FunctionDetail, InvocationsRequest, LogsRequest,
    NameRequest, Reply, RollbackRequest, SecretDeleteRequest, SecretSetRequest, TriggerStatus, WakeReply,
    WakeRequest, encode_reply,
};

fn parse<T: serde::de::DeserializeOwned>(msg: &Message) -> Result<T, ApiError> {
    serde_json::from_slice(&msg.payload).map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))
}

impl Scheduler {
    /// Answers one control request.
    pub(crate) async fn handle(&self, op: SchedulerOp, msg: Message) {
        let reply = match op {
            SchedulerOp::Deploy => match Frame::<DeployRequest>::decode(msg.payload.clone()) {
                Ok(f) => encode_reply(&self.deploy(f.header, f.body).await),
                Err(e) => {
                    encode_reply::<()>(&Err(ApiError::bad_request(format!("malformed deploy request: {e}"))))
                }
            },
            SchedulerOp::List => encode_reply(&self.registry.list().await.map_err(ApiError::from)),
            SchedulerOp::Describe => match parse::<NameRequest>(&msg) {
                Ok(req) => encode_reply(&self.describe(req.name).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::Wake => match parse::<WakeRequest>(&msg) {
                Ok(req) => encode_reply(&self.wake(req).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::Delete => match parse::<NameRequest>(&msg) {
                Ok(req) => encode_reply(&self.delete(req.name).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::Rollback => match parse::<RollbackRequest>(&msg) {
                Ok(req) => encode_reply(&self.rollback(req).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::Logs => match parse::<LogsRequest>(&msg) {
                Ok(req) => encode_reply(&self.logs(req).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::Routes => encode_reply(&self.registry.serving_table().await.map_err(ApiError::from)),
            SchedulerOp::Status => encode_reply(&self.status().await),
            SchedulerOp::SecretSet => match parse::<SecretSetRequest>(&msg) {
                Ok(req) => encode_reply(&self.set_secret(req).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::SecretList => encode_reply(&self.list_secrets().await),
            SchedulerOp::Invocations => match parse::<InvocationsRequest>(&msg) {
                Ok(req) => encode_reply(&self.invocations(req).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
            SchedulerOp::SecretDelete => match parse::<SecretDeleteRequest>(&msg) {
                Ok(req) => encode_reply(&self.delete_secret(req).await),
                Err(e) => encode_reply::<()>(&Err(e)),
            },
        };
        if let Err(e) = respond(&*self.bus, &msg, reply).await {
            tracing::warn!("could not answer {}: {e}", msg.subject);
        }
    }

    /// A gateway holds requests for `function` and nothing serves it: load
    /// a replica and answer once it is ready. Each call is one cold start at
    /// most; concurrent wakes for one function share the placement.
    async fn wake(&self, req: WakeRequest) -> Reply<WakeReply> {
        let started = Instant::now();
        let function = req.function;
        self.scaling.woke(&function);
        let ready = self.nodes.ready_any(&function);
        if ready > 0 {
            return Ok(WakeReply { ready });
        }
        let failures = {
            let _order = self.changes.lock().await;
            // Another wake may have placed it while this one waited.
            let ready = self.nodes.ready_any(&function);
            if ready > 0 {
                return Ok(WakeReply { ready });
            }
            self.reconcile_locked(Some(&function)).await
        };
        let ready = self.nodes.ready_any(&function);
        if ready == 0 {
            let detail = self.registry.describe(&function).await?;
            let why = match failures.get(&function) {
                Some(e) => format!("no worker could load it: {}", e.message),
                None => "no live worker can take it (none running, none matching its node selector, or no memory left)"
                    .to_string(),
            };
            tracing::warn!(function, version = detail.active_version, "wake failed: {why}");
            return Err(ApiError::unavailable(format!("function {function} cannot start: {why}")));
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.scaling.cold_started(&function, ms);
        tracing::info!(function, waiting = req.waiting, ms = format!("{ms:.2}"), "cold start");
        Ok(WakeReply { ready })
    }

    async fn describe(&self, name: String) -> Reply<FunctionDetail> {
        let mut d = self.registry.describe(&name).await?;
        d.replicas = self.nodes.ready(&d.name, d.active_version);
        d.scale = self.scaling.status(&d.name);
        d.outbound = self.nodes.outbound(&d.name);
        // The event log's view: best effort, a describe never fails on it.
        for t in d.active.spec.triggers() {
            match self.events.stats(&t.consumer).await {
                Ok(s) => d.triggers.push(TriggerStatus {
                    filter: t.filter,
                    consumer: t.consumer,
                    waiting: s.waiting,
                    unacked: s.unacked,
                }),
                Err(e) => tracing::debug!("no stats for {}: {e}", t.consumer),
            }
        }
        if let Ok(n) = self.events.dead_letter_count(&d.name).await {
            d.dead_letters = n;
        }
        Ok(d)
    }

    async fn status(&self) -> Reply<ClusterStatus> {
        let versions = self.registry.active_versions().await?;
        let (nodes, replicas) = self.nodes.status();
        let scale =
            versions.iter().map(|v| (v.spec.name.clone(), self.scaling.status(&v.spec.name))).collect();
        Ok(ClusterStatus { nodes, replicas, scale, leader: Some(self.lease.status()) })
    }
}
