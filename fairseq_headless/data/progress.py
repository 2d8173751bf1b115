"""Progress bars that fall back to log lines: a tqdm bar on a terminal, otherwise (a batch job, output
redirected to a log file) one line every ``interval`` seconds, since a bar redrawing itself with carriage
returns fills a log file with its every state.

:class:`Progress`: a pass over the corpus (MB read, tokens written, MB/s and the time left).
:class:`Parts`: a count of parts with the current one's status (the speed benchmark's groups)."""
from __future__ import annotations

import sys
import time
from typing import Callable

DEFAULT_INTERVAL_SECONDS = 30.0


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, what: str, total_bytes: int, interval: float = DEFAULT_INTERVAL_SECONDS,
                 log: Callable[[str], None] = print, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, leave: bool = True, short_silent: bool = False):
        self.what, self.total, self.interval, self.log, self.clock = what, total_bytes, interval, log, clock
        self.bytes = self.tokens = 0
        self.started = self._logged = clock()
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar = None
        if terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=what, file=sys.stderr,
                             dynamic_ncols=True)

    def update(self, nbytes: int, tokens: int = 0) -> None:
        self.bytes += nbytes
        self.tokens += tokens
        if self._bar is not None:
            self._bar.update(nbytes)

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.bytes / elapsed
        left = (self.total - self.bytes) / rate if rate > 0 else float("inf")
        share = 100 * self.bytes / self.total if self.total else 100.0
        eta = clock_text(left) if left != float("inf") else "?"
        tokens = f", {self.tokens:,} tokens written" if self.tokens else ""
        return (f"{self.what}: {self.bytes / 1e6:,.1f} of {self.total / 1e6:,.1f} MB read ({share:.0f}%)"
                f"{tokens}, {rate / 1e6:.2f} MB/s, ETA {eta}")

    def tick(self) -> None:
        """Log a line if ``interval`` seconds passed since the last one (never on a terminal)."""
        now = self.clock()
        if self._bar is None and now - self._logged >= self.interval:
            self._logged = now
            self.log(self.line())

    def close(self) -> float:
        """Close the bar; returns the seconds the pass took."""
        if self._bar is not None:
            self._bar.close()
        return self.clock() - self.started


class Parts:
    """``total`` parts done one by one, each reporting its status as it goes: on a terminal a tqdm bar (the
    status as its postfix); otherwise a line of parts done, time and status at most every ``interval``
    seconds, and one when the last part is done."""

    def __init__(self, what: str, total: int, unit: str = "part", interval: float = DEFAULT_INTERVAL_SECONDS,
                 log: Callable[[str], None] = print, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, leave: bool = True, short_silent: bool = False):
        self.what, self.total, self.unit, self.interval, self.log, self.clock = what, total, unit, interval, log, clock
        self.done, self.status, self._logged_done = 0, "", None
        # short_silent: no line at the end of a count that ended before its first line (every fine-tuning epoch
        # of a small task would otherwise add one to the log for nothing)
        self.short_silent = short_silent
        self.started = self._logged = clock()
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar = None
        if terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)

    def line(self) -> str:
        elapsed = self.clock() - self.started
        share = 100 * self.done / self.total if self.total else 100.0
        status = f": {self.status}" if self.status else ""
        return f"{self.what}: {self.done}/{self.total} {self.unit}s ({share:.0f}%), {clock_text(elapsed)} elapsed{status}"

    def _tick(self, force: bool = False) -> None:
        now = self.clock()
        if force and self.short_silent and self._logged_done is None and now - self._logged < self.interval:
            return
        if self._bar is None and (force or now - self._logged >= self.interval):
            self._logged, self._logged_done = now, self.done
            self.log(self.line())

    def report(self, status: str) -> None:
        """The current part's status (a bar's postfix; in a log line at most every ``interval`` seconds)."""
        self.status = status
        if self._bar is not None:
            self._bar.set_postfix_str(status[-90:], refresh=True)
        self._tick()

    def advance(self, parts: int = 1) -> None:
        self.done += parts
        if self._bar is not None:
            self._bar.update(parts)
        self._tick(force=self.done >= self.total)

    def write(self, text: str) -> None:
        """A message of its own, above the bar or as a log line."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            self.log(text)

    def close(self) -> None:
        """Close the bar; without one, a last line unless the last one already had every part done so far."""
        if self._bar is not None:
            self._bar.close()
        self._tick(force=self._logged_done != self.done)
