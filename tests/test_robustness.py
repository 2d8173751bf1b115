"""Scale-out and robustness through fairseq's own engine: 2-process CPU training (gloo),
fp16 with loss scaling, and a SIGKILL mid-training followed by an exact resume."""

import os
import re
import signal
import socket
import subprocess

import pytest
import torch

from conftest import BIN, REPO, run_cli

HEAD_KEYS = ("lm_head", "output_projection", "embed_out")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hydra_args(config, data, save_dir, *overrides):
    return ["--config-dir", REPO / "configs", "--config-name", config, f"task.data={data}",
            f"checkpoint.save_dir={save_dir}", "common.log_interval=5", *overrides]


# The CPU recipe of README "Multi-process training"; ddp_backend stays fairseq's default
# (pytorch_ddp), which works on CPU thanks to fairseq_headless.fairseq_patches.
TWO_PROCESSES = [
    "distributed_training.distributed_world_size=2", "distributed_training.distributed_backend=gloo",
    "distributed_training.distributed_init_method=env://", "distributed_training.distributed_no_spawn=true",
    "distributed_training.distributed_rank=${oc.env:RANK}", "common.cpu=true",
]


@pytest.mark.parametrize("config,extra", [("hmlm_tiny", ["criterion.negatives_scope=global"]), ("mlm_tiny", [])])
def test_two_process_cpu_training(config, extra, tiny_data, tmp_path):
    log = run_cli([
        "torchrun", "--nproc_per_node=2", f"--master_port={free_port()}", BIN / "fairseq-hydra-train",
        *hydra_args(config, tiny_data, tmp_path, "optimization.max_update=20", *TWO_PROCESSES, *extra),
    ])
    assert "distributed init (rank 1)" in log
    inner = re.findall(r"train_inner.*?positions=([\d.]+), negatives=([\d.]+)", log)
    if config.startswith("h"):  # global negatives: both ranks' targets in every denominator
        assert inner and all(float(n) > 1.5 * float(p) for p, n in inner), inner
    assert re.findall(r"num_updates[ =](\d+)", log)[-1] == "20"
    keys = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)["model"]
    assert (not any(h in k for k in keys for h in HEAD_KEYS)) == config.startswith("h")


def test_fp16_with_loss_scaling_makes_progress(tiny_data, tmp_path):
    # On CPU fairseq's fp16 path needs the memory-efficient optimizer wrapper (README). fp16 arithmetic
    # is emulated on CPUs without native half support (~1.5 s per tiny update on an AMD EPYC): 40 updates.
    log = run_cli(["fairseq-hydra-train", *hydra_args(
        "hmlm_tiny", tiny_data, tmp_path, "optimization.max_update=40", "common.fp16=true",
        "common.memory_efficient_fp16=true", "optimization.lr=[0.005]", "lr_scheduler.warmup_updates=5")])
    losses = [float(x) for x in re.findall(r"train_inner.*? loss=([\d.]+)", log)]
    scales = re.findall(r"train_inner.*?loss_scale=([\d.]+)", log)
    assert scales, "fp16 optimizer not active"
    assert log.lower().count("overflow") <= 2
    assert all(x == x and x != float("inf") for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2 - 0.15, losses


def test_sigkill_mid_training_then_resume_gives_the_same_weights(tiny_data, tmp_path):
    args = ["optimization.max_update=40", "checkpoint.save_interval_updates=10",
            "checkpoint.keep_interval_updates=1", "dataset.validate_interval_updates=10", "common.log_interval=1"]
    run_cli(["fairseq-hydra-train", *hydra_args("hmlm_tiny", tiny_data, tmp_path / "straight", *args)])

    crashed = tmp_path / "crashed"
    command = [str(BIN / "fairseq-hydra-train"), *map(str, hydra_args("hmlm_tiny", tiny_data, crashed, *args))]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if re.search(r"train_inner.*num_updates=25,", line):
                proc.send_signal(signal.SIGKILL)  # while update 26 is being computed
                break
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli(["fairseq-hydra-train", *hydra_args("hmlm_tiny", tiny_data, crashed, *args)])
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 20 updates\)", resumed)

    straight = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=False)["model"]
    after_crash = torch.load(crashed / "checkpoint_last.pt", weights_only=False)["model"]
    assert straight.keys() == after_crash.keys()
    worst = max((straight[k].float() - after_crash[k].float()).abs().max().item() for k in straight)
    assert worst <= 1e-6
    # and the weights did move over the 40 updates (the comparison is not vacuous)
    assert not [f for f in os.listdir(crashed) if f.endswith(".tmp")]


def test_gpu_checks_script_refuses_clearly_without_a_gpu(tmp_path):
    import sys

    proc = subprocess.run([sys.executable, "-m", "studies.gpu_checks", "--data", tmp_path,
                           "--output", tmp_path / "out.json"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "out.json").exists()
