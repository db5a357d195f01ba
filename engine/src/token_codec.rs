//! The seam between the engine and a tokenizer: text ↔ token ids, the special tokens that
//! end generation, and the chat template that ships with the model.
//!
//! Hugging Face folders use their `tokenizer.json`. GGUF files build a byte-level BPE from
//! the `tokenizer.ggml.*` metadata (through candle); `crate::tokenizer` (llama.cpp-identical)
//! replaces that path when it lands.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};

/// Tokens that end a turn in common chat formats; any that exist in a vocabulary stop
/// generation, as llama.cpp does with its end-of-generation set.
const END_OF_GENERATION_TOKENS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "</s>",
];

#[derive(Debug, Clone)]
pub struct TokenCodec {
    inner: Tokenizer,
    /// GGUF tokenizers prepend BOS themselves when `add_special` is asked for.
    manual_bos: Option<u32>,
    end_of_generation: Vec<u32>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    chat_template: Option<String>,
}

impl TokenCodec {
    /// From a Hugging Face folder: tokenizer.json, tokenizer_config.json and, when present,
    /// the end-of-sequence ids of config.json and generation_config.json.
    pub fn from_hf_folder(dir: &Path) -> Result<Self> {
        let bad = |reason: String| EngineError::Tokenizer { path: dir.into(), reason };
        let tokenizer_json = dir.join("tokenizer.json");
        if !tokenizer_json.is_file() {
            return Err(EngineError::MissingTokenizer { dir: dir.into() });
        }
        let inner = Tokenizer::from_file(&tokenizer_json).map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        let read_json = |name: &str| -> Result<Option<Value>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|source| EngineError::Io { path: path.clone(), source })?;
            serde_json::from_str(&text).map(Some).map_err(|e| bad(format!("{name}: {e}")))
        };
        let tokenizer_config = read_json("tokenizer_config.json")?.unwrap_or(Value::Null);
        let token_text = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
                _ => None,
            }
        };
        let bos_token = tokenizer_config.get("bos_token").and_then(token_text);
        let eos_token = tokenizer_config.get("eos_token").and_then(token_text);
        let chat_template = match tokenizer_config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(String::from),
            _ => None,
        };
        let chat_template = match chat_template {
            Some(t) => Some(t),
            None => {
                let path = dir.join("chat_template.jinja");
                path.is_file()
                    .then(|| std::fs::read_to_string(&path).map_err(|source| EngineError::Io { path: path.clone(), source }))
                    .transpose()?
            }
        };
        let mut eos_ids = BTreeSet::new();
        for name in ["config.json", "generation_config.json"] {
            if let Some(cfg) = read_json(name)? {
                match cfg.get("eos_token_id") {
                    Some(Value::Number(n)) => eos_ids.extend(n.as_u64().map(|v| v as u32)),
                    Some(Value::Array(a)) => eos_ids.extend(a.iter().filter_map(Value::as_u64).map(|v| v as u32)),
                    _ => {}
                }
            }
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_ids.insert(id);
        }
        let mut codec = Self { inner, manual_bos: None, end_of_generation: Vec::new(), bos_token, eos_token, chat_template };
        codec.end_of_generation = codec.with_named_end_tokens(eos_ids);
        Ok(codec)
    }

    /// From GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let bad = |reason: String| EngineError::Tokenizer { path: path.into(), reason };
        let md = &content.metadata;
        let get_u32 = |k: &str| md.get(k).and_then(|v| v.to_u64().ok()).map(|v| v as u32);
        let get_bool = |k: &str| md.get(k).and_then(|v| v.to_bool().ok());
        let mut inner = Tokenizer::from_gguf(content).map_err(|e| bad(e.to_string()))?;
        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if !matches!(pre.as_str(), "qwen2" | "llama3" | "smaug-bpe" | "lfm2") {
            // GPT-2 style vocabularies (SmolLM, StarCoder): byte-level, no prefix space.
            use tokenizers::pre_tokenizers::byte_level::ByteLevel;
            inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            inner.with_post_processor(None::<tokenizers::processors::PostProcessorWrapper>);
        }
        let tokens = md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok());
        let token_at = |id: Option<u32>| -> Option<String> {
            let id = id? as usize;
            tokens.and_then(|t| t.get(id)).and_then(|v| v.to_string().ok()).cloned()
        };
        let bos_id = get_u32("tokenizer.ggml.bos_token_id");
        let eos_id = get_u32("tokenizer.ggml.eos_token_id");
        let mut eos_ids: BTreeSet<u32> = eos_id.into_iter().collect();
        eos_ids.extend(get_u32("tokenizer.ggml.eot_token_id"));
        eos_ids.extend(get_u32("tokenizer.ggml.eom_token_id"));
        let chat_template = md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let add_bos = get_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
        let mut codec = Self {
            inner,
            manual_bos: if add_bos { bos_id } else { None },
            end_of_generation: Vec::new(),
            bos_token: token_at(bos_id),
            eos_token: token_at(eos_id),
            chat_template,
        };
        codec.end_of_generation = codec.with_named_end_tokens(eos_ids);
        Ok(codec)
    }

    fn with_named_end_tokens(&self, mut ids: BTreeSet<u32>) -> Vec<u32> {
        ids.extend(END_OF_GENERATION_TOKENS.iter().filter_map(|t| self.inner.token_to_id(t)));
        ids.into_iter().collect()
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are parsed as
    /// such; `add_special` adds what the model expects around a plain prompt (BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special).map_err(|e| EngineError::Tokenizer {
            path: "<tokenizer>".into(),
            reason: format!("encoding: {e}"),
        })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special {
            if let Some(bos) = self.manual_bos {
                if enc.get_ids().first() != Some(&bos) {
                    ids.push(bos);
                }
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| EngineError::Tokenizer { path: "<tokenizer>".into(), reason: format!("decoding: {e}") })
    }

    /// Ids that end generation (EOS and the end-of-turn tokens of the vocabulary).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
