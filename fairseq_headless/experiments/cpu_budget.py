"""Equal compute for trainings that share a machine: a budget of CPU seconds per training process.

fairseq stops a run only at ``optimization.max_update``, at ``stop_time_hours`` of *wall-clock*
time, on validation patience, or at ``stop_min_lr`` between epochs (``fairseq_cli/train.py``); it
installs no signal handler, so a SIGINT or SIGTERM ends it without a checkpoint. A wall-clock budget
gives the run that trains while the machine is busier less compute (measured with a neighbour job:
398 headless vs 1,244 vanilla updates in 180 s each). The CPU seconds of the training process are
what it computed, whatever else runs beside it. With one compute thread per run
(:data:`ONE_THREAD`) they are not inflated by OpenMP threads spinning while they wait for a core.

Two halves, one per process:

* in the supervisor, :class:`CpuBudget` reads the CPU seconds of each run's process tree from
  ``/proc`` on every poll of :meth:`TrainingRun.wait <.training_runs.TrainingRun.wait>` and, once
  a run has spent its budget, sends it :data:`STOP_SIGNAL`;
* in the run, the hydra callback :class:`StopOnSignal` (the override :data:`CALLBACK_OVERRIDE`)
  installs the handler. It sets the run's own ``optimization.max_update`` to the updates done so far,
  so fairseq stops after the current update through its own ``max_update`` path: it validates and
  saves ``checkpoint_last.pt`` as at any normal end. The handler writes :data:`ACK` to the log.

The stop lands at most one update and one poll (:data:`~.training_runs.POLL_S`) after the budget;
the final validation and save come after it and are counted in :attr:`FinishedRun.cpu_s
<.training_runs.FinishedRun.cpu_s>` but not in the budget.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Callable, Optional

STOP_SIGNAL = signal.SIGUSR1
ACK = "[cpu_budget] stop requested at update"
ACK_PATTERN = re.compile(re.escape(ACK) + r" (\d+)")
CALLBACK_OVERRIDE = "+hydra.callbacks.stop_on_signal._target_=fairseq_headless.experiments.cpu_budget.StopOnSignal"
# one compute thread per run: CPU seconds then measure work, not threads spinning for a busy core
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RESEND_S = 1.0  # a request that found no trainer yet (still starting) is sent again
# a run that computes this much past its budget without acknowledging has no handler: killed, with an error
# (CPU seconds, not wall: a run still starting on a busy machine is slow, not broken; start-up is ~6-8 CPU s)
ACK_TIMEOUT_CPU_S = 30.0
PROC = Path("/proc")


def start_run(command: list, log_path: Path):
    """A run under a budget: one compute thread, and the stop signal ignored until the run's :class:`StopOnSignal`
    installs its handler. The default action of SIGUSR1 ends a process, and a run spends its first CPU seconds
    importing fairseq, before hydra calls the callback; an ignored disposition survives exec, so a request
    that comes that early is ignored, and sent again (:data:`RESEND_S`) until the handler answers."""
    from .training_runs import TrainingRun

    previous = signal.signal(STOP_SIGNAL, signal.SIG_IGN)  # the child inherits it; the parent's returns at once
    try:
        return TrainingRun(command, log_path, env=ONE_THREAD)
    finally:
        signal.signal(STOP_SIGNAL, previous)


class BudgetError(RuntimeError):
    """The budget cannot be measured or enforced here; the message says what to use instead."""


# ---------------------------------------------------------------- in the training process


def request_stop(frame) -> Optional[int]:
    """Make the fairseq training on ``frame``'s stack stop after its current update.

    ``fairseq_cli.train``'s ``main`` (and ``train``, ``validate_and_save``) hold the run's config as
    ``cfg`` and its ``trainer``; ``validate_and_save`` reads ``cfg.optimization.max_update`` after
    every update. Returns the updates done, or None while no trainer exists yet.
    """
    while frame is not None:
        if frame.f_globals.get("__name__") == "fairseq_cli.train":
            local = frame.f_locals
            if "trainer" in local and "cfg" in local:
                updates = local["trainer"].get_num_updates()
                # 0 would read as "no limit" (fairseq: `max_update or math.inf`): one update at least
                local["cfg"].optimization.max_update = max(updates, 1)
                return updates
        frame = frame.f_back
    return None


def _on_stop_signal(signum, frame) -> None:
    updates = request_stop(frame)
    if updates is not None:
        # os.write, not print: the handler may interrupt a write to the same stream (reentrant call)
        os.write(2, f"\n{ACK} {updates} (CPU-time budget spent): fairseq stops after this update\n".encode())


try:
    from hydra.experimental.callback import Callback
except ImportError:  # hydra is fairseq's dependency; without it there is no hydra run to stop
    Callback = object


class StopOnSignal(Callback):
    """hydra callback: on :data:`STOP_SIGNAL`, the run stops after its current update and saves."""

    def on_job_start(self, config, **kwargs) -> None:
        signal.signal(STOP_SIGNAL, _on_stop_signal)

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        # training is over: a late request (re-sent while unanswered) must not kill the exiting process,
        # which it would once the interpreter's finalisation restored the signal's default action
        signal.signal(STOP_SIGNAL, signal.SIG_IGN)


# ---------------------------------------------------------------- in the supervisor


def _stat(pid: int):
    """(ppid, utime + stime + cutime + cstime in ticks) of ``pid``; None once gone."""
    try:
        with open(PROC / str(pid) / "stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the command name may hold spaces
    except OSError:
        return None
    # fields[1] = ppid; fields[11:15] = utime, stime, cutime, cstime (proc(5), fields 14-17)
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def _children(pid: int) -> list:
    """``pid``'s live children: its threads' ``children`` files (a few reads), or a scan of /proc where the
    kernel lacks them (CONFIG_PROC_CHILDREN)."""
    try:
        tasks = os.listdir(PROC / str(pid) / "task")
        found = []
        for task in tasks:
            with open(PROC / str(pid) / "task" / task / "children", "rb") as children:
                found += [int(child) for child in children.read().split()]
        return found
    except FileNotFoundError:
        if not (PROC / str(pid)).exists():
            return []
    except OSError:
        return []
    return [int(e.name) for e in os.scandir(PROC) if e.name.isdigit() and (_stat(int(e.name)) or (None,))[0] == pid]


def process_tree_cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of ``pid``, its live descendants and their reaped children; None once gone."""
    if not PROC.is_dir():
        raise BudgetError("the demo's CPU-time budget reads /proc, which this system lacks (Linux only)")
    root = _stat(pid)
    if root is None:
        return None
    ticks, frontier = root[1], _children(pid)
    while frontier:
        child = frontier.pop()
        stat = _stat(child)
        if stat is not None:
            ticks += stat[1]
            frontier += _children(child)
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuBudget:
    """Stops each of ``runs`` ({name: TrainingRun}) once its process tree has used ``budget_s`` CPU seconds.

    Call :meth:`poll` often (``TrainingRun.wait(on_poll=budget.poll)``); :meth:`stop` gives, per run, the
    CPU and wall seconds when its stop was requested and the update it stopped after.
    """

    def __init__(self, runs: dict, budget_s: float, report: Optional[Callable[[str], None]] = None,
                 every_s: float = 10.0):
        self.runs, self.budget_s, self.report, self.every_s = runs, budget_s, report, every_s
        self.cpu = {name: 0.0 for name in runs}  # the last reading
        self.stops = {}  # name -> {"cpu_s", "wall_s", "update"}: when the stop was first requested, and where
        self._requests = {}  # name -> {"cpu_s", "wall_s", "last" send time} until acknowledged
        self._last_report = time.time()
        self._next_reading = {name: 0.0 for name in runs}

    def poll(self) -> None:
        for name, run in self.runs.items():
            if name in self.stops or run.proc.returncode is not None or time.time() < self._next_reading[name]:
                continue
            cpu = process_tree_cpu_seconds(run.proc.pid)
            if cpu is None:
                continue
            self.cpu[name] = cpu
            # far from the budget, read once a second at most: a run on N cores cannot spend more than N CPU
            # seconds per second, so near it every poll reads (the supervisor's own CPU stays small)
            self._next_reading[name] = time.time() + min(1.0, (self.budget_s - cpu) / (os.cpu_count() or 1))
            if cpu >= self.budget_s:
                self._stop(name, run, cpu)
        if self.report is not None and time.time() - self._last_report >= self.every_s:
            self._last_report = time.time()
            self.report(", ".join(f"{name} {self.cpu[name]:.0f}/{self.budget_s:.0f} CPU s"
                                  + (" (stopping)" if name in self._requests else "") for name in self.runs))

    def stop(self, name: str) -> Optional[dict]:
        """The stop of run ``name`` (see :attr:`stops`), also when it ended before a poll saw its answer;
        None when it ended by itself (max_update)."""
        if name not in self.stops and name in self._requests:
            self._acknowledged(name, self.runs[name])
        return self.stops.get(name)

    def _acknowledged(self, name, run) -> bool:
        ack = ACK_PATTERN.search(run.log_path.read_bytes()[run.offset:].decode("utf-8", errors="replace"))
        if ack:
            request = self._requests[name]
            self.stops[name] = {"cpu_s": request["cpu_s"], "wall_s": request["wall_s"], "update": int(ack.group(1))}
        return bool(ack)

    def _stop(self, name, run, cpu) -> None:
        now = time.time()
        request = self._requests.get(name)
        if request is None:
            request = self._requests[name] = {"cpu_s": cpu, "wall_s": now - run.started, "last": 0.0}
        if self._acknowledged(name, run):
            return
        if cpu > request["cpu_s"] + ACK_TIMEOUT_CPU_S:
            run.kill()
            raise BudgetError(f"{name}: no answer to the stop request in {ACK_TIMEOUT_CPU_S:.0f} CPU s; the run needs "
                              f"the override {CALLBACK_OVERRIDE} (log: {run.log_path})")
        if now - request["last"] >= RESEND_S:
            os.kill(run.proc.pid, STOP_SIGNAL)
            request["last"] = now
