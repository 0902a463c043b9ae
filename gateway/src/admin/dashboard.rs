//! What the dashboard reads beyond the rest of the admin API:
//! - `GET /api/v1/history`: every function's last minute (rate, error %,
//!   p50, p99, concurrency, replicas);
//! - `GET /api/v1/functions/{name}/history`: its last hour, a sample every
//!   5 s;
//! - `GET /api/v1/triggers`: each event trigger's backlog and its
//!   function's dead letters.

use super::{Admin, json};
use crate::body::Body;
use crate::history::STEP;
use http::{Response, StatusCode};
use serde::Serialize;

#[derive(Serialize)]
struct TriggerView {
    function: String,
    subject: String,
    /// Events not delivered yet (waiting, or delivered and not settled).
    backlog: Option<u64>,
    dead_letters: Option<u64>,
}

impl Admin {
    pub(super) fn history(&self) -> Response<Body> {
        json(StatusCode::OK, &self.history.summaries())
    }

    pub(super) fn function_history(&self, name: &str) -> Response<Body> {
        let samples = self.history.series(name);
        json(StatusCode::OK, &serde_json::json!({ "step_ms": STEP.as_millis() as u64, "samples": samples }))
    }

    pub(super) async fn triggers(&self) -> Response<Body> {
        let mut views = Vec::new();
        let log = self.dispatch.log();
        for t in self.serving.triggers() {
            let backlog = log.stats(&t.trigger.consumer).await.ok().map(|s| s.waiting + s.unacked);
            let dead_letters = log.dead_letter_count(&t.function).await.ok();
            views.push(TriggerView {
                function: t.function,
                subject: t.trigger.filter,
                backlog,
                dead_letters,
            });
        }
        views.sort_by(|a, b| (&a.function, &a.subject).cmp(&(&b.function, &b.subject)));
        json(StatusCode::OK, &views)
    }
}
