"""Tokenizers that work offline: raw UTF-8 bytes (the default) and a byte-level BPE trained locally.

Both are lossless on any string and end each document with an end-of-document id (`eos_id`), so
the model sees where unrelated documents meet. BPE uses HuggingFace `tokenizers` (Rust).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|endoftext|>"
BPE_FILE = "tokenizer.json"


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> np.ndarray: ...

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def _check_ids(ids: Iterable[int], vocab_size: int) -> np.ndarray:
    ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    if ids.size and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D sequence of integers, got {ids.dtype} shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must be in [0, {vocab_size}), got range [{ids.min()}, {ids.max()}]")
    return ids.astype(np.int64)


class ByteTokenizer:
    """One token per UTF-8 byte. NUL (0) doubles as end-of-document: text files never contain it."""

    name = "bytes"
    vocab_size = 256
    eos_id = 0

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(_check_ids(ids, 256).astype(np.uint8)).decode("utf-8", errors="replace")


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization) with `EOS_TOKEN` as id 0."""

    def __init__(self, hf: _HFTokenizer):
        if hf.token_to_id(EOS_TOKEN) != 0:
            raise ValueError(f"a lowprec BPE tokenizer must have {EOS_TOKEN!r} as id 0")
        hf.encode_special_tokens = True  # a literal "<|endoftext|>" in text is just text
        self._hf = hf
        self.vocab_size = hf.get_vocab_size()
        self.eos_id = 0
        self.name = f"bpe-{self.vocab_size}"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges on `texts` until the vocabulary (256 bytes + EOS + merges) has `vocab_size`."""
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + 2:
            raise ValueError(f"bpe vocab_size must be >= {len(alphabet) + 2} (bytes, EOS, a merge), got {vocab_size}")
        hf = _HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOS_TOKEN], initial_alphabet=alphabet,
            min_frequency=2, show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        if hf.get_vocab_size() != vocab_size:
            raise ValueError(
                f"bpe vocab_size {vocab_size} is too large for this corpus: training stopped at "
                f"{hf.get_vocab_size()} (no pair left occurring twice); use a smaller vocab or more text")
        return cls(hf)

    def save(self, path: str | os.PathLike) -> None:
        self._hf.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        return cls(_HFTokenizer.from_file(str(path)))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._hf.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return self._hf.decode(_check_ids(ids, self.vocab_size).tolist(), skip_special_tokens=False)


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """`"bytes"`, or a saved BPE tokenizer: its JSON file or a directory holding `tokenizer.json`."""
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec)
    if path.is_dir():
        path = path / BPE_FILE
    if not path.is_file():
        raise ValueError(f"tokenizer must be 'bytes' or a path to a saved BPE tokenizer ({BPE_FILE}); got {spec!r}")
    return BPETokenizer.load(path)
