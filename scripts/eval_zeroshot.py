#!/usr/bin/env python
"""Zero-shot suite of paper Tab.4 (§4.2) on exported causal models, with lm-evaluation-harness, offline.

    python scripts/eval_zeroshot.py --model vanilla=hf/lm_pythia70m hlm_ft=hf/hlm_pythia70m_ft \\
        --tasks all --task-files zeroshot_data --output results/zeroshot

Each ``NAME=FOLDER`` is a Hugging Face causal LM folder (scripts/convert_to_hf.py) run through
lm-eval's ``hf`` model (as ``lm_eval --model hf --log_samples``) on BoolQ, CrowS-Pairs, RACE,
SciQ, PubMedQA, QASPER and LAMBADA, with lm-eval's own task definitions reading the local
JSON-lines files of ``--task-files`` (one file per task: docs/evaluation.md). Writes
``OUTPUT/NAME.json`` per model: per task the paper's metric, its standard error, all of
lm-eval's metrics and the per-sample scores that scripts/compare_zeroshot.py tests.

Needs the optional extra: ``pip install -e ".[zeroshot]"`` (lm-eval==0.4.13). Bad input ends
with one ``error: ...`` line and exit code 2; an existing result is kept unless --force.
The command line is fairseq_headless/evaluation/zeroshot_cli.py's ``eval_main``; this file is only its entry point.
"""
import sys

from fairseq_headless.cli import run
from fairseq_headless.evaluation.zeroshot_cli import eval_main

if __name__ == "__main__":
    sys.exit(run(eval_main))
