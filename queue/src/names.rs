//! Queue names: one job queue per run and model, one dead-letter queue per run, so several
//! runs share a broker without seeing each other's jobs.

use std::fmt;

/// The name of a job queue (or of a run's dead-letter queue), with the run it belongs to.
///
/// | queue | name |
/// | --- | --- |
/// | generation jobs of one generator | `herd.<run>.gen.<generator>` |
/// | judge jobs of one judge | `herd.<run>.judge.<judge>` |
/// | the run's dead letters | `herd.<run>.dlq` |
///
/// Characters other than ASCII letters, digits, `-` and `_` in the run or model name are
/// written as `_`, so a name never contains an extra `.` and stays readable in
/// `rabbitmqctl list_queues`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName {
    run: String,
    name: String,
}

impl QueueName {
    /// Generation jobs of `generator` in `run`.
    pub fn generation(run: &str, generator: &str) -> Self {
        Self::build(run, &format!("gen.{}", sanitize(generator)))
    }

    /// Judge jobs of `judge` in `run`.
    pub fn judge(run: &str, judge: &str) -> Self {
        Self::build(run, &format!("judge.{}", sanitize(judge)))
    }

    /// Where `run`'s poison jobs end: jobs over the delivery limit and jobs a worker refused.
    pub fn dead_letters(run: &str) -> Self {
        Self::build(run, "dlq")
    }

    fn build(run: &str, tail: &str) -> Self {
        let run = sanitize(run);
        let mut name = format!("herd.{run}.{tail}");
        // AMQP short strings hold 255 bytes; the names are ASCII after sanitising.
        name.truncate(255);
        Self { run, name }
    }

    /// The run (sanitised) the queue belongs to.
    pub fn run(&self) -> &str {
        &self.run
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Whether this is a run's dead-letter queue.
    pub fn is_dead_letter_queue(&self) -> bool {
        *self == Self::dead_letters(&self.run)
    }

    /// The dead-letter queue of this queue's run.
    pub fn dead_letter_queue(&self) -> Self {
        Self::dead_letters(&self.run)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        assert_eq!(QueueName::generation("r1", "smol").as_str(), "herd.r1.gen.smol");
        assert_eq!(QueueName::judge("r1", "llama").as_str(), "herd.r1.judge.llama");
        assert_eq!(QueueName::dead_letters("r1").as_str(), "herd.r1.dlq");
    }

    #[test]
    fn dots_and_slashes_in_model_names_cannot_fake_another_queue() {
        let q = QueueName::generation("r.1", "org/model.v2");
        assert_eq!(q.as_str(), "herd.r_1.gen.org_model_v2");
        assert_eq!(q.dead_letter_queue().as_str(), "herd.r_1.dlq");
        assert!(!q.is_dead_letter_queue());
        assert!(q.dead_letter_queue().is_dead_letter_queue());
    }

    #[test]
    fn long_names_are_cut_to_the_amqp_limit() {
        let q = QueueName::generation("run", &"m".repeat(400));
        assert_eq!(q.as_str().len(), 255);
    }
}
