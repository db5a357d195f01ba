//! The routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/health`, `/metrics`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herd_engine::{ChatMessage, GenerationOutput, GenerationRequest, Model};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::protocol::{
    chat_logprobs, completion_logprobs, finish_reason, usage, Asked, ChatBody, ChatPrompt,
    CompletionBody, CompletionPrompt, TokenNames,
};
use crate::scheduler::{Event, Scheduler};
use crate::{ApiKey, ServeMetrics};

/// Tokens a completion may generate when the request names no `max_tokens` (OpenAI's
/// default for `/v1/completions`; chat requests default to the rest of the context).
const COMPLETION_DEFAULT_MAX_TOKENS: usize = 16;

pub(crate) struct AppState {
    pub name: String,
    pub api_key: Option<ApiKey>,
    pub engine: OnceLock<Arc<Scheduler>>,
    pub metrics: ServeMetrics,
    pub created: u64,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(name: String, api_key: Option<ApiKey>, metrics: ServeMetrics) -> Self {
        Self {
            name,
            api_key,
            engine: OnceLock::new(),
            metrics,
            created: unix_now(),
            next_id: AtomicU64::new(0),
        }
    }

    fn engine(&self) -> Result<&Arc<Scheduler>, ApiError> {
        self.engine.get().ok_or_else(ApiError::loading)
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else { return Ok(()) };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if key.matches(given.trim()) {
            Ok(())
        } else {
            Err(ApiError::bad_key())
        }
    }

    fn check_model(&self, asked: Option<&str>) -> Result<(), ApiError> {
        match asked {
            Some(asked) if asked != self.name => Err(ApiError::unknown_model(asked, &self.name)),
            _ => Ok(()),
        }
    }

    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.created)
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.get() {
        Some(_) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        None => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response()
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Some(engine) = state.engine.get() {
        state.metrics.kv_cache_usage.set(engine.model().kv_cache_usage().unwrap_or(0.0));
    }
    let headers = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (headers, state.metrics.render()).into_response()
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let answer = state.authorize(&headers).map(|()| {
        Json(json!({
            "object": "list",
            "data": [{
                "id": state.name,
                "object": "model",
                "created": state.created,
                "owned_by": "herd",
                "max_model_len": state.engine.get().map(|e| e.model().context_length()),
            }],
        }))
    });
    finish(&state, "models", Instant::now(), answer)
}

/// Counts the answer in the metrics and turns an error into its OpenAI body.
fn finish(
    state: &AppState,
    endpoint: &str,
    started: Instant,
    answer: Result<impl IntoResponse, ApiError>,
) -> Response {
    let response = match answer {
        Ok(ok) => ok.into_response(),
        Err(error) => {
            if error.status.is_server_error() {
                tracing::error!(endpoint, message = %error.message, "request failed");
            }
            error.into_response()
        }
    };
    let status = response.status().as_u16().to_string();
    state.metrics.requests.with_label_values(&[endpoint, &status]).inc();
    // A stream's time is counted when it ends.
    if !is_event_stream(&response) {
        let seconds = started.elapsed().as_secs_f64();
        state.metrics.request_seconds.with_label_values(&[endpoint]).observe(seconds);
    }
    response
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// A JSON body into `T`; a field of the wrong type or a missing one is named.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let param = if path != "." {
            path
        } else if let Some(field) = message.strip_prefix("missing field `") {
            field.split('`').next().unwrap_or_default().to_string()
        } else {
            "body".to_string()
        };
        ApiError::invalid(&param, format!("{param}: {message}"))
    })
}

impl TokenNames for Model {
    fn token_name(&self, token: u32) -> String {
        self.token_text(token).unwrap_or_default()
    }
}

/// Which API a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completion,
}

impl Api {
    fn endpoint(self) -> &'static str {
        match self {
            Api::Chat => "chat_completions",
            Api::Completion => "completions",
        }
    }
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let answer = async {
        state.authorize(&headers)?;
        let chat = parse::<ChatBody>(&body)?;
        let how = chat.chat_prompt()?;
        let (model, messages, asked) = chat.into_parts(parse(&body)?)?;
        state.check_model(model.as_deref())?;
        let engine = state.engine()?.clone();
        let prompt = chat_prompt(engine.model(), &messages, how).map_err(|e| {
            ApiError::invalid("messages", format!("cannot render the chat template: {e}"))
        })?;
        generate(&state, engine, Api::Chat, prompt, asked, started).await
    }
    .await;
    finish(&state, Api::Chat.endpoint(), started, answer)
}

