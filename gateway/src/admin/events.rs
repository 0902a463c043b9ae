//! Events through the admin API: publish, one event straight to a
//! function, dead letters and their replay.

use super::{Admin, error, error_with, json, param};
use crate::body::{self, Body};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tern_events::EventError;
use tern_protocol::{ApiError, EventDelivery};

#[derive(Serialize)]
struct DeadLetterView {
    id: String,
    subject: String,
    attempts: u32,
    error: String,
    published_ms: u64,
    failed_ms: u64,
    headers: Vec<(String, String)>,
    /// The data as text (lossy if it is not UTF-8), and its size.
    data: String,
    size: usize,
}

impl Admin {
    /// Reads event data under the body limit: 413 past it.
    async fn event_data(&self, req: Request<Incoming>) -> Result<bytes::Bytes, Response<Body>> {
        body::read(req.into_body(), self.body_limit, "event data")
            .await
            .map_err(|e| error_with(e.status(), ApiError::bad_request(e.to_string())))
    }

    /// Stores one event; the answer comes only once it is durable.
    pub(super) async fn publish(&self, subject: String, req: Request<Incoming>) -> Response<Body> {
        if let Err(e) = tern_protocol::nats_subject::check_event_subject(&subject) {
            return error(ApiError::bad_request(e));
        }
        // Forwarded as event headers: what describes the data.
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str() == "content-type" || k.as_str().starts_with("tern-header-"))
            .filter_map(|(k, v)| {
                let k = k.as_str().strip_prefix("tern-header-").unwrap_or(k.as_str());
                Some((k.to_string(), v.to_str().ok()?.to_string()))
            })
            .collect();
        let data = match self.event_data(req).await {
            Ok(d) => d,
            Err(r) => return r,
        };
        match self.dispatch.log().publish(&subject, headers, data).await {
            Ok(e) => json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "id": e.id, "subject": e.subject, "seq": e.seq }),
            ),
            Err(EventError::Unrouted(s)) => error(ApiError::not_found(format!(
                "no function is triggered by {s:?}; the event was not stored"
            ))),
            Err(EventError::Subject { subject, reason }) => {
                error(ApiError::bad_request(format!("event subject {subject:?} is not valid: {reason}")))
            }
            Err(e) => error(ApiError::unavailable(format!("the event was not stored: {e}"))),
        }
    }

    /// Delivers the request body as one event (attempt 1) straight to an
    /// event function, bypassing its triggers: for trying a handler out.
    /// 200 with `{"event_id", "error": null}` when the handler acknowledged
    /// it, 500 with the error when it asked for a retry.
    pub(super) async fn deliver_event(
        &self,
        name: &str,
        timeout_ms: u64,
        q: &[(String, String)],
        req: Request<Incoming>,
    ) -> Response<Body> {
        let subject = param(q, "subject").map_or_else(|| format!("invoke.{name}"), str::to_string);
        let data = match self.event_data(req).await {
            Ok(d) => d,
            Err(r) => return r,
        };
        let id = tern_events::new_event_id();
        let head = EventDelivery {
            id: id.clone(),
            subject,
            headers: Vec::new(),
            attempt: 1,
            trigger: Some(tern_protocol::TriggerKind::Invoke),
        };
        let error = self.dispatch.deliver_one(name, timeout_ms, head, &data).await.err();
        let status = if error.is_none() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
        json(status, &serde_json::json!({ "event_id": id, "error": error }))
    }

    pub(super) async fn dead_letters(&self, name: &str) -> Response<Body> {
        // A typo in the name is "no such function", not "no dead letters".
        if let Err(e) = self.describe(name).await {
            return error(e);
        }
        match self.dispatch.log().dead_letters(name).await {
            Ok(letters) => {
                let view: Vec<DeadLetterView> = letters
                    .into_iter()
                    .map(|l| DeadLetterView {
                        id: l.event.id,
                        subject: l.event.subject,
                        attempts: l.attempts,
                        error: l.error,
                        published_ms: l.event.published_ms,
                        failed_ms: l.failed_ms,
                        headers: l.event.headers,
                        data: String::from_utf8_lossy(&l.event.data).into_owned(),
                        size: l.event.data.len(),
                    })
                    .collect();
                json(StatusCode::OK, &view)
            }
            Err(e) => error(ApiError::unavailable(format!("cannot read dead letters: {e}"))),
        }
    }

    /// Delivers dead letters to the function again, one at a time, numbered
    /// as the attempt after their last; each one handled is removed, each
    /// that fails again stays, nothing lost. 200 if all were handled, 500
    /// if not.
    pub(super) async fn replay(&self, name: &str, id: Option<String>) -> Response<Body> {
        let detail = match self.describe(name).await {
            Ok(d) => d,
            Err(e) => return error(e),
        };
        let log = self.dispatch.log();
        let letters = match log.dead_letters(name).await {
            Ok(l) => l,
            Err(e) => return error(ApiError::unavailable(format!("cannot read dead letters: {e}"))),
        };
        let chosen: Vec<_> =
            letters.into_iter().filter(|l| id.as_ref().is_none_or(|id| &l.event.id == id)).collect();
        if let (Some(id), true) = (&id, chosen.is_empty()) {
            return error(ApiError::not_found(format!("function {name} has no dead letter {id}")));
        }
        let mut results = Vec::new();
        let mut failed = 0;
        for l in chosen {
            let head = EventDelivery {
                id: l.event.id.clone(),
                subject: l.event.subject.clone(),
                headers: l.event.headers.clone(),
                // The count goes on, so a handler can tell a replay.
                attempt: l.attempts + 1,
                trigger: Some(tern_protocol::TriggerKind::Invoke),
            };
            let timeout_ms = detail.active.spec.timeout_ms;
            let error = match self.dispatch.deliver_one(name, timeout_ms, head, &l.event.data).await {
                Ok(()) => match log.remove_dead_letter(name, &l.event.id).await {
                    Ok(_) => None,
                    Err(e) => Some(format!("handled, but the dead letter could not be removed: {e}")),
                },
                Err(e) => Some(e),
            };
            failed += usize::from(error.is_some());
            results
                .push(serde_json::json!({ "id": l.event.id, "delivered": error.is_none(), "error": error }));
        }
        let status = if failed == 0 { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
        json(status, &results)
    }
}
