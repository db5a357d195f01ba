//! The judge worker: consumes [`JudgeJob`]s, asks the judge model to rank the model's answer
//! against the reference with alpaca_eval's prompt, stores each [`JudgeResult`] and
//! acknowledges the job only once its verdict is stored.
//!
//! Per job: [`PreparedJudgment::prepare`] (alpaca_eval's swap, the prompt fitted to the
//! judge's context with [`JudgeModel`] counting tokens) → the prompt in the judge's format
//! ([`JudgeFormat`]) → ranking mode: greedy generation and alpaca_eval's `ranking_parser`;
//! logprob mode: one prefill of prompt + [`LOGPROB_ANSWER_PREFIX`] and the next-token
//! log-probabilities of "1" and "2" ([`LogprobCandidates`]).
//!
//! Verdicts are cached by content ([`JudgeCache`]): a job whose key is in the cache is
//! answered without the judge model (it is not even loaded). Only parsed verdicts are cached.
//!
//! [`JudgeJob`]: herd_core::jobs::JudgeJob
//! [`JudgeResult`]: herd_core::jobs::JudgeResult
//! [`PreparedJudgment::prepare`]: herd_core::judge::PreparedJudgment::prepare
//! [`LOGPROB_ANSWER_PREFIX`]: herd_core::judge::LOGPROB_ANSWER_PREFIX

mod cache;
mod judge_model;
mod verdict;
mod worker;

pub use cache::{model_identity, CachedJudgement, JudgeCache, JudgeCacheKey, ModelIdentities};
pub use judge_model::{JudgeFormat, JudgeModel, LogprobCandidates};
pub use verdict::{judge_batch, Verdict};
pub use worker::{JudgeWorker, JudgeWorkerStats, JUDGE_API_KEY_VARIABLES};
