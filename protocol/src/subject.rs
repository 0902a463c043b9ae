//! Every subject name on the bus. Nothing else formats subjects.
//!
//! Function names are validated by [`crate::validate_function_name`] to be
//! subject-safe tokens (no `.`, `*`, `>` or whitespace), so they can be
//! embedded as one token.

const PREFIX: &str = "tern.v1";

/// Requests to invoke a function; its replicas share one queue group.
pub fn invoke(function: &str) -> String {
    format!("{PREFIX}.invoke.{function}")
}

/// The queue group every replica of a function joins on [`invoke`].
pub fn invoke_queue_group(function: &str) -> String {
    format!("replicas.{function}")
}

/// Chunks of streamed response bodies for one caller (a gateway), each
/// stream a token under it: the caller subscribes to [`streams`] once.
pub fn stream(owner: &str, id: u64) -> String {
    format!("{PREFIX}.stream.{owner}.{id}")
}

pub fn streams(owner: &str) -> String {
    format!("{PREFIX}.stream.{owner}.*")
}

/// Credits and cancels for the streams one worker sends.
pub fn credit(owner: &str, id: u64) -> String {
    format!("{PREFIX}.credit.{owner}.{id}")
}

pub fn credits(owner: &str) -> String {
    format!("{PREFIX}.credit.{owner}.*")
}

/// Control requests the scheduler answers (deploy, list, describe, …).
pub fn scheduler(op: SchedulerOp) -> String {
    format!("{PREFIX}.scheduler.{}", op.as_str())
}

/// The scheduler's operations, one subject each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerOp {
    Deploy,
    List,
    Describe,
    Delete,
    Rollback,
    Logs,
    Routes,
    Status,
    /// From a gateway's activator: a function at zero has requests waiting.
    Wake,
    SecretSet,
    SecretList,
    SecretDelete,
    /// Receipts of a function's recent invocations.
    Invocations,
}

impl SchedulerOp {
    pub const ALL: [SchedulerOp; 13] = [
        SchedulerOp::Deploy,
        SchedulerOp::List,
        SchedulerOp::Describe,
        SchedulerOp::Delete,
        SchedulerOp::Rollback,
        SchedulerOp::Logs,
        SchedulerOp::Routes,
        SchedulerOp::Status,
        SchedulerOp::Wake,
        SchedulerOp::SecretSet,
        SchedulerOp::SecretList,
        SchedulerOp::SecretDelete,
        SchedulerOp::Invocations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerOp::Deploy => "deploy",
            SchedulerOp::List => "list",
            SchedulerOp::Describe => "describe",
            SchedulerOp::Delete => "delete",
            SchedulerOp::Rollback => "rollback",
            SchedulerOp::Logs => "logs",
            SchedulerOp::Routes => "routes",
            SchedulerOp::Status => "status",
            SchedulerOp::Wake => "wake",
            SchedulerOp::SecretSet => "secret-set",
            SchedulerOp::SecretList => "secret-list",
            SchedulerOp::SecretDelete => "secret-delete",
            SchedulerOp::Invocations => "invocations",
        }
    }
}

/// The scheduler publishes a function's cron ticks here, into the event
/// log like any event (outside `tern.v1`, which is the bus's own traffic
/// and never stored).
pub fn cron(function: &str) -> String {
    format!("tern.cron.{function}")
}

/// The function a [`cron`] subject ticks for.
pub fn function_of_cron(subject: &str) -> Option<&str> {
    subject.strip_prefix("tern.cron.")
}

/// Every cron tick subject, for the event log's stream.
pub fn cron_all() -> String {
    "tern.cron.>".to_string()
}

/// Where a cluster keeps a function's dead letters (JetStream's `TERN_DLQ`).
pub fn dead_letters(function: &str) -> String {
    format!("tern.dlq.{function}")
}

/// Every function's dead letters.
pub fn dead_letters_all() -> String {
    "tern.dlq.>".to_string()
}

/// The scheduler pushes every new serving table (routes and triggers) here.
pub fn serving_changed() -> String {
    format!("{PREFIX}.routes.changed")
}

/// Workers announce themselves here (on start, and when asked to).
pub fn node_announce() -> String {
    format!("{PREFIX}.nodes.announce")
}

/// Every worker publishes its state here each second.
pub fn node_heartbeat() -> String {
    format!("{PREFIX}.nodes.heartbeat")
}

/// The scheduler asks every worker to announce itself (on its own start).
pub fn node_discover() -> String {
    format!("{PREFIX}.nodes.discover")
}

/// Commands to one worker: load or unload functions.
pub fn worker_assign(node: &str) -> String {
    format!("{PREFIX}.worker.{node}.assign")
}

pub fn worker_unassign(node: &str) -> String {
    format!("{PREFIX}.worker.{node}.unassign")
}

/// New values of a function's secrets, to a worker running it.
pub fn worker_secrets(node: &str) -> String {
    format!("{PREFIX}.worker.{node}.secrets")
}

/// Artifact fetch by digest, answered by the scheduler.
pub fn artifact_get() -> String {
    format!("{PREFIX}.artifacts.get")
}

/// Log records of one function, published by the workers that run it.
pub fn logs(function: &str) -> String {
    format!("{PREFIX}.logs.{function}")
}

/// Wildcard over every function's logs.
pub fn logs_all() -> String {
    format!("{PREFIX}.logs.>")
}

/// The function a [`logs`] subject belongs to.
pub fn function_of_logs(subject: &str) -> Option<&str> {
    subject.strip_prefix(PREFIX)?.strip_prefix(".logs.")
}

/// Receipts of one function's invocations, published by the workers.
pub fn receipts(function: &str) -> String {
    format!("{PREFIX}.receipts.{function}")
}

/// Wildcard over every function's receipts.
pub fn receipts_all() -> String {
    format!("{PREFIX}.receipts.>")
}

/// The function a [`receipts`] subject belongs to.
pub fn function_of_receipts(subject: &str) -> Option<&str> {
    subject.strip_prefix(PREFIX)?.strip_prefix(".receipts.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_versioned_and_distinct() {
        let all: Vec<String> = SchedulerOp::ALL.iter().map(|op| scheduler(*op)).collect();
        for s in &all {
            assert!(s.starts_with("tern.v1."), "{s}");
        }
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len());
        assert_eq!(invoke("hello"), "tern.v1.invoke.hello");
    }

    #[test]
    fn logs_subject_round_trips() {
        assert_eq!(function_of_logs(&logs("api")), Some("api"));
        assert_eq!(function_of_logs("tern.v1.invoke.api"), None);
    }
}
