"""Divergence detection on the host-side loss stream: a pure update over a small state."""
from __future__ import annotations

import math
from typing import NamedTuple

EMA_DECAY = 0.9


class LossWatch(NamedTuple):
    """EMA of the training loss, its lowest value so far, and the current run of spiking steps."""

    ema: float | None = None
    best: float = math.inf
    over: int = 0


def watch(state: LossWatch, loss: float, gnorm: float, *, spike_factor: float,
          spike_patience: int) -> tuple[LossWatch, str | None]:
    """(new state, verdict): "nan" for a non-finite loss or grad norm, "diverged" once the loss has
    exceeded spike_factor × best EMA for spike_patience consecutive steps, else None."""
    if not (math.isfinite(loss) and math.isfinite(gnorm)):
        return state, "nan"
    ema = loss if state.ema is None else EMA_DECAY * state.ema + (1 - EMA_DECAY) * loss
    over = state.over + 1 if loss > spike_factor * state.best else 0
    new = LossWatch(ema=ema, best=min(state.best, ema), over=over)
    return new, ("diverged" if over >= spike_patience else None)
