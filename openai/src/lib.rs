//! A client of OpenAI-compatible APIs (OpenAI, vLLM, TGI, SGLang, llama.cpp's server,
//! `herd serve`), for remote generators and judges.
//!
//! One [`OpenAiClient`] per endpoint: at most `concurrency` requests in flight, each with a
//! timeout; 429, 5xx, timeouts and broken connections are retried with exponential backoff
//! and jitter, waiting at least what the server's `Retry-After` asks. A refused key or a
//! bad request fails at once. The key comes from the environment or a file and appears in
//! no log, error or `Debug` output.

mod client;
mod secret;

pub use client::{
    ChatMessage, ClientConfig, Completion, CompletionRequest, OpenAiClient, Prompt, RemoteError,
    TokenLogprob,
};
pub use secret::ApiKey;
