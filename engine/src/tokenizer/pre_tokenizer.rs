//! The pre-tokenizers of llama.cpp's byte-level BPE vocabularies, keyed by
//! `tokenizer.ggml.pre`, rebuilt as `tokenizers` pre-tokenizers.
//!
//! llama.cpp splits text with a list of regexes applied one after the other, each one
//! to the pieces the previous one left (matches and the text between matches both
//! become pieces). That is exactly a `Sequence` of `Split(regex, Isolated)`; the
//! final `ByteLevel` step (without its own regex) only maps bytes to the alphabet.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::TokenizerError;

/// GPT-2's split: contractions (lower case only), letter runs, number runs and runs of
/// other symbols each with one optional leading space, whitespace runs that give their
/// last character to the next word, then any whitespace left. llama.cpp's hand-written
/// matcher for this regex implements the trailing `\s+` too.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's split, in the form llama.cpp uses: the original `(?i:'s|...)` is spelled
/// out letter by letter because a case-insensitive match would also take `ſ` and the
/// Kelvin sign, which llama.cpp's matcher does not; numbers go in groups of up to three.
pub const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Every number character on its own (SmolLM, StarCoder): applied before GPT-2's split.
pub const SINGLE_DIGIT_REGEX: &str = r"\p{N}";

/// Code points that are letters in Unicode 16.0 and were unassigned in 15.1.
///
/// llama.cpp classifies characters with tables generated from Unicode 15.1; the regex
/// engine behind `tokenizers` (Oniguruma 6.9.10) knows Unicode 16.0. For llama.cpp these
/// characters are neither letters nor numbers, so they are taken out of `\p{L}`/`\p{N}`.
/// (Computed as the difference of the L*/N* general categories of unicodedata2 15.1.0
/// and 16.0.0; there are no other differences in those categories.)
const LETTERS_NEW_IN_UNICODE_16: &str = concat!(
    r"\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}",
    r"\x{10D4A}-\x{10D65}\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{11380}-\x{11389}",
    r"\x{1138B}\x{1138E}\x{11390}-\x{113B5}\x{113B7}\x{113D1}\x{113D3}",
    r"\x{11BC0}-\x{11BE0}\x{13460}-\x{143FA}\x{16100}-\x{1611D}\x{16D40}-\x{16D6C}",
    r"\x{18CFF}\x{1E5D0}-\x{1E5ED}\x{1E5F0}",
);

/// Code points that are numbers in Unicode 16.0 and were unassigned in 15.1 (see above).
const NUMBERS_NEW_IN_UNICODE_16: &str = concat!(
    r"\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{16130}-\x{16139}",
    r"\x{16D70}-\x{16D79}\x{1CCF0}-\x{1CCF9}\x{1E5F1}-\x{1E5FA}",
);

/// A llama.cpp regex rewritten so that `\p{L}` and `\p{N}` mean what they mean in
/// llama.cpp's Unicode 15.1 tables. Each becomes a bracketed class, which is valid both
/// on its own and nested in another class (`[^\s\p{L}\p{N}]`), where it is a union.
pub fn with_llama_cpp_unicode(regex: &str) -> String {
    regex
        .replace(r"\p{L}", &format!(r"[\p{{L}}&&[^{LETTERS_NEW_IN_UNICODE_16}]]"))
        .replace(r"\p{N}", &format!(r"[\p{{N}}&&[^{NUMBERS_NEW_IN_UNICODE_16}]]"))
}

/// Qwen2's split: Llama 3's with every number character alone.
pub const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's splits (llama.cpp's list): newlines alone, Latin/Greek/Cyrillic/...
/// letter runs and ASCII/full-width punctuation runs with an optional leading space,
/// trailing whitespace, CJK runs, number runs.
pub const DEEPSEEK_LLM_REGEXES: &[&str] = &[
    "[\r\n]",
    concat!(
        "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-",
        "ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1F7D}ᾀ-ᾴᾶ-ᾼ\u{1FBE}ῂ-ῄῆ-ῌῐ-\u{1FD3}",
        "ῖ-\u{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮ",
        "ⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ\u{10400}-\u{1044F}\u{104B0}-\u{104D3}",
        "\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}",
        "\u{1E900}-\u{1E943}]+",
    ),
    "\\s?[!-/:-~！-／：-～‘-‟\u{3000}-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-\u{D7FF}]+",
    "\\p{N}+",
];

