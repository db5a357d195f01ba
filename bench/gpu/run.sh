#!/usr/bin/env bash
# herd's GPU benchmark, one call on a GPU machine (bench/gpu/README.md). Run from the repo
# root with the gzipped gpu_bench binary and the prepared prompts/tokenizer in .device/:
#   bash bench/gpu/run.sh            (logs and JSON lines under $OUT, or ./bench-out)
# Steps: nvidia-smi; transformers side (ceilings, random-weight model of the real shape made
# on the GPU, HF generate and judge timings, model saved as safetensors); herd checks; NCCL
# smoke; herd generation and judge timings on the same weights and prompts; the table.
set -uo pipefail
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
SHAPE=${SHAPE:-llama-3.1-8b}
MODELS=${MODELS:-/tmp/herd-bench}
MODEL=$MODELS/$SHAPE
HF_GEN_COUNT=${HF_GEN_COUNT:-256}
JUDGE_COUNT=${JUDGE_COUNT:-256}
MAX_NEW=${MAX_NEW:-256}
STEPS=${STEPS:-check,nccl,hf,bench}
has() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
t0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - t0 ))s: $*"; }

gpu_ld_library_path() {
    python3 - <<'PY'
import glob, os, nvidia
dirs = set()
for p in nvidia.__path__:
    for so in glob.glob(os.path.join(p, "**", "lib", "*.so*"), recursive=True):
        dirs.add(os.path.dirname(so))
print(":".join(sorted(dirs)))
PY
}
export LD_LIBRARY_PATH=$(gpu_ld_library_path):${LD_LIBRARY_PATH:-}
BIN=/tmp/gpu_bench
gunzip -c .device/gpu_bench.gz > $BIN && chmod +x $BIN
gunzip -kf .device/prompts.json.gz .device/tokenizer.json.gz 2>/dev/null
PROMPTS=.device/prompts.json

stamp "device"
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv | tee $OUT/nvidia-smi.txt
df -h /tmp | tail -1

if has check; then
    stamp "herd checks (GPU vs CPU, ops, TP=2 on one GPU)"
    timeout 240 $BIN check --tp-smoke --json $OUT/herd.jsonl 2>&1 | tee $OUT/check.log
fi
if has nccl; then
    stamp "NCCL smoke"
    timeout 90 $BIN nccl --json $OUT/herd.jsonl 2>&1 | tee $OUT/nccl.log
fi
if has hf; then
    if [ -f "$MODEL/config.json" ]; then HF_OUT=""; else HF_OUT="--out $MODEL"; fi
    stamp "transformers ($SHAPE) ${HF_OUT:+and saving the model}"
    timeout 420 python3 bench/gpu/hf_bench.py hf --shape $SHAPE $HF_OUT --prompts $PROMPTS --json $OUT/hf.jsonl \
        --gen-count $HF_GEN_COUNT --max-new $MAX_NEW --judge-count $JUDGE_COUNT ${HF_ARGS:-} 2>&1 | tee $OUT/hf.log
    cp .device/tokenizer.json .device/tokenizer_config.json $MODEL/ 2>/dev/null
    ls -la $MODEL | head -20
fi
if has bench; then
    stamp "herd generation and judge"
    timeout 420 $BIN bench --model $MODEL --prompts $PROMPTS --max-new $MAX_NEW --runs ${GEN_RUNS:-256:256,805:256,805:805,1:1} \
        --step-tokens ${STEP_TOKENS:-8192} --count $JUDGE_COUNT --budgets ${JUDGE_BUDGETS:-8192,16384,32768} \
        --json $OUT/herd.jsonl 2>&1 | tee $OUT/bench.log
fi
stamp "report"
python3 bench/gpu/hf_bench.py report --shape $SHAPE --prompts $PROMPTS $OUT/hf.jsonl $OUT/herd.jsonl | tee $OUT/table.md
stamp "done"
