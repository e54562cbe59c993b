"""Attributing a traced call's kernel launches to the compiled program's instructions (CPU: synthetic
launches against HLO text; the trace itself needs a GPU)."""
import jax
import jax.numpy as jnp

from lowprec.bench.hlo import Kernel, kernels
from lowprec.bench.profile import Launch, attribute, timeline

PROGRAM = """HloModule jit_step, is_scheduled=true

ENTRY %main (p: bf16[64,32], q: f32[]) -> bf16[64,32] {
  %p = bf16[64,32]{1,0} parameter(0)
  %q = f32[] parameter(1)
  %input_reduce_fusion.3 = (f32[8]{0}, bf16[64,32]{1,0}) fusion(%p), kind=kInput, calls=%c1, metadata={op_name="jit(step)/reduce_max"}
  %gte = bf16[64,32]{1,0} get-tuple-element(%input_reduce_fusion.3), index=1
  %input_reduce_fusion.4 = (f32[8]{0}, bf16[64,32]{1,0}) fusion(%gte), kind=kInput, calls=%c1
  %pallas_call.7 = (f8e4m3fn[64,32]{1,0}, f8e4m3fn[32,64]{1,0}) custom-call(%p, %q), custom_call_target="__gpu$xla.gpu.triton"
  %ars = bf16[64,32]{1,0} all-reduce-start(%p), channel_id=2, replica_groups={{0,1}}, to_apply=%add
  %cublas-gemm.2 = (bf16[64,64]{1,0}, s8[1024]{0}) custom-call(%p, %p), custom_call_target="__cublas$lt$matmul"
  %wrapped_is-finite = pred[64,32]{1,0} fusion(%p), kind=kLoop, calls=%c2
  %fmha.1 = (bf16[64,32]{1,0}, u8[16]{0}) custom-call(%p, %p, %p), custom_call_target="__cudnn$fmhaSoftmaxBackward"
  %loop_add_fusion = bf16[64,32]{1,0} fusion(%p, %p), kind=kLoop, calls=%c3
  %ard = bf16[64,32]{1,0} all-reduce-done(%ars)
  ROOT %out = bf16[64,32]{1,0} add(%loop_add_fusion, %ard)
}
"""


def test_kernels_lists_device_instructions_with_their_bytes():
    ks = kernels(PROGRAM)
    assert [k.name for k in ks] == ["input_reduce_fusion.3", "input_reduce_fusion.4", "pallas_call.7", "ars",
                                    "cublas-gemm.2", "wrapped_is-finite", "fmha.1", "loop_add_fusion", "out"]
    first, pallas, gemm = ks[0], ks[2], ks[4]
    assert (first.in_bytes, first.out_bytes, first.source) == (64 * 32 * 2, 8 * 4 + 64 * 32 * 2, "jit(step)/reduce_max")
    assert ks[1].in_bytes == 64 * 32 * 2  # a get-tuple-element operand: its own shape, not the tuple's
    assert (pallas.in_bytes, pallas.out_bytes, pallas.target) == (64 * 32 * 2 + 4, 2 * 64 * 32, "__gpu$xla.gpu.triton")
    assert (gemm.in_bytes, gemm.out_bytes) == (2 * 64 * 32 * 2, 64 * 64 * 2 + 1024)


def test_kernels_reads_a_compiled_program():
    x = jnp.ones((256, 128), jnp.float32)
    ks = kernels(jax.jit(lambda x: jnp.sin(x) * 2).lower(x).compile().as_text())
    assert len(ks) == 1 and ks[0].op == "fusion" and ks[0].in_bytes == ks[0].out_bytes == 256 * 128 * 4
    assert ks[0].source.startswith("jit(<lambda>)/")


def test_attribute_walks_launches_and_instructions_in_order():
    ks = kernels(PROGRAM)
    by = {k.name: k for k in ks}
    launches = [Launch(n, 1.0) for n in (
        "input_reduce_fusion_3", "input_reduce_fusion_3",  # identical fusions share the first one's kernel
        "_tile_kernel__1",  # a Pallas kernel: a custom call that is neither cuBLAS nor cuDNN
        "Memset 0", "nvjet_sm90_tst_128x256", "ncclDevKernel_AllReduce_Sum_bf16",  # NCCL: its own stream
        "wrapped_is_finite",  # '-' in the instruction name is '_' in the kernel's
        "cudnn_generated_fort_native_sdpa_bprop", "void cudnn::fusion::compute_dot_do_o",  # one call, two kernels
        "mystery_kernel",  # fits nothing: None, and the walk does not move
        "loop_add_fusion", "memcpy32_post")]
    got = [(l.name, k.name if k else None) for l, k in attribute(launches, ks)]
    assert got == [
        ("input_reduce_fusion_3", "input_reduce_fusion.3"), ("input_reduce_fusion_3", "input_reduce_fusion.4"),
        ("_tile_kernel__1", "pallas_call.7"), ("Memset 0", "cublas-gemm.2"), ("nvjet_sm90_tst_128x256", "cublas-gemm.2"),
        ("ncclDevKernel_AllReduce_Sum_bf16", "ars"), ("wrapped_is_finite", "wrapped_is-finite"),
        ("cudnn_generated_fort_native_sdpa_bprop", "fmha.1"), ("void cudnn::fusion::compute_dot_do_o", "fmha.1"),
        ("mystery_kernel", None), ("loop_add_fusion", "loop_add_fusion"), ("memcpy32_post", None)]
    assert by["fmha.1"].target.startswith("__cudnn")


def test_attribute_skips_instructions_that_launch_nothing():
    ks = [Kernel(n, "fusion", "", "f32[1]", 4, 4, "") for n in ("loop_a_fusion", "loop_b_fusion", "loop_c_fusion")]
    rows = attribute([Launch("loop_a_fusion", 1.0), Launch("loop_c_fusion", 2.0)], ks)
    assert [k.name for _, k in rows] == ["loop_a_fusion", "loop_c_fusion"]
    # a Pallas launch never takes an XLA fusion's place, nor a fusion's launch a custom call's
    assert attribute([Launch("loop_b_fusion", 1.0)], [Kernel("pallas_call", "custom-call", "__gpu$xla.gpu.triton", "", 0, 0, "")]) == [
        (Launch("loop_b_fusion", 1.0), None)]


def test_timeline_separates_busy_and_idle_time():
    """Busy time is the union of the launches' intervals (a second stream's overlap counts once);
    idle stretches are the holes, longest first, named by the launch that ends them."""
    launches = [Launch("memcpy", 1.0, 0.0), Launch("first_kernel", 10.0, 101.0),
                Launch("nccl_all_reduce", 8.0, 105.0),  # overlaps first_kernel: 101..113 busy
                Launch("second_kernel", 5.0, 120.0)]
    t = timeline(list(reversed(launches)), keep=2)
    assert (t.span_us, t.busy_us, t.launches) == (125.0, 1.0 + 12.0 + 5.0, 4)
    assert t.idle_us == 125.0 - 18.0
    assert t.longest_idle == ((100.0, "first_kernel"), (7.0, "second_kernel"))
    assert timeline([]) == type(t)(0.0, 0.0, 0, ())
