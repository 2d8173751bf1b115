"""Reading GLUE / SuperGLUE / XNLI in their distribution layouts, the demo's SOTU-era task,
and one clear error for every malformed input."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from test_evaluation_helpers import (NEGATIVE, POSITIVE, polar_sentences, write_glue, write_sotu, write_superglue,
                                     write_xnli)

from studies.demo.downstream import DEV_EVERY, ERAS, build_sotu_era
from fairseq_headless.evaluation.task_data import load_split
from fairseq_headless.evaluation.tasks import GLUE_TASKS, SUPERGLUE_TASKS, XNLI, resolve_tasks
from fairseq_headless.cli import InputError


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return write_glue(tmp_path_factory.mktemp("glue"), n_train=20, n_dev=10)


@pytest.fixture(scope="module")
def superglue(tmp_path_factory):
    return write_superglue(tmp_path_factory.mktemp("superglue"), n_train=12, n_dev=6)


def _polarity(text):
    words = set(text.split())
    return 1 if words & set(POSITIVE) else 0 if words & set(NEGATIVE) else None


def test_every_glue_task_reads_its_own_layout(glue):
    truth = polar_sentences(20, 0)  # what write_glue put in train.tsv, in order
    for name, spec in GLUE_TASKS.items():
        train, dev = load_split(spec, "train", glue), load_split(spec, "dev", glue)
        assert len(train) == 20 and len(dev) == 10, name  # MNLI dev = matched (5) + mismatched (5)
        for ex, (text, y) in zip(train, truth):
            assert ex.texts[-1] == text, name  # the (second) segment is the polar sentence
            assert len(ex.texts) == (1 if name in ("CoLA", "SST-2") else 2), name
            if name == "STS-B":
                assert ex.label == pytest.approx(4.0 * y + 0.5)
            elif name == "MNLI":
                assert spec.labels[ex.label] == ("entailment" if y else "contradiction")
            elif name in ("QNLI", "RTE"):
                assert spec.labels[ex.label] == ("entailment" if y else "not_entailment")
            else:  # CoLA (no header, label in column 2), SST-2, MRPC (Quality), QQP (is_duplicate)
                assert ex.label == y, name


def test_superglue_layouts(superglue):
    boolq = load_split(SUPERGLUE_TASKS["BoolQ"], "dev", superglue)
    assert len(boolq) == 6 and all(ex.label == _polarity(ex.texts[1]) for ex in boolq)  # JSON true -> "True" -> 1
    cb = load_split(SUPERGLUE_TASKS["CB"], "train", superglue)
    rows = [json.loads(line) for line in (superglue / "CB" / "train.jsonl").read_text().splitlines()]
    assert [SUPERGLUE_TASKS["CB"].labels[ex.label] for ex in cb] == [r["label"] for r in rows]
    copa = load_split(SUPERGLUE_TASKS["COPA"], "train", superglue)
    raw = json.loads((superglue / "COPA" / "train.jsonl").read_text().splitlines()[1])  # question: cause
    ex = copa[1]
    assert raw["question"] == "cause" and ex.label == raw["label"]
    assert ex.texts == ((raw["premise"], "because " + raw["choice1"][0].lower() + raw["choice1"][1:]),
                        (raw["premise"], "because " + raw["choice2"][0].lower() + raw["choice2"][1:]))
    assert copa[0].texts[0][1].startswith("so ")  # effect
    wic = load_split(SUPERGLUE_TASKS["WiC"], "dev", superglue)
    assert wic[0].texts[0] == "the *bank* of the river" and wic[0].texts[1].endswith(" *bank*")


def test_xnli_layout_languages_and_the_contradictory_alias(tmp_path):
    root = write_xnli(tmp_path, languages=("en", "de"), n_train=8, n_dev=6)
    train = load_split(XNLI, "train", root, lang="de")
    truth = polar_sentences(8, 1)  # language index 1
    assert [XNLI.labels[ex.label] for ex in train] == ["entailment" if y else "contradiction" for _, y in truth]
    assert len(load_split(XNLI, "dev", root, lang="en")) == 6 and len(load_split(XNLI, "dev", root, lang="de")) == 6
    with pytest.raises(InputError, match=r"no rows with language = 'fr' \(the file has de, en\)"):
        load_split(XNLI, "dev", root, lang="fr")
    with pytest.raises(InputError, match=r"multinli\.train\.fr\.tsv: no such file"):
        load_split(XNLI, "train", root, lang="fr")


def test_max_examples_is_a_fixed_subset(glue):
    a = load_split(GLUE_TASKS["SST-2"], "train", glue, max_examples=7)
    b = load_split(GLUE_TASKS["SST-2"], "train", glue, max_examples=7)
    full = load_split(GLUE_TASKS["SST-2"], "train", glue)
    assert a == b and len(a) == 7 and all(ex in full for ex in a)


def test_resolve_tasks():
    assert [t.name for t in resolve_tasks("glue", "sst2,MRPC,rte")] == ["MRPC", "SST-2", "RTE"]  # Tab.1's order
    assert len(resolve_tasks("glue", "all")) == 8 and len(resolve_tasks("superglue", "all")) == 4
    with pytest.raises(InputError, match="unknown glue task 'WNLI'"):
        resolve_tasks("glue", "SST-2,WNLI")


# --- malformed input: one clear error naming the file, the line and what is wrong ----------------

def _replace(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize("task,file,mutate,message", [
    ("SST-2", "train.tsv", lambda p: _replace(p, "sentence\tlabel", "sentence\tlabels"),
     r"SST-2/train\.tsv: missing column 'label' in its header"),
    ("SST-2", "dev.tsv", lambda p: p.write_text("sentence\tlabel\n"),
     r"SST-2/dev\.tsv: no rows \(the split is empty\)"),
    ("SST-2", "train.tsv", lambda p: p.write_text("sentence\tlabel\ngood film\t2\n"),
     r"SST-2/train\.tsv line 2: unknown SST-2 label '2' \(expected one of 0, 1\)"),
    ("MNLI", "dev_mismatched.tsv", lambda p: _replace(p, "\tcontradiction\n", "\tcontra\n"),  # gold_label
     r"dev_mismatched\.tsv line \d+: unknown MNLI label 'contra'"),
    ("QQP", "train.tsv", lambda p: p.write_text(p.read_text() + "7\tonly three\tfields\n"),
     r"QQP/train\.tsv line 22: 3 tab-separated fields, expected 6"),
    ("CoLA", "train.tsv", lambda p: p.write_text("gj04\t1\tgood sentence\n"),
     r"CoLA/train\.tsv line 1: 3 tab-separated fields, expected 4"),
    ("STS-B", "train.tsv", lambda p: _replace(p, "\t4.500\n", "\tfive\n"),
     r"STS-B/train\.tsv line \d+: label 'five' is not a number"),
    ("RTE", "train.tsv", lambda p: p.unlink(), r"RTE/train\.tsv: no such file .*the folder holds \['dev\.tsv'\]"),
])
def test_malformed_glue_files(tmp_path, task, file, mutate, message):
    root = write_glue(tmp_path, n_train=20, n_dev=10)
    mutate(root / GLUE_TASKS[task].train.files[0].split("/")[0] / file)
    split = "train" if file == "train.tsv" else "dev"
    with pytest.raises(InputError, match=message):
        load_split(GLUE_TASKS[task], split, root)


@pytest.mark.parametrize("task,mutate,message", [
    ("BoolQ", lambda r: r[:1] + ["{not json\n"], r"BoolQ/train\.jsonl line 2: invalid JSON"),
    ("CB", lambda r: [json.dumps({"premise": "a", "label": "neutral"}) + "\n"],
     r"CB/train\.jsonl line 1: missing key 'hypothesis'"),
    ("CB", lambda r: [r[0].replace('"label": "', '"label": "x')], r"line 1: unknown CB label 'x"),
    ("COPA", lambda r: [r[0].replace('"effect"', '"reason"')],
     r"COPA question 'reason' is neither 'cause' nor 'effect'"),
    ("WiC", lambda r: [r[0].replace('"end1": 8', '"end1": 99')],
     r"target span start1=4 end1=99 is not inside sentence1"),
    ("WiC", lambda r: ["\n"], r"WiC/train\.jsonl: no rows \(the split is empty\)"),
])
def test_malformed_superglue_files(tmp_path, task, mutate, message):
    root = write_superglue(tmp_path, n_train=4, n_dev=2)
    path = root / task / "train.jsonl"
    path.write_text("".join(mutate(path.read_text().splitlines(keepends=True))))
    with pytest.raises(InputError, match=message):
        load_split(SUPERGLUE_TASKS[task], "train", root)


def test_hub_without_datasets_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails, whatever is installed
    with pytest.raises(InputError, match=r"nyu-mll/glue \(sst2\), which needs the optional `datasets`"):
        load_split(GLUE_TASKS["SST-2"], "train", None)


def test_scripts_exit_2_with_one_error_line(tmp_path):
    root = write_glue(tmp_path / "glue", n_train=20, n_dev=10)
    _replace(root / "MRPC" / "dev.tsv", "#2 String", "#2 Strings")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "finetune_glue.py"), "--model", str(model),
                           "--tasks", "SST-2,MRPC", "--output", str(tmp_path / "out"), "--data-dir", str(root)],
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr
    assert errors == [f"error: {root}/MRPC/dev.tsv: missing column '#2 String' in its header: "
                      "['Quality', '#1 ID', '#2 ID', '#1 String', '#2 Strings']; "
                      "is this the benchmark's original file?"]
    # nothing is written before every split has been read and checked
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# --- the demo's SOTU-era task ------------------------------------------------------------------

def test_sotu_era_is_balanced_deterministic_and_split_by_address(tmp_path):
    corpus = write_sotu(tmp_path)
    train, dev = build_sotu_era(corpus, train_per_era=30, dev_per_era=8)
    assert (train, dev) == build_sotu_era(corpus, train_per_era=30, dev_per_era=8)
    assert len(train) == 4 * 30 and len(dev) == 4 * 8
    for examples in (train, dev):
        assert sorted(ex.label for ex in examples) == sorted(list(range(4)) * (len(examples) // 4))
    # each era has 16 addresses (8 years x 2) sorted by year then name: positions 3, 7, 11, 15 are dev
    for ex in train + dev:
        year, who = int(ex.texts[0].split()[3]), ex.texts[0].split()[5]
        era_first = ERAS[ex.label][1]
        assert ERAS[ex.label][1] <= year <= ERAS[ex.label][2]
        position = 2 * (year - era_first) + (who == "b")
        assert (position % DEV_EVERY == DEV_EVERY - 1) == (ex in dev)
    assert not any("Short line" in ex.texts[0] for ex in train + dev)  # under 8 words
    with pytest.raises(InputError, match=r"era 1790-1849 has 48 dev sentences .* fewer than the 100"):
        build_sotu_era(corpus, train_per_era=10, dev_per_era=100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no SOTU address files"):
        build_sotu_era(tmp_path / "empty")
