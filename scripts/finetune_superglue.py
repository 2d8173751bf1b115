#!/usr/bin/env python
"""Fine-tune exported encoders on SuperGLUE BoolQ, CB, COPA, WiC dev (paper Tab.2) with the protocol of paper App. E.

    python scripts/finetune_superglue.py --model hmlm=exports/hmlm mlm=exports/mlm --tasks all \
        --output results/superglue --data-dir superglue_data [--seeds N] [--epochs N] [--loss balanced|ce]

Options: --help; protocol, data layouts and outputs: docs/evaluation.md. The code lives in
fairseq_headless/evaluation/ (cli.py: suite_main); this file is only its entry point.
"""
import sys

from fairseq_headless.evaluation.cli import suite_main

if __name__ == "__main__":
    sys.exit(suite_main(sys.argv[1:], "superglue"))
