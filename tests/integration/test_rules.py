import pytest

import lowprec as lp
from lowprec.integration.rules import Site, as_rules, assign, unused_rules


def _site(path, kind="layer", op="dot_general"):
    return Site(path=path, kind=kind, layer="X", op=op, params=4)


def test_invalid_regex_and_recipe_and_ops():
    with pytest.raises(ValueError, match="not a valid regex"):
        lp.Rule(path="blocks/(", recipe="bf16")
    with pytest.raises(ValueError, match="unknown recipe 'nvfp5'.*nvfp4"):
        lp.Rule(path=".*", recipe="nvfp5")
    with pytest.raises(ValueError, match="Rule.ops"):
        lp.Rule(path=".*", recipe="bf16", ops=("conv",))


def test_first_match_wins_and_ops_filter():
    rules = as_rules([lp.Rule(path="mlp", recipe="mxfp8"), lp.Rule(path=".*", recipe="nvfp4", ops=("einsum",)),
                      lp.Rule(path=".*", recipe="bf16")])
    a, b, c = assign([_site("b/mlp/up"), _site("b/attn/q", op="einsum"), _site("b/attn/o")], rules)
    assert (a.rule, a.recipe.name) == (0, "mxfp8")
    assert (b.rule, b.recipe.name) == (1, "nvfp4")
    assert (c.rule, c.recipe.name) == (2, "bf16") and not c.quantized


def test_attention_sites_need_explicit_op_and_unused_rules():
    rules = as_rules("nvfp4")
    sites = assign([_site("attn", kind="attention", op="attention")], rules)
    assert sites[0].rule is None and unused_rules(sites, rules) == [0]
    explicit = as_rules([lp.Rule(path="attn", recipe="nvfp4", ops=("attention",))])
    assert assign([_site("attn", kind="attention", op="attention")], explicit)[0].ops == ("dot_general", "einsum")


def test_as_rules_rejects_junk():
    with pytest.raises(ValueError, match="lowprec.Rule"):
        as_rules([("x", "bf16")])