/// The prompt's tokens: the rendered messages, closed with the generation prompt or with
/// the last (assistant) message left open, cut right after its text as vLLM does.
fn chat_prompt(
    model: &Model,
    messages: &[ChatMessage],
    how: ChatPrompt,
) -> herd_engine::Result<Vec<u32>> {
    match how {
        ChatPrompt::GenerationPrompt => model.chat_prompt(messages),
        ChatPrompt::ContinueFinal => {
            let text = model.render_chat(messages, false)?;
            let last = messages.last().map_or("", |m| m.content.as_str());
            let end = text.rfind(last).map_or(text.len(), |at| at + last.len());
            model.encode(&text[..end], false)
        }
    }
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let answer = async {
        state.authorize(&headers)?;
        let (model, prompt, asked) = parse::<CompletionBody>(&body)?.into_parts(parse(&body)?)?;
        state.check_model(model.as_deref())?;
        let engine = state.engine()?.clone();
        let tokens = match prompt {
            CompletionPrompt::Text(text) => engine
                .model()
                .encode(&text, true)
                .map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize: {e}")))?,
            CompletionPrompt::Tokens(tokens) => {
                let vocab = engine.model().config().vocab_size;
                if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
                    let reason = format!("token id {bad} is outside the vocabulary ({vocab})");
                    return Err(ApiError::invalid("prompt", reason));
                }
                tokens
            }
        };
        generate(&state, engine, Api::Completion, tokens, asked, started).await
    }
    .await;
    finish(&state, Api::Completion.endpoint(), started, answer)
}

/// The engine request for a checked prompt: the context bounds `max_tokens`.
fn engine_request(
    model: &Model,
    api: Api,
    prompt_tokens: Vec<u32>,
    asked: &Asked,
) -> Result<GenerationRequest, ApiError> {
    let context = model.context_length();
    let prompt_param = if api == Api::Chat { "messages" } else { "prompt" };
    let prompt = prompt_tokens.len();
    if prompt >= context {
        let message = format!("the prompt has {prompt} tokens; this model's context holds {context}, with room for at least one generated token");
        return Err(ApiError::context_too_long(prompt_param, message));
    }
    let max_new_tokens = match (asked.max_tokens, api) {
        (Some(max), _) if prompt + max > context => {
            let message = format!("the prompt's {prompt} tokens and max_tokens {max} exceed this model's context ({context})");
            return Err(ApiError::context_too_long("max_tokens", message));
        }
        (Some(max), _) => max,
        (None, Api::Chat) => context - prompt,
        (None, Api::Completion) => COMPLETION_DEFAULT_MAX_TOKENS.min(context - prompt),
    };
    Ok(GenerationRequest {
        id: 0,
        prompt_tokens,
        max_new_tokens,
        stop: asked.stop.clone(),
        sampling: asked.sampling,
        top_logprobs: asked.top_logprobs,
    })
}

async fn generate(
    state: &Arc<AppState>,
    engine: Arc<Scheduler>,
    api: Api,
    prompt_tokens: Vec<u32>,
    asked: Asked,
    started: Instant,
) -> Result<Response, ApiError> {
    let request = engine_request(engine.model(), api, prompt_tokens, &asked)?;
    let events = engine.submit(request).map_err(ApiError::engine)?;
    let id = state.new_id(if api == Api::Chat { "chatcmpl" } else { "cmpl" });
    if asked.stream {
        Ok(stream(state.clone(), engine, api, id, asked, events, started).into_response())
    } else {
        let output = collect(events).await?;
        Ok(Json(whole_answer(state, engine.model(), api, &id, &asked, &output)).into_response())
    }
}

/// Waits for the sequence's end.
async fn collect(mut events: mpsc::UnboundedReceiver<Event>) -> Result<GenerationOutput, ApiError> {
    while let Some(event) = events.recv().await {
        match event {
            Event::Token { .. } => {}
            Event::Finished(output) => return Ok(output),
            Event::Refused(reason) => return Err(ApiError::invalid("prompt", reason)),
            Event::Failed(reason) => return Err(ApiError::engine(reason)),
        }
    }
    Err(ApiError::engine("the engine stopped".into()))
}

