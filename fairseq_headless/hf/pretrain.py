"""scripts/pretrain_hf.py: pretrain a transformers model with Hugging Face's Trainer, headless (CWT) or vanilla.

Our options are one dataclass beside ``TrainingArguments``, whose every flag passes through (HF's
run_mlm.py / run_clm.py pattern), so torchrun, accelerate, checkpoints, resuming and logging are the
Trainer's. Its ``compute_loss`` is the objective's mean over scored positions (logged in
trainer_state.json). Runs resume from ``--output_dir``'s last checkpoint, or ``--resume_from_checkpoint``.
Paper §3.3's causal fine-tuning stage is the same command: ``--objective vanilla --untie_head`` on a
headless decoder's folder gives the LM head a parameter of its own, initialised from e.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Literal

from ..cli import InputError


@dataclasses.dataclass
class PretrainOptions:
    model: str = dataclasses.field(metadata={"help": (
        "a built-in shape (bert_small, bert_base, pythia_70m, modernbert_base, smollm2_135m, llama32_1b), a "
        "config.json (or a folder holding one) to build fresh, or a saved model folder to continue")})
    data: str = dataclasses.field(metadata={"help": (
        "a folder written by scripts/prepare_data.py: the folder, the parent of its shards, or a colon list")})
    task: Literal["mlm", "clm"] = dataclasses.field(metadata={"help": "masked (encoders) or causal (decoders) LM"})
    objective: Literal["headless", "vanilla"] = dataclasses.field(
        default="headless", metadata={"help": "headless: CWT against the input embeddings; vanilla: the LM head"})
    tokens_per_sample: int | None = dataclasses.field(default=None, metadata={"help": (
        "sample length, as fairseq's task.tokens_per_sample (default: 128 for mlm, 2048 for clm, at most the "
        "model's max_position_embeddings)")})
    mask_prob: float = dataclasses.field(default=0.15, metadata={"help": "mlm: share of positions masked"})
    negatives: Literal["batch", "unique"] = dataclasses.field(
        default="batch", metadata={"help": "headless: every target of the micro-batch (the paper's) or each once"})
    negatives_scope: Literal["local", "global"] = dataclasses.field(
        default="local", metadata={"help": "headless: this process's micro-batch (the paper's) or every rank's"})
    temperature: float = dataclasses.field(default=1.0, metadata={"help": "headless: CWT's temperature"})
    chunk_size: int = dataclasses.field(default=0, metadata={"help": "headless: CWT's logits in row chunks (0: one)"})
    untie_head: bool = dataclasses.field(default=False, metadata={"help": (
        "vanilla: give the LM head a parameter of its own, initialised from the input embeddings (paper §3.3's "
        "causal fine-tuning of a headless decoder)")})


def parse(argv):
    from transformers import HfArgumentParser, TrainingArguments

    class Parser(HfArgumentParser):
        def error(self, message):  # one error: line, as every script here
            raise InputError(f"{message} (see --help)")

    options, args = Parser((PretrainOptions, TrainingArguments)).parse_args_into_dataclasses(list(argv))
    if args.output_dir is None:
        raise InputError("--output_dir is required: the folder of the checkpoints and the final model")
    if options.untie_head and options.objective != "vanilla":
        raise InputError("--untie_head trains the LM head: give it with --objective vanilla")
    return options, args


def make_trainer_class():
    from transformers import Trainer

    from . import objective
    from .shapes import head_from_embeddings, is_tied

    class ObjectiveTrainer(Trainer):
        """The Trainer with the objective's loss: its sum over scored positions divided by their number."""

        loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by the accumulation steps

        def __init__(self, *args, options: PretrainOptions, **kwargs):
            super().__init__(*args, **kwargs)
            self.options = options

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            o = self.options
            batch = (model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
            if o.objective == "headless":
                loss_sum, scored = objective.headless_loss(*batch, negatives=o.negatives, scope=o.negatives_scope,
                                                           temperature=o.temperature, chunk_size=o.chunk_size)
            else:
                loss_sum, scored = objective.vanilla_loss(*batch)
            loss = loss_sum / max(int(scored), 1)
            return (loss, {}) if return_outputs else loss

        def save_model(self, output_dir=None, _internal_call=False):
            model = self.accelerator.unwrap_model(self.model)
            head = model.get_output_embeddings()
            if self.options.objective == "headless" and head is not None and not is_tied(model):
                head_from_embeddings(model)  # an architecture that cannot tie: its head is set to e^T
            super().save_model(output_dir, _internal_call)

    return ObjectiveTrainer


def main(argv) -> int:
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from .data import Collator, PackedBlocks, open_shards
    from .shapes import DEFAULT_TOKENS_PER_SAMPLE, build_model, check_task, read_model_option
    from .tokenizer import build_tokenizer, check_tokenizer

    options, args = parse(argv)
    config, _ = read_model_option(options.model)
    check_task(config, options.task, options.model)  # before the data: the cheapest mistakes first
    folder, shards = open_shards(options.data)
    max_positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    length = options.tokens_per_sample or min(DEFAULT_TOKENS_PER_SAMPLE[options.task], max_positions or 1 << 30)
    if max_positions is not None and length > max_positions:
        raise InputError(f"--tokens_per_sample {length}: more than the model's max_position_embeddings "
                         f"({max_positions})")
    tokenizer = build_tokenizer(folder, options.task, length)
    check_tokenizer(tokenizer, shards[0])
    set_seed(args.seed)
    model = build_model(options.model, options.task, options.objective, tokenizer, options.untie_head)
    train = PackedBlocks(shards, "train", options.task, length)
    valid = PackedBlocks(shards[:1], "valid", options.task, length)
    if args.eval_strategy != "no" and not len(valid):
        raise InputError(f"--eval_strategy {args.eval_strategy}: {shards[0]} has no validation split")
    seed = args.data_seed if args.data_seed is not None else args.seed
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=train, eval_dataset=valid if len(valid) else None,
        data_collator=Collator(options.task, tokenizer.specials, tokenizer.text_vocab_size, seed, options.mask_prob,
                               frozenset(tokenizer.reference.special_ids())),
        processing_class=tokenizer.hf, options=options)
    checkpoint = args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(args.output_dir):
        checkpoint = get_last_checkpoint(args.output_dir)  # what HF's example scripts resume from
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()  # the final model and its tokenizer, in --output_dir
    trainer.save_state()
    return 0
