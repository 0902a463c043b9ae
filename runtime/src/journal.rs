//! Where a worker's log records and receipts leave for the bus. Log lines
//! go at once, one message per invocation that printed anything (most
//! print nothing), so `tern logs` right after a request shows its lines.
//! Receipts, one per invocation, are gathered per function and sent every
//! [`FLUSH_EVERY`]: a function serving 50,000 requests a second sends a
//! few messages of receipts a second, not 50,000.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::Bus;
use tern_protocol::{LogRecord, LogStream, Receipt, clock, subject};

pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Receipts one function may have waiting; past it (the bus is stuck) the
/// newest are dropped and counted, so a worker's memory stays bounded.
const MAX_WAITING_RECEIPTS: usize = 50_000;
/// Receipts per message: about 300 bytes each, well inside the bus's
/// 1 MiB payload.
const RECEIPTS_PER_MESSAGE: usize = 1000;
/// Log bytes per message (an invocation keeps at most 64 KiB of lines, an
/// event batch more).
const LOG_BYTES_PER_MESSAGE: usize = 256 * 1024;

#[derive(Default)]
pub(crate) struct Journal {
    waiting: Mutex<HashMap<String, Waiting>>,
}

#[derive(Default)]
struct Waiting {
    receipts: Vec<Receipt>,
    dropped: u64,
}

impl Journal {
    /// Sends one invocation's (or event batch's) log records for
    /// `function` now, and queues its receipts.
    pub(crate) async fn add(
        &self,
        bus: &dyn Bus,
        function: &str,
        logs: Vec<LogRecord>,
        receipts: Vec<Receipt>,
    ) {
        for logs in by_bytes(logs) {
            let payload = serde_json::to_vec(&logs).expect("serialise logs");
            if let Err(e) = bus.publish(&subject::logs(function), payload.into()).await {
                tracing::debug!(function, "could not publish log records: {e}");
            }
        }
        if receipts.is_empty() {
            return;
        }
        let mut waiting = self.waiting.lock();
        let w = match waiting.get_mut(function) {
            Some(w) => w,
            None => waiting.entry(function.to_string()).or_default(),
        };
        let room = MAX_WAITING_RECEIPTS.saturating_sub(w.receipts.len());
        if receipts.len() > room {
            w.dropped += (receipts.len() - room) as u64;
        }
        w.receipts.extend(receipts.into_iter().take(room));
    }

    /// Sends what waits, every [`FLUSH_EVERY`], for as long as it runs.
    pub(crate) async fn run(self: Arc<Self>, bus: Arc<dyn Bus>) {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            self.flush(&*bus).await;
        }
    }

    pub(crate) async fn flush(&self, bus: &dyn Bus) {
        let waiting = std::mem::take(&mut *self.waiting.lock());
        for (function, w) in waiting {
            if w.dropped > 0 {
                let version = w.receipts.last().map_or(0, |r| r.version);
                let line = LogRecord {
                    function: function.clone(),
                    version,
                    ts_ms: clock::now_ms(),
                    stream: LogStream::Tern,
                    line: format!(
                        "{} receipts were dropped: the bus did not take them fast enough",
                        w.dropped
                    ),
                    invocation: String::new(),
                };
                let payload = serde_json::to_vec(&[line]).expect("serialise logs");
                let _ = bus.publish(&subject::logs(&function), payload.into()).await;
            }
            for receipts in w.receipts.chunks(RECEIPTS_PER_MESSAGE) {
                let payload = serde_json::to_vec(receipts).expect("serialise receipts");
                if let Err(e) = bus.publish(&subject::receipts(&function), payload.into()).await {
                    tracing::debug!(function, "could not publish receipts: {e}");
                }
            }
        }
    }
}

/// `logs` cut into runs of at most [`LOG_BYTES_PER_MESSAGE`] of lines.
fn by_bytes(logs: Vec<LogRecord>) -> Vec<Vec<LogRecord>> {
    let mut out: Vec<Vec<LogRecord>> = Vec::new();
    let mut size = 0;
    for r in logs {
        let cost = r.line.len() + 128;
        match out.last_mut() {
            Some(run) if size + cost <= LOG_BYTES_PER_MESSAGE => {
                size += cost;
                run.push(r);
            }
            _ => {
                size = cost;
                out.push(vec![r]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tern_bus::InProcessBus;

    fn receipt(n: u64) -> Receipt {
        Receipt {
            id: format!("{n:016x}"),
            function: "f".into(),
            version: 1,
            trigger: tern_protocol::TriggerKind::Http,
            status: 200,
            error: None,
            start_ms: 0,
            duration_us: 1,
            guest_us: 1,
            instantiate_us: 0,
            peak_memory_bytes: 0,
            bytes_in: 0,
            bytes_out: 0,
            attempt: None,
            cold: false,
            node: "n".into(),
            trace_id: String::new(),
        }
    }

    #[tokio::test]
    async fn receipts_go_out_in_few_messages_and_waiting_ones_are_bounded() {
        let bus = InProcessBus::new();
        let mut sub = bus.subscribe(&subject::receipts("f")).await.unwrap();
        let journal = Journal::default();
        for n in 0..2500 {
            journal.add(&bus, "f", Vec::new(), vec![receipt(n)]).await;
        }
        journal.flush(&bus).await;
        let mut got = 0;
        let mut messages = 0;
        while got < 2500 {
            let m = tokio::time::timeout(Duration::from_secs(1), sub.next()).await.unwrap().unwrap();
            got += serde_json::from_slice::<Vec<Receipt>>(&m.payload).unwrap().len();
            messages += 1;
        }
        assert_eq!((got, messages), (2500, 3));

        journal.add(&bus, "f", Vec::new(), (0..MAX_WAITING_RECEIPTS as u64 + 7).map(receipt).collect()).await;
        let w = journal.waiting.lock();
        assert_eq!(w["f"].receipts.len(), MAX_WAITING_RECEIPTS);
        assert_eq!(w["f"].dropped, 7);
    }
}
