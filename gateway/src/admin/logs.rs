//! `GET /api/v1/functions/{name}/logs[?tail=N&since_ms=T&grep=TEXT&invocation=ID&follow=true]`:
//! the records the scheduler keeps that match, each invocation's report
//! after its lines, then (with follow) the live ones, as JSON lines.
//!
//! `GET /api/v1/functions/{name}/invocations[?limit=N&failed=true&id=ID]`:
//! the newest receipts, as a JSON array.

use super::{Admin, error, param, parse_num};
use crate::body::{Body, full};
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{ApiError, InvocationsRequest, LogRecord, LogsRequest, Receipt};

/// Log chunks a follower may have waiting before it is cut off.
const FOLLOW_BUFFER: usize = 256;

/// Reads `live` at once, always, into a buffer of `capacity` chunks (the
/// backlog first). A follower that lets the buffer fill (it stopped
/// reading) gets one line saying so and is cut off, so no reader holds
/// memory on the bus or here. Ends when the follower goes away.
fn follow_live(
    mut live: tern_bus::Subscription,
    mut reports: tern_bus::Subscription,
    filter: LogsRequest,
    backlog: Bytes,
    capacity: usize,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(capacity);
    let _ = tx.try_send(backlog);
    tokio::spawn(async move {
        loop {
            let records = tokio::select! {
                m = live.next() => match m {
                    Some(m) => serde_json::from_slice::<Vec<LogRecord>>(&m.payload).ok(),
                    None => break,
                },
                m = reports.next() => match m {
                    Some(m) => serde_json::from_slice::<Vec<Receipt>>(&m.payload)
                        .ok()
                        .map(|rs| rs.iter().map(Receipt::report).collect()),
                    None => break,
                },
                _ = tx.closed() => break,
                _ = stopping.wait_for(|s| *s) => break,
            };
            let Some(mut records) = records else { continue };
            records.retain(|r| filter.matches(r));
            if records.is_empty() {
                continue;
            }
            if tx.capacity() <= 1 {
                let _ = tx.try_send(lines(&[follower_too_slow(&records, capacity)]));
                break;
            }
            let _ = tx.try_send(lines(&records));
        }
    });
    rx
}

/// The last line a follower that stopped reading gets.
fn follower_too_slow(seen: &[LogRecord], capacity: usize) -> LogRecord {
    let (function, version) = seen.first().map_or((String::new(), 0), |r| (r.function.clone(), r.version));
    LogRecord {
        function,
        version,
        ts_ms: tern_protocol::clock::now_ms(),
        stream: tern_protocol::LogStream::Tern,
        line: format!(
            "this follower fell {capacity} batches behind and was disconnected; follow again to go on"
        ),
        invocation: String::new(),
    }
}

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
        let since_ms = match parse_num::<u64>(q, "since_ms") {
            Ok(s) => s,
            Err(e) => return error(e),
        };
        let req = LogsRequest {
            name,
            tail,
            since_ms,
            grep: param(q, "grep").map(str::to_string),
            invocation: param(q, "invocation").map(str::to_string),
        };
        let follow = matches!(param(q, "follow"), Some("true" | "1"));
        // Subscribe before reading the backlog so nothing falls in between.
        let live = if follow {
            let (logs, receipts) = (subject::logs(&req.name), subject::receipts(&req.name));
            let subscribed =
                futures::future::try_join(self.bus.subscribe(&logs), self.bus.subscribe(&receipts));
            match subscribed.await {
                Ok(s) => Some(s),
                Err(e) => return error(ApiError::unavailable(e.to_string())),
            }
        } else {
            None
        };
        let recent: Vec<LogRecord> = match self.scheduler.call(SchedulerOp::Logs, &req).await {
            Ok(r) => r,
            Err(e) => return error(e),
        };
        let backlog = lines(&recent);
        let Some((live, reports)) = live else {
            return full(StatusCode::OK, "application/x-ndjson", backlog);
        };
        let rx = follow_live(live, reports, req, backlog, FOLLOW_BUFFER, self.stopping.clone());
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(|b| Ok::<_, crate::body::BoxError>(BodyFrame::data(b)));
        let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
        r
    }
}

impl Admin {
    pub(super) async fn invocations(&self, name: String, q: &[(String, String)]) -> Response<Body> {
        let limit = match parse_num::<usize>(q, "limit") {
            Ok(l) => l.unwrap_or(100),
            Err(e) => return error(e),
        };
        let req = InvocationsRequest {
            name,
            limit,
            failed: matches!(param(q, "failed"), Some("true" | "1")),
            id: param(q, "id").map(str::to_string),
        };
        match self.scheduler.call::<Vec<Receipt>>(SchedulerOp::Invocations, &req).await {
            Ok(r) => super::json(StatusCode::OK, &r),
            Err(e) => error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_bus::{Bus, InProcessBus};

    fn record(line: &str) -> Bytes {
        let r = LogRecord {
            function: "f".into(),
            version: 1,
            ts_ms: 0,
            stream: tern_protocol::LogStream::Stdout,
            line: line.into(),
            invocation: String::new(),
        };
        serde_json::to_vec(&vec![r]).unwrap().into()
    }

    #[tokio::test]
    async fn a_follower_that_stops_reading_is_cut_off_with_a_line() {
        let bus = InProcessBus::new();
        let live = bus.subscribe("tern.v1.logs.f").await.unwrap();
        let reports = bus.subscribe("tern.v1.receipts.f").await.unwrap();
        let (_running, stopping) = tokio::sync::watch::channel(false);
        let mut rx =
            follow_live(live, reports, LogsRequest::default(), Bytes::from_static(b"backlog\n"), 8, stopping);
        for i in 0..100 {
            bus.publish("tern.v1.logs.f", record(&i.to_string())).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut got = Vec::new();
        while let Some(chunk) = rx.recv().await {
            got.push(String::from_utf8_lossy(&chunk).into_owned());
        }
        assert_eq!(got.len(), 8, "{got:?}");
        assert_eq!(got[0], "backlog\n");
        assert!(got[7].contains("fell 8 batches behind and was disconnected"), "{}", got[7]);
        // Its subscription is gone: publishing finds no one.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(
            bus.request("tern.v1.logs.f", record("x"), std::time::Duration::from_millis(50)).await,
            Err(tern_bus::BusError::NoResponders(_))
        ));
    }
}
