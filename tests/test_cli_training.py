"""Real fairseq CLI runs with the plugin: loss goes down, no head in the checkpoint, resume works."""

import re
import shutil

import pytest

from conftest import REPO, run_cli
from helpers.training import assert_learns, head_keys, hydra_train, last_num_updates, train_losses


@pytest.mark.parametrize("run", ["hmlm_tiny_run", "hlm_tiny_run"])
def test_hydra_train_learns_and_saves_no_head(run, request):
    run = request.getfixturevalue(run)
    assert_learns(train_losses(run.log))
    assert last_num_updates(run.log) == 20
    assert not head_keys(run.checkpoint)


def test_hydra_train_resumes_from_its_last_checkpoint(hlm_tiny_run, tmp_path):
    """(The encoder resumes after a SIGKILL in test_robustness.py, checked against an uninterrupted run.)"""
    run = hlm_tiny_run
    shutil.copytree(run.save_dir, tmp_path / "ckpt")
    overrides = [o for o in run.overrides if not o.startswith("optimization.max_update=")]
    resumed = hydra_train(run.config, run.data, tmp_path / "ckpt", *overrides, "optimization.max_update=22")
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 20 updates\)", resumed)
    assert last_num_updates(resumed) == 22


MASKED_LM = ["--task", "masked_lm", "--criterion", "headless_masked_lm", "--arch", "headless_roberta_tiny",
             "--sample-break-mode", "none", "--required-batch-size-multiple", "1", "--negatives", "unique"]
CHUNKED_LM = ["--task", "language_modeling", "--criterion", "headless_language_modeling", "--arch", "headless_gpt2_tiny",
              "--sample-break-mode", "none", "--chunk-size", "64"]


@pytest.mark.parametrize("task_args", [MASKED_LM, CHUNKED_LM], ids=["masked_lm-unique", "language_modeling-chunked"])
def test_fairseq_train_with_user_dir(task_args, tiny_data, tmp_path):
    args = ["fairseq-train", tiny_data, "--user-dir", REPO / "fairseq_headless", *task_args,
            "--tokens-per-sample", "128", "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "polynomial_decay",
            "--warmup-updates", "5", "--total-num-update", "40", "--clip-norm", "1.0", "--batch-size", "16",
            "--log-interval", "3", "--log-format", "simple", "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints",
            "--num-workers", "0"]
    log = run_cli([*args, "--max-update", "30"])
    assert_learns(train_losses(log))
    assert not head_keys(tmp_path / "ckpt" / "checkpoint_last.pt")
    if task_args is MASKED_LM:
        # fairseq-train's checkpoint holds an argparse.Namespace, which torch's weights_only default refuses
        # without fairseq_headless.fairseq_patches.load_checkpoint_to_cpu_allowing_namespace
        resumed = run_cli([*args, "--max-update", "35"])
        assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 30 updates\)", resumed), resumed[-2000:]
        assert last_num_updates(resumed) == 35
