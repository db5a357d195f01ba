//! The safetensors path against candle-transformers' own Llama on the same files.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use common::{temp_dir, TinyLlama, VOCAB};
use herd_engine::{
    BatchOptions, ChatMessage, FinishReason, GenerationRequest, LoadOptions, Model, ScoringOptions,
};

struct Reference {
    model: reference::Llama,
    config: reference::Config,
}

impl Reference {
    fn load(dir: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let config: reference::LlamaConfig = serde_json::from_str(&text).unwrap();
        let config = config.into_config(false);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap()
        };
        Self { model: reference::Llama::load(vb, &config).unwrap(), config }
    }

    /// Logits after `tokens`, computed from scratch.
    fn logits(&self, tokens: &[u32]) -> Vec<f32> {
        let mut cache =
            reference::Cache::new(true, DType::F32, &self.config, &Device::Cpu).unwrap();
        let input = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        self.model.forward(&input, 0, &mut cache).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
    }

    /// Greedy continuation of `prompt`, one token at a time with the reference's cache.
    fn greedy(&self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut cache =
            reference::Cache::new(true, DType::F32, &self.config, &Device::Cpu).unwrap();
        let mut input = prompt.to_vec();
        let mut pos = 0;
        let mut out = Vec::new();
        for _ in 0..n {
            let x = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let logits: Vec<f32> = self
                .model
                .forward(&x, pos, &mut cache)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            pos += input.len();
            let next = argmax(&logits);
            out.push(next);
            input = vec![next];
        }
        out
    }
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const PROMPT: [u32; 9] = [1, 5, 17, 3, 40, 22, 9, 31, 12];

fn check_logits_against_reference(spec: TinyLlama, name: &str) {
    let dir = temp_dir(name);
    spec.write(&dir);
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let reference = Reference::load(&dir);
    // Prefixes of different lengths, scored in packed batches; a small step budget also
    // splits the longer prompts into chunks.
    let prompts: Vec<Vec<u32>> = (2..=PROMPT.len()).map(|k| PROMPT[..k].to_vec()).collect();
    for budget in [4, 512] {
        let ours =
            model.next_token_logits(&prompts, &ScoringOptions { max_step_tokens: budget }).unwrap();
        for (p, logits) in prompts.iter().zip(&ours) {
            assert_eq!(logits.len(), VOCAB);
            let expected = reference.logits(p);
            let diff = max_abs_diff(logits, &expected);
            assert!(
                diff < 1e-4,
                "{name}: prompt of {} tokens, budget {budget}: max |diff| {diff}",
                p.len()
            );
        }
    }
}

#[test]
fn logits_match_reference_for_untied_f32_with_llama3_rope_scaling() {
    check_logits_against_reference(
        TinyLlama { llama3_rope: true, ..Default::default() },
        "untied-llama3",
    );
}

#[test]
fn logits_match_reference_for_tied_bf16_sharded_weights() {
    check_logits_against_reference(
        TinyLlama {
            tie_word_embeddings: true,
            dtype: DType::BF16,
            shards: 3,
            seed: 11,
            ..Default::default()
        },
        "tied-bf16-sharded",
    );
}

#[test]
fn sharded_folder_loads_the_same_model_as_a_single_file() {
    let single = temp_dir("single");
    let sharded = temp_dir("sharded");
    TinyLlama { seed: 3, ..Default::default() }.write(&single);
    TinyLlama { seed: 3, shards: 2, ..Default::default() }.write(&sharded);
    assert!(sharded.join("model.safetensors.index.json").is_file());
    assert!(!sharded.join("model.safetensors").exists());
    let a = Model::load(single.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let b = Model::load(sharded.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let prompts = vec![PROMPT.to_vec()];
    let la = a.next_token_logits(&prompts, &ScoringOptions::default()).unwrap();
    let lb = b.next_token_logits(&prompts, &ScoringOptions::default()).unwrap();
    assert_eq!(la, lb);
}

#[test]
fn batched_greedy_generation_matches_reference_step_by_step() {
    let dir = temp_dir("greedy");
    TinyLlama { seed: 5, ..Default::default() }.write(&dir);
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let reference = Reference::load(&dir);
    let prompts: Vec<Vec<u32>> =
        vec![PROMPT.to_vec(), PROMPT[..3].to_vec(), PROMPT[2..].to_vec(), vec![1, 44]];
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .enumerate()
        .map(|(id, p)| GenerationRequest {
            id,
            prompt_tokens: p.clone(),
            max_new_tokens: 12,
            stop: vec![],
            ..Default::default()
        })
        .collect();
    // Batch of 2 over 4 requests: later ones are admitted as earlier ones finish, and a
    // 5-token step budget forces chunked prefills that ride along with decodes.
    let options = BatchOptions { max_batch_size: 2, max_step_tokens: 5, ignore_eos: true };
    let outputs = model.generate_all(requests, &options).unwrap();
    for (p, out) in prompts.iter().zip(&outputs) {
        let expected = reference.greedy(p, 12);
        assert_eq!(out.tokens, expected, "prompt {p:?}");
        assert_eq!(out.finish_reason, FinishReason::Length);
        assert_eq!(out.prompt_tokens, p.len());
        assert_eq!(out.output_tokens, 12);
    }
}

#[test]
fn hugging_face_folder_renders_its_chat_template_and_tokenizes_specials() {
    let dir = temp_dir("chat");
    TinyLlama::default().write(&dir);
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let messages = [ChatMessage::new("user", "w5 w6")];
    let text = model.render_chat(&messages, true).unwrap();
    assert_eq!(text, "<s>user: w5 w6 assistant:");
    let ids = model.chat_prompt(&messages).unwrap();
    assert_eq!(&ids[..4], &[1, 0, 0, 5], "{ids:?}"); // <s> user : w5 …
    assert_eq!(model.tokenizer.end_of_generation_ids(), &[2]);
}
