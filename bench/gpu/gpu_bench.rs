//! herd's GPU benchmark and GPU correctness checks (bench/gpu/README.md). Subcommands:
//!
//!   prepare  --out DIR                       (any machine) a Llama-3 tokenizer.json built
//!            from llama.cpp's Llama-3 vocabulary, and prompts.json: token ids of the 805
//!            AlpacaEval instructions in the Llama-3 chat format (generation) and of judge
//!            prompts (data/prompts/alpaca_eval_fn.txt around an instruction and two answers)
//!   check    [--tp-smoke]                    GPU vs CPU logits on a small random Llama of
//!            the production attention shape (head_dim 128, 4 query heads per KV head):
//!            prefill, chunked prefill, pure decode (step budget 1); batched vs single
//!            generation; optionally TP=2 on one GPU (in-process all-reduce) vs TP=1
//!   generate --model DIR --prompts FILE      output tok/s of greedy generation, EOS ignored
//!            (--runs COUNT:BATCH,... : the first COUNT prompts with at most BATCH in flight)
//!   judge    --model DIR --prompts FILE      logprob mode (prefill, last-position logits)
//!            and ranking mode (prefill + a short greedy answer)
//!   bench    both, on one load of the model; with --reference FILE first herd's logits
//!            and greedy tokens against transformers' (hf_bench.py writes FILE), with
//!            --profile a per-phase profile of decode and prefill passes
//!   bad-input the clear errors before work starts: a TP degree that does not divide
//!            the heads, a model too large for the GPU, no GPU visible (run it with
//!            CUDA_VISIBLE_DEVICES= for the last)
//!   nccl     one-rank NCCL all-reduce, then two ranks on one GPU (expected to be refused)
//!
//! Results go to stdout as tables and, with `--json FILE`, as one JSON object per line.
//!
//! cargo build --release -p herd-engine --features cuda,nccl --example gpu_bench

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use herd_engine::tokenizer::tokenizer_from_gguf;
use herd_engine::{BatchOptions, GenerationRequest, LoadOptions, Model, Placement, ScoringOptions};
use serde_json::{json, Value};

struct Args {
    rest: Vec<String>,
}

impl Args {
    fn value(&self, flag: &str) -> Option<String> {
        self.rest.iter().position(|a| a == flag).and_then(|i| self.rest.get(i + 1)).cloned()
    }
    fn get(&self, flag: &str, default: &str) -> String {
        self.value(flag).unwrap_or_else(|| default.to_string())
    }
    fn num(&self, flag: &str, default: usize) -> usize {
        self.get(flag, &default.to_string())
            .parse()
            .unwrap_or_else(|_| panic!("{flag} takes a number"))
    }
    fn list(&self, flag: &str, default: &str) -> Vec<usize> {
        self.get(flag, default)
            .split(',')
            .map(|x| x.trim().parse().expect("a number list"))
            .collect()
    }
    fn has(&self, flag: &str) -> bool {
        self.rest.iter().any(|a| a == flag)
    }
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprintln!(
            "usage: gpu_bench prepare|check|generate|judge|nccl [flags]  (see the file's header)"
        );
        std::process::exit(2);
    }
    let command = argv.remove(0);
    let args = Args { rest: argv };
    let json_out = args.value("--json").map(PathBuf::from);
    let mut log = JsonLog { path: json_out };
    match command.as_str() {
        "prepare" => prepare(&args),
        "check" => check(&args, &mut log),
        "generate" => {
            let model = load(&args);
            generate(&model, &args, &mut log)
        }
        "judge" => {
            let model = load(&args);
            judge(&model, &args, &mut log)
        }
        "bench" => {
            let model = load(&args);
            if let Some(reference) = args.value("--reference") {
                compare_with_reference(&model, Path::new(&reference), &mut log);
            }
            if args.has("--profile") {
                profile(&model, &args, &mut log);
            }
            generate(&model, &args, &mut log);
            judge(&model, &args, &mut log)
        }
        "bad-input" => bad_input(&args, &mut log),
        "nccl" => nccl(&mut log),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}

struct JsonLog {
    path: Option<PathBuf>,
}

impl JsonLog {
    fn write(&mut self, value: Value) {
        if let Some(path) = &self.path {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("json log opens");
            writeln!(f, "{value}").expect("json log writes");
        }
    }
}

