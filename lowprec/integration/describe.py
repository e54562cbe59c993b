"""describe(model): which recipe each matmul site runs, GEMM by GEMM, and the FLOP share per recipe."""
from __future__ import annotations

from flax import nnx

from lowprec.gemm.config import GemmConfig
from lowprec.integration import nnx_model
from lowprec.integration.linen_model import QuantizedLinen
from lowprec.integration.rules import Site

UNQUANTIZED = "bf16"


def _gemm(cfg: GemmConfig) -> str:
    if not cfg.active:
        return UNQUANTIZED
    text = f"{cfg.lhs.describe()} x {cfg.rhs.describe()}"
    if cfg.hadamard is not None:
        text += f" +RHT{cfg.hadamard.size or '(full)'}/{cfg.hadamard.signs}"
    return text


def sites_of(model) -> list[Site]:
    """The site table: stored by quantize_model, or found afresh (all unquantized) otherwise."""
    if isinstance(model, QuantizedLinen):
        return list(model.sites)
    if isinstance(model, nnx.Module):
        return list(getattr(model, nnx_model.SITES_ATTR, None) or nnx_model.find_sites(model))
    raise ValueError(f"describe takes an NNX module or the result of quantize_model on a linen module, got {type(model).__name__}")


def _recipe_name(site: Site) -> str:
    return site.recipe.name if site.quantized else UNQUANTIZED


def describe(model, *, print_table: bool = False) -> str:
    """A table of site path, layer, matched rule, recipe, per-GEMM formats and parameters, then the
    share of matmul FLOPs per recipe (2 x params per token; attention sites, whose FLOPs depend on
    the sequence length, are listed but not counted). Unquantized sites count under "bf16"."""
    sites = [s for s in sites_of(model) if s.kind != "attention" or s.quantized]
    header = ("path", "layer", "rule", "recipe", "params", "fprop", "dgrad", "wgrad")
    rows = []
    for s in sites:
        roles = [_gemm(getattr(s.recipe, r)) if s.quantized else UNQUANTIZED for r in ("fprop", "dgrad", "wgrad")]
        rule = "-" if s.rule is None else str(s.rule)
        if s.rule is None and s.recipe is not None:
            rule = "own"
        rows.append((s.path or "(root)", f"{s.layer} [{s.kind}]", rule, _recipe_name(s), f"{s.params:,}", *roles))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    flops: dict[str, int] = {}
    for s in sites:
        if s.kind != "attention":
            flops[_recipe_name(s)] = flops.get(_recipe_name(s), 0) + 2 * s.params
    total = sum(flops.values())
    shares = ", ".join(f"{name} {100 * f / total:.1f}%" for name, f in sorted(flops.items(), key=lambda kv: -kv[1])) if total else "none"
    lines.append(f"matmul FLOPs per token (2 x params): {total:,}; by recipe: {shares}")
    text = "\n".join(lines)
    if print_table:
        print(text)
    return text
