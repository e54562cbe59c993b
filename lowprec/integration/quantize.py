"""lowprec.quantize_model: apply quantization rules to a Flax NNX or Linen model."""
from __future__ import annotations

import warnings

import flax.linen as nn
import jax
from flax import nnx

from lowprec.integration import delayed, linen_model, nnx_model
from lowprec.integration.keys import quant_key
from lowprec.integration.rules import as_rules, assign, unused_rules


def _as_args(sample_inputs) -> tuple:
    return sample_inputs if isinstance(sample_inputs, tuple) else (sample_inputs,)


def _warn_unused(sites, rules) -> None:
    unused = unused_rules(sites, rules)
    if unused:
        listed = [f"{s.path or '(root)'} [{s.kind}: {s.op}]" for s in sites]
        warnings.warn(
            "quantize_model: " + "; ".join(f"rule {i} (path={rules[i].path!r}, ops={rules[i].ops}) matches no layer" for i in unused)
            + ". Quantizable sites: " + ", ".join(listed), stacklevel=3)


def quantize_model(model, rules, *, sample_inputs=None):
    """Quantize the matmuls of `model` per `rules` (a recipe name, or Rules, first match wins).

    NNX: mutates `model` in place and returns it; `sample_inputs` (positional args, optional) runs
    an abstract forward pass so shape errors (e.g. a block size not dividing K) surface here.
    Linen: returns a QuantizedLinen (init / apply / intercept); `sample_inputs` is required, as
    linen module paths are only known once the module is traced.
    Sites no rule matches stay untouched; a rule that matches nothing warns, listing the sites.
    Delayed-scaling recipes (NNX only) apply to layers and add amax-history variables (see delayed).
    """
    rules = as_rules(rules)
    if isinstance(model, nnx.Module):
        if hasattr(model, nnx_model.SITES_ATTR):
            raise ValueError("model is already quantized (quantize_model was applied to it before)")
        sites = assign(nnx_model.find_sites(model), rules)
        _warn_unused(sites, rules)
        delayed.check_sites(sites)
        nnx_model.apply_sites(model, sites)
        if sample_inputs is not None:
            _check_runs(model, _as_args(sample_inputs))
        return model
    if isinstance(model, nn.Module):
        if sample_inputs is None:
            raise ValueError("quantize_model on a flax.linen module needs sample_inputs=(args...) to find its layer paths")
        sites = assign(linen_model.find_sites(model, _as_args(sample_inputs)), rules)
        _warn_unused(sites, rules)
        if delayed.delayed_sites(sites):
            raise NotImplementedError("delayed-scaling recipes are supported on flax.nnx models only; quantize this "
                                      "linen module with a current-scaling recipe (e.g. 'fp8_tensorwise')")
        return linen_model.QuantizedLinen(model, tuple(sites))
    raise ValueError(f"quantize_model takes a flax.nnx.Module or a flax.linen.Module, got {type(model).__name__}")


def _check_runs(model, args) -> None:
    """An abstract forward pass (no FLOPs) of the quantized model, under a placeholder key."""
    graphdef, state = nnx.split(model)

    def forward(state, *args):
        with quant_key(jax.random.key(0)):
            return nnx.merge(graphdef, state)(*args)

    jax.eval_shape(forward, state, *args)
