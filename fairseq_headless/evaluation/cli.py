"""The command lines of scripts/finetune_glue.py, finetune_superglue.py and finetune_xnli.py.

Options come from :class:`FinetuneConfig`'s fields, with per-benchmark defaults from the paper (App. E,
Tab.12, 14, 16); where the paper is ambiguous and what we took: docs/evaluation.md#protocol-paper-app-e."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..cli import InputError, Parser, run
from .results import best_epoch_of

PRESETS = {"balanced": (1e-5, 0.0), "ce": (5e-6, 0.01)}  # --loss -> (lr, weight decay) of App. E (Tab.14, Tab.12)
SUITE_SEEDS = {"glue": 3, "superglue": 10, "xnli": 3}
XNLI_DEFAULTS = {"lr": 2e-5, "weight_decay": 0.01, "batch_size": 128, "epochs": 3, "loss": "ce"}
XNLI_SECTIONS = {"zero-shot": "Fine-tuned on English only (cross-lingual zero-shot)",
                 "translate-train": "Fine-tuned on target language (translate-train)"}


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except None: such an option's help says what its absence means."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _common_parser(description: str, seeds: int, epochs: int, batch: int, loss: str,
                   lr_wd: dict) -> argparse.ArgumentParser:
    """`lr_wd`: the paper's (lr, weight decay) that --lr and --weight-decay default to, by --loss or for all."""
    def paper(index: int) -> str:
        return ", ".join(f"{name} {values[index]:g}" for name, values in lr_wd.items())

    p = Parser(description=description, formatter_class=_DefaultsHelp)
    p.add_argument("--model", nargs="+", action="extend", required=True, metavar="[NAME=]DIR",
                   help="exported Hugging Face encoder folder(s) (scripts/convert_to_hf.py); NAME labels the "
                        "table row (default: the folder's name)")
    p.add_argument("--output", required=True, type=Path,
                   help="results folder; may already hold other models' results (one table row per model)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the benchmark's files in their distribution layout (docs/evaluation.md); without it, "
                        "the Hugging Face hub (needs the optional `datasets` library and network)")
    p.add_argument("--seeds", type=int, default=seeds, help="fine-tuning runs per task (seeds 0..N-1)")
    p.add_argument("--epochs", type=int, default=epochs,
                   help="fine-tuning epochs; dev metrics after each, best reported")
    p.add_argument("--loss", choices=("balanced", "ce"), default=loss,
                   help="balanced: App. E.1's balanced cross-entropy; ce: regular cross-entropy")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: the paper's, {paper(0)})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW weight decay (default: the paper's, {paper(1)})")
    p.add_argument("--batch-size", type=int, default=batch, help="training batch size")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warmup share of all steps, then constant")
    p.add_argument("--max-length", type=int, default=128, help="tokens per input (pair) after truncation")
    p.add_argument("--eval-batch-size", type=int, default=128, help="evaluation batch size (speed only)")
    p.add_argument("--max-train-examples", type=int, default=None,
                   help="fine-tune on a fixed random subset of the training set (quick runs; not the paper's protocol)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0: torch's default). On a shared CPU, 1 runs tiny models many "
                        "times faster (no OpenMP spinning); results do not depend on it")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the last epoch's checkpoint of finished runs")
    p.add_argument("--force", action="store_true",
                   help="delete and redo the requested runs even if results (with other settings) exist")
    return p


def _config(args, lr_wd_defaults):
    from .finetune import FinetuneConfig
    if args.seeds < 1:
        raise InputError("--seeds must be at least 1")
    if args.threads < 0:
        raise InputError("--threads must be 0 (torch's default) or more")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.max_train_examples is not None and args.max_train_examples < 1:
        raise InputError("--max-train-examples must be at least 1")
    lr, wd = lr_wd_defaults
    return FinetuneConfig(
        learning_rate=args.lr if args.lr is not None else lr,
        weight_decay=args.weight_decay if args.weight_decay is not None else wd,
        batch_size=args.batch_size, epochs=args.epochs, warmup_ratio=args.warmup_ratio, loss=args.loss,
        max_length=args.max_length, eval_batch_size=args.eval_batch_size,
        max_train_examples=args.max_train_examples)


