"""Fine-tuning tiny exported encoders end to end: loading checks, learning, the balanced loss in the
Trainer, resume, the GLUE / SuperGLUE / XNLI command lines and their tables, the demo check."""
import json
import math
import shutil

import pytest

from helpers.tables import markdown_rows
import torch
from safetensors.torch import load_file, save_file

from test_evaluation_helpers import make_model, write_glue, write_sotu, write_superglue, write_xnli

from fairseq_headless.evaluation.suite import ModelRef, SuiteRunner
from fairseq_headless.evaluation.cli import suite_main, xnli_main
from fairseq_headless.evaluation.finetune import FinetuneConfig, finetune
from fairseq_headless.evaluation.model_loading import load_model, load_tokenizer
from fairseq_headless.evaluation.task_data import load_split
from fairseq_headless.evaluation.tasks import GLUE_TASKS, SUPERGLUE_TASKS
from fairseq_headless.cli import InputError

# Tiny models learn in a few dozen steps only with a far larger LR than the paper's 1e-5.
FAST = ["--lr", "3e-3", "--batch-size", "16", "--seeds", "1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    make_model(root / "hmlm", "headless")
    make_model(root / "mlm", "vanilla", seed=1)
    write_glue(root / "glue", n_train=256, n_dev=64)
    return root


def test_exports_load_with_only_a_new_head(root):
    saved = load_file(root / "hmlm" / "model.safetensors")
    model, summary = load_model(root / "hmlm", GLUE_TASKS["SST-2"])
    # the headless export's own type (trust_remote_code), with RoBERTa's classification head
    assert summary == ("hmlm: encoder loaded into HeadlessRobertaForSequenceClassification; "
                       "new head classifier.dense, classifier.out_proj")
    assert type(model.classifier).__module__ == "transformers.models.roberta.modeling_roberta"
    for key, value in saved.items():  # every encoder weight arrived unchanged (a copy, no arithmetic: bit-equal)
        assert torch.equal(model.state_dict()[key], value), key
    model, summary = load_model(root / "mlm", SUPERGLUE_TASKS["COPA"])
    assert type(model).__name__ == "RobertaForMultipleChoice"
    assert summary.endswith("new head classifier, roberta.pooler.dense; unused pretraining weights: lm_head")
    vanilla = load_file(root / "mlm" / "model.safetensors")
    assert torch.equal(model.roberta.embeddings.word_embeddings.weight,
                       vanilla["roberta.embeddings.word_embeddings.weight"])


def test_broken_exports_are_refused(root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(root / "hmlm", broken)
    weights = load_file(broken / "model.safetensors")  # a converter that misnamed one layer
    save_file({k.replace("encoder.layer.1.", "encoder.layers.1."): v for k, v in weights.items()},
              broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError,
                       match=r"broken: 16 encoder weights did not load .*roberta\.encoder\.layer\.1\."):
        load_model(broken, GLUE_TASKS["SST-2"])

    no_template = tmp_path / "no_template"
    shutil.copytree(root / "hmlm", no_template)
    tokenizer_json = json.loads((no_template / "tokenizer.json").read_text())
    tokenizer_json["post_processor"] = None
    (no_template / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(InputError, match=r"no_template: its tokenizer adds no <s> at the start"):
        load_tokenizer(no_template)

    other_pad = tmp_path / "other_pad"
    shutil.copytree(root / "hmlm", other_pad)
    config = json.loads((other_pad / "config.json").read_text())
    (other_pad / "config.json").write_text(json.dumps({**config, "pad_token_id": 3}))
    with pytest.raises(InputError, match=r"tokenizer pad id 1 differs from the model's pad_token_id 3"):
        load_tokenizer(other_pad)

    with pytest.raises(InputError, match=r"--max-length 200: .* takes at most 128 tokens"):
        finetune(root / "hmlm", GLUE_TASKS["SST-2"], [], {}, FinetuneConfig(max_length=200), 0, tmp_path / "r", "x")


def test_the_trainer_uses_the_balanced_loss(root, tmp_path):
    """At initialisation (uniform predictions) the balanced loss of a 2-class batch is 2 ln 2, cross-entropy ln 2."""
    spec = GLUE_TASKS["SST-2"]
    train = load_split(spec, "train", root / "glue", max_examples=64)
    dev = {"dev": load_split(spec, "dev", root / "glue")}
    for loss, expected in (("balanced", 2 * math.log(2)), ("ce", math.log(2))):
        config = FinetuneConfig(learning_rate=1e-7, epochs=1, batch_size=16, loss=loss)
        run = finetune(root / "hmlm", spec, train, dev, config, 0, tmp_path / loss, "x")
        assert run.epochs[0]["train_loss"] == pytest.approx(expected, abs=0.02), loss


class Interrupt(Exception):
    pass


def test_resume_from_the_last_finished_epoch(root, tmp_path):
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        def __init__(self, stop_at_epoch=None):
            self.steps, self.stop_at_epoch = 0, stop_at_epoch

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

        def on_epoch_end(self, args, state, control, **kwargs):
            if round(state.epoch) == self.stop_at_epoch:  # killed before epoch 2's checkpoint
                raise Interrupt

    spec = GLUE_TASKS["SST-2"]
    train = load_split(spec, "train", root / "glue", max_examples=64)  # 4 steps an epoch
    dev = {"dev": load_split(spec, "dev", root / "glue")}
    config = FinetuneConfig(learning_rate=3e-3, epochs=3, batch_size=16)
    bench = SuiteRunner(tmp_path / "out")
    model = ModelRef("hmlm", root / "hmlm")
    settings = {"task": "SST-2", **config.settings()}
    first = Steps(stop_at_epoch=2)
    with pytest.raises(Interrupt):
        bench.run(model, "SST-2", settings, [0], lambda seed, run_dir: finetune(
            model.path, spec, train, dev, config, seed, run_dir, "x", callbacks=(first,)))
    run_dir = tmp_path / "out" / "hmlm" / "runs" / "SST-2" / "seed-0"
    assert first.steps == 8 and [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-4"]
    assert not json.loads((run_dir / "result.json").read_text())["done"]  # started, not finished
    # a crash while epoch 2's checkpoint was being written: a newer folder without the marker
    partial = run_dir / "checkpoint-8"
    shutil.copytree(run_dir / "checkpoint-4", partial)
    (partial / "checkpoint_complete").unlink()
    (partial / "trainer_state.json").write_text('{"global_ste')

    second = Steps()
    results = bench.run(model, "SST-2", settings, [0], lambda seed, run_dir: finetune(
        model.path, spec, train, dev, config, seed, run_dir, "x", callbacks=(second,)))
    assert second.steps == 8  # epochs 2 and 3 only: resumed from checkpoint-4, not the partial one
    record = results["0"]
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert record == json.loads((run_dir / "result.json").read_text())["result"]
    assert record["score"] == max(e["score"] for e in record["epochs"])
    assert not list(run_dir.glob("checkpoint-*"))  # removed once the result is written

    # an uninterrupted run from scratch agrees on epoch 1 (the resumed run kept its metrics)
    fresh = finetune(model.path, spec, train, dev, config, 0, tmp_path / "fresh", "x")
    assert fresh.epochs[0]["dev"] == record["epochs"][0]["dev"]

    with pytest.raises(InputError, match=r"was made with other settings \(epochs differ\)"):
        bench.run(model, "SST-2", {**settings, "epochs": 4}, [0], None)


def _run(main, argv, capsys, *extra):
    code = main([str(a) for a in argv], *extra)
    out, err = capsys.readouterr()
    return code, out, err


def test_glue_cli_learns_and_writes_tab1(root, capsys):
    out = root / "glue_out"
    argv = ["--model", root / "hmlm", "--tasks", "SST-2,MRPC,STS-B,RTE", "--output", out,
            "--data-dir", root / "glue", "--epochs", "3", *FAST]
    code, _, err = _run(suite_main, argv, capsys, "glue")
    assert code == 0, err
    # a second model in the same --output adds its row (here on one task only)
    vanilla = ["--model", root / "mlm", "--tasks", "SST-2", "--output", out, "--data-dir", root / "glue",
               "--epochs", "3", *FAST]
    code, table, err = _run(suite_main, vanilla, capsys, "glue")
    assert code == 0, err
    rows = markdown_rows(table)
    assert rows[0] == ["model", "MRPC", "STS-B", "SST-2", "Avg.", "RTE"]  # Tab.1's order, RTE apart
    assert [row[0] for row in rows[1:3]] == ["hmlm", "mlm"]
    # no average for a row that lacks one of the averaged tasks
    assert rows[2][:3] == ["mlm", "—", "—"] and rows[2][-2:] == ["—", "—"]
    assert ["model", "MRPC F1", "STS-B Pearson"] in rows
    for name in ("hmlm", "mlm"):
        summary = json.loads((out / name / "SST-2.json").read_text())
        assert summary["columns"]["SST-2"]["accuracy"]["0"] > 0.9  # a trivially separable task is learnt
        assert summary["settings"]["learning_rate"] == 3e-3 and summary["settings"]["loss"] == "balanced"
        run = json.loads((out / name / "runs" / "SST-2" / "seed-0" / "result.json").read_text())["result"]
        assert run["score"] == summary["columns"]["SST-2"]["accuracy"]["0"] == max(e["score"] for e in run["epochs"])
        assert not list((out / name / "runs").glob("*/*/checkpoint-*"))
    mrpc = json.loads((out / "hmlm" / "MRPC.json").read_text())["columns"]["MRPC"]
    stsb = json.loads((out / "hmlm" / "STS-B.json").read_text())["columns"]["STS-B"]
    assert set(mrpc) == {"accuracy", "f1"} and set(stsb) == {"spearman", "pearson"}
    # the row's cells and average are the JSON's numbers (x 100); the average leaves RTE out
    cols = {t: json.loads((out / "hmlm" / f"{t}.json").read_text())["columns"][t] for t in ("MRPC", "STS-B", "SST-2")}
    avg = (cols["MRPC"]["accuracy"]["0"] + cols["STS-B"]["spearman"]["0"] + cols["SST-2"]["accuracy"]["0"]) / 3
    assert rows[1][4] == f"{100 * avg:.2f}"  # one seed: the value alone, no "± 0.00"
    assert (out / "results_glue.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results_glue.json").read_text())["main"]["mlm"]["SST-2"] == \
        json.loads((out / "mlm" / "SST-2.json").read_text())["columns"]["SST-2"]

    # the same call again reuses every finished run; other settings are refused; --force redoes
    code, again, err = _run(suite_main, argv, capsys, "glue")
    assert code == 0 and again == table and err.count("finished before, reusing") == 4
    code, _, err = _run(suite_main, [*argv, "--weight-decay", "0.01"], capsys, "glue")
    assert code == 2 and "other settings (weight_decay differ); use another --output, or --force" in err
    forced = ["--model", root / "hmlm", "--tasks", "SST-2", "--output", out, "--data-dir", root / "glue",
              "--epochs", "1", "--force", *FAST]
    code, table, err = _run(suite_main, forced, capsys, "glue")
    assert code == 0 and "reusing" not in err
    run = json.loads((out / "hmlm" / "runs" / "SST-2" / "seed-0" / "result.json").read_text())
    assert run["settings"]["epochs"] == 1 and len(run["result"]["epochs"]) == 1


def test_superglue_cli(root, capsys, tmp_path):
    data = write_superglue(tmp_path / "sg", n_train=16, n_dev=8)
    out = tmp_path / "out"
    code, table, err = _run(suite_main, ["--model", f"headless={root / 'hmlm'}", "--tasks", "all", "--output", out,
                                         "--data-dir", data, "--epochs", "2", "--lr", "3e-3", "--batch-size", "8",
                                         "--seeds", "2"], capsys, "superglue")
    assert code == 0, err
    rows = markdown_rows(table)
    assert rows[0] == ["model", "BoolQ", "CB", "COPA", "WiC", "Avg."] and rows[1][0] == "headless"
    copa = json.loads((out / "headless" / "COPA.json").read_text())
    assert "RobertaForMultipleChoice" in copa["seeds"]["0"]["model"]
    cols = {t: json.loads((out / "headless" / f"{t}.json").read_text())["columns"][t]["accuracy"]
            for t in ("BoolQ", "CB", "COPA", "WiC")}
    per_seed = [sum(cols[t][s] for t in cols) / 4 for s in ("0", "1")]
    mean = sum(per_seed) / 2
    std = abs(per_seed[0] - per_seed[1]) / math.sqrt(2)
    assert rows[1][5] == f"{100 * mean:.2f} ± {100 * std:.2f}"


def test_xnli_cli_both_protocols(root, capsys, tmp_path):
    data = write_xnli(tmp_path / "xnli", languages=("en", "de"), n_train=16, n_dev=8)
    out = tmp_path / "out"
    code, table, err = _run(xnli_main, ["--model", root / "hmlm", "--output", out, "--data-dir", data,
                                        "--languages", "en,de", "--epochs", "2", "--lr", "3e-3", "--batch-size", "8",
                                        "--seeds", "1"], capsys)
    assert code == 0, err
    assert "## Fine-tuned on English only (cross-lingual zero-shot)" in table
    assert "## Fine-tuned on target language (translate-train)" in table
    assert markdown_rows(table).count(["model", "en", "de", "Avg."]) == 2
    zero = json.loads((out / "hmlm" / "XNLI-zero-shot.json").read_text())
    assert set(zero["columns"]) == {"en", "de"} and zero["settings"]["dev_languages"] == ["en", "de"]
    assert zero["settings"]["weight_decay"] == 0.01 and zero["settings"]["loss"] == "ce"
    record = zero["seeds"]["0"]
    best = record["epochs"][record["best_epoch"] - 1]
    assert best["score"] == pytest.approx((best["dev"]["en"]["accuracy"] + best["dev"]["de"]["accuracy"]) / 2)
    for lang in ("en", "de"):
        tt = json.loads((out / "hmlm" / f"XNLI-translate-train-{lang}.json").read_text())
        assert list(tt["columns"]) == [lang] and tt["section"] == "translate-train"
    code, _, err = _run(xnli_main, ["--model", root / "hmlm", "--output", out, "--data-dir", data,
                                    "--languages", "en,xx"], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --languages: 'xx' is not an XNLI language")


def test_demo_check(root, tmp_path):
    from studies.demo.downstream import run_demo_check

    corpus = write_sotu(tmp_path / "sotu")
    table = run_demo_check({"headless": root / "hmlm"}, corpus, tmp_path / "out", epochs=1, train_per_era=12,
                           dev_per_era=4)
    assert [row[0] for row in markdown_rows(table)] == ["model", "headless", "random-init"]  # the control last
    assert "not a task of the paper" in table
    control = json.loads((tmp_path / "out" / "random-init" / "SOTU-era.json").read_text())
    assert control["settings"]["train_per_era"] == 12 and (tmp_path / "out" / "results_sotu-era.png").exists()
