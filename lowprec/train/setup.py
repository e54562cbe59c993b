"""Everything a run needs before its first step: data, mesh, model, sharded state, jitted steps."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax
from flax import nnx
from jax.sharding import Mesh

from lowprec.data.corpus import CorpusInfo, ensure_default_corpus
from lowprec.data.dataset import DataConfig, bytes_per_token, train_dataset, val_batches
from lowprec.models import Llama
from lowprec.train.config import Config
from lowprec.train.optim import make_optimizer, make_schedule
from lowprec.train.precision import apply_precision, describe_precision
from lowprec.train.sharding import batch_sharding, make_mesh, param_sharding, replicated, tree_shardings
from lowprec.train.state import ModelDef, split_model
from lowprec.train.step import INIT_STREAM, jit_train_step, make_eval_step, make_train_step, stream_key


@dataclasses.dataclass(frozen=True)
class Run:
    """A run ready to step: data access, layouts, initial (or fresh) state and compiled functions."""

    data: DataConfig
    dataset: object  # grain MapDataset: dataset[step] -> batch
    val: list
    bytes_per_token: float
    mesh: Mesh
    model_def: ModelDef
    state: dict
    opt_state: object
    shardings: dict  # {"state", "opt", "batch", "replicated"}
    precision_table: str | None  # lowprec.describe of the quantized model (None for bf16)
    train_step: Callable
    eval_step: Callable


def resolve_corpus(corpus: str) -> Path:
    """"default" -> the built-in corpus (built on first use); else an existing corpus directory."""
    return ensure_default_corpus() if corpus == "default" else Path(corpus)


def data_config(cfg: Config) -> DataConfig:
    """The data layer's config, checked against the model's vocabulary and the mesh."""
    path = resolve_corpus(cfg.data.corpus)
    vocab = CorpusInfo.read(path).vocab_size
    if vocab > cfg.model.vocab_size:
        raise ValueError(f"corpus {path} has vocab_size {vocab} > model.vocab_size {cfg.model.vocab_size}")
    return DataConfig(path=str(path), seq_len=cfg.model.seq_len, batch_size=cfg.data.batch_size,
                      seed=cfg.data.seed, val_tokens=cfg.data.val_tokens)


def build(cfg: Config, model_transform: Callable[[nnx.Module], nnx.Module] | None = None) -> Run:
    """The run of `cfg`; `model_transform` (if given) maps the built, precision-applied model before it is split."""
    data = data_config(cfg)
    mesh = make_mesh(cfg.mesh)
    shards = cfg.optim.grad_accum * mesh.size
    if cfg.data.batch_size % shards:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} must be divisible by optim.grad_accum x devices "
                         f"= {cfg.optim.grad_accum} x {mesh.size}")
    model = Llama(cfg.model, rngs=nnx.Rngs(stream_key(cfg.train.seed, INIT_STREAM)))
    model = apply_precision(model, cfg.precision, cfg.model.n_layers)
    if model_transform is not None:
        model = model_transform(model)
    model_def, params, other = split_model(model)
    optimizer = make_optimizer(cfg.optim)
    schedule = make_schedule(cfg.schedule, cfg.optim.lr, cfg.train.steps)

    state = {"params": params, "other": other}
    state_sh = {part: {k: param_sharding(mesh, tuple(v.shape)) for k, v in flat.items()} for part, flat in state.items()}
    opt_sh = tree_shardings(mesh, jax.eval_shape(optimizer.init, params), params)
    shardings = {"state": state_sh, "opt": opt_sh, "batch": batch_sharding(mesh), "replicated": replicated(mesh)}
    state = jax.device_put(state, state_sh)
    opt_state = jax.jit(optimizer.init, out_shardings=opt_sh)(state["params"])

    train_step = jit_train_step(make_train_step(model_def, cfg, optimizer, schedule), state_sh, opt_sh,
                                shardings["batch"], shardings["replicated"])
    eval_step = jax.jit(make_eval_step(model_def, cfg), in_shardings=(state_sh, shardings["replicated"]))
    return Run(data=data, dataset=train_dataset(data), val=val_batches(data),
               bytes_per_token=bytes_per_token(data.path, "val"), mesh=mesh, model_def=model_def, state=state,
               opt_state=opt_state, shardings=shardings, precision_table=describe_precision(model, cfg.precision),
               train_step=train_step, eval_step=eval_step)
