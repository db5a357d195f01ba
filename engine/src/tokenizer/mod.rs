//! Tokenization that reproduces llama.cpp token for token.
//!
//! One type, [`HerdTokenizer`], is built either from a GGUF file's metadata
//! ([`tokenizer_from_gguf`]) or from a Hugging Face folder
//! ([`HerdTokenizer::from_hf_dir`]). Encoding follows llama.cpp: special tokens are cut
//! out of the text first (`special`), then each remaining piece is encoded by one of
//! the encoders of [`TextEncoder`]:
//! - byte-level BPE (GGUF `gpt2` vocabularies): the piece is split into words — by
//!   hand-written matchers of llama.cpp's regexes (`word_split`, Unicode 15.1 like
//!   llama.cpp) or, for the families llama.cpp runs through its regex engine, by the
//!   same regexes on the same views of the text (`regex_split`) — and `bpe` merges them;
//! - SentencePiece (GGUF `llama` vocabularies: Llama 2, Mistral, Gemma): llama.cpp's
//!   score-ordered merging of the whole piece (`sentencepiece`);
//! - for Hugging Face folders, the `tokenizers` crate with the same regexes.
//!
//! Decoding works on bytes: every token has the byte string llama.cpp's `token_to_piece`
//! gives it, and [`StreamDecoder`] turns a stream of tokens into text without ever
//! splitting a multi-byte character.

mod bpe;
mod byte_level;
mod gguf;
mod hf;
mod pre_tokenizer;
mod regex_split;
mod sentencepiece;
mod special;
mod stream;
mod unicode_15_1;
mod word_split;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use gguf::tokenizer_from_gguf;
pub use pre_tokenizer::{
    with_llama_cpp_unicode, PreTokenizerFamily, DEEPSEEK_CODER_REGEXES, DEEPSEEK_LLM_REGEXES,
    GPT2_REGEX, GPT4O_REGEX, LLAMA3_REGEX, QWEN2_REGEX, SINGLE_DIGIT_REGEX, TEKKEN_REGEX,
};
pub use stream::StreamDecoder;

use bpe::ByteLevelBpe;
use sentencepiece::SentencePiece;
use special::{Fragment, SpecialToken, SpecialTokenSplitter};

/// What a vocabulary entry is, as GGUF's `tokenizer.ggml.token_type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Undefined,
    Normal,
    Unknown,
    /// Special tokens such as `<|im_start|>`: matched in text only when parsing special
    /// tokens, and rendered by decoding only when asked to.
    Control,
    /// Added tokens that are always matched in text and always rendered.
    UserDefined,
    Unused,
    /// `<0xAB>`-style byte tokens.
    Byte,
}

impl TokenKind {
    /// GGUF's numbering (llama.cpp's `llama_token_type`).
    pub fn from_gguf(code: i32) -> Self {
        match code {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata has no `{key}`")]
    MissingKey { key: String },
    #[error("GGUF metadata `{key}`: {message}")]
    BadKey { key: String, message: String },
    #[error(
        "tokenizer.ggml.model `{model}` is not supported: only `gpt2` (byte-level BPE) and \
         `llama` (SentencePiece) are"
    )]
    UnsupportedModel { model: String },
    #[error(
        "tokenizer.ggml.pre `{pre}` is not supported; supported: {}",
        PreTokenizerFamily::SUPPORTED
    )]
    UnsupportedPreTokenizer { pre: String },
    #[error("{what}: {message}")]
    Build { what: String, message: String },
    #[error("{}: {message}", path.display())]
    HfFolder { path: PathBuf, message: String },
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownTokenId { id: u32, vocab_size: usize },
    #[error("encoding {text_len} bytes of text: {message}")]
    Encode { text_len: usize, message: String },
}

/// What turns text free of special tokens into ids.
#[derive(Debug, Clone)]
pub(crate) enum TextEncoder {
    /// Byte-level BPE over llama.cpp's word splits (GGUF `gpt2` vocabularies).
    ByteLevel(Box<ByteLevelBpe>),
    /// llama.cpp's SentencePiece merging (GGUF `llama` vocabularies).
    SentencePiece(Box<SentencePiece>),
    /// The `tokenizers` tokenizer itself (Hugging Face folders).
    HuggingFace,
}

/// Everything the two constructors gather before the tokenizer is assembled.
pub(crate) struct TokenizerParts {
    pub encoder: TextEncoder,
    /// The same vocabulary as a `tokenizers` tokenizer (its own added tokens are not
    /// used); `None` builds a vocabulary-only one on first use (see
    /// [`HerdTokenizer::hf_tokenizer`]).
    pub inner: Option<tokenizers::Tokenizer>,
    /// Vocabulary text of every id.
    pub token_texts: Vec<String>,
    pub kinds: Vec<TokenKind>,
    /// Bytes of every normal token.
    pub normal_pieces: Vec<Vec<u8>>,
    pub special_tokens: Vec<SpecialToken>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub end_of_generation: Vec<u32>,
    pub chat_template: Option<String>,
    pub source: String,
}

