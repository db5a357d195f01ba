//! RabbitMQ through lapin: durable quorum queues, publisher confirms, manual acks, bounded
//! prefetch, a delivery limit with a per-run dead-letter queue, and reconnection.
//!
//! Topology (all on the default exchange, routed by queue name):
//!
//! | queue | arguments |
//! | --- | --- |
//! | `herd.<run>.gen.<generator>`, `herd.<run>.judge.<judge>` | durable, `x-queue-type: quorum`, `x-delivery-limit: N`, `x-dead-letter-exchange: ""`, `x-dead-letter-routing-key: herd.<run>.dlq`, `x-expires: 86400000` (a day unused) |
//! | `herd.<run>.dlq` | durable, `x-queue-type: quorum` |
//!
//! A job reaches the dead-letter queue in one of two ways:
//! - the broker moves it there once it was given back (nack, or its consumer died) more
//!   than N times; RabbitMQ records `x-first-death-reason: delivery_limit` and the source
//!   queue (`x-first-death-queue`);
//! - a worker that knows the job cannot succeed calls [`crate::Acker::dead_letter`]: the job
//!   is published to the DLQ with the header `x-herd-reason` (and `x-herd-queue`), and
//!   acknowledged once the broker confirmed that publish. We publish rather than
//!   `reject(requeue=false)` because the broker's dead-lettering records only "rejected",
//!   not why.
//!
//! All processes that declare a queue must agree on its arguments (RabbitMQ refuses a
//! redeclaration with different ones), so the delivery limit is a run-wide setting.
//!
//! RabbitMQ closes a channel whose delivery stays unacknowledged past `consumer_timeout`
//! (30 min by default). Workers keep deliveries short: prefetch is what one batch can
//! hold, and each job is acknowledged as soon as its result is stored, not at the end of
//! the batch. Should the broker close the channel anyway, the consumer reconnects and the
//! unacknowledged jobs are redelivered (with the redelivered flag set).

use std::collections::HashSet;

/// `x-expires` of the work queues: a day unused. Every role declares the same arguments.
pub const WORK_QUEUE_EXPIRY_MS: i32 = 24 * 60 * 60 * 1000;
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herd_core::redact::redact_url;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backoff::Backoff;
use crate::{
    Acker, AckerInner, ConsumerInner, DeadLetterInfo, JobConsumer, JobQueue, QueueError, QueueName,
    QueueStats, RawDelivery, DEFAULT_DELIVERY_LIMIT, REASON_HEADER, SOURCE_QUEUE_HEADER,
};

/// How one TCP+AMQP handshake may take before it counts as a failed attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the broker and how the queues behave.
#[derive(Clone)]
pub struct RabbitConfig {
    /// `amqp://user@host:5672/%2f` or `amqps://…` (TLS through rustls). The password may be
    /// in the URL or, better, in [`RabbitConfig::password`].
    pub url: String,
    /// Overrides the URL's password (read it from an env var or a mounted file).
    pub password: Option<String>,
    /// A job given back more than this many times goes to the dead-letter queue.
    pub delivery_limit: u32,
    /// How long to keep reconnecting to an unreachable broker before giving up.
    pub reconnect_deadline: Duration,
    /// PEM file of the CA that signed the broker's certificate, for `amqps://` with a
    /// private CA (the system's roots are used otherwise).
    pub tls_ca_file: Option<PathBuf>,
    /// Shown in `rabbitmqctl list_connections` / the management UI.
    pub connection_name: String,
}

impl RabbitConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            reconnect_deadline: Duration::from_secs(300),
            tls_ca_file: None,
            connection_name: format!("herd pid {}", std::process::id()),
        }
    }
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("delivery_limit", &self.delivery_limit)
            .field("reconnect_deadline", &self.reconnect_deadline)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// A handle on a RabbitMQ broker; clones share one publishing connection. Each consumer
/// opens its own connection, so a worker's prefetch and reconnection are its own.
#[derive(Clone)]
pub struct RabbitQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

