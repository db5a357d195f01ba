//! The engine's one error type. Every variant names the file, model or request it is about,
//! so the binary can print it once, as is.

use std::path::PathBuf;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model {path}: no such file or folder")]
    ModelNotFound { path: PathBuf },

    #[error(
        "model folder {dir}: no config.json (expected a Hugging Face model folder or a .gguf file)"
    )]
    MissingConfig { dir: PathBuf },

    #[error("model folder {dir}: no weights (model.safetensors, or shards listed in model.safetensors.index.json)")]
    MissingWeights { dir: PathBuf },

    #[error("model folder {dir}: no tokenizer.json")]
    MissingTokenizer { dir: PathBuf },

    #[error(
        "model {path}: unsupported architecture {architecture:?} (supported: {})",
        crate::config::Architecture::SUPPORTED
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },

    #[error(
        "model {path}: {family} needs {what}, which the paged path (GPUs, tensor parallelism) \
         does not have yet; run this model on the CPU without --tensor-parallel"
    )]
    NotOnPagedPath { path: PathBuf, family: String, what: String },

    #[error("model {path}: not a readable GGUF file: {reason}")]
    BadGguf { path: PathBuf, reason: String },

    #[error("model {path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("model {path}: weight {tensor}: {reason}")]
    BadWeights { path: PathBuf, tensor: String, reason: String },

    #[error("model {path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    #[error("model {model}: chat template: {reason}")]
    ChatTemplate { model: String, reason: ChatTemplateError },

    #[error("request {request}: {reason}")]
    BadRequest { request: usize, reason: String },

    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },

    #[error("model {path}: tensor parallelism {degree}: {reason}")]
    TensorParallel { path: PathBuf, degree: usize, reason: String },

    #[error("model {path} does not fit on {device}: {reason}")]
    DoesNotFit { path: PathBuf, device: String, reason: String },

    #[error("key/value cache full: {positions} positions asked for, {free_blocks} free blocks of {block_size}")]
    KvCacheFull { positions: usize, free_blocks: usize, block_size: usize },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Why a chat template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatTemplateError {
    /// The model ships none.
    #[error(
        "the model has no chat template (tokenizer_config.json chat_template / GGUF tokenizer.chat_template)"
    )]
    Missing,
    /// The Jinja source does not compile.
    #[error("{0}")]
    Compile(String),
    /// It compiles but fails on a single user message (checked when the model loads).
    #[error("test rendering failed: {0}")]
    TestRender(String),
    /// It fails on these messages.
    #[error("{0}")]
    Render(String),
}

/// A model config the engine cannot run, whatever its file format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConfig {
    #[error("{field} is 0")]
    Zero { field: &'static str },
    #[error("head_dim {head_dim} is odd; rotary embeddings need pairs")]
    OddHeadDim { head_dim: usize },
}

/// A device name that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceSpecError {
    #[error("{input:?}: expected cuda:N with N a GPU index")]
    BadIndex { input: String },
    #[error("{input:?}: expected cpu, cuda or cuda:N")]
    Unknown { input: String },
}
