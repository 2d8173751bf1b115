"""Real fairseq CLI runs with the plugin: loss goes down, no head in the checkpoint, resume works."""

import re

import pytest
import torch

from conftest import REPO, run_cli

HEAD_KEYS = ("lm_head", "output_projection", "embed_out")
# A higher peak lr than the tiny configs' so that 100 updates move the masked-LM CWT loss clearly.
SHORT_SCHEDULE = ["lr_scheduler.warmup_updates=5", "optimization.lr=[0.003]"]


def train_losses(log: str):
    return [float(x) for x in re.findall(r"train_inner.*? loss=([\d.]+)", log)]


def assert_learns(losses, margin=0.15):
    """Mean of the last three logged losses below the mean of the first two by `margin` bits."""
    assert len(losses) >= 5, losses
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2 - margin, losses


def last_num_updates(log: str) -> int:
    return int(re.findall(r"num_updates[ =](\d+)", log)[-1])


def checkpoint_keys(path):
    return list(torch.load(path, map_location="cpu", weights_only=False)["model"])


@pytest.mark.parametrize("config", ["hmlm_tiny", "hlm_tiny"])
def test_hydra_train_learns_saves_no_head_and_resumes(config, tiny_data, tmp_path):
    save_dir = tmp_path / "ckpt"
    common = [
        "--config-dir", REPO / "configs", "--config-name", config, f"task.data={tiny_data}",
        f"checkpoint.save_dir={save_dir}", "common.log_interval=10",
        "dataset.validate_interval_updates=0", "checkpoint.save_interval_updates=0",
    ]
    log = run_cli(["fairseq-hydra-train", *common, "optimization.max_update=100", *SHORT_SCHEDULE])
    assert_learns(train_losses(log))
    assert last_num_updates(log) == 100

    keys = checkpoint_keys(save_dir / "checkpoint_last.pt")
    assert keys and not [k for k in keys if any(h in k for h in HEAD_KEYS)]

    resumed = run_cli(["fairseq-hydra-train", *common, "optimization.max_update=110", *SHORT_SCHEDULE])
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 100 updates\)", resumed)
    assert last_num_updates(resumed) == 110


@pytest.mark.parametrize(
    "task_args",
    [
        ["--task", "masked_lm", "--criterion", "headless_masked_lm", "--arch", "headless_roberta_tiny",
         "--sample-break-mode", "none", "--required-batch-size-multiple", "1",
         "--negatives", "unique"],
        ["--task", "language_modeling", "--criterion", "headless_language_modeling",
         "--arch", "headless_gpt2_tiny", "--sample-break-mode", "none", "--chunk-size", "64"],
    ],
    ids=["masked_lm-unique", "language_modeling-chunked"],
)
def test_fairseq_train_with_user_dir(task_args, tiny_data, tmp_path):
    log = run_cli([
        "fairseq-train", tiny_data, "--user-dir", REPO / "fairseq_headless", *task_args,
        "--tokens-per-sample", "128", "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", "5", "--total-num-update", "100", "--clip-norm", "1.0",
        "--batch-size", "16", "--max-update", "100", "--log-interval", "10", "--log-format", "simple",
        "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", "--num-workers", "0",
    ])
    assert_learns(train_losses(log))
    keys = checkpoint_keys(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert not [k for k in keys if any(h in k for h in HEAD_KEYS)]
