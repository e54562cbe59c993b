"""Small deterministic documents shared by the data-layer tests."""
from __future__ import annotations


def make_docs(n: int) -> list[str]:
    """n distinct small documents, some non-ASCII."""
    return [f"# doc {i}\ndef f{i}(x):\n    return x * {i} + {i * i}  # é ü 日本 {'ab' * (i % 7)}\n"
            for i in range(n)]
