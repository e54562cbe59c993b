"""Published training recipes, GEMM by GEMM (../shared/reference/recipes.md section numbers in brackets).

Each builder takes the options where sources disagree (defaults first in recipes.md's table).
Roles: fprop lhs=X rhs=W; dgrad lhs=dY rhs=W; wgrad lhs=dY rhs=X (see lowprec.gemm.config).
"""
from __future__ import annotations

from lowprec.gemm.config import DelayedScaling, GemmConfig, OperandConfig, Recipe
from lowprec.numerics import specs
from lowprec.numerics.formats import get_format
from lowprec.numerics.spec import QuantSpec
from lowprec.transforms.hadamard import HadamardSpec


def _op(spec: QuantSpec | None, source: str = "hp") -> OperandConfig:
    return OperandConfig(spec=spec, source=source)


def _same(spec: QuantSpec, **gemm) -> GemmConfig:
    return GemmConfig(lhs=_op(spec), rhs=_op(spec), **gemm)


def _all(name: str, spec: QuantSpec, grad: QuantSpec | None = None, description: str = "") -> Recipe:
    """Every operand of every GEMM in `spec`, gradients (dY) in `grad` (default: the same)."""
    grad = grad or spec
    return Recipe(name=name, fprop=_same(spec), description=description,
                  dgrad=GemmConfig(lhs=_op(grad), rhs=_op(spec)), wgrad=GemmConfig(lhs=_op(grad), rhs=_op(spec)))


def bf16() -> Recipe:
    """[1] The baseline: every GEMM in bf16 with f32 accumulation."""
    return Recipe(name="bf16", description="BF16 baseline")


def fp8_tensorwise(fp8_format: str = "hybrid", pow2: bool = False) -> Recipe:
    """[2] Per-tensor current scaling: E4M3 forward, E5M2 gradients ('hybrid'), or E4M3 everywhere.
    pow2: scales rounded up to powers of two (`fp8_tensorwise_pow2`), which lets the FP8 GEMM emit
    bf16 with the scales folded into cuBLASLt (lowprec.gemm.qgemm)."""
    if fp8_format not in ("hybrid", "e4m3"):
        raise ValueError(f"fp8_format must be 'hybrid' or 'e4m3', got {fp8_format!r}")
    suffix = "_pow2" if pow2 else ""
    grad = specs.get(f"fp8_{'e5m2' if fp8_format == 'hybrid' else 'e4m3'}_tensor{suffix}")
    return _all(f"fp8_tensorwise{suffix}", specs.get(f"fp8_e4m3_tensor{suffix}"), grad,
                "FP8 per-tensor current scaling" + (", power-of-two scales" if pow2 else ""))


def fp8_delayed(history: int = 1024, margin: int = 0, amax_compute: str = "max", pow2: bool = False) -> Recipe:
    """[3] FP8 with delayed scaling: the formats of fp8_tensorwise, scales from amax histories
    (state carried explicitly: lowprec.gemm.delayed_dot_general). pow2: power-of-two scales
    (`fp8_delayed_pow2`; bf16 GEMM outputs, as fp8_tensorwise_pow2)."""
    base = fp8_tensorwise(pow2=pow2)
    return base.replace(name=base.name.replace("tensorwise", "delayed"),
                        description="FP8 per-tensor delayed scaling" + (", power-of-two scales" if pow2 else ""),
                        delayed=DelayedScaling(history=history, margin=margin, amax_compute=amax_compute))


def fp8_rowwise(gw_hp: bool = False) -> Recipe:
    """[4] torchao rowwise: E4M3 everywhere, a power-of-two scale per row along each GEMM's K.
    gw_hp: wgrad in bf16 and W per tensor in dgrad (`rowwise_with_gw_hp`)."""
    row = specs.get("fp8_e4m3_row")
    if not gw_hp:
        return _all("fp8_rowwise", row, description="FP8 rowwise, power-of-two scales")
    return Recipe(name="fp8_rowwise_gw_hp", fprop=_same(row), description="FP8 rowwise, bf16 wgrad",
                  dgrad=GemmConfig(lhs=_op(row), rhs=_op(specs.get("fp8_e4m3_tensor"))))


