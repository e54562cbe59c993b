"""Shared fixtures for the train tests: a small learnable synthetic corpus and a tiny config."""
import pytest

from lowprec.data.dataset import synthetic_corpus
from lowprec.train.config import load_config

TINY_MODEL = ["model.vocab_size=64", "model.seq_len=32", "model.n_layers=2", "model.d_model=32", "model.n_heads=4",
              "model.mlp_multiple_of=8"]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_tokens=100_000, vocab_size=64, seed=0)


@pytest.fixture
def tiny(corpus, tmp_path):
    """tiny(*"key=value") -> Config of a ~30k-param model, batch 8 x 32 tokens, 20 steps, one device.

        Tests that keep the defaults share one compiled train step (the persistent cache below)."""

    base = [*TINY_MODEL, f"data.corpus={corpus}", "data.batch_size=8", "data.val_tokens=1024", "train.steps=20",
            "train.log_every=1", "train.eval_every=0", "train.ckpt_every=0", f"train.run_dir={tmp_path / 'run'}",
            "optim.lr=1e-2", "mesh.data=1"]

    def make(*extra):
        merged = {item.partition("=")[0]: item for item in [*base, *extra]}
        return load_config([], list(merged.values()))

    return make


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Share compiled programs between the train() calls of these tests (each call re-jits the
    same step); restored afterwards so other test modules see JAX's defaults."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {n: getattr(jax.config, n) for n in names}
    cache = tmp_path_factory.getbasetemp() / "jax-cache"
    for name, value in zip(names, (str(cache), 0, 0)):
        jax.config.update(name, value)
    cc.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cc.reset_cache()
