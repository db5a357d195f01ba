//! The two files alpaca_eval's length-controlled GLM downloads from its model hub:
//! `df_gamed.csv` (annotations of two deliberately verbose / concise variants of the
//! baseline, which regularise every model's fit towards the baseline, and the column of
//! per-instruction difficulties the LC metric reads) and `instruction_difficulty.csv`.
//!
//! herd ships reconstructions of both (the official ones are not public outside the hub)
//! and uses them unless it is given a folder holding the official files.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

const EMBEDDED_DF_GAMED: &str = include_str!("../../data/calibration/df_gamed_reconstructed.csv");
const EMBEDDED_INSTRUCTION_DIFFICULTY: &str =
    include_str!("../../data/calibration/instruction_difficulty_reconstructed.csv");

/// The official file names, as alpaca_eval downloads them.
pub const DF_GAMED_FILE: &str = "df_gamed.csv";
pub const INSTRUCTION_DIFFICULTY_FILE: &str = "instruction_difficulty.csv";

/// Where the calibration came from; metrics outputs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalibrationSource {
    /// herd's reconstructions, compiled in from `data/calibration/`.
    EmbeddedReconstruction,
    /// `df_gamed.csv` and `instruction_difficulty.csv` read from this folder.
    Directory(PathBuf),
    /// Files named one by one.
    Files { df_gamed: PathBuf, instruction_difficulty: PathBuf },
}

impl fmt::Display for CalibrationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalibrationSource::EmbeddedReconstruction => {
                write!(f, "herd's embedded reconstruction (data/calibration)")
            }
            CalibrationSource::Directory(dir) => write!(f, "official files from {}", dir.display()),
            CalibrationSource::Files { df_gamed, instruction_difficulty } => {
                write!(f, "{} and {}", df_gamed.display(), instruction_difficulty.display())
            }
        }
    }
}

/// One row of `df_gamed.csv`. `preference` is already in [0, 1] (1 = the gamed model wins).
#[derive(Debug, Clone, PartialEq)]
pub struct GamedRow {
    pub model: String,
    pub preference: Option<f64>,
    /// Eval-set position of the instruction.
    pub index: usize,
    pub std_delta_len: f64,
    pub instruction_difficulty: f64,
    pub not_gamed_baseline: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: malformed CSV: {message}", path.display())]
    MalformedCsv { path: PathBuf, message: String },
    #[error("{}: missing column `{column}`", path.display())]
    MissingColumn { path: PathBuf, column: &'static str },
    #[error("{}: row {row}: field `{field}`: {problem}", path.display())]
    Field { path: PathBuf, row: usize, field: &'static str, problem: String },
    #[error("{}: no rows", path.display())]
    Empty { path: PathBuf },
}

/// The calibration of the LC GLM.
#[derive(Debug, Clone)]
pub struct Calibration {
    source: CalibrationSource,
    gamed_rows: Vec<GamedRow>,
    /// `instruction_difficulty.csv`: eval-set position → difficulty.
    instruction_difficulty: Vec<(usize, f64)>,
    /// `df_gamed.drop_duplicates("index")["instruction_difficulty"]`, keyed by the row
    /// number in `df_gamed` (pandas keeps the original row labels).
    difficulty_by_row: HashMap<usize, f64>,
    /// The same values keyed by the eval-set position in the `index` column.
    difficulty_by_index: HashMap<usize, f64>,
}

impl Calibration {
    /// herd's reconstructed calibration, compiled into the binary.
    pub fn embedded() -> Self {
        let here = Path::new("data/calibration");
        Self::parse(
            CalibrationSource::EmbeddedReconstruction,
            &here.join("df_gamed_reconstructed.csv"),
            EMBEDDED_DF_GAMED,
            &here.join("instruction_difficulty_reconstructed.csv"),
            EMBEDDED_INSTRUCTION_DIFFICULTY,
        )
        .expect("the embedded calibration files are valid")
    }

    /// The official `df_gamed.csv` and `instruction_difficulty.csv` from `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, CalibrationError> {
        let dir = dir.as_ref();
        let mut calibration =
            Self::from_files(dir.join(DF_GAMED_FILE), dir.join(INSTRUCTION_DIFFICULTY_FILE))?;
        calibration.source = CalibrationSource::Directory(dir.to_path_buf());
        Ok(calibration)
    }

    /// A `df_gamed.csv` and an `instruction_difficulty.csv` under any names.
    pub fn from_files(
        df_gamed: impl AsRef<Path>,
        instruction_difficulty: impl AsRef<Path>,
    ) -> Result<Self, CalibrationError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| CalibrationError::Io { path: path.to_path_buf(), source })
        };
        let (gamed_path, difficulty_path) = (df_gamed.as_ref(), instruction_difficulty.as_ref());
        let source = CalibrationSource::Files {
            df_gamed: gamed_path.to_path_buf(),
            instruction_difficulty: difficulty_path.to_path_buf(),
        };
        Self::parse(
            source,
            gamed_path,
            &read(gamed_path)?,
            difficulty_path,
            &read(difficulty_path)?,
        )
    }

    fn parse(
        source: CalibrationSource,
        gamed_path: &Path,
        gamed_csv: &str,
        difficulty_path: &Path,
        difficulty_csv: &str,
    ) -> Result<Self, CalibrationError> {
        let gamed_rows = parse_df_gamed(gamed_path, gamed_csv)?;
        let instruction_difficulty = parse_instruction_difficulty(difficulty_path, difficulty_csv)?;
        let mut difficulty_by_row = HashMap::new();
        let mut difficulty_by_index = HashMap::new();
        for (row, gamed) in gamed_rows.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                difficulty_by_index.entry(gamed.index)
            {
                slot.insert(gamed.instruction_difficulty);
                difficulty_by_row.insert(row, gamed.instruction_difficulty);
            }
        }
        Ok(Self {
            source,
            gamed_rows,
            instruction_difficulty,
            difficulty_by_row,
            difficulty_by_index,
        })
    }

    pub fn source(&self) -> &CalibrationSource {
        &self.source
    }

    /// The rows of `df_gamed.csv`, in file order.
    pub fn gamed_rows(&self) -> &[GamedRow] {
        &self.gamed_rows
    }

    /// `instruction_difficulty.csv` as (eval-set position, difficulty), in file order.
    pub fn instruction_difficulty(&self) -> &[(usize, f64)] {
        &self.instruction_difficulty
    }

    /// The difficulty alpaca_eval gives the annotation in row `row` of a file: the
    /// first-occurrence row of `df_gamed` whose row number is `row`.
    pub fn difficulty_at_row(&self, row: usize) -> Option<f64> {
        self.difficulty_by_row.get(&row).copied()
    }

    /// The difficulty of the eval-set instruction at position `index`, from the same column.
    pub fn difficulty_of_instruction(&self, index: usize) -> Option<f64> {
        self.difficulty_by_index.get(&index).copied()
    }
}

