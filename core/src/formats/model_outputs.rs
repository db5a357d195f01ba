//! alpaca_eval's `model_outputs.json`: a JSON array of `{dataset, instruction, output, generator}`.
//! As alpaca_eval, the reader also takes the minimal `{instruction, output}` rows: a missing
//! `generator` or `dataset` reads as an empty string, for the caller to fill (the
//! generator's name from the user, the dataset from the eval set: [`fill_missing`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::records::{
    column_order, parse_records, read_bytes, render_records, write_bytes, Record,
};
use super::{check_instructions, FormatError, FormatWarning, InstructionPreview, WarningKind};
use crate::eval_set::EvalSet;

/// alpaca_eval's column order (its `results/*/model_outputs.json`).
const COLUMNS: [&str; 4] = ["dataset", "instruction", "output", "generator"];

/// One answer of a model to one eval-set instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    pub instruction: String,
    pub output: String,
    pub generator: String,
    pub dataset: String,
    /// Fields beyond alpaca_eval's four (herd adds token counts and timing); kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelOutput {
    fn from_record(mut record: Record<'_>) -> Result<Self, FormatError> {
        let instruction = record.take_string("instruction")?;
        let output = record.take_string("output")?;
        let generator = record.take_optional_string("generator")?.unwrap_or_default();
        let dataset = record.take_optional_string("dataset")?.unwrap_or_default();
        Ok(Self { instruction, output, generator, dataset, extra: record.into_extra() })
    }

    fn to_record(&self) -> Map<String, Value> {
        let mut record = Map::new();
        record.insert("dataset".into(), Value::String(self.dataset.clone()));
        record.insert("instruction".into(), Value::String(self.instruction.clone()));
        record.insert("output".into(), Value::String(self.output.clone()));
        record.insert("generator".into(), Value::String(self.generator.clone()));
        for (key, value) in &self.extra {
            record.entry(key.clone()).or_insert_with(|| value.clone());
        }
        record
    }
}

/// Reads `model_outputs.json` or `.json.gz`: every row must have `instruction` and
/// `output` strings; `generator` and `dataset` may be absent (read as empty).
pub fn read_model_outputs(path: impl AsRef<Path>) -> Result<Vec<ModelOutput>, FormatError> {
    let path = path.as_ref();
    parse_model_outputs(path, &read_bytes(path)?)
}

/// Parses the text of a `model_outputs.json`; `path` only names it in errors.
pub fn parse_model_outputs(path: &Path, json: &[u8]) -> Result<Vec<ModelOutput>, FormatError> {
    parse_records(path, json)?
        .into_iter()
        .enumerate()
        .map(|(row, fields)| ModelOutput::from_record(Record::new(path, row, fields)))
        .collect()
}

/// The text `write_model_outputs` writes.
pub fn render_model_outputs(outputs: &[ModelOutput]) -> String {
    let records: Vec<Map<String, Value>> = outputs.iter().map(ModelOutput::to_record).collect();
    render_records(&column_order(&COLUMNS, &COLUMNS, &records), &records)
}

/// Writes pandas-style JSON (gzipped when the name ends in `.gz`).
pub fn write_model_outputs(
    path: impl AsRef<Path>,
    outputs: &[ModelOutput],
) -> Result<(), FormatError> {
    write_bytes(path.as_ref(), render_model_outputs(outputs).as_bytes())
}

/// Fills what a minimal file leaves out: `generator` (when empty) with `name`, `dataset`
/// (when empty) with the eval set's dataset of the row's instruction. Returns how many rows
/// got each.
pub fn fill_missing(outputs: &mut [ModelOutput], name: &str, eval_set: &EvalSet) -> (usize, usize) {
    let (mut generators, mut datasets) = (0, 0);
    for output in outputs {
        if output.generator.is_empty() {
            output.generator = name.to_string();
            generators += 1;
        }
        if output.dataset.is_empty() {
            if let Some(row) = eval_set.index_of(&output.instruction).and_then(|i| eval_set.get(i))
            {
                output.dataset = row.dataset.clone();
                datasets += 1;
            }
        }
    }
    (generators, datasets)
}

/// Checks parsed rows against the eval set: an unknown or repeated instruction is an
/// error; empty outputs and missing instructions are warnings.
pub fn validate_model_outputs(
    path: &Path,
    outputs: &[ModelOutput],
    eval_set: &EvalSet,
) -> Result<Vec<FormatWarning>, FormatError> {
    let mut warnings =
        check_instructions(path, outputs.iter().map(|o| o.instruction.as_str()), eval_set)?;
    for (row, output) in outputs.iter().enumerate() {
        if output.output.is_empty() {
            warnings.push(FormatWarning {
                path: path.to_path_buf(),
                row: Some(row),
                kind: WarningKind::EmptyOutput {
                    field: "output",
                    instruction: InstructionPreview::of(&output.instruction),
                },
            });
        }
    }
    Ok(warnings)
}
