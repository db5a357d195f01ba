//! `herd evaluate`: judge `model_outputs.json` files made by any tool against the reference
//! and write the run folder (annotations, leaderboard, report), with the same judge loop,
//! judge cache and run layout as `herd run`. Every file is checked (format and eval set)
//! before any work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use herd_coordinator::{PlannedGenerator, RunPlan};
use herd_core::eval_set::EvalSet;
use herd_core::formats::{fill_missing, read_model_outputs, validate_model_outputs, ModelOutput};
use herd_core::jobs::{FinishReason, GenerationResult};
use herd_store::{keys, ResultStore, Stored};

use crate::args::{JudgeArgs, JudgeCacheArgs, LocalArgs, STORE_FOLDER};
use crate::local_run::LocalRun;

/// The `worker` of imported answers.
const IMPORTED: &str = "imported";

#[derive(clap::Args)]
pub struct Args {
    /// alpaca_eval `model_outputs.json` files (`.json` or `.json.gz`), one model each
    /// (`;` separates them in HERD_MODEL_OUTPUTS). Rows need `instruction` and `output`;
    /// `generator` and `dataset` may be left out, as alpaca_eval allows.
    #[arg(long = "model-outputs", env = "HERD_MODEL_OUTPUTS", value_delimiter = ';', num_args = 1.., required = true)]
    pub model_outputs: Vec<PathBuf>,
    /// The generator's name for rows without a `generator` field (one file only).
    #[arg(long, env = "HERD_NAME", value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[command(flatten)]
    pub judge_cache: JudgeCacheArgs,
    #[command(flatten)]
    pub local: LocalArgs,
}

/// One checked input file.
struct ImportedModel {
    path: PathBuf,
    name: String,
    /// (eval-set index, row), by index.
    rows: Vec<(usize, ModelOutput)>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let eval_set = EvalSet::embedded();
    if args.name.is_some() && args.model_outputs.len() > 1 {
        bail!("--name names the generator of one file; these files must name theirs (field `generator`)");
    }
    let models = check_inputs(&args.model_outputs, args.name.as_deref(), &eval_set)?;
    let judge = args.judge.spec()?;
    let (run_id, out) = args.local.run_id_and_out("eval")?;
    args.local.engine.apply_threads();
    crate::process::runtime()?.block_on(async {
        let local = LocalRun::open(&args.local, &args.judge_cache, &out)?;
        let mut generators = Vec::new();
        for model in &models {
            import(local.store(), &run_id, model, &out).await?;
            generators.push(PlannedGenerator {
                name: model.name.clone(),
                spec: None,
                indices: model.rows.iter().map(|(index, _)| *index).collect(),
            });
        }
        let plan = RunPlan { run_id, judge, generators, baseline: None };
        let outcome = local.execute(plan).await?;
        outcome.print();
        anyhow::Ok(())
    })
}

/// Reads and validates every file: alpaca_eval's format, instructions of the eval set, one
/// generator name per file, names unique over the files. Warnings are printed.
fn check_inputs(
    paths: &[PathBuf],
    name: Option<&str>,
    eval_set: &EvalSet,
) -> anyhow::Result<Vec<ImportedModel>> {
    let mut models: Vec<ImportedModel> = Vec::new();
    for path in paths {
        let mut rows = read_model_outputs(path)?;
        if rows.is_empty() {
            bail!("{}: no rows", path.display());
        }
        for warning in validate_model_outputs(path, &rows, eval_set)? {
            eprintln!("warning: {warning}");
        }
        if let Some((row, _)) = rows.iter().enumerate().find(|(_, r)| r.generator.is_empty()) {
            let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
                bail!(
                    "{}: row {row}: field `generator`: missing or empty; give the generator's name with --name",
                    path.display()
                );
            };
            let (named, _) = fill_missing(&mut rows, name, eval_set);
            eprintln!(
                "{}: {named} row(s) without `generator` named {name:?} (--name)",
                path.display()
            );
        }
        fill_missing(&mut rows, "", eval_set);
        let name = rows[0].generator.clone();
        if name.trim().is_empty() {
            bail!(
                "{}: row 0: field `generator`: empty; the generator's name is needed",
                path.display()
            );
        }
        if let Some((row, other)) = rows.iter().enumerate().find(|(_, r)| r.generator != name) {
            bail!(
                "{}: row {row}: field `generator`: {:?} differs from row 0's {name:?}; a file holds one model's outputs",
                path.display(),
                other.generator
            );
        }
        if herd_report::folder_name(&name) == STORE_FOLDER {
            bail!(
                "{}: generator {name:?}: the run folder keeps its results in {STORE_FOLDER:?}",
                path.display()
            );
        }
        if let Some(first) = models
            .iter()
            .find(|m| herd_report::folder_name(&m.name) == herd_report::folder_name(&name))
        {
            bail!("{} and {} both hold generator {name:?}", first.path.display(), path.display());
        }
        let by_index: BTreeMap<usize, ModelOutput> = rows
            .into_iter()
            .map(|row| {
                (eval_set.index_of(&row.instruction).expect("validated against the eval set"), row)
            })
            .collect();
        models.push(ImportedModel {
            path: path.clone(),
            name,
            rows: by_index.into_iter().collect(),
        });
    }
    Ok(models)
}

/// Stores each answer as the generation worker would have; an answer already stored for
/// the run must be the same (the run folder was made from another file otherwise).
async fn import(
    store: &ResultStore,
    run_id: &str,
    model: &ImportedModel,
    out: &Path,
) -> anyhow::Result<()> {
    for (index, row) in &model.rows {
        let result = GenerationResult {
            run_id: run_id.to_string(),
            generator: model.name.clone(),
            index: *index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
            output: row.output.clone(),
            prompt_tokens: 0,
            output_tokens: 0,
            seconds: 0.0,
            finish_reason: FinishReason::Eos,
            worker: IMPORTED.to_string(),
            stored: None,
        };
        if store.put_output(&result).await? == Stored::AlreadyThere {
            let key = keys::output(run_id, &model.name, *index);
            let stored: GenerationResult =
                store.get_json(&key).await?.with_context(|| format!("{key} vanished"))?;
            if stored.output != result.output {
                bail!(
                    "{}: the answer of {:?} to eval-set instruction {index} differs from the one run {run_id} in {} \
                     already judged; use another --out",
                    model.path.display(),
                    model.name,
                    out.display()
                );
            }
        }
    }
    Ok(())
}
