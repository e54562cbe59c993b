"""Recipe registry: `lowprec.recipes.get(name)`, `names()`, and the builders for variants.

Generic floating-point recipes are named `fp_e<E>m<M>_b<block>_<scale>` (e.g. fp_e3m2_b32_e8m0,
fp_e4m3_btensor_fp32) and built on demand by `fp()`, so sweeps can name any (E, M, block, scale).
"""
from __future__ import annotations

import re

from lowprec.gemm.config import Recipe
from lowprec.recipes.presets import (
    bf16, fp, fp4_all_the_way, fp8_blockwise, fp8_delayed, fp8_rowwise, fp8_tensorwise, halo, mxfp4, mxfp4_bwd, mxfp6,
    mxfp8, mxint8, nvfp4, nvint4, quartet, quest_w4a4,
)

_BUILDERS = {
    "bf16": bf16,
    "fp8_tensorwise": fp8_tensorwise,
    "fp8_tensorwise_pow2": lambda: fp8_tensorwise(pow2=True),
    "fp8_delayed": fp8_delayed,
    "fp8_delayed_pow2": lambda: fp8_delayed(pow2=True),
    "fp8_rowwise": fp8_rowwise,
    "fp8_rowwise_gw_hp": lambda: fp8_rowwise(gw_hp=True),
    "fp8_blockwise": fp8_blockwise,
    "mxfp8": mxfp8,
    "mxfp6": mxfp6,
    "mxint8": mxint8,
    "mxfp4": mxfp4,
    "nvfp4": nvfp4,
    "nvfp4_no_rht": lambda: nvfp4(rht=False),
    "nvfp4_no_sr": lambda: nvfp4(sr=False),
    "nvfp4_no_2d": lambda: nvfp4(w2d=False),
    "nvint4": nvint4,
    "quartet": quartet,
    "mxfp4_bwd": mxfp4_bwd,
    "quest_w4a4": quest_w4a4,
    "halo0": lambda: halo(0),
    "halo1": lambda: halo(1),
    "halo2": lambda: halo(2),
    "fp4_all_the_way": fp4_all_the_way,
}

_FP_NAME = re.compile(r"^fp_e(\d)m(\d+)_b(\d+|tensor|channel)_(fp32|bf16|e8m0|ue4m3|ue5m3)$")


def names() -> list[str]:
    """Every registered recipe name (generic fp_* names are accepted by get() as well)."""
    return list(_BUILDERS)


def get(name: str | Recipe) -> Recipe:
    """The recipe called `name` (a Recipe passes through); unknown names list the valid ones."""
    if isinstance(name, Recipe):
        return name
    if name in _BUILDERS:
        return _BUILDERS[name]()
    m = _FP_NAME.match(name) if isinstance(name, str) else None
    if m:
        e, mbits, block, scale = m.groups()
        return fp(int(e), int(mbits), int(block) if block.isdigit() else block, scale)
    raise ValueError(f"unknown recipe {name!r}; valid names: {', '.join(_BUILDERS)}, or fp_e<E>m<M>_b<block>_<scale>")


__all__ = ["Recipe", "get", "names", "fp", "nvfp4", "halo", "quartet", "fp8_tensorwise"]
