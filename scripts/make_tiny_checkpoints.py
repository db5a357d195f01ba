#!/usr/bin/env python3
"""Makes tiny random Hugging Face checkpoints and transformers' outputs for them.

herd has its own Rust implementation of each model family it runs from safetensors. This
script gives that implementation something exact to be checked against: for each family, a
checkpoint small enough to keep in a test fixture (hidden size 64, 2-6 layers, vocabulary 320,
float32, well under 1 MB) with random but deterministic weights, and what transformers computes
with it (eager attention, float32, on the CPU):

  OUT_DIR/<family>/config.json, generation_config.json, model.safetensors   (save_pretrained)
  OUT_DIR/<family>/tokenizer.json, tokenizer_config.json (with a ChatML-like chat_template)
  OUT_DIR/<family>/reference.json:
    prompts          3 token id lists of lengths 5, 17 and 40 (<bos> + seeded random ids)
    logits           per prompt, the logits of every position, from one forward pass
    greedy           per prompt, 24 greedy tokens from model.generate with every EOS id
                     suppressed (min_new_tokens = max_new_tokens = 24), the gap between the two
                     best scores at each step, and the same search without a KV cache (a full
                     forward pass per step): no_cache_tokens, matches_no_cache. They differ only
                     where transformers' own cache is wrong (seen: 4.50, Gemma 2/3, the 5-token
                     prompt growing past the window); then trust no_cache_tokens
    bf16_cuda        with --device cuda: the same model in bfloat16 on the GPU, its
                     last-position logits per prompt and its greedy tokens (else null)
    resolved         the config as the installed transformers resolved it (layer types, RoPE
                     parameters, ...), since config.json's layout differs between versions
    chat_example     a conversation rendered through the chat template, and its token ids
    versions, family, architecture, seed, suppressed_token_ids

Each family turns on its own particulars so that the 17- and 40-token prompts exercise them:
sliding windows of 8, Llama 3 RoPE scaling, Q/K/V biases, q/k norms, soft-capping, Gemma's
(1 + w) norms, fused projections, partial rotary embeddings, tied and untied output heads.
Weights are drawn per tensor from a generator seeded by the seed, the family and the tensor's
name, so they do not depend on transformers' init code or version: matrices and biases
N(0, 0.125^2), norm weights their neutral value (1, or 0 for Gemma's (1 + w) norms) plus
0.1 * N(0, 1), so that a norm applied with the wrong offset, or a bias left out, fails.

One byte-level BPE tokenizer (trained here with the tokenizers library on a built-in English
text) serves every family: <pad>=0 <bos>=1 <eos>=2 <|im_start|>=3 <|im_end|>=4. config.json has
bos 1 / eos 2 / pad 0; generation_config.json lists eos [2, 4]. The tokenizer's post-processor
adds <bos>; the chat template writes {{ bos_token }} itself (encode its text without specials).

For the reader of these files: config.json is written by the installed transformers, and its
layout differs. 4.x writes rope_theta / rope_scaling (Gemma 3: rope_local_base_freq and
sliding_window_pattern; Gemma 2 in 4.50: no layer_types, even layers slide). 5.x writes
rope_parameters (for Gemma 3 nested by layer type: full_attention / sliding_attention) and
layer_types. A sliding window W lets position i see j when 0 <= i - j < W. With the same
weights, 4.50 and 5.x give bit-identical forward logits for every family both have.

Usage: python3 scripts/make_tiny_checkpoints.py OUT_DIR [--device cpu|cuda] [--families a,b]

Needs torch, transformers (4.50 or later; Qwen3 needs 4.51: a family whose class the installed
version lacks is skipped and listed in OUT_DIR/manifest.json), tokenizers, safetensors.
"""

import argparse
import json
import platform
import random
import sys
import zlib
from pathlib import Path

