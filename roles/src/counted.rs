//! The event log, counting what is published into it
//! (`tern_event_published_total`): one wrapper, so every publisher (the
//! admin API, functions, cron) is counted the same way.

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use tern_events::{Consumer, ConsumerConfig, ConsumerStats, DeadLetter, EventError, EventLog, StoredEvent};
use tern_metrics::Metrics;

pub struct CountedLog {
    pub inner: Arc<dyn EventLog>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl EventLog for CountedLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Vec<(String, String)>,
        data: Bytes,
    ) -> Result<StoredEvent, EventError> {
        let stored = self.inner.publish(subject, headers, data).await?;
        self.metrics.published(subject);
        Ok(stored)
    }

    async fn create_consumer(&self, config: &ConsumerConfig) -> Result<(), EventError> {
        self.inner.create_consumer(config).await
    }

    async fn consumers(&self) -> Result<Vec<ConsumerConfig>, EventError> {
        self.inner.consumers().await
    }

    async fn consumer(&self, name: &str) -> Result<Box<dyn Consumer>, EventError> {
        self.inner.consumer(name).await
    }

    async fn stats(&self, name: &str) -> Result<ConsumerStats, EventError> {
        self.inner.stats(name).await
    }

    async fn delete_consumer(&self, name: &str) -> Result<(), EventError> {
        self.inner.delete_consumer(name).await
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), EventError> {
        self.inner.dead_letter(letter).await
    }

    async fn dead_letters(&self, function: &str) -> Result<Vec<DeadLetter>, EventError> {
        self.inner.dead_letters(function).await
    }

    async fn remove_dead_letter(&self, function: &str, event_id: &str) -> Result<bool, EventError> {
        self.inner.remove_dead_letter(function, event_id).await
    }

    async fn dead_letter_count(&self, function: &str) -> Result<u64, EventError> {
        self.inner.dead_letter_count(function).await
    }

    async fn delete_dead_letters(&self, function: &str) -> Result<u64, EventError> {
        self.inner.delete_dead_letters(function).await
    }
}
