"""Training curves of the dense and the sparse embedding update on a real corpus.

Two ``fairseq-hydra-train`` runs of the same config, seed and data, one with
``model.sparse_embedding_update=true``: where lazy Adam changes training (the moments and weight
decay of rows a step does not touch), it shows here. They run at the same time: they are not timed.
"""
import logging
import os
import tempfile
from pathlib import Path

from studies.training_runs import TrainingRun, hydra_train_command, records

logger = logging.getLogger(__name__)


def start(config_dir, config, data, updates, sparse, save_dir, seed=1, threads=None) -> TrainingRun:
    """Launch one run, its output to ``save_dir``/train.log."""
    from fairseq_headless.sparse_embedding import OVERRIDES as SPARSE_UPDATE

    command = hydra_train_command(config, [
        f"task.data={data}", f"checkpoint.save_dir={save_dir}", "checkpoint.no_save=true",
        f"optimization.max_update={updates}", "common.log_format=json", f"common.log_interval={max(1, updates // 20)}",
        f"common.seed={seed}", f"dataset.validate_interval_updates={updates}", "common.cpu=true",
        f"common.user_dir={Path(__file__).resolve().parents[2] / 'fairseq_headless'}",
        *(SPARSE_UPDATE if sparse else ["model.sparse_embedding_update=false"]),
        f"hydra.run.dir={save_dir}",  # the two runs start in the same second: never one hydra folder
    ], config_dir)
    # the two runs share the machine: half of its cores each, unless told
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    return TrainingRun(command, Path(save_dir) / "train.log", env={"OMP_NUM_THREADS": str(threads)})


def finish(run: TrainingRun, label: str) -> dict:
    """Wait for one run; its curve from fairseq's json log."""
    launches = run.wait(label).check(label).launches()
    inner, valid = records(launches, "train_inner"), records(launches, "valid")
    return {
        "updates": [int(x["num_updates"]) for x in inner],
        "train_loss": [float(x["loss"]) for x in inner],
        "valid_loss": float(valid[-1]["valid_loss"]) if valid else None,
    }


def run(config_dir, config, data, updates, threads=None):
    with tempfile.TemporaryDirectory(prefix="benchmark-curves-") as tmp:
        logger.info(f"loss curves: {config}, dense and sparse embedding update, {updates} updates each")
        runs = {}
        try:
            for mode in ("dense", "sparse"):
                runs[mode] = start(config_dir, config, data, updates, mode == "sparse", Path(tmp) / mode,
                                   threads=threads)
            curves = {mode: finish(launched, f"loss curve {mode}") for mode, launched in runs.items()}
        finally:  # one failed: do not leave the other running
            for launched in runs.values():
                launched.kill()
    return {"config": config, "data": str(data), "data_name": Path(data).name, "updates": updates, "curves": curves}
