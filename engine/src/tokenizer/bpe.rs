//! Byte-level BPE over the words of `word_split`, as llama.cpp runs it: a word starts
//! as one symbol per byte, and the adjacent pair with the best (lowest) merge rank is
//! merged, leftmost first on ties, until no listed merge applies.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::byte_level::BYTE_LEVEL;
use super::word_split::WordSplitter;

/// Merge lookups dominate encoding and their keys are two token ids, so a cheap
/// integer mix (SplitMix64's finalizer) does better than the default SipHash.
#[derive(Default)]
struct IdPairHasher(u64);

impl Hasher for IdPairHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(tail));
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23);
    }
}

type IdPairMap<V> = HashMap<u64, V, BuildHasherDefault<IdPairHasher>>;
type WordMap = HashMap<Vec<u8>, u32, BuildHasherDefault<IdPairHasher>>;

fn pair_key(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

const NO_TOKEN: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct ByteLevelBpe {
    words: WordSplitter,
    /// The token of each single byte.
    byte_tokens: [u32; 256],
    /// (left, right) → (rank, merged token).
    merges: IdPairMap<(u32, u32)>,
    /// With llama.cpp's `ignore_merges` (Llama 3): a word that is a token is that token.
    whole_words: Option<WordMap>,
}

impl ByteLevelBpe {
    /// `token_texts` are byte-level strings (`Ġthe`); `merges` in rank order. Merges whose
    /// parts or result are not tokens are left out (the `tokenizers` BPE built from the
    /// same lists refuses them first). With `ignore_merges` (llama.cpp's flag), a word
    /// that is a token is that token.
    pub fn new(
        words: WordSplitter,
        ignore_merges: bool,
        token_texts: &[String],
        merges: &[(String, String)],
    ) -> Self {
        let mut id_of: HashMap<&str, u32> = HashMap::with_capacity(token_texts.len());
        for (id, text) in token_texts.iter().enumerate() {
            id_of.insert(text, id as u32);
        }
        let mut byte_tokens = [NO_TOKEN; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let c = BYTE_LEVEL.char_of(b as u8);
            *slot = id_of.get(c.encode_utf8(&mut [0; 4]) as &str).copied().unwrap_or(NO_TOKEN);
        }
        let mut merge_map = IdPairMap::default();
        merge_map.reserve(merges.len());
        let mut joined = String::new();
        for (rank, (left, right)) in merges.iter().enumerate() {
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            if let (Some(&l), Some(&r), Some(&m)) =
                (id_of.get(left.as_str()), id_of.get(right.as_str()), id_of.get(joined.as_str()))
            {
                merge_map.entry(pair_key(l, r)).or_insert((rank as u32, m));
            }
        }
        let whole_words = ignore_merges.then(|| {
            id_of
                .iter()
                .filter(|(text, _)| text.chars().all(|c| BYTE_LEVEL.byte_of(c).is_some()))
                .map(|(text, &id)| (BYTE_LEVEL.decode_token_text(text), id))
                .collect()
        });
        Self { words, byte_tokens, merges: merge_map, whole_words }
    }

    /// Appends the tokens of `text` (which holds no special token) to `ids`.
    pub fn encode(&self, text: &str, ids: &mut Vec<u32>) {
        let mut words = Vec::new();
        self.words.split(text, &mut words);
        let mut scratch = Scratch::default();
        for (start, end) in words {
            let word = &text.as_bytes()[start..end];
            if let Some(&id) = self.whole_words.as_ref().and_then(|w| w.get(word)) {
                ids.push(id);
            } else {
                self.merge_word(word, ids, &mut scratch);
            }
        }
    }

    fn merge_word(&self, word: &[u8], ids: &mut Vec<u32>, scratch: &mut Scratch) {
        if let [byte] = word {
            ids.extend(Some(self.byte_tokens[*byte as usize]).filter(|&id| id != NO_TOKEN));
            return;
        }
        let symbols = &mut scratch.symbols;
        symbols.clear();
        symbols.extend(word.iter().enumerate().map(|(i, &b)| Symbol {
            id: self.byte_tokens[b as usize],
            prev: i.checked_sub(1),
            next: (i + 1 < word.len()).then_some(i + 1),
        }));
        let queue = &mut scratch.queue;
        queue.clear();
        for left in 0..symbols.len() - 1 {
            self.offer(symbols, left, left + 1, queue);
        }
        while let Some(candidate) = queue.pop() {
            let (left, right) = (candidate.left, candidate.right);
            // Stale: one side has been merged away or changed since it was offered.
            if symbols[left].id != candidate.left_id
                || symbols[left].next != Some(right)
                || symbols[right].id != candidate.right_id
            {
                continue;
            }
            symbols[left].id = candidate.merged;
            symbols[left].next = symbols[right].next;
            symbols[right].id = NO_TOKEN;
            if let Some(next) = symbols[left].next {
                symbols[next].prev = Some(left);
                self.offer(symbols, left, next, queue);
            }
            if let Some(prev) = symbols[left].prev {
                self.offer(symbols, prev, left, queue);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            if symbols[i].id != NO_TOKEN {
                ids.push(symbols[i].id);
            }
            at = symbols[i].next;
        }
    }

    fn offer(
        &self,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Candidate>,
    ) {
        let (left_id, right_id) = (symbols[left].id, symbols[right].id);
        if let Some(&(rank, merged)) = self.merges.get(&pair_key(left_id, right_id)) {
            queue.push(Candidate { rank, left, right, left_id, right_id, merged });
        }
    }
}

#[derive(Debug, Default)]
struct Scratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Candidate>,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    /// `NO_TOKEN` once merged into its left neighbour (or for an unknown byte).
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
struct Candidate {
    rank: u32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

impl Ord for Candidate {
    /// The heap pops the greatest: the lowest rank, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::PreTokenizerFamily;

    fn tiny() -> ByteLevelBpe {
        let texts: Vec<String> =
            ["a", "b", "c", "ab", "bc", "abc", "Ġ", "Ġa"].iter().map(|s| s.to_string()).collect();
        let merges: Vec<(String, String)> = [("b", "c"), ("a", "b"), ("a", "bc"), ("Ġ", "a")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let words = WordSplitter::new(PreTokenizerFamily::Gpt2).unwrap();
        ByteLevelBpe::new(words, false, &texts, &merges)
    }

    #[test]
    fn the_best_ranked_pair_merges_first() {
        let mut ids = Vec::new();
        // "bc" (rank 0) before "ab" (rank 1), then "a"+"bc" → "abc".
        tiny().encode("abc", &mut ids);
        assert_eq!(ids, [5]);
    }

    #[test]
    fn ties_merge_leftmost_first_and_unknown_bytes_are_dropped() {
        let mut ids = Vec::new();
        tiny().encode("abab", &mut ids);
        assert_eq!(ids, [3, 3]);
        ids.clear();
        tiny().encode(" ab z", &mut ids);
        // " ab": "ab" (rank 1) merges before "Ġa" (rank 3); "z" has no token.
        assert_eq!(ids, [6, 3, 6]);
    }
}
