//! LLM inference on candle: model loading, tokenization, batched greedy decoding and
//! next-token scoring of Llama-family models (README.md).
//!
//! Callers load a [`Model`] and call [`Model::generate`] or [`Model::next_token_logprobs`];
//! the types they need are re-exported here. The public modules below are the engine's
//! building blocks, public for its benchmarks and GPU checks (`engine/examples`,
//! `bench/gpu`) and for device management ([`placement`]).

pub mod attention;
mod config;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod generate;
mod linear;
mod model;
mod paged_cache;
mod prompt;
mod scoring;
mod source;
mod token_codec;
mod transformer;
mod weights;

pub mod cpu_kernels;
pub mod kv_cache;
pub mod llama;
pub mod paged_ops;
pub mod placement;
pub mod quant_matmul;
pub mod tensor_parallel;
pub mod tokenizer;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::{ChatTemplateError, DeviceSpecError, EngineError, InvalidConfig, Result};
pub use generate::{
    BatchOptions, FinishReason, GeneratedToken, GenerationEvents, GenerationOutput,
    GenerationRequest, GenerationStats, RequestSource, Sampling, TokenLogprob,
};
pub use model::{LoadOptions, Model};
pub use placement::{DeviceSpec, Placement};
pub use prompt::{ChatMessage, ChatTemplate};
pub use scoring::{NextTokenScores, ScoringOptions};
pub use source::ModelSource;
pub use token_codec::TokenCodec;
pub use transformer::Transformer;
pub use weights::WeightFormat;