fn placement(args: &Args) -> Placement {
    Placement {
        device: args.get("--device", "cuda:0").parse().expect("--device cpu|cuda:N"),
        tensor_parallel: args.num("--tensor-parallel", 1),
        kv_cache_tokens: args.value("--kv-cache-tokens").map(|v| v.parse().expect("a number")),
        gpu_memory_fraction: args.get("--gpu-memory-fraction", "0.9").parse().expect("a fraction"),
        in_process_ranks: args.has("--in-process-ranks"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------
// prepare

const LLAMA3_VOCAB: &str = "engine/tests/fixtures/tokenizer/vocabs/ggml-vocab-llama-bpe.gguf.gz";

fn llama3_chat(system: Option<&str>, user: &str) -> String {
    let mut s = String::from("<|begin_of_text|>");
    if let Some(system) = system {
        s.push_str(&format!("<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"));
    }
    s.push_str(&format!("<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
    s
}

fn prepare(args: &Args) {
    let out = PathBuf::from(args.get("--out", ".device"));
    std::fs::create_dir_all(&out).unwrap();
    let root = PathBuf::from(args.get("--repo", "."));
    let mut gz = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(root.join(LLAMA3_VOCAB)).unwrap()),
        &mut gz,
    )
    .unwrap();
    let content =
        candle_core::quantized::gguf_file::Content::read(&mut std::io::Cursor::new(&gz)).unwrap();
    let tokenizer = tokenizer_from_gguf(&content).unwrap();
    std::fs::write(out.join("tokenizer.json"), tokenizer.hf_tokenizer().to_string(false).unwrap())
        .unwrap();
    let config = json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"});
    std::fs::write(out.join("tokenizer_config.json"), config.to_string()).unwrap();

    let eval_set: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("data/eval_set.json")).unwrap())
            .unwrap();
    let rows = eval_set.as_array().unwrap();
    let encode = |text: &str| tokenizer.encode(text, true, false).unwrap();
    let generation: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| encode(&llama3_chat(None, r["instruction"].as_str().unwrap())))
        .collect();
    // The course's annotator prompt (it carries its own Llama-3 headers), around an
    // instruction, its reference answer and the next row's answer.
    let template = std::fs::read_to_string(root.join("data/prompts/alpaca_eval_fn.txt")).unwrap();
    let judge: Vec<Vec<u32>> = (0..rows.len())
        .map(|i| {
            let text = template
                .replace("{instruction}", rows[i]["instruction"].as_str().unwrap())
                .replace("{output_1}", rows[i]["output"].as_str().unwrap())
                .replace("{output_2}", rows[(i + 1) % rows.len()]["output"].as_str().unwrap());
            encode(&text)
        })
        .collect();
    let stats = |v: &[Vec<u32>]| {
        let lens: Vec<f64> = v.iter().map(|p| p.len() as f64).collect();
        (lens.iter().sum::<f64>() / lens.len() as f64, lens.iter().copied().fold(0.0, f64::max))
    };
    let (gm, gx) = stats(&generation);
    let (jm, jx) = stats(&judge);
    println!("generation prompts: {} (mean {gm:.0} tokens, max {gx}); judge prompts: {} (mean {jm:.0}, max {jx})", generation.len(), judge.len());
    std::fs::write(
        out.join("prompts.json"),
        json!({"generation": generation, "judge": judge}).to_string(),
    )
    .unwrap();
}

fn read_prompts(path: &Path, key: &str, count: usize) -> Vec<Vec<u32>> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("prompts file")).unwrap();
    let all: Vec<Vec<u32>> = serde_json::from_value(v[key].clone()).unwrap();
    all.into_iter().take(count).collect()
}

// ---------------------------------------------------------------------------------------
// check

/// A small random Llama with the production attention shape, written as f32 safetensors.
fn write_check_model(dir: &Path, vocab: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let (hidden, heads, kv_heads, inter, layers) = (1024usize, 8usize, 2usize, 2048usize, 2usize);
    let d = hidden / heads;
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "max_position_embeddings": 8192, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    let randn = |shape: &[usize], std: f64| Tensor::randn(0f32, std as f32, shape, &dev).unwrap();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), randn(&[vocab, hidden], 1.0));
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        let s = 1.0 / (hidden as f64).sqrt();
        t.insert(format!("{p}.self_attn.q_proj.weight"), randn(&[heads * d, hidden], s));
        t.insert(format!("{p}.self_attn.k_proj.weight"), randn(&[kv_heads * d, hidden], s));
        t.insert(format!("{p}.self_attn.v_proj.weight"), randn(&[kv_heads * d, hidden], s));
        t.insert(format!("{p}.self_attn.o_proj.weight"), randn(&[hidden, heads * d], s));
        t.insert(format!("{p}.mlp.gate_proj.weight"), randn(&[inter, hidden], s));
        t.insert(format!("{p}.mlp.up_proj.weight"), randn(&[inter, hidden], s));
        t.insert(
            format!("{p}.mlp.down_proj.weight"),
            randn(&[hidden, inter], 1.0 / (inter as f64).sqrt()),
        );
        t.insert(format!("{p}.input_layernorm.weight"), (randn(&[hidden], 0.1) + 1.0).unwrap());
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            (randn(&[hidden], 0.1) + 1.0).unwrap(),
        );
    }
    t.insert("model.norm.weight".into(), (randn(&[hidden], 0.1) + 1.0).unwrap());
    t.insert("lm_head.weight".into(), randn(&[vocab, hidden], 1.0 / (hidden as f64).sqrt()));
    // bf16 on disk: the CPU (f32) and the GPU (bf16) then hold the same weight values.
    let t: HashMap<String, Tensor> =
        t.into_iter().map(|(k, v)| (k, v.to_dtype(candle_core::DType::BF16).unwrap())).collect();
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    // A word-level tokenizer: the checks feed token ids.
    let vocab_map: serde_json::Map<String, Value> =
        (0..vocab).map(|i| (format!("w{i}"), json!(i))).collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "w0"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// ‖a − b‖ / ‖b‖ over all rows.
fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            num += ((p - q) as f64).powi(2);
            den += (*q as f64).powi(2);
        }
    }
    if num.is_nan() {
        return f64::INFINITY;
    }
    (num / den).sqrt()
}

/// ‖a − b‖ / ‖b‖ of two tensors (any device, any float dtype).
fn tensor_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let f = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    rel_err(&[f(a)], &[f(b)])
}