struct Shared {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    /// `scheme://user@host:port/vhost`: what logs and errors show.
    endpoint: String,
    delivery_limit: u32,
    reconnect_deadline: Duration,
    connection_name: String,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// The publishing connection: one channel in confirm mode, and the queues it declared.
struct Link {
    connection: Connection,
    channel: Channel,
    declared: HashSet<QueueName>,
}

/// How a failed broker operation is handled.
enum Failure {
    /// The connection or channel broke: reconnect with backoff and try again.
    Reconnect(String),
    NotFound,
    AccessRefused,
    /// Reconnecting does not help.
    Fatal(String),
}

fn classify(e: &lapin::Error) -> Failure {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let message = amqp.get_message().as_str();
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Failure::AccessRefused,
                _ if message.contains("ACCESS_REFUSED") => Failure::AccessRefused,
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Failure::NotFound,
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                    Failure::Fatal(e.to_string())
                }
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Failure::Fatal(e.to_string()),
                // CONNECTION_FORCED (broker stopping), INTERNAL_ERROR, a quorum queue not yet
                // elected after a restart, …: worth another attempt.
                _ => Failure::Reconnect(e.to_string()),
            }
        }
        ErrorKind::IOError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => Failure::Reconnect(e.to_string()),
        _ => Failure::Fatal(e.to_string()),
    }
}

/// What the TLS handshake said when it refused the broker's certificate (an unknown CA,
/// a name that does not match, an expired certificate). Waiting does not fix that.
fn tls_failure(e: &lapin::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut texts = Vec::new();
    while let Some(error) = source {
        texts.push(error.to_string());
        source = error.source();
    }
    texts.into_iter().rev().find(|t| t.contains("certificate"))
}

impl RabbitQueue {
    /// Parses the URL and connects (retrying an unreachable broker up to the reconnect
    /// deadline). Refused credentials fail at once with [`QueueError::AccessRefused`], a
    /// broker certificate the TLS handshake refuses with [`QueueError::Tls`].
    pub async fn connect(config: RabbitConfig) -> Result<Self, QueueError> {
        let endpoint_hint = redact_url(&config.url);
        let mut uri: AMQPUri =
            config.url.parse().map_err(|reason: String| QueueError::InvalidUrl {
                url: endpoint_hint.clone(),
                reason: redact_reason(&reason, &config),
            })?;
        if let Some(password) = &config.password {
            uri.authority.userinfo.password = password.clone();
        }
        let mut tls = OwnedTLSConfig::default();
        if let Some(path) = &config.tls_ca_file {
            let pem = std::fs::read_to_string(path).map_err(|source| QueueError::TlsCaFile {
                path: path.display().to_string(),
                source,
            })?;
            tls.cert_chain = Some(pem);
        }
        let scheme = match uri.scheme {
            AMQPScheme::AMQP => "amqp",
            AMQPScheme::AMQPS => "amqps",
        };
        let endpoint = format!(
            "{scheme}://{}@{}:{}/{}",
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port,
            uri.vhost.replace('/', "%2f")
        );
        let queue = Self {
            shared: Arc::new(Shared {
                uri,
                tls,
                endpoint,
                delivery_limit: config.delivery_limit,
                reconnect_deadline: config.reconnect_deadline,
                connection_name: config.connection_name,
                link: tokio::sync::Mutex::new(None),
            }),
        };
        let link = queue.open_link(&mut queue.backoff()).await?;
        *queue.shared.link.lock().await = Some(link);
        Ok(queue)
    }

