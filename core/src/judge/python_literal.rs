//! A Python literal reader: what `ast.literal_eval` (CPython 3.11) accepts and how it fails,
//! for the judge completions that alpaca_eval's `ranking_parser` evaluates.
//!
//! Accepted, as in Python: ints (decimal, `0x`/`0o`/`0b`, `_` separators), floats, imaginary
//! numbers and `real ± imaginary`, one unary `+`/`-` on a number, strings and bytes (every
//! prefix, escapes, triple quotes, implicit concatenation), `True`/`False`/`None`, `...`,
//! tuples (with or without parentheses), lists, sets, `set()`, dicts; comments, blank lines,
//! backslash continuations, and Python's indentation and line rules around the expression.
//!
//! Failures come in Python's three kinds: the text is not a Python expression
//! ([`LiteralError::Syntax`], Python's `SyntaxError`), it is one but not a literal
//! ([`LiteralError::Malformed`], `ValueError`), or a dict key or set element is unhashable
//! ([`LiteralError::Unhashable`], `TypeError`), reported in Python's evaluation order.
//!
//! Known simplifications, none of which can turn a failing ranking into a valid one or
//! back except the first: `\N{...}` escapes decode printable ASCII names exactly and accept
//! any other name as U+FFFD (Python rejects an unknown name); valid Python expressions other than names, f-strings
//! and nested unary/binary operators (calls, attributes, comparisons …) are reported as
//! `Syntax` where Python says `Malformed` (or `TypeError`, when an unhashable key came
//! first); lone surrogates decode to U+FFFD.

/// A Python value that `ast.literal_eval` can produce.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(PyInt),
    Float(f64),
    Complex {
        re: f64,
        im: f64,
    },
    Str(String),
    Bytes(Vec<u8>),
    Ellipsis,
    Tuple(Vec<PyValue>),
    List(Vec<PyValue>),
    /// Elements in source order; duplicates are kept (herd never needs set semantics).
    Set(Vec<PyValue>),
    /// Entries in source order; a later equal key overrides an earlier one on lookup.
    Dict(Vec<(PyValue, PyValue)>),
}

/// A Python int: exact when it fits in an `i128`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PyInt {
    Small(i128),
    /// Too large for `i128`: its value as Python's `float(int)` gives it, infinite where
    /// Python raises `OverflowError`. Never equal to a small number.
    Big(f64),
}

impl PyValue {
    /// Python's type name, as its error messages print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Complex { .. } => "complex",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::Ellipsis => "ellipsis",
            PyValue::Tuple(_) => "tuple",
            PyValue::List(_) => "list",
            PyValue::Set(_) => "set",
            PyValue::Dict(_) => "dict",
        }
    }

    /// Python's `hash()` succeeds: the value can be a dict key or a set element.
    pub fn is_hashable(&self) -> bool {
        match self {
            PyValue::List(_) | PyValue::Set(_) | PyValue::Dict(_) => false,
            PyValue::Tuple(items) => items.iter().all(PyValue::is_hashable),
            _ => true,
        }
    }

    /// `self[key]` for a str key on a dict: the last entry whose key equals `key`.
    pub fn dict_get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| matches!(k, PyValue::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as a number, if it is one (`bool` counts, as in Python arithmetic).
    /// A complex number counts only when its imaginary part is zero.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            PyValue::Int(PyInt::Small(i)) => Some(*i as f64),
            PyValue::Int(PyInt::Big(approx)) => Some(*approx),
            PyValue::Float(f) => Some(*f),
            PyValue::Complex { re, im } if *im == 0.0 => Some(*re),
            _ => None,
        }
    }

    /// Python's `self == n` for a small int `n`.
    pub fn equals_int(&self, n: i128) -> bool {
        match self {
            PyValue::Bool(b) => i128::from(*b) == n,
            PyValue::Int(PyInt::Small(i)) => *i == n,
            PyValue::Int(PyInt::Big(_)) => false,
            PyValue::Float(f) => *f == n as f64,
            PyValue::Complex { re, im } => *im == 0.0 && *re == n as f64,
            _ => false,
        }
    }
}

/// Why `ast.literal_eval` would fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiteralError {
    /// Python raises `SyntaxError` (or `IndentationError`, or `RecursionError` for absurdly
    /// deep operator chains): the text is not a single Python expression.
    #[error("not a Python expression at byte {offset}: {message}")]
    Syntax { offset: usize, message: String },
    /// Python raises `ValueError: malformed node or string`: an expression, not a literal
    /// (also `int + complex` with an int too large for a float: Python's `OverflowError`).
    #[error("not a Python literal at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
    /// Python raises `TypeError: unhashable type`.
    #[error("unhashable type: '{type_name}'")]
    Unhashable { type_name: &'static str },
}

/// `ast.literal_eval(text)` for a `str` argument.
pub fn literal_eval(text: &str) -> Result<PyValue, LiteralError> {
    // literal_eval strips leading spaces and tabs; Python's tokenizer reads "\r\n" and "\r"
    // as "\n", inside string literals too.
    let stripped = text.trim_start_matches([' ', '\t']);
    let offset_base = text.len() - stripped.len();
    if stripped.contains('\0') {
        return Err(LiteralError::Syntax {
            offset: offset_base + stripped.find('\0').unwrap_or(0),
            message: "source code string cannot contain null bytes".into(),
        });
    }
    let source = stripped.replace("\r\n", "\n").replace('\r', "\n");
    let tokens = Lexer::new(&source).tokenize().map_err(|e| e.shifted(offset_base))?;
    let node = Parser { tokens: &tokens, pos: 0 }
        .parse_eval_input()
        .map_err(|e| e.shifted(offset_base))?;
    convert(&node).map_err(|e| e.shifted(offset_base))
}

