"""`make demo` end to end on a small generated corpus (never the network), for a few updates."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import network_terms, rounding_bound, write_markov_corpus

from fairseq_headless.cli import InputError
from studies.demo import twins as demo
from studies.training_runs import CPU_OVERRIDES, TrainingRun


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    corpus = root / "corpus"
    corpus.mkdir()
    write_markov_corpus(corpus / "a.txt", 2000, seed=3)
    proc = subprocess.run(
        [sys.executable, "-m", "studies.demo", "--corpus", corpus, "--workdir", root / "work",
         "--max-update", "30", "--train-override", "common.log_interval=5",
         "--vocab-size", "150"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (run_dir,) = (root / "work").glob("run-*")
    return proc, run_dir, root


def table_rows(text: str) -> dict:
    """{first cell: the other cells} of the markdown table rows in ``text``."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|--")]
    return {row[0]: row[1:] for row in rows}


def test_demo_writes_a_side_by_side_comparison(demo_run):
    proc, run_dir, _ = demo_run
    summary = json.loads((run_dir / "results.json").read_text())
    headless, vanilla = summary["results"]["headless"], summary["results"]["vanilla"]
    assert headless["config"] == "hmlm_tiny" and vanilla["config"] == "mlm_tiny"
    for result in (headless, vanilla):
        assert result["updates"] > 0 and result["tokens_per_s"] > 0 and result["peak_rss_mib"] > 50
        assert 0.0 <= result["masked_top1_accuracy"] <= 1.0
    # --max-update 30 for both on the same seeded batches: the same tokens, fairseq's wpb meter summed,
    # which the log's per-interval mean wpb (5 updates each, 1 decimal) gives within rounding
    assert headless["updates"] == vanilla["updates"] == 30
    assert headless["tokens_seen"] == vanilla["tokens_seen"]
    logged = sum(5 * float(w) for w in re.findall(r"train_inner.*? wpb=([\d.]+)",
                                                  (run_dir / "hmlm_tiny" / "train.log").read_text()))
    assert abs(headless["tokens_seen"] - logged) <= 30 * 0.05 + 1 and logged > 30 * 16 * 10
    assert summary["size"] == "tiny" and "--max-update 30" in summary["command"]
    assert summary["max_update"] == 30 and summary["seed"] == demo.SEED
    for config in ("hmlm_tiny", "mlm_tiny"):  # the same seed in both commands
        assert f"common.seed={demo.SEED}" in (run_dir / config / "train.log").read_text().splitlines()[0]
    for result in (headless, vanilla):
        # the kernel's count of the training process (os.wait4): importing torch and fairseq alone takes more than
        # a CPU second, and one compute thread cannot spend much more CPU time than wall time
        assert 1.0 < result["cpu_s"] <= 1.2 * result["wall_s"], (result["cpu_s"], result["wall_s"])
        assert result["cpu_s_per_update"] == pytest.approx(result["cpu_s"] / 30, rel=1e-12)
    # results.md holds the numbers of results.json, as the table prints them
    text = (run_dir / "results.md").read_text()
    assert text.startswith("# Demo: headless vs vanilla tiny encoders, 30 updates of training each\n")
    expected = {"updates (the same seeded batches)": ["30", "30"],
                "tokens seen (fairseq's wpb meter)": [f"{headless['tokens_seen']:,d}", f"{vanilla['tokens_seen']:,d}"],
                "CPU seconds per update (kernel's count, one thread)":
                    [f"{headless['cpu_s_per_update']:.3f}", f"{vanilla['cpu_s_per_update']:.3f}"],
                "peak host memory (MiB, RSS)": [f"{headless['peak_rss_mib']:.0f}", f"{vanilla['peak_rss_mib']:.0f}"],
                "masked top-1 acc., whole vocab": [f"{headless['masked_top1_accuracy']:.2%}",
                                                   f"{vanilla['masked_top1_accuracy']:.2%}"]}
    for rows in (table_rows(text), table_rows(proc.stdout)):
        assert {label: rows[label] for label in expected} == expected
        assert rows["metric"] == ["headless (hmlm_tiny)", "vanilla (mlm_tiny)"]
    assert demo.EQUAL_TOKENS in text and demo.EQUAL_TOKENS in proc.stdout
    if not torch.cuda.is_available():  # the CPU overrides, only where there is no GPU
        assert summary["device"] == "cpu" and summary["train_overrides"][:3] == list(CPU_OVERRIDES)
    # both scored on the same seeded masked positions of the validation set
    assert headless["masked_positions"] == vanilla["masked_positions"] > 0
    # the headless twin is the vanilla one minus the RoBERTa LM head (dense D x D + LayerNorm + bias V)
    dim = 128
    manifest = json.loads((Path(summary["data"]) / "manifest.json").read_text())
    rows = manifest["id_mapping"]["masked_lm_embedding_rows"]
    assert vanilla["parameters"] - headless["parameters"] == dim * dim + 3 * dim + rows
    assert (run_dir / "training_curves.png").stat().st_size > 10_000


