//! alpaca_eval's files, read and written: `model_outputs.json`, `annotations.json`,
//! `leaderboard.csv`. Reading validates and names the file, row and field of any problem.

pub mod annotations;
pub mod leaderboard;
pub mod model_outputs;