SEED = 20250101
PROMPT_LENGTHS = (5, 17, 40)
NEW_TOKENS = 24
VOCAB = 320
WEIGHT_STD = 0.125  # about 1/sqrt(hidden): attention is far from uniform, logits spread ~1
NORM_STD = 0.1
PAD, BOS, EOS, IM_START, IM_END = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>"]
END_IDS = [EOS, IM_END]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. A model reads the text one token at a time and
predicts the next one. When the weather is fine, the children walk to the river and watch the
boats go by. She said that the answer was simple, but nobody in the room believed her at first.
Numbers such as 12, 345 and 6789 appear in reports, tables and lists. The engine loads the
weights, builds the cache, and then writes the answer token by token until it reaches the end.
Please explain why the sky is blue, and give three short examples of how light is scattered.
It was the best of times, it was the worst of times; it was the age of wisdom, it was the age
of foolishness. What is the capital of France? Paris is the capital and largest city of France.
"""

# Settings every family shares: tiny, grouped-query attention with 4 query and 2 KV heads.
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=PAD,
)


# One function per family: (model class name, config class name, config kwargs, neutral norm
# weight). Config kwargs use the long-standing names (rope_theta, rope_scaling,
# rope_local_base_freq, sliding_window_pattern, partial_rotary_factor): transformers 5 still
# accepts them and converts them to rope_parameters / layer_types.

def llama():
    return "LlamaForCausalLM", "LlamaConfig", dict(
        COMMON,
        num_hidden_layers=2,
        head_dim=16,
        rope_theta=10000.0,
        # wavelengths 2*pi*10000^(i/8) are 6.3, 20, 63, 199, ...: with original 64 and factors
        # 1/4 the first stays, the next two are smoothed, the rest divided by 8.
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=64),
        tie_word_embeddings=False,
    ), 1.0


def mistral():
    return "MistralForCausalLM", "MistralConfig", dict(
        COMMON,
        num_hidden_layers=2,
        head_dim=16,
        rope_theta=10000.0,
        sliding_window=8,
        tie_word_embeddings=False,
    ), 1.0


def qwen2():
    return "Qwen2ForCausalLM", "Qwen2Config", dict(
        COMMON,
        num_hidden_layers=2,
        rope_theta=1000000.0,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=2,
        tie_word_embeddings=True,
    ), 1.0


def qwen3():
    return "Qwen3ForCausalLM", "Qwen3Config", dict(
        COMMON,
        num_hidden_layers=2,
        head_dim=32,  # not hidden / heads = 16
        rope_theta=1000000.0,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=2,
        attention_bias=False,
        tie_word_embeddings=True,
    ), 1.0


def gemma2():
    return "Gemma2ForCausalLM", "Gemma2Config", dict(
        COMMON,
        num_hidden_layers=4,  # sliding, global, sliding, global
        head_dim=16,
        hidden_activation="gelu_pytorch_tanh",
        rope_theta=10000.0,
        query_pre_attn_scalar=32,  # scale 1/sqrt(32), not 1/sqrt(head_dim)
        sliding_window=8,
        attn_logit_softcapping=5.0,  # small so that the caps bite with these weights
        final_logit_softcapping=3.0,
        tie_word_embeddings=True,
    ), 0.0


def gemma3():
    return "Gemma3ForCausalLM", "Gemma3TextConfig", dict(
        COMMON,
        num_hidden_layers=6,  # five sliding layers, then a global one
        sliding_window_pattern=6,  # read by 4.50-4.5x; 5.x turns it into layer_types
        head_dim=16,
        hidden_activation="gelu_pytorch_tanh",
        rope_theta=1000000.0,  # global layers, with linear scaling
        rope_scaling=dict(rope_type="linear", factor=8.0),
        rope_local_base_freq=10000.0,  # sliding layers, unscaled
        query_pre_attn_scalar=24,
        sliding_window=8,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
        tie_word_embeddings=True,
    ), 0.0


def phi3():
    return "Phi3ForCausalLM", "Phi3Config", dict(
        COMMON,
        num_hidden_layers=2,
        rope_theta=10000.0,
        partial_rotary_factor=0.5,  # rotary on the first 8 of 16 head dims
        original_max_position_embeddings=512,
        sliding_window=None,
        tie_word_embeddings=False,
    ), 1.0


FAMILIES = {f.__name__: f for f in (llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3)}


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B:1", special_tokens=[("<bos>", BOS)]
    )
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(name) == i, (name, tok.token_to_id(name))
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    return tok


def tokenizer_config():
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "model_max_length": COMMON["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def make_prompts(seed, n_tokens):
    rng = random.Random(seed)
    return [[BOS] + [rng.randrange(len(SPECIAL_TOKENS), n_tokens) for _ in range(n - 1)]
            for n in PROMPT_LENGTHS]


def randomize(model, family, neutral_norm, seed):
    """Deterministic weights, independent of transformers' init and parameter order."""
    import torch

    norms = {f"{name}.weight" for name, module in model.named_modules()
             if type(module).__name__.endswith("RMSNorm")}
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(seed ^ zlib.crc32(f"{family}/{name}".encode()))
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name in norms:
                p.copy_(neutral_norm + NORM_STD * noise)
            elif name.endswith(".bias") or p.dim() == 2:
                p.copy_(WEIGHT_STD * noise)
            else:
                raise SystemExit(f"unexpected parameter {name} {tuple(p.shape)}: extend randomize()")


