"""A training log line at least every 30 s, whatever fairseq's ``common.log_interval`` (docs/training.md).

:class:`Heartbeat`, a hydra callback, logs one more line whenever fairseq's loggers were silent for
``interval`` seconds, so a slow run or a hang shows in the log."""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable

from .progress import INTERVAL_SECONDS, clock_text

logger = logging.getLogger(__name__)
FAIRSEQ_LOGGERS = ("fairseq", "fairseq_cli")  # every line of a training log but hydra's and the plugin's

try:
    from hydra.experimental.callback import Callback
except ImportError:  # hydra is fairseq's dependency; without it there is no hydra run to watch
    Callback = object


class Silence(logging.Handler):
    """The time and text of the last log record of the process; :meth:`line` says what to log after a silence."""

    def __init__(self, interval: float = INTERVAL_SECONDS, max_update: int = 0,
                 updates: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.monotonic):
        super().__init__(level=logging.NOTSET)
        self.interval, self.max_update, self.updates, self.clock = interval, max_update, updates, clock
        self.started = self.last = clock()
        self.last_text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = self.clock()
        self.last_text = (record.getMessage().splitlines() or [""])[0][:100]

    def line(self) -> str | None:
        """The heartbeat line when ``interval`` seconds passed without a log line, else None."""
        now = self.clock()
        if now - self.last < self.interval:
            return None
        updates = f"{self.updates()}{f'/{self.max_update}' if self.max_update else ''} updates"
        last = f", last: {self.last_text}" if self.last_text else ""
        silent, self.last = now - self.last, now
        return f"training: {updates}, {clock_text(now - self.started)} elapsed; no log line for {clock_text(silent)}{last}"


def fairseq_updates() -> int:
    """fairseq's update counter as its trainer logs it (``num_updates`` of the ``default`` metrics; none
    before the first update of a new run)."""
    from fairseq.logging import metrics
    meter = metrics.get_meter("default", "num_updates")
    return 0 if meter is None or meter.val is None else int(meter.val)


def fairseq_draws_a_bar(common) -> bool:
    """fairseq's progress_bar: tqdm when the format is (or defaults to) tqdm and stderr is a terminal."""
    log_format = common.get("log_format") or ("simple" if common.get("no_progress_bar", False) else "tqdm")
    return log_format == "tqdm" and sys.stderr.isatty()


def trains_in_this_process(distributed_training, environ=os.environ) -> bool:
    """False in the parent of a run that fairseq spawns (several GPUs, no launcher)."""
    return (int(distributed_training.get("distributed_world_size", 1) or 1) <= 1
            or bool(distributed_training.get("distributed_no_spawn", False)) or "WORLD_SIZE" in environ)


class Heartbeat(Callback):
    """hydra callback (``hydra.callbacks.heartbeat._target_: fairseq_headless.training_heartbeat.Heartbeat``);
    ``interval`` (seconds) is its one option: ``+hydra.callbacks.heartbeat.interval=10`` (with a ``+``: the YAMLs leave the default)."""

    def __init__(self, interval: float = INTERVAL_SECONDS):
        self.interval = float(interval)
        self._silence = None
        self._stop = threading.Event()

    def on_job_start(self, config, **kwargs) -> None:
        if fairseq_draws_a_bar(config.common) or not trains_in_this_process(config.distributed_training):
            return
        self._silence = Silence(self.interval, int(config.optimization.get("max_update", 0) or 0), fairseq_updates)
        for name in FAIRSEQ_LOGGERS:
            logging.getLogger(name).addHandler(self._silence)
        threading.Thread(target=self._watch, name="heartbeat", daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(min(self.interval / 4, 1.0)):
            line = self._silence.line()
            if line:
                logger.info(line)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        self._stop.set()
        if self._silence is not None:
            for name in FAIRSEQ_LOGGERS:
                logging.getLogger(name).removeHandler(self._silence)
