#!/usr/bin/env python
"""Zero-shot suite of paper Tab.4 (§4.2) on exported causal models, with lm-evaluation-harness, offline.

    python scripts/eval_zeroshot.py --model vanilla=hf/lm_pythia70m hlm_ft=hf/hlm_pythia70m_ft \\
        --tasks all --task-files zeroshot_data --output results/zeroshot

Each ``NAME=FOLDER`` is a Hugging Face causal LM folder (scripts/convert_to_hf.py) run through
lm-eval's ``hf`` model (as ``lm_eval --model hf --log_samples``) on BoolQ, CrowS-Pairs, RACE,
SciQ, PubMedQA, QASPER and LAMBADA, with lm-eval's own task definitions reading the local
JSON-lines files of ``--task-files`` (one file per task: docs/evaluation.md). Writes
``OUTPUT/NAME.json`` per model: per task the paper's metric, its standard error, all of
lm-eval's metrics and the per-sample scores that scripts/compare_zeroshot.py tests.

Needs the optional extra: ``pip install -e ".[zeroshot]"`` (lm-eval==0.4.13). Bad input ends
with one ``error: ...`` line and exit code 2; an existing result is kept unless --force.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from fairseq_headless.evaluation.errors import EvaluationInputError
from fairseq_headless.evaluation.results import write_json_atomic
from fairseq_headless.evaluation.zeroshot import (check_task_file, evaluate_model, load_tasks,
                                                  lm_eval_tasks_dir, select_tasks)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse hook: one line, exit code 2
        raise EvaluationInputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(load_tasks())
    parser = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
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
            raise EvaluationInputError(f"--model {spec!r}: expected NAME=FOLDER")
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise EvaluationInputError(f"--model {spec!r}: the name may hold letters, digits, '_', '-', '.'")
        if name in models:
            raise EvaluationInputError(f"--model: the name {name!r} is given twice")
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise EvaluationInputError(f"--model {spec}: {path} is not a Hugging Face model folder (no config.json); "
                                       "export a checkpoint with scripts/convert_to_hf.py")
        models[name] = path
    return models


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1) or args.bootstrap_iters < 0:
            raise EvaluationInputError("--batch-size and --limit must be positive, --bootstrap-iters >= 0")
        models = parse_models(args.model)
        tasks = select_tasks(args.tasks)
        if not args.task_files.is_dir():
            raise EvaluationInputError(f"--task-files {args.task_files}: no such folder (one JSON-lines file per "
                                       "task, layout in docs/evaluation.md)")
        for task in tasks:  # every input checked before the first model loads
            check_task_file(task, args.task_files)
        outputs = {name: args.output / f"{name}.json" for name in models}
        existing = [str(p) for p in outputs.values() if p.exists()]
        if existing and not args.force:
            raise EvaluationInputError(f"--output: {', '.join(existing)} exist(s); pass --force to replace")
        if args.output.exists() and not args.output.is_dir():
            raise EvaluationInputError(f"--output {args.output} is a file, not a folder")
        lm_eval_tasks_dir()
    except EvaluationInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2

    # fairseq's import leaves the root logger at DEBUG; progress and INFO lines are enough here.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s", stream=sys.stderr,
                        force=True)
    for noisy in ("datasets", "lm_eval.tasks", "fairseq", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("eval_zeroshot")
    args.output.mkdir(parents=True, exist_ok=True)
    for name, folder in models.items():
        log.info("model %s (%s): tasks %s", name, folder, ", ".join(t.name for t in tasks))
        start = time.time()
        try:
            run = evaluate_model(folder, tasks, args.task_files, batch_size=args.batch_size, device=args.device,
                                 limit=args.limit, bootstrap_iters=args.bootstrap_iters, dtype=args.dtype)
        except EvaluationInputError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2
        result = {"model": name, "path": str(folder.resolve()), "seconds": round(time.time() - start, 1), **run}
        write_json_atomic(outputs[name], result)
        for entry in run["tasks"].values():
            stderr = f" ± {100 * entry['stderr']:.1f}" if entry["stderr"] is not None else ""
            print(f"{name}  {entry['label']:<12} {entry['metric']} {100 * entry['value']:.2f}{stderr}  "
                  f"(n={entry['n']})", flush=True)
        log.info("wrote %s (%.0f s)", outputs[name], result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
