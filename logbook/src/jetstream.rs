//! The logbook in a cluster: the JetStream stream `TERN_LOGS`, bound to the
//! subjects the workers already publish their batches on
//! (`tern.v1.logs.<fn>`, `tern.v1.receipts.<fn>`). NATS keeps them as they
//! pass, so no scheduler has to be up for logs to be kept, and the
//! stream's own limits (age, bytes, `--js-replicas`) are the retention.
//!
//! Reading newest first: JetStream reads forward, so a query reads a
//! window of time up to now (an ordered consumer starting at a time) and
//! keeps the newest matches; a window that holds too few is widened (a
//! minute, ten, an hour, the whole retention).

use crate::{Kind, LogQuery, Logbook, LogbookError, ReceiptQuery, Retention};
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;
use tern_protocol::{LogRecord, Receipt, clock, subject};

pub const STREAM: &str = "TERN_LOGS";
/// Wider and wider windows a query reads, before the whole retention.
const WINDOWS: [Duration; 3] = [Duration::from_secs(60), Duration::from_secs(600), Duration::from_secs(3600)];
/// A record is stamped when written, its batch when it reached NATS, up
/// to a flush interval later: a window starts this much earlier.
const STAMP_SLACK: Duration = Duration::from_secs(10);

fn storage<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> LogbookError {
    move |e| LogbookError::Storage(format!("{what}: {e}"))
}

pub struct JetStreamLogbook {
    js: jetstream::Context,
    retention: Retention,
}

fn subject_of(kind: Kind, function: &str) -> String {
    match kind {
        Kind::Logs => subject::logs(function),
        Kind::Receipts => subject::receipts(function),
    }
}

impl JetStreamLogbook {
    /// Creates `TERN_LOGS` if it is missing, or sets its limits to
    /// `retention` if they differ. `replicas`: servers keeping it.
    pub async fn open(
        client: async_nats::Client,
        replicas: usize,
        retention: Retention,
    ) -> Result<Self, LogbookError> {
        let js = jetstream::new(client);
        let config = stream::Config {
            name: STREAM.into(),
            description: Some("Tern: functions' log lines and invocation receipts".into()),
            subjects: vec![subject::logs_all(), subject::receipts_all()],
            max_age: retention.max_age,
            max_bytes: i64::try_from(retention.max_bytes).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        // Roles starting together race to create it; the loser looks again.
        let mut tries = 0;
        let mut stream = loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(s) => break s,
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(LogbookError::Storage(format!("creating the {STREAM} stream: {e}"))),
            }
        };
        let have = stream.info().await.map_err(storage("reading the TERN_LOGS stream"))?.config.clone();
        if have.max_age != config.max_age || have.max_bytes != config.max_bytes {
            js.update_stream(config).await.map_err(storage("setting the TERN_LOGS limits"))?;
        }
        Ok(JetStreamLogbook { js, retention })
    }

    /// Each batch on `subject` published since `since_ms`, oldest first,
    /// passed to `take`.
    async fn read(
        &self,
        subject: &str,
        since_ms: u64,
        mut take: impl FnMut(Bytes),
    ) -> Result<(), LogbookError> {
        let stream = self.js.get_stream(STREAM).await.map_err(storage("opening the TERN_LOGS stream"))?;
        let start = time::OffsetDateTime::from_unix_timestamp_nanos(since_ms as i128 * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let config = consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        };
        let mut consumer = stream.create_consumer(config).await.map_err(storage("reading TERN_LOGS"))?;
        // Only what is there now: the count tells when to stop.
        let pending = consumer.info().await.map_err(storage("reading TERN_LOGS"))?.num_pending;
        if pending == 0 {
            return Ok(());
        }
        let mut messages = consumer.messages().await.map_err(storage("reading TERN_LOGS"))?;
        let mut seen = 0;
        while seen < pending {
            let msg = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(LogbookError::Storage(format!("reading TERN_LOGS: {e}"))),
                Ok(None) | Err(_) => break,
            };
            seen += 1;
            take(msg.payload.clone());
        }
        Ok(())
    }

    /// The newest `n` items of `subject`'s batches that `keep` (newest
    /// last), reading wider windows until there are `n`. A batch that does
    /// not decode is skipped.
    async fn newest<T: serde::de::DeserializeOwned>(
        &self,
        subject: &str,
        since_ms: Option<u64>,
        n: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<VecDeque<T>, LogbookError> {
        let decode = |b: Bytes| -> Vec<T> {
            serde_json::from_slice::<Vec<T>>(&b)
                .map(|v| v.into_iter().filter(|x| keep(x)).collect())
                .unwrap_or_default()
        };
        let now = clock::now_ms();
        let windows: Vec<u64> = match since_ms {
            Some(s) => vec![s.saturating_sub(STAMP_SLACK.as_millis() as u64)],
            None => WINDOWS
                .iter()
                .filter(|w| **w < self.retention.max_age)
                .chain([&self.retention.max_age])
                .map(|w| now.saturating_sub((*w + STAMP_SLACK).as_millis() as u64))
                .collect(),
        };
        let mut kept = VecDeque::new();
        for from in windows {
            kept.clear();
            self.read(subject, from, |batch| {
                for item in decode(batch) {
                    kept.push_back(item);
                    if kept.len() > n {
                        kept.pop_front();
                    }
                }
            })
            .await?;
            if kept.len() >= n {
                break;
            }
        }
        Ok(kept)
    }
}

#[async_trait]
impl Logbook for JetStreamLogbook {
    fn keeps_bus_subjects(&self) -> bool {
        true
    }

    async fn append(&self, kind: Kind, function: &str, batch: Bytes) -> Result<(), LogbookError> {
        let ack =
            self.js.publish(subject_of(kind, function), batch).await.map_err(storage("keeping a batch"))?;
        ack.await.map_err(storage("keeping a batch"))?;
        Ok(())
    }

    async fn logs(&self, q: &LogQuery) -> Result<Vec<LogRecord>, LogbookError> {
        let keep = |r: &LogRecord| q.matches(r);
        Ok(self.newest(&subject::logs(&q.name), q.since_ms, q.tail, keep).await?.into_iter().collect())
    }

    async fn receipts(&self, q: &ReceiptQuery) -> Result<Vec<Receipt>, LogbookError> {
        let keep = |r: &Receipt| q.matches(r);
        let newest = self.newest(&subject::receipts(&q.function), q.since_ms, q.limit, keep).await?;
        Ok(newest.into_iter().rev().collect())
    }

    async fn forget(&self, function: &str) -> Result<(), LogbookError> {
        let stream = self.js.get_stream(STREAM).await.map_err(storage("opening the TERN_LOGS stream"))?;
        for kind in [Kind::Logs, Kind::Receipts] {
            stream.purge().filter(subject_of(kind, function)).await.map_err(storage("deleting logs"))?;
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), LogbookError> {
        // The stream's limits apply as it is written.
        Ok(())
    }

    async fn flush(&self) -> Result<(), LogbookError> {
        // An acknowledged publish is on the servers' disks.
        Ok(())
    }
}
