//! llama.cpp's general pre-tokenizer path, for the regexes it has no hand-written
//! matcher for (DeepSeek LLM and Coder, Tekken, GPT-4o).
//!
//! llama.cpp runs such a regex through the C++ standard library's ECMAScript engine,
//! on one of two views of the text, one code point per character:
//! - when the regex names a Unicode category (`\p{L}`, `\p{N}`, `\p{P}`, `\p{M}`,
//!   `\p{S}`), on a *collapsed* view: ASCII stays, other whitespace becomes `\v`, and
//!   every other code point becomes one stand-in per category (letter, number,
//!   punctuation, mark, symbol, anything else); `\p{X}` then means "X's stand-in or
//!   X's ASCII members". So `[^a-z]` takes any non-ASCII letter, upper or lower case.
//! - otherwise on the code points themselves, other whitespace again becoming `\v`.
//!
//! Here the same views are built (the stand-ins are private-use characters) and the
//! regex, rewritten for Oniguruma with the same meaning, runs on them; `\s` is spelled
//! out as the C locale's six ASCII whitespace characters and `$` as the end of the
//! piece. Regexes apply one after the other, each to the pieces the previous one left,
//! matches and the text between matches alike.

use std::sync::Arc;

use tokenizers::utils::SysRegex;

use super::unicode_15_1::{LETTERS, MARKS, NUMBERS, PUNCTUATION, SYMBOLS};
use super::TokenizerError;

/// The stand-ins of the collapsed view.
const OTHER: char = '\u{E0D0}';
const NUMBER: char = '\u{E0D1}';
const LETTER: char = '\u{E0D2}';
const PUNCT: char = '\u{E0D3}';
const MARK: char = '\u{E0D4}';
const SYMBOL: char = '\u{E0D5}';

/// `\p{..}` names llama.cpp collapses, the stand-in and the ASCII members of each.
const CATEGORIES: &[(&str, &str)] = &[
    (r"\p{N}", r"\x{E0D1}0-9"),
    (r"\p{L}", r"\x{E0D2}A-Za-z"),
    (r"\p{P}", r"\x{E0D3}!-#%-*,-/:-;?-@\[-\]_\{\}"),
    (r"\p{M}", r"\x{E0D4}"),
    (r"\p{S}", r"\x{E0D5}\$\+<->\^`\|~"),
    (r"\p{Lu}", r"\x{E0D2}A-Za-z"),
    (r"\p{Ll}", r"\x{E0D2}A-Za-z"),
    (r"\p{Lt}", r"\x{E0D2}A-Za-z"),
    (r"\p{Lm}", r"\x{E0D2}A-Za-z"),
    (r"\p{Lo}", r"\x{E0D2}A-Za-z"),
];

/// The C locale's whitespace (`isspace`), what `\s` means to llama.cpp's regexes.
const C_SPACE: &str = r"\x09-\x0D\x20";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Collapsed,
    CodePoints,
}

#[derive(Debug)]
struct Step {
    regex: SysRegex,
    view: View,
}

/// A list of llama.cpp regexes (in llama.cpp's spelling), applied as llama.cpp does.
#[derive(Debug, Clone)]
pub(crate) struct RegexSplitter {
    steps: Arc<Vec<Step>>,
}

impl RegexSplitter {
    pub fn new(regexes: &[&str]) -> Result<Self, TokenizerError> {
        let steps = regexes
            .iter()
            .map(|regex| {
                let (pattern, view) = for_oniguruma(regex);
                let regex = SysRegex::new(&pattern).map_err(|e| TokenizerError::Build {
                    what: format!("pre-tokenizer regex {regex:?}"),
                    message: e.to_string(),
                })?;
                Ok(Step { regex, view })
            })
            .collect::<Result<Vec<_>, TokenizerError>>()?;
        Ok(Self { steps: Arc::new(steps) })
    }

    /// Byte ranges of the words of `text`, in order, covering all of it.
    pub fn split(&self, text: &str, words: &mut Vec<(usize, usize)>) {
        let offsets: Vec<usize> =
            text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len())).collect();
        let n = offsets.len() - 1;
        let mut views: [Option<ViewText>; 2] = [None, None];
        let mut pieces = vec![(0, n)];
        for step in self.steps.iter() {
            let view =
                views[step.view as usize].get_or_insert_with(|| ViewText::new(text, step.view));
            let mut next = Vec::with_capacity(pieces.len());
            for (start, end) in pieces {
                let (from, to) = (view.offsets[start], view.offsets[end]);
                let mut at = start;
                for (a, b) in step.regex.find_iter(&view.text[from..to]) {
                    let (a, b) = (view.char_at(from + a), view.char_at(from + b));
                    if a > at {
                        next.push((at, a));
                    }
                    if b > a {
                        next.push((a, b));
                    }
                    at = b;
                }
                if at < end {
                    next.push((at, end));
                }
            }
            pieces = next;
        }
        words.extend(pieces.into_iter().map(|(a, b)| (offsets[a], offsets[b])));
    }
}

