//! The consumer side of the sled log: taking events in order for one
//! durable consumer (cursor plus pending redeliveries), waiting for new
//! ones, and settling each delivery.

use super::*;

pub(super) struct SledConsumer {
    pub(super) log: SledLog,
    pub(super) name: String,
    pub(super) pattern: SubjectPattern,
    pub(super) ack_wait: Duration,
    pub(super) published: watch::Receiver<u64>,
}

/// What one look at the log found.
enum Taken {
    Event(StoredEvent, u32),
    /// Nothing now; the earliest pending redelivery, if any, is due then.
    Nothing(Option<u64>),
}

impl Inner {
    /// Deletes the events every consumer is done with: below each one's
    /// cursor and its oldest pending delivery. Returns how many.
    pub(super) fn prune(&self) -> Result<usize, EventError> {
        let floor = {
            // No take runs meanwhile, so no delivery moves from "ahead of
            // the cursor" to "pending" unseen.
            let _one = self.take_order.lock().unwrap_or_else(|e| e.into_inner());
            let mut floor = self.inserted.load(std::sync::atomic::Ordering::Acquire) + 1;
            for item in self.consumers.iter() {
                floor = floor.min(parse::<ConsumerState>(&item?.1)?.cursor);
            }
            for item in self.pending.iter() {
                floor = floor.min(seq_of(&item?.0));
            }
            floor
        };
        let mut removed = 0;
        for item in self.events.range(..floor.to_be_bytes()).take(SCAN_BATCH) {
            self.events.remove(item?.0)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Whether some consumer takes events on `subject`.
    pub(super) fn routed(&self, subject: &str) -> Result<bool, EventError> {
        for item in self.consumers.iter() {
            let state: ConsumerState = parse(&item?.1)?;
            if SubjectPattern::parse(&state.filter).is_ok_and(|p| p.matches(subject)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn take(&self, name: &str, pattern: &SubjectPattern, ack_wait: Duration) -> Result<Taken, EventError> {
        let _one = self.take_order.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        let ack_wait_ms = ack_wait.as_millis() as u64;
        // Due redeliveries first: they are older than anything new.
        let mut next_due: Option<u64> = None;
        for item in self.pending.scan_prefix(prefix(name)) {
            let (k, v) = item?;
            let p: Pending = parse(&v)?;
            if p.due_ms > now {
                next_due = Some(next_due.map_or(p.due_ms, |d| d.min(p.due_ms)));
                continue;
            }
            let seq = seq_of(&k);
            let Some(record) = self.events.get(seq.to_be_bytes())? else {
                self.pending.remove(k)?;
                continue;
            };
            let again = Pending { attempt: p.attempt + 1, due_ms: now + ack_wait_ms };
            self.pending.insert(k, json(&again))?;
            return Ok(Taken::Event(decode_event(&record)?, again.attempt));
        }
        let Some(state) = self.consumers.get(name)? else {
            return Err(EventError::NoConsumer(name.to_string()));
        };
        let mut state: ConsumerState = parse(&state)?;
        let start = state.cursor;
        let mut found = None;
        let inserted = self.inserted.load(std::sync::atomic::Ordering::Acquire);
        // Past `inserted` only the very next seq, which can skip nothing.
        let upto = inserted.max(state.cursor);
        for item in self.events.range(state.cursor.to_be_bytes()..=upto.to_be_bytes()).take(SCAN_BATCH) {
            let (k, v) = item?;
            state.cursor = seq_of(&k) + 1;
            let event = decode_event(&v)?;
            if pattern.matches(&event.subject) {
                found = Some(event);
                break;
            }
        }
        // No sled transaction here: sled 0.34's transactions deadlock with
        // concurrent iterators. The pending entry goes first, so a crash
        // between the two writes redelivers the event, never skips it.
        if let Some(event) = found {
            let first = Pending { attempt: 1, due_ms: now + ack_wait_ms };
            self.pending.insert(key(name, event.seq), json(&first))?;
            self.consumers.insert(name, json(&state))?;
            return Ok(Taken::Event(event, 1));
        }
        if state.cursor != start {
            self.consumers.insert(name, json(&state))?;
        }
        Ok(Taken::Nothing(next_due))
    }
}

#[async_trait]
impl Consumer for SledConsumer {
    async fn next(&mut self) -> Result<Delivery, EventError> {
        loop {
            // Mark the current publish as seen before looking, so one that
            // lands during the look wakes the wait below.
            self.published.borrow_and_update();
            let (name, pattern, ack_wait) = (self.name.clone(), self.pattern.clone(), self.ack_wait);
            let taken = self.log.blocking(move |inner| inner.take(&name, &pattern, ack_wait)).await?;
            let next_due = match taken {
                Taken::Event(event, attempt) => {
                    let acker = SledAcker {
                        log: self.log.clone(),
                        key: key(&self.name, event.seq),
                        ack_wait: self.ack_wait,
                    };
                    return Ok(Delivery::new(event, attempt, Box::new(acker)));
                }
                Taken::Nothing(next_due) => next_due,
            };
            let wait = next_due
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                .unwrap_or(IDLE_RECHECK)
                .min(IDLE_RECHECK);
            tokio::select! {
                _ = self.published.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

struct SledAcker {
    log: SledLog,
    key: Vec<u8>,
    ack_wait: Duration,
}

#[async_trait]
impl Acker for SledAcker {
    async fn settle(&self, how: Settle) -> Result<(), EventError> {
        let (key, ack_wait) = (self.key.clone(), self.ack_wait);
        self.log
            .blocking(move |inner| {
                let delay = match how {
                    Settle::Ack | Settle::Terminate => {
                        inner.pending.remove(key)?;
                        return Ok(());
                    }
                    Settle::RetryAfter(d) => d,
                    Settle::InProgress => ack_wait,
                };
                // Settling a delivery the consumer no longer has (deleted,
                // or already acked) changes nothing.
                if let Some(v) = inner.pending.get(&key)? {
                    let mut p: Pending = parse(&v)?;
                    p.due_ms = now_ms() + delay.as_millis() as u64;
                    inner.pending.insert(key, json(&p))?;
                }
                Ok(())
            })
            .await?;
        if matches!(how, Settle::RetryAfter(_)) {
            // A waiting consumer computed its wake-up before this retry
            // existed: have it look again, or the retry waits for its
            // idle recheck instead of its delay.
            self.log.inner.published.send_modify(|_| {});
        }
        Ok(())
    }
}
