"""The sweep-and-fit half of `lowprec demo`: a tiny precision sweep, a QuEST-form fit, plots, report.

The QuEST "effective parameters" law L = A/(N·eff)^alpha + B/D^beta + E is fitted in stages: the
base on the bf16 runs, then one efficiency per low-precision recipe against the frozen base. Six
runs per recipe (3 sizes x 2 token budgets) is the fewest that identify the 5-parameter base.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

DEMO_SWEEP = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "demo_cpu.yaml"


def sweep_and_fit(out: Path, sweep_file: Path = DEMO_SWEEP) -> Path:
    """Run (or resume) the demo sweep into out/sweep and fit it into out/fit; returns the fit dir."""
    from lowprec.fits import cli_fit, cli_runs
    from lowprec.sweeps.runner import run_sweep
    from lowprec.sweeps.spec import load_sweep

    if not sweep_file.exists():
        raise FileNotFoundError(f"demo sweep {sweep_file} not found: run `make demo` from a lowprec checkout")
    sweep = dataclasses.replace(load_sweep(sweep_file), out=str(out / "sweep"))
    print(f"\n=== sweep {sweep.name}: {sweep_file} -> {sweep.out} ===", flush=True)
    run_sweep(sweep, csv=True)
    runs = Path(sweep.out) / "runs.jsonl"
    _run_cli(cli_runs, [str(runs)])
    fit_dir = out / "fit"
    print(f"\n=== fit: QuEST effective-parameter law, base on bf16 -> {fit_dir} ===", flush=True)
    _run_cli(cli_fit, [str(runs), "--law", "quest", "--baseline", "bf16", "--bootstrap", "50", "--out", str(fit_dir)])
    print((fit_dir / "fit.md").read_text())
    return fit_dir


def _run_cli(module, argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    module.configure_parser(parser)
    code = module.main(parser.parse_args(argv))
    if code:
        raise SystemExit(code)
