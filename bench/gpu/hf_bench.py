#!/usr/bin/env python3
"""The Hugging Face side of herd's GPU benchmark, and the report (bench/gpu/README.md).

  hf_bench.py hf --shape llama-3.1-8b --out DIR --prompts prompts.json --json hf.jsonl
      makes a random-weight bf16 Llama of the real shape on the GPU, measures the two
      ceilings (device-to-device copy bandwidth, bf16 matmul FLOP/s), times transformers'
      batched `generate` and its judge workloads on it, then saves it as a safetensors
      folder that herd loads (same weights, same prompts).
  hf_bench.py report --prompts prompts.json JSONL...
      prints the table: herd vs transformers vs the rooflines.

Shapes: llama-3.1-8b; llama-3.3-70b:N (the 70B's widths with N layers, for the judge when the
whole 70B does not fit one GPU). Random weights do not change the cost of a forward pass.
"""

import argparse
import json
import os
import sys
import time

SHAPES = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
    "llama-3.3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8),
}
ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
VOCAB = 128256


def shape_of(name):
    base, _, layers = name.partition(":")
    shape = dict(SHAPES[base])
    if layers:
        shape["num_hidden_layers"] = int(layers)
    return shape


def config_json(shape):
    """config.json in the classic form (rope_theta, rope_scaling) that every reader knows."""
    return dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=VOCAB, head_dim=128,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=ROPE, max_position_embeddings=131072,
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
        attention_bias=False, mlp_bias=False, hidden_act="silu", torch_dtype="bfloat16", **shape,
    )


def params_of(shape):
    h, i, l = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q, kv = shape["num_attention_heads"] * 128, shape["num_key_value_heads"] * 128
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h
    return dict(total=l * per_layer + 2 * VOCAB * h + h, embedding=VOCAB * h, layers=l, kv_heads=shape["num_key_value_heads"])


def log(path, record):
    print(json.dumps(record), flush=True)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def sync():
    import torch
    torch.cuda.synchronize()


def measure_ceilings(jsonl):
    import torch
    n = 4 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync()
    times = []
    for _ in range(10):
        t = time.perf_counter(); b.copy_(a); sync(); times.append(time.perf_counter() - t)
    bw = 2 * n / sorted(times)[len(times) // 2]
    del a, b
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        x @ y
    sync()
    times = []
    for _ in range(10):
        t = time.perf_counter(); x @ y; sync(); times.append(time.perf_counter() - t)
    flops = 2 * 8192 ** 3 / sorted(times)[len(times) // 2]
    del x, y
    torch.cuda.empty_cache()
    log(jsonl, dict(bench="ceilings", copy_bytes_s=bw, bf16_matmul_flop_s=flops, device=torch.cuda.get_device_name()))


def make_model(shape):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = config_json(shape)
    kwargs = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")}
    try:
        config = LlamaConfig(**kwargs)
    except Exception as e:  # a transformers that wants rope_parameters instead
        print(f"LlamaConfig with rope_scaling failed ({e}); using rope_parameters", flush=True)
        kwargs.pop("rope_scaling"); kwargs.pop("rope_theta")
        config = LlamaConfig(rope_parameters=dict(ROPE, rope_theta=500000.0), **kwargs)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    return model


def left_pad(batch, pad=0):
    import torch
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, p in enumerate(batch):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    return ids.cuda(), mask.cuda()


def hf_generate(model, prompts, batch, new, jsonl, label):
    import torch
    out_tokens = 0
    sync(); t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(prompts), batch):
            ids, mask = left_pad(prompts[s:s + batch])
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=0)
            out_tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    sync(); secs = time.perf_counter() - t
    log(jsonl, dict(bench=label, batch=batch, prompts=len(prompts), new_tokens=new, seconds=secs,
                    output_tokens=out_tokens, prompt_tokens=sum(map(len, prompts)),
                    output_tok_s=out_tokens / secs, examples_s=len(prompts) / secs))


def hf_logprob(model, prompts, token_budget, jsonl):
    """Forward-only prefill, last position's logits (logits_to_keep=1), left-padded batches of
    prompts sorted by length (the least padding transformers can get)."""
    import torch
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(prompts[i]) > token_budget:
            batches.append(cur); cur = []
        cur.append(i)
    batches.append(cur)
    sync(); t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            ids, mask = left_pad([prompts[i] for i in b])
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits
            torch.log_softmax(logits[:, -1].float(), dim=-1)[:, 16:18].cpu()
    sync(); secs = time.perf_counter() - t
    tokens = sum(map(len, prompts))
    log(jsonl, dict(bench="hf_judge_logprob", step_tokens=token_budget, prompts=len(prompts), prompt_tokens=tokens,
                    seconds=secs, prompt_tok_s=tokens / secs, examples_s=len(prompts) / secs))


