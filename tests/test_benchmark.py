"""studies/benchmarks/speed.py in its smallest setting: it runs, writes every field, its loss implementations agree,
and its memory meter measures."""

import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, rounding_bound

from fairseq_headless import cli
from studies.benchmarks import loss, report, speed
from studies.benchmarks.machine import PeakMemory, cpu_peak_memory_available

SCRIPT = ["-m", "studies.benchmarks.speed"]
STEP_FIELDS = {"family", "arch", "vocab_size", "batch", "embedding_update", "negatives", "vanilla_step_s",
               "headless_step_s", "body_step_s", "vanilla_peak_mb", "headless_peak_mb"}
MACHINE_FIELDS = {"cpu_model", "logical_cpus", "torch_threads", "torch", "gpu", "load_average_at_start"}


def rows(markdown, first):
    """The cells of each markdown table row that starts with the cell ``first``."""
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines() if line[:1] == "|"]
    return [row for row in table if row[0] == first]


def run_script(*args):
    return subprocess.run([sys.executable, *SCRIPT, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_data):
    output = tmp_path_factory.mktemp("benchmark") / "out"
    proc = run_script("--smoke", "--output", output, "--curves", tiny_data, "--curves-config", "hlm_tiny",
                      "--curves-updates", 10)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return output, json.loads((output / "benchmark.json").read_text()), proc


def test_smoke_run_writes_every_field(smoke):
    output, result, proc = smoke
    assert MACHINE_FIELDS <= result["machine"].keys() and result["machine"]["torch"] == torch.__version__
    steps = result["steps"]
    assert {(r["family"], r["embedding_update"]) for r in steps} == {
        ("encoder", "dense"), ("encoder", "sparse"), ("decoder", "dense"), ("decoder", "sparse")}
    for record in steps:
        assert STEP_FIELDS <= record.keys()
        assert record["vocab_size"] == 300 and record["batch"] in (2, 4)
        for key in ("vanilla_step_s", "headless_step_s", "body_step_s", "frozen_embedding_step_s"):
            assert 0 < record[key] < 60, (key, record[key])
            assert len(record["times_s"][key.split("_")[0]]) == 2  # the timed steps, warm-up excluded
        for key in ("vanilla_peak_mb", "headless_peak_mb", "body_peak_mb"):
            assert 0.5 < record[key] < 2000, (key, record[key])  # params + optimizer state at least
        assert record["speedup"] == pytest.approx(record["vanilla_step_s"] / record["headless_step_s"])
        # the smoke preset's reference vocabulary: the same headless variant at V=200, interleaved
        reference = record["reference"]
        assert reference["vocab_size"] == 200 and len(reference["times_s"]) == 2
        assert reference["headless_step_s"] == pytest.approx(sorted(reference["times_s"])[0] / 2
                                                             + sorted(reference["times_s"])[1] / 2)
        assert record["headless_tokens_per_s"] == pytest.approx(record["tokens_per_step"] / record["headless_step_s"])
    encoder = next(r for r in steps if r["family"] == "encoder")
    assert encoder["vanilla_parameters"] > encoder["headless_parameters"]  # the LM head (dense + norm + bias)
    assert 0 < encoder["positions"] < encoder["tokens_per_step"]  # ~15% masked
    assert {(r["implementation"], r["num_positions"]) for r in result["loss"]} == {
        (name, k) for name in loss.IMPLEMENTATIONS for k in (64, 128)}
    assert all(r["time_s"] > 0 and r["peak_extra_mb"] is not None and r["skipped"] is None for r in result["loss"])
    curves = result["loss_curves"]["curves"]
    assert set(curves) == {"dense", "sparse"}
    assert all(c["updates"][-1] == 10 and len(c["train_loss"]) == len(c["updates"]) >= 5 for c in curves.values())
    markdown = (output / "benchmark.md").read_text()
    assert result["command"] in markdown and rows(markdown, "family")[0][:3] == ["family", "arch", "V"]
    assert "- interleaved in the bert-tiny V=300 group: headless (sparse, batch) at V=200: " in markdown
    for name in ("steps_vocab.png", "loss.png", "loss_curves.png"):
        assert name in result["plots"] and (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # stderr is a pipe here, not a terminal: progress as log lines (no bar redrawn with "\r"), the last at 100%
    done = re.findall(r"^benchmark: (\d+)/(\d+) parts$", proc.stderr, re.M)
    assert done and done[-1][0] == done[-1][1], proc.stderr[-2000:]
    assert int(done[-1][1]) == len(result["loss"]) + 1 + len({(r["family"], r["arch"], r["vocab_size"], r["batch"])
                                                                for r in steps})  # groups, loss points, curves
    assert "\r" not in proc.stderr


def test_architectures_take_family_and_yaml_pair_from_the_shape_table():
    """Each benchmarked architecture is an entry of models/shapes.py: the family (which batches it gets) and
    the two configs it builds, as they were listed here before the table existed."""
    from studies.benchmarks import steps

    assert {name: (arch.family, arch.headless_config, arch.vanilla_config) for name, arch in steps.ARCHS.items()} == {
        "bert-small": ("encoder", "hmlm_small", "mlm_small"), "bert-base": ("encoder", "hmlm_base", "mlm_base"),
        "gpt2-quarter": ("decoder", "hlm_small", "lm_small"), "pythia-70m": ("decoder", "hlm_pythia70m", "lm_pythia70m"),
        "bert-tiny": ("encoder", "hmlm_tiny", "mlm_tiny"), "gpt2-tiny": ("decoder", "hlm_tiny", "lm_tiny"),
    }


def test_quick_preset_plan_is_what_the_docs_say(tmp_path):
    """--quick (its time is measured by running it, BENCHMARKS.md): no V=8k group (8k is the interleaved
    reference), the body at 50k only, no re-warm step, the one-block loss at 16k for memory only; --vocab brings
    the body back everywhere, and --reference-vocab 0 the 8k group."""
    settings = speed.plan(speed.parse_args(["--quick", "--output", str(tmp_path)]))
    assert settings["sweeps"] == [(["bert-small", "pythia-70m"], [50_000, 131_000], [None])]
    assert (settings["reference_vocab"], settings["body_sizes"], settings["rewarm"], settings["steps"]) == (
        8_000, [50_000], False, 3)
    assert "cwt_chunked_recompute" not in settings["loss_implementations"]
    assert settings["loss_one_block_time_max_k"] == 4096 and settings["loss_k"][-1] == 16_384
    settings = speed.plan(speed.parse_args(["--quick", "--vocab", "8k,131k", "--output", str(tmp_path)]))
    assert settings["sweeps"][0][1] == [8_000, 131_000] and settings["body_sizes"] is None
    settings = speed.plan(speed.parse_args(["--quick", "--reference-vocab", "0", "--output", str(tmp_path)]))
    assert settings["sweeps"][0][1] == [8_000, 50_000, 131_000] and settings["reference_vocab"] == 0


@pytest.mark.parametrize("arch,rewarm,calls", [("gpt2-tiny", True, 2 + 2), ("bert-tiny", False, 1 + 2)])
def test_each_variant_runs_the_memory_step_the_rewarm_step_if_asked_and_the_timed_steps(arch, rewarm, calls,
                                                                                         monkeypatch):
    """Also --seq-len (Fig.2 used 512-token sequences): the group trains on batch x seq_len samples."""
    from fairseq.trainer import Trainer

    from studies.benchmarks import steps

    counts = {}
    original = Trainer.train_step

    def counting(self, samples, *args, **kwargs):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, samples, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", counting)
    variants = steps.group_variants(["sparse"], ["batch"], [None], frozen=False)
    group = steps.measure_group(arch, 300, variants, 2, REPO / "configs", "cpu", "fp32", rewarm=rewarm, seq_len=48)
    assert sorted(counts.values()) == [calls] * len(variants)  # vanilla, body-sparse, headless-sparse
    assert all(len(v["times_s"]) == 2 for v in group["variants"].values())
    info, batch = group["info"], steps.ARCHS[arch].batch
    assert (info["batch"], info["seq_len"], info["tokens_per_step"]) == (batch, 48, batch * 48)
    if arch == "bert-tiny":
        assert 0.05 * 192 < info["positions"] < 0.3 * 192  # ~15% of the 4 x 48 tokens masked


@pytest.fixture(scope="module")
def fresh_runs():
    """steps.run with body_sizes and loss.run with one_block_time_max_k, in a new interpreter: both fork one
    child per measurement (as the script does, from a parent that has not computed yet); forked from this
    pytest process after other tests ran torch's OpenMP thread pool, a child can hang."""
    code = (
        "import json, torch\n"
        "from studies.benchmarks import loss, steps\n"
        "steps.quiet()\n"
        "records, skipped = steps.run(['bert-tiny'], [300, 400], [None], ['sparse'], ['batch'], [None], 1, 'configs',"
        " torch.device('cpu'), 'fp32', reference_vocab=200, body_sizes=[300])\n"
        "losses = loss.run([64, 128], 32, 1000, 32, lambda k: 1, torch.device('cpu'), torch.float32,"
        " implementations=('cwt', 'cwt_chunked', 'cwt_floor'), one_block_time_max_k=64)\n"
        "print(json.dumps({'steps': records, 'skipped': skipped, 'loss': losses}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_body_only_at_the_sizes_asked_for(fresh_runs):
    """body_sizes: the other sizes' records have no body numbers (None)."""
    records, skipped = fresh_runs["steps"], fresh_runs["skipped"]
    assert not skipped
    by_vocab = {r["vocab_size"]: r for r in records}
    assert set(by_vocab) == {300, 400}
    assert 0 < by_vocab[300]["body_step_s"] < 60 and by_vocab[300]["body_peak_mb"] > 0
    assert by_vocab[400]["body_step_s"] is None and by_vocab[400]["body_peak_mb"] is None
    assert "body" not in by_vocab[400]["times_s"] and by_vocab[300]["reference"] is None
    reference = by_vocab[400]["reference"]  # in the largest group only
    assert reference["vocab_size"] == 200 and reference["headless_peak_mb"] > 0
    row = rows(report.steps_table(records), "encoder")[-1]
    assert row[2:6] == ["400", "4x32", "sparse", "batch"] and row[9] == "—"  # no body at 400


@pytest.fixture
def drawn(monkeypatch):
    """Every line the report's plots draw, as (label, xs, ys); the plots are still drawn and saved."""
    import matplotlib.axes

    lines = []
    original = matplotlib.axes.Axes.plot

    def recording(self, xs, ys, *args, **kwargs):
        lines.append((kwargs.get("label"), list(xs), list(ys)))
        return original(self, xs, ys, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    return lines


def test_plots_draw_records_without_body_or_time(tmp_path, drawn):
    """The vocabulary plot takes the interleaved reference as a point; the loss plot a memory-only point."""
    record = {"family": "encoder", "arch": "bert-tiny", "batch": 4, "seq_len": 32, "negatives": "batch",
              "embedding_update": "sparse", "vocab_size": 400, "tokens_per_step": 128,
              "vanilla_tokens_per_s": 100.0, "vanilla_peak_mb": 50.0, "headless_tokens_per_s": 150.0,
              "headless_peak_mb": 40.0, "body_step_s": None, "body_tokens_per_s": None, "body_peak_mb": None,
              "reference": {"vocab_size": 200, "headless_step_s": 0.8, "times_s": [0.8], "headless_peak_mb": 30.0}}
    losses = [{"implementation": "cwt", "num_positions": 64, "time_s": 0.5, "peak_extra_mb": 10.0},
              {"implementation": "cwt", "num_positions": 128, "time_s": None, "peak_extra_mb": 40.0}]
    report.plot_vocab([record], tmp_path / "vocab.png")
    report.plot_loss(losses, tmp_path / "loss.png")
    assert ("headless (sparse)", [200, 400], [128 / 0.8, 150.0]) in drawn  # throughput
    assert ("headless (sparse)", [200, 400], [30.0, 40.0]) in drawn  # memory
    assert not any(label and label.startswith("body") for label, _, _ in drawn)
    assert ("cwt", [64], [0.5]) in drawn and ("cwt", [64, 128], [10.0, 40.0]) in drawn
    assert (tmp_path / "vocab.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "loss.png").exists()


def test_batch_plot_draws_latency_and_memory_against_the_micro_batch(tmp_path, drawn):
    """Fig.2's spirit: one panel per (arch, V) that has several micro-batches; none when no sweep has."""
    def record(batch, mode, vanilla, headless):
        return {"arch": "bert-small", "vocab_size": 50_000, "batch": batch, "negatives": "batch",
                "embedding_update": mode, "vanilla_step_s": vanilla, "vanilla_peak_mb": 100.0 * batch,
                "headless_step_s": headless, "headless_peak_mb": 60.0 * batch}

    records = [record(8, "sparse", 1.0, 0.6), record(16, "sparse", 2.0, 1.1), record(16, "dense", 2.0, 1.3)]
    assert report.plot_batch(records, tmp_path / "batch.png") is True
    assert report.plot_batch(records[1:], tmp_path / "none.png") is False  # one micro-batch only
    assert ("vanilla", [8, 16], [1.0, 2.0]) in drawn and ("vanilla", [8, 16], [800.0, 1600.0]) in drawn
    assert ("headless (sparse)", [8, 16], [0.6, 1.1]) in drawn and ("headless (dense)", [16], [1.3]) in drawn
    assert (tmp_path / "batch.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "none.png").exists()


def test_one_block_loss_beyond_its_time_limit_is_measured_for_memory_only(fresh_runs):
    records = fresh_runs["loss"]
    by_key = {(r["implementation"], r["num_positions"]): r for r in records}
    assert by_key[("cwt", 64)]["time_s"] > 0 and by_key[("cwt", 64)]["note"] is None
    big = by_key[("cwt", 128)]
    assert big["time_s"] is None and big["times_s"] == [] and big["peak_extra_mb"] is not None
    # one block vs chunks: each of the K positive terms is a D-term dot product and a K-column logsumexp
    assert big["loss"] == pytest.approx(by_key[("cwt_chunked", 128)]["loss"],
                                        abs=rounding_bound(big["dim"] + 2 * 128, big["loss"]))
    assert big["note"] == "peak memory only (timed up to K=64 in this run)"
    assert by_key[("cwt_chunked", 128)]["time_s"] > 0
    assert rows(report.loss_table(records), "128")[0][-1] == "peak memory only (timed up to K=64 in this run)"


def test_loss_records_of_one_run_agree(smoke):
    _, result, _ = smoke
    for k in (64, 128):
        by_name = {r["implementation"]: r for r in result["loss"] if r["num_positions"] == k}
        bound = rounding_bound(by_name["cwt"]["dim"] + 2 * k, by_name["cwt"]["loss"])  # as above
        assert by_name["cwt"]["loss"] == pytest.approx(by_name["cwt_chunked"]["loss"], abs=bound)
        assert by_name["cwt"]["loss"] == pytest.approx(by_name["cwt_chunked_recompute"]["loss"], abs=bound)
        assert by_name["cross_entropy"]["loss"] > 0 and by_name["cwt_floor"]["loss"] is None


def test_an_existing_result_is_not_overwritten_without_force(smoke, capsys):
    output, result, _ = smoke
    before = (output / "benchmark.json").read_bytes()
    assert cli.run(speed.main, ["--smoke", "--output", str(output), "--no-steps"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --output {output} already holds benchmark.json; add --force to overwrite it")
    assert (output / "benchmark.json").read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--archs", "bert-huge"], "--archs: unknown bert-huge"),
    (["--vocab", "8k,lots"], "--vocab: 'lots' is not a size"),
    (["--embedding-update", "lazy"], "--embedding-update: unknown lazy; choose from dense, sparse"),
    (["--steps", "0"], "--steps 0: give at least 1"),
    (["--seq-len", "4"], "--seq-len 4: give at least 8"),
    (["--reference-vocab", "big"], "--reference-vocab: 'big' is not a size"),
    (["--vocab", "3"], "--vocab: 3 is too small"),
    (["--device", "cuda"], "--device cuda: no CUDA device here") if not torch.cuda.is_available()
    else (["--loss-k", "-1"], "--loss-k: sizes must be positive"),
])
def test_bad_options_give_one_error_line_and_exit_2(args, message, tmp_path, capsys):
    assert cli.run(speed.main, ["--output", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["cwt", "cwt_chunked", "cwt_chunked_recompute", "cross_entropy"])
def test_each_timed_loss_agrees_with_float64_autograd(name):
    """What the loss benchmark times is the loss: loss and both gradients against float64 autograd."""
    outputs, matrix, ids = loss.make_inputs(300, 32, 1000, "cpu", torch.float32)
    o = outputs.double().requires_grad_(True)
    table = (matrix.double() if name == "cross_entropy" else matrix.double()[ids]).requires_grad_(True)
    if name == "cross_entropy":
        expected = torch.nn.functional.cross_entropy(o @ table.t(), ids, reduction="sum")
    else:  # CWT: each position's own target against every target of the batch
        expected = (torch.logsumexp(o @ table.t(), dim=-1) - (o * table).sum(-1)).sum()
    expected.backward()
    value, grad_outputs, grad_table = loss.loss_and_grads(name, outputs, matrix, ids, chunk_size=64)
    assert abs(float(value) - float(expected.detach())) <= rounding_bound(32 + 1000 + 300, float(expected.detach()))
    # a gradient entry sums K (or V) products of softmax weights and D-term features: float32 rounding of those
    assert float((grad_outputs.double() - o.grad).abs().max()) < 1e-5
    assert float((grad_table.double() - table.grad).abs().max()) < 1e-5


def test_the_floors_have_the_shapes_of_their_losses():
    outputs, matrix, ids = loss.make_inputs(50, 8, 70, "cpu", torch.float32)
    logits, grad_outputs, grad_columns = loss.floor("cwt_floor", outputs, matrix, ids)
    assert logits.shape == (50, 50) and grad_outputs.shape == (50, 8) and grad_columns.shape == (50, 8)
    logits, _, grad_columns = loss.floor("cross_entropy_floor", outputs, matrix, ids)
    assert logits.shape == (50, 70) and grad_columns.shape == (70, 8)


@pytest.mark.skipif(not cpu_peak_memory_available(), reason="needs Linux's /proc/self/clear_refs")
def test_cpu_peak_memory_meter_sees_an_allocation_that_is_freed_again():
    with PeakMemory(torch.device("cpu")) as meter:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert 60 < meter.extra_mb < 80, meter.extra_mb
    with PeakMemory(torch.device("cpu")) as meter:
        torch.ones(16)
    assert meter.extra_mb < 8, meter.extra_mb
