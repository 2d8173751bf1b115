"""The stages of the vocabulary-size sweep (paper §6, Fig.6): tokenizer, data, pretraining, export, GLUE.

Each stage is a function of the sweep's options and one size's folder, returning what its marker
records (:mod:`fairseq_headless.stages`); :class:`Sweep` runs them in order for every size and skips the finished
ones. The options, the settings each stage depends on and the command line are in :mod:`.vocab_sweep`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fairseq_headless.files import atomic_path
from . import common_steps, training_runs
from fairseq_headless.stages import Stage
from .training_log import summarize_log
from .vocab_sweep import (MODELS, STAGES, AlreadyReported, SweepError, data_settings, glue_settings, log,
                          model_settings, train_settings, user_train_overrides)


def train_lines(args) -> list:
    """The training split's lines as prepare_data.py splits them, sampled as it samples them for
    sentencepiece (--tokenizer-sample-lines; 0: all): the same sample for every size."""
    from fairseq_headless.cli import InputError as DataError
    from fairseq_headless.data.prepare import tokenizer_sample

    argv = ["--input", *args.corpus, "--output", str(args.output / ".probe"),
            "--jsonl-field", args.jsonl_field, "--workers", str(args.workers), *_all_bytes(args)]
    for option in ("valid_lines", "test_lines"):
        if getattr(args, option):
            argv += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    try:
        return tokenizer_sample(common_steps.prepare_options(argv), args.tokenizer_sample_lines or 10 ** 12)
    except DataError as e:
        raise SweepError(f"--corpus: {e}") from None


def _all_bytes(args) -> list[str]:
    """--tokenizer-sample-lines 0 samples every line, whatever prepare_data.py's byte bound."""
    return [] if args.tokenizer_sample_lines else ["--spm-sample-bytes", str(10 ** 15)]


def train_tokenizer(folder: Path, size: int, lines: list) -> dict:
    """A BPE tokenizer with BERT's uncased pipeline (see :mod:`.vocab_sweep`) of ``size`` tokens."""
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
    log(f"vocab {size} | tokenizer: BPE of {tokenizer.get_vocab_size()} tokens from {len(lines)} lines")
    return {"path": str(path), "vocab_size": tokenizer.get_vocab_size(), "training_lines": len(lines)}


def prepare(args, folder: Path, size: int) -> dict:
    """prepare_data.py's folder for this size; its dictionary rows checked against its manifest."""
    out = folder / "data"
    argv = ["--input", *args.corpus, "--output", str(out), "--padding-factor", str(args.padding_factor),
            "--workers", str(args.workers), "--jsonl-field", args.jsonl_field]
    for option in ("valid_lines", "test_lines"):
        if getattr(args, option):
            argv += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if args.tokenizer_type == "bpe":
        argv += ["--hf-tokenizer", str(folder / "tokenizer" / "tokenizer.json")]
    else:
        argv += ["--vocab-size", str(size), "--model-type", args.tokenizer_type.split("-")[1],
                 "--spm-sample-lines", str(args.tokenizer_sample_lines or 10**12), *_all_bytes(args)]
    if out.exists():  # left by an interrupted run: its marker says unfinished
        argv.append("--force")
    code = common_steps.prepare(argv)
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


def pretrain(args, folder: Path, size: int, model: str, data: Path) -> dict:
    """fairseq-hydra-train of one model into ``folder/model``; fairseq's throughput and parameters from its log."""
    tr = training_runs
    run = folder / model
    save_dir = run / "checkpoints"
    # Paths and the log format last: the sweep reads the json log and finds the checkpoint there.
    overrides = tr.merge_overrides(user_train_overrides(args), [
        f"task.data={data}", f"checkpoint.save_dir={save_dir}", f"common.user_dir={tr.USER_DIR}",
        "common.log_format=json"])
    config = args.configs[model]
    log(f"vocab {size} | train {model}: fairseq-hydra-train {config} (log {run / 'train.log'})")
    tr.run_training(tr.hydra_train_command(config, overrides), run / "train.log", f"vocab {size} {model}", report=log)
    if not (save_dir / "checkpoint_last.pt").is_file():
        raise tr.TrainingError(f"{save_dir}/checkpoint_last.pt was not written; see {run / 'train.log'}")
    summary = summarize_log((run / "train.log").read_text(encoding="utf-8", errors="replace"))
    params = "?" if summary["params"] is None else f"{summary['params']:,}"
    log(f"vocab {size} | train {model}: {summary['tokens_per_s']:.0f} tokens/s, {summary['updates_per_s']:.2f} "
        f"updates/s over {summary['intervals']} log intervals, {params} parameters")
    return {"config": config, "checkpoint": str(save_dir / "checkpoint_last.pt"), "log": str(run / "train.log"),
            "device_overrides": tr.device_overrides(), **summary}


