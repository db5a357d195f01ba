use std::path::{Path, PathBuf};

use herd_core::error_analysis::is_dispreferred;
use herd_core::formats::leaderboard::COLUMNS;
use herd_core::formats::{read_annotations, read_leaderboard, write_annotations};
use herd_core::throughput::{write_throughput, GeneratorThroughput, PhaseTimes, RunThroughput};

use super::*;

fn oracle(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/oracle/results")
        .join(model)
        .join("weighted_alpaca_eval_gpt4_turbo/annotations.json.gz")
}

fn fast_options() -> ReportOptions {
    ReportOptions { error_samples: 3, seed: 11, ..ReportOptions::default() }
}

#[test]
fn report_over_two_oracle_files_ranks_both_and_writes_every_file() {
    let report =
        build_report(&[oracle("alpaca-7b"), oracle("claude-2.1")], &fast_options()).unwrap();
    // alpaca_eval's order: higher length-controlled win rate first.
    let names: Vec<&str> = report.generators.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["claude-2.1", "alpaca-7b"]);

    let html = report.html();
    for name in names {
        assert!(
            html.contains(&format!("<td class=\"name\" title=\"{}", oracle(name).display())),
            "{name} row"
        );
    }
    assert!(html.contains("<svg"));
    // One script: the page's own row filters, allowed by hash and by nothing else.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains(&format!("<script>{}</script>", crate::rows::SCRIPT)));
    assert!(html.contains(&format!("script-src '{}'", crate::rows::script_hash())));
    assert_eq!(html.matches("<details class=\"row ").count(), 2 * 805);
    for external in ["<link", "<img", "<iframe", "<object", "<embed"] {
        assert!(!html.contains(external), "no external assets: found {external}");
    }
    let style = &html[html.find("<style>").unwrap()..html.find("</style>").unwrap()];
    assert!(!style.contains("@import") && !style.contains("url("), "no external assets in CSS");

    for g in &report.generators {
        assert_eq!(g.errors.rows.len(), 3);
        assert!(g.errors.rows.iter().all(|&row| is_dispreferred(g.annotations[row].preference)));
        assert_eq!(g.datasets.iter().map(|d| d.n_total).sum::<u64>(), g.metrics.metrics.n_total);
    }

    let dir = tempfile::tempdir().unwrap();
    let written = report.files().write_to(dir.path()).unwrap();
    for expected in
        ["leaderboard.csv", "report.html", "claude-2.1/errors.md", "alpaca-7b/errors.md"]
    {
        assert!(written.contains(&dir.path().join(expected)), "{expected} in {written:?}");
    }
    let csv = std::fs::read_to_string(dir.path().join("leaderboard.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), format!(",{}", COLUMNS.join(",")));
    let rows = read_leaderboard(dir.path().join("leaderboard.csv")).unwrap();
    assert_eq!(rows, report.leaderboard);
    assert_eq!(
        (rows[0].generator.as_str(), rows[0].n_total, rows[0].mode.as_str()),
        ("claude-2.1", 805, "community")
    );
}

#[test]
fn model_text_and_names_are_html_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = read_annotations(oracle("falcon-7b-instruct")).unwrap();
    for row in &mut rows {
        row.generator_2 = "evil<b>\"model\"".into();
        row.preference = Some(1.0);
    }
    rows[0].output_2 = "<script>alert('x')</script> & <img src=x onerror=1>".into();
    rows[0].raw_completion = Some(serde_json::Value::String("</pre><h1>judge</h1>".into()));
    let run = dir.path().join("run");
    let generator_dir = run.join("evil");
    std::fs::create_dir_all(&generator_dir).unwrap();
    write_annotations(generator_dir.join("annotations.json"), &rows).unwrap();

    // Every row is dispreferred and 805 are asked for: row 0 is certainly shown.
    let options = ReportOptions { error_samples: 805, ..fast_options() };
    let report = build_report(&[generator_dir.join("annotations.json")], &options).unwrap();
    let html = report.html();
    assert!(!html.contains("<script>alert"), "raw script tag in the page");
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("</pre><h1>judge"));
    assert!(html.contains(
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;img src=x onerror=1&gt;"
    ));
    assert!(html.contains("&lt;/pre&gt;&lt;h1&gt;judge&lt;/h1&gt;"));
    assert!(html.contains("evil&lt;b&gt;&quot;model&quot;"));
    assert!(!html.contains("evil<b>"));
    // A file's generator names its errors.md folder, made safe.
    let files = report.files();
    assert!(
        files.files.iter().any(|(path, _)| path == Path::new("evil_b__model_/errors.md")),
        "{:?}",
        files.files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[test]
fn a_run_folder_with_throughput_shows_speed_and_keeps_generators_apart() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // NullModel's rows say generator_2 = "example": in a run, the folder names the generator.
    for model in ["gemma-7b-it", "vicuna-13b", "NullModel"] {
        let folder = run.join(model);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(oracle(model), folder.join("annotations.json.gz")).unwrap();
    }
    let throughput = GeneratorThroughput {
        generator: "vicuna-13b".into(),
        examples: 805,
        prompt_tokens: 60_000,
        output_tokens: 250_000,
        wall_seconds: 1234.5,
        examples_per_second: 0.652,
        output_tokens_per_second: 202.5,
        mean_seconds_per_example: 9.5,
        stopped_at_max_tokens: 12,
        workers: 2,
        timeline: herd_core::throughput::Timeline {
            generation: vec![[0.0, 0.0], [600.0, 400.0], [1234.5, 805.0]],
            judging: vec![[0.0, 0.0], [300.0, 805.0]],
        },
    };
    let phases = PhaseTimes {
        generation_seconds: 1234.5,
        judging_seconds: 300.0,
        verdicts: 805,
        verdicts_from_cache: 0,
        judge_prompt_tokens: 1_500_000,
    };
    let file = RunThroughput { generation: throughput.clone(), phases, judges: Default::default() };
    write_throughput(run.join("vicuna-13b/throughput.json"), &file).unwrap();
    let report = build_report(&[run], &fast_options()).unwrap();
    let names: Vec<&str> = report.generators.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["NullModel", "gemma-7b-it", "vicuna-13b"]);
    let paths: Vec<PathBuf> = report.generators.iter().map(GeneratorReport::errors_path).collect();
    assert_eq!(
        paths,
        ["NullModel/errors.md", "gemma-7b-it/errors.md", "vicuna-13b/errors.md"].map(PathBuf::from)
    );
    let vicuna = &report.generators[2];
    assert_eq!(vicuna.throughput.as_ref(), Some(&throughput));
    let html = report.html();
    assert!(html.contains("<td>0.65</td><td>202.5</td><td>20 min 35 s</td>"), "throughput cells");
    assert!(html.contains("<th>examples/s</th>"));
    assert!(html.contains("<section class=\"timeline\">"), "the progress chart");
    assert!(html.contains("<polyline points=\"60.0,198.0"), "starts at 0 answers at 0 s");
}

