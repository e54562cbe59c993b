"""MFU: known peaks, n/a for unknown devices (CPU included), never a guess."""
import jax
import pytest

from lowprec.train.mfu import format_mfu, mfu, peak_flops


def test_peaks_and_unknown():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp8") == 1979e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H200", "fp8") == 1979e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp8") is None
    assert peak_flops("Some Future GPU", "bf16") is None


def test_cpu_is_na():
    kind = jax.devices()[0].device_kind
    assert mfu(1e6, 1e6, kind, 1, "bf16") is None
    assert format_mfu(None, "bf16") == "MFU n/a"


def test_value():
    # 1e9 FLOPs/token x 989e3 tokens/s on 2 H100s = 989e12 / (2 x 989e12)
    assert mfu(1e9, 989e3, "NVIDIA H100 80GB HBM3", 2, "bf16") == pytest.approx(0.5)
    assert format_mfu(0.4123, "bf16") == "MFU 41.2% (bf16 peak)"
