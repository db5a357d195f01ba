//! Requests, retries and the answers' checked fields.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::ApiKey;

/// How one endpoint is reached.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The API's base URL, paths appended to it: `http://host:8000/v1`.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// Per attempt, from sending to the last byte of the answer.
    pub timeout: Duration,
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The first retry waits about this long, each next one twice as long...
    pub backoff_initial: Duration,
    /// ...up to this (a server's `Retry-After` may ask for longer, up to ten times this).
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: None,
            timeout: Duration::from_secs(600),
            max_attempts: 8,
            concurrency: 16,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// What the model is given: chat messages (`/chat/completions`, the server applies the
/// model's chat template) or text (`/completions`).
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// `Some(k)`: each generated token's log-probability and the `k` most likely tokens.
    pub top_logprobs: Option<usize>,
    /// Chat only: the last message is an assistant turn the answer continues (vLLM's and
    /// herd serve's `continue_final_message`, with `add_generation_prompt: false`).
    pub continue_final_message: bool,
}

/// A generated token's log-probability and the most likely alternatives, as the server
/// names the tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

/// One answer, its fields checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// `stop`, `length`, ... as the server says.
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
    /// Present when asked for and sent.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Tries it took (1: no retry).
    pub attempts: u32,
    /// From the first try to the answer, waits included.
    pub seconds: f64,
    /// The answer's body as received.
    pub raw: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: the API key was refused (HTTP {status}): {message}")]
    Unauthorized { url: String, status: u16, message: String },
    #[error("{url}: the request was refused (HTTP {status}): {message}")]
    Rejected { url: String, status: u16, message: String },
    #[error("{url}: no answer after {attempts} attempts; the last: {last}")]
    Exhausted { url: String, attempts: u32, last: String },
    #[error("{url}: {reason}")]
    Config { url: String, reason: String },
}

impl RemoteError {
    /// Whether retrying later cannot help (a refused key, a request the server rejects).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RemoteError::Exhausted { .. })
    }
}

/// One attempt's failure.
enum Failure {
    /// Worth another try, after at least `wait` when the server said so.
    Retry {
        reason: String,
        wait: Option<Duration>,
    },
    Fatal(RemoteError),
}

/// A client of one endpoint. Cheap to clone; clones share the connection pool and the
/// concurrency bound.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    /// The base URL without credentials, for logs and errors.
    shown_url: String,
    permits: Arc<Semaphore>,
    jitter: Arc<AtomicU64>,
}

impl OpenAiClient {
    pub fn new(config: ClientConfig) -> Result<Self, RemoteError> {
        let shown_url = redact_url(&config.base_url);
        let url = Url::parse(&config.base_url).map_err(|e| RemoteError::Config {
            url: shown_url.clone(),
            reason: format!("not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            let reason = format!("scheme {} is not http or https", url.scheme());
            return Err(RemoteError::Config { url: shown_url, reason });
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| RemoteError::Config { url: shown_url.clone(), reason: e.to_string() })?;
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Ok(Self {
            http,
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config: Arc::new(config),
            shown_url,
            jitter: Arc::new(AtomicU64::new(seed)),
        })
    }

    /// The base URL as logs show it (no credentials).
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Checks once, before any work, that the endpoint answers and takes the key:
    /// `GET /models`. A refused key or an unreachable server is an error now rather than a
    /// failed job later; a server without `/models` (404) passes.
    pub async fn check(&self) -> Result<(), RemoteError> {
        let url = format!("{}/models", self.config.base_url);
        let shown = format!("{}/models", self.shown_url);
        let mut builder = self.http.get(&url);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = builder.send().await.map_err(|e| RemoteError::Exhausted {
            url: shown.clone(),
            attempts: 1,
            last: self.scrub(&format!("cannot reach it: {}", describe(&e))),
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = self.scrub(&error_message(&response.text().await.unwrap_or_default()));
            return Err(RemoteError::Unauthorized { url: shown, status: status.as_u16(), message });
        }
        Ok(())
    }

    /// Asks for one answer, retrying what is worth retrying.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, RemoteError> {
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let (path, body) = request_body(request);
        let url = format!("{}{path}", self.config.base_url);
        let shown = format!("{}{path}", self.shown_url);
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(&url, &shown, &body, request).await {
                Ok(mut completion) => {
                    completion.attempts = attempt;
                    completion.seconds = started.elapsed().as_secs_f64();
                    return Ok(completion);
                }
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry { reason, wait }) => {
                    if attempt >= self.config.max_attempts {
                        return Err(RemoteError::Exhausted {
                            url: shown,
                            attempts: attempt,
                            last: reason,
                        });
                    }
                    let backoff = self.backoff(attempt);
                    let cap = self.config.backoff_max * 10;
                    let wait = wait.map_or(backoff, |asked| asked.min(cap));
                    tracing::warn!(url = %shown, attempt, wait_s = wait.as_secs_f64(), %reason, "retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        shown: &str,
        body: &Value,
        request: &CompletionRequest,
    ) -> Result<Completion, Failure> {
        let mut builder = self.http.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = builder.send().await.map_err(|e| Failure::Retry {
            reason: self.scrub(&format!("sending: {}", describe(&e))),
            wait: None,
        })?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = response.text().await.map_err(|e| Failure::Retry {
            reason: self.scrub(&format!("reading the answer (HTTP {status}): {}", describe(&e))),
            wait,
        })?;
        if !status.is_success() {
            let message = self.scrub(&error_message(&text));
            let (url, code) = (shown.to_string(), status.as_u16());
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Failure::Fatal(RemoteError::Unauthorized { url, status: code, message })
                }
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::CONFLICT => {
                    Failure::Retry { reason: format!("HTTP {code}: {message}"), wait }
                }
                s if s.is_server_error() => {
                    Failure::Retry { reason: format!("HTTP {code}: {message}"), wait }
                }
                _ => Failure::Fatal(RemoteError::Rejected { url, status: code, message }),
            });
        }
        let raw: Value = serde_json::from_str(&text).map_err(|e| Failure::Retry {
            reason: format!("the answer is not JSON: {e}"),
            wait: None,
        })?;
        parse_answer(raw, request).map_err(|reason| Failure::Retry {
            reason: format!("malformed answer: {reason}"),
            wait: None,
        })
    }

    /// Exponential backoff with jitter: a uniform draw in [d/2, d], d doubling per attempt.
    fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self.config.backoff_initial.saturating_mul(1 << (attempt - 1).min(20));
        let full = doubled.min(self.config.backoff_max);
        let draw = splitmix(self.jitter.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        full.mul_f64(0.5 + 0.5 * unit)
    }

    fn scrub(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) => key.scrub(text),
            None => text.to_string(),
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A reqwest error with its causes (a timeout, a reset connection).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timed out".to_string() } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // reqwest names the URL; keep it free of credentials.
    text
}

/// The server's error message (OpenAI's `{"error": {"message"}}` or the body), shortened.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let mut short: String = message.chars().take(500).collect();
    if short.len() < message.len() {
        short.push('…');
    }
    short
}

