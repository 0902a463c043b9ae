//! The admin API, HTTP+JSON under `/api/v1/`, behind a bearer token.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | /api/v1/health | liveness, no token needed |
//! | GET | /api/v1/functions | list |
//! | GET | /api/v1/status | nodes, capacity, load, replicas |
//! | POST | /api/v1/functions/{name}/versions | deploy: multipart (`spec` JSON + `component`), or the component as the body with the spec as query parameters (see [`deploy`]) |
//! | GET | /api/v1/functions/{name} | describe |
//! | DELETE | /api/v1/functions/{name} | delete |
//! | POST | /api/v1/functions/{name}/rollback[?to=V] | rollback |
//! | GET | /api/v1/functions/{name}/logs[?tail=N&follow=true] | logs as JSON lines |
//! | any | /api/v1/functions/{name}/invoke[?path=P] | call the function directly |
//! | POST | /api/v1/events/{subject} | publish an event (body: its data); 202 once durable |
//! | GET | /api/v1/functions/{name}/dead-letters | the function's dead letters |
//! | POST | /api/v1/functions/{name}/dead-letters/replay[?id=ID] | deliver them again; removed once handled |
//! | GET | /api/v1/kv/{bucket}[?prefix=P] | the bucket's keys (up to 10,000) |
//! | GET, PUT, DELETE | /api/v1/kv/{bucket}/{key} | one key: its value (`tern-revision` header), set it to the body, delete it. `/api/v1/kv/{bucket}?key=K` is the same for any key, exactly (a path normalises `.`, `..` and `//`) |
//! | GET | /api/v1/secrets | secrets' names and the functions granted each, never values |
//! | PUT | /api/v1/secrets/{name} | set (or rotate) a secret: the body is its value |
//! | DELETE | /api/v1/secrets/{name}[?force=true] | delete; refused while a function is granted it unless forced |
//!
//! Errors are `{"error": {"kind": …, "message": …}}` with a matching status.
//!
//! The admin API reaches the rest of the gateway only through the handles
//! in [`Admin`]: the scheduler client, the serving table (to install the
//! table a change returns), the invoker and the event dispatch.

mod dashboard;
mod deploy;
mod events;
mod logs;
mod state;

use crate::body::{Body, full, text};
use crate::dispatch::EventDispatch;
use crate::proxy::{self, Target};
use crate::serving::Serving;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use std::sync::Arc;
use tern_bus::Bus;
use tern_invoke::Invoker;
use tern_invoke::SchedulerClient;
use tern_protocol::subject::SchedulerOp;
use tern_protocol::{
    ApiError, ChangeReply, ClusterStatus, ErrorKind, FunctionDetail, FunctionSummary, NameRequest, Reply,
    RollbackRequest, World,
};

/// What the admin API may use.
pub struct Admin {
    /// Streamed bodies for invoke, as on a route.
    pub streams: Arc<std::sync::OnceLock<Arc<tern_invoke::Streams>>>,
    pub token: String,
    pub scheduler: SchedulerClient,
    pub serving: Arc<Serving>,
    pub invoker: Arc<Invoker>,
    pub dispatch: Arc<EventDispatch>,
    /// What the dashboard charts.
    pub history: Arc<crate::history::History>,
    /// For `logs --follow`: the live log subjects.
    pub bus: Arc<dyn Bus>,
    /// Becomes true when the gateway shuts down: a follower's endless
    /// response ends then, so it does not hold the shutdown up.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Largest request body or event data.
    pub body_limit: usize,
    /// Functions' buckets, for `/api/v1/kv`.
    pub kv: Arc<dyn tern_kv::KvStore>,
    /// The artifact store: a deploy's component goes there, and the
    /// scheduler is sent its digest (it may not fit one bus message).
    pub artifacts: Arc<dyn tern_artifacts::ArtifactStore>,
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(v).expect("serialise");
    body.push(b'\n');
    full(status, "application/json", body)
}

