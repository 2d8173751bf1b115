"""Launching ``fairseq-hydra-train`` and reading its log: what every study shares.

A run is a subprocess (GPU memory and fairseq's global state never leak into the next run); its
output is appended to a log file after a :data:`LAUNCH_MARKER` line, so a run resumed from its
``checkpoint_last.pt`` keeps one log with every launch. The log reader takes fairseq's json and
simple formats into the same records. Throughput is fairseq's own ``wps`` / ``ups`` meter, the
first record of every launch (start-up) left out. :func:`export` and :func:`lambada` are the
package's converter and LAMBADA scorer with the context a study adds to their errors.
"""
from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
USER_DIR = REPO / "fairseq_headless"
# Needed to run the paper's fp16 GPU configs on a CPU (see README, "On CPU").
CPU_OVERRIDES = ("common.cpu=true", "common.fp16=false", "distributed_training.distributed_world_size=1")
TIMED_OUT = 124  # the exit status of a run stopped at its time limit (as coreutils' timeout)
POLL_S = 0.2
LAUNCH_MARKER = "=== fairseq-headless launch"
TAGS = ("train_inner", "train", "valid")
# `[time][train_inner][INFO] - ...` (fairseq-hydra-train) or `time | INFO | train_inner | ...` (fairseq-train)
_RECORD = re.compile(r"(?:\]\[|\| )(train_inner|train|valid)(?:\]\[INFO\] - | \| )(.*?)\s*$")
_SIMPLE_PAIR = re.compile(r"(\w+)=([^,\s]+)")
_PARAMS = re.compile(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)")
OVERFLOW = "overflow detected"  # fairseq's fp16 loss scaler, once per skipped update


class TrainingError(RuntimeError):
    """A run failed or its log lacks what is needed (exit status 1); the message names the log."""


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture included)."""

    stream = property(lambda self: sys.stderr, lambda self, _: None)


def log_to_stderr() -> None:
    """A study's progress lines, ``[studies.x] ...`` on stderr (set when its main() starts)."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    studies = logging.getLogger("studies")
    studies.handlers, studies.propagate = [handler], False
    studies.setLevel(logging.INFO)
    logging.getLogger("fairseq").setLevel(logging.WARNING)  # its import-time notices; the studies log their own


def main_of(main: Callable, failures: tuple = ()) -> int:
    """A study's ``main`` as a command line: bad input one ``error:`` line (2), a failed step one line (1)."""
    from fairseq_headless.cli import run

    return run(main, failures=(TrainingError, *failures))


# ------------------------------------------------------------------------------------------ launching


def override_key(override: str) -> str:
    """``+model.x=1`` / ``++a.b=2`` / ``~c`` / ``a.b=3`` -> the config key (``model.x``, ``a.b``, ``c``)."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def merge_overrides(*groups: Iterable[str]) -> list:
    """Hydra refuses two values for one key; a later group's value replaces an earlier one's."""
    merged = {}
    for group in groups:
        for override in group:
            merged.pop(override_key(override), None)  # re-insert: the command line follows the last writer
            merged[override_key(override)] = override
    return list(merged.values())


def device_overrides() -> list:
    """The CPU overrides when no CUDA device is visible, else none (the configs are the GPU runs)."""
    import torch

    return [] if torch.cuda.is_available() else list(CPU_OVERRIDES)


def hydra_train_command(config: str, overrides: Iterable[str], config_dir: Path = CONFIG_DIR) -> list:
    """The ``fairseq-hydra-train`` command line (the console script beside this interpreter)."""
    script = Path(sys.executable).parent / "fairseq-hydra-train"
    return [str(script), "--config-dir", str(config_dir), "--config-name", config, *overrides]


def study_path() -> dict:
    """PYTHONPATH with the checkout first, so that ``python -m studies.X`` runs from any folder."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def study_command(module: str, *args) -> list:
    """``python -m studies.<module> ARGS`` (run it with :func:`study_path` in its environment)."""
    return [sys.executable, "-m", f"studies.{module}", *map(str, args)]


