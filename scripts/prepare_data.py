#!/usr/bin/env python
"""Turn raw text into a binarized fairseq dataset for headless pretraining.

This is the data stage of fairseq-headless, the project that reproduces
"Headless Language Models" (Godey et al.). The paper pretrains on tokenized
text with a fixed tokenizer (the Pythia tokenizer for its English encoder and
decoder, Sec. 4.1-4.2; a multilingual vocabulary sampled over 10 Wikipedia
languages, Sec. 5; BPE tokenizers of several vocabulary sizes, Sec. 6). This
script produces exactly what fairseq's `masked_lm` / `language_modeling` tasks
and the plugin's headless criteria read:

    DIR/dict.txt                  fairseq dictionary (tokenizer ids, see below)
    DIR/{train,valid,test}.{bin,idx}   mmap datasets from fairseq-preprocess
    DIR/tokenizer/                spm.model (+ spm.vocab) or tokenizer.json
    DIR/manifest.json             what was done, with counts (docs/data.md)
    DIR/preprocess.log            fairseq-preprocess's own log

Id mapping. The token stream is written as the tokenizer's integer ids and
dict.txt lists the ids 0..V-1 in the tokenizer's order, so fairseq id ==
tokenizer id + 4 (fairseq puts <s>, <pad>, </s>, <unk> first). The headless
(CWT) loss uses the input embedding matrix as its targets, so keeping a fixed,
documented row for every tokenizer token matters more than fairseq's usual
frequency ordering. dict.txt is padded with `madeupwordNNNN` entries to a
multiple of --padding-factor (50,277 Pythia tokens + 4 -> 50,304 rows with
factor 128, like Pythia's embedding matrix).

Splits. valid and test are the LAST lines of the corpus (test = the very last
lines, valid = the lines just before them), per language in multilingual mode;
no randomness is involved, so a split never depends on --seed.

Multilingual mode (--lang-input) follows XLM's sampling: language i with n_i
training lines gets probability q_i proportional to (n_i / sum n)^alpha, and its
training lines are resampled so the training set follows q while keeping
sum n_i lines in total.

Run `python scripts/prepare_data.py --help` for the options; bad input ends
with one `error: ...` line on stderr, exit code 2 and no output left behind.
"""
from __future__ import annotations

import argparse
import bz2
import dataclasses
import gzip
import importlib
import json
import lzma
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

FORMAT_VERSION = 1
FAIRSEQ_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
ID_OFFSET = len(FAIRSEQ_SPECIALS)
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_PADDING_FACTOR = 8
DEFAULT_ALPHA = 0.3
MAX_DEFAULT_SPLIT_LINES = 10_000
DEFAULT_SPM_SAMPLE_LINES = 300_000
DEFAULT_CHARACTER_COVERAGE = 0.9995
# byte_fallback needs 256 byte pieces on top of the characters, so "auto"
# turns it on only for vocabularies at least this large.
BYTE_FALLBACK_AUTO_MIN_VOCAB = 1000
# sentencepiece silently skips training sentences longer than
# max_sentence_length (4192 bytes by default); long lines (a whole speech on
# one line, say) are cut at whitespace into pieces below this for training.
SPM_TRAIN_CHUNK_BYTES = 4000
ENCODE_BATCH_LINES = 10_000
COMPRESSORS: dict[str, Callable] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
TEXT_KINDS = (".txt", ".jsonl")
LICENCE_UNKNOWN = "unknown"

Document = list  # a document is a list of non-empty, stripped text lines


