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

/// Log chunks a follower may have waiting before it is cut off.
const FOLLOW_BUFFER: usize = 256;

/// Reads `live` at once, always, into a buffer of `capacity` chunks (the
/// backlog first). A follower that lets the buffer fill (it stopped
/// reading) gets one line saying so and is cut off, so no reader holds
/// memory on the bus or here. Ends when the follower goes away.
fn follow_live(
    mut live: tern_bus::Subscription,
    backlog: Bytes,
    capacity: usize,
) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(capacity);
    let _ = tx.try_send(backlog);
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = live.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = tx.closed() => break,
            };
            let Ok(records) = serde_json::from_slice::<Vec<LogRecord>>(&msg.payload) else { continue };
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
        let rx = follow_live(live, backlog, FOLLOW_BUFFER);
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(|b| Ok::<_, crate::body::BoxError>(BodyFrame::data(b)));
        let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
        r
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
        };
        serde_json::to_vec(&vec![r]).unwrap().into()
    }

    #[tokio::test]
    async fn a_follower_that_stops_reading_is_cut_off_with_a_line() {
        let bus = InProcessBus::new();
        let live = bus.subscribe("tern.v1.logs.f").await.unwrap();
        let mut rx = follow_live(live, Bytes::from_static(b"backlog\n"), 8);
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
