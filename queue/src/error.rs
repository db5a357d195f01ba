use std::time::Duration;

/// What can go wrong with the job transport. Messages name the queue and the broker
/// (user, host and port; never the password).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker rejected the login: retrying cannot help, so this fails at once.
    #[error("RabbitMQ refused the credentials for user {user} at {host}:{port}")]
    AccessRefused { user: String, host: String, port: u16 },

    /// The broker stayed unreachable for longer than the reconnect deadline.
    #[error("RabbitMQ at {endpoint} stayed unreachable for {waited:?} (reconnect deadline); last error: {last_error}")]
    Unreachable { endpoint: String, waited: Duration, last_error: String },

    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The broker's certificate was refused: retrying cannot help, so this fails at once.
    #[error(
        "TLS handshake with RabbitMQ at {endpoint} failed, its certificate was not accepted: {message}; \
         if a private CA signed it, pass that CA's PEM file as the TLS CA file (--amqp-ca-file, HERD_AMQP_CA_FILE)"
    )]
    Tls { endpoint: String, message: String },

    #[error("cannot read the TLS CA file {path}: {source}")]
    TlsCaFile { path: String, source: std::io::Error },

    /// A broker operation on one queue failed with an error that reconnecting does not fix
    /// (for example a queue declared elsewhere with other arguments).
    #[error("{operation} on queue {queue} at {endpoint} failed: {message}")]
    Broker { endpoint: String, queue: String, operation: &'static str, message: String },

    #[error("queue {queue} does not exist")]
    NotFound { queue: String },

    /// A job could not be serialised for publishing.
    #[error("cannot serialise a job for queue {queue}: {source}")]
    Serialize { queue: String, source: serde_json::Error },

    /// Not fatal: a message on `queue` was not a valid job; it is already in the run's
    /// dead-letter queue with this reason, and the consumer goes on.
    #[error("a message on queue {queue} is not a valid job and was dead-lettered: {reason}")]
    Malformed { queue: String, reason: String },

    /// Not fatal: a message in the dead-letter queue `queue` is not a valid job (`reason`).
    /// The consumer holds it unacknowledged, so it returns to the queue for inspection when
    /// the consumer stops; `payload` is its text (lossy UTF-8), `dead_letter_info` why and
    /// from where it was dead-lettered.
    #[error("a dead letter in queue {queue} is not a valid job and is kept there: {reason}")]
    MalformedDeadLetter {
        queue: String,
        reason: String,
        payload: String,
        dead_letter_info: Option<crate::DeadLetterInfo>,
    },

    /// The delivery's channel closed before the ack/nack reached the broker; the broker
    /// redelivers the job (results are stored under idempotent keys, so that is harmless).
    #[error(
        "the delivery from queue {queue} can no longer be settled (its channel closed); the broker will redeliver it"
    )]
    StaleDelivery { queue: String },

    /// The in-process queue was shut down.
    #[error("the in-process queue is closed")]
    Closed,
}

impl QueueError {
    /// Whether a consumer stream ends after this error. `Malformed`, `MalformedDeadLetter`
    /// and `StaleDelivery` are reports; everything else means the caller must stop or
    /// reconnect itself.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            QueueError::Malformed { .. }
                | QueueError::MalformedDeadLetter { .. }
                | QueueError::StaleDelivery { .. }
        )
    }
}
