"""Resumable stages: a marker JSON per stage, holding the settings it ran with (the one resume mechanism).

A stage is skipped when its marker says it finished with the same settings; it is run (again) when
the marker is missing or says it was started but not finished (an interrupted stage resumes: a
fairseq run from its ``checkpoint_last.pt``, a fine-tuning suite from its finished seeds). A marker
with other settings is an error, so results made with different options never mix silently.
Settings named ``resume_only`` (the device of a training) are compared only to resume an
unfinished stage: a finished stage's result is reused whatever they say.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from .cli import InputError
from .files import write_json_atomic


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


class StageSettingsError(InputError):
    """A stage's marker holds other settings than this call's (its callers add the fix: --force, ...)."""


class Stage:
    """One resumable step, recorded in ``marker`` (written atomically)."""

    def __init__(self, marker: Path, settings: dict, resume_only: tuple = ()):
        self.marker = Path(marker)
        self.settings = json.loads(json.dumps(settings))  # as it will read back (tuples -> lists)
        self.resume_only = frozenset(resume_only)
        self._started = None

    def _read(self) -> Optional[dict]:
        if not self.marker.exists():
            return None
        try:
            return json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged marker is a stage to redo

    def result(self) -> Optional[dict]:
        """The finished stage's result, or None if it still has to run; raises on other settings."""
        previous = self._read()
        if previous is None:
            return None
        old, done = previous.get("settings", {}), bool(previous.get("done"))
        keys = (set(old) | set(self.settings)) - (self.resume_only if done else set())
        changed = sorted(k for k in keys if old.get(k) != self.settings.get(k))
        if changed:
            raise StageSettingsError(f"{self.marker} was made with other settings ({', '.join(changed)} differ)")
        return previous.get("result") if done else None

    def start(self) -> None:
        self._started = time.time()
        write_json_atomic(self.marker, {"settings": self.settings, "done": False, "started": _stamp(self._started)})

    def finish(self, result: dict) -> dict:
        now = time.time()
        record = {"settings": self.settings, "done": True,
                  "started": None if self._started is None else _stamp(self._started), "finished": _stamp(now),
                  "seconds": None if self._started is None else round(now - self._started, 3), "result": result}
        write_json_atomic(self.marker, record)
        return result