/// `Retry-After` in seconds (or OpenAI's `retry-after-ms`); an HTTP date is not honoured.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()) {
        if let Ok(ms) = ms.trim().parse::<f64>() {
            if ms.is_finite() && ms >= 0.0 {
                return Some(Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }
    let seconds: f64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// `url` without a user name or password.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// The path and JSON body of `request`.
fn request_body(request: &CompletionRequest) -> (&'static str, Value) {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": 1,
        "stream": false,
    });
    if let Some(seed) = request.seed {
        body["seed"] = json!(seed);
    }
    if !request.stop.is_empty() {
        body["stop"] = json!(request.stop);
    }
    match &request.prompt {
        Prompt::Chat(messages) => {
            let messages: Vec<Value> =
                messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
            body["messages"] = Value::Array(messages);
            if request.continue_final_message {
                body["continue_final_message"] = json!(true);
                body["add_generation_prompt"] = json!(false);
            }
            if let Some(k) = request.top_logprobs {
                body["logprobs"] = json!(true);
                body["top_logprobs"] = json!(k);
            }
            ("/chat/completions", body)
        }
        Prompt::Text(text) => {
            body["prompt"] = json!(text);
            if let Some(k) = request.top_logprobs {
                body["logprobs"] = json!(k);
            }
            ("/completions", body)
        }
    }
}

/// The checked fields of an answer: a server's text is data, never trusted to be shaped.
fn parse_answer(raw: Value, request: &CompletionRequest) -> Result<Completion, String> {
    let choice = raw["choices"].get(0).ok_or("no choices[0]")?;
    let chat = matches!(request.prompt, Prompt::Chat(_));
    let text = if chat {
        match &choice["message"]["content"] {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => return Err(format!("choices[0].message.content is {other}, not text")),
        }
    } else {
        choice["text"].as_str().ok_or("choices[0].text is not text")?.to_string()
    };
    let count = |field: &str| raw["usage"][field].as_u64().map(|n| n as usize);
    let logprobs = match request.top_logprobs {
        None => None,
        Some(_) if chat => parse_chat_logprobs(&choice["logprobs"])?,
        Some(_) => parse_completion_logprobs(&choice["logprobs"])?,
    };
    Ok(Completion {
        text,
        finish_reason: choice["finish_reason"].as_str().map(str::to_string),
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        logprobs,
        attempts: 0,
        seconds: 0.0,
        raw,
    })
}

