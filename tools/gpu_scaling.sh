#!/usr/bin/env bash
# Multi-GPU scaling of the training step, on a machine with >= 2 GPUs (e.g. nvidia-h200-x2):
#   bash tools/gpu_scaling.sh        (results under $OUT/scaling_*.json, default /tmp/lowprec_scaling)
# Weak scaling: each GPU keeps BATCH sequences, so the global batch is BATCH x GPUs. One GPU of the
# same machine first, then data parallel (mesh.data=N) and FSDP (mesh.fsdp=N); the XLA autotune
# cache is shared so later compiles reuse the first one's GEMM choices. ACCUM=k runs every layout with
# optim.grad_accum=k (micro-batches of BATCH sequences per GPU). Data parallel then pays the gradient
# all-reduce once per k micro-batches, because XLA:GPU moves it out of the accumulation loop.
# FSDP still reduces the gradients (and gathers the parameters) in every micro-batch. (Both checked
# on a mocked two-GPU mesh.)
set -u
OUT=${OUT:-/tmp/lowprec_scaling}
MODELS=${MODELS:-1b} RECIPES=${RECIPES:-bf16,fp8_tensorwise_pow2} BATCH=${BATCH:-8} SEQ=${SEQ:-2048} REPS=${REPS:-10} ACCUM=${ACCUM:-1}
N=$(nvidia-smi -L | wc -l)
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_per_fusion_autotune_cache_dir=/tmp/lowprec_xla_autotune"
bench() {  # bench NAME BATCH [--set ...]
  local name=$1 batch=$2; shift 2
  python3 -m lowprec.cli bench train --out "$OUT/$name" --reps "$REPS" --models "$MODELS" --recipes "$RECIPES" \
    --batch "$batch" --seq-len "$SEQ" --set optim.grad_accum="$ACCUM" "$@" 2>&1 | grep -v -i warn | tail -n 8
}
CUDA_VISIBLE_DEVICES=0 bench gpu1 $((BATCH * ACCUM))
bench "dp$N" $((BATCH * ACCUM * N)) --set mesh.data="$N"
bench "fsdp$N" $((BATCH * ACCUM * N)) --set mesh.data=1 --set mesh.fsdp="$N"
python3 - "$OUT" "$N" <<'PY'
import json, pathlib, sys
out, n = pathlib.Path(sys.argv[1]), sys.argv[2]
rows = {name: {r["recipe"]: r for r in json.loads((out / name / "train.json").read_text())["rows"]}
        for name in ("gpu1", f"dp{n}", f"fsdp{n}") if (out / name / "train.json").exists()}
base = rows.get("gpu1", {})
print(f"{'layout':8s} {'recipe':22s} {'tokens/s':>10s} {'x 1 GPU':>8s} {'MFU %':>6s}")
for name, by_recipe in rows.items():
    for recipe, r in by_recipe.items():
        if "tokens_per_s" in r:
            one = base.get(recipe, {}).get("tokens_per_s")
            print(f"{name:8s} {recipe:22s} {r['tokens_per_s']:10.0f} {r['tokens_per_s'] / one if one else float('nan'):8.2f} {r.get('mfu_pct') or 0:6.1f}")
        else:
            print(f"{name:8s} {recipe:22s} {r.get('error', '?')}")
PY
