from __future__ import annotations

import json

from lowprec.cli import main


def test_build_files_prints_summary(text_dir, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["data", "build", "--source", "files", str(text_dir), "--out", str(out), "--val-fraction", "0.3"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert f"corpus     {out}" in printed
    assert "documents  60 (duplicates dropped 1; skipped: none)" in printed
    for split in ("train", "val"):
        s = meta[split]
        row = f"{split:<6}{s['n_files']:>8}{s['n_bytes']:>14,}{s['n_tokens']:>14,}{s['bytes_per_token']:>13.4f}"
        assert row in printed.splitlines()


def test_build_jsonl_with_bpe(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"body": f"line {i} " * (i % 9 + 1)}) + "\n"
                                              for i in range(80)))
    args = ["data", "build", "--source", "jsonl", str(tmp_path / "d.jsonl"), "--jsonl-field", "body",
            "--tokenizer", "bpe", "--bpe-vocab", "270", "--out", str(tmp_path / "c"), "--val-fraction", "0.2"]
    assert main(args) == 0
    assert "tokenizer  bpe-270 (vocab 270)" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(text_dir, tmp_path, capsys):
    assert main(["data", "build", "--source", "files", str(text_dir)]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["data", "build", "--source", "jsonl", str(text_dir), "--out", str(tmp_path / "c")]) == 2
    assert "jsonl_field is required" in capsys.readouterr().err
