"""Cosine similarity of synonyms' input embeddings, headless against vanilla (paper App. A, Fig.8).

    python -m studies.synonyms --headless checkpoints/hmlm_base/checkpoint_last.pt \\
        --vanilla checkpoints/mlm_base/checkpoint_last.pt --wordnet --output results/synonyms_encoders
    python -m studies.synonyms --headless hf/hlm_pythia70m --vanilla hf/lm_pythia70m \\
        --pairs my_pairs.tsv --output results/synonyms_decoders --title "decoders"

Each model is a fairseq checkpoint (``.pt``, tokenized with its data folder's tokenizer,
``manifest.json``; ``--headless-data-bin`` / ``--vanilla-data-bin`` if that folder moved) or a
Hugging Face folder with its tokenizer (scripts/convert_to_hf.py). Run it once per model
pair of Fig.8: encoders, decoders, and the fine-tuned headless decoder against the vanilla one.

The lexicon: ``--wordnet [DIR]`` reads WordNet's synsets from a local database folder with nltk
(default /usr/share/wordnet: ``apt-get install wordnet-base``, WordNet 3.0; nothing is ever
downloaded; nltk: ``pip install 'fairseq-headless[analysis]'``), every pair of lemmas sharing a
synset; ``--pairs FILE`` reads ``word<TAB>word`` lines. A pair counts only when both words are
single tokens in both models (the word as inside running text, after a space: ``Ġword`` /
``▁word``; ``--word-form bare`` for the word alone); the counts say how many did.

Writes, in ``--output DIR``: ``synonyms.json`` (counts; per model mean, std, median; the mean
headless - vanilla difference with a paired t-test and a Wilcoxon test; the same for as many
random word pairs, the control), ``synonyms.md``, ``synonyms.png`` (the overlaid distributions of
Fig.8) and ``pairs.tsv`` (every kept pair with its ids and cosines). Bad input ends with one
``error: ...`` line and exit code 2. See docs/analysis.md.
"""
# This module is the command line (its docstring is --help's text); studies/synonyms/ is its entry
# point. It imports no fairseq, and nothing heavy before the options are checked.
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from fairseq_headless.cli import Parser
from .errors import AnalysisInputError

MODEL_OPTIONS = ("--headless", "--vanilla")
WORDNET_DEFAULT = "/usr/share/wordnet"  # Debian's wordnet-base, as wordnet.DEFAULT_WORDNET_DIR (not imported: nltk)


def log(message: str) -> None:
    print(f"[synonyms] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="synonym_analysis.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--headless", type=Path, required=True,
                        help="the headless model: fairseq checkpoint (.pt) or Hugging Face folder")
    parser.add_argument("--vanilla", type=Path, required=True,
                        help="the vanilla model: fairseq checkpoint (.pt) or Hugging Face folder")
    parser.add_argument("--headless-data-bin", type=Path,
                        help="fairseq only: the headless model's data folder (tokenizer); default: its task.data")
    parser.add_argument("--vanilla-data-bin", type=Path,
                        help="fairseq only: the vanilla model's data folder (tokenizer); default: its task.data")
    lexicon = parser.add_mutually_exclusive_group(required=True)
    lexicon.add_argument("--wordnet", type=Path, nargs="?", const=Path(WORDNET_DEFAULT), metavar="DIR",
                         help=f"synonyms from a local WordNet database folder (default {WORDNET_DEFAULT}, "
                         "Debian's wordnet-base); needs nltk")
    lexicon.add_argument("--pairs", type=Path, metavar="FILE", help="synonym pairs, word<TAB>word per line")
    parser.add_argument("--output", type=Path, required=True, help="folder for the JSON, markdown, PNG and TSV")
    parser.add_argument("--force", action="store_true", help="replace the results of an earlier run in --output")
    parser.add_argument("--word-form", choices=("space", "bare"), default="space",
                        help="tokenize ' word' (inside running text, the default) or 'word' alone")
    parser.add_argument("--random-pairs", type=int, default=None, metavar="N",
                        help="random word pairs for the control (default: as many as kept synonym pairs; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pairs (default 0)")
    parser.add_argument("--title", default="headless vs vanilla", help="title of the plot and the summary")
    return parser


