//! Generators served elsewhere, over an OpenAI-compatible API (`endpoint=` in the generator
//! spec): each job becomes one request; answers are stored as they land.

use herd_core::jobs::{FinishReason, GenerationJob, RemoteApi, RemoteEndpoint};
use herd_core::prompts::{render, Prompt};
use herd_openai::{ChatMessage, Completion, CompletionRequest, RemoteError};
use herd_runtime::RemoteSettings;

/// The environment variable holding the key remote generators send (`OPENAI_API_KEY_FILE`,
/// a file's path, wins over it).
pub const API_KEY_VARIABLE: &str = "OPENAI_API_KEY";

/// Checks before a run that `endpoint` answers and takes the key.
pub async fn check_endpoint(endpoint: &RemoteEndpoint, model: &str) -> Result<(), RemoteError> {
    let client = RemoteSettings::default().client(&endpoint.url, &[API_KEY_VARIABLE])?;
    client.check().await?;
    tracing::info!(url = %client.url(), model, "remote generator reachable");
    Ok(())
}

/// The request for `job`: its template's prompt through the endpoint's API, greedy unless
/// the generator samples.
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
        temperature: generator.sampling.map_or(0.0, |s| s.temperature as f32),
        top_p: generator.sampling.map_or(1.0, |s| s.top_p as f32),
        seed: generator.sampling.map(|s| s.seed_for(job.index)),
        stop: generator.stop.clone(),
        top_logprobs: None,
        continue_final_message: false,
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
