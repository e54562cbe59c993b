"""Build a corpus directory from text: train.bin, val.bin, meta.json (and tokenizer.json for BPE).

Selection and split are pure functions of file contents and `seed`: each unique document gets a
keyed BLAKE2b hash of its SHA-256; its first 8 bytes order the documents (the `max_bytes` cap
takes a prefix of that order), the next 8 bytes give a uniform u in [0, 1) and the document goes
to validation iff u < val_fraction. So no document is in both splits and rebuilds are identical.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lowprec.data import sources
from lowprec.data.shards import write_shard
from lowprec.data.tokenizers import BPE_FILE, BPETokenizer, Tokenizer, load_tokenizer

SPLITS = ("train", "val")
META_FILE = "meta.json"
META_VERSION = 1
DEFAULT_BPE_VOCAB = 4096
DEFAULT_CORPUS_BYTES = 8 * 2**20


@dataclass(frozen=True, kw_only=True)
class SplitInfo:
    n_files: int
    n_bytes: int
    n_tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / self.n_tokens


@dataclass(frozen=True, kw_only=True)
class CorpusInfo:
    """The contents of meta.json: provenance, tokenizer and per-split counts."""

    source: str
    tokenizer: str  # "bytes", or a file name in the corpus dir (BPE); "none" for synthetic corpora
    tokenizer_name: str
    vocab_size: int
    eos_id: int | None
    seed: int
    val_fraction: float | None
    max_bytes: int | None
    n_duplicates: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, among documents examined
    fingerprint: str  # SHA-256 over the selected documents' digests, in order
    train: SplitInfo
    val: SplitInfo

    @property
    def n_files(self) -> int:
        return self.train.n_files + self.val.n_files

    def split(self, name: str) -> SplitInfo:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def to_json(self) -> dict:
        out = asdict(self)
        out["n_files"] = self.n_files
        for name in SPLITS:
            out[name]["bytes_per_token"] = self.split(name).bytes_per_token
        return {"meta_version": META_VERSION, **out}

    def write(self, corpus_dir: str | os.PathLike) -> None:
        (Path(corpus_dir) / META_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, corpus_dir: str | os.PathLike) -> CorpusInfo:
        path = Path(corpus_dir) / META_FILE
        if not path.is_file():
            raise ValueError(f"{corpus_dir} is not a corpus directory: {META_FILE} is missing")
        raw = json.loads(path.read_text())
        if raw.pop("meta_version", None) != META_VERSION:
            raise ValueError(f"{path}: meta_version must be {META_VERSION}")
        try:
            raw.pop("n_files")
            for name in SPLITS:
                raw[name].pop("bytes_per_token")
                raw[name] = SplitInfo(**raw[name])
            return cls(**raw)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed corpus metadata ({e})") from None


def corpus_tokenizer(corpus_dir: str | os.PathLike) -> Tokenizer:
    """The tokenizer a corpus was built with."""
    info = CorpusInfo.read(corpus_dir)
    if info.tokenizer == "none":
        raise ValueError(f"{corpus_dir} ({info.tokenizer_name}) has no tokenizer")
    return load_tokenizer("bytes" if info.tokenizer == "bytes" else Path(corpus_dir) / info.tokenizer)


def _order_and_u(digest: bytes, seed: int) -> tuple[bytes, float]:
    h = hashlib.blake2b(digest, digest_size=16, key=seed.to_bytes(8, "little")).digest()
    return h[:8], int.from_bytes(h[8:], "little") / 2.0**64


def _select(pool: sources.Pool, *, max_bytes: int | None, seed: int, val_fraction: float):
    """Documents in hash order up to the byte cap, as (texts, digests) per split, plus skip counts."""
    keyed = sorted(((_order_and_u(c.digest, seed), c) for c in pool.candidates), key=lambda kc: kc[0])
    texts: dict[str, list[str]] = {s: [] for s in SPLITS}
    digests: list[bytes] = []
    skipped: dict[str, int] = {}
    total = 0
    for (_, u), cand in keyed:
        if max_bytes is not None and total + cand.n_bytes > max_bytes:
            break
        text = cand.read()
        reason = "binary (NUL byte) or not UTF-8" if text is None else ("empty" if not text else None)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        texts["val" if u < val_fraction else "train"].append(text)
        digests.append(cand.digest)
        total += cand.n_bytes
    return texts, digests, skipped


def _encode(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    parts = [p for ids in tokenizer.encode_batch(texts) for p in (ids, eos)]
    return np.concatenate(parts)


def _validate(*, tokenizer, bpe_vocab, val_fraction, max_bytes, seed) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes}")
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if bpe_vocab is not None and tokenizer != "bpe":
        raise ValueError(f"bpe_vocab is only used with tokenizer='bpe', got tokenizer={tokenizer!r}")


def build_shards(
    out_dir: str | os.PathLike, *, source: str = "python", paths: Sequence[str | os.PathLike] = (),
    jsonl_field: str | None = None, tokenizer: str | os.PathLike = "bytes", bpe_vocab: int | None = None,
    val_fraction: float = 0.05, max_bytes: int | None = None, seed: int = 0,
) -> CorpusInfo:
    """Collect, deduplicate, select, split and tokenize documents into `out_dir`.

    tokenizer: "bytes"; "bpe" (trained on the train split, `bpe_vocab` entries, default 4096);
    or a path to a saved BPE tokenizer (copied into the corpus). Each document ends with EOS.
    """
    _validate(tokenizer=tokenizer, bpe_vocab=bpe_vocab, val_fraction=val_fraction, max_bytes=max_bytes, seed=seed)
    pool = sources.collect(source, paths, jsonl_field)
    texts, digests, skipped = _select(pool, max_bytes=max_bytes, seed=seed, val_fraction=val_fraction)
    for name in SPLITS:
        if not texts[name]:
            raise ValueError(f"the {name} split is empty ({len(digests)} usable documents, val_fraction="
                             f"{val_fraction}); documents are split whole, so give more of them or raise max_bytes")
    if tokenizer == "bpe":
        tok: Tokenizer = BPETokenizer.train(texts["train"], DEFAULT_BPE_VOCAB if bpe_vocab is None else bpe_vocab)
    else:
        tok = load_tokenizer(tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (META_FILE, BPE_FILE):  # a rebuild in place must not leave the old corpus's files
        (out / stale).unlink(missing_ok=True)
    if isinstance(tok, BPETokenizer):
        tok.save(out / BPE_FILE)
    splits = {}
    for name in SPLITS:
        tokens = _encode(tok, texts[name])
        write_shard(out / f"{name}.bin", tokens, tok.vocab_size)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts[name])
        splits[name] = SplitInfo(n_files=len(texts[name]), n_bytes=n_bytes, n_tokens=int(tokens.size))
    info = CorpusInfo(
        source=pool.description, tokenizer=BPE_FILE if isinstance(tok, BPETokenizer) else "bytes",
        tokenizer_name=tok.name, vocab_size=tok.vocab_size, eos_id=tok.eos_id, seed=seed,
        val_fraction=val_fraction, max_bytes=max_bytes, n_duplicates=pool.n_duplicates, skipped=skipped,
        fingerprint=hashlib.sha256(b"".join(digests)).hexdigest(), **splits,
    )
    info.write(out)  # written last: its presence marks a complete corpus
    return info


def default_corpus_dir(max_bytes: int | None = DEFAULT_CORPUS_BYTES) -> Path:
    """$LOWPREC_DATA (default ~/.cache/lowprec)/corpus/python-bytes-<max_bytes or 'all'>."""
    root = Path(os.environ.get("LOWPREC_DATA") or Path.home() / ".cache" / "lowprec")
    return root / "corpus" / f"python-bytes-{'all' if max_bytes is None else max_bytes}"


def ensure_default_corpus(max_bytes: int | None = DEFAULT_CORPUS_BYTES) -> Path:
    """Build the installed-Python-sources byte corpus once (atomically, safe under concurrency)."""
    target = default_corpus_dir(max_bytes)
    if (target / META_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is a shared cache
    try:
        build_shards(tmp, source="python", max_bytes=max_bytes)
        os.rename(tmp, target)
    except OSError as e:
        if not (target / META_FILE).is_file():  # else: lost a race to another builder, theirs is as good
            raise ValueError(f"{target} exists but holds no complete corpus (no {META_FILE}); remove it") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
