//! alpaca_eval's `annotations.json`: one row per (instruction, model output) judged against
//! the reference. `output_1` is the reference, `output_2` the model under evaluation;
//! `preference` 1.0 = reference wins, 2.0 = model wins, 1.5 or 0 = draw, null = unparsed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