def export(folder: Path, model: str, checkpoint: Path, data: Path) -> dict:
    return common_steps.export(checkpoint, folder / model / "hf", data)


def glue(args, folder: Path) -> dict:
    """The GLUE suite on both exports; per model: each task's mean over seeds and Tab.1's average (x 100)."""
    from fairseq_headless.evaluation.cli import suite_main
    from fairseq_headless.evaluation.results import mean_std, row_average
    from fairseq_headless.evaluation.tasks import GLUE_TASKS

    output = folder / "glue"
    argv = ["--model", *(f"{m}={folder / m / 'hf'}" for m in MODELS), "--tasks", ",".join(args.task_names),
            "--output", str(output), "--seeds", str(args.glue_seeds), "--epochs", str(args.glue_epochs),
            *args.glue_extra]
    if args.glue_data is not None:
        argv += ["--data-dir", str(args.glue_data)]
    code = suite_main(argv, "glue")
    if code != 0:
        raise AlreadyReported(code)
    # The suite's own JSON: {"main": {model: {task: {metric: {seed: value}}}}}, scores as fractions.
    table = json.loads((output / "results_glue.json").read_text(encoding="utf-8"))["main"]
    metric = {t: GLUE_TASKS[t].main_metric for t in args.task_names}
    result = {}
    for model in MODELS:
        columns = table[model]
        per_task = {t: 100 * mean_std(columns[t][metric[t]].values())[0] for t in args.task_names}
        average = row_average(columns, list(args.task_names), metric)  # per seed, as Tab.1's Avg.
        mean, std = mean_std(average.values())
        result[model] = {"tasks": per_task, "metrics": metric, "average": 100 * mean, "average_std": 100 * std,
                         "seeds": len(average)}
    return result


class Sweep:
    """The stages of every size (see :mod:`.vocab_sweep`), each recorded in DIR/vocab_<size>/stages/."""

    def __init__(self, args):
        self.args = args
        self._train_lines = None

    def folder(self, size: int) -> Path:
        return self.args.output / f"vocab_{size}"

    def stage(self, size: int, name: str, settings: dict) -> Stage:
        # The device only matters to resume an unfinished training: a model trained on a GPU is exported and
        # fine-tuned on GLUE from a CPU machine too.
        return Stage(self.folder(size) / "stages" / f"{name}.json", settings, resume_only=("device",))

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

    def tokenizer_lines(self) -> list:
        if self._train_lines is None:
            self._train_lines = train_lines(self.args)
        return self._train_lines

    def run_size(self, size: int) -> bool:
        """Every stage of one size up to --stop-after; True when all of them are done."""
        a, folder = self.args, self.folder(size)
        last = STAGES.index("export" if a.no_glue and a.stop_after == "glue" else a.stop_after)
        data_s = data_settings(a, size)
        if a.tokenizer_type == "bpe":
            self.run_stage(size, "tokenizer", data_s, lambda: train_tokenizer(folder, size, self.tokenizer_lines()))
        if last < STAGES.index("data"):
            return False
        data_dir = Path(self.run_stage(size, "data", data_s, lambda: prepare(a, folder, size))["path"])
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
            return last == STAGES.index("export") and a.no_glue
        self.run_stage(size, "glue", glue_settings(a, size), lambda: glue(a, folder))
        return True

    def results(self, size: int) -> dict:
        """One size's row of sweep.json, from its stage markers."""
        a = self.args
        data = self.stage(size, "data", data_settings(a, size)).result()
        entry = {"requested": size, "tokenizer_vocab": data["tokenizer_vocab"],
                 "dictionary_rows": data["dictionary_rows"], "embedding_rows": data["embedding_rows"],
                 "train_tokens": data["train_tokens"], "models": {}}
        glue_result = None if a.no_glue else self.stage(size, "glue", glue_settings(a, size)).result()
        for m in MODELS:
            trained = self.stage(size, f"train-{m}", train_settings(a, size, m)).result()
            exported = self.stage(size, f"export-{m}", model_settings(a, size, m)).result()
            entry["models"][m] = {
                "config": trained["config"], "params": trained["params"], "tokens_per_s": trained["tokens_per_s"],
                "updates_per_s": trained["updates_per_s"], "updates": trained["updates"],
                "final_valid_loss_bits": trained["final_valid_loss_bits"],
                "throughput": {k: trained[k] for k in ("tokens_per_s_median", "intervals", "skipped_per_launch",
                                                       "launches", "includes_warmup")},
                "log": trained["log"], "device_overrides": trained.get("device_overrides"), "hf": exported["path"],
                "glue": glue_result[m] if glue_result else None}
        return entry
