"""Where corpus documents come from: installed Python sources, text files, or a JSONL field.

A source yields `Candidate`s (content digest, size, and how to get the text). Candidates are
deduplicated by SHA-256 of the UTF-8 content; files are read twice (hash, then text of the
selected ones) so capping a large pool needs no memory for the unselected files.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

SOURCES = ("python", "files", "jsonl")


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One document before selection: a whole file, or one JSONL record (which carries its text)."""

    digest: bytes
    n_bytes: int
    path: Path
    text: str | None = None

    def read(self) -> str | None:
        """The text, or None when it is not UTF-8 or holds a NUL (binary; NUL is the byte-level EOS).

        A file is re-read and must still match its digest.
        """
        text = self.text
        if text is None:
            data = self.path.read_bytes()
            if hashlib.sha256(data).digest() != self.digest:
                raise ValueError(f"{self.path} changed while the corpus was being built")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return None
        return None if "\x00" in text else text


@dataclass(frozen=True, kw_only=True)
class Pool:
    """Deduplicated candidates of a source, with a description for meta.json."""

    candidates: tuple[Candidate, ...]
    n_duplicates: int
    description: str


def python_source_roots() -> tuple[Path, ...]:
    """The running interpreter's standard library and site-packages (pure and platform)."""
    paths = sysconfig.get_paths()
    roots = {Path(paths[k]).resolve() for k in ("stdlib", "purelib", "platlib")}
    return tuple(sorted(r for r in roots if r.is_dir()))


def _walk(root: str | os.PathLike, suffix: str) -> list[str]:
    """Regular files under `root` ending in `suffix`, skipping hidden entries, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if f.endswith(suffix) and not f.startswith(".")]
    return sorted(found)


def resolve_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, directories (recursively) and glob patterns into a sorted list of files."""
    if not paths:
        raise ValueError("paths: at least one file, directory or glob is required for this source")
    files: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_file():
            files.add(p.resolve())
        elif p.is_dir():
            files.update(Path(f).resolve() for f in _walk(p, ""))
        else:
            matches = [Path(m) for m in glob.glob(str(p), recursive=True)]
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise ValueError(f"paths: {str(p)!r} is not a file or directory and matches no file")
            files.update(m.resolve() for m in matches)
    return sorted(files)


def _dedup(candidates: list[Candidate]) -> tuple[tuple[Candidate, ...], int]:
    unique: dict[bytes, Candidate] = {}
    for c in candidates:
        unique.setdefault(c.digest, c)
    return tuple(unique.values()), len(candidates) - len(unique)


def _file_candidates(files: list[Path]) -> list[Candidate]:
    out = []
    for f in files:
        data = f.read_bytes()
        out.append(Candidate(digest=hashlib.sha256(data).digest(), n_bytes=len(data), path=f))
    return out


def _jsonl_candidates(files: list[Path], field: str) -> list[Candidate]:
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{f}:{line_no}: invalid JSON ({e.msg})") from None
                if not isinstance(record, dict) or field not in record:
                    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise ValueError(f"{f}:{line_no}: jsonl_field {field!r} missing; record has {keys}")
                text = record[field]
                if not isinstance(text, str):
                    raise ValueError(f"{f}:{line_no}: jsonl_field {field!r} is {type(text).__name__}, not a string")
                data = text.encode("utf-8")
                out.append(Candidate(digest=hashlib.sha256(data).digest(), n_bytes=len(data), path=f, text=text))
    return out


def collect(source: str, paths: Sequence[str | os.PathLike] = (), jsonl_field: str | None = None) -> Pool:
    """Gather and deduplicate the candidate documents of `source` ("python", "files" or "jsonl")."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if (jsonl_field is not None) != (source == "jsonl"):
        raise ValueError(f"jsonl_field is required for source 'jsonl' and only for it (source={source!r}, "
                         f"jsonl_field={jsonl_field!r})")
    if source == "python":
        if paths:
            raise ValueError(f"paths must be empty for source 'python' (it reads installed sources), got {list(paths)}")
        roots = python_source_roots()
        files = sorted({Path(f) for r in roots for f in _walk(r, ".py")})  # roots are resolved
        candidates = _file_candidates(files)
        version = ".".join(map(str, sys.version_info[:3]))
        description = f"python sources (Python {version}): " + ", ".join(map(str, roots))
    elif source == "files":
        files = resolve_paths(paths)
        candidates = _file_candidates(files)
        description = f"files: {', '.join(map(str, paths))}"
    else:
        files = resolve_paths(paths)
        candidates = _jsonl_candidates(files, jsonl_field)
        description = f"jsonl field {jsonl_field!r}: {', '.join(map(str, paths))}"
    unique, n_duplicates = _dedup(candidates)
    return Pool(candidates=unique, n_duplicates=n_duplicates, description=description)
