"""Recipe configuration: per GEMM role (fprop, dgrad, wgrad) and per operand, what to quantize and how.

Roles, for Y = X·W (any dot_general: X = lhs, W = rhs):
  fprop  Y  = X · W     lhs = X,  rhs = W,  contracting K
  dgrad  dX = dY · Wᵀ   lhs = dY, rhs = W,  contracting the output features N
  wgrad  dW = Xᵀ · dY   lhs = dY, rhs = X,  contracting the tokens M
"""
from __future__ import annotations

import dataclasses

import jax

from lowprec.numerics.scales import SIGMA_RULES
from lowprec.numerics.spec import QuantSpec
from lowprec.transforms.hadamard import HadamardSpec

SOURCES = ("hp", "fwd_q")
ESTIMATORS = ("ste", "clipped_ste", "quest_trust")
ACCUMULATIONS = ("default", "highest")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperandConfig:
    """One GEMM operand: its QuantSpec (None keeps high precision) and where it comes from.

    source (backward operands that reuse a forward tensor): "hp" re-quantizes the high-precision
    original along the new contraction axis (TransformerEngine, jax.nn.scaled_dot_general);
    "fwd_q" re-quantizes the forward-quantized tensor (Quartet's double quantization).
    """

    spec: QuantSpec | None = None
    source: str = "hp"

    def __post_init__(self):
        if self.spec is not None and not isinstance(self.spec, QuantSpec):
            raise ValueError(f"OperandConfig.spec must be a QuantSpec or None, got {type(self.spec).__name__}")
        if self.source not in SOURCES:
            raise ValueError(f"OperandConfig.source must be one of {SOURCES}, got {self.source!r}")

    @property
    def needs_key(self) -> bool:
        return self.spec is not None and self.spec.rounding == "sr"

    def describe(self) -> str:
        text = self.spec.describe() if self.spec is not None else "bf16"
        return text + (" (from fwd_q)" if self.source == "fwd_q" else "")


HP = OperandConfig()


@dataclasses.dataclass(frozen=True, kw_only=True)
class GemmConfig:
    """One GEMM role: both operands, a Hadamard transform along its contraction axis (the same R
    on both operands, so it cancels in exact arithmetic), and the accumulation precision."""

    lhs: OperandConfig = HP
    rhs: OperandConfig = HP
    hadamard: HadamardSpec | None = None
    accumulation: str = "default"

    def __post_init__(self):
        for name in ("lhs", "rhs"):
            if not isinstance(getattr(self, name), OperandConfig):
                raise ValueError(f"GemmConfig.{name} must be an OperandConfig, got {type(getattr(self, name)).__name__}")
        if self.hadamard is not None and not isinstance(self.hadamard, HadamardSpec):
            raise ValueError(f"GemmConfig.hadamard must be a HadamardSpec or None, got {type(self.hadamard).__name__}")
        if self.accumulation not in ACCUMULATIONS:
            raise ValueError(f"GemmConfig.accumulation must be one of {ACCUMULATIONS}, got {self.accumulation!r}")

    @property
    def active(self) -> bool:
        """Whether this GEMM differs from a plain high-precision product (quantizes or rotates)."""
        return self.lhs.spec is not None or self.rhs.spec is not None or self.hadamard is not None

    @property
    def needs_key(self) -> bool:
        return self.lhs.needs_key or self.rhs.needs_key or (self.hadamard is not None and self.hadamard.needs_key)

    def replace(self, **changes) -> "GemmConfig":
        return dataclasses.replace(self, **changes)


BF16_GEMM = GemmConfig()

