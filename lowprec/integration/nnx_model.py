"""quantize_model for flax.nnx: find the sites in the module graph and install quantized callables.

Layers get a QuantDot / QuantEinsum as their dot_general / einsum_op (a DelayedDot / DelayedEinsum
module holding the amax histories for delayed-scaling recipes); MultiHeadAttention's
attention_fn is wrapped in a Framed; raw and attention sites (and every module beneath them that
is not a site itself, as a shield) get their class swapped for a subclass whose __call__ runs
inside the module's frame. Sites whose recipe is inactive (bf16) are left untouched. The site
table is stored on the root as `_lowprec_sites` (static, hashable) for describe().
"""
from __future__ import annotations

import math

from flax import nnx

from lowprec.integration.delayed import DelayedDot, DelayedEinsum
from lowprec.integration.ops import ORIGINALS, Framed, QuantDot, QuantEinsum, frame
from lowprec.integration.rules import Site

SITES_ATTR = "_lowprec_sites"
_FRAME_ATTR = "_lowprec_frame"
_LAYERS = {nnx.Linear: "dot_general", nnx.LinearGeneral: "dot_general", nnx.Einsum: "einsum"}
_CONTAINERS = (nnx.List, nnx.Dict, nnx.Sequential)


def _path(parts) -> str:
    return "/".join(str(p) for p in parts)


def _layer_op(module) -> str | None:
    for cls, op in _LAYERS.items():
        if isinstance(module, cls):
            return op
    return None


def _own_params(module) -> int:
    """Parameters held by the module itself (directly or in plain containers), not by child modules."""
    nodes = list(nnx.iter_graph(module))
    children = [parts for parts, node in nodes
                if parts and isinstance(node, nnx.Module) and not isinstance(node, _CONTAINERS)]
    return sum(math.prod(node.shape) for parts, node in nodes
               if isinstance(node, nnx.Param) and not any(parts[:len(c)] == c for c in children))


def _is_builtin(module) -> bool:
    return type(module).__module__.startswith("flax.")


def find_sites(model) -> list[Site]:
    """Every quantizable site of an NNX model, in iteration order (children before parents)."""
    sites = []
    for parts, m in nnx.iter_modules(model):
        path, name = _path(parts), getattr(type(m), "_lowprec_base", type(m)).__name__
        op = _layer_op(m)
        if op is not None:  # lowprec.nnx layers come with their recipe; rules never override it
            own = getattr(m, "_lowprec_recipe", None)
            sites.append(Site(path=path, kind="layer", layer=name, op=op, params=m.kernel.size, recipe=own))
        elif isinstance(m, nnx.MultiHeadAttention):
            sites.append(Site(path=path, kind="attention", layer=name, op="attention", params=0))
        elif not _is_builtin(m) and not isinstance(m, _CONTAINERS):
            own = _own_params(m)
            kind = "raw" if own else "attention"
            sites.append(Site(path=path, kind=kind, layer=name, op=kind, params=own))
    return sites


def _check_default_op(module, site: Site) -> None:
    custom = (module.einsum_op is not ORIGINALS["einsum"] if site.op == "einsum" else
              module.dot_general is not ORIGINALS["dot_general"] if isinstance(module, nnx.Linear) else
              module.dot_general is not None or module.dot_general_cls is not None)
    if custom:
        raise ValueError(f"layer {site.path!r} already has a custom {'einsum_op' if site.op == 'einsum' else 'dot_general'}; "
                         "quantize_model cannot replace it (exclude it with an earlier Rule(path=..., recipe='bf16'))")


class _NoSow:
    """A stand-in `module` for nnx.dot_product_attention: with one it takes its jnp.einsum path
    (which interception can quantize) instead of jax.nn.dot_product_attention; sows nothing."""

    def sow(self, *args, **kwargs) -> bool:
        return False


def einsum_attention(*args, module=None, **kwargs):
    """nnx.dot_product_attention, always through its einsum path."""
    return nnx.dot_product_attention(*args, module=_NoSow() if module is None else module, **kwargs)


_CLASSES: dict[type, type] = {}


def _framed_class(cls: type) -> type:
    """A subclass of `cls` whose __call__ runs inside the instance's frame (one subclass per class)."""
    if cls not in _CLASSES:
        def __call__(self, *args, **kwargs):
            with frame(getattr(self, _FRAME_ATTR)):
                return cls.__call__(self, *args, **kwargs)

        _CLASSES[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "_lowprec_base": cls,
                                                   "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return _CLASSES[cls]


def _set_frame(module, site: Site | None) -> None:
    if not hasattr(module, _FRAME_ATTR):
        object.__setattr__(module, "__class__", _framed_class(type(module)))
    setattr(module, _FRAME_ATTR, site)


def apply_sites(model, sites: list[Site]) -> None:
    """Install the quantized callables and frames for the quantized `sites` (in place)."""
    modules = {_path(parts): m for parts, m in nnx.iter_modules(model)}
    framed = []
    for site in sites:
        if site.rule is None or not site.quantized:
            continue
        m = modules[site.path]
        if site.kind == "layer":
            _check_default_op(m, site)
            if site.recipe.delayed is not None:  # a module: its histories become the layer's variables
                op = nnx.data(DelayedEinsum(site) if site.op == "einsum" else DelayedDot(site))
            else:
                op = QuantEinsum(site) if site.op == "einsum" else QuantDot(site)
            if site.op == "einsum":
                m.einsum_op = op
            else:
                m.dot_general = op
        elif isinstance(m, nnx.MultiHeadAttention):
            fn = einsum_attention if m.attention_fn is nnx.dot_product_attention else m.attention_fn
            m.attention_fn = Framed(fn, site)
        else:
            framed.append(site.path)
            _set_frame(m, site)
    for root in framed:  # shields: modules beneath a frame run their own frame, or none
        for parts, m in nnx.iter_modules(modules[root]):
            if parts and not hasattr(m, _FRAME_ATTR):
                _set_frame(m, None)
    setattr(model, SITES_ATTR, tuple(sites))
