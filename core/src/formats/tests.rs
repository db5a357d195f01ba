//! The formats against real alpaca_eval files (`../shared/data/oracle`) and bad input.

use std::path::{Path, PathBuf};

use super::annotations::{parse_annotations, render_annotations};
use super::leaderboard::{render_leaderboard, sort_like_alpaca_eval, COLUMNS};
use super::model_outputs::{parse_model_outputs, render_model_outputs};
use super::*;
use crate::eval_set::EvalSet;
use crate::metrics::{HeadToHead, Metrics};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

const ORACLE_MODELS: [&str; 12] = [
    "NullModel",
    "alpaca-7b",
    "gpt4_gamed",
    "claude-2.1",
    "gpt-3.5-turbo-1106",
    "gemma-7b-it",
    "vicuna-13b",
    "humpback-llama2-70b",
    "gpt4_1106_preview",
    "phi-2",
    "falcon-7b-instruct",
    "FuseChat-Gemma-2-9B-Instruct",
];

fn oracle_annotations(model: &str) -> PathBuf {
    shared()
        .join(format!("oracle/results/{model}/weighted_alpaca_eval_gpt4_turbo/annotations.json.gz"))
}

fn gunzip(path: &Path) -> String {
    String::from_utf8(records::read_bytes(path).unwrap()).unwrap()
}

fn message(err: FormatError) -> String {
    err.to_string()
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} should mention {part:?}");
    }
}

#[test]
fn all_twelve_oracle_annotation_files_load_and_validate() {
    let eval_set = EvalSet::embedded();
    for model in ORACLE_MODELS {
        let path = oracle_annotations(model);
        let rows = read_annotations(&path).unwrap_or_else(|e| panic!("{e}"));
        let expected_rows = if model == "phi-2" { 803 } else { 805 };
        assert_eq!(rows.len(), expected_rows, "{model}");
        assert!(rows.iter().all(|r| r.generator_1 == "gpt4_1106_preview"), "{model}");
        let warnings =
            validate_annotations(&path, &rows, &eval_set).unwrap_or_else(|e| panic!("{e}"));
        if model == "phi-2" {
            let missing = warnings.iter().find_map(|w| match &w.kind {
                WarningKind::MissingInstructions { positions, .. } => Some(positions.clone()),
                _ => None,
            });
            assert_eq!(missing, Some(vec![131, 209]));
        }
        assert!(
            !warnings.iter().any(|w| matches!(w.kind, WarningKind::NotInEvalSetOrder { .. })),
            "{model}"
        );
    }
}

#[test]
fn object_raw_completions_and_extra_columns_are_kept() {
    let rows = read_annotations(oracle_annotations("NullModel")).unwrap();
    assert_eq!(rows[0].extra.get("datasplit").and_then(|v| v.as_str()), Some("eval"));
    assert!(rows[0].raw_completion.as_ref().unwrap().is_object());
    let fuse = read_annotations(oracle_annotations("FuseChat-Gemma-2-9B-Instruct")).unwrap();
    assert!(fuse.iter().all(|r| r.raw_completion.is_none() && r.price_per_example.is_none()));
}

/// Files whose columns are in alpaca_eval's usual order come back byte for byte. (Not
/// gpt4_1106_preview's: its price, time and raw-completion columns are null in every row,
/// and herd, like a file that never had them, leaves such columns out.)
#[test]
fn herd_rewrites_alpaca_eval_annotation_files_byte_for_byte() {
    for model in ["alpaca-7b", "claude-2.1", "phi-2", "falcon-7b-instruct", "humpback-llama2-70b"] {
        let path = oracle_annotations(model);
        let original = gunzip(&path);
        let rows = parse_annotations(&path, original.as_bytes()).unwrap();
        let rewritten = render_annotations(&rows);
        if rewritten != original {
            let at = rewritten.bytes().zip(original.bytes()).take_while(|(a, b)| a == b).count();
            panic!(
                "{model}: differs at byte {at}: herd {:?} vs alpaca_eval {:?}",
                &rewritten[at.saturating_sub(80)..(at + 80).min(rewritten.len())],
                &original[at.saturating_sub(80)..(at + 80).min(original.len())]
            );
        }
    }
}

