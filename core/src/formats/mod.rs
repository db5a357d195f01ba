//! alpaca_eval's files, read and written: `model_outputs.json`, `annotations.json`
//! (each also as `.json.gz`) and `leaderboard.csv`.
//!
//! Reading is two steps. Parsing (`read_*`) checks the shape of every row and names the
//! file, row and field of the first problem; it knows nothing about the eval set, so files
//! made for other eval sets still load. Validation (`validate_*`) checks the parsed rows
//! against an [`EvalSet`](crate::eval_set::EvalSet): unknown or duplicate instructions are
//! errors, legal oddities (an empty output, an unparsed preference, missing instructions)
//! come back as [`FormatWarning`]s.
//!
//! Writing follows pandas' `to_json(orient="records", indent=2)`, which is how alpaca_eval
//! writes its JSON: `"key":value` without a space, `/` written `\/`, non-ASCII as `\uXXXX`,
//! no final newline; every row carries every column, `null` where a row has no value.
//! One deliberate difference: floats keep their full precision (pandas rounds to 10
//! decimals), so metrics computed from herd's file and from the same file read back agree.

pub mod annotations;
pub mod leaderboard;
pub mod model_outputs;
mod python_float;
mod records;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

pub use annotations::{read_annotations, validate_annotations, write_annotations, Annotation};
pub use leaderboard::{parse_leaderboard, read_leaderboard, write_leaderboard, LeaderboardRow};
pub use model_outputs::{
    fill_missing, read_model_outputs, validate_model_outputs, write_model_outputs, ModelOutput,
};
pub use python_float::python_float_repr;

/// How many characters of an instruction an error or warning quotes.
const INSTRUCTION_PREVIEW_CHARS: usize = 40;

/// A file that cannot be read as the alpaca_eval format it claims to be.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{}: cannot {action}: {source}", path.display())]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },

    #[error("{}: malformed JSON{}, line {line}, column {column}: {message}", path.display(), row_phrase(*row))]
    MalformedJson { path: PathBuf, row: Option<usize>, line: usize, column: usize, message: String },

    #[error("{}: row {row}: expected an object, found {found}", path.display())]
    RowNotObject { path: PathBuf, row: usize, found: &'static str },

    #[error("{}: row {row} ({instruction}): field `{field}`: {problem}", path.display())]
    Field {
        path: PathBuf,
        row: usize,
        instruction: InstructionPreview,
        field: String,
        problem: FieldProblem,
    },

    #[error("{}: row {row} ({instruction}): field `instruction`: not in the eval set", path.display())]
    UnknownInstruction { path: PathBuf, row: usize, instruction: InstructionPreview },

    #[error("{}: row {row} ({instruction}): field `instruction`: duplicate of row {first_row}", path.display())]
    DuplicateInstruction {
        path: PathBuf,
        row: usize,
        first_row: usize,
        instruction: InstructionPreview,
    },

    #[error("{}: malformed CSV{}: {message}", path.display(), row_phrase(*row))]
    MalformedCsv { path: PathBuf, row: Option<usize>, message: String },

    #[error("{}: missing column `{column}`", path.display())]
    MissingColumn { path: PathBuf, column: String },
}

fn row_phrase(row: Option<usize>) -> String {
    row.map(|r| format!(" in row {r}")).unwrap_or_default()
}

/// What is wrong with one field of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    Missing,
    WrongType { expected: &'static str, found: &'static str },
    Invalid(String),
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Missing => write!(f, "missing"),
            FieldProblem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            FieldProblem::Invalid(why) => write!(f, "{why}"),
        }
    }
}

/// The first characters of an instruction, quoted, to point a reader at a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionPreview(pub Option<String>);

impl InstructionPreview {
    pub fn of(instruction: &str) -> Self {
        let mut preview: String = instruction.chars().take(INSTRUCTION_PREVIEW_CHARS).collect();
        if instruction.chars().nth(INSTRUCTION_PREVIEW_CHARS).is_some() {
            preview.push('…');
        }
        Self(Some(preview))
    }

    /// For a row whose instruction is itself missing or not a string.
    pub fn unknown() -> Self {
        Self(None)
    }
}

impl fmt::Display for InstructionPreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(text) => write!(f, "{text:?}"),
            None => write!(f, "no instruction"),
        }
    }
}

