"""A task's train or dev split as a list of :class:`Example` (model-ready text and label id).

Local files in the benchmark's own layout (``--data-dir``), or the hub. COPA (Tab.2) is two-way multiple
choice over (premise, "because/so <alternative>"); WiC marks the target word with asterisks."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .readers import read_jsonl, read_tsv
from .tasks import COPA_FORMAT, REGRESSION, WIC_FORMAT, TaskSpec
from ..cli import InputError

COPA_CONNECTIVES = {"cause": "because", "effect": "so"}
WIC_MARK = "*"


@dataclass(frozen=True)
class Example:
    texts: tuple  # 1 or 2 strings; multiple choice: one (first, second) pair per choice
    label: Union[int, float]  # index into TaskSpec.labels, or the score (regression)


def load_split(spec: TaskSpec, split: str, data_dir: Optional[Path], lang: Optional[str] = None,
               max_examples: Optional[int] = None) -> list:
    """Examples of ``split`` ("train" or "dev"), from ``data_dir`` or else from the hub.

    ``max_examples`` keeps a fixed random subset (the same for every seed and model)."""
    if split not in ("train", "dev"):
        raise ValueError(f"split must be train or dev, not {split!r}")
    if data_dir is not None:
        examples = _load_local(spec, split, Path(data_dir), lang)
    else:
        examples = _load_hub(spec, split, lang)
    if max_examples is not None and len(examples) > max_examples:
        keep = sorted(random.Random(0).sample(range(len(examples)), max_examples))
        examples = [examples[i] for i in keep]
    return examples


def _load_local(spec: TaskSpec, split: str, data_dir: Path, lang: Optional[str]) -> list:
    source = spec.train if split == "train" else spec.dev
    if not data_dir.is_dir():
        raise InputError(f"--data-dir {data_dir}: no such folder")
    examples = []
    for name in source.files:
        path = data_dir / name.format(lang=lang)
        required = list(source.text_fields) + [source.label_field]
        if path.suffix == ".jsonl":
            rows = read_jsonl(path, required)
        else:
            if source.row_filter:
                required.append(source.row_filter[0])
            rows = read_tsv(path, required, source.columns)
        if source.row_filter:
            column, value = source.row_filter[0], source.row_filter[1].format(lang=lang)
            kept = [(n, r) for n, r in rows if r[column] == value]
            if not kept:
                present = sorted({r[column] for _, r in rows})
                raise InputError(f"{path}: no rows with {column} = '{value}' (the file has {', '.join(present)})")
            rows = kept
        for line, row in rows:
            examples.append(_to_example(spec, source.text_fields, row, row[source.label_field],
                                        f"{path} line {line}", label_is_index=False))
    return examples


def _load_hub(spec: TaskSpec, split: str, lang: Optional[str]) -> list:
    hub = spec.hub
    config = hub.config.format(lang=lang) if hub.config else None
    where = f"{hub.path}" + (f" ({config})" if config else "")
    try:
        import datasets  # optional: only for hub names
    except ImportError:
        raise InputError(f"no --data-dir given, so {spec.name} would be loaded from the hub as {where}, which needs "
                         "the optional `datasets` library (pip install datasets) and network access; or pass "
                         "--data-dir with the benchmark's files (layout in docs/evaluation.md)") from None
    examples = []
    for split_name in ((hub.train_split,) if split == "train" else hub.dev_splits):
        try:
            ds = datasets.load_dataset(hub.path, config, split=split_name)
        except Exception as err:  # network, unknown name, ...: one line, not a traceback
            raise InputError(f"could not load {where} split {split_name} from the hub: {err}") from None
        feature = ds.features.get("label")
        names = tuple(getattr(feature, "names", ()) or ())
        if hub.label_names and names != hub.label_names:
            raise InputError(f"{where}: label names {names} differ from the expected {hub.label_names}")
        for i, row in enumerate(ds):
            examples.append(_to_example(spec, hub.text_fields, row, row["label"],
                                        f"{where} {split_name} row {i}", label_is_index=True))
    if not examples:
        raise InputError(f"{where}: the {split} split is empty")
    return examples


def _to_example(spec: TaskSpec, fields: tuple, row: dict, raw_label, where: str, label_is_index: bool) -> Example:
    if spec.example_format == COPA_FORMAT:
        premise, choice1, choice2, question = (row[f] for f in fields)
        connective = COPA_CONNECTIVES.get(str(question).strip().lower())
        if connective is None:
            raise InputError(f"{where}: COPA question '{question}' is neither 'cause' nor 'effect'")
        texts = tuple((str(premise), f"{connective} {_lower_first(str(c))}") for c in (choice1, choice2))
    elif spec.example_format == WIC_FORMAT:
        word, s1, s2, start1, end1, start2, end2 = (row[f] for f in fields)
        texts = (_mark(str(s1), start1, end1, where, "1"), _mark(str(s2), start2, end2, where, "2"))
    else:
        texts = tuple("" if row[f] is None else str(row[f]) for f in fields)
    return Example(texts, _label(spec, raw_label, where, label_is_index))


def _label(spec: TaskSpec, raw, where: str, label_is_index: bool):
    if spec.kind == REGRESSION:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise InputError(f"{where}: label '{raw}' is not a number ({spec.name} is a regression)") from None
    if label_is_index:
        if isinstance(raw, int) and 0 <= raw < len(spec.labels):
            return raw
        raise InputError(f"{where}: label id {raw!r} outside 0..{len(spec.labels) - 1} (a test split without labels?)")
    text = str(raw).strip()  # JSON booleans -> "True"/"False", COPA's 0/1 -> "0"/"1"
    text = spec.label_aliases.get(text, text)
    if text not in spec.labels:
        raise InputError(f"{where}: unknown {spec.name} label '{raw}' (expected one of {', '.join(spec.labels)})")
    return spec.labels.index(text)


def _mark(sentence: str, start, end, where: str, which: str) -> str:
    """The sentence with its target word between asterisks: 'the *bank* of the river'."""
    try:
        start, end = int(start), int(end)
    except (TypeError, ValueError):
        raise InputError(f"{where}: start{which}/end{which} must be integers, got {start!r}, {end!r}") from None
    if not 0 <= start < end <= len(sentence):
        raise InputError(f"{where}: target span start{which}={start} end{which}={end} is not inside sentence{which} "
                         f"({len(sentence)} characters)")
    return f"{sentence[:start]}{WIC_MARK}{sentence[start:end]}{WIC_MARK}{sentence[end:]}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
