//! LLM inference on candle: model loading, tokenization, batched greedy decoding

pub mod attention;
pub mod config;
pub mod cpu_kernels;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod model;
pub mod network;
pub mod paged_cache;
pub mod paged_ops;
pub mod placement;
pub mod prompt;
pub mod quant_matmul;
pub mod scoring;
pub mod source;
pub mod tensor_parallel;
pub mod token_codec;
pub mod tokenizer;
pub mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::{EngineError, Result};
pub use generate::{BatchOptions, GenerationOutput, GenerationRequest, GenerationStats};
pub use model::{LoadOptions, Model};
pub use placement::{DeviceSpec, Placement};
pub use prompt::{ChatMessage, ChatTemplate};
pub use scoring::{NextTokenScores, ScoringOptions};
pub use source::{ModelSource, DEFAULT_MODEL};
pub use weights::WeightFormat;
