"""fairseq's training command lines as the tests run them, and what the tests read from their logs."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, run_cli
from ddp_ranks import free_port  # noqa: F401  (re-exported: torchrun's --master_port)

HEAD_KEYS = ("lm_head", "output_projection", "embed_out")

# The CPU recipe of README "Multi-process training"; ddp_backend stays fairseq's default
# (pytorch_ddp), which works on CPU thanks to fairseq_headless.fairseq_patches.
TWO_PROCESSES = [
    "distributed_training.distributed_world_size=2", "distributed_training.distributed_backend=gloo",
    "distributed_training.distributed_init_method=env://", "distributed_training.distributed_no_spawn=true",
    "distributed_training.distributed_rank=${oc.env:RANK}", "common.cpu=true",
]

# A higher peak lr than the tiny configs' so that a few dozen updates move every tiny loss clearly.
SHORT_SCHEDULE = ["lr_scheduler.warmup_updates=5", "optimization.lr=[0.003]"]


def hydra_args(config, data, save_dir, *overrides):
    return ["--config-dir", REPO / "configs", "--config-name", config, f"task.data={data}",
            f"checkpoint.save_dir={save_dir}", "common.log_interval=5", *overrides]


def hydra_train(config, data, save_dir, *overrides) -> str:
    """fairseq-hydra-train CONFIG on `data` into `save_dir`; its whole log."""
    return run_cli(["fairseq-hydra-train", *hydra_args(config, data, save_dir, *overrides)])


@dataclass(frozen=True)
class TrainingRun:
    """A finished fairseq-hydra-train run: rerun it (into another folder) with the same config, data and overrides.
    Its save_dir is shared by the whole session: copy it before resuming."""
    config: str
    data: Path
    overrides: tuple
    save_dir: Path
    log: str

    @property
    def checkpoint(self) -> Path:
        return self.save_dir / "checkpoint_last.pt"


def train_losses(log: str):
    return [float(x) for x in re.findall(r"train_inner.*? loss=([\d.]+)", log)]


def assert_learns(losses, margin=0.15):
    """Mean of the last three logged losses below the mean of the first two by `margin` bits."""
    assert len(losses) >= 5, losses
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2 - margin, losses


def last_num_updates(log: str) -> int:
    return int(re.findall(r"num_updates[ =](\d+)", log)[-1])


def head_keys(path) -> list[str]:
    """The output-head entries of a checkpoint's model (none in a headless one); fails on an empty model."""
    import torch

    keys = list(torch.load(path, map_location="cpu", weights_only=False)["model"])
    assert keys, path
    return [k for k in keys if any(h in k for h in HEAD_KEYS)]
