//! Building the tokenizer from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp's
//! `llama_vocab::impl::load` does.

use std::collections::HashSet;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{AddedToken, Tokenizer};

use super::bpe::ByteLevelBpe;
use super::byte_level::BYTE_LEVEL;
use super::sentencepiece::{SentencePiece, SPACE_MARK};
use super::special::SpecialToken;
use super::word_split::WordSplitter;
use super::{
    ids_named, HerdTokenizer, PreTokenizerFamily, TextEncoder, TokenKind, TokenizerError,
    TokenizerParts, END_OF_GENERATION_NAMES, FIM_CONTROL_NAMES, FIM_STOP_NAMES,
};

/// The tokenizer described by a GGUF file's metadata, identical to the one llama.cpp
/// builds from it. Supported: `tokenizer.ggml.model = gpt2` (byte-level BPE) with the
/// `tokenizer.ggml.pre` values of [`PreTokenizerFamily::from_gguf_pre`], and
/// `tokenizer.ggml.model = llama` (SentencePiece).
pub fn tokenizer_from_gguf(content: &Content) -> Result<HerdTokenizer, TokenizerError> {
    let meta = Metadata(content);
    let model = meta.string("tokenizer.ggml.model")?;
    let pre = meta.optional_string("tokenizer.ggml.pre")?.unwrap_or("");
    // llama.cpp's defaults per model (and pre-tokenizer), before the metadata's keys.
    let (family, defaults) = match model {
        "gpt2" => {
            let family = PreTokenizerFamily::from_gguf_pre(pre)?;
            let bos = if family == PreTokenizerFamily::ChatGlm4 { None } else { Some(11) };
            let defaults = Defaults {
                bos,
                eos: Some(11),
                unknown: None,
                add_bos: family.adds_bos_by_default(),
                add_space_prefix: false,
            };
            (Some(family), defaults)
        }
        "llama" => (
            None,
            Defaults {
                bos: Some(1),
                eos: Some(2),
                unknown: Some(0),
                add_bos: true,
                add_space_prefix: true,
            },
        ),
        other => return Err(TokenizerError::UnsupportedModel { model: other.to_string() }),
    };

    let token_texts: Vec<String> = meta
        .strings("tokenizer.ggml.tokens")?
        .into_iter()
        .enumerate()
        // llama.cpp renames empty entries so that every text is a distinct key.
        .map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { t.to_string() })
        .collect();
    let n = token_texts.len();
    let mut kinds = match meta.optional_array("tokenizer.ggml.token_type")? {
        None => vec![TokenKind::Normal; n],
        Some(types) => {
            if types.len() < n {
                return Err(TokenizerError::BadKey {
                    key: "tokenizer.ggml.token_type".into(),
                    message: format!("{} types for {} tokens", types.len(), n),
                });
            }
            types[..n]
                .iter()
                .map(|v| value_i64(v).map(|c| TokenKind::from_gguf(c as i32)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| TokenizerError::BadKey {
                    key: "tokenizer.ggml.token_type".into(),
                    message: "not an array of integers".into(),
                })?
        }
    };

    // A key's id when it is inside the vocabulary, else llama.cpp's default (when that is).
    let special_id = |key: &str, default: Option<u32>| -> Result<Option<u32>, TokenizerError> {
        let inside = |id: &u32| (*id as usize) < n;
        Ok(meta.optional_u32(key)?.filter(inside).or(default.filter(inside)))
    };
    let bos = special_id("tokenizer.ggml.bos_token_id", defaults.bos)?;
    let eos = special_id("tokenizer.ggml.eos_token_id", defaults.eos)?;
    let unknown = special_id("tokenizer.ggml.unknown_token_id", defaults.unknown)?;
    let pad = special_id("tokenizer.ggml.padding_token_id", None)?;
    let add_bos = meta.optional_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(defaults.add_bos);
    let add_eos = meta.optional_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let add_space_prefix =
        meta.optional_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(defaults.add_space_prefix);

    // End of generation, as llama.cpp counts it: the metadata's ids plus well-known
    // spellings, which llama.cpp also turns into control tokens.
    let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
    for key in [
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.fim_pad_token_id",
        "tokenizer.ggml.fim_rep_token_id",
        "tokenizer.ggml.fim_sep_token_id",
    ] {
        end_of_generation.extend(special_id(key, None)?);
    }
    let named_stops = ids_named(&token_texts, END_OF_GENERATION_NAMES);
    let named_fim_stops = ids_named(&token_texts, FIM_STOP_NAMES);
    for &id in named_stops
        .iter()
        .chain(&named_fim_stops)
        .chain(&ids_named(&token_texts, FIM_CONTROL_NAMES))
    {
        kinds[id as usize] = TokenKind::Control;
    }
    end_of_generation.extend(named_stops);
    end_of_generation.extend(named_fim_stops);

    let special_tokens: Vec<SpecialToken> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| {
            matches!(k, TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown)
        })
        .map(|(id, &kind)| SpecialToken {
            id: id as u32,
            text: token_texts[id].clone(),
            kind,
            lstrip: false,
            rstrip: false,
        })
        .collect();

    let (encoder, inner, normal_pieces) = match family {
        Some(family) => {
            let (bpe, inner) = byte_level_bpe(&meta, family, &token_texts, &special_tokens)?;
            let pieces = pieces(&token_texts, &kinds, |text| BYTE_LEVEL.decode_token_text(text));
            (TextEncoder::ByteLevel(Box::new(bpe)), Some(inner), pieces)
        }
        None => {
            let spm =
                SentencePiece::new(&token_texts, scores(&meta, n)?, unknown, add_space_prefix)?;
            // The vocabulary-only `tokenizers` tokenizer is built when asked for.
            let pieces =
                pieces(&token_texts, &kinds, |text| text.replace(SPACE_MARK, " ").into_bytes());
            (TextEncoder::SentencePiece(Box::new(spm)), None, pieces)
        }
    };

    HerdTokenizer::from_parts(TokenizerParts {
        encoder,
        inner,
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
        chat_template: meta.optional_string("tokenizer.chat_template")?.map(str::to_string),
        source: format!("gguf {model}/{pre}"),
    })
}

