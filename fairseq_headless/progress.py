"""Progress of a long count (bytes of a corpus, steps of an epoch, passages, benchmark parts).

On a terminal a tqdm bar; otherwise (a batch job, output in a log file, where a bar's every redraw
would stay) one log line at most every ``interval`` seconds and one at the end."""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

INTERVAL_SECONDS = 30.0

logger = logging.getLogger(__name__)


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``total`` units (``unit="B"``: bytes, shown as MB) done with :meth:`update`; :meth:`report` sets a status
    shown beside the count. ``transient``: a bar that goes when closed, and no line at all for a count that
    ended before its first one (a short fine-tuning epoch would otherwise add a line to the log for nothing)."""

    def __init__(self, what: str, total: int, unit: str = "B", interval: float = INTERVAL_SECONDS,
                 log: Callable[[str], None] | None = None, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, transient: bool = False):
        self.what, self.total, self.unit, self.interval = what, total, unit, interval
        self.log, self.clock, self.transient = log or logger.info, clock, transient
        self.done, self.status = 0, ""
        self.started = self._logged = clock()
        self._logged_done = None  # the count of the last line written
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar = None
        if terminal:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=what, unit=unit, unit_scale=unit == "B", file=sys.stderr,
                             dynamic_ncols=True, leave=not transient)

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        share = 100 * self.done / self.total if self.total else 100.0
        if self.unit == "B":
            count, speed = f"{self.done / 1e6:,.1f} of {self.total / 1e6:,.1f} MB read", f"{rate / 1e6:.2f} MB/s"
        else:
            count, speed = f"{self.done:,}/{self.total:,} {self.unit}s", f"{clock_text(elapsed)} elapsed"
        eta = clock_text((self.total - self.done) / rate) if rate > 0 else "?"
        status = f", {self.status}" if self.status else ""
        return f"{self.what}: {count} ({share:.0f}%){status}, {speed}, ETA {eta}"

    def _tick(self, force: bool = False) -> None:
        if self._bar is not None:
            return
        now = self.clock()
        if force and self.transient and self._logged_done is None and now - self._logged < self.interval:
            return
        if force or now - self._logged >= self.interval:
            self._logged, self._logged_done = now, self.done
            self.log(self.line())

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        self._tick()

    def report(self, status: str) -> None:
        """The status beside the count (a bar's postfix; in the next log line)."""
        self.status = status
        if self._bar is not None:
            self._bar.set_postfix_str(status[-90:], refresh=False)
        self._tick()

    def write(self, text: str) -> None:
        """A message of its own, above the bar or as a log line."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            self.log(text)

    def close(self) -> float:
        """Close the bar, or write the last line (unless the last one already had this count); returns the
        seconds since the start."""
        if self._bar is not None:
            self._bar.close()
        elif self._logged_done != self.done:
            self._tick(force=True)
        return self.clock() - self.started
