"""python -m studies.vocab_sweep (paper §6, Fig.6): a two-size sweep of tiny
encoders on CPU, checked against the files it was made from: dict.txt, the fairseq training logs, the GLUE suite's
own result JSON."""
import json
import os
import re
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_evaluation_helpers import polar_sentences, write_glue

from fairseq_headless import cli
from fairseq_headless.stages import Stage, StageSettingsError
from studies import training_runs
from studies.training_runs import LAUNCH_MARKER, merge_overrides, read_log, summarize_log, throughput
from studies.vocab_sweep import sweep as vocab_sweep

SIZES = (60, 120)
TASKS = ("STS-B", "SST-2")  # Tab.1 order
EMBED_DIM = 128  # roberta_tiny


def write_corpus(path: Path) -> Path:
    """Lines of three GLUE-fixture sentences: the tokenizers learn the GLUE fixture's words."""
    sentences = [s for s, _ in polar_sentences(900, seed=5)]
    path.write_text("\n".join(" ".join(sentences[i:i + 3]) + " ." for i in range(0, 900, 3)) + "\n")
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("sweep_vocab")
    corpus = write_corpus(root / "corpus.txt")
    glue = write_glue(root / "glue", n_train=32, n_dev=16)
    out = root / "out"
    argv = ["--corpus", str(corpus), "--sizes", ",".join(map(str, SIZES)), "--output", str(out), "--tiny",
            "--max-update", "6", "--train-overrides", "common.log_interval=2",
            "--valid-lines", "40", "--test-lines", "5",
            "--glue-data", str(glue), "--glue-tasks", ",".join(TASKS), "--glue-seeds", "1", "--glue-epochs", "1",
            "--glue-args", "--threads 1"]
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # the fairseq-hydra-train children
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code = cli.run(vocab_sweep.main, argv, failures=(training_runs.TrainingError,))
    yield SimpleNamespace(root=root, out=out, argv=argv, code=code, corpus=corpus)
    torch.set_num_threads(threads)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def markers(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(out.glob("vocab_*/stages/*.json"))}


