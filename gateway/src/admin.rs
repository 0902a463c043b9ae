//! The admin API, HTTP+JSON under `/api/v1/`, behind a bearer token.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | /api/v1/health | liveness, no token needed |
//! | GET | /api/v1/functions | list |
//! | GET | /api/v1/status | nodes, capacity, load, replicas |
//! | POST | /api/v1/functions/{name}/versions?route=P&on_event=S&schedule=CRON&max_attempts=N&backoff_ms=T&env=K=V&memory_mib=M&timeout_ms=T&min_scale=N&max_scale=N&concurrency=N&idle_ms=T&node_selector=K=V | deploy (body: the component) |
//! | GET | /api/v1/functions/{name} | describe |
//! | DELETE | /api/v1/functions/{name} | delete |
//! | POST | /api/v1/functions/{name}/rollback[?to=V] | rollback |
//! | GET | /api/v1/functions/{name}/logs[?tail=N&follow=true] | logs as JSON lines |
//! | any | /api/v1/functions/{name}/invoke[?path=P] | call the function directly |
//! | POST | /api/v1/events/{subject} | publish an event (body: its data); 202 once durable |
//! | GET | /api/v1/functions/{name}/dead-letters | the function's dead letters |
//! | POST | /api/v1/functions/{name}/dead-letters/replay[?id=ID] | deliver them again; removed once handled |
//!
//! Errors are `{"error": {"kind": …, "message": …}}` with a matching status.

use crate::{Body, Gateway, full, text};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use serde::Serialize;
use std::time::Duration;
use tern_bus::Bus;
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{
    ApiError, ChangeReply, ClusterStatus, DeployReply, DeployRequest, ErrorKind, EventDelivery, Frame,
    FunctionDetail, FunctionSpec, FunctionSummary, LogRecord, LogsRequest, MAX_COMPONENT_BYTES, NameRequest,
    Reply, RollbackRequest, World,
};

/// Deploys compile the component; give them time.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(180);

/// Sends a control request to the scheduler and decodes its reply.
pub(crate) async fn control<T: serde::de::DeserializeOwned>(
    bus: &dyn Bus,
    op: SchedulerOp,
    payload: Bytes,
) -> Reply<T> {
    let msg = bus.request(&subject::scheduler(op), payload, CONTROL_TIMEOUT).await.map_err(|e| match e {
        tern_bus::BusError::NoResponders(_) => ApiError::unavailable("the scheduler is not running"),
        other => ApiError::unavailable(format!("the scheduler did not answer: {other}")),
    })?;
    Frame::<Reply<T>>::decode(msg.payload)
        .map_err(|e| ApiError::internal(format!("malformed scheduler reply: {e}")))?
        .header
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(v).expect("serialise");
    body.push(b'\n');
    full(status, "application/json", body)
}

fn error(e: ApiError) -> Response<Body> {
    let status = match e.kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, &serde_json::json!({ "error": e }))
}

fn reply<T: Serialize>(status: StatusCode, r: Reply<T>) -> Response<Body> {
    match r {
        Ok(v) => json(status, &v),
        Err(e) => error(e),
    }
}

fn authorised(gw: &Gateway, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| crate::token::matches(&gw.config.admin_token, t.trim()))
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn parse_num<T: std::str::FromStr>(q: &[(String, String)], key: &str) -> Result<Option<T>, ApiError> {
    param(q, key)
        .map(|v| v.parse::<T>().map_err(|_| ApiError::bad_request(format!("{key}={v:?} is not a number"))))
        .transpose()
}

