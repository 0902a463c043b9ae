//! An invocation's log: what the guest wrote to stdout and stderr, within
//! its budget, and Tern's own lines about it.

use crate::outbound::Notes;
use crate::output::CappedOutput;
use tern_protocol::{LogRecord, LogStream, clock};

/// What an invocation writes to its log, read when it is over.
pub struct LogTail {
    pub(crate) stdout: CappedOutput,
    pub(crate) stderr: CappedOutput,
    pub(crate) notes: Notes,
}

impl LogTail {
    /// The guest's output and Tern's outbound lines, as log records.
    pub fn collect(&self, log: &LogSink<'_>) -> Vec<LogRecord> {
        let mut logs = log.output(&self.stdout, &self.stderr);
        logs.extend(self.notes.take().into_iter().map(|line| log.record(LogStream::Tern, line)));
        logs
    }
}

/// What one invocation's log may hold, counting each record's line plus
/// [`RECORD_OVERHEAD`]: a flood of empty lines costs as much as it weighs
/// on the wire, not nothing.
pub(crate) const LOG_BYTES_PER_INVOCATION: usize = 64 * 1024;
/// What a record costs beside its line (function, version, time, stream).
pub(crate) const RECORD_OVERHEAD: usize = 64;

/// Turns one invocation's output into the function's log records.
pub struct LogSink<'a> {
    pub function: &'a str,
    pub version: u64,
    pub invocation: &'a str,
}

impl LogSink<'_> {
    /// Records for what the guest wrote, within the per-invocation budget;
    /// past it (or past the capture cap) one line says what was dropped.
    pub fn output(&self, stdout: &CappedOutput, stderr: &CappedOutput) -> Vec<LogRecord> {
        let mut logs = Vec::new();
        let mut budget = LOG_BYTES_PER_INVOCATION;
        let (mut dropped_bytes, mut dropped_lines) = (0u64, 0u64);
        for (stream, out) in [(LogStream::Stdout, stdout), (LogStream::Stderr, stderr)] {
            let (bytes, past_cap) = out.contents();
            dropped_bytes += past_cap;
            for line in String::from_utf8_lossy(&bytes).lines() {
                let cost = line.len() + RECORD_OVERHEAD;
                if cost > budget {
                    dropped_bytes += line.len() as u64 + 1;
                    dropped_lines += 1;
                    continue;
                }
                budget -= cost;
                logs.push(self.record(stream, line.to_string()));
            }
        }
        if dropped_bytes > 0 {
            let lines =
                if dropped_lines > 0 { format!(" ({dropped_lines} lines and more)") } else { String::new() };
            logs.push(self.record(
                LogStream::Tern,
                format!(
                    "output truncated: {dropped_bytes} bytes{lines} not kept; an invocation keeps {} KiB of log",
                    LOG_BYTES_PER_INVOCATION / 1024
                ),
            ));
        }
        logs
    }

    pub fn record(&self, stream: LogStream, line: String) -> LogRecord {
        LogRecord {
            function: self.function.to_string(),
            version: self.version,
            ts_ms: clock::now_ms(),
            stream,
            line,
            invocation: self.invocation.to_string(),
        }
    }
}
