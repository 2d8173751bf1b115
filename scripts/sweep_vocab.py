#!/usr/bin/env python
"""Vocabulary-size sweep of paper §6 ("Token vocabulary"), Figure 6 and App. D.4 (Tab.10).

    python scripts/sweep_vocab.py --corpus owt2/ --sizes 8000,16000,32000,65000,131000 --output sweeps/vocab

Options: --help; the stages, folders and resuming: docs/sweep_vocab.md. The code lives in
fairseq_headless/experiments/vocab_sweep.py (options), vocab_sweep_stages.py and vocab_sweep_report.py;
this file is only its entry point (bad input: one ``error:`` line, exit 2; a failed training or export: exit 1).
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.experiments.vocab_sweep import FAILURES, main

if __name__ == "__main__":
    sys.exit(run(main, failures=FAILURES))
