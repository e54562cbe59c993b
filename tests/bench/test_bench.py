"""CPU smoke tests of every benchmark's core function on tiny sizes: row structure, finite ratios,
errors isolated per case, and the timing helper's call accounting."""
from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import pytest

from lowprec.bench import cli, comm, gemm, hadamard, peers, quantize, train
from lowprec.bench.report import NOT_INSTALLED, Recorder, guarded, table
from lowprec.bench.timing import random_sets, time_calls


def _finite(*values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def test_time_calls_counts_every_call_and_rounds():
    seen = []
    t = time_calls(lambda i: seen.append(i) or jnp.float32(i), reps=3, warmup=2, round_s=0.0)
    assert t.inner == 1 and t.reps == 3 and seen == list(range(5))
    assert 0 < t.min_s <= t.median_s <= t.max_s
    seen.clear()
    t = time_calls(lambda i: seen.append(i) or jnp.float32(i), reps=2, warmup=1, round_s=1e9, max_inner=4)
    assert t.inner == 4 and seen == list(range(1 + 2 * 4))
    with pytest.raises(ValueError, match="warmup"):
        time_calls(lambda i: i, reps=1, warmup=0)
    with pytest.raises(ValueError, match="reps"):
        time_calls(lambda i: i, reps=0)


def test_random_sets_are_random_and_distinct():
    sets = random_sets(jax.random.key(0), [(8, 4), (4,)], jnp.bfloat16, n_sets=2)
    assert len(sets) == 2 and [a.shape for a in sets[0]] == [(8, 4), (4,)]
    assert all(bool(jnp.any(a != 0)) for s in sets for a in s)
    assert not bool(jnp.array_equal(sets[0][0], sets[1][0]))


def test_guarded_isolates_errors_and_names_missing_packages():
    def missing():
        raise ModuleNotFoundError("No module named 'qwix'", name="qwix")

    assert guarded({"a": 1}, lambda: {"b": 2}) == {"a": 1, "b": 2}
    assert guarded({"a": 1}, missing)["error"] == f"{NOT_INSTALLED} (qwix)"
    assert guarded({}, lambda: 1 / 0)["error"].startswith("ZeroDivisionError")


def test_quantize_rows_bytes_and_ratios():
    rows = []
    quantize.run_quantize(rows.append, shapes=[(256, 512)], spec_names=["fp8_e4m3_tensor", "mxfp8", "nvfp4"],
                          reps=1, key=jax.random.key(0))
    assert [r["spec"] for r in rows] == ["copy", "fp8_e4m3_tensor", "mxfp8", "nvfp4"]
    assert all("error" not in r for r in rows), rows
    by = {r["spec"]: r for r in rows}
    n = 256 * 512
    assert by["mxfp8"]["q_bytes"] == 2 * n + n + n // 32  # bf16 in + e4m3 codes + one e8m0 scale per 32
    assert by["nvfp4"]["q_bytes"] == 2 * n + n // 2 + n // 16 + 4  # + e2m1 codes + ue4m3 scales + fp32 S_dec
    for r in rows[1:]:
        assert _finite(r["qdq_gbs"], r["qdq_vs_copy"], r["q_gbs"], r["q_vs_copy"])
        assert r["rel_err"] < {"nvfp4": 0.2}.get(r["spec"], 0.05)
    with pytest.raises(ValueError, match="unknown spec preset"):
        quantize.run_quantize(rows.append, shapes=[(256, 512)], spec_names=["fp9"], reps=1, key=jax.random.key(0))


def test_shape_for_sizes():
    assert quantize.shape_for(64) == (8192, 4096) and quantize.shape_for(256) == (32768, 4096)
    with pytest.raises(ValueError, match="MiB"):
        quantize.shape_for(0.5)


def test_parse_shapes():
    assert gemm.parse_shapes("8192x8192x8192,16384x1024x4096") == [(8192, 8192, 8192), (16384, 1024, 4096)]
    assert gemm.parse_shapes("1,2,3; 4,5,6") == [(1, 2, 3), (4, 5, 6)]
    for bad in ("1,2", "1x2x0", "axbxc", ""):
        with pytest.raises(ValueError, match="shapes"):
            gemm.parse_shapes(bad)


def test_gemm_rows_baselines_recipes_and_peers(monkeypatch):
    def absent():
        raise ModuleNotFoundError("No module named 'nopkg'", name="nopkg")

    monkeypatch.setitem(peers.PEERS, "absent_peer", absent)
    rows = []
    methods = ["lax_fp8_raw", "fp8_tensorwise", "fp8_delayed", "nvfp4", "flax_fp8", "absent_peer"]
    gemm.run_gemm(rows.append, shapes=[(64, 128, 32)], methods=methods, reps=1, key=jax.random.key(0))
    assert [(r["mode"], r["method"]) for r in rows] == [(mode, m) for mode in gemm.MODES for m in ["lax_bf16", *methods]]
    for r in rows:
        if r["method"] == "absent_peer":
            assert r["error"] == f"{NOT_INSTALLED} (nopkg)"
            continue
        assert "error" not in r, r
        assert _finite(r["ms"], r["tflops"], r["vs_bf16"]) and r["fp8_gemms"] == 0  # no FP8 GEMMs on CPU
        if r["mode"] == "fwd":
            assert r["rel_err"] < (0.2 if r["method"] == "nvfp4" else 0.06)
    with pytest.raises(ValueError, match="unknown recipe"):
        gemm.run_gemm(rows.append, shapes=[(64, 64, 64)], methods=["nope"], reps=1, key=jax.random.key(0))


def test_hadamard_rows_match_between_impls():
    rows = []
    hadamard.run_hadamard(rows.append, shape=(64, 256), sizes=(16,), axes=(-1,), reps=1, key=jax.random.key(0))
    assert [r["impl"] for r in rows] == ["copy", "matmul", "butterfly"]
    assert all(_finite(r["gbs"], r["vs_copy"]) for r in rows)
    assert rows[-1]["max_abs_diff_vs_matmul"] < 0.05


def test_comm_rows_and_sums_over_the_devices():
    """4 CPU devices (conftest): the all-reduce is timed per size, the GEMM once, then both together."""
    rows = []
    comm.run_comm(rows.append, sizes_mib=(0.25, 1), gemm_n=64, reps=1, key=jax.random.key(0))
    assert [(r["case"], r.get("mib")) for r in rows] == [
        ("all_reduce", 0.25), ("all_reduce", 1.0), ("gemm", None), ("all_reduce+gemm", 0.25), ("all_reduce+gemm", 1.0)]
    assert all("error" not in r for r in rows), rows
    assert all(_finite(r["ms"]) for r in rows)
    assert _finite(rows[0]["algbw_gbs"], rows[2]["tflops"])
    assert all(math.isfinite(r["hidden"]) and isinstance(r["scheduled"], bool) for r in rows[3:])
    all_reduce, gemm_fn, both = comm._programs(jax.sharding.Mesh(jax.devices(), ("d",)))
    x = jnp.arange(4 * 8, dtype=jnp.float32).reshape(4, 8)
    assert (all_reduce(x) == jnp.tile(x.sum(0), (4, 1))).all()  # every device holds the sum
    a = jax.random.normal(jax.random.key(1), (4, 8, 8))
    assert jnp.allclose(gemm_fn(a, a), jnp.einsum("dij,djk->dik", a, a))
    with pytest.raises(ValueError, match="needs >= 2 devices"):
        comm.run_comm(rows.append, sizes_mib=(1,), gemm_n=64, reps=1, key=jax.random.key(0), devices=jax.devices()[:1])


def test_cli_writes_json_and_report_prints_it(tmp_path, capsys):
    parser = __import__("argparse").ArgumentParser()
    cli.configure_parser(parser)
    assert cli.main(parser.parse_args(["quantize", "--small", "--reps", "1", "--specs", "fp8_e4m3_tensor",
                                       "--out", str(tmp_path)])) == 0
    data = json.loads((tmp_path / "quantize.json").read_text())
    assert data["meta"]["bench"] == "quantize" and [r["spec"] for r in data["rows"]] == ["copy", "fp8_e4m3_tensor"]
    assert data["meta"]["env"]["XLA_FLAGS"] == os.environ["XLA_FLAGS"]  # set by conftest, recorded with the rows
    capsys.readouterr()
    assert cli.main(parser.parse_args(["report", str(tmp_path)])) == 0
    assert "fp8_e4m3_tensor" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["gemm", "--reps"])
    with pytest.raises(SystemExit):
        parser.parse_args(["comm", "--sizes-mib", "8,x"])
    assert parser.parse_args(["comm", "--sizes-mib", "8,0.5"]).sizes_mib == [8.0, 0.5]
    assert cli.main(parser.parse_args(["gemm", "--small", "--peers", "nope"])) == 2
    assert "--peers: unknown ['nope']; choose from flax_fp8" in capsys.readouterr().err