/// A tokenizer that encodes exactly like llama.cpp's `llama_tokenize` and decodes like
/// its `llama_token_to_piece`, for GGUF and Hugging Face models alike.
#[derive(Debug, Clone)]
pub struct HerdTokenizer {
    encoder: TextEncoder,
    inner: OnceLock<tokenizers::Tokenizer>,
    special: SpecialTokenSplitter,
    token_texts: Vec<String>,
    kinds: Vec<TokenKind>,
    /// Bytes of each token as rendered with special tokens hidden / shown, stored as
    /// one buffer and offsets (ids index `piece_ends`).
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    end_of_generation: Vec<u32>,
    chat_template: Option<String>,
    source: String,
}

impl HerdTokenizer {
    pub(crate) fn from_parts(parts: TokenizerParts) -> Result<Self, TokenizerError> {
        let n = parts.token_texts.len();
        if parts.kinds.len() != n || parts.normal_pieces.len() != n {
            return Err(TokenizerError::Build {
                what: parts.source,
                message: format!(
                    "{} token texts, {} token kinds, {} pieces",
                    n,
                    parts.kinds.len(),
                    parts.normal_pieces.len()
                ),
            });
        }
        for (name, id) in [("BOS", parts.bos), ("EOS", parts.eos), ("padding", parts.pad)] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(TokenizerError::Build {
                    what: parts.source,
                    message: format!("{name} id {id} is outside the vocabulary of {n} tokens"),
                });
            }
        }
        if (parts.add_bos && parts.bos.is_none()) || (parts.add_eos && parts.eos.is_none()) {
            return Err(TokenizerError::Build {
                what: parts.source,
                message: "the vocabulary asks to add BOS/EOS but has no such token".into(),
            });
        }
        let mut piece_bytes = Vec::new();
        let mut piece_ends = Vec::with_capacity(n);
        for (id, piece) in parts.normal_pieces.into_iter().enumerate() {
            let kind = parts.kinds[id];
            let rendered: &[u8] = match kind {
                TokenKind::Normal => &piece,
                // llama.cpp copies these verbatim (control/unknown only on request).
                TokenKind::UserDefined | TokenKind::Control | TokenKind::Unknown => {
                    parts.token_texts[id].as_bytes()
                }
                TokenKind::Byte => &piece,
                TokenKind::Unused | TokenKind::Undefined => &[],
            };
            piece_bytes.extend_from_slice(rendered);
            piece_ends.push(piece_bytes.len());
        }
        let mut end_of_generation = parts.end_of_generation;
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        let inner = OnceLock::new();
        if let Some(tokenizer) = parts.inner {
            inner.set(tokenizer).expect("a new cell is empty");
        } else if matches!(parts.encoder, TextEncoder::HuggingFace) {
            return Err(TokenizerError::Build {
                what: parts.source,
                message: "encoding through `tokenizers` needs its tokenizer".into(),
            });
        }
        Ok(Self {
            encoder: parts.encoder,
            inner,
            special: SpecialTokenSplitter::new(parts.special_tokens),
            token_texts: parts.token_texts,
            kinds: parts.kinds,
            piece_bytes,
            piece_ends,
            bos: parts.bos,
            eos: parts.eos,
            pad: parts.pad,
            add_bos: parts.add_bos,
            add_eos: parts.add_eos,
            end_of_generation,
            chat_template: parts.chat_template,
            source: parts.source,
        })
    }

    /// Token ids of `text`, as llama.cpp's `llama_tokenize(text, add_special,
    /// parse_special)`: with `parse_special`, control tokens written in the text (such
    /// as `<|im_start|>`) become their ids, otherwise they are tokenized as plain text;
    /// with `add_special`, BOS/EOS are added when the model asks for them
    /// ([`Self::adds_bos`], [`Self::adds_eos`]).
    pub fn encode(
        &self,
        text: &str,
        parse_special: bool,
        add_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        // SentencePiece: text that starts the input or follows a special token gets the
        // space prefix (llama.cpp's `is_prev_special`).
        let mut after_special = true;
        for fragment in self.special.split(text, parse_special) {
            let piece = match fragment {
                Fragment::Token(id) => {
                    ids.push(id);
                    after_special = true;
                    continue;
                }
                Fragment::Text(piece) => piece,
            };
            match &self.encoder {
                TextEncoder::ByteLevel(bpe) => bpe.encode(piece, &mut ids),
                TextEncoder::SentencePiece(spm) => {
                    spm.encode(piece, spm.adds_space_prefix() && after_special, &mut ids)
                }
                TextEncoder::HuggingFace => {
                    let encoding = self.hf_tokenizer().encode_fast(piece, false).map_err(|e| {
                        TokenizerError::Encode { text_len: text.len(), message: e.to_string() }
                    })?;
                    ids.extend_from_slice(encoding.get_ids());
                }
            }
            after_special = false;
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The bytes llama.cpp's `token_to_piece` gives a token. Control and unknown tokens
    /// are empty unless `render_special`.
    pub fn token_bytes(&self, id: u32, render_special: bool) -> Result<&[u8], TokenizerError> {
        let i = id as usize;
        let kind = *self
            .kinds
            .get(i)
            .ok_or(TokenizerError::UnknownTokenId { id, vocab_size: self.kinds.len() })?;
        if kind.is_special() && !render_special {
            return Ok(&[]);
        }
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        Ok(&self.piece_bytes[start..self.piece_ends[i]])
    }

    /// The bytes of a token sequence (what llama.cpp's pieces add up to).
    pub fn decode_bytes(
        &self,
        ids: &[u32],
        render_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id, render_special)?);
        }
        Ok(bytes)
    }

    /// Text of a token sequence; bytes that are not valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids, render_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// An incremental decoder for generated tokens; see [`StreamDecoder`].
    pub fn stream_decoder(&self, render_special: bool) -> StreamDecoder {
        StreamDecoder::new(render_special)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(.., add_special = true)` starts with BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true)` ends with EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// Ids that end generation, sorted: EOS and what llama.cpp counts as end of
    /// generation (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, FIM pad/repo/sep, ...).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// The model's default chat template (Jinja), when the source has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The vocabulary text of a token (`<|im_end|>`, `Ġthe`, ...): for filling a chat
    /// template's `bos_token`/`eos_token`, not for decoding.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.token_texts.get(id as usize).map(String::as_str)
    }

    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The id of a special or user-defined token written as text, e.g. `<|eot_id|>`.
    pub fn special_token_id(&self, text: &str) -> Option<u32> {
        self.special.tokens().iter().find(|t| t.text == text).map(|t| t.id)
    }

    pub fn vocab_size(&self) -> usize {
        self.kinds.len()
    }

    /// Where this tokenizer came from, for logs (`gguf gpt2/smollm`, a folder path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// This vocabulary as a `tokenizers` tokenizer. For byte-level BPE vocabularies it
    /// encodes text free of special tokens as [`Self::encode`] does and its
    /// `to_string(..)` is a `tokenizer.json`; for SentencePiece vocabularies it is built
    /// on first use and only maps vocabulary entries to ids (`token_to_id`,
    /// `id_to_token`): it is not an encoder of the text.
    pub fn hf_tokenizer(&self) -> &tokenizers::Tokenizer {
        self.inner.get_or_init(|| vocabulary_only(&self.token_texts))
    }

    /// The id of a vocabulary entry written as its text (`▁the`, `Ġthe`, `<eos>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.encoder {
            TextEncoder::SentencePiece(spm) => spm.piece_id(text),
            _ => self.special_token_id(text).or_else(|| self.hf_tokenizer().token_to_id(text)),
        }
    }
}

