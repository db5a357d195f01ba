#!/usr/bin/env python3
"""Writes Hugging Face transformers' greedy continuations of Gemma 3 270M, the exact-arithmetic
reference for herd's Gemma 3: engine/tests/fixtures/gemma3/transformers_greedy.json.

transformers reads the same Q4_K_M GGUF (scripts/fetch-gemma3-270m.sh) and dequantises every
tensor to float32, so its outputs are the model's own arithmetic in f32, with no quantised
activations: what herd computes with --weights dense. (llama.cpp's references,
llama_cpp_greedy.json, come from its quantised kernels instead; see make_gemma3_reference.py.)

For the prompts of llama_cpp_greedy.json (the first 60 AlpacaEval instructions, BOS, no chat
template; the same token ids), eager attention, float32 on the CPU:
  * greedy_ids: 64 greedy tokens (stops early only at EOS, id 1), and top2_gaps at each step;
  * first_step_top5: the top 5 logits (ids, values) after each prompt.

Usage: python3 scripts/make_gemma3_transformers_reference.py [--model PATH] [--out FILE]
Needs: torch, transformers (5.x), accelerate, gguf.
"""

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "engine/tests/fixtures/gemma3"


def main():
    cache = Path(os.environ.get("HERD_MODEL_CACHE") or Path.home() / ".cache/herd/models")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=cache / "gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--out", type=Path, default=FIXTURES / "transformers_greedy.json")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    llama_cpp = json.loads((FIXTURES / "llama_cpp_greedy.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        # transformers loads a GGUF from a folder; a link keeps the file where it is.
        os.symlink(args.model.resolve(), Path(tmp) / args.model.name)
        model = AutoModelForCausalLM.from_pretrained(
            tmp, gguf_file=args.model.name, dtype=torch.float32, attn_implementation="eager"
        ).eval()
    eos = 1
    examples = []
    with torch.no_grad():
        for e in llama_cpp["examples"]:
            ids = torch.tensor([e["prompt_ids"]])
            out = model.generate(
                ids, do_sample=False, max_new_tokens=64, eos_token_id=eos, pad_token_id=0,
                return_dict_in_generate=True, output_logits=True,
            )
            tokens = out.sequences[0, ids.shape[1]:].tolist()
            gaps = []
            for step in out.logits:
                top = torch.topk(step[0].float(), 2).values
                gaps.append(round(float(top[0] - top[1]), 6))
            first = torch.topk(out.logits[0][0].float(), 5)
            examples.append({
                "index": e["index"],
                "prompt_ids": e["prompt_ids"],
                "greedy_ids": tokens,
                "top2_gaps": gaps,
                "first_step_top5": {"ids": first.indices.tolist(),
                                    "logits": [float(x) for x in first.values]},
            })
            print(e["index"], len(tokens), flush=True)
    result = {
        "generator": {"script": "scripts/make_gemma3_transformers_reference.py",
                      "transformers": transformers.__version__, "torch": torch.__version__},
        "model": llama_cpp["model"],
        "settings": {"dtype": "float32 (every GGUF tensor dequantised at load)",
                     "attention": "eager", "device": "cpu",
                     "prompt": llama_cpp["settings"]["prompt"],
                     "decoding": "greedy, up to 64 tokens, stops early only at EOS (1)"},
        "examples": examples,
    }
    args.out.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