pub(crate) async fn handle(gw: &Gateway, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(3).collect(); // "", "api", "v1"
    if segments.as_slice() == ["health"] {
        return text(StatusCode::OK, "ok");
    }
    if !authorised(gw, &req) {
        let mut r = error(ApiError::new(
            ErrorKind::BadRequest,
            "missing or wrong admin token: send `Authorization: Bearer <token>` (the token is in the data dir's admin-token file)",
        ));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return r;
    }
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["status"]) => reply(
            StatusCode::OK,
            control::<ClusterStatus>(&*gw.bus, SchedulerOp::Status, Bytes::from_static(b"{}")).await,
        ),
        (Method::GET, ["functions"]) => reply(
            StatusCode::OK,
            control::<Vec<FunctionSummary>>(&*gw.bus, SchedulerOp::List, Bytes::from_static(b"{}")).await,
        ),
        (Method::POST, ["functions", name, "versions"]) => {
            let name = name.to_string();
            match deploy(gw, name, req).await {
                Ok(d) => json(StatusCode::CREATED, &d),
                Err(e) => error(e),
            }
        }
        (Method::GET, ["functions", name]) => reply(StatusCode::OK, describe(gw, name).await),
        (Method::DELETE, ["functions", name]) => {
            let body = to_json(&NameRequest { name: name.to_string() });
            let r = control::<ChangeReply>(&*gw.bus, SchedulerOp::Delete, body).await;
            if let Ok(c) = &r {
                gw.apply_routes(&c.routes);
            }
            reply(StatusCode::OK, r)
        }
        (Method::POST, ["functions", name, "rollback"]) => {
            let q = query(&req);
            let to = match parse_num::<u64>(&q, "to") {
                Ok(v) => v,
                Err(e) => return error(e),
            };
            let body = to_json(&RollbackRequest { name: name.to_string(), to });
            let r = control::<ChangeReply>(&*gw.bus, SchedulerOp::Rollback, body).await;
            if let Ok(c) = &r {
                gw.apply_routes(&c.routes);
            }
            reply(StatusCode::OK, r)
        }
        (Method::GET, ["functions", name, "logs"]) => logs(gw, name.to_string(), &query(&req)).await,
        (_, ["functions", name, "invoke"]) => {
            let name = name.to_string();
            invoke(gw, name, req).await
        }
        (Method::POST, ["events", subject]) => {
            let subject = subject.to_string();
            publish(gw, subject, req).await
        }
        (Method::GET, ["functions", name, "dead-letters"]) => dead_letters(gw, name).await,
        (Method::POST, ["functions", name, "dead-letters", "replay"]) => {
            let id = param(&query(&req), "id").map(str::to_string);
            replay(gw, name, id).await
        }
        _ => error(ApiError::not_found(format!("no admin endpoint {} {path}", req.method()))),
    }
}

/// The scheduler's view of one function.
async fn describe(gw: &Gateway, name: &str) -> Reply<FunctionDetail> {
    control(&*gw.bus, SchedulerOp::Describe, to_json(&NameRequest { name: name.to_string() })).await
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    serde_json::to_vec(v).expect("serialise").into()
}

