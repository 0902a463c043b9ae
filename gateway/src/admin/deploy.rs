//! `POST /api/v1/functions/{name}/versions`: a new version.
//!
//! Two forms, one spec ([`FunctionSpec`]):
//! - `multipart/form-data` with a part `spec` (the spec as JSON, `name`
//!   optional) and a part `component` (the .wasm): what `tern deploy`
//!   sends. Put `spec` first and a bad spec is refused before anything is
//!   compiled (the rest of the upload is still read, so the client sees
//!   the answer rather than a reset connection).
//! - The component as the whole body, the spec as query parameters named
//!   like its fields (`route=` for `routes`, repeatable lists, `KEY=VALUE`
//!   maps; see `FunctionSpec::from_query`): for curl.

use super::{Admin, query};
use crate::body;
use bytes::Bytes;
use futures::TryStreamExt;
use http::{Request, StatusCode};
use http_body_util::BodyStream;
use hyper::body::Incoming;
use serde_json::Value;
use tern_protocol::subject::SchedulerOp;
use tern_protocol::{ApiError, DeployReply, DeployRequest, Frame, FunctionSpec, MAX_COMPONENT_BYTES};

/// Largest spec part; a spec is a few hundred bytes.
const MAX_SPEC_BYTES: u64 = 1 << 20;

type Refusal = (StatusCode, ApiError);

fn bad(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, ApiError::bad_request(message))
}

impl Admin {
    pub(super) async fn deploy(&self, name: String, req: Request<Incoming>) -> Result<DeployReply, Refusal> {
        let boundary = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| multer::parse_boundary(ct).ok());
        let (spec, component) = match boundary {
            Some(boundary) => {
                if !query(&req).is_empty() {
                    return Err(bad(
                        "give the spec either as the multipart `spec` part or as query parameters, not both",
                    ));
                }
                read_multipart(&name, req.into_body(), boundary).await?
            }
            None => {
                let spec =
                    FunctionSpec::from_query(&name, &query(&req)).and_then(|s| s.validate().map(|()| s));
                let spec = match spec {
                    Ok(s) => s,
                    Err(e) => {
                        // Refused without compiling anything, but read to
                        // the end: a connection closed on unread data is
                        // reset, and the client would never see why.
                        let _ = body::read(req.into_body(), MAX_COMPONENT_BYTES, "component").await;
                        return Err(bad(e));
                    }
                };
                let component = body::read(req.into_body(), MAX_COMPONENT_BYTES, "component")
                    .await
                    .map_err(|e| (e.status(), ApiError::bad_request(e.to_string())))?;
                (spec, component)
            }
        };
        // The component goes to the artifact store, the scheduler gets its
        // digest: one bus message whatever the component's size.
        let digest = tern_artifacts::digest_of(&component);
        self.artifacts.put(&digest, component).await.map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::unavailable(format!("cannot store the component: {e}")),
            )
        })?;
        let payload = Frame::new(DeployRequest { spec, artifact: Some(digest) }, Bytes::new()).encode();
        let reply: DeployReply = self
            .scheduler
            .request(SchedulerOp::Deploy, payload)
            .await
            .map_err(|e| (super::status_of(&e), e))?;
        // Serve the new table before answering, so the client's next
        // request finds the routes even if the push is still on its way.
        self.serving.take(&self.scheduler, &reply.routes).await;
        Ok(reply)
    }
}

/// The `spec` and `component` parts, each bounded.
async fn read_multipart(
    name: &str,
    body: Incoming,
    boundary: String,
) -> Result<(FunctionSpec, Bytes), Refusal> {
    let stream = BodyStream::new(body).try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
    let limits = multer::SizeLimit::new()
        .whole_stream(MAX_COMPONENT_BYTES as u64 + MAX_SPEC_BYTES + 64 * 1024)
        .for_field("spec", MAX_SPEC_BYTES)
        .for_field("component", MAX_COMPONENT_BYTES as u64);
    let constraints = multer::Constraints::new().allowed_fields(vec!["spec", "component"]).size_limit(limits);
    let mut parts = multer::Multipart::with_constraints(stream, boundary, constraints);
    let (mut spec, mut component) = (None, None);
    let mut refused = None;
    while let Some(field) =
        parts.next_field().await.map_err(|e| refused.clone().unwrap_or(upload_error(e)))?
    {
        let is_spec = field.name() == Some("spec");
        let bytes = field.bytes().await.map_err(|e| refused.clone().unwrap_or(upload_error(e)))?;
        if refused.is_some() {
            // Read to the end: see the query form in `deploy`.
            continue;
        }
        if is_spec {
            match parse_spec(name, &bytes).and_then(|s| s.validate().map(|()| s)) {
                Ok(s) => spec = Some(s),
                Err(e) => refused = Some(bad(e)),
            }
        } else {
            component = Some(bytes);
        }
    }
    if let Some(r) = refused {
        return Err(r);
    }
    match (spec, component) {
        (Some(s), Some(c)) => Ok((s, c)),
        (None, _) => Err(bad("the multipart upload has no `spec` part (the function spec as JSON)")),
        (_, None) => Err(bad("the multipart upload has no `component` part (the .wasm file)")),
    }
}

fn upload_error(e: multer::Error) -> Refusal {
    let status = match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, ApiError::bad_request(format!("could not read the upload: {e}")))
}

/// The spec part: a JSON object with [`FunctionSpec`]'s fields. `name`
/// may be left out (the URL names the function) but must not differ;
/// unknown fields are refused rather than ignored, so a typo is not
/// deployed silently.
fn parse_spec(name: &str, bytes: &[u8]) -> Result<FunctionSpec, String> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the spec is not valid JSON: {e}"))?;
    let Value::Object(fields) = &mut value else { return Err("the spec must be a JSON object".into()) };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => return Err(format!("the spec names function {other}, but the URL names {name:?}")),
    }
    let known = serde_json::to_value(FunctionSpec::new(name)).expect("a spec serialises");
    if let Some(unknown) = fields.keys().find(|k| known.get(k.as_str()).is_none()) {
        return Err(format!("unknown spec field {unknown:?}"));
    }
    serde_json::from_value(value).map_err(|e| format!("the spec is not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_part_is_checked_against_the_url_and_the_fields() {
        let s = parse_spec("f", br#"{"routes": ["/a"], "memory_mib": 64}"#).unwrap();
        assert_eq!((s.name.as_str(), s.memory_mib), ("f", 64));
        assert!(parse_spec("f", br#"{"name": "g"}"#).unwrap_err().contains("URL names"));
        assert!(parse_spec("f", br#"{"memroy_mib": 64}"#).unwrap_err().contains("memroy_mib"));
        assert!(parse_spec("f", b"[1]").unwrap_err().contains("object"));
        assert!(parse_spec("f", b"{").unwrap_err().contains("JSON"));
    }
}
