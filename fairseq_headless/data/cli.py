"""The command line of scripts/prepare_data.py: its options -> :class:`.prepare.Options` -> :func:`.prepare_data`.

``--help`` lists the options; docs/data.md describes the output."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..cli import InputError, Parser, write_line
from ..progress import INTERVAL_SECONDS
from .interrupt import Interrupted, stopping_on_signals
from .prepare import (
    DEFAULT_ALPHA, DEFAULT_CHARACTER_COVERAGE, DEFAULT_PADDING_FACTOR, DEFAULT_SPM_SAMPLE_BYTES,
    DEFAULT_SPM_SAMPLE_LINES, DEFAULT_VOCAB_SIZE, LICENCE_UNKNOWN, Options, default_workers, prepare_data,
)
from .splits import MAX_DEFAULT_SPLIT_LINES
from .tokenizer import BYTE_FALLBACK_AUTO_MIN_VOCAB


def build_parser() -> Parser:
    p = Parser(prog="prepare_data.py", formatter_class=argparse.RawDescriptionHelpFormatter, description=(
        "Tokenize and binarize a text corpus for fairseq-headless.\n\n"
        "Input: .txt or .jsonl files or folders (optionally .gz/.bz2/.xz/.zst), or hf:NAME[:CONFIG][:SPLIT].\n"
        "Every non-empty line is one sequence; blank lines (and file or record ends) separate documents.\n"
        f"Tokenizer (at most one): --vocab-size N trains sentencepiece (default {DEFAULT_VOCAB_SIZE}), --spm-model\n"
        "or --hf-tokenizer reuses one. fairseq id = tokenizer id + 4; output layout: docs/data.md."), epilog=(
        "examples:\n"
        "  prepare_data.py --input data/sotu --output data-bin/sotu --vocab-size 8000\n"
        "  prepare_data.py --lang-input en=en.txt de=de.txt.xz --alpha 0.3 --output bin\n"
        "  prepare_data.py --input owt2/ --output owt2-bin --hf-tokenizer 20B_tokenizer.json \\\n"
        "      --padding-factor 128 --shards 4 --shard-index $SLURM_ARRAY_TASK_ID"))
    src = p.add_argument_group("input (exactly one of --input / --lang-input)")
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="text/jsonl files (optionally compressed), folders (searched recursively) or hf:NAME")
    src.add_argument("--lang-input", nargs="+", metavar="LANG=PATH",
                     help="multilingual mode: one LANG=PATH per source (repeat a LANG to merge paths)")
    src.add_argument("--alpha", type=float, default=None,
                     help=f"multilingual sampling exponent, q_i ~ p_i^alpha (default {DEFAULT_ALPHA})")
    src.add_argument("--jsonl-field", "--text-field", default="text", metavar="NAME",
                     help="field holding the text in .jsonl records and hf: datasets (default: text)")
    src.add_argument("--licence", "--license", default=None, metavar="TEXT",
                     help=f"licence recorded for every source in the manifest (default: {LICENCE_UNKNOWN})")

    tok = p.add_argument_group("tokenizer (at most one of the three)")
    tok.add_argument("--vocab-size", type=int, default=None, metavar="N",
                     help=f"train a sentencepiece model with this many pieces (default {DEFAULT_VOCAB_SIZE}; the "
                          "manifest records the real size)")
    tok.add_argument("--model-type", choices=("bpe", "unigram"), default=None,
                     help="sentencepiece model type when training (default: bpe)")
    tok.add_argument("--character-coverage", type=float, default=None, metavar="F",
                     help=f"sentencepiece character_coverage when training (default {DEFAULT_CHARACTER_COVERAGE})")
    tok.add_argument("--byte-fallback", choices=("auto", "on", "off"), default="auto",
                     help="sentencepiece byte_fallback when training: characters without a piece become UTF-8 "
                          f"bytes, not <unk> (auto: on when --vocab-size >= {BYTE_FALLBACK_AUTO_MIN_VOCAB})")
    tok.add_argument("--spm-sample-lines", type=int, default=DEFAULT_SPM_SAMPLE_LINES, metavar="N",
                     help=f"train sentencepiece on at most N random lines (default {DEFAULT_SPM_SAMPLE_LINES:,})")
    tok.add_argument("--spm-sample-bytes", type=int, default=DEFAULT_SPM_SAMPLE_BYTES, metavar="B",
                     help=f"and at most B bytes of them, which bounds memory (default {DEFAULT_SPM_SAMPLE_BYTES:,}); "
                          "the same sample for any --workers")
    tok.add_argument("--spm-model", metavar="FILE", help="existing sentencepiece .model")
    tok.add_argument("--hf-tokenizer", metavar="FILE", help="existing Hugging Face tokenizer.json (e.g. Pythia's)")

    out = p.add_argument_group("output")
    out.add_argument("--output", required=True, metavar="DIR", help="output folder")
    out.add_argument("--force", action="store_true", help="replace DIR if it exists (once the new one is complete)")
    out.add_argument("--valid-lines", type=int, default=None, metavar="N",
                     help=f"validation lines, at least (whole documents; per language; default 1%%, at most "
                          f"{MAX_DEFAULT_SPLIT_LINES})")
    out.add_argument("--test-lines", type=int, default=None, metavar="N",
                     help="test lines, at least (same default as --valid-lines)")
    out.add_argument("--padding-factor", type=int, default=DEFAULT_PADDING_FACTOR, metavar="N",
                     help=f"pad the dictionary to a multiple of N (default {DEFAULT_PADDING_FACTOR}; 128 for Pythia)")
    out.add_argument("--workers", type=int, default=None, metavar="N",
                     help=f"worker processes (default: this machine's cores, {default_workers()} here); the output "
                          "does not depend on it")
    out.add_argument("--shards", type=int, default=1, metavar="K",
                     help="write OUT/shard0 .. OUT/shard{K-1}, one per epoch (task.data=OUT/shard0:OUT/shard1:...); "
                          "a rerun resumes (default 1: one folder)")
    out.add_argument("--shard-index", type=int, default=None, metavar="I",
                     help="with --shards: prepare shard I only (a Slurm array task)")
    out.add_argument("--seed", type=int, default=1, help="seed of multilingual resampling and the tokenizer sample")
    return p


def parse_options(argv: Sequence[str]) -> Options:
    """Parse argv; conflicting options here, out-of-range values in :class:`Options` (InputError)."""
    a = build_parser().parse_args(argv)
    if (a.input is None) == (a.lang_input is None):
        raise InputError("give exactly one of --input and --lang-input")
    if a.lang_input is not None:
        inputs = []
        for item in a.lang_input:
            lang, sep, path = item.partition("=")
            if not sep or not lang.strip() or not path:
                raise InputError(f"--lang-input expects LANG=PATH, got {item!r}")
            inputs.append((lang.strip(), path))
    else:
        inputs = [(None, path) for path in a.input]
    chosen = [name for name, value in (("--vocab-size", a.vocab_size), ("--spm-model", a.spm_model),
                                       ("--hf-tokenizer", a.hf_tokenizer)) if value is not None]
    if len(chosen) > 1:
        raise InputError(f"{' and '.join(chosen)} conflict: give at most one tokenizer option")
    mode = "spm" if a.spm_model is not None else "hf" if a.hf_tokenizer is not None else "train"
    for name, given in (("--model-type", a.model_type is not None),
                        ("--character-coverage", a.character_coverage is not None),
                        ("--byte-fallback", a.byte_fallback != "auto")):
        if given and mode != "train":
            raise InputError(f"{name} only applies when training a tokenizer, not with {chosen[0]}")
    return Options(
        inputs=inputs, output=Path(a.output), tokenizer_mode=mode, tokenizer_file=a.spm_model or a.hf_tokenizer,
        vocab_size=a.vocab_size, model_type=a.model_type,
        character_coverage=DEFAULT_CHARACTER_COVERAGE if a.character_coverage is None else a.character_coverage,
        byte_fallback={"auto": None, "on": True, "off": False}[a.byte_fallback],
        spm_sample_lines=a.spm_sample_lines, spm_sample_bytes=a.spm_sample_bytes, alpha=a.alpha,
        valid_lines=a.valid_lines, test_lines=a.test_lines, padding_factor=a.padding_factor, workers=a.workers,
        seed=a.seed, field=a.jsonl_field, licence=a.licence or LICENCE_UNKNOWN, shards=a.shards,
        shard_index=a.shard_index, force=a.force)


def main(argv: Sequence[str], progress_seconds: float = INTERVAL_SECONDS) -> int:
    """scripts/prepare_data.py, under ``cli.run``: an InputError is one ``error:`` line, exit 2; SIGTERM or
    Ctrl-C one ``interrupted`` line, exit 143 or 130, and the same command resumes the work."""
    opts = parse_options(argv)
    try:
        with stopping_on_signals():
            manifest = prepare_data(opts, progress_seconds)["manifest"]
    except Interrupted as stop:
        write_line(f"interrupted ({stop}): run the same command to resume")
        return stop.exit_status
    if manifest is not None:  # else a sharded run with shards left to other runs
        print(summary(manifest, opts), flush=True)
    return 0


def summary(manifest: dict, opts: Options) -> str:
    """The last line: where the data is, and whose token counts are which."""
    s = manifest["splits"]
    head = (f"{manifest['id_mapping']['dictionary_size']} dictionary entries (tokenizer "
            f"{manifest['tokenizer']['vocab_size']})")
    if opts.shards == 1:
        return (f"wrote {opts.output}: {head}, tokens train {s['train']['tokens']}, valid {s['valid']['tokens']}, "
                f"test {s['test']['tokens']}")
    shards = manifest["shards"]
    per_shard = ", ".join(f"{path} {train['tokens']}" for path, train in zip(shards["paths"], shards["train"]))
    return (f"wrote {opts.output}, shard0..shard{opts.shards - 1} (dictionary and manifest in shard0): {head}; "
            f"tokens of all {opts.shards} shards: train {s['train']['tokens']} ({per_shard}), valid "
            f"{s['valid']['tokens']} and test {s['test']['tokens']} (in shard0)")
