//! The `annotations.json` row for one verdict, built one way for every caller.

use serde_json::{Map, Value};

use crate::eval_set::REFERENCE_GENERATOR;
use crate::formats::annotations::Annotation;
use crate::jobs::{JudgeJob, JudgeMode, JudgeResult};

/// alpaca_eval's annotation row for `job` judged as `result`: `output_1` is the reference
/// (`gpt4_1106_preview`), `output_2` the model's answer, the preference in alpaca_eval's
/// orientation. herd's own facts go in `extra`: `is_switched_outputs` (alpaca_eval's name
/// for the swap column, which it drops from its files), `truncated`, `judge_mode`.
pub fn annotation_from(job: &JudgeJob, result: &JudgeResult) -> Annotation {
    let mut extra = Map::new();
    extra.insert("is_switched_outputs".into(), Value::Bool(result.is_switched));
    extra.insert("truncated".into(), Value::Bool(result.truncated));
    extra.insert("judge_mode".into(), Value::String(job.judge.mode.as_str().into()));
    Annotation {
        instruction: job.instruction.clone(),
        output_1: job.reference_output.clone(),
        generator_1: REFERENCE_GENERATOR.to_string(),
        dataset: job.dataset.clone(),
        output_2: job.model_output.clone(),
        generator_2: job.generator.clone(),
        annotator: result.judge.clone(),
        preference: result.preference,
        raw_completion: Some(raw_completion(job.judge.mode, &result.raw_completion)),
        time_per_example: Some(result.seconds),
        // A local judge has no price (alpaca_eval's vLLM decoder records NaN); a served
        // one's is its tokens at the judge's price.
        price_per_example: result.price,
        extra,
    }
}

/// The judge's raw answer as alpaca_eval writes it: the API's choice as an object for the
/// classification annotators (their `completions_all`), text otherwise.
fn raw_completion(mode: JudgeMode, raw: &str) -> Value {
    match mode {
        JudgeMode::WeightedClassification | JudgeMode::Classification => {
            serde_json::from_str::<Value>(raw)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::String(raw.to_string()))
        }
        JudgeMode::Ranking | JudgeMode::Logprob => Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JudgeSpec;

    #[test]
    fn a_classification_annotators_raw_answer_is_kept_as_the_object_it_was() {
        let choice = r#"{"logprobs": {"content": []}}"#;
        assert!(raw_completion(JudgeMode::WeightedClassification, choice).is_object());
        assert_eq!(raw_completion(JudgeMode::Ranking, choice), Value::String(choice.into()));
        assert_eq!(raw_completion(JudgeMode::Classification, "m"), Value::String("m".into()));
    }

    #[test]
    fn the_reference_is_output_1_and_the_model_output_2() {
        let job = JudgeJob {
            run_id: "r".into(),
            judge: JudgeSpec {
                name: "llama3_judge".into(),
                model: "m".into(),
                mode: JudgeMode::Logprob,
                max_new_tokens: 100,
                max_context_tokens: 7000,
                endpoint: None,
                price: None,
                config: None,
            },
            generator: "my-model".into(),
            index: 7,
            instruction: "Say hi".into(),
            dataset: "helpful_base".into(),
            reference_output: "Hello!".into(),
            model_output: "hi".into(),
        };
        let result = JudgeResult {
            run_id: "r".into(),
            judge: "llama3_judge".into(),
            generator: "my-model".into(),
            index: 7,
            preference: Some(1.25),
            raw_completion: "{}".into(),
            is_switched: true,
            truncated: false,
            prompt_tokens: 300,
            seconds: 0.5,
            worker: "w".into(),
            stored: None,
            price: None,
        };
        let row = annotation_from(&job, &result);
        assert_eq!(
            (row.output_1.as_str(), row.generator_1.as_str()),
            ("Hello!", "gpt4_1106_preview")
        );
        assert_eq!((row.output_2.as_str(), row.generator_2.as_str()), ("hi", "my-model"));
        assert_eq!(
            (row.annotator.as_str(), row.preference, row.dataset.as_str()),
            ("llama3_judge", Some(1.25), "helpful_base")
        );
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["is_switched_outputs"], true);
        assert_eq!(json["truncated"], false);
        assert_eq!(json["judge_mode"], "logprob");
        assert_eq!(json["raw_completion"], "{}");
        assert!(json.get("price_per_example").is_none());
    }
}
