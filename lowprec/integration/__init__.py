"""Flax integration: quantize_model and its rules, the step-key scope, describe, diagnostics,
and the amax-history variables of delayed scaling."""
from lowprec.integration.delayed import AmaxHistory, GradAmaxHistory
from lowprec.integration.describe import describe
from lowprec.integration.diagnostics import quant_diagnostics, quant_error, tensor_stats
from lowprec.integration.keys import quant_key
from lowprec.integration.quantize import quantize_model
from lowprec.integration.rules import Rule

__all__ = ["AmaxHistory", "GradAmaxHistory", "Rule", "describe", "quant_diagnostics", "quant_error", "quant_key",
           "quantize_model", "tensor_stats"]
