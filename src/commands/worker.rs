//! `herd worker`: the generation worker role. Takes the jobs of one generator of one run
//! (`herd.<run>.gen.<generator>`), runs its model, stores each answer and only then
//! acknowledges the job. Stops on SIGTERM once the batch in the engine is stored; jobs
//! it held but had not started go back to the queue.

use std::time::Duration;

use herd_queue::QueueName;
use herd_worker::GenerationWorker;

use crate::args::{EngineArgs, RemoteArgs};
use crate::cluster::{ClusterArgs, RoleServices};
use crate::effective_config;
use crate::process::{runtime, stop_signal};

#[derive(clap::Args)]
pub struct Args {
    /// The generator whose jobs this worker takes: its `name=` in the coordinator's --generator.
    #[arg(long, env = "HERD_GENERATOR", value_name = "NAME")]
    pub generator: String,
    /// The model this worker serves (loaded at start): the coordinator's `model=` for the
    /// generator. Jobs naming another model are dead-lettered. Default: what the jobs name.
    #[arg(long, env = "HERD_MODEL", value_name = "PATH_OR_BUILTIN")]
    pub model: Option<String>,
    /// Jobs held unacknowledged at once (default: twice --batch-size).
    #[arg(long, env = "HERD_PREFETCH")]
    pub prefetch: Option<u16>,
    /// Print the effective configuration as JSON (secrets redacted) and exit, without
    /// connecting to anything or loading a model.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.print_config {
        return print_config(&args);
    }
    args.engine.apply_threads();
    runtime()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let role =
        RoleServices::start("worker", &args.cluster, args.engine.models()?, args.model.as_deref())
            .await?;
    let worker = GenerationWorker {
        run_id: args.cluster.run_id.clone(),
        generator: args.generator.clone(),
        batch: args.engine.batch(),
        prefetch: args.prefetch.unwrap_or_else(|| args.engine.prefetch()),
        linger: Duration::from_millis(20),
        worker: role.worker.clone(),
        model: args.model.clone(),
        remote: args.remote.worker_settings()?,
    };
    tracing::info!(queue = %worker.queue_name(), worker = %worker.worker, "generation worker started");
    let stats = worker
        .run(&role.queue, &role.store, &role.models, &role.metrics, async {
            stop_signal().await;
        })
        .await?;
    tracing::info!(?stats, "generation worker stopped");
    Ok(())
}

fn print_config(args: &Args) -> anyhow::Result<()> {
    let queue = QueueName::generation(&args.cluster.run_id, &args.generator);
    let mut config =
        effective_config::worker("worker", &args.cluster, &args.engine, args.prefetch, &queue);
    config.insert("generator".into(), args.generator.clone().into());
    config.insert("model".into(), args.model.clone().into());
    effective_config::print(config)
}
