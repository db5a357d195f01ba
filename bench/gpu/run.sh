#!/usr/bin/env bash
# herd's GPU benchmark, one call on a GPU machine (bench/gpu/README.md). Run from the repo
# root with the gzipped gpu_bench binary and the prepared prompts/tokenizer in .device/:
#   bash bench/gpu/run.sh            (logs and JSON lines under $OUT, or ./bench-out)
# Everything prints to stdout (tee it to $OUT/run.log); results are JSON lines in
# $OUT/hf.jsonl and $OUT/herd.jsonl, the table in $OUT/table.md, GPU load in $OUT/dmon.txt.
# Steps (STEPS=check,nccl,bad,hf,bench): nvidia-smi; herd checks (GPU ops and logits vs the
# CPU, TP=2 on one GPU); NCCL smoke; bad-input errors (also with no GPU visible); the
# transformers side (ceilings, a random-weight model of the real shape made on the GPU, its
# reference logits and greedy tokens, HF generate and judge timings, the model saved as
# safetensors); herd on the same weights and prompts (logits vs transformers, a per-phase
# profile, generation and judge timings); the table.
# Hardware counters of the hot kernels: bench/gpu/ncu.sh (a 4-layer model, so that ncu's
# memory save/restore around each replay stays small; on the full model it did not finish).
set -uo pipefail
exec 2>&1
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
SHAPE=${SHAPE:-llama-3.1-8b}
MODELS=${MODELS:-/tmp/herd-bench}
MODEL=$MODELS/$SHAPE
HF_GEN_COUNT=${HF_GEN_COUNT:-256}
JUDGE_COUNT=${JUDGE_COUNT:-256}
HF_JUDGE_COUNT=${HF_JUDGE_COUNT:-$JUDGE_COUNT}
MAX_NEW=${MAX_NEW:-256}
STEPS=${STEPS:-check,nccl,bad,hf,bench}
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
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv
df -h /tmp | tail -1

if has check; then
    stamp "herd checks (GPU vs CPU, ops, TP=2 on one GPU)"
    timeout 240 $BIN check --tp-smoke --json $OUT/herd.jsonl
fi
if has nccl; then
    stamp "NCCL smoke"
    timeout 40 $BIN nccl --json $OUT/herd.jsonl
fi
if has bad; then
    stamp "bad input: clear errors before work starts"
    timeout 60 $BIN bad-input --json $OUT/herd.jsonl
    CUDA_VISIBLE_DEVICES= timeout 60 $BIN bad-input --json $OUT/herd.jsonl
fi
if has hf; then
    if [ -f "$MODEL/config.json" ]; then HF_OUT=""; else HF_OUT="--out $MODEL"; fi
    stamp "transformers ($SHAPE) ${HF_OUT:+and saving the model}"
    timeout 420 python3 bench/gpu/hf_bench.py hf --shape $SHAPE $HF_OUT --prompts $PROMPTS --json $OUT/hf.jsonl \
        --gen-count $HF_GEN_COUNT --max-new $MAX_NEW --judge-count $HF_JUDGE_COUNT --ref-out $MODEL ${HF_ARGS:-}
    cp .device/tokenizer.json .device/tokenizer_config.json $MODEL/ 2>/dev/null
    ls -la $MODEL | head -20
fi
if has bench; then
    stamp "herd generation and judge"
    nvidia-smi dmon -s u -d 1 > $OUT/dmon.txt 2>&1 &
    DMON=$!
    timeout 420 $BIN bench --model $MODEL --prompts $PROMPTS --max-new $MAX_NEW --runs ${GEN_RUNS:-256:256,805:256,805:805,1:1} \
        --step-tokens ${STEP_TOKENS:-8192} --count $JUDGE_COUNT --budgets ${JUDGE_BUDGETS:-8192,16384,32768} \
        --reference $MODEL/hf_reference.json ${PROFILE---profile} ${BENCH_ARGS:-} --json $OUT/herd.jsonl
    kill $DMON 2>/dev/null
    if [ -n "${COMPARE_MATMUL_PREFILL:-}" ]; then
        stamp "herd judge with the cuBLAS prefill attention (before the fused kernel)"
        HERD_PREFILL_ATTENTION=matmul timeout 120 $BIN judge --model $MODEL --prompts $PROMPTS --count $JUDGE_COUNT \
            --budgets 16384 --ranking-new 0 --json $OUT/herd-matmul-prefill.jsonl
    fi
fi
stamp "report"
python3 bench/gpu/hf_bench.py report --shape $SHAPE --prompts $PROMPTS $OUT/hf.jsonl $OUT/herd.jsonl | tee $OUT/table.md
stamp "done"
