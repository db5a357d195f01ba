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

/// The families of `tokenizer.ggml.pre` values this crate reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerFamily {
    /// GPT-2's regex alone.
    Gpt2,
    /// Each digit alone, then GPT-2's regex (SmolLM, StarCoder, Refact).
    Gpt2SingleDigits,
    /// Llama 3's regex; whole words found in the vocabulary skip the merges.
    Llama3,
}

impl PreTokenizerFamily {
    /// The family llama.cpp assigns to a `tokenizer.ggml.pre` value, for the values
    /// whose only effect in llama.cpp is the choice of regex (plus the defaults below).
    pub fn from_gguf_pre(pre: &str) -> Result<Self, TokenizerError> {
        match pre {
            "gpt-2" | "phi-2" | "mpt" | "olmo" => Ok(Self::Gpt2),
            "smollm" | "starcoder" | "refact" => Ok(Self::Gpt2SingleDigits),
            "llama3" | "llama-v3" | "llama-bpe" => Ok(Self::Llama3),
            other => Err(TokenizerError::UnsupportedPreTokenizer { pre: other.to_string() }),
        }
    }

    /// The `tokenizer.ggml.pre` values accepted, for error messages.
    pub const SUPPORTED: &'static str =
        "gpt-2, phi-2, mpt, olmo, smollm, starcoder, refact, llama3, llama-v3, llama-bpe";

    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            Self::Gpt2 => &[GPT2_REGEX],
            Self::Gpt2SingleDigits => &[SINGLE_DIGIT_REGEX, GPT2_REGEX],
            Self::Llama3 => &[LLAMA3_REGEX],
        }
    }

    /// llama.cpp's `ignore_merges`: a pre-token that is itself in the vocabulary is
    /// emitted as that one token, whatever the merges would have built.
    pub fn ignore_merges(self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// Whether llama.cpp adds BOS when the GGUF has no `tokenizer.ggml.add_bos_token`.
    pub fn adds_bos_by_default(self) -> bool {
        matches!(self, Self::Llama3)
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
