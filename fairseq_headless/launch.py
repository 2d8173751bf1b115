"""How a training run was launched must agree with the config's world size, before fairseq looks.

fairseq reconciles a launcher (torchrun, Slurm) with ``distributed_world_size`` silently; :func:`check_launch`,
:func:`check_devices` and :func:`check_data` make each case one error, run by :class:`LaunchCheck` in every
process. The cases: docs/training.md."""
from __future__ import annotations

import os
import re
from typing import Mapping

from omegaconf import OmegaConf

from .cli import InputError, write_line

TORCHRUN_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")
# The README's CPU line ("On CPU"): what a paper config needs on a machine without GPU.
CPU_OVERRIDES = "common.cpu=true common.fp16=false distributed_training.distributed_world_size=1"
# The README's CPU recipe: what a torchrun command on CPU needs besides the world size.
CPU_TORCHRUN_FLAGS = ("distributed_training.distributed_backend=gloo "
                      "distributed_training.distributed_init_method=env:// "
                      "distributed_training.distributed_no_spawn=true "
                      "'distributed_training.distributed_rank=${oc.env:RANK}'")


def _keep_the_batch(world_size: int, launched: int, update_freq: int, batch_size: int | None) -> str:
    """The overrides that keep the global batch (device batch x GPUs x update_freq) on `launched` GPUs."""
    overrides = f"distributed_training.distributed_world_size={launched}"
    if (world_size * update_freq) % launched == 0:
        return f"{overrides} 'optimization.update_freq=[{world_size * update_freq // launched}]'"
    if batch_size and (batch_size * world_size * update_freq) % launched == 0:
        return (f"{overrides} 'optimization.update_freq=[1]' "
                f"dataset.batch_size={batch_size * world_size * update_freq // launched}")
    if batch_size:
        return f"{overrides} and a dataset.batch_size x optimization.update_freq of {batch_size} x {world_size * update_freq} / {launched}"
    return f"{overrides} and a dataset.batch_size x optimization.update_freq that keeps the global batch"


def check_launch(world_size: int, update_freq: int = 1, batch_size: int | None = None, *, cpu: bool = False,
                 init_method: str | None = None, environ: Mapping[str, str] | None = None,
                 cuda_devices: int | None = None) -> None:
    """Raise InputError when the launcher in `environ` disagrees with the config's world size.

    `world_size`, `update_freq` and `batch_size` (per device) are the config's; `cuda_devices` is what this process sees
    (torch.cuda.device_count() when None); `cpu` is common.cpu."""
    environ = os.environ if environ is None else environ
    if cuda_devices is None:
        import torch
        cuda_devices = torch.cuda.device_count()
    on_cpu = cpu or cuda_devices == 0

    if all(key in environ for key in TORCHRUN_KEYS):
        launched = int(environ["WORLD_SIZE"])
        if launched != world_size:
            raise InputError(
                f"torchrun started {launched} process(es) (WORLD_SIZE={launched}) but the config has "
                f"distributed_training.distributed_world_size={world_size}: launch {world_size} process(es) "
                f"(--nnodes x --nproc_per_node), or keep the global batch with {_keep_the_batch(world_size, launched, update_freq, batch_size)}")
        if on_cpu and launched > 1 and init_method is None:
            raise InputError(
                "torchrun on CPU needs an explicit init method (fairseq otherwise divides by the number of CUDA "
                f"devices): add {CPU_TORCHRUN_FLAGS} common.cpu=true (docs/training.md, multi-process training)")
        return

    if "SLURM_NTASKS" in environ and ("SLURM_STEP_NODELIST" in environ or "SLURM_JOB_NODELIST" in environ):
        tasks, nodes = int(environ["SLURM_NTASKS"]), int(environ.get("SLURM_NNODES", "1"))
        if world_size == 1:  # fairseq returns before reading Slurm's variables: one process, one GPU
            if tasks > 1:
                raise InputError(
                    f"Slurm started {tasks} tasks (SLURM_NTASKS={tasks}) but the config has "
                    "distributed_training.distributed_world_size=1: each task would train alone into the same "
                    f"save_dir; ask for one task, or keep the global batch with {_keep_the_batch(1, tasks, update_freq, batch_size)}")
            return
        # "8", "8(x2)" (8 on each of 2 nodes) or "8,4" (uneven nodes, which fairseq's int() refuses): the first
        first = re.match(r"\d+", environ.get("SLURM_NTASKS_PER_NODE", ""))
        per_node = int(first.group()) if first else tasks // max(nodes, 1)
        if per_node == 1:
            # fairseq spawns one process per visible GPU on each node
            if not on_cpu and nodes * cuda_devices != world_size:
                raise InputError(f"Slurm runs one task on each of {nodes} node(s), and fairseq spawns one process per "
                                 f"visible GPU ({cuda_devices}): {nodes * cuda_devices} processes, but the config has "
                                 f"distributed_training.distributed_world_size={world_size}: change the node count, or "
                                 f"set {_keep_the_batch(world_size, nodes * cuda_devices, update_freq, batch_size)}")
            return
        if tasks != world_size:
            raise InputError(
                f"Slurm started {tasks} task(s) (SLURM_NTASKS={tasks}) but the config has "
                f"distributed_training.distributed_world_size={world_size}: ask for {world_size} tasks "
                f"(--nodes x --ntasks-per-node), or keep the global batch with {_keep_the_batch(world_size, tasks, update_freq, batch_size)}")
        if not on_cpu and cuda_devices < per_node:
            raise InputError(f"Slurm runs {per_node} tasks per node but this task sees {cuda_devices} GPU(s): fairseq "
                             "uses SLURM_LOCALID as the CUDA device, so every task must see all of its node's GPUs: "
                             f"ask for --gpus-per-node={per_node} instead of --gpus-per-task")