AMAX_COMPUTE = ("max", "most_recent")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DelayedScaling:
    """FP8 delayed scaling: per-tensor scales from a history of past amaxes (TE/Flax style).

    scale = amax_ref·2^margin / max_elem, amax_ref = max(history) or the most recent entry; the
    step's own amax is appended after use. An empty (all-zero) history falls back to the current
    amax, so the first step is current scaling.
    """

    history: int = 1024
    margin: int = 0
    amax_compute: str = "max"

    def __post_init__(self):
        if self.history < 1:
            raise ValueError(f"DelayedScaling.history must be >= 1, got {self.history}")
        if self.amax_compute not in AMAX_COMPUTE:
            raise ValueError(f"DelayedScaling.amax_compute must be one of {AMAX_COMPUTE}, got {self.amax_compute!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """A whole training recipe: one GemmConfig per role and the gradient estimator.

    estimator: "ste" (straight-through), "clipped_ste" (zero gradient where the forward quantizer
    clipped, Quartet), "quest_trust" (QuEST: gradient only where |Q(x)-x| <= half a grid step).
    Masks are taken in the fprop's rotated domain, so they need fprop specs on both operands.
    """

    name: str
    fprop: GemmConfig = BF16_GEMM
    dgrad: GemmConfig = BF16_GEMM
    wgrad: GemmConfig = BF16_GEMM
    estimator: str = "ste"
    delayed: DelayedScaling | None = None
    description: str = ""

    def __post_init__(self):
        for role in ("fprop", "dgrad", "wgrad"):
            if not isinstance(getattr(self, role), GemmConfig):
                raise ValueError(f"Recipe.{role} must be a GemmConfig, got {type(getattr(self, role)).__name__}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"Recipe.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.estimator != "ste" and (self.fprop.lhs.spec is None or self.fprop.rhs.spec is None):
            raise ValueError(f"Recipe.estimator {self.estimator!r} masks by the forward quantizers: fprop needs lhs and rhs specs")
        if self.fprop.lhs.source != "hp" or self.fprop.rhs.source != "hp":
            raise ValueError("Recipe.fprop operands read the inputs: their source must be 'hp'")
        if self.delayed is not None:
            ops = [op for cfg in self.roles.values() for op in (cfg.lhs, cfg.rhs)]
            if any(op.spec is None or op.spec.granularity != "tensor" or op.source != "hp" or op.spec.rounding == "sr"
                   for op in ops) or any(cfg.hadamard is not None for cfg in self.roles.values()) or self.estimator != "ste":
                raise ValueError("Recipe.delayed needs per-tensor specs with deterministic rounding on every operand "
                                 "(delayed_dot_general takes no key), hp sources, no Hadamard and the ste estimator")

    @property
    def roles(self) -> dict[str, GemmConfig]:
        return {"fprop": self.fprop, "dgrad": self.dgrad, "wgrad": self.wgrad}

    @property
    def needs_key(self) -> bool:
        """True when stochastic rounding or per-call Hadamard signs need a jax.random key."""
        return any(cfg.needs_key for cfg in self.roles.values())

    @property
    def active(self) -> bool:
        return any(cfg.active for cfg in self.roles.values())

    @property
    def takes_lhs_amax(self) -> bool:
        """Whether the forward scales lhs by its own max |lhs| (per tensor, current scaling, no
        rotation), so a caller may take that amax once for several GEMMs of one input (dot_general's
        `lhs_amax`)."""
        spec = self.fprop.lhs.spec
        return (self.delayed is None and self.fprop.hadamard is None and spec is not None
                and spec.granularity == "tensor" and spec.scale_rule not in SIGMA_RULES)

    def replace(self, **changes) -> "Recipe":
        """A variant for ablations, e.g. recipe.replace(name="nvfp4_no_sr", dgrad=...)."""
        return dataclasses.replace(self, **changes)

    def dot_general(self, key=None):
        """A callable with exactly jax.lax.dot_general's signature, quantized by this recipe."""
        from lowprec.gemm.dot_general import dot_general  # same layer; avoids an import cycle

        def quantized_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                                  out_sharding=None):
            out = dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type, recipe=self, key=key)
            return out if out_sharding is None else jax.lax.with_sharding_constraint(out, out_sharding)

        return quantized_dot_general
