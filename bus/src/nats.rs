//! The cluster bus: NATS through async-nats. Subjects, wildcards, queue
//! groups, request/reply and "no responders" are NATS's own; this is a thin
//! mapping onto the [`Bus`] trait.

use crate::subject::validate_subject;
use crate::{Bus, BusError, Message, Subscription};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach NATS. Credentials and TLS are passed through to async-nats.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// One URL, or several separated by commas (a NATS cluster).
    pub url: String,
    /// Shown in the server's connection list.
    pub name: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// CA certificate(s) to trust, PEM.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key, PEM, for mutual TLS.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    pub require_tls: bool,
    /// Where replies to this client's requests arrive (default `_INBOX`).
    /// Tern's roles use one of their own (`_TERN.<role>`), so a client
    /// allowed the usual `_INBOX.>` for its own replies reads none of
    /// Tern's.
    pub inbox_prefix: Option<String>,
}

/// `url` with any `user:password@` taken out, for logs and errors.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}://{}", &u[..scheme], &u[at + 1..]),
            (None, Some(at)) => u[at + 1..].to_string(),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(super::redact("nats://gw:s3cret@h:4222,nats://h2:4222"), "nats://h:4222,nats://h2:4222");
        assert_eq!(super::redact("gw:s3cret@h:4222"), "h:4222");
        assert_eq!(super::redact("nats://h:4222"), "nats://h:4222");
    }
}

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

/// The longest a JetStream API request waits for its answer.
pub const JETSTREAM_API_TIMEOUT: Duration = Duration::from_secs(10);

impl NatsBus {
    /// Connects, retrying until the server answers; after that async-nats
    /// reconnects by itself for as long as the process lives, and
    /// subscriptions are restored on the new connection.
    pub async fn connect(opts: &NatsOptions) -> Result<Self, BusError> {
        let mut o = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Bus::request sets its own timeout per call. This one bounds
            // what sets none: JetStream API requests from contexts made on
            // this client (streams, buckets, the object store). Without it
            // a request the cluster never answers (a stream electing a
            // leader just after a node died) waited for ever.
            .request_timeout(Some(JETSTREAM_API_TIMEOUT))
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                tracing::info!("nats: {event}");
            });
        if let Some(name) = &opts.name {
            o = o.name(name);
        }
        if let Some(creds) = &opts.credentials {
            o = o.credentials_file(creds).await.map_err(|e| {
                BusError::Connection(format!("cannot read NATS credentials {}: {e}", creds.display()))
            })?;
        }
        if let Some(ca) = &opts.tls_ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &opts.tls_cert {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        if opts.require_tls {
            o = o.require_tls(true);
        }
        if let Some(prefix) = &opts.inbox_prefix {
            o = o.custom_inbox_prefix(prefix);
        }
        let shown = redact(&opts.url);
        let addrs: Vec<async_nats::ServerAddr> = opts
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| BusError::Connection(format!("NATS URL {shown:?} is not valid: {e}")))?;
        // async-nats does not read a user and password from the URL itself.
        if let Some(addr) = addrs.iter().find(|a| a.username().is_some()) {
            let (user, pass) = (addr.username().unwrap_or_default(), addr.password().unwrap_or_default());
            o = o.user_and_password(user.to_string(), pass.to_string());
        }
        let client = o
            .connect(addrs)
            .await
            .map_err(|e| BusError::Connection(format!("cannot connect to NATS at {shown}: {e}")))?;
        // With retry_on_initial_connect, connect returns at once; a role is
        // of no use until NATS answers, so wait here and say so.
        let started = std::time::Instant::now();
        let mut next_note = Duration::from_secs(2);
        while client.connection_state() != async_nats::connection::State::Connected {
            if started.elapsed() >= next_note {
                tracing::warn!("waiting for NATS at {} ({}s so far)", opts.url, started.elapsed().as_secs());
                next_note *= 2;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(NatsBus { client })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), BusError> {
        let limit = self.max_payload();
        // 0 means no INFO seen yet: let the server judge.
        if limit > 0 && payload.len() > limit {
            return Err(BusError::PayloadTooLarge { size: payload.len(), limit });
        }
        Ok(())
    }
}

fn to_message(m: async_nats::Message) -> Message {
    Message { subject: m.subject.to_string(), reply: m.reply.map(|r| r.to_string()), payload: m.payload }
}

struct NatsSubscription(async_nats::Subscriber);

impl futures::Stream for NatsSubscription {
    type Item = Message;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        self.0.poll_next_unpin(cx).map(|m| m.map(to_message))
    }
}

impl crate::Source for NatsSubscription {
    fn drain(self: std::pin::Pin<&mut Self>) -> futures::future::BoxFuture<'_, ()> {
        // UNSUB then PING: the client closes the subscription on the PONG,
        // so everything the server sent before the UNSUB is still delivered.
        Box::pin(async move {
            if let Err(e) = self.get_mut().0.drain().await {
                tracing::warn!("could not drain a subscription: {e}");
            }
        })
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        validate_subject(subject, false)?;
        self.check_size(&payload)?;
        self.client
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| BusError::Connection(format!("publish to {subject}: {e}")))
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        validate_subject(pattern, true)?;
        let sub = self
            .client
            .subscribe(pattern.to_string())
            .await
            .map_err(|e| BusError::Connection(format!("subscribe to {pattern}: {e}")))?;
        Ok(Subscription::new(NatsSubscription(sub)))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        validate_subject(pattern, true)?;
        validate_subject(group, false)?;
        let sub = self
            .client
            .queue_subscribe(pattern.to_string(), group.to_string())
            .await
            .map_err(|e| BusError::Connection(format!("subscribe to {pattern}: {e}")))?;
        Ok(Subscription::new(NatsSubscription(sub)))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message, BusError> {
        validate_subject(subject, false)?;
        self.check_size(&payload)?;
        let mut request = async_nats::Request::new().payload(payload);
        request.timeout = Some(Some(timeout));
        match self.client.send_request(subject.to_string(), request).await {
            Ok(m) => Ok(to_message(m)),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => BusError::NoResponders(subject.to_string()),
                async_nats::RequestErrorKind::TimedOut => {
                    BusError::Timeout { subject: subject.to_string(), timeout }
                }
                _ => BusError::Connection(format!("request to {subject}: {e}")),
            }),
        }
    }

    fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}
