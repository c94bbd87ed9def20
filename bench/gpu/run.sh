#!/usr/bin/env bash
# Orchard's step against mlx-lm on an NVIDIA GPU (MLX's CUDA backend), at real scale:
# a 1.0B-parameter Llama-shaped bf16 model with random weights (hidden 2048, 16 layers,
# MLP 8192, 32/16 heads, vocabulary 512), then
#   1. bench/lora_vs_mlx_lm.py  rank 8 on attention,       batch 8 x 512
#   2. bench/lora_vs_mlx_lm.py  rank 64 on all linear,     batch 16 x 256
#   3. bench/e2e_vs_mlx_lm.py   orchard train vs mlx_lm.lora, rank 64 all linear, WikiSQL,
#                               batch 16 x 512; also Orchard with packing, in real tokens/s
# and prints the ratios. About 6-8 minutes on an H100.
#
# Usage, from the repository root, with the wheels of /work/shared/gpu.md installed by
#   pip install --no-index --no-deps --target /tmp/site *.whl
# (bench/gpu/slim_wheel.py makes an sm_90-only mlx-cuda-13 wheel of 30 MB, so the wheels fit
# one device call instead of two; not yet run on a device: no machine started that session)
#     bench/gpu/run.sh [SITE_DIR]          # SITE_DIR defaults to /tmp/site
# Environment: MODEL_DIR (default /tmp/orchard_1b_bf16; built once, reused), PYTHON (python3),
# STEPS (lockstep steps per trainer, default 30), E2E_ITERS (steps of each end-to-end run,
# default 150: enough that start-up, which both tools pay, is not the whole run).
# PEAK_PROBE=1: instead of the three benchmarks, run bench/gpu/peak_probe.py on the two
# lockstep cases (peak memory phase by phase, Orchard's step against mlx-lm's; ~3 minutes).
# APPLE_LIMITS=1: both tools run with Apple silicon's command-buffer limits (50 operations,
# 50 MB a buffer, an M-series Max/Ultra) instead of the H100's (100, 1000 MB): on this backend
# a peak is mostly buffers of queued work, and these limits bound it as Metal does.
# The run ends with bench/orchard_phases.py: where one orchard train run's wall time goes.
# LOG_DIR: keep every benchmark's whole output there (default: a new folder under /tmp).
# SKIP_LOCKSTEP=1: only the end-to-end run and the phases (about 4 minutes).
# E2E_PACKING=0: the end-to-end run without its third, packed, Orchard variant.
# E2E_ROUNDS: rounds of the end-to-end run (default 1; each round runs every variant once).
set -euo pipefail
cd "$(dirname "$0")/../.."
SITE="${1:-/tmp/site}"
PY="${PYTHON:-python3}"
MODEL="${MODEL_DIR:-/tmp/orchard_1b_bf16}"
STEPS="${STEPS:-30}"
E2E_ITERS="${E2E_ITERS:-150}"
PACKING="--packing"
[ "${E2E_PACKING:-1}" = "0" ] && PACKING=""

SP="$("$PY" -c 'import site; print(site.getsitepackages()[0])')"
if ls -d "$SP"/nvidia/*/lib >/dev/null 2>&1; then  # CUDA 13 libraries from PyTorch's wheels
  export LD_LIBRARY_PATH="$(ls -d "$SP"/nvidia/*/lib | tr '\n' ':')${LD_LIBRARY_PATH:-}"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ORCHARD_OPENBLAS=off  # the GPU does the work; no CPU BLAS preload for the worker
if [ "${APPLE_LIMITS:-0}" = "1" ]; then
  export MLX_MAX_OPS_PER_BUFFER=50 MLX_MAX_MB_PER_BUFFER=50
fi

"$PY" - <<'PY'
import mlx.core as mx
print(f"mlx {mx.__version__} on {mx.default_device()}")
assert mx.default_device() == mx.gpu, "MLX does not see a GPU: check LD_LIBRARY_PATH (gpu.md)"
PY

if [ ! -f "$MODEL/config.json" ]; then
  "$PY" scripts/make_random_model.py "$MODEL" --hidden 2048 --layers 16 --intermediate 8192 \
    --heads 32 --kv-heads 16 --vocab 512 --dtype bfloat16
fi

if [ "${PEAK_PROBE:-0}" = "1" ]; then
  echo "== rank 8 attention, batch 8 x 512 =="
  "$PY" bench/gpu/peak_probe.py --model "$MODEL" --rank 8 --targets attention --batch 8 --seq 512
  echo "== rank 64 all linear, batch 16 x 256 =="
  "$PY" bench/gpu/peak_probe.py --model "$MODEL" --rank 64 --targets all --batch 16 --seq 256
  exit 0
fi

LOG="${LOG_DIR:-$(mktemp -d /tmp/orchard_gpu_bench.XXXX)}"
mkdir -p "$LOG"
echo "logs in $LOG"
every=$((STEPS / 3))
if [ "${SKIP_LOCKSTEP:-0}" != "1" ]; then
"$PY" bench/lora_vs_mlx_lm.py --model "$MODEL" --rank 8 --targets attention \
  --batch 8 --seq 512 --steps "$STEPS" --every "$every" --rounds 1 2>&1 | tee "$LOG/r8_attention.txt" | grep -v '^\s*\[' | tail -4
"$PY" bench/lora_vs_mlx_lm.py --model "$MODEL" --rank 64 --targets all \
  --batch 16 --seq 256 --steps "$STEPS" --every "$every" --rounds 1 2>&1 | tee "$LOG/r64_all.txt" | grep -v '^\s*\[' | tail -4
fi
"$PY" bench/e2e_vs_mlx_lm.py --model "$MODEL" --data wikisql --rank 64 \
  --batch 16 --seq 512 --iters "$E2E_ITERS" --rounds "${E2E_ROUNDS:-1}" $PACKING --warmup 2>&1 | tee "$LOG/e2e.txt" | tail -8

"$PY" bench/orchard_phases.py --model "$MODEL" --iters 60 --batch 16 --seq 512 \
  --out "$LOG/phases" > "$LOG/phases.txt" 2>&1 || true

echo "== summary (GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)) =="
if [ "${SKIP_LOCKSTEP:-0}" != "1" ]; then
  echo "rank 8 attention:   $(tail -1 "$LOG/r8_attention.txt")"
  echo "rank 64 all linear: $(tail -1 "$LOG/r64_all.txt")"
fi
echo "e2e rank 64 all:    $(tail -1 "$LOG/e2e.txt")"
grep -E "real_tokens_per_s_ratio|engine_overhead_share" "$LOG/e2e.txt" | sed 's/^/  /'
echo "orchard train phases: $(tail -1 "$LOG/phases.txt")"
