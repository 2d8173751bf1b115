"""fairseq_headless/launch.py: a launcher that disagrees with the config's world size stops the run with
one error naming what to change, before fairseq silently trains duplicates or another global batch."""

import pytest

from conftest import BIN, REPO, load_config
from test_robustness import free_port, hydra_args

from fairseq_headless.launch import LaunchError, check_config, check_launch

TORCHRUN = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "0", "LOCAL_RANK": "0"}
SLURM = {"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}


def refused(match, *args, **kwargs):
    with pytest.raises(LaunchError, match=match) as error:
        check_launch(*args, **kwargs)
    return str(error.value)


def test_torchrun_world_size_must_match_and_the_error_keeps_the_global_batch():
    check_launch(16, 8, 8, environ={**TORCHRUN, "WORLD_SIZE": "16"}, cuda_devices=8)  # agrees: fine
    # 8 GPUs for the 16-GPU Pythia-70M config (Tab.8): twice the accumulation keeps 8 x 16 x 8 = 1024
    message = refused("WORLD_SIZE=8", 16, 8, 8, environ={**TORCHRUN, "WORLD_SIZE": "8"}, cuda_devices=8)
    assert "distributed_world_size=16" in message
    assert "distributed_training.distributed_world_size=8 'optimization.update_freq=[16]'" in message
    # a one-GPU config under 8 processes (fairseq would train 8 independent copies into one save_dir)
    message = refused("WORLD_SIZE=8", 1, 1, 64, environ={**TORCHRUN, "WORLD_SIZE": "8"}, cuda_devices=8)
    assert "'optimization.update_freq=[1]' dataset.batch_size=8" in message  # 8 x 8 x 1 = 64


def test_torchrun_on_cpu_needs_the_readme_flags():
    message = refused("explicit init method", 2, environ={**TORCHRUN, "WORLD_SIZE": "2"}, cuda_devices=0)
    assert "distributed_init_method=env://" in message and "${oc.env:RANK}" in message
    check_launch(2, environ={**TORCHRUN, "WORLD_SIZE": "2"}, cuda_devices=0, init_method="env://")


def test_slurm_tasks_and_gpus_per_task():
    tasks = {**SLURM, "SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8"}
    check_launch(16, 8, 8, environ=tasks, cuda_devices=8)  # 2 nodes x 8 tasks, each task sees its node's 8 GPUs
    assert "--ntasks-per-node" in refused("SLURM_NTASKS=16", 8, environ=tasks, cuda_devices=8)
    # --gpus-per-task=1: each task sees one GPU, but fairseq picks device SLURM_LOCALID
    assert "--gpus-per-node=8" in refused("sees 1 GPU", 16, 8, 8, environ=tasks, cuda_devices=1)
    # one task per node: fairseq spawns one process per visible GPU
    one = {**SLURM, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1"}
    check_launch(16, 8, 8, environ=one, cuda_devices=8)
    refused("spawns one process per visible GPU", 16, 8, 8, environ=one, cuda_devices=4)
    # SLURM_NTASKS_PER_NODE as Slurm writes it: "8(x2)" for 8 on each of 2 nodes, "8,4" for uneven nodes
    check_launch(16, 8, 8, environ={**tasks, "SLURM_NTASKS_PER_NODE": "8(x2)"}, cuda_devices=8)
    check_launch(16, 8, 8, environ={**tasks, "SLURM_NTASKS_PER_NODE": "8,4"}, cuda_devices=8)


def test_slurm_with_a_one_gpu_config():
    """fairseq ignores Slurm at world size 1: one task on a node of 4 GPUs is fine, 8 tasks are 8 copies."""
    one_task = {**SLURM, "SLURM_NNODES": "1", "SLURM_NTASKS": "1"}
    check_launch(1, 1, 64, environ=one_task, cuda_devices=4)
    message = refused("each task would train alone", 1, 1, 64, environ={**one_task, "SLURM_NTASKS": "8"},
                      cuda_devices=8)
    assert "dataset.batch_size=8" in message


def test_no_launcher_no_check(tiny_data):
    check_launch(16, 8, 8, environ={}, cuda_devices=0)  # a single process: fairseq spawns (or runs on CPU)
    cfg = load_config("hlm_pythia70m", f"task.data={tiny_data}")
    with pytest.raises(LaunchError, match="update_freq=\\[16\\]"):  # the composed config's own numbers
        check_config(cfg, environ={**TORCHRUN, "WORLD_SIZE": "8"}, cuda_devices=8)


def test_torchrun_with_a_one_process_config_stops_every_rank(tiny_data, tmp_path):
    """The real command: 2 processes of a config pinned to 1 exit with the error instead of training twice.

    torchrun stops the other rank (SIGTERM) as soon as one exits, so a rank still starting up may never
    print its line: each rank must have exited with the error's status 2 or by that SIGTERM, and every
    error printed must be a whole line of its own (the ranks write into one stderr at the same time)."""
    import re
    import subprocess

    proc = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}", str(BIN / "fairseq-hydra-train"),
         *map(str, hydra_args("hmlm_tiny", tiny_data, tmp_path, "common.cpu=true", "optimization.max_update=2"))],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr[-3000:]
    # torchrun's failure summary: "rank : 1 (local_rank: 1)" then "exitcode : -15 (pid: ...)"
    exits = dict(re.findall(r"rank +: (\d+) \(local_rank: \d+\)\n +exitcode +: (-?\d+)", proc.stderr))
    assert set(exits) == {"0", "1"} and "2" in exits.values(), proc.stderr[-3000:]
    assert all(code in ("2", "-15") for code in exits.values()), exits
    message = ("error: torchrun started 2 process(es) (WORLD_SIZE=2) but the config has "
               "distributed_training.distributed_world_size=1: ")
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if "error: " in line]
    assert 1 <= len(errors) <= 2, proc.stderr[-3000:]
    for line in errors:  # whole: the line starts with the message and holds it once
        assert line.startswith(message) and line.count("error: ") == 1, line
        assert line.endswith("'optimization.update_freq=[1]' dataset.batch_size=8"), line
    assert not any("num_updates" in line for line in lines)  # no rank trained
    assert not (tmp_path / "checkpoint_last.pt").exists()
