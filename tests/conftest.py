"""Shared pytest setup: a 4-device CPU platform for sharding tests, the `gpu` marker skip, and the
`partitioner` fixture (custom_partitioning rules under both SPMD partitioners)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import pytest  # noqa: E402


def _has_gpu() -> bool:
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:  # no backend at all
        return False


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(params=["shardy", "gspmd"])
def partitioner(request):
    """Both SPMD partitioners: Shardy reads the sharding rule, GSPMD the inference callback."""
    import jax

    before = jax.config.jax_use_shardy_partitioner
    jax.config.update("jax_use_shardy_partitioner", request.param == "shardy")
    yield request.param
    jax.config.update("jax_use_shardy_partitioner", before)
