"""`lowprec demo` (the README's `make demo`): the main job on built-in defaults, CPU-sized.

1. Builds the default corpus (the Python sources installed on this machine, byte-level) if missing.
2. Trains one tiny LLaMA-style model per recipe (bf16, fp8_tensorwise, mxfp4, nvfp4) on it and
   prints a comparison table (final validation loss, bits per byte, tokens/s), plus a loss-curve PNG.
3. Runs a tiny scaling sweep (2 sizes x 2 token budgets x 2 recipes), fits the Chinchilla law per
   recipe, and writes the runs table, fit.json, a Markdown report and plots.
Everything lands under --out (default runs/demo); rerunning resumes and skips finished work.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEMO_RECIPES = ("bf16", "fp8_tensorwise", "mxfp4", "nvfp4")

# A ~0.2M-parameter byte-level model: small enough for 2 CPU cores, big enough to learn Python syntax.
DEMO_TRAIN = (
    "model.vocab_size=256", "model.seq_len=128", "model.n_layers=2", "model.d_model=96", "model.n_heads=4",
    "model.mlp_multiple_of=32", "data.batch_size=16", "data.val_tokens=32768", "optim.lr=3e-3",
    "schedule.kind=cosine", "schedule.warmup_fraction=0.05", "train.log_every=25", "train.eval_every=50",
    "train.ckpt_every=50",
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per recipe (default 150)")
    parser.add_argument("--recipes", default=",".join(DEMO_RECIPES), help="comma-separated recipes to compare")
    parser.add_argument("--no-sweep", action="store_true", help="skip the scaling sweep and fit")


def train_recipes(out: Path, recipes: list[str], steps: int) -> list[dict]:
    from lowprec.train.config import load_config
    from lowprec.train.loop import train

    summaries = []
    for recipe in recipes:
        cfg = load_config(overrides=[*DEMO_TRAIN, f"train.steps={steps}", f"precision.recipe={recipe}",
                                     f"train.run_dir={out / 'train' / recipe}"])
        print(f"\n=== training {recipe} ({steps} steps) ===", flush=True)
        summaries.append(train(cfg))
    return summaries


def comparison_table(summaries: list[dict]) -> str:
    from lowprec.recipes.table import format_table

    rows = [(s["recipe"], s["status"], f"{s['final_val_loss']:.4f}", f"{s['final_val_bpb']:.4f}",
             f"{s['tokens_per_s']:.0f}" if s["tokens_per_s"] else "n/a", f"{s['wall_s']:.0f}") for s in summaries]
    return format_table(rows, ("recipe", "status", "val_loss", "val_bpb", "tokens/s", "wall_s"))


def plot_losses(out: Path, recipes: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for recipe in recipes:
        rows = [json.loads(line) for line in (out / "train" / recipe / "metrics.jsonl").read_text().splitlines()]
        train_rows = [r for r in rows if "loss" in r]
        val_rows = [r for r in rows if "val_loss" in r]
        line, = ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label=f"{recipe} train")
        ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o--", color=line.get_color(),
                label=f"{recipe} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/byte)")
    ax.set_title("lowprec demo: tiny byte-level LLaMA on Python sources")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "loss_curves.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    from lowprec.data.corpus import ensure_default_corpus

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipes = [r for r in args.recipes.split(",") if r]
    corpus = ensure_default_corpus()
    print(f"corpus: {corpus}")
    summaries = train_recipes(out, recipes, args.steps)
    table = comparison_table(summaries)
    (out / "comparison.txt").write_text(table + "\n")
    print("\n" + table)
    print(f"loss curves: {plot_losses(out, recipes)}")
    if not args.no_sweep:
        from lowprec.demo_sweep import sweep_and_fit

        sweep_and_fit(out)
    return 0
