"""Quick GEMM check on a GPU: 8192^3 forward and forward+backward (value_and_grad) TFLOP/s of each
recipe against bf16 in the same process, and the cuBLASLt FP8 GEMM count of each compiled program.
Median of 20 blocked calls after warm-up; random bf16 inputs. RECIPES=a,b,... selects recipes.
The full, peer-comparing benchmark is `lowprec bench gemm` (tools/gpu_bench.sh)."""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import lowprec


def median_time(f, *args, reps=20):
    for _ in range(4):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    m = k = n = 8192
    ks = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(ks[0], (m, k), jnp.bfloat16)
    w = jax.random.normal(ks[1], (k, n), jnp.bfloat16)
    ct = jax.random.normal(ks[2], (m, n), jnp.bfloat16)
    dn = (((1,), (0,)), ((), ()))
    names = os.environ.get("RECIPES", "bf16,fp8_tensorwise,fp8_rowwise,mxfp8,nvfp4,mxfp4,quartet,mxfp4_bwd").split(",")
    print(jax.__version__, jax.devices())
    rows = []
    for name in names:
        recipe, key = lowprec.recipes.get(name), jax.random.key(1)
        fwd = jax.jit(lambda a, b: lowprec.dot_general(a, b, dn, recipe=recipe, key=key))
        loss = lambda a, b: jnp.sum((lowprec.dot_general(a, b, dn, recipe=recipe, key=key) * ct).astype(jnp.float32))
        fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        tf, tb = median_time(fwd, x, w), median_time(fwd_bwd, x, w)
        n_fp8 = fwd_bwd.lower(x, w).compile().as_text().count("__cublas$lt$matmul$f8")
        rows.append((name, 2 * m * n * k / tf / 1e12, 6 * m * n * k / tb / 1e12, n_fp8))
    base = rows[0]
    for name, f, b, c in rows:
        print(f"{name:16s} fwd {f:7.1f} TF/s ({f / base[1]:.2f}x)  fwd+bwd {b:7.1f} TF/s ({b / base[2]:.2f}x)  fp8 gemms {c}")


if __name__ == "__main__":
    main()