fn column(
    path: &Path,
    headers: &csv::StringRecord,
    name: &'static str,
) -> Result<usize, CalibrationError> {
    headers
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| CalibrationError::MissingColumn { path: path.to_path_buf(), column: name })
}

fn records(
    path: &Path,
    text: &str,
) -> Result<(csv::StringRecord, Vec<csv::StringRecord>), CalibrationError> {
    let malformed = |e: csv::Error| CalibrationError::MalformedCsv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(malformed)?.clone();
    let rows = reader.records().collect::<Result<Vec<_>, _>>().map_err(malformed)?;
    if rows.is_empty() {
        return Err(CalibrationError::Empty { path: path.to_path_buf() });
    }
    Ok((headers, rows))
}

struct FieldReader<'a> {
    path: &'a Path,
    row: usize,
    record: &'a csv::StringRecord,
}

impl FieldReader<'_> {
    fn text(&self, column: usize) -> &str {
        self.record.get(column).unwrap_or("").trim()
    }

    fn error(&self, field: &'static str, problem: String) -> CalibrationError {
        CalibrationError::Field { path: self.path.to_path_buf(), row: self.row, field, problem }
    }

    /// A float as pandas reads it: empty or NaN is missing.
    fn optional_float(
        &self,
        column: usize,
        field: &'static str,
    ) -> Result<Option<f64>, CalibrationError> {
        let text = self.text(column);
        if text.is_empty() {
            return Ok(None);
        }
        let value: f64 =
            text.parse().map_err(|_| self.error(field, format!("not a number: {text:?}")))?;
        Ok((!value.is_nan()).then_some(value))
    }

    fn float(&self, column: usize, field: &'static str) -> Result<f64, CalibrationError> {
        self.optional_float(column, field)?.ok_or_else(|| self.error(field, "missing".into()))
    }

    fn index(&self, column: usize, field: &'static str) -> Result<usize, CalibrationError> {
        let text = self.text(column);
        text.parse::<usize>()
            .ok()
            .or_else(|| {
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.fract() == 0.0 && *v >= 0.0)
                    .map(|v| v as usize)
            })
            .ok_or_else(|| self.error(field, format!("not a non-negative integer: {text:?}")))
    }

    fn boolean(&self, column: usize, field: &'static str) -> Result<bool, CalibrationError> {
        match self.text(column).to_ascii_lowercase().as_str() {
            "true" | "1" | "1.0" => Ok(true),
            "false" | "0" | "0.0" => Ok(false),
            other => Err(self.error(field, format!("not a boolean: {other:?}"))),
        }
    }
}

