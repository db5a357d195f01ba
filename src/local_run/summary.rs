//! The one-screen summary an in-process run ends with.

use super::RunOutcome;

impl RunOutcome {
    /// The one-screen summary.
    pub fn print(&self) {
        let s = &self.summary;
        let generated: usize = self.generation.iter().map(|(_, g)| g.generated).sum();
        let (stored_outputs, _) = self.already.outputs();
        let (stored_verdicts, _) = self.already.annotations();
        println!();
        println!(
            "herd run {}: {} generator(s) × {} instruction(s), judge {} ({} mode)",
            self.run_id,
            s.generators.len(),
            self.instructions,
            self.judge.name,
            self.judge.mode.as_str()
        );
        println!(
            "this session: generated {generated} answers ({stored_outputs} already stored) in {:.1} s; \
             judged {} verdicts ({} from the judge cache, {stored_verdicts} already stored) in {:.1} s",
            self.generation_seconds, self.judging.judged, self.judging.cached, self.judging_seconds
        );
        println!();
        let width = s.generators.iter().map(|g| g.name.chars().count()).max().unwrap_or(0).max(30);
        println!(
            "{:<width$} {:>10} {:>10} {:>9} {:>9} {:>15} {:>15} {:>8}",
            "generator",
            "examples/s",
            "out tok/s",
            "gen wall",
            "judge",
            "win rate",
            "LC win rate",
            "unparsed"
        );
        for g in &s.generators {
            let (eps, tps, gen_wall, judge_wall) = match &g.throughput {
                Some(t) => (
                    format!("{:.2}", t.generation.examples_per_second),
                    format!("{:.1}", t.generation.output_tokens_per_second),
                    format!("{:.1} s", t.phases.generation_seconds),
                    format!("{:.1} s", t.phases.judging_seconds),
                ),
                None => ("—".into(), "—".into(), "—".into(), "—".into()),
            };
            let (win, lc) = match &g.leaderboard {
                Some(row) => (herd_report::win_rate_cell(row), herd_report::lc_win_rate_cell(row)),
                None => ("—".into(), "—".into()),
            };
            println!(
                "{:<width$} {eps:>10} {tps:>10} {gen_wall:>9} {judge_wall:>9} {win:>15} {lc:>15} {:>8}",
                g.name, g.unparsed
            );
        }
        let findings = s.findings();
        if !findings.is_empty() {
            println!();
            for line in findings {
                println!("{line}");
            }
        }
        println!();
        println!("report: {}", s.report.display());
        println!("summary: {}", s.out.join("summary.md").display());
        println!("leaderboard: {}", s.leaderboard.display());
    }
}
