//! SentencePiece vocabularies (GGUF `tokenizer.ggml.model = llama`: Llama 2, Mistral,
//! Gemma) encoded as llama.cpp's SPM tokenizer does.
//!
//! Spaces become `▁` (U+2581), with one more in front when the vocabulary asks for a
//! space prefix. The text starts as one symbol per character; the adjacent pair whose
//! concatenation is a vocabulary entry with the highest score is merged (the leftmost on
//! ties) until no pair is an entry. A final symbol that is not an entry (a character
//! the vocabulary lacks) falls back to its bytes' `<0xNN>` tokens. No pre-tokenizer
//! splits the text into words first: the whole fragment between special tokens merges
//! as one sequence.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::TokenizerError;

/// `▁`, SentencePiece's visible space.
pub(crate) const SPACE_MARK: char = '\u{2581}';

/// Every vocabulary entry by its text, in one buffer with an open-addressing index:
/// built once in a few milliseconds for a 262k vocabulary, and looked up without
/// allocating. Like llama.cpp's `token_to_id`, it holds every entry, special or not.
#[derive(Debug, Clone)]
pub(crate) struct PieceIndex {
    bytes: Vec<u8>,
    /// End of each id's text in `bytes` (its start is the previous id's end).
    ends: Vec<u32>,
    /// Per slot, the entry's hash in the high half and id + 1 in the low half (0 when
    /// empty), so that most misses never touch the texts; a power of two at least twice
    /// the vocabulary.
    slots: Vec<u64>,
}

impl PieceIndex {
    /// `texts` by id. A text listed twice keeps its last id, as llama.cpp's map does.
    pub fn new<'a>(texts: impl ExactSizeIterator<Item = &'a str>) -> Self {
        let n = texts.len();
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(n);
        for text in texts {
            bytes.extend_from_slice(text.as_bytes());
            ends.push(bytes.len() as u32);
        }
        let mut index = Self { bytes, ends, slots: vec![0; (2 * n).next_power_of_two().max(2)] };
        for id in 0..n as u32 {
            let text = index.text(id);
            let (slot, _) = index.find(text);
            index.slots[slot] = tagged(hash(text), id);
        }
        index
    }

    fn text(&self, id: u32) -> &[u8] {
        let end = self.ends[id as usize] as usize;
        let start = if id == 0 { 0 } else { self.ends[id as usize - 1] as usize };
        &self.bytes[start..end]
    }

    /// The slot holding `text`, or the empty slot where it would go; and its id.
    fn find(&self, text: &[u8]) -> (usize, Option<u32>) {
        let mask = self.slots.len() - 1;
        let h = hash(text);
        let mut slot = h as usize & mask;
        loop {
            let entry = self.slots[slot];
            if entry == 0 {
                return (slot, None);
            }
            let id = (entry as u32).wrapping_sub(1);
            if entry >> 32 == h >> 32 && self.text(id) == text {
                return (slot, Some(id));
            }
            slot = (slot + 1) & mask;
        }
    }

    pub fn get(&self, text: &[u8]) -> Option<u32> {
        self.find(text).1
    }
}

fn tagged(hash: u64, id: u32) -> u64 {
    (hash & 0xFFFF_FFFF_0000_0000) | (id as u64 + 1)
}

/// FxHash-style: eight bytes at a time, then SplitMix64's finalizer.
fn hash(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ x).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[derive(Debug, Clone)]
pub(crate) struct SentencePiece {
    pieces: PieceIndex,
    scores: Vec<f32>,
    /// The token of each byte: `<0xNN>`, else the byte as a one-character entry, else
    /// the unknown token; `None` when there is none of these.
    byte_tokens: [Option<u32>; 256],
    add_space_prefix: bool,
}

impl SentencePiece {
    /// `texts` and `scores` by id; `unknown` is the vocabulary's UNK, if any.
    pub fn new(
        texts: &[String],
        scores: Vec<f32>,
        unknown: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Self, TokenizerError> {
        if scores.len() != texts.len() {
            return Err(TokenizerError::BadKey {
                key: "tokenizer.ggml.scores".into(),
                message: format!("{} scores for {} tokens", scores.len(), texts.len()),
            });
        }
        let pieces = PieceIndex::new(texts.iter().map(String::as_str));
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = pieces
                .get(format!("<0x{b:02X}>").as_bytes())
                .or_else(|| pieces.get(&[b as u8]))
                .or(unknown);
        }
        Ok(Self { pieces, scores, byte_tokens, add_space_prefix })
    }

    /// The id of a vocabulary entry (any kind) by its text.
    pub fn piece_id(&self, text: &str) -> Option<u32> {
        self.pieces.get(text.as_bytes())
    }

