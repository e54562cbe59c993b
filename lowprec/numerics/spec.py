"""QuantSpec: one value stating a whole quantization choice (element, granularity, scale, rounding)."""
from __future__ import annotations

import dataclasses

from lowprec.numerics.formats import FloatFormat, Format, IntFormat, get_format
from lowprec.numerics.rounding import ROUNDING_MODES
from lowprec.numerics.scales import POW2_RULES, SCALE_FORMATS, SCALE_RULES

GRANULARITIES = ("tensor", "channel", "block", "tile")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantSpec:
    """How to quantize one tensor along its contraction axis.

    element:      element format (name or FloatFormat/IntFormat).
    granularity:  "tensor" (one scale), "channel" (one scale per slice along the axis, i.e. per row
                  of a GEMM operand), "block" (1×block along the axis), "tile" (block×block over
                  the axis and a second axis: NVFP4's 16×16 weights, DeepSeek's 128×128).
    scale_format: fp32 | bf16 | e8m0 (power of two) | ue4m3 | ue5m3.
    scale_rule:   absmax (amax/max_elem exactly) | floor (OCP) | ceil | even | rceil (cuBLAS) |
                  quest_sigma (QuEST on FP grids) | quest_rms (QuEST centered int grids).
    rounding:     rne | sr (stochastic; needs a key) | half_away | toward_zero | ties_down.
    headroom:     multiply scaled values by this before rounding (0.75 is the Tseng/Quartet 3/4 rule
                  that keeps SR from clipping); dequantization divides it out.
    two_level:    NVFP4 scale chain: an FP32 per-tensor scale times a per-block scale.
    pad:          zero-pad the axis up to a multiple of the block instead of raising.
    amax_eps:     lower bound on amax for the absmax rule (an all-zero tensor gets no 1/0).
    """

    element: Format | str
    granularity: str = "tensor"
    block: int = 0
    scale_format: str = "fp32"
    scale_rule: str = "absmax"
    rounding: str = "rne"
    headroom: float = 1.0
    two_level: bool = False
    pad: bool = False
    amax_eps: float = 1e-12

    def __post_init__(self):
        object.__setattr__(self, "element", get_format(self.element))
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("scale_format", self.scale_format, SCALE_FORMATS)
        _check_choice("scale_rule", self.scale_rule, SCALE_RULES)
        _check_choice("rounding", self.rounding, ROUNDING_MODES)
        blocked = self.granularity in ("block", "tile")
        if blocked and self.block < 1:
            raise ValueError(f"QuantSpec.block must be >= 1 for granularity {self.granularity!r}, got {self.block}")
        if not blocked and self.block:
            raise ValueError(f"QuantSpec.block is only used with granularity 'block' or 'tile', not {self.granularity!r}")
        if self.scale_format == "e8m0" and self.scale_rule not in POW2_RULES:
            raise ValueError(f"scale_format 'e8m0' holds powers of two: scale_rule must be one of {POW2_RULES}, got {self.scale_rule!r}")
        if self.two_level and (not blocked or self.scale_format == "e8m0"):
            raise ValueError("QuantSpec.two_level needs granularity 'block' or 'tile' and a non-power-of-two scale format (ue4m3, ue5m3, bf16, fp32)")
        if self.two_level and self.scale_rule != "absmax":
            raise ValueError("QuantSpec.two_level uses the absmax rule (the NVFP4 chain); set scale_rule='absmax'")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"QuantSpec.headroom must be in (0, 1], got {self.headroom}")

    @property
    def bits_per_element(self) -> float:
        """Element bits plus the amortized scale bits."""
        scale_bits = {"fp32": 32, "bf16": 16, "e8m0": 8, "ue4m3": 8, "ue5m3": 9}[self.scale_format]
        elem = self.element.bits
        if self.granularity == "block":
            return elem + scale_bits / self.block
        if self.granularity == "tile":
            return elem + scale_bits / self.block**2
        return float(elem)

    def describe(self) -> str:
        """Short human label, e.g. 'e2m1 1x16 ue4m3+fp32 absmax sr'."""
        gran = {"tensor": "tensor", "channel": "row", "block": f"1x{self.block}", "tile": f"{self.block}x{self.block}"}[self.granularity]
        scale = self.scale_format + ("+fp32" if self.two_level else "")
        extra = f" x{self.headroom:g}" if self.headroom != 1 else ""
        return f"{self.element.name} {gran} {scale} {self.scale_rule}{extra} {self.rounding}"

    def replace(self, **changes) -> "QuantSpec":
        return dataclasses.replace(self, **changes)


def _check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"QuantSpec.{field} must be one of {choices}, got {value!r}")


__all__ = ["QuantSpec", "GRANULARITIES", "FloatFormat", "IntFormat"]
