"""Each preset matches its entry in ../shared/reference/recipes.md, and the registry behaves."""
import pytest

import lowprec
from lowprec.numerics.formats import get_format


def _fmt(op):
    return None if op.spec is None else op.spec.element.name


def test_registry_lists_and_errors():
    names = lowprec.recipes.names()
    for required in ["bf16", "fp8_tensorwise", "fp8_rowwise", "fp8_blockwise", "mxfp8", "mxfp6", "mxint8", "mxfp4",
                     "nvfp4", "nvint4", "quartet", "mxfp4_bwd", "quest_w4a4", "halo0", "halo1", "halo2", "fp4_all_the_way"]:
        assert required in names
    with pytest.raises(ValueError, match="unknown recipe 'nvfp3'; valid names: bf16"):
        lowprec.recipes.get("nvfp3")
    r = lowprec.recipes.get("fp_e3m2_b32_e8m0")
    assert r.fprop.lhs.spec.element == get_format("e3m2") and r.fprop.lhs.spec.block == 32
    assert lowprec.recipes.get(r) is r


def test_fp8_tensorwise_is_hybrid():  # §2
    r = lowprec.recipes.get("fp8_tensorwise")
    assert (_fmt(r.fprop.lhs), _fmt(r.fprop.rhs)) == ("e4m3", "e4m3")
    assert (_fmt(r.dgrad.lhs), _fmt(r.dgrad.rhs)) == ("e5m2", "e4m3")
    assert (_fmt(r.wgrad.lhs), _fmt(r.wgrad.rhs)) == ("e5m2", "e4m3")
    assert lowprec.recipes.fp8_tensorwise("e4m3").dgrad.lhs.spec.element.name == "e4m3"


def test_nvfp4_recipe():  # §10
    r = lowprec.recipes.get("nvfp4")
    assert r.fprop.rhs.spec.granularity == "tile" and r.fprop.rhs.spec.block == 16  # 16x16 weights
    assert r.dgrad.rhs.spec == r.fprop.rhs.spec  # F and D use the identical W-hat
    assert r.fprop.lhs.spec.rounding == "rne" and r.fprop.rhs.spec.rounding == "rne"
    assert r.dgrad.lhs.spec.rounding == "sr" and r.wgrad.lhs.spec.rounding == "sr"  # SR on dY only
    assert r.wgrad.rhs.spec.rounding == "rne"
    assert r.fprop.hadamard is None and r.dgrad.hadamard is None  # RHT on wgrad inputs only
    assert r.wgrad.hadamard.size == 16 and r.wgrad.hadamard.signs == "fixed_te"
    assert all(op.spec.two_level and op.spec.scale_format == "ue4m3" for c in r.roles.values() for op in (c.lhs, c.rhs))
    assert lowprec.recipes.get("nvfp4_no_rht").wgrad.hadamard is None
    assert lowprec.recipes.get("nvfp4_no_sr").dgrad.lhs.spec.rounding == "rne"
    assert lowprec.recipes.get("nvfp4_no_2d").fprop.rhs.spec.granularity == "block"


def test_mx_recipes():  # §6-§9
    assert lowprec.recipes.get("mxfp8").fprop.lhs.spec.scale_rule == "rceil"
    mxfp6 = lowprec.recipes.get("mxfp6")
    assert (_fmt(mxfp6.fprop.lhs), _fmt(mxfp6.dgrad.lhs)) == ("e2m3", "e3m2")
    mxint8 = lowprec.recipes.get("mxint8").fprop.lhs.spec.element
    assert mxint8.symmetric and mxint8.qmin == -127
    mxfp4 = lowprec.recipes.get("mxfp4").fprop.lhs.spec
    assert (mxfp4.block, mxfp4.scale_format, mxfp4.scale_rule, mxfp4.rounding) == (32, "e8m0", "floor", "rne")


def test_quartet_and_mxfp4_bwd():  # §12, §13
    q = lowprec.recipes.get("quartet")
    assert q.estimator == "clipped_ste" and q.fprop.lhs.spec.scale_rule == "quest_sigma"
    assert q.fprop.hadamard.size == 32 and q.fprop.hadamard.signs == "none"
    for cfg in (q.dgrad, q.wgrad):
        assert cfg.rhs.source == "fwd_q" and cfg.lhs.spec.headroom == 0.75 and cfg.lhs.spec.rounding == "sr"
        assert cfg.hadamard.sign_side == "right" and cfg.hadamard.signs == "per_call"
    t = lowprec.recipes.get("mxfp4_bwd")
    assert t.fprop.lhs.spec is None and t.dgrad.hadamard.size == 64 and t.dgrad.hadamard.sign_side == "left"
    assert t.needs_key


def test_quest_halo_deepseek():  # §5, §14, §15
    q = lowprec.recipes.get("quest_w4a4")
    assert q.estimator == "quest_trust" and q.fprop.hadamard.size == 128 and q.dgrad.lhs.spec is None
    assert lowprec.recipes.get("halo0").fprop.hadamard is None
    h2 = lowprec.recipes.get("halo2")
    assert h2.fprop.hadamard.size == 0 and h2.dgrad.hadamard.size == 0 and h2.wgrad.hadamard is None
    ds = lowprec.recipes.get("fp8_blockwise")
    assert ds.fprop.lhs.spec.block == 128 and ds.fprop.rhs.spec.granularity == "tile"
    assert ds.wgrad.rhs.spec.granularity == "block"


def test_recipe_validation_errors():
    r = lowprec.recipes.get("bf16")
    with pytest.raises(ValueError, match="estimator must be one of"):
        r.replace(estimator="magic")
    with pytest.raises(ValueError, match="fprop needs lhs and rhs specs"):
        r.replace(estimator="clipped_ste")
    with pytest.raises(ValueError, match="halo level"):
        lowprec.recipes.halo(3)
