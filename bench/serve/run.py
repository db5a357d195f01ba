#!/usr/bin/env python3
"""`herd serve` against llama.cpp's OpenAI-compatible server on the same GGUF (bench/serve/README.md).

Both servers get the same load, one server running at a time (the other stopped, so they
never share cores), alternating which goes first per repetition: `--requests` chat
completions of the first AlpacaEval instructions, greedy, `max_tokens` each, sent by
`--concurrency` client threads. Each cell is the median over repetitions; the ratio is taken
per repetition before the median. Also checked: herd's own client (`herd run --generator
endpoint=...`) against llama.cpp's server, and how many greedy answers the two servers agree on.

  python3 bench/serve/run.py [--model GGUF] [--requests 32] [--concurrency 1,8]
                             [--max-tokens 128] [--reps 2] [--threads 2]

Needs target/release/herd (`cargo build --release`) and llama-cpp-python with its server
extra (`pip install 'llama-cpp-python[server]'`, a source build: ~20 min on 2 cores).
"""
import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERD = os.path.join(ROOT, "target", "release", "herd")
NAME = "smollm2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base, proc, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            # Ready means answering: herd serve lists its model while it still loads (503).
            chat(base, "Hi", 1)
            return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{base} not ready in {seconds}s")


def start(kind, model, threads, concurrency):
    port = free_port()
    if kind == "herd":
        cmd = [HERD, "serve", "--model", model, "--served-model-name", NAME, "--port", str(port),
               "--threads", str(threads), "--batch-size", str(max(concurrency, 1))]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--model_alias", NAME,
               "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
               "--n_ctx", "4096", "--n_batch", "512"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}/v1"
    wait_ready(base, proc)
    return proc, base


def chat(base, instruction, max_tokens):
    # llama-cpp-python's server applies a repeat penalty of 1.1 unless told otherwise; 1.0
    # keeps both servers on the model's own distribution (herd ignores the field).
    body = json.dumps({"model": NAME, "messages": [{"role": "user", "content": instruction}],
                       "max_tokens": max_tokens, "temperature": 0, "top_p": 1,
                       "repeat_penalty": 1.0}).encode()
    req = urllib.request.Request(base + "/chat/completions", data=body,
                                 headers={"content-type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        answer = json.load(r)
    latency = time.perf_counter() - started
    return answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"], latency


def load(base, instructions, max_tokens, concurrency):
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: chat(base, i, max_tokens), instructions))
    wall = time.perf_counter() - started
    tokens = sum(r[1] for r in results)
    return {
        "req_s": len(results) / wall,
        "tok_s": tokens / wall,
        "p50_s": statistics.median(r[2] for r in results),
        "texts": [r[0] for r in results],
    }


def interop(base, model_name):
    """herd's remote generator against this server: does a run complete with every answer?"""
    with tempfile.TemporaryDirectory() as out:
        cmd = [HERD, "run", "--limit", "4", "--max-new-tokens", "48", "--judge-model", "bench-noop",
               "--no-judge-cache", "--out", out, "--generator",
               f"name=served,endpoint={base},model={model_name}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        rows = json.load(open(os.path.join(out, "served", "model_outputs.json")))
        return f"ok: {len(rows)} answers, {sum(1 for r in rows if r['output'])} non-empty"


def main():
    ap = argparse.ArgumentParser()
    default_model = os.path.join(os.environ.get("HERD_MODEL_CACHE", os.path.expanduser("~/.cache/herd/models")),
                                 "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise SystemExit("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
    eval_set = json.load(open(os.path.join(ROOT, "data", "eval_set.json")))
    instructions = [row["instruction"] for row in eval_set[: args.requests]]
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    agreement = None
    for concurrency in levels:
        cells = {"herd": [], "llama.cpp": []}
        ratios = []
        for rep in range(args.reps):
            order = ["herd", "llama.cpp"] if rep % 2 == 0 else ["llama.cpp", "herd"]
            got = {}
            for kind in order:
                proc, base = start("herd" if kind == "herd" else "llama", args.model, args.threads, concurrency)
                try:
                    got[kind] = load(base, instructions, args.max_tokens, concurrency)
                finally:
                    proc.terminate()
                    proc.wait()
            for kind in got:
                cells[kind].append(got[kind])
            ratios.append(got["herd"]["tok_s"] / got["llama.cpp"]["tok_s"])
            if agreement is None:
                pairs = list(zip(got["herd"]["texts"], got["llama.cpp"]["texts"]))
                agreement = (sum(a == b for a, b in pairs), len(instructions))
                for a, b in pairs:
                    if a != b:
                        print(f"first differing answers:\n  herd:      {a!r}\n  llama.cpp: {b!r}", file=sys.stderr)
                        break
        med = lambda kind, key: statistics.median(c[key] for c in cells[kind])
        rows.append((concurrency, med("herd", "req_s"), med("herd", "tok_s"), med("herd", "p50_s"),
                     med("llama.cpp", "req_s"), med("llama.cpp", "tok_s"), med("llama.cpp", "p50_s"),
                     statistics.median(ratios)))
    proc, base = start("llama", args.model, args.threads, 1)
    try:
        interop_result = interop(base, NAME)
    finally:
        proc.terminate()
        proc.wait()

    print(f"model {os.path.basename(args.model)}, {args.requests} chat requests of the first AlpacaEval "
          f"instructions, greedy, max_tokens {args.max_tokens}, {args.threads} threads, median of {args.reps}")
    print()
    print("| clients | herd req/s | herd tok/s | herd p50 latency s | llama.cpp req/s | llama.cpp tok/s | llama.cpp p50 latency s | herd / llama.cpp tok/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c, hr, ht, hl, lr, lt, ll, ratio in rows:
        print(f"| {c} | {hr:.2f} | {ht:.1f} | {hl:.2f} | {lr:.2f} | {lt:.1f} | {ll:.2f} | {ratio:.2f}× |")
    print()
    print(f"greedy answers identical between the two servers: {agreement[0]} of {agreement[1]}")
    print(f"herd run --generator endpoint=<llama.cpp server>: {interop_result}")


if __name__ == "__main__":
    main()
