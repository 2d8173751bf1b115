"""Two small corrections to fairseq, applied when the plugin is imported.

Each is guarded by tests/test_fairseq_patches.py, which fails if the fairseq code it
corrects changes, so that a fairseq upgrade cannot silently leave a patch stale.

1. ``ddp_backend=pytorch_ddp`` (fairseq's default) on CPU. fairseq's
   ``DistributedFairseqModel`` always passes ``device_ids=[args.device_id]`` to
   ``torch.nn.parallel.DistributedDataParallel``, which refuses device ids for a
   CPU module; multi-process CPU (gloo) training then fails unless users switch to
   ``legacy_ddp``. The patch drops the device ids when the module is on CPU and
   changes nothing on GPUs.

2. Atomic checkpoint copies. fairseq writes the first checkpoint of a save
   atomically (a ``.tmp`` file, then a rename) but *copies* it to the others
   (``checkpoint_last.pt``, ``checkpoint_best.pt``, ...) with a plain file copy: a
   crash during the copy leaves a truncated ``checkpoint_last.pt`` to resume from.
   The patch makes local copies go to a temporary file that is renamed into place.
"""

import os
import shutil
import tempfile

import torch
from fairseq.file_io import PathManager
from fairseq.models import distributed_fairseq_model


class CpuSafeDistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that ignores device ids for a module on the CPU."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = output_device = None
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """Copy a local file so that ``dst_path`` is never seen half-written."""
    if "://" in src_path or "://" in dst_path:  # remote storage: fairseq's own path
        return _original_copy(src_path, dst_path, overwrite=overwrite)
    if not overwrite and os.path.exists(dst_path):
        return False
    folder = os.path.dirname(os.path.abspath(dst_path))
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=os.path.basename(dst_path) + ".", suffix=".tmp")
    os.close(handle)
    try:
        shutil.copyfile(src_path, tmp_path)
        os.replace(tmp_path, dst_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return True


_original_copy = PathManager.copy


def apply() -> None:
    distributed_fairseq_model.DistributedDataParallel = CpuSafeDistributedDataParallel
    PathManager.copy = staticmethod(atomic_copy)


apply()
