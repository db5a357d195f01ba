#!/usr/bin/env python3
"""herd against llama.cpp on the CPU, side by side, one table (bench/cpu/README.md).

Both engines read the same token ids (written once by `cpu_bench prepare`): AlpacaEval
instructions in the model's chat template, greedy, a fixed number of new tokens with EOS
ignored. Every workload runs herd and llama.cpp back to back, alternating which goes first,
`--reps` times; each cell is the median, and the ratio is taken per repetition (the two runs
of a pair saw the same load from other processes) before the median.

  python3 bench/cpu/run.py [--reps 3] [--gen-prompts 48] [--single-prompts 8] [--max-new 128]
                           [--batch 48] [--workloads single,batched,prefill,judge-logprob]

Workloads:
  single         one sequence at a time (herd --batch 1; llama.cpp one sequence per context)
  batched        all prompts in flight (herd continuous batching, --batch; llama.cpp one
                 llama_batch per step over n_seq_max parallel sequences)
  prefill        ~900-token chat prompts, logits of the last position only
  judge-logprob  the judge's ranking prompts + answer prefix, one forward pass each
  judge-ranking  the judge's ranking prompts, greedy answer up to 100 tokens, stops at EOS
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERD = os.path.join(ROOT, "target", "release", "examples", "cpu_bench")
LLAMA = os.path.join(ROOT, "bench", "cpu", "llama_cpp_side.py")

# workload -> (herd --workload, llama.cpp --workload, throughput counted in)
WORKLOADS = {
    "single": ("gen", "gen", "output"),
    "batched": ("gen", "gen-batched", "output"),
    "prefill": ("prefill", "prefill", "prompt"),
    "judge-logprob": ("judge-logprob", "judge-logprob", "prompt"),
    "judge-ranking": ("judge-ranking", "judge-ranking", "examples"),
}


def run_json(cmd, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_commands(name, args, prompts):
    herd_wl, llama_wl, _ = WORKLOADS[name]
    herd = [HERD, "run", "--prompts", prompts, "--workload", herd_wl, "--max-new", str(args.max_new)]
    llama = [sys.executable, LLAMA, "--prompts", prompts, "--workload", llama_wl, "--threads", str(args.threads),
             "--max-new", str(args.max_new)]
    if name == "single":
        herd += ["--batch", "1", "--count", str(args.single_prompts)]
        llama += ["--count", str(args.single_prompts)]
    elif name == "batched":
        herd += ["--batch", str(args.batch)]
    return herd, llama


def rate(r, unit):
    if unit == "output":
        return r["output_tokens"] / r["seconds"]
    if unit == "prompt":
        return r["prompt_tokens"] / r["seconds"]
    return r["examples"] / r["seconds"]


def cpu_rate(r, unit):
    cpu = r.get("cpu_seconds") or 0
    if cpu <= 0:
        return float("nan")
    return rate(r, unit) * r["seconds"] / cpu


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def agreement(h, l):
    """How far herd's and llama.cpp's greedy outputs agree, token by token."""
    if "outputs" in h and "outputs" in l:
        pairs = list(zip(h["outputs"], l["outputs"]))
        if pairs:
            same = sum(1 for a, b in pairs if a == b)
            mean_prefix = statistics.mean(common_prefix(a, b) for a, b in pairs)
            return f"{same}/{len(pairs)} identical, mean common prefix {mean_prefix:.0f}/{len(pairs[0][1])}"
    if "candidate_logprobs" in h and "candidate_logprobs" in l:
        diffs = [abs(a - b) for x, y in zip(h["candidate_logprobs"], l["candidate_logprobs"]) for a, b in zip(x, y)]
        if diffs:
            return f"candidate logprobs: max |diff| {max(diffs):.3f}"
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen-prompts", type=int, default=48)
    ap.add_argument("--single-prompts", type=int, default=8, help="prompts of the single-sequence workload")
    ap.add_argument("--judge-prompts", type=int, default=8)
    ap.add_argument("--prefill-prompts", type=int, default=4)
    ap.add_argument("--prefill-len", type=int, default=900)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=48, help="herd's sequences in flight (batched workload)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (herd: RAYON_NUM_THREADS, default all cores)")
    ap.add_argument("--workloads", default="single,batched,prefill,judge-logprob")
    ap.add_argument("--model", default=None, help="a GGUF file (default: herd's default model)")
    ap.add_argument("--json", default=None, help="also write every run's result here")
    ap.add_argument("--extra-bufts", action="store_true",
                    help="let llama.cpp repack its weights (extra buffer types: AVX2 interleaved Q4_K, AMX); "
                         "its fastest setting where the build does not crash")
    ap.add_argument("--no-build", action="store_true", help="use target/release/examples/cpu_bench as it is")
    args = ap.parse_args()
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for n in names:
        if n not in WORKLOADS:
            sys.exit(f"unknown workload {n}; one of {', '.join(WORKLOADS)}")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36")

    if not args.no_build:
        # Incremental: only cpu_bench and what changed under it.
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "herd-engine", "--example", "cpu_bench"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="herd-cpu-bench-")
    prompts = os.path.join(tmp, "prompts.json")
    prepare = [HERD, "prepare", "--out", prompts, "--gen-prompts", str(max(args.gen_prompts, args.single_prompts)),
               "--judge-prompts", str(args.judge_prompts), "--prefill-prompts", str(args.prefill_prompts),
               "--prefill-len", str(args.prefill_len)]
    if args.model:  # cpu_bench reads its subcommand first, flags after it
        prepare[2:2] = ["--model", args.model]
    subprocess.run(prepare, check=True)
    meta = json.load(open(prompts))

    results = {n: [] for n in names}
    for rep in range(args.reps):
        for n in names:
            herd, llama = side_commands(n, args, prompts)
            if args.extra_bufts:
                llama.append("--extra-bufts")
            if args.model:
                herd[2:2] = ["--model", args.model]
                llama += ["--model", args.model]
            order = [("herd", herd), ("llama.cpp", llama)]
            if rep % 2 == 1:
                order.reverse()
            pair = {}
            for side, cmd in order:
                pair[side] = run_json(cmd)
                unit = WORKLOADS[n][2]
                print(f"  rep {rep + 1} {n:<14} {side:<10} {rate(pair[side], unit):8.1f} "
                      f"{'tok/s' if unit != 'examples' else 'ex/s'}  ({pair[side]['seconds']:.1f} s)", file=sys.stderr)
            results[n].append(pair)

    if args.json:
        json.dump({"prompts": prompts, "results": results}, open(args.json, "w"))

    gen_lens = [len(p) for p in meta["gen"][:args.gen_prompts]]
    print()
    print(f"model {meta['model']} ({os.path.basename(meta['model_path'])}); {os.cpu_count()} cores, "
          f"llama.cpp threads {args.threads}, herd RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all cores')}; "
          f"median of {args.reps}")
    print(f"generation: chat-template prompts (mean {statistics.mean(gen_lens):.0f} tokens), greedy, "
          f"{args.max_new} new tokens, EOS ignored; single: {args.single_prompts} prompts, batched: {args.gen_prompts} "
          f"(herd --batch {args.batch})")
    print()
    header = f"| {'workload':<14} | {'unit':<13} | {'herd':>8} | {'llama.cpp':>9} | {'ratio':>6} | {'ratio CPU-s':>11} | " \
             f"{'herd RSS MiB':>12} | {'llama RSS MiB':>13} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    notes = []
    for n in names:
        unit = WORKLOADS[n][2]
        pairs = results[n]
        h = statistics.median(rate(p["herd"], unit) for p in pairs)
        l = statistics.median(rate(p["llama.cpp"], unit) for p in pairs)
        ratio = statistics.median(rate(p["herd"], unit) / rate(p["llama.cpp"], unit) for p in pairs)
        cpu_ratio = statistics.median(cpu_rate(p["herd"], unit) / cpu_rate(p["llama.cpp"], unit) for p in pairs)
        hr = max(p["herd"]["peak_rss_mib"] for p in pairs)
        lr = max(p["llama.cpp"]["peak_rss_mib"] for p in pairs)
        label = {"output": "output tok/s", "prompt": "prompt tok/s", "examples": "examples/s"}[unit]
        print(f"| {n:<14} | {label:<13} | {h:8.1f} | {l:9.1f} | {ratio:5.2f}x | {cpu_ratio:10.2f}x | {hr:12.0f} | {lr:13.0f} |")
        agree = agreement(pairs[0]["herd"], pairs[0]["llama.cpp"])
        if agree:
            notes.append(f"{n}: {agree}")
    if "batched" in results and "single" in results:
        b = statistics.median(rate(p["herd"], "output") for p in results["batched"])
        s = statistics.median(rate(p["llama.cpp"], "output") for p in results["single"])
        print(f"\nherd batched / llama.cpp single-sequence (the issue's target, >= 1.5x): {b / s:.2f}x")
    for n in names:
        if n.startswith("judge"):
            p = results[n]
            ex = statistics.median(x["herd"]["examples"] / x["herd"]["seconds"] for x in p)
            print(f"herd {n}: {ex:.2f} examples/s")
    if "batched" in results and "single" in results:
        # Each engine against itself: does batching change its greedy tokens?
        for side in ("herd", "llama.cpp"):
            one, many = results["single"][0][side], results["batched"][0][side]
            if "outputs" in one and "outputs" in many:
                pairs = list(zip(one["outputs"], many["outputs"]))
                prefix = statistics.mean(common_prefix(a, b) for a, b in pairs)
                notes.append(f"{side} single vs its own batched: mean common prefix {prefix:.0f}/{len(pairs[0][0])}")
    if notes:
        print("\ngreedy agreement (first repetition):\n  " + "\n  ".join(notes))


if __name__ == "__main__":
    main()