class DataError(Exception):
    """Bad input or options; main() prints `error: <message>` and returns 2."""


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as DataError (one line, exit code 2)."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise DataError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="prepare_data.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Tokenize and binarize a text corpus for fairseq-headless.\n\n"
            "Input: text files or folders (.txt, .jsonl with a text field, optionally\n"
            ".gz/.bz2/.xz), or hf:NAME[:CONFIG][:SPLIT] (needs the `datasets` library\n"
            "and network). Every non-empty line is one sequence; blank lines (and file\n"
            "or jsonl-record ends) separate documents.\n\n"
            "Tokenizer (at most one): --vocab-size N trains sentencepiece (default when\n"
            f"none is given: --vocab-size {DEFAULT_VOCAB_SIZE}), --spm-model FILE reuses a "
            "sentencepiece\nmodel, --hf-tokenizer FILE reuses a Hugging Face tokenizer.json.\n"
            "fairseq id = tokenizer id + 4; dict.txt is padded to --padding-factor."
        ),
        epilog=(
            "valid/test are the last lines of the corpus (per language with --lang-input).\n"
            "Output layout and manifest.json fields: docs/data.md.\n\n"
            "examples:\n"
            "  prepare_data.py --input data/sotu --output data-bin/sotu --vocab-size 8000\n"
            "  prepare_data.py --input corpus.jsonl.gz --output bin --hf-tokenizer "
            "20B_tokenizer.json --padding-factor 128\n"
            "  prepare_data.py --lang-input en=en.txt de=de.txt.xz --alpha 0.3 --output bin"
        ),
    )
    src = p.add_argument_group("input (exactly one of --input / --lang-input)")
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="text/jsonl files (optionally .gz/.bz2/.xz), folders (searched "
                          "recursively) or hf:NAME[:CONFIG][:SPLIT]")
    src.add_argument("--lang-input", nargs="+", metavar="LANG=PATH",
                     help="multilingual mode: one LANG=PATH per source (repeat a LANG to "
                          "merge several paths)")
    src.add_argument("--alpha", type=float, default=None,
                     help=f"multilingual sampling exponent, q_i ~ p_i^alpha (default "
                          f"{DEFAULT_ALPHA}; 1 keeps the natural shares, 0 is uniform)")
    src.add_argument("--jsonl-field", "--text-field", default="text", metavar="NAME",
                     help="field holding the text in .jsonl records and hf: datasets "
                          "(default: text)")
    src.add_argument("--licence", "--license", default=None, metavar="TEXT",
                     help=f"licence recorded for every source in the manifest (default: "
                          f"{LICENCE_UNKNOWN})")

    tok = p.add_argument_group("tokenizer (at most one of the three)")
    tok.add_argument("--vocab-size", type=int, default=None, metavar="N",
                     help="train a sentencepiece model with this many pieces on the "
                          f"training split (default {DEFAULT_VOCAB_SIZE}; a small corpus may "
                          "yield fewer, the manifest records the real size)")
    tok.add_argument("--model-type", choices=("bpe", "unigram"), default=None,
                     help="sentencepiece model type when training (default: bpe)")
    tok.add_argument("--character-coverage", type=float, default=None,
                     metavar="F", help="sentencepiece character_coverage when training (default "
                                       f"{DEFAULT_CHARACTER_COVERAGE}: the rarest characters, "
                                       "0.05%% of the text, get no piece of their own)")
    tok.add_argument("--byte-fallback", choices=("auto", "on", "off"), default="auto",
                     help="sentencepiece byte_fallback when training: characters without a "
                          "piece become UTF-8 byte pieces instead of <unk>, so text round-trips "
                          "exactly; costs 256 pieces (auto, the default: on when --vocab-size "
                          f">= {BYTE_FALLBACK_AUTO_MIN_VOCAB})")
    tok.add_argument("--spm-sample-lines", type=int, default=DEFAULT_SPM_SAMPLE_LINES,
                     metavar="N", help="train sentencepiece on at most N randomly chosen "
                                       f"training lines (default {DEFAULT_SPM_SAMPLE_LINES})")
    tok.add_argument("--spm-model", metavar="FILE", help="existing sentencepiece .model")
    tok.add_argument("--hf-tokenizer", metavar="FILE",
                     help="existing Hugging Face tokenizer.json (e.g. Pythia's "
                          "20B_tokenizer.json)")

    out = p.add_argument_group("output")
    out.add_argument("--output", required=True, metavar="DIR", help="output folder")
    out.add_argument("--force", action="store_true",
                     help="replace DIR if it exists (only once the new one is complete)")
    out.add_argument("--valid-lines", type=int, default=None, metavar="N",
                     help=f"validation lines (per language with --lang-input; default 1%%, "
                          f"at least 1, at most {MAX_DEFAULT_SPLIT_LINES})")
    out.add_argument("--test-lines", type=int, default=None, metavar="N",
                     help="test lines (same default as --valid-lines)")
    out.add_argument("--padding-factor", type=int, default=DEFAULT_PADDING_FACTOR, metavar="N",
                     help="pad the dictionary (4 specials + tokens) to a multiple of N "
                          f"(default {DEFAULT_PADDING_FACTOR}; 128 matches Pythia's 50,304 rows)")
    out.add_argument("--workers", type=int, default=1, metavar="N",
                     help="threads/processes for tokenization and fairseq-preprocess "
                          "(default 1)")
    out.add_argument("--seed", type=int, default=1,
                     help="seed for multilingual resampling and the sentencepiece training "
                          "sample (default 1)")
    return p


@dataclasses.dataclass
class Options:
    """Validated command line."""

    inputs: list[tuple[str | None, str]]  # (language or None, path or hf: spec)
    multilingual: bool
    alpha: float | None
    output: Path
    force: bool
    tokenizer_mode: str  # "train" | "spm" | "hf"
    vocab_size: int | None
    model_type: str | None
    tokenizer_file: Path | None
    character_coverage: float
    byte_fallback: bool
    spm_sample_lines: int
    valid_lines: int | None
    test_lines: int | None
    padding_factor: int
    workers: int
    seed: int
    field: str
    licence: str


