//! The AlpacaEval 2 eval set: 805 instructions with their `dataset` and GPT-4 Turbo's
//! reference output (generator `gpt4_1106_preview`). Row position is the instruction
//! `index` that the length-controlled metric uses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The reference generator of AlpacaEval 2.
pub const REFERENCE_GENERATOR: &str = "gpt4_1106_preview";

const EMBEDDED_EVAL_SET: &str = include_str!("../../data/eval_set.json");

/// One instruction of the eval set with its reference answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalRow {
    pub dataset: String,
    pub instruction: String,
    /// The reference model's (GPT-4 Turbo's) answer.
    pub output: String,
    pub generator: String,
}

/// The eval set, in its canonical order.
#[derive(Debug, Clone)]
pub struct EvalSet {
    rows: Vec<EvalRow>,
    index_by_instruction: HashMap<String, usize>,
}

impl EvalSet {
    /// The 805-row AlpacaEval 2 eval set shipped inside the binary.
    pub fn embedded() -> Self {
        let rows: Vec<EvalRow> =
            serde_json::from_str(EMBEDDED_EVAL_SET).expect("the embedded eval set is valid JSON");
        Self::from_rows(rows)
    }

    /// The embedded eval set, parsed once per process.
    pub fn shared() -> &'static Self {
        static SHARED: std::sync::OnceLock<EvalSet> = std::sync::OnceLock::new();
        SHARED.get_or_init(Self::embedded)
    }

    pub fn from_rows(rows: Vec<EvalRow>) -> Self {
        let index_by_instruction =
            rows.iter().enumerate().map(|(i, r)| (r.instruction.clone(), i)).collect();
        Self { rows, index_by_instruction }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> &[EvalRow] {
        &self.rows
    }

    pub fn get(&self, index: usize) -> Option<&EvalRow> {
        self.rows.get(index)
    }

    /// The eval-set position of an instruction, if it is one of ours.
    pub fn index_of(&self, instruction: &str) -> Option<usize> {
        self.index_by_instruction.get(instruction).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_eval_set_has_805_unique_instructions_with_gpt4_turbo_references() {
        let set = EvalSet::embedded();
        assert_eq!(set.len(), 805);
        assert_eq!(set.index_by_instruction.len(), 805);
        assert!(set.rows().iter().all(|r| r.generator == REFERENCE_GENERATOR));
        assert_eq!(set.index_of(&set.rows()[804].instruction), Some(804));
    }
}
