"""Launching a training run and following its output: the one launcher of ``fairseq-hydra-train``.

A run is ``fairseq-hydra-train`` on one of ``configs/`` with hydra overrides, as a subprocess
(a fresh process per run: GPU memory and fairseq's global state never leak from one run into the
next one's timing). Its stdout and stderr are appended to a log file; every launch starts with a
:data:`~.training_log.LAUNCH_MARKER` line, so a run that was interrupted and resumed from
``checkpoint_last.pt`` (fairseq does that by itself when the save folder has one) keeps one log
with every launch in it. :mod:`.training_log` reads it. Used by the sweeps of paper §6 (Fig.6
vocabulary size, Fig.7 batch size), the evaluation along training (its causal fine-tuning), the
demo, the GPU checks and the loss-curve benchmark.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from .training_log import LAUNCH_MARKER, parse_record, read_log

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
USER_DIR = REPO / "fairseq_headless"
# Needed to run the paper's fp16 GPU configs on a CPU (see README, "On CPU").
CPU_OVERRIDES = ("common.cpu=true", "common.fp16=false", "distributed_training.distributed_world_size=1")
TIMED_OUT = 124  # the exit status of a run stopped at its time limit (as coreutils' timeout)
POLL_S = 0.2


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
        """This launch's records (:func:`.training_log.read_log`)."""
        return read_log(self.output)

    def check(self, label: str) -> "FinishedRun":
        """Raise :class:`TrainingError` with the last error line of the log if the run failed."""
        if self.returncode != 0:
            lines = [line.strip() for line in self.output.splitlines()]
            last_error = next((line for line in reversed(lines) if line and not line.startswith("Set the environment")),
                              "")
            raise TrainingError(f"{label}: fairseq-hydra-train failed (exit {self.returncode}): {last_error[:300]} "
                                f"(full log: {self.log_path})")
        return self


def study_path() -> dict:
    """PYTHONPATH with the checkout first, so that ``python -m studies.X`` runs from any folder."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def study_command(module: str, *args) -> list:
    """``python -m studies.<module> ARGS`` (run it with :func:`study_path` in its environment)."""
    return [sys.executable, "-m", f"studies.{module}", *map(str, args)]


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
        # warnings stay on: the plugin filters fairseq's known ones by message (fairseq_headless/plugin.py)
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
        """Wait for the run; with ``report``, a progress line every ``every_s`` seconds; killed after ``timeout``."""
        last_report, seen, usage, status = time.time(), 0, None, None
        timed_out = False
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.time() - self.started > timeout:
                self.proc.kill()
                timed_out = True
            if report is not None and time.time() - last_report >= every_s:
                output = self._output()
                progress = [record for record in map(parse_record, output[seen:].splitlines())
                            if record and record[0] == "train_inner" and "num_updates" in record[1]]
                seen = len(output) - len(output.rsplit("\n", 1)[-1])  # up to the last whole line
                if progress:
                    last_report = time.time()
                    record = progress[-1][1]
                    report(f"{label}: update {record['num_updates']}, loss {record.get('loss')} bits, "
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


def run_training(command: list, log_path: Path, label: str, report: Optional[Callable[[str], None]] = print,
                 every_s: float = 30.0, timeout: Optional[float] = None, env: Optional[dict] = None,
                 check: bool = True) -> FinishedRun:
    """Run ``command`` to its end, appending its output to ``log_path``; a progress line every ``every_s`` seconds.

    With ``check`` (default), raises :class:`TrainingError` (with the last error line of the log) if it failed.
    """
    finished = TrainingRun(command, log_path, env).wait(label, report, every_s, timeout)
    return finished.check(label) if check else finished
