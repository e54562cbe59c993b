"""The training stream and validation set, both pure functions of the config (no iterator state needed).

The train split is cut into windows of seq_len + 1 tokens at stride seq_len (window w covers
tokens [w·T, w·T + T]). Epoch e visits every window once, in a permutation seeded by (seed, e)
(Grain's index shuffle with per-epoch seed s' + e, where s' is a 32-bit hash of `seed`, so
different seeds never share epoch orders in practice). Epochs are concatenated and step t's batch
takes stream positions [t·B, (t+1)·B), so `train_dataset(cfg)[t]` is random access.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from lowprec.data.corpus import CorpusInfo
from lowprec.data.shards import read_shard
from lowprec.data.synthetic import synthetic_corpus

__all__ = ["DataConfig", "train_dataset", "train_iterator", "train_windows", "epoch_of_step", "val_batches",
           "bytes_per_token", "synthetic_corpus"]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    path: str  # a corpus directory (train.bin, val.bin, meta.json)
    seq_len: int
    batch_size: int
    seed: int = 0
    val_tokens: int = 2**17  # rounded down to whole windows of seq_len

    def __post_init__(self):
        for name in ("seq_len", "batch_size", "val_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"data.{name} must be a positive int, got {value!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"data.seed must be an int in [0, 2**63), got {self.seed!r}")
        if self.val_tokens < self.seq_len:
            raise ValueError(f"data.val_tokens ({self.val_tokens}) must be >= data.seq_len ({self.seq_len})")


class WindowReader:
    """Maps window ids [B] to {"inputs", "targets"}: int32 [B, T]. Pickles by path, not by data."""

    def __init__(self, shard: str | os.PathLike, seq_len: int):
        self.shard, self.seq_len = Path(shard), seq_len
        self._tokens = read_shard(shard)
        self._offsets = np.arange(seq_len + 1)
        self.n_tokens = len(self._tokens)
        self.n_windows = (self.n_tokens - 1) // seq_len

    def __reduce__(self):
        return WindowReader, (self.shard, self.seq_len)

    def __call__(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        rows = self._tokens[np.asarray(windows)[:, None] * self.seq_len + self._offsets].astype(np.int32)
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:]}


def train_windows(cfg: DataConfig) -> int:
    """How many windows one epoch of the train split holds."""
    return WindowReader(Path(cfg.path) / "train.bin", cfg.seq_len).n_windows


def _grain_seed(seed: int) -> int:
    digest = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=4, person=b"lowprec.data").digest()
    return int.from_bytes(digest, "little")


def train_dataset(cfg: DataConfig) -> grain.MapDataset:
    """An endless MapDataset: item `step` -> {"inputs": int32[B, T], "targets": int32[B, T]}."""
    reader = WindowReader(Path(cfg.path) / "train.bin", cfg.seq_len)
    n = reader.n_windows
    if n < cfg.batch_size:
        raise ValueError(f"{cfg.path}: the train split has {n} windows of seq_len {cfg.seq_len}, fewer than "
                         f"data.batch_size {cfg.batch_size}")
    return (
        grain.MapDataset.range(n)
        .shuffle(seed=_grain_seed(cfg.seed))
        .repeat(None)
        .batch(cfg.batch_size, drop_remainder=True)
        .map(reader)
    )


def train_iterator(cfg: DataConfig, *, num_threads: int = 1, prefetch: int = 4) -> grain.DatasetIterator:
    """Iterate train_dataset from step 0 with light prefetching; checkpoint via get_state/set_state.

    Plain `iter(train_dataset(cfg))` works too but uses Grain's default read options (16 threads,
    500 batches ahead), which compete with the training step for CPU on small machines.
    """
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(train_dataset(cfg).to_iter_dataset(options))


def epoch_of_step(cfg: DataConfig, step: int) -> float:
    """Epochs over the train split consumed by the first `step` steps."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step * cfg.batch_size / train_windows(cfg)


def val_batches(cfg: DataConfig) -> list[dict[str, np.ndarray]]:
    """The first val_tokens // seq_len windows of the val split, in order, cfg.batch_size per batch.

    The windows depend only on (path, seq_len, val_tokens); the last batch may be smaller, so
    average losses weighted by batch rows.
    """
    reader = WindowReader(Path(cfg.path) / "val.bin", cfg.seq_len)
    n = cfg.val_tokens // cfg.seq_len
    if n > reader.n_windows:
        raise ValueError(f"data.val_tokens={cfg.val_tokens} needs {n} windows of seq_len {cfg.seq_len}, but the "
                         f"val split of {cfg.path} has {reader.n_tokens} tokens ({reader.n_windows} windows)")
    return [reader(np.arange(i, min(i + cfg.batch_size, n))) for i in range(0, n, cfg.batch_size)]


def bytes_per_token(corpus_dir: str | os.PathLike, split: str = "val") -> float:
    """UTF-8 bytes per token of a split: bpb = loss_nats_per_token / bytes_per_token / ln 2."""
    return CorpusInfo.read(corpus_dir).split(split).bytes_per_token