def parse_options(argv: Sequence[str]) -> Options:
    """Parse argv and reject conflicting or out-of-range options (DataError)."""
    a = build_parser().parse_args(argv)

    if (a.input is None) == (a.lang_input is None):
        raise DataError("give exactly one of --input and --lang-input")
    if a.input is not None and a.alpha is not None:
        raise DataError("--alpha only applies to multilingual --lang-input")
    inputs: list[tuple[str | None, str]] = []
    if a.lang_input is not None:
        for item in a.lang_input:
            lang, sep, path = item.partition("=")
            if not sep or not lang.strip() or not path:
                raise DataError(f"--lang-input expects LANG=PATH, got {item!r}")
            inputs.append((lang.strip(), path))
    else:
        inputs = [(None, path) for path in a.input]
    alpha = None
    if a.lang_input is not None:
        alpha = DEFAULT_ALPHA if a.alpha is None else a.alpha
        if not 0.0 <= alpha <= 1.0:
            raise DataError(f"--alpha must be between 0 and 1, got {alpha}")

    chosen = [name for name, value in (("--vocab-size", a.vocab_size),
                                       ("--spm-model", a.spm_model),
                                       ("--hf-tokenizer", a.hf_tokenizer)) if value is not None]
    if len(chosen) > 1:
        raise DataError(f"{' and '.join(chosen)} conflict: give at most one tokenizer option")
    if a.spm_model is not None:
        mode, tok_file = "spm", Path(a.spm_model)
    elif a.hf_tokenizer is not None:
        mode, tok_file = "hf", Path(a.hf_tokenizer)
    else:
        mode, tok_file = "train", None
    for name, given in (("--model-type", a.model_type is not None),
                        ("--character-coverage", a.character_coverage is not None),
                        ("--byte-fallback", a.byte_fallback != "auto")):
        if given and mode != "train":
            raise DataError(f"{name} only applies when training a tokenizer, not with {chosen[0]}")
    coverage = DEFAULT_CHARACTER_COVERAGE if a.character_coverage is None else a.character_coverage
    if not 0.0 < coverage <= 1.0:
        raise DataError(f"--character-coverage must be in (0, 1], got {coverage}")
    vocab_size = None
    if mode == "train":
        vocab_size = DEFAULT_VOCAB_SIZE if a.vocab_size is None else a.vocab_size
        if vocab_size < 2:
            raise DataError(f"--vocab-size must be at least 2, got {vocab_size}")

    for name, value, low in (("--valid-lines", a.valid_lines, 1), ("--test-lines", a.test_lines, 1),
                             ("--padding-factor", a.padding_factor, 1), ("--workers", a.workers, 1),
                             ("--spm-sample-lines", a.spm_sample_lines, 1)):
        if value is not None and value < low:
            raise DataError(f"{name} must be at least {low}, got {value}")
    if not a.jsonl_field:
        raise DataError("--jsonl-field must not be empty")

    return Options(
        inputs=inputs, multilingual=a.lang_input is not None, alpha=alpha,
        output=Path(os.path.abspath(a.output)), force=a.force, tokenizer_mode=mode,
        vocab_size=vocab_size, model_type=(a.model_type or "bpe") if mode == "train" else None,
        tokenizer_file=tok_file, spm_sample_lines=a.spm_sample_lines,
        character_coverage=coverage,
        byte_fallback=a.byte_fallback == "on" or (
            a.byte_fallback == "auto" and mode == "train"
            and vocab_size >= BYTE_FALLBACK_AUTO_MIN_VOCAB),
        valid_lines=a.valid_lines, test_lines=a.test_lines, padding_factor=a.padding_factor,
        workers=a.workers, seed=a.seed, field=a.jsonl_field,
        licence=a.licence if a.licence else LICENCE_UNKNOWN,
    )


# --------------------------------------------------------------------------
# progress and messages
# --------------------------------------------------------------------------