def test_sweep_numbers_match_their_sources(sweep):
    from tokenizers import Tokenizer

    assert sweep.code == 0
    summary = json.loads((sweep.out / "sweep.json").read_text())
    assert [e["requested"] for e in summary["sizes"]] == list(SIZES)
    assert summary["glue_tasks"] == list(TASKS)
    rows = {}
    for entry in summary["sizes"]:
        folder = sweep.out / f"vocab_{entry['requested']}"
        # dictionary rows: fairseq's 4 specials + the lines of dict.txt; tokenizer size: the tokenizer file
        dict_lines = (folder / "data" / "dict.txt").read_text().splitlines()
        assert entry["dictionary_rows"] == 4 + len(dict_lines)
        assert entry["dictionary_rows"] % 8 == 0
        assert entry["embedding_rows"] == entry["dictionary_rows"] + 1  # <mask>
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
        assert entry["tokenizer_vocab"] == tokenizer.get_vocab_size() == entry["requested"]
        assert tokenizer.normalizer.__class__.__name__ == "BertNormalizer"
        rows[entry["requested"]] = entry["dictionary_rows"]

        results = json.loads((folder / "glue" / "results_glue.json").read_text())["main"]
        for model in ("headless", "vanilla"):
            r = entry["models"][model]
            # throughput: fairseq's own wps/ups of the train_inner json records, the first one left out
            log = Path(r["log"]).read_text()
            inner = [json.loads(m) for m in re.findall(r"\[train_inner\]\[INFO\] - (\{.*\})", log)]
            assert [int(x["num_updates"]) for x in inner] == [2, 4, 6]
            assert r["tokens_per_s"] == pytest.approx(statistics.fmean(float(x["wps"]) for x in inner[1:]), abs=1e-9)
            assert r["updates_per_s"] == pytest.approx(statistics.fmean(float(x["ups"]) for x in inner[1:]), abs=1e-9)
            assert r["throughput"]["intervals"] == 2 and not r["throughput"]["includes_warmup"]
            assert r["updates"] == 6
            params = int(re.search(r"num\. shared model params: ([\d,]+)", log)[1].replace(",", ""))
            assert r["params"] == params
            # GLUE: the suite's own per-seed numbers, x 100; the average is the mean over the tasks
            metric = {"STS-B": "spearman", "SST-2": "accuracy"}
            expected = {t: 100 * results[model][t][metric[t]]["0"] for t in TASKS}
            assert r["glue"]["tasks"] == pytest.approx(expected, abs=1e-9)
            assert r["glue"]["average"] == pytest.approx(sum(expected.values()) / len(TASKS), abs=1e-9)
            assert Path(r["hf"], "config.json").is_file()
        # the vanilla twin has the LM head on top: dense H x H + bias, layer norm, and one output bias per row
        by_model = entry["models"]
        head = EMBED_DIM * EMBED_DIM + EMBED_DIM + 2 * EMBED_DIM + entry["embedding_rows"]
        assert by_model["vanilla"]["params"] - by_model["headless"]["params"] == head
    # more dictionary rows: one embedding row each (headless), plus an output bias (vanilla)
    small, large = summary["sizes"]
    extra = rows[SIZES[1]] - rows[SIZES[0]]
    assert large["models"]["headless"]["params"] - small["models"]["headless"]["params"] == extra * EMBED_DIM
    assert large["models"]["vanilla"]["params"] - small["models"]["vanilla"]["params"] == extra * (EMBED_DIM + 1)

    png = (sweep.out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (sweep.out / "sweep.md").read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    for entry in summary["sizes"]:
        for model in ("headless", "vanilla"):
            avg = entry["models"][model]["glue"]["average"]
            assert [str(entry["requested"]), f"{model} (", f"{avg:.2f}"] in [[r[0], r[3][:len(model) + 2], r[-1]]
                                                                               for r in rows]


def test_rerun_skips_every_finished_stage(sweep, capsys, monkeypatch):
    before = markers(sweep.out)
    assert len(before) == 2 * 7  # tokenizer, data, 2 trainings, 2 exports, glue
    summary = json.loads((sweep.out / "sweep.json").read_text())
    capsys.readouterr()
    called = []
    for work in ("train_tokenizer", "prepare", "pretrain", "export", "glue"):  # what a stage would recompute
        monkeypatch.setattr(vocab_sweep, work, lambda *a, _work=work, **k: called.append(_work))
    assert cli.run(vocab_sweep.main, sweep.argv) == 0
    out = capsys.readouterr().err
    assert called == []  # nothing recomputed (rather than a wall-clock bound, which a busy machine breaks)
    assert out.count("skipped") == 14 and "running" not in out
    assert markers(sweep.out) == before  # no marker rewritten
    assert json.loads((sweep.out / "sweep.json").read_text()) == summary


def test_models_trained_on_another_device_are_reused(sweep, capsys, monkeypatch):
    """Trained here on CPU, rerun where CUDA is visible (no CPU overrides): export and GLUE settings do not
    depend on the device, and the finished trainings are reused."""
    before = markers(sweep.out)
    summary = json.loads((sweep.out / "sweep.json").read_text())
    assert {e["models"][m]["device_overrides"] == list(training_runs.CPU_OVERRIDES)
            for e in summary["sizes"] for m in ("headless", "vanilla")} == {True}
    monkeypatch.setattr(training_runs, "device_overrides", lambda: [])
    capsys.readouterr()
    assert cli.run(vocab_sweep.main, sweep.argv) == 0
    assert capsys.readouterr().err.count("skipped") == 14
    assert markers(sweep.out) == before
    assert json.loads((sweep.out / "sweep.json").read_text()) == summary


def test_other_settings_are_refused(sweep, capsys):
    argv = [a if a != "6" else "7" for a in sweep.argv]  # --max-update 7
    before = markers(sweep.out)
    assert cli.run(vocab_sweep.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("error")] == err[-1:]  # after the progress lines
    assert err[-1].startswith("error: ") and "max_update" in err[-1] and "--force" in err[-1]
    assert markers(sweep.out) == before


def test_force_redoes_only_the_requested_sizes(sweep, capsys):
    first, second = (sweep.out / f"vocab_{s}" for s in SIZES)
    before = markers(sweep.out)
    argv = [a for a in sweep.argv]
    argv[argv.index("--sizes") + 1] = str(SIZES[0])
    assert cli.run(vocab_sweep.main, argv + ["--force", "--stop-after", "tokenizer"]) == 0
    out = capsys.readouterr().err
    assert "skipped" not in out and "stopped after stage 'tokenizer'" in out
    after = markers(sweep.out)
    # the forced size: remade up to the tokenizer, its later stages gone; the other size untouched
    assert sorted(p.name for p in (first / "stages").iterdir()) == ["tokenizer.json"]
    assert sorted(p.name for p in first.iterdir()) == ["stages", "tokenizer"]
    assert after[first / "stages" / "tokenizer.json"] > before[first / "stages" / "tokenizer.json"]
    assert {p: t for p, t in after.items() if second in p.parents} == \
        {p: t for p, t in before.items() if second in p.parents}
    assert not (sweep.out / "sweep.json").exists()  # a summary with the old numbers of that size is gone


@pytest.mark.parametrize("change, message", [
    ({"--sizes": ""}, "--sizes"),
    ({"--sizes": "8000,abc"}, "'abc' is not a vocabulary size"),
    ({"--sizes": "8000,0"}, "'0' is not a vocabulary size"),
    ({"--corpus": "/nonexistent/corpus.txt"}, "--corpus /nonexistent/corpus.txt: no such file"),
    ({"--glue-args": "--tasks CoLA"}, "--glue-args: --tasks is set by the sweep"),
    ({"--headless-config": "nope"}, "no configs/nope.yaml"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, change, message):
    corpus = write_corpus(tmp_path / "corpus.txt")
    options = {"--corpus": str(corpus), "--sizes": "60", "--output": str(tmp_path / "out"), **change}
    argv = [x for k, v in options.items() for x in (k, v)]
    assert cli.run(vocab_sweep.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_missing_required_option_is_one_error_line(capsys):
    assert cli.run(vocab_sweep.main, ["--sizes", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--corpus" in err[0]


# --- the launcher and log reader (studies/training_runs.py) ------------------------------------

def _inner(update, wps, ups):
    record = {"epoch": 1, "loss": "5.0", "wps": str(wps), "ups": str(ups), "num_updates": str(update)}
    return f"[2024-01-01 00:00:00,000][train_inner][INFO] - {json.dumps(record)}"


def test_throughput_leaves_out_the_first_interval_of_every_launch():
    log = "\n".join([
        f"{LAUNCH_MARKER} first", "[x][fairseq_cli.train][INFO] - num. shared model params: 1,234 (num. trained: 1,000)",
        _inner(10, 100.0, 1.0), _inner(20, 300.0, 3.0), _inner(30, 500.0, 5.0),
        '[x][valid][INFO] - {"epoch": 1, "valid_loss": "4.5", "valid_num_updates": "30"}',
        f"{LAUNCH_MARKER} resumed from checkpoint_last.pt", _inner(40, 50.0, 0.5), _inner(50, 700.0, 7.0),
    ])
    launches = read_log(log)
    assert len(launches) == 2 and launches[0].params == 1234 and launches[0].params_trained == 1000
    result = throughput(launches)
    assert result["tokens_per_s"] == pytest.approx((300 + 500 + 700) / 3, abs=1e-12)
    assert result["updates_per_s"] == pytest.approx((3 + 5 + 7) / 3, abs=1e-12)
    assert result["intervals"] == 3 and result["launches"] == 2 and not result["includes_warmup"]
    summary = summarize_log(log)
    assert summary["updates"] == 50 and summary["final_valid_loss_bits"] == 4.5 and summary["params"] == 1234
    # a run of one log interval: nothing left after the warm-up, so it is kept and flagged
    short = throughput(read_log(_inner(10, 100.0, 1.0)))
    assert short["tokens_per_s"] == 100.0 and short["includes_warmup"]
    # fairseq-train's (argparse) log layout reads the same
    plain = "2024-01-01 00:00:00 | INFO | train_inner | " + json.dumps({"wps": "42.5", "ups": "2", "num_updates": "5"})
    assert read_log(plain)[0].records["train_inner"][0]["wps"] == 42.5


def test_merge_overrides_last_writer_wins():
    merged = merge_overrides(["a.b=1", "c=2"], ["+model.x=3"], ["a.b=4", "++model.x=5"])
    assert merged == ["c=2", "a.b=4", "++model.x=5"]


def test_stage_marker_settings(tmp_path):
    stage = Stage(tmp_path / "s.json", {"size": 8, "tuple": (1, 2)})
    assert stage.result() is None
    stage.start()
    assert Stage(tmp_path / "s.json", {"size": 8, "tuple": [1, 2]}).result() is None  # started, not finished
    stage.finish({"rows": 16})
    assert Stage(tmp_path / "s.json", {"size": 8, "tuple": [1, 2]}).result() == {"rows": 16}
    with pytest.raises(StageSettingsError, match=r"size differ"):
        Stage(tmp_path / "s.json", {"size": 9, "tuple": [1, 2]}).result()
    # a resume_only setting (the training device): ignored once finished, compared while unfinished
    Stage(tmp_path / "t.json", {"size": 8, "device": ["common.cpu=true"]}).start()
    with pytest.raises(StageSettingsError, match=r"device differ"):
        Stage(tmp_path / "t.json", {"size": 8, "device": []}, resume_only=("device",)).result()
    Stage(tmp_path / "t.json", {"size": 8, "device": ["common.cpu=true"]}).finish({"rows": 16})
    assert Stage(tmp_path / "t.json", {"size": 8, "device": []}, resume_only=("device",)).result() == {"rows": 16}
    with pytest.raises(StageSettingsError, match=r"size differ"):
        Stage(tmp_path / "t.json", {"size": 9, "device": []}, resume_only=("device",)).result()


def test_speed_only_glue_args_stay_out_of_the_stage_settings():
    options = ["--threads", "1", "--lr", "2e-5", "--keep-checkpoints", "--eval-batch-size=64", "--loss", "ce"]
    assert vocab_sweep.result_glue_args(options) == ["--lr", "2e-5", "--loss", "ce"]
