"""The downstream tasks of the paper: GLUE (Tab.1), SuperGLUE BoolQ/CB/COPA/WiC (Tab.2), XNLI (Tab.5).

Each task is one :class:`TaskSpec`: where its splits lie, which columns hold text and label, the labels
in the hub's ``ClassLabel`` order (the model's output order, checked at load), and the paper's metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
from ..cli import InputError


CLASSIFICATION = "classification"
REGRESSION = "regression"
MULTIPLE_CHOICE = "multiple_choice"

# How a row becomes model input (see task_data.py).
TEXT = "text"  # the text_fields, one or two segments
COPA_FORMAT = "copa"  # premise + each alternative, joined by the question's connective
WIC_FORMAT = "wic"  # both sentences with the target word marked


@dataclass(frozen=True)
class LocalSource:
    """One split in a benchmark's distributed layout, relative to ``--data-dir``."""

    files: tuple  # concatenated in this order (MNLI: matched + mismatched); may hold "{lang}"
    text_fields: tuple  # column / key names of the input text(s)
    label_field: str
    columns: Optional[tuple] = None  # TSV without header (CoLA): the column names by position
    row_filter: Optional[tuple] = None  # (column, value): keep only these rows (XNLI: language)


@dataclass(frozen=True)
class HubSource:
    """The same task as a Hugging Face dataset (needs the `datasets` library and the hub)."""

    path: str
    config: Optional[str]  # may hold "{lang}"
    train_split: str
    dev_splits: tuple
    text_fields: tuple
    label_names: tuple = ()  # the hub's ClassLabel names, in label-id order


@dataclass(frozen=True)
class TaskSpec:
    name: str  # the benchmark's own spelling: SST-2, STS-B, BoolQ, ...
    suite: str  # glue | superglue | xnli
    kind: str  # classification | regression | multiple_choice
    labels: tuple  # label strings, index = model output; () for regression
    metrics: tuple  # reported metrics; the first is the one the paper's table shows
    train: Optional[LocalSource] = None  # None: a task built in memory (the demo's)
    dev: Optional[LocalSource] = None
    hub: Optional[HubSource] = None
    example_format: str = TEXT
    label_aliases: dict = field(default_factory=dict)  # raw label -> one of `labels`
    in_average: bool = True  # RTE is reported apart from the GLUE average (Tab.1)

    @property
    def main_metric(self) -> str:
        """The metric of the paper's table and of best-epoch selection."""
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == REGRESSION else len(self.labels)


def _glue(name, folder, text_fields, label_field, labels, metrics, hub_config, hub_text,
          hub_labels, kind=CLASSIFICATION, dev_files=("dev.tsv",), columns=None,
          hub_dev=("validation",), in_average=True):
    return TaskSpec(name=name, suite="glue", kind=kind, labels=labels, metrics=metrics,
                    train=LocalSource((f"{folder}/train.tsv",), text_fields, label_field, columns),
                    dev=LocalSource(tuple(f"{folder}/{f}" for f in dev_files), text_fields, label_field, columns),
                    hub=HubSource("nyu-mll/glue", hub_config, "train", hub_dev, hub_text, hub_labels),
                    in_average=in_average)


# GLUE's original distribution (the folders written by the GLUE download script).
# Label strings are those of the TSV files; hub names are nyu-mll/glue's ClassLabel names.
GLUE_TASKS = {
    t.name: t for t in [
        # CoLA's train/dev files have no header: source, label, original label, sentence.
        _glue("CoLA", "CoLA", ("sentence",), "label", ("0", "1"), ("matthews",), "cola",
              ("sentence",), ("unacceptable", "acceptable"),
              columns=("source", "label", "original_label", "sentence")),
        _glue("SST-2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",), "sst2",
              ("sentence",), ("negative", "positive")),
        _glue("MRPC", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1"),
              "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
        _glue("STS-B", "STS-B", ("sentence1", "sentence2"), "score", (), ("spearman", "pearson"),
              "stsb", ("sentence1", "sentence2"), (), kind=REGRESSION),
        _glue("QQP", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1"),
              "qqp", ("question1", "question2"), ("not_duplicate", "duplicate")),
        # Tab.1: "MNLI validation datasets are concatenated".
        _glue("MNLI", "MNLI", ("sentence1", "sentence2"), "gold_label",
              ("entailment", "neutral", "contradiction"), ("accuracy",), "mnli",
              ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
              dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
              hub_dev=("validation_matched", "validation_mismatched")),
        _glue("QNLI", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
              ("accuracy",), "qnli", ("question", "sentence"), ("entailment", "not_entailment")),
        # §4.1: RTE is left out of the average "due to high standard deviations".
        _glue("RTE", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
              ("accuracy",), "rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
              in_average=False),
    ]
}
# Column order of Tab.1.
GLUE_TABLE_ORDER = ("MRPC", "CoLA", "STS-B", "SST-2", "QNLI", "QQP", "MNLI", "RTE")