/// Each GPU op against its CPU version on random inputs of the Llama-3-8B attention shape.
fn op_checks(gpu: &Device, log: &mut JsonLog) -> usize {
    use candle_core::DType;
    use herd_engine::paged_ops::{
        prefill_attention, prefill_attention_with, DecodeAttention, GatherKv, HeadLayout,
        PrefillKernel, RopeQkv, StoreKv,
    };
    let cpu = Device::Cpu;
    let on_gpu = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_device(gpu).unwrap();
    let layout = HeadLayout { heads: 32, kv_heads: 8, head_dim: 128 };
    let (bs, blocks) = (16usize, 600usize);
    let mut failures = 0;
    let mut report = |name: &str, err: f64, limit: f64| {
        let ok = err < limit;
        failures += usize::from(!ok);
        println!("  op {name:<44} rel err {err:.2e}  {}", if ok { "ok" } else { "FAIL" });
        log.write(json!({"check": "op", "op": name, "rel_err": err, "ok": ok}));
    };
    // Decode attention: random caches, lengths 1..=700 over shuffled blocks; 20 rows use
    // 128-position partitions and the combine kernel, 200 rows one or two 512 partitions.
    let cache =
        Tensor::randn(0f32, 1.0, (blocks, 2, layout.kv_heads, bs, layout.head_dim), &cpu).unwrap();
    let cache = cache.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    let g_cache = on_gpu(&cache);
    let mut seed = 99u64;
    let mut rand = move |n: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    for rows in [20usize, 200] {
        let lens: Vec<usize> =
            (0..rows).map(|i| if i == 0 { 700 } else { 1 + rand(700) }).collect();
        let max = *lens.iter().max().unwrap();
        let stride = 1 + max.div_ceil(bs);
        let mut meta = vec![0u32; rows * stride];
        for (r, &len) in lens.iter().enumerate() {
            meta[r * stride] = len as u32;
            for b in 0..len.div_ceil(bs) {
                meta[r * stride + 1 + b] = rand(blocks) as u32;
            }
        }
        let meta = Tensor::from_vec(meta, (rows, stride), &cpu).unwrap();
        let qkv =
            Tensor::randn(0f32, 0.1, (rows, layout.qkv_heads(), layout.head_dim), &cpu).unwrap();
        let qkv = qkv.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
        let op =
            DecodeAttention { layout, block_size: bs, rows, meta_stride: stride, max_context: max };
        let want = qkv.apply_op3_no_bwd(&cache, &meta, &op).unwrap();
        let got =
            on_gpu(&qkv).apply_op3_no_bwd(&g_cache, &meta.to_device(gpu).unwrap(), &op).unwrap();
        report(
            &format!("decode attention, {rows} rows, contexts to {max}"),
            tensor_rel_err(&got, &want),
            1e-2,
        );
    }
    // Rotary embedding at positions up to 6000.
    let t = 50;
    let qkv = Tensor::randn(0f32, 1.0, (t, layout.qkv_heads() * layout.head_dim), &cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let positions: Vec<u32> = (0..t).map(|i| (i * 120) as u32).collect();
    let positions = Tensor::new(positions.as_slice(), &cpu).unwrap();
    let inv_freq: Vec<f32> =
        (0..64).map(|i| 1.0 / 500000f32.powf(2.0 * i as f32 / 128.0)).collect();
    let inv_freq = Tensor::new(inv_freq.as_slice(), &cpu).unwrap();
    let rope = RopeQkv { layout, q_scale: 0.088 };
    let want = qkv.apply_op3_no_bwd(&positions, &inv_freq, &rope).unwrap();
    let got = on_gpu(&qkv)
        .apply_op3_no_bwd(
            &positions.to_device(gpu).unwrap(),
            &inv_freq.to_device(gpu).unwrap(),
            &rope,
        )
        .unwrap();
    report("rotary embedding, positions to 5880", tensor_rel_err(&got, &want), 1e-2);
    // Store into the cache at scattered slots, then gather one sequence back.
    let want_rot = want.clone();
    let slots: Vec<u32> = (0..t).map(|i| (37 * bs + i * 3) as u32).collect();
    let slots = Tensor::new(slots.as_slice(), &cpu).unwrap();
    let c_cache =
        Tensor::zeros((64, 2, layout.kv_heads, bs, layout.head_dim), DType::F32, &cpu).unwrap();
    let gc = on_gpu(&c_cache);
    let store = StoreKv { layout, block_size: bs };
    c_cache.inplace_op3(&want_rot, &slots, &store).unwrap();
    gc.inplace_op3(&on_gpu(&want_rot), &slots.to_device(gpu).unwrap(), &store).unwrap();
    report("store keys and values", tensor_rel_err(&gc, &c_cache), 1e-2);
    let table = Tensor::new(&[37u32, 38, 39, 40, 41, 42, 43, 44, 45, 46], &cpu).unwrap();
    let gather = GatherKv { layout, block_size: bs, len: 150 };
    let want = c_cache.apply_op2_no_bwd(&table, &gather).unwrap();
    let got = gc.apply_op2_no_bwd(&table.to_device(gpu).unwrap(), &gather).unwrap();
    report("gather one sequence's keys and values", tensor_rel_err(&got, &want), 1e-2);
    // Prefill attention, both GPU kernels: a chunk after cached positions, a whole prompt of
    // the judge's length, a short one; queries read through a strided view as the model does.
    let round = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    for (t, len) in [(37usize, 100usize), (1163, 1163), (150, 1300), (9, 9)] {
        let qkv = round(
            &Tensor::randn(0f32, 0.3, (t, layout.qkv_heads(), layout.head_dim), &cpu).unwrap(),
        );
        let k = round(
            &Tensor::randn(0f32, 1.0, (layout.kv_heads, len, layout.head_dim), &cpu).unwrap(),
        );
        let v = round(
            &Tensor::randn(0f32, 1.0, (layout.kv_heads, len, layout.head_dim), &cpu).unwrap(),
        );
        let q = qkv.narrow(1, 0, layout.heads).unwrap();
        let want = prefill_attention(&q, &k, &v, layout).unwrap();
        let g_q = on_gpu(&qkv).narrow(1, 0, layout.heads).unwrap();
        for kernel in [PrefillKernel::Fused, PrefillKernel::Matmul] {
            let got =
                prefill_attention_with(&g_q, &on_gpu(&k), &on_gpu(&v), layout, kernel).unwrap();
            // The matmul path rounds the probabilities to bf16 before P·V: a looser bound.
            let limit = if kernel == PrefillKernel::Matmul { 2e-2 } else { 1e-2 };
            report(
                &format!("prefill attention ({kernel:?}), {t} queries over {len}"),
                tensor_rel_err(&got, &want),
                limit,
            );
        }
    }
    failures
}

fn check(args: &Args, log: &mut JsonLog) {
    let vocab = 1024;
    let dir = std::env::temp_dir().join(format!("herd-gpu-check-{}", std::process::id()));
    write_check_model(&dir, vocab);
    let spec = dir.to_str().unwrap();
    let cpu = Model::load(spec, &LoadOptions::default()).unwrap();
    // Bounded caches: the TP=2 check loads a second copy beside this one.
    let gpu_placement = Placement { kv_cache_tokens: Some(65536), ..placement(args) };
    let gpu = Model::load_on(spec, &LoadOptions::default(), &gpu_placement).unwrap();
    let mut failures = 0;
    if let herd_engine::DeviceSpec::Cuda(_) = gpu_placement.device {
        let device = herd_engine::placement::open_device(gpu_placement.device).unwrap();
        println!("check: GPU ops vs their CPU versions");
        failures += op_checks(&device, log);
    }
    let mut rng = 12345u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        3 + (rng % (vocab as u64 - 3)) as u32
    };
    let prompts: Vec<Vec<u32>> =
        [1usize, 7, 33, 130, 300, 17].iter().map(|&n| (0..n).map(|_| next()).collect()).collect();
    println!("check: GPU bf16 vs CPU f32 next-token logits, small random Llama (head_dim 128, 4 query heads per KV head)");
    let reference =
        cpu.next_token_logits(&prompts, &ScoringOptions { max_step_tokens: 4096 }).unwrap();
    for (label, budget) in [
        ("prefill", 4096usize),
        ("chunked prefill (budget 40)", 40),
        ("decode kernel (budget 1)", 1),
    ] {
        let got =
            gpu.next_token_logits(&prompts, &ScoringOptions { max_step_tokens: budget }).unwrap();
        let err = rel_err(&got, &reference);
        let argmax_agree =
            got.iter().zip(&reference).filter(|(g, r)| argmax(g) == argmax(r)).count();
        let ok = err < 2e-2;
        failures += usize::from(!ok);
        println!(
            "  {label:<30} rel err {err:.2e}  argmax agrees {argmax_agree}/{}  {}",
            prompts.len(),
            if ok { "ok" } else { "FAIL" }
        );
        log.write(json!({"check": "logits", "variant": label, "rel_err": err, "ok": ok}));
    }
    // Generation: continuous batching (batch 3 over 6 requests, small step budget) vs one at
    // a time on the GPU, and vs the CPU.
    let requests = |n: usize| -> Vec<GenerationRequest> {
        prompts
            .iter()
            .enumerate()
            .map(|(id, p)| GenerationRequest {
                id,
                prompt_tokens: p.clone(),
                max_new_tokens: n,
                stop: vec![],
                ..Default::default()
            })
            .collect()
    };
    let batched = gpu
        .generate_all(
            requests(24),
            &BatchOptions { max_batch_size: 3, max_step_tokens: 64, ignore_eos: true },
        )
        .unwrap();
    let single = gpu
        .generate_all(
            requests(24),
            &BatchOptions { max_batch_size: 1, max_step_tokens: 4096, ignore_eos: true },
        )
        .unwrap();
    let on_cpu = cpu
        .generate_all(
            requests(24),
            &BatchOptions { max_batch_size: 6, max_step_tokens: 4096, ignore_eos: true },
        )
        .unwrap();
    let agree = |a: &[herd_engine::GenerationOutput],
                 b: &[herd_engine::GenerationOutput]|
     -> (usize, usize) {
        // Tokens equal up to the first difference (after one, the contexts differ).
        let same: usize = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.tokens.iter().zip(&y.tokens).take_while(|(p, q)| p == q).count())
            .sum();
        (same, a.iter().map(|x| x.tokens.len()).sum())
    };
    let (s1, n1) = agree(&batched, &single);
    let (s2, n2) = agree(&batched, &on_cpu);
    println!("  generation: batched vs one-at-a-time GPU: {s1}/{n1} tokens before the first difference; GPU vs CPU: {s2}/{n2}");
    log.write(
        json!({"check": "generation", "batched_vs_single": [s1, n1], "gpu_vs_cpu": [s2, n2]}),
    );
    if args.has("--tp-smoke") {
        let tp = Placement { tensor_parallel: 2, in_process_ranks: true, ..gpu_placement.clone() };
        match Model::load_on(spec, &LoadOptions::default(), &tp) {
            Ok(two) => {
                let one = gpu
                    .next_token_logits(&prompts, &ScoringOptions { max_step_tokens: 40 })
                    .unwrap();
                let got = two
                    .next_token_logits(&prompts, &ScoringOptions { max_step_tokens: 40 })
                    .unwrap();
                let err = rel_err(&got, &one);
                let ok = err < 2e-2;
                failures += usize::from(!ok);
                println!(
                    "  TP=2 on one GPU (in-process all-reduce) vs TP=1: rel err {err:.2e}  {}",
                    if ok { "ok" } else { "FAIL" }
                );
                log.write(json!({"check": "tp2_one_gpu", "rel_err": err, "ok": ok}));
            }
            Err(e) => {
                failures += 1;
                println!("  TP=2 on one GPU: FAIL to load: {e}");
            }
        }
    }
    // Bad input: a degree that does not divide the heads, a model that does not fit.
    let bad = Placement { tensor_parallel: 3, in_process_ranks: true, ..gpu_placement.clone() };
    match Model::load_on(spec, &LoadOptions::default(), &bad) {
        Err(e) => println!("  TP=3: refused: {e}"),
        Ok(_) => {
            failures += 1;
            println!("  TP=3: FAIL (loaded)")
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "check: {}",
        if failures == 0 { "all passed".to_string() } else { format!("{failures} FAILED") }
    );
    log.write(json!({"check": "summary", "failures": failures}));
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

// ---------------------------------------------------------------------------------------
// generate / judge

fn load(args: &Args) -> Model {
    let t = Instant::now();
    let model =
        Model::load_on(args.get("--model", "model"), &LoadOptions::default(), &placement(args))
            .unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1);
            });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "loaded {} on {} in {secs:.1}s",
        args.get("--model", "model"),
        model.transformer.device_name()
    );
    if let Some(kv) = model.transformer.kv_capacity() {
        println!("key/value cache: {kv} positions");
    }
    model
}

