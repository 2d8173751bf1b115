"""The fairseq corrections of fairseq_headless.fairseq_patches: still needed, still applied, and correct.

If fairseq changes the code a patch corrects, the guard tests here fail: re-check the
patch against the new fairseq before relaxing them.
"""

import inspect
import os
import re
import shutil
import time

import pytest
import torch
import torch.distributed as dist

from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from fairseq.models import distributed_fairseq_model
from fairseq_headless import fairseq_patches  # imports the plugin, which applies the patches


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


@pytest.mark.parametrize("broadcast_buffers", [False, True])
def test_fairseqs_broadcast_buffers_reaches_ddp_under_its_new_name_without_a_warning(tmp_path, broadcast_buffers):
    import warnings

    assert "broadcast_buffers=args.broadcast_buffers," in inspect.getsource(
        distributed_fairseq_model.DistributedFairseqModel)  # what fairseq passes
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        module = torch.nn.BatchNorm1d(3)  # a module with buffers
        with pytest.warns(FutureWarning, match="broadcast_buffers"):  # what fairseq's call gets without the patch
            torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=broadcast_buffers)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            wrapped = fairseq_patches.CpuSafeDistributedDataParallel(module, device_ids=[0], output_device=0,
                                                                     broadcast_buffers=broadcast_buffers)
        assert wrapped.forward_sync_buffers is broadcast_buffers
    finally:
        dist.destroy_process_group()


def test_a_torch_without_forward_sync_buffers_gets_broadcast_buffers(monkeypatch):
    """setup.py allows any torch 2.x: one that predates the new name must get the argument under the old one."""
    received = {}
    monkeypatch.setattr(fairseq_patches, "_TAKES_FORWARD_SYNC_BUFFERS", False)
    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "__init__",
                        lambda self, module, **kwargs: received.update(kwargs))
    fairseq_patches.CpuSafeDistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0], broadcast_buffers=False)
    assert received == {"device_ids": None, "output_device": None, "broadcast_buffers": False}


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


# 3. numpy 2 and sample_break_mode=eos
# (The sparse embedding update is no patch: the registered optimizer lazy_adam, tests/test_sparse_embedding.py
# guards the fairseq code it overrides.)

def test_fairseq_still_uses_np_compat_long_in_eos_mode_and_the_patch_is_applied():
    import numpy as np
    from fairseq.data import token_block_dataset

    assert "np.compat.long" in inspect.getsource(token_block_dataset.TokenBlockDataset)
    if not hasattr(np, "compat"):  # numpy 2: fairseq's module sees the stand-in, numpy itself is untouched
        assert token_block_dataset.np.compat.long is np.int64 and token_block_dataset.np.arange is np.arange


def test_eos_mode_blocks_are_the_lines(tiny_data):
    """Training with task.sample_break_mode=eos: one block per line of the split, every token kept."""
    from conftest import load_config
    from fairseq import tasks

    cfg = load_config("hlm_tiny", f"task.data={tiny_data}", "task.sample_break_mode=eos")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    blocks, lines = task.dataset("valid"), (tiny_data.parent / "valid.txt").read_text().splitlines()
    assert len(blocks) == len(lines) == 80
    assert [int(n) for n in blocks.sizes] == [len(line.split()) + 1 for line in lines]  # + </s>


def test_build_dataset_for_inference_scores_through_eos_mode(tiny_data):
    """LanguageModelingTask.build_dataset_for_inference (the hub interface's score/sample, fairseq-interactive)."""
    from conftest import load_config
    from fairseq import tasks

    task = tasks.setup_task(load_config("hlm_tiny", f"task.data={tiny_data}").task)
    eos, pad = task.source_dictionary.eos(), task.source_dictionary.pad()
    tokens = [torch.tensor([10, 11, 12, eos]), torch.tensor([13, eos])]
    dataset = task.build_dataset_for_inference(tokens, [4, 2])
    batch = dataset.collater([dataset[0], dataset[1]])
    assert batch["net_input"]["src_tokens"].tolist() == [[eos, 10, 11, 12], [eos, 13, pad, pad]]
    assert batch["target"].tolist() == [[10, 11, 12, pad], [13, pad, pad, pad]]