fn parse_df_gamed(path: &Path, text: &str) -> Result<Vec<GamedRow>, CalibrationError> {
    let (headers, rows) = records(path, text)?;
    let model = column(path, &headers, "model")?;
    let preference = column(path, &headers, "preference")?;
    let index = column(path, &headers, "index")?;
    let std_delta_len = column(path, &headers, "std_delta_len")?;
    let difficulty = column(path, &headers, "instruction_difficulty")?;
    let not_gamed = column(path, &headers, "not_gamed_baseline")?;
    rows.iter()
        .enumerate()
        .map(|(row, record)| {
            let fields = FieldReader { path, row, record };
            Ok(GamedRow {
                model: fields.text(model).to_string(),
                preference: fields.optional_float(preference, "preference")?,
                index: fields.index(index, "index")?,
                std_delta_len: fields.float(std_delta_len, "std_delta_len")?,
                instruction_difficulty: fields.float(difficulty, "instruction_difficulty")?,
                not_gamed_baseline: fields.boolean(not_gamed, "not_gamed_baseline")?,
            })
        })
        .collect()
}

/// `instruction_difficulty.csv`: the first column is the index (as alpaca_eval reads it
/// with `index_col=0`), the second the difficulty.
fn parse_instruction_difficulty(
    path: &Path,
    text: &str,
) -> Result<Vec<(usize, f64)>, CalibrationError> {
    let (headers, rows) = records(path, text)?;
    if headers.len() < 2 {
        return Err(CalibrationError::MissingColumn {
            path: path.to_path_buf(),
            column: "instruction_difficulty",
        });
    }
    rows.iter()
        .enumerate()
        .map(|(row, record)| {
            let fields = FieldReader { path, row, record };
            Ok((fields.index(0, "index")?, fields.float(1, "instruction_difficulty")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_calibration_has_both_gamed_models_for_every_instruction() {
        let calibration = Calibration::embedded();
        assert_eq!(calibration.source(), &CalibrationSource::EmbeddedReconstruction);
        let rows = calibration.gamed_rows();
        assert_eq!(rows.len(), 2 * 805);
        assert!(rows.iter().all(|r| !r.not_gamed_baseline));
        assert!(rows.iter().all(|r| r.preference.is_some_and(|p| (0.0..=1.0).contains(&p))));
        assert_eq!(calibration.instruction_difficulty().len(), 805);
    }

    #[test]
    fn difficulty_lookups_agree_on_the_embedded_files() {
        let calibration = Calibration::embedded();
        for &(index, difficulty) in calibration.instruction_difficulty() {
            assert_eq!(calibration.difficulty_of_instruction(index), Some(difficulty));
            assert_eq!(calibration.difficulty_at_row(index), Some(difficulty));
        }
        // Rows of the second gamed model repeat an index: they are not lookup labels.
        assert_eq!(calibration.difficulty_at_row(805), None);
    }

    #[test]
    fn a_folder_with_the_official_names_is_read_and_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DF_GAMED_FILE),
            "model,preference,index,std_delta_len,instruction_difficulty,not_gamed_baseline\n\
             m,0.25,1,0.5,-1.5,False\nm,,0,0.1,2.0,False\nm2,0.5,1,0.2,-1.5,False\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(INSTRUCTION_DIFFICULTY_FILE),
            "index,instruction_difficulty\n0,2.0\n1,-1.5\n",
        )
        .unwrap();
        let calibration = Calibration::from_dir(dir.path()).unwrap();
        assert_eq!(calibration.source(), &CalibrationSource::Directory(dir.path().to_path_buf()));
        assert_eq!(calibration.gamed_rows()[1].preference, None);
        // Row labels of first occurrences are 0 and 1; eval indices are 1 and 0.
        assert_eq!(calibration.difficulty_at_row(0), Some(-1.5));
        assert_eq!(calibration.difficulty_of_instruction(0), Some(2.0));
        assert_eq!(calibration.difficulty_at_row(2), None);
    }

    #[test]
    fn a_missing_file_or_column_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Calibration::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(DF_GAMED_FILE), "{err}");
        std::fs::write(dir.path().join(DF_GAMED_FILE), "model,preference\nm,0.5\n").unwrap();
        std::fs::write(
            dir.path().join(INSTRUCTION_DIFFICULTY_FILE),
            "index,instruction_difficulty\n0,1\n",
        )
        .unwrap();
        let err = Calibration::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing column `index`"), "{err}");
    }
}
