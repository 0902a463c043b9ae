//! Functions' log lines and receipts: the workers' batches go into the
//! logbook as they come, and `tern logs` / `tern invocations` read it.

use crate::Scheduler;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tern_bus::BusError;
use tern_logbook::{Kind, LogQuery, ReceiptQuery};
use tern_protocol::{ApiError, InvocationsRequest, LogRecord, LogStream, LogsRequest, Receipt, subject};
use tern_task::guarded;

/// The most records or receipts one query answers with.
pub const MAX_TAIL: usize = 10_000;
/// The most bytes of lines one answer carries (the oldest are left out):
/// it is one bus message.
pub const MAX_ANSWER_BYTES: usize = 512 * 1024;
/// What a record costs in an answer beside its line.
const RECORD_OVERHEAD: usize = 128;

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("function logs cannot be read: {e}"))
}

impl Scheduler {
    /// Keeps every batch of log records and receipts the workers publish
    /// (unless the logbook takes them off the bus by itself).
    pub(crate) async fn collect_records(self: &Arc<Self>) -> Result<(), BusError> {
        if self.logbook.keeps_bus_subjects() {
            return Ok(());
        }
        for (kind, wildcard) in [(Kind::Logs, subject::logs_all()), (Kind::Receipts, subject::receipts_all())]
        {
            let mut sub = self.bus.subscribe(&wildcard).await?;
            let book = self.logbook.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let function = match kind {
                        Kind::Logs => subject::function_of_logs(&msg.subject),
                        Kind::Receipts => subject::function_of_receipts(&msg.subject),
                    };
                    let Some(function) = function else { continue };
                    if let Some(Err(e)) = guarded("logbook", book.append(kind, function, msg.payload)).await {
                        tracing::warn!(function, "could not keep log records: {e}");
                    }
                }
            });
        }
        Ok(())
    }

    /// The newest `tail` lines that match, oldest first, each invocation's
    /// output followed by its report line.
    pub(crate) async fn logs(&self, req: LogsRequest) -> Result<Vec<LogRecord>, ApiError> {
        let tail = req.tail.min(MAX_TAIL);
        let q = LogQuery { tail, ..req };
        let mut records = self.logbook.logs(&q).await.map_err(unavailable)?;
        // The reports of the same stretch of time.
        let from = match (records.len() == tail, records.first()) {
            (true, Some(first)) => Some(first.ts_ms),
            _ => q.since_ms,
        };
        let rq = ReceiptQuery {
            function: q.name.clone(),
            limit: tail,
            failed_only: false,
            id: q.invocation.clone(),
            since_ms: from.map(|f| f.saturating_sub(60_000)),
        };
        let receipts = self.logbook.receipts(&rq).await.map_err(unavailable)?;
        // An invocation's report goes after its last line (lines are
        // stamped as they are collected, which can be a little after the
        // end the report is stamped with).
        let mut last_line: HashMap<&str, u64> = HashMap::new();
        for r in &records {
            let t = last_line.entry(r.invocation.as_str()).or_default();
            *t = (*t).max(r.ts_ms);
        }
        let reports: Vec<LogRecord> = receipts
            .iter()
            .map(|receipt| {
                let mut r = receipt.report();
                r.ts_ms = r.ts_ms.max(last_line.get(receipt.id.as_str()).copied().unwrap_or(0));
                r
            })
            .filter(|r| q.matches(r) && from.is_none_or(|f| r.ts_ms >= f))
            .collect();
        records.extend(reports);
        // A stable sort, reports last among lines of the same time.
        records.sort_by_key(|r| (r.ts_ms, r.stream == LogStream::Report));
        let mut cut = records.len().saturating_sub(tail);
        let mut bytes: usize = records[cut..].iter().map(|r| r.line.len() + RECORD_OVERHEAD).sum();
        while bytes > MAX_ANSWER_BYTES && cut < records.len() {
            bytes -= records[cut].line.len() + RECORD_OVERHEAD;
            cut += 1;
        }
        records.drain(..cut);
        Ok(records)
    }

    pub(crate) async fn invocations(&self, req: InvocationsRequest) -> Result<Vec<Receipt>, ApiError> {
        let q = ReceiptQuery {
            function: req.name,
            limit: req.limit.min(MAX_TAIL),
            failed_only: req.failed,
            id: req.id,
            since_ms: None,
        };
        self.logbook.receipts(&q).await.map_err(unavailable)
    }
}
