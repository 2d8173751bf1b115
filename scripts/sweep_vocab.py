#!/usr/bin/env python
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
(fairseq_headless/experiments/training_runs.py).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
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


class SweepError(Exception):
    """Bad input or state the user can fix: main() prints `error: <message>` and returns 2."""


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


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, like every other bad input
        raise SweepError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sweep_vocab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        if not (REPO / "configs" / f"{name}.yaml").is_file():
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
    from fairseq_headless.experiments.training_runs import device_overrides

    return {**model_settings(args, size, model), "device": device_overrides()}


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
    from fairseq_headless.experiments.training_runs import merge_overrides

    return merge_overrides(TRAIN_DEFAULTS, [f"optimization.max_update={args.max_update}"] if args.max_update else [],
                           args.train_overrides)


def user_train_overrides(args) -> list:
    """The training command's overrides (not the paths): defaults, device, --max-update, the user's."""
    from fairseq_headless.experiments.training_runs import device_overrides, merge_overrides

    return merge_overrides(TRAIN_DEFAULTS, device_overrides(),
                           [f"optimization.max_update={args.max_update}"] if args.max_update else [],
                           args.train_overrides)


# --------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------


class Sweep:
    """The stages of every size (see the module docstring), each recorded in DIR/vocab_<size>/stages/."""

    def __init__(self, args):
        from fairseq_headless.experiments.stages import Stage

        self.args = args
        self.Stage = Stage
        self._train_lines = None

    def folder(self, size: int) -> Path:
        return self.args.output / f"vocab_{size}"

    def stage(self, size: int, name: str, settings: dict):
        # The device only matters to resume an unfinished training: a model trained on a GPU is exported and
        # fine-tuned on GLUE from a CPU machine too.
        return self.Stage(self.folder(size) / "stages" / f"{name}.json", settings, resume_only=("device",))

    def run_stage(self, size: int, name: str, settings: dict, work):
        """Skip a finished stage; otherwise run ``work()`` between its start and finish markers."""
        stage = self.stage(size, name, settings)
        result = stage.result()
        where = f"vocab {size} | {name}"
        if result is not None:
            log(f"{where}: done before ({stage.marker.relative_to(self.args.output)}), skipped")
            return result
        log(f"{where}: running")
        started = time.time()
        stage.start()
        result = stage.finish(work())
        log(f"{where}: done in {time.time() - started:.1f} s")
        return result

    # -- tokenizer ------------------------------------------------------------

    def train_lines(self) -> list:
        """The training split's lines as prepare_data.py splits them, sampled as it samples them for
        sentencepiece (--tokenizer-sample-lines; 0: all): the same sample for every size."""
        if self._train_lines is None:
            from fairseq_headless.data import cli as prepare_data
            from fairseq_headless.data.prepare import tokenizer_sample

            argv = ["--input", *self.args.corpus, "--output", str(self.args.output / ".probe"),
                    "--jsonl-field", self.args.jsonl_field, "--workers", str(self.args.workers)]
            for option in ("valid_lines", "test_lines"):
                if getattr(self.args, option):
                    argv += [f"--{option.replace('_', '-')}", str(getattr(self.args, option))]
            try:
                opts = prepare_data.parse_options(argv)
                self._train_lines = tokenizer_sample(opts, self.args.tokenizer_sample_lines or 10 ** 12)
            except prepare_data.DataError as e:
                raise SweepError(f"--corpus: {e}") from None
        return self._train_lines

    def train_tokenizer(self, size: int) -> dict:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        lines = self.train_lines()
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["[UNK]"], continuing_subword_prefix="##",
                                      min_frequency=2, limit_alphabet=1000, show_progress=sys.stderr.isatty())
        tokenizer.train_from_iterator(lines, trainer, length=len(lines))
        path = self.folder(size) / "tokenizer" / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        from fairseq_headless.files import atomic_path

        with atomic_path(path) as tmp:
            tokenizer.save(str(tmp))
        log(f"vocab {size} | tokenizer: BPE of {tokenizer.get_vocab_size()} tokens from {len(lines)} lines")
        return {"path": str(path), "vocab_size": tokenizer.get_vocab_size(), "training_lines": len(lines)}

    # -- data -----------------------------------------------------------------

    def prepare(self, size: int) -> dict:
        from fairseq_headless.data import cli as prepare_data

        a = self.args
        out = self.folder(size) / "data"
        argv = ["--input", *a.corpus, "--output", str(out), "--padding-factor", str(a.padding_factor),
                "--workers", str(a.workers), "--jsonl-field", a.jsonl_field]
        for option in ("valid_lines", "test_lines"):
            if getattr(a, option):
                argv += [f"--{option.replace('_', '-')}", str(getattr(a, option))]
        if a.tokenizer_type == "bpe":
            argv += ["--hf-tokenizer", str(self.folder(size) / "tokenizer" / "tokenizer.json")]
        else:
            argv += ["--vocab-size", str(size), "--model-type", a.tokenizer_type.split("-")[1],
                     "--spm-sample-lines", str(a.tokenizer_sample_lines or 10**12)]
        if out.exists():  # left by an interrupted run: its marker says unfinished
            argv.append("--force")
        from fairseq_headless.cli import run

        code = run(prepare_data.main, argv)  # an InputError: its error line, then exit code 2
        if code != 0:
            raise AlreadyReported(code)
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        rows = 4 + sum(1 for _ in open(out / "dict.txt", encoding="utf-8"))  # fairseq's specials come first
        mapping = manifest["id_mapping"]
        if rows != mapping["dictionary_size"]:
            raise SweepError(f"{out}: dict.txt has {rows} rows but manifest.json says {mapping['dictionary_size']}")
        return {"path": str(out), "tokenizer_vocab": manifest["tokenizer"]["vocab_size"], "dictionary_rows": rows,
                "embedding_rows": mapping["masked_lm_embedding_rows"],
                "train_tokens": manifest["splits"]["train"]["tokens"]}

    # -- pretraining ----------------------------------------------------------

    def pretrain(self, size: int, model: str, data: Path) -> dict:
        from fairseq_headless.experiments import training_runs as tr

        folder = self.folder(size) / model
        save_dir = folder / "checkpoints"
        # Paths and the log format last: the sweep reads the json log and finds the checkpoint there.
        overrides = tr.merge_overrides(user_train_overrides(self.args), [
            f"task.data={data}", f"checkpoint.save_dir={save_dir}", f"common.user_dir={tr.USER_DIR}",
            "common.log_format=json"])
        config = self.args.configs[model]
        log(f"vocab {size} | train {model}: fairseq-hydra-train {config} (log {folder / 'train.log'})")
        tr.run_training(tr.hydra_train_command(config, overrides), folder / "train.log", f"vocab {size} {model}",
                        report=log)
        if not (save_dir / "checkpoint_last.pt").is_file():
            raise tr.TrainingError(f"{save_dir}/checkpoint_last.pt was not written; see {folder / 'train.log'}")
        summary = tr.summarize_log((folder / "train.log").read_text(encoding="utf-8", errors="replace"))
        params = "?" if summary["params"] is None else f"{summary['params']:,}"
        log(f"vocab {size} | train {model}: {summary['tokens_per_s']:.0f} tokens/s, {summary['updates_per_s']:.2f} "
            f"updates/s over {summary['intervals']} log intervals, {params} parameters")
        return {"config": config, "checkpoint": str(save_dir / "checkpoint_last.pt"), "log": str(folder / "train.log"),
                "device_overrides": tr.device_overrides(), **summary}

    def export(self, size: int, model: str, checkpoint: Path, data: Path) -> dict:
        from fairseq_headless.data.errors import DataError
        from fairseq_headless.export import ExportError, ParityError, convert

        output = self.folder(size) / model / "hf"
        try:  # force: a folder without a finished marker is a leftover of an interrupted export
            summary = convert(checkpoint, output, data=data, force=True)
        except (ExportError, DataError) as e:
            raise SweepError(f"exporting {checkpoint}: {e}") from None
        except ParityError as e:
            raise RuntimeError(f"exporting {checkpoint}: {e}") from None
        return {"path": str(output), "hf_class": summary["hf_class"], "max_abs_diff": max(summary["parity"].values())}

    # -- GLUE -----------------------------------------------------------------

    def glue(self, size: int) -> dict:
        from fairseq_headless.evaluation.cli import suite_main
        from fairseq_headless.evaluation.results import mean_std, row_average
        from fairseq_headless.evaluation.tasks import GLUE_TASKS

        a = self.args
        output = self.folder(size) / "glue"
        argv = ["--model", *(f"{m}={self.folder(size) / m / 'hf'}" for m in MODELS), "--tasks", ",".join(a.task_names),
                "--output", str(output), "--seeds", str(a.glue_seeds), "--epochs", str(a.glue_epochs), *a.glue_extra]
        if a.glue_data is not None:
            argv += ["--data-dir", str(a.glue_data)]
        code = suite_main(argv, "glue")
        if code != 0:
            raise AlreadyReported(code)
        # The suite's own JSON: {"main": {model: {task: {metric: {seed: value}}}}}, scores as fractions.
        table = json.loads((output / "results_glue.json").read_text(encoding="utf-8"))["main"]
        metric = {t: GLUE_TASKS[t].main_metric for t in a.task_names}
        result = {}
        for model in MODELS:
            columns = table[model]
            per_task = {t: 100 * mean_std(columns[t][metric[t]].values())[0] for t in a.task_names}
            average = row_average(columns, list(a.task_names), metric)  # per seed, as Tab.1's Avg.
            mean, std = mean_std(average.values())
            result[model] = {"tasks": per_task, "metrics": metric, "average": 100 * mean, "average_std": 100 * std,
                             "seeds": len(average)}
        return result

    # -- one size -------------------------------------------------------------

    def run_size(self, size: int) -> bool:
        """Every stage of one size up to --stop-after; True when all of them are done."""
        a = self.args
        last = STAGES.index("export" if a.no_glue and a.stop_after == "glue" else a.stop_after)
        data_s = data_settings(a, size)
        if a.tokenizer_type == "bpe":
            self.run_stage(size, "tokenizer", data_s, lambda: self.train_tokenizer(size))
        if last < STAGES.index("data"):
            return False
        data = self.run_stage(size, "data", data_s, lambda: self.prepare(size))
        data_dir = Path(data["path"])
        if last < STAGES.index("train"):
            return False
        trained = {m: self.run_stage(size, f"train-{m}", train_settings(a, size, m),
                                     lambda m=m: self.pretrain(size, m, data_dir)) for m in MODELS}
        if last < STAGES.index("export"):
            return False
        for m in MODELS:
            self.run_stage(size, f"export-{m}", model_settings(a, size, m),
                           lambda m=m: self.export(size, m, Path(trained[m]["checkpoint"]), data_dir))
        if last < STAGES.index("glue"):
            return last == STAGES.index("export") and a.no_glue
        self.run_stage(size, "glue", glue_settings(a, size), lambda: self.glue(size))
        return True

    def results(self, size: int) -> dict:
        """One size's row of sweep.json, from its stage markers."""
        a = self.args
        data = self.stage(size, "data", data_settings(a, size)).result()
        entry = {"requested": size, "tokenizer_vocab": data["tokenizer_vocab"],
                 "dictionary_rows": data["dictionary_rows"], "embedding_rows": data["embedding_rows"],
                 "train_tokens": data["train_tokens"], "models": {}}
        glue = None if a.no_glue else self.stage(size, "glue", glue_settings(a, size)).result()
        for m in MODELS:
            trained = self.stage(size, f"train-{m}", train_settings(a, size, m)).result()
            export = self.stage(size, f"export-{m}", model_settings(a, size, m)).result()
            entry["models"][m] = {
                "config": trained["config"], "params": trained["params"], "tokens_per_s": trained["tokens_per_s"],
                "updates_per_s": trained["updates_per_s"], "updates": trained["updates"],
                "final_valid_loss_bits": trained["final_valid_loss_bits"],
                "throughput": {k: trained[k] for k in ("tokens_per_s_median", "intervals", "skipped_per_launch",
                                                       "launches", "includes_warmup")},
                "log": trained["log"], "device_overrides": trained.get("device_overrides"), "hf": export["path"],
                "glue": glue[m] if glue else None}
        return entry


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------


