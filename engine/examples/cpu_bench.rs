//! herd's side of the CPU benchmark against llama.cpp (bench/cpu/run.py drives both sides and
//! prints the table; bench/cpu/README.md).
//!
//! `prepare` writes the workloads as token ids, so both engines read exactly the same
//! prompts: the first N eval-set instructions in the model's chat template, or as bare text with
//! BOS for a model without one (generation),
//! ~900-token chat prompts (prefill), and the judge's prompts (alpaca_eval's ranking prompt
//! filled with eval-set rows, the reference output as both answers, in the judge model's chat
//! template; logprob mode adds the answer prefix).
//! `run` times one workload in this process and prints one JSON line (seconds, tokens, peak
//! RSS), so that every workload's peak memory is its own.
//!
//! cargo run --release -p herd-engine --example cpu_bench -- prepare --out P.json [--gen-prompts 48]
//!   [--judge-prompts 8] [--prefill-prompts 4] [--prefill-len 900]
//! cargo run --release -p herd-engine --example cpu_bench -- run --prompts P.json
//!   --workload gen|prefill|judge-logprob|judge-ranking [--batch 48] [--max-new 128] [--step-tokens 512]
//!   [--count N: the first N prompts of the workload] [--weights auto|dense|quantized] [--no-vnni]

use std::time::Instant;

/// Where herd's default model lies (the tests' helper: the model cache, no fetching).
#[path = "../tests/common/mod.rs"]
mod common;

use herd_engine::{
    BatchOptions, ChatMessage, GenerationRequest, LoadOptions, Model, ScoringOptions, WeightFormat,
};
use serde_json::{json, Value};

/// herd_core::judge's logprob mode: the judge's answer up to the first model's number, and
/// the numbers that can follow (the engine knows no judge; the values are copied here).
const LOGPROB_ANSWER_PREFIX: &str = "[\n    {'model': 'model_";
const LOGPROB_CANDIDATES: [&str; 2] = ["1", "2"];

/// alpaca_eval's ranking prompt (Llama-3 chat text) as the judge worker sends it to a model
/// with a chat template: its system and user messages, the placeholders filled as alpaca_eval
/// fills them (each one's first occurrence, in order of first appearance).
fn judge_messages(instruction: &str, output_1: &str, output_2: &str) -> Vec<ChatMessage> {
    const TEMPLATE: &str = include_str!("../../data/prompts/alpaca_eval_fn.txt");
    TEMPLATE
        .split("<|start_header_id|>")
        .skip(1)
        .filter_map(|turn| {
            let (role, rest) = turn.split_once("<|end_header_id|>\n\n")?;
            let (content, _) = rest.split_once("<|eot_id|>")?;
            let content = content
                .replacen("{instruction}", instruction, 1)
                .replacen("{output_1}", output_1, 1)
                .replacen("{output_2}", output_2, 1);
            Some(ChatMessage::new(role, content))
        })
        .collect()
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn number(args: &[String], name: &str, default: usize) -> usize {
    flag(args, name)
        .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} needs a number")))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat: on a shared
/// machine, throughput per CPU-second is less noisy than per wall-second.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_name =
        flag(&args, "--model").unwrap_or_else(|| common::smollm2_gguf().display().to_string());
    let weight_format = match flag(&args, "--weights").as_deref() {
        Some("dense") => WeightFormat::Dense,
        Some("quantized") => WeightFormat::Quantized,
        _ => WeightFormat::Auto,
    };
    if args.iter().any(|a| a == "--no-vnni") {
        herd_engine::quant_matmul::set_vnni_enabled(false);
    }
    let model = Model::load(&model_name, &LoadOptions { weight_format }).expect("model loads");
    match args.first().map(String::as_str) {
        Some("prepare") => prepare(&model, &args),
        Some("run") => run(&model, &args),
        _ => panic!("usage: cpu_bench prepare|run [flags] (see the file's header)"),
    }
}

/// The messages in the model's chat template; for a model without one (a base model), their
/// texts one after the other, BOS first.
fn prompt(model: &Model, messages: &[ChatMessage]) -> Vec<u32> {
    if model.tokenizer.chat_template().is_some() {
        return model.chat_prompt(messages).expect("the chat template renders");
    }
    let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    model.encode(&text.join("\n\n"), true).expect("the text encodes")
}

