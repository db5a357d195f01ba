//! The shape both alpaca_eval JSON files share: an array of flat records, read from
//! `.json` or gzip, written the way pandas' `to_json(orient="records", indent=2)` writes.

use std::collections::HashSet;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::python_float::python_float_repr;
use super::{FieldProblem, FormatError, InstructionPreview};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a file, gunzipping it when it starts with the gzip magic bytes (whatever its name).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, FormatError> {
    let io_error = |source| FormatError::Io { path: path.to_path_buf(), action: "read", source };
    let raw = std::fs::read(path).map_err(io_error)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut text = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut text).map_err(io_error)?;
    Ok(text)
}

/// Writes a file, gzipped when its name ends in `.gz`.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    let io_error = |source| FormatError::Io { path: path.to_path_buf(), action: "write", source };
    let is_gzip = path.extension().is_some_and(|ext| ext == "gz");
    let file = std::fs::File::create(path).map_err(io_error)?;
    let mut out = std::io::BufWriter::new(file);
    if is_gzip {
        let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        encoder.write_all(bytes).map_err(io_error)?;
        out = encoder.finish().map_err(io_error)?;
    } else {
        out.write_all(bytes).map_err(io_error)?;
    }
    out.flush().map_err(io_error)
}

/// Parses a JSON array of objects. A syntax error names the row the parser was in.
pub(crate) fn parse_records(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<Map<String, Value>>, FormatError> {
    let mut values = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = deserializer
        .deserialize_seq(ArrayOfValues { values: &mut values })
        .and_then(|()| deserializer.end());
    if let Err(err) = parsed {
        let row = (!values.is_empty() || err.is_syntax() || err.is_eof()).then_some(values.len());
        return Err(FormatError::MalformedJson {
            path: path.to_path_buf(),
            row: if err.is_data() && values.is_empty() { None } else { row },
            line: err.line(),
            column: err.column(),
            message: strip_position(&err.to_string()),
        });
    }
    values
        .into_iter()
        .enumerate()
        .map(|(row, value)| match value {
            Value::Object(object) => Ok(object),
            other => Err(FormatError::RowNotObject {
                path: path.to_path_buf(),
                row,
                found: json_type(&other),
            }),
        })
        .collect()
}

/// serde_json appends " at line L column C"; the error carries those separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message.to_string(),
    }
}

/// Collects the elements of the top-level array one by one, so that on a syntax error
/// the number collected so far is the position of the broken row.
struct ArrayOfValues<'a> {
    values: &'a mut Vec<Value>,
}

impl<'de> Visitor<'de> for ArrayOfValues<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of row objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            self.values.push(value);
        }
        Ok(())
    }
}

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One parsed row, handing out its fields with errors that say where they are.
pub(crate) struct Record<'a> {
    pub path: &'a Path,
    pub row: usize,
    pub fields: Map<String, Value>,
    instruction: InstructionPreview,
}

impl<'a> Record<'a> {
    pub fn new(path: &'a Path, row: usize, fields: Map<String, Value>) -> Self {
        let instruction = match fields.get("instruction") {
            Some(Value::String(text)) => InstructionPreview::of(text),
            _ => InstructionPreview::unknown(),
        };
        Self { path, row, fields, instruction }
    }

    pub fn error(&self, field: &str, problem: FieldProblem) -> FormatError {
        FormatError::Field {
            path: self.path.to_path_buf(),
            row: self.row,
            instruction: self.instruction.clone(),
            field: field.to_string(),
            problem,
        }
    }

    /// A field that must be present and a string.
    pub fn take_string(&mut self, field: &str) -> Result<String, FormatError> {
        match self.fields.shift_remove(field) {
            Some(Value::String(text)) => Ok(text),
            None => Err(self.error(field, FieldProblem::Missing)),
            Some(other) => Err(self.error(
                field,
                FieldProblem::WrongType { expected: "a string", found: json_type(&other) },
            )),
        }
    }

