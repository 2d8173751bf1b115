#!/usr/bin/env python
"""`make demo`: raw text to a trained headless and vanilla model, side by side, on a CPU.

    python scripts/demo.py [--max-update 1200] [--corpus DIR] [--size tiny|small]

Options and the steps it runs: --help. The code lives in fairseq_headless/experiments/demo.py; this
file is only its entry point (bad options: one ``error:`` line, exit 2; a failed training or export: exit 1).
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.experiments.demo import FAILURES, main

if __name__ == "__main__":
    sys.exit(run(main, failures=FAILURES))
