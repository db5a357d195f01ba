//! Cutting special tokens out of text before BPE, the way llama.cpp does it.
//!
//! llama.cpp takes its special tokens longest first and, for each one, cuts every
//! occurrence (left to right, not overlapping) out of the text that no earlier token
//! has claimed. Control and unknown tokens take part only when the caller asks to parse
//! special tokens; user-defined tokens always do. Equivalent here: find every
//! occurrence of every token, then accept them in that priority order when they do not
//! overlap anything already accepted.

use std::collections::BTreeMap;

use super::TokenKind;

#[derive(Debug, Clone)]
pub(crate) struct SpecialToken {
    pub id: u32,
    pub text: String,
    pub kind: TokenKind,
    /// Whitespace before the token is dropped (llama.cpp's LSTRIP attribute).
    pub lstrip: bool,
    /// Whitespace after the token is dropped (llama.cpp's RSTRIP attribute).
    pub rstrip: bool,
}

impl SpecialToken {
    fn always_parsed(&self) -> bool {
        self.kind == TokenKind::UserDefined
    }
}

/// A piece of the text after special tokens are cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialTokenSplitter {
    /// Longest first; ties by id, so the order is deterministic.
    tokens: Vec<SpecialToken>,
    /// Indices into `tokens`, grouped by the token's first byte.
    by_first_byte: Vec<Vec<usize>>,
}

/// What occupies a byte range of the text once a token is accepted.
#[derive(Debug, Clone, Copy)]
enum Claim {
    Token(u32),
    /// Whitespace removed by a token's lstrip/rstrip.
    Dropped,
}

impl SpecialTokenSplitter {
    pub fn new(mut tokens: Vec<SpecialToken>) -> Self {
        tokens.retain(|t| !t.text.is_empty());
        tokens.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let mut by_first_byte = vec![Vec::new(); 256];
        for (i, t) in tokens.iter().enumerate() {
            by_first_byte[t.text.as_bytes()[0] as usize].push(i);
        }
        Self { tokens, by_first_byte }
    }

    pub fn tokens(&self) -> &[SpecialToken] {
        &self.tokens
    }

    pub fn split<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let occurrences = self.occurrences(text, parse_special);
        if occurrences.is_empty() {
            return if text.is_empty() { Vec::new() } else { vec![Fragment::Text(text)] };
        }
        let claims = self.accept(text, occurrences);
        let mut fragments = Vec::with_capacity(2 * claims.len() + 1);
        let mut pos = 0;
        for (&start, &(end, claim)) in &claims {
            if start > pos {
                fragments.push(Fragment::Text(&text[pos..start]));
            }
            if let Claim::Token(id) = claim {
                fragments.push(Fragment::Token(id));
            }
            pos = end;
        }
        if pos < text.len() {
            fragments.push(Fragment::Text(&text[pos..]));
        }
        fragments
    }

    /// Every (priority, start) where a token that takes part occurs, overlaps included.
    fn occurrences(&self, text: &str, parse_special: bool) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        for start in 0..bytes.len() {
            for &i in &self.by_first_byte[bytes[start] as usize] {
                let token = &self.tokens[i];
                if (parse_special || token.always_parsed())
                    && bytes[start..].starts_with(token.text.as_bytes())
                {
                    found.push((i, start));
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// Accepted claims by start offset: (end, what).
    fn accept(
        &self,
        text: &str,
        occurrences: Vec<(usize, usize)>,
    ) -> BTreeMap<usize, (usize, Claim)> {
        let mut claims: BTreeMap<usize, (usize, Claim)> = BTreeMap::new();
        let free = |claims: &BTreeMap<usize, (usize, Claim)>, start: usize, end: usize| {
            let before_ok =
                claims.range(..=start).next_back().is_none_or(|(_, &(e, _))| e <= start);
            let after_ok = claims.range(start..end).next().is_none();
            before_ok && after_ok
        };
        for (i, start) in occurrences {
            let token = &self.tokens[i];
            let end = start + token.text.len();
            if !free(&claims, start, end) {
                continue;
            }
            claims.insert(start, (end, Claim::Token(token.id)));
            if token.lstrip {
                let floor = claims.range(..start).next_back().map_or(0, |(_, &(e, _))| e);
                let kept = floor + text[floor..start].trim_end_matches(is_c_space).len();
                if kept < start {
                    claims.insert(kept, (start, Claim::Dropped));
                }
            }
            if token.rstrip {
                let ceiling = claims.range(end..).next().map_or(text.len(), |(&s, _)| s);
                let dropped_to = ceiling - text[end..ceiling].trim_start_matches(is_c_space).len();
                if dropped_to > end {
                    claims.insert(end, (dropped_to, Claim::Dropped));
                }
            }
        }
        claims
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for lstrip/rstrip.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u32, text: &str, kind: TokenKind) -> SpecialToken {
        SpecialToken { id, text: text.to_string(), kind, lstrip: false, rstrip: false }
    }

    #[test]
    fn control_tokens_are_cut_only_when_parsing_special_tokens() {
        let splitter = SpecialTokenSplitter::new(vec![token(7, "<|end|>", TokenKind::Control)]);
        let text = "a<|end|>b";
        assert_eq!(
            splitter.split(text, true),
            vec![Fragment::Text("a"), Fragment::Token(7), Fragment::Text("b")]
        );
        assert_eq!(splitter.split(text, false), vec![Fragment::Text(text)]);
    }

    #[test]
    fn user_defined_tokens_are_always_cut() {
        let splitter = SpecialTokenSplitter::new(vec![token(3, "<pad>", TokenKind::UserDefined)]);
        assert_eq!(
            splitter.split("<pad><pad>x", false),
            vec![Fragment::Token(3), Fragment::Token(3), Fragment::Text("x")]
        );
    }

    #[test]
    fn the_longer_token_wins_even_when_the_shorter_starts_first() {
        // llama.cpp cuts longest first: "bcd" is taken before "ab" is looked for.
        let splitter = SpecialTokenSplitter::new(vec![
            token(1, "ab", TokenKind::Control),
            token(2, "bcd", TokenKind::Control),
        ]);
        assert_eq!(splitter.split("abcd", true), vec![Fragment::Text("a"), Fragment::Token(2)]);
    }

    #[test]
    fn a_token_does_not_overlap_itself() {
        let splitter = SpecialTokenSplitter::new(vec![token(1, "aa", TokenKind::Control)]);
        assert_eq!(splitter.split("aaa", true), vec![Fragment::Token(1), Fragment::Text("a")]);
    }

    #[test]
    fn lstrip_and_rstrip_drop_the_surrounding_whitespace() {
        let mut mask = token(9, "<mask>", TokenKind::Control);
        mask.lstrip = true;
        mask.rstrip = true;
        let splitter = SpecialTokenSplitter::new(vec![mask]);
        assert_eq!(
            splitter.split("a \t<mask>\n b", true),
            vec![Fragment::Text("a"), Fragment::Token(9), Fragment::Text("b")]
        );
    }

    #[test]
    fn empty_text_gives_no_fragment() {
        let splitter = SpecialTokenSplitter::new(vec![token(1, "<s>", TokenKind::Control)]);
        assert!(splitter.split("", true).is_empty());
    }
}