/// llama.cpp's defaults for a vocabulary type, which the metadata's keys override.
struct Defaults {
    bos: Option<u32>,
    eos: Option<u32>,
    unknown: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
}

/// The bytes of normal tokens (`normal` reads a vocabulary text) and byte tokens.
fn pieces(
    token_texts: &[String],
    kinds: &[TokenKind],
    normal: impl Fn(&str) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    token_texts
        .iter()
        .zip(kinds)
        .map(|(text, kind)| match kind {
            TokenKind::Normal => normal(text),
            TokenKind::Byte => byte_token_value(text).into_iter().collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// `tokenizer.ggml.scores` (floats or integers), 0 for every token when absent.
fn scores(meta: &Metadata<'_>, n: usize) -> Result<Vec<f32>, TokenizerError> {
    let key = "tokenizer.ggml.scores";
    let Some(values) = meta.optional_array(key)? else {
        return Ok(vec![0.0; n]);
    };
    if values.len() < n {
        return Err(TokenizerError::BadKey {
            key: key.into(),
            message: format!("{} scores for {n} tokens", values.len()),
        });
    }
    values[..n]
        .iter()
        .map(|v| match v {
            Value::F32(x) => Some(*x),
            Value::I32(x) => Some(*x as f32),
            _ => None,
        })
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(|| TokenizerError::BadKey {
            key: key.into(),
            message: "not an array of f32 or i32".into(),
        })
}

/// herd's byte-level BPE and the `tokenizers` tokenizer of the same vocabulary (the
/// exportable `tokenizer.json`).
fn byte_level_bpe(
    meta: &Metadata<'_>,
    family: PreTokenizerFamily,
    token_texts: &[String],
    special_tokens: &[SpecialToken],
) -> Result<(ByteLevelBpe, Tokenizer), TokenizerError> {
    let merges = parse_merges(meta.strings("tokenizer.ggml.merges")?)?;
    let fast =
        ByteLevelBpe::new(WordSplitter::new(family)?, family.ignore_merges(), token_texts, &merges);
    let vocab: Vocab = token_texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(family.ignore_merges())
        .build()
        .map_err(|e| TokenizerError::Build {
            what: "BPE model from tokenizer.ggml.tokens/merges".into(),
            message: e.to_string(),
        })?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(family.pre_tokenizer()?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));

    // Registered so that `hf_tokenizer()` is a complete tokenizer.json; the inner
    // tokenizer itself treats them as text (they are cut out before it sees the text).
    let registration_error = |e: tokenizers::Error| TokenizerError::Build {
        what: "special tokens".into(),
        message: e.to_string(),
    };
    inner
        .add_special_tokens(
            special_tokens
                .iter()
                .filter(|t| t.kind != TokenKind::UserDefined)
                .map(|t| AddedToken::from(t.text.clone(), true)),
        )
        .map_err(registration_error)?;
    inner
        .add_tokens(
            special_tokens
                .iter()
                .filter(|t| t.kind == TokenKind::UserDefined)
                .map(|t| AddedToken::from(t.text.clone(), false).normalized(false)),
        )
        .map_err(registration_error)?;
    inner.set_encode_special_tokens(true);
    Ok((fast, inner))
}

/// `<0xAB>` → 0xAB.
fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// GGUF merges are "left right" strings; the split is at the first space after the
/// first byte (as llama.cpp does). A pair listed twice keeps its first (best) rank.
fn parse_merges(lines: Vec<&str>) -> Result<Vec<(String, String)>, TokenizerError> {
    let mut seen = HashSet::with_capacity(lines.len());
    let mut merges = Vec::with_capacity(lines.len());
    for (rank, line) in lines.into_iter().enumerate() {
        let split_at =
            line.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i).ok_or_else(
                || TokenizerError::BadKey {
                    key: "tokenizer.ggml.merges".into(),
                    message: format!("merge {rank} {line:?} has no separating space"),
                },
            )?;
        let pair = (line[..split_at].to_string(), line[split_at + 1..].to_string());
        if seen.insert(pair.clone()) {
            merges.push(pair);
        }
    }
    Ok(merges)
}

fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I8(x) => Some(*x as i64),
        Value::U8(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::U16(x) => Some(*x as i64),
        Value::I32(x) => Some(*x as i64),
        Value::U32(x) => Some(*x as i64),
        Value::I64(x) => Some(*x),
        Value::U64(x) => i64::try_from(*x).ok(),
        _ => None,
    }
}

