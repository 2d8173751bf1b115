#!/usr/bin/env python
"""Micro-batch-size sweep of the small decoders: LAMBADA accuracy along pretraining per batch size (paper §6, Fig.7).

    python scripts/sweep_batch_size.py --data data-bin/ccnews --lambada lambada_test.jsonl \\
        --batch-sizes 32,64,128 --output results/batch_sweep

Options: --help. The code lives in fairseq_headless/experiments/batch_size_sweep.py; this file is
only its entry point (bad input: one ``error:`` line, exit 2; a failed export parity check: exit 1).
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.experiments.along_training import FAILURES
from fairseq_headless.experiments.batch_size_sweep import main

if __name__ == "__main__":
    sys.exit(run(main, failures=FAILURES))
