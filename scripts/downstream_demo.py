#!/usr/bin/env python
"""The demo's downstream check: SOTU era classification on exported models (not a paper task).

    python scripts/downstream_demo.py --model headless=EXPORT_DIR vanilla=EXPORT_DIR \
        --corpus demo_runs/sotu --output demo_runs/run-X/downstream

Builds a 4-era classification task from the demo's public-domain corpus, fine-tunes each
model and a random-init control on it, and writes results_sotu-era.{md,json,png}. The
task and its honest limits: fairseq_headless/evaluation/sotu_era.py and docs/evaluation.md.
From Python: fairseq_headless.evaluation.demo_check.run_demo_check.
"""
import sys

from fairseq_headless.evaluation.demo_check import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
