"""Token shard files: a 256-int32 header, then the tokens as little-endian uint16 or uint32.

Header words: 0 magic, 1 version, 2 n_tokens, 3 bytes per token (2 = uint16, 4 = uint32),
4 vocab_size, the rest zero. Reading memory-maps the tokens, so a shard costs no RAM until read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x4C505254  # "LPRT"
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class ShardHeader:
    """The decoded header of a shard file."""

    n_tokens: int
    dtype: np.dtype
    vocab_size: int


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest on-disk dtype for ids in [0, vocab_size): uint16 up to 65536, else uint32."""
    if not 0 < vocab_size <= _INT32_MAX:
        raise ValueError(f"vocab_size must be in [1, {_INT32_MAX}], got {vocab_size}")
    return _DTYPES[2] if vocab_size <= 2**16 else _DTYPES[4]


def write_shard(path: str | os.PathLike, tokens: np.ndarray, vocab_size: int) -> None:
    """Write a 1-D array of token ids in [0, vocab_size) atomically (temp file, then rename)."""
    dtype = token_dtype(vocab_size)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError(f"tokens must be a non-empty 1-D array, got shape {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must have an integer dtype, got {tokens.dtype}")
    if tokens.size > _INT32_MAX:
        raise ValueError(f"a shard holds at most {_INT32_MAX} tokens, got {tokens.size}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}), got range [{lo}, {hi}]")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[:5] = (MAGIC, VERSION, tokens.size, dtype.itemsize, vocab_size)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(dtype, copy=False).tobytes())
    os.replace(tmp, path)


def read_shard_header(path: str | os.PathLike) -> ShardHeader:
    """Read and validate a shard's header against the file size."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"token shard {path} does not exist")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ValueError(f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_WORDS)
    magic, version, n_tokens, code, vocab_size = (int(x) for x in header[:5])
    if magic != MAGIC:
        raise ValueError(f"{path}: not a lowprec token shard (magic {magic:#x}, expected {MAGIC:#x})")
    if version != VERSION:
        raise ValueError(f"{path}: shard version {version} is not supported (only {VERSION})")
    if code not in _DTYPES:
        raise ValueError(f"{path}: dtype code {code} is invalid; valid codes: 2 (uint16), 4 (uint32)")
    if vocab_size <= 0 or n_tokens <= 0:
        raise ValueError(f"{path}: header has vocab_size={vocab_size}, n_tokens={n_tokens}; both must be > 0")
    if _DTYPES[code] != token_dtype(vocab_size):
        raise ValueError(f"{path}: dtype code {code} does not match vocab_size {vocab_size}")
    expected = HEADER_BYTES + n_tokens * code
    if size != expected:
        raise ValueError(f"{path}: file has {size} bytes, header implies {expected} ({n_tokens} tokens)")
    return ShardHeader(n_tokens=n_tokens, dtype=_DTYPES[code], vocab_size=vocab_size)


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens read-only (dtype uint16 or uint32) after validating its header."""
    header = read_shard_header(path)
    return np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER_BYTES, shape=(header.n_tokens,))
