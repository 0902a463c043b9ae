//! Operators' access to state: key-value buckets (`/api/v1/kv/…`, straight
//! to the store functions use) and secrets (`/api/v1/secrets/…`, through
//! the scheduler, which seals them). A secret's value goes in and never
//! comes out: every answer names secrets, none carries one.

use super::{Admin, error, error_with, json, param, query, reply};
use crate::body::{self, Body, full};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tern_kv::{KvError, MAX_VALUE_BYTES};
use tern_protocol::subject::SchedulerOp;
use tern_protocol::{
    ApiError, MAX_SECRET_BYTES, SecretDeleteRequest, SecretInfo, SecretSetRequest, SecretValue,
};

/// Keys one listing returns at most.
const MAX_LIST: usize = 10_000;

fn kv_error(e: KvError) -> Response<Body> {
    let api = match &e {
        KvError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    };
    error(api)
}

impl Admin {
    async fn bucket(&self, name: &str) -> Result<std::sync::Arc<dyn tern_kv::KvBucket>, Response<Body>> {
        self.kv.bucket(name).await.map_err(kv_error)
    }

    /// `GET /kv/{bucket}[?prefix=P]`: keys; with `?key=K`, that key's value.
    pub(super) async fn kv_bucket(&self, bucket: &str, req: &Request<Incoming>) -> Response<Body> {
        let q = query(req);
        if let Some(key) = param(&q, "key") {
            return self.kv_get(bucket, key).await;
        }
        let b = match self.bucket(bucket).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let prefix = param(&q, "prefix").unwrap_or("");
        match b.keys(prefix, None, MAX_LIST).await {
            Ok(keys) => json(StatusCode::OK, &serde_json::json!({ "bucket": bucket, "keys": keys })),
            Err(e) => kv_error(e),
        }
    }

    pub(super) async fn kv_get(&self, bucket: &str, key: &str) -> Response<Body> {
        let b = match self.bucket(bucket).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match b.get(key).await {
            Ok(Some(entry)) => {
                let mut r = full(StatusCode::OK, "application/octet-stream", entry.value.to_vec());
                r.headers_mut().insert("tern-revision", entry.revision.into());
                r
            }
            Ok(None) => error(ApiError::not_found(format!("no key {key:?} in bucket {bucket}"))),
            Err(e) => kv_error(e),
        }
    }

    /// `PUT /kv/{bucket}/{key}` (or `?key=K`): the body is the value.
    pub(super) async fn kv_set(&self, bucket: &str, key: &str, req: Request<Incoming>) -> Response<Body> {
        let b = match self.bucket(bucket).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let value = match body::read(req.into_body(), MAX_VALUE_BYTES, "value").await {
            Ok(v) => v,
            Err(e) => return error_with(e.status(), ApiError::bad_request(e.to_string())),
        };
        match b.set(key, value, None).await {
            Ok(revision) => json(
                StatusCode::OK,
                &serde_json::json!({ "bucket": bucket, "key": key, "revision": revision }),
            ),
            Err(e) => kv_error(e),
        }
    }

    pub(super) async fn kv_delete(&self, bucket: &str, key: &str) -> Response<Body> {
        let b = match self.bucket(bucket).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match b.delete(key).await {
            Ok(()) => {
                json(StatusCode::OK, &serde_json::json!({ "bucket": bucket, "key": key, "deleted": true }))
            }
            Err(e) => kv_error(e),
        }
    }

    pub(super) async fn secret_list(&self) -> Response<Body> {
        let r = self
            .scheduler
            .request::<Vec<SecretInfo>>(SchedulerOp::SecretList, Bytes::from_static(b"{}"))
            .await;
        reply(StatusCode::OK, r)
    }

    /// `PUT /secrets/{name}`: the body is the value (UTF-8).
    pub(super) async fn secret_set(&self, name: &str, req: Request<Incoming>) -> Response<Body> {
        let value = match body::read(req.into_body(), MAX_SECRET_BYTES, "secret value").await {
            Ok(v) => v,
            Err(e) => return error_with(e.status(), ApiError::bad_request(e.to_string())),
        };
        let Ok(value) = String::from_utf8(value.to_vec()) else {
            return error(ApiError::bad_request(
                "a secret value must be UTF-8 text (functions read it as a config string)",
            ));
        };
        let req = SecretSetRequest { name: name.to_string(), value: SecretValue(value) };
        reply(StatusCode::OK, self.scheduler.call::<SecretInfo>(SchedulerOp::SecretSet, &req).await)
    }

    pub(super) async fn secret_delete(&self, name: &str, req: &Request<Incoming>) -> Response<Body> {
        let force = matches!(param(&query(req), "force"), Some("true" | "1" | ""));
        let req = SecretDeleteRequest { name: name.to_string(), force };
        reply(StatusCode::OK, self.scheduler.call::<SecretInfo>(SchedulerOp::SecretDelete, &req).await)
    }
}