#[test]
fn herd_rewrites_alpaca_eval_model_outputs_byte_for_byte() {
    let path = shared().join("alpaca_eval/reference_gpt4_turbo.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let rows = parse_model_outputs(&path, original.as_bytes()).unwrap();
    assert_eq!(rows.len(), 805);
    assert_eq!(render_model_outputs(&rows), original);
}

#[test]
fn annotations_round_trip_through_json_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["NullModel", "gemma-7b-it", "FuseChat-Gemma-2-9B-Instruct"] {
        let mut rows = read_annotations(oracle_annotations(model)).unwrap();
        // Values the oracle files do not have: a string raw completion, a null preference,
        // text outside the BMP, a float that pandas would round.
        rows[0].raw_completion = Some(serde_json::Value::String("(a) </pre> 😀".into()));
        rows[1].preference = None;
        rows[2].output_2 = "emoji 😀 and tab\t and slash / done".into();
        rows[3].preference = Some(1.000_000_000_012_345_6);
        for name in ["a.json", "a.json.gz"] {
            let path = dir.path().join(name);
            write_annotations(&path, &rows).unwrap();
            assert_eq!(read_annotations(&path).unwrap(), rows, "{model} via {name}");
        }
    }
}

#[test]
fn model_outputs_round_trip_with_extra_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows =
        read_model_outputs(shared().join("alpaca_eval/reference_gpt4_turbo.json")).unwrap();
    rows.truncate(20);
    for (i, row) in rows.iter_mut().enumerate() {
        row.generator = "herd-smol".into();
        row.extra.insert("output_tokens".into(), serde_json::json!(i * 3));
        row.extra.insert("seconds".into(), serde_json::json!(0.25 * i as f64));
    }
    rows[5].output = String::new();
    for name in ["m.json", "m.json.gz"] {
        let path = dir.path().join(name);
        write_model_outputs(&path, &rows).unwrap();
        assert_eq!(read_model_outputs(&path).unwrap(), rows, "{name}");
    }
}

#[test]
fn leaderboard_round_trips_and_matches_alpaca_eval_columns_and_numbers() {
    let path = shared().join(
        "oracle/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv",
    );
    let original = std::fs::read_to_string(&path).unwrap();
    let rows = read_leaderboard(&path).unwrap();
    assert_eq!(rows.len(), 223);
    let header = original.lines().next().unwrap();
    assert_eq!(header, format!(",{}", COLUMNS.join(",")));
    // The official file is sorted as alpaca_eval sorts; sorting again changes nothing.
    let mut sorted = rows.clone();
    sort_like_alpaca_eval(&mut sorted);
    assert_eq!(sorted, rows);
    // Every number is written exactly as pandas wrote it (Python's float repr).
    assert_eq!(render_leaderboard(&rows), original);
    let baseline = rows.iter().find(|r| r.generator == "gpt4_1106_preview").unwrap();
    assert_eq!(
        (baseline.win_rate, baseline.n_draws, baseline.lc_standard_error),
        (50.0, 805, None)
    );

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("leaderboard.csv");
    write_leaderboard(&copy, &rows).unwrap();
    assert_eq!(read_leaderboard(&copy).unwrap(), rows);
}

#[test]
fn leaderboard_without_lc_sorts_by_win_rate() {
    let row = |name: &str, win_rate: f64| LeaderboardRow {
        generator: name.into(),
        metrics: Metrics {
            head_to_head: HeadToHead {
                win_rate,
                standard_error: 1.0,
                n_wins: 1,
                n_wins_base: 1,
                n_draws: 0,
                n_total: 2,
                discrete_win_rate: win_rate,
            },
            avg_length: 10,
            length_controlled_winrate: None,
            lc_standard_error: None,
        },
        mode: leaderboard::DEFAULT_MODE.into(),
    };
    let mut rows = vec![row("low", 10.0), row("high", 60.0)];
    sort_like_alpaca_eval(&mut rows);
    assert_eq!(rows[0].generator, "high");
    let text = render_leaderboard(&rows);
    assert!(text.lines().nth(1).unwrap().ends_with(",community,10,,"), "{text}");
}