def progress(iterable=None, **kwargs):
    """tqdm bar on stderr; disable=None hides it when stderr is not a terminal,
    which keeps logs and the one-line error contract clean."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=None, dynamic_ncols=True, **kwargs)


def info(message: str) -> None:
    # Informational output goes to stdout so that stderr carries only progress
    # bars, warnings and the single error line.
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# reading sources
# --------------------------------------------------------------------------


@dataclasses.dataclass
class SourceSpec:
    """One thing to read: a file on disk or a Hugging Face dataset."""

    path: str  # as shown in messages and the manifest
    language: str | None
    hf: tuple[str, str | None, str] | None = None  # (name, config, split)

    @property
    def is_jsonl(self) -> bool:
        return _strip_compression(self.path).endswith(".jsonl")

    @property
    def compression(self) -> str | None:
        suffix = Path(self.path).suffix
        return suffix if suffix in COMPRESSORS else None


@dataclasses.dataclass
class Source:
    """A source after reading: its documents and the manifest facts about it."""

    spec: SourceSpec
    documents: list[Document]
    lines: int
    bytes: int


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSORS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_corpus_file(path: Path) -> bool:
    return _strip_compression(path.name).endswith(TEXT_KINDS)


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (name, config, split); split defaults to train."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise DataError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT]")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


def resolve_inputs(inputs: Iterable[tuple[str | None, str]], exclude: Sequence[Path] = ()
                   ) -> list[SourceSpec]:
    """Expand folders (recursively, sorted) and check every path exists.

    Files under `exclude` (the output folder and its temporary siblings) are
    skipped so that re-running into a folder inside an input folder does not
    read our own dict.txt back as text.
    """
    option = "--lang-input" if any(lang is not None for lang, _ in inputs) else "--input"
    specs: list[SourceSpec] = []
    for lang, raw in inputs:
        if raw.startswith("hf:"):
            specs.append(SourceSpec(path=raw, language=lang, hf=parse_hf_spec(raw)))
            continue
        path = Path(raw)
        if not path.exists():
            raise DataError(f"input path not found: {raw} ({option}); check the path")
        if path.is_dir():
            found = [f for f in sorted(path.rglob("*"))
                     if f.is_file() and _is_corpus_file(f)
                     and not any(_is_within(f, ex) for ex in exclude)]
            if not found:
                raise DataError(f"no .txt or .jsonl files (optionally .gz/.bz2/.xz) under folder "
                                f"{raw} ({option})")
            specs.extend(SourceSpec(path=str(f), language=lang) for f in found)
        else:
            specs.append(SourceSpec(path=str(path), language=lang))
    return specs


def _is_within(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(folder)
        return True
    except ValueError:
        return False


def _read_text_lines(spec: SourceSpec, bar) -> Iterator[str]:
    """Yield the decoded lines of a (possibly compressed) file, without newline.

    Bytes are decoded strictly so that a wrong encoding is reported with its
    byte offset instead of silently becoming U+FFFD replacement characters.
    """
    comp = spec.compression
    where = " (after decompression)" if comp else ""
    offset = 0
    try:
        with open(spec.path, "rb") as raw:
            stream = COMPRESSORS[comp](raw, "rb") if comp else raw
            seen = 0
            for lineno, data in enumerate(stream, start=1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{spec.path}: invalid UTF-8 at byte offset {offset + e.start}{where} "
                        f"(line {lineno}); re-encode the file to UTF-8, e.g. "
                        f"`iconv -f latin1 -t utf-8`") from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # byte order mark
                offset += len(data)
                if lineno % 1024 == 0:
                    pos = raw.tell()
                    bar.update(pos - seen)
                    seen = pos
                yield line
            bar.update(raw.tell() - seen)
    except DataError:
        raise
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as e:
        if comp:
            raise DataError(f"{spec.path}: cannot decompress this {comp} file ({e}); check that "
                            f"it is a complete, valid {comp} archive") from None
        raise DataError(f"{spec.path}: cannot read it ({e})") from None


def _documents_from_text(lines: Iterable[str]) -> Iterator[Document]:
    """Blank lines separate documents; runs of blank lines count once."""
    doc: Document = []
    for line in lines:
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _record_document(text, where: str, field: str) -> Document:
    """One jsonl/dataset record is one document. Blank lines inside a record
    are paragraph breaks, not document boundaries, and are dropped."""
    if not isinstance(text, str):
        raise DataError(f"{where}: field {field!r} is {type(text).__name__}, not a string "
                        f"(choose the text field with --jsonl-field)")
    return [s for s in (part.strip() for part in text.split("\n")) if s]


def _documents_from_jsonl(lines: Iterable[str], spec: SourceSpec, field: str
                          ) -> Iterator[Document]:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{spec.path} line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg}); each line must be one JSON "
                            f"object") from None
        if not isinstance(record, dict) or field not in record:
            raise DataError(f"{where}: no {field!r} field (choose it with --jsonl-field)")
        doc = _record_document(record[field], where, field)
        if doc:
            yield doc


def _documents_from_hf(spec: SourceSpec, field: str) -> Iterator[Document]:
    name, config, split = spec.hf
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise DataError(f"--input {spec.path} needs the `datasets` library, which is not "
                        f"installed: `pip install datasets`, or export the data to .txt/.jsonl "
                        f"files and pass those") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline hub, unknown name, bad config...: all the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"--input {spec.path}: could not load the dataset from the Hugging Face "
                        f"hub ({first}); check the name and network, or pass local files") from None
    if field not in ds.column_names:
        raise DataError(f"--input {spec.path}: no {field!r} column (columns: "
                        f"{', '.join(ds.column_names)}); choose one with --jsonl-field")
    for i, record in enumerate(ds):
        doc = _record_document(record[field], f"{spec.path} record {i}", field)
        if doc:
            yield doc


def read_sources(specs: Sequence[SourceSpec], field: str) -> list[Source]:
    """Read every source into documents (lists of non-empty stripped lines)."""
    total = sum(os.path.getsize(s.path) for s in specs if s.hf is None)
    sources = []
    with progress(total=total, unit="B", unit_scale=True, desc="reading") as bar:
        for spec in specs:
            if spec.hf is not None:
                docs = list(_documents_from_hf(spec, field))
                size = sum(len(line.encode("utf-8")) + 1 for d in docs for line in d)
            else:
                lines = _read_text_lines(spec, bar)
                docs = list(_documents_from_jsonl(lines, spec, field) if spec.is_jsonl
                            else _documents_from_text(lines))
                size = os.path.getsize(spec.path)
            sources.append(Source(spec=spec, documents=docs,
                                  lines=sum(len(d) for d in docs), bytes=size))
    return sources


# --------------------------------------------------------------------------
# splitting and multilingual sampling
# --------------------------------------------------------------------------


def default_split_lines(n_lines: int) -> int:
    """1% of the lines, at least 1 and at most 10k."""
    return max(1, min(MAX_DEFAULT_SPLIT_LINES, n_lines // 100))


def take_tail(docs: Sequence[Document], n: int) -> tuple[list[Document], list[Document]]:
    """Split off the last n lines; a document cut in two stays a document on
    each side, so boundaries inside both parts are kept."""
    head = [list(d) for d in docs]
    tail: list[Document] = []
    while n > 0 and head:
        last = head[-1]
        if len(last) <= n:
            tail.insert(0, head.pop())
            n -= len(last)
        else:
            tail.insert(0, last[len(last) - n:])
            del last[len(last) - n:]
            n = 0
    return head, tail


def split_tail(docs: Sequence[Document], valid: int | None, test: int | None, what: str
               ) -> tuple[list[Document], list[Document], list[Document]]:
    """train | valid | test, with valid and test taken from the end."""
    n = sum(len(d) for d in docs)
    n_valid = default_split_lines(n) if valid is None else valid
    n_test = default_split_lines(n) if test is None else test
    if n_valid + n_test >= n:
        raise DataError(
            f"{what} has only {n} non-empty lines, not enough for {n_valid} valid + {n_test} "
            f"test lines and a training set; lower --valid-lines/--test-lines or add text")
    rest, test_docs = take_tail(docs, n_test)
    train_docs, valid_docs = take_tail(rest, n_valid)
    return train_docs, valid_docs, test_docs


def sampling_probabilities(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """XLM sampling: q_i = p_i^alpha / sum_j p_j^alpha with p_i = n_i / sum n."""
    total = sum(counts.values())
    weights = {lang: (n / total) ** alpha for lang, n in counts.items()}
    z = sum(weights.values())
    return {lang: w / z for lang, w in weights.items()}


def sampled_line_counts(counts: dict[str, int], alpha: float) -> dict[str, int]:
    """Round q_i * N to integers summing to N (largest remainder; ties go to
    the language listed first)."""
    total = sum(counts.values())
    q = sampling_probabilities(counts, alpha)
    exact = {lang: q[lang] * total for lang in counts}
    result = {lang: math.floor(x) for lang, x in exact.items()}
    missing = total - sum(result.values())
    order = sorted(counts, key=lambda lang: -(exact[lang] - result[lang]))
    for lang in order[:missing]:
        result[lang] += 1
    return result


def resample_lines(docs: Sequence[Document], target: int, rng: random.Random) -> list[Document]:
    """Draw `target` lines from docs, deterministic given rng.

    Upsampling repeats the whole set floor(target/n) times and adds a random
    subset for the remainder (each line drawn at most once more than any other,
    lower variance than i.i.d. draws with replacement); downsampling keeps a
    random subset. Kept lines stay in corpus order and stay in one document
    only while they were adjacent lines of one document, so fairseq's
    complete_doc blocks never join text that was not contiguous.
    """
    flat = [(d, line) for d, doc in enumerate(docs) for line in doc]
    n = len(flat)
    full, rest = divmod(target, n)
    picks = list(range(n)) * full + sorted(rng.sample(range(n), rest))
    out: list[Document] = []
    prev = None
    for i in picks:
        if prev is None or i != prev + 1 or flat[i][0] != flat[prev][0]:
            out.append([])
        out[-1].append(flat[i][1])
        prev = i
    return out


@dataclasses.dataclass
class Splits:
    train: list[Document]
    valid: list[Document]
    test: list[Document]
    multilingual: dict | None  # manifest section, when --lang-input


def make_splits(sources: Sequence[Source], opts: Options) -> Splits:
    if not opts.multilingual:
        docs = [d for s in sources for d in s.documents]
        if not docs:
            shown = ", ".join(path for _, path in opts.inputs)
            raise DataError(f"input is empty: no non-empty lines in {shown} (--input)")
        train, valid, test = split_tail(docs, opts.valid_lines, opts.test_lines, "the input")
        return Splits(train, valid, test, None)

    by_lang: dict[str, list[Document]] = {}
    for lang, _ in opts.inputs:
        by_lang.setdefault(lang, [])
    for s in sources:
        by_lang[s.spec.language].extend(s.documents)
    per_lang = {}
    for lang, docs in by_lang.items():
        if not docs:
            paths = ", ".join(p for l, p in opts.inputs if l == lang)
            raise DataError(f"input is empty: no non-empty lines for language {lang} in {paths} "
                            f"(--lang-input)")
        per_lang[lang] = split_tail(docs, opts.valid_lines, opts.test_lines, f"language {lang}")

    counts = {lang: sum(len(d) for d in parts[0]) for lang, parts in per_lang.items()}
    q = sampling_probabilities(counts, opts.alpha)
    targets = sampled_line_counts(counts, opts.alpha)
    total = sum(counts.values())
    train: list[Document] = []
    valid: list[Document] = []
    test: list[Document] = []
    section = {"alpha": opts.alpha, "languages": {}}
    for lang in progress(list(per_lang), desc="sampling", unit="lang"):
        lang_train, lang_valid, lang_test = per_lang[lang]
        # A string seed is hashed deterministically (not by PYTHONHASHSEED), and
        # one stream per language keeps each language's draw independent of the others.
        rng = random.Random(f"{opts.seed}:{lang}")
        train.extend(resample_lines(lang_train, targets[lang], rng))
        valid.extend(lang_valid)
        test.extend(lang_test)
        section["languages"][lang] = {
            "original_train_lines": counts[lang],
            "sampled_train_lines": targets[lang],
            "original_share": counts[lang] / total,
            "sampling_probability": q[lang],
            "valid_lines": sum(len(d) for d in lang_valid),
            "test_lines": sum(len(d) for d in lang_test),
        }
    return Splits(train, valid, test, section)


# --------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------


class Tokenizer:
    """The tokenizer interface the pipeline needs: batched encode to ids."""

    kind: str  # manifest tokenizer.type
    filename: str  # file name inside DIR/tokenizer/
    vocab_size: int
    model_type: str | None
    trained: bool = False

    def encode_batch(self, lines: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        raise NotImplementedError


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"
    filename = "spm.model"

    def __init__(self, model_file: Path, option: str, workers: int = 1, trained: bool = False):
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (RuntimeError, OSError) as e:
            raise DataError(f"{option} {model_file}: sentencepiece cannot load this model "
                            f"({e}); pass a sentencepiece .model file") from None
        self.model_file = Path(model_file)
        self.vocab_size = self.sp.get_piece_size()
        self.model_type = spm_model_type(self.model_file.read_bytes())
        self.workers = workers
        self.trained = trained

    def encode_batch(self, lines):
        return self.sp.encode(lines, out_type=int, num_threads=self.workers)

    def save(self, folder):
        shutil.copyfile(self.model_file, folder / self.filename)
        vocab = self.model_file.with_suffix(".vocab")
        if self.trained and vocab.exists():  # human-readable piece list, written by training
            shutil.copyfile(vocab, folder / "spm.vocab")


class HFTokenizer(Tokenizer):
    kind = "hf"
    filename = "tokenizer.json"

    def __init__(self, path: Path):
        try:
            from tokenizers import Tokenizer as _HFTok
        except ImportError:
            raise DataError("--hf-tokenizer needs the `tokenizers` library, which is not "
                            "installed") from None
        if not path.is_file():
            raise DataError(f"--hf-tokenizer {path}: file not found")
        try:
            self.tok = _HFTok.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON/schema
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"--hf-tokenizer {path}: not a valid tokenizer.json ({first})") from None
        self.path = path
        vocab = self.tok.get_vocab(with_added_tokens=True)
        if not vocab:
            raise DataError(f"--hf-tokenizer {path}: the tokenizer has an empty vocabulary")
        # Ids may have holes (added tokens placed far out); every id below the
        # largest gets a dictionary row so the +4 mapping holds for all of them.
        self.vocab_size = max(vocab.values()) + 1
        try:
            self.model_type = json.loads(path.read_text(encoding="utf-8"))["model"]["type"]
        except (ValueError, KeyError, TypeError):
            self.model_type = None

    def encode_batch(self, lines):
        # No special tokens: fairseq adds its own </s> per line.
        return [e.ids for e in self.tok.encode_batch(lines, add_special_tokens=False)]

    def save(self, folder):
        shutil.copyfile(self.path, folder / self.filename)


def _iter_proto_fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """Minimal protobuf wire-format reader (protobuf itself is not a
    dependency): yields (field number, wire type, value)."""

    def varint(pos):
        result = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7

    pos = 0
    while pos < len(buf):
        key, pos = varint(pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = varint(pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def spm_model_type(model_bytes: bytes) -> str | None:
    """ModelProto.trainer_spec (field 2) .model_type (field 3); None if unreadable."""
    names = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
    try:
        for field, wire, value in _iter_proto_fields(model_bytes):
            if field == 2 and wire == 2:
                for f2, w2, v2 in _iter_proto_fields(value):
                    if f2 == 3 and w2 == 0:
                        return names.get(v2)
                return "unigram"  # proto default when the field is absent
    except (ValueError, IndexError):
        pass
    return None


def _training_chunks(line: str) -> Iterator[str]:
    """Cut a long line at whitespace into pieces sentencepiece will not skip."""
    if len(line.encode("utf-8")) <= SPM_TRAIN_CHUNK_BYTES:
        yield line
        return
    piece: list[str] = []
    size = 0
    for word in line.split():
        n = len(word.encode("utf-8")) + 1
        if piece and size + n > SPM_TRAIN_CHUNK_BYTES:
            yield " ".join(piece)
            piece, size = [], 0
        piece.append(word)
        size += n
    if piece:
        yield " ".join(piece)


def train_sentencepiece(docs: Sequence[Document], opts: Options, workdir: Path
                        ) -> SentencePieceTokenizer:
    """Train on (a seeded sample of) the training split only, so valid/test
    text never shapes the vocabulary."""
    import sentencepiece as spm

    chunks = [c for d in docs for line in d for c in _training_chunks(line)]
    if len(chunks) > opts.spm_sample_lines:
        keep = sorted(random.Random(opts.seed).sample(range(len(chunks)), opts.spm_sample_lines))
        chunks = [chunks[i] for i in keep]
    info(f"training a sentencepiece {opts.model_type} model, vocab size {opts.vocab_size}, "
         f"byte fallback {'on' if opts.byte_fallback else 'off'}, on {len(chunks)} lines")
    prefix = workdir / "spm"
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(chunks), model_prefix=str(prefix),
            vocab_size=opts.vocab_size, model_type=opts.model_type,
            character_coverage=opts.character_coverage,
            # Without byte fallback, characters outside the coverage become
            # <unk> (on the SOTU corpus at 0.9995: "?", "(", "V", "K", ...).
            byte_fallback=opts.byte_fallback,
            # A small corpus may not support the requested size; take what
            # it supports instead of failing (the manifest has the real size).
            hard_vocab_limit=False,
            num_threads=opts.workers,
            # Silence the trainer's C++ log (thousands of lines on stderr);
            # failures still arrive as exceptions.
            minloglevel=2)
    except RuntimeError as e:
        hint = ("raise --vocab-size or use --byte-fallback off" if opts.byte_fallback
                else "try another --vocab-size or --character-coverage")
        raise DataError(f"--vocab-size {opts.vocab_size}: sentencepiece training failed "
                        f"({str(e).splitlines()[0]}); {hint}") from None
    return SentencePieceTokenizer(prefix.with_suffix(".model"), "--vocab-size",
                                  workers=opts.workers, trained=True)


def load_tokenizer(opts: Options) -> Tokenizer | None:
    """The given tokenizer, loaded before any text is read so a bad file fails fast."""
    if opts.tokenizer_mode == "spm":
        if not opts.tokenizer_file.is_file():
            raise DataError(f"--spm-model {opts.tokenizer_file}: file not found")
        return SentencePieceTokenizer(opts.tokenizer_file, "--spm-model", workers=opts.workers)
    if opts.tokenizer_mode == "hf":
        return HFTokenizer(opts.tokenizer_file)
    return None


# --------------------------------------------------------------------------
# encoding, dictionary, binarization
# --------------------------------------------------------------------------


@dataclasses.dataclass
class SplitStats:
    lines: int = 0
    documents: int = 0
    tokens: int = 0
    dropped_lines: int = 0  # non-empty text that the tokenizer turned into no ids


def _tokenizer_option(tok: Tokenizer) -> str:
    if tok.trained:
        return "--vocab-size"
    return "--hf-tokenizer" if tok.kind == "hf" else "--spm-model"


def encode_split(docs: Sequence[Document], tok: Tokenizer, out_path: Path, name: str,
                 counts=None) -> SplitStats:
    """Write one line of decimal tokenizer ids per text line, one blank line
    between documents (fairseq-preprocess turns it into a lone </s>, which is
    what sample_break_mode=complete_doc splits on). Adds train frequencies to
    `counts` (a numpy array of size vocab_size) when given."""
    import numpy as np

    stats = SplitStats()
    wrote_any = False
    total_lines = sum(len(d) for d in docs)

    def batches():
        batch, starts = [], []
        for doc in docs:
            for j, line in enumerate(doc):
                batch.append(line)
                starts.append(j == 0)
                if len(batch) == ENCODE_BATCH_LINES:
                    yield batch, starts
                    batch, starts = [], []
        if batch:
            yield batch, starts

    with open(out_path, "w", encoding="ascii") as out, \
            progress(total=total_lines, unit="line", desc=f"tokenizing {name}") as bar:
        pending_boundary = False
        for batch, starts in batches():
            encoded = tok.encode_batch(batch)
            for ids, doc_start in zip(encoded, starts):
                pending_boundary = pending_boundary or doc_start
                if not ids:
                    stats.dropped_lines += 1
                    continue
                if pending_boundary:
                    if wrote_any:
                        out.write("\n")
                    stats.documents += 1
                    pending_boundary = False
                out.write(" ".join(map(str, ids)))
                out.write("\n")
                wrote_any = True
                stats.lines += 1
                stats.tokens += len(ids)
            flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64)
            if flat.size and (flat.max() >= tok.vocab_size or flat.min() < 0):
                bad = int(flat.max()) if flat.max() >= tok.vocab_size else int(flat.min())
                raise DataError(
                    f"{_tokenizer_option(tok)}: the tokenizer produced id {bad}, outside its "
                    f"vocabulary of {tok.vocab_size}; the tokenizer file is inconsistent")
            if counts is not None and flat.size:
                counts += np.bincount(flat, minlength=tok.vocab_size)
            bar.update(len(batch))
    if stats.dropped_lines:
        warn(f"{name}: {stats.dropped_lines} non-empty lines encoded to no tokens and were dropped")
    if stats.lines == 0:
        raise DataError(f"the {name} split has no tokens after tokenization; check the input "
                        f"text and the tokenizer")
    return stats


def dictionary_text(counts: Sequence[int], padding_factor: int) -> tuple[str, int]:
    """dict.txt body: `<id> <count>` for every tokenizer id in order, then
    madeupwordNNNN rows (count 0, as fairseq's own padding writes them) until
    4 specials + rows is a multiple of padding_factor. Returns (text, madeupwords)."""
    rows = [f"{i} {int(c)}" for i, c in enumerate(counts)]
    madeup = (-(ID_OFFSET + len(rows))) % padding_factor
    rows += [f"madeupword{j:04d} 0" for j in range(madeup)]
    return "".join(r + "\n" for r in rows), madeup


# Runs fairseq-preprocess and then checks the dictionary in one interpreter,
# so fairseq is imported once (it takes seconds) and its logging never
# reaches this process. fairseq-preprocess re-saves DIR/dict.txt from the
# loaded dictionary; the driver puts our exact bytes back before checking.
_PREPROCESS_DRIVER = r"""
import sys
dict_path = sys.argv[1]
ours = open(dict_path, "rb").read()
sys.argv = ["fairseq-preprocess"] + sys.argv[2:]
from fairseq_cli.preprocess import cli_main
cli_main()
with open(dict_path, "wb") as f:
    f.write(ours)
from fairseq.data import Dictionary
print("HEADLESS_DICT_LEN", len(Dictionary.load(dict_path)))
"""


_PREPROCESS_STATS = re.compile(r"/(\w+): (\d+) sents, (\d+) tokens, ([\d.]+)% replaced")


def binarize(workdir: Path, text_dir: Path, dict_bytes: bytes, workers: int) -> list[str]:
    """fairseq-preprocess --only-source into workdir; returns its summary lines."""
    dict_path = workdir / "dict.txt"
    cmd = [sys.executable, "-c", _PREPROCESS_DRIVER, str(dict_path),
           "--only-source", "--srcdict", str(dict_path),
           "--trainpref", str(text_dir / "train"), "--validpref", str(text_dir / "valid"),
           "--testpref", str(text_dir / "test"), "--destdir", str(workdir),
           "--workers", str(workers), "--dataset-impl", "mmap"]
    info(f"binarizing with fairseq-preprocess ({workers} worker{'s' * (workers > 1)})")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = (proc.stdout + "\n" + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        last = next((line for line in reversed(output) if line.strip()), "no output")
        raise DataError(f"fairseq-preprocess failed (exit code {proc.returncode}): {last.strip()}")
    length = next((int(line.split()[1]) for line in proc.stdout.splitlines()
                   if line.startswith("HEADLESS_DICT_LEN")), None)
    expected = ID_OFFSET + dict_bytes.count(b"\n")
    if dict_path.read_bytes() != dict_bytes or length != expected:
        raise DataError(f"internal check failed: fairseq loads {dict_path} with {length} "
                        f"entries, expected {expected}")
    summary = []
    for line in output:
        m = _PREPROCESS_STATS.search(line)
        if m:
            name, sents, ids, unk = m.groups()
            summary.append(f"{name}: {sents} entries (lines + document separators), {ids} ids "
                           f"incl. one </s> each, {unk}% replaced by <unk>")
    return summary


# --------------------------------------------------------------------------
# output folder handling
# --------------------------------------------------------------------------


def check_output(opts: Options) -> None:
    out = opts.output
    if out.exists() or out.is_symlink():
        if not opts.force:
            raise DataError(f"output folder {out} already exists; pass --force to replace it "
                            f"or choose another --output")
        if not out.is_dir():
            raise DataError(f"--output {out} exists and is not a folder; remove it first")


def publish(workdir: Path, out: Path, force: bool) -> None:
    """Move the finished workdir into place; an old DIR (--force) is moved
    aside first and deleted only once the new one is in place."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        if not force:  # appeared while we were working
            raise DataError(f"output folder {out} appeared during the run; pass --force to "
                            f"replace it or choose another --output")
        out.rename(old)
    try:
        workdir.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)
        raise
    if old.exists():
        shutil.rmtree(old)


