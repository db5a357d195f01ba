//! What a run is: generators × eval-set instructions, judged by one judge.

use std::collections::HashSet;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{GeneratorSpec, JudgeSpec};
use serde::{Deserialize, Serialize};

use crate::CoordinatorError;

/// One generator of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedGenerator {
    /// The `generator` name in the files (and the name of its folder in the run).
    pub name: String,
    /// How its answers are generated; `None` when they were imported from a
    /// `model_outputs.json` (`herd evaluate`) and must already be in the store.
    pub spec: Option<GeneratorSpec>,
    /// Eval-set positions of its instructions, ascending.
    pub indices: Vec<usize>,
}

/// A run: its id, its generators and its judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub run_id: String,
    pub judge: JudgeSpec,
    pub generators: Vec<PlannedGenerator>,
    /// The generator the others are compared with, pair by pair, in the report and
    /// `summary.md` (`--baseline`); without one, every two generators are compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

impl RunPlan {
    /// Every generator on the first `limit` eval-set instructions (all of them without a
    /// limit).
    pub fn first_n(
        run_id: &str,
        generators: Vec<GeneratorSpec>,
        judge: JudgeSpec,
        limit: Option<usize>,
        eval_set: &EvalSet,
    ) -> Self {
        let n = limit.unwrap_or(eval_set.len()).min(eval_set.len());
        Self::on_indices(run_id, generators, judge, (0..n).collect())
    }

    /// Every generator on the eval-set instructions at `indices` (a subset, in order).
    pub fn on_indices(
        run_id: &str,
        generators: Vec<GeneratorSpec>,
        judge: JudgeSpec,
        indices: Vec<usize>,
    ) -> Self {
        let generators = generators
            .into_iter()
            .map(|spec| PlannedGenerator {
                name: spec.name.clone(),
                spec: Some(spec),
                indices: indices.clone(),
            })
            .collect();
        Self { run_id: run_id.to_string(), judge, generators, baseline: None }
    }

    /// Names unique (also as folder names), indices inside the eval set, ascending, unique.
    pub fn validate(&self, eval_set: &EvalSet) -> Result<(), CoordinatorError> {
        let bad = |why: String| Err(CoordinatorError::Plan(why));
        if self.run_id.trim().is_empty() {
            return bad("the run id is empty".into());
        }
        if self.generators.is_empty() {
            return bad("no generator".into());
        }
        let mut folders = HashSet::new();
        for g in &self.generators {
            if g.name.trim().is_empty() {
                return bad("a generator has an empty name".into());
            }
            if !folders.insert(herd_report::folder_name(&g.name)) {
                return bad(format!("two generators share the name (or folder name) {:?}", g.name));
            }
            if g.indices.is_empty() {
                return bad(format!("generator {:?} has no instruction", g.name));
            }
            if let Some(&bad_index) = g.indices.iter().find(|&&i| i >= eval_set.len()) {
                return bad(format!(
                    "generator {:?}: instruction {bad_index} is not in the eval set",
                    g.name
                ));
            }
            if g.indices.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!(
                    "generator {:?}: instructions are not ascending and unique",
                    g.name
                ));
            }
            if let Some(spec) = &g.spec {
                if spec.name != g.name {
                    return bad(format!("generator {:?} has a spec named {:?}", g.name, spec.name));
                }
            }
        }
        Ok(())
    }

    /// Generation jobs and judge jobs the run needs in all.
    pub fn expected(&self) -> usize {
        self.generators.iter().map(|g| g.indices.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::jobs::{JudgeMode, PromptTemplate};

    fn spec(name: &str) -> GeneratorSpec {
        GeneratorSpec {
            name: name.into(),
            model: "m".into(),
            template: PromptTemplate::Chat,
            max_new_tokens: 8,
            stop: vec![],
            endpoint: None,
            sampling: None,
        }
    }

    fn judge() -> JudgeSpec {
        JudgeSpec {
            name: "j".into(),
            model: "m".into(),
            mode: JudgeMode::Logprob,
            max_new_tokens: 100,
            max_context_tokens: 7000,
            endpoint: None,
            price: None,
            config: None,
        }
    }

    #[test]
    fn a_limit_takes_the_first_instructions_of_the_eval_set() {
        let set = EvalSet::embedded();
        let plan = RunPlan::first_n("r", vec![spec("a"), spec("b")], judge(), Some(3), &set);
        assert_eq!(plan.generators[1].indices, vec![0, 1, 2]);
        assert_eq!(plan.expected(), 6);
        plan.validate(&set).unwrap();
        let all = RunPlan::first_n("r", vec![spec("a")], judge(), None, &set);
        assert_eq!(all.expected(), 805);
        assert_eq!(
            RunPlan::first_n("r", vec![spec("a")], judge(), Some(5000), &set).expected(),
            805
        );
    }

    #[test]
    fn generators_sharing_a_folder_are_refused() {
        let set = EvalSet::embedded();
        let plan = RunPlan::first_n("r", vec![spec("a/b"), spec("a_b")], judge(), Some(1), &set);
        let err = plan.validate(&set).unwrap_err().to_string();
        assert!(err.contains("share the name"), "{err}");
    }
}
