"""The two fairseq corrections of fairseq_headless.fairseq_patches: still needed, still applied, and correct.

If fairseq changes the code a patch corrects, the guard tests here fail: re-check the
patch against the new fairseq before relaxing them.
"""

import inspect
import os
import shutil

import pytest
import torch
import torch.distributed as dist

import fairseq_headless  # noqa: F401  (applies the patches)
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from fairseq.models import distributed_fairseq_model
from fairseq_headless import fairseq_patches


def test_fairseq_still_passes_device_ids_to_ddp_and_the_patch_is_applied():
    source = inspect.getsource(distributed_fairseq_model.DistributedFairseqModel)
    assert "wrapped_model = DistributedDataParallel(" in source
    assert "device_ids=[args.device_id]" in source
    assert distributed_fairseq_model.DistributedDataParallel is fairseq_patches.CpuSafeDistributedDataParallel


def test_cpu_safe_ddp_accepts_device_ids_for_a_cpu_module(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        module = torch.nn.Linear(3, 2)
        with pytest.raises(ValueError):  # what fairseq's call does without the patch
            torch.nn.parallel.DistributedDataParallel(module, device_ids=[0], output_device=0)
        wrapped = fairseq_patches.CpuSafeDistributedDataParallel(module, device_ids=[0], output_device=0)
        wrapped(torch.randn(4, 3)).sum().backward()
        assert module.weight.grad is not None
    finally:
        dist.destroy_process_group()


def test_fairseq_still_copies_checkpoints_with_pathmanager_and_the_patch_is_applied():
    source = inspect.getsource(checkpoint_utils.save_checkpoint)
    assert "PathManager.copy(" in source and "checkpoints[1:]" in source
    assert PathManager.copy is fairseq_patches.atomic_copy
    # the first file is written atomically by fairseq itself (.tmp + rename)
    assert "PathManager.rename(filename + \".tmp\", filename)" in inspect.getsource(checkpoint_utils.torch_persistent_save)


def test_atomic_copy_never_leaves_a_half_written_destination(tmp_path, monkeypatch):
    src, dst = tmp_path / "checkpoint_5_100.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old checkpoint")

    def crash_midway(a, b):
        with open(b, "wb") as handle:
            handle.write(b"ne")  # a partial write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b"old checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_5_100.pt", "checkpoint_last.pt"]

    monkeypatch.undo()
    assert PathManager.copy(str(src), str(dst), overwrite=True) is True
    assert dst.read_bytes() == src.read_bytes()
    assert PathManager.copy(str(src), str(dst), overwrite=False) is False