impl LiteralError {
    fn shifted(self, by: usize) -> Self {
        match self {
            LiteralError::Syntax { offset, message } => {
                LiteralError::Syntax { offset: offset + by, message }
            }
            LiteralError::Malformed { offset, what } => {
                LiteralError::Malformed { offset: offset + by, what }
            }
            other => other,
        }
    }
}

fn syntax(offset: usize, message: impl Into<String>) -> LiteralError {
    LiteralError::Syntax { offset, message: message.into() }
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open(char),
    Close(char),
    Comma,
    Colon,
    Plus,
    Minus,
    Ellipsis,
    Number(PyValue),
    Str(StrLit),
    Name(String),
    /// Any other operator or delimiter: valid Python, never part of a literal.
    Op(char),
    /// The end of a logical line outside brackets.
    Newline,
}

#[derive(Debug, Clone, PartialEq)]
enum StrLit {
    Text(String),
    Bytes(Vec<u8>),
    /// An f-string: a `JoinedStr` node, which literal_eval rejects.
    Formatted,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    offset: usize,
}

/// Python's maximum bracket nesting (`MAXLEVEL` in its tokenizer).
const MAX_BRACKET_LEVEL: usize = 200;
/// CPython's limit on decimal digits in an int literal (`sys.int_info.default_max_str_digits`).
const MAX_INT_DIGITS: usize = 4300;

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    brackets: Vec<char>,
    at_line_start: bool,
    line_has_tokens: bool,
    tokens: Vec<Token>,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            brackets: Vec::new(),
            at_line_start: true,
            line_has_tokens: false,
            tokens: Vec::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn push(&mut self, tok: Tok, offset: usize) {
        self.line_has_tokens = true;
        self.tokens.push(Token { tok, offset });
    }

    fn tokenize(mut self) -> Result<Vec<Token>, LiteralError> {
        loop {
            if self.at_line_start {
                self.at_line_start = false;
                self.line_start()?;
            }
            let start = self.pos;
            let Some(c) = self.peek() else { break };
            match c {
                ' ' | '\t' | '\x0c' => {
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                '\n' => {
                    self.bump();
                    if self.brackets.is_empty() && self.line_has_tokens {
                        self.push(Tok::Newline, start);
                        self.line_has_tokens = false;
                    }
                    self.at_line_start = true;
                }
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') if self.peek().is_none() => {
                            return Err(syntax(start, "unexpected EOF while parsing"))
                        }
                        Some('\n') => {}
                        _ => {
                            return Err(syntax(
                                start,
                                "unexpected character after line continuation character",
                            ))
                        }
                    }
                }
                '(' | '[' | '{' => {
                    if self.brackets.len() >= MAX_BRACKET_LEVEL {
                        return Err(syntax(start, "too many nested parentheses"));
                    }
                    self.bump();
                    self.brackets.push(c);
                    self.push(Tok::Open(c), start);
                }
                ')' | ']' | '}' => {
                    self.bump();
                    let expected = match c {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    };
                    match self.brackets.pop() {
                        Some(open) if open == expected => self.push(Tok::Close(c), start),
                        Some(open) => {
                            return Err(syntax(
                                start,
                                format!("closing parenthesis '{c}' does not match '{open}'"),
                            ))
                        }
                        None => return Err(syntax(start, format!("unmatched '{c}'"))),
                    }
                }
                ',' => {
                    self.bump();
                    self.push(Tok::Comma, start);
                }
                ':' => {
                    self.bump();
                    self.push(Tok::Colon, start);
                }
                '+' => {
                    self.bump();
                    self.push(Tok::Plus, start);
                }
                '-' => {
                    self.bump();
                    self.push(Tok::Minus, start);
                }
                '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => {
                    let number = self.number()?;
                    self.push(Tok::Number(number), start);
                }
                '.' if self.peek_at(1) == Some('.') && self.peek_at(2) == Some('.') => {
                    self.pos += 3;
                    self.push(Tok::Ellipsis, start);
                }
                '0'..='9' => {
                    let number = self.number()?;
                    self.push(Tok::Number(number), start);
                }
                '\'' | '"' => {
                    let lit = self.string(StrPrefix::default())?;
                    self.push(Tok::Str(lit), start);
                }
                c if is_identifier_start(c) => {
                    while self.peek().is_some_and(is_identifier_continue) {
                        self.bump();
                    }
                    let word = &self.src[start..self.pos];
                    if let (Some('\'' | '"'), Some(prefix)) = (self.peek(), StrPrefix::parse(word))
                    {
                        let lit = self.string(prefix)?;
                        self.push(Tok::Str(lit), start);
                    } else {
                        self.push(Tok::Name(word.to_string()), start);
                    }
                }
                c if "*/%@&|^~<>=!.;".contains(c) => {
                    self.bump();
                    self.push(Tok::Op(c), start);
                }
                c => return Err(syntax(start, format!("invalid character {c:?}"))),
            }
        }
        if let Some(&open) = self.brackets.last() {
            return Err(syntax(self.pos, format!("'{open}' was never closed")));
        }
        if self.line_has_tokens {
            self.push(Tok::Newline, self.pos);
        }
        Ok(self.tokens)
    }

    /// Python's handling of a physical line's indentation: blank and comment-only lines are
    /// skipped; outside brackets any indentation is an unexpected indent, since nothing
    /// precedes the one expression that could open a block.
    fn line_start(&mut self) -> Result<(), LiteralError> {
        let start = self.pos;
        let mut column = 0usize;
        loop {
            match self.peek() {
                Some(' ') => column += 1,
                Some('\t') => column = (column / 8 + 1) * 8,
                Some('\x0c') => column = 0,
                _ => break,
            }
            self.bump();
        }
        let blank = matches!(self.peek(), Some('#' | '\n'));
        if !blank && self.brackets.is_empty() && column > 0 {
            return Err(syntax(start, "unexpected indent"));
        }
        Ok(())
    }

    fn digits(&mut self, is_digit: fn(char) -> bool) -> Result<String, LiteralError> {
        // digit (_? digit)*
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(c) if is_digit(c) => {
                    out.push(c);
                    self.bump();
                }
                Some('_') if !out.is_empty() && self.peek_at(1).is_some_and(is_digit) => {
                    self.bump();
                }
                Some('_') => return Err(syntax(self.pos, "invalid decimal literal")),
                _ => return Ok(out),
            }
        }
    }

    fn number(&mut self) -> Result<PyValue, LiteralError> {
        let start = self.pos;
        let first = self.peek();
        let second = self.peek_at(1).map(|c| c.to_ascii_lowercase());
        if first == Some('0') && matches!(second, Some('x' | 'o' | 'b')) {
            self.pos += 2;
            let (radix, name): (u32, &str) = match second {
                Some('x') => (16, "hexadecimal"),
                Some('o') => (8, "octal"),
                _ => (2, "binary"),
            };
            // 0x (_? hexdigit)+
            let mut digits = String::new();
            loop {
                match self.peek() {
                    Some('_') if self.peek_at(1).is_some_and(|c| c.is_digit(radix)) => {
                        self.bump();
                    }
                    Some(c) if c.is_digit(radix) => {
                        digits.push(c);
                        self.bump();
                    }
                    _ => break,
                }
            }
            if digits.is_empty() || self.peek().is_some_and(|c| c == '_' || c.is_alphanumeric()) {
                return Err(syntax(start, format!("invalid {name} literal")));
            }
            let value =
                i128::from_str_radix(&digits, radix).map(PyInt::Small).unwrap_or_else(|_| {
                    // Only its float value can matter (in `int + complex`); folding is close enough.
                    PyInt::Big(digits.chars().fold(0.0, |acc, d| {
                        acc * f64::from(radix) + f64::from(d.to_digit(radix).unwrap_or(0))
                    }))
                });
            return Ok(PyValue::Int(value));
        }

        let integer = if self.peek() == Some('.') {
            String::new()
        } else {
            self.digits(|c| c.is_ascii_digit())?
        };
        let mut float_text = integer.clone();
        let mut is_float = false;
        if self.peek() == Some('.') {
            self.bump();
            is_float = true;
            float_text.push('.');
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                float_text.push_str(&self.digits(|c| c.is_ascii_digit())?);
            } else if self.peek() == Some('_') {
                return Err(syntax(self.pos, "invalid decimal literal"));
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = self.peek_at(1).filter(|c| *c == '+' || *c == '-');
            let digit_at = if sign.is_some() { 2 } else { 1 };
            if self.peek_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                self.pos += digit_at;
                is_float = true;
                float_text.push('e');
                if let Some(s) = sign {
                    float_text.push(s);
                }
                float_text.push_str(&self.digits(|c| c.is_ascii_digit())?);
            } else {
                return Err(syntax(start, "invalid decimal literal"));
            }
        }
        let imaginary = matches!(self.peek(), Some('j' | 'J'));
        if imaginary {
            self.bump();
        }
        if self.peek().is_some_and(|c| c == '_' || is_identifier_continue(c)) {
            return Err(syntax(start, "invalid decimal literal"));
        }
        if imaginary || is_float {
            let value: f64 =
                float_text.parse().map_err(|_| syntax(start, "invalid decimal literal"))?;
            return Ok(if imaginary {
                PyValue::Complex { re: 0.0, im: value }
            } else {
                PyValue::Float(value)
            });
        }
        if integer.len() > 1 && integer.starts_with('0') && integer.chars().any(|c| c != '0') {
            return Err(syntax(
                start,
                "leading zeros in decimal integer literals are not permitted",
            ));
        }
        if integer.len() > MAX_INT_DIGITS {
            return Err(syntax(
                start,
                "Exceeds the limit (4300 digits) for integer string conversion",
            ));
        }
        let value = integer
            .parse::<i128>()
            .map(PyInt::Small)
            .unwrap_or_else(|_| PyInt::Big(integer.parse::<f64>().unwrap_or(f64::INFINITY)));
        Ok(PyValue::Int(value))
    }

    /// A string literal; `self.pos` is at its opening quote.
    fn string(&mut self, prefix: StrPrefix) -> Result<StrLit, LiteralError> {
        let start = self.pos;
        let quote = self.bump().expect("called at a quote");
        let triple = self.peek() == Some(quote) && self.peek_at(1) == Some(quote);
        if triple {
            self.pos += 2;
        }
        let mut text = String::new();
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(syntax(start, "unterminated string literal"));
            };
            if c == quote
                && (!triple || (self.peek() == Some(quote) && self.peek_at(1) == Some(quote)))
            {
                if triple {
                    self.pos += 2;
                }
                break;
            }
            if c == '\n' && !triple {
                return Err(syntax(start, "unterminated string literal"));
            }
            if prefix.bytes && !c.is_ascii() {
                return Err(syntax(start, "bytes can only contain ASCII literal characters"));
            }
            if c != '\\' {
                text.push(c);
                bytes.push(c as u8);
                continue;
            }
            let Some(escaped) = self.bump() else {
                return Err(syntax(start, "unterminated string literal"));
            };
            if prefix.raw {
                // A backslash keeps the next character (so it cannot close the string).
                if prefix.bytes && !escaped.is_ascii() {
                    return Err(syntax(start, "bytes can only contain ASCII literal characters"));
                }
                text.push('\\');
                text.push(escaped);
                bytes.extend_from_slice(&[b'\\', escaped as u8]);
                continue;
            }
            self.escape(escaped, prefix.bytes, start, &mut text, &mut bytes)?;
        }
        Ok(if prefix.formatted {
            StrLit::Formatted
        } else if prefix.bytes {
            StrLit::Bytes(bytes)
        } else {
            StrLit::Text(text)
        })
    }

    fn escape(
        &mut self,
        escaped: char,
        is_bytes: bool,
        start: usize,
        text: &mut String,
        bytes: &mut Vec<u8>,
    ) -> Result<(), LiteralError> {
        let simple = match escaped {
            '\n' => Some(None),
            '\\' => Some(Some('\\')),
            '\'' => Some(Some('\'')),
            '"' => Some(Some('"')),
            'a' => Some(Some('\x07')),
            'b' => Some(Some('\x08')),
            'f' => Some(Some('\x0c')),
            'n' => Some(Some('\n')),
            'r' => Some(Some('\r')),
            't' => Some(Some('\t')),
            'v' => Some(Some('\x0b')),
            _ => None,
        };
        if let Some(decoded) = simple {
            if let Some(c) = decoded {
                text.push(c);
                bytes.push(c as u8);
            }
            return Ok(());
        }
        let bad_escape = || syntax(start, "(unicode error) truncated escape sequence");
        match escaped {
            '0'..='7' => {
                let mut value = escaped.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            self.bump();
                        }
                        None => break,
                    }
                }
                text.push(char::from_u32(value).unwrap_or('\u{fffd}'));
                bytes.push((value & 0xff) as u8);
            }
            'x' | 'u' | 'U' if !(is_bytes && escaped != 'x') => {
                let width = match escaped {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut value = 0u32;
                for _ in 0..width {
                    match self.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            self.bump();
                        }
                        None => return Err(bad_escape()),
                    }
                }
                if value > 0x10_ffff {
                    return Err(syntax(start, "(unicode error) illegal Unicode character"));
                }
                // Lone surrogates are valid in Python str; Rust cannot hold them.
                text.push(char::from_u32(value).unwrap_or('\u{fffd}'));
                bytes.push((value & 0xff) as u8);
            }
            'N' if !is_bytes => {
                // \N{NAME}: any non-empty name on one line is accepted (no name table here).
                if self.peek() != Some('{') {
                    return Err(syntax(start, "(unicode error) malformed \\N character escape"));
                }
                self.bump();
                let name_start = self.pos;
                while self.peek().is_some_and(|c| c != '}' && c != '\n') {
                    self.bump();
                }
                if self.peek() != Some('}') || self.pos == name_start {
                    return Err(syntax(start, "(unicode error) malformed \\N character escape"));
                }
                let name = &self.src[name_start..self.pos];
                self.bump();
                text.push(ascii_character_named(name).unwrap_or('\u{fffd}'));
            }
            other => {
                // Unknown escapes keep their backslash.
                if is_bytes && !other.is_ascii() {
                    return Err(syntax(start, "bytes can only contain ASCII literal characters"));
                }
                text.push('\\');
                text.push(other);
                bytes.extend_from_slice(&[b'\\', other as u8]);
            }
        }
        Ok(())
    }
}

