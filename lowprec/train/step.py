"""The jitted pure train and eval steps over flat state dicts (the model is split once, outside).

`train_step(state, opt_state, batch, step) -> (state, opt_state, metrics)` with
state = {"params": Flat, "other": Flat}: cross-entropy (+ z-loss) in f32, gradients w.r.t. the
parameters, accumulated over optim.grad_accum micro-batches, then AdamW with lr(step).
Delayed scaling's GradAmaxHistory leaves of `other` are differentiated as well, each
micro-batch: their gradient replaces them (never clipped, counted in gnorm or seen by optax);
the forward writes the other histories into the model state after the call.
Random keys derive from (train.seed, step) and are never stored:
init key = fold_in(key(seed), INIT_STREAM); the quant (stochastic rounding / Hadamard sign) key
of step t = fold_in(fold_in(key(seed), QUANT_STREAM), t), folded with the micro-batch index
when accumulating; eval uses fold_in(key(seed), EVAL_STREAM).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lowprec.train.config import Config
from lowprec.train.loss import cross_entropy
from lowprec.train.optim import apply_updates
from lowprec.train.precision import quant_scope
from lowprec.train.state import ModelDef, other_state

INIT_STREAM, QUANT_STREAM, EVAL_STREAM = 0, 1, 2


def stream_key(seed: int, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), stream)


def _loss_fn(model_def: ModelDef, cfg: Config):
    def loss(params, histories, other, batch, key):
        model = model_def.merge(params, {**other, **histories})
        with quant_scope(cfg.precision, key):
            logits = model(batch["inputs"])
        objective, ce = cross_entropy(logits, batch["targets"], cfg.optim.z_loss)
        return objective, (ce, other_state(model))

    return loss


def make_train_step(model_def: ModelDef, cfg: Config, optimizer: optax.GradientTransformation,
                    schedule: Callable) -> Callable:
    """The un-jitted pure train step (jit it with shardings and donation, see `jit_train_step`)."""
    value_and_grad = jax.value_and_grad(_loss_fn(model_def, cfg), argnums=(0, 1), has_aux=True)
    accum = cfg.optim.grad_accum

    def grad_fn(params, other, batch, key):
        """((objective, (ce, next other)), param grads); `histories` is {} without delayed scaling."""
        histories, rest = model_def.split_other(other)
        (obj, (ce, other)), (grads, histories) = value_and_grad(params, histories, rest, batch, key)
        return (obj, (ce, {**other, **histories})), grads

    def accumulate(params, other, batch, step_key):
        """Mean gradient (f32) and CE over `accum` micro-batches, carrying the non-Param state."""
        if accum == 1:  # no scan: a noticeably faster compile for the common case
            (_, (ce, other)), grads = grad_fn(params, other, batch, step_key)
            return grads, other, ce
        # Micro-batch i is rows i::accum, so each device's block of the sharded batch holds its share
        # of every micro-batch. (Contiguous micro-batches each sit on some devices only: XLA then
        # gathers the whole batch onto every device, and every device computes all of it.)
        micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1), batch)

        def body(carry, xs):
            grads, other, ce_sum = carry
            i, mb = xs
            (_, (ce, other)), g = grad_fn(params, other, mb, jax.random.fold_in(step_key, i))
            return (jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g), other, ce_sum + ce), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        (grads, other, ce_sum), _ = jax.lax.scan(
            body, (zeros, other, jnp.zeros((), jnp.float32)), (jnp.arange(accum), micro))
        return jax.tree.map(lambda g: g / accum, grads), other, ce_sum / accum

    def train_step(state, opt_state, batch, step):
        params = state["params"]
        step_key = jax.random.fold_in(stream_key(cfg.train.seed, QUANT_STREAM), step)
        grads, other, ce = accumulate(params, state["other"], batch, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        lr = schedule(step)
        new_state = {"params": apply_updates(params, updates, lr), "other": other}
        metrics = {"loss": ce, "gnorm": optax.tree.norm(grads), "lr": lr}
        return new_state, opt_state, metrics

    return train_step


def make_eval_step(model_def: ModelDef, cfg: Config) -> Callable:
    """eval_step(state, batch) -> (sum of token losses, token count); the quant key is fixed."""
    key = stream_key(cfg.train.seed, EVAL_STREAM)

    def eval_step(state, batch):
        model = model_def.merge(state["params"], state["other"])
        with quant_scope(cfg.precision, key):
            logits = model(batch["inputs"])
        _, ce = cross_entropy(logits, batch["targets"])
        n = batch["targets"].size
        return ce * n, jnp.asarray(n, jnp.float32)

    return eval_step


def jit_train_step(fn: Callable, state_sh, opt_sh, batch_sh, replicated) -> Callable:
    """jax.jit with explicit in/out shardings; state and optimizer state are donated."""
    return jax.jit(fn, in_shardings=(state_sh, opt_sh, batch_sh, replicated),
                   out_shardings=(state_sh, opt_sh, replicated), donate_argnums=(0, 1))