def _check_output(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"--output {path}: exists and is not a folder")


def _protocol_notes(config, seeds: int) -> list:
    cells = (f"mean ± std over {seeds} fine-tuning seeds" if seeds > 1
             else "the score of one fine-tuning seed (n=1: no spread is known)")
    return [f"Each cell: {cells}, each {best_epoch_of(config.epochs)} (dev metrics after every epoch). Scores x 100.",
            f"This call: loss {config.loss}, AdamW lr {config.learning_rate:g}, weight decay {config.weight_decay:g}, "
            f"batch {config.batch_size}, constant LR after {100 * config.warmup_ratio:g}% linear warmup, "
            f"max length {config.max_length}"
            + (f", training subset of {config.max_train_examples} examples" if config.max_train_examples else "")
            + ". Each row's exact settings are in <output>/<model>/<task>.json."]


def quiet_root_logger() -> None:
    """Importing fairseq (through fairseq_headless) sets the root logger to DEBUG; our output is the bars."""
    logging.getLogger().setLevel(logging.WARNING)


def suite_main(argv, suite: str) -> int:
    """GLUE (Tab.1) or SuperGLUE (Tab.2); bad input: one ``error:`` line, exit 2 (fairseq_headless.cli)."""
    return run(lambda a: _suite_main(a, suite), argv)


def _suite_main(argv, suite: str) -> int:
    quiet_root_logger()
    from .tasks import GLUE_TABLE_ORDER, SUITES, TABLE_ORDER
    names = ", ".join(TABLE_ORDER[suite])
    title = {"glue": "GLUE dev (paper Tab.1)", "superglue": "SuperGLUE dev (paper Tab.2)"}[suite]
    parser = _common_parser(f"Fine-tune exported encoders on {title} with the protocol of paper App. E.",
                            SUITE_SEEDS[suite], 10, 32, "balanced", {f"--loss {k}": v for k, v in PRESETS.items()})
    parser.add_argument("--tasks", required=True, help=f"comma-separated, from {names}; or all")
    args = parser.parse_args(argv)
    order = GLUE_TABLE_ORDER if suite == "glue" else TABLE_ORDER[suite]
    return _run_suite(args, suite, title, SUITES[suite], order)


def _run_suite(args, suite, title, registry, order) -> int:
    from .suite import parse_models
    from .task_data import load_split
    from .tasks import resolve_tasks
    specs = resolve_tasks(suite, args.tasks)
    models = parse_models(args.model)
    config = _config(args, PRESETS[args.loss])
    _check_output(args.output)
    data = {}  # every split is read (and validated) before any training starts
    for spec in specs:
        data[spec.name] = (load_split(spec, "train", args.data_dir, max_examples=config.max_train_examples),
                           {"dev": load_split(spec, "dev", args.data_dir)})

    avg = [n for n in order if registry[n].in_average]
    notes = _protocol_notes(config, args.seeds)
    if suite == "glue":
        notes.append("Avg. as Tab.1: every task but RTE (reported on its own); MNLI = matched + mismatched dev "
                     "sets concatenated; CoLA: Matthews corr., STS-B: Spearman corr., accuracy elsewhere.")
    else:
        notes.append("Accuracy for every task (Tab.2). COPA: two-way multiple choice; WiC: target word marked.")
    jobs = [(spec.name, "main", spec, *data[spec.name], {}) for spec in specs]
    return _run_jobs(args, models, config, suite, jobs, (title, [("main", "", list(order))], avg,
                                                         {n: registry[n].main_metric for n in order}, notes))


