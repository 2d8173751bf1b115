"""One fine-tuning run (one model, one task, one seed) with the protocol of paper App. E.

The loop is the `transformers` Trainer (AdamW, ``constant_with_warmup`` over 10% of the steps, validation
and a checkpoint after every epoch, so an interrupted run resumes); the paper's own part is the balanced
loss of App. E.1, through ``compute_loss_func``. The best epoch is chosen on the task's main metric."""
from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from ..files import give_plain_modes, write_text_atomic
from ..progress import Progress
from .balanced_loss import balanced_loss_func
from .encoding import EncodedDataset, collator, max_positions
from .metrics import compute_metrics_fn
from .model_loading import load_model, load_tokenizer, quiet_transformers
from .tasks import REGRESSION, TaskSpec
from ..cli import InputError

LOSSES = ("balanced", "ce")

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Hyperparameters of one fine-tuning run; defaults are App. E's for GLUE (Tab.14)."""

    learning_rate: float = field(default=1e-5, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (not on biases/LayerNorm)"})
    batch_size: int = field(default=32, metadata={"help": "training examples per step"})
    epochs: int = field(default=10, metadata={"help": "fine-tuning epochs; dev metrics after each"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warmup over this share of all steps, "
                                                                "then a constant learning rate"})
    loss: str = field(default="balanced", metadata={"help": "balanced: App. E.1's balanced cross-entropy; "
                                                            "ce: regular cross-entropy (regression: MSE either way)"})
    max_length: int = field(default=128, metadata={"help": "tokens per input (pair) after truncation; the paper "
                                                           "pretrains on 128-token sequences"})
    eval_batch_size: int = field(default=128, metadata={"help": "examples per evaluation batch (speed only)"})
    max_train_examples: Optional[int] = field(default=None, metadata={
        "help": "fine-tune on a fixed random subset of this many training examples (not the paper's protocol)"})

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise InputError(f"--loss {self.loss}: choose balanced or ce")
        for name in ("batch_size", "epochs", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError("--warmup-ratio must be in [0, 1)")
        if self.learning_rate <= 0:
            raise InputError("--lr must be positive")

    def settings(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    """What one run reports (stored as JSON by the benchmark)."""

    epochs: list  # [{"epoch": 1, "train_loss": x, "dev": {set: {metric: value}}, "score": s}, ...]
    best_epoch: int
    best: dict  # {set: {metric: value}} at the best epoch
    score: float  # the main metric at the best epoch (mean over dev sets)
    model_summary: str


def finetune(model_dir: Path, spec: TaskSpec, train_examples: list, dev_sets: dict, config: FinetuneConfig,
             seed: int, run_dir: Path, desc: str, callbacks: tuple = ()) -> RunResult:
    """Fine-tune ``model_dir`` on ``train_examples``; evaluate on each of ``dev_sets`` after every epoch.

    ``run_dir`` holds the Trainer's checkpoints; if it has one, training resumes from it."""
    tokenizer, model_config = load_tokenizer(model_dir)
    limit = max_positions(model_config)
    if config.max_length > limit:
        raise InputError(f"--max-length {config.max_length}: {model_dir} takes at most {limit} tokens "
                         f"(max_position_embeddings {model_config.max_position_embeddings})")
    train = EncodedDataset(spec, train_examples, tokenizer, config.max_length)
    dev = {name: EncodedDataset(spec, examples, tokenizer, config.max_length) for name, examples in dev_sets.items()}

    set_seed(seed)  # before the model: the new head's initialisation depends on the seed
    model, summary = load_model(model_dir, spec)
    logger.info(f"{desc}: {summary}")

    args = TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a share of all steps
        optim="adamw_torch",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # only the last epoch: what a resume needs
        logging_strategy="epoch",
        seed=seed,
        report_to="none",
        disable_tqdm=True,  # replaced by per-epoch bars
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    use_balanced = config.loss == "balanced" and spec.kind != REGRESSION
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=collator(spec, tokenizer), compute_metrics=compute_metrics_fn(spec),
                      compute_loss_func=balanced_loss_func if use_balanced else None,
                      callbacks=[EpochProgress(desc, list(dev)), *callbacks])
    # The balanced loss is a per-micro-batch mean: let the Trainer scale it for accumulation.
    trainer.loss_is_scaled_for_ga = False
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout

    trainer.add_callback(MarkCheckpointComplete())
    resume = last_complete_checkpoint(Path(run_dir))
    if resume:
        logger.info(f"{desc}: resuming from the last finished epoch in {resume}")
    with quiet_transformers():  # checkpoint-writing bars and notices; our bars say what happens
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return _result(spec, trainer.state.log_history, list(dev), config.epochs, summary)


# The Trainer writes ``checkpoint-N/`` file by file, and ``resume_from_checkpoint=True`` would pick a half-written
# one; a marker written atomically once the save is over tells finished checkpoints apart.
COMPLETE = "checkpoint_complete"


class MarkCheckpointComplete(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        give_plain_modes(folder)  # the Trainer's save_pretrained leaves model.safetensors 0o600
        write_text_atomic(folder / COMPLETE, str(state.global_step))


def last_complete_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest finished checkpoint; half-written ones (no marker) are removed."""
    complete = []
    for folder in run_dir.glob("checkpoint-*"):
        if (folder / COMPLETE).exists():
            complete.append(folder)
        else:
            shutil.rmtree(folder)
    return max(complete, key=lambda f: int(f.name.split("-")[-1]), default=None)


def _result(spec: TaskSpec, log_history: list, dev_names: list, epochs: int, summary: str) -> RunResult:
    by_epoch = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        record = by_epoch.setdefault(int(round(entry["epoch"])), {"dev": {}})
        if "loss" in entry:
            record["train_loss"] = entry["loss"]
        for name in dev_names:
            prefix = f"eval_{name}_"
            metrics = {k[len(prefix):]: v for k, v in entry.items() if k.startswith(prefix)}
            metrics = {m: metrics[m] for m in spec.metrics if m in metrics}
            if metrics:
                record["dev"][name] = metrics
    rows = []
    for epoch in sorted(by_epoch):
        record = by_epoch[epoch]
        if len(record["dev"]) != len(dev_names):
            continue  # e.g. the train_loss-only summary entry
        score = sum(record["dev"][n][spec.main_metric] for n in dev_names) / len(dev_names)
        rows.append({"epoch": epoch, "train_loss": record.get("train_loss"), "dev": record["dev"], "score": score})
    if len(rows) != epochs:
        raise RuntimeError(f"expected dev metrics for {epochs} epochs, the Trainer logged {len(rows)}")
    best = max(rows, key=lambda r: (r["score"] if not math.isnan(r["score"]) else -math.inf, -r["epoch"]))
    return RunResult(epochs=rows, best_epoch=best["epoch"], best=best["dev"], score=best["score"],
                     model_summary=summary)


class EpochProgress(TrainerCallback):
    """Progress per training epoch and per evaluation (stderr): a bar on a terminal; in a log file (a cluster
    job) a line every 30 s and at the end, since a log keeps a bar's every redraw (:mod:`fairseq_headless.progress`).
    And one line of dev metrics per epoch."""

    def __init__(self, desc: str, dev_names: list):
        self.desc, self.dev_names = desc, dev_names
        self.bar = self.eval_bar = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0)) + 1
        per_epoch = math.ceil(state.max_steps / args.num_train_epochs)
        self.bar = Progress(f"{self.desc} epoch {epoch}/{int(args.num_train_epochs)}", per_epoch, unit="step",
                            transient=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.eval_bar is None and eval_dataloader is not None:
            self.eval_bar = Progress(f"{self.desc} evaluating", len(eval_dataloader), unit="batch", transient=True)
        if self.eval_bar is not None:
            self.eval_bar.update()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None
        shown = ", ".join(f"{k[len('eval_'):]} {v:.4f}" for k, v in (metrics or {}).items()
                          if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second", "_loss")))
        logger.info(f"{self.desc} epoch {int(round(state.epoch or 0))}: {shown}")
