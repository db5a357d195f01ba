//! `herd serve`: an OpenAI-compatible HTTP server over herd's engine (README.md).
//!
//! Every request joins one continuous batch on the engine thread ([`scheduler`]); the HTTP
//! side ([`Server::router`]) checks bodies field by field, answers in OpenAI's shapes
//! (whole or as server-sent events) and keeps Prometheus metrics. The server listens
//! before the model is loaded: until [`Server::model_loaded`], generation answers 503.

mod error;
mod http;
mod metrics;
mod protocol;
mod scheduler;

use std::sync::Arc;

use herd_engine::{BatchOptions, Model};

pub use error::ApiError;
pub use metrics::ServeMetrics;

/// The key clients must send (`Authorization: Bearer <key>`). Its `Debug` hides it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// `None` for an empty key (surrounding whitespace, e.g. a file's newline, is dropped).
    pub fn new(key: &str) -> Option<Self> {
        let key = key.trim();
        (!key.is_empty()).then(|| Self(key.to_string()))
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The server: its routes, and the engine once loaded.
#[derive(Clone)]
pub struct Server {
    state: Arc<http::AppState>,
}

impl Server {
    /// A server answering for the model called `name` (the `model` field clients send).
    pub fn new(name: &str, api_key: Option<ApiKey>) -> Result<Self, prometheus::Error> {
        let metrics = ServeMetrics::new()?;
        Ok(Self { state: Arc::new(http::AppState::new(name.to_string(), api_key, metrics)) })
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    pub fn metrics(&self) -> &ServeMetrics {
        &self.state.metrics
    }

    /// Starts serving `model` with `batch` as the engine's limits.
    pub fn model_loaded(&self, model: Arc<Model>, batch: BatchOptions) {
        let engine = scheduler::Scheduler::start(model, batch, self.state.metrics.clone());
        if self.state.engine.set(engine).is_ok() {
            self.state.metrics.model_loaded.set(1);
        }
    }

    /// Stops taking generation requests and waits for the engine to finish the running ones.
    pub fn shutdown(&self) {
        if let Some(engine) = self.state.engine.get() {
            engine.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiKey;

    #[test]
    fn the_key_is_compared_exactly_and_never_printed() {
        let key = ApiKey::new(" s3cret\n").unwrap();
        assert!(key.matches("s3cret"));
        assert!(!key.matches("s3cre"));
        assert!(!key.matches("s3cret!"));
        assert!(!key.matches(""));
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(ApiKey::new("  \n").is_none());
    }
}
