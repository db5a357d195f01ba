//! `herd serve` through the binary on the default model: the OpenAI API's shapes, answers
//! equal to the engine's in-process ones, streaming, logprobs, errors and the API key.

#[path = "serve/served.rs"]
mod served;

use std::process::Command;
use std::sync::OnceLock;

use served::{client, Served};

use herd_engine::{BatchOptions, ChatMessage, GenerationRequest, LoadOptions, Model};
use serde_json::{json, Value};

const INSTRUCTIONS: [&str; 3] = [
    "How did US states get their names?",
    "What is some cool music from the 1920s?",
    "Give three tips for staying healthy.",
];

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| Served::start(&[], &[]))
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path =
            herd_runtime::model_files::resolve(herd_runtime::model_files::DEFAULT_MODEL).unwrap();
        Model::load(path, &LoadOptions::default()).unwrap()
    })
}

fn chat_body(instruction: &str, max_tokens: usize) -> Value {
    json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": instruction}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[test]
fn lists_the_served_model() {
    let response = client().get(format!("{}/models", served().base)).send().unwrap();
    let body: Value = response.json().unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "smollm2-135m-instruct");
    assert_eq!(body["data"][0]["object"], "model");
}

#[test]
fn concurrent_greedy_chat_answers_equal_the_engines_in_process_answers() {
    let requests: Vec<GenerationRequest> = INSTRUCTIONS
        .iter()
        .enumerate()
        .map(|(id, i)| GenerationRequest {
            id,
            prompt_tokens: model().chat_prompt(&[ChatMessage::new("user", *i)]).unwrap(),
            max_new_tokens: 40,
            ..Default::default()
        })
        .collect();
    let expected = model().generate_all(requests, &BatchOptions::default()).unwrap();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = INSTRUCTIONS
            .iter()
            .map(|i| scope.spawn(move || served().post("/chat/completions", chat_body(i, 40))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((status, body), want) in answers.iter().zip(&expected) {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["object"], "chat.completion");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], want.text.as_str());
        let reason = if want.output_tokens == 40 { "length" } else { "stop" };
        assert_eq!(choice["finish_reason"], reason);
        assert_eq!(body["usage"]["prompt_tokens"], want.prompt_tokens);
        assert_eq!(body["usage"]["completion_tokens"], want.output_tokens);
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    }
}

#[test]
fn a_completion_encodes_the_prompt_with_the_tokenizers_specials() {
    let prompt = "The capital of France is";
    let tokens = model().encode(prompt, true).unwrap();
    let request =
        GenerationRequest { prompt_tokens: tokens, max_new_tokens: 8, ..Default::default() };
    let want = model().generate_all(vec![request], &BatchOptions::default()).unwrap().remove(0);
    let (status, body) = served().post(
        "/completions",
        json!({"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 3}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], want.text.as_str());
    let logprobs = &body["choices"][0]["logprobs"];
    assert_eq!(logprobs["tokens"].as_array().unwrap().len(), want.output_tokens);
    assert_eq!(logprobs["top_logprobs"][0].as_object().unwrap().len(), 3);
    assert_eq!(logprobs["text_offset"][0], 0);
}

#[test]
fn streamed_chunks_add_up_to_the_whole_answer_then_usage_then_done() {
    let (_, whole) = served().post("/chat/completions", chat_body(INSTRUCTIONS[1], 30));
    let mut body = chat_body(INSTRUCTIONS[1], 30);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = served().stream("/chat/completions", body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    assert!(chunks.len() > 5, "streamed in pieces, not at once: {} chunks", chunks.len());
    let ends: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"].get(0).is_some_and(|ch| !ch["finish_reason"].is_null()))
        .collect();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
}

#[test]
fn chat_logprobs_list_the_chosen_token_first_when_greedy() {
    let mut body = chat_body(INSTRUCTIONS[2], 6);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(5);
    let (status, answer) = served().post("/chat/completions", body);
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6);
    for entry in content {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        assert_eq!(top[0]["token"], entry["token"]);
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
    }
}

#[test]
fn sampling_with_a_seed_repeats_and_differs_from_greedy() {
    let mut body = chat_body(INSTRUCTIONS[0], 24);
    body["temperature"] = json!(1.0);
    body["seed"] = json!(1234);
    let (_, first) = served().post("/chat/completions", body.clone());
    let (_, again) = served().post("/chat/completions", body.clone());
    assert_eq!(first["choices"][0]["message"], again["choices"][0]["message"]);
    let texts: Vec<Value> = (0..4)
        .map(|seed| {
            body["seed"] = json!(seed);
            served().post("/chat/completions", body.clone()).1["choices"][0]["message"]["content"]
                .clone()
        })
        .collect();
    assert!(texts.iter().any(|t| *t != texts[0]), "4 seeds gave one answer: {texts:?}");
}

#[test]
fn bad_requests_get_openai_errors_naming_the_field() {
    let cases = [
        (json!({"messages": "hello"}), 400, Some("messages"), None),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            400,
            Some("temperature"),
            None,
        ),
        (json!({"messages": [{"role": "user", "content": "x"}], "n": 3}), 400, Some("n"), None),
        (
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}),
            400,
            Some("max_tokens"),
            Some("context_length_exceeded"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "word ".repeat(9000)}]}),
            400,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
    ];
    for (body, status, param, code) in cases {
        let (got, answer) = served().post("/chat/completions", body.clone());
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"].as_str(), param, "{answer}");
        assert_eq!(answer["error"]["code"].as_str(), code, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().len() > 5);
        assert_eq!(answer["error"]["type"], "invalid_request_error");
    }
    let raw = client()
        .post(format!("{}/chat/completions", served().base))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(raw.status(), 400);
}

