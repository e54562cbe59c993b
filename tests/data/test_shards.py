from __future__ import annotations

import struct

import numpy as np
import pytest

from lowprec.data.shards import HEADER_BYTES, MAGIC, read_shard, read_shard_header, write_shard


@pytest.mark.parametrize("vocab_size, dtype", [(256, "<u2"), (65536, "<u2"), (65537, "<u4"), (2**31 - 1, "<u4")])
def test_round_trip_and_layout(tmp_path, vocab_size, dtype):
    tokens = np.array([0, 1, vocab_size - 1, 7, vocab_size // 2], dtype=np.int64)
    path = tmp_path / "x.bin"
    write_shard(path, tokens, vocab_size)
    got = read_shard(path)
    assert got.dtype == np.dtype(dtype) and isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, tokens)
    # independent parse of the bytes: 256 little-endian int32, then little-endian tokens
    raw = path.read_bytes()
    header = struct.unpack("<256i", raw[:HEADER_BYTES])
    assert header[:5] == (MAGIC, 1, 5, np.dtype(dtype).itemsize, vocab_size)
    assert header[5:] == (0,) * 251
    fmt = "<5H" if dtype == "<u2" else "<5I"
    assert struct.unpack(fmt, raw[HEADER_BYTES:]) == tuple(tokens.tolist())
    h = read_shard_header(path)
    assert (h.n_tokens, h.vocab_size, h.dtype) == (5, vocab_size, np.dtype(dtype))


@pytest.mark.parametrize("tokens, vocab_size, match", [
    (np.array([0, 256]), 256, r"\[0, 256\)"),
    (np.array([-1, 3]), 256, r"\[0, 256\)"),
    (np.array([1.0, 2.0]), 256, "integer dtype"),
    (np.zeros((2, 2), int), 256, "1-D"),
    (np.zeros(0, int), 256, "non-empty"),
    (np.array([0]), 0, "vocab_size"),
])
def test_write_rejects_bad_input(tmp_path, tokens, vocab_size, match):
    with pytest.raises(ValueError, match=match):
        write_shard(tmp_path / "x.bin", tokens, vocab_size)
    assert not (tmp_path / "x.bin").exists()


def _corrupt(path, word, value):
    raw = bytearray(path.read_bytes())
    raw[4 * word:4 * word + 4] = struct.pack("<i", value)
    path.write_bytes(bytes(raw))


def test_read_rejects_bad_files(tmp_path):
    path = tmp_path / "x.bin"
    with pytest.raises(ValueError, match="does not exist"):
        read_shard(path)
    path.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="shorter than"):
        read_shard(path)
    cases = [(0, 12345, "not a lowprec token shard"), (1, 2, "version 2"), (3, 3, "dtype code 3 is invalid"),
             (3, 4, "does not match vocab_size"), (2, 6, "header implies"), (4, 0, "vocab_size=0")]
    for word, value, match in cases:
        write_shard(path, np.arange(5), 256)
        _corrupt(path, word, value)
        with pytest.raises(ValueError, match=match):
            read_shard(path)
    write_shard(path, np.arange(5), 256)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="header implies"):
        read_shard(path)
