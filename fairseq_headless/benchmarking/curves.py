"""Training curves of the dense and the sparse embedding update on a real corpus (issue 7, section 2).

Two ``fairseq-hydra-train`` runs of the same config, seed and data, one with
``model.sparse_embedding_update=true``: where lazy AdamW changes training (the
moments and weight decay of rows a step does not touch), it shows here. The two
run at the same time (half of each one's time is fairseq's start-up; they are
not timed, so sharing the cores changes nothing they report).
"""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path


_INNER = re.compile(r"train_inner\]\[INFO\] - (\{.*\})")
_VALID = re.compile(r"\]\[valid\]\[INFO\] - (\{.*\})")


def start(config_dir, config, data, updates, sparse, save_dir, seed=1, threads=None):
    """Launch one run, its output to ``save_dir``/train.log; returns (command, process, log path)."""
    from fairseq_headless.experiments.training_runs import hydra_train_command
    from fairseq_headless.sparse_embedding import OVERRIDES as SPARSE_UPDATE

    command = hydra_train_command(config, [
        f"task.data={data}", f"checkpoint.save_dir={save_dir}", "checkpoint.no_save=true",
        f"optimization.max_update={updates}", "common.log_format=json", f"common.log_interval={max(1, updates // 20)}",
        f"common.seed={seed}", f"dataset.validate_interval_updates={updates}", "common.cpu=true",
        f"common.user_dir={Path(__file__).resolve().parents[1]}",
        *(SPARSE_UPDATE if sparse else ["model.sparse_embedding_update=false"]),
        f"hydra.run.dir={save_dir}",  # the two runs start in the same second: never one hydra folder
    ], config_dir)
    # the two runs share the machine: half of its cores each, unless told
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log_path = Path(save_dir) / "train.log"  # a file, not a pipe: nobody reads it until the run ends
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        return command, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log_path


def finish(command, proc, log_path):
    """Wait for one run; its curve from fairseq's json log."""
    proc.wait()
    log = Path(log_path).read_text(encoding="utf-8", errors="replace")
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
    with tempfile.TemporaryDirectory(prefix="benchmark-curves-") as tmp:
        report(f"loss curves: {config}, dense and sparse embedding update, {updates} updates each")
        runs = {}
        try:
            for mode in ("dense", "sparse"):
                runs[mode] = start(config_dir, config, data, updates, mode == "sparse", Path(tmp) / mode,
                                   threads=threads)
            curves = {mode: finish(*launched) for mode, launched in runs.items()}
        finally:  # one failed: do not leave the other running
            for _, proc, _ in runs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return {"config": config, "data": str(data), "data_name": Path(data).name, "updates": updates, "curves": curves}
