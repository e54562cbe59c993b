"""Named QuantSpec presets (`lowprec.specs.get(name)`, `lowprec.specs.names()`)."""
from __future__ import annotations

from lowprec.numerics.spec import QuantSpec

_PRESETS: dict[str, QuantSpec] = {
    # FP8 current scaling (per tensor; one scale serves every GEMM since it sits outside the K sum).
    "fp8_e4m3_tensor": QuantSpec(element="e4m3"),
    "fp8_e5m2_tensor": QuantSpec(element="e5m2"),
    # The same with the scale rounded up to a power of two (TE's power_2_scale): nothing saturates,
    # and the GEMM can write bf16 directly with the scales folded in exactly.
    "fp8_e4m3_tensor_pow2": QuantSpec(element="e4m3", scale_rule="rceil"),
    "fp8_e5m2_tensor_pow2": QuantSpec(element="e5m2", scale_rule="rceil"),
    # torchao rowwise: one power-of-two scale per row along K, rounded so nothing saturates.
    "fp8_e4m3_row": QuantSpec(element="e4m3", granularity="channel", scale_rule="rceil", scale_format="e8m0"),
    # DeepSeek-V3 activations/gradients: 1x128 along K, fp32 abs-max scales.
    "fp8_block128": QuantSpec(element="e4m3", granularity="block", block=128),
    "fp8_tile128": QuantSpec(element="e4m3", granularity="tile", block=128),
    # OCP MX formats: 32 elements along K share an E8M0 scale.
    "mxfp8": QuantSpec(element="e4m3", granularity="block", block=32, scale_format="e8m0", scale_rule="rceil"),
    "mxfp8_e5m2": QuantSpec(element="e5m2", granularity="block", block=32, scale_format="e8m0", scale_rule="rceil"),
    "mxfp6_e2m3": QuantSpec(element="e2m3", granularity="block", block=32, scale_format="e8m0", scale_rule="floor"),
    "mxfp6_e3m2": QuantSpec(element="e3m2", granularity="block", block=32, scale_format="e8m0", scale_rule="floor"),
    "mxint8": QuantSpec(element="mxint8", granularity="block", block=32, scale_format="e8m0", scale_rule="ceil"),
    "mxfp4": QuantSpec(element="e2m1", granularity="block", block=32, scale_format="e8m0", scale_rule="floor"),
    # NVFP4: E2M1, 1x16 blocks with UE4M3 scales times an FP32 per-tensor scale.
    "nvfp4": QuantSpec(element="e2m1", granularity="block", block=16, scale_format="ue4m3", two_level=True),
    "nvfp4_tile16": QuantSpec(element="e2m1", granularity="tile", block=16, scale_format="ue4m3", two_level=True),
    "nvint4": QuantSpec(element="int4", granularity="block", block=16, scale_format="ue4m3", two_level=True),
    # Weight-only style integer presets.
    "int8_channel": QuantSpec(element="int8", granularity="channel"),
    "int4_g128": QuantSpec(element="int4", granularity="block", block=128),
}


def get(name: str) -> QuantSpec:
    """The named preset; unknown names raise a ValueError listing the valid ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown spec preset {name!r}; valid names: {', '.join(_PRESETS)}") from None


def names() -> list[str]:
    return list(_PRESETS)
