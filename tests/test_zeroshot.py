"""Zero-shot suite of paper Tab.4: scripts/compare_zeroshot.py against closed-form t-tests on fixture files,
and scripts/eval_zeroshot.py running the real lm-evaluation-harness offline on a tiny exported GPT-2, checked
against an independent computation (scripts/eval_lambada.py for LAMBADA, unbatched log-likelihoods for SciQ/BoolQ)."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from helpers.tables import markdown_rows
import torch
from scipy import stats

from conftest import REPO, perplexity_rtol
from fairseq_headless import cli, lambada as eval_lambada
from fairseq_headless.evaluation.zeroshot_cli import compare_main, eval_main


def assert_one_error_line(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------------------------------------
# the comparison, on hand-made result files


def result_file(path, model, tasks):
    """A NAME.json as eval_zeroshot.py writes it; tasks: {name: (metric, higher_is_better, per-sample scores)}."""
    entries = {}
    for name, (metric, higher, scores) in tasks.items():
        scores = np.asarray(scores, dtype=np.float64)
        entries[name] = {
            "task": name, "label": {"boolq": "BoolQ", "crows_pairs_english": "CrowS-Pairs"}.get(name, name),
            "metric": metric, "value": scores.mean(), "stderr": scores.std(ddof=1) / math.sqrt(len(scores)),
            "higher_is_better": higher, "n": len(scores),
            "samples": {"doc_id": list(range(len(scores))), "doc_hash": [f"h{i}" for i in range(len(scores))],
                        metric: scores.tolist()},
        }
    path.write_text(json.dumps({"model": model, "tasks": entries}))
    return path


BOOLQ_A = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1]  # 13/16
BOOLQ_B = [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1]  # 8/16
# CrowS-Pairs: B prefers the stereotype less often (lower is better), but only slightly.
CROWS_A = [1, 1, 0, 1, 0, 1, 1, 0, 1, 1]  # 7/10
CROWS_B = [1, 0, 0, 1, 0, 1, 1, 0, 1, 1]  # 6/10


@pytest.fixture
def two_results(tmp_path):
    a = result_file(tmp_path / "hlm.json", "hlm", {"boolq": ("acc", True, BOOLQ_A),
                                                   "crows_pairs_english": ("pct_stereotype", False, CROWS_A)})
    b = result_file(tmp_path / "vanilla.json", "vanilla", {"boolq": ("acc", True, BOOLQ_B),
                                                           "crows_pairs_english": ("pct_stereotype", False, CROWS_B)})
    return a, b


def test_paired_one_tailed_test_equals_the_closed_form(two_results, tmp_path, capsys):
    a, b = two_results
    assert cli.run(compare_main, ["--results", str(a), str(b), "--output", str(tmp_path / "cmp")]) == 0
    result = json.loads((tmp_path / "cmp" / "table4.json").read_text())

    # BoolQ: d = hlm - vanilla per question; t = mean(d) / (sd(d) / sqrt(n)); p = P(T_{n-1} > t).
    d = np.array(BOOLQ_A, float) - np.array(BOOLQ_B, float)  # five +1, rest 0: mean 5/16
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert t == pytest.approx((5 / 16) / math.sqrt((5 * (11 / 16) ** 2 + 11 * (5 / 16) ** 2) / 15 / 16), rel=1e-12)
    boolq = result["tasks"]["boolq"]
    assert (boolq["best"], boolq["second"], boolq["test"]) == ("hlm", "vanilla", "paired")
    assert boolq["t"] == pytest.approx(t, rel=1e-10)  # 2.6112
    assert boolq["df"] == 15
    assert boolq["p"] == pytest.approx(stats.t.sf(t, 15), rel=1e-8)  # 0.00983
    assert boolq["significant"] is True and boolq["difference"] == pytest.approx(5 / 16)

    # CrowS-Pairs, lower is better: vanilla is best; d = hlm - vanilla (its improvement) = one +1 in ten.
    crows = result["tasks"]["crows_pairs_english"]
    d = np.array(CROWS_A, float) - np.array(CROWS_B, float)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))  # 0.1 / (0.316.../sqrt(10)) = 1.0
    assert (crows["best"], crows["second"], crows["higher_is_better"]) == ("vanilla", "hlm", False)
    assert crows["t"] == pytest.approx(1.0, rel=1e-12) and t == pytest.approx(1.0, rel=1e-12)
    assert crows["p"] == pytest.approx(stats.t.sf(1.0, 9), rel=1e-8)  # 0.1717: no dagger
    assert crows["significant"] is False and crows["difference"] == pytest.approx(-0.1)
    # the Welch test from the summaries is there too, for the record
    assert crows["welch"]["p"] == pytest.approx(stats.ttest_ind(CROWS_B, CROWS_A, equal_var=False,
                                                                alternative="less").pvalue, rel=1e-8)

    table = (tmp_path / "cmp" / "table4.md").read_text()
    rows = markdown_rows(table)
    assert ["model", "BoolQ", "CrowS-Pairs ↓"] in rows
    se_a = np.std(BOOLQ_A, ddof=1) / 4 * 100  # 10.1
    assert ["hlm", f"81.2† (±{se_a:.1f})", "70.0 (±15.3)"] in rows
    assert ["vanilla", "50.0 (±12.9)", "60.0 (±16.3)"] in rows
    assert ["BoolQ", "acc", "hlm", "vanilla", "+31.25", "paired", "2.611", "15.0", "0.009829", "†"] in rows
    png = tmp_path / "cmp" / "table4.png"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "81.2†" in capsys.readouterr().out

    # outputs are kept unless --force; the error names the option to use
    code = cli.run(compare_main, ["--results", str(a), str(b), "--output", str(tmp_path / "cmp")])
    assert_one_error_line(capsys, code, "--force")
    assert cli.run(compare_main, ["--results", str(a), str(b), "--output", str(tmp_path / "cmp"), "--force",
                                  "--alpha", "0.005"]) == 0
    assert json.loads((tmp_path / "cmp" / "table4.json").read_text())["tasks"]["boolq"]["significant"] is False


def test_welch_test_on_the_papers_published_numbers(tmp_path):
    """Tab.4 from its printed means and stderrs (no per-sample scores): BoolQ earns the dagger, SciQ does not."""
    def summary(model, boolq, sciq, crows):
        tasks = {}
        for name, (value, se, n), metric, higher in [("boolq", boolq, "acc", True), ("sciq", sciq, "acc", True),
                                                     ("crows_pairs_english", crows, "pct_stereotype", False)]:
            tasks[name] = {"metric": metric, "value": value, "stderr": se, "n": n, "higher_is_better": higher}
        (tmp_path / f"{model}.json").write_text(json.dumps({"model": model, "tasks": tasks}))
        return tmp_path / f"{model}.json"

    vanilla = summary("vanilla", (0.478, 0.009, 3270), (0.664, 0.015, 1000), (0.573, 0.012, 1677))
    hlm = summary("hlm_ft", (0.530, 0.009, 3270), (0.645, 0.015, 1000), (0.560, 0.012, 1677))
    assert cli.run(compare_main, ["--results", str(vanilla), str(hlm), "--output", str(tmp_path / "cmp")]) == 0
    tasks = json.loads((tmp_path / "cmp" / "table4.json").read_text())["tasks"]
    # equal stderrs and n: t = diff / (se * sqrt 2), Welch df = 2 (n - 1)
    for name, best, diff, se, n in [("boolq", "hlm_ft", 0.052, 0.009, 3270), ("sciq", "vanilla", 0.019, 0.015, 1000),
                                    ("crows_pairs_english", "hlm_ft", 0.013, 0.012, 1677)]:
        t = diff / (se * math.sqrt(2))
        assert tasks[name]["best"] == best and tasks[name]["test"] == "welch"
        assert tasks[name]["t"] == pytest.approx(t, rel=1e-9)
        assert tasks[name]["df"] == pytest.approx(2 * (n - 1), rel=1e-9)
        assert tasks[name]["p"] == pytest.approx(stats.t.sf(t, 2 * (n - 1)), rel=1e-7)
    assert tasks["boolq"]["significant"] and tasks["boolq"]["p"] < 1e-4  # the paper's dagger on BoolQ
    assert not tasks["sciq"]["significant"] and not tasks["crows_pairs_english"]["significant"]  # none there


def test_bad_result_files_are_one_error_line(two_results, tmp_path, capsys):
    a, b = two_results
    other = json.loads(b.read_text())
    other["tasks"]["boolq"]["samples"]["doc_hash"][3] = "another document"
    (tmp_path / "other.json").write_text(json.dumps(other))
    code = cli.run(compare_main, ["--results", str(a), str(tmp_path / "other.json"), "--output", str(tmp_path / "o")])
    assert_one_error_line(capsys, code, "different samples", "--test welch")
    code = cli.run(compare_main, ["--results", str(a), str(tmp_path / "missing.json"), "--output", str(tmp_path / "o")])
    assert_one_error_line(capsys, code, "missing.json", "eval_zeroshot.py")
    code = cli.run(compare_main, ["--results", str(a), "--output", str(tmp_path / "o")])
    assert_one_error_line(capsys, code, "at least two")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# the real lm-evaluation-harness, offline, on a tiny exported GPT-2

SCIQ = [
    {"support": "  The sun is a star at the centre of the solar system.", "question": "What is the sun?",
     "distractor1": "a planet", "distractor2": "a moon", "distractor3": "a comet", "correct_answer": "a star"},
    {"support": "", "question": "At what temperature does water boil?", "distractor1": "50 degrees",
     "distractor2": "10 degrees", "distractor3": "0 degrees", "correct_answer": "100 degrees"},
    {"support": "Models are trained on text.", "question": "What are models trained on?", "distractor1": "images",
     "distractor2": "sound", "distractor3": "video", "correct_answer": "text"},
    {"support": "A headless model has no output head.", "question": "What does a headless model lack?",
     "distractor1": "a body", "distractor2": "input embeddings", "distractor3": "layers",
     "correct_answer": "an output head"},
]
BOOLQ = [
    {"passage": "The model is tiny and runs on a laptop.", "question": "is the model tiny", "label": 1},
    {"passage": "Cats do not bark; dogs do.", "question": "do cats bark", "label": 0},
    {"passage": "The export writes a configuration file.", "question": "does the export write a file", "label": 1},
]
LAMBADA = ["the model reads the text and predicts the last word", "a headless language model has no head",
           "fairseq writes checkpoints and the export writes a folder"]


@pytest.fixture(scope="module")
def exported_gpt2(tmp_path_factory):
    """lm_tiny (GPT-2 shape) with random weights, exported by scripts/convert_to_hf.py (parity-checked)."""
    from helpers.export import prepare, run, save_checkpoint  # the export tests' helpers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("zeroshot")
    # A GPT-2 style byte-level BPE trained on the project's README (real English, so the prompts tokenize).
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    lines = [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines() if line.strip()]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(root / "tokenizer.json"))
    data = prepare(root, "--hf-tokenizer", root / "tokenizer.json")
    save_checkpoint("lm_tiny", data, root / "checkpoint.pt")
    assert run("--checkpoint", root / "checkpoint.pt", "--output", root / "hf") == 0
    files = root / "task_files"
    files.mkdir()
    for name, rows in [("sciq", SCIQ), ("boolq", BOOLQ), ("lambada_openai", [{"text": t} for t in LAMBADA])]:
        (files / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "hf", files


def choice_loglikelihoods(model, tokenizer, context, choices):
    """Unbatched: log P(continuation | context) of each choice, continuation = ' ' + choice (lm-eval's delimiter)."""
    out = []
    for choice in choices:
        context_ids, continuation_ids = eval_lambada.encode_pair(
            lambda s: tokenizer.encode(s, add_special_tokens=False), context, " " + choice, tokenizer.eos_token_id)
        ids = context_ids + continuation_ids
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), dim=-1)
        rows = log_probs[len(context_ids) - 1:]
        out.append(sum(rows[j, t].item() for j, t in enumerate(continuation_ids)))
    return out


