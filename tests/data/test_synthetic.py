from __future__ import annotations

import numpy as np
import pytest

from lowprec.data.corpus import CorpusInfo
from lowprec.data.shards import read_shard
from lowprec.data.synthetic import BRANCH_PROBS, MIN_CHAIN, synthetic_corpus, synthetic_tokens


def conditional_entropy_bits(tokens: np.ndarray, vocab_size: int) -> float:
    """Empirical H(next | current) from bigram counts."""
    counts = np.zeros((vocab_size, vocab_size))
    np.add.at(counts, (tokens[:-1], tokens[1:]), 1)
    rows = counts.sum(1, keepdims=True)
    p = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    logp = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return float(-(counts * logp).sum() / counts.sum())


def test_markov_is_deterministic_and_low_entropy():
    a = synthetic_tokens(n_tokens=20_000, vocab_size=64, seed=3)
    assert a.dtype == np.int32 and a.min() >= 0 and a.max() < 64
    np.testing.assert_array_equal(a, synthetic_tokens(n_tokens=20_000, vocab_size=64, seed=3))
    assert not np.array_equal(a, synthetic_tokens(n_tokens=20_000, vocab_size=64, seed=4))
    counts = np.zeros((64, 64), dtype=np.int64)
    np.add.at(counts, (a[:-1], a[1:]), 1)
    # every token has <= 4 successors, except at the seams between independent chains
    off_table = np.sort(counts, axis=1)[:, :-len(BRANCH_PROBS)].sum()
    assert off_table <= 20_000 // MIN_CHAIN - 1
    h_branch = -sum(p * np.log2(p) for p in BRANCH_PROBS)
    assert conditional_entropy_bits(a, 64) <= h_branch + 0.05 < np.log2(64) - 4


def test_uniform_kind_is_high_entropy():
    u = synthetic_tokens(n_tokens=20_000, vocab_size=16, seed=0, kind="uniform")
    assert set(u.tolist()) == set(range(16))
    assert conditional_entropy_bits(u, 16) > 3.9  # log2(16) = 4


def test_synthetic_corpus_files(tmp_path):
    out = synthetic_corpus(tmp_path / "syn", n_tokens=5000, vocab_size=300, seed=1)
    train, val = read_shard(out / "train.bin"), read_shard(out / "val.bin")
    assert (len(train), len(val)) == (5000, 500)
    np.testing.assert_array_equal(np.concatenate([train, val]),
                                  synthetic_tokens(n_tokens=5500, vocab_size=300, seed=1))
    info = CorpusInfo.read(out)
    assert (info.vocab_size, info.tokenizer, info.eos_id) == (300, "none", None)
    assert info.val.bytes_per_token == 1.0
    out2 = synthetic_corpus(tmp_path / "v", n_tokens=100, vocab_size=8, seed=1, val_tokens=40, kind="uniform")
    assert len(read_shard(out2 / "val.bin")) == 40


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="zipf"), "kind must be one of"),
    (dict(vocab_size=1), "vocab_size must be >= 2"),
    (dict(val_tokens=1), "val_tokens must be >= 2"),
])
def test_synthetic_rejects_bad_arguments(tmp_path, kwargs, match):
    args = dict(n_tokens=100, vocab_size=8, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        synthetic_corpus(tmp_path / "s", **args)
