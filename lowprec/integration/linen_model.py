"""quantize_model for flax.linen: a wrapper that applies the rules through nn.intercept_methods.

Linen paths exist only once a module is bound, so the sites are discovered from an abstract
init (jax.eval_shape) on `sample_inputs`. At apply time every method call of every submodule
runs inside that module's frame: its quantized site, or none. Dense / DenseGeneral call
jax.lax.dot_general and Einsum calls jnp.einsum when no custom op is set, so the frame's
dispatchers quantize exactly the intended layer; raw calls in user modules are covered the same way.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import flax.linen as nn

from lowprec.integration.ops import frame
from lowprec.integration.rules import Site

_LAYERS = {nn.Dense: "dot_general", nn.DenseGeneral: "dot_general", nn.Einsum: "einsum"}


def _path(module) -> str:
    return "/".join(str(p) for p in module.path)


def _own_params(params, path: str) -> dict:
    node = params
    for part in path.split("/") if path else ():
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return {k: v for k, v in node.items() if not isinstance(v, dict)} if isinstance(node, dict) else {}


def _classify(module, path: str, own: dict) -> Site | None:
    name = type(module).__name__
    for cls, op in _LAYERS.items():
        if isinstance(module, cls):
            custom = getattr(module, "dot_general", None) is not None or getattr(module, "dot_general_cls", None) is not None
            kernel = own.get("kernel")
            site = Site(path=path, kind="layer", layer=name, op=op, params=math.prod(kernel.shape) if kernel is not None else 0)
            return dataclasses.replace(site, layer=name + " (custom dot_general)") if custom else site
    if isinstance(module, nn.MultiHeadDotProductAttention):
        return Site(path=path, kind="attention", layer=name, op="attention", params=0)
    if type(module).__module__.startswith("flax."):
        return None
    n = sum(math.prod(v.shape) for v in own.values())
    kind = "raw" if n else "attention"
    return Site(path=path, kind=kind, layer=name, op=kind, params=n)


def find_sites(module: nn.Module, sample_inputs: tuple) -> list[Site]:
    """Sites of a linen module, from an abstract init on `sample_inputs` (in first-call order)."""
    seen: dict[str, nn.Module] = {}

    def record(next_fun, args, kwargs, context):
        seen.setdefault(_path(context.module), context.module)
        return next_fun(*args, **kwargs)

    def init():
        with nn.intercept_methods(record):
            return module.init(jax.random.key(0), *sample_inputs)

    params = jax.eval_shape(init).get("params", {})
    sites = [_classify(m, p, _own_params(params, p)) for p, m in seen.items()]
    return [s for s in sites if s is not None]


@dataclasses.dataclass(frozen=True)
class QuantizedLinen:
    """`module` with its sites quantized: init() is the original's, apply() runs quantized.

    Use `with q.intercept(): module.apply(...)` to quantize calls made elsewhere (e.g. inside a
    larger linen program that owns `module` at the same paths).
    """

    module: nn.Module
    sites: tuple[Site, ...]

    def __post_init__(self):
        bad = [s.path for s in self.sites if s.quantized and "custom dot_general" in s.layer]
        if bad:
            raise ValueError(f"linen layers {bad} already have a custom dot_general; quantize_model cannot replace it "
                             "(exclude them with an earlier Rule(path=..., recipe='bf16'))")

    def init(self, *args, **kwargs):
        return self.module.init(*args, **kwargs)

    def apply(self, variables, *args, **kwargs):
        with self.intercept():
            return self.module.apply(variables, *args, **kwargs)

    def intercept(self):
        by_path = {s.path: s for s in self.sites}

        def interceptor(next_fun, args, kwargs, context):
            with frame(by_path.get(_path(context.module))):
                return next_fun(*args, **kwargs)

        return nn.intercept_methods(interceptor)