def test_lm_eval_offline_equals_an_independent_computation(exported_gpt2, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, files = exported_gpt2
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("DISABLE_MULTIPROC", "1")  # lm-eval's bootstrap pool: not on a shared 2-core machine
    code = cli.run(eval_main, ["--model", f"tiny={folder}", "--tasks", "sciq", "boolq", "lambada_openai",
                               "--task-files", str(files), "--output", str(tmp_path / "out"), "--device", "cpu",
                               "--batch-size", "3", "--bootstrap-iters", "50"])
    assert code == 0, capsys.readouterr().err[-3000:]
    result = json.loads((tmp_path / "out" / "tiny.json").read_text())
    tasks = result["tasks"]
    assert list(tasks) == ["boolq", "sciq", "lambada_openai"]  # the paper's column order
    assert result["lm_eval_version"] == "0.4.13"

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    # SciQ: lm-eval's sciq.yaml prompt; gold = correct_answer, listed last.
    expected = []
    for doc in SCIQ:
        context = f"{doc['support'].lstrip()}\nQuestion: {doc['question']}\nAnswer:"
        lls = choice_loglikelihoods(model, tokenizer, context, [doc["distractor1"], doc["distractor2"],
                                                                doc["distractor3"], doc["correct_answer"]])
        expected.append(float(int(np.argmax(lls)) == 3))
    assert tasks["sciq"]["samples"]["acc"] == expected
    assert tasks["sciq"]["value"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert tasks["sciq"]["stderr"] == pytest.approx(np.std(expected, ddof=1) / 2, abs=1e-12)
    assert tasks["sciq"]["n"] == 4 and tasks["sciq"]["samples"]["doc_id"] == [0, 1, 2, 3]
    # BoolQ: super_glue/boolq/default.yaml's prompt, choices no / yes, gold = label.
    expected = []
    for doc in BOOLQ:
        lls = choice_loglikelihoods(model, tokenizer, f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:",
                                    ["no", "yes"])
        expected.append(float(int(np.argmax(lls)) == doc["label"]))
    assert tasks["boolq"]["samples"]["acc"] == expected
    assert tasks["boolq"]["value"] == pytest.approx(np.mean(expected), abs=1e-12)
    # LAMBADA: the same numbers as scripts/eval_lambada.py on the same passages.
    reference = eval_lambada.evaluate(eval_lambada.huggingface_scorer(folder, "cpu"), LAMBADA, batch_size=2)
    assert tasks["lambada_openai"]["value"] == pytest.approx(reference["accuracy"], abs=1e-12)
    c = model.config  # lm-eval's batches against eval_lambada's: other kernels, the same sums
    length = max(len(tokenizer(text)["input_ids"]) for text in LAMBADA)
    rtol = perplexity_rtol(c.n_layer, c.n_embd, c.n_inner or 4 * c.n_embd, length, c.vocab_size,
                           reference["perplexity"])
    assert tasks["lambada_openai"]["metrics"]["perplexity"] == pytest.approx(reference["perplexity"], rel=rtol)
    # a finite, non-trivial number; no upper bound: an untrained model's perplexity depends on its random
    # initialisation, and the comparison above is what the test is for
    assert 1 < reference["perplexity"] < float("inf")

    # the result exists: kept unless --force, before any model is loaded
    capsys.readouterr()
    code = cli.run(eval_main, ["--model", f"tiny={folder}", "--tasks", "sciq", "--task-files", str(files),
                               "--output", str(tmp_path / "out")])
    assert_one_error_line(capsys, code, "tiny.json", "--force")


def test_bad_input_is_one_error_line(exported_gpt2, tmp_path, monkeypatch, capsys):
    folder, files = exported_gpt2
    out = str(tmp_path / "out")
    # a task file missing: named, with the expected format
    code = cli.run(eval_main, ["--model", f"m={folder}", "--tasks", "pubmedqa", "--task-files", str(files),
                               "--output", out])
    assert_one_error_line(capsys, code, "missing pubmedqa.jsonl", "QUESTION, CONTEXTS, final_decision",
                          "bigbio/pubmed_qa", "docs/evaluation.md")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sciq.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    code = cli.run(eval_main, ["--model", f"m={folder}", "--tasks", "sciq", "--task-files", str(tmp_path / "bad"),
                               "--output", out])
    assert_one_error_line(capsys, code, "sciq.jsonl line 1", "support", "correct_answer")
    code = cli.run(eval_main, ["--model", f"m={tmp_path}", "--tasks", "sciq", "--task-files", str(files),
                               "--output", out])
    assert_one_error_line(capsys, code, "config.json", "convert_to_hf.py")
    code = cli.run(eval_main, ["--model", f"m={folder}", "--tasks", "hellaswag", "--task-files", str(files),
                               "--output", out])
    assert_one_error_line(capsys, code, "hellaswag", "boolq, crows_pairs_english, race")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if the optional extra were not installed
    code = cli.run(eval_main, ["--model", f"m={folder}", "--tasks", "sciq", "--task-files", str(files),
                               "--output", out])
    assert_one_error_line(capsys, code, "lm-evaluation-harness is not installed", ".[zeroshot]")
    assert not (tmp_path / "out").exists()


def test_task_files_derive_from_lm_evals_own_definitions():
    """Every suite task includes an lm-eval YAML that exists and defines the task it claims."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from fairseq_headless.evaluation.zeroshot import TABLE4_TASKS, lm_eval_tasks_dir, load_tasks

    tasks = load_tasks()
    assert tuple(tasks) == TABLE4_TASKS
    for task in tasks.values():
        config = load_yaml(lm_eval_tasks_dir() / task.derive_from, resolve_func=False)
        assert config["task"] == task.lm_eval_task
        assert any(m["metric"] == task.metric for m in task.overrides.get("metric_list", config["metric_list"]))
    assert tasks["crows_pairs_english"].metric == "pct_stereotype"
