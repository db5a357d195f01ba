//! alpaca_eval's `leaderboard.csv`: one row per generator, the generator's name in an
//! unnamed index column, floats as Python writes them, `NaN` as an empty cell, rows
//! sorted by length-controlled win rate, highest first.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::python_float::python_float_repr;
use super::records::{read_bytes, write_bytes};
use super::FormatError;
use crate::metrics::{HeadToHead, Metrics};

/// The columns after the index, in alpaca_eval's order.
pub const COLUMNS: [&str; 11] = [
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "mode",
    "avg_length",
    "length_controlled_winrate",
    "lc_standard_error",
];

/// alpaca_eval's `mode` for a model that is not one of its curated ones.
pub const DEFAULT_MODE: &str = "community";

/// One generator's line of the leaderboard: its name, its [`Metrics`] (the ten numbers) and
/// alpaca_eval's `mode`. In a leaderboard read from a file, `length_controlled_winrate` is
/// `None` where the column is absent (leaderboards made without the length-controlled
/// metric), and `lc_standard_error` is `None` where the cell is empty (many official rows:
/// NaN in alpaca_eval).
///
/// Reads as its metrics (`row.win_rate`, `row.n_total`), through `Deref`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRow {
    /// The index column: the generator's name.
    pub generator: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// alpaca_eval's curation level: `minimal`, `verified`, `community` or `dev`.
    pub mode: String,
}

impl std::ops::Deref for LeaderboardRow {
    type Target = Metrics;

    fn deref(&self) -> &Metrics {
        &self.metrics
    }
}

/// Sorts as alpaca_eval does: by length-controlled win rate, highest first, rows without
/// one last; by win rate when no row has one. Ties keep their order (pandas' sort is stable
/// for a single key only with `kind="stable"`; ties are rare enough not to matter).
pub fn sort_like_alpaca_eval(rows: &mut [LeaderboardRow]) {
    let by_lc = rows.iter().any(|r| r.length_controlled_winrate.is_some());
    let key =
        |r: &LeaderboardRow| if by_lc { r.length_controlled_winrate } else { Some(r.win_rate) };
    rows.sort_by(|a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// The text `write_leaderboard` writes (rows in the order given).
pub fn render_leaderboard(rows: &[LeaderboardRow]) -> String {
    let mut writer =
        csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let header: Vec<&str> = std::iter::once("").chain(COLUMNS).collect();
    let optional =
        |x: Option<f64>| x.filter(|v| !v.is_nan()).map(python_float_repr).unwrap_or_default();
    let float = |x: f64| optional(Some(x));
    let mut lines = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for row in rows {
        let r = &row.metrics;
        lines.push(vec![
            row.generator.clone(),
            float(r.win_rate),
            float(r.standard_error),
            r.n_wins.to_string(),
            r.n_wins_base.to_string(),
            r.n_draws.to_string(),
            r.n_total.to_string(),
            float(r.discrete_win_rate),
            row.mode.clone(),
            r.avg_length.to_string(),
            optional(r.length_controlled_winrate),
            optional(r.lc_standard_error),
        ]);
    }
    for line in lines {
        writer.write_record(&line).expect("writing CSV to memory cannot fail");
    }
    String::from_utf8(writer.into_inner().expect("writing CSV to memory cannot fail"))
        .expect("CSV of strings is UTF-8")
}

/// Writes `leaderboard.csv` (rows in the order given: sort first).
pub fn write_leaderboard(
    path: impl AsRef<Path>,
    rows: &[LeaderboardRow],
) -> Result<(), FormatError> {
    write_bytes(path.as_ref(), render_leaderboard(rows).as_bytes())
}

/// Reads an alpaca_eval leaderboard. Columns are found by name; the two
/// length-controlled columns may be missing (older leaderboards), others may be added.
pub fn read_leaderboard(path: impl AsRef<Path>) -> Result<Vec<LeaderboardRow>, FormatError> {
    let path = path.as_ref();
    parse_leaderboard(path, &read_bytes(path)?)
}

/// [`read_leaderboard`] of bytes already read; `path` names them in errors.
pub fn parse_leaderboard(path: &Path, bytes: &[u8]) -> Result<Vec<LeaderboardRow>, FormatError> {
    let malformed = |row: Option<usize>, message: String| FormatError::MalformedCsv {
        path: path.to_path_buf(),
        row,
        message,
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header = reader.headers().map_err(|e| malformed(None, e.to_string()))?.clone();
    let find = |name: &str| header.iter().position(|h| h == name);
    let require = |name: &str| {
        find(name).ok_or_else(|| FormatError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
        })
    };
    let columns = RequiredColumns {
        win_rate: require("win_rate")?,
        standard_error: require("standard_error")?,
        n_wins: require("n_wins")?,
        n_wins_base: require("n_wins_base")?,
        n_draws: require("n_draws")?,
        n_total: require("n_total")?,
        discrete_win_rate: require("discrete_win_rate")?,
        mode: require("mode")?,
        avg_length: require("avg_length")?,
        length_controlled_winrate: find("length_controlled_winrate"),
        lc_standard_error: find("lc_standard_error"),
    };

    let mut rows = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| malformed(Some(row), e.to_string()))?;
        let cell = |column: usize| record.get(column).unwrap_or("").trim();
        let generator = cell(0).to_string();
        let field_error = |column: usize, why: &str| {
            malformed(
                Some(row),
                format!("({generator:?}): field `{}`: {why} {:?}", &header[column], cell(column)),
            )
        };
        let float = |column: usize| -> Result<Option<f64>, FormatError> {
            match cell(column) {
                "" => Ok(None),
                text => {
                    text.parse::<f64>().map(Some).map_err(|_| field_error(column, "not a number:"))
                }
            }
        };
        let required_float = |column: usize| {
            float(column)?.ok_or_else(|| field_error(column, "empty, expected a number:"))
        };
        // pandas writes an integer column that held a NaN as floats: accept "676.0".
        let count = |column: usize| -> Result<u64, FormatError> {
            let x = required_float(column)?;
            if x >= 0.0 && x.fract() == 0.0 {
                Ok(x as u64)
            } else {
                Err(field_error(column, "expected a non-negative integer, found"))
            }
        };
        let head_to_head = HeadToHead {
            win_rate: required_float(columns.win_rate)?,
            standard_error: float(columns.standard_error)?.unwrap_or(f64::NAN),
            n_wins: count(columns.n_wins)?,
            n_wins_base: count(columns.n_wins_base)?,
            n_draws: count(columns.n_draws)?,
            n_total: count(columns.n_total)?,
            discrete_win_rate: required_float(columns.discrete_win_rate)?,
        };
        let metrics = Metrics {
            head_to_head,
            avg_length: count(columns.avg_length)?,
            length_controlled_winrate: columns
                .length_controlled_winrate
                .map(float)
                .transpose()?
                .flatten(),
            lc_standard_error: columns.lc_standard_error.map(float).transpose()?.flatten(),
        };
        rows.push(LeaderboardRow { mode: cell(columns.mode).to_string(), metrics, generator });
    }
    Ok(rows)
}

struct RequiredColumns {
    win_rate: usize,
    standard_error: usize,
    n_wins: usize,
    n_wins_base: usize,
    n_draws: usize,
    n_total: usize,
    discrete_win_rate: usize,
    mode: usize,
    avg_length: usize,
    length_controlled_winrate: Option<usize>,
    lc_standard_error: Option<usize>,
}
