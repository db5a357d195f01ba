//! GPT-2's byte-level alphabet: every byte is written as one visible character, so a
//! byte-level BPE vocabulary is a set of ordinary strings that can be mapped back to bytes.

use std::sync::LazyLock;

/// The characters that stand for bytes in byte-level vocabularies, indexed by byte.
fn byte_to_char() -> [char; 256] {
    // Printable Latin-1 bytes stand for themselves; the others (controls, space, DEL,
    // NBSP, soft hyphen) are moved, in byte order, to U+0100 and up.
    let stands_for_itself = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next_shifted = 0x100u32;
    for b in 0..=255u8 {
        table[b as usize] = if stands_for_itself(b) {
            char::from(b)
        } else {
            next_shifted += 1;
            char::from_u32(next_shifted - 1).expect("below U+0144")
        };
    }
    table
}

/// Reading byte-level vocabulary entries back as bytes.
pub(crate) struct ByteLevelAlphabet {
    byte_to_char: [char; 256],
    /// Indexed by code point; every char of the alphabet is below U+0144.
    char_to_byte: Vec<Option<u8>>,
}

pub(crate) static BYTE_LEVEL: LazyLock<ByteLevelAlphabet> = LazyLock::new(ByteLevelAlphabet::new);

impl ByteLevelAlphabet {
    fn new() -> Self {
        let table = byte_to_char();
        let top = table.iter().map(|&c| c as usize).max().unwrap_or(0);
        let mut char_to_byte = vec![None; top + 1];
        for (b, &c) in table.iter().enumerate() {
            char_to_byte[c as usize] = Some(b as u8);
        }
        Self { byte_to_char: table, char_to_byte }
    }

    pub(crate) fn char_of(&self, byte: u8) -> char {
        self.byte_to_char[byte as usize]
    }

    pub(crate) fn byte_of(&self, c: char) -> Option<u8> {
        self.char_to_byte.get(c as usize).copied().flatten()
    }

    /// The bytes a normal vocabulary entry stands for. A character outside the
    /// alphabet cannot come from a byte; llama.cpp writes a visible marker for it
    /// (`[UNK_BYTE_0x<utf8 hex><token text>]`) and so do we, so pieces stay identical.
    pub(crate) fn decode_token_text(&self, text: &str) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.byte_of(c) {
                Some(b) => bytes.push(b),
                None => {
                    let mut utf8 = [0u8; 4];
                    bytes.extend_from_slice(b"[UNK_BYTE_0x");
                    for b in c.encode_utf8(&mut utf8).bytes() {
                        bytes.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    bytes.extend_from_slice(text.as_bytes());
                    bytes.push(b']');
                }
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_through_its_char() {
        let table = byte_to_char();
        for b in 0..=255u8 {
            assert_eq!(BYTE_LEVEL.byte_of(table[b as usize]), Some(b));
        }
        assert_eq!(BYTE_LEVEL.char_to_byte.iter().flatten().count(), 256);
    }

    #[test]
    fn space_and_newline_are_the_familiar_g_dot_and_c_dot() {
        let table = byte_to_char();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(BYTE_LEVEL.decode_token_text("Ġhello"), b" hello");
    }

    #[test]
    fn a_char_outside_the_alphabet_is_marked_not_dropped() {
        // 'é' (U+00E9) stands for byte 0xE9, not for its own UTF-8.
        assert_eq!(BYTE_LEVEL.decode_token_text("é"), vec![0xE9]);
        assert_eq!(BYTE_LEVEL.decode_token_text("€"), "[UNK_BYTE_0xe282ac€]".as_bytes());
    }
}