def render_markdown(summary: dict) -> str:
    tasks = summary["glue_tasks"] if summary["glue"] else []
    header = (["vocab (requested)", "tokenizer tokens", "dictionary rows", "model", "parameters", "tokens/s",
               "updates/s"] + tasks + (["GLUE avg."] if tasks else []))
    lines = [f"# Vocabulary-size sweep (paper §6, Fig.6): {summary['configs']['headless']} vs "
             f"{summary['configs']['vanilla']}\n",
             "| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * (len(header) - 4)]
    for entry in summary["sizes"]:
        for m in MODELS:
            r = entry["models"][m]
            params = "?" if r["params"] is None else f"{r['params']:,}"
            cells = [str(entry["requested"]), f"{entry['tokenizer_vocab']:,}", f"{entry['dictionary_rows']:,}",
                     f"{m} ({r['config']})", params, f"{r['tokens_per_s']:.0f}", f"{r['updates_per_s']:.2f}"]
            if tasks:
                cells += [f"{r['glue']['tasks'][t]:.2f}" for t in tasks] + [f"{r['glue']['average']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "tokens/s, updates/s: mean of fairseq's `wps` / `ups` over the `train_inner` log records, the first "
        "record of every launch left out (warm-up).",
        "dictionary rows: fairseq's dictionary (4 specials + tokenizer tokens + padding); the masked LM's "
        "embedding matrix has one more row (<mask>).",
    ]
    if tasks:
        notes.append(f"GLUE dev x 100, {summary['glue_settings']['seeds']} seed(s) x best of "
                     f"{summary['glue_settings']['epochs']} epochs; GLUE avg. = mean over {', '.join(tasks)} "
                     "(Tab.1 without RTE, MRPC, CoLA as §6 when the default tasks), per seed, then over seeds.")
    return "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes)


def plot(summary: dict, path: Path) -> None:
    import logging

    # before the import: fairseq leaves the root logger at DEBUG, and matplotlib logs while importing
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"headless": "tab:green", "vanilla": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = [e["dictionary_rows"] for e in summary["sizes"]]
    for m in MODELS:
        label = f"{m} ({summary['configs'][m]})"
        if summary["glue"]:
            axes[0].plot(x, [e["models"][m]["glue"]["average"] for e in summary["sizes"]], marker="o",
                         color=colors[m], label=label)
        axes[1].plot(x, [e["models"][m]["tokens_per_s"] for e in summary["sizes"]], marker="o",
                     color=colors[m], label=label)
    axes[0].set_title("(a) GLUE average" + ("" if summary["glue"] else " (not evaluated: --no-glue)"))
    axes[0].set_ylabel("GLUE dev average (" + ", ".join(summary["glue_tasks"]) + ")" if summary["glue"] else "")
    axes[1].set_title("(b) training throughput")
    axes[1].set_ylabel("tokens / s (fairseq wps)")
    for ax in axes:
        ax.set_xlabel("vocabulary size (dictionary rows)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    from fairseq_headless.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_outputs(sweep: Sweep, sizes: list) -> None:
    from fairseq_headless.files import write_json_atomic, write_text_atomic as write_atomic

    a = sweep.args
    summary = {
        "paper": "Headless Language Models, §6 'Token vocabulary', Fig.6, App. D.4",
        "configs": a.configs, "tokenizer_type": a.tokenizer_type, "corpus": a.corpus,
        "max_update": a.max_update, "train_overrides": run_overrides(a),
        "glue": not a.no_glue, "glue_tasks": a.task_names,
        "glue_settings": {"seeds": a.glue_seeds, "epochs": a.glue_epochs, "args": a.glue_extra,
                          "data": str(a.glue_data) if a.glue_data else "hub"},
        "sizes": [sweep.results(size) for size in sizes],
    }
    write_json_atomic(a.output / "sweep.json", summary)
    write_atomic(a.output / "sweep.md", render_markdown(summary))
    plot(summary, a.output / "sweep.png")
    print("\n" + render_markdown(summary), flush=True)
    log(f"written: {a.output / 'sweep.json'}, sweep.md, sweep.png")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


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


def main(argv=None) -> int:
    started = time.time()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        import logging

        logging.getLogger("fairseq").setLevel(logging.WARNING)  # its import-time notices; the sweep logs its own
        from fairseq_headless.evaluation.errors import EvaluationInputError
        from fairseq_headless.experiments.stages import StageSettingsError

        try:
            check_glue_data(args)
        except EvaluationInputError as e:
            raise SweepError(f"--glue-data/--glue-tasks: {e}") from None
        args.output.mkdir(parents=True, exist_ok=True)
        if args.force:
            for size in args.sizes:
                shutil.rmtree(args.output / f"vocab_{size}", ignore_errors=True)
            for name in ("sweep.json", "sweep.md", "sweep.png"):
                (args.output / name).unlink(missing_ok=True)
        elif args.redo_glue:
            for size in args.sizes:
                shutil.rmtree(args.output / f"vocab_{size}" / "glue", ignore_errors=True)
                (args.output / f"vocab_{size}" / "stages" / "glue.json").unlink(missing_ok=True)
        log(f"{len(args.sizes)} vocabulary size(s) {args.sizes} into {args.output}; configs "
            f"{args.configs['headless']} / {args.configs['vanilla']}, tokenizer {args.tokenizer_type}")
        sweep = Sweep(args)
        try:
            complete = [sweep.run_size(size) for size in args.sizes]
        except StageSettingsError as e:
            raise SweepError(f"{e}; use another --output, --redo-glue (GLUE options only) or --force "
                             "(redo those sizes)") from None
        if all(complete):
            write_outputs(sweep, args.sizes)
        else:
            log(f"stopped after stage '{args.stop_after}'; sweep.json is written once every stage has run")
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except AlreadyReported as e:
        return e.code
    except RuntimeError as e:  # a failed pretraining (TrainingError) or export parity
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    log(f"finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