# 4. The sparse all-reduce hook on fairseq's DDP (model.sparse_embedding_update under NCCL)

def test_fairseq_builds_its_ddp_in_distributedfairseqmodel_and_the_patch_is_applied():
    from fairseq import models
    from fairseq.trainer import Trainer

    for prop in (Trainer.model, Trainer.criterion):  # where the trainer wraps the model and the criterion
        assert "models.DistributedFairseqModel(" in inspect.getsource(prop.fget)
    source = inspect.getsource(fairseq_patches._original_distributed_fairseq_model)
    assert "wrapped_model = DistributedDataParallel(" in source
    assert "wrapped_model = ModuleProxyWrapper(wrapped_model)" in source  # what _find_ddp looks through
    # fairseq's only hook, fp16 compression, is the one registration that could clash: refused by the check
    assert 'if args.ddp_comm_hook == "fp16"' in source and "register_ddp_comm_hook(" in source
    assert models.DistributedFairseqModel is fairseq_patches.distributed_fairseq_model_with_sparse_all_reduce


def ddp_args():
    from types import SimpleNamespace

    return SimpleNamespace(tpu=False, ddp_backend="pytorch_ddp", device_id=0, broadcast_buffers=False, bucket_cap_mb=25,
                           find_unused_parameters=False, gradient_as_bucket_view=False, ddp_comm_hook="none",
                           heartbeat_timeout=-1)


def test_the_hook_is_registered_on_a_ddp_with_a_row_sparse_embedding_only(tmp_path):
    from fairseq import models
    from fairseq.distributed import DistributedTimeoutWrapper

    from fairseq_headless.sparse_embedding import MARKER

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        sparse = torch.nn.Sequential(torch.nn.Embedding(6, 3, sparse=True), torch.nn.Linear(3, 1))
        setattr(sparse[0].weight, MARKER, True)
        dense = torch.nn.Sequential(torch.nn.Embedding(6, 3), torch.nn.Linear(3, 1))
        wrapped = models.DistributedFairseqModel(ddp_args(), sparse, process_group=None, device="cpu")
        other = models.DistributedFairseqModel(ddp_args(), dense, process_group=None, device="cpu")
        ddp = fairseq_patches._find_ddp(wrapped)
        # with heartbeat_timeout > 0, fairseq adds one wrapper more
        assert fairseq_patches._find_ddp(DistributedTimeoutWrapper(wrapped, timeout=-1)) is ddp
        assert ddp.sparse_all_reduce.calls == 0 and not hasattr(fairseq_patches._find_ddp(other), "sparse_all_reduce")
        wrapped(torch.tensor([[1, 4, 4]])).sum().backward()
        assert ddp.sparse_all_reduce.calls == 1 and ddp.sparse_all_reduce.dense_buckets >= 1
        expected = torch.zeros(6, 3)
        expected[[1, 4]] = sparse[1].weight.detach() * torch.tensor([[1.0], [2.0]])
        assert sparse[0].weight.grad.is_sparse
        torch.testing.assert_close(sparse[0].weight.grad.to_dense(), expected)  # one rank: its own gradient
        # gloo's worker thread frees a finished all-reduce under the GIL: give it the GIL before the DDP objects
        # (and their process group, whose destructor joins that thread while this one holds the GIL) are freed
        time.sleep(0.5)
        del wrapped, other, ddp
    finally:
        dist.destroy_process_group()


# 5. Dummy batches marked (negatives_scope=global with unequal batch counts)

def test_fairseq_still_replays_dummy_batches_through_prepare_sample_and_the_patch_is_applied():
    from fairseq.trainer import Trainer

    train, valid = inspect.getsource(Trainer.train_step), inspect.getsource(Trainer.valid_step)
    for source in (train, valid):
        assert "sample, is_dummy_batch = self._prepare_sample(sample)" in source
    assert "ignore_grad=is_dummy_batch" in train  # what the task's train_step turns into loss * 0
    # the task runs the criterion, then that micro-batch's backward: the criterion's one-shot hook emptying a
    # dummy's sparse gradient (model.sparse_embedding_update) fires in that backward and no other
    from fairseq.tasks import FairseqTask

    task_step = inspect.getsource(FairseqTask.train_step)
    pattern = r"criterion\(model, sample\)\s+if ignore_grad:\s+loss \*= 0\s+with [^\n]+\s+optimizer\.backward\(loss\)"
    assert re.search(pattern, task_step), task_step
    prepare = inspect.getsource(fairseq_patches._original_prepare_sample)
    assert "sample, _ = self._prepare_sample(self._dummy_batch, is_dummy=True)" in prepare
    assert "return sample, True" in prepare
    assert Trainer._prepare_sample is fairseq_patches.prepare_sample_marking_dummies


