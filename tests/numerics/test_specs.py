"""Named spec presets: listing, lookup errors, and what each preset promises."""
import pytest

import lowprec


def test_names_and_get():
    names = lowprec.specs.names()
    for required in ["fp8_e4m3_tensor", "fp8_e5m2_tensor", "fp8_e4m3_row", "fp8_block128", "mxfp8", "mxfp6_e2m3",
                     "mxfp6_e3m2", "mxint8", "mxfp4", "nvfp4", "nvint4", "int8_channel", "int4_g128"]:
        assert required in names
        assert isinstance(lowprec.specs.get(required), lowprec.QuantSpec)
    with pytest.raises(ValueError, match="valid names: fp8_e4m3_tensor"):
        lowprec.specs.get("mxfp3")


@pytest.mark.parametrize("name,bits", [("mxfp8", 8.25), ("mxfp6_e2m3", 6.25), ("mxfp4", 4.25), ("mxint8", 8.25), ("nvfp4", 4.5)])
def test_bits_per_element(name, bits):
    assert lowprec.specs.get(name).bits_per_element == bits
