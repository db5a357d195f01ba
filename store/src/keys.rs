//! Where results live in the store. A result's key depends only on what it is, so a job
//! that runs twice writes the same key twice (and the second write changes nothing).

/// `runs/<run>/outputs/<generator>/<index>.json`: one generated answer.
pub fn output(run: &str, generator: &str, index: usize) -> String {
    format!("{}{index}.json", outputs_prefix(run, generator))
}

/// `runs/<run>/annotations/<judge>/<generator>/<index>.json`: one verdict.
pub fn annotation(run: &str, judge: &str, generator: &str, index: usize) -> String {
    format!("{}{index}.json", annotations_prefix(run, judge, generator))
}

/// The folder of a generator's outputs, ending in `/`.
pub fn outputs_prefix(run: &str, generator: &str) -> String {
    format!("runs/{}/outputs/{}/", segment(run), segment(generator))
}

/// The folder of one judge's verdicts on one generator, ending in `/`.
pub fn annotations_prefix(run: &str, judge: &str, generator: &str) -> String {
    format!("runs/{}/annotations/{}/{}/", segment(run), segment(judge), segment(generator))
}

/// The folder of every judge's verdicts in a run, ending in `/`.
pub fn annotations_root(run: &str) -> String {
    format!("runs/{}/annotations/", segment(run))
}

/// `runs/<run>/activity/<phase>/<worker>.json`: what one worker process did in one phase
/// (`herd_core::jobs::WorkerActivity`), rewritten as it goes; the coordinator turns these
/// into wall times.
pub fn activity(run: &str, phase: &str, worker: &str) -> String {
    format!("{}{}.json", activity_prefix(run, phase), segment(worker))
}

/// The folder of one phase's worker activity records, ending in `/`.
pub fn activity_prefix(run: &str, phase: &str) -> String {
    format!("runs/{}/activity/{}/", segment(run), segment(phase))
}

/// `runs/<run>/plan/<name>.json`: what the run was started with (a generator's or the
/// judge's settings), so a resumed run can refuse settings that differ.
pub fn plan(run: &str, name: &str) -> String {
    format!("runs/{}/plan/{}.json", segment(run), segment(name))
}

/// The folder of a run's plan documents, ending in `/`.
pub fn plan_prefix(run: &str) -> String {
    format!("runs/{}/plan/", segment(run))
}

/// `runs/<run>/report/`: the run folder the coordinator writes when the run is complete
/// (`leaderboard.csv`, `report.html`, `<generator>/model_outputs.json`, …), ending in `/`.
pub fn report_prefix(run: &str) -> String {
    format!("runs/{}/report/", segment(run))
}

/// `runs/<run>/report/<file>`: one file of the run folder; `file` is its path inside the
/// folder with `/` between parts, each part kept inside its folder.
pub fn report_file(run: &str, file: &str) -> String {
    let parts: Vec<String> = file.split('/').filter(|p| !p.is_empty()).map(segment).collect();
    format!("{}{}", report_prefix(run), parts.join("/"))
}

/// `runs/<run>/rejected/<kind>/…/<index>.<stamp>.json`: where the coordinator moves a stored
/// result that does not match the run's plan (`key`, one of this run's [`output`] or
/// [`annotation`] keys), so its key is free for the real result and the forged one stays
/// for inspection; `stamp` tells two rejections of one key apart.
pub fn rejected(run: &str, key: &str, stamp: u128) -> String {
    let run_prefix = format!("runs/{}/", segment(run));
    let rest = key.strip_prefix(&run_prefix).unwrap_or(key);
    let rest = rest.strip_suffix(".json").unwrap_or(rest);
    format!("{run_prefix}rejected/{rest}.{stamp}.json")
}

/// `cache/judgements/<hash>.json`: a verdict by content hash, shared by every run and
/// worker that uses the store (outside `runs/`).
pub fn judge_cache(hash: &str) -> String {
    format!("cache/judgements/{}.json", segment(hash))
}

/// The eval-set index of a result key (`…/<index>.json`).
pub fn index_of(key: &str) -> Option<usize> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// A name as one path segment: `/` and anything unusual become `_`, so a model called
/// `org/model` cannot reach into another folder.
pub fn segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => cleaned.replace('.', "_") + "_",
        _ => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_follow_the_documented_layout() {
        assert_eq!(output("r1", "smol", 7), "runs/r1/outputs/smol/7.json");
        assert_eq!(annotation("r1", "llama", "smol", 7), "runs/r1/annotations/llama/smol/7.json");
        assert_eq!(index_of(&output("r1", "smol", 804)), Some(804));
        assert!(annotation("r1", "llama", "smol", 7).starts_with(&annotations_root("r1")));
        assert_eq!(
            activity("r1", "generation", "host-1"),
            "runs/r1/activity/generation/host-1.json"
        );
        assert_eq!(plan("r1", "judge"), "runs/r1/plan/judge.json");
        assert_eq!(judge_cache("ab12"), "cache/judgements/ab12.json");
        assert_eq!(
            report_file("r1", "smol/model_outputs.json"),
            "runs/r1/report/smol/model_outputs.json"
        );
        assert_eq!(
            report_file("r1", "../x/leaderboard.csv"),
            "runs/r1/report/___/x/leaderboard.csv"
        );
    }

    #[test]
    fn names_cannot_escape_their_folder() {
        assert_eq!(output("r", "org/model", 1), "runs/r/outputs/org_model/1.json");
        assert_eq!(output("..", "m", 1), "runs/___/outputs/m/1.json");
        assert_eq!(segment(""), "_");
    }
}