def test_a_replayed_batch_comes_back_marked_and_the_kept_one_does_not(tiny_data):
    from conftest import build_task_and_model
    from fairseq.trainer import Trainer
    from test_models import one_training_batch

    from fairseq_headless.criterions.cwt_criterion import DUMMY_BATCH

    cfg, task, model = build_task_and_model("hmlm_tiny", tiny_data, "common.cpu=true")
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    batch = one_training_batch(cfg, task)
    trainer.reset_dummy_batch(batch)
    for empty in ({}, None):  # what fairseq's sharded iterator gives a rank out of batches, or a None sample
        sample, is_dummy = trainer._prepare_sample(empty)
        assert is_dummy and sample[DUMMY_BATCH] is True and sample["target"] is batch["target"]
    sample, is_dummy = trainer._prepare_sample(batch)
    assert not is_dummy and DUMMY_BATCH not in sample and DUMMY_BATCH not in trainer._dummy_batch


def test_fairseq_still_configures_logging_on_import_and_the_package_undoes_it():
    """fairseq_headless/__init__.py restores the root logger around fairseq's import because this module
    calls logging.basicConfig(level=DEBUG) when fairseq is imported; remove that once fairseq no longer does
    (tests/test_training_output.py checks the effect)."""
    from fairseq.models.wav2vec import wav2vec2_classification

    assert "logging.basicConfig(level=logging.DEBUG)" in inspect.getsource(wav2vec2_classification)


# 6. fairseq-train checkpoints (argparse.Namespace configs) under torch's weights_only default
# (the whole path: fairseq-train resuming its own checkpoint in tests/test_cli_training.py; from_pretrained and
# fairseq-interactive on checkpoints of both CLIs in tests/test_hub_interface.py)

def test_fairseq_still_loads_checkpoints_with_torchs_default_and_the_patch_is_applied():
    source = inspect.getsource(fairseq_patches._original_load_checkpoint_to_cpu)
    assert "torch.load(f, map_location=torch.device(\"cpu\"))" in source and "weights_only" not in source
    assert checkpoint_utils.load_checkpoint_to_cpu is fairseq_patches.load_checkpoint_to_cpu_allowing_namespace
    # the hub's loader and the trainer's resume reach it through the module attribute
    assert "load_checkpoint_to_cpu(filename, arg_overrides)" in inspect.getsource(checkpoint_utils.load_model_ensemble_and_task)
    from fairseq.trainer import Trainer
    assert "checkpoint_utils.load_checkpoint_to_cpu(" in inspect.getsource(Trainer.load_checkpoint)


def test_a_checkpoint_with_a_namespace_config_loads_and_nothing_else_is_allowed(tmp_path):
    import argparse
    import pickle

    state = {"args": None, "cfg": {"model": argparse.Namespace(arch="roberta_tiny", dropout=0.1)},
             "model": {"w": torch.arange(3.0)}, "extra_state": {"train_iterator": {"epoch": 1}},
             "optimizer_history": [{"criterion_name": "c", "optimizer_name": "o", "lr_scheduler_state": {}, "num_updates": 3}]}
    torch.save(state, tmp_path / "namespace.pt")
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):  # fairseq's own function
        fairseq_patches._original_load_checkpoint_to_cpu(str(tmp_path / "namespace.pt"))
    loaded = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "namespace.pt"), {"dropout": 0.3})
    assert loaded["cfg"].model == argparse.Namespace(arch="roberta_tiny", dropout=0.3)  # fairseq's overrides applied
    assert loaded["model"]["w"].tolist() == [0.0, 1.0, 2.0]

    torch.save({**state, "model": {"w": os.getcwd}}, tmp_path / "code.pt")  # a pickled function: still refused
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "code.pt"))
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # the allowance ends with the call
