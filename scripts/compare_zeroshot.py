#!/usr/bin/env python
"""Compare models' zero-shot results task by task, with the one-tailed t-test of paper Tab.4's daggers.

    python scripts/compare_zeroshot.py --results results/zeroshot/vanilla.json results/zeroshot/hlm_ft.json \\
        --output results/zeroshot/compare [--alpha 0.05] [--test auto|paired|welch]

Reads NAME.json files of scripts/eval_zeroshot.py; per task ranks the models by the paper's
metric (CrowS-Pairs: lower is better), tests the best against the second best with a
one-tailed t-test (``auto``, the default: paired over the same samples when both files hold
per-sample scores, else Welch from mean, standard error and n) and marks † where p < alpha.
Writes OUTPUT/table4.md (Tab.4 layout + the tests), table4.json and table4.png. The
statistics, and why "power 0.95" is read as alpha = 0.05: docs/evaluation.md and
fairseq_headless/evaluation/zeroshot_compare.py. Bad input: one ``error: ...`` line, exit 2.
The command line is fairseq_headless/evaluation/zeroshot_cli.py's ``compare_main``; this file is only its entry point.
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.evaluation.zeroshot_cli import compare_main

if __name__ == "__main__":
    sys.exit(run(compare_main))
