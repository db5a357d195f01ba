//! Generators served elsewhere, over an OpenAI-compatible API (`endpoint=` in the generator
//! spec): each job becomes one request; answers are stored as they land.

use std::collections::HashMap;
use std::time::Duration;

use herd_core::jobs::{FinishReason, GenerationJob, RemoteApi, RemoteEndpoint};
use herd_core::prompts::{render, Prompt};
use herd_openai::{
    ApiKey, ChatMessage, ClientConfig, Completion, CompletionRequest, OpenAiClient, RemoteError,
};

/// The environment variable holding the key remote generators send (`OPENAI_API_KEY_FILE`,
/// a file's path, wins over it).
pub const API_KEY_VARIABLE: &str = "OPENAI_API_KEY";

/// How remote generators are called.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSettings {
    /// Per attempt.
    pub timeout: Duration,
    /// Tries per answer, the first included.
    pub max_attempts: u32,
    /// Requests in flight per endpoint.
    pub concurrency: usize,
    /// The first retry's wait (doubling, with jitter, up to a minute).
    pub backoff_initial: Duration,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            max_attempts: 8,
            concurrency: 16,
            backoff_initial: Duration::from_secs(1),
        }
    }
}

impl RemoteSettings {
    /// A client for `url`, the key from the environment.
    pub fn client(&self, url: &str) -> Result<OpenAiClient, RemoteError> {
        let api_key = ApiKey::from_env(API_KEY_VARIABLE)
            .map_err(|reason| RemoteError::Config { url: url.to_string(), reason })?;
        OpenAiClient::new(ClientConfig {
            api_key,
            timeout: self.timeout,
            max_attempts: self.max_attempts.max(1),
            concurrency: self.concurrency.max(1),
            backoff_initial: self.backoff_initial,
            ..ClientConfig::new(url)
        })
    }
}

/// Clients by endpoint URL, made once per loop.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    by_url: HashMap<String, OpenAiClient>,
}

impl Clients {
    pub fn get(
        &mut self,
        settings: &RemoteSettings,
        url: &str,
    ) -> Result<OpenAiClient, RemoteError> {
        if let Some(client) = self.by_url.get(url) {
            return Ok(client.clone());
        }
        let client = settings.client(url)?;
        self.by_url.insert(url.to_string(), client.clone());
        Ok(client)
    }
}

/// Checks before a run that `endpoint` answers and takes the key.
pub async fn check_endpoint(endpoint: &RemoteEndpoint, model: &str) -> Result<(), RemoteError> {
    let client = RemoteSettings::default().client(&endpoint.url)?;
    client.check().await?;
    tracing::info!(url = %client.url(), model, "remote generator reachable");
    Ok(())
}

/// The request for `job`: its template's prompt through the endpoint's API, greedy.
pub(crate) fn request(job: &GenerationJob, api: RemoteApi) -> Result<CompletionRequest, String> {
    let generator = &job.generator;
    let prompt = match (render(generator.template, &job.instruction), api) {
        (Prompt::ChatUser(content), RemoteApi::Chat) => {
            herd_openai::Prompt::Chat(vec![ChatMessage::new("user", &content)])
        }
        (Prompt::Text(text), RemoteApi::Completions) => herd_openai::Prompt::Text(text),
        _ => {
            return Err(format!(
                "template {} does not go through api={}",
                generator.template.as_str(),
                api.as_str()
            ))
        }
    };
    Ok(CompletionRequest {
        model: generator.model.clone(),
        prompt,
        max_tokens: generator.max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: None,
        stop: generator.stop.clone(),
        top_logprobs: None,
    })
}

/// Why a remote answer ended, as the domain records it. OpenAI's `stop` covers both the
/// end-of-sequence token and a stop string; herd strips neither from the text.
pub(crate) fn finish_reason(completion: &Completion, job: &GenerationJob) -> FinishReason {
    match completion.finish_reason.as_deref() {
        Some("length") => FinishReason::Length,
        _ if job.generator.stop.is_empty() => FinishReason::Eos,
        _ => FinishReason::Stop,
    }
}
