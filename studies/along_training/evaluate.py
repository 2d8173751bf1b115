"""Downstream scores of every saved checkpoint of some runs (paper Figs.3-5 and 7; docs/evaluation.md).

Decoders (fairseq ``language_modeling``): LAMBADA (``lambada_openai``), headless ones also after the causal
fine-tuning of §3.3 (``--finetune-config``: the "NAME + FT" line, its tokens and hours including the
fine-tuning's). Encoders (``masked_lm``): exported, fine-tuned on GLUE (App. E), the average over the tasks
minus ``--glue-exclude``. x values come from the checkpoint itself (updates, tokens seen, training hours).
Each point is a :class:`~fairseq_headless.stages.Stage` in ``OUTPUT/points/<run>/<updates>.json``: a rerun
evaluates only new checkpoints.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.stages import Stage, StageSettingsError
from studies.training_runs import (CPU_OVERRIDES, REPO, TrainingError, export, glue_suite, hydra_train_command,
                                   lambada, log_to_stderr, run_training)
from .report import series_of, write_summary

logger = logging.getLogger(__name__)
TRAIN_LOGS = ("hydra_train.log", "train.log")  # hydra's own log; the demo's copy of the output
KINDS = {"language_modeling": "lambada", "masked_lm": "glue"}
FINETUNE_SETTINGS = "finetune_settings.json"  # the Stage of a fine-tuning, beside its checkpoints


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def parse_runs(values: Sequence[str]) -> dict:
    """``NAME=DIR`` (or ``DIR``: named after the folder) -> {name: folder}."""
    runs = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep:
            name, folder = "", value
        folder = Path(folder)
        name = name or folder.name
        if not folder.is_dir():
            raise InputError(f"--run {value}: {folder} is not a folder (a run's checkpoint.save_dir)")
        if not name or "/" in name or name.startswith(".") or name.endswith(" + FT"):
            raise InputError(f"--run {value}: '{name}' cannot name a run; use NAME=DIR with a plain name")
        if name in runs:
            raise InputError(f"--run {value}: two runs named '{name}'; name them with NAME=DIR")
        runs[name] = folder
    return runs


def find_points(name: str, folder: Path) -> list:
    """[(Progress, log wall seconds or None)] of a run folder, in training order."""
    from fairseq_headless.training_progress import list_checkpoints, read_progress
    from studies.training_runs import log_wall_seconds, train_inner_by_update

    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        raise InputError(f"--run {name}={folder}: no checkpoint*.pt in it; is it a checkpoint.save_dir?")
    records = {}
    for log_name in TRAIN_LOGS:
        if (folder / log_name).is_file():
            records = train_inner_by_update(folder / log_name)
            break
    points = []
    for updates, path in checkpoints:
        progress = read_progress(path)
        if progress.tokens_estimated:
            logger.info(f"{name} @ {progress.updates} updates: fairseq reset its meters on a resume (end-of-epoch "
                        f"checkpoint), tokens extrapolated from its last {progress.tokens_counted_updates} updates")
        points.append((progress, log_wall_seconds(records, progress.updates)))
    return points


def lambada_scores(checkpoint: Path, args) -> dict:
    return lambada(checkpoint, args.lambada, args.limit, args.data_bin, args.device, args.batch_size)



def finetune(checkpoint: Path, save_dir: Path, data: str, args, settings: dict) -> Path:
    """The causal fine-tuning (§3.3) from ``checkpoint`` into ``save_dir``. An interrupted one resumes from its
    ``checkpoint_last.pt`` only if it was started with the same ``settings``; otherwise it starts again."""
    stage = Stage(save_dir / FINETUNE_SETTINGS, settings)
    try:
        stage.result()
    except StageSettingsError:
        logger.info(f"  {save_dir} holds a fine-tuning started with other settings: cleared")
        shutil.rmtree(save_dir)
    command = hydra_train_command(args.finetune_config, [
        f"task.data={data}", f"checkpoint.save_dir={save_dir}",
        f"checkpoint.finetune_from_model={checkpoint.resolve()}",
        f"common.user_dir={REPO / 'fairseq_headless'}", *(CPU_OVERRIDES if args.cpu else ()), *args.finetune_override,
    ], args.config_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    stage.start()
    logger.info(f"  causal fine-tuning ({args.finetune_config}) into {save_dir}")
    finished = run_training(command, save_dir / "finetune.out", f"fine-tuning {checkpoint.name}", check=False)
    last = save_dir / "checkpoint_last.pt"
    if finished.returncode != 0 or not last.is_file():
        raise TrainingError(f"fine-tuning {checkpoint} with --finetune-config {args.finetune_config} failed "
                            f"(exit {finished.returncode}; {save_dir}/finetune.out): {finished.tail()}")
    stage.finish({"checkpoint": str(last)})
    return last


def glue_scores(checkpoint: Path, work: Path, args) -> dict:
    """Export, then the GLUE suite on the export; the average as Tab.1 over the chosen tasks."""
    export(checkpoint, work / "hf", args.data_bin)
    averaged = [s.name for s in args.glue_specs if s.name not in args.glue_exclude]
    argv = ["--model", f"model={work / 'hf'}", "--tasks", ",".join(s.name for s in args.glue_specs), "--seeds",
            str(args.glue_seeds), "--epochs", str(args.glue_epochs), *args.glue_option,
            *(["--data-dir", str(args.glue_data)] if args.glue_data else [])]
    scores = glue_suite(argv, work / "glue", ["model"], averaged)["model"]
    shutil.rmtree(work / "hf", ignore_errors=True)  # the scores are kept; a model per point would fill the disk
    return {"glue_average": scores["average"], "glue_average_std": scores["average_std"], "averaged_tasks": averaged,
            "tasks": scores["tasks"]}


def settings_of(args, kind: str, headless: bool) -> dict:
    """What a cached point depends on: a point made with other settings is not reused."""
    if kind == "lambada":
        settings = {"lambada": file_digest(args.lambada), "limit": args.limit}
        if headless and args.finetune_config:
            settings["finetune"] = {"config": args.finetune_config, "config_file": file_digest(
                args.config_dir / f"{args.finetune_config}.yaml"), "overrides": list(args.finetune_override),
                "cpu": args.cpu, "data": str(args.finetune_data) if args.finetune_data else None}
        return settings
    return {"glue_tasks": [s.name for s in args.glue_specs], "glue_exclude": sorted(args.glue_exclude),
            "glue_seeds": args.glue_seeds, "glue_epochs": args.glue_epochs, "glue_option": list(args.glue_option),
            "glue_data": str(args.glue_data) if args.glue_data else "hub"}


def checkpoint_identity(progress: dict) -> dict:
    """Which training's checkpoint a point is: another one in the same folder (other lr or seed, same
    batches) has the same update and token counts, but not the same config and training clock."""
    return {k: progress.get(k) for k in ("cfg_digest", "seconds", "tokens")}


def evaluate_point(name: str, progress, log_wall, kind: str, args) -> dict:
    """The record of one checkpoint, from its Stage if it was evaluated with these settings. The checkpoint's
    identity is a setting: another training in the same folder has the same update counts."""
    headless = progress.arch.startswith("headless")  # the plugin's naming: headless_<shape>
    settings = settings_of(args, kind, headless)
    stage = Stage(args.output / "points" / name / f"{progress.updates}.json",
                  {**settings, "checkpoint": checkpoint_identity(progress.as_dict())})
    work = args.output / "work" / name / str(progress.updates)
    try:
        record = stage.result()
    except StageSettingsError as e:
        if not args.force:
            raise InputError(f"{e}: other evaluation settings, or a checkpoint of another training in "
                             f"{Path(progress.checkpoint).parent}; pass --force to redo it, or use another --output")
        record = None
        shutil.rmtree(work, ignore_errors=True)
    if record is not None:
        logger.info(f"{name} @ {progress.updates} updates: cached ({stage.marker})")
        return record
    stage.start()
    checkpoint = Path(progress.checkpoint)
    logger.info(f"{name} @ {progress.updates} updates ({progress.tokens:,} tokens, {progress.hours:.4f} h): "
                f"{checkpoint.name}")
    record = {"run": name, "progress": {**progress.as_dict(), "log_wall_seconds": log_wall}, "headless": headless}
    if kind == "glue":
        record["scores"] = glue_scores(checkpoint, work, args)
        logger.info(f"  GLUE average {record['scores']['glue_average']:.2f} over "
                    f"{', '.join(record['scores']['averaged_tasks'])}")
        return stage.finish(record)
    record["scores"] = lambada_scores(checkpoint, args)
    logger.info(f"  LAMBADA accuracy {100 * record['scores']['accuracy']:.2f}%, "
                f"perplexity {record['scores']['perplexity']:.2f}")
    if "finetune" in settings:
        from fairseq_headless.training_progress import read_progress

        data = str(args.finetune_data) if args.finetune_data else progress.data
        last = finetune(checkpoint, work / "finetune", data, args,
                        {**settings["finetune"], "data": data, "from": checkpoint_identity(progress.as_dict())})
        ft = read_progress(last)
        record["finetuned"] = {"progress": ft.as_dict(), "scores": lambada_scores(last, args)}
        logger.info(f"  after fine-tuning ({ft.updates} updates, {ft.tokens:,} tokens): LAMBADA accuracy "
                    f"{100 * record['finetuned']['scores']['accuracy']:.2f}%")
        if not args.keep_finetuned:
            for path in (work / "finetune").glob("checkpoint*.pt"):
                path.unlink()
    return stage.finish(record)


def evaluate_runs(runs: dict, args) -> tuple:
    """(kind, {run: [record]}) for every checkpoint of every run."""
    points = {name: find_points(name, folder) for name, folder in runs.items()}
    kinds = {name: KINDS.get(ps[0][0].task) for name, ps in points.items()}
    for name, kind in kinds.items():
        if kind is None:
            raise InputError(f"--run {name}: task {points[name][0][0].task!r} is neither language_modeling "
                             "(decoders, LAMBADA) nor masked_lm (encoders, GLUE)")
    if len(set(kinds.values())) > 1:
        raise InputError("--run: mixes decoders (LAMBADA) and encoders (GLUE); one figure compares one kind")
    kind = next(iter(kinds.values()))
    if kind == "lambada" and args.lambada is None:
        raise InputError("--lambada FILE is needed for decoder runs (LAMBADA as jsonl, see scripts/eval_lambada.py)")
    if kind == "glue":
        from fairseq_headless.evaluation.tasks import resolve_tasks

        try:
            args.glue_specs = resolve_tasks("glue", args.glue_tasks)
        except InputError as e:
            raise InputError(str(e).replace("--tasks", "--glue-tasks")) from None
        if not [s for s in args.glue_specs if s.name not in args.glue_exclude]:
            raise InputError("--glue-tasks minus --glue-exclude leaves no task to average")
    total = sum(len(p) for p in points.values())
    logger.info(f"{total} checkpoint(s) in {len(runs)} run(s); scores: {kind}")
    records = {name: [evaluate_point(name, progress, wall, kind, args) for progress, wall in ps]
               for name, ps in points.items()}
    return kind, records


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """The options shared with the batch-size sweep."""
    parser.add_argument("--force", action="store_true", help="redo points cached with other settings")
    parser.add_argument("--data-bin", type=Path, help="the runs' data folder (tokenizer) if their task.data moved")
    parser.add_argument("--cpu", action="store_true", help="fine-tune and score LAMBADA on CPU")
    lm = parser.add_argument_group("decoders (LAMBADA, Figs.4 and 7)")
    lm.add_argument("--lambada", type=Path, help="LAMBADA as jsonl, {\"text\": ...} per line (lambada_test.jsonl)")
    lm.add_argument("--limit", type=int, help="score only the first N passages (smoke tests)")
    lm.add_argument("--batch-size", type=int, default=8, help="LAMBADA passages per forward pass (default 8)")
    lm.add_argument("--device", help="cpu, cuda, ... for LAMBADA (default: cuda when available)")
    lm.add_argument("--finetune-config", metavar="NAME",
                    help="fine-tune each headless checkpoint with configs/NAME.yaml and score it again ('RUN + FT')")
    lm.add_argument("--finetune-override", action="append", default=[], metavar="KEY=VALUE",
                    help="hydra override for the fine-tuning runs (repeatable)")
    lm.add_argument("--finetune-data", type=Path, help="the fine-tuning data folder (default: the run's task.data)")
    lm.add_argument("--keep-finetuned", action="store_true", help="keep the fine-tuned checkpoints once scored")
    lm.add_argument("--config-dir", type=Path, default=REPO / "configs", help="where --finetune-config lives")
    enc = parser.add_argument_group("encoders (GLUE, Fig.3)")
    enc.add_argument("--glue-data", type=Path, help="GLUE's distribution layout (default: the hub)")
    enc.add_argument("--glue-tasks", default="all", help="comma-separated GLUE tasks, or all (default)")
    enc.add_argument("--glue-exclude", default="RTE", help="tasks left out of the average (default RTE, as Tab.1)")
    enc.add_argument("--glue-seeds", type=int, default=3, help="fine-tuning seeds per task (default 3)")
    enc.add_argument("--glue-epochs", type=int, default=10, help="fine-tuning epochs (default 10, App. E)")
    enc.add_argument("--glue-option", action="append", default=[], metavar="--OPTION=VALUE",
                     help="extra scripts/finetune_glue.py option (repeatable), e.g. --glue-option=--threads=1")


def check_evaluation_options(args) -> None:
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise InputError("--batch-size and --limit must be positive")
    if args.glue_seeds < 1 or args.glue_epochs < 1:
        raise InputError("--glue-seeds and --glue-epochs must be at least 1")
    if args.lambada is not None and not args.lambada.is_file():
        raise InputError(f"--lambada {args.lambada}: no such file")
    if args.glue_data is not None and not args.glue_data.is_dir():
        raise InputError(f"--glue-data {args.glue_data}: not a folder (GLUE's distribution layout)")
    if args.data_bin is not None:
        from fairseq_headless.data.folder import open_data_folder

        open_data_folder(args.data_bin, f"--data-bin {args.data_bin}")  # an InputError naming it
    if args.finetune_config and not (args.config_dir / f"{args.finetune_config}.yaml").is_file():
        raise InputError(f"--finetune-config {args.finetune_config}: no {args.config_dir}/{args.finetune_config}.yaml")
    if args.finetune_data is not None and not args.finetune_data.is_dir():
        raise InputError(f"--finetune-data {args.finetune_data}: not a folder")
    for override in args.finetune_override:
        if "=" not in override:
            raise InputError(f"--finetune-override {override}: expected KEY=VALUE")
    if args.cpu and args.device is None:
        args.device = "cpu"
    args.glue_exclude = {t.strip() for t in args.glue_exclude.split(",") if t.strip()}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m studies.along_training", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", action="extend", required=True, metavar="NAME=DIR",
                        help="a run's checkpoint folder (checkpoint.save_dir), named for the legend (repeatable)")
    parser.add_argument("--output", type=Path, required=True,
                        help="results folder: points/ (the cache), along_training.json/.md/.png")
    add_evaluation_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    check_evaluation_options(args)
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"--output {args.output}: exists and is not a folder")
    runs = parse_runs(args.run)  # before anything heavy is imported
    log_to_stderr()
    kind, records = evaluate_runs(runs, args)
    png = write_summary(args.output, kind, series_of(records), runs)
    logger.info(f"done in {time.time() - started:.0f} s: {png.with_suffix('.json')}, {png.with_suffix('.md')}, {png}")
    return 0
