//! `herd run` end to end through the binary, on the default model (SmolLM2-135M-Instruct as
//! generator and judge), on the first instructions of the eval set. Settings are small
//! (few new tokens, a short judge context) to keep CI time low on two cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herd_core::eval_set::{EvalSet, REFERENCE_GENERATOR};
use herd_core::formats::{
    read_annotations, read_leaderboard, read_model_outputs, validate_model_outputs,
};
use herd_core::judge::SwapDecision;
use herd_core::metrics::{compute_metrics, MetricsOptions};

const GENERATOR: &str = "smollm2-135m-instruct";
const BASELINE: &str = "smollm2-135m-instruct-zero_shot_system";

fn herd(judge_cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command.env("HERD_JUDGE_CACHE", judge_cache).env_remove("HERD_LOG");
    command
}

fn run_args(out: &Path, limit: usize, max_new_tokens: usize) -> Vec<String> {
    [
        "run",
        "--limit",
        &limit.to_string(),
        "--max-new-tokens",
        &max_new_tokens.to_string(),
        "--judge-max-context",
        "600",
        "--out",
        &out.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
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

/// Every file of the run folder outside the store, by path relative to it.
fn run_files(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "store" {
                    walk(&path, root, files);
                }
            } else {
                files.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(out, out, &mut files);
    files
}

#[test]
fn a_run_writes_every_file_and_running_it_again_does_no_work_and_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("smoke"), dir.path().join("judge-cache"));
    let mut args = run_args(&out, 3, 12);
    args.push("--baseline".into());
    let started = Instant::now();
    let stdout = succeed(herd(&cache).args(&args).output().unwrap());
    eprintln!("first run: {:.1} s", started.elapsed().as_secs_f64());
    assert!(stdout.contains("generated 6 answers (0 already stored)"), "{stdout}");
    assert!(
        stdout.contains("judged 6 verdicts (0 from the judge cache, 0 already stored)"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("report: {}", out.join("report.html").display())), "{stdout}");

    let files = run_files(&out);
    for generator in [GENERATOR, BASELINE] {
        for name in ["model_outputs.json", "annotations.json", "throughput.json", "errors.md"] {
            assert!(
                files.contains_key(&Path::new(generator).join(name)),
                "{generator}/{name} in {:?}",
                files.keys()
            );
        }
    }
    assert!(
        files.contains_key(Path::new("leaderboard.csv"))
            && files.contains_key(Path::new("report.html"))
            && files.contains_key(Path::new("summary.md"))
    );
    // The fine-tune against its baseline, paired, and the warning that 3 rows are few.
    assert!(
        stdout.contains(&format!("  {GENERATOR} − {BASELINE}: win rate "))
            || stdout.contains(&format!("  {BASELINE} − {GENERATOR}: win rate ")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("caveat: {GENERATOR}: small sample: ")), "{stdout}");
    let summary = String::from_utf8(files[Path::new("summary.md")].clone()).unwrap();
    // Markdown-escaped, as summary.md writes names.
    let escaped = BASELINE.replace('_', "\\_");
    assert!(summary.contains(&format!("| {escaped} (baseline) ⚠ ")), "{summary}");
    assert!(summary.contains("## Paired differences"), "{summary}");

    let eval_set = EvalSet::embedded();
    for generator in [GENERATOR, BASELINE] {
        let folder = out.join(generator);
        let outputs = read_model_outputs(folder.join("model_outputs.json")).unwrap();
        let warnings =
            validate_model_outputs(&folder.join("model_outputs.json"), &outputs, &eval_set)
                .unwrap();
        assert!(warnings
            .iter()
            .all(|w| w.to_string().contains("have no row") || w.to_string().contains("empty")));
        assert_eq!(outputs.len(), 3);
        for (index, row) in outputs.iter().enumerate() {
            assert_eq!(row.instruction, eval_set.rows()[index].instruction, "eval-set order");
            assert_eq!(row.generator, generator);
            assert!(row.extra["output_tokens"].as_u64().unwrap() <= 12);
        }

        let annotations = read_annotations(folder.join("annotations.json")).unwrap();
        assert_eq!(annotations.len(), 3);
        for ((index, a), output) in annotations.iter().enumerate().zip(&outputs) {
            let reference = &eval_set.rows()[index];
            assert_eq!(
                (a.output_1.as_str(), a.generator_1.as_str()),
                (reference.output.as_str(), REFERENCE_GENERATOR)
            );
            assert_eq!(
                (a.output_2.as_str(), a.generator_2.as_str()),
                (output.output.as_str(), generator)
            );
            let switched = SwapDecision::for_instruction(&a.instruction).is_switched();
            assert_eq!(a.extra["is_switched_outputs"], switched, "row {index}");
            assert_eq!(a.extra["judge_mode"], "logprob");
            let p = a.preference.expect("logprob verdicts are never unparsed");
            assert!((1.0..=2.0).contains(&p), "{p}");
            assert!(a.time_per_example.is_none(), "no timings in annotations.json");
        }
        // The leaderboard holds alpaca_eval's metrics of these annotations.
        let metrics = compute_metrics(&annotations, &MetricsOptions::default()).unwrap().metrics;
        let leaderboard = read_leaderboard(out.join("leaderboard.csv")).unwrap();
        let row = leaderboard.iter().find(|r| r.generator == generator).unwrap();
        assert_eq!((row.win_rate, row.n_total), (metrics.win_rate, 3));
        assert_eq!(row.length_controlled_winrate, metrics.length_controlled_winrate);

        let throughput: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("throughput.json")).unwrap())
                .unwrap();
        assert_eq!(throughput["examples"], 3);
        assert!(throughput["examples_per_second"].as_f64().unwrap() > 0.0, "{throughput}");
        assert!(throughput["phases"]["generation_seconds"].as_f64().unwrap() > 0.0, "{throughput}");
        assert!(throughput["phases"]["judging_seconds"].as_f64().unwrap() > 0.0, "{throughput}");
        assert_eq!(throughput["phases"]["verdicts"], 3);
    }
    let errors =
        String::from_utf8_lossy(&files[&Path::new(GENERATOR).join("errors.md")]).into_owned();
    assert!(errors.contains(GENERATOR) || errors.contains("dispreferred"), "{errors}");

    // The same command again: everything is in the store, nothing is generated or judged,
    // and every file comes out byte for byte the same.
    let started = Instant::now();
    let again = succeed(herd(&cache).args(&args).output().unwrap());
    eprintln!("second run: {:.1} s", started.elapsed().as_secs_f64());
    assert!(again.contains("generated 0 answers (6 already stored)"), "{again}");
    assert!(
        again.contains("judged 0 verdicts (0 from the judge cache, 6 already stored)"),
        "{again}"
    );
    assert_eq!(run_files(&out), files, "a second run rewrites the same bytes");
}