    /// The broker as logs show it: `scheme://user@host:port/vhost`, no password.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.shared.reconnect_deadline)
    }

    fn access_refused(&self) -> QueueError {
        QueueError::AccessRefused {
            user: self.shared.uri.authority.userinfo.username.clone(),
            host: self.shared.uri.authority.host.clone(),
            port: self.shared.uri.authority.port,
        }
    }

    fn unreachable(&self, backoff: &Backoff, last_error: String) -> QueueError {
        QueueError::Unreachable {
            endpoint: self.shared.endpoint.clone(),
            waited: backoff.elapsed(),
            last_error,
        }
    }

    fn broker_error(
        &self,
        queue: &QueueName,
        operation: &'static str,
        message: String,
    ) -> QueueError {
        QueueError::Broker {
            endpoint: self.shared.endpoint.clone(),
            queue: queue.to_string(),
            operation,
            message,
        }
    }

    /// Waits before another attempt, or gives up with `Unreachable` past the deadline.
    async fn retry_after(
        &self,
        backoff: &mut Backoff,
        what: &str,
        error: String,
    ) -> Result<(), QueueError> {
        tracing::warn!(endpoint = %self.shared.endpoint, %error, "RabbitMQ {what} failed; retrying");
        backoff.wait().await.map_err(|_| self.unreachable(backoff, error))
    }

    /// One connection, retried with backoff while the broker is unreachable.
    async fn open_connection(&self, backoff: &mut Backoff) -> Result<Connection, QueueError> {
        loop {
            let properties = ConnectionProperties::default()
                .with_connection_name(self.shared.connection_name.clone().into());
            let runtime = lapin::runtime::default_runtime().map_err(|e| {
                self.broker_error(&QueueName::dead_letters("-"), "connect", e.to_string())
            })?;
            let attempt = Connection::connect_uri_with_config(
                self.shared.uri.clone(),
                properties,
                self.shared.tls.clone(),
                runtime,
            );
            let error = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(e)) if tls_failure(&e).is_some() => {
                    return Err(QueueError::Tls {
                        endpoint: self.shared.endpoint.clone(),
                        message: tls_failure(&e).unwrap_or_default(),
                    })
                }
                Ok(Err(e)) => match classify(&e) {
                    Failure::AccessRefused => return Err(self.access_refused()),
                    Failure::Fatal(message) => {
                        return Err(QueueError::Unreachable {
                            endpoint: self.shared.endpoint.clone(),
                            waited: backoff.elapsed(),
                            last_error: message,
                        })
                    }
                    Failure::Reconnect(message) => message,
                    Failure::NotFound => e.to_string(),
                },
                Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            self.retry_after(backoff, "connection", error).await?;
        }
    }

    async fn open_link(&self, backoff: &mut Backoff) -> Result<Link, QueueError> {
        loop {
            let connection = self.open_connection(backoff).await?;
            let channel = async {
                let channel = connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                Ok::<_, lapin::Error>(channel)
            }
            .await;
            match channel {
                Ok(channel) => return Ok(Link { connection, channel, declared: HashSet::new() }),
                Err(e) => self.retry_after(backoff, "channel setup", e.to_string()).await?,
            }
        }
    }

    fn queue_arguments(&self, queue: &QueueName) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        if !queue.is_dead_letter_queue() {
            let limit = i32::try_from(self.shared.delivery_limit).unwrap_or(i32::MAX);
            args.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
            // The default exchange routes by queue name: no exchange to create or clean up.
            args.insert("x-dead-letter-exchange".into(), long_string(""));
            args.insert(
                "x-dead-letter-routing-key".into(),
                long_string(queue.dead_letter_queue().as_str()),
            );
            // A finished run's work queues go away by themselves once nothing has used them
            // for a day (no consumer, no declaration); the dead letters stay for inspection
            // until `herd coordinator --cleanup`.
            args.insert("x-expires".into(), AMQPValue::LongInt(WORK_QUEUE_EXPIRY_MS));
        }
        args
    }

    /// Declares the run's dead-letter queue, then `queue`.
    async fn declare_on(&self, channel: &Channel, queue: &QueueName) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let dlq = queue.dead_letter_queue();
        channel.queue_declare(dlq.as_str().into(), durable, self.queue_arguments(&dlq)).await?;
        if !queue.is_dead_letter_queue() {
            channel
                .queue_declare(queue.as_str().into(), durable, self.queue_arguments(queue))
                .await?;
        }
        Ok(())
    }

    /// Runs `operation` on a fresh channel of the shared connection, reconnecting as needed.
    async fn on_channel<R, F, Fut>(
        &self,
        queue: &QueueName,
        name: &'static str,
        operation: F,
    ) -> Result<R, QueueError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<R, lapin::Error>>,
    {
        let mut backoff = self.backoff();
        loop {
            let channel = {
                let mut link = self.shared.link.lock().await;
                if link.is_none() {
                    *link = Some(self.open_link(&mut backoff).await?);
                }
                let opened = link.as_ref().map(|l| l.connection.create_channel());
                match opened {
                    Some(future) => future.await,
                    None => continue,
                }
            };
            let result = match channel {
                Ok(channel) => {
                    let result = operation(channel.clone()).await;
                    if channel.status().connected() {
                        let _ = channel.close(200, "done".into()).await;
                    }
                    result
                }
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            match classify(&error) {
                Failure::NotFound => return Err(QueueError::NotFound { queue: queue.to_string() }),
                Failure::AccessRefused => return Err(self.access_refused()),
                Failure::Fatal(message) => return Err(self.broker_error(queue, name, message)),
                Failure::Reconnect(message) => {
                    *self.shared.link.lock().await = None;
                    self.retry_after(&mut backoff, name, message).await?;
                }
            }
        }
    }

    /// Publishes payloads with publisher confirms; what is not confirmed is published
    /// again after a reconnection.
    async fn publish_payloads(
        &self,
        queue: &QueueName,
        payloads: &[Vec<u8>],
        headers: Option<FieldTable>,
    ) -> Result<(), QueueError> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        let mut unconfirmed: Vec<usize> = (0..payloads.len()).collect();
        let mut backoff = self.backoff();
        loop {
            let mut guard = self.shared.link.lock().await;
            if guard.is_none() {
                *guard = Some(self.open_link(&mut backoff).await?);
            }
            let Some(link) = guard.as_mut() else { continue };
            let outcome =
                self.publish_on(link, queue, payloads, &properties, &mut unconfirmed).await;
            let message = match outcome {
                Ok(()) => return Ok(()),
                Err(PublishFailure::Nacked(n)) => format!("the broker nacked {n} publishes"),
                Err(PublishFailure::Lapin(e)) => match classify(&e) {
                    Failure::Reconnect(message) => message,
                    Failure::AccessRefused => return Err(self.access_refused()),
                    Failure::NotFound => e.to_string(),
                    Failure::Fatal(message) => {
                        return Err(self.broker_error(queue, "publish", message))
                    }
                },
            };
            *guard = None;
            drop(guard);
            self.retry_after(&mut backoff, "publish", message).await?;
        }
    }

    async fn publish_on(
        &self,
        link: &mut Link,
        queue: &QueueName,
        payloads: &[Vec<u8>],
        properties: &BasicProperties,
        unconfirmed: &mut Vec<usize>,
    ) -> Result<(), PublishFailure> {
        if !link.declared.contains(queue) {
            self.declare_on(&link.channel, queue).await?;
            link.declared.insert(queue.clone());
        }
        // Mandatory: a publish that no queue takes comes back instead of vanishing.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let mut confirms = Vec::with_capacity(unconfirmed.len());
        let mut send_error = None;
        for &i in unconfirmed.iter() {
            match link
                .channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    options,
                    &payloads[i],
                    properties.clone(),
                )
                .await
            {
                Ok(confirm) => confirms.push((i, confirm)),
                Err(e) => {
                    send_error = Some(e);
                    break;
                }
            }
        }
        let mut confirmed = HashSet::new();
        let mut nacked = 0;
        for (i, confirm) in confirms {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => {
                    confirmed.insert(i);
                }
                Ok(Confirmation::Ack(Some(_returned))) => {
                    // Unroutable: the queue vanished since we declared it.
                    link.declared.remove(queue);
                    nacked += 1;
                }
                Ok(_) => nacked += 1,
                Err(e) => {
                    send_error.get_or_insert(e);
                }
            }
        }
        unconfirmed.retain(|i| !confirmed.contains(i));
        match send_error {
            Some(e) => Err(PublishFailure::Lapin(e)),
            None if nacked > 0 => Err(PublishFailure::Nacked(nacked)),
            None => Ok(()),
        }
    }
}

