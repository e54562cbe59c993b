"""Run outputs: human log lines (stdout + log.txt), metrics.jsonl rows, optional TensorBoard, tqdm bar."""
from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path

from tqdm import tqdm


def _fmt_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_line(row: dict, total_steps: int, mfu_text: str) -> str:
    """`step 1200/5000 | loss 3.412 | lr 6.00e-04 | gnorm 0.87 | tok/s 1.23M | MFU 41.2% | 0.213 s/step | ETA 0:13:05`"""
    eta = datetime.timedelta(seconds=round(row["s_per_step"] * (total_steps - row["step"])))
    return (f"step {row['step']}/{total_steps} | loss {row['loss']:.4f} | lr {row['lr']:.2e} | gnorm {row['gnorm']:.3g}"
            f" | tok/s {_fmt_count(row['tok_per_s'])} | {mfu_text} | {row['s_per_step']:.3f} s/step | ETA {eta}")


def _json_value(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


class RunLog:
    """Writes to run_dir/{log.txt, metrics.jsonl} (appending, for resumed runs) and stdout."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, tensorboard: bool):
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.log_file = open(run_dir / "log.txt", "a")
        self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True) if sys.stdout.isatty() else None
        self.tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                self.print("tensorboard: tensorboardX is not installed; skipping TensorBoard output")
            else:
                self.tb = SummaryWriter(str(run_dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop metrics rows beyond `step` (left by a run killed after its last checkpoint)."""
        if self.metrics_path.exists():
            rows = [line for line in self.metrics_path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= step]
            self.metrics_path.write_text("".join(r + "\n" for r in rows))

    def print(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)
        self.log_file.write(text + "\n")
        self.log_file.flush()

    def row(self, row: dict) -> None:
        """Append one metrics row (non-finite floats become null, as JSON has no NaN)."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.log_file.close()
