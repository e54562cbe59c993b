from flax import nnx

import lowprec as lp
from tests.integration.models import Model


def test_unquantized_model_is_all_bf16():
    text = lp.describe(Model(nnx.Rngs(0), n=1))
    assert text.splitlines()[0].split() == ["path", "layer", "rule", "recipe", "params", "fprop", "dgrad", "wgrad"]
    assert text.splitlines()[-1].endswith("by recipe: bf16 100.0%")


def test_formats_rules_params_and_flop_share(capsys):
    m = Model(nnx.Rngs(0), n=1)
    lp.quantize_model(m, [lp.Rule(path="up|down", recipe="nvfp4"), lp.Rule(path=".*", recipe="bf16")])
    text = lp.describe(m, print_table=True)
    assert capsys.readouterr().out.strip() == text
    up = next(line for line in text.splitlines() if line.startswith("blocks/0/up "))
    assert up.split()[:6] == ["blocks/0/up", "Linear", "[layer]", "0", "nvfp4", "512"]
    assert "e2m1 1x16 ue4m3+fp32 absmax rne x e2m1 16x16" in up and "+RHT16/fixed_te" in up
    # up 16x32 and down 32x16 of 512+512+512(gate)+256(mix)+4*512(attn) = 3840 matmul params
    assert text.splitlines()[-1] == "matmul FLOPs per token (2 x params): 7,680; by recipe: bf16 73.3%, nvfp4 26.7%"
