"""Synthetic token corpora for tests: a learnable low-entropy Markov chain, or i.i.d. uniform tokens.

"markov": every token has 4 successors drawn at random, taken with probabilities BRANCH_PROBS,
so the next-token entropy is at most H(BRANCH_PROBS) = 1.32 bits, far below log2(vocab_size):
a bigram model can learn it and the loss visibly drops. "uniform" cannot be learned (loss stays
at ln(vocab_size)), which suits throughput tests. The Markov sequence is up to MAX_CHAINS independent
chains of >= MIN_CHAIN tokens laid end to end, so generation is fast and under 0.1% of
transitions (the seams) break the chain. Train and val are consecutive pieces of one
sequence. There is no text, so n_bytes is set to n_tokens: bits per byte reads as bits per token.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lowprec.data.corpus import CorpusInfo, SplitInfo
from lowprec.data.shards import write_shard

KINDS = ("markov", "uniform")
BRANCH_PROBS = (0.7, 0.15, 0.1, 0.05)
MAX_CHAINS, MIN_CHAIN = 1024, 1024
_BLOCK = 2**16


def _uniform(key: jax.Array, n: int) -> np.ndarray:
    """n floats k / 2**32 in [0, 1) from jax.random.bits, drawn in fixed-size blocks (one compile)."""
    blocks = [jax.random.bits(jax.random.fold_in(key, b), (_BLOCK,), jnp.uint32) for b in range(-(-n // _BLOCK))]
    return np.concatenate([np.asarray(x) for x in blocks])[:n] / 2.0**32


def _markov(key: jax.Array, n: int, vocab_size: int) -> np.ndarray:
    """Independent chains of >= MIN_CHAIN steps (at most MAX_CHAINS of them) walked in lockstep."""
    chains = max(1, min(MAX_CHAINS, n // MIN_CHAIN))
    length = -(-n // chains)
    k_succ, k_start, k_branch = jax.random.split(key, 3)
    successors = (_uniform(k_succ, vocab_size * len(BRANCH_PROBS)) * vocab_size).astype(np.int32)
    successors = successors.reshape(vocab_size, len(BRANCH_PROBS))
    cdf = np.cumsum(BRANCH_PROBS)[:-1]
    branches = np.searchsorted(cdf, _uniform(k_branch, (length - 1) * chains), side="right")
    branches = branches.reshape(length - 1, chains)
    walk = np.empty((length, chains), dtype=np.int32)
    walk[0] = (_uniform(k_start, chains) * vocab_size).astype(np.int32)
    for i in range(1, length):
        walk[i] = successors[walk[i - 1], branches[i - 1]]
    return walk.T.reshape(-1)[:n]


def synthetic_tokens(*, n_tokens: int, vocab_size: int, seed: int, kind: str = "markov") -> np.ndarray:
    """`n_tokens` int32 ids from source `kind`, a pure function of (n_tokens, vocab_size, seed, kind)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n_tokens < 2 or vocab_size < 2:
        raise ValueError(f"n_tokens and vocab_size must be >= 2, got n_tokens={n_tokens}, vocab_size={vocab_size}")
    key = jax.random.key(seed)
    if kind == "markov":
        return _markov(key, n_tokens, vocab_size)
    return (_uniform(key, n_tokens) * vocab_size).astype(np.int32)


def synthetic_corpus(
    out_dir: str | os.PathLike, *, n_tokens: int, vocab_size: int, seed: int, kind: str = "markov",
    val_tokens: int | None = None,
) -> Path:
    """Write a corpus dir (train.bin: n_tokens, val.bin: val_tokens, default n_tokens // 10, meta.json)."""
    val_tokens = n_tokens // 10 if val_tokens is None else val_tokens
    if val_tokens < 2:
        raise ValueError(f"val_tokens must be >= 2, got {val_tokens} (default is n_tokens // 10)")
    tokens = synthetic_tokens(n_tokens=n_tokens + val_tokens, vocab_size=vocab_size, seed=seed, kind=kind)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": tokens[:n_tokens], "val": tokens[n_tokens:]}
    for name, part in splits.items():
        write_shard(out / f"{name}.bin", part, vocab_size)
    info = CorpusInfo(
        source=f"synthetic {kind}: vocab_size={vocab_size}, seed={seed}", tokenizer="none",
        tokenizer_name=f"synthetic-{kind}", vocab_size=vocab_size, eos_id=None, seed=seed,
        val_fraction=None, max_bytes=None, n_duplicates=0, skipped={},
        fingerprint=hashlib.sha256(tokens.tobytes()).hexdigest(),
        **{name: SplitInfo(n_files=1, n_bytes=part.size, n_tokens=part.size) for name, part in splits.items()},
    )
    info.write(out)
    return out
