//! A run folder belongs to one run: `<out>/run.json` names the run, its generators and its
//! judge, and a run with another id, other generators or another judge may not write its
//! files over them unless forced. The same run with another `--limit` may: the store keeps
//! every result, and the folder then covers the new number of instructions.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CoordinatorError, RunPlan};

/// The file in a run folder that says which run it belongs to.
pub const CLAIM_FILE: &str = "run.json";

/// Who a run folder belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderClaim {
    pub run_id: String,
    /// Generator names, in the plan's order.
    pub generators: Vec<String>,
    pub judge: String,
    /// Eval-set instructions the folder covers (the most any generator has).
    pub instructions: usize,
}

/// What claiming a folder found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// No claim yet: the folder is new (or from a herd that wrote none).
    New,
    /// The same run on the same instructions.
    Same,
    /// The same run with another `--limit`.
    Resized { from: usize, to: usize },
    /// Another run's folder, taken over with `force`.
    Replaced { previous: FolderClaim },
}

impl FolderClaim {
    pub fn of(plan: &RunPlan) -> Self {
        Self {
            run_id: plan.run_id.clone(),
            generators: plan.generators.iter().map(|g| g.name.clone()).collect(),
            judge: plan.judge.name.clone(),
            instructions: plan.generators.iter().map(|g| g.indices.len()).max().unwrap_or(0),
        }
    }

    /// Checks `out` against this claim and records it there. Another run's folder is
    /// refused (nothing is written) unless `force`.
    pub fn claim(&self, out: &Path, force: bool) -> Result<ClaimOutcome, CoordinatorError> {
        let path = out.join(CLAIM_FILE);
        let outcome = match read_claim(&path)? {
            None => ClaimOutcome::New,
            Some(previous) if previous.same_run(self) => {
                if previous.instructions == self.instructions {
                    ClaimOutcome::Same
                } else {
                    ClaimOutcome::Resized { from: previous.instructions, to: self.instructions }
                }
            }
            Some(previous) if force => ClaimOutcome::Replaced { previous },
            Some(previous) => {
                return Err(CoordinatorError::FolderOfAnotherRun {
                    folder: out.to_path_buf(),
                    theirs: previous.describe(),
                    ours: self.describe(),
                })
            }
        };
        if outcome != ClaimOutcome::Same {
            std::fs::create_dir_all(out).map_err(|source| io(out, "create the folder", source))?;
            let mut text = serde_json::to_string_pretty(self).expect("a claim serialises");
            text.push('\n');
            std::fs::write(&path, text).map_err(|source| io(&path, "write", source))?;
        }
        Ok(outcome)
    }

    fn same_run(&self, other: &FolderClaim) -> bool {
        self.run_id == other.run_id
            && self.generators == other.generators
            && self.judge == other.judge
    }

    /// One line: run id, generators, judge, instructions.
    pub fn describe(&self) -> String {
        format!(
            "run {} (generators {}; judge {}; {} instructions)",
            self.run_id,
            self.generators.join(", "),
            self.judge,
            self.instructions
        )
    }
}

impl ClaimOutcome {
    /// What to tell the user, if anything.
    pub fn message(&self, out: &Path) -> Option<String> {
        match self {
            ClaimOutcome::New | ClaimOutcome::Same => None,
            ClaimOutcome::Resized { from, to } => Some(format!(
                "{} now covers {to} instructions (it covered {from}); results already stored are reused",
                out.display()
            )),
            ClaimOutcome::Replaced { previous } => Some(format!(
                "--force: {} held {}; its files are replaced by this run's (the store keeps both runs' results)",
                out.display(),
                previous.describe()
            )),
        }
    }
}

fn read_claim(path: &Path) -> Result<Option<FolderClaim>, CoordinatorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(path, "read", source)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| CoordinatorError::Io {
        path: path.to_path_buf(),
        action: "read the run folder's claim",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

fn io(path: &Path, action: &'static str, source: std::io::Error) -> CoordinatorError {
    CoordinatorError::Io { path: PathBuf::from(path), action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(run: &str, generators: &[&str], judge: &str, instructions: usize) -> FolderClaim {
        FolderClaim {
            run_id: run.into(),
            generators: generators.iter().map(|g| g.to_string()).collect(),
            judge: judge.into(),
            instructions,
        }
    }

    #[test]
    fn a_folder_refuses_another_run_unless_forced_and_accepts_another_limit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first = claim("r1", &["a", "b"], "j", 20);
        assert_eq!(first.claim(&out, false).unwrap(), ClaimOutcome::New);
        assert_eq!(first.claim(&out, false).unwrap(), ClaimOutcome::Same);

        for other in [
            claim("r2", &["a", "b"], "j", 20),
            claim("r1", &["a"], "j", 20),
            claim("r1", &["a", "b"], "k", 20),
        ] {
            let refused = other.claim(&out, false).unwrap_err().to_string();
            assert!(refused.contains("holds run r1") && refused.contains("--force"), "{refused}");
            assert_eq!(read_claim(&out.join(CLAIM_FILE)).unwrap(), Some(first.clone()));
        }

        let more = claim("r1", &["a", "b"], "j", 805);
        assert_eq!(more.claim(&out, false).unwrap(), ClaimOutcome::Resized { from: 20, to: 805 });
        let message = ClaimOutcome::Resized { from: 20, to: 805 }.message(&out).unwrap();
        assert!(message.contains("now covers 805 instructions (it covered 20)"), "{message}");

        let forced = claim("r2", &["c"], "j", 5);
        let outcome = forced.claim(&out, true).unwrap();
        assert_eq!(outcome, ClaimOutcome::Replaced { previous: more });
        assert!(outcome.message(&out).unwrap().contains("held run r1"));
        assert_eq!(read_claim(&out.join(CLAIM_FILE)).unwrap(), Some(forced));
    }

    #[test]
    fn an_unreadable_claim_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLAIM_FILE), "{not json").unwrap();
        let error = claim("r", &["a"], "j", 1).claim(dir.path(), false).unwrap_err().to_string();
        assert!(error.contains(CLAIM_FILE), "{error}");
    }
}