/// Builds the spec from the query string; the body is the component.
async fn deploy(gw: &Gateway, name: String, req: Request<Incoming>) -> Result<DeployReply, ApiError> {
    let q = query(&req);
    let mut spec = FunctionSpec::new(name);
    for (k, v) in &q {
        match k.as_str() {
            "route" => spec.routes.push(v.clone()),
            "env" => {
                let (key, value) = v
                    .split_once('=')
                    .ok_or_else(|| ApiError::bad_request(format!("env {v:?} must be KEY=VALUE")))?;
                spec.env.insert(key.to_string(), value.to_string());
            }
            "node_selector" => {
                let (key, value) = v
                    .split_once('=')
                    .ok_or_else(|| ApiError::bad_request(format!("node_selector {v:?} must be KEY=VALUE")))?;
                spec.node_selector.insert(key.to_string(), value.to_string());
            }
            "on_event" => spec.on_event.push(v.clone()),
            "schedule" => spec.schedule = Some(v.clone()),
            "memory_mib" | "timeout_ms" | "min_scale" | "max_scale" | "concurrency" | "idle_ms"
            | "max_attempts" | "backoff_ms" => {}
            other => {
                return Err(ApiError::bad_request(format!("unknown deploy parameter {other:?}")));
            }
        }
    }
    if let Some(m) = parse_num::<u32>(&q, "memory_mib")? {
        spec.memory_mib = m;
    }
    if let Some(t) = parse_num::<u64>(&q, "timeout_ms")? {
        spec.timeout_ms = t;
    }
    if let Some(n) = parse_num::<u32>(&q, "min_scale")? {
        spec.min_scale = n;
    }
    if let Some(n) = parse_num::<u32>(&q, "max_scale")? {
        spec.max_scale = n;
    }
    if let Some(n) = parse_num::<u32>(&q, "concurrency")? {
        spec.concurrency = n;
    }
    if let Some(n) = parse_num::<u64>(&q, "idle_ms")? {
        spec.idle_ms = n;
    }
    if let Some(n) = parse_num::<u32>(&q, "max_attempts")? {
        spec.max_attempts = n;
    }
    if let Some(n) = parse_num::<u64>(&q, "backoff_ms")? {
        spec.backoff_ms = n;
    }
    // Checked here too, so a bad spec fails before a large upload is read.
    spec.validate().map_err(ApiError::bad_request)?;
    let component = Limited::new(req.into_body(), MAX_COMPONENT_BYTES).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ApiError::bad_request(format!("component is larger than the {MAX_COMPONENT_BYTES} byte limit"))
        } else {
            ApiError::bad_request(format!("could not read the upload: {e}"))
        }
    })?;
    let payload = Frame::new(DeployRequest { spec }, component.to_bytes()).encode();
    let reply: DeployReply = control(&*gw.bus, SchedulerOp::Deploy, payload).await?;
    // Serve the new routes before answering, so the client's next request
    // finds them even if the scheduler's push is still on its way.
    gw.apply_routes(&reply.routes);
    Ok(reply)
}

async fn invoke(gw: &Gateway, name: String, req: Request<Incoming>) -> Response<Body> {
    let q = query(&req);
    let path = param(&q, "path").unwrap_or("/").to_string();
    if !path.starts_with('/') {
        return error(ApiError::bad_request("path must start with '/'"));
    }
    let detail = match describe(gw, &name).await {
        Ok(d) => d,
        Err(e) => return error(e),
    };
    if detail.active.world == World::Event {
        return deliver_event(gw, &name, detail.active.spec.timeout_ms, &q, req).await;
    }
    // The function sees its own path, not the admin URL.
    let mut req = req;
    req.headers_mut().remove(http::header::AUTHORIZATION);
    gw.invoke(&name, detail.active.spec.timeout_ms, path, req).await
}

/// Delivers the request body as one event (attempt 1) straight to an event
/// function, bypassing its triggers: for trying a handler out. 200 with
/// `{"event_id", "error": null}` when the handler acknowledged it, 500 with
/// the error when it asked for a retry.
async fn deliver_event(
    gw: &Gateway,
    name: &str,
    timeout_ms: u64,
    q: &[(String, String)],
    req: Request<Incoming>,
) -> Response<Body> {
    let subject = param(q, "subject").map_or_else(|| format!("invoke.{name}"), str::to_string);
    let data = match Limited::new(req.into_body(), gw.config.body_limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(ApiError::bad_request(format!("could not read the event data: {e}"))),
    };
    let id = tern_events::new_event_id();
    let head = EventDelivery { id: id.clone(), subject, headers: Vec::new(), attempt: 1 };
    let error = gw.deliver(name, timeout_ms, head, data).await.err();
    let status = if error.is_none() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    json(status, &serde_json::json!({ "event_id": id, "error": error }))
}

