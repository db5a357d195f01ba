//! `herd coordinator`: the coordinator role. Plans the run (generators × instructions, one
//! judge), publishes the generation jobs the store lacks, publishes a judge job as each
//! answer lands, and once every verdict is in writes the run folder — the same files,
//! byte for byte, as `herd run` — into the store under `runs/<run>/report/` (and into
//! --out when given).
//!
//! The store is the coordinator's only state: restarted (a crash, a rescheduled pod), it
//! lists what is stored and republishes only what is missing. A dead-lettered job (a
//! model that cannot load, a malformed message) drops its generator from the run instead
//! of failing it: the other generators are finished and reported, and the dropped ones are
//! named at the end.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use herd_coordinator::{Coordinator, DeadLetterPolicy, FolderClaim, RunProgress, RunSummary};
use herd_core::eval_set::EvalSet;
use herd_queue::{JobQueue, QueueName};
use herd_store::keys;
use tokio::sync::watch;

use crate::args::{JudgeArgs, PlanArgs};
use crate::cluster::ClusterArgs;
use crate::effective_config;
use crate::process::{runtime, stop_signal};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Also write the run folder here (it is always written to the store, under
    /// `runs/<run>/report/`).
    #[arg(long, env = "HERD_OUT")]
    pub out: Option<PathBuf>,
    /// Write the run folder over the --out folder of another run (without it such a folder
    /// is refused before any work).
    #[arg(long, env = "HERD_FORCE")]
    pub force: bool,
    /// Milliseconds between two listings of the store while the run is under way.
    #[arg(long, env = "HERD_POLL_INTERVAL_MS", default_value_t = 1000, value_name = "MS")]
    pub poll_interval_ms: u64,
    /// What a dead-lettered job does: `drop-generator` finishes the run without that job's
    /// generator; `fail-run` stops the coordinator with an error.
    #[arg(long, env = "HERD_ON_DEAD_LETTER", default_value = "drop-generator", value_parser = ["drop-generator", "fail-run"])]
    pub on_dead_letter: String,
    /// Delete the run's queues (its generators', its judge's and its dead letters', named by
    /// the plan stored for --run-id) and exit. Without it, a finished run's work queues
    /// expire after a day unused and its dead-letter queue stays for inspection.
    #[arg(long)]
    pub cleanup: bool,
    /// Print the effective configuration as JSON (secrets redacted) and exit, without
    /// connecting to anything or loading a model.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.print_config {
        return print_config(&args);
    }
    if args.cleanup {
        return runtime()?.block_on(cleanup(args));
    }
    runtime()?.block_on(coordinate(args))
}

async fn coordinate(args: Args) -> anyhow::Result<()> {
    let eval_set = EvalSet::embedded();
    let plan = args.plan.plan(&args.cluster.run_id, args.judge.spec()?, &eval_set)?;
    if let Some(out) = &args.out {
        if let Some(message) = FolderClaim::of(&plan).claim(out, args.force)?.message(out) {
            eprintln!("{message}");
        }
    }
    let queue = args.cluster.connect_queue("coordinator").await?;
    let store = args.cluster.open_store()?;
    let (metrics, _server) = args.cluster.serve_metrics().await?;
    let mut coordinator = Coordinator::new(queue.clone(), store.clone(), metrics, plan.clone())?;
    coordinator.poll_interval = Duration::from_millis(args.poll_interval_ms.max(10));
    coordinator.dead_letter_policy = match args.on_dead_letter.as_str() {
        "fail-run" => DeadLetterPolicy::FailRun,
        _ => DeadLetterPolicy::DropGenerator,
    };

    let already = coordinator.start().await?;
    let (outputs, expected_outputs) = already.outputs();
    let (verdicts, expected_verdicts) = already.annotations();
    tracing::info!(
        run = %plan.run_id,
        outputs, expected_outputs, verdicts, expected_verdicts,
        "published what the store lacks"
    );
    let (progress_sender, progress) = watch::channel(already);
    let logging = tokio::spawn(log_progress(progress));
    let outcome = tokio::select! {
        outcome = coordinator.watch(&progress_sender) => outcome,
        _ = stop_signal() => bail!("stopped before run {} was complete; start the coordinator again to resume", plan.run_id),
    };
    logging.abort();
    outcome?;

    // Without --out the folder is written to a temporary one (the report is built from
    // files) and only its copy in the store remains.
    let scratch;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            scratch = tempfile::tempdir().context("a temporary folder for the run folder")?;
            scratch.path().to_path_buf()
        }
    };
    let summary = coordinator.finish(&out).await?;
    let stored = coordinator.store_report(&summary).await?;
    tracing::info!(files = stored, prefix = %keys::report_prefix(&plan.run_id), "stored the run folder");
    print_summary(&plan.run_id, &summary, args.out.is_some(), store.description());
    for (name, dropped) in coordinator.dropped() {
        eprintln!(
            "herd coordinator: generator {name} was dropped ({} dead-lettered job(s)): {}",
            dropped.jobs, dropped.first
        );
    }
    Ok(())
}

