"""Corrections of fairseq's own bugs, applied when the plugin is imported (:mod:`fairseq_headless.plugin`).

Nothing here adds a feature: features are registered components. Each patch is guarded by
tests/test_fairseq_patches.py, which fails if the fairseq code it corrects changes, so that an upgrade
cannot leave a patch stale. The six, each explained in docs/design.md#fairseq_patchespy:
1. ``pytorch_ddp`` on CPU (no device ids), and ``broadcast_buffers`` under torch's new name;
2. atomic copies of checkpoints (``checkpoint_last.pt`` is never half-written);
3. numpy 2's missing ``np.compat.long`` in ``TokenBlockDataset`` (``sample_break_mode=eos``);
4. the sparse all-reduce hook on fairseq's DDP; 5. dummy batches marked for the criterion;
6. fairseq-train checkpoints (an ``argparse.Namespace``) under torch's ``weights_only`` loading."""

import inspect
import os
import types

import numpy as np
import torch
from fairseq import checkpoint_utils, models as _fairseq_models
from fairseq.data import token_block_dataset
from fairseq.file_io import PathManager
from fairseq.models import distributed_fairseq_model
from fairseq.trainer import Trainer

from .checkpoint_reading import LEGACY_CONFIG_CLASSES
from .criterions.cwt_criterion import DUMMY_BATCH
from .files import copy_atomic
from .sparse_all_reduce import register_sparse_all_reduce
from .sparse_embedding import has_sparse_embedding_update


_TAKES_FORWARD_SYNC_BUFFERS = "forward_sync_buffers" in inspect.signature(
    torch.nn.parallel.DistributedDataParallel.__init__).parameters


class CpuSafeDistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that ignores device ids for a module on the CPU, and takes fairseq's
    ``broadcast_buffers`` as torch's ``forward_sync_buffers``."""

    def __init__(self, module, device_ids=None, output_device=None, broadcast_buffers=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = output_device = None
        if broadcast_buffers is not None:
            if _TAKES_FORWARD_SYNC_BUFFERS:
                kwargs.setdefault("forward_sync_buffers", bool(broadcast_buffers))
            else:  # a torch before the new name (setup.py allows any torch 2.x)
                kwargs["broadcast_buffers"] = broadcast_buffers
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """Copy a local file so that ``dst_path`` is never seen half-written."""
    if "://" in src_path or "://" in dst_path:  # remote storage: fairseq's own path
        return _original_copy(src_path, dst_path, overwrite=overwrite)
    if not overwrite and os.path.exists(dst_path):
        return False
    copy_atomic(src_path, dst_path)  # with the mode a plain copy would give, readable by colleagues
    return True


_original_copy = PathManager.copy


class _NumpyWithCompatLong(types.ModuleType):
    """numpy, seen from fairseq's token_block_dataset module, with numpy 1's ``np.compat.long``."""

    compat = types.SimpleNamespace(long=np.int64)

    def __getattr__(self, name):
        return getattr(np, name)


def numpy_for_token_blocks():
    return np if hasattr(np, "compat") else _NumpyWithCompatLong("numpy")


def apply() -> None:
    distributed_fairseq_model.DistributedDataParallel = CpuSafeDistributedDataParallel
    PathManager.copy = staticmethod(atomic_copy)
    token_block_dataset.np = numpy_for_token_blocks()
    _fairseq_models.DistributedFairseqModel = distributed_fairseq_model_with_sparse_all_reduce
    Trainer._prepare_sample = prepare_sample_marking_dummies
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu_allowing_namespace


# ---- the sparse all-reduce hook on fairseq's DDP, dummy batches marked (4 and 5) ----------------


def _find_ddp(wrapped):
    """The torch DDP inside fairseq's wrappers (``ModuleProxyWrapper``, ``DistributedTimeoutWrapper``), or None."""
    for _ in range(4):
        if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
            return wrapped
        wrapped = getattr(wrapped, "module", None)
    return None


def distributed_fairseq_model_with_sparse_all_reduce(args, model, process_group, device):
    """``fairseq.models.DistributedFairseqModel``; a DDP whose module has a row-sparse embedding gets the hook."""
    wrapped = _original_distributed_fairseq_model(args, model, process_group, device)
    if has_sparse_embedding_update(model.parameters()):
        ddp = _find_ddp(wrapped)
        if ddp is None:  # lazy_adam and check_training_setup refuse the other backends first
            raise ValueError(f"model.sparse_embedding_update=true: no PyTorch DDP module in {type(wrapped).__name__} "
                             "to register the sparse all-reduce on; use ddp_backend=pytorch_ddp")
        register_sparse_all_reduce(ddp, process_group)
    return wrapped


def prepare_sample_marking_dummies(self, sample, is_dummy=False):
    """``Trainer._prepare_sample``; the sample of a dummy batch comes back marked (a copy: the kept batch is not)."""
    sample, is_dummy_batch = _original_prepare_sample(self, sample, is_dummy=is_dummy)
    if is_dummy_batch and isinstance(sample, dict):
        sample = {**sample, DUMMY_BATCH: True}
    return sample, is_dummy_batch


# ---- fairseq-train checkpoints under weights_only loading (6) ------------------------------------


def load_checkpoint_to_cpu_allowing_namespace(path, arg_overrides=None, load_on_all_ranks=False):
    """``checkpoint_utils.load_checkpoint_to_cpu``, its ``torch.load`` allowed fairseq-train's ``argparse.Namespace``."""
    with torch.serialization.safe_globals(LEGACY_CONFIG_CLASSES):
        return _original_load_checkpoint_to_cpu(path, arg_overrides=arg_overrides, load_on_all_ranks=load_on_all_ranks)


_original_load_checkpoint_to_cpu = checkpoint_utils.load_checkpoint_to_cpu
_original_distributed_fairseq_model = _fairseq_models.DistributedFairseqModel
_original_prepare_sample = Trainer._prepare_sample


apply()