def _superglue(name, folder, text_fields, labels, hub_config, hub_labels, kind=CLASSIFICATION,
               example_format=TEXT, label_aliases=None):
    return TaskSpec(name=name, suite="superglue", kind=kind, labels=labels, metrics=("accuracy",),
                    train=LocalSource((f"{folder}/train.jsonl",), text_fields, "label"),
                    dev=LocalSource((f"{folder}/val.jsonl",), text_fields, "label"),
                    hub=HubSource("aps/super_glue", hub_config, "train", ("validation",), text_fields, hub_labels),
                    example_format=example_format, label_aliases=label_aliases or {})


# SuperGLUE's distribution: <data-dir>/<Task>/{train,val,test}.jsonl. JSON booleans
# (BoolQ, WiC) read as "True"/"False", COPA's integer label as "0"/"1" (the choice).
SUPERGLUE_TASKS = {
    t.name: t for t in [
        _superglue("BoolQ", "BoolQ", ("question", "passage"), ("False", "True"), "boolq",
                   ("False", "True")),
        _superglue("CB", "CB", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral"),
                   "cb", ("entailment", "contradiction", "neutral")),
        _superglue("COPA", "COPA", ("premise", "choice1", "choice2", "question"), ("0", "1"), "copa",
                   ("choice1", "choice2"), kind=MULTIPLE_CHOICE, example_format=COPA_FORMAT),
        _superglue("WiC", "WiC", ("word", "sentence1", "sentence2", "start1", "end1", "start2", "end2"),
                   ("False", "True"), "wic", ("False", "True"), example_format=WIC_FORMAT),
    ]
}
SUPERGLUE_TABLE_ORDER = ("BoolQ", "CB", "COPA", "WiC")

# XNLI: the dev set of XNLI-1.0.zip and the machine-translated MultiNLI training sets of XNLI-MT-1.0.zip,
# both unpacked into --data-dir. The MT files spell one label "contradictory".
XNLI_LANGUAGES = ("ar", "de", "en", "es", "fr", "hi", "zh")  # Tab.5's columns
XNLI_ALL_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
XNLI = TaskSpec(name="XNLI", suite="xnli", kind=CLASSIFICATION,
                labels=("entailment", "neutral", "contradiction"), metrics=("accuracy",),
                train=LocalSource(("XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv",), ("premise", "hypo"), "label"),
                dev=LocalSource(("XNLI-1.0/xnli.dev.tsv",), ("sentence1", "sentence2"), "gold_label",
                                row_filter=("language", "{lang}")),
                hub=HubSource("facebook/xnli", "{lang}", "train", ("validation",), ("premise", "hypothesis"),
                              ("entailment", "neutral", "contradiction")),
                label_aliases={"contradictory": "contradiction"})

SUITES = {"glue": GLUE_TASKS, "superglue": SUPERGLUE_TASKS}
TABLE_ORDER = {"glue": GLUE_TABLE_ORDER, "superglue": SUPERGLUE_TABLE_ORDER}


def resolve_tasks(suite: str, spec: str) -> list:
    """``"SST-2,MRPC"`` or ``"all"`` -> TaskSpecs in the table's column order; names match case-insensitively
    and without '-' (``sst2`` = ``SST-2``)."""
    registry = SUITES[suite]
    if spec.strip().lower() == "all":
        return [registry[n] for n in TABLE_ORDER[suite]]
    by_key = {_key(n): n for n in registry}
    chosen = []
    for raw in (s for s in spec.split(",") if s.strip()):
        name = by_key.get(_key(raw))
        if name is None:
            raise InputError(
                f"--tasks: unknown {suite} task '{raw.strip()}'; choose from {', '.join(TABLE_ORDER[suite])} or 'all'")
        if registry[name] not in chosen:
            chosen.append(registry[name])
    if not chosen:
        raise InputError("--tasks: no task given; e.g. --tasks SST-2,MRPC or --tasks all")
    order = TABLE_ORDER[suite]
    return sorted(chosen, key=lambda t: order.index(t.name))


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")
