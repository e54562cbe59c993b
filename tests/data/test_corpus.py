from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from lowprec.data.corpus import (
    CorpusInfo, build_shards, corpus_tokenizer, default_corpus_dir, ensure_default_corpus,
)
from lowprec.data.shards import read_shard

from ._docs import make_docs


def split_docs(corpus_dir, split: str) -> list[str]:
    """Decode a split back into its documents (each ends with EOS), independently of the builder."""
    tok = corpus_tokenizer(corpus_dir)
    ids = np.asarray(read_shard(corpus_dir / f"{split}.bin"))
    assert ids[-1] == tok.eos_id
    ends = np.flatnonzero(ids == tok.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(ids[s:e]) for s, e in zip(starts, ends)]


def test_build_from_directory(text_dir, tmp_path):
    out = tmp_path / "corpus"
    info = build_shards(out, source="files", paths=[text_dir], val_fraction=0.3)
    train, val = split_docs(out, "train"), split_docs(out, "val")
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(make_docs(60))  # deduplicated, hidden file skipped
    assert 5 < len(val) < 35
    for name, docs in (("train", train), ("val", val)):
        s = info.split(name)
        n_bytes = sum(len(d.encode()) for d in docs)
        assert (s.n_files, s.n_bytes, s.n_tokens) == (len(docs), n_bytes, n_bytes + len(docs))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_files"] == 60 and meta["n_duplicates"] == 1 and meta["tokenizer"] == "bytes"
    assert meta["val"]["bytes_per_token"] == info.val.n_bytes / info.val.n_tokens
    assert CorpusInfo.read(out) == info


