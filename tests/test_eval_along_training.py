"""python -m studies.along_training and studies.along_training.batch_size_sweep (paper Figs.3-5, 7): real fairseq-hydra-train runs of the tiny decoders with two interval
checkpoints each; the x values against the training logs, the scores against scripts/eval_lambada.py run as a command
line, the cache, and the batch-size sweep end to end."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import BIN, REPO, write_markov_corpus

from fairseq_headless import cli
from fairseq_headless.data.prepare import Options, prepare_data
from fairseq_headless.stages import Stage
from studies import training_runs
from studies.along_training import batch_size_sweep as sweep
from studies.along_training import evaluate as along
from studies.along_training.report import series_of

CPU = ["common.cpu=true", "common.fp16=false", "distributed_training.distributed_world_size=1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def lambada_direct(checkpoint, passages, output):
    """scripts/eval_lambada.py's own result for one checkpoint, run as its command line."""
    proc = subprocess.run([sys.executable, REPO / "scripts" / "eval_lambada.py", "--model", checkpoint, "--data",
                           passages, "--output", output, "--device", "cpu"], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return json.loads(output.read_text())


def pretrain(config, data, save_dir, *overrides):
    """A few updates with a checkpoint every 3 and a json log line after every update."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [str(BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "configs"), "--config-name", config,
         f"task.data={data}", f"checkpoint.save_dir={save_dir}", f"common.user_dir={REPO / 'fairseq_headless'}",
         *CPU, "optimization.max_update=6", "checkpoint.save_interval_updates=3", "checkpoint.keep_interval_updates=-1",
         "dataset.validate_interval_updates=3", "dataset.batch_size=4", "common.log_interval=1",
         "common.log_format=json", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A data folder (its tokenizer is what LAMBADA needs), LAMBADA-style passages, two trained runs."""
    root = tmp_path_factory.mktemp("along")
    write_markov_corpus(root / "corpus.txt", 500, seed=21)
    # Documents of 20 lines: valid/test are whole documents (docs/data.md), so --valid-lines 40 is 40 lines,
    # and validation stays as short as the training clock checks below allow.
    lines = (root / "corpus.txt").read_text().splitlines()
    (root / "corpus.txt").write_text("".join("\n".join(lines[i:i + 20]) + "\n\n" for i in range(0, len(lines), 20)))
    write_markov_corpus(root / "heldout.txt", 8, seed=22)
    prepare_data(Options(inputs=[(None, str(root / "corpus.txt"))], output=root / "data", vocab_size=100, workers=1,
                         valid_lines=40))
    passages = [line for line in (root / "heldout.txt").read_text().splitlines() if line.strip()]
    (root / "lambada.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    pretrain("hlm_tiny", root / "data", root / "hlm_tiny")
    # The vanilla run comes from the sweep (batch 4 is the hlm_tiny run's batch): one fairseq start-up less.
    assert cli.run(sweep.main, list(map(str, sweep_argv(root)))) == 0
    return root


def sweep_argv(root):
    return ["--data", root / "data", "--lambada", root / "lambada.jsonl", "--output", root / "sweep",
            "--configs", "lm_tiny", "--batch-sizes", "4,2", "--max-update", "6", "--save-interval-updates", "3",
            "--no-finetune", "--cpu", "--override", "common.log_interval=1", "--override",
            "dataset.validate_interval_updates=3"]


def train_inner(log_path):
    """{num_updates: (wpb, wall)} straight from the json log lines."""
    lines = {}
    for line in log_path.read_text().splitlines():
        if "[train_inner]" in line:
            record = json.loads(line[line.index("{"):])
            lines[int(record["num_updates"])] = (float(record["wpb"]), float(record["wall"]))
    return lines


def test_along_training_decoders_with_causal_finetuning(workspace, tmp_path, capsys):
    out = tmp_path / "along"
    argv = ["--run", f"hlm={workspace / 'hlm_tiny'}", f"lm={workspace / 'sweep' / 'runs' / 'lm_tiny-b4'}", "--lambada",
            workspace / "lambada.jsonl", "--finetune-config", "hlm_tiny_ft", "--cpu", "--output", out,
            "--finetune-override", "optimization.max_update=2", "--finetune-override", "dataset.batch_size=4"]
    assert cli.run(along.main, list(map(str, argv))) == 0
    summary = json.loads((out / "along_training.json").read_text())
    assert summary["kind"] == "lambada" and set(summary["series"]) == {"hlm", "hlm + FT", "lm"}
    assert (out / "along_training.png").stat().st_size > 10_000 and (out / "along_training.md").is_file()

    for name, folder in (("hlm", "hlm_tiny"), ("lm", "sweep/runs/lm_tiny-b4")):
        points = summary["series"][name]
        assert [p["updates"] for p in points] == [3, 6]  # checkpoint_last (6) is the same point as checkpoint_1_6
        log = train_inner(workspace / folder / "hydra_train.log")
        for p in points:
            # tokens = the sum of every update's ntokens, as the log reports them one update per line
            assert p["tokens"] == sum(wpb for u, (wpb, _) in log.items() if u <= p["updates"])
            # hours: fairseq's training clock, read when the checkpoint was saved. The log prints the same
            # clock rounded to whole seconds; the save comes after that update's line and before the next
            # one's (an order, not a duration: validation between the two takes what a busy machine gives)
            assert p["log_wall_seconds"] == log[p["updates"]][1] and p["hours"] > 0
            assert 3600 * p["hours"] >= p["log_wall_seconds"] - 0.5
            if p["updates"] + 1 in log:
                assert 3600 * p["hours"] <= log[p["updates"] + 1][1] + 0.5
        # the score is exactly scripts/eval_lambada.py's on that checkpoint (the last one: the same code scores all)
        expected = lambada_direct(points[-1]["checkpoint"], workspace / "lambada.jsonl", tmp_path / f"{name}.json")
        assert points[-1]["accuracy"] == pytest.approx(100 * expected["accuracy"], abs=1e-9)
        assert points[-1]["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-9)  # the same computation
        assert points[0]["perplexity"] > points[1]["perplexity"]  # 3 more updates help

    # after fine-tuning: 2 updates of 4 x 128 tokens on top of the pretraining point, a different model
    ft, before = summary["series"]["hlm + FT"], summary["series"]["hlm"]
    for p, q in zip(ft, before):
        assert p["finetune_updates"] == 2 and p["tokens"] == q["tokens"] + 2 * 4 * 128
        assert p["hours"] > q["hours"] and p["perplexity"] != pytest.approx(q["perplexity"], rel=1e-3)
        # fairseq's clock carried on from the pretraining checkpoint's: the FT point is that clock, not q + it
        point = json.loads((out / "points" / "hlm" / f"{q['updates']}.json").read_text())["result"]  # a Stage marker
        f = point["finetuned"]["progress"]
        assert f["seconds"] > 3600 * q["hours"] and p["hours"] == f["hours"]
        assert p["device_hours"] == pytest.approx(f["hours"], rel=1e-12)  # one device for both stages
    assert not list((out / "work").rglob("checkpoint*.pt"))  # scored, then deleted (--keep-finetuned keeps them)

    # a rerun evaluates nothing: every point comes from the cache, the figure is rebuilt
    capsys.readouterr()
    assert cli.run(along.main, list(map(str, argv))) == 0
    err = capsys.readouterr().err
    assert err.count(": cached (") == 4 and "fine-tuning" not in err and "LAMBADA accuracy" not in err
    assert json.loads((out / "along_training.json").read_text())["series"] == summary["series"]

    # other settings on the same output: one error line naming --force; with --force, those points are redone
    lm_only = ["--run", f"lm={workspace / 'sweep' / 'runs' / 'lm_tiny-b4'}", "--lambada", workspace / "lambada.jsonl", "--cpu",
               "--output", out, "--limit", "3"]
    assert cli.run(along.main, list(map(str, lm_only))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "--force" in err[-1] and "3.json" in err[-1]
    assert cli.run(along.main, list(map(str, lm_only + ["--force"]))) == 0
    redone = json.loads((out / "along_training.json").read_text())["series"]["lm"]
    assert [p["passages"] for p in redone] == [3, 3]


@pytest.mark.parametrize("case", ["no_folder", "no_checkpoint", "no_lambada"])
def test_bad_input_is_one_error_line(case, workspace, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = {
        "no_folder": ["--run", f"a={tmp_path / 'missing'}", "--output", tmp_path / "o"],
        "no_checkpoint": ["--run", f"a={empty}", "--output", tmp_path / "o"],
        "no_lambada": ["--run", f"a={workspace / 'lm_tiny'}", "--output", tmp_path / "o"],
    }[case]
    assert cli.run(along.main, list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and ("--run" in err[-1] or "--lambada" in err[-1])


def test_batch_size_sweep(workspace, capsys):
    out = workspace / "sweep"  # made by the workspace fixture
    summary = json.loads((out / "batch_size_sweep.json").read_text())
    assert set(summary["series"]) == {"lm_tiny-b2", "lm_tiny-b4"}
    assert (out / "batch_size_sweep.png").stat().st_size > 10_000 and (out / "batch_size_sweep.md").is_file()
    for size in (2, 4):
        points = summary["series"][f"lm_tiny-b{size}"]
        log = train_inner(out / "runs" / f"lm_tiny-b{size}" / "hydra_train.log")
        assert [p["updates"] for p in points] == [3, 6]  # as many updates for every batch size (Tab.11)
        assert [p["tokens"] for p in points] == [sum(w for u, (w, _) in log.items() if u <= n) for n in (3, 6)]
        assert all(size * 100 < p["tokens"] / p["updates"] <= size * 128 for p in points)  # B blocks of <= 128
        assert all(0 <= p["accuracy"] <= 100 and p["perplexity"] > 1 for p in points)
    # b4's last point is compared with scripts/eval_lambada.py in the test above; b2's here
    last = summary["series"]["lm_tiny-b2"][-1]
    expected = lambada_direct(last["checkpoint"], workspace / "lambada.jsonl", out / "direct-2.json")
    assert last["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-9)
    # the larger batch saw twice the tokens in as many updates
    b2, b4 = summary["series"]["lm_tiny-b2"][-1], summary["series"]["lm_tiny-b4"][-1]
    assert 1.8 < b4["tokens"] / b2["tokens"] < 2.2
    # rerun: no training, no evaluation; a changed command is refused
    capsys.readouterr()
    assert cli.run(sweep.main, list(map(str, sweep_argv(workspace)))) == 0
    err = capsys.readouterr().err
    assert err.count("not retrained") == 2 and err.count(": cached (") == 4
    changed = sweep_argv(workspace)
    changed[changed.index("--max-update") + 1] = "8"
    assert cli.run(sweep.main, list(map(str, changed))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "another command" in err[-1] and "--force" in err[-1]


# --- hand-made checkpoints and records: the bookkeeping without training -------------------------------------


def fake_checkpoint(path, updates, ntokens, model_cfg=None, seconds=360.0, lr=0.001):
    """What fairseq saves, reduced to what training_progress reads; the wpb meter is fairseq's own AverageMeter,
    fed one update's ntokens per call as the task's reduce_metrics does."""
    from fairseq.logging.meters import AverageMeter

    wpb = AverageMeter(round=1)
    for n in ntokens:
        wpb.update(n)
    torch.save({
        "cfg": {"task": {"_name": "language_modeling", "data": "/data"}, "distributed_training":
                {"distributed_world_size": 2}, "optimization": {"lr": [lr]},
                "model": model_cfg if model_cfg is not None else {"_name": "transformer_lm_gpt2_tiny"}},
        "optimizer_history": [{"num_updates": updates}], "model": {},
        "extra_state": {"previous_training_time": seconds, "train_iterator": {"epoch": 2, "iterations_in_epoch": 0},
                        "metrics": {"default": [(180, "wpb", "AverageMeter", wpb.state_dict())]}},
    }, path)
    return path


def test_tokens_after_fairseq_reset_its_meters(tmp_path):
    from fairseq_headless.training_progress import read_progress

    exact = read_progress(fake_checkpoint(tmp_path / "a.pt", 4, [500, 510, 490, 500]))
    assert (exact.tokens, exact.tokens_counted_updates, exact.tokens_estimated) == (2000, 4, False)
    # resumed from an end-of-epoch checkpoint at update 6: fairseq reset wpb, which holds updates 7-10 only
    resumed = read_progress(fake_checkpoint(tmp_path / "b.pt", 10, [500, 510, 490, 500]))
    assert resumed.tokens == 10 * 500 and resumed.tokens_counted_updates == 4 and resumed.tokens_estimated
    assert resumed.as_dict()["tokens_estimated"] is True


def test_progress_of_a_fairseq_train_checkpoint(tmp_path):
    """fairseq-train stores the config of a model without a dataclass (RoBERTa, headless_roberta) as a Namespace."""
    from fairseq_headless.training_progress import read_progress

    path = fake_checkpoint(tmp_path / "c.pt", 2, [100, 100],
                           model_cfg=argparse.Namespace(_name="headless_roberta_tiny", encoder_layers=2))
    progress = read_progress(path)
    assert (progress.arch, progress.task, progress.world_size, progress.tokens) == (
        "headless_roberta_tiny", "language_modeling", 2, 200)


def test_finetuned_point_counts_the_pretraining_hours_once():
    # fairseq restores previous_training_time with finetune_from_model: the FT clock starts at the pretraining's
    pre = {"updates": 3, "tokens": 1000, "seconds": 360.0, "hours": 0.1, "device_hours": 0.2, "world_size": 2,
           "log_wall_seconds": None, "checkpoint": "c.pt"}
    ft = {"updates": 2, "tokens": 100, "seconds": 540.0, "hours": 0.15, "device_hours": 0.15, "world_size": 1}
    series = series_of({"hlm": [{"progress": pre, "scores": {"accuracy": 0.5}, "finetuned": {
        "progress": ft, "scores": {"accuracy": 0.25}}}]})
    point = series["hlm + FT"][0]
    assert point["tokens"] == 1100 and point["hours"] == 0.15 and point["accuracy"] == 25.0
    assert point["device_hours"] == pytest.approx(0.2 + 180 / 3600 * 1, abs=1e-12)


def test_cached_point_of_another_training_is_refused(tmp_path, monkeypatch):
    from fairseq_headless.training_progress import read_progress

    (tmp_path / "l.jsonl").write_text('{"text": "a b"}\n')
    args = along.build_parser().parse_args(["--run", str(tmp_path), "--output", str(tmp_path / "out"),
                                            "--lambada", str(tmp_path / "l.jsonl")])
    along.check_evaluation_options(args)
    scored = []
    monkeypatch.setattr(along, "lambada_scores", lambda checkpoint, args: scored.append(checkpoint) or {
        "accuracy": 0.5, "perplexity": 2.0})
    first = read_progress(fake_checkpoint(tmp_path / "checkpoint_1_3.pt", 3, [512] * 3))
    assert along.evaluate_point("lm", first, None, "lambada", args)["scores"]["accuracy"] == 0.5
    assert along.evaluate_point("lm", first, None, "lambada", args)["scores"]["accuracy"] == 0.5  # cached
    assert len(scored) == 1
    # retrained in the same folder with another lr: same updates and tokens, another checkpoint
    again = read_progress(fake_checkpoint(tmp_path / "checkpoint_1_3.pt", 3, [512] * 3, seconds=361.5, lr=0.002))
    assert again.tokens == first.tokens and again.cfg_digest != first.cfg_digest
    with pytest.raises(cli.InputError, match=r"checkpoint differ.*--force"):
        along.evaluate_point("lm", again, None, "lambada", args)


def test_interrupted_finetuning_resumes_only_with_its_settings(tmp_path, monkeypatch):
    args = along.build_parser().parse_args(["--run", str(tmp_path), "--output", str(tmp_path / "out"),
                                            "--finetune-config", "hlm_tiny_ft"])
    along.check_evaluation_options(args)
    save_dir = tmp_path / "finetune"
    seen = []

    def fake_run(command, log_path, *args, **kwargs):  # fairseq-hydra-train: note what it would resume from, write
        seen.append(sorted(p.name for p in save_dir.iterdir()))  # its last checkpoint
        (save_dir / "checkpoint_last.pt").write_bytes(b"x")
        return training_runs.FinishedRun(command, log_path, 0, "", 0.0, None)

    monkeypatch.setattr(along, "run_training", fake_run)
    old = {"config": "hlm_tiny_ft", "overrides": ["optimization.max_update=2"]}
    new = {"config": "hlm_tiny_ft", "overrides": ["optimization.max_update=4"]}
    save_dir.mkdir()
    Stage(save_dir / along.FINETUNE_SETTINGS, old).start()
    (save_dir / "checkpoint_last.pt").write_bytes(b"interrupted")
    along.finetune(tmp_path / "pre.pt", save_dir, "/data", args, new)
    assert seen[-1] == [along.FINETUNE_SETTINGS]  # the other fine-tuning's checkpoint was cleared, not resumed
    assert Stage(save_dir / along.FINETUNE_SETTINGS, new).result() is not None
    along.finetune(tmp_path / "pre.pt", save_dir, "/data", args, new)  # same settings: resumed
    assert "checkpoint_last.pt" in seen[-1]


def test_sweep_records_its_command_before_training(tmp_path):
    out = tmp_path / "sweep"
    save_dir = out / "runs" / "lm-b2"
    marker = save_dir / sweep.DONE
    # the "training" succeeds only if the command is already recorded, as not done, when it runs
    check = [sys.executable, "-c", "import json, sys; sys.exit(json.load(open(sys.argv[1]))['done'] is not False)",
             str(marker)]
    sweep.train("lm-b2", check + ["a"], save_dir, out, force=False)
    assert Stage(marker, {"command": check[1:] + ["a"]}).result() is not None  # done
    # interrupted under command a, relaunched with command b: refused, not resumed under b
    Stage(marker, {"command": check[1:] + ["a"]}).start()
    with pytest.raises(cli.InputError, match="another command.*--force"):
        sweep.train("lm-b2", check + ["b"], save_dir, out, force=False)
    # --force retrains, and drops the old training's cached points with it
    for leftover in (out / "points" / "lm-b2" / "3.json", out / "work" / "lm-b2" / "3" / "x"):
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_text("{}")
    sweep.train("lm-b2", check + ["b"], save_dir, out, force=True)
    assert json.loads(marker.read_text())["settings"]["command"][-1] == "b"
    assert not (out / "points" / "lm-b2").exists() and not (out / "work" / "lm-b2").exists()
