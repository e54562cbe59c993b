"""Boundary checks made before anything is compiled."""
import pytest

from lowprec.train.setup import build


def test_vocab_and_batch_checks(tiny, corpus):
    with pytest.raises(ValueError, match="has vocab_size 64 > model.vocab_size 32"):
        build(tiny("model.vocab_size=32"))
    with pytest.raises(ValueError, match=r"data.batch_size=8 must be divisible by optim.grad_accum x devices = 3 x 1"):
        build(tiny("optim.grad_accum=3"))
    with pytest.raises(ValueError, match=r"data.batch_size=8 must be divisible by optim.grad_accum x devices = 1 x 3"):
        build(tiny("mesh.data=3"))
