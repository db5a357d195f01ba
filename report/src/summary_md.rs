//! `summary.md`: the figures a write-up quotes, in one Markdown file beside the report.
//! Per generator: throughput (and the baseline's beside it), win rate and LC win rate ± SE
//! against the reference with the annotator named; the paired differences with their
//! bootstrap intervals; the caveats; the sampled dispreferred examples, linked to their
//! place in each generator's `errors.md`. Plain figures from a fixed template.
//!
//! Text from files (names, instructions) is escaped for Markdown tables and links.

use std::fmt::Write as _;

use herd_core::error_analysis::char_length;
use herd_core::formats::python_float_repr;

use crate::cells::{lc_win_rate_cell, paired_cell, win_rate_cell};
use crate::{GeneratorReport, Report};

/// Characters of an instruction shown in the example list.
const INSTRUCTION_PREVIEW: usize = 90;

pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let first = report.generators.iter().find_map(|g| g.annotations.first());
    let (judge, reference) =
        first.map(|a| (a.annotator.as_str(), a.generator_1.as_str())).unwrap_or(("?", "?"));
    md.push_str("# AlpacaEval summary\n\n");
    let _ = writeln!(
        md,
        "Annotator: `{}` · reference: `{}` · {} generator{}{}\n",
        code(judge),
        code(reference),
        report.generators.len(),
        if report.generators.len() == 1 { "" } else { "s" },
        match &report.baseline {
            Some(b) => format!(" · baseline: `{}`", code(b)),
            None => String::new(),
        }
    );
    figures(&mut md, report);
    paired(&mut md, report);
    standing(&mut md, report);
    caveats(&mut md, report);
    examples(&mut md, report);
    md
}

fn figures(md: &mut String, report: &Report) {
    let baseline = report
        .baseline
        .as_ref()
        .and_then(|b| report.generators.iter().find(|g| g.name == *b))
        .and_then(|g| g.throughput.as_ref());
    md.push_str("| generator | examples/s | output tokens/s | win rate ± SE | LC win rate ± SE | judged | avg. length |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (g, row) in report.generators.iter().zip(&report.leaderboard) {
        let is_baseline = report.baseline.as_deref() == Some(g.name.as_str());
        let (examples, tokens) = match (&g.throughput, baseline) {
            (Some(t), Some(b)) if !is_baseline => (
                format!(
                    "{:.3} ({:.2}× baseline)",
                    t.examples_per_second,
                    ratio(t.examples_per_second, b.examples_per_second)
                ),
                format!(
                    "{:.1} ({:.2}× baseline)",
                    t.output_tokens_per_second,
                    ratio(t.output_tokens_per_second, b.output_tokens_per_second)
                ),
            ),
            (Some(t), _) => (
                format!("{:.3}", t.examples_per_second),
                format!("{:.1}", t.output_tokens_per_second),
            ),
            (None, _) => ("—".into(), "—".into()),
        };
        let warning = match g.caveats.first() {
            Some(first) => format!(" ⚠ {}", cell(first.split(':').next().unwrap_or(first))),
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "| {}{}{warning} | {examples} | {tokens} | {} | {} | {} | {} |",
            cell(&g.name),
            if is_baseline { " (baseline)" } else { "" },
            win_rate_cell(row),
            lc_win_rate_cell(row),
            row.metrics.n_total,
            row.metrics.avg_length,
        );
    }
    md.push_str(
        "\nWin rates in percent against the reference, as alpaca_eval 0.6.6 computes them \
         (LC: `length_controlled_v1`). Throughput: this run's generation phase. ⚠: see \
         the caveats below.\n\n",
    );
    judge_cost(md, report);
}

