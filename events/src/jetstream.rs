//! [`EventLog`] over NATS JetStream, for cluster mode.
//!
//! Events live in one stream, `TERN_EVENTS`, with interest retention: an
//! event stays until every trigger whose filter matches it has acked or
//! terminated it. The stream's subjects are the fewest patterns covering
//! every consumer's filter (plus `tern.cron.>`), kept in step as consumers
//! come and go, so any NATS client publishing on a trigger's subject is
//! stored, and nothing else is. Each trigger is a durable pull consumer
//! with explicit acks and no delivery limit: Tern counts attempts itself
//! and terminates the message after writing the dead letter, because the
//! server's max-deliveries advisory is lost when no one listens.
//!
//! Dead letters go to a second stream, `TERN_DLQ`, on `tern.dlq.<function>`,
//! as a frame: the dead letter's JSON header, then the event's data.

use crate::{
    Acker, Consumer, ConsumerConfig, ConsumerStats, DeadLetter, Delivery, EventError, EventLog, Settle,
    StoredEvent,
};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use std::time::Duration;
use tern_protocol::nats_subject::{self, SubjectPattern};
use tern_protocol::subject::{cron_all, dead_letters, dead_letters_all};

const EVENTS: &str = "TERN_EVENTS";
const DLQ: &str = "TERN_DLQ";
/// The event's id; the same on every redelivery.
const ID_HEADER: &str = "Tern-Event-Id";
/// Deliveries a consumer may have unacknowledged at once, across gateways.
const MAX_ACK_PENDING: i64 = 10_000;

fn store<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> EventError {
    move |e| EventError::Store(format!("{what}: {e}"))
}

#[derive(Clone)]
pub struct JetStreamLog {
    js: jetstream::Context,
}

impl JetStreamLog {
    /// Creates both streams if they are missing (file storage: they
    /// survive a server restart).
    /// `replicas`: how many servers keep each stream (1, or 3 on a
    /// three-node NATS cluster). Streams that exist keep their setting.
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, EventError> {
        let js = jetstream::new(client);
        let events = stream::Config {
            num_replicas: replicas,
            name: EVENTS.into(),
            subjects: vec![cron_all()],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let dlq = stream::Config {
            num_replicas: replicas,
            name: DLQ.into(),
            subjects: vec![dead_letters_all()],
            storage: stream::StorageType::File,
            ..Default::default()
        };
        for config in [events, dlq] {
            // Roles starting together race to create the streams; the
            // loser's create fails, and its next look finds the stream.
            let mut tries = 0;
            loop {
                match js.get_or_create_stream(config.clone()).await {
                    Ok(_) => break,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::debug!("creating the {} stream: {e}; looking again", config.name);
                        tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                    }
                    Err(e) => {
                        return Err(EventError::Store(format!("creating the {} stream: {e}", config.name)));
                    }
                }
            }
        }
        Ok(JetStreamLog { js })
    }

    async fn events(&self) -> Result<stream::Stream, EventError> {
        self.js.get_stream(EVENTS).await.map_err(store("opening the TERN_EVENTS stream"))
    }

    /// Sets the events stream's subjects to cover exactly `filters`.
    async fn cover(&self, filters: Vec<String>) -> Result<(), EventError> {
        let mut wanted = filters;
        wanted.push(cron_all());
        let wanted = nats_subject::minimal_cover(&wanted);
        let mut stream = self.events().await?;
        let mut config = stream.info().await.map_err(store("reading the TERN_EVENTS stream"))?.config.clone();
        let mut have = config.subjects.clone();
        have.sort();
        if have == wanted {
            return Ok(());
        }
        config.subjects = wanted;
        self.js.update_stream(config).await.map_err(|e| EventError::Store(format!(
            "cannot take these subjects into the TERN_EVENTS stream (does another stream on this NATS server \
             already hold them?): {e}"
        )))?;
        Ok(())
    }

    async fn filters(&self) -> Result<Vec<String>, EventError> {
        Ok(self.consumers().await?.into_iter().map(|c| c.filter).collect())
    }

    /// Every dead letter of `function` with its stream sequence.
    async fn letters(&self, function: &str) -> Result<Vec<(u64, DeadLetter)>, EventError> {
        let stream = self.js.get_stream(DLQ).await.map_err(store("opening the TERN_DLQ stream"))?;
        let subject = dead_letters(function);
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let msg = match stream.get_first_raw_message_by_subject(&subject, from).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(EventError::Store(format!("reading dead letters: {e}"))),
            };
            from = msg.sequence + 1;
            let letter = DeadLetter::decode(msg.payload)?;
            out.push((msg.sequence, letter));
        }
        Ok(out)
    }
}

