//! Turning generated tokens into text as they come, without splitting characters.

use super::{HerdTokenizer, TokenizerError};

/// Incremental token → text decoding. A byte-level token can end in the middle of a
/// UTF-8 character (emoji and CJK often span two or three tokens); the decoder holds
/// such bytes back until the character is complete, so every piece of text it hands
/// out is final. Invalid bytes become U+FFFD exactly where `String::from_utf8_lossy`
/// of the whole byte stream would put them, so the pieces always add up to
/// `tokenizer.decode(all_ids)`.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    render_special: bool,
}

impl StreamDecoder {
    /// `render_special`: whether control tokens (`<|im_end|>`, ...) appear in the text.
    pub fn new(render_special: bool) -> Self {
        Self { pending: Vec::new(), render_special }
    }

    /// The text that `id` completes (often empty while a character is incomplete).
    pub fn push(&mut self, tokenizer: &HerdTokenizer, id: u32) -> Result<String, TokenizerError> {
        let piece = tokenizer.token_bytes(id, self.render_special)?;
        Ok(self.push_bytes(piece))
    }

    /// Like [`Self::push`] for raw bytes.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid_len = e.valid_up_to();
                    let valid = &self.pending[consumed..consumed + valid_len];
                    // SAFETY-free: `valid_up_to` guarantees this prefix is UTF-8.
                    text.push_str(std::str::from_utf8(valid).expect("valid prefix"));
                    consumed += valid_len;
                    match e.error_len() {
                        // Bytes that can never start or continue a character.
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            consumed += bad;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        text
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&[u8]]) -> String {
        let mut decoder = StreamDecoder::new(false);
        let mut text: String = chunks.iter().map(|c| decoder.push_bytes(c)).collect();
        text.push_str(&decoder.finish());
        text
    }

    #[test]
    fn a_character_split_across_pushes_comes_out_whole() {
        let smile = "😀".as_bytes();
        let mut decoder = StreamDecoder::new(false);
        assert_eq!(decoder.push_bytes(&smile[..1]), "");
        assert_eq!(decoder.push_bytes(&smile[1..3]), "");
        assert_eq!(decoder.pending_len(), 3);
        assert_eq!(decoder.push_bytes(&[smile[3], b'!']), "😀!");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_as_lossy_decoding_would() {
        let cases: &[&[&[u8]]] = &[
            &[b"a\xff", b"b"],
            &[b"\xf0\x9f", b"x"],
            &[b"\xe2\x82", b"\xe2\x82\xac"],
            &[b"ok\xf0\x9f\x98"],
            &[b"\xc0\xaf", b"\xed\xa0\x80"],
        ];
        for chunks in cases {
            let whole: Vec<u8> = chunks.concat();
            assert_eq!(stream(chunks), String::from_utf8_lossy(&whole), "{chunks:?}");
        }
    }
}