fn prepare(model: &Model, args: &[String]) {
    let out = flag(args, "--out").expect("--out FILE");
    let eval_set: Vec<Value> = serde_json::from_str(include_str!("../../data/eval_set.json"))
        .expect("the eval set parses");
    let text = |i: usize, field: &str| {
        eval_set[i % eval_set.len()][field].as_str().unwrap_or_default().to_string()
    };

    let gen: Vec<Vec<u32>> = (0..number(args, "--gen-prompts", 48))
        .map(|i| prompt(model, &[ChatMessage::new("user", text(i, "instruction"))]))
        .collect();

    // ~prefill_len-token prompts: consecutive instructions, chat-formatted, cut to length.
    let prefill_len = number(args, "--prefill-len", 900);
    let mut prefill = Vec::new();
    let mut next = 100;
    while prefill.len() < number(args, "--prefill-prompts", 4) {
        let mut joined = String::new();
        let mut tokens = Vec::new();
        while tokens.len() < prefill_len {
            joined.push_str(&text(next, "instruction"));
            joined.push('\n');
            next += 1;
            tokens = prompt(model, &[ChatMessage::new("user", joined.as_str())]);
        }
        tokens.truncate(prefill_len);
        prefill.push(tokens);
    }

    // The judge's prompts as judge-worker builds them for a model with a chat template.
    let prefix = model.tokenizer.encode(LOGPROB_ANSWER_PREFIX, false).expect("prefix");
    let candidates: Vec<u32> = LOGPROB_CANDIDATES
        .iter()
        .map(|c| {
            *model
                .tokenizer
                .encode(&format!("{LOGPROB_ANSWER_PREFIX}{c}"), false)
                .expect("candidate")
                .last()
                .unwrap()
        })
        .collect();
    let judge_ranking: Vec<Vec<u32>> = (0..number(args, "--judge-prompts", 8))
        .map(|i| {
            let reference = text(i, "output");
            let messages = judge_messages(&text(i, "instruction"), &reference, &reference);
            prompt(model, &messages)
        })
        .collect();
    let judge_logprob: Vec<Vec<u32>> =
        judge_ranking.iter().map(|p| [p.as_slice(), &prefix].concat()).collect();

    let file = json!({
        "model": model.name,
        "model_path": model.source.path(),
        "gen": gen,
        "prefill": prefill,
        "judge_ranking": judge_ranking,
        "judge_logprob": judge_logprob,
        "logprob_candidates": candidates,
    });
    std::fs::write(&out, serde_json::to_string(&file).unwrap()).expect("write --out");
    let mean =
        |v: &[Vec<u32>]| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len().max(1) as f64;
    eprintln!(
        "wrote {out}: {} generation prompts (mean {:.0} tokens), {} prefill prompts of {prefill_len}, {} judge prompts (mean {:.0})",
        gen.len(),
        mean(&gen),
        prefill.len(),
        judge_ranking.len(),
        mean(&judge_ranking)
    );
}

fn run(model: &Model, args: &[String]) {
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(flag(args, "--prompts").expect("--prompts FILE")).unwrap(),
    )
    .expect("prompts parse");
    let count = number(args, "--count", usize::MAX);
    let prompts = |key: &str| -> Vec<Vec<u32>> {
        let all: Vec<Vec<u32>> = serde_json::from_value(file[key].clone()).expect("token lists");
        all.into_iter().take(count).collect()
    };
    let workload = flag(args, "--workload").expect("--workload");
    let step_tokens = number(args, "--step-tokens", 512);
    let mut result = json!({ "engine": "herd", "workload": workload });
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let (examples, prompt_tokens, output_tokens) = match workload.as_str() {
        "gen" => {
            let prompts = prompts("gen");
            let batch = number(args, "--batch", 48);
            result["batch"] = json!(batch);
            let requests: Vec<GenerationRequest> = prompts
                .iter()
                .enumerate()
                .map(|(id, p)| GenerationRequest {
                    id,
                    prompt_tokens: p.clone(),
                    max_new_tokens: number(args, "--max-new", 128),
                    stop: vec![],
                    ..Default::default()
                })
                .collect();
            let options = BatchOptions {
                max_batch_size: batch,
                max_step_tokens: step_tokens,
                ignore_eos: true,
            };
            let mut outputs = vec![Vec::new(); prompts.len()];
            let stats = model
                .generate(requests, &options, |o| outputs[o.id] = o.tokens)
                .expect("generation");
            result["outputs"] = json!(outputs);
            (stats.sequences, stats.prompt_tokens, stats.output_tokens)
        }
        "prefill" | "judge-logprob" => {
            // One prompt per call, as the judge worker scores (batch-invariant verdicts).
            let prompts = prompts(if workload == "prefill" { "prefill" } else { "judge_logprob" });
            let candidates: Vec<u32> =
                serde_json::from_value(file["logprob_candidates"].clone()).unwrap();
            let options = ScoringOptions { max_step_tokens: step_tokens };
            let mut verdicts = Vec::new();
            for p in &prompts {
                let score = model
                    .next_token_logprobs(std::slice::from_ref(p), &candidates, &options)
                    .expect("scoring");
                verdicts.push(score[0].candidate_logprobs.clone());
            }
            if workload == "judge-logprob" {
                result["candidate_logprobs"] = json!(verdicts);
            }
            (prompts.len(), prompts.iter().map(Vec::len).sum(), 0)
        }
        "judge-ranking" => {
            let prompts = prompts("judge_ranking");
            let requests: Vec<GenerationRequest> = prompts
                .iter()
                .enumerate()
                .map(|(id, p)| GenerationRequest {
                    id,
                    prompt_tokens: p.clone(),
                    max_new_tokens: number(args, "--judge-max-new", 100),
                    stop: vec![],
                    ..Default::default()
                })
                .collect();
            let batch = number(args, "--batch", BatchOptions::default().max_batch_size);
            result["batch"] = json!(batch);
            let options = BatchOptions {
                max_batch_size: batch,
                max_step_tokens: step_tokens,
                ignore_eos: false,
            };
            let stats = model.generate(requests, &options, |_| {}).expect("generation");
            (stats.sequences, stats.prompt_tokens, stats.output_tokens)
        }
        other => panic!("unknown workload {other}"),
    };
    result["seconds"] = json!(started.elapsed().as_secs_f64());
    result["cpu_seconds"] = json!(cpu_seconds() - cpu_started);
    result["examples"] = json!(examples);
    result["prompt_tokens"] = json!(prompt_tokens);
    result["output_tokens"] = json!(output_tokens);
    result["peak_rss_mib"] = json!(peak_rss_mib());
    println!("{result}");
}
