"""The demo's reporting helpers (the whole demo runs in `make demo`, not in the test suite)."""
import json

from lowprec import demo


def test_comparison_table_and_loss_plot(tmp_path):
    summaries = []
    for recipe in ("bf16", "nvfp4"):
        run = tmp_path / "train" / recipe
        run.mkdir(parents=True)
        rows = [{"step": s, "loss": 3.0 - s / 100} for s in (25, 50)] + [{"step": 50, "val_loss": 2.6}]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        summaries.append({"recipe": recipe, "status": "ok", "final_val_loss": 2.6, "final_val_bpb": 3.75,
                          "tokens_per_s": 1234.5, "wall_s": 10.0})
    table = demo.comparison_table(summaries)
    assert table.splitlines()[0].split() == ["recipe", "status", "val_loss", "val_bpb", "tokens/s", "wall_s"]
    assert table.splitlines()[-1].split() == ["nvfp4", "ok", "2.6000", "3.7500", "1234", "10"]
    png = demo.plot_losses(tmp_path, ["bf16", "nvfp4"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