// ---- bad input: every error names the file, the row and the field ----

const GOOD_ROW: &str = r#"{"instruction":"What is the capital of France, and why is it there?","output_1":"Paris","generator_1":"ref","dataset":"d","output_2":"Paris.","generator_2":"m","annotator":"j","preference":2.0}"#;

fn annotations_text(rows: &[&str]) -> String {
    format!("[{}]", rows.join(","))
}

#[test]
fn malformed_json_names_the_file_and_row() {
    let text = annotations_text(&[GOOD_ROW, GOOD_ROW, r#"{"instruction":"x","output_1": }"#]);
    let err = parse_annotations(Path::new("runs/a/annotations.json"), text.as_bytes()).unwrap_err();
    assert!(matches!(err, FormatError::MalformedJson { row: Some(2), .. }), "{err:?}");
    assert_mentions(
        &message(err),
        &["runs/a/annotations.json", "malformed JSON", "row 2", "line 1"],
    );

    let err = parse_annotations(Path::new("o.json"), br#"{"instruction":"x"}"#).unwrap_err();
    assert_mentions(&message(err), &["o.json", "expected a JSON array"]);

    let err = parse_annotations(Path::new("o.json"), b"[1]").unwrap_err();
    assert_mentions(&message(err), &["o.json", "row 0", "expected an object, found a number"]);
}

#[test]
fn a_missing_field_names_file_row_instruction_and_field() {
    let without_output = GOOD_ROW.replace(r#""output_2":"Paris.","#, "");
    let text = annotations_text(&[GOOD_ROW, &without_output]);
    let err = parse_annotations(Path::new("ann.json"), text.as_bytes()).unwrap_err();
    assert_mentions(
        &message(err),
        &[
            "ann.json",
            "row 1",
            "\"What is the capital of France, and why i…\"",
            "`output_2`",
            "missing",
        ],
    );
}

#[test]
fn a_non_string_output_names_file_row_and_field() {
    let text = r#"[{"dataset":"d","instruction":"Say hi","output":"hi","generator":"m"},
                  {"dataset":"d","instruction":"Say bye","output":42,"generator":"m"}]"#;
    let err = parse_model_outputs(Path::new("model_outputs.json"), text.as_bytes()).unwrap_err();
    assert_mentions(
        &message(err),
        &[
            "model_outputs.json",
            "row 1",
            "\"Say bye\"",
            "`output`",
            "expected a string, found a number",
        ],
    );

    let bad_preference = GOOD_ROW.replace(r#""preference":2.0"#, r#""preference":"2""#);
    let err =
        parse_annotations(Path::new("ann.json"), annotations_text(&[&bad_preference]).as_bytes())
            .unwrap_err();
    assert_mentions(
        &message(err),
        &["row 0", "`preference`", "expected a number or null, found a string"],
    );
}

#[test]
fn an_instruction_outside_the_eval_set_is_an_error_only_when_validating() {
    let eval_set = EvalSet::embedded();
    let mut rows =
        read_model_outputs(shared().join("alpaca_eval/reference_gpt4_turbo.json")).unwrap();
    rows[3].instruction = "Write a haiku about queues.".into();
    // Parsing does not know the eval set: the file loads.
    let text = render_model_outputs(&rows);
    let parsed = parse_model_outputs(Path::new("mine.json"), text.as_bytes()).unwrap();
    let err = validate_model_outputs(Path::new("mine.json"), &parsed, &eval_set).unwrap_err();
    assert_mentions(
        &message(err),
        &[
            "mine.json",
            "row 3",
            "\"Write a haiku about queues.\"",
            "`instruction`",
            "not in the eval set",
        ],
    );
}

#[test]
fn a_duplicate_instruction_names_both_rows() {
    let eval_set = EvalSet::embedded();
    let mut rows = read_annotations(oracle_annotations("alpaca-7b")).unwrap();
    rows[10] = rows[4].clone();
    let err = validate_annotations(Path::new("dup.json"), &rows, &eval_set).unwrap_err();
    let preview = InstructionPreview::of(&rows[4].instruction).to_string();
    assert_mentions(
        &message(err),
        &["dup.json", "row 10", &preview, "`instruction`", "duplicate of row 4"],
    );
}

#[test]
fn empty_outputs_and_unparsed_preferences_are_warnings_not_errors() {
    let eval_set = EvalSet::embedded();
    let mut rows = read_annotations(oracle_annotations("vicuna-13b")).unwrap();
    rows[7].output_2.clear();
    rows[9].preference = None;
    rows.swap(20, 21);
    let warnings = validate_annotations(Path::new("v.json"), &rows, &eval_set).unwrap();
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{text:#?}");
    assert_eq!(warnings.iter().filter_map(|w| w.row).collect::<Vec<_>>(), vec![7, 9]);
    assert_mentions(
        &text.join("\n"),
        &["v.json", "row 7", "`output_2`: empty output", "row 9", "`preference`: null", "row 21"],
    );

    let mut outputs =
        read_model_outputs(shared().join("alpaca_eval/reference_gpt4_turbo.json")).unwrap();
    outputs[0].output.clear();
    outputs.pop();
    let warnings = validate_model_outputs(Path::new("m.json"), &outputs, &eval_set).unwrap();
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_mentions(
        &text.join("\n"),
        &[
            "row 0",
            "`output`: empty output",
            "1 of the 805 eval-set instructions have no row (positions 804)",
        ],
    );
}

#[test]
fn a_leaderboard_with_a_bad_number_names_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.csv");
    std::fs::write(
        &path,
        format!(",{}\nm,12.5,1.0,1,2,0,3,10.0,community,12x,,\n", COLUMNS.join(",")),
    )
    .unwrap();
    let err = read_leaderboard(&path).unwrap_err();
    assert_mentions(&message(err), &["lb.csv", "row 0", "\"m\"", "`avg_length`", "12x"]);
    std::fs::write(&path, ",win_rate\nm,1.0\n").unwrap();
    assert_mentions(
        &message(read_leaderboard(&path).unwrap_err()),
        &["lb.csv", "missing column `standard_error`"],
    );
}

#[test]
fn minimal_model_outputs_rows_get_the_name_given_and_the_eval_sets_dataset() {
    let set = EvalSet::embedded();
    let json = format!(
        r#"[{{"instruction": {:?}, "output": "a"}}, {{"instruction": {:?}, "output": "b", "generator": "kept", "dataset": "mine"}}]"#,
        set.rows()[3].instruction,
        set.rows()[4].instruction
    );
    let mut rows = parse_model_outputs(Path::new("m.json"), json.as_bytes()).unwrap();
    assert_eq!((rows[0].generator.as_str(), rows[0].dataset.as_str()), ("", ""));
    assert_eq!(fill_missing(&mut rows, "named", &set), (1, 1));
    assert_eq!(rows[0].generator, "named");
    assert_eq!(rows[0].dataset, set.rows()[3].dataset);
    assert_eq!((rows[1].generator.as_str(), rows[1].dataset.as_str()), ("kept", "mine"));
    // A field that is there must still be a string.
    let bad = r#"[{"instruction": "x", "output": "y", "generator": 3}]"#;
    let err = message(parse_model_outputs(Path::new("m.json"), bad.as_bytes()).unwrap_err());
    assert_mentions(&err, &["m.json", "row 0", "generator", "string"]);
}