def test_build_is_deterministic_and_seeded(text_dir, tmp_path):
    a = build_shards(tmp_path / "a", source="files", paths=[text_dir], val_fraction=0.3)
    b = build_shards(tmp_path / "b", source="files", paths=[str(text_dir / "*" / "*.txt")], val_fraction=0.3)
    for f in ("train.bin", "val.bin"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert a.fingerprint == b.fingerprint
    build_shards(tmp_path / "c", source="files", paths=[text_dir], val_fraction=0.3, seed=1)
    assert set(split_docs(tmp_path / "c", "val")) != set(split_docs(tmp_path / "a", "val"))


def test_max_bytes_takes_a_prefix_of_the_hash_order(text_dir, tmp_path):
    sizes = {}
    docs = {}
    for cap in (1000, 2000, 3500):
        info = build_shards(tmp_path / str(cap), source="files", paths=[text_dir], val_fraction=0.2, max_bytes=cap)
        sizes[cap] = info.train.n_bytes + info.val.n_bytes
        docs[cap] = set(split_docs(tmp_path / str(cap), "train") + split_docs(tmp_path / str(cap), "val"))
        assert sizes[cap] <= cap
        assert cap - sizes[cap] < max(len(d.encode()) for d in make_docs(60))  # stops at the first misfit
    assert docs[1000] < docs[2000] < docs[3500]


def test_build_from_jsonl_and_skips(tmp_path):
    rows = [{"text": d, "n": i} for i, d in enumerate(make_docs(40))] + [{"text": "", "n": 99}, {"text": "a\x00b"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = build_shards(tmp_path / "c", source="jsonl", paths=[tmp_path / "d.jsonl"], jsonl_field="text",
                        val_fraction=0.25)
    assert info.n_files == 40 and info.skipped == {"empty": 1, "binary (NUL byte) or not UTF-8": 1}
    assert sorted(split_docs(tmp_path / "c", "train") + split_docs(tmp_path / "c", "val")) == sorted(make_docs(40))


def test_binary_files_are_counted_as_skipped(text_dir, tmp_path):
    (text_dir / "blob.bin").write_bytes(bytes(range(256)))
    info = build_shards(tmp_path / "c", source="files", paths=[text_dir], val_fraction=0.3)
    assert info.skipped == {"binary (NUL byte) or not UTF-8": 1} and info.n_files == 60


def test_bpe_corpus(text_dir, tmp_path):
    info = build_shards(tmp_path / "bpe", source="files", paths=[text_dir], tokenizer="bpe", bpe_vocab=300,
                        val_fraction=0.3)
    assert info.tokenizer == "tokenizer.json" and info.vocab_size == 300 and info.tokenizer_name == "bpe-300"
    assert info.train.bytes_per_token > 1.5
    assert sorted(split_docs(tmp_path / "bpe", "train") + split_docs(tmp_path / "bpe", "val")) == sorted(make_docs(60))
    # a saved tokenizer given by path is copied in and gives the same tokens
    again = build_shards(tmp_path / "again", source="files", paths=[text_dir],
                         tokenizer=tmp_path / "bpe" / "tokenizer.json", val_fraction=0.3)
    assert again.tokenizer == "tokenizer.json"
    assert (tmp_path / "again" / "train.bin").read_bytes() == (tmp_path / "bpe" / "train.bin").read_bytes()
    # rebuilding in place: with the corpus's own tokenizer, then with bytes (the BPE file goes away)
    build_shards(tmp_path / "bpe", source="files", paths=[text_dir], tokenizer=tmp_path / "bpe", val_fraction=0.3)
    assert (tmp_path / "again" / "train.bin").read_bytes() == (tmp_path / "bpe" / "train.bin").read_bytes()
    build_shards(tmp_path / "bpe", source="files", paths=[text_dir], val_fraction=0.3)
    assert not (tmp_path / "bpe" / "tokenizer.json").exists() and corpus_tokenizer(tmp_path / "bpe").name == "bytes"


def test_corpus_info_read_errors(text_dir, tmp_path):
    with pytest.raises(ValueError, match="meta.json is missing"):
        CorpusInfo.read(tmp_path)
    build_shards(tmp_path / "c", source="files", paths=[text_dir], val_fraction=0.3)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    del meta["vocab_size"]
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="malformed corpus metadata"):
        CorpusInfo.read(tmp_path / "c")


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_fraction=0.0), "val_fraction must be in"),
    (dict(val_fraction=1.0), "val_fraction must be in"),
    (dict(max_bytes=0), "max_bytes must be"),
    (dict(seed=-1), "seed must be"),
    (dict(seed=2**63), "seed must be"),
    (dict(bpe_vocab=512), "bpe_vocab is only used"),
    (dict(tokenizer="gpt2"), "'bytes' or a path"),
    (dict(max_bytes=60), "split is empty"),
])
def test_build_rejects_bad_arguments(text_dir, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_shards(tmp_path / "c", source="files", paths=[text_dir], **kwargs)


@pytest.fixture(scope="module")
def python_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("py") / "corpus"
    return out, build_shards(out, source="python", max_bytes=300_000, val_fraction=0.2)


def test_python_corpus_has_disjoint_splits(python_corpus):
    out, info = python_corpus
    train, val = split_docs(out, "train"), split_docs(out, "val")
    digest = lambda d: hashlib.sha256(d.encode()).digest()  # noqa: E731
    train_h, val_h = {digest(d) for d in train}, {digest(d) for d in val}
    assert len(train_h) == len(train) and len(val_h) == len(val)  # deduplicated
    assert not train_h & val_h and val
    assert 250_000 < info.train.n_bytes + info.val.n_bytes <= 300_000
    assert info.source.startswith("python sources")


def test_python_corpus_is_deterministic(python_corpus, tmp_path):
    out, info = python_corpus
    assert build_shards(tmp_path / "again", source="python", max_bytes=300_000, val_fraction=0.2) == info
    for f in ("train.bin", "val.bin", "meta.json"):
        assert (tmp_path / "again" / f).read_bytes() == (out / f).read_bytes()


def test_ensure_default_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWPREC_DATA", str(tmp_path))
    out = ensure_default_corpus(2_000_000)
    assert out == default_corpus_dir(2_000_000) == tmp_path / "corpus" / "python-bytes-2000000"
    info = CorpusInfo.read(out)
    assert (info.max_bytes, info.val_fraction, info.seed, info.tokenizer) == (2_000_000, 0.05, 0, "bytes")
    assert info.val.n_files > 0
    stamp = (out / "meta.json").stat().st_mtime_ns
    assert ensure_default_corpus(2_000_000) == out and (out / "meta.json").stat().st_mtime_ns == stamp
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp dirs left behind