#[test]
fn the_same_generator_twice_gets_distinct_names() {
    let report = build_report(&[oracle("phi-2"), oracle("phi-2")], &fast_options()).unwrap();
    let names: Vec<&str> = report.generators.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["phi-2", "phi-2 (2)"]);
    // phi-2 lacks two eval-set instructions: the report says so.
    assert!(report.html().contains("2 of the 805 eval-set instructions have no row"));
}

#[test]
fn no_inputs_or_an_empty_folder_is_an_error() {
    assert!(matches!(build_report(&[], &fast_options()), Err(ReportError::NoInputs)));
    let dir = tempfile::tempdir().unwrap();
    let err = build_report(&[dir.path().to_path_buf()], &fast_options()).unwrap_err();
    assert!(err.to_string().contains("no annotations.json"), "{err}");
}

#[test]
fn paired_differences_equal_the_difference_of_the_rates_on_the_same_instructions() {
    let options = ReportOptions { baseline: Some("alpaca-7b".into()), ..fast_options() };
    let report = build_report(
        &[oracle("alpaca-7b"), oracle("claude-2.1"), oracle("gpt-3.5-turbo-1106")],
        &options,
    )
    .unwrap();
    assert_eq!(report.baseline.as_deref(), Some("alpaca-7b"));
    // Each other generator against the baseline, the baseline second.
    let pairs: Vec<(&str, &str)> =
        report.paired.iter().map(|p| (p.a.as_str(), p.b.as_str())).collect();
    assert_eq!(pairs, [("claude-2.1", "alpaca-7b"), ("gpt-3.5-turbo-1106", "alpaca-7b")]);
    let metrics = |name: &str| {
        report.generators.iter().find(|g| g.name == name).unwrap().metrics.metrics.clone()
    };
    for p in &report.paired {
        let (a, b) = (metrics(&p.a), metrics(&p.b));
        // Every row of these files is judged: the paired difference is the difference
        // of the two win rates, and of the two LC win rates.
        let win = p.win_rate.as_ref().unwrap();
        assert_eq!(win.n, 805);
        assert!((win.difference - (a.win_rate - b.win_rate)).abs() < 1e-9, "{p:?}");
        let lc = p.length_controlled.as_ref().unwrap();
        let lc_gap = a.length_controlled_winrate.unwrap() - b.length_controlled_winrate.unwrap();
        assert!((lc.difference - lc_gap).abs() < 1e-9, "{p:?}");
        // Both are far better than alpaca-7b: intervals above 0, around the difference.
        assert!(win.low > 0.0 && win.low < win.difference && win.difference < win.high);
        assert!(lc.excludes_zero());
        assert_eq!(p.a_better + p.b_better + p.same, 805);
        assert!(p.a_better > p.b_better);
        assert_eq!(p.largest_disagreements.len(), 5);
    }
    // Without a baseline: every two, the higher-ranked first.
    let every =
        build_report(&[oracle("alpaca-7b"), oracle("claude-2.1")], &fast_options()).unwrap();
    assert_eq!(every.paired.len(), 1);
    assert_eq!(
        (every.paired[0].a.as_str(), every.paired[0].b.as_str()),
        ("claude-2.1", "alpaca-7b")
    );
}