#[test]
fn a_killed_run_resumes_and_does_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("resumed"), dir.path().join("judge-cache"));
    let mut args = run_args(&out, 3, 40);
    args.extend(["--batch-size".to_string(), "1".to_string()]);
    let outputs = out.join("store/runs/resumed/outputs").join(GENERATOR);

    let mut child =
        herd(&cache).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let landed = loop {
        let n = std::fs::read_dir(&outputs).map(|d| d.count()).unwrap_or(0);
        if n >= 1 {
            break n;
        }
        assert!(child.try_wait().unwrap().is_none(), "herd ended before it was killed");
        assert!(Instant::now() < deadline, "no answer landed");
        std::thread::sleep(Duration::from_millis(25));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let landed = landed.max(std::fs::read_dir(&outputs).unwrap().count());
    assert!(landed < 3, "killed after the first answer, before the last");
    assert!(
        !out.join(GENERATOR).join("annotations.json").exists(),
        "the run folder is written only at the end"
    );

    let stdout = succeed(herd(&cache).args(&args).output().unwrap());
    assert!(
        stdout.contains(&format!("generated {} answers ({landed} already stored)", 3 - landed)),
        "{stdout}"
    );
    assert!(stdout.contains("judged 3 verdicts"), "{stdout}");
    let rows = read_model_outputs(out.join(GENERATOR).join("model_outputs.json")).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(read_annotations(out.join(GENERATOR).join("annotations.json")).unwrap().len(), 3);
}

