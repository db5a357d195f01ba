//! The server's Prometheus metrics (names and meanings in serve/README.md).

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Seconds from a request's arrival to its last token.
const REQUEST_SECONDS_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0];
/// Seconds from a request's arrival to its first generated token.
const FIRST_TOKEN_SECONDS_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Cheap to clone; clones share the registry.
#[derive(Clone)]
pub struct ServeMetrics {
    registry: Registry,
    /// `herd_serve_requests_total{endpoint, status}`
    pub requests: IntCounterVec,
    /// `herd_serve_request_seconds{endpoint}`: arrival to the last byte of the answer.
    pub request_seconds: HistogramVec,
    /// `herd_serve_time_to_first_token_seconds`
    pub time_to_first_token: Histogram,
    /// `herd_serve_generated_tokens_total`: rate() is tokens per second.
    pub generated_tokens: IntCounter,
    /// `herd_serve_prompt_tokens_total`
    pub prompt_tokens: IntCounter,
    /// `herd_serve_sequences_waiting`: submitted, no token yet (queued or in prefill).
    pub waiting: IntGauge,
    /// `herd_serve_sequences_running`: generating.
    pub running: IntGauge,
    /// `herd_serve_cancelled_total`: sequences stopped because their client went away.
    pub cancelled: IntCounter,
    /// `herd_serve_kv_cache_usage_ratio`: the paged cache's blocks in use (0 without one).
    pub kv_cache_usage: Gauge,
    /// `herd_serve_model_loaded`: 1 once the model serves requests.
    pub model_loaded: IntGauge,
}

impl ServeMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "herd_serve_requests_total",
                "HTTP requests answered, by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "herd_serve_request_seconds",
                "Seconds from arrival to the end of the answer",
            )
            .buckets(REQUEST_SECONDS_BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        let time_to_first_token = Histogram::with_opts(
            HistogramOpts::new(
                "herd_serve_time_to_first_token_seconds",
                "Seconds from arrival to the first generated token",
            )
            .buckets(FIRST_TOKEN_SECONDS_BUCKETS.to_vec()),
        )?;
        let generated_tokens =
            IntCounter::new("herd_serve_generated_tokens_total", "Tokens generated")?;
        let prompt_tokens = IntCounter::new(
            "herd_serve_prompt_tokens_total",
            "Prompt tokens of finished sequences",
        )?;
        let waiting =
            IntGauge::new("herd_serve_sequences_waiting", "Sequences submitted with no token yet")?;
        let running = IntGauge::new("herd_serve_sequences_running", "Sequences generating")?;
        let cancelled =
            IntCounter::new("herd_serve_cancelled_total", "Sequences cancelled by a gone client")?;
        let kv_cache_usage =
            Gauge::new("herd_serve_kv_cache_usage_ratio", "Share of the paged KV cache in use")?;
        let model_loaded = IntGauge::new("herd_serve_model_loaded", "1 once the model is loaded")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(time_to_first_token.clone()))?;
        registry.register(Box::new(generated_tokens.clone()))?;
        registry.register(Box::new(prompt_tokens.clone()))?;
        registry.register(Box::new(waiting.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(cancelled.clone()))?;
        registry.register(Box::new(kv_cache_usage.clone()))?;
        registry.register(Box::new(model_loaded.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            time_to_first_token,
            generated_tokens,
            prompt_tokens,
            waiting,
            running,
            cancelled,
            kv_cache_usage,
            model_loaded,
        })
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}
