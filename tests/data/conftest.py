"""Fixtures for the data-layer tests: small text trees made on the fly."""
from __future__ import annotations

import pytest

from ._docs import make_docs


@pytest.fixture
def text_dir(tmp_path):
    """tmp/texts with 60 .txt files in two directories, plus one duplicate and a hidden file."""
    root = tmp_path / "texts"
    for i, doc in enumerate(make_docs(60)):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.txt").write_text(doc, encoding="utf-8")
    (root / "a" / "copy_of_000.txt").write_text(make_docs(1)[0], encoding="utf-8")
    (root / ".hidden.txt").write_text("hidden, never read\n", encoding="utf-8")
    return root