def _run_jobs(args, models, config, suite: str, jobs: list, table: tuple) -> int:
    """Fine-tune every model on every job (name, section, spec, train examples, dev sets, extra settings) for
    each seed, then write the suite's tables (``table``: write_tables' arguments after the suite)."""
    from .finetune import finetune
    from .suite import SuiteRunner, write_tables
    bench = SuiteRunner(args.output, force=args.force, keep_checkpoints=args.keep_checkpoints)
    data = str(args.data_dir.resolve()) if args.data_dir is not None else "hub"
    for model in models:
        for name, section, spec, train_examples, dev_sets, extra in jobs:
            settings = {"model_dir": str(model.path), "task": name, "data": data, **extra,
                        **config.settings()}

            def train(seed, run_dir, model=model, name=name, spec=spec, train_examples=train_examples,
                      dev_sets=dev_sets):
                return finetune(model.path, spec, train_examples, dev_sets, config, seed, run_dir,
                                desc=f"{model.name} {name} seed {seed}")

            results = bench.run(model, name, settings, list(range(args.seeds)), train)
            if suite != "xnli":  # the job's columns are named after the task, not after its single dev set
                results = {s: {**r, "best": {name: r["best"]["dev"]}} for s, r in results.items()}
            bench.write_job_summary(model, name, suite, section, settings, results)
            md = write_tables(args.output, suite, *table)
    print(md.read_text(encoding="utf-8"))
    print(f"written: {md}, {md.with_suffix('.json')}, {md.with_suffix('.png')}", file=sys.stderr)
    return 0


def xnli_main(argv) -> int:
    """XNLI (Tab.5): cross-lingual zero-shot and translate-train; bad input: one ``error:`` line, exit 2."""
    return run(_xnli_main, argv)


def _xnli_main(argv) -> int:
    quiet_root_logger()
    from .tasks import XNLI_ALL_LANGUAGES, XNLI_LANGUAGES
    d = XNLI_DEFAULTS
    parser = _common_parser("Fine-tune exported multilingual encoders on XNLI (paper §5, Tab.5, App. E.4).",
                            SUITE_SEEDS["xnli"], d["epochs"], d["batch_size"], d["loss"],
                            {"XNLI": (d["lr"], d["weight_decay"])})
    parser.add_argument("--protocols", default="zero-shot,translate-train",
                        help="zero-shot: fine-tune on English, evaluate every language; translate-train: "
                             "fine-tune and evaluate on each language's (machine-translated) data")
    parser.add_argument("--languages", default=",".join(XNLI_LANGUAGES),
                        help=f"evaluated languages, from {', '.join(XNLI_ALL_LANGUAGES)}")
    args = parser.parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    for p in protocols:
        if p not in XNLI_SECTIONS:
            raise InputError(f"--protocols: unknown '{p}'; choose zero-shot and/or translate-train")
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    for lang in languages:
        if lang not in XNLI_ALL_LANGUAGES:
            raise InputError(f"--languages: '{lang}' is not an XNLI language ({', '.join(XNLI_ALL_LANGUAGES)})")
    if not protocols or not languages:
        raise InputError("--protocols and --languages must name at least one each")
    return _run_xnli(args, protocols, languages)


def _run_xnli(args, protocols, languages) -> int:
    from .suite import parse_models
    from .task_data import load_split
    from .tasks import XNLI
    models = parse_models(args.model)
    d = XNLI_DEFAULTS
    config = _config(args, (d["lr"], d["weight_decay"]))
    _check_output(args.output)
    load = lambda split, lang: load_split(  # noqa: E731
        XNLI, split, args.data_dir, lang=lang, max_examples=config.max_train_examples if split == "train" else None)
    dev = {lang: load("dev", lang) for lang in languages}
    jobs = []  # (job name, section, spec, train examples, dev sets, extra settings)
    if "zero-shot" in protocols:
        jobs.append(("XNLI-zero-shot", "zero-shot", XNLI, load("train", "en"), dev, {"dev_languages": languages}))
    if "translate-train" in protocols:
        jobs += [(f"XNLI-translate-train-{lang}", "translate-train", XNLI, load("train", lang), {lang: dev[lang]},
                  {"dev_languages": [lang]}) for lang in languages]
    notes = _protocol_notes(config, args.seeds) + [
        "Dev accuracy (Tab.5). Zero-shot: one English fine-tuning per seed, its best epoch chosen on the mean "
        "dev accuracy over the languages shown. Translate-train: one fine-tuning per language and seed on "
        "XNLI-MT's machine-translated MultiNLI, its best epoch chosen on that language's dev set."]
    sections = [(p, XNLI_SECTIONS[p], languages) for p in XNLI_SECTIONS if p in protocols]
    return _run_jobs(args, models, config, "xnli", jobs, ("XNLI dev accuracy (paper Tab.5)", sections, languages,
                                                          {lang: "accuracy" for lang in languages}, notes))