/// Something legal but worth telling the user about a file.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatWarning {
    pub path: PathBuf,
    /// The 0-based row, for warnings about one row.
    pub row: Option<usize>,
    pub kind: WarningKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WarningKind {
    /// The answer under evaluation is the empty string (it still counts, and loses).
    EmptyOutput { field: &'static str, instruction: InstructionPreview },
    /// The judge's answer could not be parsed: `preference` is null, the row is not counted.
    UnparsedPreference { instruction: InstructionPreview },
    /// A preference alpaca_eval drops from the win rate (outside 0 and [1, 2]).
    PreferenceOutOfRange { value: f64, instruction: InstructionPreview },
    /// Eval-set instructions the file has no row for (eval-set positions, ascending).
    MissingInstructions { positions: Vec<usize>, eval_set_len: usize },
    /// Rows are not in eval-set order; the length-controlled metric reads the
    /// instruction difficulty by row position, so it would be misaligned.
    NotInEvalSetOrder { first_row: usize, eval_position: usize },
}

impl fmt::Display for FormatWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some(row) = self.row {
            write!(f, "row {row} ")?;
        }
        match &self.kind {
            WarningKind::EmptyOutput { field, instruction } => {
                write!(f, "({instruction}): field `{field}`: empty output")
            }
            WarningKind::UnparsedPreference { instruction } => {
                write!(f, "({instruction}): field `preference`: null (the judge's answer was not parsed)")
            }
            WarningKind::PreferenceOutOfRange { value, instruction } => write!(
                f,
                "({instruction}): field `preference`: {value} is outside 0 and [1, 2]; alpaca_eval ignores it"
            ),
            WarningKind::MissingInstructions { positions, eval_set_len } => {
                let shown: Vec<String> = positions.iter().take(10).map(|p| p.to_string()).collect();
                let more = if positions.len() > 10 { ", …" } else { "" };
                write!(
                    f,
                    "{} of the {eval_set_len} eval-set instructions have no row (positions {}{more})",
                    positions.len(),
                    shown.join(", ")
                )
            }
            WarningKind::NotInEvalSetOrder { first_row, eval_position } => write!(
                f,
                "rows are not in eval-set order (row {first_row} is eval-set instruction {eval_position}); \
                 the length-controlled win rate reads instruction difficulty by row position"
            ),
        }
    }
}

/// The eval-set checks both JSON formats share: every instruction is in the eval set and
/// appears once (errors); missing instructions and rows out of eval-set order (warnings).
pub(crate) fn check_instructions<'a>(
    path: &std::path::Path,
    instructions: impl Iterator<Item = &'a str>,
    eval_set: &crate::eval_set::EvalSet,
) -> Result<Vec<FormatWarning>, FormatError> {
    let mut first_row_of_position: Vec<Option<usize>> = vec![None; eval_set.len()];
    let mut out_of_order: Option<(usize, usize)> = None;
    let mut previous_position: Option<usize> = None;
    for (row, instruction) in instructions.enumerate() {
        let Some(position) = eval_set.index_of(instruction) else {
            return Err(FormatError::UnknownInstruction {
                path: path.to_path_buf(),
                row,
                instruction: InstructionPreview::of(instruction),
            });
        };
        if let Some(first_row) = first_row_of_position[position] {
            return Err(FormatError::DuplicateInstruction {
                path: path.to_path_buf(),
                row,
                first_row,
                instruction: InstructionPreview::of(instruction),
            });
        }
        first_row_of_position[position] = Some(row);
        // Gaps alone keep the order (they are reported as missing); a step back does not.
        if previous_position.is_some_and(|previous| position < previous) && out_of_order.is_none() {
            out_of_order = Some((row, position));
        }
        previous_position = Some(position);
    }

    let mut warnings = Vec::new();
    let missing: Vec<usize> = first_row_of_position
        .iter()
        .enumerate()
        .filter(|(_, row)| row.is_none())
        .map(|(p, _)| p)
        .collect();
    if !missing.is_empty() {
        warnings.push(FormatWarning {
            path: path.to_path_buf(),
            row: None,
            kind: WarningKind::MissingInstructions {
                positions: missing,
                eval_set_len: eval_set.len(),
            },
        });
    }
    if let Some((first_row, eval_position)) = out_of_order {
        warnings.push(FormatWarning {
            path: path.to_path_buf(),
            row: None,
            kind: WarningKind::NotInEvalSetOrder { first_row, eval_position },
        });
    }
    Ok(warnings)
}