#[test]
fn summary_md_carries_the_figures_the_paired_difference_and_links_to_each_example() {
    let options = ReportOptions { baseline: Some("alpaca-7b".into()), ..fast_options() };
    let report = build_report(&[oracle("alpaca-7b"), oracle("claude-2.1")], &options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    report.files().write_to(dir.path()).unwrap();
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("Annotator: `weighted_alpaca_eval_gpt4_turbo`"), "{summary}");
    assert!(summary.contains("| alpaca-7b (baseline) |"), "{summary}");
    let claude = &report.leaderboard[0];
    assert!(summary.contains(&format!("| claude-2.1 | — | — | {} |", win_rate_cell(claude))));
    let pair = &report.paired[0];
    assert!(summary.contains(&format!(
        "| claude-2.1 − alpaca-7b | {} | {} | 805 |",
        paired_cell(pair.win_rate.as_ref()),
        paired_cell(pair.length_controlled.as_ref())
    )));
    // Every sampled example is linked to an anchor that errors.md has.
    for g in &report.generators {
        let errors = std::fs::read_to_string(dir.path().join(g.errors_path())).unwrap();
        for &row in &g.errors.rows {
            let anchor = herd_core::error_analysis::example_anchor(row);
            assert!(errors.contains(&format!("<a id=\"{anchor}\"></a>")));
            assert!(summary.contains(&format!("({}/errors.md#{anchor})", g.name)), "{summary}");
        }
    }
    // Full files: no small-sample caveat.
    assert!(!summary.contains("small sample"));
    // The oracle's annotator was paid per verdict: the judge's cost is their sum.
    let prices: Vec<f64> = report
        .generators
        .iter()
        .flat_map(|g| &g.annotations)
        .filter_map(|a| a.price_per_example)
        .collect();
    let total: f64 = prices.iter().sum();
    assert!(total > 1.0 && prices.len() > 1500, "two oracle files with prices: {total}");
    let line = format!("Judge cost: ${total:.2} for {} verdicts", prices.len());
    assert!(summary.contains(&line), "{summary}");
}