/// The text as one regex sees it, with the byte offset of every character.
struct ViewText {
    text: String,
    offsets: Vec<usize>,
}

impl ViewText {
    fn new(text: &str, view: View) -> Self {
        let mut out = String::with_capacity(text.len());
        let mut offsets = Vec::with_capacity(text.len() + 1);
        for c in text.chars() {
            offsets.push(out.len());
            out.push(match view {
                _ if c.is_ascii() => c,
                // White_Space, llama.cpp's whitespace set for code points past ASCII.
                _ if c.is_whitespace() => '\x0B',
                View::CodePoints => c,
                View::Collapsed => stand_in(c),
            });
        }
        offsets.push(out.len());
        Self { text: out, offsets }
    }

    fn char_at(&self, byte: usize) -> usize {
        self.offsets.partition_point(|&o| o < byte)
    }
}

fn stand_in(c: char) -> char {
    let is = |ranges: &[(u32, u32)]| {
        let cp = c as u32;
        let i = ranges.partition_point(|&(_, last)| last < cp);
        i < ranges.len() && ranges[i].0 <= cp
    };
    if is(LETTERS) {
        LETTER
    } else if is(NUMBERS) {
        NUMBER
    } else if is(PUNCTUATION) {
        PUNCT
    } else if is(MARKS) {
        MARK
    } else if is(SYMBOLS) {
        SYMBOL
    } else {
        OTHER
    }
}

/// A llama.cpp regex rewritten for Oniguruma over the view it runs on.
fn for_oniguruma(regex: &str) -> (String, View) {
    let view = if CATEGORIES.iter().any(|(name, _)| regex.contains(name)) {
        View::Collapsed
    } else {
        View::CodePoints
    };
    let mut out = String::with_capacity(regex.len() * 2);
    let mut inside = false;
    let mut rest = regex;
    while let Some(c) = rest.chars().next() {
        if let Some((name, members)) = CATEGORIES.iter().find(|(name, _)| rest.starts_with(name)) {
            if inside {
                out.push_str(members);
            } else {
                out.push_str(&format!("[{members}]"));
            }
            rest = &rest[name.len()..];
            continue;
        }
        let escape = |name: &str| rest.starts_with(name);
        if escape(r"\s") {
            out.push_str(&if inside { C_SPACE.to_string() } else { format!("[{C_SPACE}]") });
            rest = &rest[2..];
            continue;
        }
        if escape(r"\S") && !inside {
            out.push_str(&format!("[^{C_SPACE}]"));
            rest = &rest[2..];
            continue;
        }
        if c == '\\' {
            // Any other escape is kept as it is, with the character it escapes.
            let escaped = rest[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..1 + escaped]);
            rest = &rest[1 + escaped..];
            continue;
        }
        match c {
            '[' if !inside => inside = true,
            ']' if inside => inside = false,
            '$' if !inside => {
                out.push_str(r"\z");
                rest = &rest[1..];
                continue;
            }
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    (out, view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(regexes: &[&str], text: &str) -> Vec<String> {
        let mut ranges = Vec::new();
        RegexSplitter::new(regexes).unwrap().split(text, &mut ranges);
        ranges.iter().map(|&(a, b)| text[a..b].to_string()).collect()
    }

    #[test]
    fn categories_become_their_stand_in_and_ascii_members() {
        assert_eq!(
            for_oniguruma(r"[^\r\n\p{L}\p{N}]?\p{L}+|\s+(?!\S)|\s+$"),
            (
                r"[^\r\n\x{E0D2}A-Za-z\x{E0D1}0-9]?[\x{E0D2}A-Za-z]+|[\x09-\x0D\x20]+(?![^\x09-\x0D\x20])|[\x09-\x0D\x20]+\z"
                    .to_string(),
                View::Collapsed
            )
        );
        assert_eq!(for_oniguruma("[一-龥]+").1, View::CodePoints);
    }

    #[test]
    fn a_collapsed_letter_is_upper_and_lower_case_at_once() {
        // Tekken's "upper case then lower case" word: `[^a-z]` and `[^A-Z]` both take
        // a non-ASCII letter, so "ÉCOLEfoo" and "éA" split as llama.cpp splits them.
        let upper_then_lower = r"((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\s+";
        assert_eq!(words(&[upper_then_lower], "ÉCOLEfoo éA"), ["ÉCOLEfoo", " ", "é", "A"]);
    }

    #[test]
    fn regexes_apply_one_after_the_other_and_unmatched_text_stays_a_piece() {
        assert_eq!(
            words(&["[\r\n]", r"\s?\p{L}+", r"\p{N}"], "ab 12\n cd!"),
            ["ab", " ", "1", "2", "\n", " cd", "!"]
        );
        // `$` is the end of the piece; non-ASCII whitespace counts as `\s`.
        assert_eq!(words(&[r"\s+$"], "a\u{3000} "), ["a", "\u{3000} "]);
    }
}