def check_options(args) -> None:
    """Everything that can be checked before fairseq, a model or the lexicon is loaded."""
    if args.random_pairs is not None and args.random_pairs < 0:
        raise AnalysisInputError("--random-pairs must be 0 or more")
    out = args.output
    if out.exists() and not out.is_dir():
        raise AnalysisInputError(f"--output {out} exists and is not a folder")
    if not out.parent.is_dir():
        raise AnalysisInputError(f"--output {out}: folder {out.parent} does not exist")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise AnalysisInputError(f"--output {out} is not empty (results of an earlier run?); pass --force to replace them")
    for option in MODEL_OPTIONS:
        path = getattr(args, option[2:])
        if not path.exists():
            raise AnalysisInputError(f"{option} {path}: no such file or folder")
        if path.is_dir() and not (path / "config.json").is_file():
            raise AnalysisInputError(f"{option} {path}: a folder without config.json is not a Hugging Face model; "
                             "pass a fairseq checkpoint file or an exported folder")
    if args.pairs is not None and not args.pairs.is_file():
        raise AnalysisInputError(f"--pairs {args.pairs}: no such file (expected word<TAB>word per line)")


def read_lexicon(args) -> tuple[list, dict]:
    if args.pairs is not None:
        from .synonyms import read_pairs_tsv

        pairs = read_pairs_tsv(args.pairs)
        return pairs, {"kind": "pairs", "source": f"pairs file {args.pairs}", "path": str(args.pairs)}
    from .wordnet import open_wordnet, synonym_pairs, wordnet_version

    reader = open_wordnet(args.wordnet)
    version = wordnet_version(reader)
    log(f"reading the synsets of WordNet {version or '(version unknown)'} in {args.wordnet}")
    from tqdm import tqdm

    with tqdm(desc="synsets", unit="synset", file=sys.stderr, disable=None) as bar:
        pairs = synonym_pairs(reader, bar)
    return pairs, {"kind": "wordnet", "source": f"WordNet {version or '?'} ({args.wordnet})",
                   "path": str(args.wordnet), "wordnet_version": version,
                   "pairs_rule": "every unordered pair of distinct lemma names sharing a synset, all parts of "
                                 "speech; multiword lemmas with spaces for underscores"}


def main(argv: Sequence[str]) -> int:
    """studies/synonyms/, under ``cli.run``: an AnalysisInputError is one line, exit 2."""
    started = time.time()
    args = build_parser().parse_args(argv)
    check_options(args)
    # fairseq's import (through fairseq_headless) logs INFO lines and calls logging.basicConfig at DEBUG level
    # (fairseq/models/wav2vec/wav2vec2_classification.py): stderr is for progress and the one error line.
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)

    lexicon, lexicon_info = read_lexicon(args)
    log(f"lexicon: {len(lexicon):,} pairs")
    from .embeddings import load_model
    from .synonyms import MODELS, analyse

    models = {}
    for name, option in zip(MODELS, MODEL_OPTIONS):
        log(f"loading the {name} model {getattr(args, name)}")
        models[name] = load_model(getattr(args, name), getattr(args, f"{name}_data_bin"), option)
    analysis = analyse(lexicon, models, args.word_form, args.random_pairs, args.seed)
    from .report import points, write_report

    result = dict(analysis.result)
    single_token_words = result.pop("single_token_words")
    analysis.result = {
        "analysis": "cosine similarity of the input embeddings of synonym pairs, headless vs vanilla",
        "paper": "Godey et al., Headless Language Models (ICLR 2024), App. A, Fig. 8",
        "title": args.title,
        "lexicon": lexicon_info,
        "models": {name: {**models[name].info(), "single_token_words": single_token_words[name]}
                   for name in MODELS},
        **result,
        "seconds": round(time.time() - started, 1),
    }
    paths = write_report(args.output, analysis, args.title)
    syn = analysis.result["synonyms"]
    print(f"{analysis.result['pairs_kept']:,} of {len(lexicon):,} pairs kept; mean synonym cosine x 100: headless "
          f"{points(syn['headless']['mean'])}, vanilla {points(syn['vanilla']['mean'])}, difference "
          f"{points(syn['headless_minus_vanilla']['mean_difference'])} -> {paths['markdown']}")
    return 0