# --------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------


def _split_dict(stats: SplitStats) -> dict:
    d = dataclasses.asdict(stats)
    if not d["dropped_lines"]:
        del d["dropped_lines"]
    return d


def build_manifest(opts: Options, argv: Sequence[str], tok: Tokenizer, sources: Sequence[Source],
                   stats: dict[str, SplitStats], madeup: int, multilingual: dict | None) -> dict:
    dict_size = ID_OFFSET + tok.vocab_size + madeup
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tokenizer": {
            "type": tok.kind,
            "path": f"tokenizer/{tok.filename}",
            "model_type": tok.model_type,
            "trained": tok.trained,
            "vocab_size": tok.vocab_size,
        },
        "id_mapping": {
            "fairseq_id": "tokenizer_id + offset",
            "offset": ID_OFFSET,
            "fairseq_specials": dict(FAIRSEQ_SPECIALS),
            "padding_factor": opts.padding_factor,
            "dictionary_size": dict_size,
            "madeupwords": madeup,
            "mask_appended_by_masked_lm_task": True,
            "masked_lm_embedding_rows": dict_size + 1,
        },
        "splits": {name: _split_dict(s) for name, s in stats.items()},
        "split_method": "tail: test = last lines, valid = the lines before them"
                        + (", per language before sampling" if multilingual else ""),
        "seed": opts.seed,
        "sources": [
            {"path": s.spec.path, "lines": s.lines, "documents": len(s.documents),
             "bytes": s.bytes, "language": s.spec.language, "licence": opts.licence}
            for s in sources
        ],
        "multilingual": multilingual,
        "command": shlex.join(["prepare_data.py", *argv]),
    }
    if tok.trained:
        manifest["tokenizer"].update(requested_vocab_size=opts.vocab_size,
                                     character_coverage=opts.character_coverage,
                                     byte_fallback=opts.byte_fallback)
    return manifest


