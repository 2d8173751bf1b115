"""Cosine similarity of synonyms' input embeddings, headless against vanilla (paper App. A, Fig.8).

    python -m studies.synonyms --headless checkpoints/hmlm_base/checkpoint_last.pt \\
        --vanilla checkpoints/mlm_base/checkpoint_last.pt --wordnet --output results/synonyms_encoders

Each model is a fairseq checkpoint (tokenized with its data folder's tokenizer) or a Hugging Face folder.
The lexicon: a local WordNet (``--wordnet [DIR]``, needs nltk; nothing is downloaded) or ``--pairs FILE``
(word<TAB>word lines). Writes synonyms.json, synonyms.md, synonyms.png (Fig.8) and pairs.tsv in ``--output``.
See docs/analysis.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from fairseq_headless.cli import InputError, Parser
from studies.training_runs import log_to_stderr

logger = logging.getLogger(__name__)
MODEL_OPTIONS = ("--headless", "--vanilla")
WORDNET_DEFAULT = "/usr/share/wordnet"  # Debian's wordnet-base, as wordnet.DEFAULT_WORDNET_DIR (not imported: nltk)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m studies.synonyms", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
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
        raise InputError("--random-pairs must be 0 or more")
    out = args.output
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} exists and is not a folder")
    if not out.parent.is_dir():
        raise InputError(f"--output {out}: folder {out.parent} does not exist")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise InputError(f"--output {out} is not empty (results of an earlier run?); pass --force to replace them")
    for option in MODEL_OPTIONS:
        path = getattr(args, option[2:])
        if not path.exists():
            raise InputError(f"{option} {path}: no such file or folder")
        if path.is_dir() and not (path / "config.json").is_file():
            raise InputError(f"{option} {path}: a folder without config.json is not a Hugging Face model; "
                             "pass a fairseq checkpoint file or an exported folder")
    if args.pairs is not None and not args.pairs.is_file():
        raise InputError(f"--pairs {args.pairs}: no such file (expected word<TAB>word per line)")


def read_lexicon(args) -> tuple[list, dict]:
    if args.pairs is not None:
        from .synonyms import read_pairs_tsv

        pairs = read_pairs_tsv(args.pairs)
        return pairs, {"kind": "pairs", "source": f"pairs file {args.pairs}", "path": str(args.pairs)}
    from .wordnet import open_wordnet, synonym_pairs, wordnet_version

    reader = open_wordnet(args.wordnet)
    version = wordnet_version(reader)
    logger.info(f"reading the synsets of WordNet {version or '(version unknown)'} in {args.wordnet}")
    from tqdm import tqdm

    with tqdm(desc="synsets", unit="synset", file=sys.stderr, disable=None) as bar:
        pairs = synonym_pairs(reader, bar)
    return pairs, {"kind": "wordnet", "source": f"WordNet {version or '?'} ({args.wordnet})",
                   "path": str(args.wordnet), "wordnet_version": version,
                   "pairs_rule": "every unordered pair of distinct lemma names sharing a synset, all parts of "
                                 "speech; multiword lemmas with spaces for underscores"}


def main(argv: Sequence[str]) -> int:
    started = time.time()
    args = build_parser().parse_args(argv)
    check_options(args)
    log_to_stderr()
    logging.getLogger().setLevel(logging.WARNING)  # fairseq's import sets the root logger to DEBUG

    lexicon, lexicon_info = read_lexicon(args)
    logger.info(f"lexicon: {len(lexicon):,} pairs")
    from .embeddings import load_model
    from .synonyms import MODELS, analyse

    models = {}
    for name, option in zip(MODELS, MODEL_OPTIONS):
        logger.info(f"loading the {name} model {getattr(args, name)}")
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
