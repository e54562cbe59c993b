"""Scaling-law sweeps: sweep files, run planning (grid and isoflop), the resumable runner and its runs table."""
from lowprec.sweeps.plan import PlannedRun, auto_lr, plan_runs
from lowprec.sweeps.runner import run_sweep
from lowprec.sweeps.spec import Sweep, load_sweep, parse_sweep

__all__ = ["PlannedRun", "Sweep", "auto_lr", "load_sweep", "parse_sweep", "plan_runs", "run_sweep"]