#[test]
fn metrics_count_requests_tokens_and_sequences() {
    served().post("/chat/completions", chat_body(INSTRUCTIONS[0], 4));
    let metrics_url = served().base.trim_end_matches("/v1").to_string() + "/metrics";
    let text = client().get(metrics_url).send().unwrap().text().unwrap();
    for name in [
        "herd_serve_requests_total{endpoint=\"chat_completions\",status=\"200\"}",
        "herd_serve_request_seconds_bucket",
        "herd_serve_time_to_first_token_seconds_bucket",
        "herd_serve_generated_tokens_total",
        "herd_serve_sequences_running",
        "herd_serve_sequences_waiting",
        "herd_serve_kv_cache_usage_ratio",
        "herd_serve_model_loaded 1",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let generated: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("herd_serve_generated_tokens_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(generated >= 4.0);
}

#[test]
fn with_a_key_requests_without_it_are_refused_and_the_key_is_never_shown() {
    let key = "sk-herd-test-7f3a9c";
    let served = Served::start(&[], &[("HERD_API_KEY", key)]);
    let body = chat_body("Name a color.", 3);
    let (status, answer) = served.post("/chat/completions", body.clone());
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["code"], "invalid_api_key");
    let (status, answer) =
        served.post_with_key("/chat/completions", body.clone(), Some("sk-wrong"));
    assert_eq!(status, 401);
    assert!(!answer.to_string().contains(key) && !answer.to_string().contains("sk-wrong"));
    let (status, _) = served.post_with_key("/chat/completions", body, Some(key));
    assert_eq!(status, 200);
    let logs = served.stderr.lock().unwrap().clone();
    assert!(logs.contains("loaded"), "the server logged: {logs}");
    assert!(!logs.contains(key), "the key appears in the logs");
}

#[test]
fn the_official_openai_python_client_gets_what_the_api_promises() {
    let output = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve/openai_client.py"))
        .arg(&served().base)
        .arg("smollm2-135m-instruct")
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the openai client failed (scripts/test-services.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (_, whole) = served().post("/chat/completions", chat_body(INSTRUCTIONS[2], 20));
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(got["chat_text"], text);
    assert_eq!(
        got["stream_pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect::<String>(),
        text
    );
    assert_eq!(
        got["chat_usage"],
        json!([whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"]])
    );
    assert_eq!(got["stream_usage"], got["chat_usage"]);
    assert_eq!(got["chat_finish"], whole["choices"][0]["finish_reason"]);
    let logprobs = got["chat_logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len(), 20);
    for entry in logprobs {
        assert_eq!(entry[2][0], entry[0], "greedy: the chosen token is the most likely");
    }
    assert_eq!(got["completion_text"], got["completion_stream_text"]);
    assert_eq!(got["completion_tokens"].as_array().unwrap().len(), 8);
    assert_eq!(got["completion_top"][0].as_object().unwrap().len(), 2);
    assert_eq!(got["models"], json!(["smollm2-135m-instruct"]));
    assert_eq!(got["error"], json!([400, "max_tokens", "context_length_exceeded"]));
}
