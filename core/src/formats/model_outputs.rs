//! alpaca_eval's `model_outputs.json`: a JSON array of `{instruction, output, generator, dataset}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