def f32_list(t):
    """float32 values as JSON numbers that read back to the same float32 (9 digits)."""
    return [float(f"{v:.9g}") for v in t.float().reshape(-1).tolist()]


def greedy(model, prompt, device):
    """24 greedy tokens from generate() (EOS suppressed), top-2 gaps, and a cache-free check."""
    import torch

    ids = torch.tensor([prompt], device=device)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        num_beams=1,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        eos_token_id=END_IDS,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    tokens = out.sequences[0, len(prompt):].tolist()
    assert len(tokens) == NEW_TOKENS, tokens
    gaps = []
    for scores in out.scores:  # processed: the EOS ids are -inf
        top = torch.topk(scores[0].float(), 2).values
        gaps.append(float(f"{(top[0] - top[1]).item():.6g}"))

    # The same greedy search without a KV cache: a full forward pass per step. generate() must
    # agree; where it does not, transformers' cache is at fault (4.50's Gemma HybridCache once a
    # short prompt grows past the sliding window) and no_cache_tokens is the one to trust.
    seq = ids
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            last = model(seq).logits[0, -1].float()
            last[END_IDS] = float("-inf")
            seq = torch.cat([seq, last.argmax().view(1, 1)], dim=1)
        full = model(out.sequences).logits[0, len(prompt) - 1:-1].float()
    step = torch.stack([x[0].float() for x in out.logits])
    no_cache = seq[0, len(prompt):].tolist()
    return {
        "tokens": tokens,
        "top2_gap": gaps,
        "no_cache_tokens": no_cache,
        "matches_no_cache": no_cache == tokens,
        # generate()'s raw step logits against one cache-free pass over its own sequence
        "max_abs_diff_vs_no_cache": float(f"{(step - full).abs().max().item():.3g}"),
    }


def resolved_config(config):
    keys = ["model_type", "head_dim", "layer_types", "sliding_window", "sliding_window_pattern",
            "use_sliding_window", "max_window_layers", "rope_parameters", "rope_theta",
            "rope_scaling", "rope_local_base_freq", "partial_rotary_factor",
            "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
            "hidden_act", "hidden_activation", "attention_bias", "tie_word_embeddings",
            "_attn_implementation"]
    out = {}
    for k in keys:
        try:
            v = getattr(config, k)
        except AttributeError:
            continue
        out[k] = json.loads(json.dumps(v, default=str))
    return out


