//! Cutting text into the words byte-level BPE merges within. For the regexes llama.cpp
//! matches by hand (GPT-2's, Llama 3's, Qwen2's), hand-written matchers: the same words
//! as `pre_tokenizer`'s regexes (the tests compare them), several times faster, and
//! classifying characters with llama.cpp's Unicode version (15.1) rather than the
//! regex engine's. The other families go through `regex_split`, as llama.cpp's go
//! through its regex engine.

use super::pre_tokenizer::Matcher;
use super::regex_split::RegexSplitter;
use super::unicode_15_1::{LETTERS, NUMBERS};
use super::{PreTokenizerFamily, TokenizerError};

/// How a family's words are found.
#[derive(Debug, Clone)]
pub(crate) enum WordSplitter {
    Matcher(Matcher),
    Regexes(RegexSplitter),
}

impl WordSplitter {
    pub fn new(family: PreTokenizerFamily) -> Result<Self, TokenizerError> {
        Ok(match family.matcher() {
            Some(matcher) => Self::Matcher(matcher),
            None => Self::Regexes(RegexSplitter::new(family.regexes())?),
        })
    }

    /// Byte ranges of the words of `text`, in order, covering all of it.
    pub fn split(&self, text: &str, words: &mut Vec<(usize, usize)>) {
        match self {
            Self::Matcher(matcher) => split_words(*matcher, text, words),
            Self::Regexes(regexes) => regexes.split(text, words),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let cp = c as u32;
    let i = ranges.partition_point(|&(_, last)| last < cp);
    i < ranges.len() && ranges[i].0 <= cp
}

fn class_of(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t'..='\r' | ' ' => Class::Space,
            _ => Class::Other,
        };
    }
    // White_Space is the same in every Unicode version llama.cpp and Rust know.
    if c.is_whitespace() {
        Class::Space
    } else if in_ranges(LETTERS, c) {
        Class::Letter
    } else if in_ranges(NUMBERS, c) {
        Class::Number
    } else {
        Class::Other
    }
}

/// A piece of text as characters, with their classes and byte offsets.
struct Chars {
    chars: Vec<char>,
    classes: Vec<Class>,
    /// Byte offset of every char, plus the text's length at the end.
    offsets: Vec<usize>,
}

impl Chars {
    fn new(text: &str) -> Self {
        let n = text.len();
        let mut chars = Vec::with_capacity(n);
        let mut classes = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n + 1);
        for (offset, c) in text.char_indices() {
            chars.push(c);
            classes.push(class_of(c));
            offsets.push(offset);
        }
        offsets.push(n);
        Self { chars, classes, offsets }
    }

    /// Class at `i` when `i` is inside `..end`.
    fn class(&self, i: usize, end: usize) -> Option<Class> {
        (i < end).then(|| self.classes[i])
    }

    fn run(&self, mut i: usize, end: usize, class: Class) -> usize {
        while i < end && self.classes[i] == class {
            i += 1;
        }
        i
    }
}

/// Byte ranges of the words of `text`, in order, covering all of it.
fn split_words(matcher: Matcher, text: &str, words: &mut Vec<(usize, usize)>) {
    let chars = Chars::new(text);
    let n = chars.chars.len();
    let mut char_words = Vec::new();
    match matcher {
        Matcher::Gpt2 => gpt2(&chars, 0, n, &mut char_words),
        Matcher::Gpt2SingleDigits => {
            // Every number character alone, then GPT-2's split of the stretches between.
            let mut start = 0;
            for i in 0..n {
                if chars.classes[i] == Class::Number {
                    gpt2(&chars, start, i, &mut char_words);
                    char_words.push((i, i + 1));
                    start = i + 1;
                }
            }
            gpt2(&chars, start, n, &mut char_words);
        }
        Matcher::Llama3 { max_digits } => llama3(&chars, n, max_digits, &mut char_words),
    }
    words.extend(char_words.into_iter().map(|(a, b)| (chars.offsets[a], chars.offsets[b])));
}

fn is_contraction_letter(c: char) -> bool {
    matches!(c, 's' | 't' | 'm' | 'd')
}

