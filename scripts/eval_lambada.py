#!/usr/bin/env python
"""Zero-shot LAMBADA accuracy and perplexity of a causal model, as lm-evaluation-harness's ``lambada_openai``.

    python scripts/eval_lambada.py --model checkpoints/hlm_pythia70m_ft/checkpoint_last.pt \\
        --data lambada_test.jsonl --output results/lambada.json

``--model`` is a fairseq checkpoint (tokenized with its data folder's tokenizer; ``--data-bin`` if
that folder has moved) or a Hugging Face model folder; ``--data`` is LAMBADA as jsonl. Writes JSON
with ``accuracy`` and ``perplexity``; bad input ends with one ``error: ...`` line and exit code 2.
The method, step by step as lm-evaluation-harness computes it, is fairseq_headless/lambada.py's
docstring; its ``main`` is the command line, and this file only its entry point.
"""
import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # importing the package imports fairseq; stderr is for errors
from fairseq_headless.cli import run  # noqa: E402
from fairseq_headless.lambada import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
