//! alpaca_eval 0.6.6's `ranking_parser`, reproduced on the judge's completion.
//!
//! alpaca_eval raises on an empty completion, then runs `ast.literal_eval(completion)` on the
//! whole text, evaluates `c["model"] == "model_1"` for every element `c` of the result, and
//! takes `["rank"]` of the first match; the rank must equal 1 or 2 (so `1.0` and `True` pass)
//! and becomes the preference. Any exception gives no annotation (NaN). So extra text
//! around the list, a missing key in any element, a non-dict element, or a rank other than
//! 1 or 2 all leave the row unparsed; ties or duplicate ranks do not matter as long as the
//! first `model_1` entry has rank 1 or 2.

use super::python_literal::{literal_eval, LiteralError, PyValue};

/// The name the prompt gives the first output shown to the judge.
pub const MODEL_1_NAME: &str = "model_1";

/// Why `ranking_parser` gives no preference, with the Python exception it would meet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankingParseError {
    /// `completion == ""`: alpaca_eval raises `ValueError` outside its `try`; its annotator
    /// then records no preference all the same.
    #[error("the completion is empty")]
    Empty,
    /// `ast.literal_eval` fails (`SyntaxError`, `ValueError`, `TypeError`).
    #[error("the completion is not a Python literal: {0}")]
    NotALiteral(LiteralError),
    /// The literal cannot be iterated (`TypeError`): a number, `None`, `True` ….
    #[error("the completion is a Python {type_name}, not a list of rankings")]
    NotIterable { type_name: &'static str },
    /// An element is not a dict, so `c["model"]` fails (`TypeError`). Iterating a dict,
    /// set, str or bytes always ends here, since their elements are never dicts.
    #[error("entry {position} is a {type_name}, not a dict")]
    EntryNotADict { position: usize, type_name: &'static str },
    /// An element has no `'model'` key (`KeyError`).
    #[error("entry {position} has no 'model' key")]
    EntryWithoutModel { position: usize },
    /// No element names `'model_1'` (`IndexError`).
    #[error("no entry has 'model': 'model_1'")]
    NoModel1,
    /// The first `'model_1'` element has no `'rank'` key (`KeyError`).
    #[error("the 'model_1' entry has no 'rank' key")]
    Model1WithoutRank,
    /// The rank of `'model_1'` is not equal to 1 or 2 (`AssertionError`).
    #[error("the rank of 'model_1' is {rank}, not 1 or 2")]
    RankNotOneOrTwo { rank: String },
}

impl RankingParseError {
    /// The Python exception alpaca_eval meets for this failure.
    pub fn python_exception(&self) -> &'static str {
        match self {
            RankingParseError::Empty => "ValueError",
            RankingParseError::NotALiteral(LiteralError::Syntax { .. }) => "SyntaxError",
            RankingParseError::NotALiteral(LiteralError::Malformed { .. }) => "ValueError",
            RankingParseError::NotALiteral(LiteralError::Unhashable { .. })
            | RankingParseError::NotIterable { .. }
            | RankingParseError::EntryNotADict { .. } => "TypeError",
            RankingParseError::EntryWithoutModel { .. } | RankingParseError::Model1WithoutRank => {
                "KeyError"
            }
            RankingParseError::NoModel1 => "IndexError",
            RankingParseError::RankNotOneOrTwo { .. } => "AssertionError",
        }
    }
}

/// alpaca_eval's `ranking_parser(completion)`: the rank of `model_1` as the preference in
/// the order the judge saw the outputs (1.0: the first shown output wins, 2.0: the second).
/// `Err` is alpaca_eval's NaN; `.ok()` gives the `Option<f64>` of an annotation row.
pub fn ranking_parser(completion: &str) -> Result<f64, RankingParseError> {
    if completion.is_empty() {
        return Err(RankingParseError::Empty);
    }
    let value = literal_eval(completion).map_err(RankingParseError::NotALiteral)?;
    rank_of_model_1(&value, MODEL_1_NAME)
}