fn status_of(e: &ApiError) -> StatusCode {
    match e.kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(e: ApiError) -> Response<Body> {
    error_with(status_of(&e), e)
}

/// An error body with a status of its own (413 for a body past its limit).
fn error_with(status: StatusCode, e: ApiError) -> Response<Body> {
    json(status, &serde_json::json!({ "error": e }))
}

fn reply<T: Serialize>(status: StatusCode, r: Reply<T>) -> Response<Body> {
    match r {
        Ok(v) => json(status, &v),
        Err(e) => error(e),
    }
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

impl Admin {
    fn authorised(&self, req: &Request<Incoming>) -> bool {
        crate::token::bearer_matches(req.headers(), &self.token)
    }

    /// One admin request; `path` is its normal form (see
    /// `tern_protocol::route::normal_path`), under `/api/v1`.
    pub async fn handle(&self, path: &str, req: Request<Incoming>) -> Response<Body> {
        let segments: Vec<&str> = path.split('/').skip(3).collect(); // "", "api", "v1"
        if segments.as_slice() == ["health"] {
            return text(StatusCode::OK, "ok");
        }
        if !self.authorised(&req) {
            let mut r = error_with(
                StatusCode::UNAUTHORIZED,
                ApiError::new(
                    ErrorKind::BadRequest,
                    "missing or wrong admin token: send `Authorization: Bearer <token>` (the token is in the data dir's admin-token file)",
                ),
            );
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return r;
        }
        let method = req.method().clone();
        let empty = || bytes::Bytes::from_static(b"{}");
        match (method, segments.as_slice()) {
            (Method::GET, ["status"]) => reply(
                StatusCode::OK,
                self.scheduler.request::<ClusterStatus>(SchedulerOp::Status, empty()).await,
            ),
            (Method::GET, ["functions"]) => reply(
                StatusCode::OK,
                self.scheduler.request::<Vec<FunctionSummary>>(SchedulerOp::List, empty()).await,
            ),
            (Method::POST, ["functions", name, "versions"]) => {
                let name = name.to_string();
                match self.deploy(name, req).await {
                    Ok(d) => json(StatusCode::CREATED, &d),
                    Err((status, e)) => error_with(status, e),
                }
            }
            (Method::GET, ["functions", name]) => reply(StatusCode::OK, self.describe(name).await),
            (Method::DELETE, ["functions", name]) => {
                let r = self.change(SchedulerOp::Delete, &NameRequest { name: name.to_string() }).await;
                reply(StatusCode::OK, r)
            }
            (Method::POST, ["functions", name, "rollback"]) => {
                let to = match parse_num::<u64>(&query(&req), "to") {
                    Ok(v) => v,
                    Err(e) => return error(e),
                };
                let r =
                    self.change(SchedulerOp::Rollback, &RollbackRequest { name: name.to_string(), to }).await;
                reply(StatusCode::OK, r)
            }
            (Method::GET, ["functions", name, "logs"]) => self.logs(name.to_string(), &query(&req)).await,
            (Method::GET, ["functions", name, "history"]) => self.function_history(name),
            (Method::GET, ["history"]) => self.history(),
            (Method::GET, ["triggers"]) => self.triggers().await,
            (Method::GET, ["functions", name, "invocations"]) => {
                self.invocations(name.to_string(), &query(&req)).await
            }
            (_, ["functions", name, "invoke"]) => {
                let name = name.to_string();
                self.invoke(name, req).await
            }
            (Method::POST, ["events", subject]) => {
                let subject = subject.to_string();
                self.publish(subject, req).await
            }
            (Method::GET, ["functions", name, "dead-letters"]) => self.dead_letters(name).await,
            (Method::POST, ["functions", name, "dead-letters", "replay"]) => {
                let id = param(&query(&req), "id").map(str::to_string);
                self.replay(name, id).await
            }
            (Method::GET, ["kv", bucket]) => self.kv_bucket(bucket, &req).await,
            (Method::PUT, ["kv", bucket]) | (Method::DELETE, ["kv", bucket]) => {
                let bucket = bucket.to_string();
                let Some(key) = param(&query(&req), "key").map(str::to_string) else {
                    return error(ApiError::bad_request(
                        "name the key: /api/v1/kv/{bucket}/{key}, or ?key=K",
                    ));
                };
                match req.method() {
                    &Method::PUT => self.kv_set(&bucket, &key, req).await,
                    _ => self.kv_delete(&bucket, &key).await,
                }
            }
            (method, ["kv", bucket, key @ ..]) if !key.is_empty() => {
                // A key from a path: its `%XX` escapes decoded.
                let key =
                    percent_encoding::percent_decode_str(&key.join("/")).decode_utf8_lossy().into_owned();
                let bucket = bucket.to_string();
                match method {
                    Method::GET => self.kv_get(&bucket, &key).await,
                    Method::PUT => self.kv_set(&bucket, &key, req).await,
                    Method::DELETE => self.kv_delete(&bucket, &key).await,
                    _ => error(ApiError::bad_request("use GET, PUT or DELETE on a key")),
                }
            }
            (Method::GET, ["secrets"]) => self.secret_list().await,
            (Method::PUT, ["secrets", name]) => {
                let name = name.to_string();
                self.secret_set(&name, req).await
            }
            (Method::DELETE, ["secrets", name]) => self.secret_delete(name, &req).await,
            _ => error(ApiError::not_found(format!("no admin endpoint {} {path}", req.method()))),
        }
    }

    /// The scheduler's view of one function.
    async fn describe(&self, name: &str) -> Reply<FunctionDetail> {
        self.scheduler.call(SchedulerOp::Describe, &NameRequest { name: name.to_string() }).await
    }

    /// A delete or rollback; the table it returns is served before the
    /// client hears back.
    async fn change(&self, op: SchedulerOp, body: &impl Serialize) -> Reply<ChangeReply> {
        let r = self.scheduler.call::<ChangeReply>(op, body).await;
        if let Ok(c) = &r {
            self.serving.take(&self.scheduler, &c.routes).await;
        }
        r
    }

    async fn invoke(&self, name: String, mut req: Request<Incoming>) -> Response<Body> {
        let q = query(&req);
        let path = param(&q, "path").unwrap_or("/").to_string();
        if !path.starts_with('/') {
            return error(ApiError::bad_request("path must start with '/'"));
        }
        let detail = match self.describe(&name).await {
            Ok(d) => d,
            Err(e) => return error(e),
        };
        if detail.active.world == World::Event {
            return self.deliver_event(&name, detail.active.spec.timeout_ms, &q, req).await;
        }
        // The function sees its own path, not the admin URL.
        req.headers_mut().remove(http::header::AUTHORIZATION);
        let target = Target {
            function: &name,
            timeout_ms: detail.active.spec.timeout_ms,
            uri: path,
            body_limit: self.body_limit,
            max_body: detail.active.spec.max_body,
            max_duration_ms: detail.active.spec.max_duration_ms,
            trigger: tern_protocol::TriggerKind::Invoke,
        };
        proxy::forward(&self.invoker, self.streams.get().map(|s| &**s), target, req).await
    }
}
