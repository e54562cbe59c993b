"""ModelConfig for the LLaMA-style decoder, and the loader for configs/models/*.yaml presets."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from lowprec.typedconfig import from_dict, load_yaml

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "models"
_DTYPES = ("float32", "bfloat16", "float16")
_ATTENTION = ("auto", "xla", "cudnn")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of a decoder-only transformer (RMSNorm, RoPE, SwiGLU, MHA/GQA).

    The SwiGLU hidden width is `mlp_multiple_of * ceil(int(mlp_ratio * d_model) / mlp_multiple_of)`:
    LLaMA's rule (ratio 8/3 keeps the MLP at ~8·d² params, rounded up to 256), which also
    reproduces the Quartet/QuEST model sizes (30M at 6 layers, d 640: hidden 1792).

    fused_projections: q, k and v as one linear layer (`attn/qkv_proj`), and gate and up as one
    (`mlp/gate_up_proj`), their outputs split. The same function and initial distribution; fewer,
    larger GEMMs, and each input's gradient comes out of one GEMM, not a sum of two or three
    (and, with a clipping estimator such as Quartet's, is masked and rotated back once). A fused
    layer is one quantization site: one key stream, and per-tensor scales over the fused weight.
    """

    vocab_size: int
    seq_len: int
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int | None = None  # None: multi-head attention (n_kv_heads = n_heads)
    mlp_ratio: float = 8 / 3
    mlp_multiple_of: int = 256
    qk_norm: bool = False
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    param_dtype: str = "float32"
    compute_dtype: str = "bfloat16"
    init_std: float = 0.02
    attention: str = "auto"  # "xla" (einsum), "cudnn" (fused flash kernel, GPU, bf16/f16), "auto": cudnn when it applies
    fused_projections: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads", "mlp_multiple_of"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig: head_dim = d_model/n_heads = {self.head_dim} must be even for RoPE")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(
                f"ModelConfig.n_kv_heads={self.n_kv_heads} must be >= 1 and divide n_heads={self.n_heads}"
            )
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}; choose from {', '.join(_DTYPES)}")
        if self.attention not in _ATTENTION:
            raise ValueError(f"ModelConfig.attention={self.attention!r}; choose from {', '.join(_ATTENTION)}")
        if self.attention == "cudnn" and self.compute_dtype == "float32":
            raise ValueError("ModelConfig.attention='cudnn' needs compute_dtype bfloat16 or float16")
        for name in ("mlp_ratio", "rope_theta", "norm_eps", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def mlp_hidden(self) -> int:
        m = self.mlp_multiple_of
        return m * -(-int(self.mlp_ratio * self.d_model) // m)


def preset_names() -> list[str]:
    """Names of the presets in configs/models/ (file stems)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def model_config_dict(name_or_path: str) -> dict:
    """The raw mapping of a preset name (configs/models/<name>.yaml) or a YAML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown model preset {name_or_path!r}; choose from {', '.join(preset_names())}")
    elif not path.is_file():
        raise ValueError(f"model config file {str(path)!r} does not exist")
    data = load_yaml(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"model config {str(path)!r} must be a YAML mapping of ModelConfig fields")
    return data


def load_model_config(name_or_path: str) -> ModelConfig:
    """ModelConfig from a preset name (e.g. "30m") or a YAML file; unknown keys raise."""
    return from_dict(ModelConfig, model_config_dict(name_or_path), where="model")
