//! `--print-config`: what a role would run with, as one JSON object on stdout, worked out
//! from its flags and environment without connecting to anything, reading a secret file or
//! loading weights. Deployments check it (the chart's tests run every pod's arguments and
//! environment through it). URLs are shown without passwords.

use herd_core::redact::redact_url;
use herd_queue::QueueName;
use serde_json::{json, Map, Value};

use crate::args::EngineArgs;
use crate::cluster::ClusterArgs;

/// The keys every distributed role shares: its role, run, broker, store and metrics address.
pub fn cluster(role: &str, cluster: &ClusterArgs) -> Map<String, Value> {
    let value = json!({
        "role": role,
        "run_id": cluster.run_id,
        "amqp_url": redact_url(&cluster.amqp_url),
        "store": redact_url(&cluster.store),
        "s3_endpoint": cluster.s3_endpoint.as_deref().map(redact_url),
        "metrics_addr": cluster.metrics_addr.map(|a| a.to_string()),
        "delivery_limit": cluster.delivery_limit,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

/// Where and how the engine would run models.
pub fn engine(engine: &EngineArgs) -> Value {
    json!({
        "device": engine.device.to_string(),
        "tensor_parallel": engine.tensor_parallel,
        "batch_size": engine.batch().max_batch_size,
        "step_tokens": engine.batch().max_step_tokens,
        "kv_cache_tokens": engine.kv_cache_tokens,
        "gpu_memory_fraction": engine.gpu_memory_fraction,
        "threads": engine.threads,
    })
}

/// The keys of a worker role: the cluster's, its engine, prefetch and the queue it consumes.
pub fn worker(
    role: &str,
    cluster_args: &ClusterArgs,
    engine_args: &EngineArgs,
    prefetch: Option<u16>,
    queue: &QueueName,
) -> Map<String, Value> {
    let mut config = cluster(role, cluster_args);
    config.insert("engine".into(), engine(engine_args));
    config.insert("prefetch".into(), prefetch.unwrap_or_else(|| engine_args.prefetch()).into());
    config.insert("queue".into(), queue.to_string().into());
    config
}

/// Prints `config` as pretty JSON on stdout.
pub fn print(config: Map<String, Value>) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(&Value::Object(config))?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        // A reader that stopped early (`| head`) is no error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
