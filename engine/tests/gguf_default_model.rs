//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF): templates, deterministic batched
//! greedy generation, stopping, and next-token scores.

mod common;

use std::sync::OnceLock;

use common::smollm2_gguf;
use herd_engine::{
    BatchOptions, ChatMessage, FinishReason, GenerationOutput, GenerationRequest, LoadOptions,
    Model, ScoringOptions, WeightFormat,
};

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        Model::load(smollm2_gguf(), &LoadOptions::default()).expect("default model loads")
    })
}

const INSTRUCTIONS: [&str; 6] = [
    "What are the names of some famous actors that started their careers on Broadway?",
    "How did US states get their names?",
    "Hi, my sister and her girlfriends want me to play kickball with them. Can you explain me the rules of kickball?",
    "What is some cool music from the 1920s?",
    "How do I wrap a present neatly?",
    "Write a haiku about autumn leaves falling on a quiet pond, and then explain the imagery you chose in two sentences.",
];

/// `instruction` as the user turn of the model's chat template.
fn chat(instruction: &str) -> Vec<u32> {
    model().chat_prompt(&[ChatMessage::new("user", instruction)]).unwrap()
}

fn requests(max_new_tokens: usize, stop: &[&str]) -> Vec<GenerationRequest> {
    INSTRUCTIONS
        .iter()
        .enumerate()
        .map(|(id, i)| GenerationRequest {
            id,
            prompt_tokens: chat(i),
            max_new_tokens,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

fn tokens(outputs: &[GenerationOutput]) -> Vec<Vec<u32>> {
    outputs.iter().map(|o| o.tokens.clone()).collect()
}

#[test]
fn chat_prompt_is_smollm2_chatml_with_its_default_system_turn() {
    let text = model().render_chat(&[ChatMessage::new("user", "Name a color.")], true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = chat("Name a color.");
    assert_eq!(ids, model().encode(&text, false).unwrap(), "the rendering, no tokens added");
    assert_eq!(ids[0], 1, "<|im_start|> is one special token");
    assert_eq!(*ids.last().unwrap(), 198, "ends with the newline after 'assistant'");
    let judge = model()
        .render_chat(
            &[
                ChatMessage::new("system", "You rank answers."),
                ChatMessage::new("user", "Which is better?"),
            ],
            true,
        )
        .unwrap();
    assert!(judge.starts_with("<|im_start|>system\nYou rank answers.<|im_end|>\n<|im_start|>user\nWhich is better?<|im_end|>\n"));
    // <|endoftext|> and <|im_end|> (EOS), plus what llama.cpp also counts as end of
    // generation in this vocabulary (FIM tokens).
    let eog = model().tokenizer.end_of_generation_ids();
    assert!(eog.contains(&0) && eog.contains(&2), "{eog:?}");
    assert!(!eog.contains(&1), "<|im_start|> does not end generation");
}

#[test]
fn plain_text_encodes_with_the_tokenizers_special_tokens() {
    let raw = model().encode("Hello world", true).unwrap();
    assert_eq!(model().tokenizer.decode(&raw).unwrap(), "Hello world");
}

#[test]
fn greedy_generation_is_deterministic_and_does_not_depend_on_batching() {
    let batched = BatchOptions { max_batch_size: 6, max_step_tokens: 512, ignore_eos: true };
    let first = model().generate_all(requests(40, &[]), &batched).unwrap();
    let again = model().generate_all(requests(40, &[]), &batched).unwrap();
    assert_eq!(tokens(&first), tokens(&again), "same batch, same output");

    // One at a time, and a batch of 4 with a 64-token step budget (chunked prefills mixed
    // with decodes): the same tokens.
    let alone = model()
        .generate_all(
            requests(40, &[]),
            &BatchOptions { max_batch_size: 1, max_step_tokens: 512, ignore_eos: true },
        )
        .unwrap();
    let chunked = model()
        .generate_all(
            requests(40, &[]),
            &BatchOptions { max_batch_size: 4, max_step_tokens: 64, ignore_eos: true },
        )
        .unwrap();
    for (i, ((a, b), c)) in first.iter().zip(&alone).zip(&chunked).enumerate() {
        assert_eq!(a.tokens, b.tokens, "request {i}: batched vs alone\n{:?}\n{:?}", a.text, b.text);
        assert_eq!(
            a.tokens, c.tokens,
            "request {i}: batched vs chunked prefill\n{:?}\n{:?}",
            a.text, c.text
        );
        assert_eq!(a.output_tokens, 40);
        assert_eq!(a.finish_reason, FinishReason::Length);
        assert!(!a.text.trim().is_empty());
    }
}

#[test]
fn generation_stops_at_end_of_generation_token() {
    let request = GenerationRequest {
        id: 7,
        prompt_tokens: chat("Reply with just the word yes."),
        max_new_tokens: 200,
        stop: vec![],
        ..Default::default()
    };
    let out = model().generate_all(vec![request], &BatchOptions::default()).unwrap().remove(0);
    assert_eq!(out.finish_reason, FinishReason::Eos, "{:?}", out.text);
    assert!(out.output_tokens < 200);
    assert!(model().tokenizer.end_of_generation_ids().contains(out.tokens.last().unwrap()));
    assert!(!out.text.contains("<|im_end|>"));
    assert_eq!(out.id, 7);
}

#[test]
fn generation_stops_before_a_stop_string_even_across_tokens() {
    let free = model()
        .generate_all(requests(60, &[]), &BatchOptions { ignore_eos: true, ..Default::default() })
        .unwrap();
    let text = &free[2].text;
    // A stop string that starts inside one token and ends in a later one: the middle of
    // the answer, spanning a space.
    let start = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let space = start + text[start..].find(' ').expect("a space in the answer");
    let stop: String = text[space - 2..space + 3].to_string();
    let cut = text.find(&stop).unwrap();
    let stopped = model()
        .generate_all(
            requests(60, &[stop.as_str(), "never appears ~~~"]),
            &BatchOptions { ignore_eos: true, ..Default::default() },
        )
        .unwrap();
    assert_eq!(stopped[2].finish_reason, FinishReason::Stop);
    assert_eq!(stopped[2].text, text[..cut], "stop {stop:?}");
    assert!(stopped[2].output_tokens < 60);
    assert_eq!(&stopped[2].tokens[..], &free[2].tokens[..stopped[2].output_tokens]);
}

#[test]
fn generation_stops_at_max_new_tokens() {
    let out = model()
        .generate_all(requests(5, &[]), &BatchOptions { ignore_eos: true, ..Default::default() })
        .unwrap();
    for o in out {
        assert_eq!(o.output_tokens, 5);
        assert_eq!(o.tokens.len(), 5);
        assert_eq!(o.finish_reason, FinishReason::Length);
        assert!(o.prompt_tokens > 20);
        assert!(o.seconds >= o.first_token_seconds && o.first_token_seconds > 0.0);
    }
}

#[test]
fn next_token_scores_agree_with_the_first_generated_token() {
    let prompts: Vec<Vec<u32>> = requests(1, &[]).into_iter().map(|r| r.prompt_tokens).collect();
    let generated = model()
        .generate_all(requests(1, &[]), &BatchOptions { ignore_eos: true, ..Default::default() })
        .unwrap();
    let candidates =
        [model().tokenizer.token_id("1").unwrap(), model().tokenizer.token_id("2").unwrap()];
    // A 100-token budget makes several prompts span passes.
    let scores = model()
        .next_token_logprobs(&prompts, &candidates, &ScoringOptions { max_step_tokens: 100 })
        .unwrap();
    for ((s, g), p) in scores.iter().zip(&generated).zip(&prompts) {
        assert_eq!(s.top_token, g.tokens[0]);
        assert_eq!(s.prompt_tokens, p.len());
        assert!(s.top_logprob <= 0.0 && s.top_logprob > -5.0);
        for &lp in &s.candidate_logprobs {
            assert!(
                lp < s.top_logprob || s.top_token == candidates[0] || s.top_token == candidates[1]
            );
            assert!(lp.is_finite());
        }
    }
}

/// Greatest |difference| of the log-softmax of two logit vectors.
fn max_logprob_diff(a: &[f32], b: &[f32]) -> f32 {
    let log_softmax = |v: &[f32]| {
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = max + v.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        v.iter().map(|x| x - log_z).collect::<Vec<f32>>()
    };
    log_softmax(a).iter().zip(&log_softmax(b)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn chunked_prefill_computes_the_same_next_token() {
    let prompt = requests(1, &[]).swap_remove(0).prompt_tokens;
    let argmax =
        |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap();
    // Dense f32 weights: chunking only reorders f32 sums in attention.
    let dense =
        Model::load(smollm2_gguf(), &LoadOptions { weight_format: WeightFormat::Dense }).unwrap();
    let whole =
        dense.next_token_logits(std::slice::from_ref(&prompt), &ScoringOptions::default()).unwrap();
    let chunked = dense
        .next_token_logits(std::slice::from_ref(&prompt), &ScoringOptions { max_step_tokens: 7 })
        .unwrap();
    let diff = whole[0].iter().zip(&chunked[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-3, "dense: chunked prefill changes logits by {diff}");
    assert_eq!(argmax(&whole[0]), argmax(&chunked[0]));
}

/// The default path (GGUF blocks × 8-bit activations, per-row attention) computes every
/// position with the same operations however the work is grouped: the logits after a
/// prompt are the same bits whether it is prefilled in one pass, in 7-token chunks, or
/// packed with the other prompts into passes of 100 tokens. (Without this, last-bit
/// differences cross an 8-bit rounding boundary now and then and greedy answers change
/// with the batch size.)
#[test]
fn the_default_models_logits_do_not_depend_on_chunking_or_batching() {
    let prompts: Vec<Vec<u32>> = requests(1, &[]).into_iter().map(|r| r.prompt_tokens).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let together =
        model().next_token_logits(&prompts, &ScoringOptions { max_step_tokens: 100 }).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        for budget in [512, 7] {
            let alone = model()
                .next_token_logits(
                    std::slice::from_ref(prompt),
                    &ScoringOptions { max_step_tokens: budget },
                )
                .unwrap();
            assert!(
                bits(&alone[0]) == bits(&together[i]),
                "prompt {i}, alone with a {budget}-token budget vs packed with the others: \
                 log-probabilities differ by up to {}",
                max_logprob_diff(&alone[0], &together[i])
            );
        }
    }
}
