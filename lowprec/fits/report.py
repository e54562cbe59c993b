"""The Markdown fit report (fit.md): parameters with CIs, efficiencies, residuals, exclusions."""
from __future__ import annotations

from lowprec.fits.results import FitSet, LawFit, StageFit


def _num(v: float) -> str:
    return f"{v:.6g}"


def _ci(stage: StageFit, name: str) -> str:
    if name not in stage.ci:
        return "n/a (no bootstrap)" if not stage.n_bootstrap else "n/a"
    lo, hi = stage.ci[name]
    return f"({_num(lo)}, {_num(hi)})"


def _params_table(stage: StageFit, level: float) -> list[str]:
    lines = [f"| parameter | value | {level:.0%} CI |", "|---|---|---|"]
    lines += [f"| {k} | {_num(v)} | {_ci(stage, k)} |" for k, v in stage.params.items()]
    lines += [f"| {k} | {_num(v)} | fixed |" for k, v in stage.fixed.items()]
    return lines


def _group(name: str, fit: LawFit, fitset: FitSet, level: float) -> list[str]:
    s = fit.shared
    lines = [f"## Group `{name}`: recipes {', '.join(fit.recipes)}", ""]
    if fit.staged:
        lines += [f"### Base, fitted on the baseline recipe `{fitset.baseline}`, then frozen", ""]
    lines += [f"Objective (sum of Huber) {_num(s.objective)} over {s.n_points} runs; {s.grid_size} starts, "
              f"best start #{s.best_start}; {s.n_bootstrap} bootstrap resamples.", ""]
    lines += _params_table(s, level) + [""]
    if fit.efficiency:
        names = list(next(iter(fit.efficiency.values())).params)
        lines += ["### Efficiencies (fitted per recipe against the frozen base; baseline = 1)", ""]
        lines += ["| recipe | runs | objective | " + " | ".join(f"{n} | {n} CI" for n in names) + " |",
                  "|---|---|---|" + "---|---|" * len(names)]
        for recipe, st in fit.efficiency.items():
            cells = " | ".join(f"{_num(st.params[n])} | {_ci(st, n)}" for n in names)
            lines.append(f"| {recipe} | {st.n_points} | {_num(st.objective)} | {cells} |")
        lines.append("")
    r = fit.residuals
    lines += ["### Residuals (log L̂ − log L)", "", "| recipe | runs | mean | rms | max abs |", "|---|---|---|---|---|"]
    rows = list(r["by_recipe"].items()) + [("**all**", r)]
    lines += [f"| {k} | {v['n']} | {_num(v['mean'])} | {_num(v['rms'])} | {_num(v['max_abs'])} |" for k, v in rows]
    return lines + [""]


def fit_markdown(fitset: FitSet, source: str) -> str:
    """The full report as Markdown text."""
    c = fitset.config
    level = c["ci_level"]
    lines = [f"# Scaling-law fit: `{fitset.law}`", "",
             f"- runs table: `{source}` (loss column `{c['loss_column']}`)",
             f"- law options: {fitset.law_options or 'none'}; fitted per: {fitset.by or 'all runs together'}",
             f"- Huber delta on log-loss residuals: {c['delta']}; L-BFGS-B from every grid start "
             f"(maxiter {c['maxiter']}, gtol {c['gtol']}, ftol {c['ftol']})",
             f"- bootstrap: {c['bootstrap']} resamples of runs, numpy seed {c['seed']}, percentile {level:.0%} CIs",
             ""]
    for name, fit in fitset.fits.items():
        lines += _group(name, fit, fitset, level)
    lines += [f"## Exclusions ({len(fitset.exclusions)})", ""]
    if fitset.exclusions:
        lines += ["| row | run_id | recipe | reason |", "|---|---|---|---|"]
        lines += [f"| {e.row} | {e.run_id} | {e.recipe} | {e.reason} |" for e in fitset.exclusions]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
