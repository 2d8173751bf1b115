#!/usr/bin/env python
"""Compare models' zero-shot results task by task, with the one-tailed t-test of paper Tab.4's daggers.

    python scripts/compare_zeroshot.py --results results/zeroshot/vanilla.json results/zeroshot/hlm_ft.json \\
        --output results/zeroshot/compare [--alpha 0.05] [--test auto|paired|welch]

Reads NAME.json files of scripts/eval_zeroshot.py; per task ranks the models by the paper's
metric (CrowS-Pairs: lower is better), tests the best against the second best with a
one-tailed t-test (``auto``, the default: paired over the same samples when both files hold
per-sample scores, else Welch from mean, standard error and n) and marks † where p < alpha.
Writes OUTPUT/table4.md (Tab.4 layout + the tests), table4.json and table4.png. The
statistics, and why "power 0.95" is read as alpha = 0.05: docs/evaluation.md and
fairseq_headless/evaluation/zeroshot_compare.py. Bad input: one ``error: ...`` line, exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from fairseq_headless.evaluation.errors import EvaluationInputError
from fairseq_headless.files import atomic_path, write_json_atomic, write_text_atomic as write_atomic
from fairseq_headless.evaluation.zeroshot_compare import TESTS, compare, load_result, markdown_table, plot

OUTPUTS = ("table4.md", "table4.json", "table4.png")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse hook: one line, exit code 2
        raise EvaluationInputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Outputs and statistics: docs/evaluation.md.")
    parser.add_argument("--results", type=Path, nargs="+", required=True, metavar="NAME.json",
                        help="two or more result files of scripts/eval_zeroshot.py (table rows in this order)")
    parser.add_argument("--output", type=Path, required=True, help="folder for table4.md, table4.json, table4.png")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="one-tailed significance level (default 0.05: the paper's '0.95')")
    parser.add_argument("--test", choices=TESTS, default="auto",
                        help="auto (default): paired where per-sample scores exist, else welch")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not 0 < args.alpha < 1:
            raise EvaluationInputError(f"--alpha {args.alpha}: must lie strictly between 0 and 1")
        paths = {name: args.output / name for name in OUTPUTS}
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing and not args.force:
            raise EvaluationInputError(f"--output: {', '.join(existing)} exist(s); pass --force to replace")
        if args.output.exists() and not args.output.is_dir():
            raise EvaluationInputError(f"--output {args.output} is a file, not a folder")
        comparison = compare([load_result(p) for p in args.results], alpha=args.alpha, test=args.test)
        if not comparison["tasks"]:
            raise EvaluationInputError("--results: the files have no task in common")
    except EvaluationInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import leaves the root at DEBUG
    args.output.mkdir(parents=True, exist_ok=True)
    table = markdown_table(comparison)
    with atomic_path(paths["table4.png"]) as tmp:
        plot(comparison, tmp)
    write_json_atomic(paths["table4.json"], comparison)
    write_atomic(paths["table4.md"], table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
