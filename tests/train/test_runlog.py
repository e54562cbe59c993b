"""Run log line format and metrics.jsonl handling."""
import json
import math

from lowprec.train.runlog import RunLog, format_line


def test_format_line():
    row = {"step": 1200, "loss": 3.41234, "lr": 6e-4, "gnorm": 0.8712, "tok_per_s": 1.234e6, "s_per_step": 0.213}
    assert format_line(row, 5000, "MFU 41.2% (bf16 peak)") == (
        "step 1200/5000 | loss 3.4123 | lr 6.00e-04 | gnorm 0.871 | tok/s 1.23M | MFU 41.2% (bf16 peak) | "
        "0.213 s/step | ETA 0:13:29")  # 3800 steps x 0.213 s


def test_rows_truncate_and_nan(tmp_path, capsys):
    log = RunLog(tmp_path, total_steps=10, start_step=0, tensorboard=False)
    for step in (1, 2, 3):
        log.row({"step": step, "loss": math.nan if step == 3 else 1.0})
    log.print("hello")
    log.truncate_after(2)
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (tmp_path / "log.txt").read_text() == "hello\n" and "hello" in capsys.readouterr().out
    log = RunLog(tmp_path, total_steps=10, start_step=2, tensorboard=False)
    log.row({"step": 3, "loss": math.nan})
    log.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["loss"] is None


def test_tensorboard_is_optional(tmp_path, capsys):
    import importlib.util

    log = RunLog(tmp_path, total_steps=10, start_step=0, tensorboard=True)
    log.row({"step": 1, "loss": 2.0})
    log.close()
    if importlib.util.find_spec("tensorboardX") is None:
        assert "tensorboardX is not installed; skipping TensorBoard output" in capsys.readouterr().out
    else:
        assert any((tmp_path / "tb").iterdir())