#[test]
fn a_generator_model_the_judge_does_not_use_is_released_before_judging() {
    // The default GGUF under a second path: herd loads it as a model of its own.
    let default = herd_runtime::model_files::resolve(herd_runtime::DEFAULT_MODEL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alias = dir.path().join("alias.gguf");
    std::os::unix::fs::symlink(&default, &alias).unwrap();
    let generator = format!("name=alias,model={}", alias.display());
    let run = |name: &str, extra: &[&str]| {
        let (out, cache) = (dir.path().join(name), dir.path().join(format!("{name}-cache")));
        let mut args = run_args(&out, 2, 10);
        args.extend(["--generator".to_string(), generator.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let output = herd(&cache).env("HERD_LOG", "info").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        succeed(output);
        (read_model_outputs(out.join("alias").join("model_outputs.json")).unwrap(), stderr)
    };
    // Phases in turn: the alias is released once its answers are in, before the judge loads.
    let (in_turn, log) = run("in-turn", &[]);
    let released =
        log.find("model released").unwrap_or_else(|| panic!("no release logged:\n{log}"));
    assert!(log[released..].contains(&alias.display().to_string()), "{log}");
    // With --pipeline both stay loaded (they split a GPU's memory instead).
    let (pipelined, log) = run("pipelined", &["--pipeline"]);
    assert!(!log.contains("model released"), "{log}");
    // Same weights, same greedy answers, whichever way the phases ran.
    let answers = |rows: &[herd_core::formats::ModelOutput]| {
        rows.iter().map(|r| r.output.clone()).collect::<Vec<_>>()
    };
    assert_eq!(answers(&in_turn), answers(&pipelined));
    assert_eq!(in_turn.len(), 2);
}

/// Answers stored so far in a run folder's store.
fn stored_answers(out: &Path) -> usize {
    let run = out.file_name().unwrap();
    let dir = out.join("store/runs").join(run).join("outputs").join(GENERATOR);
    std::fs::read_dir(dir).map(|entries| entries.count()).unwrap_or(0)
}

#[test]
fn sigterm_stops_a_run_cleanly_and_the_same_command_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("stopped"), dir.path().join("judge-cache"));
    let mut args = run_args(&out, 8, 40);
    args.extend(["--batch-size", "2", "--no-judge-cache"].map(String::from));
    let mut child = herd(&cache)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herd run");
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored_answers(&out) == 0 {
        assert!(Instant::now() < deadline, "no answer stored in 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "herd run ended before it was stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "exit status after SIGTERM; stderr:\n{stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(sent.elapsed() < Duration::from_secs(120), "took {:?} to stop", sent.elapsed());
    let kept = stored_answers(&out);
    assert!((1..8).contains(&kept), "{kept} answers kept of 8: the stop did not land mid-run");
    assert!(!out.join("leaderboard.csv").exists(), "an unfinished run wrote its leaderboard");

    let stdout = succeed(herd(&cache).args(&args).output().unwrap());
    assert!(stdout.contains(&format!("({kept} already stored)")), "{stdout}");
    assert_eq!(stored_answers(&out), 8);
    assert_eq!(
        read_model_outputs(out.join(GENERATOR).join("model_outputs.json")).unwrap().len(),
        8
    );
}

#[test]
fn a_run_folder_refuses_another_run_unless_forced_and_follows_a_new_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("mine"), dir.path().join("judge-cache"));
    succeed(herd(&cache).args(run_args(&out, 2, 4)).output().unwrap());
    let leaderboard = std::fs::read(out.join("leaderboard.csv")).unwrap();

    let mut other = run_args(&out, 2, 4);
    other.extend(["--run-id", "someone-else"].map(String::from));
    let refused = herd(&cache).args(&other).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "another run id wrote over the folder: {stderr}");
    assert!(stderr.contains("holds run mine") && stderr.contains("--force"), "{stderr}");
    let mut baseline = run_args(&out, 2, 4);
    baseline.push("--baseline".into());
    let refused = herd(&cache).args(&baseline).output().unwrap();
    assert!(!refused.status.success(), "other generators wrote over the folder");
    assert_eq!(std::fs::read(out.join("leaderboard.csv")).unwrap(), leaderboard);

    let resized = herd(&cache).args(run_args(&out, 3, 4)).output().unwrap();
    let stderr = String::from_utf8_lossy(&resized.stderr).into_owned();
    succeed(resized);
    assert!(stderr.contains("now covers 3 instructions (it covered 2)"), "{stderr}");

    other.push("--force".into());
    let forced = herd(&cache).args(&other).output().unwrap();
    let stderr = String::from_utf8_lossy(&forced.stderr).into_owned();
    succeed(forced);
    assert!(stderr.contains("--force") && stderr.contains("held run mine"), "{stderr}");
    let store = out.join("store/runs");
    assert!(store.join("mine").is_dir() && store.join("someone-else").is_dir());
}

