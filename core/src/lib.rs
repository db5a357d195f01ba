//! herd's domain core: the AlpacaEval eval set, alpaca_eval's file formats, its metrics
//! (win rate and the length-controlled GLM), the generators' prompt templates, the judge
//! prompt, its parser and the output-order swap rule, error analysis, and the URL
//! redaction every role applies to what it shows.
//!
//! Nothing here knows about queues, storage, HTTP or GPUs: every function takes and
//! returns plain values, so the whole domain can be tested without a model.

pub mod calibration;
pub mod error_analysis;
pub mod eval_set;
pub mod formats;
pub mod jobs;
pub mod judge;
mod mersenne_twister;
pub mod metrics;
pub mod prompts;
pub mod redact;
pub mod throughput;
