"""Pretraining runs for the sweeps of paper §6 (Fig.6 vocabulary size, Fig.7 batch size).

A run is ``fairseq-hydra-train`` on one of ``configs/`` with hydra overrides, as a subprocess
(a fresh process per run: GPU memory and fairseq's global state never leak from one run into the
next one's timing). Its stdout and stderr are appended to a log file; every launch starts with a
:data:`LAUNCH_MARKER` line, so a run that was interrupted and resumed from ``checkpoint_last.pt``
(fairseq does that by itself when the save folder has one) keeps one log with every launch in it.

Throughput is fairseq's own meter: ``wps`` (tokens per second: the batch's non-padding tokens,
``ntokens``, over the interval's wall time) and ``ups`` (updates per second) of the
``train_inner`` records, one per ``common.log_interval`` updates. The first record of every launch
is left out (it holds the start-up: data loading, the first-batch allocations, CUDA kernel
selection); the throughput is the mean of the remaining records. As in fairseq's own number, an
interval that contains a validation or a checkpoint save counts that time too.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs"
USER_DIR = REPO / "fairseq_headless"
LAUNCH_MARKER = "=== fairseq-headless launch"
# Needed to run the paper's fp16 GPU configs on a CPU (see README, "On CPU").
CPU_OVERRIDES = ("common.cpu=true", "common.fp16=false", "distributed_training.distributed_world_size=1")

# `[time][train_inner][INFO] - {...}` (fairseq-hydra-train) or `time | INFO | train_inner | {...}` (fairseq-train)
_RECORD = re.compile(r"(?:\]\[|\| )(train_inner|train|valid)(?:\]\[INFO\] - | \| )(\{.*\})\s*$")
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)")
_PROGRESS = re.compile(r"\[train_inner\].*?\"loss\": \"([\d.]+)\".*?\"num_updates\": \"(\d+)\"")


class TrainingError(RuntimeError):
    """A run failed or its log lacks what is needed; the message is one line naming the log."""


def override_key(override: str) -> str:
    """``+model.x=1`` / ``++a.b=2`` / ``~c`` / ``a.b=3`` -> the config key (``model.x``, ``a.b``, ``c``)."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def merge_overrides(*groups: Iterable[str]) -> list:
    """Hydra refuses two values for one key; a later group's value replaces an earlier one's."""
    merged = {}
    for group in groups:
        for override in group:
            key = override_key(override)
            merged.pop(key, None)  # re-insert: the order of the command line follows the last writer
            merged[key] = override
    return list(merged.values())


def device_overrides() -> list:
    """The CPU overrides when no CUDA device is visible, else none (the configs are the GPU runs)."""
    import torch

    return [] if torch.cuda.is_available() else list(CPU_OVERRIDES)


def hydra_train_command(config: str, overrides: Iterable[str], config_dir: Path = CONFIG_DIR) -> list:
    """The ``fairseq-hydra-train`` command line (the console script beside this interpreter)."""
    script = Path(sys.executable).parent / "fairseq-hydra-train"
    return [str(script), "--config-dir", str(config_dir), "--config-name", config, *overrides]


def run_training(command: list, log_path: Path, label: str, report: Callable[[str], None] = print,
                 every_s: float = 30.0) -> None:
    """Run ``command``, appending its output to ``log_path``; a progress line every ``every_s`` seconds.

    Raises :class:`TrainingError` (with the last error line of the log) if the run fails.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    started = last = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"{LAUNCH_MARKER} {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
        log.flush()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) as proc:
            for line in proc.stdout:
                log.write(line)
                match = _PROGRESS.search(line)
                if match and time.time() - last >= every_s:
                    last = time.time()
                    report(f"{label}: update {match[2]}, loss {match[1]} bits, {time.time() - started:.0f} s")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
        last_error = next((ln for ln in reversed(lines) if ln and not ln.startswith("Set the environment")), "")
        raise TrainingError(f"{label}: fairseq-hydra-train failed (exit {proc.returncode}): {last_error[:300]} "
                            f"(full log: {log_path})")


@dataclass
class Launch:
    """What one launch of a run logged: json records by tag, and the model's parameter count."""

    records: dict = field(default_factory=lambda: {"train_inner": [], "train": [], "valid": []})
    params: Optional[int] = None
    params_trained: Optional[int] = None


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in str(value) else number


def read_log(text: str) -> list:
    """The launches of a training log (split at :data:`LAUNCH_MARKER`; a plain fairseq log is one
    launch). Record values are numbers where fairseq wrote numbers (its json log writes strings)."""
    launches = [Launch()]
    for line in text.splitlines():
        if line.startswith(LAUNCH_MARKER):
            if any(launches[-1].records.values()) or launches[-1].params is not None:
                launches.append(Launch())
            continue
        match = _RECORD.search(line)
        if match:
            try:
                record = json.loads(match[2])
            except json.JSONDecodeError:
                continue
            launches[-1].records[match[1]].append({k: _number(v) for k, v in record.items()})
            continue
        match = _PARAMS.search(line)
        if match:
            launches[-1].params = int(match[1].replace(",", ""))
            launches[-1].params_trained = int(match[2].replace(",", ""))
    return [launch for launch in launches if any(launch.records.values()) or launch.params is not None]


def throughput(launches: list, skip_first: int = 1) -> dict:
    """Mean ``wps`` / ``ups`` over the ``train_inner`` records, the first ``skip_first`` of each launch left out.

    When no record is left (a run shorter than two log intervals), every record is used and
    ``includes_warmup`` says so.
    """
    kept = [r for launch in launches for r in launch.records["train_inner"][skip_first:]]
    includes_warmup = not kept
    if includes_warmup:
        kept = [r for launch in launches for r in launch.records["train_inner"]]
    if not kept:
        raise TrainingError("the training log has no train_inner records (is common.log_format json, and "
                            "common.log_interval smaller than the number of updates?)")
    wps = [float(r["wps"]) for r in kept]
    ups = [float(r["ups"]) for r in kept]
    return {"tokens_per_s": statistics.fmean(wps), "updates_per_s": statistics.fmean(ups),
            "tokens_per_s_median": statistics.median(wps), "intervals": len(kept),
            "skipped_per_launch": 0 if includes_warmup else skip_first, "launches": len(launches),
            "includes_warmup": includes_warmup}


def summarize_log(text: str) -> dict:
    """Throughput, parameter count, last update and last validation loss of a training log."""
    launches = read_log(text)
    result = throughput(launches)
    params = [launch.params for launch in launches if launch.params is not None]
    trained = [launch.params_trained for launch in launches if launch.params_trained is not None]
    inner = [r for launch in launches for r in launch.records["train_inner"]]
    valid = [r for launch in launches for r in launch.records["valid"]]
    result.update(
        params=params[-1] if params else None, params_trained=trained[-1] if trained else None,
        updates=int(inner[-1]["num_updates"]) if inner else None,
        final_valid_loss_bits=float(valid[-1]["valid_loss"]) if valid else None)
    return result
