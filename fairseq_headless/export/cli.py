"""The command line of scripts/convert_to_hf.py: its options, one call to :func:`.convert.convert`, exit codes.

Bad input is a :class:`fairseq_headless.cli.InputError` (``error:`` line, exit 2, through
``cli.run``); a failed parity check exits 1."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..cli import Parser


def build_parser() -> Parser:
    parser = Parser(prog="convert_to_hf.py",
                    description="Export a fairseq-headless checkpoint to a Hugging Face folder and check parity.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="fairseq checkpoint (.pt)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write (must not exist, see --force)")
    parser.add_argument("--data", type=Path, help="the data folder it was trained on, when task.data has moved")
    parser.add_argument("--tokenizer", type=Path, nargs="+", default=(), metavar="FILE",
                        help="for a data folder binarized by fairseq-preprocess (no manifest.json): its "
                             "tokenizer, a sentencepiece .model, a tokenizer.json, or GPT-2's encoder.json "
                             "and vocab.bpe (docs/data.md); dict.txt must list the ids in order")
    parser.add_argument("--force", action="store_true", help="replace --output once the new export is complete")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run under ``cli.run``: an InputError becomes exit code 2, a failed parity check exit code 1."""
    from .convert import convert
    args = build_parser().parse_args(argv)
    convert(args.checkpoint, args.output, args.data, args.force, tuple(args.tokenizer))
    return 0