    /// A field that may be absent or null, else a string.
    pub fn take_optional_string(&mut self, field: &str) -> Result<Option<String>, FormatError> {
        match self.fields.shift_remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.error(
                field,
                FieldProblem::WrongType { expected: "a string", found: json_type(&other) },
            )),
        }
    }

    /// A field that must be present, a number or null.
    pub fn take_nullable_number(&mut self, field: &str) -> Result<Option<f64>, FormatError> {
        match self.fields.shift_remove(field) {
            None => Err(self.error(field, FieldProblem::Missing)),
            Some(value) => self.number_or_null(field, value),
        }
    }

    /// A field that may be absent, null or a number.
    pub fn take_optional_number(&mut self, field: &str) -> Result<Option<f64>, FormatError> {
        match self.fields.shift_remove(field) {
            None => Ok(None),
            Some(value) => self.number_or_null(field, value),
        }
    }

    fn number_or_null(&self, field: &str, value: Value) -> Result<Option<f64>, FormatError> {
        match value {
            Value::Null => Ok(None),
            Value::Number(n) => Ok(n.as_f64()),
            other => Err(self.error(
                field,
                FieldProblem::WrongType { expected: "a number or null", found: json_type(&other) },
            )),
        }
    }

    /// A field of any JSON type that may be absent; null counts as absent.
    pub fn take_optional_value(&mut self, field: &str) -> Option<Value> {
        self.fields.shift_remove(field).filter(|v| !v.is_null())
    }

    /// What is left: the fields the row type does not name. Nulls are dropped, as a
    /// pandas column that a row has no value in is written as null.
    pub fn into_extra(self) -> Map<String, Value> {
        self.fields.into_iter().filter(|(_, v)| !v.is_null()).collect()
    }
}

/// Column order for writing: `known` columns in their order (those in `always`, and
/// the others when some row has them), then the remaining columns in first-seen order.
pub(crate) fn column_order(
    known: &[&str],
    always: &[&str],
    rows: &[Map<String, Value>],
) -> Vec<String> {
    let present: HashSet<&str> = rows.iter().flat_map(|r| r.keys().map(String::as_str)).collect();
    let mut columns: Vec<String> = known
        .iter()
        .filter(|c| always.contains(c) || present.contains(*c))
        .map(|c| c.to_string())
        .collect();
    let mut seen: HashSet<String> = columns.iter().cloned().collect();
    for row in rows {
        for key in row.keys() {
            if seen.insert(key.clone()) {
                columns.push(key.clone());
            }
        }
    }
    columns
}

/// Renders records the way pandas' `to_json(orient="records", indent=2)` does.
pub(crate) fn render_records(columns: &[String], rows: &[Map<String, Value>]) -> String {
    let mut out = String::with_capacity(rows.len() * 4096);
    out.push('[');
    for (i, row) in rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        indent(&mut out, 1);
        out.push('{');
        for (j, column) in columns.iter().enumerate() {
            out.push_str(if j == 0 { "\n" } else { ",\n" });
            indent(&mut out, 2);
            write_string(&mut out, column);
            out.push(':');
            write_value(&mut out, row.get(column).unwrap_or(&Value::Null), 2);
        }
        if !columns.is_empty() {
            out.push('\n');
            indent(&mut out, 1);
        }
        out.push('}');
    }
    if !rows.is_empty() {
        out.push('\n');
    }
    out.push(']');
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_value(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&json_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, level + 1);
                write_value(out, item, level + 1);
            }
            if !items.is_empty() {
                out.push('\n');
                indent(out, level);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, level + 1);
                write_string(out, key);
                out.push(':');
                write_value(out, item, level + 1);
            }
            if !fields.is_empty() {
                out.push('\n');
                indent(out, level);
            }
            out.push('}');
        }
    }
}

/// A float in fixed notation as pandas writes it (`1.0000630276`, `-0.0000638484`,
/// `1531.0`), but with all the digits that read back to the same double rather than
/// pandas' 10 decimals. Magnitudes pandas writes in scientific notation stay scientific.
fn json_float(x: f64) -> String {
    let magnitude = x.abs();
    if x != 0.0 && !(1e-15..1e16).contains(&magnitude) {
        return python_float_repr(x);
    }
    let text = x.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A JSON string as pandas (ujson, `ensure_ascii`) writes it: `/` escaped, everything
/// outside ASCII as `\uXXXX` (UTF-16 surrogate pairs beyond the BMP).
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_pandas() {
        let mut out = String::new();
        write_string(&mut out, "a/b \"q\" \\ é – 😀\n\u{1}");
        assert_eq!(out, r#""a\/b \"q\" \\ \u00e9 \u2013 \ud83d\ude00\n\u0001""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a/b \"q\" \\ é – 😀\n\u{1}");
    }

    #[test]
    fn nested_values_are_indented_one_level_per_depth() {
        let row: Map<String, Value> =
            serde_json::from_str(r#"{"a":1.0,"b":{"c":[77],"d":[]},"e":null}"#).unwrap();
        let text = render_records(&["a".into(), "b".into(), "e".into()], &[row]);
        let expected = "[\n  {\n    \"a\":1.0,\n    \"b\":{\n      \"c\":[\n        77\n      ],\n      \"d\":[]\n    },\n    \"e\":null\n  }\n]";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_syntax_error_names_the_row_it_is_in() {
        let text = b"[\n {\"instruction\": \"a\"},\n {\"instruction\": \"b\",}\n]";
        let err = parse_records(Path::new("x.json"), text).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("x.json"), "{message}");
        assert!(message.contains("row 1"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }
}
