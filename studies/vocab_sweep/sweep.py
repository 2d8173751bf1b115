"""The vocabulary-size sweep's options and stages (paper §6, Fig.6; docs/sweep_vocab.md).

Per size: a BPE tokenizer with BERT's uncased pipeline (or prepare_data.py's sentencepiece), the data
folder, the headless and vanilla pretrainings, their Hugging Face exports and the GLUE suite on both; each
stage is a :class:`~fairseq_headless.stages.Stage` in ``DIR/vocab_<size>/stages/``, skipped once finished
with the same settings.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from fairseq_headless.cli import InputError, Parser
from fairseq_headless.files import atomic_path
from fairseq_headless.stages import Stage, StageSettingsError
from studies import training_runs
from studies.training_runs import CONFIG_DIR, USER_DIR, glue_suite, log_to_stderr, merge_overrides, summarize_log

logger = logging.getLogger(__name__)
MODELS = ("headless", "vanilla")
PAPER_CONFIGS = {"headless": "hmlm_small", "vanilla": "mlm_small"}  # §6, App. D.4
TINY_CONFIGS = {"headless": "hmlm_tiny", "vanilla": "mlm_tiny"}
GLUE_TASKS = "STS-B,SST-2,QNLI,QQP,MNLI"  # Tab.1's without RTE, MRPC and CoLA (§6), in Tab.1's order
TOKENIZER_TYPES = ("bpe", "spm-bpe", "spm-unigram")
STAGES = ("tokenizer", "data", "train", "export", "glue")
DEFAULT_TOKENIZER_SAMPLE_LINES = 300_000  # prepare_data.py's sentencepiece sample
GLUE_RESERVED = ("--model", "--output", "--tasks", "--data-dir", "--seeds", "--epochs", "--force")  # the sweep's
GLUE_SPEED_ONLY = ("--threads", "--eval-batch-size", "--keep-checkpoints")
# Checkpoints are for resuming, not for evaluation along training: keep the last. One device, as App. D.4
# (device batch = batch = 64): fairseq would otherwise use every visible GPU.
TRAIN_DEFAULTS = ("checkpoint.keep_interval_updates=1", "distributed_training.distributed_world_size=1")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m studies.vocab_sweep", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                   help="raw text, as scripts/prepare_data.py --input (files, folders or hf:NAME[:CONFIG][:SPLIT])")
    p.add_argument("--sizes", required=True, metavar="N,N,...", help="vocabulary sizes (tokenizer tokens): 8000,16000")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="sweep folder (resumable)")
    data = p.add_argument_group("tokenizer and data (as scripts/prepare_data.py's options)")
    data.add_argument("--tokenizer-type", choices=TOKENIZER_TYPES, default="bpe",
                      help="bpe: a BPE with BERT's uncased pipeline (§6); spm-*: sentencepiece (default: bpe)")
    data.add_argument("--tokenizer-sample-lines", type=int, default=DEFAULT_TOKENIZER_SAMPLE_LINES, metavar="N",
                      help=f"train each tokenizer on N random lines, 0: all (default {DEFAULT_TOKENIZER_SAMPLE_LINES})")
    data.add_argument("--valid-lines", type=int, metavar="N")
    data.add_argument("--test-lines", type=int, metavar="N")
    data.add_argument("--padding-factor", type=int, default=8, metavar="N", help="(default 8)")
    data.add_argument("--jsonl-field", default="text", metavar="NAME", help="(default text)")
    data.add_argument("--workers", type=int, default=1, metavar="N", help="(default 1)")
    train = p.add_argument_group("pretraining")
    train.add_argument("--headless-config", metavar="NAME", help="configs/NAME.yaml (default hmlm_small, App. D.4)")
    train.add_argument("--vanilla-config", metavar="NAME", help="configs/NAME.yaml (default mlm_small)")
    train.add_argument("--tiny", action="store_true", help="hmlm_tiny / mlm_tiny (CPU runs, tests)")
    train.add_argument("--max-update", type=int, metavar="N", help="optimization.max_update (default: the config's)")
    train.add_argument("--train-overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="hydra overrides for both pretrainings, e.g. lr_scheduler.warmup_updates=1000")
    glue = p.add_argument_group("GLUE (scripts/finetune_glue.py's suite, App. E protocol)")
    glue.add_argument("--glue-data", type=Path, metavar="DIR", help="GLUE's distribution layout (default: the hub)")
    glue.add_argument("--glue-tasks", default=GLUE_TASKS, help=f"(default {GLUE_TASKS}: Tab.1 without RTE, MRPC, CoLA)")
    glue.add_argument("--glue-seeds", type=int, default=3, metavar="N", help="seeds per task (default 3)")
    glue.add_argument("--glue-epochs", type=int, default=10, metavar="N", help="epochs, best reported (default 10)")
    glue.add_argument("--glue-args", default="", metavar="'OPTIONS'",
                      help="more finetune_glue.py options in one string, e.g. '--threads 1 --max-train-examples 2000'")
    glue.add_argument("--no-glue", action="store_true", help="stop after the exports (throughput only)")
    run = p.add_argument_group("run")
    run.add_argument("--stop-after", choices=STAGES, default="glue", help="stop every size after this stage")
    run.add_argument("--force", action="store_true", help="delete the requested sizes (and sweep.*) and redo them")
    run.add_argument("--redo-glue", action="store_true", help="redo the GLUE stage of the requested sizes")
    return p


def parse_sizes(text: str) -> list:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InputError(f"--sizes {text!r}: give comma-separated vocabulary sizes, e.g. --sizes 8000,16000")
    for item in items:
        if not item.isdigit() or int(item) < 2:
            raise InputError(f"--sizes: {item!r} is not a vocabulary size (an integer >= 2), e.g. --sizes 8000,16000")
    return sorted({int(item) for item in items})


def parse_args(argv):
    args = build_parser().parse_args(argv)
    args.sizes = parse_sizes(args.sizes)
    args.output = args.output.resolve()
    args.corpus = [raw if raw.startswith("hf:") else str(Path(raw).resolve()) for raw in args.corpus]
    for raw, path in ((raw, Path(raw)) for raw in args.corpus if not raw.startswith("hf:")):
        if not path.exists():
            raise InputError(f"--corpus {raw}: no such file or folder; give the raw text (files or folders)")
        if path.is_dir() and (args.output == path or path in args.output.parents):
            raise InputError(f"--output {args.output} is inside --corpus {raw}; its files would be read as text")
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"--output {args.output}: exists and is not a folder")
    if args.tiny and (args.headless_config or args.vanilla_config):
        raise InputError("--tiny picks hmlm_tiny / mlm_tiny; do not combine it with --headless-config/--vanilla-config")
    base = TINY_CONFIGS if args.tiny else PAPER_CONFIGS
    args.configs = {m: getattr(args, f"{m}_config") or base[m] for m in MODELS}
    for model, name in args.configs.items():
        if not (CONFIG_DIR / f"{name}.yaml").is_file():
            raise InputError(f"--{model}-config {name}: no configs/{name}.yaml")
    if args.tokenizer_sample_lines < 0:
        raise InputError("--tokenizer-sample-lines must be 0 (all) or more")
    for name in ("valid_lines", "test_lines", "padding_factor", "workers", "max_update", "glue_seeds", "glue_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for override in args.train_overrides:
        if "=" not in override and not override.startswith("~"):
            raise InputError(f"--train-overrides {override!r}: expected KEY=VALUE (hydra syntax)")
    try:
        args.glue_extra = shlex.split(args.glue_args)
    except ValueError as e:
        raise InputError(f"--glue-args {args.glue_args!r}: {e}") from None
    for option in args.glue_extra:
        if option.split("=")[0] in GLUE_RESERVED:
            raise InputError(f"--glue-args: {option.split('=')[0]} is set by the sweep; use its own option")
    if args.glue_data is not None:
        args.glue_data = args.glue_data.resolve()
        if not args.glue_data.is_dir():
            raise InputError(f"--glue-data {args.glue_data}: not a folder (GLUE's layout, see docs/evaluation.md)")
    return args


# -------------------------------------------------------------------------- what each stage's result depends on


def data_settings(args, size: int) -> dict:
    return {"corpus": args.corpus, "vocab_size": size, "tokenizer_type": args.tokenizer_type,
            "tokenizer_sample_lines": args.tokenizer_sample_lines, "valid_lines": args.valid_lines,
            "test_lines": args.test_lines, "padding_factor": args.padding_factor, "jsonl_field": args.jsonl_field}


def model_settings(args, size: int, model: str) -> dict:
    """What a trained model (and so its export) depends on, whichever device trained it."""
    return {**data_settings(args, size), "model": model, "config": args.configs[model],
            "max_update": args.max_update, "overrides": run_overrides(args)}


def train_settings(args, size: int, model: str) -> dict:
    """The device's overrides too: an interrupted training resumes only on the same kind of device; a finished
    one is reused from any (the Stage's ``resume_only``)."""
    return {**model_settings(args, size, model), "device": training_runs.device_overrides()}


def glue_settings(args, size: int) -> dict:
    return {**data_settings(args, size), "configs": args.configs, "max_update": args.max_update,
            "overrides": run_overrides(args), "glue_tasks": args.task_names, "glue_seeds": args.glue_seeds,
            "glue_epochs": args.glue_epochs, "glue_args": result_glue_args(args.glue_extra),
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


# -------------------------------------------------------------------------- the stages


def prepare_options(args, output: Path, **fields):
    """The data preparation's options common to the tokenizer sample and every size's data folder."""
    from fairseq_headless.data.prepare import Options

    return Options(inputs=[(None, path) for path in args.corpus], output=output, padding_factor=args.padding_factor,
                   workers=args.workers, field=args.jsonl_field, valid_lines=args.valid_lines,
                   test_lines=args.test_lines, spm_sample_lines=args.tokenizer_sample_lines or 10 ** 12,
                   # --tokenizer-sample-lines 0 samples every line, whatever the byte bound
                   **({} if args.tokenizer_sample_lines else {"spm_sample_bytes": 10 ** 15}), **fields)


def train_lines(args) -> list:
    """The training split's lines as the data preparation splits and samples them for sentencepiece
    (--tokenizer-sample-lines; 0: all): the same sample for every size."""
    from fairseq_headless.data.prepare import tokenizer_sample

    try:
        return tokenizer_sample(prepare_options(args, args.output / ".probe"), args.tokenizer_sample_lines or 10 ** 12)
    except InputError as e:
        raise InputError(f"--corpus: {e}") from None


def train_tokenizer(folder: Path, size: int, lines: list) -> dict:
    """A BPE tokenizer of ``size`` tokens with BERT's uncased pipeline (docs/sweep_vocab.md)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["[UNK]"], continuing_subword_prefix="##",
                                  min_frequency=2, limit_alphabet=1000, show_progress=sys.stderr.isatty())
    tokenizer.train_from_iterator(lines, trainer, length=len(lines))
    path = folder / "tokenizer" / "tokenizer.json"
    with atomic_path(path) as tmp:
        tokenizer.save(str(tmp))
    logger.info(f"vocab {size} | tokenizer: BPE of {tokenizer.get_vocab_size()} tokens from {len(lines)} lines")
    return {"path": str(path), "vocab_size": tokenizer.get_vocab_size(), "training_lines": len(lines)}


def prepare(args, folder: Path, size: int) -> dict:
    """The data folder for this size; its dictionary rows checked against its manifest."""
    from fairseq_headless.data.prepare import prepare_data

    out = folder / "data"
    tokenizer = ({"tokenizer_mode": "hf", "tokenizer_file": folder / "tokenizer" / "tokenizer.json"}
                 if args.tokenizer_type == "bpe" else
                 {"vocab_size": size, "model_type": args.tokenizer_type.split("-")[1]})
    # force: a folder left by an interrupted run (its stage marker says unfinished)
    manifest = prepare_data(prepare_options(args, out, force=out.exists(), **tokenizer))["manifest"]
    rows = 4 + sum(1 for _ in open(out / "dict.txt", encoding="utf-8"))  # fairseq's specials come first
    if rows != manifest["id_mapping"]["dictionary_size"]:
        raise InputError(f"{out}: dict.txt has {rows} rows but manifest.json says "
                         f"{manifest['id_mapping']['dictionary_size']}")
    return {"path": str(out), "tokenizer_vocab": manifest["tokenizer"]["vocab_size"], "dictionary_rows": rows,
            "embedding_rows": manifest["id_mapping"]["masked_lm_embedding_rows"],
            "train_tokens": manifest["splits"]["train"]["tokens"]}


def pretrain(args, folder: Path, size: int, model: str, data: Path) -> dict:
    """fairseq-hydra-train of one model into ``folder/model``; fairseq's throughput and parameters from its log."""
    run, save_dir = folder / model, folder / model / "checkpoints"
    # the paths and the json log last: the sweep reads that log and finds the checkpoint there
    overrides = merge_overrides(TRAIN_DEFAULTS, training_runs.device_overrides(),
                                [f"optimization.max_update={args.max_update}"] if args.max_update else [],
                                args.train_overrides, [f"task.data={data}", f"checkpoint.save_dir={save_dir}",
                                                       f"common.user_dir={USER_DIR}", "common.log_format=json"])
    logger.info(f"vocab {size} | train {model}: fairseq-hydra-train {args.configs[model]} (log {run / 'train.log'})")
    training_runs.run_training(training_runs.hydra_train_command(args.configs[model], overrides), run / "train.log",
                               f"vocab {size} {model}")
    if not (save_dir / "checkpoint_last.pt").is_file():
        raise training_runs.TrainingError(f"{save_dir}/checkpoint_last.pt was not written; see {run / 'train.log'}")
    summary = summarize_log((run / "train.log").read_text(encoding="utf-8", errors="replace"))
    logger.info(f"vocab {size} | train {model}: {summary['tokens_per_s']:.0f} tokens/s, "
                f"{summary['updates_per_s']:.2f} updates/s over {summary['intervals']} log intervals")
    return {"config": args.configs[model], "checkpoint": str(save_dir / "checkpoint_last.pt"),
            "log": str(run / "train.log"), "device_overrides": training_runs.device_overrides(), **summary}


def export(folder: Path, model: str, checkpoint: Path, data: Path) -> dict:
    return training_runs.export(checkpoint, folder / model / "hf", data)


def glue(args, folder: Path) -> dict:
    """The GLUE suite on both exports; per model: each task's mean over seeds and Tab.1's average (x 100)."""
    argv = ["--model", *(f"{m}={folder / m / 'hf'}" for m in MODELS), "--tasks", ",".join(args.task_names),
            "--seeds", str(args.glue_seeds), "--epochs", str(args.glue_epochs), *args.glue_extra,
            *(["--data-dir", str(args.glue_data)] if args.glue_data else [])]
    return glue_suite(argv, folder / "glue", MODELS, args.task_names)


class Sweep:
    """The stages of every size, each recorded in DIR/vocab_<size>/stages/."""

    def __init__(self, args):
        self.args = args
        self._train_lines = None

    def folder(self, size: int) -> Path:
        return self.args.output / f"vocab_{size}"

    def stage(self, size: int, name: str, settings: dict) -> Stage:
        # the device only matters to resume an unfinished training: a model trained on a GPU is exported and
        # fine-tuned on GLUE from a CPU machine too
        return Stage(self.folder(size) / "stages" / f"{name}.json", settings, resume_only=("device",))

    def run_stage(self, size: int, name: str, settings: dict, work):
        """Skip a finished stage; otherwise run ``work()`` between its start and finish markers."""
        stage = self.stage(size, name, settings)
        result = stage.result()
        if result is not None:
            logger.info(f"vocab {size} | {name}: done before ({stage.marker.relative_to(self.args.output)}), skipped")
            return result
        logger.info(f"vocab {size} | {name}: running")
        stage.start()
        return stage.finish(work())

    def tokenizer_lines(self) -> list:
        if self._train_lines is None:
            self._train_lines = train_lines(self.args)
        return self._train_lines

    def run_size(self, size: int) -> bool:
        """Every stage of one size up to --stop-after; True when all of them are done."""
        a, folder = self.args, self.folder(size)
        last = STAGES.index("export" if a.no_glue and a.stop_after == "glue" else a.stop_after)
        if a.tokenizer_type == "bpe":
            self.run_stage(size, "tokenizer", data_settings(a, size),
                           lambda: train_tokenizer(folder, size, self.tokenizer_lines()))
        if last < STAGES.index("data"):
            return False
        data_dir = Path(self.run_stage(size, "data", data_settings(a, size), lambda: prepare(a, folder, size))["path"])
        if last < STAGES.index("train"):
            return False
        trained = {m: self.run_stage(size, f"train-{m}", train_settings(a, size, m),
                                     lambda m=m: pretrain(a, folder, size, m, data_dir)) for m in MODELS}
        if last < STAGES.index("export"):
            return False
        for m in MODELS:
            self.run_stage(size, f"export-{m}", model_settings(a, size, m),
                           lambda m=m: export(folder, m, Path(trained[m]["checkpoint"]), data_dir))
        if last < STAGES.index("glue"):
            return a.no_glue
        self.run_stage(size, "glue", glue_settings(a, size), lambda: glue(a, folder))
        return True

    def results(self, size: int) -> dict:
        """One size's row of sweep.json, from its stage markers."""
        a = self.args
        data = self.stage(size, "data", data_settings(a, size)).result()
        glue_result = None if a.no_glue else self.stage(size, "glue", glue_settings(a, size)).result()
        entry = {key: data[key] for key in ("tokenizer_vocab", "dictionary_rows", "embedding_rows", "train_tokens")}
        entry = {"requested": size, **entry, "models": {}}
        for m in MODELS:
            trained = self.stage(size, f"train-{m}", train_settings(a, size, m)).result()
            exported = self.stage(size, f"export-{m}", model_settings(a, size, m)).result()
            entry["models"][m] = {
                **{k: trained[k] for k in ("config", "params", "tokens_per_s", "updates_per_s", "updates",
                                           "final_valid_loss_bits", "log")},
                "throughput": {k: trained[k] for k in ("tokens_per_s_median", "intervals", "skipped_per_launch",
                                                       "launches", "includes_warmup")},
                "device_overrides": trained.get("device_overrides"), "hf": exported["path"],
                "glue": glue_result[m] if glue_result else None}
        return entry


def main(argv=None) -> int:
    from fairseq_headless.evaluation.tasks import resolve_tasks

    from .report import write_outputs

    started = time.time()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log_to_stderr()
    specs = resolve_tasks("glue", args.glue_tasks)  # GLUE read and checked now, not after hours of pretraining
    args.task_names = [s.name for s in specs]
    if not args.no_glue and args.glue_data is not None:
        from fairseq_headless.evaluation.task_data import load_split

        for spec in specs:
            for split in ("train", "dev"):
                load_split(spec, split, args.glue_data)
    args.output.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:  # --force: the requested sizes and the summary; --redo-glue: their GLUE stage
        if args.force:
            shutil.rmtree(args.output / f"vocab_{size}", ignore_errors=True)
        elif args.redo_glue:
            shutil.rmtree(args.output / f"vocab_{size}" / "glue", ignore_errors=True)
            (args.output / f"vocab_{size}" / "stages" / "glue.json").unlink(missing_ok=True)
    for name in ("sweep.json", "sweep.md", "sweep.png") if args.force else ():
        (args.output / name).unlink(missing_ok=True)
    logger.info(f"{len(args.sizes)} vocabulary size(s) {args.sizes} into {args.output}; configs "
                f"{args.configs['headless']} / {args.configs['vanilla']}, tokenizer {args.tokenizer_type}")
    sweep = Sweep(args)
    try:
        complete = [sweep.run_size(size) for size in args.sizes]
    except StageSettingsError as e:
        raise InputError(f"{e}; use another --output, --redo-glue (GLUE options only) or --force "
                         "(redo those sizes)") from None
    if all(complete):
        write_outputs(sweep, args.sizes)
    else:
        logger.info(f"stopped after stage '{args.stop_after}'; sweep.json is written once every stage has run")
    logger.info(f"finished in {time.time() - started:.0f} s")
    return 0
