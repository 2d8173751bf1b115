#!/usr/bin/env python
"""Speed and memory of headless against vanilla training (paper Fig.2, Fig.6b, Tab.6, §3.4).

    python scripts/benchmark.py --quick --output bench/      # the issue's targets, < 10 min on 2 CPU cores
    python scripts/benchmark.py --output bench/              # the whole sweep (hours on a CPU)
    python scripts/benchmark.py --smoke --output /tmp/b      # seconds: tiny models (the tests run this)
    python scripts/benchmark.py --quick --device cuda --precision fp16 --output bench-gpu/

Options and what is measured: --help. The code lives in fairseq_headless/benchmarking/speed.py;
this file is only its entry point (bad options: one ``error:`` line, exit 2).
"""
import sys

from fairseq_headless.benchmarking.speed import main
from fairseq_headless.cli import run

if __name__ == "__main__":
    sys.exit(run(main))