def run(opts: Options, argv: Sequence[str], workdir: Path) -> dict:
    """Everything up to a complete dataset in workdir; returns the manifest."""
    tok = load_tokenizer(opts)
    excluded = [opts.output, opts.output.parent / f"{opts.output.name}.tmp-{os.getpid()}"]
    specs = resolve_inputs(opts.inputs, exclude=excluded)
    sources = read_sources(specs, opts.field)
    splits = make_splits(sources, opts)
    info("lines: " + ", ".join(f"{n} {sum(len(d) for d in docs)}" for n, docs in
                               (("train", splits.train), ("valid", splits.valid),
                                ("test", splits.test))))

    (workdir / "tokenizer").mkdir(parents=True)
    text_dir = workdir / "ids"
    text_dir.mkdir()
    if tok is None:
        tok = train_sentencepiece(splits.train, opts, text_dir)
    tok.save(workdir / "tokenizer")

    import numpy as np

    counts = np.zeros(tok.vocab_size, dtype=np.int64)
    stats = {name: encode_split(docs, tok, text_dir / name, name,
                                counts if name == "train" else None)
             for name, docs in (("train", splits.train), ("valid", splits.valid),
                                ("test", splits.test))}

    body, madeup = dictionary_text(counts, opts.padding_factor)
    dict_bytes = body.encode("ascii")
    (workdir / "dict.txt").write_bytes(dict_bytes)
    for line in binarize(workdir, text_dir, dict_bytes, opts.workers):
        info(f"  fairseq-preprocess: {line}")
    shutil.rmtree(text_dir)  # the id text is fully contained in the .bin files

    manifest = build_manifest(opts, argv, tok, sources, stats, madeup, splits.multilingual)
    (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False)
                                           + "\n", encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    workdir = None
    created_parents: list[Path] = []
    try:
        opts = parse_options(argv)
        check_output(opts)
        workdir = opts.output.parent / f"{opts.output.name}.tmp-{os.getpid()}"
        for parent in reversed(opts.output.parents):
            if not parent.exists():
                parent.mkdir()
                created_parents.append(parent)
        if workdir.exists():  # left over by a killed run with our pid
            shutil.rmtree(workdir)
        workdir.mkdir()
        manifest = run(opts, argv, workdir)
        publish(workdir, opts.output, opts.force)
        workdir = None
    except DataError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        # Any failure, including Ctrl-C, leaves nothing behind.
        if workdir is not None and workdir.exists():
            shutil.rmtree(workdir, ignore_errors=True)
        if workdir is not None:
            for parent in reversed(created_parents):
                try:
                    parent.rmdir()
                except OSError:
                    pass
    s = manifest["splits"]
    info(f"wrote {opts.output}: {manifest['id_mapping']['dictionary_size']} dictionary entries "
         f"(tokenizer {manifest['tokenizer']['vocab_size']}), tokens train "
         f"{s['train']['tokens']}, valid {s['valid']['tokens']}, test {s['test']['tokens']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
