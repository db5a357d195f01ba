//! Whether a job or a stored result is one the run's plan makes: the checks a worker applies
//! before any work, and the coordinator before it trusts a result. A message on a run's
//! queue or an object under a run's key proves nothing by itself; these checks make a
//! forged one harmless: it is refused, or it reproduces the result the plan asks for.

use crate::eval_set::EvalSet;

use super::{GenerationJob, GenerationResult, JudgeJob, JudgeResult};

/// The first field of a job or result that disagrees with the run's plan: its name, the
/// value found and the value expected (long texts shortened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {found}, expected {expected}")]
pub struct PlanMismatch {
    pub field: &'static str,
    pub found: String,
    pub expected: String,
}

/// Texts longer than this are shortened in a [`PlanMismatch`].
const SHOWN_CHARS: usize = 80;

fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}… ({} chars)", text.chars().count())
    } else {
        format!("{head:?}")
    }
}

fn same(field: &'static str, found: &str, expected: &str) -> Result<(), PlanMismatch> {
    if found == expected {
        Ok(())
    } else {
        Err(PlanMismatch { field, found: shown(found), expected: shown(expected) })
    }
}

fn same_index(found: usize, expected: usize) -> Result<(), PlanMismatch> {
    if found == expected {
        Ok(())
    } else {
        Err(PlanMismatch {
            field: "index",
            found: found.to_string(),
            expected: expected.to_string(),
        })
    }
}

/// The eval-set row at `index`, or the mismatch of an index out of range.
fn row(eval_set: &EvalSet, index: usize) -> Result<&crate::eval_set::EvalRow, PlanMismatch> {
    eval_set.get(index).ok_or_else(|| PlanMismatch {
        field: "index",
        found: index.to_string(),
        expected: format!("an eval-set index below {}", eval_set.len()),
    })
}

/// A generation job for run `run_id` on generator `generator`'s queue: same run and
/// generator, an index of the eval set, and that index's instruction and dataset.
pub fn check_generation_job(
    job: &GenerationJob,
    eval_set: &EvalSet,
    run_id: &str,
    generator: &str,
) -> Result<(), PlanMismatch> {
    same("run_id", &job.run_id, run_id)?;
    same("generator", &job.generator.name, generator)?;
    let row = row(eval_set, job.index)?;
    same("instruction", &job.instruction, &row.instruction)?;
    same("dataset", &job.dataset, &row.dataset)
}

/// A judge job for run `run_id` on judge `judge`'s queue: same run and judge, an index of
/// the eval set, and that index's instruction, dataset and reference output. Whether its
/// answer is the stored one is [`check_judged_answer`].
pub fn check_judge_job(
    job: &JudgeJob,
    eval_set: &EvalSet,
    run_id: &str,
    judge: &str,
) -> Result<(), PlanMismatch> {
    same("run_id", &job.run_id, run_id)?;
    same("judge", &job.judge.name, judge)?;
    let row = row(eval_set, job.index)?;
    same("instruction", &job.instruction, &row.instruction)?;
    same("dataset", &job.dataset, &row.dataset)?;
    same("reference_output", &job.reference_output, &row.output)
}

/// A judge job judges the answer stored for its (run, generator, index): `stored` is that
/// answer, `None` when the store has none.
pub fn check_judged_answer(
    job: &JudgeJob,
    stored: Option<&GenerationResult>,
) -> Result<(), PlanMismatch> {
    let Some(stored) = stored else {
        return Err(PlanMismatch {
            field: "model_output",
            found: shown(&job.model_output),
            expected: format!(
                "the stored answer of generator {:?} at index {}, and there is none",
                job.generator, job.index
            ),
        });
    };
    same("model_output", &job.model_output, &stored.output)
}

/// An answer stored under (run `run_id`, generator `generator`, `index`): it says so itself,
/// and carries that index's instruction. (Not its dataset: an imported answer keeps the
/// one its file gave.)
pub fn check_generation_result(
    result: &GenerationResult,
    eval_set: &EvalSet,
    run_id: &str,
    generator: &str,
    index: usize,
) -> Result<(), PlanMismatch> {
    same("run_id", &result.run_id, run_id)?;
    same("generator", &result.generator, generator)?;
    same_index(result.index, index)?;
    let row = row(eval_set, index)?;
    same("instruction", &result.instruction, &row.instruction)
}

