"""Peer FP8 libraries in the training-step benchmark: the bf16 model with its projections run by a peer.

`plug(name, model)` gives every projection (blocks/<i>/attn/{q,k,v,o}_proj and
blocks/<i>/mlp/{gate,up,down}_proj; the lm_head and embedding stay bf16) the peer's FP8 GEMM:
  flax_fp8  flax.linen.Fp8DirectDotGeneralOp as the layer's dot_general (a FlaxFp8Dot): per-tensor
            delayed scaling, e4m3 forward, e5m2 gradients. Its six scale / amax-history arrays are
            FlaxFp8Meta variables, a GradAmaxHistory, so lowprec.train differentiates them and
            replaces them by their gradient (Flax's OVERWRITE_WITH_GRADIENT convention).
  qwix_fp8  qwix quantized training (QtProvider, NNX) on the projections: e4m3 weights and
            activations, e5m2 gradients, qwix's default absmax scales.
Peer packages are imported on use, so a missing one becomes a "not installed" row.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from lowprec.bench import peers
from lowprec.integration.delayed import GradAmaxHistory

PROJECTIONS = r"blocks/\d+/(attn/[qkvo]|mlp/(gate|up|down))_proj"


class FlaxFp8Meta(GradAmaxHistory):
    """A scale or amax history of Flax's FP8 op: its gradient is its next value."""


class FlaxFp8Dot(nnx.Module):
    """jax.lax.dot_general's signature run by flax.linen.Fp8DirectDotGeneralOp, its state held as FlaxFp8Meta."""

    def __init__(self):
        x = jnp.zeros((1, 1))
        state = peers.flax_fp8()[1](x, x)  # the GEMM benchmark's peer: Flax's own initial scales and histories
        self.names = tuple(state)
        for name, value in state.items():
            setattr(self, name, FlaxFp8Meta(value))

    def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
        from flax.linen import Fp8DirectDotGeneralOp, fp8_ops

        state = {name: getattr(self, name)[...] for name in self.names}
        out = Fp8DirectDotGeneralOp().apply({fp8_ops.OVERWRITE_WITH_GRADIENT: state}, lhs, rhs, dimension_numbers)
        return out if out_sharding is None else jax.lax.with_sharding_constraint(out, out_sharding)


def projections(model: nnx.Module) -> list[nnx.Linear]:
    """The projection layers of `model` (paths matching PROJECTIONS); ValueError if there are none."""
    found = [m for parts, m in nnx.iter_modules(model) if re.fullmatch(PROJECTIONS, "/".join(map(str, parts)))]
    if not found:
        raise ValueError(f"no projection layer matches {PROJECTIONS!r}")
    return found


def flax_fp8(model: nnx.Module) -> nnx.Module:
    """`model` (in place) with a FlaxFp8Dot as every projection's dot_general."""
    for layer in projections(model):
        layer.dot_general = nnx.data(FlaxFp8Dot())
    return model


def qwix_fp8(model: nnx.Module) -> nnx.Module:
    """qwix.quantize_model's copy of `model`, its projections quantized for training (e4m3 / e5m2)."""
    import qwix

    projections(model)  # qwix's rule silently matching nothing would time a bf16 model
    rule = qwix.QtRule(module_path=PROJECTIONS, weight_qtype=jnp.float8_e4m3fn, act_qtype=jnp.float8_e4m3fn,
                       bwd_qtype=jnp.float8_e5m2)
    return qwix.quantize_model(model, qwix.QtProvider([rule]), jnp.zeros((1, model.cfg.seq_len), jnp.int32))


PEERS = {"flax_fp8": flax_fp8, "qwix_fp8": qwix_fp8}


def check(names) -> None:
    """Raise ValueError naming the valid peers unless every name is one."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"peers: unknown {unknown}; valid names: {', '.join(PEERS)}")


def plug(name: str, model: nnx.Module) -> nnx.Module:
    """`model` with its projections computed by peer `name`."""
    check([name])
    return PEERS[name](model)