def make_family(family, out_dir, tok, seed, device, versions):
    import torch
    import transformers

    model_cls_name, config_cls_name, kwargs, neutral_norm = FAMILIES[family]()
    model_cls = getattr(transformers, model_cls_name, None)
    config_cls = getattr(transformers, config_cls_name, None)
    if model_cls is None or config_cls is None:
        return f"transformers {transformers.__version__} has no {model_cls_name}"

    d = out_dir / family
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = config_cls(**kwargs)
    model = model_cls(config).float().eval()
    randomize(model, family, neutral_norm, seed)
    model.generation_config.bos_token_id = BOS
    model.generation_config.eos_token_id = END_IDS
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(d)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")

    # The reference comes from the checkpoint as written, read back the ordinary way.
    model = model_cls.from_pretrained(d, attn_implementation="eager").float().eval()
    prompts = make_prompts(seed, tok.get_vocab_size())
    ref = {
        "family": family,
        "architecture": model_cls_name,
        "seed": seed,
        "versions": versions,
        "resolved": resolved_config(model.config),
        "vocab_size": config.vocab_size,
        "suppressed_token_ids": END_IDS,
        "prompts": prompts,
        "logits": [],
        "greedy": [],
        "bf16_cuda": None,
        "chat_example": chat_example(d),
    }
    with torch.no_grad():
        for p in prompts:
            logits = model(torch.tensor([p])).logits[0]
            ref["logits"].append([f32_list(row) for row in logits])
    ref["greedy"] = [greedy(model, p, "cpu") for p in prompts]

    if device == "cuda":
        gpu = model.to("cuda", dtype=torch.bfloat16)
        last = []
        with torch.no_grad():
            for p in prompts:
                last.append(f32_list(gpu(torch.tensor([p], device="cuda")).logits[0, -1]))
        ref["bf16_cuda"] = {
            "gpu": torch.cuda.get_device_name(),
            "last_logits": last,
            "greedy": [greedy(gpu, p, "cuda") for p in prompts],
        }

    (d / "reference.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")
    size = (d / "model.safetensors").stat().st_size
    print(f"{family}: {d} (model.safetensors {size / 1e6:.2f} MB)", file=sys.stderr)
    for i, g in enumerate(ref["greedy"]):
        if not g["matches_no_cache"] or g["max_abs_diff_vs_no_cache"] > 1e-3:
            print(f"  warning: prompt {i}: generate() disagrees with cache-free greedy search "
                  f"(max logit diff {g['max_abs_diff_vs_no_cache']}): trust no_cache_tokens",
                  file=sys.stderr)
    return None


def chat_example(d):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(d)
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "What is the capital of France?"}]
    text = t.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return {"messages": messages, "add_generation_prompt": True, "text": text,
            "ids": t(text, add_special_tokens=False)["input_ids"]}


def main():
    ap = argparse.ArgumentParser(
        description="Write tiny random HF checkpoints (llama, mistral, qwen2, qwen3, gemma2, "
                    "gemma3, phi3) with transformers' logits and greedy tokens for them, to check "
                    "herd's Rust implementations against. See the module docstring.")
    ap.add_argument("out_dir", type=Path, help="one subfolder per family is written here")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: also record the model in bfloat16 on the GPU (bf16_cuda)")
    ap.add_argument("--families", default=",".join(FAMILIES),
                    help="comma-separated subset (default: all)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    import tokenizers
    import torch
    import transformers

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU")
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; known: {list(FAMILIES)}")

    torch.use_deterministic_algorithms(True, warn_only=True)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__,
                "tokenizers": tokenizers.__version__, "python": platform.python_version()}
    tok = build_tokenizer()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    made, skipped = [], {}
    for family in families:
        why = make_family(family, args.out_dir, tok, args.seed, args.device, versions)
        if why:
            skipped[family] = why
            print(f"{family}: skipped: {why}", file=sys.stderr)
        else:
            made.append(family)
    manifest = {"versions": versions, "seed": args.seed, "device": args.device,
                "families": made, "skipped": skipped}
    (args.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