/// `[c for c in value if c["model"] == model_1_name][0]["rank"]`, then `assert rank in [1, 2]`.
fn rank_of_model_1(value: &PyValue, model_1_name: &str) -> Result<f64, RankingParseError> {
    let elements: Vec<&PyValue> = match value {
        PyValue::List(items) | PyValue::Tuple(items) | PyValue::Set(items) => {
            items.iter().collect()
        }
        PyValue::Dict(entries) => entries.iter().map(|(k, _)| k).collect(),
        // Iterating a str or bytes gives str / int elements: the first one fails `c["model"]`.
        PyValue::Str(text) => {
            return Err(if text.is_empty() {
                RankingParseError::NoModel1
            } else {
                RankingParseError::EntryNotADict { position: 0, type_name: "str" }
            })
        }
        PyValue::Bytes(bytes) => {
            return Err(if bytes.is_empty() {
                RankingParseError::NoModel1
            } else {
                RankingParseError::EntryNotADict { position: 0, type_name: "int" }
            })
        }
        other => return Err(RankingParseError::NotIterable { type_name: other.type_name() }),
    };
    // The comprehension evaluates `c["model"]` for every element before `[0]` is taken.
    let mut first_match = None;
    for (position, element) in elements.iter().enumerate() {
        if !matches!(element, PyValue::Dict(_)) {
            return Err(RankingParseError::EntryNotADict {
                position,
                type_name: element.type_name(),
            });
        }
        let model =
            element.dict_get("model").ok_or(RankingParseError::EntryWithoutModel { position })?;
        if first_match.is_none() && matches!(model, PyValue::Str(name) if name == model_1_name) {
            first_match = Some(*element);
        }
    }
    let entry = first_match.ok_or(RankingParseError::NoModel1)?;
    let rank = entry.dict_get("rank").ok_or(RankingParseError::Model1WithoutRank)?;
    if rank.equals_int(1) || rank.equals_int(2) {
        // `rank in [1, 2]` held, so the value is 1 or 2 (as int, float, bool or complex).
        Ok(rank.as_f64().unwrap_or(f64::NAN))
    } else {
        Err(RankingParseError::RankNotOneOrTwo { rank: format!("{rank:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_judges_usual_answer_gives_the_rank_of_model_1() {
        let model_2_wins =
            "[\n    {'model': 'model_2', 'rank': 1},\n    {'model': 'model_1', 'rank': 2}\n]";
        assert_eq!(ranking_parser(model_2_wins), Ok(2.0));
        let model_1_wins = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]";
        assert_eq!(ranking_parser(model_1_wins), Ok(1.0));
    }

    #[test]
    fn double_quotes_floats_bools_and_tuples_are_accepted() {
        assert_eq!(ranking_parser(r#"[{"model": "model_1", "rank": 2.0}]"#), Ok(2.0));
        assert_eq!(ranking_parser("[{'model': 'model_1', 'rank': True}]"), Ok(1.0));
        assert_eq!(
            ranking_parser("{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}"),
            Ok(1.0)
        );
        // A tie is fine: only model_1's rank is read.
        assert_eq!(
            ranking_parser("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 1}]"),
            Ok(1.0)
        );
    }

    #[test]
    fn anything_else_leaves_the_row_unparsed_with_pythons_exception() {
        let cases = [
            ("", "ValueError"),
            ("The ranking is [{'model': 'model_1', 'rank': 1}]", "SyntaxError"),
            ("[{'model': 'model_1', 'rank': 1}]\nExplanation: better.", "SyntaxError"),
            ("[{'model': model_1, 'rank': 1}]", "ValueError"),
            ("[{'model': 'model_1', 'rank': 3}]", "AssertionError"),
            ("[{'model': 'model_1', 'rank': '1'}]", "AssertionError"),
            ("[{'model': 'model_2', 'rank': 1}]", "IndexError"),
            ("[{'model': 'model_1'}]", "KeyError"),
            ("[{'model': 'model_1', 'rank': 1}, {'rank': 2}]", "KeyError"),
            ("[{'model': 'model_1', 'rank': 1}, 'model_2']", "TypeError"),
            ("{'model': 'model_1', 'rank': 1}", "TypeError"),
            ("1", "TypeError"),
        ];
        for (completion, exception) in cases {
            let err = ranking_parser(completion).expect_err(completion);
            assert_eq!(err.python_exception(), exception, "{completion:?}: {err}");
        }
    }

    /// The cases of core/tests/fixtures/ranking_parser_cases.jsonl and what alpaca_eval
    /// 0.6.6's real `ranking_parser` returned for each (scripts/ranking_parser_reference.py,
    /// CPython 3.11.7): `{"completion": …, "preference": 1|2|1.0|true|null, "exception": …}`.
    #[test]
    fn agrees_with_alpaca_evals_ranking_parser_on_the_reference_cases() {
        let fixture = include_str!("../../tests/fixtures/ranking_parser_cases.jsonl");
        let mut checked = 0;
        let mut disagreements = Vec::new();
        for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
            let case: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let completion = case["completion"].as_str().expect("completion");
            let expected_preference = match &case["preference"] {
                serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
                other => other.as_f64(),
            };
            let expected_exception = case["exception"].as_str();
            let ours = ranking_parser(completion);
            let agrees = match (&ours, expected_preference, expected_exception) {
                (Ok(p), Some(q), None) => *p == q,
                (Err(e), None, Some(exception)) => same_exception(e, exception),
                _ => false,
            };
            if !agrees {
                disagreements.push(format!(
                    "{completion:?}: ours {ours:?}, Python {expected_preference:?} {expected_exception:?}"
                ));
            }
            checked += 1;
        }
        assert!(checked >= 300, "only {checked} reference cases");
        assert!(
            disagreements.is_empty(),
            "{} disagreements:\n{}",
            disagreements.len(),
            disagreements.join("\n")
        );
    }

    /// Python's SyntaxError (IndentationError) and literal_eval's ValueError are one outcome for herd (the text is
    /// not a literal); RecursionError and OverflowError are literal_eval failures too.
    fn same_exception(ours: &RankingParseError, python: &str) -> bool {
        let not_a_literal = |e: &str| {
            matches!(
                e,
                "SyntaxError"
                    | "IndentationError"
                    | "ValueError"
                    | "RecursionError"
                    | "OverflowError"
            )
        };
        match ours {
            RankingParseError::NotALiteral(
                LiteralError::Syntax { .. } | LiteralError::Malformed { .. },
            ) => not_a_literal(python),
            RankingParseError::Empty => python == "EmptyCompletion",
            other => other.python_exception() == python,
        }
    }
}
