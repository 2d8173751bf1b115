"""python -m studies.gpu_checks on a CPU (--cpu-dry-run): the code a lent GPU runs, with tiny sizes, fp32 and gloo,
so that only the hardware is left untested; the JSON it writes, check by check."""

import json
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, write_markov_corpus
from test_evaluation_helpers import write_sotu

from studies import gpu_checks as checks

UPDATES = 10


@pytest.fixture(scope="module")
def dry_run(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_checks")
    corpus = write_sotu(root / "sotu")  # addresses named as scripts/fetch_corpus.py names them
    (corpus / "README.txt").unlink()
    (corpus / "SOURCE.json").write_text("{}")  # what makes the demo run its downstream check
    write_markov_corpus(corpus / "more.txt", 1000, seed=4)  # pretraining text enough for a 150-piece vocabulary
    output = root / "gpu_checks.json"
    proc = subprocess.run(
        [sys.executable, "-m", "studies.gpu_checks", "--cpu-dry-run", "--data", tiny_data, "--corpus", corpus,
         "--output", output, "--workdir", root / "work", "--updates", str(UPDATES)],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(output.read_text()), proc.stderr


def test_every_check_ran_and_passed(dry_run):
    results, log = dry_run
    checks = ["loss", "fp16_hmlm_tiny", "fp16_hlm_tiny", "fp16_sparse_hmlm_tiny", "nccl_1rank_sparse_hook",
              "demo_small", "xformers"]
    assert [k for k in results if isinstance(results[k], dict)] == checks  # no 2-GPU check without 2 GPUs
    assert results["ok"] and results["mode"] == "cpu" and results["gpus"] == 0
    for name in checks:
        assert results[name]["wall_s"] >= 0 and f"[gpu_checks] {name}: " in log
        assert results[name].get("ok", True), (name, results[name])
    assert results["xformers"] == {"skipped": "no CUDA device (--cpu-dry-run)", "wall_s": 0.0}
    assert results["loss"]["torch.bfloat16"]["finite"]
    for name in checks[1:4]:
        run = results[name]
        assert run["returncode"] == 0 and run["updates"] == UPDATES and len(run["first_losses"]) == 3
    for override in ("model.sparse_embedding_update=true", "optimizer._name=lazy_adam"):
        assert override in results["fp16_sparse_hmlm_tiny"]["command"]


def test_the_one_rank_ddp_training_went_through_the_sparse_all_reduce_hook(dry_run):
    run = dry_run[0]["nccl_1rank_sparse_hook"]
    command = run["command"]
    for part in ("torchrun --nproc_per_node=1", "-m studies.gpu_checks --as-one-rank-ddp-fairseq-hydra-train",
                 "fairseq-hydra-train --config-dir", "distributed_training.distributed_backend=gloo",
                 "distributed_training.ddp_backend=pytorch_ddp", "model.sparse_embedding_update=true",
                 "optimizer._name=lazy_adam"):
        assert part in command, part
    assert run["returncode"] == 0 and run["updates"] == UPDATES
    assert run["hook_registered"] and [c["call"] for c in run["hook_calls"]] == [1, 2, 4, 8]
    # its two paths, alternated by the one-rank child: call 1 gathers rows, the even calls densify
    assert [c["path"] for c in run["hook_calls"]] == ["gather", "dense", "dense", "dense"]
    for call in run["hook_calls"]:
        assert len(call["rows_per_rank"]) == 1 and 0 < call["rows_per_rank"][0] <= call["vocab"]
        assert call["dim"] == 128 and call["dense_bytes"] == 0  # a world of one moves nothing to densify


def test_the_demo_compares_the_twins_at_equal_tokens_with_the_downstream_check(dry_run):
    demo = dry_run[0]["demo_small"]
    assert "--size tiny" in demo["command"] and demo["equal_tokens"] and demo["device"] == "cpu"
    assert [m["config"] for m in demo["models"].values()] == ["hmlm_tiny", "mlm_tiny"]
    for model in demo["models"].values():
        assert model["updates"] == 10 and model["tokens_seen"] > 0 and 0 <= model["masked_top1_accuracy"] <= 1
        assert model["export_max_abs_diff"] <= 1e-4
    assert set(demo["downstream"]) == {"headless", "vanilla", "random-init"}
    for scores in demo["downstream"].values():
        assert list(scores["dev_accuracy_per_seed"]) == ["0"] and 0 <= scores["mean_std"]["mean"] <= 1


def test_the_gpu_run_differs_from_the_dry_run_in_the_hardware_settings_only():
    gpu, cpu = checks.GPU, checks.cpu_dry_run(150)
    assert (gpu.device, gpu.backend, cpu.device, cpu.backend) == ("cuda", "nccl", "cpu", "gloo")
    assert gpu.fp16 == ("common.fp16=true",)  # the paper's fp16: fairseq's FP16Optimizer and loss scaling
    assert gpu.sparse_fp16 == ("common.fp16=true", "common.memory_efficient_fp16=true")
    # the demo check is RESULTS.md's hmlm_small vs mlm_small command, less its folders
    text = (REPO / "RESULTS.md").read_text()
    block = re.search(r"```bash\n(python -m studies.demo --size small.*?)```", text, re.S)[1]
    words = shlex.split(block.replace("\\\n", " "))[3:]  # after "python -m studies.demo"
    for option in ("--workdir", "--corpus"):
        at = words.index(option)
        del words[at:at + 2]
    assert list(gpu.demo) == words == checks.DEMO_SMALL
