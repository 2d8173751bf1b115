"""fairseq_headless/launch.py: a launcher that disagrees with the config's world size stops the run with
one error naming what to change, before fairseq silently trains duplicates or another global batch; a config
asking for GPUs the machine lacks, and a data folder that is not one, stop with one error naming the fix."""

import shutil
import subprocess

import pytest

from conftest import BIN, REPO, load_config
from test_robustness import free_port, hydra_args

from fairseq_headless.launch import check_config, check_launch
from fairseq_headless.cli import InputError

TORCHRUN = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "0", "LOCAL_RANK": "0"}
SLURM = {"SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}


def refused(match, *args, **kwargs):
    with pytest.raises(InputError, match=match) as error:
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
    with pytest.raises(InputError, match="update_freq=\\[16\\]"):  # the composed config's own numbers
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


def test_devices_the_machine_lacks():
    """Without a launcher fairseq spawns one process per GPU (and asserts on fewer); its fp16 needs a GPU."""
    from fairseq_headless.launch import CPU_OVERRIDES, check_devices

    with pytest.raises(InputError, match=r"asks for 8 GPUs .* and fp16 .* no GPU") as error:
        check_devices(8, 1, 64, fp16=True, cuda_devices=0)
    assert f"add {CPU_OVERRIDES} (README" in str(error.value)
    with pytest.raises(InputError, match=r"asks for fp16 \(common.fp16=true\) and this machine has no GPU"):
        check_devices(1, fp16=True, cpu=True, cuda_devices=0)
    # torchrun started the processes on CPU: the world size is check_launch's; only cpu and fp16 are missing
    with pytest.raises(InputError, match=r"add common.cpu=true common.fp16=false \(README") as error:
        check_devices(2, fp16=True, launched=True, cuda_devices=0)
    assert "distributed_world_size=1" not in str(error.value)
    # 4 GPUs for the 8-GPU BERT-base config: twice the accumulation keeps 32 x 8 x 1 = 256
    with pytest.raises(InputError, match=r"has 4 GPU\(s\): .*distributed_world_size=4 'optimization.update_freq=\[2\]'"):
        check_devices(8, 1, 32, fp16=True, cuda_devices=4)
    with pytest.raises(InputError, match="add common.fp16=false"):
        check_devices(1, fp16=True, cpu=True, cuda_devices=8)
    check_devices(1, cpu=True, cuda_devices=0)  # the README's CPU line
    check_devices(8, 1, 32, fp16=True, cuda_devices=8)
    check_devices(16, 8, 8, fp16=True, launched=True, cuda_devices=8)  # 2 nodes: check_launch counts them


def test_data_folders(tmp_path, tiny_data):
    """task.data: the first folder holds dict.txt, every folder of the colon list its training split."""
    from fairseq_headless.launch import check_data

    check_data(str(tiny_data))
    check_data(f"{tiny_data}:{tiny_data}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"^task.data: no dict.txt in {tmp_path / 'empty'}; .*scripts/prepare_data.py"):
        check_data(str(tmp_path / "empty"))
    with pytest.raises(InputError, match=f"^task.data: folder {tmp_path / 'missing'} not found; .*prepare_data.py"):
        check_data(f"{tiny_data}:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match=f"^task.data: no train.idx/.bin in {tmp_path / 'empty'} "):
        check_data(f"{tiny_data}:{tmp_path / 'empty'}")
    check_data(str(tiny_data), "valid")  # dataset.train_subset names the split
    with pytest.raises(InputError, match="no test.idx/.bin"):
        check_data(str(tiny_data), "test")
    # prepare_data.py --shards 2 writes OUT/shard0 (dict.txt, train) and OUT/shard1 (train): OUT itself is no folder
    out = tmp_path / "out"
    shutil.copytree(tiny_data, out / "shard0")
    (out / "shard1").mkdir()
    for name in ("train.bin", "train.idx"):
        shutil.copy(tiny_data / name, out / "shard1" / name)
    check_data(f"{out / 'shard0'}:{out / 'shard1'}")
    with pytest.raises(InputError, match=f"holds shards.*task.data={out / 'shard0'}:{out / 'shard1'}:..."):
        check_data(str(out))


def test_the_composed_config_without_data():
    cfg = load_config("hmlm_small", "common.cpu=true", "common.fp16=false")
    with pytest.raises(InputError, match=r"^task.data is not set: add task.data=DATA_DIR"):
        check_config(cfg, environ={}, cuda_devices=0)


def test_fp16_without_a_gpu_also_when_the_user_starts_the_processes(tiny_data):
    """An explicit init method skips the process counts (the user launched them), not the fp16 check."""
    explicit = [f"task.data={tiny_data}", "distributed_training.distributed_init_method=env://"]
    with pytest.raises(InputError, match=r"asks for fp16 .* add common.cpu=true common.fp16=false \(README"):
        check_config(load_config("hmlm_tiny", *explicit, "common.fp16=true"), environ={}, cuda_devices=0)
    # fp16 that runs on CPU (no flattened fp32 copy): accepted
    check_config(load_config("hmlm_tiny", *explicit, "common.fp16=true", "common.memory_efficient_fp16=true"),
                 environ={}, cuda_devices=0)


def hydra_train(config, *overrides):
    """fairseq-hydra-train CONFIG as a user runs it: (exit status, its `error:` lines, its whole output)."""
    proc = subprocess.run([str(BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "configs"),
                           "--config-name", config, *map(str, overrides)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    return proc.returncode, [line for line in output.splitlines() if line.startswith("error:")], output


def test_a_paper_config_on_a_machine_without_gpu_names_the_readmes_cpu_line(tiny_data, tmp_path):
    from fairseq_headless.launch import CPU_OVERRIDES

    status, errors, output = hydra_train("hmlm_base", f"task.data={tiny_data}", f"checkpoint.save_dir={tmp_path}")
    assert status == 2 and len(errors) == 1 and "Traceback" not in output, output[-3000:]
    assert "8 GPUs (distributed_training.distributed_world_size=8)" in errors[0]
    assert f"add {CPU_OVERRIDES} (README, 'On CPU'" in errors[0]
    assert CPU_OVERRIDES in (REPO / "README.md").read_text()  # the line the error names is the README's
    assert not list(tmp_path.glob("*.pt"))  # hydra wrote its .hydra/ and log there, fairseq nothing


@pytest.mark.parametrize("case", ["no_dict", "a_shard_without_train"])
def test_a_data_folder_without_dict_txt_stops_with_one_line(case, tiny_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    data = empty if case == "no_dict" else f"{tiny_data}:{empty}"
    status, errors, output = hydra_train("hmlm_tiny", f"task.data={data}", f"checkpoint.save_dir={tmp_path / 'ck'}")
    assert status == 2 and len(errors) == 1 and "Traceback" not in output, output[-3000:]
    if case == "no_dict":
        assert errors[0] == (f"error: task.data: no dict.txt in {empty}; give a folder written by "
                             "scripts/prepare_data.py or fairseq-preprocess")
    else:
        assert errors[0].startswith(f"error: task.data: no train.idx/.bin in {empty} (the training split)")
    assert not list((tmp_path / "ck").glob("*.pt"))


def test_a_misspelled_config_name_is_explained_in_the_readme(tiny_data):
    """hydra fails before the plugin loads (no config, so no callback): the README says what its message means."""
    status, errors, output = hydra_train("hmlm_tiyn", f"task.data={tiny_data}")
    assert status != 0 and not errors
    message = "Key 'data' is not in struct"
    assert message in output
    readme = (REPO / "README.md").read_text()
    assert message in readme and "--config-name" in readme[readme.index(message) - 400:readme.index(message) + 400]
