#!/usr/bin/env python3
"""llama.cpp's side of the CPU benchmark (bench/cpu/run.py drives it): the same token ids as
herd's side (written by `cpu_bench prepare`), through llama-cpp-python's low-level API so
that no Python sampling loop sits between decode calls (greedy argmax over the logits in
numpy, ~20 µs per token).

One workload per process, so its peak RSS is the workload's own; prints one JSON line.

  python3 bench/cpu/llama_cpp_side.py --prompts P.json --workload gen|gen-batched|prefill|judge-logprob|judge-ranking
"""
import argparse
import ctypes
import json
import resource
import sys
import time

import numpy as np
import llama_cpp as L


def cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


EXTRA_BUFTS = False


class Engine:
    def __init__(self, model_path, threads, n_ctx, n_seq_max=1, n_batch=512):
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        # Extra buffer types repack weights for AMX where the CPU reports it; this VM reports
        # AMX but llama.cpp's AMX path crashes in it (segfault on any multi-token batch), so
        # they are off unless asked for (--extra-bufts).
        mp.use_extra_bufts = EXTRA_BUFTS
        self.model = L.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            sys.exit(f"llama.cpp could not load {model_path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq_max
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = True
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        self.eog = {t for t in range(self.n_vocab) if L.llama_vocab_is_eog(vocab, t)}
        self.n_batch = n_batch
        self.batch = L.llama_batch_init(max(n_batch, n_seq_max), 0, n_seq_max)

    def clear(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def decode(self, entries):
        """entries: (token, pos, seq, wants_logits); returns the batch indices with logits."""
        b = self.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seq, out) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if out else 0
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            sys.exit(f"llama_decode failed: {rc}")

    def logits(self, i):
        ptr = L.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def prefill(self, tokens, seq=0, start=0):
        """Feeds `tokens` in n_batch chunks; returns the last position's logits."""
        for c in range(0, len(tokens), self.n_batch):
            chunk = tokens[c:c + self.n_batch]
            last = c + len(chunk) == len(tokens)
            self.decode([(t, start + c + j, seq, last and j == len(chunk) - 1) for j, t in enumerate(chunk)])
        return self.logits(-1)

    def generate_one(self, prompt, max_new, stop_at_eog):
        self.clear()
        logits = self.prefill(prompt)
        out = []
        pos = len(prompt)
        while True:
            tok = int(np.argmax(logits))
            out.append(tok)
            if len(out) >= max_new or (stop_at_eog and tok in self.eog):
                return out
            self.decode([(tok, pos, 0, True)])
            pos += 1
            logits = self.logits(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--workload", required=True,
                    choices=["gen", "gen-batched", "prefill", "judge-logprob", "judge-ranking"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--judge-max-new", type=int, default=100)
    ap.add_argument("--count", type=int, default=None, help="the first N prompts of the workload")
    ap.add_argument("--extra-bufts", action="store_true", help="let llama.cpp repack weights (AMX, ...)")
    args = ap.parse_args()
    global EXTRA_BUFTS
    EXTRA_BUFTS = args.extra_bufts
    p = json.load(open(args.prompts))
    for key in ("gen", "prefill", "judge_logprob", "judge_ranking"):
        p[key] = p[key][:args.count]
    model = args.model or p["model_path"]

    result = {"engine": "llama.cpp", "workload": args.workload}
    if args.workload == "gen":
        prompts = p["gen"]
        eng = Engine(model, args.threads, n_ctx=max(len(x) for x in prompts) + args.max_new + 8)
        t, cpu0 = time.perf_counter(), cpu_seconds()
        outputs = [eng.generate_one(x, args.max_new, False) for x in prompts]
        secs = time.perf_counter() - t
        result.update(examples=len(prompts), prompt_tokens=sum(map(len, prompts)),
                      output_tokens=sum(map(len, outputs)), outputs=outputs)
    elif args.workload == "gen-batched":
        # All sequences in one llama_batch per step (llama.cpp's `batched` example): every
        # prompt prefilled in n_batch chunks, then one token per sequence per decode call.
        prompts = p["gen"]
        n = len(prompts)
        ctx_len = sum(len(x) + args.max_new for x in prompts) + 64
        eng = Engine(model, args.threads, n_ctx=ctx_len, n_seq_max=n)
        t, cpu0 = time.perf_counter(), cpu_seconds()
        pending = [(s, j, tok) for s, x in enumerate(prompts) for j, tok in enumerate(x)]
        last_row = {}
        for c in range(0, len(pending), eng.n_batch):
            chunk = pending[c:c + eng.n_batch]
            entries = [(tok, j, s, j == len(prompts[s]) - 1) for s, j, tok in chunk]
            eng.decode(entries)
            for i, (s, j, _) in enumerate(chunk):
                if j == len(prompts[s]) - 1:
                    last_row[s] = np.argmax(eng.logits(i))
        outputs = [[int(last_row[s])] for s in range(n)]
        for step in range(1, args.max_new):
            eng.decode([(outputs[s][-1], len(prompts[s]) + step - 1, s, True) for s in range(n)])
            for s in range(n):
                outputs[s].append(int(np.argmax(eng.logits(s))))
        secs = time.perf_counter() - t
        result.update(examples=n, prompt_tokens=sum(map(len, prompts)), output_tokens=sum(map(len, outputs)),
                      outputs=outputs)
    elif args.workload in ("prefill", "judge-logprob"):
        prompts = p["prefill"] if args.workload == "prefill" else p["judge_logprob"]
        eng = Engine(model, args.threads, n_ctx=max(map(len, prompts)) + 8)
        cands = p.get("logprob_candidates", [0, 0])
        t, cpu0 = time.perf_counter(), cpu_seconds()
        verdicts = []
        for x in prompts:
            eng.clear()
            logits = eng.prefill(x).astype(np.float64)
            m = logits.max()
            lz = m + np.log(np.exp(logits - m).sum())
            verdicts.append([float(logits[c] - lz) for c in cands])
        secs = time.perf_counter() - t
        result.update(examples=len(prompts), prompt_tokens=sum(map(len, prompts)), output_tokens=0)
        if args.workload == "judge-logprob":
            result["candidate_logprobs"] = verdicts
    else:  # judge-ranking: greedy until end of generation or judge-max-new tokens
        prompts = p["judge_ranking"]
        eng = Engine(model, args.threads, n_ctx=max(map(len, prompts)) + args.judge_max_new + 8)
        t, cpu0 = time.perf_counter(), cpu_seconds()
        outs = [eng.generate_one(x, args.judge_max_new, True) for x in prompts]
        secs = time.perf_counter() - t
        result.update(examples=len(prompts), prompt_tokens=sum(map(len, prompts)), output_tokens=sum(map(len, outs)))
    result["seconds"] = secs
    result["cpu_seconds"] = cpu_seconds() - cpu0
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
