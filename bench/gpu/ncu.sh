#!/usr/bin/env bash
# Hardware counters (Nsight Compute) of herd's hot GPU kernels, on a GPU machine, from the
# repo root with .device/ prepared as for run.sh. A 4-layer model of the Llama-3.1-8B shape
# keeps the GPU memory that ncu saves and restores around each kernel replay small; the
# kernels see the same shapes per layer as in the full model:
#   decode attention and a cuBLAS matmul of a decode pass at batch 256 (some 90 steps into
#   a 256x256 generation run), and the fused prefill attention on a judge-length prompt.
# Output: $OUT/ncu-*.txt.
set -uo pipefail
exec 2>&1
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MODEL=/tmp/herd-ncu/llama-3.1-8b-4layers
LD_LIBRARY_PATH=$(python3 -c 'import nvidia,glob,os;print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d+"/**/lib/*.so*",recursive=True)})))'):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
BIN=/tmp/gpu_bench
[ -x $BIN ] || { gunzip -c .device/gpu_bench.gz > $BIN && chmod +x $BIN; }
gunzip -kf .device/prompts.json.gz .device/tokenizer.json.gz 2>/dev/null
PROMPTS=.device/prompts.json
python3 bench/gpu/hf_bench.py hf --shape llama-3.1-8b:4 --out $MODEL --prompts $PROMPTS --gen-count 0 --judge-count 0 | tail -2
cp .device/tokenizer.json .device/tokenizer_config.json $MODEL/
SMALL="--kv-cache-tokens 90000"
SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis"
run_ncu() {  # name filter skip app-args...
    local name=$1 filter=$2 skip=$3; shift 3
    echo "=== ncu $name"
    timeout 150 ncu --clock-control none -k "regex:$filter" --launch-skip $skip --launch-count 1 $SECTIONS \
        $BIN "$@" > $OUT/ncu-$name.txt 2>&1
    grep -E "^  [a-z_]|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit Reg|Warp Cycles Per Issued" $OUT/ncu-$name.txt | head -30
}
run_ncu decode-attention herd_decode_attention 400 generate --model $MODEL --prompts $PROMPTS --runs 256:256 $SMALL
run_ncu decode-matmul 'gemm|nvjet|xmma|cutlass' 1000 generate --model $MODEL --prompts $PROMPTS --runs 256:256 $SMALL
run_ncu prefill-attention herd_prefill_attention 20 judge --model $MODEL --prompts $PROMPTS --count 16 --budgets 16384 --ranking-new 0 $SMALL
