//! The self-contained HTML report: one file, inline CSS and SVG, one fixed inline script
//! (the row filters, [`crate::rows`]), no external asset, and a Content-Security-Policy
//! that allows nothing else. Text from files is escaped; answers in the rows section are
//! rendered from Markdown and sanitised.

use std::fmt::Write as _;

use herd_core::error_analysis::char_length;
use herd_core::formats::python_float_repr;

pub use crate::escape::escape;
use crate::svg::{length_scatter, win_rate_bars, ChartPoint};
use crate::{GeneratorReport, Report};

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px; padding: 24px 32px 64px; color: #1d1d1f; background: #fff; line-height: 1.45; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 8px; }
.subtitle { color: #555; margin: 0 0 8px; }
table { border-collapse: collapse; font-size: 13.5px; margin: 8px 0; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e6e6e6; text-align: right; white-space: nowrap; }
th { background: #f4f5f7; font-weight: 600; border-bottom: 2px solid #ccc; }
td.name, th.name { text-align: left; }
td.name { font-weight: 600; max-width: 260px; overflow: hidden; text-overflow: ellipsis; }
.se { color: #777; font-size: 12px; }
.warn { display: block; color: #9a5b00; font-size: 11.5px; font-weight: 600; }
.muted { color: #888; }
.note { color: #555; font-size: 13px; max-width: 900px; }
.chart { overflow-x: auto; margin: 4px 0 12px; }
ul.warnings { font-size: 13px; color: #7a4b00; margin: 4px 0 8px; }
details.generator { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; margin: 10px 0; }
details.generator > summary { font-weight: 600; cursor: pointer; font-size: 15px; padding: 4px 0; }
article.example { border-top: 1px solid #eee; padding: 10px 0 6px; }
article.example h4 { margin: 4px 0 6px; font-size: 14px; }
.meta { color: #666; font-weight: normal; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.label { font-size: 12px; font-weight: 600; color: #444; margin: 6px 0 2px; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f7f7f9; border: 1px solid #e4e4e8; border-radius: 4px; padding: 8px; margin: 0; font-size: 12.5px; max-height: 22em; overflow: auto; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre.instruction { background: #fffbea; border-color: #eee2b0; max-height: 12em; }
details.raw > summary { font-size: 12px; color: #444; cursor: pointer; margin-top: 6px; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px 16px; align-items: center; font-size: 13px; margin: 8px 0 12px; position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #eee; }
form.filters input[type=search] { width: 220px; }
details.row { border-top: 1px solid #eee; padding: 4px 0; }
details.row > summary { cursor: pointer; font-size: 13px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tag { display: inline-block; min-width: 64px; text-align: center; border-radius: 3px; font-size: 11.5px; font-weight: 600; padding: 1px 4px; }
.tag.lost { background: #fde2e1; color: #9b1c1c; } .tag.won { background: #def7e5; color: #1b6b35; }
.tag.tied { background: #eceff3; color: #444; } .tag.unparsed { background: #fff1d6; color: #7a4b00; }
.answer { background: #fafafa; border: 1px solid #e4e4e8; border-radius: 4px; padding: 4px 10px; font-size: 13px; max-height: 28em; overflow: auto; overflow-wrap: anywhere; }
.answer pre { max-height: none; }
"#;

/// The whole report page.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(256 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        page,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; \
         script-src '{}'; img-src data:; form-action 'none'; base-uri 'none'\">",
        crate::rows::script_hash()
    );
    page.push_str("<title>herd · AlpacaEval report</title>\n<style>");
    page.push_str(STYLE);
    page.push_str("</style>\n</head>\n<body>\n");
    header(&mut page, report);
    leaderboard_table(&mut page, report);
    charts(&mut page, report);
    dataset_table(&mut page, report);
    paired_table(&mut page, report);
    standing(&mut page, report);
    judge_table(&mut page, report);
    warnings(&mut page, report);
    error_samples(&mut page, report);
    crate::rows::section(&mut page, report);
    let _ = writeln!(page, "<script>{}</script>", crate::rows::SCRIPT);
    page.push_str("</body>\n</html>\n");
    page
}

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

fn header(page: &mut String, report: &Report) {
    let all = || report.generators.iter().flat_map(|g| g.annotations.first());
    let judges = distinct(all().map(|a| a.annotator.as_str()));
    let references = distinct(all().map(|a| a.generator_1.as_str()));
    let _ = write!(
        page,
        "<h1>AlpacaEval report</h1>\n<p class=\"subtitle\">{} generator{} · judge: {} · reference: {}</p>\n",
        report.generators.len(),
        if report.generators.len() == 1 { "" } else { "s" },
        escape(&judges.join(", ")),
        escape(&references.join(", ")),
    );
}

fn rate(value: Option<f64>) -> String {
    match value.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.2}"),
        None => "—".to_string(),
    }
}

fn rate_with_se(value: Option<f64>, se: Option<f64>) -> String {
    match (value.filter(|v| v.is_finite()), se.filter(|s| s.is_finite())) {
        (Some(v), Some(s)) => format!("{v:.2} <span class=\"se\">± {s:.2}</span>"),
        (Some(v), None) => format!("{v:.2}"),
        (None, _) => "—".to_string(),
    }
}

fn leaderboard_table(page: &mut String, report: &Report) {
    let with_throughput = report.generators.iter().any(|g| g.throughput.is_some());
    page.push_str(
        "<h2>Leaderboard</h2>\n<table class=\"leaderboard\">\n<thead><tr><th>#</th><th class=\"name\">generator</th>",
    );
    page.push_str("<th>LC win rate</th><th>win rate</th><th title=\"win rate of the preferences rounded to win, loss or draw\">discrete</th><th title=\"wins / losses / draws\">W / L / D</th><th>n</th><th>avg length</th>");
    if with_throughput {
        page.push_str("<th>examples/s</th><th>output tok/s</th><th>wall time</th>");
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for (rank, g) in report.generators.iter().enumerate() {
        let m = &g.metrics.metrics;
        let lc_title = g
            .metrics
            .diagnostics
            .length_controlled_unavailable
            .as_deref()
            .map(|why| format!(" title=\"{}\"", escape(why)))
            .unwrap_or_default();
        // The first caveat's label next to the name, all of them on hover (and in the
        // notes below).
        let warning = match g.caveats.first() {
            Some(first) => format!(
                " <span class=\"warn\" title=\"{}\">⚠ {}</span>",
                escape(&g.caveats.join("; ")),
                escape(first.split(':').next().unwrap_or(first))
            ),
            None => String::new(),
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"name\" title=\"{}\">{}{warning}</td><td{lc_title}>{}</td><td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td>",
            rank + 1,
            escape(&g.annotations_path.display().to_string()),
            escape(&g.name),
            rate_with_se(m.length_controlled_winrate, m.lc_standard_error),
            rate_with_se(Some(m.win_rate), Some(m.standard_error)),
            rate(Some(m.discrete_win_rate)),
            m.n_wins,
            m.n_wins_base,
            m.n_draws,
            m.n_total,
            m.avg_length,
        );
        if with_throughput {
            match &g.throughput {
                Some(t) => {
                    let _ = write!(
                        page,
                        "<td>{:.2}</td><td>{:.1}</td><td>{}</td>",
                        t.examples_per_second,
                        t.output_tokens_per_second,
                        duration(t.wall_seconds)
                    );
                }
                None => page.push_str("<td class=\"muted\">—</td><td class=\"muted\">—</td><td class=\"muted\">—</td>"),
            }
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n");
    page.push_str(
        "<p class=\"note\">Win rates in percent against the reference, ± one standard error, computed as alpaca_eval 0.6.6 computes them. \
         Rows are sorted by length-controlled (LC) win rate as alpaca_eval sorts its leaderboard. \
         Average length counts characters (Unicode code points) of the model's outputs.",
    );
    if !with_throughput {
        page.push_str(
            " No throughput.json was found for these inputs, so generation speed is not shown.",
        );
    }
    page.push_str("</p>\n");
}

fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "—".to_string();
    }
    let total = seconds.round() as u64;
    match (total / 3600, (total % 3600) / 60, total % 60) {
        (0, 0, _) => format!("{seconds:.1} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

fn chart_points(report: &Report) -> Vec<ChartPoint<'_>> {
    report
        .generators
        .iter()
        .map(|g| {
            let m = &g.metrics.metrics;
            ChartPoint {
                name: &g.name,
                win_rate: m.win_rate,
                standard_error: m.standard_error,
                lc_win_rate: m.length_controlled_winrate,
                lc_standard_error: m.lc_standard_error,
                avg_length: m.avg_length as f64,
            }
        })
        .collect()
}

fn charts(page: &mut String, report: &Report) {
    let points = chart_points(report);
    page.push_str("<h2>Win rates</h2>\n<div class=\"chart\">");
    page.push_str(&win_rate_bars(&points));
    page.push_str(
        "</div>\n<p class=\"note\">The dashed line marks 50%: as good as the reference.</p>\n",
    );
    page.push_str("<h2>Win rate against output length</h2>\n<div class=\"chart\">");
    page.push_str(&length_scatter(&points));
    page.push_str(
        "</div>\n<p class=\"note\">Judges favour longer answers; the length-controlled win rate estimates the win rate \
         the model would have if its answers were as long as the reference's. The line joins each generator's two figures.</p>\n",
    );
    page.push_str("<h2>Output lengths</h2>\n");
    for g in &report.generators {
        let model: Vec<usize> = g.annotations.iter().map(|a| char_length(&a.output_2)).collect();
        let reference: Vec<usize> =
            g.annotations.iter().map(|a| char_length(&a.output_1)).collect();
        page.push_str("<div class=\"chart\">");
        page.push_str(&crate::svg::length_histogram(&g.name, &model, &reference));
        page.push_str("</div>\n");
    }
    page.push_str(
        "<p class=\"note\">Answers per length bin (characters), each generator's beside the reference's on the same instructions.</p>\n",
    );
    let timed: Vec<&GeneratorReport> = report
        .generators
        .iter()
        .filter(|g| g.throughput.as_ref().is_some_and(|t| !t.timeline.is_empty()))
        .collect();
    if timed.is_empty() {
        return;
    }
    // The section's bytes depend on timings: tests comparing two runs' pages cut it out.
    page.push_str("<section class=\"timeline\">\n<h2>Progress over time</h2>\n");
    for g in timed {
        let timeline = &g.throughput.as_ref().expect("filtered on throughput").timeline;
        let _ = writeln!(page, "<h3>{}</h3>\n<div class=\"chart\">", escape(&g.name));
        page.push_str(&crate::svg::timeline_chart(
            &g.name,
            &timeline.generation,
            &timeline.judging,
        ));
        page.push_str("</div>\n");
    }
    page.push_str(
        "<p class=\"note\">Answers and verdicts stored since each phase's first batch started: the slope is the \
         throughput; a flat stretch is a pause (an interrupted run resumed later).</p>\n</section>\n",
    );
}

/// Background for a win-rate cell: white at 0%, deep blue at 100%.
fn heat(win_rate: f64) -> String {
    let t = (win_rate / 100.0).clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    let (r, g, b) = (mix(255.0, 47.0), mix(255.0, 85.0), mix(255.0, 151.0));
    let text = if t > 0.55 { "#fff" } else { "#1d1d1f" };
    format!("background:#{r:02x}{g:02x}{b:02x};color:{text}")
}

fn dataset_table(page: &mut String, report: &Report) {
    let datasets = distinct(
        report.generators.iter().flat_map(|g| g.datasets.iter().map(|d| d.dataset.as_str())),
    );
    if datasets.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Win rate per dataset</h2>\n<table class=\"datasets\">\n<thead><tr><th class=\"name\">generator</th>",
    );
    for dataset in &datasets {
        let n = report
            .generators
            .iter()
            .flat_map(|g| g.datasets.iter().filter(|d| d.dataset == *dataset).map(|d| d.n_total))
            .max()
            .unwrap_or(0);
        let _ = write!(page, "<th>{}<br><span class=\"se\">n = {n}</span></th>", escape(dataset));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for g in &report.generators {
        let _ = write!(page, "<tr><td class=\"name\">{}</td>", escape(&g.name));
        for dataset in &datasets {
            match g
                .datasets
                .iter()
                .find(|d| d.dataset == *dataset)
                .filter(|d| d.win_rate.is_finite())
            {
                Some(d) => {
                    let _ = write!(
                        page,
                        "<td style=\"{}\">{:.1} <span style=\"opacity:.75;font-size:11px\">± {:.1}</span></td>",
                        heat(d.win_rate),
                        d.win_rate,
                        d.standard_error
                    );
                }
                None => page.push_str("<td class=\"muted\">—</td>"),
            }
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n<p class=\"note\">Win rate (%) ± standard error on each source dataset of the eval set.</p>\n");
}

fn paired_table(page: &mut String, report: &Report) {
    if report.paired.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Paired differences</h2>\n<table class=\"paired\">\n<thead><tr><th class=\"name\">A − B</th>\
         <th>win rate, points (95 % CI)</th><th>LC win rate, points (95 % CI)</th><th>instructions</th>\
         <th>A better</th><th>B better</th><th>same</th></tr></thead>\n<tbody>\n",
    );
    for p in &report.paired {
        let _ = writeln!(
            page,
            "<tr><td class=\"name\">{} − {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.a),
            escape(&p.b),
            escape(&crate::cells::paired_cell(p.win_rate.as_ref())),
            escape(&crate::cells::paired_cell(p.length_controlled.as_ref())),
            p.win_rate.as_ref().map_or(0, |d| d.n),
            p.a_better,
            p.b_better,
            p.same
        );
    }
    page.push_str("</tbody>\n</table>\n");
    let _ = writeln!(
        page,
        "<p class=\"note\">Paired bootstrap over the instructions both generators were judged on \
         ({} resamples, seed {}). The LC interval resamples each instruction's length-controlled \
         prediction of the fitted GLMs, which are not refitted per resample.</p>",
        report.paired[0].resamples, report.paired[0].seed
    );
    for p in report.paired.iter().filter(|p| !p.largest_disagreements.is_empty()) {
        let _ = write!(
            page,
            "<details class=\"generator\">\n<summary>Where {} and {} disagree most</summary>\n<table>\n\
             <thead><tr><th class=\"name\">instruction</th><th>dataset</th><th>preference A</th><th>preference B</th></tr></thead>\n<tbody>\n",
            escape(&p.a),
            escape(&p.b)
        );
        for d in &p.largest_disagreements {
            let preview: String = d.instruction.chars().take(100).collect();
            let _ = writeln!(
                page,
                "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&preview),
                escape(&d.dataset),
                python_float_repr(d.preference_a),
                python_float_repr(d.preference_b)
            );
        }
        page.push_str("</tbody>\n</table>\n</details>\n");
    }
}

fn standing(page: &mut String, report: &Report) {
    use crate::standing::{
        placement, Placement, OFFICIAL_ANNOTATOR, OFFICIAL_REFERENCE, OFFICIAL_SOURCE,
    };
    page.push_str("<h2>Where it stands</h2>\n");
    for g in &report.generators {
        let _ = writeln!(page, "<h3>{}</h3>", escape(&g.name));
        match placement(g) {
            Placement::Placed(s) => {
                let _ = writeln!(
                    page,
                    "<p class=\"note\">LC win rate {:.2}: rank {} of {} on the {} (the same annotator and reference).</p>",
                    s.lc,
                    s.rank,
                    s.of + 1,
                    escape(OFFICIAL_SOURCE)
                );
                page.push_str("<table class=\"standing\">\n<thead><tr><th>#</th><th class=\"name\">model</th><th>LC win rate</th><th>win rate</th><th>avg length</th></tr></thead>\n<tbody>\n");
                let row = |page: &mut String,
                           rank: String,
                           name: &str,
                           lc: f64,
                           wr: f64,
                           len: u64,
                           bold: bool| {
                    let (open, close) = if bold { ("<strong>", "</strong>") } else { ("", "") };
                    let _ = writeln!(
                        page,
                        "<tr><td>{rank}</td><td class=\"name\">{open}{}{close}</td><td>{open}{lc:.2}{close}</td><td>{wr:.2}</td><td>{len}</td></tr>",
                        escape(name)
                    );
                };
                for (rank, r) in &s.above {
                    row(
                        page,
                        rank.to_string(),
                        &r.generator,
                        r.metrics.length_controlled_winrate.unwrap_or(f64::NAN),
                        r.metrics.win_rate,
                        r.metrics.avg_length,
                        false,
                    );
                }
                let m = &g.metrics.metrics;
                row(page, s.rank.to_string(), &g.name, s.lc, m.win_rate, m.avg_length, true);
                for (rank, r) in &s.below {
                    row(
                        page,
                        (rank + 1).to_string(),
                        &r.generator,
                        r.metrics.length_controlled_winrate.unwrap_or(f64::NAN),
                        r.metrics.win_rate,
                        r.metrics.avg_length,
                        false,
                    );
                }
                page.push_str("</tbody>\n</table>\n");
            }
            Placement::OtherJudge(annotator, reference) => {
                let _ = writeln!(
                    page,
                    "<p class=\"note\">Judged by <code>{}</code> against <code>{}</code>: not placed on the {}, whose \
                     figures come from <code>{OFFICIAL_ANNOTATOR}</code> against <code>{OFFICIAL_REFERENCE}</code> and are \
                     on another scale. It stands only among the generators of this report, judged the same way (the \
                     leaderboard above).</p>",
                    escape(&annotator),
                    escape(&reference),
                    escape(OFFICIAL_SOURCE)
                );
            }
            Placement::NoLc => {
                page.push_str("<p class=\"note\">No length-controlled win rate to place on the official leaderboard.</p>\n");
            }
        }
    }
}

fn share(value: f64) -> String {
    if value.is_finite() {
        format!("{:.1} %", value * 100.0)
    } else {
        "—".into()
    }
}

fn judge_table(page: &mut String, report: &Report) {
    page.push_str(
        "<h2>The judge</h2>\n<table class=\"judge\">\n<thead><tr><th class=\"name\">generator</th>\
         <th>parsed</th><th>unparsed</th><th>prefers first shown</th><th>prefers output_1</th>\
         <th>prefers longer</th><th>empty answers</th><th>empty answers won</th></tr></thead>\n<tbody>\n",
    );
    for g in &report.generators {
        let b = &g.bias;
        let _ = writeln!(
            page,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <span class=\"se\">of {}</span></td><td>{}</td><td>{}</td></tr>",
            escape(&g.name),
            b.n_parsed,
            b.n_unparsed,
            share(b.prefers_first_shown),
            share(b.prefers_output_1),
            share(b.prefers_longer.ratio()),
            b.prefers_longer.of,
            b.empty_answers,
            b.empty_answers_won
        );
    }
    page.push_str(
        "</tbody>\n</table>\n<p class=\"note\">Prefers first shown: how often the answer the judge \
         saw first won (alpaca_eval shows the outputs in a seeded random order, <code>is_switched_outputs</code>); \
         50 % is no position bias. Prefers output_1 and prefers longer are alpaca_eval's \
         evaluator measures (\"Proba. prefer 1\", \"Proba. prefer longer\": of the pairs whose lengths \
         differ by more than 30 characters).</p>\n",
    );
}

fn warnings(page: &mut String, report: &Report) {
    const SHOWN: usize = 6;
    let noted: Vec<&GeneratorReport> = report
        .generators
        .iter()
        .filter(|g| {
            !g.warnings.is_empty()
                || !g.caveats.is_empty()
                || g.metrics.diagnostics.length_controlled_unavailable.is_some()
        })
        .collect();
    if noted.is_empty() {
        return;
    }
    page.push_str("<h2>Notes on the inputs</h2>\n");
    for g in noted {
        let _ = write!(page, "<h3>{}</h3>\n<ul class=\"warnings\">\n", escape(&g.name));
        for caveat in &g.caveats {
            let _ = writeln!(page, "<li>{}</li>", escape(caveat));
        }
        if let Some(why) = &g.metrics.diagnostics.length_controlled_unavailable {
            let _ = writeln!(page, "<li>no length-controlled win rate: {}</li>", escape(why));
        }
        for warning in g.warnings.iter().take(SHOWN) {
            let _ = writeln!(page, "<li>{}</li>", escape(warning));
        }
        if g.warnings.len() > SHOWN {
            let _ = writeln!(page, "<li>… and {} more</li>", g.warnings.len() - SHOWN);
        }
        page.push_str("</ul>\n");
    }
}

fn error_samples(page: &mut String, report: &Report) {
    page.push_str("<h2>Where the judge preferred the reference</h2>\n");
    let _ = writeln!(
        page,
        "<p class=\"note\">A reproducible random sample (seed {}) of each generator's dispreferred rows: preference in [1, 1.5), \
         i.e. the judge preferred the reference. The same sample is in <code>&lt;generator&gt;/errors.md</code>.</p>",
        report.seed
    );
    for g in &report.generators {
        let sample = &g.errors;
        let summary = if sample.dispreferred == 0 {
            "no dispreferred rows".to_string()
        } else if sample.took_all() {
            format!("all {} dispreferred rows", sample.dispreferred)
        } else {
            format!("{} of {} dispreferred rows", sample.rows.len(), sample.dispreferred)
        };
        let _ = write!(
            page,
            "<details class=\"generator\" open>\n<summary>{} <span class=\"meta\">· {summary} of {}</span></summary>\n",
            escape(&g.name),
            g.annotations.len()
        );
        for &row in &sample.rows {
            let a = &g.annotations[row];
            let preference = a.preference.map(python_float_repr).unwrap_or_else(|| "null".into());
            let _ = write!(
                page,
                "<article class=\"example\">\n<h4>Row {row} <span class=\"meta\">· {} · preference {preference}</span></h4>\n\
                 <div class=\"label\">Instruction ({} characters)</div><pre class=\"instruction\">{}</pre>\n<div class=\"pair\">\
                 <div><div class=\"label\">Model output · {} ({} characters)</div><pre>{}</pre></div>\
                 <div><div class=\"label\">Reference output · {} ({} characters)</div><pre>{}</pre></div></div>\n",
                escape(&a.dataset),
                char_length(&a.instruction),
                escape(&a.instruction),
                escape(&a.generator_2),
                char_length(&a.output_2),
                escape(&a.output_2),
                escape(&a.generator_1),
                char_length(&a.output_1),
                escape(&a.output_1),
            );
            match a.raw_completion_text() {
                Some(raw) => {
                    let _ = writeln!(
                        page,
                        "<details class=\"raw\"><summary>Judge's raw output ({} characters)</summary><pre>{}</pre></details>",
                        char_length(&raw),
                        escape(&raw)
                    );
                }
                None => page.push_str(
                    "<div class=\"label muted\">The file has no raw judge output.</div>\n",
                ),
            }
            page.push_str("</article>\n");
        }
        page.push_str("</details>\n");
    }
}
