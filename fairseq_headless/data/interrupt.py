"""Stopping a long preparation on a signal: one line, the status a shell expects, and a run that resumes.

Under :func:`stopping_on_signals`, SIGTERM (Slurm at ``--time``) and Ctrl-C raise :class:`Interrupted`
in the main thread, so ``finally`` blocks clean up while what a rerun resumes from is kept. Forked
workers leave the stopping to the parent and die with it."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Tests only: "STAGE:FILE" makes the run create FILE at STAGE and wait there for the test's signal,
# so that a test kills it at a known point instead of after a guessed time.
PAUSE_VARIABLE = "FAIRSEQ_HEADLESS_TEST_PAUSE"
PAUSE_SECONDS = 120  # a forgotten variable delays a run, never hangs it
_PR_SET_PDEATHSIG = 1

T = TypeVar("T")


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived; a KeyboardInterrupt, so that code written for Ctrl-C treats both alike."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal ended


_guarding_pid: int | None = None  # the process whose signals raise Interrupted, while it does


def _raise(signum, frame):
    for s in SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def _in_forked_child() -> None:
    global _guarding_pid
    if _guarding_pid is None:
        return
    parent, _guarding_pid = _guarding_pid, None
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # forked from a thread that is not this interpreter's main one
        pass
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: a killed parent may leave workers to finish their unit
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(128 + signal.SIGKILL)


os.register_at_fork(after_in_child=_in_forked_child)


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Interrupted` inside the block (main thread only)."""
    global _guarding_pid
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    _guarding_pid = os.getpid()
    try:
        yield
    finally:
        _guarding_pid = None
        for s, handler in previous.items():
            signal.signal(s, handler)


def interruptible(function: Callable[..., T], *args, **kwargs) -> T:
    """``function(...)`` in a thread while the main thread waits: signal handlers run between bytecodes only, so
    a long native call (sentencepiece's trainer) would hold SIGTERM back past Slurm's grace period."""
    outcome: dict = {}

    def call():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as e:  # handed to the main thread
            outcome["error"] = e

    thread = threading.Thread(target=call, name=getattr(function, "__name__", "call"), daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def pause_for_tests(stage: str) -> None:
    """At the stage named by the environment variable PAUSE_VARIABLE, create its file and wait for a signal."""
    wanted, _, path = os.environ.get(PAUSE_VARIABLE, "").partition(":")
    if wanted != stage or not path:
        return
    Path(path).touch()
    time.sleep(PAUSE_SECONDS)
