//! Where a model stands on the official AlpacaEval 2.0 leaderboard
//! (`data/leaderboards/`, a dated copy). Its figures come from one annotator,
//! `weighted_alpaca_eval_gpt4_turbo`, against one reference, `gpt4_1106_preview`: a model is
//! placed among its rows only when it was judged the same way. Any other judge's win rates
//! are not on that scale, and the report says so instead of placing it.

use std::path::Path;
use std::sync::OnceLock;

use herd_core::formats::{parse_leaderboard, LeaderboardRow};

use crate::GeneratorReport;

/// The annotator and reference of the official leaderboard.
pub const OFFICIAL_ANNOTATOR: &str = "weighted_alpaca_eval_gpt4_turbo";
pub const OFFICIAL_REFERENCE: &str = "gpt4_1106_preview";
/// Where the copy comes from and when.
pub const OFFICIAL_SOURCE: &str =
    "AlpacaEval 2.0 leaderboard (tatsu-lab/alpaca_eval at cd543a149df8, 2025-08-09)";
const OFFICIAL_FILE: &str = "data/leaderboards/alpaca_eval_2_weighted_alpaca_eval_gpt4_turbo.csv";
const OFFICIAL_CSV: &[u8] =
    include_bytes!("../../data/leaderboards/alpaca_eval_2_weighted_alpaca_eval_gpt4_turbo.csv");
/// Official rows shown above and below the model.
const NEIGHBOURS: usize = 3;

/// The official rows, by LC win rate, highest first (rows without LC left out).
pub fn official_rows() -> &'static [LeaderboardRow] {
    static ROWS: OnceLock<Vec<LeaderboardRow>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let mut rows = parse_leaderboard(Path::new(OFFICIAL_FILE), OFFICIAL_CSV)
            .expect("the embedded official leaderboard parses");
        rows.retain(|r| r.metrics.length_controlled_winrate.is_some_and(f64::is_finite));
        rows.sort_by(|a, b| lc(b).total_cmp(&lc(a)));
        rows
    })
}

fn lc(row: &LeaderboardRow) -> f64 {
    row.metrics.length_controlled_winrate.unwrap_or(f64::NAN)
}

/// A generator's place among the official rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// 1-based, by LC win rate, among the official rows of other models.
    pub rank: usize,
    /// Official rows of other models.
    pub of: usize,
    /// The generator's LC win rate.
    pub lc: f64,
    /// The official rows around it, highest first, with their ranks.
    pub above: Vec<(usize, LeaderboardRow)>,
    pub below: Vec<(usize, LeaderboardRow)>,
}

/// Why a generator is, or is not, placed on the official leaderboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Placed(Standing),
    /// Judged by another annotator or against another reference: (annotator, reference).
    OtherJudge(String, String),
    /// Judged the official way but without an LC win rate to place.
    NoLc,
}

/// Where `g` stands.
pub fn placement(g: &GeneratorReport) -> Placement {
    let (annotator, reference) = g
        .annotations
        .first()
        .map(|a| (a.annotator.clone(), a.generator_1.clone()))
        .unwrap_or_default();
    let official = g
        .annotations
        .iter()
        .all(|a| a.annotator == OFFICIAL_ANNOTATOR && a.generator_1 == OFFICIAL_REFERENCE);
    if !official || g.annotations.is_empty() {
        return Placement::OtherJudge(annotator, reference);
    }
    let Some(lc) = g.metrics.metrics.length_controlled_winrate.filter(|v| v.is_finite()) else {
        return Placement::NoLc;
    };
    let others: Vec<&LeaderboardRow> =
        official_rows().iter().filter(|r| r.generator != g.name).collect();
    let position = others.iter().filter(|r| self::lc(r) > lc).count();
    let ranked = |i: usize| (i + 1, others[i].clone());
    Placement::Placed(Standing {
        rank: position + 1,
        of: others.len(),
        lc,
        above: (position.saturating_sub(NEIGHBOURS)..position).map(ranked).collect(),
        below: (position..(position + NEIGHBOURS).min(others.len())).map(ranked).collect(),
    })
}