/// Typed access to the metadata, with errors that name the key.
struct Metadata<'a>(&'a Content);

impl<'a> Metadata<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.metadata.get(key)
    }

    fn bad(key: &str, expected: &str) -> TokenizerError {
        TokenizerError::BadKey { key: key.to_string(), message: format!("expected {expected}") }
    }

    fn string(&self, key: &str) -> Result<&'a str, TokenizerError> {
        self.optional_string(key)?
            .ok_or_else(|| TokenizerError::MissingKey { key: key.to_string() })
    }

    fn optional_string(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Self::bad(key, "a string")),
        }
    }

    fn optional_u32(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => value_i64(v)
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| Self::bad(key, "a token id")),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Self::bad(key, "a boolean")),
        }
    }

    fn optional_array(&self, key: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(Self::bad(key, "an array")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<&'a str>, TokenizerError> {
        let items = self
            .optional_array(key)?
            .ok_or_else(|| TokenizerError::MissingKey { key: key.to_string() })?;
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(Self::bad(key, "an array of strings")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_split_at_the_first_space_after_the_first_character() {
        let merges = parse_merges(vec!["Ġ t", "a b", "Ġ t"]).unwrap();
        assert_eq!(
            merges,
            vec![("Ġ".to_string(), "t".to_string()), ("a".to_string(), "b".to_string())]
        );
        assert!(parse_merges(vec!["ab"]).is_err());
    }

    #[test]
    fn byte_tokens_are_read_as_hex() {
        assert_eq!(byte_token_value("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_token_value("0x0A"), None);
    }
}
