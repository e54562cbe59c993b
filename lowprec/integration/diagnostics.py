"""Quantization diagnostics: error of one tensor under a QuantSpec, and per-layer operand statistics.

quant_diagnostics design: one forward pass under `capturing` records every quantized GEMM's
operands (X, W) and adds a zero probe to its output; jax.vjp of the model output with respect
to those probes yields each GEMM's output gradient dY (a standard normal cotangent drawn from
`key`, or all ones without a key). Every GEMM role's operands are then formed exactly as the gemm
layer forms them (canonical layout, the role's Hadamard, fwd_q sources) and quantized with the
role's spec and key, all inside one jit (compiled once per model structure and input shape).
Delayed-scaling sites are measured with current scaling (each operand's own amax), not their histories.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lowprec.gemm.dot_general import canonicalize
from lowprec.gemm.qgemm import role_key, rotate
from lowprec.integration.keys import quant_key
from lowprec.integration.ops import capturing
from lowprec.numerics.quantize import abs_max, dequantize, element_scale, fake_quant, quantize
from lowprec.numerics.spec import QuantSpec


def _error_stats(x, xq) -> dict:
    err = xq - x
    signal, noise = jnp.sum(x * x), jnp.sum(err * err)
    sqnr = jnp.where(noise > 0, 10 * jnp.log10(signal / jnp.where(noise > 0, noise, 1.0)), jnp.inf)
    rel = jnp.where(signal > 0, jnp.sqrt(noise / jnp.where(signal > 0, signal, 1.0)), jnp.where(noise > 0, jnp.inf, 0.0))
    return {"sqnr_db": sqnr, "rel_error": rel, "mse": noise / x.size}


def quant_error(x, spec: QuantSpec, *, axis: int = -1, key=None) -> dict:
    """SQNR (dB; inf when exact), relative L2 error and MSE of fake_quant(x, spec) against x (f32)."""
    x = jnp.asarray(x, jnp.float32)
    return _error_stats(x, fake_quant(x, spec, key=key, axis=axis))


def tensor_stats(x, spec: QuantSpec, axis: int = -1, key=None) -> dict:
    """amax, rms, crest (amax/rms), excess kurtosis, saturated (share of elements beyond the largest
    value their block can represent, i.e. clipped), flushed (share of nonzero elements that became
    zero), and the quantization error. Crest and kurtosis are 0 for a constant tensor."""
    x = jnp.asarray(x, jnp.float32)
    q = quantize(x, spec, key=key, axis=axis)
    xq = dequantize(q, jnp.float32)
    amax, rms = abs_max(x), jnp.sqrt(jnp.mean(x * x))
    var = jnp.var(x)
    kurt = jnp.where(var > 0, jnp.mean((x - jnp.mean(x)) ** 4) / jnp.where(var > 0, var, 1.0) ** 2 - 3.0, 0.0)
    limit = spec.element.max_value * element_scale(q)
    return {
        "amax": amax, "rms": rms, "crest": jnp.where(rms > 0, amax / jnp.where(rms > 0, rms, 1.0), 0.0),
        "kurtosis": kurt, "saturated": jnp.mean(jnp.abs(x) > limit),
        "flushed": jnp.mean((x != 0) & (xq == 0)), **_error_stats(x, xq),
    }


@dataclasses.dataclass
class _Capture:
    probes: dict | None
    meta: dict = dataclasses.field(default_factory=dict)  # name -> (recipe, dimension numbers)
    operands: dict = dataclasses.field(default_factory=dict)  # name -> (lhs, rhs, key)
    outputs: dict = dataclasses.field(default_factory=dict)

    def record(self, site, lhs, rhs, dimension_numbers, out, key):
        n = sum(1 for k in self.meta if k == site.path or k.startswith(site.path + "#"))
        name = site.path if n == 0 else f"{site.path}#{n}"
        self.meta[name] = (site.recipe, dimension_numbers)
        self.operands[name] = (lhs, rhs, key)
        self.outputs[name] = out
        return out if self.probes is None else out + self.probes[name].astype(out.dtype)


def _role_operands(recipe, l, r, g, key):
    """{(role, slot): the tensor that role quantizes along its last axis}, as the gemm layer forms them."""
    f = recipe.fprop
    a, b = rotate(l, f, key, "fprop"), rotate(r, f, key, "fprop")
    out = {("fprop", "lhs"): a, ("fprop", "rhs"): b}
    fwd_q = {}
    for slot, t, spec in (("lhs", a, f.lhs.spec), ("rhs", b, f.rhs.spec)):
        if spec is not None:
            k = role_key(key, "fprop", slot) if spec.rounding == "sr" else None
            fwd_q[slot] = dequantize(quantize(t, spec, key=k, axis=-1), jnp.float32)
    w_src = fwd_q["rhs"] if recipe.dgrad.rhs.source == "fwd_q" and "rhs" in fwd_q else r
    x_src = fwd_q["lhs"] if recipe.wgrad.rhs.source == "fwd_q" and "lhs" in fwd_q else l
    for role, lhs, rhs in (("dgrad", g, jnp.swapaxes(w_src, -1, -2)),
                           ("wgrad", jnp.swapaxes(g, -1, -2), jnp.swapaxes(x_src, -1, -2))):
        cfg = recipe.roles[role]
        out[(role, "lhs")], out[(role, "rhs")] = rotate(lhs, cfg, key, role), rotate(rhs, cfg, key, role)
    return out


def quant_diagnostics(model, inputs, *, key=None) -> dict[str, float]:
    """Statistics of every quantized operand of every quantized GEMM, for a metrics log (jitted).

    Keys: "<layer path>[#n]/<role>/<lhs|rhs>/<stat>" (stats as tensor_stats; #n for a site's
    n-th GEMM). `inputs`: the model's positional args (a tuple, or one array). `key` is the
    quant_key of the pass (needed by SR / random-sign recipes) and seeds the cotangent.
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"quant_diagnostics takes a flax.nnx model, got {type(model).__name__}")
    graphdef, state = nnx.split(model)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    return {name: float(v) for name, v in _diagnostics(graphdef, state, args, key).items()}


