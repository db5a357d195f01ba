//! Error analysis: a reproducible sample of the rows where the judge preferred the
//! reference, written as Markdown for a person to read.
//!
//! "Dispreferred" means `1 <= preference < 1.5`: exactly 1.0 for discrete judges (ranking
//! mode), below the draw for continuous ones (logprob mode, alpaca_eval's weighted
//! annotators). Draws (1.5, 0), wins and unparsed rows are never sampled.
//!
//! The sample is a partial Fisher–Yates shuffle of the dispreferred rows driven by
//! SplitMix64 (Steele, Lea & Flood 2014), which is integer arithmetic only: the same
//! seed gives the same rows on any machine and any platform.

use crate::formats::Annotation;

/// SplitMix64: a 64-bit state advanced by the golden-ratio increment, each output mixed
/// by two multiply-xorshift rounds. Small, fast, and fully specified by these constants.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), without modulo bias: Lemire's multiply-shift
    /// with rejection of the few low products that would favour small values.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }
}

/// Whether the judge preferred the reference over the model.
pub fn is_dispreferred(preference: Option<f64>) -> bool {
    matches!(preference, Some(p) if (1.0..1.5).contains(&p))
}

/// Which rows were picked, and out of how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorSample {
    /// Rows asked for.
    pub requested: usize,
    pub seed: u64,
    /// Dispreferred rows in the file.
    pub dispreferred: usize,
    /// The picked rows (0-based positions in the annotations), ascending.
    pub rows: Vec<usize>,
}

impl ErrorSample {
    /// Fewer dispreferred rows than asked for: all of them were taken.
    pub fn took_all(&self) -> bool {
        self.dispreferred <= self.requested
    }
}

/// Picks `n` dispreferred rows (all of them when there are fewer), reproducibly for `seed`.
pub fn sample_dispreferred(annotations: &[Annotation], n: usize, seed: u64) -> ErrorSample {
    let mut candidates: Vec<usize> = annotations
        .iter()
        .enumerate()
        .filter(|(_, a)| is_dispreferred(a.preference))
        .map(|(row, _)| row)
        .collect();
    let dispreferred = candidates.len();
    let take = n.min(dispreferred);
    let mut rng = SplitMix64::new(seed);
    for i in 0..take {
        let j = i + rng.below((dispreferred - i) as u64) as usize;
        candidates.swap(i, j);
    }
    let mut rows = candidates[..take].to_vec();
    rows.sort_unstable();
    ErrorSample { requested: n, seed, dispreferred, rows }
}

/// Number of Unicode code points, the length alpaca_eval's `avg_length` counts.
pub fn char_length(text: &str) -> usize {
    text.chars().count()
}

/// The HTML anchor of row `row`'s example in `errors.md` (`summary.md` links to it).
pub fn example_anchor(row: usize) -> String {
    format!("row-{row}")
}

/// The sample as Markdown: per row the instruction, dataset, model and reference outputs,
/// the judge's raw output, their lengths and the preference. `source` names the file.
/// Each example starts with an anchor ([`example_anchor`]).
pub fn render_markdown(source: &str, annotations: &[Annotation], sample: &ErrorSample) -> String {
    let mut md = String::new();
    let first = sample.rows.first().and_then(|&r| annotations.get(r)).or(annotations.first());
    let (model, reference, judge) = first
        .map(|a| (a.generator_2.as_str(), a.generator_1.as_str(), a.annotator.as_str()))
        .unwrap_or(("?", "?", "?"));
    md.push_str(&format!("# Error analysis: `{model}` against `{reference}`\n\n"));
    md.push_str(&format!("- annotations: `{source}` ({} rows)\n", annotations.len()));
    md.push_str(&format!("- judge: `{judge}`\n"));
    md.push_str(&format!(
        "- dispreferred rows (preference in [1, 1.5), the judge preferred the reference): {}\n",
        sample.dispreferred
    ));
    md.push_str(&format!("- seed: {}\n\n", sample.seed));
    let unparsed = annotations.iter().filter(|a| a.preference.is_none()).count();
    if sample.dispreferred == 0 && unparsed == annotations.len() {
        md.push_str(&format!(
            "No row has a parsed verdict ({unparsed} of {} unparsed): where the reference won \
             is unknown.\n",
            annotations.len()
        ));
    } else if sample.dispreferred == 0 && unparsed > 0 {
        md.push_str(&format!(
            "No parsed verdict prefers the reference; {unparsed} of {} rows are unparsed.\n",
            annotations.len()
        ));
    } else if sample.dispreferred == 0 {
        md.push_str("No row is dispreferred: the judge never preferred the reference.\n");
    } else if sample.took_all() {
        md.push_str(&format!(
            "Only {} dispreferred rows exist (asked for {}): all of them are shown.\n\n",
            sample.dispreferred, sample.requested
        ));
    } else {
        md.push_str(&format!(
            "A random sample of {} of them, in file order (same seed, same sample).\n\n",
            sample.rows.len()
        ));
    }

    for (i, &row) in sample.rows.iter().enumerate() {
        let a = &annotations[row];
        let preference =
            a.preference.map(crate::formats::python_float_repr).unwrap_or_else(|| "null".into());
        md.push_str(&format!("<a id=\"{}\"></a>\n\n", example_anchor(row)));
        md.push_str(&format!(
            "## {}. Row {row} · `{}` · preference {preference}\n\n",
            i + 1,
            a.dataset
        ));
        md.push_str(&format!("**Instruction** ({} characters)\n\n", char_length(&a.instruction)));
        push_fenced(&mut md, "text", &a.instruction);
        md.push_str(&format!(
            "**Model output** (`{}`, {} characters)\n\n",
            a.generator_2,
            char_length(&a.output_2)
        ));
        push_fenced(&mut md, "text", &a.output_2);
        md.push_str(&format!(
            "**Reference output** (`{}`, {} characters)\n\n",
            a.generator_1,
            char_length(&a.output_1)
        ));
        push_fenced(&mut md, "text", &a.output_1);
        match (&a.raw_completion, a.raw_completion_text()) {
            (Some(serde_json::Value::String(_)), Some(raw)) => {
                md.push_str(&format!(
                    "**Judge's raw output** ({} characters)\n\n",
                    char_length(&raw)
                ));
                push_fenced(&mut md, "text", &raw);
            }
            (_, Some(raw)) => {
                md.push_str("**Judge's raw output** (JSON)\n\n");
                push_fenced(&mut md, "json", &raw);
            }
            (_, None) => md.push_str("**Judge's raw output**: not in the file.\n\n"),
        }
    }
    md
}