/// The printable ASCII character with this Unicode name (any case, as Python's `\N{…}`):
/// enough for `'model_\N{DIGIT ONE}'` to equal `'model_1'`, as it does in Python.
fn ascii_character_named(name: &str) -> Option<char> {
    const PUNCTUATION: [(&str, char); 33] = [
        ("SPACE", ' '),
        ("EXCLAMATION MARK", '!'),
        ("QUOTATION MARK", '"'),
        ("NUMBER SIGN", '#'),
        ("DOLLAR SIGN", '$'),
        ("PERCENT SIGN", '%'),
        ("AMPERSAND", '&'),
        ("APOSTROPHE", '\''),
        ("LEFT PARENTHESIS", '('),
        ("RIGHT PARENTHESIS", ')'),
        ("ASTERISK", '*'),
        ("PLUS SIGN", '+'),
        ("COMMA", ','),
        ("HYPHEN-MINUS", '-'),
        ("FULL STOP", '.'),
        ("SOLIDUS", '/'),
        ("COLON", ':'),
        ("SEMICOLON", ';'),
        ("LESS-THAN SIGN", '<'),
        ("EQUALS SIGN", '='),
        ("GREATER-THAN SIGN", '>'),
        ("QUESTION MARK", '?'),
        ("COMMERCIAL AT", '@'),
        ("LEFT SQUARE BRACKET", '['),
        ("REVERSE SOLIDUS", '\\'),
        ("RIGHT SQUARE BRACKET", ']'),
        ("CIRCUMFLEX ACCENT", '^'),
        ("LOW LINE", '_'),
        ("GRAVE ACCENT", '`'),
        ("LEFT CURLY BRACKET", '{'),
        ("VERTICAL LINE", '|'),
        ("RIGHT CURLY BRACKET", '}'),
        ("TILDE", '~'),
    ];
    const DIGITS: [&str; 10] =
        ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"];
    let name = name.to_ascii_uppercase();
    if let Some(&(_, c)) = PUNCTUATION.iter().find(|(n, _)| *n == name) {
        return Some(c);
    }
    if let Some(digit) = name.strip_prefix("DIGIT ") {
        return DIGITS
            .iter()
            .position(|d| *d == digit)
            .and_then(|i| char::from_digit(i as u32, 10));
    }
    let single_letter = |rest: &str| {
        let mut chars = rest.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_uppercase() => Some(c),
            _ => None,
        }
    };
    if let Some(letter) = name.strip_prefix("LATIN CAPITAL LETTER ").and_then(single_letter) {
        return Some(letter);
    }
    name.strip_prefix("LATIN SMALL LETTER ").and_then(single_letter).map(|c| c.to_ascii_lowercase())
}

