"""The command lines of scripts/eval_zeroshot.py and scripts/compare_zeroshot.py (paper Tab.4, §4.2).

:func:`eval_main` writes ``OUTPUT/NAME.json`` per model; :func:`compare_main` ranks models per task with
Tab.4's one-tailed t-test and writes ``table4.md/.json/.png``. Options and outputs: docs/evaluation.md."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Sequence

from ..cli import InputError, Parser
from ..files import atomic_path, write_json_atomic, write_text_atomic
from .zeroshot import check_task_file, evaluate_model, load_tasks, lm_eval_tasks_dir, select_tasks
from .zeroshot_compare import TESTS, compare, load_result, markdown_table, plot

OUTPUTS = ("table4.md", "table4.json", "table4.png")


def build_eval_parser() -> Parser:
    names = ", ".join(load_tasks())
    parser = Parser(prog="eval_zeroshot.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="Zero-shot suite of paper Tab.4 (§4.2) on exported causal models, with "
                                "lm-evaluation-harness, offline.",
                    epilog=f"tasks: {names}. Task files and outputs: docs/evaluation.md.")
    parser.add_argument("--model", nargs="+", required=True, metavar="NAME=FOLDER",
                        help="exported Hugging Face causal LM folder(s), each with a name for the table")
    parser.add_argument("--tasks", nargs="+", default=["all"], help="task names or 'all' (default)")
    parser.add_argument("--task-files", type=Path, required=True,
                        help="folder with one JSON-lines file per task (boolq.jsonl, sciq.jsonl, ...)")
    parser.add_argument("--output", type=Path, required=True, help="folder for NAME.json (created if needed)")
    parser.add_argument("--force", action="store_true", help="replace existing NAME.json files")
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", help="model dtype for lm-eval (default float32)")
    parser.add_argument("--limit", type=int, help="only the first N samples of each task (smoke tests)")
    parser.add_argument("--bootstrap-iters", type=int, default=100000,
                        help="lm-eval's bootstrap for standard errors of non-mean metrics (perplexity, F1); "
                        "default 100000 as lm_eval's")
    return parser


def parse_models(specs: Sequence[str]) -> dict:
    models = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--model {spec!r}: expected NAME=FOLDER")
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise InputError(f"--model {spec!r}: the name may hold letters, digits, '_', '-', '.'")
        if name in models:
            raise InputError(f"--model: the name {name!r} is given twice")
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise InputError(f"--model {spec}: {path} is not a Hugging Face model folder (no config.json); "
                             "export a checkpoint with scripts/convert_to_hf.py")
        models[name] = path
    return models


def _check_outputs(output: Path, paths, force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise InputError(f"--output: {', '.join(existing)} exist(s); pass --force to replace")
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file, not a folder")


def eval_main(argv: Sequence[str]) -> int:
    """scripts/eval_zeroshot.py, under ``cli.run``: every input checked before the first model loads."""
    args = build_eval_parser().parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1) or args.bootstrap_iters < 0:
        raise InputError("--batch-size and --limit must be positive, --bootstrap-iters >= 0")
    models = parse_models(args.model)
    tasks = select_tasks(args.tasks)
    if not args.task_files.is_dir():
        raise InputError(f"--task-files {args.task_files}: no such folder (one JSON-lines file per task, layout in "
                         "docs/evaluation.md)")
    for task in tasks:
        check_task_file(task, args.task_files)
    outputs = {name: args.output / f"{name}.json" for name in models}
    _check_outputs(args.output, outputs.values(), args.force)
    lm_eval_tasks_dir()

    # lm-eval's progress lines too, through the command line's console handler (cli.run); not its task loader's
    logging.getLogger("lm_eval").setLevel(logging.INFO)
    for noisy in ("datasets", "lm_eval.tasks", "fairseq", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger(__name__)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, folder in models.items():
        log.info("model %s (%s): tasks %s", name, folder, ", ".join(t.name for t in tasks))
        start = time.time()
        run = evaluate_model(folder, tasks, args.task_files, batch_size=args.batch_size, device=args.device,
                             limit=args.limit, bootstrap_iters=args.bootstrap_iters, dtype=args.dtype)
        result = {"model": name, "path": str(folder.resolve()), "seconds": round(time.time() - start, 1), **run}
        write_json_atomic(outputs[name], result)
        for entry in run["tasks"].values():
            stderr = f" ± {100 * entry['stderr']:.1f}" if entry["stderr"] is not None else ""
            print(f"{name}  {entry['label']:<12} {entry['metric']} {100 * entry['value']:.2f}{stderr}  "
                  f"(n={entry['n']})", flush=True)
        log.info("wrote %s (%.0f s)", outputs[name], result["seconds"])
    return 0


def build_compare_parser() -> Parser:
    parser = Parser(prog="compare_zeroshot.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="Compare models' zero-shot results task by task, with the one-tailed t-test of "
                                "paper Tab.4's daggers.", epilog="Outputs and statistics: docs/evaluation.md.")
    parser.add_argument("--results", type=Path, nargs="+", required=True, metavar="NAME.json",
                        help="two or more result files of scripts/eval_zeroshot.py (table rows in this order)")
    parser.add_argument("--output", type=Path, required=True, help="folder for table4.md, table4.json, table4.png")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="one-tailed significance level (default 0.05: the paper's '0.95')")
    parser.add_argument("--test", choices=TESTS, default="auto",
                        help="auto (default): paired where per-sample scores exist, else welch")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    return parser


def compare_main(argv: Sequence[str]) -> int:
    """scripts/compare_zeroshot.py, under ``cli.run``."""
    args = build_compare_parser().parse_args(argv)
    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha {args.alpha}: must lie strictly between 0 and 1")
    paths = {name: args.output / name for name in OUTPUTS}
    _check_outputs(args.output, paths.values(), args.force)
    comparison = compare([load_result(p) for p in args.results], alpha=args.alpha, test=args.test)
    if not comparison["tasks"]:
        raise InputError("--results: the files have no task in common")

    args.output.mkdir(parents=True, exist_ok=True)
    table = markdown_table(comparison)
    with atomic_path(paths["table4.png"]) as tmp:
        plot(comparison, tmp)
    write_json_atomic(paths["table4.json"], comparison)
    write_text_atomic(paths["table4.md"], table)
    print(table, end="")
    return 0