def fp8_blockwise(grad_format: str = "e4m3") -> Recipe:
    """[5] DeepSeek-V3: 1x128 activations and gradients, 128x128 weight tiles, fp32 abs-max scales."""
    act = specs.get("fp8_block128")
    tile = specs.get("fp8_tile128")
    grad = act.replace(element=grad_format)
    return Recipe(name="fp8_blockwise", description="DeepSeek-V3 FP8 1x128 / 128x128",
                  fprop=GemmConfig(lhs=_op(act), rhs=_op(tile)),
                  dgrad=GemmConfig(lhs=_op(grad), rhs=_op(tile)),
                  wgrad=GemmConfig(lhs=_op(grad), rhs=_op(act)))


def mxfp8(grad_format: str = "e4m3") -> Recipe:
    """[6] MXFP8: E4M3 in 1x32 blocks with E8M0 scales rounded up (RCEIL), all GEMMs."""
    spec = specs.get("mxfp8")
    return _all("mxfp8", spec, spec.replace(element=grad_format), "MXFP8, RCEIL scales")


def mxfp6(wa_format: str = "e2m3", grad_format: str = "e3m2") -> Recipe:
    """[7] MXFP6: E2M3 weights/activations, E3M2 gradients, OCP floor scales, all GEMMs."""
    spec = specs.get("mxfp6_e2m3").replace(element=wa_format)
    return _all("mxfp6", spec, spec.replace(element=grad_format), "MXFP6 E2M3 W/A, E3M2 grads")


def mxint8(scale_rule: str = "ceil") -> Recipe:
    """[8] MXINT8 with symmetric clipping (codes in ±127, 1.6 fixed point), all GEMMs."""
    return _all("mxint8", specs.get("mxint8").replace(scale_rule=scale_rule), description="MXINT8, symmetric")


def mxfp4(scale_rule: str = "floor") -> Recipe:
    """[9] OCP MXFP4: E2M1 in 1x32 blocks, E8M0 floor scales, RNE, all GEMMs."""
    return _all("mxfp4", specs.get("mxfp4").replace(scale_rule=scale_rule), description="OCP MXFP4")


def nvfp4(*, rht: bool = True, sr: bool = True, w2d: bool = True, rht_size: int = 16,
          rht_signs: str = "fixed_te") -> Recipe:
    """[10] NVIDIA's NVFP4 recipe: two-level scales, 16x16 weight tiles, RHT-16 on wgrad inputs only,
    stochastic rounding on gradients. The flags give the paper's ablations."""
    act = specs.get("nvfp4")
    w = specs.get("nvfp4_tile16") if w2d else act
    grad = act.replace(rounding="sr") if sr else act
    signs = rht_signs if rht_size == 16 or rht_signs != "fixed_te" else "per_call"
    had = HadamardSpec(size=rht_size, signs=signs) if rht else None
    suffix = "".join(s for s, on in (("_no_rht", not rht), ("_no_sr", not sr), ("_no_2d", not w2d)) if on)
    return Recipe(name="nvfp4" + suffix, description="NVFP4 (NVIDIA recipe)",
                  fprop=GemmConfig(lhs=_op(act), rhs=_op(w)),
                  dgrad=GemmConfig(lhs=_op(grad), rhs=_op(w)),
                  wgrad=GemmConfig(lhs=_op(grad), rhs=_op(act), hadamard=had))


def nvint4() -> Recipe:
    """[11] NVINT4: INT4 in 1x16 blocks with E4M3 x FP32 scales; a 32x32 RHT along K in fprop.
    Its backward is unpublished: lowprec mirrors NVFP4 (SR on dY, RHT-16 on wgrad)."""
    spec = specs.get("nvint4")
    grad = spec.replace(rounding="sr")
    return Recipe(name="nvint4", description="NVINT4 + Hadamard",
                  fprop=_same(spec, hadamard=HadamardSpec(size=32, signs="per_call")),
                  dgrad=GemmConfig(lhs=_op(grad), rhs=_op(spec)),
                  wgrad=GemmConfig(lhs=_op(grad), rhs=_op(spec), hadamard=HadamardSpec(size=16, signs="fixed_te")))


def _tseng_mxfp4(rounding: str = "sr") -> QuantSpec:
    """MXFP4 with the 3/4 headroom rule: |x/s| in [3, 6) so stochastic rounding never clips."""
    return specs.get("mxfp4").replace(headroom=0.75, rounding=rounding)