/// DeepSeek Coder's splits: newlines alone, letter runs and punctuation runs with an
/// optional leading space, CJK runs, every number character alone.
pub const DEEPSEEK_CODER_REGEXES: &[&str] =
    &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-\u{D7FF}]+", r"\p{N}"];

/// Tekken's split (Mistral Nemo), in llama.cpp's spelling: upper/lower case are "a letter
/// that is not a-z" / "not A-Z" (see `regex_split`).
pub const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's split (o200k), in llama.cpp's spelling: Tekken's words with an optional
/// contraction, numbers in groups of up to three.
pub const GPT4O_REGEX: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The families of `tokenizer.ggml.pre` values this crate reproduces: one per branch
/// of llama.cpp's `llama_vocab::impl::load` (a regex list and its flags).
///
/// llama.cpp's `clean_spaces` flag is not kept: it only affects `llama_detokenize`,
/// and herd decodes as llama.cpp's `token_to_piece` does, piece by piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerFamily {
    /// GPT-2's regex alone.
    Gpt2,
    /// Each digit alone, then GPT-2's regex (SmolLM, StarCoder, Refact).
    Gpt2SingleDigits,
    /// Llama 3's regex; whole words found in the vocabulary skip the merges.
    Llama3,
    /// Llama 3's regex with single digits (Qwen2/2.5/3, DeepSeek-R1 distills of Qwen).
    Qwen2,
    /// Llama 3's regex, merges always applied, no BOS unless the file names one (GLM-4).
    ChatGlm4,
    /// DeepSeek LLM's regex list.
    DeepSeekLlm,
    /// DeepSeek Coder's regex list.
    DeepSeekCoder,
    /// Mistral's Tekken (Nemo); whole words in the vocabulary skip the merges.
    Tekken,
    /// GPT-4o's o200k split (also Llama 4's).
    Gpt4o,
}

/// How `word_split` cuts words for a family, when it has a hand-written matcher (the
/// families llama.cpp itself matches by hand); the others go through `regex_split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matcher {
    Gpt2,
    Gpt2SingleDigits,
    /// Llama 3's regex with numbers in groups of up to `max_digits`.
    Llama3 {
        max_digits: usize,
    },
}

impl PreTokenizerFamily {
    /// The family llama.cpp assigns to a `tokenizer.ggml.pre` value.
    pub fn from_gguf_pre(pre: &str) -> Result<Self, TokenizerError> {
        match pre {
            "gpt-2" | "phi-2" | "mpt" | "olmo" => Ok(Self::Gpt2),
            "smollm" | "starcoder" | "refact" => Ok(Self::Gpt2SingleDigits),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "lfm2" => {
                Ok(Self::Llama3)
            }
            // StableLM 2 and Megrez: the same regex, flags and defaults (llama.cpp's
            // `clean_spaces` differs, which herd does not use).
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => Ok(Self::Qwen2),
            "chatglm-bpe" => Ok(Self::ChatGlm4),
            "deepseek-llm" => Ok(Self::DeepSeekLlm),
            "deepseek-coder" => Ok(Self::DeepSeekCoder),
            "tekken" => Ok(Self::Tekken),
            "gpt-4o" | "llama4" => Ok(Self::Gpt4o),
            other => Err(TokenizerError::UnsupportedPreTokenizer { pre: other.to_string() }),
        }
    }

    /// The `tokenizer.ggml.pre` values accepted, for error messages.
    pub const SUPPORTED: &'static str = "gpt-2, phi-2, mpt, olmo, smollm, starcoder, refact, \
        llama3, llama-v3, llama-bpe, falcon3, falcon-h1, pixtral, lfm2, qwen2, deepseek-r1-qwen, \
        stablelm2, megrez, chatglm-bpe, deepseek-llm, deepseek-coder, tekken, gpt-4o, llama4";

