from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

import pytest

from lowprec.data.sources import collect, python_source_roots, resolve_paths

from ._docs import make_docs


def test_resolve_paths_files_dirs_globs(text_dir):
    every = resolve_paths([text_dir])
    assert len(every) == 61 and all(p.suffix == ".txt" and not p.name.startswith(".") for p in every)
    assert every == sorted(every)
    assert resolve_paths([str(text_dir / "a" / "*.txt")]) == sorted((text_dir / "a").resolve().glob("*.txt"))
    expected = [text_dir.resolve() / d / f"00{i}.txt" for d, i in sorted((("b", "a")[i % 2], i) for i in range(10))]
    assert resolve_paths([str(text_dir / "**" / "00*.txt")]) == expected
    one = text_dir / "a" / "001.txt"
    assert resolve_paths([one, one, text_dir / "a"]) == resolve_paths([text_dir / "a"])
    with pytest.raises(ValueError, match="matches no file"):
        resolve_paths([text_dir / "nothing*.md"])
    with pytest.raises(ValueError, match="at least one"):
        resolve_paths([])


def test_collect_files_dedups_by_content(text_dir):
    pool = collect("files", [text_dir])
    assert pool.n_duplicates == 1 and len(pool.candidates) == 60
    digests = {c.digest for c in pool.candidates}
    assert digests == {hashlib.sha256(d.encode()).digest() for d in make_docs(60)}
    by_digest = {c.digest: c for c in pool.candidates}
    assert by_digest[hashlib.sha256(make_docs(1)[0].encode()).digest()].read() == make_docs(1)[0]


def test_collect_flags_binary_and_changed_files(tmp_path):
    (tmp_path / "bin.dat").write_bytes(b"ab\x00cd")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "nul.jsonl").write_text('{"t": "a\\u0000b"}\n')
    reads = {c.path.name: c.read() for c in collect("files", [tmp_path / "*.*"]).candidates}
    assert reads == {"bin.dat": None, "latin1.txt": None, "ok.txt": "fine", "nul.jsonl": '{"t": "a\\u0000b"}\n'}
    assert [c.read() for c in collect("jsonl", [tmp_path / "nul.jsonl"], jsonl_field="t").candidates] == [None]
    cand = next(c for c in collect("files", [tmp_path]).candidates if c.path.name == "ok.txt")
    (tmp_path / "ok.txt").write_text("edited")
    with pytest.raises(ValueError, match="changed"):
        cand.read()


def test_collect_jsonl(tmp_path):
    rows = [{"text": t, "id": i} for i, t in enumerate(["alpha", "beta", "alpha", "日本"])]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pool = collect("jsonl", [tmp_path / "*.jsonl"], jsonl_field="text")
    assert sorted(c.read() for c in pool.candidates) == ["alpha", "beta", "日本"]
    assert pool.n_duplicates == 1
    with pytest.raises(ValueError, match=r"a.jsonl:1: jsonl_field 'body' missing; record has \['id', 'text'\]"):
        collect("jsonl", [tmp_path / "a.jsonl"], jsonl_field="body")
    (tmp_path / "b.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(ValueError, match="b.jsonl:1: jsonl_field 'text' is int"):
        collect("jsonl", [tmp_path / "b.jsonl"], jsonl_field="text")
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="c.jsonl:2: invalid JSON"):
        collect("jsonl", [tmp_path / "c.jsonl"], jsonl_field="text")


def test_collect_rejects_bad_arguments(text_dir):
    with pytest.raises(ValueError, match=r"source must be one of \('python', 'files', 'jsonl'\)"):
        collect("web", [text_dir])
    with pytest.raises(ValueError, match="jsonl_field is required"):
        collect("jsonl", [text_dir])
    with pytest.raises(ValueError, match="jsonl_field is required"):
        collect("files", [text_dir], jsonl_field="text")
    with pytest.raises(ValueError, match="paths must be empty"):
        collect("python", [text_dir])


def test_python_source_roots():
    roots = python_source_roots()
    assert Path(sysconfig.get_paths()["stdlib"]).resolve() in roots
    assert Path(sysconfig.get_paths()["purelib"]).resolve() in roots
