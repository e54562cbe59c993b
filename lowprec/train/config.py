"""Training configuration: typed frozen sections, and the strict YAML + `key=value` loader.

Precedence is defaults < YAML files (in the order given) < CLI overrides. The `model` section may
be given as a preset name or a model YAML path (`model: 30m`, `model=configs/models/1b.yaml`),
which replaces the whole section; later dotted keys (`model.n_layers=2`) then refine it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Sequence

from lowprec.models.config import ModelConfig, model_config_dict
from lowprec.typedconfig import dump_yaml, from_dict, load_yaml

REQUIRED = "<required>"


def _positive(section: str, obj, names: Sequence[str], *, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            raise ValueError(f"{section}.{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainDataConfig:
    """Where the tokens come from; seq_len is model.seq_len (one source of truth)."""

    corpus: str = "default"  # "default": the built-in byte-level corpus; else a corpus directory
    batch_size: int = 32  # global batch, in sequences
    seed: int = 0  # data-order seed, separate from the init/SR seed train.seed
    val_tokens: int = 2**17

    def __post_init__(self):
        _positive("data", self, ("batch_size", "val_tokens"))
        _positive("data", self, ("seed",), allow_zero=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with global-norm clipping and explicit gradient accumulation.

    Weight decay is decoupled (scaled by the learning rate, as in optax.adamw) and applies to
    parameters with 2 or more dims: every matmul kernel and the embedding table (nanoGPT's
    rule); RMSNorm scales are not decayed.
    """

    lr: float = 6e-4  # peak learning rate
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float | None = 1.0  # None: no clipping
    grad_accum: int = 1  # micro-batches per step; data.batch_size must divide evenly
    z_loss: float = 0.0  # coefficient of mean(logsumexp(logits)^2) added to the loss

    def __post_init__(self):
        _positive("optim", self, ("lr", "eps", "clip_norm", "grad_accum"))
        _positive("optim", self, ("weight_decay", "z_loss"), allow_zero=True)
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Linear warmup, then cosine to final_fraction·lr, WSD (linear decay over the last
    decay_fraction of steps) or constant."""

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_fraction: float = 0.1  # of train.steps; used when warmup_steps is None
    warmup_steps: int | None = None
    final_fraction: float = 0.1
    decay_fraction: float = 0.2  # wsd only

    def __post_init__(self):
        _positive("schedule", self, ("warmup_steps",), allow_zero=True)
        for name in ("warmup_fraction", "final_fraction", "decay_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"schedule.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrecisionConfig:
    """Which recipe the linears train in, and which layers stay in BF16.

    keep_first_blocks / keep_last_blocks = None take the recipe's default from
    lowprec.train.precision.KEEP_BLOCK_FRACTIONS. mfu_peak names the peak MFU is reported against.
    """

    recipe: str = "bf16"
    keep_bf16: tuple[str, ...] = ("^lm_head$",)  # regexes (re.search) on linear paths, e.g. blocks/0/attn/q_proj
    keep_first_blocks: int | None = None
    keep_last_blocks: int | None = None
    mfu_peak: Literal["bf16", "fp8"] = "bf16"

    def __post_init__(self):
        _positive("precision", self, ("keep_first_blocks", "keep_last_blocks"), allow_zero=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Run length, cadence, output and divergence detection.

    A run is `nan` at the first non-finite loss or grad norm, and `diverged` when the loss stays
    above spike_factor × (lowest EMA of the loss so far) for spike_patience consecutive steps.
    """

    steps: int = 1000
    seed: int = 0  # model init and stochastic-rounding keys
    log_every: int = 10
    eval_every: int = 200  # 0: evaluate only at the end
    ckpt_every: int = 500  # 0: checkpoint only at the end
    keep_last: int = 2
    run_dir: str = "runs/default"
    stop_at_step: int | None = None  # halt here with a checkpoint (the schedule still spans `steps`)
    spike_factor: float = 2.0
    spike_patience: int = 20
    tensorboard: bool = False  # needs tensorboardX

    def __post_init__(self):
        _positive("train", self, ("steps", "log_every", "keep_last", "spike_factor", "spike_patience", "stop_at_step"))
        _positive("train", self, ("seed", "eval_every", "ckpt_every"), allow_zero=True)
        if self.stop_at_step is not None and self.stop_at_step > self.steps:
            raise ValueError(f"train.stop_at_step={self.stop_at_step} is beyond train.steps={self.steps}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Device mesh ("data", "fsdp"); -1 takes all devices not used by the other axis."""

    data: int = -1
    fsdp: int = 1

    def __post_init__(self):
        if self.data == 0 or self.data < -1:
            raise ValueError(f"mesh.data must be -1 or >= 1, got {self.data}")
        if self.fsdp < 1:
            raise ValueError(f"mesh.fsdp must be >= 1, got {self.fsdp}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    model: ModelConfig
    data: TrainDataConfig = TrainDataConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    precision: PrecisionConfig = PrecisionConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(parents[: i + 1])} is not a section, cannot set {dotted}")
        node = child
    node[leaf] = value


def _merge(base: dict, update: dict, where: str = "") -> None:
    """Merge `update` into `base` in place; a `model` given as a string replaces the section."""
    for key, value in update.items():
        dotted = f"{where}{key}"
        if dotted == "model" and isinstance(value, str):
            base["model"] = model_config_dict(value)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, f"{dotted}.")
        else:
            base[key] = value


def parse_override(text: str) -> tuple[str, object]:
    """`a.b=value` -> ("a.b", YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} must look like section.key=value")
    return key, load_yaml(raw) if raw else ""


def config_tree(paths: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> dict:
    """The merged nested dict (before type checking) of YAML files and overrides."""
    tree: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        data = load_yaml(path.read_text())
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of sections")
        _merge(tree, data)
    seen: set[str] = set()
    for text in overrides:
        key, value = parse_override(text)
        if key in seen:
            raise ValueError(f"override key {key} is set twice on the command line")
        seen.add(key)
        if key == "model" and isinstance(value, str):
            tree["model"] = model_config_dict(value)
        else:
            _set(tree, key, value)
    return tree


def load_config(paths: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    """Config from YAML files and `key=value` overrides; unknown keys and wrong types raise ValueError."""
    tree = config_tree(paths, overrides)
    if "model" not in tree:
        raise ValueError("the model section is required: give `model: <preset or path>` or a mapping of "
                         "ModelConfig fields")
    return from_dict(Config, tree)


# Keys added after runs and sweeps were first recorded. At their defaults they are left out of
# config hashes (lowprec.sweeps.plan.config_hash), so that the hashes recorded before they existed
# stay valid; a resumed run that predates a key takes it at its default (lowprec.train.loop).
ADDED_KEYS = ("model.fused_projections",)


def default_tree() -> dict:
    """Every section's defaults; ModelConfig's required fields show as "<required>"."""

    def fields(cls) -> dict:
        out = {}
        for f in dataclasses.fields(cls):
            if f.name == "model":
                out[f.name] = fields(ModelConfig)
            elif dataclasses.is_dataclass(f.default):
                out[f.name] = fields(type(f.default))
            elif f.default is dataclasses.MISSING:
                out[f.name] = REQUIRED
            else:
                out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
        return out

    return fields(Config)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, loadable again with load_config."""
    return dump_yaml(cfg)
