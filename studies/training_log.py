"""Reading a fairseq training log: the one parser of ``train_inner`` / ``train`` / ``valid`` records.

fairseq writes a record per ``common.log_interval`` updates (``train_inner``), one per epoch
(``train``) and one per validation (``valid``), in either of its log formats:

- ``json``: ``[time][train_inner][INFO] - {"loss": "8.2", "num_updates": "5", ...}`` (fairseq-hydra-train) or
  ``time | INFO | train_inner | {...}`` (fairseq-train); the values are strings;
- ``simple``: ``[time][train_inner][INFO] - epoch 001:  5 / 15 loss=8.271, wps=3686.2, ..., wall=4`` and
  ``[time][valid][INFO] - epoch 001 | valid on 'valid' subset | loss 7.723 | ... | num_updates 15``.

Both are read into the same records: numbers where fairseq wrote numbers, and the keys of the json
format (fairseq prefixes a ``valid`` / ``train`` record's keys with its tag there: ``valid_loss``).
A log written by :mod:`.training_runs` starts every launch with :data:`LAUNCH_MARKER`, so a run
that was interrupted and resumed keeps one log with every launch in it; a plain fairseq log is one
launch.

Throughput is fairseq's own meter: ``wps`` (tokens per second: the batch's non-padding tokens,
``ntokens``, over the interval's wall time) and ``ups`` (updates per second) of the
``train_inner`` records. :func:`throughput` leaves the first record of every launch out (it holds
the start-up: data loading, the first-batch allocations, CUDA kernel selection) and averages the
rest. As in fairseq's own number, an interval that contains a validation or a checkpoint save
counts that time too.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

LAUNCH_MARKER = "=== fairseq-headless launch"
TAGS = ("train_inner", "train", "valid")

# `[time][train_inner][INFO] - ...` (fairseq-hydra-train) or `time | INFO | train_inner | ...` (fairseq-train)
_RECORD = re.compile(r"(?:\]\[|\| )(train_inner|train|valid)(?:\]\[INFO\] - | \| )(.*?)\s*$")
_SIMPLE_PAIR = re.compile(r"(\w+)=([^,\s]+)")
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)")
OVERFLOW = "overflow detected"  # fairseq's fp16 loss scaler, once per skipped update


class LogError(RuntimeError):
    """A training log lacks what is needed; the message is one line."""


@dataclass
class Launch:
    """What one launch of a run logged: records by tag, the parameter count and fp16 overflow skips."""

    records: dict = field(default_factory=lambda: {tag: [] for tag in TAGS})
    params: Optional[int] = None
    params_trained: Optional[int] = None
    overflow_skips: int = 0

    def empty(self) -> bool:
        return not any(self.records.values()) and self.params is None and not self.overflow_skips


def number(value):
    """fairseq's logged value as a number where it is one (its json log writes strings)."""
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        return value
    return int(parsed) if parsed.is_integer() and "." not in str(value) and "e" not in str(value).lower() else parsed


def _simple_record(tag: str, body: str) -> Optional[dict]:
    if tag == "train_inner":  # epoch 001:      5 / 15 loss=8.271, ..., wall=4
        pairs = _SIMPLE_PAIR.findall(body)
        return {key: number(value) for key, value in pairs} if pairs else None
    record = {}  # epoch 001 | valid on 'valid' subset | loss 7.723 | ... | num_updates 15
    for part in body.split(" | "):
        key, _, value = part.strip().partition(" ")
        if key == "epoch":
            record["epoch"] = number(value)
        elif key.isidentifier() and value and " " not in value:
            record[f"{tag}_{key}"] = number(value)
    return record if len(record) > 1 else None


def parse_record(line: str) -> Optional[tuple]:
    """(tag, record) of one log line, or None when the line is no train_inner / train / valid record."""
    match = _RECORD.search(line)
    if not match:
        return None
    tag, body = match[1], match[2]
    if body.startswith("{"):
        try:
            return tag, {key: number(value) for key, value in json.loads(body).items()}
        except (json.JSONDecodeError, AttributeError):
            return None
    record = _simple_record(tag, body)
    return None if record is None else (tag, record)


def read_log(text: str) -> list:
    """The launches of a training log (split at :data:`LAUNCH_MARKER`)."""
    launches = [Launch()]
    for line in text.splitlines():
        if line.startswith(LAUNCH_MARKER):
            if not launches[-1].empty():
                launches.append(Launch())
            continue
        parsed = parse_record(line)
        if parsed:
            launches[-1].records[parsed[0]].append(parsed[1])
            continue
        match = _PARAMS.search(line)
        if match:
            launches[-1].params = int(match[1].replace(",", ""))
            launches[-1].params_trained = int(match[2].replace(",", ""))
        elif OVERFLOW in line:
            launches[-1].overflow_skips += 1
    return [launch for launch in launches if not launch.empty()]


def records(launches: list, tag: str) -> list:
    """Every launch's records of one tag, in log order."""
    return [record for launch in launches for record in launch.records[tag]]


def last_update(launches: list) -> Optional[int]:
    """The last update count the log names (a train_inner, train or valid record)."""
    counts = [r.get(key) for tag, key in (("train_inner", "num_updates"), ("train", "train_num_updates"),
                                          ("valid", "valid_num_updates")) for r in records(launches, tag)]
    counts = [int(c) for c in counts if c is not None]
    return max(counts) if counts else None


def train_inner_by_update(path: Path) -> dict:
    """{num_updates: the train_inner record} of a log file. A resumed run logs some updates twice (those
    after its last save); the later line wins, as it belongs to the run whose checkpoints survive."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return {int(r["num_updates"]): r for r in records(read_log(text), "train_inner") if "num_updates" in r}


def log_wall_seconds(by_update: dict, updates: int) -> Optional[float]:
    """The log's ``wall`` (whole seconds) at exactly ``updates``, if a train_inner line was written there."""
    record = by_update.get(updates)
    return None if record is None or "wall" not in record else float(record["wall"])


def throughput(launches: list, skip_first: int = 1) -> dict:
    """Mean ``wps`` / ``ups`` over the ``train_inner`` records, the first ``skip_first`` of each launch left out.

    When no record is left (a run shorter than two log intervals), every record is used and
    ``includes_warmup`` says so.
    """
    kept = [r for launch in launches for r in launch.records["train_inner"][skip_first:]]
    includes_warmup = not kept
    if includes_warmup:
        kept = records(launches, "train_inner")
    if not kept:
        raise LogError("the training log has no train_inner records (is common.log_interval smaller than the "
                       "number of updates?)")
    wps = [float(r["wps"]) for r in kept]
    ups = [float(r["ups"]) for r in kept]
    return {"tokens_per_s": statistics.fmean(wps), "updates_per_s": statistics.fmean(ups),
            "tokens_per_s_median": statistics.median(wps), "intervals": len(kept),
            "skipped_per_launch": 0 if includes_warmup else skip_first, "launches": len(launches),
            "includes_warmup": includes_warmup}


def summarize_log(text: str, skip_first: int = 1) -> dict:
    """Throughput, parameter count, last update and last validation loss of a training log."""
    launches = read_log(text)
    result = throughput(launches, skip_first)
    params = [launch.params for launch in launches if launch.params is not None]
    trained = [launch.params_trained for launch in launches if launch.params_trained is not None]
    valid = records(launches, "valid")
    result.update(
        params=params[-1] if params else None, params_trained=trained[-1] if trained else None,
        updates=last_update(launches),
        final_valid_loss_bits=float(valid[-1]["valid_loss"]) if valid else None)
    return result
