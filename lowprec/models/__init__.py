"""LLaMA-style NNX decoder, its config and presets, and exact parameter/FLOP counts."""
from lowprec.models.config import ModelConfig, load_model_config, preset_names
from lowprec.models.counts import flops_per_token, param_counts
from lowprec.models.llama import Llama

__all__ = ["Llama", "ModelConfig", "flops_per_token", "load_model_config", "param_counts", "preset_names"]