/// A verdict stored under (run `run_id`, judge `judge`, generator `generator`, `index`): it
/// says so itself.
pub fn check_judge_result(
    result: &JudgeResult,
    run_id: &str,
    judge: &str,
    generator: &str,
    index: usize,
) -> Result<(), PlanMismatch> {
    same("run_id", &result.run_id, run_id)?;
    same("judge", &result.judge, judge)?;
    same("generator", &result.generator, generator)?;
    same_index(result.index, index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{FinishReason, GeneratorSpec, JudgeMode, JudgeSpec, PromptTemplate};

    fn set() -> EvalSet {
        EvalSet::embedded()
    }

    fn generation_job(set: &EvalSet, index: usize) -> GenerationJob {
        let row = &set.rows()[index];
        GenerationJob {
            run_id: "run".into(),
            generator: GeneratorSpec {
                name: "gen".into(),
                model: "m".into(),
                template: PromptTemplate::Chat,
                max_new_tokens: 8,
                stop: vec![],
                endpoint: None,
                sampling: None,
            },
            index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
        }
    }

    fn judge_job(set: &EvalSet, index: usize) -> JudgeJob {
        let row = &set.rows()[index];
        JudgeJob {
            run_id: "run".into(),
            judge: JudgeSpec {
                name: "judge".into(),
                model: "m".into(),
                mode: JudgeMode::Logprob,
                max_new_tokens: 8,
                max_context_tokens: 600,
                endpoint: None,
                price: None,
                config: None,
            },
            generator: "gen".into(),
            index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
            reference_output: row.output.clone(),
            model_output: "an answer".into(),
        }
    }

    fn answer(set: &EvalSet, index: usize) -> GenerationResult {
        let row = &set.rows()[index];
        GenerationResult {
            run_id: "run".into(),
            generator: "gen".into(),
            index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
            output: "an answer".into(),
            prompt_tokens: 1,
            output_tokens: 1,
            seconds: 0.0,
            finish_reason: FinishReason::Eos,
            worker: "w".into(),
            stored: None,
        }
    }

    #[test]
    fn a_planned_generation_job_passes() {
        let set = set();
        assert_eq!(check_generation_job(&generation_job(&set, 3), &set, "run", "gen"), Ok(()));
    }

    #[test]
    fn a_generation_job_with_another_instruction_at_its_index_is_refused() {
        let set = set();
        let mut job = generation_job(&set, 1);
        job.instruction = set.rows()[2].instruction.clone();
        let refused = check_generation_job(&job, &set, "run", "gen").unwrap_err();
        assert_eq!(refused.field, "instruction");
        assert!(refused.to_string().starts_with("instruction is \""), "{refused}");
    }

    #[test]
    fn a_generation_job_out_of_the_eval_set_is_refused() {
        let set = set();
        let mut job = generation_job(&set, 1);
        job.index = 99_999;
        let refused = check_generation_job(&job, &set, "run", "gen").unwrap_err();
        assert_eq!(refused.to_string(), "index is 99999, expected an eval-set index below 805");
    }

    #[test]
    fn a_generation_job_of_another_run_or_generator_is_refused() {
        let set = set();
        let job = generation_job(&set, 1);
        let refused = check_generation_job(&job, &set, "other", "gen").unwrap_err();
        assert_eq!(refused.to_string(), "run_id is \"run\", expected \"other\"");
        let refused = check_generation_job(&job, &set, "run", "other").unwrap_err();
        assert_eq!(refused.field, "generator");
        let mut job = job;
        job.dataset = "x".into();
        assert_eq!(check_generation_job(&job, &set, "run", "gen").unwrap_err().field, "dataset");
    }

    #[test]
    fn a_judge_job_must_carry_the_reference_and_the_stored_answer() {
        let set = set();
        let job = judge_job(&set, 5);
        assert_eq!(check_judge_job(&job, &set, "run", "judge"), Ok(()));
        assert_eq!(check_judge_job(&job, &set, "run", "other").unwrap_err().field, "judge");
        let mut forged = job.clone();
        forged.reference_output = "worse".into();
        assert_eq!(
            check_judge_job(&forged, &set, "run", "judge").unwrap_err().field,
            "reference_output"
        );
        let mut forged = job.clone();
        forged.index = 6;
        assert_eq!(
            check_judge_job(&forged, &set, "run", "judge").unwrap_err().field,
            "instruction"
        );
        let stored = answer(&set, 5);
        assert_eq!(check_judged_answer(&job, Some(&stored)), Ok(()));
        let mut other = stored.clone();
        other.output = "another answer".into();
        assert_eq!(check_judged_answer(&job, Some(&other)).unwrap_err().field, "model_output");
        let missing = check_judged_answer(&job, None).unwrap_err();
        assert!(missing.expected.contains("there is none"), "{missing}");
    }

    #[test]
    fn a_stored_result_must_say_what_its_key_says() {
        let set = set();
        let stored = answer(&set, 5);
        assert_eq!(check_generation_result(&stored, &set, "run", "gen", 5), Ok(()));
        assert_eq!(
            check_generation_result(&stored, &set, "run", "gen", 4).unwrap_err().field,
            "index"
        );
        let mut forged = stored.clone();
        forged.instruction = set.rows()[4].instruction.clone();
        assert_eq!(
            check_generation_result(&forged, &set, "run", "gen", 5).unwrap_err().field,
            "instruction"
        );
        let verdict = JudgeResult {
            run_id: "run".into(),
            judge: "judge".into(),
            generator: "gen".into(),
            index: 5,
            preference: Some(2.0),
            raw_completion: String::new(),
            is_switched: false,
            truncated: false,
            prompt_tokens: 1,
            seconds: 0.0,
            worker: "w".into(),
            stored: None,
            price: None,
        };
        assert_eq!(check_judge_result(&verdict, "run", "judge", "gen", 5), Ok(()));
        assert_eq!(
            check_judge_result(&verdict, "run", "judge", "other", 5).unwrap_err().field,
            "generator"
        );
    }

    #[test]
    fn long_texts_are_shortened() {
        let long = "x".repeat(500);
        let refused = same("instruction", &long, "y").unwrap_err();
        assert!(refused.found.ends_with("… (500 chars)"), "{}", refused.found);
    }
}