@functools.partial(jax.jit, static_argnums=0)
def _diagnostics(graphdef, state, args, key) -> dict:
    scope = (lambda: quant_key(key)) if key is not None else contextlib.nullcontext

    def run(probes):
        capture = _Capture(probes)
        with scope(), capturing(capture):  # a model per trace: delayed-scaling layers write their histories
            out = nnx.merge(graphdef, state, copy=True)(*args)
        return out, capture

    shapes = jax.eval_shape(lambda: run(None)[1].outputs)
    if not shapes:
        return {}
    probes = {name: jnp.zeros(s.shape, jnp.float32) for name, s in shapes.items()}
    holder = {}

    def forward(probes):
        out, capture = run(probes)
        holder["meta"] = capture.meta
        return out, capture.operands

    out, vjp_fn, operands = jax.vjp(forward, probes, has_aux=True)
    cot = (jnp.ones(out.shape, out.dtype) if key is None else
           jax.random.normal(jax.random.fold_in(key, 0x6C70), out.shape, out.dtype))
    grads = vjp_fn(cot)[0]
    stats = {}
    for name, (recipe, dn) in holder["meta"].items():
        lhs, rhs, gkey = operands[name]
        l, r, _ = canonicalize(lhs.astype(jnp.float32), rhs.astype(jnp.float32), dn)
        g = grads[name].astype(jnp.float32).reshape(l.shape[0], l.shape[1], r.shape[1])
        for (role, slot), t in _role_operands(recipe, l, r, g, gkey).items():
            spec = getattr(recipe.roles[role], slot).spec
            if spec is None:
                continue
            k = role_key(gkey, role, slot) if spec.rounding == "sr" else None
            for stat, v in tensor_stats(t, spec, axis=-1, key=k).items():
                stats[f"{name}/{role}/{slot}/{stat}"] = v
    return stats