def quartet(bwd_round: str = "sr", e2m1_ties: str = "rne") -> Recipe:
    """[12] Quartet: QuEST-on-MXFP4 forward in a fixed Hadamard-32 basis with a clipped estimator;
    backward re-quantizes the forward-quantized tensors (fwd_q) in MXFP4 with the 3/4 rule and SR,
    under Hadamard-32 with fresh signs applied as H·diag(s)."""
    fwd = specs.get("mxfp4").replace(scale_rule="quest_sigma", rounding="rne" if e2m1_ties == "rne" else "ties_down")
    bwd = _tseng_mxfp4(bwd_round)
    bwd_had = HadamardSpec(size=32, signs="per_call", sign_side="right")
    return Recipe(name="quartet", estimator="clipped_ste", description="Quartet (MXFP4 fwd + bwd)",
                  fprop=_same(fwd, hadamard=HadamardSpec(size=32)),
                  dgrad=GemmConfig(lhs=_op(bwd), rhs=_op(bwd, "fwd_q"), hadamard=bwd_had),
                  wgrad=GemmConfig(lhs=_op(bwd), rhs=_op(bwd, "fwd_q"), hadamard=bwd_had))


def mxfp4_bwd() -> Recipe:
    """[13] Tseng et al.: BF16 forward; MXFP4 dgrad and wgrad with RHT-64 (fresh signs, D·H),
    the 3/4 rule and stochastic rounding on every operand."""
    bwd = _same(_tseng_mxfp4(), hadamard=HadamardSpec(size=64, signs="per_call"))
    return Recipe(name="mxfp4_bwd", dgrad=bwd, wgrad=bwd, description="BF16 fwd, MXFP4+RHT+SR bwd")


def quest_w4a4(bits: int = 4) -> Recipe:
    """[14] QuEST: X and W rotated by a block Hadamard-128 along K, a centered INT grid scaled by
    alpha_b·RMS per row, RTN, trust-region gradient mask; backward in bf16."""
    spec = QuantSpec(element=f"int{bits}_centered", granularity="channel", scale_rule="quest_rms")
    return Recipe(name=f"quest_w{bits}a{bits}", estimator="quest_trust", description="QuEST INT W/A",
                  fprop=_same(spec, hadamard=HadamardSpec(size=128)))


def halo(level: int = 2, element: str = "int8") -> Recipe:
    """[15] HALO: per-tensor abs-max INT8 (or E4M3) GEMMs; level 1 rotates fprop over the full K,
    level 2 also rotates dgrad along d_out; wgrad stays unrotated. Needs power-of-two dims."""
    if level not in (0, 1, 2):
        raise ValueError(f"halo level must be 0, 1 or 2, got {level!r}")
    spec = QuantSpec(element=element)
    full = HadamardSpec(size=0)
    return Recipe(name=f"halo{level}", description=f"HALO level {level}",
                  fprop=_same(spec, hadamard=full if level >= 1 else None),
                  dgrad=_same(spec, hadamard=full if level == 2 else None),
                  wgrad=_same(spec))


def fp4_all_the_way() -> Recipe:
    """[16] Chmiel et al.: NVFP4 (1x16, two-level) for W, A and G; RTN forward, SR in the backward."""
    act = specs.get("nvfp4")
    sr = act.replace(rounding="sr")
    return Recipe(name="fp4_all_the_way", description="NVFP4 everywhere, SR backward",
                  fprop=_same(act), dgrad=_same(sr), wgrad=_same(sr))


def fp(e: int, m: int, block: int | str = 32, scale: str = "e8m0", *, scale_rule: str | None = None,
       specials: str = "none", grad_rounding: str = "rne") -> Recipe:
    """[17] Generic ExMy x block family for floating-point scaling-law sweeps.

    block: an int (1xB along K), "tensor" or "channel". scale: fp32 | bf16 | e8m0 | ue4m3 | ue5m3.
    scale_rule defaults to floor for e8m0 and absmax otherwise; grad_rounding 'sr' for SR on dY.
    """
    fmt = get_format(f"e{e}m{m}{'' if specials == 'none' else specials}")
    rule = scale_rule or ("floor" if scale == "e8m0" else "absmax")
    if isinstance(block, str):
        spec = QuantSpec(element=fmt, granularity=block, scale_format=scale, scale_rule=rule)
    else:
        spec = QuantSpec(element=fmt, granularity="block", block=block, scale_format=scale, scale_rule=rule)
    name = f"fp_e{e}m{m}_b{block}_{scale}"
    return _all(name, spec, spec.replace(rounding=grad_rounding), f"E{e}M{m} block {block}, {scale} scales")
