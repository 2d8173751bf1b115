#!/usr/bin/env python
"""Speed and memory of the data stage, and the OpenWebText2 projection (BENCHMARKS.md).

    python scripts/benchmark_data.py --quick --output bench-data/    # a few minutes on 2 cores
    python scripts/benchmark_data.py --output bench-data/            # the full measurement (quiet machine)
    python scripts/benchmark_data.py --smoke --output /tmp/bd        # seconds, tiny tokenizers (the tests)
    python scripts/benchmark_data.py --quick --corpus owt2-sample/ --output bench-data/   # your own .jsonl

What is measured and how: fairseq_headless/benchmarking/data.py, which holds the code (this file is
only its entry point). Writes OUTPUT/benchmark_data.json
(machine, settings, every run), OUTPUT/benchmark_data.md (tables, the issue's targets checked) and
OUTPUT/benchmark_data.png; the generated corpus and the trained tokenizers stay in OUTPUT/work and
OUTPUT/cache for the next run. Refuses to overwrite a result without --force.
"""
import sys

from fairseq_headless.benchmarking.data import main
from fairseq_headless.cli import run

if __name__ == "__main__":
    sys.exit(run(main))
