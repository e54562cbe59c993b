"""Counting the GEMMs that run on FP8 operands in optimized HLO text (cuBLASLt calls and Triton fusions)."""
from lowprec.bench.hlo import count_fp8_gemms, fp8_fusions

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