def hf_reference(model, prompts, new, out_dir):
    """transformers' next-token logits (f32, raw little-endian) and `new` greedy tokens for
    each prompt, one prompt at a time (no padding), with no end-of-sequence handling: what
    herd's `gpu_bench bench --reference` compares against on the same weights."""
    import torch
    os.makedirs(out_dir, exist_ok=True)
    rows, tokens = [], []
    t = time.perf_counter()
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p], device="cuda")
            out = model(input_ids=ids, use_cache=True)
            logits = out.logits[0, -1].float()
            rows.append(logits.cpu())
            past, seq = out.past_key_values, []
            nxt = int(logits.argmax())
            for _ in range(new):
                seq.append(nxt)
                out = model(input_ids=torch.tensor([[nxt]], device="cuda"), past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = int(out.logits[0, -1].float().argmax())
            tokens.append(seq)
    torch.stack(rows).numpy().astype("<f4").tofile(os.path.join(out_dir, "hf_reference_logits.f32"))
    # The same weights in f32: how far bf16 arithmetic alone (transformers' own) moves the
    # logits, the scale against which herd's difference is judged.
    model.float()
    with torch.no_grad():
        rows32 = [model(input_ids=torch.tensor([p], device="cuda")).logits[0, -1].float().cpu() for p in prompts]
    model.to(torch.bfloat16)
    torch.cuda.empty_cache()
    torch.stack(rows32).numpy().astype("<f4").tofile(os.path.join(out_dir, "hf_reference_logits_f32.f32"))
    for i, (a, b) in enumerate(zip(rows, rows32)):
        print(f"reference: prompt {i} ({len(prompts[i])} tokens): transformers bf16 vs f32 max |logit diff| "
              f"{float((a - b).abs().max()):.4f}, rel err {float((a - b).norm() / b.norm()):.2e}, "
              f"argmax {int(a.argmax())} / {int(b.argmax())}", flush=True)
    json.dump(dict(prompts=prompts, tokens=tokens, logits_file="hf_reference_logits.f32",
                   logits_f32_file="hf_reference_logits_f32.f32"),
              open(os.path.join(out_dir, "hf_reference.json"), "w"))
    print(f"reference: {len(prompts)} prompts, logits and {new} greedy tokens each, in {time.perf_counter() - t:.1f}s", flush=True)


def cmd_hf(a):
    import torch
    prompts = json.load(open(a.prompts))
    shape = shape_of(a.shape)
    t = time.perf_counter()
    measure_ceilings(a.json)
    model = make_model(shape)
    print(f"model {a.shape} made in {time.perf_counter() - t:.1f}s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters", flush=True)
    gen = prompts["generation"][:a.gen_count]
    judge = prompts["judge"][:a.judge_count]
    if a.ref_out:
        hf_reference(model, prompts["generation"][:6] + prompts["judge"][:2], a.ref_new, a.ref_out)
    if a.gen_count:
        hf_generate(model, gen[:8], 8, 8, None, "warmup")
        for batch in a.gen_batches:
            hf_generate(model, gen, batch, a.max_new, a.json, "hf_generate")
    if a.judge_count:
        hf_logprob(model, judge[:8], a.judge_budget, None)
        hf_logprob(model, judge, a.judge_budget, a.json)
        ranked = sorted(judge, key=len)
        hf_generate(model, ranked, a.ranking_batch, a.ranking_new, a.json, "hf_judge_ranking")
    if a.out:
        t = time.perf_counter()
        os.makedirs(a.out, exist_ok=True)
        model.save_pretrained(a.out, safe_serialization=True, max_shard_size="5GB")
        json.dump(config_json(shape), open(os.path.join(a.out, "config.json"), "w"), indent=1)
        print(f"saved to {a.out} in {time.perf_counter() - t:.1f}s", flush=True)


def decode_roofline(lens, batch, new, p, bw, flops):
    """Seconds for `new` greedy steps over `lens` in batches of `batch` at the memory floor:
    each step reads every weight once (the embedding table excepted) and each sequence's
    keys and values; and the matching compute floor (2 x parameters per token)."""
    w = 2 * (p["total"] - p["embedding"])
    kv_per_token = 2 * p["layers"] * p["kv_heads"] * 128 * 2
    mem = comp = 0.0
    for s in range(0, len(lens), batch):
        group = lens[s:s + batch]
        for step in range(new):
            mem += (w + sum(l + step for l in group) * kv_per_token + len(group) * kv_per_token) / bw
            comp += 2 * (p["total"] - p["embedding"]) * len(group) / flops
    return mem, comp


def cmd_report(a):
    records = []
    for path in a.jsonl:
        if os.path.exists(path):
            records += [json.loads(l) for l in open(path) if l.strip()]
    ceil = next((r for r in records if r.get("bench") == "ceilings"), None)
    if not ceil:
        print("no ceilings measured"); return
    bw, flops = ceil["copy_bytes_s"], ceil["bf16_matmul_flop_s"]
    prompts = json.load(open(a.prompts))
    p = params_of(shape_of(a.shape))
    print(f"\n## {ceil['device']}: copy {bw / 1e12:.2f} TB/s, bf16 matmul {flops / 1e12:.0f} TFLOP/s; model {a.shape} "
          f"({p['total'] / 1e9:.2f}B parameters, random bf16 weights)\n")
    print("| workload | engine | batch | examples/s | tok/s | % of roofline |")
    print("|---|---|---|---|---|---|")
    for r in records:
        b = r.get("bench", "")
        if "prompt_tokens" in r and "seconds" in r:
            r.setdefault("prompt_tok_s", r["prompt_tokens"] / r["seconds"])
        if b in ("herd_generate", "hf_generate"):
            lens = [len(x) for x in prompts["generation"][:r["prompts"]]]
            mem, comp = decode_roofline(lens, r["batch"], r["new_tokens"], p, bw, flops)
            # The floor is the slower of the two: reading weights and cache, or the matmuls.
            roof = r["output_tokens"] / max(mem, comp)
            bound = "memory" if mem >= comp else "compute"
            print(f"| generation {r['prompts']}x{r['new_tokens']} | {b.split('_')[0]} | {r['batch']} | {r['examples_s']:.2f} | "
                  f"{r['output_tok_s']:.0f} output | {100 * r['output_tok_s'] / roof:.0f}% of {roof:.0f} ({bound}; memory floor "
                  f"{r['output_tokens'] / mem:.0f}, compute floor {r['output_tokens'] / comp:.0f}) |")
        elif b in ("herd_judge_logprob", "hf_judge_logprob"):
            roof = flops / (2 * (p["total"] - p["embedding"]))
            print(f"| judge logprob {r['prompts']} prompts | {b.split('_')[0]} | {r['step_tokens']} tok/step | {r['examples_s']:.2f} | "
                  f"{r['prompt_tok_s']:.0f} prompt | {100 * r['prompt_tok_s'] / roof:.0f}% of {roof:.0f} (compute) |")
        elif b in ("herd_judge_ranking", "hf_judge_ranking"):
            roof = flops / (2 * (p["total"] - p["embedding"]))
            print(f"| judge ranking {r['prompts']}x{r['new_tokens']} | {b.split('_')[0]} | {r['batch']} | {r['examples_s']:.2f} | "
                  f"{r['prompt_tok_s']:.0f} prompt | {100 * r['prompt_tok_s'] / roof:.0f}% of {roof:.0f} (compute, prefill only) |")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hf")
    h.add_argument("--shape", default="llama-3.1-8b")
    h.add_argument("--out")
    h.add_argument("--prompts", required=True)
    h.add_argument("--json")
    h.add_argument("--gen-count", type=int, default=256)
    h.add_argument("--gen-batches", type=lambda s: [int(x) for x in s.split(",")], default=[256])
    h.add_argument("--max-new", type=int, default=256)
    h.add_argument("--judge-count", type=int, default=256)
    h.add_argument("--judge-budget", type=int, default=16384)
    h.add_argument("--ranking-batch", type=int, default=64)
    h.add_argument("--ranking-new", type=int, default=32)
    h.add_argument("--ref-out", help="folder for transformers' reference logits and greedy tokens")
    h.add_argument("--ref-new", type=int, default=32)
    r = sub.add_parser("report")
    r.add_argument("--prompts", required=True)
    r.add_argument("--shape", default="llama-3.1-8b")
    r.add_argument("jsonl", nargs="+")
    a = ap.parse_args()
    {"hf": cmd_hf, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