#[async_trait]
impl EventLog for JetStreamLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Vec<(String, String)>,
        data: Bytes,
    ) -> Result<StoredEvent, EventError> {
        nats_subject::check(subject, false)
            .map_err(|e| EventError::Subject { subject: subject.to_string(), reason: e.to_string() })?;
        let id = crate::new_event_id();
        let mut map = HeaderMap::new();
        for (k, v) in &headers {
            map.append(k.as_str(), v.as_str());
        }
        map.insert(ID_HEADER, id.as_str());
        // Deduplicates a publish retried after a lost ack.
        map.insert("Nats-Msg-Id", id.as_str());
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), map, data.clone())
            .await
            .map_err(store("publishing"))?
            .await
            .map_err(|e| match e.kind() {
                // No stream takes the subject: no trigger does.
                jetstream::context::PublishErrorKind::StreamNotFound => EventError::Unrouted(subject.into()),
                _ => EventError::Store(format!("publishing: {e}")),
            })?;
        Ok(StoredEvent {
            seq: ack.sequence,
            id,
            subject: subject.to_string(),
            headers,
            data,
            published_ms: crate::now_ms(),
        })
    }

    async fn create_consumer(&self, config: &ConsumerConfig) -> Result<(), EventError> {
        SubjectPattern::parse(&config.filter)
            .map_err(|e| EventError::Subject { subject: config.filter.clone(), reason: e.to_string() })?;
        // The stream takes the subjects first, so no event published once
        // the consumer exists can miss it.
        let mut filters = self.filters().await?;
        filters.push(config.filter.clone());
        self.cover(filters).await?;
        self.events()
            .await?
            .get_or_create_consumer(
                &config.name,
                consumer::pull::Config {
                    durable_name: Some(config.name.clone()),
                    filter_subject: config.filter.clone(),
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(store("creating a durable consumer"))?;
        Ok(())
    }

    async fn consumers(&self) -> Result<Vec<ConsumerConfig>, EventError> {
        let stream = self.events().await?;
        let mut infos = stream.consumers();
        let mut out = Vec::new();
        while let Some(info) = infos.next().await {
            let info = info.map_err(store("listing consumers"))?;
            out.push(ConsumerConfig {
                name: info.name,
                filter: info.config.filter_subject,
                ack_wait: info.config.ack_wait,
            });
        }
        Ok(out)
    }

    async fn consumer(&self, name: &str) -> Result<Box<dyn Consumer>, EventError> {
        let stream = self.events().await?;
        match stream.consumer_info(name).await {
            Ok(_) => {}
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                return Err(EventError::NoConsumer(name.to_string()));
            }
            Err(e) => return Err(EventError::Store(format!("opening consumer {name}: {e}"))),
        }
        let consumer: consumer::PullConsumer = stream
            .get_consumer(name)
            .await
            .map_err(|e| EventError::Store(format!("opening consumer {name}: {e}")))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(store("pulling from a consumer"))?;
        Ok(Box::new(JetStreamConsumer { name: name.to_string(), messages }))
    }

    async fn stats(&self, name: &str) -> Result<ConsumerStats, EventError> {
        match self.events().await?.consumer_info(name).await {
            Ok(info) => Ok(ConsumerStats { waiting: info.num_pending, unacked: info.num_ack_pending as u64 }),
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                Err(EventError::NoConsumer(name.to_string()))
            }
            Err(e) => Err(EventError::Store(format!("reading consumer {name}: {e}"))),
        }
    }

    async fn delete_consumer(&self, name: &str) -> Result<(), EventError> {
        match self.events().await?.delete_consumer(name).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(EventError::Store(format!("deleting consumer {name}: {e}"))),
        }
        let filters = self.filters().await?;
        self.cover(filters).await
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), EventError> {
        let subject = dead_letters(&letter.function);
        // A dead letter written again (its first write's answer was lost)
        // is stored once: JetStream drops a repeated Msg-Id.
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}-{}-{}", letter.function, letter.event.id, letter.attempts).as_str(),
        );
        self.js
            .publish_with_headers(subject, headers, letter.encode())
            .await
            .map_err(store("writing a dead letter"))?
            .await
            .map_err(store("writing a dead letter"))?;
        Ok(())
    }

    async fn dead_letters(&self, function: &str) -> Result<Vec<DeadLetter>, EventError> {
        Ok(self.letters(function).await?.into_iter().map(|(_, l)| l).collect())
    }

    async fn remove_dead_letter(&self, function: &str, event_id: &str) -> Result<bool, EventError> {
        let Some((seq, _)) = self.letters(function).await?.into_iter().find(|(_, l)| l.event.id == event_id)
        else {
            return Ok(false);
        };
        let stream = self.js.get_stream(DLQ).await.map_err(store("opening the TERN_DLQ stream"))?;
        stream.delete_message(seq).await.map_err(store("removing a dead letter"))
    }

    async fn dead_letter_count(&self, function: &str) -> Result<u64, EventError> {
        let subject = dead_letters(function);
        let stream = self.js.get_stream(DLQ).await.map_err(store("opening the TERN_DLQ stream"))?;
        let mut subjects =
            stream.info_with_subjects(&subject).await.map_err(store("counting dead letters"))?;
        while let Some((s, n)) = subjects.try_next().await.map_err(store("counting dead letters"))? {
            if s == subject {
                return Ok(n as u64);
            }
        }
        Ok(0)
    }

    async fn delete_dead_letters(&self, function: &str) -> Result<u64, EventError> {
        let stream = self.js.get_stream(DLQ).await.map_err(store("opening the TERN_DLQ stream"))?;
        let purged =
            stream.purge().filter(dead_letters(function)).await.map_err(store("deleting dead letters"))?;
        Ok(purged.purged)
    }
}

