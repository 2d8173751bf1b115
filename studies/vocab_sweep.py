"""Vocabulary-size sweep of paper §6 ("Token vocabulary"), Figure 6 and App. D.4 (Tab.10).

For each vocabulary size: train a BPE tokenizer, prepare the corpus with it, pretrain the headless
and the vanilla BERT-small encoders (configs hmlm_small / mlm_small), export both to Hugging Face
and fine-tune them on GLUE without RTE, MRPC and CoLA ("due to high variance at that model scale").
Then plot, as Fig.6, (a) the GLUE average and (b) the training throughput against the vocabulary
size, one line per model.

    DIR/vocab_<size>/tokenizer/tokenizer.json   the BPE tokenizer (--tokenizer-type bpe)
    DIR/vocab_<size>/data/                      scripts/prepare_data.py's folder (dict.txt, manifest.json, ...)
    DIR/vocab_<size>/<model>/checkpoints/       fairseq-hydra-train's save_dir (model = headless | vanilla)
    DIR/vocab_<size>/<model>/train.log          its output, every launch appended (fairseq json log)
    DIR/vocab_<size>/<model>/hf/                scripts/convert_to_hf.py's export
    DIR/vocab_<size>/glue/                      the GLUE suite's results folder (both models, one row each)
    DIR/vocab_<size>/stages/<stage>.json        one marker per stage: settings, done, result
    DIR/sweep.json, sweep.md, sweep.png         every size x model: dictionary rows, parameters,
                                                throughput, GLUE per task and average

Every stage is skipped when its marker says it finished with the same settings, so running the
same command again continues where it stopped (an interrupted pretraining resumes from its
checkpoint_last.pt). A marker made with other settings is an error; --force deletes the requested
sizes' folders and redoes them, --redo-glue redoes only their GLUE stage.

Tokenizer (--tokenizer-type bpe, the default). The paper trains "a BPE tokenizer similar to the
BERT tokenizer" per size (Tab.10 names bert_uncased_L-4_H-512_A-8's WordPiece tokenizer). We train
a Hugging Face `tokenizers` BPE with BERT's uncased pipeline: BertNormalizer (lower-casing, accent
stripping, control characters removed, CJK characters split), BertPreTokenizer (whitespace and
punctuation splits), "##" continuation prefix, [UNK] for unseen characters, limit_alphabet 1000
and min_frequency 2 as `tokenizers`' BertWordPieceTokenizer. The requested size is the tokenizer's
vocabulary including [UNK]; prepare_data.py adds fairseq's 4 specials and pads the dictionary to
--padding-factor (the masked_lm task appends <mask>). spm-bpe / spm-unigram use prepare_data.py's
sentencepiece training instead. A corpus too small for a size gives fewer tokens: every table
reports the real dictionary rows.

Throughput: fairseq's own words-per-second meter (wps: non-padding tokens per second) of the
train_inner log records, the first record of every launch left out as warm-up, averaged
(studies/training_runs.py).

The command line is studies/vocab_sweep.py; the stages are in :mod:`.vocab_sweep_stages`, the outputs in
:mod:`.vocab_sweep_report`.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

from fairseq_headless.cli import InputError, Parser
from . import training_runs
from fairseq_headless.export import ParityError
from .training_log import LogError
from .training_runs import CONFIG_DIR, merge_overrides

MODELS = ("headless", "vanilla")
PAPER_CONFIGS = {"headless": "hmlm_small", "vanilla": "mlm_small"}  # §6, App. D.4
TINY_CONFIGS = {"headless": "hmlm_tiny", "vanilla": "mlm_tiny"}
# Tab.1's tasks without RTE, MRPC and CoLA (§6), in Tab.1's column order.
GLUE_TASKS = "STS-B,SST-2,QNLI,QQP,MNLI"
TOKENIZER_TYPES = ("bpe", "spm-bpe", "spm-unigram")
STAGES = ("tokenizer", "data", "train", "export", "glue")
DEFAULT_TOKENIZER_SAMPLE_LINES = 300_000  # prepare_data.py's sentencepiece sample
# Options of finetune_glue.py that the sweep sets itself.
GLUE_RESERVED = ("--model", "--output", "--tasks", "--data-dir", "--seeds", "--epochs", "--force")
GLUE_SPEED_ONLY = ("--threads", "--eval-batch-size", "--keep-checkpoints")
# Checkpoints are for resuming an interrupted run, not for evaluation along training: keep the last.
# One device, as App. D.4 (device batch = batch = 64): fairseq would otherwise use every visible GPU.
TRAIN_DEFAULTS = ("checkpoint.keep_interval_updates=1", "distributed_training.distributed_world_size=1")


class SweepError(InputError):
    """Bad input or state the user can fix: one ``error:`` line, exit status 2."""


FAILURES = (training_runs.TrainingError, LogError, ParityError)  # exit status 1: a step that ran and failed


class AlreadyReported(Exception):
    """A tool called in-process printed its own `error:` line; main() only sets the exit code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def log(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="sweep_vocab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                   help="raw text: files or folders (.txt, .jsonl, optionally .gz/.bz2/.xz) or hf:NAME[:CONFIG][:SPLIT], "
                        "as scripts/prepare_data.py --input")
    p.add_argument("--sizes", required=True, metavar="N,N,...",
                   help="comma-separated vocabulary sizes (tokenizer tokens), e.g. 8000,16000,32000,65000,131000")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="sweep folder (resumable)")
    data = p.add_argument_group("tokenizer and data")
    data.add_argument("--tokenizer-type", choices=TOKENIZER_TYPES, default="bpe",
                      help="bpe: Hugging Face BPE with BERT's uncased normalizer and pre-tokenizer (the paper's "
                           "'BPE tokenizer similar to the BERT tokenizer'); spm-bpe / spm-unigram: prepare_data.py's "
                           "sentencepiece (default: bpe)")
    data.add_argument("--tokenizer-sample-lines", type=int, default=DEFAULT_TOKENIZER_SAMPLE_LINES, metavar="N",
                      help="train each tokenizer on at most N random training lines, 0 = all (default "
                           f"{DEFAULT_TOKENIZER_SAMPLE_LINES}, prepare_data.py's)")
    data.add_argument("--valid-lines", type=int, metavar="N", help="prepare_data.py --valid-lines")
    data.add_argument("--test-lines", type=int, metavar="N", help="prepare_data.py --test-lines")
    data.add_argument("--padding-factor", type=int, default=8, metavar="N",
                      help="pad the dictionary to a multiple of N (default 8)")
    data.add_argument("--jsonl-field", default="text", metavar="NAME", help="text field of .jsonl input (default text)")
    data.add_argument("--workers", type=int, default=1, metavar="N", help="prepare_data.py --workers (default 1)")
    train = p.add_argument_group("pretraining")
    train.add_argument("--headless-config", metavar="NAME", help="configs/NAME.yaml (default hmlm_small, App. D.4)")
    train.add_argument("--vanilla-config", metavar="NAME", help="configs/NAME.yaml (default mlm_small)")
    train.add_argument("--tiny", action="store_true",
                       help="hmlm_tiny / mlm_tiny instead of the paper's BERT-small configs (CPU runs, tests)")
    train.add_argument("--max-update", type=int, metavar="N", help="optimization.max_update (default: the config's)")
    train.add_argument("--train-overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="hydra overrides for both pretrainings, e.g. lr_scheduler.warmup_updates=1000 "
                            "common.log_interval=50 '+model.encoder_layers=6'")
    glue = p.add_argument_group("GLUE (scripts/finetune_glue.py's suite, App. E protocol)")
    glue.add_argument("--glue-data", type=Path, metavar="DIR",
                      help="GLUE in its distribution layout (docs/evaluation.md); without it, the hub")
    glue.add_argument("--glue-tasks", default=GLUE_TASKS,
                      help=f"comma-separated (default {GLUE_TASKS}: Tab.1 without RTE, MRPC, CoLA, as §6)")
    glue.add_argument("--glue-seeds", type=int, default=3, metavar="N", help="fine-tuning seeds per task (default 3)")
    glue.add_argument("--glue-epochs", type=int, default=10, metavar="N", help="fine-tuning epochs, best reported (default 10)")
    glue.add_argument("--glue-args", default="", metavar="'OPTIONS'",
                      help="more finetune_glue.py options in one string, e.g. '--threads 1 --max-train-examples 2000'")
    glue.add_argument("--no-glue", action="store_true", help="stop after the exports (throughput only)")
    run = p.add_argument_group("run")
    run.add_argument("--stop-after", choices=STAGES, default="glue",
                     help="stop every size after this stage (e.g. data: prepare everything first)")
    run.add_argument("--force", action="store_true",
                     help="delete the requested sizes' folders (and sweep.*) and redo them")
    run.add_argument("--redo-glue", action="store_true",
                     help="delete and redo the GLUE stage of the requested sizes (new GLUE options)")
    return p