fn generate(model: &Model, args: &Args, log: &mut JsonLog) {
    let max_new = args.num("--max-new", 256);
    let step_tokens = args.num("--step-tokens", 8192);
    let runs: Vec<(usize, usize)> = args
        .get("--runs", "256:256,805:256,805:805,1:1")
        .split(',')
        .map(|r| {
            let (c, b) = r.split_once(':').expect("COUNT:BATCH");
            (c.trim().parse().unwrap(), b.trim().parse().unwrap())
        })
        .collect();
    let count = runs.iter().map(|r| r.0).max().unwrap_or(1);
    let prompts =
        read_prompts(Path::new(&args.get("--prompts", "prompts.json")), "generation", count);
    let requests = |n: usize, new: usize| -> Vec<GenerationRequest> {
        prompts
            .iter()
            .take(n)
            .enumerate()
            .map(|(id, p)| GenerationRequest {
                id,
                prompt_tokens: p.clone(),
                max_new_tokens: new,
                stop: vec![],
                ..Default::default()
            })
            .collect()
    };
    // Warm-up: kernels compiled and loaded, cuBLAS heuristics, memory pool filled.
    model
        .generate(
            requests(64, 8),
            &BatchOptions { max_batch_size: 64, max_step_tokens: step_tokens, ignore_eos: true },
            |_| {},
        )
        .unwrap();
    println!("\ngeneration: AlpacaEval prompts in the Llama-3 chat format, {max_new} new tokens each (64 below batch 32), greedy, EOS ignored, step budget {step_tokens}");
    println!(
        "{:>7} {:>9} {:>10} {:>13} {:>11} {:>9} {:>12}",
        "batch", "prompts", "seconds", "output tok/s", "examples/s", "passes", "ms/pass"
    );
    for (n, batch) in runs {
        let new = if batch < 32 { max_new.min(64) } else { max_new };
        let options =
            BatchOptions { max_batch_size: batch, max_step_tokens: step_tokens, ignore_eos: true };
        let mut ttft = Vec::new();
        let stats = model
            .generate(requests(n, new), &options, |o| ttft.push(o.first_token_seconds))
            .unwrap();
        let tps = stats.output_tokens as f64 / stats.seconds;
        let eps = stats.sequences as f64 / stats.seconds;
        let ms = 1000.0 * stats.seconds / stats.forward_passes as f64;
        println!(
            "{batch:>7} {n:>9} {:>10.2} {tps:>13.0} {eps:>11.2} {:>9} {ms:>12.2}",
            stats.seconds, stats.forward_passes
        );
        log.write(json!({
            "bench": "herd_generate", "batch": batch, "prompts": n, "new_tokens": new, "seconds": stats.seconds,
            "output_tokens": stats.output_tokens, "prompt_tokens": stats.prompt_tokens, "output_tok_s": tps,
            "examples_s": eps, "passes": stats.forward_passes, "median_ttft_s": median(ttft), "step_tokens": step_tokens
        }));
    }
}

