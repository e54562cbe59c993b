"""`lowprec fit RUNS --law NAME`: fit a scaling law; write fit.json, fit.md and PNG plots to --out."""
from __future__ import annotations

import argparse
from pathlib import Path

from lowprec.fits.fitter import FitConfig, fit
from lowprec.fits.laws import LAWS
from lowprec.fits.report import fit_markdown
from lowprec.fits.results import write_fit_json
from lowprec.fits.table import DEFAULT_LOSS, load_chinchilla_epoch_csv, load_runs


def _grid_axis(text: str) -> tuple[str, tuple[float, ...]]:
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise argparse.ArgumentTypeError(f"--grid expects NAME=v1,v2,... got {text!r}")
    try:
        return name, tuple(float(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grid {text!r}: values must be numbers") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, help="runs table (.jsonl or .csv)")
    parser.add_argument("--law", required=True, choices=sorted(LAWS), help="scaling-law form")
    parser.add_argument("--by", choices=["recipe"], help="fit each recipe separately (laws without efficiencies)")
    parser.add_argument("--out", type=Path, default=Path("fit_out"), help="output directory (default fit_out)")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log-loss residuals (default 1e-3)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for CIs (default 200; 0: none)")
    parser.add_argument("--seed", type=int, default=42, help="numpy seed of the bootstrap (default 42)")
    parser.add_argument("--ci-level", type=float, default=0.95, help="CI coverage (default 0.95)")
    parser.add_argument("--baseline", default="bf16", help="baseline recipe of staged laws (default bf16)")
    parser.add_argument("--eff", help="efficiencies to fit, comma-separated (default: all of the law's)")
    parser.add_argument("--loss-column", default=DEFAULT_LOSS, help=f"loss column (default {DEFAULT_LOSS})")
    parser.add_argument("--grid", type=_grid_axis, action="append", default=[], metavar="NAME=v1,v2",
                        help="replace one parameter's start values (fitting coordinate: log for log-fitted); repeatable")
    parser.add_argument("--format", choices=["runs", "epoch"], default="runs",
                        help="'epoch': Epoch AI's digitized Chinchilla CSV (N, C, loss; 5 highest losses dropped)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def main(args: argparse.Namespace) -> int:
    if args.format == "epoch":
        table = load_chinchilla_epoch_csv(args.runs)
    else:
        table = load_runs(args.runs, loss_column=args.loss_column)
    config = FitConfig(law=args.law, delta=args.delta, grid=dict(args.grid) or None, bootstrap=args.bootstrap,
                       seed=args.seed, ci_level=args.ci_level, baseline=args.baseline, by=args.by,
                       efficiencies=tuple(args.eff.split(",")) if args.eff else None)
    print(f"{len(table)} runs used, {len(table.excluded)} excluded")
    for e in table.excluded:
        print(f"  excluded row {e.row} run_id={e.run_id} recipe={e.recipe}: {e.reason}")
    fitset = fit(table, config)
    args.out.mkdir(parents=True, exist_ok=True)
    write_fit_json(fitset, args.out / "fit.json")
    (args.out / "fit.md").write_text(fit_markdown(fitset, str(args.runs)))
    written = [args.out / "fit.json", args.out / "fit.md"]
    if not args.no_plots:
        from lowprec.fits.plots import write_plots  # matplotlib only when plotting

        written += write_plots(fitset, table, args.out)
    for name, lf in fitset.fits.items():
        ci = lf.flat_ci()
        print(f"[{name}] objective {lf.objective:.6g}")
        for k, v in lf.flat_params().items():
            bounds = f"  CI ({ci[k][0]:.6g}, {ci[k][1]:.6g})" if k in ci else ""
            print(f"  {k:>16} = {v:.6g}{bounds}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
