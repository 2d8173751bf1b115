#!/usr/bin/env python
"""Cosine similarity of synonyms' input embeddings, headless against vanilla (paper App. A, Fig.8).

    python scripts/synonym_analysis.py --headless checkpoints/hmlm_base/checkpoint_last.pt \\
        --vanilla checkpoints/mlm_base/checkpoint_last.pt --wordnet --output results/synonyms_encoders
    python scripts/synonym_analysis.py --headless hf/hlm_pythia70m --vanilla hf/lm_pythia70m \\
        --pairs my_pairs.tsv --output results/synonyms_decoders --title "decoders"

Each model is a fairseq checkpoint or a Hugging Face folder; the lexicon is WordNet (--wordnet) or
a pairs file (--pairs). Writes synonyms.json, synonyms.md, synonyms.png and pairs.tsv in --output;
bad input ends with one ``error: ...`` line and exit code 2. See docs/analysis.md and --help. The
command line is fairseq_headless/analysis/cli.py; this file is only its entry point.
"""
import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # importing the package imports fairseq; stderr is for errors
from fairseq_headless.analysis.cli import main  # noqa: E402
from fairseq_headless.cli import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
