from __future__ import annotations

import pickle

import numpy as np
import pytest

from lowprec.data.corpus import CorpusInfo, SplitInfo
from lowprec.data.dataset import (
    DataConfig, WindowReader, bytes_per_token, epoch_of_step, train_dataset, train_iterator, train_windows,
    val_batches,
)
from lowprec.data.shards import write_shard
from lowprec.data.synthetic import synthetic_corpus

T = 8


@pytest.fixture
def positional(tmp_path):
    """A corpus whose token i is i, so a window identifies itself: window w starts with token w·T."""
    n_train, n_val = 30 * T + 1, 12 * T + 1  # 30 train windows, 12 val windows
    write_shard(tmp_path / "train.bin", np.arange(n_train), 1000)
    write_shard(tmp_path / "val.bin", np.arange(n_val), 1000)
    CorpusInfo(source="test", tokenizer="none", tokenizer_name="positional", vocab_size=1000, eos_id=None, seed=0,
               val_fraction=None, max_bytes=None, n_duplicates=0, fingerprint="",
               train=SplitInfo(n_files=1, n_bytes=2 * n_train, n_tokens=n_train),
               val=SplitInfo(n_files=1, n_bytes=3 * n_val, n_tokens=n_val)).write(tmp_path)
    return tmp_path


def window_ids(batch) -> list[int]:
    starts = batch["inputs"][:, 0]
    assert np.all(starts % T == 0)
    return (starts // T).tolist()


def test_batch_shapes_and_shift(positional):
    cfg = DataConfig(path=str(positional), seq_len=T, batch_size=4, val_tokens=4 * T)
    batch = train_dataset(cfg)[0]
    assert set(batch) == {"inputs", "targets"}
    for v in batch.values():
        assert v.shape == (4, T) and v.dtype == np.int32
    np.testing.assert_array_equal(batch["targets"], batch["inputs"] + 1)  # the next token
    np.testing.assert_array_equal(batch["inputs"], batch["inputs"][:, :1] + np.arange(T))  # contiguous windows


@pytest.mark.parametrize("batch_size", [5, 7])
def test_epochs_are_seeded_permutations_concatenated(positional, batch_size):
    cfg = DataConfig(path=str(positional), seq_len=T, batch_size=batch_size, seed=11, val_tokens=T)
    n = train_windows(cfg)
    assert n == 30
    ds = train_dataset(cfg)
    stream = [w for step in range(3 * n // batch_size + 1) for w in window_ids(ds[step])]
    epochs = [stream[e * n:(e + 1) * n] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(n))
    assert epoch_of_step(cfg, 0) == 0.0 and epoch_of_step(cfg, 6) == 6 * batch_size / 30
    with pytest.raises(ValueError, match="step must be >= 0"):
        epoch_of_step(cfg, -1)


def test_order_is_a_pure_function_of_seed_and_step(positional):
    cfg = DataConfig(path=str(positional), seq_len=T, batch_size=5, seed=3, val_tokens=T)
    a, b = train_dataset(cfg), train_dataset(cfg)
    for step in (0, 1, 17, 10**6):
        assert window_ids(a[step]) == window_ids(b[step])
    other = train_dataset(DataConfig(path=str(positional), seq_len=T, batch_size=5, seed=4, val_tokens=T))
    first = lambda ds: [w for s in range(6) for w in window_ids(ds[s])]  # noqa: E731
    assert first(a) != first(other)
    assert sorted(first(a)) == sorted(first(other)) == list(range(30))


@pytest.mark.parametrize("light", [False, True])
def test_iterator_state_round_trip(positional, light):
    cfg = DataConfig(path=str(positional), seq_len=T, batch_size=4, seed=0, val_tokens=T)
    ds = train_dataset(cfg)
    make = (lambda: train_iterator(cfg)) if light else (lambda: iter(ds))
    it = make()
    for _ in range(3):
        next(it)
    state = it.get_state()
    after = [next(it) for _ in range(4)]
    resumed = make()
    resumed.set_state(state)
    for step, got in enumerate(after, start=3):
        np.testing.assert_array_equal(got["inputs"], ds[step]["inputs"])  # iteration == random access
        np.testing.assert_array_equal(next(resumed)["inputs"], got["inputs"])


def test_val_batches_are_fixed(positional):
    cfg = DataConfig(path=str(positional), seq_len=T, batch_size=4, seed=0, val_tokens=10 * T + 3)
    batches = val_batches(cfg)
    assert [b["inputs"].shape[0] for b in batches] == [4, 4, 2]
    rows = np.concatenate([b["inputs"] for b in batches])
    np.testing.assert_array_equal(rows[:, 0], np.arange(10) * T)  # the first 10 windows, in order
    np.testing.assert_array_equal(np.concatenate([b["targets"] for b in batches]), rows + 1)
    other = val_batches(DataConfig(path=str(positional), seq_len=T, batch_size=3, seed=9, val_tokens=10 * T + 3))
    np.testing.assert_array_equal(np.concatenate([b["inputs"] for b in other]), rows)
    with pytest.raises(ValueError, match="val split .* has 97 tokens \\(12 windows\\)"):
        val_batches(DataConfig(path=str(positional), seq_len=T, batch_size=4, val_tokens=13 * T))


def test_bytes_per_token(positional):
    assert bytes_per_token(positional) == 3.0
    assert bytes_per_token(positional, "train") == 2.0
    with pytest.raises(ValueError, match="split must be one of"):
        bytes_per_token(positional, "test")


def test_config_and_corpus_errors(positional, tmp_path):
    for kwargs, match in [(dict(seq_len=0), "data.seq_len"), (dict(batch_size=-1), "data.batch_size"),
                          (dict(seed=-2), "data.seed"), (dict(val_tokens=T - 1), "data.val_tokens")]:
        with pytest.raises(ValueError, match=match):
            DataConfig(**(dict(path=str(positional), seq_len=T, batch_size=2) | kwargs))
    with pytest.raises(ValueError, match="fewer than data.batch_size 31"):
        train_dataset(DataConfig(path=str(positional), seq_len=T, batch_size=31))
    with pytest.raises(ValueError, match="does not exist"):
        train_dataset(DataConfig(path=str(tmp_path / "nowhere"), seq_len=T, batch_size=2))


def test_window_reader_pickles_by_path(positional):
    reader = WindowReader(positional / "train.bin", T)
    clone = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 1000
    np.testing.assert_array_equal(clone(np.array([3, 1]))["inputs"], reader(np.array([3, 1]))["inputs"])


def test_synthetic_corpus_feeds_the_dataset(tmp_path):
    out = synthetic_corpus(tmp_path / "syn", n_tokens=4000, vocab_size=50, seed=0)
    cfg = DataConfig(path=str(out), seq_len=16, batch_size=8, val_tokens=256)
    batch = train_dataset(cfg)[2]
    assert batch["inputs"].shape == (8, 16) and batch["inputs"].max() < 50
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert sum(b["inputs"].size for b in val_batches(cfg)) == 256
