"""Model FLOPs utilisation against a table of vendor dense peaks; unknown devices give None ("n/a").

Peaks are per device, dense (no sparsity), from vendor datasheets (training.md §3, unverified).
Keys are matched as substrings of `jax.Device.device_kind`, most specific first. Formats that
are emulated in BF16 (FP4, MX on Hopper) are reported against the BF16 peak, labelled so.
"""
from __future__ import annotations

PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756e12, "fp8": 1513e12}),
    ("H100", {"bf16": 989e12, "fp8": 1979e12}),  # SXM (device_kind "NVIDIA H100 80GB HBM3")
    ("H200", {"bf16": 989e12, "fp8": 1979e12}),
    ("A100", {"bf16": 312e12}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one device for `dtype` ("bf16" or "fp8"), or None when unknown."""
    for key, peaks in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return peaks.get(dtype)
    return None


def mfu(flops_per_token: float, tokens_per_s: float, device_kind: str, n_devices: int, dtype: str) -> float | None:
    """Achieved model FLOP/s over the summed peak of `n_devices`, or None when the peak is unknown."""
    peak = peak_flops(device_kind, dtype)
    return None if peak is None else flops_per_token * tokens_per_s / (peak * n_devices)


def format_mfu(value: float | None, dtype: str) -> str:
    """'MFU 41.2% (bf16 peak)' or 'MFU n/a'."""
    return "MFU n/a" if value is None else f"MFU {100 * value:.1f}% ({dtype} peak)"