/// A fenced code block whose fence is longer than any run of backticks in the text, so
/// model output cannot close it early.
fn push_fenced(md: &mut String, info: &str, text: &str) {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    md.push_str(&format!("{fence}{info}\n{text}"));
    if !text.ends_with('\n') {
        md.push('\n');
    }
    md.push_str(&format!("{fence}\n\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotation(row: usize, preference: Option<f64>) -> Annotation {
        Annotation {
            instruction: format!("instruction {row}"),
            output_1: "reference".into(),
            generator_1: "gpt4_1106_preview".into(),
            dataset: "helpful_base".into(),
            output_2: format!("answer {row} with ```code```"),
            generator_2: "model".into(),
            annotator: "judge".into(),
            preference,
            raw_completion: Some(serde_json::Value::String("m".into())),
            time_per_example: None,
            price_per_example: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn splitmix64_matches_its_reference_sequence() {
        // The published test vector for seed 1234567 (Rosetta Code, "Pseudo-random numbers/Splitmix64").
        let mut rng = SplitMix64::new(1234567);
        let expected: [u64; 3] = [6457827717110365317, 3203168211198807973, 9817491932198370423];
        for value in expected {
            assert_eq!(rng.next_u64(), value);
        }
    }

    #[test]
    fn only_rows_where_the_reference_won_are_dispreferred() {
        assert!(is_dispreferred(Some(1.0)));
        assert!(is_dispreferred(Some(1.49)));
        for p in [Some(1.5), Some(0.0), Some(2.0), Some(1.7), Some(0.5), None] {
            assert!(!is_dispreferred(p), "{p:?}");
        }
    }

    #[test]
    fn a_sample_takes_all_when_fewer_exist_and_says_so() {
        let rows =
            vec![annotation(0, Some(1.0)), annotation(1, Some(2.0)), annotation(2, Some(1.2))];
        let sample = sample_dispreferred(&rows, 10, 7);
        assert_eq!(sample.rows, vec![0, 2]);
        assert!(sample.took_all());
        let md = render_markdown("a.json", &rows, &sample);
        assert!(md.contains("Only 2 dispreferred rows exist (asked for 10)"), "{md}");
        // The model's own ``` cannot close the block it is quoted in.
        assert!(md.contains("````text\nanswer 0 with ```code```\n````"), "{md}");
    }

    #[test]
    fn sampling_real_annotations_is_reproducible_and_only_picks_dispreferred_rows() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/oracle/results/gemma-7b-it/weighted_alpaca_eval_gpt4_turbo/annotations.json.gz");
        let rows = crate::formats::read_annotations(&path).unwrap();
        let lost = rows.iter().filter(|a| a.preference.is_some_and(|p| p < 1.5)).count();

        let sample = sample_dispreferred(&rows, 10, 42);
        assert_eq!(sample, sample_dispreferred(&rows, 10, 42));
        assert_eq!((sample.rows.len(), sample.dispreferred), (10, lost));
        assert!(sample.rows.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
        assert!(sample.rows.iter().all(|&r| rows[r].preference.unwrap() < 1.5));
        assert_ne!(
            sample.rows,
            sample_dispreferred(&rows, 10, 43).rows,
            "another seed, another sample"
        );

        let md = render_markdown("gemma.json.gz", &rows, &sample);
        assert_eq!(md.matches("\n## ").count(), 10);
        for &row in &sample.rows {
            assert!(md.contains(&format!("Row {row} ")), "row {row}");
            assert!(md.contains(&rows[row].output_2), "model output of row {row}");
        }
        // alpaca_eval's weighted judge stores an object: it is shown as JSON.
        assert!(
            md.contains("**Judge's raw output** (JSON)\n\n```json\n{"),
            "{}",
            md.chars().take(2000).collect::<String>()
        );
    }
}
