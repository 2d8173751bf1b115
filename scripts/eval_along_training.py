#!/usr/bin/env python
"""Downstream score along pretraining, headless and vanilla on one figure (paper Figs.3-5 and 7).

    python scripts/eval_along_training.py --run hlm=checkpoints/hlm_pythia70m lm=checkpoints/lm_pythia70m \\
        --lambada lambada_test.jsonl --finetune-config hlm_pythia70m_ft --output results/along_pythia

Options: --help. The code lives in fairseq_headless/experiments/along_training.py; this file is
only its entry point (bad input: one ``error:`` line, exit 2; a failed export parity check: exit 1).
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.experiments.along_training import FAILURES, main

if __name__ == "__main__":
    sys.exit(run(main, failures=FAILURES))