/// A word-level `tokenizers` tokenizer over `token_texts`: it knows the vocabulary and
/// nothing of how text is encoded.
fn vocabulary_only(token_texts: &[String]) -> tokenizers::Tokenizer {
    let vocab: tokenizers::models::bpe::Vocab =
        token_texts.iter().enumerate().map(|(id, text)| (text.clone(), id as u32)).collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab)
        .build()
        .expect("a word-level model over an in-memory vocabulary");
    tokenizers::Tokenizer::new(model)
}

/// Names llama.cpp treats as end of generation whatever the metadata says (its list
/// of end-of-turn / end-of-text spellings across model families).
pub(crate) const END_OF_GENERATION_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle pad / repository / file-separator spellings: llama.cpp stops
/// generation on them too when the metadata names none.
pub(crate) const FIM_STOP_NAMES: &[&str] = &[
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Ids of the given names present in the vocabulary.
pub(crate) fn ids_named(token_texts: &[String], names: &[&str]) -> Vec<u32> {
    let names: HashSet<&str> = names.iter().copied().collect();
    token_texts
        .iter()
        .enumerate()
        .filter(|(_, t)| names.contains(t.as_str()))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Fill-in-the-middle prefix / suffix / middle spellings: llama.cpp makes them control
/// tokens (they are not end of generation).
pub(crate) const FIM_CONTROL_NAMES: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