def check_devices(world_size: int, update_freq: int = 1, batch_size: int | None = None, *, fp16: bool = False,
                  cpu: bool = False, launched: bool = False, cuda_devices: int = 0) -> None:
    """Raise InputError when a config asks for devices this machine lacks: more GPUs than it has (without a
    launcher, fairseq spawns one process per GPU), or fairseq's flattened fp16, which needs a GPU.

    `fp16` is common.fp16 without memory_efficient_fp16 / fp16_no_flatten_grads (which do run on CPU);
    `launched`: torchrun, Slurm or the user started the processes (check_launch compares their count)."""
    if cuda_devices == 0 and (fp16 or (world_size > 1 and not launched)):
        asks = [f"{world_size} GPUs (distributed_training.distributed_world_size={world_size})"] if world_size > 1 else []
        asks += ["fp16 (common.fp16=true)"] if fp16 else []
        add = "common.cpu=true common.fp16=false" if launched else CPU_OVERRIDES
        raise InputError(f"the config asks for {' and '.join(asks)} and this machine has no GPU: to train on CPU, "
                          f"add {add} (README, 'On CPU', also names a batch size for a first run)")
    if cpu and fp16:
        raise InputError("common.cpu=true with common.fp16=true: fairseq's fp16 needs a GPU; add common.fp16=false")
    if not launched and not cpu and 1 < world_size and cuda_devices < world_size:
        raise InputError(f"distributed_training.distributed_world_size={world_size} but this machine has "
                         f"{cuda_devices} GPU(s): launch on {world_size} GPUs, or keep the global batch with "
                         f"{_keep_the_batch(world_size, cuda_devices, update_freq, batch_size)}")


def check_data(data, train_subset: str = "train") -> None:
    """Raise InputError unless `data` (task.data: one folder or a colon list of shards) is a data folder:
    the first entry holds dict.txt (fairseq reads its dictionary there), every entry the training split."""
    from .data.folder import check_training_folders
    check_training_folders(data, "task.data", train_subset)


def check_config(cfg, environ: Mapping[str, str] | None = None, cuda_devices: int | None = None) -> None:
    """check_launch, check_devices and check_data on a composed fairseq config (a DictConfig with
    distributed_training, optimization, common, dataset and task)."""
    environ = os.environ if environ is None else environ
    if cuda_devices is None:
        import torch
        cuda_devices = torch.cuda.device_count()
    dt = cfg.distributed_training
    update_freq = cfg.optimization.get("update_freq", [1]) if "optimization" in cfg else [1]
    batch_size = cfg.dataset.get("batch_size") if "dataset" in cfg else None
    world_size = int(dt.get("distributed_world_size", 1) or 1)
    common = cfg.common if "common" in cfg else {}
    cpu = bool(common.get("cpu", False))
    check_launch(world_size, int(update_freq[0]), batch_size, cpu=cpu,
                 init_method=dt.get("distributed_init_method"), environ=environ, cuda_devices=cuda_devices)
    # an explicit init method: the user started the processes, as a launcher does
    launched = (all(key in environ for key in TORCHRUN_KEYS) or "SLURM_NTASKS" in environ
                or dt.get("distributed_init_method") is not None)
    flat_fp16 = bool(common.get("fp16", False)) and not (common.get("memory_efficient_fp16", False)
                                                         or common.get("fp16_no_flatten_grads", False))
    check_devices(world_size, int(update_freq[0]), batch_size, fp16=flat_fp16, cpu=cpu, launched=launched,
                  cuda_devices=cuda_devices)
    if "task" in cfg and OmegaConf.is_missing(cfg.task, "data"):
        raise InputError("task.data is not set: add task.data=DATA_DIR, a folder written by "
                          "scripts/prepare_data.py (or a colon list of its shards)")
    if "task" in cfg and "data" in cfg.task:
        check_data(cfg.task.data, cfg.dataset.get("train_subset", "train") if "dataset" in cfg else "train")


try:
    from hydra.experimental.callback import Callback
except ImportError:  # hydra is fairseq's dependency; without it there is no hydra run to check
    Callback = object


class LaunchCheck(Callback):
    """hydra callback (``hydra.callbacks.launch_check._target_: fairseq_headless.launch.LaunchCheck``); also checks
    ``model.sparse_embedding_update=true``'s setup (:func:`fairseq_headless.sparse_embedding.check_training_setup`).
    hydra turns a callback's exception into a warning, so a disagreement ends the process here: one ``error:``
    line and exit code 2, on every rank."""

    def on_job_start(self, config, **kwargs) -> None:
        # fairseq is loaded (fairseq-hydra-train imports it before hydra runs this): so is the plugin
        from .sparse_embedding import SparseUpdateSetupError, check_training_setup
        try:
            check_config(config)
            check_training_setup(config)  # the sparse embedding update: the one place that sees the whole config
        except (InputError, SparseUpdateSetupError) as e:
            write_line(f"error: {e}")  # whole, in one write: every rank prints it into the same log
            raise SystemExit(2) from None