/// Verdicts stored so far in a run folder's store, by `judge`, on `GENERATOR`'s answers.
fn stored_verdicts(out: &Path, judge: &str) -> usize {
    let run = out.file_name().unwrap();
    let dir = out.join("store/runs").join(run).join("annotations").join(judge).join(GENERATOR);
    std::fs::read_dir(dir).map(|entries| entries.count()).unwrap_or(0)
}

/// Starts `herd run` and SIGKILLs it once `landed` says something was stored (and before
/// the run ends); returns what `landed` said then and the seconds the process lived.
fn kill_once(command: &mut Command, landed: impl Fn() -> usize) -> (usize, f64) {
    let started = Instant::now();
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = started + Duration::from_secs(300);
    let count = loop {
        let n = landed();
        if n >= 1 {
            break n;
        }
        assert!(child.try_wait().unwrap().is_none(), "herd ended before it was killed");
        assert!(Instant::now() < deadline, "nothing landed in 5 minutes");
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap(); // SIGKILL: nothing is flushed on the way out
    child.wait().unwrap();
    (count.max(landed()), started.elapsed().as_secs_f64())
}

fn throughput_of(out: &Path) -> serde_json::Value {
    let path = out.join(GENERATOR).join("throughput.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn throughput_counts_the_stored_work_after_kills_a_smaller_limit_and_a_second_judge() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("counted"), dir.path().join("judge-cache"));
    let logprob = "smollm2-135m-instruct_logprob";
    let args = run_args(&out, 3, 24);
    let mut wall = 0.0;

    // Killed while generating (one answer a batch, so that some land before the kill)...
    let mut one_by_one = args.clone();
    one_by_one.extend(["--batch-size", "1"].map(String::from));
    let (answers, seconds) = kill_once(herd(&cache).args(&one_by_one), || stored_answers(&out));
    wall += seconds;
    assert!(answers < 3, "killed after the first answer, before the last");
    // ... then while judging (one batch: the verdicts it stored are all of the killed batch).
    let (verdicts, seconds) =
        kill_once(herd(&cache).args(&args), || stored_verdicts(&out, logprob));
    wall += seconds;
    assert_eq!(stored_answers(&out), 3);
    assert!(verdicts < 3, "killed after the first verdict, before the last");
    // ... then to the end.
    let started = Instant::now();
    succeed(herd(&cache).args(&args).output().unwrap());
    wall += started.elapsed().as_secs_f64();

    let full = throughput_of(&out);
    let seconds = |t: &serde_json::Value, phase: &str| t["phases"][phase].as_f64().unwrap();
    assert_eq!(full["examples"], 3, "{full}");
    assert_eq!(full["phases"]["verdicts"], 3, "{full}");
    for phase in ["generation_seconds", "judging_seconds"] {
        let s = seconds(&full, phase);
        assert!(s > 0.0 && s <= wall, "{phase} {s} of {wall} s in all: {full}");
    }
    assert_eq!(full["wall_seconds"], full["phases"]["generation_seconds"]);
    assert_eq!(full["judges"][logprob]["verdicts"], 3, "{full}");
    assert_eq!(full["judges"][logprob]["judging_seconds"], full["phases"]["judging_seconds"]);

    // A smaller --limit: only the answers and verdicts of its two instructions count.
    let started = Instant::now();
    succeed(herd(&cache).args(run_args(&out, 2, 24)).output().unwrap());
    let small_wall = wall + started.elapsed().as_secs_f64();
    let small = throughput_of(&out);
    assert_eq!((&small["examples"], &small["phases"]["verdicts"]), (&2.into(), &2.into()));
    assert!(
        seconds(&small, "generation_seconds") < seconds(&full, "generation_seconds"),
        "the third answer's time counted: {small} vs {full}"
    );
    assert!(seconds(&small, "judging_seconds") <= seconds(&full, "judging_seconds"));
    assert!(seconds(&small, "generation_seconds") <= small_wall);

    // The same run judged again in ranking mode (another judge, so --force): the phases are
    // the new judge's, and each judge's figures stand apart under `judges`.
    let mut ranking = args.clone();
    ranking.extend(["--judge-mode", "ranking", "--force"].map(String::from));
    succeed(herd(&cache).args(&ranking).output().unwrap());
    let twice = throughput_of(&out);
    assert_eq!(twice["examples"], 3);
    assert_eq!(twice["wall_seconds"], full["wall_seconds"]);
    assert_eq!(twice["phases"]["verdicts"], 3, "{twice}");
    let judges = twice["judges"].as_object().unwrap();
    assert_eq!(judges.len(), 2, "{twice}");
    assert_eq!(judges[logprob], full["judges"][logprob], "the first judge's figures unchanged");
    let ranked = &judges["smollm2-135m-instruct_ranking"];
    assert_eq!(ranked["verdicts"], 3, "{twice}");
    assert_eq!(ranked["judging_seconds"], twice["phases"]["judging_seconds"]);
}

#[test]
fn a_judge_that_cannot_load_is_refused_before_any_answer_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("nojudge"), dir.path().join("judge-cache"));
    let missing = dir.path().join("judge.gguf");
    let mut args = run_args(&out, 2, 4);
    args.extend(["--judge-model".into(), missing.to_string_lossy().into_owned()]);
    let output = herd(&cache).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a run with a missing judge model succeeded");
    assert!(stderr.contains("judge.gguf") && stderr.contains("cannot be loaded"), "{stderr}");
    assert_eq!(stored_answers(&out), 0, "answers were generated before the judge was checked");
}

#[test]
fn a_subset_by_dataset_and_position_is_what_the_run_covers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("subset");
    let output = herd(&dir.path().join("cache"))
        .args(["run", "--dataset", "koala", "--instructions", "0-400", "--limit", "3"])
        .args(["--max-new-tokens", "4", "--judge-model", "bench-noop", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows = read_model_outputs(out.join(GENERATOR).join("model_outputs.json")).unwrap();
    let eval_set = EvalSet::embedded();
    let expected: Vec<&str> = eval_set
        .rows()
        .iter()
        .take(401)
        .filter(|r| r.dataset == "koala")
        .take(3)
        .map(|r| r.instruction.as_str())
        .collect();
    let got: Vec<&str> = rows.iter().map(|r| r.instruction.as_str()).collect();
    assert_eq!(got, expected);
}
