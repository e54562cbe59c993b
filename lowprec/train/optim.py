"""AdamW (optax) with clipping, and learning-rate schedules as pure functions of the step.

The learning rate is applied by the train step from `schedule(step)` rather than by optax's own
step counter, so the step passed to the train step is the single source of truth (resume
needs no separate schedule state).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from lowprec.train.config import OptimConfig, ScheduleConfig


def warmup_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """cfg.warmup_steps when set, else round(warmup_fraction · total_steps)."""
    n = round(cfg.warmup_fraction * total_steps) if cfg.warmup_steps is None else cfg.warmup_steps
    if n > total_steps:
        raise ValueError(f"schedule.warmup_steps={n} exceeds train.steps={total_steps}")
    return n


def make_schedule(cfg: ScheduleConfig, peak_lr: float, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """lr(step) for steps 0..total_steps-1 (f32).

    Warmup: peak·(s+1)/W for s < W. Then, with the decay phase starting at step D and ending at
    the last step S-1 (progress p = (s-D)/(S-1-D), clipped to [0, 1]):
    cosine (D = W): final + (peak-final)·(1+cos πp)/2; wsd (D = S - round(decay_fraction·S),
    at least W): peak, then peak + (final-peak)·p; constant: peak. final = final_fraction·peak.
    """
    w = warmup_steps(cfg, total_steps)
    final = cfg.final_fraction * peak_lr
    if cfg.kind == "cosine":
        start = w
    elif cfg.kind == "wsd":
        start = max(w, total_steps - round(cfg.decay_fraction * total_steps))
    else:
        start = None

    def schedule(step):
        s = jnp.asarray(step, jnp.float32)
        warm = peak_lr * (s + 1) / max(w, 1)
        if start is None:
            after = jnp.full_like(s, peak_lr)
        else:
            p = jnp.clip((s - start) / max(total_steps - 1 - start, 1), 0.0, 1.0)
            if cfg.kind == "cosine":
                after = final + (peak_lr - final) * 0.5 * (1 + jnp.cos(jnp.pi * p))
            else:
                after = peak_lr + (final - peak_lr) * p
        return jnp.where(s < w, warm, after)

    return schedule


def decay_mask(params: dict[str, jax.Array]) -> dict[str, bool]:
    """Weight decay on parameters with >= 2 dims (kernels, embedding); not on norm scales."""
    return {k: v.ndim >= 2 for k, v in params.items()}


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """clip → Adam moments → decoupled weight decay; the caller scales by -lr(step).

    This is optax.adamw's chain with the learning-rate scaling left to the train step.
    """
    parts = [] if cfg.clip_norm is None else [optax.clip_by_global_norm(cfg.clip_norm)]
    parts += [
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
    ]
    return optax.chain(*parts)


def apply_updates(params: dict, updates: dict, lr: jax.Array) -> dict:
    """params - lr · updates, computed in each parameter's dtype."""
    return jax.tree.map(lambda p, u: (p - lr * u).astype(p.dtype), params, updates)
