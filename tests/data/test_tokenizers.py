from __future__ import annotations

import numpy as np
import pytest

from lowprec.data.tokenizers import EOS_TOKEN, BPETokenizer, ByteTokenizer, load_tokenizer

from ._docs import make_docs

TRICKY = "héllo  wörld\n\t\r\n日本語 🙂 \x00 <|endoftext|> trailing  "


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(TRICKY)
    assert ids.dtype == np.int32
    assert ids.tolist() == list(TRICKY.encode("utf-8"))
    assert tok.decode(ids) == TRICKY
    assert tok.decode(list(ids)) == TRICKY
    assert (tok.name, tok.vocab_size, tok.eos_id) == ("bytes", 256, 0)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode([65, 256])


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(make_docs(200), 400)


def test_bpe_train_encode_decode(bpe):
    assert (bpe.vocab_size, bpe.name, bpe.eos_id) == (400, "bpe-400", 0)
    for text in make_docs(200)[:20] + [TRICKY, ""]:
        ids = bpe.encode(text)
        assert ids.dtype == np.int32 and (ids.size == 0 or ids.max() < 400)
        assert bpe.decode(ids) == text
    # learned merges compress the training distribution
    doc = make_docs(200)[100]
    assert len(bpe.encode(doc)) < 0.5 * len(doc.encode("utf-8"))
    # a literal "<|endoftext|>" in text is text, not the EOS id; EOS decodes to its string
    assert 0 not in bpe.encode(TRICKY).tolist()
    assert bpe.decode([0]) == EOS_TOKEN
    batch = bpe.encode_batch([TRICKY, doc])
    assert [b.tolist() for b in batch] == [bpe.encode(TRICKY).tolist(), bpe.encode(doc).tolist()]


def test_bpe_save_load_and_determinism(bpe, tmp_path):
    bpe.save(tmp_path / "tokenizer.json")
    again = BPETokenizer.train(make_docs(200), 400)
    again.save(tmp_path / "again.json")
    assert (tmp_path / "tokenizer.json").read_bytes() == (tmp_path / "again.json").read_bytes()
    for spec in (tmp_path / "tokenizer.json", tmp_path, str(tmp_path)):
        loaded = load_tokenizer(spec)
        assert isinstance(loaded, BPETokenizer) and loaded.vocab_size == 400
        assert loaded.encode(TRICKY).tolist() == bpe.encode(TRICKY).tolist()


def test_bpe_and_spec_errors(tmp_path):
    assert isinstance(load_tokenizer("bytes"), ByteTokenizer)
    with pytest.raises(ValueError, match="'bytes' or a path"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=">= 258"):
        BPETokenizer.train(["abc abc"], 257)
    with pytest.raises(ValueError, match="too large for this corpus"):
        BPETokenizer.train(["abc abc abc"], 5000)