enum PublishFailure {
    Lapin(lapin::Error),
    Nacked(usize),
}

impl From<lapin::Error> for PublishFailure {
    fn from(e: lapin::Error) -> Self {
        PublishFailure::Lapin(e)
    }
}

impl JobQueue for RabbitQueue {
    async fn declare(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.on_channel(queue, "declare", |channel| async move {
            self.declare_on(&channel, queue).await
        })
        .await
    }

    async fn publish<T: Serialize + Sync>(
        &self,
        queue: &QueueName,
        jobs: &[T],
    ) -> Result<(), QueueError> {
        let payloads = crate::serialize_jobs(queue, jobs)?;
        self.publish_payloads(queue, &payloads, None).await
    }

    async fn consume<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &QueueName,
        prefetch: u16,
    ) -> Result<JobConsumer<T>, QueueError> {
        let mut consumer = RabbitConsumer {
            queue: self.clone(),
            name: queue.clone(),
            prefetch: prefetch.max(1),
            session: None,
            failed: false,
        };
        // Open now, so that a wrong queue or broker shows up here rather than at `next`.
        consumer.session = Some(consumer.open_session(&mut self.backoff()).await?);
        Ok(JobConsumer {
            queue: queue.clone(),
            inner: ConsumerInner::Rabbit(Box::new(consumer)),
            held: Vec::new(),
            _job: PhantomData,
        })
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        self.on_channel(queue, "passive declare", |channel| async move {
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let q = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await?;
            Ok(QueueStats { messages: q.message_count(), consumers: q.consumer_count() })
        })
        .await
    }

    async fn delete(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.on_channel(queue, "delete", |channel| async move {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
        })
        .await?;
        if let Some(link) = self.shared.link.lock().await.as_mut() {
            link.declared.remove(queue);
        }
        Ok(())
    }

    async fn purge(&self, queue: &QueueName) -> Result<u32, QueueError> {
        self.on_channel(queue, "purge", |channel| async move {
            channel.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()).await
        })
        .await
    }
}

