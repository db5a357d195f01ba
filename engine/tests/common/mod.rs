//! A tiny Llama written by the tests themselves: random weights in safetensors, a
//! config.json and a word-level tokenizer.json; and where herd's default model lies.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::json;

pub const VOCAB: usize = 48;
pub const HIDDEN: usize = 64;
pub const INTERMEDIATE: usize = 96;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = HIDDEN / HEADS;

#[derive(Debug, Clone, Copy)]
pub struct TinyLlama {
    pub tie_word_embeddings: bool,
    pub dtype: DType,
    pub shards: usize,
    pub llama3_rope: bool,
    pub seed: u64,
}

impl Default for TinyLlama {
    fn default() -> Self {
        Self {
            tie_word_embeddings: false,
            dtype: DType::F32,
            shards: 1,
            llama3_rope: false,
            seed: 7,
        }
    }
}

/// xorshift64*: deterministic weights without an RNG crate.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.next_f32() * scale).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }
}

pub fn words() -> Vec<String> {
    let mut v: Vec<String> = ["<unk>", "<s>", "</s>"].iter().map(|s| s.to_string()).collect();
    v.extend((v.len()..VOCAB).map(|i| format!("w{i}")));
    v
}

impl TinyLlama {
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": VOCAB,
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 256,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": match self.dtype { DType::BF16 => "bfloat16", DType::F16 => "float16", _ => "float32" },
        });
        if self.llama3_rope {
            config["rope_scaling"] = json!({
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16
            });
        }
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap())
            .unwrap();
        write_word_level_tokenizer(dir);

        let mut rng = Rng(self.seed);
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        tensors.push(("model.embed_tokens.weight".into(), rng.tensor(&[VOCAB, HIDDEN], 1.0)));
        for i in 0..LAYERS {
            let p = format!("model.layers.{i}");
            let s = 1.0 / (HIDDEN as f32).sqrt() * 1.7;
            tensors.push((
                format!("{p}.self_attn.q_proj.weight"),
                rng.tensor(&[HEADS * HEAD_DIM, HIDDEN], s),
            ));
            tensors.push((
                format!("{p}.self_attn.k_proj.weight"),
                rng.tensor(&[KV_HEADS * HEAD_DIM, HIDDEN], s),
            ));
            tensors.push((
                format!("{p}.self_attn.v_proj.weight"),
                rng.tensor(&[KV_HEADS * HEAD_DIM, HIDDEN], s),
            ));
            tensors.push((
                format!("{p}.self_attn.o_proj.weight"),
                rng.tensor(&[HIDDEN, HEADS * HEAD_DIM], s),
            ));
            tensors.push((
                format!("{p}.mlp.gate_proj.weight"),
                rng.tensor(&[INTERMEDIATE, HIDDEN], s),
            ));
            tensors
                .push((format!("{p}.mlp.up_proj.weight"), rng.tensor(&[INTERMEDIATE, HIDDEN], s)));
            tensors.push((
                format!("{p}.mlp.down_proj.weight"),
                rng.tensor(&[HIDDEN, INTERMEDIATE], 1.0 / (INTERMEDIATE as f32).sqrt()),
            ));
            tensors.push((
                format!("{p}.input_layernorm.weight"),
                (rng.tensor(&[HIDDEN], 0.2) + 1.0).unwrap(),
            ));
            tensors.push((
                format!("{p}.post_attention_layernorm.weight"),
                (rng.tensor(&[HIDDEN], 0.2) + 1.0).unwrap(),
            ));
        }
        tensors.push(("model.norm.weight".into(), (rng.tensor(&[HIDDEN], 0.2) + 1.0).unwrap()));
        if !self.tie_word_embeddings {
            tensors.push(("lm_head.weight".into(), rng.tensor(&[VOCAB, HIDDEN], 0.5)));
        }
        let tensors: Vec<(String, Tensor)> =
            tensors.into_iter().map(|(n, t)| (n, t.to_dtype(self.dtype).unwrap())).collect();

        if self.shards <= 1 {
            let map: HashMap<String, Tensor> = tensors.into_iter().collect();
            candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
            return;
        }
        let mut weight_map = serde_json::Map::new();
        let per_shard = tensors.len().div_ceil(self.shards);
        for (s, chunk) in tensors.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, self.shards);
            for (name, _) in chunk {
                weight_map.insert(name.clone(), json!(file));
            }
            let map: HashMap<String, Tensor> = chunk.iter().cloned().collect();
            candle_core::safetensors::save(&map, dir.join(&file)).unwrap();
        }
        let index = json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

/// A whitespace-split word-level tokenizer over [`words`], with `<s>`/`</s>` special.
pub fn write_word_level_tokenizer(dir: &Path) {
    let words = words();
    let vocab: serde_json::Map<String, serde_json::Value> =
        words.iter().enumerate().map(|(i, w)| (w.clone(), json!(i))).collect();
    let added: Vec<serde_json::Value> = words[..3]
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"id": i, "content": w, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let tokenizer_config = json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string()).unwrap();
}

/// A fresh temporary folder under the target dir (no tempfile dependency).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herd-engine-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// SmolLM2-135M-Instruct's Q4_1 GGUF in the model cache (`$HERD_MODEL_CACHE`, else
/// `~/.cache/herd/models`). The engine fetches nothing: the file must be there.
pub fn smollm2_gguf() -> PathBuf {
    cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", "scripts/fetch-default-model.sh")
}

/// Gemma 3 270M (base), Q4_K_M GGUF, in the model cache.
#[allow(dead_code)]
pub fn gemma3_gguf() -> PathBuf {
    cached_model("gemma-3-270m-q4_k_m.gguf", "scripts/fetch-gemma3-270m.sh")
}

fn cached_model(file: &str, fetch: &str) -> PathBuf {
    let cache = std::env::var_os("HERD_MODEL_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/herd/models")
        });
    let path = cache.join(file);
    assert!(
        path.is_file(),
        "{} is missing: run {fetch} (HERD_MODEL_CACHE moves the cache)",
        path.display()
    );
    path
}