fn judge(model: &Model, args: &Args, log: &mut JsonLog) {
    let count = args.num("--count", 256);
    let prompts = read_prompts(Path::new(&args.get("--prompts", "prompts.json")), "judge", count);
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    // Candidates: the tokens "1" and "2" of the Llama-3 vocabulary (any ids serve the cost).
    let candidates = [16u32, 17];
    model
        .next_token_logprobs(
            &prompts[..prompts.len().min(16)],
            &candidates,
            &ScoringOptions { max_step_tokens: 8192 },
        )
        .unwrap();
    println!(
        "\njudge, logprob mode: {} prompts ({prompt_tokens} tokens, mean {:.0}), last-position logprobs only",
        prompts.len(),
        prompt_tokens as f64 / prompts.len() as f64
    );
    println!("{:>12} {:>10} {:>14} {:>11}", "step tokens", "seconds", "prompt tok/s", "examples/s");
    for budget in args.list("--budgets", "8192,16384,32768") {
        let t = Instant::now();
        model
            .next_token_logprobs(&prompts, &candidates, &ScoringOptions { max_step_tokens: budget })
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{budget:>12} {s:>10.2} {:>14.0} {:>11.2}",
            prompt_tokens as f64 / s,
            prompts.len() as f64 / s
        );
        log.write(json!({
            "bench": "herd_judge_logprob", "step_tokens": budget, "prompts": prompts.len(), "prompt_tokens": prompt_tokens,
            "seconds": s, "prompt_tok_s": prompt_tokens as f64 / s, "examples_s": prompts.len() as f64 / s
        }));
    }
    let new = args.num("--ranking-new", 32);
    let batch = args.num("--ranking-batch", 256);
    let budget = args.num("--ranking-step-tokens", 16384);
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .enumerate()
        .map(|(id, p)| GenerationRequest {
            id,
            prompt_tokens: p.clone(),
            max_new_tokens: new,
            stop: vec![],
            ..Default::default()
        })
        .collect();
    let stats = model
        .generate(
            requests,
            &BatchOptions { max_batch_size: batch, max_step_tokens: budget, ignore_eos: true },
            |_| {},
        )
        .unwrap();
    println!(
        "judge, ranking mode ({new} new tokens, batch {batch}, step budget {budget}): {:.2}s, {:.0} prompt tok/s, {:.2} examples/s",
        stats.seconds,
        prompt_tokens as f64 / stats.seconds,
        prompts.len() as f64 / stats.seconds
    );
    log.write(json!({
        "bench": "herd_judge_ranking", "prompts": prompts.len(), "prompt_tokens": prompt_tokens, "new_tokens": new,
        "batch": batch, "step_tokens": budget, "seconds": stats.seconds, "prompt_tok_s": prompt_tokens as f64 / stats.seconds,
        "examples_s": prompts.len() as f64 / stats.seconds, "passes": stats.forward_passes
    }));
}