def test_demo_accuracy_matches_an_independent_count(demo_run):
    """Recount the headless model's whole-vocabulary accuracy with features @ E^T by hand."""
    import torch
    from fairseq import checkpoint_utils

    import fairseq_headless.plugin  # noqa: F401  (registers the plugin)

    _, run_dir, _ = demo_run
    summary = json.loads((run_dir / "results.json").read_text())
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(run_dir / "hmlm_tiny" / "checkpoint_last.pt")], arg_overrides={"data": summary["data"]}
    )
    model = models[0].eval()
    task.load_dataset("valid", combine=False, epoch=1)
    batches = task.get_batch_iterator(dataset=task.dataset("valid"), max_sentences=32, seed=1, epoch=1)
    correct = total = 0
    embeddings = model.encoder.sentence_encoder.embed_tokens.weight
    with torch.no_grad():
        for sample in batches.next_epoch_itr(shuffle=False):
            masked = sample["target"].ne(task.source_dictionary.pad())
            features = model(**sample["net_input"], features_only=True)[0][masked]
            correct += int(((features @ embeddings.t()).argmax(-1) == sample["target"][masked]).sum())
            total += int(masked.sum())
    assert total == summary["results"]["headless"]["masked_positions"]
    assert correct / total == pytest.approx(summary["results"]["headless"]["masked_top1_accuracy"], abs=1e-12)


def test_demo_exports_both_models_to_hugging_face(demo_run):
    """run-*/hf/{headless,vanilla} load with transformers' Auto classes and agree with the fairseq checkpoints."""
    import torch
    from fairseq import checkpoint_utils
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    import fairseq_headless.plugin  # noqa: F401  (registers the plugin)

    proc, run_dir, _ = demo_run
    summary = json.loads((run_dir / "results.json").read_text())
    for name, config, hf_class in (("headless", "hmlm_tiny", "HeadlessRobertaForMaskedLM"),
                                   ("vanilla", "mlm_tiny", "RobertaForMaskedLM")):
        export = summary["results"][name]["export"]
        out = run_dir / "hf" / name
        assert export["path"] == str(out) and export["hf_class"] == hf_class and export["max_abs_diff"] <= 1e-4
        assert f"{out}: {hf_class}" in proc.stderr
        assert json.loads((out / "config.json").read_text())["architectures"] == [hf_class]
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(run_dir / config / "checkpoint_last.pt")], arg_overrides={"data": summary["data"]})
        fairseq_model = models[0].eval()
        tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
        batch = tokenizer(["Some validation text.", "and more of it , with a longer second line"], padding=True,
                          return_tensors="pt")
        real = batch["attention_mask"].bool()
        with torch.no_grad():
            features = fairseq_model(batch["input_ids"], features_only=True)[0]
            hidden = AutoModel.from_pretrained(out, trust_remote_code=True).eval()(**batch).last_hidden_state
            # fairseq against the export: two computations of one network, within its chain of roundings
            terms = network_terms(fairseq_model, batch["input_ids"].numel())
            assert (hidden - features)[real].abs().max() <= rounding_bound(terms, features.abs().max())
            logits = AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=True).eval()(**batch).logits
            fs_logits = fairseq_model(batch["input_ids"])[0]
            if name == "headless":  # e^T, the ids that stand for no text excluded
                never = json.loads((out / "config.json").read_text())["never_predicted"]
                assert (logits[..., never] == torch.finfo(logits.dtype).min).all()
                fs_logits[..., never] = torch.finfo(fs_logits.dtype).min
            real_logits = fs_logits[real][fs_logits[real] > torch.finfo(fs_logits.dtype).min]
            # the head's sum over the dimension adds to the chain (e^T, or the vanilla head's dense and projection)
            assert (logits - fs_logits)[real].abs().max() <= rounding_bound(
                terms + 2 * features.shape[-1], real_logits.abs().max())


def test_demo_reuses_prepared_data(demo_run, monkeypatch):
    """A second demo on the same corpus and vocabulary takes the data folder the first one prepared."""
    from fairseq_headless.data import prepare

    _, run_dir, root = demo_run
    summary = json.loads((run_dir / "results.json").read_text())
    monkeypatch.setattr(prepare, "prepare_data", lambda *args: pytest.fail(f"prepared again: {args}"))
    assert demo.ensure_data(root / "work", (root / "corpus").resolve(), 150) == Path(summary["data"])


