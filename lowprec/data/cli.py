"""`lowprec data build`: build token shards from installed Python sources, text files or JSONL."""
from __future__ import annotations

import argparse
import sys

from lowprec.data.corpus import DEFAULT_BPE_VOCAB, SPLITS, CorpusInfo, build_shards, default_corpus_dir
from lowprec.data.sources import SOURCES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="build train.bin, val.bin and meta.json in a corpus directory")
    build.add_argument("paths", nargs="*", help="files, directories or globs (sources files and jsonl)")
    build.add_argument("--out", help="corpus directory (default for python+bytes: the cached default corpus dir)")
    build.add_argument("--source", choices=SOURCES, default="python")
    build.add_argument("--jsonl-field", help="the string field holding each record's text (source jsonl)")
    build.add_argument("--tokenizer", default="bytes", help="bytes, bpe, or a path to a saved BPE tokenizer")
    build.add_argument("--bpe-vocab", type=int, help=f"BPE vocabulary size (default {DEFAULT_BPE_VOCAB})")
    build.add_argument("--max-bytes", type=int, help="cap on text bytes, documents taken in hash order (default: all)")
    build.add_argument("--val-fraction", type=float, default=0.05, help="expected share of documents in val")
    build.add_argument("--seed", type=int, default=0, help="salts the document order and split hash")


def summary(info: CorpusInfo, out: str) -> str:
    """A short table of what was built."""
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(info.skipped.items())) or "none"
    lines = [
        f"corpus     {out}",
        f"source     {info.source}",
        f"tokenizer  {info.tokenizer_name} (vocab {info.vocab_size})",
        f"documents  {info.n_files} (duplicates dropped {info.n_duplicates}; skipped: {skipped})",
        f"{'split':<6}{'files':>8}{'bytes':>14}{'tokens':>14}{'bytes/token':>13}",
    ]
    for name in SPLITS:
        s = info.split(name)
        lines.append(f"{name:<6}{s.n_files:>8}{s.n_bytes:>14,}{s.n_tokens:>14,}{s.bytes_per_token:>13.4f}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    out = args.out
    is_default = (args.source, args.tokenizer, args.val_fraction, args.seed) == ("python", "bytes", 0.05, 0)
    if out is None and not is_default:
        print("error: --out is required unless building the default corpus (python sources, bytes tokenizer, "
              "default --val-fraction and --seed)", file=sys.stderr)
        return 2
    out = out or str(default_corpus_dir(args.max_bytes))
    try:
        info = build_shards(
            out, source=args.source, paths=args.paths, jsonl_field=args.jsonl_field, tokenizer=args.tokenizer,
            bpe_vocab=args.bpe_vocab, val_fraction=args.val_fraction, max_bytes=args.max_bytes, seed=args.seed,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(info, out))
    return 0
