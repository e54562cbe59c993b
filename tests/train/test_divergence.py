"""Divergence verdicts on loss streams."""
import math

import pytest

from lowprec.train.divergence import LossWatch, watch


def _run(losses, factor=2.0, patience=3, gnorm=1.0):
    s, verdicts = LossWatch(), []
    for loss in losses:
        s, v = watch(s, loss, gnorm, spike_factor=factor, spike_patience=patience)
        verdicts.append(v)
    return s, verdicts


def test_nan_and_inf():
    assert _run([3.0, math.nan])[1] == [None, "nan"]
    assert _run([3.0, 2.0], gnorm=math.inf)[1] == ["nan", "nan"]


def test_spike_needs_patience_and_recovery_resets():
    s, v = _run([4.0, 3.0, 2.0, 9.0, 9.0, 2.0, 9.0, 9.0, 9.0])
    assert v == [None] * 8 + ["diverged"]
    assert s.over == 3


def test_ema_and_best():
    s, _ = _run([4.0, 2.0])
    assert s.ema == pytest.approx(3.8, rel=1e-15) and s.best == s.ema
