#!/usr/bin/env bash
# `herd run --device cuda` on one GPU with a generator and a judge that are two different
# models (random bf16 weights of the Llama-3.1-8B shape, made on the GPU by transformers),
# once with the phases taking turns and once with --pipeline. What it shows: each model's
# key/value cache (the "paged key/value cache allocated" log lines) and that both runs end
# with a leaderboard. Run from the repo root on the GPU machine with the CUDA build of herd
# gzipped at .device/herd.gz and the tokenizer from `gpu_bench prepare` in .device/:
#   bash bench/gpu/herd_run_gpu.sh        (logs under $OUT, or ./bench-out)
set -uo pipefail
exec 2>&1
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
LIMIT=${LIMIT:-64}
MAX_NEW=${MAX_NEW:-128}
MODELS=${MODELS:-/tmp/herd-run-gpu}
t0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - t0 ))s: $*"; }

export LD_LIBRARY_PATH=$(python3 - <<'PY'
import glob, os, nvidia
dirs = set()
for p in nvidia.__path__:
    for so in glob.glob(os.path.join(p, "**", "lib", "*.so*"), recursive=True):
        dirs.add(os.path.dirname(so))
print(":".join(sorted(dirs)))
PY
):${LD_LIBRARY_PATH:-}
HERD=/tmp/herd
gunzip -c .device/herd.gz > $HERD && chmod +x $HERD
gunzip -kf .device/tokenizer.json.gz 2>/dev/null

stamp "a random model of the Llama-3.1-8B shape"
mkdir -p $MODELS/generator
python3 - "$MODELS/generator" <<'PY'
import sys, torch, transformers
cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
    max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128009, torch_dtype="bfloat16")
torch.manual_seed(0)
with torch.device("cuda"):
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained(sys.argv[1], safe_serialization=True)
PY
cp .device/tokenizer.json $MODELS/generator/
# Llama 3's chat format, so that `template=chat` and the judge's chat rendering work.
python3 - "$MODELS/generator/tokenizer_config.json" <<'PY'
import json, sys
template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
            "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": template}, open(sys.argv[1], "w"))
PY
# The same files under another name: herd loads it as a second model.
ln -sfn $MODELS/generator $MODELS/judge
ls -la $MODELS/generator | head
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv

for mode in turns pipeline; do
    flag=""; [ $mode = pipeline ] && flag="--pipeline"
    stamp "herd run, generator and judge taking $mode"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader -lms 500 > $OUT/memory-$mode.txt &
    SMI=$!
    HERD_LOG=info timeout 240 $HERD run --device cuda --limit $LIMIT --no-judge-cache $flag \
        --generator name=gen-8b,model=$MODELS/generator,template=chat,max_new_tokens=$MAX_NEW \
        --judge-model $MODELS/judge --batch-size 64 --step-tokens 8192 --out $OUT/run-$mode \
        > $OUT/run-$mode.log 2>&1
    echo "rc=$?"
    kill $SMI 2>/dev/null
    sed 's/\x1b\[[0-9;]*m//g' $OUT/run-$mode.log | grep -E "cache allocated|model (loaded|released)|herd: error" | head -10
    grep -A8 "^herd run" $OUT/run-$mode.log
    echo "peak GPU memory used: $(sort -n $OUT/memory-$mode.txt | tail -1)"
    rm -rf $OUT/run-$mode/store
done
stamp "done"
