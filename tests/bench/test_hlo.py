"""Counting the GEMMs that run on FP8 operands in optimized HLO text (cuBLASLt calls and Triton fusions)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lowprec.bench.hlo import AllReduce, collective_schedule, count_fp8_gemms, fp8_fusions

HLO = """HloModule jit_f, is_scheduled=true

%gemm_fusion_dot.1_computation (parameter_0: f8e5m2[64,128], parameter_1: f8e4m3fn[32,128]) -> bf16[64,32] {
  %parameter_0 = f8e5m2[64,128]{1,0} parameter(0)
  %parameter_1 = f8e4m3fn[32,128]{1,0} parameter(1)
  ROOT %dot.3 = bf16[64,32]{1,0} dot(%parameter_0, %parameter_1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

%gemm_fusion_dot.2_computation (parameter_0.1: f8e4m3fn[64,128], parameter_1.1: bf16[32,128]) -> bf16[64,32] {
  %parameter_0.1 = f8e4m3fn[64,128]{1,0} parameter(0)
  %convert.1 = bf16[64,128]{1,0} convert(%parameter_0.1)
  %parameter_1.1 = bf16[32,128]{1,0} parameter(1)
  ROOT %dot.4 = bf16[64,32]{1,0} dot(%convert.1, %parameter_1.1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

ENTRY %main.9 (a: f8e5m2[64,128], b: f8e4m3fn[32,128], c: bf16[32,128]) -> bf16[64,32] {
  %a = f8e5m2[64,128]{1,0} parameter(0)
  %b = f8e4m3fn[32,128]{1,0} parameter(1)
  %c = bf16[32,128]{1,0} parameter(2)
  %gemm_fusion_dot.1 = bf16[64,32]{1,0} fusion(%a, %b), kind=kCustom, calls=%gemm_fusion_dot.1_computation
  %gemm_fusion_dot.2 = bf16[64,32]{1,0} fusion(%b, %c), kind=kCustom, calls=%gemm_fusion_dot.2_computation
  %cublas-gemm.0 = (bf16[64,32]{1,0}, s8[1024]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul$f8"
  ROOT %add = bf16[64,32]{1,0} add(%gemm_fusion_dot.1, %gemm_fusion_dot.2)
}
"""


def test_fp8_gemms_are_cublaslt_calls_and_triton_fusions_on_fp8_operands():
    # the second fusion converts its FP8 operand to bf16 before the dot: a bf16 GEMM
    assert fp8_fusions(HLO) == {"gemm_fusion_dot.1"}
    assert count_fp8_gemms(HLO) == 2
    assert count_fp8_gemms(HLO.replace("f8e5m2", "bf16").replace("f8e4m3fn", "bf16").replace("$f8", "")) == 0


SCHEDULED = """HloModule jit_step, is_scheduled=true

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

ENTRY %main (p: bf16[64,32], q: f32[]) -> (bf16[64,32], f32[32], f32[]) {
  %p = bf16[64,32]{1,0} parameter(0)
  %q = f32[] parameter(1)
  %amax = f32[] all-reduce(%q), channel_id=1, replica_groups={{0,1}}, to_apply=%add
  %cublas-gemm.1 = (bf16[64,32]{1,0}, s8[1024]{0}) custom-call(%p, %p), custom_call_target="__cublas$lt$matmul"
  %gte = bf16[64,32]{1,0} get-tuple-element(%cublas-gemm.1), index=0
  %ars = (bf16[64,32]{1,0}, f32[32]{0}) all-reduce-start(%gte, %p), channel_id=2, replica_groups={{0,1}}, to_apply=%add
  %loop_fusion = f32[32]{0} fusion(%p), kind=kLoop, calls=%add
  %gemm_fusion_dot.7 = bf16[64,32]{1,0} fusion(%p, %p), kind=kCustom, calls=%add
  %input_fusion = f32[32]{0} fusion(%p), kind=kInput, calls=%add
  %ard = (bf16[64,32]{1,0}, f32[32]{0}) all-reduce-done(%ars)
  ROOT %out = (bf16[64,32], f32[32], f32[]) tuple(%gemm_fusion_dot.7, %input_fusion, %amax)
}
"""


def test_collective_schedule_places_all_reduces_among_kernels():
    sched = collective_schedule(SCHEDULED)
    assert sched.kernels == 4 and sched.last_gemm == 2  # cuBLAS call, loop fusion, Triton GEMM, input fusion
    assert sched.all_reduces == (AllReduce("amax", 4, 0, 0), AllReduce("ars", 64 * 32 * 2 + 32 * 4, 1, 4))
    text = sched.summary()
    assert text.startswith("1 all-reduces of >= 1024 B (0 MB): first starts after kernel 1 of 4 (last GEMM: kernel 2), "
                           "1 start before the last GEMM, median 3 kernels between start and done")
    assert text.endswith("1 all-reduces under 1024 B (1 synchronous)")


def test_collective_schedule_of_a_one_device_program_is_empty():
    sched = collective_schedule(HLO)
    assert sched.all_reduces == () and sched.kernels == 3 and sched.last_gemm == 2
    assert sched.summary() == "0 all-reduces under 1024 B (0 synchronous)"


def test_collective_schedule_reads_a_compiled_data_parallel_gradient():
    """XLA's own text: the weight gradient of a batch-sharded product is all-reduced (synchronously on CPU)."""
    mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))
    x = jax.device_put(jnp.ones((8, 16), jnp.float32), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.ones((16, 32), jnp.float32), NamedSharding(mesh, P()))
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w))), out_shardings=NamedSharding(mesh, P()))
    sched = collective_schedule(grad.lower(w, x).compile().as_text())
    assert [a.nbytes for a in sched.all_reduces] == [16 * 32 * 4]
    assert sched.all_reduces[0].start == sched.all_reduces[0].done
