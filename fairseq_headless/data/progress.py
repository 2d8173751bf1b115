"""Progress of a pass over the corpus: a tqdm bar on a terminal, otherwise (a batch job) one log
line every ``interval`` seconds with MB read, tokens written, MB/s and the time left."""
from __future__ import annotations

import sys
import time
from typing import Callable

DEFAULT_INTERVAL_SECONDS = 30.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, what: str, total_bytes: int, interval: float = DEFAULT_INTERVAL_SECONDS,
                 log: Callable[[str], None] = print, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
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
        eta = _clock(left) if left != float("inf") else "?"
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
