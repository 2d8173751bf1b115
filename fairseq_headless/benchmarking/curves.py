"""Training curves of the dense and the sparse embedding update on a real corpus (issue 7, section 2).

Two ``fairseq-hydra-train`` runs of the same config, seed and data, one with
``model.sparse_embedding_update=true``: where lazy AdamW changes training (the
moments and weight decay of rows a step does not touch), it shows here.
"""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path


_INNER = re.compile(r"train_inner\]\[INFO\] - (\{.*\})")
_VALID = re.compile(r"\]\[valid\]\[INFO\] - (\{.*\})")


def train(config_dir, config, data, updates, sparse, save_dir, seed=1, threads=None):
    from fairseq_headless.experiments.training_runs import hydra_train_command

    command = hydra_train_command(config, [
        f"task.data={data}", f"checkpoint.save_dir={save_dir}", "checkpoint.no_save=true",
        f"optimization.max_update={updates}", "common.log_format=json", f"common.log_interval={max(1, updates // 20)}",
        f"common.seed={seed}", f"dataset.validate_interval_updates={updates}", "common.cpu=true",
        f"common.user_dir={Path(__file__).resolve().parents[1]}",
        f"model.sparse_embedding_update={'true' if sparse else 'false'}",
    ], config_dir)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log[-3000:]}")
    inner = [json.loads(m) for m in _INNER.findall(log)]
    valid = [json.loads(m) for m in _VALID.findall(log)]
    return {
        "updates": [int(x["num_updates"]) for x in inner],
        "train_loss": [float(x["loss"]) for x in inner],
        "valid_loss": float(valid[-1]["valid_loss"]) if valid else None,
    }


def run(config_dir, config, data, updates, threads=None, report=print):
    curves = {}
    with tempfile.TemporaryDirectory(prefix="benchmark-curves-") as tmp:
        for mode in ("dense", "sparse"):
            report(f"loss curves: {config}, {mode} embedding update, {updates} updates")
            curves[mode] = train(config_dir, config, data, updates, mode == "sparse", Path(tmp) / mode, threads=threads)
    return {"config": config, "data": str(data), "data_name": Path(data).name, "updates": updates, "curves": curves}
