//! What every [`Logbook`] must do, run against each implementation.

use crate::{Kind, LogQuery, Logbook, ReceiptQuery, Retention};
use bytes::Bytes;
use std::time::Duration;
use tern_protocol::{LogRecord, LogStream, Receipt, TriggerKind, clock};

/// The retention the suite opens its logbooks with: [`bytes_are_bounded`]
/// writes past its bytes.
pub const RETENTION: Retention = Retention { max_age: Duration::from_secs(3600), max_bytes: 64 * 1024 };

pub fn record(function: &str, invocation: &str, line: &str) -> LogRecord {
    LogRecord {
        function: function.into(),
        version: 1,
        ts_ms: clock::now_ms(),
        stream: LogStream::Stdout,
        line: line.into(),
        invocation: invocation.into(),
    }
}

pub fn receipt(function: &str, id: &str, status: u16) -> Receipt {
    Receipt {
        id: id.into(),
        function: function.into(),
        version: 1,
        trigger: TriggerKind::Http,
        status,
        error: None,
        start_ms: clock::now_ms(),
        duration_us: 1000,
        guest_us: 500,
        instantiate_us: 20,
        peak_memory_bytes: 1 << 16,
        bytes_in: 0,
        bytes_out: 2,
        attempt: None,
        cold: false,
        node: "node".into(),
        trace_id: String::new(),
    }
}

fn batch<T: serde::Serialize>(items: &[T]) -> Bytes {
    serde_json::to_vec(items).unwrap().into()
}

/// Three lines of two invocations of `function`, and their receipts (the
/// second failed).
pub async fn write_some(book: &dyn Logbook, function: &str) {
    let logs =
        [record(function, "i1", "hello"), record(function, "i1", "world"), record(function, "i2", "oops")];
    book.append(Kind::Logs, function, batch(&logs)).await.unwrap();
    let receipts = [receipt(function, "i1", 200), receipt(function, "i2", 500)];
    book.append(Kind::Receipts, function, batch(&receipts)).await.unwrap();
}

pub async fn run(book: &dyn Logbook) {
    write_some(book, "f").await;
    write_some(book, "g").await;
    // Shown once on disk: at once, or within the implementation's flush
    // interval; `flush` makes it so now.
    book.flush().await.unwrap();
    let logs = |q: LogQuery| async move { book.logs(&q).await.unwrap() };
    let lines = |r: Vec<LogRecord>| r.into_iter().map(|r| r.line).collect::<Vec<_>>();
    let all = LogQuery { name: "f".into(), tail: 100, ..Default::default() };

    // Oldest first; the newest `tail`.
    assert_eq!(lines(logs(all.clone()).await), ["hello", "world", "oops"]);
    assert_eq!(lines(logs(LogQuery { tail: 2, ..all.clone() }).await), ["world", "oops"]);
    // Filters.
    assert_eq!(lines(logs(LogQuery { grep: Some("wor".into()), ..all.clone() }).await), ["world"]);
    assert_eq!(lines(logs(LogQuery { invocation: Some("i2".into()), ..all.clone() }).await), ["oops"]);
    let future = clock::now_ms() + 60_000;
    assert!(logs(LogQuery { since_ms: Some(future), ..all.clone() }).await.is_empty());
    assert_eq!(logs(LogQuery { since_ms: Some(clock::now_ms() - 60_000), ..all.clone() }).await.len(), 3);
    // Nothing of another function, nothing of none.
    assert!(logs(LogQuery { name: "nobody".into(), ..all.clone() }).await.is_empty());

    // Receipts: newest first.
    let receipts = |q: ReceiptQuery| async move { book.receipts(&q).await.unwrap() };
    let ids = |r: Vec<Receipt>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let q = ReceiptQuery { function: "f".into(), limit: 10, ..Default::default() };
    assert_eq!(ids(receipts(q.clone()).await), ["i2", "i1"]);
    assert_eq!(ids(receipts(ReceiptQuery { failed_only: true, ..q.clone() }).await), ["i2"]);
    assert_eq!(ids(receipts(ReceiptQuery { id: Some("i1".into()), ..q.clone() }).await), ["i1"]);
    assert_eq!(ids(receipts(ReceiptQuery { limit: 1, ..q.clone() }).await), ["i2"]);

    // A batch that does not decode is skipped, not an error.
    book.append(Kind::Logs, "f", Bytes::from_static(b"not json")).await.unwrap();
    book.flush().await.unwrap();
    assert_eq!(logs(all.clone()).await.len(), 3);

    // Forgetting a function drops its lines and receipts, no one else's.
    book.forget("f").await.unwrap();
    assert!(logs(all.clone()).await.is_empty());
    assert!(receipts(q.clone()).await.is_empty());
    assert_eq!(logs(LogQuery { name: "g".into(), ..all }).await.len(), 3);
}

/// Writing past [`RETENTION`]'s bytes drops the oldest batches, and the
/// newest stay.
pub async fn bytes_are_bounded(book: &dyn Logbook) {
    let line = "x".repeat(1000);
    for i in 0..200 {
        let logs = [record("f", &format!("i{i}"), &format!("{i} {line}"))];
        book.append(Kind::Logs, "f", batch(&logs)).await.unwrap();
    }
    book.prune().await.unwrap();
    book.flush().await.unwrap();
    let kept = book.logs(&LogQuery { name: "f".into(), tail: 1000, ..Default::default() }).await.unwrap();
    let kept_bytes: usize = kept.iter().map(|r| r.line.len()).sum();
    assert!(kept_bytes <= RETENTION.max_bytes as usize, "{kept_bytes} bytes kept");
    assert!(kept.len() >= 20, "only {} kept", kept.len());
    assert!(kept.last().unwrap().line.starts_with("199 "), "the newest stays");
}
