"""How far a fairseq run had trained when it saved a checkpoint: updates, tokens seen, hours.

The x axes of the paper's curves along pretraining (Figs.3-5, 7), read from what fairseq stores
(``num_updates``, the ``wpb`` meter's sum, ``previous_training_time``). Why each is right: docs/training.md."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .checkpoint_reading import cfg_field, load_state
from .cli import InputError

INTERVAL = re.compile(r"^checkpoint_(\d+)_(\d+)\.pt$")  # checkpoint_<epoch>_<updates>.pt
EPOCH = re.compile(r"^checkpoint(\d+)\.pt$")


@dataclass(frozen=True)
class Progress:
    checkpoint: str
    updates: int
    tokens: int
    seconds: float  # fairseq's cumulative training time at the save
    world_size: int
    task: str  # the fairseq task: language_modeling (decoders) or masked_lm (encoders)
    arch: str
    data: str  # the checkpoint's task.data
    cfg_digest: str  # of the whole training config (lr, seed, ...): another training in the same folder differs
    tokens_counted_updates: int  # updates whose ntokens the wpb meter holds; < updates: tokens extrapolated

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def tokens_estimated(self) -> bool:
        return self.tokens_counted_updates < self.updates

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_estimated": self.tokens_estimated, "hours": self.hours,
                "device_hours": self.hours * self.world_size}


def _meter(aggregator, name: str) -> Optional[dict]:
    """A meter's state in a saved aggregator: a list of (priority, name, class, state) tuples."""
    for entry in aggregator or ():
        if len(entry) == 4 and entry[1] == name:
            return entry[3]
    return None


def _cfg_digest(cfg) -> str:
    plain = json.dumps(cfg, sort_keys=True, default=lambda o: vars(o) if hasattr(o, "__dict__") else str(o))
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()[:16]


def read_progress(path: Path) -> Progress:
    """Updates, tokens and training seconds of one checkpoint file (loaded weights_only, memory-mapped)."""
    path = Path(path)
    state = load_state(path, mmap=True)
    try:
        extra, history, cfg = state["extra_state"], state["optimizer_history"], state["cfg"]
        updates = int(history[-1]["num_updates"])
        seconds = float(extra["previous_training_time"])
        wpb = _meter(dict(extra["metrics"]).get("default"), "wpb")
    except (KeyError, IndexError, TypeError) as e:
        raise InputError(f"{path}: no training state in it ({type(e).__name__}: {e}); a checkpoint written by "
                            "fairseq-train / fairseq-hydra-train is needed") from None
    if cfg is None:
        raise InputError(f"{path}: written without a config (pre-hydra fairseq); re-save it with fairseq >= 0.10")
    if wpb is None:
        if updates:
            raise InputError(f"{path}: its saved metrics have no 'wpb' meter, so tokens seen are unknown")
        tokens, counted = 0, 0
    else:
        total, counted = float(wpb["sum"]), int(wpb.get("count", updates))
        if counted <= 0 < updates:
            raise InputError(f"{path}: its 'wpb' meter counted no update, so tokens seen are unknown")
        # Meters reset by a resume from an end-of-epoch checkpoint: the counted updates' mean stands in for the rest.
        tokens = int(round(total if counted >= updates else total / counted * updates))
    try:
        return Progress(
            checkpoint=str(path), updates=updates, tokens=tokens, seconds=seconds,
            world_size=int(cfg_field(cfg_field(cfg, "distributed_training"), "distributed_world_size")),
            task=str(cfg_field(cfg_field(cfg, "task"), "_name")), arch=str(cfg_field(cfg_field(cfg, "model"), "_name")),
            data=str(cfg_field(cfg_field(cfg, "task"), "data")), cfg_digest=_cfg_digest(cfg),
            tokens_counted_updates=min(counted, updates),
        )
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: its config lacks {e} (task._name, task.data, model._name and "
                            "distributed_training.distributed_world_size are read)") from None


def list_checkpoints(folder: Path) -> list:
    """[(updates, path)] of the run's interval and epoch checkpoints, in training order, one per update count,
    and ``checkpoint_last.pt`` when at an update count none of them has (``checkpoint_best.pt`` is a copy)."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.glob("checkpoint*.pt")):
        match = INTERVAL.match(path.name)
        if match:
            found.setdefault(int(match[2]), path)
        elif EPOCH.match(path.name):
            found.setdefault(read_progress(path).updates, path)
    last = folder / "checkpoint_last.pt"
    if last.is_file():
        found.setdefault(read_progress(last).updates, last)
    return sorted(found.items())