/// What a served judge charged (its verdicts' `price_per_example`), when it has a price.
fn judge_cost(md: &mut String, report: &Report) {
    let priced: Vec<f64> = report
        .generators
        .iter()
        .flat_map(|g| g.annotations.iter())
        .filter_map(|a| a.price_per_example)
        .filter(|p| p.is_finite())
        .collect();
    if priced.is_empty() {
        return;
    }
    let total: f64 = priced.iter().sum();
    let _ = writeln!(
        md,
        "Judge cost: ${total:.2} for {} verdicts (${:.4} each on average, from the API's \
         token counts at the judge's price).\n",
        priced.len(),
        total / priced.len() as f64
    );
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn paired(md: &mut String, report: &Report) {
    if report.paired.is_empty() {
        return;
    }
    md.push_str("## Paired differences\n\n");
    md.push_str("| A − B | win rate, points (95 % CI) | LC win rate, points (95 % CI) | instructions | A better | B better | same |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for p in &report.paired {
        let _ = writeln!(
            md,
            "| {} − {} | {} | {} | {} | {} | {} | {} |",
            cell(&p.a),
            cell(&p.b),
            paired_cell(p.win_rate.as_ref()),
            paired_cell(p.length_controlled.as_ref()),
            p.win_rate.as_ref().map_or(0, |d| d.n),
            p.a_better,
            p.b_better,
            p.same
        );
    }
    let seed = report.paired[0].seed;
    let resamples = report.paired[0].resamples;
    let _ = writeln!(
        md,
        "\nPaired bootstrap over the instructions both were judged on ({resamples} resamples, \
         seed {seed}); an interval that excludes 0 is a difference this judge sees beyond \
         resampling noise. The LC interval resamples each instruction's length-controlled \
         prediction of the fitted GLMs (not refitted per resample).\n"
    );
}

fn standing(md: &mut String, report: &Report) {
    use crate::standing::{placement, Placement, OFFICIAL_SOURCE};
    md.push_str("## Where it stands\n\n");
    for g in &report.generators {
        let line = match placement(g) {
            Placement::Placed(s) => format!(
                "LC win rate {:.2}: rank {} of {} on the {OFFICIAL_SOURCE}{}",
                s.lc,
                s.rank,
                s.of + 1,
                match (s.above.last(), s.below.first()) {
                    (Some((_, up)), Some((_, down))) =>
                        format!(", between {} and {}", text(&up.generator), text(&down.generator)),
                    _ => String::new(),
                }
            ),
            Placement::OtherJudge(annotator, reference) => format!(
                "judged by `{}` against `{}`, not the official annotator: not placed on the \
                 {OFFICIAL_SOURCE} (another scale), only among this report's generators",
                code(&annotator),
                code(&reference)
            ),
            Placement::NoLc => "no LC win rate to place on the official leaderboard".into(),
        };
        let _ = writeln!(md, "- `{}`: {line}", code(&g.name));
    }
    md.push('\n');
}

fn caveats(md: &mut String, report: &Report) {
    if report.generators.iter().all(|g| g.caveats.is_empty()) {
        return;
    }
    md.push_str("## Caveats\n\n");
    for g in report.generators.iter().filter(|g| !g.caveats.is_empty()) {
        for caveat in &g.caveats {
            let _ = writeln!(md, "- `{}`: {}", code(&g.name), text(caveat));
        }
    }
    md.push('\n');
}

fn examples(md: &mut String, report: &Report) {
    md.push_str("## Dispreferred examples\n\n");
    let _ = writeln!(
        md,
        "Rows where the judge preferred the reference (preference in [1, 1.5)), a random \
         sample per generator (seed {}); each links to the full example in the generator's \
         `errors.md` and to its row in `report.html`.\n",
        report.seed
    );
    for (gi, g) in report.generators.iter().enumerate() {
        example_list(md, gi, g);
    }
}

fn example_list(md: &mut String, gi: usize, g: &GeneratorReport) {
    let sample = &g.errors;
    let errors = g.errors_path().to_string_lossy().replace('\\', "/");
    let _ = writeln!(
        md,
        "### `{}`: {} of {} dispreferred\n",
        code(&g.name),
        sample.rows.len(),
        sample.dispreferred
    );
    if sample.rows.is_empty() {
        md.push_str("None.\n\n");
        return;
    }
    for (i, &row) in sample.rows.iter().enumerate() {
        let a = &g.annotations[row];
        let preference = a.preference.map(python_float_repr).unwrap_or_else(|| "null".into());
        let preview: String = a.instruction.chars().take(INSTRUCTION_PREVIEW).collect();
        let more = if char_length(&a.instruction) > INSTRUCTION_PREVIEW { "…" } else { "" };
        let _ = writeln!(
            md,
            "{}. [row {row}]({}#{}) ([in the report](report.html#g{gi}-row-{row})) · {} · preference {preference}: {}{more}",
            i + 1,
            link_target(&errors),
            herd_core::error_analysis::example_anchor(row),
            text(&a.dataset),
            text(&preview.replace(['\n', '\r'], " ")),
        );
    }
    md.push('\n');
}

/// A value inside an inline code span: backticks would end it.
fn code(value: &str) -> String {
    value.replace('`', "'").replace(['\n', '\r'], " ")
}

/// A value in a table cell: no line breaks, `|` escaped, Markdown and HTML inert.
fn cell(value: &str) -> String {
    text(&value.replace(['\n', '\r'], " "))
}

/// Free text made inert: Markdown's punctuation and HTML's `<`/`&` backslash-escaped or
/// encoded, so an instruction or a name cannot open a link, an image or a tag.
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '!' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A relative link target: spaces and parentheses percent-encoded.
fn link_target(path: &str) -> String {
    path.replace('%', "%25").replace(' ', "%20").replace('(', "%28").replace(')', "%29")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_cannot_become_markup() {
        let hostile = "<script>x</script> ![i](http://e/x.png) [a](b) | `c` *d*";
        let made = text(hostile);
        assert!(!made.contains("<script>"));
        assert!(!made.contains("](http"));
        assert!(!made.contains(" | "));
        assert!(made.starts_with("&lt;script&gt;"));
        assert_eq!(link_target("a b (2)/errors.md"), "a%20b%20%282%29/errors.md");
        assert_eq!(code("a`b\nc"), "a'b c");
    }
}
