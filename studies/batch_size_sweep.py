"""Micro-batch-size sweep of the small decoders: LAMBADA accuracy along pretraining per batch size (paper §6, Fig.7).

    python -m studies.batch_size_sweep --data data-bin/ccnews --lambada lambada_test.jsonl \\
        --batch-sizes 32,64,128 --output results/batch_sweep

For every batch size B and every config (default ``hlm_small`` and ``lm_small``, the GPT-2 / 4
decoders of App. D.5 / Tab.11), pretrains with ``dataset.batch_size=B`` into
``OUTPUT/runs/<config>-b<B>/`` (fairseq-hydra-train, json logs), then evaluates every saved
checkpoint with the evaluation along training (:mod:`.along_training`): LAMBADA before and, for the headless
runs, after the causal fine-tuning stage (``--finetune-config``, default ``hlm_small_ft``: §6,
"HLMs are fine-tuned similarly to Subsection 4.2"). Writes ``OUTPUT/batch_size_sweep.{json,md,png}``:
one line per (model, batch size), x = tokens seen and x = training hours.

Every batch size trains for the same number of updates (Tab.11 fixes 1M steps and no batch
size: the batch is the swept variable, so smaller batches see fewer tokens and finish sooner,
as §6 notes); ``--equal-tokens`` instead scales each run's ``max_update`` and
``save_interval_updates`` by (largest B) / B. A finished training is not redone when the sweep
is rerun with the same command; an interrupted one resumes from its ``checkpoint_last.pt`` with
the same command. A changed command is an error without ``--force``, which deletes that run and
its evaluated points (``OUTPUT/points/<run>/``, ``OUTPUT/work/<run>/``) and retrains it.
Evaluated points are cached as in eval_along_training.py. ``--max-update``, ``--save-interval-updates``, ``--override`` and
``--cpu`` make a small budget (CPU, tiny configs: ``--configs hlm_tiny,lm_tiny
--finetune-config hlm_tiny_ft``).

The command line is studies/batch_size_sweep.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.files import write_json_atomic
from . import along_training as along
from .along_training import log
from .along_training_report import series_of, write_summary
from .training_runs import CPU_OVERRIDES, REPO, hydra_train_command, run_training


class BatchSweepError(InputError):
    """Bad input or options of the batch-size sweep: one ``error:`` line, exit status 2."""


DONE = "sweep_training.json"  # in a run folder from its start: the command, and whether the training ended


def parse_sizes(text: str) -> list:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise BatchSweepError(f"--batch-sizes {text}: expected comma-separated integers, e.g. 32,64,128") from None
    if not sizes or sizes[0] < 1:
        raise BatchSweepError(f"--batch-sizes {text}: give at least one positive batch size")
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
        raise BatchSweepError("--equal-tokens needs --max-update (the updates of the largest batch size)")
    if args.save_interval_updates is not None:
        overrides.append(f"checkpoint.save_interval_updates={args.save_interval_updates * scale}")
    elif scale != 1:
        raise BatchSweepError("--equal-tokens needs --save-interval-updates (that of the largest batch size)")
    return hydra_train_command(config, [*overrides, *(CPU_OVERRIDES if args.cpu else ()), *args.override],
                               args.config_dir)


def train(name: str, command: list, save_dir: Path, output: Path, force: bool) -> None:
    """Pretrain one run into ``save_dir``, unless it already finished with this command.

    The command is recorded before the training starts (``done: false``), so that an interrupted
    run is only resumed by the same command; ``done: true`` once it ended.
    """
    marker = save_dir / DONE
    wanted = command[1:]  # without the interpreter path: stable across venvs
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    elif save_dir.is_dir() and any(save_dir.iterdir()):
        previous = {}  # checkpoints without a marker: not known to be this command's
    if previous is not None and previous.get("command") == wanted:
        if previous.get("done"):
            log(f"{name}: trained before ({marker}), not retrained")
            return
        log(f"{name}: resuming an interrupted training with the same command")
    elif previous is not None:
        if not force:
            what = "another command" if previous.get("command") else "a training of unknown command"
            raise BatchSweepError(f"{save_dir} holds {what} ({marker}); pass --force to delete and retrain it (and its "
                                  "evaluated points), or use another --output")
        # The cached points of the old training would pass for this one's at the same update counts.
        for folder in (save_dir, output / "points" / name, output / "work" / name):
            shutil.rmtree(folder, ignore_errors=True)
    save_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, {"command": wanted, "done": False})
    log(f"{name}: pretraining into {save_dir} (log: {save_dir}/hydra_train.log)")
    finished = run_training(command, save_dir / "train.out", name, report=log, check=False)
    if finished.returncode != 0:
        raise BatchSweepError(f"pretraining {name} failed (exit {finished.returncode}; {save_dir}/train.out): "
                              f"{finished.tail()}")
    log(f"{name}: trained in {finished.seconds:.0f} s")
    write_json_atomic(marker, {"command": wanted, "done": True})


def build_parser():
    parser = Parser(prog="sweep_batch_size.py", description=__doc__.split("\n\n")[0],
                          epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the pretraining data folder (scripts/prepare_data.py)")
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
        raise BatchSweepError("--lambada FILE is needed: the sweep scores LAMBADA accuracy (Fig.7)")
    from fairseq_headless.data.folder import open_data_folder

    open_data_folder(args.data, f"--data {args.data}")  # a DataError: one error line
    sizes = parse_sizes(args.batch_sizes)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in configs:
        if not (args.config_dir / f"{config}.yaml").is_file():
            raise BatchSweepError(f"--configs: no {args.config_dir}/{config}.yaml")
    for value in (args.max_update, args.save_interval_updates):
        if value is not None and value < 1:
            raise BatchSweepError("--max-update and --save-interval-updates must be positive")
    for override in args.override:
        if "=" not in override:
            raise BatchSweepError(f"--override {override}: expected KEY=VALUE")
    return sizes, configs


def train_runs(args, sizes: list, configs: list) -> dict:
    """{run name: save_dir}, every (config, batch size) trained (or found trained)."""
    runs = {}
    for config in configs:
        for size in sizes:
            name = f"{config}-b{size}"
            save_dir = args.output / "runs" / name
            if args.equal_tokens and sizes[-1] % size:
                raise BatchSweepError(f"--equal-tokens: {sizes[-1]} is not a multiple of batch size {size}")
            scale = sizes[-1] // size if args.equal_tokens else 1
            train(name, train_command(config, size, save_dir, args, scale), save_dir, args.output, args.force)
            runs[name] = save_dir
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """studies/batch_size_sweep.py: bad input raises an :class:`InputError` (``cli.run`` prints it)."""
    import logging

    logging.getLogger("fairseq").setLevel(logging.WARNING)  # stderr is for progress lines and errors
    started = time.time()
    args = build_parser().parse_args(argv)
    sizes, configs = check_options(args)
    runs = train_runs(args, sizes, configs)
    kind, records = along.evaluate_runs(runs, args)
    if kind != "lambada":
        raise BatchSweepError("--configs: the sweep is for decoders (language_modeling); these configs are encoders")
    png = write_summary(args.output, kind, series_of(records), runs, stem="batch_size_sweep",
                        title="LAMBADA along pretraining for different batch sizes (paper Fig.7)")
    log(f"done in {time.time() - started:.0f} s: {png.with_suffix('.json')}, {png.with_suffix('.md')}, {png}")
    return 0


if __name__ == "__main__":
    import sys

    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main, failures=along.FAILURES))
