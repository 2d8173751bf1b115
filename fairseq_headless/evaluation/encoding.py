"""Examples -> token ids with the exported tokenizer, and the collators that pad batches.

Inputs are wrapped as ``<s> a </s>`` / ``<s> a </s></s> b </s>`` like RoBERTa's (the classification head
reads the first position, so :func:`check_tokenizer` refuses a tokenizer that adds no ``<s>``); only
``input_ids`` and ``attention_mask`` are kept, padded with the tokenizer's pad id."""
from __future__ import annotations

from torch.utils.data import Dataset
from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding

from .tasks import MULTIPLE_CHOICE, TaskSpec
from ..cli import InputError

KEPT = ("input_ids", "attention_mask")


def check_tokenizer(tokenizer, config, model_dir) -> None:
    """Fail early, with the fix, on a tokenizer that does not match the model."""
    ids = tokenizer("a", "b")["input_ids"]
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    if start is None or ids[0] != start:
        raise InputError(f"{model_dir}: its tokenizer adds no <s> at the start of inputs (got ids {ids}); the "
                         "classification head reads position 0, so export the tokenizer with a RoBERTa "
                         "post-processor (tokenizers.processors.RobertaProcessing)")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id != config.pad_token_id:
        raise InputError(f"{model_dir}: tokenizer pad id {tokenizer.pad_token_id} differs from the model's "
                         f"pad_token_id {config.pad_token_id} (RoBERTa derives positions from it); re-export the "
                         "folder")
    if len(tokenizer) > config.vocab_size:
        raise InputError(f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model only "
                         f"{config.vocab_size} embedding rows")


def max_positions(config) -> int:
    """Longest input the model can take: RoBERTa's positions start after the pad id."""
    return config.max_position_embeddings - config.pad_token_id - 1


class EncodedDataset(Dataset):
    """Token ids and labels of a list of examples, ready for the Trainer and its collators."""

    def __init__(self, spec: TaskSpec, examples: list, tokenizer, max_length: int):
        self.items = []
        if spec.kind == MULTIPLE_CHOICE:
            # One tokenizer call for every choice of every example, then regrouped.
            n = len(examples[0].texts) if examples else 0
            enc = tokenizer([c[0] for ex in examples for c in ex.texts],
                            [c[1] for ex in examples for c in ex.texts], truncation=True, max_length=max_length)
            for i, ex in enumerate(examples):
                self.items.append({key: enc[key][i * n:(i + 1) * n] for key in KEPT} | {"labels": ex.label})
        else:
            segments = [list(s) for s in zip(*(ex.texts for ex in examples))]
            enc = tokenizer(*segments, truncation=True, max_length=max_length)
            for i, ex in enumerate(examples):
                self.items.append({key: enc[key][i] for key in KEPT} | {"labels": ex.label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def collator(spec: TaskSpec, tokenizer):
    """transformers' own padding collators (the multiple-choice one pads all choices alike)."""
    if spec.kind == MULTIPLE_CHOICE:
        return DataCollatorForMultipleChoice(tokenizer)
    return DataCollatorWithPadding(tokenizer)
