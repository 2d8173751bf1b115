"""Micro-batch-size sweep of the small decoders: LAMBADA along pretraining per batch size (paper §6, Fig.7).

For every batch size B and config (default ``hlm_small``, ``lm_small``: App. D.5), pretrains with
``dataset.batch_size=B`` into ``OUTPUT/runs/<config>-b<B>/`` (as many updates for every B, as Tab.11;
``--equal-tokens`` scales the updates by (largest B) / B), then scores every checkpoint as
``python -m studies.along_training`` does, the headless runs also after causal fine-tuning. A finished
training is a :class:`~fairseq_headless.stages.Stage` keyed by its command: a rerun skips it, an
interrupted one resumes, a changed command is an error without ``--force``.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Sequence

import logging
import sys

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.stages import Stage, StageSettingsError
from studies.training_runs import (CPU_OVERRIDES, REPO, TrainingError, hydra_train_command, log_to_stderr,
                                   run_training)
from . import evaluate as along
from .report import series_of, write_summary

logger = logging.getLogger(__name__)
DONE = "sweep_training.json"  # the Stage of a run's training, in its folder from its start


def parse_sizes(text: str) -> list:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise InputError(f"--batch-sizes {text}: expected comma-separated integers, e.g. 32,64,128") from None
    if not sizes or sizes[0] < 1:
        raise InputError(f"--batch-sizes {text}: give at least one positive batch size")
    return sizes


def train_command(config: str, batch_size: int, save_dir: Path, args, scale: int) -> list:
    overrides = [
        f"task.data={args.data.resolve()}", f"checkpoint.save_dir={save_dir.resolve()}",
        f"common.user_dir={REPO / 'fairseq_headless'}", f"dataset.batch_size={batch_size}",
        "common.log_format=json",  # machine-readable train_inner lines: the log's clock is checked against
        "checkpoint.keep_interval_updates=-1",  # every interval checkpoint is a point of the curve
    ]
    if args.max_update is not None:
        overrides.append(f"optimization.max_update={args.max_update * scale}")
    elif scale != 1:
        raise InputError("--equal-tokens needs --max-update (the updates of the largest batch size)")
    if args.save_interval_updates is not None:
        overrides.append(f"checkpoint.save_interval_updates={args.save_interval_updates * scale}")
    elif scale != 1:
        raise InputError("--equal-tokens needs --save-interval-updates (that of the largest batch size)")
    return hydra_train_command(config, [*overrides, *(CPU_OVERRIDES if args.cpu else ()), *args.override],
                               args.config_dir)


def train(name: str, command: list, save_dir: Path, output: Path, force: bool) -> None:
    """Pretrain one run into ``save_dir``, unless it already finished with this command; the command is
    recorded before the training starts, so that an interrupted run is only resumed by the same command."""
    stage = Stage(save_dir / DONE, {"command": command[1:]})  # without the interpreter: stable across venvs
    try:
        if stage.result() is not None:
            logger.info(f"{name}: trained before ({stage.marker}), not retrained")
            return
        if not stage.marker.is_file() and save_dir.is_dir() and any(save_dir.iterdir()):
            raise StageSettingsError(f"{save_dir} holds checkpoints of an unknown command")
    except StageSettingsError as e:
        if not force:
            raise InputError(f"{e}: a training of another command; pass --force to delete and retrain it (and its "
                             "evaluated points), or use another --output") from None
        # the cached points of the old training would pass for this one's at the same update counts
        for folder in (save_dir, output / "points" / name, output / "work" / name):
            shutil.rmtree(folder, ignore_errors=True)
    save_dir.mkdir(parents=True, exist_ok=True)
    stage.start()
    logger.info(f"{name}: pretraining into {save_dir} (log: {save_dir}/hydra_train.log)")
    finished = run_training(command, save_dir / "train.out", name, check=False)
    if finished.returncode != 0:
        raise TrainingError(f"pretraining {name} failed (exit {finished.returncode}; {save_dir}/train.out): "
                            f"{finished.tail()}")
    stage.finish({"seconds": finished.seconds})


def build_parser():
    parser = Parser(prog="python -m studies.along_training.batch_size_sweep", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the pretraining data folder")
    parser.add_argument("--output", type=Path, required=True,
                        help="sweep folder: runs/<config>-b<B>/, points/, batch_size_sweep.json/.md/.png")
    parser.add_argument("--batch-sizes", default="32,64,128",
                        help="micro-batch sizes, comma-separated (default 32,64,128; Fig.7's largest is 128)")
    parser.add_argument("--configs", default="hlm_small,lm_small",
                        help="pretraining configs, comma-separated (default hlm_small,lm_small: App. D.5)")
    parser.add_argument("--max-update", type=int, help="optimization.max_update of every run (default: the config's)")
    parser.add_argument("--save-interval-updates", type=int,
                        help="checkpoint.save_interval_updates, i.e. the spacing of the points (default: the config's)")
    parser.add_argument("--equal-tokens", action="store_true",
                        help="scale max_update and save_interval_updates by (largest B) / B: every run sees as "
                             "many tokens (default: as many updates, as Tab.11)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra hydra override for every pretraining run (repeatable)")
    parser.add_argument("--no-finetune", action="store_true", help="score the headless runs with e^T only")
    along.add_evaluation_options(parser)
    parser.set_defaults(finetune_config="hlm_small_ft")
    return parser


def check_options(args) -> tuple:
    """(batch sizes, configs) of a checked command line."""
    if args.no_finetune:
        args.finetune_config = None
    along.check_evaluation_options(args)
    if args.lambada is None:
        raise InputError("--lambada FILE is needed: the sweep scores LAMBADA accuracy (Fig.7)")
    from fairseq_headless.data.folder import open_data_folder

    open_data_folder(args.data, f"--data {args.data}")  # an InputError naming it
    sizes = parse_sizes(args.batch_sizes)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in configs:
        if not (args.config_dir / f"{config}.yaml").is_file():
            raise InputError(f"--configs: no {args.config_dir}/{config}.yaml")
    for value in (args.max_update, args.save_interval_updates):
        if value is not None and value < 1:
            raise InputError("--max-update and --save-interval-updates must be positive")
    for override in args.override:
        if "=" not in override:
            raise InputError(f"--override {override}: expected KEY=VALUE")
    return sizes, configs


def train_runs(args, sizes: list, configs: list) -> dict:
    """{run name: save_dir}, every (config, batch size) trained (or found trained)."""
    runs = {}
    for config in configs:
        for size in sizes:
            name = f"{config}-b{size}"
            save_dir = args.output / "runs" / name
            if args.equal_tokens and sizes[-1] % size:
                raise InputError(f"--equal-tokens: {sizes[-1]} is not a multiple of batch size {size}")
            scale = sizes[-1] // size if args.equal_tokens else 1
            train(name, train_command(config, size, save_dir, args, scale), save_dir, args.output, args.force)
            runs[name] = save_dir
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    sizes, configs = check_options(args)
    log_to_stderr()
    runs = train_runs(args, sizes, configs)
    kind, records = along.evaluate_runs(runs, args)
    if kind != "lambada":
        raise InputError("--configs: the sweep is for decoders (language_modeling); these configs are encoders")
    png = write_summary(args.output, kind, series_of(records), runs, stem="batch_size_sweep",
                        title="LAMBADA along pretraining for different batch sizes (paper Fig.7)")
    logger.info(f"done in {time.time() - started:.0f} s: {png.with_suffix('.json')}, {png.with_suffix('.md')}, {png}")
    return 0


if __name__ == "__main__":
    from studies.training_runs import main_of

    sys.exit(main_of(main))