fn not_found(e: &stream::ConsumerError) -> bool {
    matches!(e.kind(), stream::ConsumerErrorKind::JetStream(ref j)
        if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND)
}

struct JetStreamConsumer {
    name: String,
    messages: consumer::pull::Stream,
}

impl JetStreamConsumer {
    fn delivery(msg: jetstream::Message) -> Result<Delivery, EventError> {
        let info = msg.info().map_err(|e| EventError::Store(format!("malformed delivery: {e}")))?;
        let (seq, attempt) = (info.stream_sequence, info.delivered.max(1) as u32);
        let published_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
        let (msg, acker) = msg.split();
        let mut id = None;
        let mut headers = Vec::new();
        if let Some(map) = &msg.headers {
            for (k, values) in map.iter() {
                let k: &str = k.as_ref();
                if k.eq_ignore_ascii_case(ID_HEADER) {
                    id = values.first().map(|v| v.as_str().to_string());
                } else if !k.starts_with("Nats-") {
                    headers.extend(values.iter().map(|v| (k.to_string(), v.as_str().to_string())));
                }
            }
        }
        let event = StoredEvent {
            seq,
            // Published by another NATS client: the stream position is
            // unique and stays the same on redelivery.
            id: id.unwrap_or_else(|| format!("js-{seq}")),
            subject: msg.subject.to_string(),
            headers,
            data: msg.payload,
            published_ms,
        };
        Ok(Delivery::new(event, attempt, Box::new(JetStreamAcker(acker))))
    }
}

#[async_trait]
impl Consumer for JetStreamConsumer {
    async fn next(&mut self) -> Result<Delivery, EventError> {
        loop {
            match self.messages.next().await {
                Some(Ok(m)) => return Self::delivery(m),
                // Missed heartbeats and the like: the stream goes on.
                Some(Err(e)) => tracing::debug!(consumer = %self.name, "pull: {e}"),
                None => return Err(EventError::Store(format!("consumer {} was closed", self.name))),
            }
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>, EventError> {
        let mut batch = vec![self.next().await?];
        // Polling a stream once is cancel-safe: what is not ready stays
        // buffered for the next call.
        while batch.len() < max {
            match self.messages.next().now_or_never() {
                Some(Some(Ok(m))) => batch.push(Self::delivery(m)?),
                _ => break,
            }
        }
        Ok(batch)
    }
}

struct JetStreamAcker(jetstream::message::Acker);

#[async_trait]
impl Acker for JetStreamAcker {
    async fn settle(&self, how: Settle) -> Result<(), EventError> {
        let kind = match how {
            Settle::Ack => AckKind::Ack,
            // Never a bare Nak: it redelivers at once.
            Settle::RetryAfter(d) => AckKind::Nak(Some(d.max(Duration::from_millis(1)))),
            Settle::InProgress => AckKind::Progress,
            Settle::Terminate => AckKind::Term,
        };
        self.0.ack_with(kind).await.map_err(store("settling a delivery"))
    }
}
