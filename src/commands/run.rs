//! `herd run`: generate answers to the AlpacaEval instructions with one or more models,
//! judge them against GPT-4 Turbo's references, and write the run folder — all in one
//! process, with the same coordinator and worker loops as the distributed roles (an
//! in-process queue, and a local folder as the store: see `crate::local_run`).
//!
//! Where things live:
//! - `<out>/store/`: the run's results (answers, verdicts, activity), one JSON file each.
//!   A re-run with the same `--out` reads them and does only what is missing, so an
//!   interrupted run resumes and a finished one is not redone.
//! - `<judge-cache>/cache/judgements/`: verdicts by content, shared by every run on this
//!   machine (`~/.cache/herd` unless `--judge-cache`).
//! - the run folder's files: see `herd_coordinator::folder`.

use herd_core::eval_set::EvalSet;

use crate::args::{JudgeArgs, JudgeCacheArgs, LocalArgs, PlanArgs};
use crate::local_run::LocalRun;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[command(flatten)]
    pub judge_cache: JudgeCacheArgs,
    #[command(flatten)]
    pub local: LocalArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.local.engine.apply_threads();
    crate::process::runtime()?.block_on(async {
        let eval_set = EvalSet::embedded();
        let judge = args.judge.spec()?;
        let (run_id, out) = args.local.run_id_and_out("run")?;
        let plan = args.plan.plan(&run_id, judge, &eval_set)?;
        let local = LocalRun::open(&args.local, &args.judge_cache, &out)?;
        let outcome = local.execute(plan).await?;
        outcome.print();
        Ok(())
    })
}