/// Stores one event; the answer comes only once it is durable.
async fn publish(gw: &Gateway, subject: String, req: Request<Incoming>) -> Response<Body> {
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
    let data = match Limited::new(req.into_body(), gw.config.body_limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({ "error": ApiError::bad_request(format!(
                    "event data is larger than the {} byte limit", gw.config.body_limit
                )) }),
            );
        }
        Err(e) => return error(ApiError::bad_request(format!("could not read the event data: {e}"))),
    };
    match gw.events.publish(&subject, headers, data).await {
        Ok(e) => {
            json(StatusCode::ACCEPTED, &serde_json::json!({ "id": e.id, "subject": e.subject, "seq": e.seq }))
        }
        Err(tern_events::EventError::Unrouted(s)) => {
            error(ApiError::not_found(format!("no function is triggered by {s:?}; the event was not stored")))
        }
        Err(tern_events::EventError::Subject { subject, reason }) => {
            error(ApiError::bad_request(format!("event subject {subject:?} is not valid: {reason}")))
        }
        Err(e) => error(ApiError::unavailable(format!("the event was not stored: {e}"))),
    }
}

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

async fn dead_letters(gw: &Gateway, name: &str) -> Response<Body> {
    // A typo in the name is "no such function", not "no dead letters".
    if let Err(e) = describe(gw, name).await {
        return error(e);
    }
    match gw.events.dead_letters(name).await {
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
/// as the attempt after their last; each one handled is removed, each that
/// fails again stays, nothing lost. 200 if all were handled, 500 if not.
async fn replay(gw: &Gateway, name: &str, id: Option<String>) -> Response<Body> {
    let detail = match describe(gw, name).await {
        Ok(d) => d,
        Err(e) => return error(e),
    };
    let letters = match gw.events.dead_letters(name).await {
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
        };
        let outcome = gw.deliver(name, detail.active.spec.timeout_ms, head, l.event.data.clone()).await;
        let error = match outcome {
            Ok(()) => match gw.events.remove_dead_letter(name, &l.event.id).await {
                Ok(_) => None,
                Err(e) => Some(format!("handled, but the dead letter could not be removed: {e}")),
            },
            Err(e) => Some(e),
        };
        failed += usize::from(error.is_some());
        results.push(serde_json::json!({ "id": l.event.id, "delivered": error.is_none(), "error": error }));
    }
    let status = if failed == 0 { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    json(status, &results)
}

async fn logs(gw: &Gateway, name: String, q: &[(String, String)]) -> Response<Body> {
    let tail = match parse_num::<usize>(q, "tail") {
        Ok(t) => t.unwrap_or(200),
        Err(e) => return error(e),
    };
    let follow = matches!(param(q, "follow"), Some("true" | "1"));
    // Subscribe before reading the backlog so nothing falls in between.
    let live = if follow {
        match gw.bus.subscribe(&subject::logs(&name)).await {
            Ok(s) => Some(s),
            Err(e) => return error(ApiError::unavailable(e.to_string())),
        }
    } else {
        None
    };
    let recent =
        match control::<Vec<LogRecord>>(&*gw.bus, SchedulerOp::Logs, to_json(&LogsRequest { name, tail }))
            .await
        {
            Ok(r) => r,
            Err(e) => return error(e),
        };
    let lines = |records: &[LogRecord]| -> Bytes {
        let mut out = Vec::new();
        for r in records {
            serde_json::to_writer(&mut out, r).expect("serialise");
            out.push(b'\n');
        }
        out.into()
    };
    let backlog = lines(&recent);
    let Some(live) = live else {
        return full(StatusCode::OK, "application/x-ndjson", backlog);
    };
    let updates = live.filter_map(move |msg| {
        let chunk = serde_json::from_slice::<Vec<LogRecord>>(&msg.payload).ok().map(|r| lines(&r));
        async move { chunk }
    });
    let stream = futures::stream::once(async move { backlog })
        .chain(updates)
        .map(|b| Ok::<_, std::convert::Infallible>(BodyFrame::data(b)));
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
    r
}