def test_demo_rejects_a_missing_corpus(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "studies.demo", "--corpus", tmp_path / "nope", "--workdir", tmp_path / "w"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "--corpus" in proc.stderr and "not a folder" in proc.stderr
    with pytest.raises(InputError, match=r"^--max-update 0: give a number > 0"):
        demo.main(["--max-update", "0", "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


def test_cpu_seconds_are_the_kernels_count_of_the_process_and_its_children(tmp_path):
    """What the demo reports as a training's CPU seconds (FinishedRun.cpu_s, os.wait4): a stand-in that spins
    1.0 CPU s by its own clock and waits for a child that spins 0.5 CPU s, started with the demo's one-thread
    environment."""
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\n"
    stand_in = (f"import os, subprocess, sys\n{spin.format(1.0)}"
                f"subprocess.run([sys.executable, '-c', {spin.format(0.5)!r}], check=True)\n"
                "print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])\n")
    finished = TrainingRun([sys.executable, "-c", stand_in], tmp_path / "train.log", env=demo.ONE_THREAD).wait()
    assert finished.returncode == 0 and finished.output.split() == ["1", "1"]
    # two interpreters' start-up on top
    assert 1.5 <= finished.cpu_s <= 1.5 + 0.5, finished.cpu_s


def test_small_size_trains_the_paper_twins_with_cpu_overrides(tmp_path, monkeypatch):
    """--size small hands hmlm_small/mlm_small (fp16 configs) to the training, in fp32 on a CPU."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    calls = []

    class Stop(Exception):
        pass

    def fake_train(twins, data, run_dir, max_update, extra=()):
        calls.append((twins[0][1], max_update, list(extra)))
        raise Stop

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(demo, "ensure_data", lambda workdir, corpus, vocab_size: workdir / "data")  # not the point
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    with pytest.raises(Stop):
        demo.main(["--size", "small", "--corpus", str(corpus), "--workdir", str(tmp_path / "work"),
                   "--vocab-size", "120", "--max-update", "7", "--train-override", "dataset.batch_size=2"])
    assert calls == [("hmlm_small", 7, [*CPU_OVERRIDES, "dataset.batch_size=2"])]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine: the configs as written
    calls.clear()
    with pytest.raises(Stop):
        demo.main(["--size", "small", "--corpus", str(corpus), "--workdir", str(tmp_path / "work-gpu"),
                   "--vocab-size", "120", "--max-update", "7"])
    assert calls == [("hmlm_small", 7, [])]


def test_downstream_difference_is_paired_by_seed(tmp_path):
    """headless - vanilla per seed, mean ± sample std; one seed: no ±."""
    from studies.demo.downstream import difference_line

    for name, accuracies in (("headless", [0.50, 0.55, 0.61]), ("vanilla", [0.52, 0.52, 0.55])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "SOTU-era.json").write_text(json.dumps(
            {"columns": {"SOTU-era": {"accuracy": {str(seed): a for seed, a in enumerate(accuracies)}}}}))
    # differences -2, +3, +6 points: mean 2.33, sample std sqrt(((-4.33)^2 + 0.67^2 + 3.67^2) / 2) = 4.04
    line = difference_line(tmp_path, "headless", "vanilla")
    assert line.startswith("headless − vanilla: +2.33 accuracy points ± 4.04 (mean ± std over 3 fine-tuning seeds")
    for name in ("headless", "vanilla"):
        summary = json.loads((tmp_path / name / "SOTU-era.json").read_text())
        summary["columns"]["SOTU-era"]["accuracy"] = {"0": summary["columns"]["SOTU-era"]["accuracy"]["0"]}
        (tmp_path / name / "SOTU-era.json").write_text(json.dumps(summary))
    line = difference_line(tmp_path, "headless", "vanilla")
    assert line.startswith("headless − vanilla: -2.00 accuracy points (1 fine-tuning seed") and "±" not in line
    table = demo.render_table({n: {"config": c, "cpu_s": cpu, "updates": 1200, "tokens_seen": 12000,
                                   "cpu_s_per_update": cpu / 1200, "wall_s": 200.0, "peak_rss_mib": 800.0,
                                   "parameters": 1000, "final_valid_loss_bits": 7.0, "masked_top1_accuracy": 0.1}
                               for n, c, cpu in (("headless", "hmlm_tiny", 150.0), ("vanilla", "mlm_tiny", 180.0))},
                              difference=line)
    assert table_rows(table)["updates (the same seeded batches)"] == ["1,200", "1,200"]
    assert table_rows(table)["CPU seconds per update (kernel's count, one thread)"] == ["0.125", "0.150"]
    assert table.endswith(f"Downstream (SOTU-era dev accuracy), {line}")
    summary["columns"]["SOTU-era"]["accuracy"] = {"5": 0.5}  # vanilla's only seed is not headless's
    (tmp_path / "vanilla" / "SOTU-era.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match=r"no seed in common \(\[0\] vs \[5\]\)"):
        difference_line(tmp_path, "headless", "vanilla")