    /// Whether a fragment that starts the text or follows a special token gets a `▁`
    /// in front (`tokenizer.ggml.add_space_prefix`).
    pub fn adds_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Appends the tokens of `text` (which holds no special token) to `ids`; `prefix`
    /// puts a space in front first (see [`Self::adds_space_prefix`]).
    pub fn encode(&self, text: &str, prefix: bool, ids: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3 * (text.len() / 4 + 1));
        if prefix {
            escaped.push(SPACE_MARK);
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { SPACE_MARK } else { c });
        }
        self.merge(escaped.as_bytes(), ids);
    }

    fn merge(&self, text: &[u8], ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        let mut offset = 0;
        while offset < text.len() {
            let len = utf8_len(text[offset]).min(text.len() - offset);
            let i = symbols.len();
            symbols.push(Symbol {
                start: offset,
                len,
                prev: i.checked_sub(1),
                next: (offset + len < text.len()).then_some(i + 1),
            });
            offset += len;
        }
        let mut queue = BinaryHeap::with_capacity(symbols.len());
        for left in 1..symbols.len() {
            self.offer(text, &symbols, left - 1, left, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (left, right) = (pair.left, pair.right);
            // Stale: a side was merged away or grew since the pair was offered.
            if symbols[left].len == 0
                || symbols[right].len == 0
                || symbols[left].len + symbols[right].len != pair.len
            {
                continue;
            }
            symbols[left].len += symbols[right].len;
            symbols[right].len = 0;
            symbols[left].next = symbols[right].next;
            if let Some(next) = symbols[left].next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = symbols[left].prev {
                self.offer(text, &symbols, prev, left, &mut queue);
            }
            if let Some(next) = symbols[left].next {
                self.offer(text, &symbols, left, next, &mut queue);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let symbol = &symbols[i];
            let piece = &text[symbol.start..symbol.start + symbol.len];
            match self.pieces.get(piece) {
                Some(id) => ids.push(id),
                None => ids.extend(piece.iter().filter_map(|&b| self.byte_tokens[b as usize])),
            }
            at = symbol.next;
        }
    }

    fn offer(
        &self,
        text: &[u8],
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
    ) {
        let len = symbols[left].len + symbols[right].len;
        let start = symbols[left].start;
        if let Some(id) = self.pieces.get(&text[start..start + len]) {
            queue.push(Pair { score: self.scores[id as usize], left, right, len });
        }
    }
}

/// Length of the UTF-8 sequence a lead byte starts (llama.cpp's `unicode_len_utf8`).
fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    /// Bytes; 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the two symbols together when offered.
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

impl Ord for Pair {
    /// The heap pops the greatest: the highest score, then the leftmost pair. Scores
    /// compare as C++ floats do (-0 equals +0).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(entries: &[(&str, f32)]) -> (Vec<String>, Vec<f32>) {
        let mut texts: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        let mut scores = vec![0.0; 256];
        for (text, score) in entries {
            texts.push(text.to_string());
            scores.push(*score);
        }
        (texts, scores)
    }

    fn encode(spm: &SentencePiece, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        spm.encode(text, spm.adds_space_prefix(), &mut ids);
        ids
    }

    #[test]
    fn the_pair_making_the_best_scored_entry_merges_first() {
        // 256 "a", 257 "b", 258 "c", 259 "ab", 260 "bc", 261 "abc".
        let (texts, scores) = vocab(&[
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("ab", -3.0),
            ("bc", -2.0),
            ("abc", -5.0),
        ]);
        let spm = SentencePiece::new(&texts, scores, None, false).unwrap();
        // "bc" outscores "ab"; then "a" + "bc" is "abc".
        assert_eq!(encode(&spm, "abc"), [261]);
        // Ties merge leftmost first: "ab" + "ab".
        assert_eq!(encode(&spm, "abab"), [259, 259]);
    }

    #[test]
    fn spaces_become_the_space_mark_with_a_prefix_when_asked() {
        let (texts, scores) =
            vocab(&[("▁", -1.0), ("h", -1.0), ("i", -1.0), ("▁hi", -1.5), ("▁h", -2.0)]);
        let with_prefix = SentencePiece::new(&texts, scores.clone(), None, true).unwrap();
        assert_eq!(encode(&with_prefix, "hi hi"), [259, 259]);
        let without = SentencePiece::new(&texts, scores, None, false).unwrap();
        assert_eq!(encode(&without, "hi hi"), [257, 258, 259]);
    }

    #[test]
    fn characters_outside_the_vocabulary_fall_back_to_bytes() {
        let (texts, scores) = vocab(&[("a", -1.0)]);
        let spm = SentencePiece::new(&texts, scores, None, false).unwrap();
        // "é" is C3 A9.
        assert_eq!(encode(&spm, "aé"), [256, 0xC3, 0xA9]);
    }

    #[test]
    fn the_piece_index_finds_every_entry_and_nothing_else() {
        let texts: Vec<String> = (0..5000).map(|i| format!("piece{i}")).collect();
        let index = PieceIndex::new(texts.iter().map(String::as_str));
        for (id, text) in texts.iter().enumerate() {
            assert_eq!(index.get(text.as_bytes()), Some(id as u32));
        }
        assert_eq!(index.get(b"piece5000"), None);
        assert_eq!(index.get(b""), None);
    }
}