fn parse_chat_logprobs(listing: &Value) -> Result<Option<Vec<TokenLogprob>>, String> {
    let Some(content) = listing["content"].as_array() else { return Ok(None) };
    let mut out = Vec::with_capacity(content.len());
    for (i, entry) in content.iter().enumerate() {
        let pair = |e: &Value| -> Option<(String, f64)> {
            Some((e["token"].as_str()?.to_string(), e["logprob"].as_f64()?))
        };
        let (token, logprob) =
            pair(entry).ok_or_else(|| format!("logprobs.content[{i}] lacks token or logprob"))?;
        let top = entry["top_logprobs"]
            .as_array()
            .map(|tops| tops.iter().filter_map(pair).collect())
            .unwrap_or_default();
        out.push(TokenLogprob { token, logprob, top });
    }
    Ok(Some(out))
}

fn parse_completion_logprobs(listing: &Value) -> Result<Option<Vec<TokenLogprob>>, String> {
    let Some(tokens) = listing["tokens"].as_array() else { return Ok(None) };
    let mut out = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let token = token.as_str().ok_or_else(|| format!("logprobs.tokens[{i}] is not text"))?;
        let logprob = listing["token_logprobs"][i].as_f64().unwrap_or(f64::NEG_INFINITY);
        let mut top: Vec<(String, f64)> = listing["top_logprobs"][i]
            .as_object()
            .map(|m| m.iter().filter_map(|(t, l)| Some((t.clone(), l.as_f64()?))).collect())
            .unwrap_or_default();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.push(TokenLogprob { token: token.to_string(), logprob, top });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: Prompt) -> CompletionRequest {
        CompletionRequest {
            model: "m".into(),
            prompt,
            max_tokens: 5,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: vec!["###".into()],
            top_logprobs: Some(2),
            continue_final_message: false,
        }
    }

    #[test]
    fn bodies_follow_each_endpoints_shape() {
        let (path, body) =
            request_body(&request(Prompt::Chat(vec![ChatMessage::new("user", "Hi")])));
        assert_eq!(path, "/chat/completions");
        assert_eq!(body["messages"], json!([{"role": "user", "content": "Hi"}]));
        assert_eq!(
            (body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(true), json!(2))
        );
        assert_eq!(body["stop"], json!(["###"]));
        let (path, body) = request_body(&request(Prompt::Text("Once".into())));
        assert_eq!(path, "/completions");
        assert_eq!((body["prompt"].clone(), body["logprobs"].clone()), (json!("Once"), json!(2)));
        assert!(body.get("seed").is_none());
    }

    #[test]
    fn answers_are_checked_not_trusted() {
        let chat = request(Prompt::Chat(vec![]));
        let good = json!({"choices": [{"message": {"content": "Hello"}, "finish_reason": "stop",
            "logprobs": {"content": [{"token": "Hello", "logprob": -0.1, "top_logprobs": [{"token": "Hello", "logprob": -0.1}, {"token": "Hi", "logprob": -2.5}]}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        let parsed = parse_answer(good, &chat).unwrap();
        assert_eq!(parsed.text, "Hello");
        assert_eq!(parsed.prompt_tokens, Some(3));
        assert_eq!(parsed.logprobs.unwrap()[0].top[1], ("Hi".to_string(), -2.5));
        assert!(parse_answer(json!({"choices": []}), &chat).is_err());
        assert!(parse_answer(json!({"choices": [{"message": {"content": 5}}]}), &chat).is_err());
        let completion = request(Prompt::Text("x".into()));
        let listing = json!({"choices": [{"text": " Paris", "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.2], "top_logprobs": [{" Lyon": -3.0, " Paris": -0.2}]}}]});
        let parsed = parse_answer(listing, &completion).unwrap();
        assert_eq!(parsed.logprobs.unwrap()[0].top[0].0, " Paris", "sorted most likely first");
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut date = HeaderMap::new();
        date.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let mut config = ClientConfig::new("http://127.0.0.1:1/v1");
        config.backoff_initial = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(1000);
        let client = OpenAiClient::new(config).unwrap();
        for attempt in 1..=8 {
            let full =
                Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_millis(1000));
            let wait = client.backoff(attempt);
            assert!(wait >= full / 2 && wait <= full, "attempt {attempt}: {wait:?} vs {full:?}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_never_shown() {
        let client =
            OpenAiClient::new(ClientConfig::new("https://user:pw@api.example.com/v1/")).unwrap();
        assert_eq!(client.url(), "https://api.example.com/v1");
        assert!(OpenAiClient::new(ClientConfig::new("ftp://x/v1")).is_err());
        assert!(OpenAiClient::new(ClientConfig::new("not a url")).is_err());
    }

    #[test]
    fn error_messages_are_taken_from_openais_shape_and_shortened() {
        assert_eq!(error_message(r#"{"error": {"message": "slow down"}}"#), "slow down");
        assert_eq!(error_message(" upstream gone \n"), "upstream gone");
        assert_eq!(error_message(&"x".repeat(900)).chars().count(), 501);
    }
}