def test_recorder_rewrites_json_and_table_shows_errors(tmp_path):
    rec = Recorder(tmp_path / "x.json", {"bench": "x"})
    rec({"method": "a", "ms": 1.5})
    rec({"method": "b", "error": "boom"})
    assert json.loads((tmp_path / "x.json").read_text())["rows"][1]["error"] == "boom"
    text = table(rec.rows, (("method", "method", ""), ("ms", "ms", ".2f")))
    assert "1.50" in text and "b  ERROR boom" in text


@pytest.mark.slow
def test_train_rows_one_layer(tmp_path):  # batch 4: tests run on 4 CPU devices (conftest)
    rows = []
    train.run_train(rows.append, models=["tiny"], recipe_names=["fp8_tensorwise", "fp8_delayed_pow2"], batch=4,
                    seq_len=16, steps=1, warmup=1, workdir=tmp_path, overrides=["model.n_layers=1"])
    assert [r["recipe"] for r in rows] == ["bf16", "fp8_tensorwise", "fp8_delayed_pow2"]
    for r in rows:
        assert "error" not in r, r
        assert _finite(r["step_ms"], r["tokens_per_s"], r["vs_bf16"], r["loss"]) and r["mfu_pct"] is None  # CPU: n/a


@pytest.mark.gpu
def test_raw_fp8_runs_cublaslt_fp8_gemms_on_gpu():
    rows = []
    # Large enough that XLA picks cuBLASLt over a Triton GEMM (a 256-wide fp8 dot may not be counted).
    gemm.run_gemm(rows.append, shapes=[(2048, 2048, 2048)], methods=["lax_fp8_raw"], reps=1, key=jax.random.key(0))
    counts = {(r["mode"], r["method"]): r["fp8_gemms"] for r in rows}
    assert counts == {("fwd", "lax_bf16"): 0, ("fwd", "lax_fp8_raw"): 1, ("fwd_bwd", "lax_bf16"): 0,
                      ("fwd_bwd", "lax_fp8_raw"): 3}