/// Logs the progress at most every ten seconds while it changes.
async fn log_progress(mut progress: watch::Receiver<RunProgress>) {
    while progress.changed().await.is_ok() {
        let now = progress.borrow_and_update().clone();
        let ((outputs, expected_outputs), (verdicts, expected_verdicts)) =
            (now.outputs(), now.annotations());
        tracing::info!(outputs, expected_outputs, verdicts, expected_verdicts, "progress");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

fn print_summary(run: &str, summary: &RunSummary, local: bool, store: &str) {
    println!("herd coordinator {run}: {} generator(s) complete", summary.generators.len());
    let width =
        summary.generators.iter().map(|g| g.name.chars().count()).max().unwrap_or(0).max(30);
    println!(
        "{:<width$} {:>8} {:>15} {:>15} {:>8}",
        "generator", "examples", "win rate", "LC win rate", "unparsed"
    );
    for g in &summary.generators {
        let (win, lc) = match &g.leaderboard {
            Some(row) => (herd_report::win_rate_cell(row), herd_report::lc_win_rate_cell(row)),
            None => ("—".into(), "—".into()),
        };
        println!("{:<width$} {:>8} {win:>15} {lc:>15} {:>8}", g.name, g.examples, g.unparsed);
    }
    for line in summary.findings() {
        println!("{line}");
    }
    if !summary.dead_letters.is_empty() {
        println!("dead letters ({}, kept in the dead-letter queue):", summary.dead_letters.len());
        for dead in &summary.dead_letters {
            println!("  from {}: {} — job {}", dead.queue, dead.reason, dead.job);
        }
    }
    if !summary.rejected.is_empty() {
        println!(
            "stored results rejected (not the run's plan; moved aside, jobs published again):"
        );
        for rejected in &summary.rejected {
            println!("  {} → {}: {}", rejected.key, rejected.moved_to, rejected.reason);
        }
    }
    if !summary.dead_letters.is_empty() || !summary.rejected.is_empty() {
        println!("both listed in the run folder's {}", herd_coordinator::DEAD_LETTERS_FILE);
    }
    println!("run folder: {store} under {}", keys::report_prefix(run));
    if local {
        println!("and locally: {}", summary.out.display());
    }
}

fn print_config(args: &Args) -> anyhow::Result<()> {
    let plan = args.plan.plan(&args.cluster.run_id, args.judge.spec()?, &EvalSet::embedded())?;
    let mut config = effective_config::cluster("coordinator", &args.cluster);
    let generators: Vec<_> = plan.generators.iter().filter_map(|g| g.spec.clone()).collect();
    config.insert("generators".into(), serde_json::to_value(generators)?);
    config.insert("judge".into(), serde_json::to_value(&plan.judge)?);
    config.insert("limit".into(), args.plan.limit.into());
    config.insert("datasets".into(), args.plan.datasets.clone().into());
    config.insert("instructions".into(), args.plan.instructions.clone().into());
    config.insert("out".into(), args.out.as_ref().map(|o| o.display().to_string()).into());
    config.insert("on_dead_letter".into(), args.on_dead_letter.clone().into());
    effective_config::print(config)
}

/// `--cleanup`: deletes every queue of the run, as named by the plan in the store.
async fn cleanup(args: Args) -> anyhow::Result<()> {
    let run = &args.cluster.run_id;
    let store = args.cluster.open_store()?;
    let mut names = Vec::new();
    for key in store.list(&keys::plan_prefix(run)).await? {
        let Some(plan) = store.get_json::<serde_json::Value>(&key).await? else { continue };
        let name = plan.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        names.push(if plan.get("mode").is_some() {
            QueueName::judge(run, name)
        } else {
            QueueName::generation(run, name)
        });
    }
    if names.is_empty() {
        bail!("the store {} holds no plan for run {run}", store.description());
    }
    names.push(QueueName::dead_letters(run));
    let queue = args.cluster.connect_queue("coordinator").await?;
    for name in &names {
        queue.delete(name).await.with_context(|| format!("deleting queue {name}"))?;
        println!("deleted {name}");
    }
    Ok(())
}
