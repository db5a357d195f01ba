//! The seam between the engine and a tokenizer: text ↔ token ids, the special tokens that
//! end generation, and the chat template that ships with the model.
//!
//! GGUF files and byte-level BPE Hugging Face folders (GPT-2, Llama 3, Qwen, SmolLM) use
//! [`HerdTokenizer`], which tokenizes exactly as llama.cpp does. Other Hugging Face
//! tokenizers (word-level, SentencePiece-style) fall back to the `tokenizers` crate as is.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};
use crate::tokenizer::{tokenizer_from_gguf, HerdTokenizer, TokenizerError};

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
enum Inner {
    LlamaCpp(Box<HerdTokenizer>),
    HuggingFace(Box<Tokenizer>),
}

#[derive(Debug, Clone)]
pub struct TokenCodec {
    inner: Inner,
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
        if is_byte_level(&tokenizer_json) {
            let herd = HerdTokenizer::from_hf_dir(dir).map_err(|e| bad(e.to_string()))?;
            return Ok(Self::from_herd(herd));
        }
        let inner = Tokenizer::from_file(&tokenizer_json)
            .map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        let read_json = |name: &str| -> Result<Option<Value>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|source| EngineError::Io { path: path.clone(), source })?;
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
                    .then(|| {
                        std::fs::read_to_string(&path)
                            .map_err(|source| EngineError::Io { path: path.clone(), source })
                    })
                    .transpose()?
            }
        };
        let mut eos_ids = BTreeSet::new();
        for name in ["config.json", "generation_config.json"] {
            if let Some(cfg) = read_json(name)? {
                match cfg.get("eos_token_id") {
                    Some(Value::Number(n)) => eos_ids.extend(n.as_u64().map(|v| v as u32)),
                    Some(Value::Array(a)) => {
                        eos_ids.extend(a.iter().filter_map(Value::as_u64).map(|v| v as u32))
                    }
                    _ => {}
                }
            }
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_ids.insert(id);
        }
        eos_ids.extend(END_OF_GENERATION_TOKENS.iter().filter_map(|t| inner.token_to_id(t)));
        Ok(Self {
            inner: Inner::HuggingFace(Box::new(inner)),
            end_of_generation: eos_ids.into_iter().collect(),
            bos_token,
            eos_token,
            chat_template,
        })
    }

    fn from_herd(herd: HerdTokenizer) -> Self {
        let text = |id: Option<u32>| id.and_then(|id| herd.token_text(id)).map(String::from);
        Self {
            end_of_generation: herd.end_of_generation_ids().to_vec(),
            bos_token: text(herd.bos_id()),
            eos_token: text(herd.eos_id()),
            chat_template: herd.chat_template().map(String::from),
            inner: Inner::LlamaCpp(Box::new(herd)),
        }
    }

    /// From GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let herd = tokenizer_from_gguf(content)
            .map_err(|e| EngineError::Tokenizer { path: path.into(), reason: e.to_string() })?;
        Ok(Self::from_herd(herd))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are parsed as
    /// such; `add_special` adds what the model expects around a plain prompt (BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::LlamaCpp(t) => t.encode(text, true, add_special).map_err(codec_error),
            Inner::HuggingFace(t) => Ok(t
                .encode(text, add_special)
                .map_err(|e| EngineError::Tokenizer {
                    path: "<tokenizer>".into(),
                    reason: format!("encoding: {e}"),
                })?
                .get_ids()
                .to_vec()),
        }
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.inner {
            Inner::LlamaCpp(t) => t.decode(ids, false).map_err(codec_error),
            Inner::HuggingFace(t) => t.decode(ids, true).map_err(|e| EngineError::Tokenizer {
                path: "<tokenizer>".into(),
                reason: format!("decoding: {e}"),
            }),
        }
    }

    /// Like [`Self::decode`], with special tokens written out (`<|im_end|>`, ...).
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String> {
        match &self.inner {
            Inner::LlamaCpp(t) => t.decode(ids, true).map_err(codec_error),
            Inner::HuggingFace(t) => t.decode(ids, false).map_err(|e| EngineError::Tokenizer {
                path: "<tokenizer>".into(),
                reason: format!("decoding: {e}"),
            }),
        }
    }

    /// Ids that end generation (EOS and the end-of-turn tokens of the vocabulary).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The id of a token written as its vocabulary text (`<|im_end|>`, `1`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::LlamaCpp(t) => t.token_id(token),
            Inner::HuggingFace(t) => t.token_to_id(token),
        }
    }

    /// The llama.cpp-identical tokenizer, when this model uses one.
    pub fn llama_cpp_tokenizer(&self) -> Option<&HerdTokenizer> {
        match &self.inner {
            Inner::LlamaCpp(t) => Some(t),
            Inner::HuggingFace(_) => None,
        }
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

fn codec_error(e: TokenizerError) -> EngineError {
    EngineError::Tokenizer { path: "<tokenizer>".into(), reason: e.to_string() }
}

/// Whether a tokenizer.json decodes byte-level (GPT-2 style BPE).
fn is_byte_level(tokenizer_json: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(tokenizer_json) else { return false };
    let Ok(json) = serde_json::from_str::<Value>(&text) else { return false };
    let decoder = &json["decoder"];
    decoder["type"] == "ByteLevel"
        || decoder["decoders"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["type"] == "ByteLevel"))
}
