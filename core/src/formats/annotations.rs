//! alpaca_eval's `annotations.json`: one row per (instruction, model output) judged against
//! the reference. `output_1` is the reference, `output_2` the model under evaluation;
//! `preference` 1.0 = reference wins, 2.0 = model wins, 1.5 or 0 = draw, null = unparsed.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::records::{
    column_order, parse_records, read_bytes, render_records, write_bytes, Record,
};
use super::{check_instructions, FormatError, FormatWarning, InstructionPreview, WarningKind};
use crate::eval_set::EvalSet;

/// The columns alpaca_eval writes, in the order most of its result files have them.
const COLUMNS: [&str; 11] = [
    "instruction",
    "output_1",
    "generator_1",
    "dataset",
    "output_2",
    "generator_2",
    "annotator",
    "preference",
    "price_per_example",
    "time_per_example",
    "raw_completion",
];
/// The columns every row has; the last three only some annotators write.
const REQUIRED_COLUMNS: [&str; 8] = [
    "instruction",
    "output_1",
    "generator_1",
    "dataset",
    "output_2",
    "generator_2",
    "annotator",
    "preference",
];

/// One judged pair, with alpaca_eval's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub instruction: String,
    /// The reference answer.
    pub output_1: String,
    pub generator_1: String,
    pub dataset: String,
    /// The answer under evaluation.
    pub output_2: String,
    pub generator_2: String,
    pub annotator: String,
    pub preference: Option<f64>,
    /// The judge's raw answer: a string for herd and for ranking annotators, an object
    /// (logprobs) for alpaca_eval's weighted annotators. Absent in some alpaca_eval files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_completion: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_per_example: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_example: Option<f64>,
    /// Fields alpaca_eval or herd added that this struct does not name; kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Annotation {
    fn from_record(mut record: Record<'_>) -> Result<Self, FormatError> {
        let instruction = record.take_string("instruction")?;
        let output_1 = record.take_string("output_1")?;
        let generator_1 = record.take_string("generator_1")?;
        let dataset = record.take_string("dataset")?;
        let output_2 = record.take_string("output_2")?;
        let generator_2 = record.take_string("generator_2")?;
        let annotator = record.take_string("annotator")?;
        let preference = record.take_nullable_number("preference")?;
        let price_per_example = record.take_optional_number("price_per_example")?;
        let time_per_example = record.take_optional_number("time_per_example")?;
        let raw_completion = record.take_optional_value("raw_completion");
        Ok(Self {
            instruction,
            output_1,
            generator_1,
            dataset,
            output_2,
            generator_2,
            annotator,
            preference,
            raw_completion,
            time_per_example,
            price_per_example,
            extra: record.into_extra(),
        })
    }

    fn to_record(&self) -> Map<String, Value> {
        let string = |s: &String| Value::String(s.clone());
        let number = |x: Option<f64>| x.and_then(serde_json::Number::from_f64).map(Value::Number);
        let mut record = Map::new();
        record.insert("instruction".into(), string(&self.instruction));
        record.insert("output_1".into(), string(&self.output_1));
        record.insert("generator_1".into(), string(&self.generator_1));
        record.insert("dataset".into(), string(&self.dataset));
        record.insert("output_2".into(), string(&self.output_2));
        record.insert("generator_2".into(), string(&self.generator_2));
        record.insert("annotator".into(), string(&self.annotator));
        record.insert("preference".into(), number(self.preference).unwrap_or(Value::Null));
        // Optional columns only where the row has them: a file where no row has one
        // does not get the column at all (alpaca_eval's files differ in this).
        if let Some(price) = number(self.price_per_example) {
            record.insert("price_per_example".into(), price);
        }
        if let Some(time) = number(self.time_per_example) {
            record.insert("time_per_example".into(), time);
        }
        if let Some(raw) = &self.raw_completion {
            record.insert("raw_completion".into(), raw.clone());
        }
        for (key, value) in &self.extra {
            record.entry(key.clone()).or_insert_with(|| value.clone());
        }
        record
    }

    /// The judge's raw answer as text: the string itself, or an object as pretty JSON.
    pub fn raw_completion_text(&self) -> Option<String> {
        match self.raw_completion.as_ref()? {
            Value::String(text) => Some(text.clone()),
            other => {
                Some(serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()))
            }
        }
    }
}

/// Reads `annotations.json` or `.json.gz` (alpaca_eval's or herd's).
pub fn read_annotations(path: impl AsRef<Path>) -> Result<Vec<Annotation>, FormatError> {
    let path = path.as_ref();
    parse_annotations(path, &read_bytes(path)?)
}

/// Parses the text of an `annotations.json`; `path` only names it in errors.
pub fn parse_annotations(path: &Path, json: &[u8]) -> Result<Vec<Annotation>, FormatError> {
    parse_records(path, json)?
        .into_iter()
        .enumerate()
        .map(|(row, fields)| Annotation::from_record(Record::new(path, row, fields)))
        .collect()
}

/// The text `write_annotations` writes.
pub fn render_annotations(annotations: &[Annotation]) -> String {
    let records: Vec<Map<String, Value>> = annotations.iter().map(Annotation::to_record).collect();
    render_records(&column_order(&COLUMNS, &REQUIRED_COLUMNS, &records), &records)
}

/// Writes pandas-style JSON (gzipped when the name ends in `.gz`).
pub fn write_annotations(
    path: impl AsRef<Path>,
    annotations: &[Annotation],
) -> Result<(), FormatError> {
    write_bytes(path.as_ref(), render_annotations(annotations).as_bytes())
}

/// Checks parsed rows against the eval set: an unknown or repeated instruction is an
/// error; an empty `output_2`, an unparsed or out-of-range preference and missing
/// instructions are warnings.
pub fn validate_annotations(
    path: &Path,
    annotations: &[Annotation],
    eval_set: &EvalSet,
) -> Result<Vec<FormatWarning>, FormatError> {
    let mut warnings =
        check_instructions(path, annotations.iter().map(|a| a.instruction.as_str()), eval_set)?;
    for (row, annotation) in annotations.iter().enumerate() {
        let instruction = || InstructionPreview::of(&annotation.instruction);
        let mut warn =
            |kind| warnings.push(FormatWarning { path: path.to_path_buf(), row: Some(row), kind });
        if annotation.output_2.is_empty() {
            warn(WarningKind::EmptyOutput { field: "output_2", instruction: instruction() });
        }
        match annotation.preference {
            None => warn(WarningKind::UnparsedPreference { instruction: instruction() }),
            Some(p) if p != 0.0 && !(1.0..=2.0).contains(&p) => {
                warn(WarningKind::PreferenceOutOfRange { value: p, instruction: instruction() })
            }
            Some(_) => {}
        }
    }
    Ok(warnings)
}
