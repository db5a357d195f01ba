//! The official annotator's prompt as alpaca_eval 0.6.6 sends it: the classification
//! template (`data/prompts/alpaca_eval_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`)
//! filled by `utils.make_prompts` and split by `utils.prompt_to_chatml`, for eval-set pairs
//! and for outputs that carry placeholders and ChatML markers. `fixtures/clf_prompts.jsonl`
//! was written by alpaca_eval's own functions (PyPI alpaca_eval 0.6.6, Python 3.11):
//! `make_prompts(pd.DataFrame([pair]), template, batch_size=1)` then `prompt_to_chatml`.

use herd_core::judge::chatml::{chatml_messages, fill_template, ChatRequestMessage};

const TEMPLATE: &str = include_str!(
    "../../data/prompts/alpaca_eval_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
);

#[derive(serde::Deserialize)]
struct Case {
    instruction: String,
    output_1: String,
    output_2: String,
    prompt: String,
    messages: Vec<ChatRequestMessage>,
}

#[test]
fn herd_fills_and_splits_the_clf_prompt_as_alpaca_eval_does() {
    let cases: Vec<Case> = include_str!("fixtures/clf_prompts.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(cases.len(), 6);
    for (i, case) in cases.iter().enumerate() {
        let prompt = fill_template(TEMPLATE, |name| match name {
            "instruction" => Some(case.instruction.as_str()),
            "output_1" => Some(case.output_1.as_str()),
            "output_2" => Some(case.output_2.as_str()),
            _ => None,
        });
        assert_eq!(prompt, case.prompt, "case {i}: the filled prompt");
        assert_eq!(chatml_messages(&prompt).unwrap(), case.messages, "case {i}: the messages");
    }
    // The hostile case: the instruction's {output_2} received output_2 (filled first), and
    // its <|im_end|> cut the user message there.
    assert!(
        cases[4].messages[1].content.ends_with("Quote   padded\n and"),
        "{:?}",
        cases[4].messages[1]
    );
}