fn whole_answer(
    state: &AppState,
    model: &Model,
    api: Api,
    id: &str,
    asked: &Asked,
    output: &GenerationOutput,
) -> Value {
    let reason = finish_reason(output.finish_reason);
    let choice = match api {
        Api::Chat => json!({
            "index": 0,
            "message": { "role": "assistant", "content": output.text },
            "logprobs": asked.top_logprobs.map(|_| chat_logprobs(model, &output.logprobs)),
            "finish_reason": reason,
        }),
        Api::Completion => json!({
            "index": 0,
            "text": output.text,
            "logprobs": asked.top_logprobs.map(|_| completion_logprobs(model, &output.logprobs, 0)),
            "finish_reason": reason,
        }),
    };
    json!({
        "id": id,
        "object": if api == Api::Chat { "chat.completion" } else { "text_completion" },
        "created": unix_now(),
        "model": state.name,
        "choices": [choice],
        "usage": usage(output),
    })
}

/// Server-sent events: a chunk per settled piece of text, the end with its reason, usage
/// when asked for, then `[DONE]`. A client that goes away cancels the sequence.
fn stream(
    state: Arc<AppState>,
    engine: Arc<Scheduler>,
    api: Api,
    id: String,
    asked: Asked,
    mut events: mpsc::UnboundedReceiver<Event>,
    started: Instant,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let (chunks, receiver) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let created = unix_now();
        let object = if api == Api::Chat { "chat.completion.chunk" } else { "text_completion" };
        let chunk = |choice: Value| {
            json!({ "id": id, "object": object, "created": created, "model": state.name, "choices": [choice] })
                .to_string()
        };
        let piece = |text: &str, logprobs: Option<Value>, reason: Option<&str>| match api {
            Api::Chat => {
                let delta = if text.is_empty() { json!({}) } else { json!({"content": text}) };
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason})
            }
            Api::Completion => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason})
            }
        };
        let model = engine.model();
        if api == Api::Chat {
            let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
            if chunks.send(chunk(first)).await.is_err() {
                return;
            }
        }
        let mut sent = String::new();
        while let Some(event) = events.recv().await {
            let message = match event {
                Event::Token { text, logprob } => {
                    let listed = asked.top_logprobs.and(logprob).map(|lp| match api {
                        Api::Chat => chat_logprobs(model, std::slice::from_ref(&lp)),
                        Api::Completion => {
                            completion_logprobs(model, std::slice::from_ref(&lp), sent.len())
                        }
                    });
                    if text.is_empty() && listed.is_none() {
                        continue;
                    }
                    sent.push_str(&text);
                    chunk(piece(&text, listed, None))
                }
                Event::Finished(output) => {
                    let rest = output.text.strip_prefix(sent.as_str()).unwrap_or_default();
                    if !rest.is_empty()
                        && chunks.send(chunk(piece(rest, None, None))).await.is_err()
                    {
                        return;
                    }
                    let end = chunk(piece("", None, Some(finish_reason(output.finish_reason))));
                    if chunks.send(end).await.is_err() {
                        return;
                    }
                    if asked.include_usage {
                        let usage_chunk = json!({"id": id, "object": object, "created": created, "model": state.name, "choices": [], "usage": usage(&output)});
                        let _ = chunks.send(usage_chunk.to_string()).await;
                    }
                    break;
                }
                Event::Refused(reason) => ApiError::invalid("prompt", reason).body().to_string(),
                Event::Failed(reason) => ApiError::engine(reason).body().to_string(),
            };
            if chunks.send(message).await.is_err() {
                return; // the client is gone; dropping `events` cancels the sequence
            }
        }
        let _ = chunks.send("[DONE]".into()).await;
        let seconds = started.elapsed().as_secs_f64();
        state.metrics.request_seconds.with_label_values(&[api.endpoint()]).observe(seconds);
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let data = receiver.recv().await?;
        Some((Ok(SseEvent::default().data(data)), receiver))
    });
    Sse::new(stream)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