fn is_contraction_pair(a: char, b: char) -> bool {
    matches!((a, b), ('r', 'e') | ('v', 'e') | ('l', 'l'))
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// over the chars `start..end`.
fn gpt2(chars: &Chars, start: usize, end: usize, words: &mut Vec<(usize, usize)>) {
    let c = &chars.chars;
    let mut i = start;
    while i < end {
        let word_end = if c[i] == '\'' && i + 1 < end && is_contraction_letter(c[i + 1]) {
            i + 2
        } else if c[i] == '\'' && i + 2 < end && is_contraction_pair(c[i + 1], c[i + 2]) {
            i + 3
        } else {
            let body = i + usize::from(c[i] == ' ');
            match chars.class(body, end) {
                Some(class @ (Class::Letter | Class::Number | Class::Other)) => {
                    chars.run(body, end, class)
                }
                _ => whitespace(chars, i, end),
            }
        };
        words.push((i, word_end));
        i = word_end;
    }
}

/// `\s+(?!\S)|\s+` at `i`: a run of whitespace leaves its last character to the word
/// that follows, unless the run ends the text.
fn whitespace(chars: &Chars, i: usize, end: usize) -> usize {
    let run_end = chars.run(i, end, Class::Space);
    if run_end - i > 1 && run_end < end {
        run_end - 1
    } else {
        run_end.max(i + 1)
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` over the chars `0..end`, with
/// `{1,max_digits}` for the numbers (Qwen2's is `\p{N}`).
fn llama3(chars: &Chars, end: usize, max_digits: usize, words: &mut Vec<(usize, usize)>) {
    let c = &chars.chars;
    let lower = |i: usize| c[i].to_ascii_lowercase();
    let is_newline = |i: usize| c[i] == '\r' || c[i] == '\n';
    let mut i = 0;
    while i < end {
        let class = chars.classes[i];
        let word_end = if c[i] == '\'' && i + 1 < end && is_contraction_letter(lower(i + 1)) {
            i + 2
        } else if c[i] == '\'' && i + 2 < end && is_contraction_pair(lower(i + 1), lower(i + 2)) {
            i + 3
        } else if class == Class::Letter {
            chars.run(i, end, Class::Letter)
        } else if !is_newline(i)
            && class != Class::Number
            && chars.class(i + 1, end) == Some(Class::Letter)
        {
            chars.run(i + 1, end, Class::Letter)
        } else if class == Class::Number {
            chars.run(i, end.min(i + max_digits), Class::Number)
        } else if chars.class(i + usize::from(c[i] == ' '), end) == Some(Class::Other) {
            let mut j = chars.run(i + usize::from(c[i] == ' '), end, Class::Other);
            while j < end && is_newline(j) {
                j += 1;
            }
            j
        } else {
            let run_end = chars.run(i, end, Class::Space);
            match (i..run_end).rev().find(|&j| is_newline(j)) {
                Some(last_newline) => last_newline + 1,
                None => whitespace(chars, i, end),
            }
        };
        words.push((i, word_end));
        i = word_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(family: PreTokenizerFamily, text: &str) -> Vec<&str> {
        let mut ranges = Vec::new();
        WordSplitter::new(family).unwrap().split(text, &mut ranges);
        ranges.iter().map(|&(a, b)| &text[a..b]).collect()
    }

    #[test]
    fn classes_follow_unicode_15_1() {
        assert_eq!(class_of('é'), Class::Letter);
        assert_eq!(class_of('٣'), Class::Number);
        assert_eq!(class_of('\u{3000}'), Class::Space);
        assert_eq!(class_of('\u{1E4F0}'), Class::Number, "Nag Mundari digit, Unicode 15.0");
        assert_eq!(class_of('\u{1CCF0}'), Class::Other, "outlined digit, Unicode 16.0");
        assert_eq!(class_of('\u{0301}'), Class::Other, "a combining mark is not a letter");
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words(PreTokenizerFamily::Gpt2, "I'm   don't\n\n x?!  "),
            ["I", "'m", "  ", " don", "'t", "\n\n", " x", "?!", "  "]
        );
    }

    #[test]
    fn smollm_words_isolate_every_digit() {
        assert_eq!(words(PreTokenizerFamily::Gpt2SingleDigits, "v 12a"), ["v", " ", "1", "2", "a"]);
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words(PreTokenizerFamily::Llama3, "We'LL pay 12345 (now)!\r\n\n  ok  "),
            ["We", "'LL", " pay", " ", "123", "45", " (", "now", ")!\r\n\n", " ", " ok", "  "]
        );
    }

    #[test]
    fn qwen2_words_keep_every_digit_alone() {
        assert_eq!(
            words(PreTokenizerFamily::Qwen2, "We'LL pay 12345!\n"),
            ["We", "'LL", " pay", " ", "1", "2", "3", "4", "5", "!\n"]
        );
    }

    /// The matchers and `pre_tokenizer`'s regexes cut the same words.
    #[test]
    fn the_matchers_agree_with_the_regexes() {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let text = "Don't  stop—I'M 3.14159, x2 \t\tend\r\n\n  \u{3000}日本語 ١٢٣٤ \
                    e\u{301}\u{1CCF0}12 '' 's\n\n\n    fn(){}  ";
        for family in [
            PreTokenizerFamily::Gpt2,
            PreTokenizerFamily::Gpt2SingleDigits,
            PreTokenizerFamily::Llama3,
            PreTokenizerFamily::Qwen2,
            PreTokenizerFamily::ChatGlm4,
        ] {
            let mut pre = PreTokenizedString::from(text);
            family.pre_tokenizer().unwrap().pre_tokenize(&mut pre).unwrap();
            let by_regex: Vec<&str> = pre
                .get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(_, (a, b), _)| &text[a..b])
                .collect();
            assert_eq!(words(family, text), by_regex, "{family:?}");
        }
    }
}
