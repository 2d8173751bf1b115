#!/usr/bin/env python
"""Fine-tune exported multilingual encoders on XNLI (paper §5, Tab.5, App. E.4).

    python scripts/finetune_xnli.py --model hmlm=exports/hmlm-multi mlm=exports/mlm-multi \
        --output results/xnli --data-dir xnli_data [--protocols zero-shot,translate-train] \
        [--languages ar,de,en,es,fr,hi,zh] [--seeds N] [--epochs N]

--data-dir holds XNLI-1.0/ and XNLI-MT-1.0/ as unpacked from the two official zips.
Options: --help; protocol and choices (epochs, weight decay): docs/evaluation.md. The code
lives in fairseq_headless/evaluation/ (cli.py: xnli_main).
"""
import sys

from fairseq_headless.evaluation.cli import xnli_main

if __name__ == "__main__":
    sys.exit(xnli_main(sys.argv[1:]))