@dataclass
class FinishedRun:
    """A training launch that ended: its exit status and what it wrote to its log."""

    command: list
    log_path: Path
    returncode: int
    output: str  # this launch's part of the log (after its marker)
    seconds: float
    peak_rss_mib: Optional[float]  # the child's own peak resident memory (os.wait4)
    cpu_s: Optional[float] = None  # user + system CPU seconds of the child and its reaped children (os.wait4)

    @property
    def timed_out(self) -> bool:
        return self.returncode == TIMED_OUT

    def tail(self, lines: int = 3, chars: int = 400) -> str:
        """The last lines of the output, joined into one line (for a one-line error)."""
        return "; ".join(line.strip() for line in self.output.strip().splitlines()[-lines:])[-chars:]

    def launches(self) -> list:
        return read_log(self.output)

    def check(self, label: str) -> "FinishedRun":
        """Raise :class:`TrainingError` with the last error line of the log if the run failed."""
        if self.returncode != 0:
            lines = [line.strip() for line in self.output.splitlines()]
            last = next((x for x in reversed(lines) if x and not x.startswith("Set the environment")), "")
            raise TrainingError(f"{label}: fairseq-hydra-train failed (exit {self.returncode}): {last[:300]} "
                                f"(full log: {self.log_path})")
        return self