static CONSUMER_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A consumer with its own connection; it reconnects, re-declares and resumes by itself.
pub(crate) struct RabbitConsumer {
    queue: RabbitQueue,
    name: QueueName,
    prefetch: u16,
    session: Option<Session>,
    /// A fatal error was reported: the stream has ended.
    failed: bool,
}

struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl RabbitConsumer {
    async fn open_session(&self, backoff: &mut Backoff) -> Result<Session, QueueError> {
        loop {
            let connection = self.queue.open_connection(backoff).await?;
            let setup = async {
                let channel = connection.create_channel().await?;
                self.queue.declare_on(&channel, &self.name).await?;
                channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
                let tag = format!(
                    "herd.{}.{}",
                    std::process::id(),
                    CONSUMER_SEQUENCE.fetch_add(1, Ordering::Relaxed)
                );
                let consumer = channel
                    .basic_consume(
                        self.name.as_str().into(),
                        ShortString::from(tag),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((channel, consumer))
            }
            .await;
            match setup {
                Ok((channel, consumer)) => return Ok(Session { connection, channel, consumer }),
                Err(e) => match classify(&e) {
                    Failure::Reconnect(message) => {
                        self.queue.retry_after(backoff, "consumer setup", message).await?
                    }
                    Failure::AccessRefused => return Err(self.queue.access_refused()),
                    Failure::NotFound => {
                        return Err(QueueError::NotFound { queue: self.name.to_string() })
                    }
                    Failure::Fatal(message) => {
                        return Err(self.queue.broker_error(&self.name, "consume", message))
                    }
                },
            }
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Result<RawDelivery, QueueError>> {
        let mut backoff: Option<Backoff> = None;
        loop {
            if self.failed {
                return None;
            }
            let Some(session) = self.session.as_mut() else {
                let backoff = backoff.get_or_insert_with(|| self.queue.backoff());
                match self.open_session(backoff).await {
                    Ok(session) => {
                        tracing::info!(queue = %self.name, "consumer resumed");
                        self.session = Some(session);
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match session.consumer.next().await {
                Some(Ok(delivery)) => return Some(Ok(self.raw_delivery(delivery))),
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.name, error = %e, "consumer lost its connection; reconnecting");
                }
                None if session.connection.status().connected()
                    && session.channel.status().connected() =>
                {
                    // The broker cancelled the consumer (queue deleted): the stream ends.
                    return None;
                }
                None => tracing::warn!(queue = %self.name, "consumer stream closed; reconnecting"),
            }
            self.session = None;
            let backoff = backoff.get_or_insert_with(|| self.queue.backoff());
            if backoff.wait().await.is_err() {
                self.failed = true;
                return Some(Err(self.queue.unreachable(backoff, "consumer kept failing".into())));
            }
        }
    }

    fn raw_delivery(&self, delivery: lapin::message::Delivery) -> RawDelivery {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let delivery_count = header_u32(&headers, "x-delivery-count").unwrap_or(0);
        let dead_letter_info = dead_letter_info(&headers);
        RawDelivery {
            payload: delivery.data.clone(),
            redelivered: delivery.redelivered,
            delivery_count,
            dead_letter_info,
            acker: Acker {
                inner: AckerInner::Rabbit(RabbitAcker {
                    acker: Some(delivery.acker),
                    queue: self.queue.clone(),
                    name: self.name.clone(),
                    payload: delivery.data,
                }),
            },
        }
    }

    pub(crate) async fn close(mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.connection.close(200, "consumer closed".into()).await;
        }
    }
}

pub(crate) struct RabbitAcker {
    /// `None` once settled.
    acker: Option<lapin::Acker>,
    queue: RabbitQueue,
    name: QueueName,
    payload: Vec<u8>,
}

impl std::fmt::Debug for RabbitAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitAcker").field("queue", &self.name).finish_non_exhaustive()
    }
}

impl RabbitAcker {
    fn stale(&self) -> QueueError {
        QueueError::StaleDelivery { queue: self.name.to_string() }
    }

    pub(crate) async fn ack(mut self) -> Result<(), QueueError> {
        let Some(acker) = self.acker.take() else { return Ok(()) };
        match acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            _ => Err(self.stale()),
        }
    }

    pub(crate) async fn nack(mut self) -> Result<(), QueueError> {
        let Some(acker) = self.acker.take() else { return Ok(()) };
        match acker.nack(BasicNackOptions { requeue: true, multiple: false }).await {
            Ok(true) => Ok(()),
            _ => Err(self.stale()),
        }
    }

    pub(crate) async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), long_string(reason));
        headers.insert(SOURCE_QUEUE_HEADER.into(), long_string(self.name.as_str()));
        // On failure `self` drops unsettled, which gives the job back: it is never lost.
        self.queue
            .publish_payloads(
                &self.name.dead_letter_queue(),
                std::slice::from_ref(&self.payload),
                Some(headers),
            )
            .await?;
        self.ack().await
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        // Dropped unsettled: give it back now instead of holding a prefetch slot until the
        // channel closes (the same semantics as the in-process queue).
        if let Some(acker) = self.acker.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
                });
            }
        }
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
    value_str(headers.inner().get(key)?)
}