fn is_identifier_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_identifier_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

#[derive(Debug, Clone, Copy, Default)]
struct StrPrefix {
    raw: bool,
    bytes: bool,
    formatted: bool,
}

impl StrPrefix {
    /// Python's string prefixes, any case: r, u, b, f, br, rb, fr, rf.
    fn parse(word: &str) -> Option<Self> {
        let lower = word.to_ascii_lowercase();
        let (raw, bytes, formatted) = match lower.as_str() {
            "r" => (true, false, false),
            "u" => (false, false, false),
            "b" => (false, true, false),
            "f" => (false, false, true),
            "br" | "rb" => (true, true, false),
            "fr" | "rf" => (true, false, true),
            _ => return None,
        };
        Some(Self { raw, bytes, formatted })
    }
}

// ---------------------------------------------------------------------------------------
// Syntax tree: only the nodes literal_eval looks at; anything else is `NotLiteral`.

#[derive(Debug)]
enum Node {
    Constant(PyValue, usize),
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Set(Vec<Node>),
    EmptySetCall,
    Dict(Vec<(Node, Node)>),
    Unary {
        negative: bool,
        operand: Box<Node>,
        offset: usize,
    },
    /// `left + right` or `left - right`.
    Binary {
        subtract: bool,
        left: Box<Node>,
        right: Box<Node>,
        offset: usize,
    },
    /// Valid Python that literal_eval rejects when it reaches it.
    NotLiteral(&'static str, usize),
}

const KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).or(self.tokens.last()).map_or(0, |t| t.offset)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), LiteralError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn unexpected(&self) -> LiteralError {
        match self.peek() {
            None => syntax(self.offset(), "unexpected end of input"),
            Some(tok) => syntax(self.offset(), format!("invalid syntax at {tok:?}")),
        }
    }

    /// `eval_input: expressions NEWLINE* ENDMARKER`
    fn parse_eval_input(mut self) -> Result<Node, LiteralError> {
        if self.peek().is_none() {
            return Err(syntax(0, "invalid syntax: no expression"));
        }
        let node = self.parse_expressions(|t| t == &Tok::Newline)?;
        while self.eat(&Tok::Newline) {}
        if self.peek().is_some() {
            return Err(self.unexpected());
        }
        Ok(node)
    }

    /// One expression, or several separated by commas (a tuple), up to a token for which
    /// `ends` is true.
    fn parse_expressions(&mut self, ends: fn(&Tok) -> bool) -> Result<Node, LiteralError> {
        let first = self.parse_expression()?;
        if self.peek() != Some(&Tok::Comma) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat(&Tok::Comma) {
            if self.peek().is_none_or(ends) {
                break;
            }
            items.push(self.parse_expression()?);
        }
        Ok(Node::Tuple(items))
    }

    /// `sum: unary (('+' | '-') unary)*`; anything longer than one operation cannot be a
    /// literal, whatever its operands.
    fn parse_expression(&mut self) -> Result<Node, LiteralError> {
        let mut node = self.parse_unary()?;
        let mut operations = 0;
        loop {
            let offset = self.offset();
            let subtract = match self.peek() {
                Some(Tok::Plus) => false,
                Some(Tok::Minus) => true,
                _ => return Ok(node),
            };
            self.pos += 1;
            let right = self.parse_unary()?;
            operations += 1;
            node = if operations == 1 {
                Node::Binary { subtract, left: Box::new(node), right: Box::new(right), offset }
            } else {
                Node::NotLiteral("a chain of additions", offset)
            };
        }
    }

    fn parse_unary(&mut self) -> Result<Node, LiteralError> {
        let offset = self.offset();
        let mut signs = Vec::new();
        while let Some(sign @ (Tok::Plus | Tok::Minus)) = self.peek() {
            signs.push(*sign == Tok::Minus);
            self.pos += 1;
        }
        let atom = self.parse_atom()?;
        Ok(match signs.as_slice() {
            [] => atom,
            [negative] => Node::Unary { negative: *negative, operand: Box::new(atom), offset },
            _ => Node::NotLiteral("a repeated unary operator", offset),
        })
    }

    fn parse_atom(&mut self) -> Result<Node, LiteralError> {
        let offset = self.offset();
        let Some(tok) = self.peek().cloned() else {
            return Err(self.unexpected());
        };
        self.pos += 1;
        match tok {
            Tok::Number(value) => Ok(Node::Constant(value, offset)),
            Tok::Ellipsis => Ok(Node::Constant(PyValue::Ellipsis, offset)),
            Tok::Str(first) => self.parse_strings(first, offset),
            Tok::Name(name) => match name.as_str() {
                "True" => Ok(Node::Constant(PyValue::Bool(true), offset)),
                "False" => Ok(Node::Constant(PyValue::Bool(false), offset)),
                "None" => Ok(Node::Constant(PyValue::None, offset)),
                "set" if self.peek() == Some(&Tok::Open('(')) => {
                    self.pos += 1;
                    self.expect(&Tok::Close(')'))?;
                    Ok(Node::EmptySetCall)
                }
                keyword if KEYWORDS.contains(&keyword) => {
                    self.pos -= 1;
                    Err(self.unexpected())
                }
                _ => Ok(Node::NotLiteral("a name", offset)),
            },
            Tok::Open('(') => {
                if self.eat(&Tok::Close(')')) {
                    return Ok(Node::Tuple(Vec::new()));
                }
                let inner = self.parse_expressions(|t| t == &Tok::Close(')'))?;
                self.expect(&Tok::Close(')'))?;
                Ok(inner)
            }
            Tok::Open('[') => {
                let items = self.parse_sequence(']')?;
                Ok(Node::List(items))
            }
            Tok::Open('{') => self.parse_braces(),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    /// Adjacent string literals concatenate; str and bytes cannot mix.
    fn parse_strings(&mut self, first: StrLit, offset: usize) -> Result<Node, LiteralError> {
        let mut parts = vec![first];
        while let Some(Tok::Str(next)) = self.peek() {
            parts.push(next.clone());
            self.pos += 1;
        }
        let any_bytes = parts.iter().any(|p| matches!(p, StrLit::Bytes(_)));
        let all_bytes = parts.iter().all(|p| matches!(p, StrLit::Bytes(_)));
        if any_bytes && !all_bytes {
            return Err(syntax(offset, "cannot mix bytes and nonbytes literals"));
        }
        if parts.iter().any(|p| matches!(p, StrLit::Formatted)) {
            return Ok(Node::NotLiteral("an f-string", offset));
        }
        let value = if all_bytes {
            PyValue::Bytes(
                parts
                    .into_iter()
                    .flat_map(|p| if let StrLit::Bytes(b) = p { b } else { Vec::new() })
                    .collect(),
            )
        } else {
            PyValue::Str(
                parts
                    .into_iter()
                    .map(|p| if let StrLit::Text(t) = p { t } else { String::new() })
                    .collect(),
            )
        };
        Ok(Node::Constant(value, offset))
    }

    /// Comma-separated expressions up to `close`, trailing comma allowed.
    fn parse_sequence(&mut self, close: char) -> Result<Vec<Node>, LiteralError> {
        let mut items = Vec::new();
        loop {
            if self.eat(&Tok::Close(close)) {
                return Ok(items);
            }
            items.push(self.parse_expression()?);
            if !self.eat(&Tok::Comma) {
                self.expect(&Tok::Close(close))?;
                return Ok(items);
            }
        }
    }

    /// `{}`, a dict display or a set display; `{` is consumed.
    fn parse_braces(&mut self) -> Result<Node, LiteralError> {
        if self.eat(&Tok::Close('}')) {
            return Ok(Node::Dict(Vec::new()));
        }
        let first = self.parse_expression()?;
        if !self.eat(&Tok::Colon) {
            let mut items = vec![first];
            if self.eat(&Tok::Comma) {
                items.extend(self.parse_sequence('}')?);
            } else {
                self.expect(&Tok::Close('}'))?;
            }
            return Ok(Node::Set(items));
        }
        let mut entries = vec![(first, self.parse_expression()?)];
        loop {
            if self.eat(&Tok::Close('}')) {
                return Ok(Node::Dict(entries));
            }
            self.expect(&Tok::Comma)?;
            if self.eat(&Tok::Close('}')) {
                return Ok(Node::Dict(entries));
            }
            let key = self.parse_expression()?;
            self.expect(&Tok::Colon)?;
            entries.push((key, self.parse_expression()?));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Conversion, in the order Python's `_convert` visits nodes.

fn convert(node: &Node) -> Result<PyValue, LiteralError> {
    match node {
        Node::Constant(value, _) => Ok(value.clone()),
        Node::Tuple(items) => {
            Ok(PyValue::Tuple(items.iter().map(convert).collect::<Result<_, _>>()?))
        }
        Node::List(items) => {
            Ok(PyValue::List(items.iter().map(convert).collect::<Result<_, _>>()?))
        }
        Node::Set(items) => {
            let mut elements = Vec::with_capacity(items.len());
            for item in items {
                elements.push(hashable(convert(item)?)?);
            }
            Ok(PyValue::Set(elements))
        }
        Node::EmptySetCall => Ok(PyValue::Set(Vec::new())),
        Node::Dict(entries) => {
            let mut converted = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                // dict(zip(map(_convert, keys), map(_convert, values))): key, value, insert.
                let key = convert(key)?;
                let value = convert(value)?;
                converted.push((hashable(key)?, value));
            }
            Ok(PyValue::Dict(converted))
        }
        Node::Binary { subtract, left, right, offset } => {
            let left = signed_number(left)?;
            let right = number(right)?;
            match (&left, right) {
                (PyValue::Int(PyInt::Big(approx)), PyValue::Complex { .. })
                    if approx.is_infinite() =>
                {
                    // Python: OverflowError: int too large to convert to float.
                    Err(LiteralError::Malformed {
                        offset: *offset,
                        what: "an int too large to convert to float",
                    })
                }
                (PyValue::Int(_) | PyValue::Float(_), PyValue::Complex { re, im }) => {
                    let l = left.as_f64().unwrap_or(f64::NAN);
                    Ok(if *subtract {
                        PyValue::Complex { re: l - re, im: -im }
                    } else {
                        PyValue::Complex { re: l + re, im }
                    })
                }
                _ => Err(LiteralError::Malformed { offset: *offset, what: "an addition" }),
            }
        }
        Node::Unary { .. } => signed_number(node),
        Node::NotLiteral(what, offset) => Err(LiteralError::Malformed { offset: *offset, what }),
    }
}

fn hashable(value: PyValue) -> Result<PyValue, LiteralError> {
    if value.is_hashable() {
        Ok(value)
    } else {
        // Python names the first unhashable type it meets, which for a tuple is inside it.
        Err(LiteralError::Unhashable { type_name: first_unhashable(&value) })
    }
}

fn first_unhashable(value: &PyValue) -> &'static str {
    match value {
        PyValue::Tuple(items) => {
            items.iter().find(|v| !v.is_hashable()).map_or("tuple", first_unhashable)
        }
        other => other.type_name(),
    }
}

/// `_convert_num`: a number constant (int, float, complex; not bool).
fn number(node: &Node) -> Result<PyValue, LiteralError> {
    match node {
        Node::Constant(
            value @ (PyValue::Int(_) | PyValue::Float(_) | PyValue::Complex { .. }),
            _,
        ) => Ok(value.clone()),
        other => Err(LiteralError::Malformed {
            offset: node_offset(other),
            what: "a non-numeric operand",
        }),
    }
}

/// `_convert_signed_num`: a number, optionally under one unary `+` or `-`.
fn signed_number(node: &Node) -> Result<PyValue, LiteralError> {
    match node {
        Node::Unary { negative, operand, .. } => {
            let value = number(operand)?;
            Ok(if *negative { negate(value) } else { value })
        }
        other => number(other),
    }
}

fn negate(value: PyValue) -> PyValue {
    match value {
        PyValue::Int(PyInt::Small(i)) => PyValue::Int(PyInt::Small(-i)),
        PyValue::Int(PyInt::Big(approx)) => PyValue::Int(PyInt::Big(-approx)),
        PyValue::Float(f) => PyValue::Float(-f),
        PyValue::Complex { re, im } => PyValue::Complex { re: -re, im: -im },
        other => other,
    }
}

fn node_offset(node: &Node) -> usize {
    match node {
        Node::Constant(_, o) | Node::NotLiteral(_, o) => *o,
        Node::Unary { offset, .. } | Node::Binary { offset, .. } => *offset,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> PyValue {
        PyValue::Str(text.to_string())
    }

    fn int(i: i128) -> PyValue {
        PyValue::Int(PyInt::Small(i))
    }

    #[test]
    fn reads_the_judges_ranking_list() {
        let value = literal_eval(
            "[\n    {'model': 'model_2', 'rank': 1},\n    {'model': 'model_1', 'rank': 2}\n]",
        );
        assert_eq!(
            value,
            Ok(PyValue::List(vec![
                PyValue::Dict(vec![(s("model"), s("model_2")), (s("rank"), int(1))]),
                PyValue::Dict(vec![(s("model"), s("model_1")), (s("rank"), int(2))]),
            ]))
        );
    }

    #[test]
    fn reads_numbers_as_python_does() {
        assert_eq!(literal_eval("0x_1f"), Ok(int(31)));
        assert_eq!(literal_eval("0o17"), Ok(int(15)));
        assert_eq!(literal_eval("0b101"), Ok(int(5)));
        assert_eq!(literal_eval("1_000"), Ok(int(1000)));
        assert_eq!(literal_eval("00"), Ok(int(0)));
        assert_eq!(literal_eval("-(1)"), Ok(int(-1)));
        assert_eq!(literal_eval("+2"), Ok(int(2)));
        assert_eq!(literal_eval("1.e5"), Ok(PyValue::Float(100000.0)));
        assert_eq!(literal_eval(".5"), Ok(PyValue::Float(0.5)));
        assert_eq!(literal_eval("01.5"), Ok(PyValue::Float(1.5)));
        assert_eq!(literal_eval("1e999"), Ok(PyValue::Float(f64::INFINITY)));
        assert_eq!(literal_eval("-1-2j"), Ok(PyValue::Complex { re: -1.0, im: -2.0 }));
        assert_eq!(
            literal_eval("99999999999999999999999999999999999999999"),
            Ok(PyValue::Int(PyInt::Big(1e41)))
        );
        for bad in ["01", "1__0", "1_", "1e", "1e_5", "0b102", "0x1g", "1._5", "1abc"] {
            assert!(matches!(literal_eval(bad), Err(LiteralError::Syntax { .. })), "{bad}");
        }
        for not_literal in
            ["--1", "1+2", "1+2j+3j", "1 + -2j", "-True", "True + 1j", "-1j - 2j", "x"]
        {
            assert!(
                matches!(literal_eval(not_literal), Err(LiteralError::Malformed { .. })),
                "{not_literal}"
            );
        }
    }

    #[test]
    fn reads_strings_with_prefixes_escapes_and_concatenation() {
        assert_eq!(literal_eval(r#"'a' "b" '''c'''"#), Ok(s("abc")));
        assert_eq!(literal_eval(r"'\x41\u00e9\n\q\101'"), Ok(s("Aé\n\\qA")));
        assert_eq!(literal_eval(r"r'\''"), Ok(s("\\'")));
        assert_eq!(literal_eval("'a\\\nb'"), Ok(s("ab")));
        assert_eq!(literal_eval(r"'model_\N{DIGIT ONE}\N{low line}'"), Ok(s("model_1_")));
        assert_eq!(literal_eval("'''a\r\nb'''"), Ok(s("a\nb")));
        assert_eq!(literal_eval("Rb'a'"), Ok(PyValue::Bytes(b"a".to_vec())));
        assert!(matches!(literal_eval("f'a'"), Err(LiteralError::Malformed { .. })));
        for bad in
            ["'abc", "'a\nb'", r"'\x4'", r"'\U00110000'", "b'é'", "'a' b'b'", "ur'a'", r"rb'\'"]
        {
            assert!(matches!(literal_eval(bad), Err(LiteralError::Syntax { .. })), "{bad}");
        }
    }

    #[test]
    fn follows_pythons_line_and_indentation_rules() {
        for ok in [
            "\n[1]",
            "[1]\n  \n",
            "[1]\n  # c",
            "\t [1]",
            "[1] # c",
            "\\\n[1]",
            "(\n1\n)",
            "[1]\r",
            "\x0c[1]",
        ] {
            assert!(literal_eval(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "\n  [1]",
            "[1]\n  ",
            "[1]\n\t",
            "[1]\n[2]",
            "[1] \\",
            "[1]\\\n",
            "",
            " ",
            "\n",
            "[1];",
            "[1]\u{a0}",
            "[1]\0",
        ] {
            assert!(matches!(literal_eval(bad), Err(LiteralError::Syntax { .. })), "{bad:?}");
        }
    }

    #[test]
    fn builds_tuples_sets_and_dicts_like_python() {
        assert_eq!(literal_eval("1, 2"), Ok(PyValue::Tuple(vec![int(1), int(2)])));
        assert_eq!(literal_eval("(1,)"), Ok(PyValue::Tuple(vec![int(1)])));
        assert_eq!(literal_eval("()"), Ok(PyValue::Tuple(vec![])));
        assert_eq!(literal_eval("set( )"), Ok(PyValue::Set(vec![])));
        assert_eq!(literal_eval("{}"), Ok(PyValue::Dict(vec![])));
        assert_eq!(literal_eval("[...]"), Ok(PyValue::List(vec![PyValue::Ellipsis])));
        let dict = literal_eval("{'model': 'model_2', 'model': 'model_1',}").expect("a dict");
        assert_eq!(dict.dict_get("model"), Some(&s("model_1")));
        assert_eq!(
            literal_eval("{(1, [2]): 3}"),
            Err(LiteralError::Unhashable { type_name: "list" })
        );
        assert_eq!(literal_eval("{1, 2, {}}"), Err(LiteralError::Unhashable { type_name: "dict" }));
        // Python converts key, value, then inserts: an earlier unhashable key wins over a later name...
        assert_eq!(
            literal_eval("{[1]: 1, 'a': x}"),
            Err(LiteralError::Unhashable { type_name: "list" })
        );
        // ...and a name in the same entry's value wins over the key's insertion.
        assert!(matches!(literal_eval("{[1]: x}"), Err(LiteralError::Malformed { .. })));
    }

    #[test]
    fn nesting_stops_at_pythons_limit_of_200_brackets() {
        let ok = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(literal_eval(&ok).is_ok());
        let too_deep = format!("{}{}", "[".repeat(201), "]".repeat(201));
        assert!(matches!(literal_eval(&too_deep), Err(LiteralError::Syntax { .. })));
        // Long operator chains do not recurse.
        assert!(literal_eval(&format!("{}1", "-".repeat(100_000))).is_err());
        assert!(literal_eval(&format!("1{}", "+2j".repeat(100_000))).is_err());
    }
}
