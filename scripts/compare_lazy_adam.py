#!/usr/bin/env python
"""Lazy Adam (the sparse embedding update) against dense AdamW: how far rare and frequent embedding rows move,
and the held-out CWT loss of both. The measurement of BENCHMARKS.md, "The sparse embedding update":

    python scripts/compare_lazy_adam.py --output bench-lazy/      # hmlm_tiny, V = 2,005, 50 steps

The code lives in fairseq_headless/benchmarking/lazy_vs_dense.py.
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.benchmarking.lazy_vs_dense import main

if __name__ == "__main__":
    sys.exit(run(main))
