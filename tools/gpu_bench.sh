#!/usr/bin/env bash
# The one GPU benchmark command, run from the repository root on the device machine:
#   bash tools/gpu_bench.sh            (results under $OUT, default /tmp/lowprec_bench)
# Offline: installs the wheels in .whl/ (if any) into /tmp/site, runs lowprec from the source tree
# (PYTHONPATH, no pip install -e), runs the `gpu`-marked tests, then each benchmark under its own
# `timeout` so one failure or hang cannot stop the rest, and prints every summary table last.
# Per-part limits (seconds) can be changed through the environment; the defaults fit ~9 minutes on an H100.
set -u
OUT=${OUT:-/tmp/lowprec_bench}
# Measured on an H100 (2026-11-22, JAX 0.11.2): a GEMM case compiles in 1-4 s, but each plain fp8
# dot (lax_fp8_raw, aqt_fp8, fp8_rowwise fwd_bwd) autotunes for ~30 s on first compile; a 350m
# train step compiles in ~20 s (bf16) and >120 s (fp8_tensorwise). One run of this script took
# ~500 s with these defaults; widen them through the environment when running parts alone, e.g.
#   T_TESTS=0 T_QUANT=0 T_HAD=0 T_TRAIN=0 T_GEMM=560 GEMM_SHAPES=16384x2048x8192,16384x4096x4096 bash tools/gpu_bench.sh
T_TESTS=${T_TESTS:-45} T_QUANT=${T_QUANT:-50} T_GEMM=${T_GEMM:-200} T_TRAIN=${T_TRAIN:-240} T_HAD=${T_HAD:-25}
REPS=${REPS:-10}
GEMM_SHAPES=${GEMM_SHAPES:-8192x8192x8192}
GEMM_RECIPES=${GEMM_RECIPES:-fp8_tensorwise,mxfp8,nvfp4,quartet,mxfp4_bwd}
TRAIN_MODELS=${TRAIN_MODELS:-350m}
TRAIN_RECIPES=${TRAIN_RECIPES:-bf16,fp8_tensorwise,mxfp8,nvfp4}
TRAIN_PEERS=${TRAIN_PEERS:-flax_fp8,qwix_fp8}
TRAIN_BATCH=${TRAIN_BATCH:-16}
TRAIN_START_S=${TRAIN_START_S:-60}  # no train case starts after this (a 350m fp8 step compiles in ~2 min)
HAD_AXES=${HAD_AXES:--1}
T_COMM=${T_COMM:-$([ "$(nvidia-smi -L 2>/dev/null | wc -l)" -gt 1 ] && echo 60 || echo 0)}  # machines with >= 2 GPUs
# Autotuning results are cached per fusion and reused by later compiles of the same GEMM
# (same kernels chosen, less compile time); harmless where the flag's directory is new.
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_per_fusion_autotune_cache_dir=/tmp/lowprec_xla_autotune"
PY=${PY:-python3}
mkdir -p "$OUT"
: > "$OUT/parts.log"

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || echo "wheel install failed: see $OUT/pip.log"
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

nvidia-smi -L
$PY - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "ml_dtypes", "grain", "qwix", "aqt", "tokenizers"):
    try:
        m = importlib.import_module(name)
        print(f"  {name:18s} {getattr(m, '__version__', 'installed')}")
    except Exception as e:
        print(f"  {name:18s} MISSING ({type(e).__name__}: {e})")
import jax
print("  devices", jax.devices())
PY

part() {  # part NAME LIMIT_S COMMAND...: run with a limit (0: skip), log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2; shift 2
  [ "$limit" -gt 0 ] || { echo "[$name] skipped" | tee -a "$OUT/parts.log"; return 0; }
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "[$name] exit $rc after $((SECONDS - t0)) s$([ $rc -ge 124 ] && echo ' (time limit: partial results kept)')" \
    | tee -a "$OUT/parts.log"
  return 0
}

part tests "$T_TESTS" $PY -m pytest -m gpu -q -p no:cacheprovider tests
part quantize "$T_QUANT" $PY -m lowprec.cli bench quantize --out "$OUT" --reps "$REPS"
part gemm "$T_GEMM" $PY -m lowprec.cli bench gemm --out "$OUT" --reps "$REPS" --shapes "$GEMM_SHAPES" \
  --recipes "$GEMM_RECIPES" --budget-s $((T_GEMM - 40))
part train "$T_TRAIN" $PY -m lowprec.cli bench train --out "$OUT" --reps "$REPS" --models "$TRAIN_MODELS" \
  --recipes "$TRAIN_RECIPES" --peers "$TRAIN_PEERS" --batch "$TRAIN_BATCH" --budget-s "$TRAIN_START_S"
part hadamard "$T_HAD" $PY -m lowprec.cli bench hadamard --out "$OUT" --reps "$REPS" --axes $HAD_AXES
part comm "$T_COMM" $PY -m lowprec.cli bench comm --out "$OUT" --reps "$REPS"

$PY -m lowprec.cli bench report "$OUT"
echo; cat "$OUT/parts.log"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -n 8
