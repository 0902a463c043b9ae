//! One record per invocation (a receipt): what ran, for whom, how it ended
//! and what it cost. Workers make them; the log store keeps them beside
//! the function's log lines; `tern invocations` and `tern logs` read them.

use serde::{Deserialize, Serialize};

/// What started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A client's request through a route, or a call between functions.
    Http,
    /// An event from a trigger's subscription.
    Event,
    /// A cron tick.
    Cron,
    /// `tern invoke` (the admin API), a dead-letter replay included.
    Invoke,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Http => "http",
            TriggerKind::Event => "event",
            TriggerKind::Cron => "cron",
            TriggerKind::Invoke => "invoke",
        }
    }
}

/// One invocation's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The invocation id: the `Tern-Invocation-Id` of an HTTP response,
    /// and the `invocation` of every log line it wrote.
    pub id: String,
    pub function: String,
    pub version: u64,
    pub trigger: TriggerKind,
    /// The HTTP status answered; for an event, 200 when handled and the
    /// failure's status (500 for a handler's error) when not.
    pub status: u16,
    /// Why it failed, for a failed one (never guest output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it started, ms since the Unix epoch.
    pub start_ms: u64,
    /// From the worker taking the request to the last byte of the answer.
    pub duration_us: u64,
    /// Of which the guest's code ran (the rest: waiting on I/O, the host).
    pub guest_us: u64,
    /// Of which making its fresh instance took.
    #[serde(default)]
    pub instantiate_us: u64,
    /// The most linear memory (and tables) the instance held.
    pub peak_memory_bytes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Which delivery of its event this was (1 the first), for events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The first invocation of the function on its replica since it was
    /// loaded there (a cold start, usually from zero).
    pub cold: bool,
    /// The worker node that ran it.
    pub node: String,
    /// The W3C trace it belongs to (32 hex digits), when it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
}

impl Receipt {
    /// Failed: a 5xx (a trap, timeout or limit, or the function's own 5xx),
    /// or an event that was not handled.
    pub fn failed(&self) -> bool {
        self.status >= 500
    }

    /// The one-line report `tern logs` prints after an invocation's output.
    pub fn report_line(&self) -> String {
        let mut line = format!(
            "REPORT {} {} status {} duration {:.2} ms guest {:.2} ms memory {} KiB in {} B out {} B{}",
            self.id,
            self.trigger.as_str(),
            self.status,
            self.duration_us as f64 / 1000.0,
            self.guest_us as f64 / 1000.0,
            self.peak_memory_bytes / 1024,
            self.bytes_in,
            self.bytes_out,
            if self.cold { " cold" } else { "" },
        );
        if let Some(a) = self.attempt {
            line.push_str(&format!(" attempt {a}"));
        }
        line
    }

    /// The report as a log record, stamped at the invocation's end, so it
    /// sorts after the invocation's own lines.
    pub fn report(&self) -> crate::LogRecord {
        crate::LogRecord {
            function: self.function.clone(),
            version: self.version,
            ts_ms: self.start_ms + self.duration_us / 1000,
            stream: crate::LogStream::Report,
            line: self.report_line(),
            invocation: self.id.clone(),
        }
    }
}

/// `tern invocations NAME`: the newest receipts of a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvocationsRequest {
    pub name: String,
    /// At most this many, newest first.
    pub limit: usize,
    /// Only the failed ones.
    #[serde(default)]
    pub failed: bool,
    /// Only this invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
