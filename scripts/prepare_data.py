#!/usr/bin/env python
"""Turn raw text into a binarized fairseq dataset for headless pretraining (the command line).

The work is done by fairseq_headless.data (prepare.py and its modules): streaming, parallel over
--workers processes, optionally sharded (--shards K, --shard-index I). The options are
fairseq_headless/data/cli.py's (studies/vocab_sweep.py reuses them); this file is only its entry
point. docs/data.md describes the output and the manifest, and the package's docstrings the method.

Run `python scripts/prepare_data.py --help` for the options; bad input ends with one
`error: ...` line on stderr, exit code 2 and no output left behind.
"""
import logging
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)  # importing the package imports fairseq; stderr is for errors
from fairseq_headless.cli import run  # noqa: E402
from fairseq_headless.data.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
