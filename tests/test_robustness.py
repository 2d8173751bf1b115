"""Scale-out and robustness through fairseq's own engine: 2-process CPU training (gloo),
fp16 with loss scaling, and a SIGKILL mid-training followed by an exact resume."""

import os
import re
import signal
import subprocess

import torch

from conftest import BIN, REPO, run_cli
# (test_launch imports free_port and hydra_args from here)
from helpers.training import (TWO_PROCESSES, assert_learns, free_port, head_keys, hydra_args, hydra_train,
                              last_num_updates, train_losses)


def test_two_process_cpu_training_with_global_negatives(tiny_data, tmp_path):
    log = run_cli([
        "torchrun", "--nproc_per_node=2", f"--master_port={free_port()}", BIN / "fairseq-hydra-train",
        *hydra_args("hmlm_tiny", tiny_data, tmp_path, "optimization.max_update=10", *TWO_PROCESSES,
                    "criterion.negatives_scope=global"),
    ])
    assert "distributed init (rank 1)" in log
    # global negatives: both ranks' targets in every denominator
    inner = re.findall(r"train_inner.*?positions=([\d.]+), negatives=([\d.]+)", log)
    assert inner and all(float(n) > 1.5 * float(p) for p, n in inner), inner
    assert last_num_updates(log) == 10
    assert not head_keys(tmp_path / "checkpoint_last.pt")


def test_fp16_with_loss_scaling_makes_progress(tiny_data, tmp_path):
    # On CPU fairseq's fp16 path needs the memory-efficient optimizer wrapper (README); CPUs without native
    # half support emulate its arithmetic, slowly: blocks of 64 tokens. Its loss falls slower than float32's:
    # 40 updates.
    log = hydra_train("hmlm_tiny", tiny_data, tmp_path, "optimization.max_update=40", "task.tokens_per_sample=64",
                      "common.fp16=true", "common.memory_efficient_fp16=true", "optimization.lr=[0.005]",
                      "lr_scheduler.warmup_updates=5", "dataset.disable_validation=true")
    losses = train_losses(log)
    scales = re.findall(r"train_inner.*?loss_scale=([\d.]+)", log)
    assert scales, "fp16 optimizer not active"
    assert log.lower().count("overflow") <= 2
    assert all(x == x and x != float("inf") for x in losses)
    assert_learns(losses)


def test_sigkill_mid_training_then_resume_gives_the_same_weights(hmlm_tiny_run, tmp_path):
    """The session's encoder run is the uninterrupted one; the same run killed during update 13 resumes from
    the checkpoint of update 10 and ends with its weights."""
    run = hmlm_tiny_run
    crashed = tmp_path / "crashed"
    command = [str(BIN / "fairseq-hydra-train"), *map(str, hydra_args(run.config, run.data, crashed, *run.overrides))]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if re.search(r"train_inner.*num_updates=12,", line):
                proc.send_signal(signal.SIGKILL)  # while update 13 is being computed
                break
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    at_crash = torch.load(crashed / "checkpoint_last.pt", weights_only=False)["model"]
    resumed = hydra_train(run.config, run.data, crashed, *run.overrides)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 10 updates\)", resumed)
    assert last_num_updates(resumed) == 20

    straight = torch.load(run.checkpoint, weights_only=False)["model"]
    after_crash = torch.load(crashed / "checkpoint_last.pt", weights_only=False)["model"]
    assert straight.keys() == after_crash.keys()
    worst = max((straight[k].float() - after_crash[k].float()).abs().max().item() for k in straight)
    assert worst <= 1e-6
    # and the resumed updates moved the weights (the comparison is not vacuous)
    assert max((straight[k].float() - at_crash[k].float()).abs().max().item() for k in straight) > 1e-3
    assert not [f for f in os.listdir(crashed) if f.endswith(".tmp")]


def test_gpu_checks_script_refuses_clearly_without_a_gpu(tmp_path):
    import sys

    proc = subprocess.run([sys.executable, "-m", "studies.gpu_checks", "--data", tmp_path,
                           "--output", tmp_path / "out.json"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "out.json").exists()
