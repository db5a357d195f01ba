//! `herd worker`: the generation worker role. Takes the jobs of one generator of one run
//! (`herd.<run>.gen.<generator>`), runs its model, stores each answer and only then
//! acknowledges the job. Stops on SIGTERM once the batch in the engine is stored; jobs
//! it held but had not started go back to the queue.

use std::time::Duration;

use herd_worker::{GenerationWorker, NOOP_BENCHMARK_MODEL};

use super::cluster::{runtime, stop_signal, ClusterArgs};
use crate::args::EngineArgs;

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
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.engine.apply_threads();
    runtime()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let models = args.engine.models()?;
    let queue = args.cluster.connect_queue("worker").await?;
    let store = args.cluster.open_store()?;
    let (metrics, _server) = args.cluster.serve_metrics().await?;
    if let Some(model) = args.model.clone().filter(|m| m != NOOP_BENCHMARK_MODEL) {
        // Loaded while the worker already listens: jobs wait for the same load.
        let models = models.clone();
        tokio::spawn(async move {
            match models.get(&model).await {
                Ok(_) => tracing::info!(%model, "model loaded"),
                Err(e) => {
                    tracing::error!(error = %e, "the model cannot be loaded; its jobs will be dead-lettered")
                }
            }
        });
    }
    let worker = GenerationWorker {
        run_id: args.cluster.run_id.clone(),
        generator: args.generator.clone(),
        batch: args.engine.batch(),
        prefetch: args.prefetch.unwrap_or_else(|| args.engine.prefetch()),
        linger: Duration::from_millis(20),
        worker: herd_worker::worker_id(),
        model: args.model.clone(),
    };
    tracing::info!(queue = %worker.queue_name(), worker = %worker.worker, "generation worker started");
    let stats = worker.run(&queue, &store, &models, &metrics, stop_signal()).await?;
    tracing::info!(?stats, "generation worker stopped");
    Ok(())
}
