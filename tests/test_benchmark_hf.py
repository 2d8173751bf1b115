"""python -m studies.benchmarks.hf_speed --quick: the JSON and the table it writes, against the shapes it was given."""

import importlib
import json
import subprocess
import sys

import pytest


SCRIPT = ["-m", "studies.benchmarks.hf_speed"]


def script_module():
    return importlib.import_module("studies.benchmarks.hf_speed")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    proc = subprocess.run([sys.executable, *SCRIPT, "--quick", "--shapes", "pythia_70m", "bert_base", "--output", out],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "benchmark_hf.json").read_text()), (out / "benchmark_hf.md").read_text()


def test_every_group_is_timed_and_measured(quick_run):
    result, table = quick_run
    module = script_module()
    assert [(g["shape"], g["vocab"]) for g in result["groups"]] == [
        ("pythia_70m", 2000), ("pythia_70m", 8000), ("bert_base", 2000)]
    assert result["skipped"] == [] and result["settings"] == {"steps": 3, "quick": True, "threads": 1, "mask_prob": 0.15}
    for g in result["groups"]:
        for name in ("vanilla", "headless"):
            assert len(g[name]["times_s"]) == 3 and all(t > 0 for t in g[name]["times_s"])
        assert g["vanilla_step_s"] == sorted(g["vanilla"]["times_s"])[1]  # the median of 3
        assert g["speedup"] == pytest.approx(g["vanilla_step_s"] / g["headless_step_s"], rel=1e-3)
        # causal: every next token; masked: int(0.15 n + u) of each row's n tokens
        rows, length = g["rows"], g["length"]
        if g["task"] == "clm":
            assert g["positions"] == rows * (length - 1)
        else:
            assert rows * int(0.15 * length) <= g["positions"] <= rows * (int(0.15 * length) + 1)
        assert g["headless"]["positions"] == g["vanilla"]["positions"] == g["positions"]
        assert g["target"] is None and g["meets_target"] is None  # toy sizes: no target applies
        if g["memory_ratio"] is not None:  # where /proc gives the peak resident size
            assert g["vanilla_peak_mb"] == pytest.approx(g["vanilla"]["persistent_mb"] + g["vanilla"]["step_extra_mb"],
                                                         abs=0.11)
            assert g["memory_ratio"] == pytest.approx(g["vanilla_peak_mb"] / g["headless_peak_mb"], rel=1e-3)
        assert g["logits_and_gradient_mb"] == pytest.approx(2 * g["positions"] * g["vocab"] * 4 / 2**20, abs=0.06)
        assert f"| {g['shape']} | {g['vocab']:,} | {rows} x {length} | {g['positions']:,} |" in table
    # Pythia's vanilla model has an untied head (V x D more parameters), the headless one none of its own
    pythia = result["groups"][0]
    dim, vocab = module.QUICK["pythia_70m"][0]["hidden_size"], pythia["vocab"]
    assert pythia["vanilla"]["parameters"] - pythia["headless"]["parameters"] == vocab * dim


def test_flop_limit_is_computed_from_the_shape(quick_run):
    result, _ = quick_run
    pythia, bert = result["groups"][0], result["groups"][2]
    # GPT-NeoX, 2 layers x 64, FFN 256, 2 x 64 tokens, causal: per layer 4 D^2 + 2 D F weights, attention
    # 12 B T^2 D / 2; head 6 K D V; CWT 6 K^2 D
    d, layers, f, b, t, k = 64, 2, 256, 2, 64, pythia["positions"]
    body = 6 * layers * (4 * d * d + 2 * d * f) * b * t + 6 * b * t * t * d * layers
    expected = (body + 6 * k * d * pythia["vocab"]) / (body + 6 * k * k * d)
    assert pythia["flop_limit"] == pytest.approx(expected, rel=1e-3)
    # BERT: bidirectional attention and the head's dense layer
    b, t, k = 4, 64, bert["positions"]
    body = 6 * layers * (4 * d * d + 2 * d * f) * b * t + 12 * b * t * t * d * layers
    expected = (body + 6 * k * d * d + 6 * k * d * bert["vocab"]) / (body + 6 * k * k * d)
    assert bert["flop_limit"] == pytest.approx(expected, rel=1e-3)


def test_the_real_shapes_flop_limits_and_targets():
    """The published shapes' limits, from their configs (no model is built)."""
    module = script_module()
    args = module.parse_args(["--output", "unused"])
    limits = {}
    for group in module.groups(args):
        positions = group["rows"] * (group["length"] - 1) if group["task"] == "clm" else int(
            0.15 * group["rows"] * group["length"])
        body, head, cwt = module.flops(group, positions)
        limits[(group["shape"], group["vocab"])] = (body + head) / (body + cwt)
    assert set(limits) == {("pythia_70m", 50304), ("pythia_70m", 128256), ("smollm2_135m", 49152),
                           ("smollm2_135m", 128256), ("bert_base", 30522), ("modernbert_base", 50368)}
    assert 2.0 < limits[("pythia_70m", 50304)] < 2.3 and 3.8 < limits[("pythia_70m", 128256)] < 4.2
    assert limits[("smollm2_135m", 49152)] < limits[("smollm2_135m", 128256)]
    assert all(limit > 1 for limit in limits.values())


@pytest.mark.parametrize("argv,message", [
    (["--shapes", "gpt5"], "--shapes: unknown gpt5"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--shapes", "bert_base", "--vocab-sizes", "50304"], "--vocab-sizes: none of [50304]"),
])
def test_bad_options_get_one_error_line(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, *SCRIPT, "--output", tmp_path / "out", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr
    assert proc.stderr.startswith("error: ")