fn value_str(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let n: i64 = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// Why a message is in a dead-letter queue: the worker's reason, else the broker's.
fn dead_letter_info(headers: &FieldTable) -> Option<DeadLetterInfo> {
    if let Some(reason) = header_str(headers, REASON_HEADER) {
        let queue = header_str(headers, SOURCE_QUEUE_HEADER).unwrap_or_default();
        return Some(DeadLetterInfo { reason, queue });
    }
    if let Some(reason) = header_str(headers, "x-first-death-reason") {
        let queue = header_str(headers, "x-first-death-queue").unwrap_or_default();
        return Some(DeadLetterInfo { reason, queue });
    }
    // Older brokers only write the x-death array (newest death first).
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else { return None };
    Some(DeadLetterInfo {
        reason: header_str(death, "reason").unwrap_or_default(),
        queue: header_str(death, "queue").unwrap_or_default(),
    })
}

/// lapin's URL parse errors may quote the URL; never let the password through.
fn redact_reason(reason: &str, config: &RabbitConfig) -> String {
    let mut reason = reason.replace(&config.url, &redact_url(&config.url));
    if let Some(password) = config.password.as_deref().filter(|p| !p.is_empty()) {
        reason = reason.replace(password, "<redacted>");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_when_shown() {
        let config = RabbitConfig {
            password: Some("hunter2".into()),
            ..RabbitConfig::new("amqp://u:pw@h/")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains(":pw@"), "{shown}");
    }

    #[test]
    fn dead_letter_reason_prefers_the_workers_header() {
        let mut headers = FieldTable::default();
        headers.insert("x-first-death-reason".into(), long_string("rejected"));
        headers.insert(REASON_HEADER.into(), long_string("model cannot load"));
        headers.insert(SOURCE_QUEUE_HEADER.into(), long_string("herd.r.gen.m"));
        let info = dead_letter_info(&headers).unwrap();
        assert_eq!(
            (info.reason.as_str(), info.queue.as_str()),
            ("model cannot load", "herd.r.gen.m")
        );
    }
}
