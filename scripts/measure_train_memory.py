#!/usr/bin/env python
"""Host memory of training per block per rank, measured on synthetic splits (BENCHMARKS.md).

    python scripts/measure_train_memory.py --tokens 256M 2G --output bench-memory/       # BENCHMARKS.md
    python scripts/measure_train_memory.py --tokens 20k 60k --configs hmlm_tiny hlm_tiny --output /tmp/m  # seconds

For each ``--tokens`` size a paragraph-per-line split is written into fairseq's mmap format under
``--workdir`` (refused if larger than half its free disk; deleted after), every ``--configs`` config
builds its training split's batches as rank 0 of ``--ranks`` does (a forked child each), and the
per-block slope between sizes is projected to ``--corpus-tokens`` on one node, with the largest shard
that fits ``--node-memory-gb`` (fairseq_headless/benchmarking/host_memory.py, which
holds the code: this file is only its entry point). Writes
``OUTPUT/host_memory.json`` and ``OUTPUT/host_memory.md``; refuses to overwrite them without ``--force``.
"""

import sys

from fairseq_headless.benchmarking.host_memory import main
from fairseq_headless.cli import run

if __name__ == "__main__":
    sys.exit(run(main))