// ---------------------------------------------------------------------------------------
// herd vs transformers on the same weights

/// `FILE` (JSON, from hf_bench.py): prompts, transformers' greedy tokens for each, and the
/// name of a raw little-endian f32 file beside it with each prompt's next-token logits.
fn compare_with_reference(model: &Model, file: &Path, log: &mut JsonLog) {
    let Ok(text) = std::fs::read_to_string(file) else {
        println!("reference: {} not found, skipped", file.display());
        return;
    };
    let reference: Value = serde_json::from_str(&text).expect("reference JSON");
    let prompts: Vec<Vec<u32>> = serde_json::from_value(reference["prompts"].clone()).unwrap();
    let hf_tokens: Vec<Vec<u32>> = serde_json::from_value(reference["tokens"].clone()).unwrap();
    let raw = std::fs::read(file.with_file_name(reference["logits_file"].as_str().unwrap()))
        .expect("reference logits");
    let to_f32 = |raw: &[u8]| -> Vec<f32> {
        raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let floats = to_f32(&raw);
    let vocab = floats.len() / prompts.len();
    // transformers in f32 on the same weights, where the reference has it.
    let f32_logits = reference["logits_f32_file"]
        .as_str()
        .and_then(|f| std::fs::read(file.with_file_name(f)).ok())
        .map(|raw| to_f32(&raw));
    let got = model.next_token_logits(&prompts, &ScoringOptions { max_step_tokens: 8192 }).unwrap();
    println!("\nherd vs transformers, same weights: next-token logits after each prompt, then greedy tokens");
    let (mut worst, mut argmax_agree) = (0f32, 0);
    for (i, (p, row)) in prompts.iter().zip(&got).enumerate() {
        let want = &floats[i * vocab..(i + 1) * vocab];
        let diff = row.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
        let err = rel_err(std::slice::from_ref(row), &[want.to_vec()]);
        let (ga, wa) = (argmax(row), argmax(want));
        argmax_agree += usize::from(ga == wa);
        worst = worst.max(diff);
        let (herd_vs_f32, hf_vs_f32) = match &f32_logits {
            Some(all) => {
                let exact = all[i * vocab..(i + 1) * vocab].to_vec();
                (
                    rel_err(std::slice::from_ref(row), std::slice::from_ref(&exact)),
                    rel_err(&[want.to_vec()], &[exact]),
                )
            }
            None => (f64::NAN, f64::NAN),
        };
        println!(
            "  prompt {i} ({:>4} tokens): max |logit diff| {diff:.4} (largest |logit| {scale:.2}), rel err {err:.2e}, argmax herd {ga} / hf {wa}; \
             vs transformers f32: herd {herd_vs_f32:.2e}, transformers bf16 {hf_vs_f32:.2e}",
            p.len()
        );
        log.write(json!({"check": "hf_logits", "prompt": i, "prompt_tokens": p.len(), "max_abs_diff": diff, "max_abs_logit": scale, "rel_err": err,
            "argmax_herd": ga, "argmax_hf": wa, "herd_vs_hf_f32": herd_vs_f32, "hf_bf16_vs_hf_f32": hf_vs_f32}));
    }
    let new = hf_tokens.iter().map(Vec::len).max().unwrap_or(0);
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .enumerate()
        .map(|(id, p)| GenerationRequest {
            id,
            prompt_tokens: p.clone(),
            max_new_tokens: new,
            stop: vec![],
            ..Default::default()
        })
        .collect();
    let outputs = model
        .generate_all(
            requests,
            &BatchOptions {
                max_batch_size: prompts.len(),
                max_step_tokens: 8192,
                ignore_eos: true,
            },
        )
        .unwrap();
    let mut prefixes = Vec::new();
    for (o, want) in outputs.iter().zip(&hf_tokens) {
        prefixes.push(o.tokens.iter().zip(want).take_while(|(a, b)| a == b).count());
    }
    println!(
        "  logits: max |diff| {worst:.4} over {} prompts, argmax agrees {argmax_agree}/{}; greedy {new} tokens: equal prefix per prompt {prefixes:?}",
        prompts.len(),
        prompts.len()
    );
    log.write(json!({"check": "hf_generation", "new_tokens": new, "equal_prefix": prefixes, "max_abs_logit_diff": worst, "argmax_agree": argmax_agree, "prompts": prompts.len()}));
}

// ---------------------------------------------------------------------------------------
// profile

/// Decode passes at several batch sizes (context `--profile-context`): wall time per pass
/// (with the argmax back on the host), the host's time to enqueue a pass, and the GPU time
/// per phase (each phase timed alone, see `phase_timing`); then one judge prefill pass.
fn profile(model: &Model, args: &Args, log: &mut JsonLog) {
    use herd_engine::kv_cache::SequenceCache;
    use herd_engine::paged_ops::phase_timing;
    let context = args.num("--profile-context", 300);
    let vocab = model.config().vocab_size as u32;
    let mut rng = 7u64;
    let mut token = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        1000 + (rng % (vocab as u64 - 2000)) as u32
    };
    let print_phases = |label: &str,
                        passes: usize,
                        wall_ms: f64,
                        log: &mut JsonLog|
     -> Vec<(&'static str, f64, usize)> {
        let phases = phase_timing::take();
        let raw = phases.clone();
        let total: f64 = phases.iter().map(|p| p.1).sum();
        println!("  {label}: phases, GPU ms per pass (each synchronized alone; sum {:.2} ms vs {wall_ms:.2} ms unsynchronized)", 1e3 * total / passes as f64);
        for (name, secs, calls) in &phases {
            println!(
                "    {name:<22} {:>8.3} ms  {:>5.1}%  ({} calls per pass)",
                1e3 * secs / passes as f64,
                100.0 * secs / total,
                calls / passes
            );
        }
        let phases: Vec<Value> = phases.iter().map(|(n, s, c)| json!({"phase": n, "ms_per_pass": 1e3 * s / passes as f64, "calls": c / passes})).collect();
        log.write(json!({"bench": "herd_profile_phases", "label": label, "phases": phases, "wall_ms": wall_ms}));
        raw
    };
    println!("\nprofile: decode passes over {context} cached positions per sequence");
    println!("{:>7} {:>12} {:>14} {:>12}", "batch", "ms/pass", "enqueue ms", "tok/s");
    for batch in args.list("--profile-batches", "1,64,256") {
        let mut caches: Vec<SequenceCache> = (0..batch)
            .map(|_| model.transformer.new_cache(context + 64, context + 64).expect("cache room"))
            .collect();
        // Prefill the contexts, 8192 tokens a pass.
        let prompts: Vec<Vec<u32>> =
            (0..batch).map(|_| (0..context).map(|_| token()).collect()).collect();
        for chunk in (0..batch).collect::<Vec<_>>().chunks((8192 / context).max(1)) {
            let tokens: Vec<&[u32]> = chunk.iter().map(|&i| prompts[i].as_slice()).collect();
            let (lo, hi) = (chunk[0], chunk[chunk.len() - 1] + 1);
            let mut refs: Vec<&mut SequenceCache> = caches[lo..hi].iter_mut().collect();
            model.transformer.forward(&tokens, &mut refs).unwrap();
        }
        let mut next: Vec<u32> = (0..batch).map(|_| token()).collect();
        let mut step = || -> (f64, f64) {
            let t = Instant::now();
            let tokens: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
            let mut refs: Vec<&mut SequenceCache> = caches.iter_mut().collect();
            let logits = model.transformer.forward(&tokens, &mut refs).unwrap();
            let enqueue = t.elapsed().as_secs_f64();
            let out = herd_engine::llama::Llama::argmax(&logits).unwrap();
            let wall = t.elapsed().as_secs_f64();
            next = out;
            (wall, enqueue)
        };
        for _ in 0..3 {
            step();
        }
        let runs: Vec<(f64, f64)> = (0..20).map(|_| step()).collect();
        let wall = median(runs.iter().map(|r| r.0).collect());
        let enqueue = median(runs.iter().map(|r| r.1).collect());
        let c = model.config();
        let kv_bytes =
            (batch * (context + 25) * c.num_layers * 2 * c.num_kv_heads * c.head_dim * 2) as f64;
        println!(
            "{batch:>7} {:>12.2} {:>14.2} {:>12.0}",
            1e3 * wall,
            1e3 * enqueue,
            batch as f64 / wall
        );
        log.write(json!({"bench": "herd_profile_decode", "batch": batch, "context": context, "ms_per_pass": 1e3 * wall, "enqueue_ms": 1e3 * enqueue, "tok_s": batch as f64 / wall, "kv_bytes": kv_bytes}));
        phase_timing::take();
        phase_timing::enable(true);
        for _ in 0..5 {
            step();
        }
        phase_timing::enable(false);
        let phases = print_phases(&format!("decode batch {batch}"), 5, 1e3 * wall, log);
        if let Some((_, secs, _)) = phases.iter().find(|p| p.0 == "decode attention") {
            let gbs = kv_bytes / (secs / 5.0) / 1e9;
            println!(
                "    decode attention reads {:.2} GB of keys/values per pass: {gbs:.0} GB/s",
                kv_bytes / 1e9
            );
            log.write(json!({"bench": "herd_profile_attention", "batch": batch, "kv_gb": kv_bytes / 1e9, "gb_s": gbs}));
        }
    }
    // One judge-sized prefill pass: 14 prompts of the judge's mean length.
    let len = 1163;
    let prompts: Vec<Vec<u32>> = (0..14).map(|_| (0..len).map(|_| token()).collect()).collect();
    let run = |timed: bool| -> f64 {
        let mut caches: Vec<SequenceCache> = (0..prompts.len())
            .map(|_| model.transformer.new_cache(len, len).expect("cache room"))
            .collect();
        let tokens: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let mut refs: Vec<&mut SequenceCache> = caches.iter_mut().collect();
        phase_timing::enable(timed);
        let t = Instant::now();
        let logits = model.transformer.forward(&tokens, &mut refs).unwrap();
        let _ = logits.to_vec2::<f32>().unwrap();
        phase_timing::enable(false);
        t.elapsed().as_secs_f64()
    };
    run(false);
    let wall = median((0..3).map(|_| run(false)).collect());
    let tokens = prompts.len() * len;
    println!(
        "\nprofile: one prefill pass of {} prompts x {len} tokens: {:.1} ms, {:.0} tok/s",
        prompts.len(),
        1e3 * wall,
        tokens as f64 / wall
    );
    log.write(json!({"bench": "herd_profile_prefill", "tokens": tokens, "ms_per_pass": 1e3 * wall, "tok_s": tokens as f64 / wall}));
    phase_timing::take();
    run(true);
    let _ = print_phases("prefill 14 x 1163", 1, 1e3 * wall, log);
}

