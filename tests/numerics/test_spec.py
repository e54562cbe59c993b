"""QuantSpec validation: every bad field names itself and the valid choices."""
import pytest

from lowprec.numerics.spec import QuantSpec


@pytest.mark.parametrize("kwargs,match", [
    (dict(element="fp5"), "unknown number format"),
    (dict(element="e4m3", granularity="row"), "granularity must be one of"),
    (dict(element="e4m3", granularity="block"), "block must be >= 1"),
    (dict(element="e4m3", block=32), "only used with granularity"),
    (dict(element="e4m3", scale_format="e8m0"), "scale_rule must be one of"),
    (dict(element="e4m3", rounding="nearest"), "rounding must be one of"),
    (dict(element="e2m1", granularity="block", block=16, scale_format="e8m0", scale_rule="floor", two_level=True), "two_level"),
    (dict(element="e2m1", headroom=1.5), "headroom"),
])
def test_bad_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantSpec(**kwargs)


def test_spec_is_hashable_and_describes_itself():
    a = QuantSpec(element="e2m1", granularity="block", block=16, scale_format="ue4m3", two_level=True, rounding="sr")
    assert hash(a) == hash(a.replace())
    assert a.describe() == "e2m1 1x16 ue4m3+fp32 absmax sr"
    assert a.bits_per_element == 4.5
    assert QuantSpec(element="e2m1", granularity="block", block=32, scale_format="e8m0", scale_rule="floor").bits_per_element == 4.25