#[test]
fn a_small_sample_and_empty_answers_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = read_annotations(oracle("alpaca-7b")).unwrap();
    rows.truncate(20);
    for row in rows.iter_mut().take(12) {
        row.output_2 = String::new();
    }
    rows[0].preference = Some(2.0); // an empty answer the judge preferred
    rows[19].preference = None;
    let path = dir.path().join("annotations.json");
    write_annotations(&path, &rows).unwrap();
    let report = build_report(&[path], &fast_options()).unwrap();
    let caveats = &report.generators[0].caveats;
    assert!(caveats[0].starts_with("mostly empty answers: 12 of 20"), "{caveats:?}");
    assert!(caveats[1].starts_with("small sample: 19 judged instructions"), "{caveats:?}");
    assert!(caveats
        .iter()
        .any(|c| c.contains("preferred an empty answer to the reference 1 time")));
    assert!(caveats.iter().any(|c| c.starts_with("1 of 20 verdicts could not be parsed")));
    let html = report.html();
    assert!(html.contains("small sample: 19 judged instructions"));
    assert!(html.contains("⚠ mostly empty answers</span>"), "next to the name in the leaderboard");
    assert!(report.summary_markdown().contains(" ⚠ mostly empty answers |"));
    assert!(report.summary_markdown().contains("small sample: 19 judged instructions"));
    let bias = &report.generators[0].bias;
    assert_eq!((bias.empty_answers, bias.empty_answers_won, bias.n_unparsed), (12, 1, 1));
}

#[test]
fn a_model_judged_by_the_official_annotator_is_placed_on_the_official_leaderboard() {
    use crate::standing::{official_rows, placement, Placement};
    let report = build_report(&[oracle("gemma-7b-it")], &fast_options()).unwrap();
    let g = &report.generators[0];
    let Placement::Placed(s) = placement(g) else { panic!("not placed: {:?}", placement(g)) };
    let lc = g.metrics.metrics.length_controlled_winrate.unwrap();
    assert_eq!(s.lc, lc);
    // Its own official row is left out; the rank counts the others above it.
    let others: Vec<_> = official_rows().iter().filter(|r| r.generator != "gemma-7b-it").collect();
    assert_eq!(s.of, others.len());
    let above = others.iter().filter(|r| r.metrics.length_controlled_winrate.unwrap() > lc).count();
    assert_eq!(s.rank, above + 1);
    assert!(s.above.iter().all(|(_, r)| r.metrics.length_controlled_winrate.unwrap() > lc));
    assert!(s.below.iter().all(|(_, r)| r.metrics.length_controlled_winrate.unwrap() <= lc));
    assert_eq!((s.above.len(), s.below.len()), (3, 3));
    let summary = report.summary_markdown();
    assert!(
        summary.contains(&format!("- `gemma-7b-it`: LC win rate {lc:.2}: rank {} of", s.rank)),
        "{summary}"
    );
    assert!(report.html().contains("<h2>Where it stands</h2>"));
}

#[test]
fn a_model_judged_by_another_annotator_is_not_placed() {
    use crate::standing::{placement, Placement};
    let dir = tempfile::tempdir().unwrap();
    let mut rows = read_annotations(oracle("gemma-7b-it")).unwrap();
    for row in &mut rows {
        row.annotator = "smollm2_logprob".into();
    }
    let path = dir.path().join("annotations.json");
    write_annotations(&path, &rows).unwrap();
    let report = build_report(&[path], &fast_options()).unwrap();
    assert_eq!(
        placement(&report.generators[0]),
        Placement::OtherJudge("smollm2_logprob".into(), "gpt4_1106_preview".into())
    );
    assert!(report.html().contains("not placed on the AlpacaEval 2.0 leaderboard"));
    assert!(report.summary_markdown().contains("not the official annotator: not placed"));
}

#[test]
fn alpaca_evals_results_layout_names_generators_by_model_not_annotator() {
    let results =
        oracle("alpaca-7b").parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    // A model's folder: results/<model>/<annotator>/annotations.json.gz.
    let one = build_report(&[results.join("alpaca-7b")], &fast_options()).unwrap();
    assert_eq!(one.generators[0].name, "alpaca-7b");
    assert_eq!(one.generators[0].errors_path(), Path::new("alpaca-7b/errors.md"));
    // The whole results folder: every model, each by its name.
    let all = build_report(&[results], &fast_options()).unwrap();
    assert_eq!(all.generators.len(), 12);
    let names: Vec<&str> = all.generators.iter().map(|g| g.name.as_str()).collect();
    for model in ["alpaca-7b", "claude-2.1", "phi-2", "vicuna-13b"] {
        assert!(names.contains(&model), "{model} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("weighted_alpaca_eval_gpt4_turbo")), "{names:?}");
}