def parse_sizes(text: str) -> list:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise SweepError(f"--sizes {text!r}: give comma-separated vocabulary sizes, e.g. --sizes 8000,16000")
    sizes = []
    for item in items:
        if not item.isdigit() or int(item) < 2:
            raise SweepError(f"--sizes: {item!r} is not a vocabulary size (an integer >= 2), e.g. --sizes 8000,16000")
        if int(item) not in sizes:
            sizes.append(int(item))
    return sorted(sizes)


def parse_args(argv):
    args = build_parser().parse_args(argv)
    args.sizes = parse_sizes(args.sizes)
    args.output = args.output.resolve()
    corpus = []
    for raw in args.corpus:
        if raw.startswith("hf:"):
            corpus.append(raw)
            continue
        path = Path(raw).resolve()
        if not path.exists():
            raise SweepError(f"--corpus {raw}: no such file or folder; give the raw text (files or folders)")
        if path.is_dir() and (args.output == path or path in args.output.parents):
            raise SweepError(f"--output {args.output} is inside --corpus {raw}; its files would be read as text")
        corpus.append(str(path))
    args.corpus = corpus
    if args.output.exists() and not args.output.is_dir():
        raise SweepError(f"--output {args.output}: exists and is not a folder")
    if args.tiny and (args.headless_config or args.vanilla_config):
        raise SweepError("--tiny picks hmlm_tiny / mlm_tiny; do not combine it with --headless-config/--vanilla-config")
    base = TINY_CONFIGS if args.tiny else PAPER_CONFIGS
    args.configs = {"headless": args.headless_config or base["headless"],
                    "vanilla": args.vanilla_config or base["vanilla"]}
    for model, name in args.configs.items():
        if not (CONFIG_DIR / f"{name}.yaml").is_file():
            raise SweepError(f"--{model}-config {name}: no configs/{name}.yaml")
    for name in ("tokenizer_sample_lines",):
        if getattr(args, name) < 0:
            raise SweepError(f"--{name.replace('_', '-')} must be 0 (all) or more")
    for name in ("valid_lines", "test_lines", "padding_factor", "workers", "max_update", "glue_seeds", "glue_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SweepError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for override in args.train_overrides:
        if "=" not in override and not override.startswith("~"):
            raise SweepError(f"--train-overrides {override!r}: expected KEY=VALUE (hydra syntax)")
    try:
        args.glue_extra = shlex.split(args.glue_args)
    except ValueError as e:
        raise SweepError(f"--glue-args {args.glue_args!r}: {e}") from None
    for option in args.glue_extra:
        if option.split("=")[0] in GLUE_RESERVED:
            raise SweepError(f"--glue-args: {option.split('=')[0]} is set by the sweep; use its own option")
    if args.glue_data is not None:
        args.glue_data = args.glue_data.resolve()
        if not args.glue_data.is_dir():
            raise SweepError(f"--glue-data {args.glue_data}: not a folder (GLUE's layout, see docs/evaluation.md)")
    if args.tokenizer_type == "bpe":
        _needs("tokenizers", "--tokenizer-type bpe")
    return args


def _needs(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SweepError(f"{what} needs the `{module}` library, which is not installed")


# --------------------------------------------------------------------------
# settings of each stage: what its result depends on
# --------------------------------------------------------------------------


def data_settings(args, size: int) -> dict:
    return {"corpus": args.corpus, "vocab_size": size, "tokenizer_type": args.tokenizer_type,
            "tokenizer_sample_lines": args.tokenizer_sample_lines, "valid_lines": args.valid_lines,
            "test_lines": args.test_lines, "padding_factor": args.padding_factor, "jsonl_field": args.jsonl_field}


def model_settings(args, size: int, model: str) -> dict:
    """What a trained model (and so its export) depends on, whichever device trained it."""
    return {**data_settings(args, size), "model": model, "config": args.configs[model],
            "max_update": args.max_update, "overrides": run_overrides(args)}


def train_settings(args, size: int, model: str) -> dict:
    """The model's settings and the device's overrides: an interrupted training resumes only on the same kind
    of device; a finished one is reused from any (the Stage's ``resume_only`` key)."""
    return {**model_settings(args, size, model), "device": training_runs.device_overrides()}


def glue_settings(args, size: int) -> dict:
    return {**data_settings(args, size), "configs": args.configs, "max_update": args.max_update,
            "overrides": run_overrides(args), "glue_tasks": args.task_names,
            "glue_seeds": args.glue_seeds, "glue_epochs": args.glue_epochs, "glue_args": result_glue_args(args.glue_extra),
            "glue_data": str(args.glue_data) if args.glue_data else "hub"}


def result_glue_args(options: list) -> list:
    """--glue-args without the options that change speed only: a resumed sweep may use other threads."""
    kept, skip = [], False
    for option in options:
        name = option.split("=")[0]
        if skip:
            skip = False
        elif name in GLUE_SPEED_ONLY:
            skip = "=" not in option and name != "--keep-checkpoints"
        else:
            kept.append(option)
    return kept


def run_overrides(args) -> list:
    """Overrides that change the run, whatever the device: defaults, --max-update, the user's."""
    return merge_overrides(TRAIN_DEFAULTS, [f"optimization.max_update={args.max_update}"] if args.max_update else [],
                           args.train_overrides)


def user_train_overrides(args) -> list:
    """The training command's overrides (not the paths): defaults, device, --max-update, the user's."""
    return merge_overrides(TRAIN_DEFAULTS, training_runs.device_overrides(),
                           [f"optimization.max_update={args.max_update}"] if args.max_update else [],
                           args.train_overrides)


def check_glue_data(args) -> None:
    """Read and check every GLUE split now, not after hours of pretraining."""
    from fairseq_headless.evaluation.task_data import load_split
    from fairseq_headless.evaluation.tasks import resolve_tasks

    specs = resolve_tasks("glue", args.glue_tasks)
    args.task_names = [s.name for s in specs]
    if args.no_glue or args.glue_data is None:
        return
    for spec in specs:
        for split in ("train", "dev"):
            load_split(spec, split, args.glue_data)


def clear(args) -> None:
    """--force: the requested sizes' folders and the summary; --redo-glue: their GLUE stage."""
    if args.force:
        for size in args.sizes:
            shutil.rmtree(args.output / f"vocab_{size}", ignore_errors=True)
        for name in ("sweep.json", "sweep.md", "sweep.png"):
            (args.output / name).unlink(missing_ok=True)
    elif args.redo_glue:
        for size in args.sizes:
            shutil.rmtree(args.output / f"vocab_{size}" / "glue", ignore_errors=True)
            (args.output / f"vocab_{size}" / "stages" / "glue.json").unlink(missing_ok=True)


def main(argv=None) -> int:
    """studies/vocab_sweep.py: bad input raises :class:`SweepError` (``cli.run`` prints it, exit 2)."""
    from fairseq_headless.stages import StageSettingsError
    from .vocab_sweep_report import write_outputs
    from .vocab_sweep_stages import Sweep

    started = time.time()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import logging

    logging.getLogger("fairseq").setLevel(logging.WARNING)  # its import-time notices; the sweep logs its own
    from fairseq_headless.cli import InputError as EvaluationInputError

    try:
        check_glue_data(args)
    except EvaluationInputError as e:
        raise SweepError(f"--glue-data/--glue-tasks: {e}") from None
    args.output.mkdir(parents=True, exist_ok=True)
    clear(args)
    log(f"{len(args.sizes)} vocabulary size(s) {args.sizes} into {args.output}; configs "
        f"{args.configs['headless']} / {args.configs['vanilla']}, tokenizer {args.tokenizer_type}")
    sweep = Sweep(args)
    try:
        complete = [sweep.run_size(size) for size in args.sizes]
    except StageSettingsError as e:
        raise SweepError(f"{e}; use another --output, --redo-glue (GLUE options only) or --force "
                         "(redo those sizes)") from None
    except AlreadyReported as e:  # a tool called in-process printed its own error line
        return e.code
    if all(complete):
        write_outputs(sweep, args.sizes)
    else:
        log(f"stopped after stage '{args.stop_after}'; sweep.json is written once every stage has run")
    log(f"finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    import sys

    from fairseq_headless.cli import run as run_command

    sys.exit(run_command(main, failures=FAILURES))