    /// llama.cpp's regexes for this family, applied one after the other.
    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            Self::Gpt2 => &[GPT2_REGEX],
            Self::Gpt2SingleDigits => &[SINGLE_DIGIT_REGEX, GPT2_REGEX],
            Self::Llama3 | Self::ChatGlm4 => &[LLAMA3_REGEX],
            Self::Qwen2 => &[QWEN2_REGEX],
            Self::DeepSeekLlm => DEEPSEEK_LLM_REGEXES,
            Self::DeepSeekCoder => DEEPSEEK_CODER_REGEXES,
            Self::Tekken => &[TEKKEN_REGEX],
            Self::Gpt4o => &[GPT4O_REGEX],
        }
    }

    /// The hand-written matcher of this family's regexes, where llama.cpp has one.
    pub(crate) fn matcher(self) -> Option<Matcher> {
        match self {
            Self::Gpt2 => Some(Matcher::Gpt2),
            Self::Gpt2SingleDigits => Some(Matcher::Gpt2SingleDigits),
            Self::Llama3 | Self::ChatGlm4 => Some(Matcher::Llama3 { max_digits: 3 }),
            Self::Qwen2 => Some(Matcher::Llama3 { max_digits: 1 }),
            Self::DeepSeekLlm | Self::DeepSeekCoder | Self::Tekken | Self::Gpt4o => None,
        }
    }

    /// llama.cpp's `ignore_merges`: a pre-token that is itself in the vocabulary is
    /// emitted as that one token, whatever the merges would have built.
    pub fn ignore_merges(self) -> bool {
        matches!(self, Self::Llama3 | Self::Tekken)
    }

    /// Whether llama.cpp adds BOS when the GGUF has no `tokenizer.ggml.add_bos_token`.
    pub fn adds_bos_by_default(self) -> bool {
        matches!(self, Self::Llama3 | Self::Tekken)
    }

    pub fn pre_tokenizer(self) -> Result<PreTokenizerWrapper, TokenizerError> {
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for regex in self.regexes() {
            let split = Split::new(
                SplitPattern::Regex(with_llama_cpp_unicode(regex)),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Build {
                what: format!("pre-tokenizer regex {regex:?}"),
                message: e.to_string(),
            })?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        Ok(Sequence::new(steps).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn pieces(family: PreTokenizerFamily, text: &str) -> Vec<String> {
        let mut pre = PreTokenizedString::from(text);
        family.pre_tokenizer().unwrap().pre_tokenize(&mut pre).unwrap();
        pre.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn every_value_listed_as_supported_is_and_others_are_refused() {
        for pre in PreTokenizerFamily::SUPPORTED.split(", ") {
            assert!(PreTokenizerFamily::from_gguf_pre(pre).is_ok(), "{pre:?}");
        }
        assert_eq!(
            PreTokenizerFamily::from_gguf_pre("stablelm2").unwrap(),
            PreTokenizerFamily::Qwen2
        );
        assert!(PreTokenizerFamily::from_gguf_pre("jina-v2-de").is_err());
    }

    #[test]
    fn llama3_keeps_numbers_in_threes_and_gives_a_space_to_the_next_word() {
        assert_eq!(
            pieces(PreTokenizerFamily::Llama3, "I'M 1234567 go  now"),
            ["I", "'M", "Ġ", "123", "456", "7", "Ġgo", "Ġ", "Ġnow"]
        );
    }

    #[test]
    fn smollm_splits_every_digit_and_keeps_contractions_lower_case_only() {
        assert_eq!(
            pieces(PreTokenizerFamily::Gpt2SingleDigits, "don't I'M 3.14"),
            ["don", "'t", "ĠI", "'", "M", "Ġ", "3", ".", "1", "4"]
        );
    }

    #[test]
    fn unicode_16_digits_are_not_numbers_for_llama_cpp_but_older_ones_are() {
        // U+1CCF0 OUTLINED DIGIT ZERO is new in Unicode 16.0; U+1E4F0 NAG MUNDARI DIGIT
        // ZERO is from 15.0. llama.cpp's tables are 15.1.
        let new_digit = "\u{1CCF0}";
        let old_digit = "\u{1E4F0}";
        let joined = |text: &str| pieces(PreTokenizerFamily::Llama3, text).len() == 1;
        assert!(joined(&format!(" {new_digit}")), "a space joins a non-number symbol");
        assert!(!joined(&format!(" {old_digit}")), "numbers never take a space in Llama 3");
    }
}
