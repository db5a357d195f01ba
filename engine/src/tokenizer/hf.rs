//! Building the tokenizer from a Hugging Face model folder: `tokenizer.json`,
//! `tokenizer_config.json` (special tokens, BOS/EOS, chat template) and, when present,
//! `chat_template.jinja` and `generation_config.json` (extra end-of-generation ids).

use std::path::Path;

use serde_json::Value as Json;
use tokenizers::Tokenizer;

use super::byte_level::BYTE_LEVEL;
use super::special::SpecialToken;
use super::{
    ids_named, HerdTokenizer, TextEncoder, TokenKind, TokenizerError, TokenizerParts,
    END_OF_GENERATION_NAMES, FIM_CONTROL_NAMES, FIM_STOP_NAMES,
};

impl HerdTokenizer {
    /// The tokenizer of a Hugging Face model folder. Only byte-level BPE tokenizers
    /// (GPT-2, Llama 3, Qwen, SmolLM, ...) are supported.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tokenizer_path = dir.join("tokenizer.json");
        let folder_error = |path: &Path, message: String| TokenizerError::HfFolder {
            path: path.to_path_buf(),
            message,
        };
        let tokenizer_json = read_json(&tokenizer_path)?;
        if !is_byte_level(&tokenizer_json) {
            return Err(folder_error(
                &tokenizer_path,
                "only byte-level BPE tokenizers (a ByteLevel decoder) are supported".into(),
            ));
        }
        let mut inner = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| folder_error(&tokenizer_path, e.to_string()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() { read_json(&config_path)? } else { Json::Null };

        let vocab = inner.get_vocab(true);
        let n = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut token_texts = vec![String::new(); n];
        let mut kinds = vec![TokenKind::Undefined; n];
        for (text, &id) in &vocab {
            token_texts[id as usize] = text.clone();
            kinds[id as usize] = TokenKind::Normal;
        }
        let mut special_tokens = Vec::new();
        for (&id, added) in inner.get_added_tokens_decoder().iter() {
            let kind = if added.special { TokenKind::Control } else { TokenKind::UserDefined };
            kinds[id as usize] = kind;
            special_tokens.push(SpecialToken {
                id,
                text: added.content.clone(),
                kind,
                lstrip: added.lstrip,
                rstrip: added.rstrip,
            });
        }
        let named_stops = ids_named(&token_texts, END_OF_GENERATION_NAMES);
        let named_fim_stops = ids_named(&token_texts, FIM_STOP_NAMES);
        for &id in named_stops
            .iter()
            .chain(&named_fim_stops)
            .chain(&ids_named(&token_texts, FIM_CONTROL_NAMES))
        {
            if kinds[id as usize] == TokenKind::Normal {
                kinds[id as usize] = TokenKind::Control;
                special_tokens.push(SpecialToken {
                    id,
                    text: token_texts[id as usize].clone(),
                    kind: TokenKind::Control,
                    lstrip: false,
                    rstrip: false,
                });
            }
        }

        let token_id = |field: &str| -> Result<Option<u32>, TokenizerError> {
            let Some(text) = special_token_content(&config[field]) else {
                return Ok(None);
            };
            vocab.get(text).copied().map(Some).ok_or_else(|| {
                folder_error(&config_path, format!("{field} {text:?} is not in the vocabulary"))
            })
        };
        let bos = token_id("bos_token")?;
        let eos = token_id("eos_token")?;
        let pad = token_id("pad_token")?;

        // Whether BOS/EOS are added: the config says so, or else the post-processor
        // shows it (Llama 3's TemplateProcessing adds BOS).
        let probe = |add: bool| inner.encode_fast("a", add).map(|e| e.get_ids().to_vec());
        let (bare, with_special) = match (probe(false), probe(true)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Err(folder_error(&tokenizer_path, e.to_string())),
        };
        let added_bos = with_special.len() > bare.len()
            && bos.is_some()
            && with_special.first() == bos.as_ref();
        let added_eos =
            with_special.len() > bare.len() && eos.is_some() && with_special.last() == eos.as_ref();
        let add_bos = config["add_bos_token"].as_bool().unwrap_or(added_bos);
        let add_eos = config["add_eos_token"].as_bool().unwrap_or(added_eos);

        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        end_of_generation.extend(named_stops);
        end_of_generation.extend(named_fim_stops);
        let generation_config_path = dir.join("generation_config.json");
        if generation_config_path.exists() {
            let generation = read_json(&generation_config_path)?;
            match &generation["eos_token_id"] {
                Json::Number(id) => end_of_generation.extend(id.as_u64().map(|id| id as u32)),
                Json::Array(ids) => end_of_generation
                    .extend(ids.iter().filter_map(Json::as_u64).map(|id| id as u32)),
                _ => {}
            }
            end_of_generation.retain(|&id| (id as usize) < n);
        }

        let chat_template = chat_template(dir, &config)?;
        let normal_pieces = token_texts
            .iter()
            .zip(&kinds)
            .map(|(text, kind)| match kind {
                TokenKind::Normal => BYTE_LEVEL.decode_token_text(text),
                _ => Vec::new(),
            })
            .collect();
        inner.set_encode_special_tokens(true);
        HerdTokenizer::from_parts(TokenizerParts {
            encoder: TextEncoder::HuggingFace,
            inner: Some(inner),
            token_texts,
            kinds,
            normal_pieces,
            special_tokens,
            bos,
            eos,
            pad,
            add_bos,
            add_eos,
            end_of_generation,
            chat_template,
            source: dir.display().to_string(),
        })
    }
}

fn read_json(path: &Path) -> Result<Json, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenizerError::HfFolder {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map_err(|e| TokenizerError::HfFolder { path: path.to_path_buf(), message: e.to_string() })
}

/// `"<s>"` or `{"content": "<s>", ...}`.
fn special_token_content(field: &Json) -> Option<&str> {
    match field {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content").and_then(Json::as_str),
        _ => None,
    }
}

fn is_byte_level(tokenizer_json: &Json) -> bool {
    let decoder = &tokenizer_json["decoder"];
    decoder["type"] == "ByteLevel"
        || decoder["decoders"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|d| d["type"] == "ByteLevel"))
}

/// The default chat template: `chat_template.jinja`, or the config's `chat_template`
/// (a string, or a list of named templates of which "default" is taken).
fn chat_template(dir: &Path, config: &Json) -> Result<Option<String>, TokenizerError> {
    let jinja_path = dir.join("chat_template.jinja");
    if jinja_path.exists() {
        return std::fs::read_to_string(&jinja_path)
            .map(Some)
            .map_err(|e| TokenizerError::HfFolder { path: jinja_path, message: e.to_string() });
    }
    Ok(match &config["chat_template"] {
        Json::String(t) => Some(t.clone()),
        Json::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    })
}