class TrainingRun:
    """A started ``fairseq-hydra-train`` (or any command line, e.g. under torchrun), its output appended to
    ``log_path`` after a :data:`LAUNCH_MARKER` line. Several may run at once; :meth:`wait` follows one."""

    def __init__(self, command: list, log_path: Path, env: Optional[dict] = None):
        self.command = [str(part) for part in command]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{LAUNCH_MARKER} {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self.command)}\n")
            self.offset = log.tell()
        self._log = open(self.log_path, "a", encoding="utf-8")
        # a file, not a pipe: runs started together never block on an unread pipe
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **study_path(), **(env or {})})

    def _output(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode("utf-8", errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def wait(self, label: str = "", report: Optional[Callable[[str], None]] = None, every_s: float = 30.0,
             timeout: Optional[float] = None) -> FinishedRun:
        """Wait for the run; with ``report``, its last update and loss every ``every_s`` seconds; killed after
        ``timeout``. The CPU seconds and peak memory are the kernel's count (os.wait4)."""
        last_report, usage, status, timed_out = time.time(), None, None, False
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.time() - self.started > timeout:
                self.proc.kill()
                timed_out = True
            if report is not None and time.time() - last_report >= every_s:
                inner = records(read_log(self._output()), "train_inner")
                if inner and "num_updates" in inner[-1]:
                    last_report = time.time()
                    report(f"{label}: update {inner[-1]['num_updates']}, loss {inner[-1].get('loss')} bits, "
                           f"{time.time() - self.started:.0f} s")
            time.sleep(POLL_S)
        self.proc.returncode = TIMED_OUT if timed_out else os.waitstatus_to_exitcode(status)
        self._log.close()
        if timed_out:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"\n[training_runs] stopped after {timeout} s\n")
        return FinishedRun(self.command, self.log_path, self.proc.returncode, self._output(),
                           time.time() - self.started, usage.ru_maxrss / 1024 if usage else None,
                           usage.ru_utime + usage.ru_stime if usage else None)


def run_training(command: list, log_path: Path, label: str, report: Optional[Callable[[str], None]] = logger.info,
                 every_s: float = 30.0, timeout: Optional[float] = None, env: Optional[dict] = None,
                 check: bool = True) -> FinishedRun:
    """Run ``command`` to its end, its output appended to ``log_path``; with ``check``, a failure raises
    :class:`TrainingError` naming the log's last error line."""
    finished = TrainingRun(command, log_path, env).wait(label, report, every_s, timeout)
    return finished.check(label) if check else finished


# ------------------------------------------------------------------------------------------ the log


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


def parse_record(line: str) -> Optional[tuple]:
    """(tag, record) of one log line, or None. A json record keeps fairseq's keys (``valid_loss``); a simple
    one (``loss=8.2, ...`` / ``| loss 7.7 | ...``) is read into the same keys."""
    match = _RECORD.search(line)
    if not match:
        return None
    tag, body = match[1], match[2]
    if body.startswith("{"):
        try:
            return tag, {key: number(value) for key, value in json.loads(body).items()}
        except (json.JSONDecodeError, AttributeError):
            return None
    if tag == "train_inner":  # epoch 001:      5 / 15 loss=8.271, ..., wall=4
        pairs = _SIMPLE_PAIR.findall(body)
        return (tag, {key: number(value) for key, value in pairs}) if pairs else None
    record = {}  # epoch 001 | valid on 'valid' subset | loss 7.723 | ... | num_updates 15
    for part in body.split(" | "):
        key, _, value = part.strip().partition(" ")
        if key == "epoch":
            record["epoch"] = number(value)
        elif key.isidentifier() and value and " " not in value:
            record[f"{tag}_{key}"] = number(value)
    return (tag, record) if len(record) > 1 else None


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
        elif match := _PARAMS.search(line):
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
    """Mean ``wps`` / ``ups`` over the ``train_inner`` records, the first ``skip_first`` of each launch left out
    (when none is left, every record, and ``includes_warmup`` says so)."""
    kept = [r for launch in launches for r in launch.records["train_inner"][skip_first:]]
    includes_warmup = not kept
    if includes_warmup:
        kept = records(launches, "train_inner")
    if not kept:
        raise TrainingError("the training log has no train_inner records (is common.log_interval smaller than the "
                            "number of updates?)")
    wps, ups = [float(r["wps"]) for r in kept], [float(r["ups"]) for r in kept]
    return {"tokens_per_s": statistics.fmean(wps), "updates_per_s": statistics.fmean(ups),
            "tokens_per_s_median": statistics.median(wps), "intervals": len(kept),
            "skipped_per_launch": 0 if includes_warmup else skip_first, "launches": len(launches),
            "includes_warmup": includes_warmup}


def summarize_log(text: str, skip_first: int = 1) -> dict:
    """Throughput, parameter count, last update and last validation loss of a training log."""
    launches = read_log(text)
    params = [launch for launch in launches if launch.params is not None]
    valid = records(launches, "valid")
    return {**throughput(launches, skip_first), "params": params[-1].params if params else None,
            "params_trained": params[-1].params_trained if params else None, "updates": last_update(launches),
            "final_valid_loss_bits": float(valid[-1]["valid_loss"]) if valid else None}


# ------------------------------------------------------------------------------------------ package steps


def export(checkpoint: Path, output: Path, data: Path | None) -> dict:
    """The Hugging Face export (with its fairseq parity check): the folder, class and parity."""
    from fairseq_headless.cli import InputError
    from fairseq_headless.export import ParityError, convert

    try:  # force: a folder without a finished marker is a leftover of an interrupted export
        summary = convert(checkpoint, output, data=data, force=True)
    except ParityError as e:  # a bug, not an input to fix: exit status 1
        raise TrainingError(f"exporting {checkpoint} to Hugging Face failed: {e}") from None
    except InputError as e:
        raise InputError(f"exporting {checkpoint} to Hugging Face failed: {e}") from None
    return {"path": str(output), "hf_class": summary["hf_class"], "max_abs_diff": max(summary["parity"].values())}


def lambada(checkpoint: Path, passages_file: Path, limit: int | None, data_bin: Path | None, device: str | None,
            batch_size: int) -> dict:
    """The LAMBADA scores of one checkpoint (lm-evaluation-harness's ``lambada_openai``), as scripts/eval_lambada.py."""
    from fairseq_headless import lambada as eval_lambada

    passages = eval_lambada.read_passages(passages_file)[:limit]
    scorer = eval_lambada.load_scorer(checkpoint, data_bin, device)
    metrics = eval_lambada.evaluate(scorer, passages, batch_size, show_progress=True)
    return {**metrics, "passages": len(passages), "model_type": scorer.description}


def glue_suite(argv: list, output: Path, models: Iterable[str], averaged: list) -> dict:
    """scripts/finetune_glue.py's suite into ``output``; per model, each task's main metric (mean over seeds)
    and Tab.1's average over ``averaged`` (per seed, then mean and std over seeds), all x 100."""
    from fairseq_headless.evaluation.cli import suite_main
    from fairseq_headless.evaluation.results import mean_std, row_average
    from fairseq_headless.evaluation.tasks import GLUE_TASKS

    code = suite_main([*argv, "--output", str(output)], "glue")
    if code != 0:
        raise TrainingError(f"the GLUE fine-tuning into {output} failed (exit {code}; its error line is above)")
    table = json.loads((output / "results_glue.json").read_text(encoding="utf-8"))["main"]  # fractions
    result = {}
    for model in models:
        metric = {task: GLUE_TASKS[task].main_metric for task in table[model]}
        per_seed = row_average(table[model], list(averaged), metric)
        mean, std = mean_std(per_seed.values())
        result[model] = {"tasks": {t: 100 * mean_std(table[model][t][m].values())[0] for t, m in metric.items()},
                         "metrics": metric, "average": 100 * mean, "average_std": 100 * std, "seeds": len(per_seed)}
    return result
