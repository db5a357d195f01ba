//! `herd evaluate` end to end through the binary: judging model_outputs.json files made
//! elsewhere, on the default model as judge. The rows are eval-set instructions with short
//! references, to keep the judge's prompts (and CI time) small.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use herd_core::eval_set::EvalSet;
use herd_core::formats::{read_annotations, write_model_outputs, ModelOutput};

/// Eval-set instructions whose reference answers are a few words long.
const SHORT: [usize; 2] = [199, 370];

fn herd(judge_cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command.env("HERD_JUDGE_CACHE", judge_cache).env_remove("HERD_LOG");
    command
}

fn model_outputs(dir: &Path, name: &str, indices: &[usize]) -> PathBuf {
    let set = EvalSet::embedded();
    let rows: Vec<ModelOutput> = indices
        .iter()
        .map(|&i| ModelOutput {
            instruction: set.rows()[i].instruction.clone(),
            output: format!("My answer to row {i}."),
            generator: name.into(),
            dataset: set.rows()[i].dataset.clone(),
            extra: Default::default(),
        })
        .collect();
    let path = dir.join(format!("{name}.json"));
    write_model_outputs(&path, &rows).unwrap();
    path
}

fn evaluate(cache: &Path, file: &Path, out: &Path, extra: &[&str]) -> Output {
    herd(cache)
        .args(["evaluate", "--model-outputs"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn succeed(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "herd failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn judge_cache_entries(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("cache/judgements")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn evaluate_judges_a_file_and_a_second_evaluate_takes_every_verdict_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("judge-cache");
    let file = model_outputs(dir.path(), "outside-model", &SHORT);

    let first = succeed(evaluate(&cache, &file, &dir.path().join("first"), &[]));
    assert!(first.contains("judged 2 verdicts (0 from the judge cache"), "{first}");
    assert_eq!(judge_cache_entries(&cache), 2);
    let annotations =
        read_annotations(dir.path().join("first/outside-model/annotations.json")).unwrap();
    let set = EvalSet::embedded();
    assert_eq!(annotations.len(), 2);
    for (a, &index) in annotations.iter().zip(&SHORT) {
        assert_eq!(a.instruction, set.rows()[index].instruction, "eval-set order");
        assert_eq!(a.output_1, set.rows()[index].output);
        assert_eq!(a.output_2, format!("My answer to row {index}."));
        assert!(a.preference.is_some());
    }
    assert!(
        dir.path().join("first/leaderboard.csv").is_file()
            && dir.path().join("first/report.html").is_file()
    );
    assert!(
        !dir.path().join("first/outside-model/throughput.json").exists(),
        "nothing was generated"
    );

    // Another run folder, the same cache: no judge call at all.
    let second = succeed(evaluate(&cache, &file, &dir.path().join("second"), &[]));
    assert!(second.contains("judged 0 verdicts (2 from the judge cache"), "{second}");
    let read = |run: &str| {
        std::fs::read(dir.path().join(run).join("outside-model/annotations.json")).unwrap()
    };
    assert_eq!(read("first"), read("second"), "cached verdicts give the same file");
}

#[test]
fn bad_input_is_refused_before_any_work_naming_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("judge-cache");
    let out = dir.path().join("never");

    let unknown = dir.path().join("unknown.json");
    let set = EvalSet::embedded();
    let text = serde_json::json!([
        {"dataset": "x", "instruction": set.rows()[0].instruction, "output": "a", "generator": "m"},
        {"dataset": "x", "instruction": "Write a haiku about queues.", "output": "b", "generator": "m"},
    ]);
    std::fs::write(&unknown, text.to_string()).unwrap();
    let output = evaluate(&cache, &unknown, &out, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in ["unknown.json", "row 1", "`instruction`", "not in the eval set"] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }

    let missing = dir.path().join("missing.json");
    std::fs::write(&missing, r#"[{"dataset": "x", "instruction": "i", "generator": "m"}]"#)
        .unwrap();
    let output = evaluate(&cache, &missing, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("missing.json") && stderr.contains("row 0"),
        "{stderr}"
    );
    assert!(stderr.contains("`output`: missing"), "{stderr}");

    let mixed = dir.path().join("mixed.json");
    let text = serde_json::json!([
        {"dataset": "x", "instruction": set.rows()[0].instruction, "output": "a", "generator": "m"},
        {"dataset": "x", "instruction": set.rows()[1].instruction, "output": "b", "generator": "n"},
    ]);
    std::fs::write(&mixed, text.to_string()).unwrap();
    let stderr = String::from_utf8_lossy(&evaluate(&cache, &mixed, &out, &[]).stderr).into_owned();
    assert!(stderr.contains("mixed.json: row 1: field `generator`"), "{stderr}");

    assert!(!out.exists(), "nothing was started");
    assert_eq!(judge_cache_entries(&cache), 0);
}

#[test]
fn an_unparsable_ranking_is_stored_as_null_with_its_text_and_judged_again_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("judge-cache");
    let file = model_outputs(dir.path(), "ranked-model", &SHORT[..1]);
    // Three new tokens cannot hold alpaca_eval's ranking list: the parser fails.
    let ranking = ["--judge-mode", "ranking", "--judge-max-new-tokens", "3"];

    let first = succeed(evaluate(&cache, &file, &dir.path().join("first"), &ranking));
    assert!(first.contains("judged 1 verdicts (0 from the judge cache"), "{first}");
    let annotations =
        read_annotations(dir.path().join("first/ranked-model/annotations.json")).unwrap();
    assert_eq!(annotations[0].preference, None);
    let raw = annotations[0].raw_completion.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
    assert!(!raw.is_empty(), "the judge's text is kept");
    assert_eq!(annotations[0].extra["judge_mode"], "ranking");
    assert_eq!(judge_cache_entries(&cache), 0, "an unparsed verdict is not cached");

    let second = succeed(evaluate(&cache, &file, &dir.path().join("second"), &ranking));
    assert!(second.contains("judged 1 verdicts (0 from the judge cache"), "{second}");
}

#[test]
fn a_minimal_instruction_and_output_file_is_evaluated_under_the_name_given() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("judge-cache");
    let set = EvalSet::embedded();
    let rows: Vec<serde_json::Value> = SHORT
        .iter()
        .map(|&i| serde_json::json!({"instruction": set.rows()[i].instruction, "output": "Yes."}))
        .collect();
    let file = dir.path().join("minimal.json");
    std::fs::write(&file, serde_json::to_string(&rows).unwrap()).unwrap();

    // Without a name there is no generator to report on: refused before any work.
    let nameless = evaluate(&cache, &file, &dir.path().join("nameless"), &[]);
    assert!(!nameless.status.success());
    let stderr = String::from_utf8_lossy(&nameless.stderr);
    assert!(
        stderr.contains(
            "row 0: field `generator`: missing or empty; give the generator's name with --name"
        ),
        "{stderr}"
    );

    let out = dir.path().join("named");
    succeed(evaluate(&cache, &file, &out, &["--name", "my-model", "--judge-model", "bench-noop"]));
    let annotations = read_annotations(out.join("my-model/annotations.json")).unwrap();
    assert_eq!(annotations.len(), 2);
    for (a, &i) in annotations.iter().zip(&SHORT) {
        assert_eq!(a.generator_2, "my-model");
        assert_eq!(a.dataset, set.rows()[i].dataset, "the dataset comes from the eval set");
    }
}
