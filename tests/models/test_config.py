"""ModelConfig validation and the configs/models presets."""
import pytest

from lowprec.models import ModelConfig, load_model_config, param_counts, preset_names


def test_every_preset_parses_and_spans_1m_to_1b():
    names = preset_names()
    assert {"tiny", "30m", "50m", "100m", "200m", "1b"} <= set(names)
    totals = [param_counts(load_model_config(n))["total"] for n in names]
    assert min(totals) < 2e6 and max(totals) > 1e9


def test_unknown_key_and_preset(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("vocab_size: 8\nseq_len: 4\nn_layers: 1\nd_model: 8\nn_heads: 2\nn_head: 2\n")
    with pytest.raises(ValueError, match=r"unknown key model\.n_head; valid keys: model\.vocab_size"):
        load_model_config(str(p))
    with pytest.raises(ValueError, match="unknown model preset 'nope'; choose from .*30m"):
        load_model_config("nope")


@pytest.mark.parametrize("kw,match", [
    (dict(d_model=30, n_heads=4), "d_model=30 is not divisible by n_heads=4"),
    (dict(n_kv_heads=3), "n_kv_heads=3"),
    (dict(compute_dtype="fp8"), "compute_dtype='fp8'; choose from float32, bfloat16"),
    (dict(d_model=12, n_heads=4), "head_dim"),
])
def test_validation(kw, match):
    base = dict(vocab_size=8, seq_len=4, n_layers=1, d_model=32, n_heads=4)
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**base, **kw})


def test_swiglu_hidden_rounding():
    cfg = ModelConfig(vocab_size=8, seq_len=4, n_layers=1, d_model=768, n_heads=6)
    assert cfg.mlp_hidden == 2048  # int(8/3*768) = 2048 exactly, no spurious round-up
    assert ModelConfig(vocab_size=8, seq_len=4, n_layers=1, d_model=640, n_heads=5).mlp_hidden == 1792
