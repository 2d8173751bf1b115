#!/usr/bin/env python
"""The checks that need a GPU, in one call of under 10 minutes on one GPU (CI and the test suite have none).

    python scripts/gpu_checks.py --data demo_runs/data-sotu-8000 --corpus demo_runs/sotu --output gpu_checks.json

The checks, their sizes and ``--cpu-dry-run``: --help. The code lives in fairseq_headless/experiments/gpu_checks.py;
this file is its entry point, also the one torchrun starts for the one-rank DDP check (it imports the
installed package, there too). Exit 0 when every check passed, 1 when one failed, 2 on bad input.
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.experiments.gpu_checks import main

if __name__ == "__main__":
    sys.exit(run(main))
