//! `herd judge-worker`: the judge worker role. Takes the judge jobs of one run
//! (`herd.<run>.judge.<judge>`), judges them with the judge model (or takes the verdict
//! from the judge cache in the run's store), stores each verdict and only then
//! acknowledges the job. Stops on SIGTERM like `herd worker`.

use std::time::Duration;

use herd_judge_worker::{JudgeCache, JudgeWorker};
use herd_queue::QueueName;

use crate::args::{EngineArgs, RemoteArgs};
use crate::cluster::{ClusterArgs, RoleServices};
use crate::effective_config;
use crate::process::{runtime, stop_signal};

#[derive(clap::Args)]
pub struct Args {
    /// The judge whose jobs this worker takes: the coordinator's --judge-name (its default
    /// is `<judge model>_<mode>`, e.g. `smollm2-135m-instruct_logprob`).
    #[arg(long, env = "HERD_JUDGE_NAME", value_name = "NAME")]
    pub judge_name: String,
    /// The judge model this worker serves: the coordinator's --judge-model. Jobs naming
    /// another model are dead-lettered. Default: what the jobs name.
    #[arg(long, env = "HERD_JUDGE_MODEL", value_name = "PATH_OR_BUILTIN")]
    pub judge_model: Option<String>,
    /// Judge everything; neither read nor write the judge cache (`cache/judgements/` in
    /// the run's store, shared by every run on that store).
    #[arg(long, env = "HERD_NO_JUDGE_CACHE")]
    pub no_judge_cache: bool,
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
    // The model loads on the first cache miss: a fully cached run never loads it.
    let role =
        RoleServices::start("judge-worker", &args.cluster, args.engine.models()?, None).await?;
    let cache = if args.no_judge_cache {
        JudgeCache::disabled()
    } else {
        JudgeCache::new(role.store.clone())
    };
    let worker = JudgeWorker {
        run_id: args.cluster.run_id.clone(),
        judge: args.judge_name.clone(),
        batch: args.engine.batch(),
        prefetch: args.prefetch.unwrap_or_else(|| args.engine.prefetch()),
        linger: Duration::from_millis(20),
        worker: role.worker.clone(),
        model: args.judge_model.clone(),
        remote: args.remote.worker_settings()?,
    };
    tracing::info!(queue = %worker.queue_name(), worker = %worker.worker, "judge worker started");
    let stats = worker
        .run(&role.queue, &role.store, &cache, &role.models, &role.metrics, async {
            stop_signal().await;
        })
        .await?;
    tracing::info!(?stats, "judge worker stopped");
    Ok(())
}

fn print_config(args: &Args) -> anyhow::Result<()> {
    let queue = QueueName::judge(&args.cluster.run_id, &args.judge_name);
    let mut config = effective_config::worker(
        "judge-worker",
        &args.cluster,
        &args.engine,
        args.prefetch,
        &queue,
    );
    config.insert("judge_name".into(), args.judge_name.clone().into());
    config.insert("judge_model".into(), args.judge_model.clone().into());
    config.insert("judge_cache".into(), (!args.no_judge_cache).into());
    effective_config::print(config)
}
