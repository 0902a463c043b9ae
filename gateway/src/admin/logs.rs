//! `GET /api/v1/functions/{name}/logs[?tail=N&follow=true]`: the recent
//! records the scheduler keeps, then (with follow) the live ones, as JSON
//! lines.

use super::{Admin, error, param, parse_num};
use crate::body::{Body, full};
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{ApiError, LogRecord, LogsRequest};

fn lines(records: &[LogRecord]) -> Bytes {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("serialise");
        out.push(b'\n');
    }
    out.into()
}

impl Admin {
    pub(super) async fn logs(&self, name: String, q: &[(String, String)]) -> Response<Body> {
        let tail = match parse_num::<usize>(q, "tail") {
            Ok(t) => t.unwrap_or(200),
            Err(e) => return error(e),
        };
        let follow = matches!(param(q, "follow"), Some("true" | "1"));
        // Subscribe before reading the backlog so nothing falls in between.
        let live = if follow {
            match self.bus.subscribe(&subject::logs(&name)).await {
                Ok(s) => Some(s),
                Err(e) => return error(ApiError::unavailable(e.to_string())),
            }
        } else {
            None
        };
        let recent: Vec<LogRecord> =
            match self.scheduler.call(SchedulerOp::Logs, &LogsRequest { name, tail }).await {
                Ok(r) => r,
                Err(e) => return error(e),
            };
        let backlog = lines(&recent);
        let Some(live) = live else {
            return full(StatusCode::OK, "application/x-ndjson", backlog);
        };
        let updates = live.filter_map(|msg| {
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
}