// ---------------------------------------------------------------------------------------
// bad input

/// Each bad input must be refused with a clear error before any weight is read.
fn bad_input(args: &Args, log: &mut JsonLog) {
    let vocab = 1024;
    let dir = std::env::temp_dir().join(format!("herd-bad-input-{}", std::process::id()));
    write_check_model(&dir, vocab);
    let spec = dir.to_str().unwrap().to_string();
    let gpu = placement(args);
    let mut report = |case: &str, result: herd_engine::Result<Model>| {
        let line = match &result {
            Ok(_) => "loaded".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        println!("  {case}: {line}");
        log.write(json!({"check": "bad_input", "case": case, "refused": result.is_err(), "message": line}));
    };
    println!("bad input (CUDA_VISIBLE_DEVICES={:?})", std::env::var("CUDA_VISIBLE_DEVICES").ok());
    let t = Instant::now();
    // A Llama-3.3-70B config over the small model's weights file: the size check reads only
    // the config, so it must refuse before the (wrong) weights are looked at.
    let big = dir.join("70b");
    std::fs::create_dir_all(&big).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    for (k, v) in [
        ("hidden_size", 8192),
        ("intermediate_size", 28672),
        ("num_hidden_layers", 80),
        ("num_attention_heads", 64),
        ("num_key_value_heads", 8),
        ("vocab_size", 128256),
    ] {
        config[k] = json!(v);
    }
    std::fs::write(big.join("config.json"), config.to_string()).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(dir.join(f), big.join(f)).unwrap();
    }
    report(
        "Llama-3.3-70B shape (141 GB bf16) on one GPU",
        Model::load_on(big.to_str().unwrap(), &LoadOptions::default(), &gpu),
    );
    report(
        "the small model on the GPU (refused only without a GPU)",
        Model::load_on(&spec, &LoadOptions::default(), &gpu),
    );
    // Ranks as threads on one GPU, so that the head count, not the GPU count, is what fails.
    let tp3 = Placement { tensor_parallel: 3, in_process_ranks: true, ..gpu.clone() };
    report(
        "TP=3 over 8 heads (ranks on one GPU)",
        Model::load_on(&spec, &LoadOptions::default(), &tp3),
    );
    report(
        "TP=2 without a second GPU",
        Model::load_on(
            &spec,
            &LoadOptions::default(),
            &Placement { tensor_parallel: 2, ..gpu.clone() },
        ),
    );
    println!("  ({:.2}s for all cases)", t.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// nccl

#[cfg(feature = "nccl")]
fn nccl(log: &mut JsonLog) {
    use candle_core::DType;
    use herd_engine::tensor_parallel::{nccl_unique_id, AllReduce, NcclAllReduce};
    let device = herd_engine::placement::open_device(herd_engine::DeviceSpec::Cuda(0)).unwrap();
    // The library the dynamic linker found (cudarc's bindings were written for 2.30).
    let version = candle_core::cuda_backend::cudarc::nccl::result::get_nccl_version();
    println!("nccl: ncclGetVersion: {version:?} (major*10000 + minor*100 + patch)");
    log.write(json!({"check": "nccl_version", "version": format!("{version:?}")}));
    let one = (|| -> herd_engine::Result<Vec<f32>> {
        let id = nccl_unique_id()?;
        let comm = NcclAllReduce::join(&device, 0, 1, id)?;
        let x = Tensor::new(&[1f32, 2.0, 3.0], &device)?.to_dtype(DType::BF16)?;
        Ok(comm.sum(&x)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    })();
    println!("nccl: one rank all-reduce of [1, 2, 3]: {one:?}");
    log.write(json!({"check": "nccl_one_rank", "result": format!("{one:?}")}));
    // Two ranks on one GPU, one thread each: NCCL is expected to refuse a duplicate GPU.
    let id = nccl_unique_id().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for rank in 0..2 {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let device =
                herd_engine::placement::open_device(herd_engine::DeviceSpec::Cuda(0)).unwrap();
            let r = NcclAllReduce::join(&device, rank, 2, id).and_then(|comm| {
                let x = Tensor::new(&[rank as f32 + 1.0], &device)?.to_dtype(DType::BF16)?;
                Ok(comm.sum(&x)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
            });
            let _ = tx.send((rank, r.map_err(|e| e.to_string())));
        });
    }
    for _ in 0..2 {
        match rx.recv_timeout(std::time::Duration::from_secs(45)) {
            Ok((rank, r)) => {
                println!("nccl: two ranks on one GPU, rank {rank}: {r:?}");
                log.write(json!({"check": "nccl_two_ranks_one_gpu", "rank": rank, "result": format!("{r:?}")}));
            }
            Err(_) => {
                println!("nccl: two ranks on one GPU: no answer in 45 s (hangs)");
                log.write(json!({"check": "nccl_two_ranks_one_gpu", "result": "timeout"}));
                std::process::exit(0);
            }
        }
    }
    std::process::exit(0);
}

#[cfg(not(feature = "nccl"))]
fn nccl(_: &mut JsonLog) {
    println!("nccl: this build has no `nccl` feature");
}
