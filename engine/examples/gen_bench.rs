//! Generation and prefill throughput on the AlpacaEval workload, as a table.
//!
//! Generation: the first N eval-set instructions in the model's chat template, greedy,
//! `--max-new` tokens each with EOS ignored (the llama.cpp comparison workload), for each
//! batch size. Prefill: ~900-token prompts scored (logits only), for each step budget.
//! Every cell is the median of `--reps` runs; variants are interleaved within a run so
//! load from other processes hits them alike.
//!
//! cargo run --release -p herd-engine --example gen_bench -- [--model PATH] [--prompts 48]
//!   [--max-new 128] [--batch-sizes 1,8,16,32] [--budgets 256,512] [--reps 3] [--weights dense|quantized]

use std::time::Instant;

/// Where herd's default model lies (the tests' helper: the model cache, no fetching).
#[path = "../tests/common/mod.rs"]
mod common;

use herd_engine::{
    BatchOptions, ChatMessage, GenerationRequest, LoadOptions, Model, ScoringOptions, WeightFormat,
};

struct Args {
    model: String,
    prompts: usize,
    max_new: usize,
    batch_sizes: Vec<usize>,
    budgets: Vec<usize>,
    prefill_len: usize,
    reps: usize,
    weights: WeightFormat,
    skip_prefill: bool,
    skip_generation: bool,
    /// Also run every cell with gemm for all products (the small-m kernel off).
    compare_gemm: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        model: String::new(),
        prompts: 48,
        max_new: 128,
        batch_sizes: vec![1, 8, 16, 24, 48],
        budgets: vec![256, 512],
        prefill_len: 900,
        reps: 3,
        weights: WeightFormat::Auto,
        skip_prefill: false,
        skip_generation: false,
        compare_gemm: false,
    };
    let list = |s: String| {
        s.split(',').map(|x| x.trim().parse().expect("a number")).collect::<Vec<usize>>()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value(),
            "--prompts" => a.prompts = value().parse().unwrap(),
            "--max-new" => a.max_new = value().parse().unwrap(),
            "--batch-sizes" => a.batch_sizes = list(value()),
            "--budgets" => a.budgets = list(value()),
            "--prefill-len" => a.prefill_len = value().parse().unwrap(),
            "--reps" => a.reps = value().parse().unwrap(),
            "--weights" => {
                a.weights = match value().as_str() {
                    "dense" => WeightFormat::Dense,
                    "quantized" => WeightFormat::Quantized,
                    _ => WeightFormat::Auto,
                }
            }
            "--no-prefill" => a.skip_prefill = true,
            "--no-generation" => a.skip_generation = true,
            "--compare-gemm" => a.compare_gemm = true,
            other => panic!("unknown flag {other}"),
        }
    }
    if a.model.is_empty() {
        a.model = common::smollm2_gguf().display().to_string();
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
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

fn main() {
    let args = parse_args();
    let eval_set: serde_json::Value =
        serde_json::from_str(include_str!("../../data/eval_set.json")).expect("eval set parses");
    let instructions: Vec<String> = eval_set
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["instruction"].as_str().unwrap().to_string())
        .collect();

    let t = Instant::now();
    let model = Model::load(&args.model, &LoadOptions { weight_format: args.weights })
        .expect("model loads");
    println!(
        "model {} loaded in {:.2}s (weights {:?}); RAYON_NUM_THREADS={}",
        args.model,
        t.elapsed().as_secs_f64(),
        args.weights,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );

    if !args.skip_generation {
        let prompts: Vec<Vec<u32>> = instructions[..args.prompts]
            .iter()
            .map(|i| model.chat_prompt(&[ChatMessage::new("user", i.as_str())]).unwrap())
            .collect();
        let prompt_total: usize = prompts.iter().map(Vec::len).sum();
        println!(
            "\ngeneration: {} prompts ({} prompt tokens, mean {:.0}), {} new tokens each, EOS ignored, median of {}",
            prompts.len(),
            prompt_total,
            prompt_total as f64 / prompts.len() as f64,
            args.max_new,
            args.reps
        );
        let variants: &[bool] = if args.compare_gemm { &[true, false] } else { &[true] };
        let cells: Vec<(usize, bool)> =
            args.batch_sizes.iter().flat_map(|&b| variants.iter().map(move |&v| (b, v))).collect();
        let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); cells.len()];
        for _ in 0..args.reps {
            for (b, &(batch, kernel)) in cells.iter().enumerate() {
                herd_engine::cpu_kernels::set_enabled(kernel);
                let requests: Vec<GenerationRequest> = prompts
                    .iter()
                    .enumerate()
                    .map(|(id, p)| GenerationRequest {
                        id,
                        prompt_tokens: p.clone(),
                        max_new_tokens: args.max_new,
                        stop: vec![],
                        ..Default::default()
                    })
                    .collect();
                let options =
                    BatchOptions { max_batch_size: batch, max_step_tokens: 512, ignore_eos: true };
                let mut first_token = Vec::new();
                let cpu = process_cpu_seconds();
                let stats = model
                    .generate(requests, &options, |o| first_token.push(o.first_token_seconds))
                    .unwrap();
                let cpu = process_cpu_seconds() - cpu;
                results[b].push((
                    stats.output_tokens as f64 / stats.seconds,
                    median(first_token),
                    stats.output_tokens as f64 / cpu,
                ));
            }
        }
        println!(
            "{:>6} {:>14} {:>16} {:>18} {:>18}",
            "batch", "small-m kernel", "output tok/s", "median TTFT (s)", "tok per CPU-s"
        );
        for (b, &(batch, kernel)) in cells.iter().enumerate() {
            let tps = median(results[b].iter().map(|r| r.0).collect());
            let ttft = median(results[b].iter().map(|r| r.1).collect());
            let per_cpu = median(results[b].iter().map(|r| r.2).collect());
            println!(
                "{batch:>6} {:>14} {tps:>16.1} {ttft:>18.3} {per_cpu:>18.1}",
                if kernel { "on" } else { "off" }
            );
        }
        herd_engine::cpu_kernels::set_enabled(true);
    }

    if !args.skip_prefill {
        // ~prefill_len-token prompts: consecutive instructions, chat-formatted, cut to length.
        let mut prompts = Vec::new();
        let mut start = 100;
        while prompts.len() < 4 {
            let mut text = String::new();
            let mut tokens = Vec::new();
            while tokens.len() < args.prefill_len {
                text.push_str(&instructions[start % instructions.len()]);
                text.push('\n');
                start += 1;
                tokens = model.chat_prompt(&[ChatMessage::new("user", text.as_str())]).unwrap();
            }
            tokens.truncate(args.prefill_len);
            prompts.push(tokens);
        }
        let total: usize = prompts.iter().map(Vec::len).sum();
        println!(
            "\nprefill: {} prompts of {} tokens (logits only), median of {}",
            prompts.len(),
            args.prefill_len,
            args.reps
        );
        let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); args.budgets.len()];
        for _ in 0..args.reps {
            for (b, &budget) in args.budgets.iter().enumerate() {
                let t = Instant::now();
                let cpu = process_cpu_seconds();
                model
                    .next_token_logits(&prompts, &ScoringOptions { max_step_tokens: budget })
                    .unwrap();
                let cpu = process_cpu_seconds() - cpu;
                results[b].push((total as f64 / t.elapsed().as_secs_f64(), total as f64 / cpu));
            }
        }
        println!("{:>12} {:>16} {:>18}", "step tokens", "prefill tok/s", "tok per CPU-s");
        for (b, &budget) in args.budgets.iter().enumerate() {
            let tps = median(results[b].iter().map(|r| r.0).collect());
            let per_cpu = median(results[b].iter().map(|r| r.1).collect());
            println!("{budget:>12} {tps:>16.1} {per_cpu:>18.1}");
        }
    }
    println!("\npeak RSS {:.0} MiB", peak_rss_mib());
}
