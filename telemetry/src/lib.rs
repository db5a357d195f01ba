//! Prometheus metrics of every herd role, and the HTTP endpoint that serves them.
//!
//! Each process makes one [`Metrics`] (its own registry, nothing global) and serves it with
//! [`MetricsServer::start`]: `GET /metrics` in the Prometheus text format, `GET /healthz`.
//! The names, labels and buckets are listed in `telemetry/README.md`.

mod server;

use herd_core::jobs::{GenerationResult, JudgeResult};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use server::{Health, MetricsServer};

/// Seconds to generate one answer: from tens of milliseconds (a short answer on a GPU) to
/// ten minutes (a long answer from a big model on a CPU).
pub const GENERATION_SECONDS_BUCKETS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0];
/// Seconds for one verdict: a single forward pass (logprob mode) up to a long ranking.
pub const JUDGE_SECONDS_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Sequences in one batch.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot register metric {name}: {source}")]
    Register { name: String, source: prometheus::Error },
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// The metrics of one herd process. Cheap to clone; clones share the registry.
///
/// Label values: `run` is the run id; `role` is `coordinator`, `worker`, `judge-worker` or
/// `run` (all-in-one); `queue` is a queue name (`herd.<run>.gen.<generator>`);
/// `generator`, `judge` and `model` are names from the run's configuration; `phase` is
/// `generation` or `judging`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `herd_jobs_published_total{run, queue}`
    pub jobs_published: IntCounterVec,
    /// `herd_jobs_completed_total{run, role, queue}`: acknowledged after the result was stored.
    pub jobs_completed: IntCounterVec,
    /// `herd_jobs_failed_total{run, role, queue}`: given back (nack) after a failure.
    pub jobs_failed: IntCounterVec,
    /// `herd_jobs_redelivered_total{run, role, queue}`: deliveries with the redelivered flag.
    pub jobs_redelivered: IntCounterVec,
    /// `herd_jobs_dead_lettered_total{run, role, queue}`: sent to the dead-letter queue.
    pub jobs_dead_lettered: IntCounterVec,
    /// `herd_results_rejected_total{run, kind}`: stored results (`output`, `annotation`) the
    /// coordinator found not to match the run's plan and moved aside.
    pub results_rejected: IntCounterVec,
    /// `herd_examples_generated_total{run, generator}`: rate() is examples per second.
    pub examples_generated: IntCounterVec,
    /// `herd_output_tokens_total{run, generator}`: rate() is tokens per second.
    pub output_tokens: IntCounterVec,
    /// `herd_prompt_tokens_total{run, generator}`: prompt tokens of the generation jobs.
    pub prompt_tokens: IntCounterVec,
    /// `herd_judge_prompt_tokens_total{run, judge}`: prompt tokens the judge read.
    pub judge_prompt_tokens: IntCounterVec,
    /// `herd_annotations_total{run, judge, generator}`: verdicts stored.
    pub annotations: IntCounterVec,
    /// `herd_generation_duration_seconds{run, generator}`: per answer.
    pub generation_seconds: HistogramVec,
    /// `herd_judge_duration_seconds{run, judge}`: per verdict.
    pub judge_seconds: HistogramVec,
    /// `herd_batch_size{role, model}`: sequences per batch.
    pub batch_size: HistogramVec,
    /// `herd_queue_depth{run, queue}`: ready jobs, as the coordinator sees them.
    pub queue_depth: IntGaugeVec,
    /// `herd_queue_consumers{run, queue}`
    pub queue_consumers: IntGaugeVec,
    /// `herd_run_jobs_done{run, phase}`
    pub run_jobs_done: IntGaugeVec,
    /// `herd_run_jobs_expected{run, phase}`
    pub run_jobs_expected: IntGaugeVec,
    /// `herd_worker_info{role, model, worker, version}`: always 1.
    pub worker_info: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every herd metric in a fresh registry.
    pub fn new() -> Result<Self, TelemetryError> {
        let registry = Registry::new();
        let r = &registry;
        Ok(Self {
            jobs_published: counter(
                r,
                "herd_jobs_published_total",
                "Jobs published to a queue (confirmed by the broker).",
                &["run", "queue"],
            )?,
            jobs_completed: counter(
                r,
                "herd_jobs_completed_total",
                "Jobs acknowledged after their result was stored.",
                &["run", "role", "queue"],
            )?,
            jobs_failed: counter(
                r,
                "herd_jobs_failed_total",
                "Jobs given back to their queue after a failure.",
                &["run", "role", "queue"],
            )?,
            jobs_redelivered: counter(
                r,
                "herd_jobs_redelivered_total",
                "Deliveries the broker marked as redelivered.",
                &["run", "role", "queue"],
            )?,
            jobs_dead_lettered: counter(
                r,
                "herd_jobs_dead_lettered_total",
                "Jobs sent to the run's dead-letter queue.",
                &["run", "role", "queue"],
            )?,
            results_rejected: counter(
                r,
                "herd_results_rejected_total",
                "Stored results that did not match the run's plan, moved aside by the coordinator.",
                &["run", "kind"],
            )?,
            examples_generated: counter(
                r,
                "herd_examples_generated_total",
                "Answers generated and stored.",
                &["run", "generator"],
            )?,
            output_tokens: counter(
                r,
                "herd_output_tokens_total",
                "Tokens generated in stored answers.",
                &["run", "generator"],
            )?,
            prompt_tokens: counter(
                r,
                "herd_prompt_tokens_total",
                "Prompt tokens of generated answers.",
                &["run", "generator"],
            )?,
            judge_prompt_tokens: counter(
                r,
                "herd_judge_prompt_tokens_total",
                "Prompt tokens read by the judge.",
                &["run", "judge"],
            )?,
            annotations: counter(
                r,
                "herd_annotations_total",
                "Verdicts stored.",
                &["run", "judge", "generator"],
            )?,
            generation_seconds: histogram(
                r,
                "herd_generation_duration_seconds",
                "Seconds from admission to the last token of one answer.",
                &["run", "generator"],
                GENERATION_SECONDS_BUCKETS,
            )?,
            judge_seconds: histogram(
                r,
                "herd_judge_duration_seconds",
                "Seconds to judge one answer.",
                &["run", "judge"],
                JUDGE_SECONDS_BUCKETS,
            )?,
            batch_size: histogram(
                r,
                "herd_batch_size",
                "Sequences in one inference batch.",
                &["role", "model"],
                BATCH_SIZE_BUCKETS,
            )?,
            queue_depth: gauge(
                r,
                "herd_queue_depth",
                "Jobs ready in a queue (not counting unacknowledged ones).",
                &["run", "queue"],
            )?,
            queue_consumers: gauge(
                r,
                "herd_queue_consumers",
                "Consumers attached to a queue.",
                &["run", "queue"],
            )?,
            run_jobs_done: gauge(
                r,
                "herd_run_jobs_done",
                "Jobs of a run's phase whose result is stored.",
                &["run", "phase"],
            )?,
            run_jobs_expected: gauge(
                r,
                "herd_run_jobs_expected",
                "Jobs a run's phase needs in all.",
                &["run", "phase"],
            )?,
            worker_info: gauge(
                r,
                "herd_worker_info",
                "Constant 1, labelled with what this process is.",
                &["role", "model", "worker", "version"],
            )?,
            registry,
        })
    }

    /// The registry, to add a role's own metrics next to these.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One stored answer: its generator's examples, tokens and latency.
    pub fn record_output(&self, result: &GenerationResult) {
        let labels = [result.run_id.as_str(), result.generator.as_str()];
        self.examples_generated.with_label_values(&labels).inc();
        self.output_tokens.with_label_values(&labels).inc_by(result.output_tokens as u64);
        self.prompt_tokens.with_label_values(&labels).inc_by(result.prompt_tokens as u64);
        self.generation_seconds.with_label_values(&labels).observe(result.seconds);
    }

    /// One stored verdict: the judge's prompt tokens, latency and verdict count.
    pub fn record_annotation(&self, result: &JudgeResult) {
        let labels = [result.run_id.as_str(), result.judge.as_str()];
        self.judge_prompt_tokens.with_label_values(&labels).inc_by(result.prompt_tokens as u64);
        self.judge_seconds.with_label_values(&labels).observe(result.seconds);
        self.annotations
            .with_label_values(&[&result.run_id, &result.judge, &result.generator])
            .inc();
    }

    /// Exports a consumer's job counters for one queue at 0 (`herd_jobs_completed_total`,
    /// `_failed_total`, `_redelivered_total`, `_dead_lettered_total` with these labels), so
    /// that dashboards and `rate()`/`increase()` see a series before the first failure
    /// instead of "no data". Counting starts from what is already there.
    pub fn init_job_counters(&self, run: &str, role: &str, queue: &str) {
        let labels = [run, role, queue];
        for counter in [
            &self.jobs_completed,
            &self.jobs_failed,
            &self.jobs_redelivered,
            &self.jobs_dead_lettered,
        ] {
            counter.with_label_values(&labels);
        }
    }

    /// Exports a generator's answer counters at 0 (`herd_examples_generated_total`,
    /// `herd_output_tokens_total`, `herd_prompt_tokens_total`), as [`init_job_counters`](Self::init_job_counters).
    pub fn init_generation_counters(&self, run: &str, generator: &str) {
        let labels = [run, generator];
        for counter in [&self.examples_generated, &self.output_tokens, &self.prompt_tokens] {
            counter.with_label_values(&labels);
        }
    }

    /// Sets `herd_worker_info{role, model, worker, version}` to 1 (version: this build's).
    pub fn set_worker_info(&self, role: &str, model: &str, worker: &str) {
        self.worker_info
            .with_label_values(&[role, model, worker, env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Everything registered, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

pub(crate) fn render(registry: &Registry) -> String {
    // Encoding what the registry gathered cannot fail for the text format's metric types.
    TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_default()
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, TelemetryError> {
    register(r, name, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, TelemetryError> {
    register(r, name, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, TelemetryError> {
    register(
        r,
        name,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels),
    )
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    collector: prometheus::Result<C>,
) -> Result<C, TelemetryError> {
    let err = |source| TelemetryError::Register { name: name.to_string(), source };
    let collector = collector.map_err(err)?;
    registry.register(Box::new(collector.clone())).map_err(err)?;
    Ok(collector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_follows_the_naming_conventions() {
        let metrics = Metrics::new().unwrap();
        metrics.jobs_published.with_label_values(&["r", "q"]).inc();
        metrics.run_jobs_expected.with_label_values(&["r", "generation"]).set(805);
        metrics.generation_seconds.with_label_values(&["r", "g"]).observe(1.5);
        let families = metrics.registry().gather();
        for family in &families {
            let name = family.name();
            assert!(name.starts_with("herd_"), "{name}");
            let is_counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(name.ends_with("_total"), is_counter, "{name}: only counters end in _total");
        }
        assert!(metrics
            .render()
            .contains("herd_run_jobs_expected{phase=\"generation\",run=\"r\"} 805"));
    }

    #[test]
    fn recording_a_result_feeds_the_rate_counters_and_latency() {
        let metrics = Metrics::new().unwrap();
        let output = GenerationResult {
            run_id: "r".into(),
            generator: "g".into(),
            index: 0,
            instruction: "i".into(),
            dataset: "d".into(),
            output: "o".into(),
            prompt_tokens: 10,
            output_tokens: 25,
            seconds: 3.0,
            finish_reason: herd_core::jobs::FinishReason::Eos,
            worker: "w".into(),
            stored: None,
        };
        metrics.record_output(&output);
        metrics.record_output(&output);
        assert_eq!(metrics.examples_generated.with_label_values(&["r", "g"]).get(), 2);
        assert_eq!(metrics.output_tokens.with_label_values(&["r", "g"]).get(), 50);
        assert_eq!(metrics.generation_seconds.with_label_values(&["r", "g"]).get_sample_count(), 2);
        metrics.set_worker_info("worker", "g", "host-1");
        assert!(metrics.render().contains(
            "herd_worker_info{model=\"g\",role=\"worker\",version=\"0.1.0\",worker=\"host-1\"} 1"
        ));
    }

    #[test]
    fn initialised_counters_are_exported_at_zero() {
        let metrics = Metrics::new().unwrap();
        metrics.init_job_counters("r", "worker", "herd.r.gen.g");
        metrics.init_generation_counters("r", "g");
        let text = metrics.render();
        for family in ["completed", "failed", "redelivered", "dead_lettered"] {
            let line = format!(
                "herd_jobs_{family}_total{{queue=\"herd.r.gen.g\",role=\"worker\",run=\"r\"}} 0"
            );
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        for name in ["examples_generated", "output_tokens", "prompt_tokens"] {
            let line = format!("herd_{name}_total{{generator=\"g\",run=\"r\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Counting goes on from zero.
        metrics.jobs_failed.with_label_values(&["r", "worker", "herd.r.gen.g"]).inc();
        assert!(metrics.render().contains(
            "herd_jobs_failed_total{queue=\"herd.r.gen.g\",role=\"worker\",run=\"r\"} 1"
        ));
    }

    #[test]
    fn histograms_use_the_explicit_buckets() {
        let metrics = Metrics::new().unwrap();
        metrics.batch_size.with_label_values(&["worker", "m"]).observe(3.0);
        let text = metrics.render();
        assert!(
            text.contains("herd_batch_size_bucket{model=\"m\",role=\"worker\",le=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herd_batch_size_bucket{model=\"m\",role=\"worker\",le=\"2\"} 0"),
            "{text}"
        );
    }
}
